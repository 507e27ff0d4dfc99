//! Mailbox names that are not ASCII (RFC 3501 §5.1.3 modified UTF-7 on the wire, UTF-8
//! after `ENABLE UTF8=ACCEPT`, RFC 6855 §3), sent exactly as clients send them.

use teamgate::{config::Config, store::ConversationId};

use super::{deliver, has};
use crate::harness::{ImapConn, TestDaemon, blocking_runtime, run_python};

const ITALIAN: &str = "Assistenza Clienti Ü";
const GERMAN: &str = "Kundendienst Größe";
const CJK: &str = "客服";
/// A login that is not ASCII (config validation allows any login without spaces, `/`,
/// wildcards, quotes or backslashes).
const JUERGEN: &str = "jürgen";

/// Alice and jürgen in three inboxes with non-ASCII names.
fn international(c: &mut Config) {
    let mut juergen = c.agents[0].clone();
    juergen.login = JUERGEN.into();
    juergen.name = "Jürgen".into();
    juergen.email = "juergen@example.test".into();
    c.agents.push(juergen);
    let template = c.inboxes[0].clone();
    c.inboxes.clear();
    for (name, address) in [
        (ITALIAN, "assistenza@example.test"),
        (GERMAN, "kundendienst@example.test"),
        (CJK, "kefu@example.test"),
    ] {
        let mut inbox = template.clone();
        inbox.name = name.into();
        inbox.addresses = vec![address.into()];
        inbox.members = vec!["alice".into(), JUERGEN.into()];
        c.inboxes.push(inbox);
    }
}

fn uid_validity(select: &[String]) -> String {
    select
        .iter()
        .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {select:?}"))
        .to_string()
}

#[tokio::test]
async fn non_ascii_names_are_modified_utf7_in_every_command() {
    let d = TestDaemon::start_with(international).await;
    let conv = ConversationId(deliver(&d, "assistenza@example.test", "Aiuto", "u1").await);
    deliver(&d, "kundendienst@example.test", "Hilfe", "u2").await;
    let store = d.handle.store();
    let mut c = d.imap_as("alice", "alice-password").await;

    let list = c.ok("LIST \"\" \"*\"").await;
    for expected in [
        "\"/\" \"Inboxes/Assistenza Clienti &ANw-\"",
        "\"/\" \"Inboxes/Kundendienst Gr&APYA3w-e\"",
        "\"/\" Inboxes/&W6JnDQ-",
        "\"/\" Assigned/j&APw-rgen",
    ] {
        assert!(has(&list, expected), "LIST lacks {expected}: {list:#?}");
    }
    assert!(list.iter().all(|l| l.is_ascii()), "{list:#?}");
    let one = c.ok("LIST \"\" \"Inboxes/Kundendienst Gr&APYA3w-e\"").await;
    assert_eq!(one.len(), 1, "{one:?}");
    let lsub = c.ok("LSUB \"\" \"Inboxes/%\"").await;
    assert!(has(&lsub, "Inboxes/&W6JnDQ-"), "{lsub:?}");
    c.ok("SUBSCRIBE \"Inboxes/&W6JnDQ-\"").await;

    // The name a client sends back selects the view.
    let select = c.ok("SELECT \"Inboxes/Assistenza Clienti &ANw-\"").await;
    assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    let validity = uid_validity(&select);
    let status = c
        .ok("STATUS \"Inboxes/Kundendienst Gr&APYA3w-e\" (MESSAGES)")
        .await;
    assert_eq!(
        status,
        ["* STATUS \"Inboxes/Kundendienst Gr&APYA3w-e\" (MESSAGES 1)"]
    );
    // So does a UTF-8 literal (8-bit bytes cannot be modified UTF-7).
    c.send_raw(
        format!(
            "l1 EXAMINE {{{}+}}\r\nInboxes/{ITALIAN}\r\n",
            ITALIAN.len() + 8
        )
        .as_bytes(),
    )
    .await;
    let (select, tagged) = c.until_tagged("l1").await;
    assert!(tagged.starts_with("l1 OK"), "{tagged}");
    assert_eq!(uid_validity(&select), validity);
    c.ok("SELECT \"Inboxes/Assistenza Clienti &ANw-\"").await;

    // Gestures into non-ASCII views: assign to jürgen, then transfer to 客服.
    c.ok("UID MOVE 1 \"Assigned/j&APw-rgen\"").await;
    let info = store.conversation_info(conv).unwrap().unwrap();
    assert_eq!(info.assignee.as_deref(), Some(JUERGEN));
    c.ok("SELECT \"Assigned/j&APw-rgen\"").await;
    c.ok("UID MOVE 1:* Inboxes/&W6JnDQ-").await;
    let info = store.conversation_info(conv).unwrap().unwrap();
    assert_eq!(info.inbox, CJK);
    let cjk = c.ok("EXAMINE Inboxes/&W6JnDQ-").await;
    assert!(has(&cjk, "* 1 EXISTS"), "{cjk:?}");

    // Personal folders are stored decoded and listed encoded.
    c.ok("CREATE \"Personal/Entw&APw-rfe\"").await;
    assert!(
        store
            .folder_list("alice")
            .unwrap()
            .contains(&"Personal/Entwürfe".to_string())
    );
    let list = c.ok("LIST \"\" \"Personal/*\"").await;
    assert!(has(&list, "\"/\" Personal/Entw&APw-rfe"), "{list:?}");
    c.ok("UID COPY 1 \"Personal/Entw&APw-rfe\"").await;
    let note = "From: me@example.test\r\nSubject: note\r\n\r\nremember\r\n";
    c.send_raw(
        format!(
            "a1 APPEND \"Personal/Entw&APw-rfe\" {{{}+}}\r\n{note}\r\n",
            note.len()
        )
        .as_bytes(),
    )
    .await;
    let (_, tagged) = c.until_tagged("a1").await;
    assert!(tagged.contains("OK [APPENDUID "), "{tagged}");
    c.ok("UNSELECT").await;
    c.ok("RENAME \"Personal/Entw&APw-rfe\" \"Personal/&U,BTFw-\"")
        .await;
    assert!(
        store
            .folder_list("alice")
            .unwrap()
            .contains(&"Personal/台北".to_string())
    );
    let status = c.ok("STATUS \"Personal/&U,BTFw-\" (MESSAGES)").await;
    assert_eq!(status, ["* STATUS Personal/&U,BTFw- (MESSAGES 2)"]);
    c.ok("DELETE \"Personal/&U,BTFw-\"").await;
    c.refused("SELECT \"Personal/&U,BTFw-\"", "NO").await;

    // A name that is not modified UTF-7 is refused, saying why.
    for bad in [
        "SELECT \"Inboxes/Assistenza Clienti &ANw\"",
        "CREATE \"Personal/Q&A\"",
        "STATUS \"Inboxes/&AEk-\" (MESSAGES)",
    ] {
        let tagged = c.refused(bad, "NO").await;
        assert!(tagged.contains("modified UTF-7"), "{bad} -> {tagged}");
    }
    d.stop().await;
}

#[tokio::test]
async fn enable_utf8_accept_switches_names_to_utf8() {
    let d = TestDaemon::start_with(international).await;
    deliver(&d, "kefu@example.test", "帮助", "u3").await;
    let mut plain = d.imap_as("alice", "alice-password").await;
    let validity = uid_validity(&plain.ok("SELECT Inboxes/&W6JnDQ-").await);

    // jürgen logs in with his UTF-8 login in a literal.
    let mut c = ImapConn::connect(d.imap_addr()).await;
    c.send_raw(
        format!(
            "l1 LOGIN {{{}+}}\r\n{JUERGEN} alice-password\r\n",
            JUERGEN.len()
        )
        .as_bytes(),
    )
    .await;
    let (_, tagged) = c.until_tagged("l1").await;
    assert!(tagged.starts_with("l1 OK"), "{tagged}");
    let enabled = c.ok("ENABLE UTF8=ACCEPT").await;
    assert_eq!(enabled, ["* ENABLED UTF8=ACCEPT"]);
    // Enabling twice enables nothing new (RFC 5161 §3.1).
    assert_eq!(c.ok("ENABLE UTF8=ACCEPT").await, ["* ENABLED"]);

    let list = c.ok("LIST \"\" \"*\"").await;
    for expected in [
        format!("\"/\" \"Inboxes/{ITALIAN}\""),
        format!("\"/\" \"Inboxes/{GERMAN}\""),
        format!("\"/\" \"Inboxes/{CJK}\""),
        format!("\"/\" \"Assigned/{JUERGEN}\""),
    ] {
        assert!(has(&list, &expected), "LIST lacks {expected}: {list:#?}");
    }
    let select = c.ok(&format!("SELECT \"Inboxes/{CJK}\"")).await;
    assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    assert_eq!(uid_validity(&select), validity, "the same view");
    let status = c
        .ok(&format!("STATUS \"Inboxes/{GERMAN}\" (MESSAGES)"))
        .await;
    assert_eq!(
        status,
        [format!("* STATUS \"Inboxes/{GERMAN}\" (MESSAGES 0)")]
    );
    c.ok(&format!("CREATE \"Personal/{GERMAN}\"")).await;
    assert!(
        d.handle
            .store()
            .folder_list(JUERGEN)
            .unwrap()
            .contains(&format!("Personal/{GERMAN}"))
    );
    // RFC 6855 §4: a message with UTF-8 headers, appended as `UTF8 (~{n})`.
    let caps = c.ok("CAPABILITY").await;
    assert!(has(&caps, "UTF8=ACCEPT"), "{caps:?}");
    let message = format!(
        "From: {JUERGEN} <support@example.test>\r\nSubject: Größe\r\nMessage-ID: <u8@example.test>\r\n\r\nHallo {JUERGEN}.\r\n"
    );
    c.send_raw(
        format!(
            "a1 APPEND \"Personal/{GERMAN}\" (\\Seen) UTF8 (~{{{}}}\r\n",
            message.len()
        )
        .as_bytes(),
    )
    .await;
    let go = c.read_line().await.expect("continuation");
    assert!(go.starts_with(b"+"), "{}", String::from_utf8_lossy(&go));
    c.send_raw(format!("{message})\r\n").as_bytes()).await;
    let (_, appended) = c.until_tagged("a1").await;
    assert!(appended.starts_with("a1 OK [APPENDUID "), "{appended}");
    c.ok(&format!("SELECT \"Personal/{GERMAN}\"")).await;
    let fetched = c.ok("FETCH 1 (FLAGS BODY.PEEK[])").await;
    assert!(
        has(&fetched, "\\Seen") && has(&fetched, "Subject: Größe"),
        "{fetched:?}"
    );
    // After ENABLE `&` is an ordinary character.
    c.ok("CREATE \"Personal/Q&A\"").await;
    let list = c.ok("LIST \"\" \"Personal/*\"").await;
    assert!(has(&list, "\"/\" Personal/Q&A"), "{list:?}");
    // The session that did not enable still gets modified UTF-7.
    let list = plain.ok("LIST \"\" \"Inboxes/*\"").await;
    assert!(
        has(&list, "Inboxes/&W6JnDQ-") && list.iter().all(|l| l.is_ascii()),
        "{list:?}"
    );
    d.stop().await;
}

#[test]
fn python_imaplib_sends_modified_utf7_then_utf8() {
    let rt = blocking_runtime();
    let d = rt.block_on(TestDaemon::start_with(international));
    rt.block_on(deliver(&d, "assistenza@example.test", "imaplib", "u4"));
    let addr = d.imap_addr();
    // imaplib sends mailbox names exactly as given.
    let script = format!(
        r#"
import imaplib
m = imaplib.IMAP4("{ip}", {port}, timeout=20)
m.login("alice", "alice-password")
typ, data = m.list('""', '"Inboxes/*"')
assert any(b'"/" "Inboxes/Assistenza Clienti &ANw-"' in l for l in data), data
typ, data = m.select('"Inboxes/Assistenza Clienti &ANw-"')
assert typ == "OK" and data == [b"1"], (typ, data)
m.unselect()
typ, data = m.enable("UTF8=ACCEPT")
assert typ == "OK", (typ, data)
assert m.untagged_responses.get("ENABLED") == [b"UTF8=ACCEPT"], m.untagged_responses
typ, data = m.select('"Inboxes/Assistenza Clienti Ü"')
assert typ == "OK" and data == [b"1"], (typ, data)
typ, data = m.status('"Inboxes/客服"', "(MESSAGES)")
assert typ == "OK" and "客服".encode() in data[0], data
m.logout()
"#,
        ip = addr.ip(),
        port = addr.port()
    );
    run_python(&script, "imaplib script");
    rt.block_on(d.stop());
}
