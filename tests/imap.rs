//! The IMAP view (SPEC §5) against the real daemon: raw IMAP for exact protocol checks,
//! Python's imaplib and mbsync as real clients.

use std::time::Duration;

use teamgate::{
    config::Config,
    store::{ConversationId, Status},
};

use crate::harness::{
    ImapConn, TestDaemon, add_agent, blocking_runtime, require_program, run_python, simple_message,
};

// Junk-filter keywords per agent.
#[path = "imap_junk.rs"]
mod junk;
// Mailbox names that are not ASCII: modified UTF-7, UTF8=ACCEPT.
#[path = "imap_names.rs"]
mod names;

/// Adds agent `bob` (same password as alice) to Support, and a second inbox Sales that
/// only `carol` is in.
fn team(c: &mut Config) {
    add_agent(c, "bob").name = "Bob".into();
    add_agent(c, "carol");
    c.inboxes[0].members.push("bob".into());
    let mut sales = c.inboxes[0].clone();
    sales.name = "Sales".into();
    sales.addresses = vec!["sales@example.test".into()];
    sales.members = vec!["carol".into()];
    c.inboxes.push(sales);
}

async fn deliver(d: &TestDaemon, to: &str, subject: &str, id: &str) -> u64 {
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let from = format!("{id}@customer.example");
    let msg = simple_message(&from, subject, &format!("{id}@customer.example"));
    let (code, text) = c.send_mail(&from, &[to], &msg).await;
    assert_eq!(code, 250, "{text:?}");
    crate::harness::conversation_number(&text).expect("conversation number")
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn capabilities_login_and_mailbox_list() {
    let d = TestDaemon::start_with(team).await;
    let mut c = ImapConn::connect(d.imap_addr()).await;
    let caps = c.ok("CAPABILITY").await;
    for cap in [
        "IMAP4rev1",
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "LITERAL+",
        "NAMESPACE",
        "ID",
        "ENABLE",
        "UNSELECT",
        "CHILDREN",
        "SASL-IR",
        "AUTH=PLAIN",
    ] {
        assert!(
            caps[0].split(' ').any(|w| w.eq_ignore_ascii_case(cap)),
            "missing {cap}: {caps:?}"
        );
    }
    c.refused("LOGIN alice wrong-password", "NO").await;
    c.refused("SELECT INBOX", "BAD").await;
    // AUTHENTICATE PLAIN with SASL-IR.
    c.ok("AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")
        .await;
    let list = c.ok("LIST \"\" \"*\"").await;
    for expected in [
        "(\\HasNoChildren) \"/\" INBOX",
        "(\\Noselect \\HasChildren) \"/\" Inboxes",
        "\"/\" Inboxes/Support",
        "Mine",
        "Unassigned",
        "\"/\" Assigned/bob",
        "(\\HasNoChildren \\Archive) \"/\" Closed",
        "(\\HasNoChildren \\Sent) \"/\" Sent",
        "(\\HasNoChildren \\Junk) \"/\" Junk",
        "(\\HasNoChildren \\Drafts) \"/\" Drafts",
        "Templates",
        "(\\HasNoChildren \\Trash) \"/\" Trash",
    ] {
        assert!(has(&list, expected), "LIST lacks {expected}: {list:#?}");
    }
    assert!(!has(&list, "Sales"), "alice is not in Sales: {list:#?}");
    let ns = c.ok("NAMESPACE").await;
    assert!(has(&ns, "* NAMESPACE ((\"\" \"/\")) NIL NIL"), "{ns:?}");
    c.ok("ID NIL").await;
    c.ok("LOGOUT").await;
    d.stop().await;
}

#[tokio::test]
async fn select_fetch_returns_the_stored_bytes_exactly() {
    let d = TestDaemon::start_with(team).await;
    let conv = deliver(&d, "support@example.test", "Printer broken", "m1").await;
    let store = d.handle.store();
    let stored = store
        .read_message(store.message_keys(ConversationId(conv)).unwrap()[0])
        .unwrap();

    let mut c = d.imap_as("alice", "alice-password").await;
    let select = c.ok("SELECT INBOX").await;
    assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    assert!(has(&select, "[UIDVALIDITY "), "{select:?}");
    assert!(
        has(
            &select,
            "[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
        ),
        "{select:?}"
    );
    let (fetch, tagged) = c.run("FETCH 1 (UID RFC822.SIZE FLAGS BODY.PEEK[])").await;
    assert!(tagged.contains("OK"), "{tagged}");
    let expected_size = format!("RFC822.SIZE {}", stored.len());
    assert!(fetch[0].contains(&expected_size), "{}", fetch[0]);
    // The literal is the stored message byte for byte.
    let raw_line = fetch[0].as_bytes();
    let marker = format!("BODY[] {{{}}}\r\n", stored.len());
    let at = raw_line
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("BODY[] literal");
    assert_eq!(
        &raw_line[at + marker.len()..at + marker.len() + stored.len()],
        &stored[..]
    );
    let (fetch, _) = c.run("FETCH 1 (FLAGS)").await;
    assert!(
        !fetch[0].contains("\\Seen"),
        "PEEK does not set \\Seen: {fetch:?}"
    );
    let (fetch, _) = c
        .run("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE BODYSTRUCTURE)")
        .await;
    assert!(fetch[0].contains("Subject: Printer broken"), "{fetch:?}");
    assert!(
        fetch[0].contains("ENVELOPE (\"Tue, 24 Nov 2026 10:00:00 +0000\" \"Printer broken\""),
        "{fetch:?}"
    );
    assert!(
        fetch[0]
            .to_ascii_lowercase()
            .contains("bodystructure (\"text\" \"plain\""),
        "{fetch:?}"
    );
    let (fetch, _) = c.run("FETCH 1 (BODY[TEXT])").await;
    assert!(
        fetch.iter().any(|l| l.contains("\\Seen")),
        "BODY[] sets \\Seen: {fetch:?}"
    );
    let search = c.ok("SEARCH SUBJECT printer").await;
    assert_eq!(search, ["* SEARCH 1"]);
    let search = c.ok("UID SEARCH NOT SEEN").await;
    assert_eq!(search, ["* SEARCH"]);
    c.refused("FETCH 1 (BODY[", "BAD").await;
    c.ok("LOGOUT").await;
    d.stop().await;
}

#[tokio::test]
async fn moving_acts_on_the_whole_conversation() {
    let d = TestDaemon::start_with(team).await;
    let conv = ConversationId(deliver(&d, "support@example.test", "Close me", "c1").await);
    let store = d.handle.store();
    let mut alice = d.imap_as("alice", "alice-password").await;
    let select = alice.ok("SELECT INBOX").await;
    assert!(has(&select, "* 1 EXISTS"));

    // Close: MOVE to Closed.
    let moved = alice.ok("UID MOVE 1 Closed").await;
    assert!(has(&moved, "[COPYUID "), "{moved:?}");
    assert!(has(&moved, "* 1 EXPUNGE"), "{moved:?}");
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        Status::Closed
    );
    // Reopen: from Closed back to INBOX; it gets a new UID there.
    let closed = alice.ok("SELECT Closed").await;
    assert!(has(&closed, "* 1 EXISTS"), "{closed:?}");
    alice.ok("MOVE 1 INBOX").await;
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        Status::Open
    );
    let inbox = alice.ok("SELECT INBOX").await;
    assert!(has(&inbox, "* 1 EXISTS"), "{inbox:?}");
    let (uids, _) = alice.run("FETCH 1 (UID)").await;
    assert!(
        uids[0].contains("UID 2"),
        "a re-entering message gets a new UID: {uids:?}"
    );

    // Take it: Mine; assign to bob; unassign.
    alice.ok("COPY 1 Mine").await;
    assert_eq!(
        store
            .conversation_info(conv)
            .unwrap()
            .unwrap()
            .assignee
            .as_deref(),
        Some("alice")
    );
    alice.ok("COPY 1 Assigned/bob").await;
    assert_eq!(
        store
            .conversation_info(conv)
            .unwrap()
            .unwrap()
            .assignee
            .as_deref(),
        Some("bob")
    );
    alice.ok("COPY 1 Unassigned").await;
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().assignee,
        None
    );
    // Not her inbox, not a teammate, not a team view.
    alice.refused("COPY 1 Inboxes/Sales", "NO").await;
    alice.refused("COPY 1 Assigned/carol", "NO").await;
    alice.refused("MOVE 1 Sent", "NO").await;

    // Delete: \Deleted + EXPUNGE puts it in the trash; nothing is destroyed.
    alice.ok("STORE 1 +FLAGS (\\Deleted)").await;
    let expunged = alice.ok("EXPUNGE").await;
    assert!(has(&expunged, "* 1 EXPUNGE"), "{expunged:?}");
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        Status::Trash
    );
    let trash = alice.ok("SELECT Trash").await;
    assert!(has(&trash, "* 1 EXISTS"), "{trash:?}");
    let (flags, _) = alice.run("FETCH 1 (FLAGS)").await;
    assert!(
        !flags[0].contains("\\Deleted"),
        "restorable, not marked deleted: {flags:?}"
    );
    alice.ok("MOVE 1 INBOX").await;
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        Status::Open
    );
    d.stop().await;
}

#[tokio::test]
async fn flags_per_agent_and_shared_and_live_updates() {
    let d = TestDaemon::start_with(team).await;
    deliver(&d, "support@example.test", "Shared flags", "f1").await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    alice.ok("SELECT INBOX").await;
    bob.ok("SELECT INBOX").await;
    // \Seen is alice's alone; a keyword (Thunderbird tag) is shared.
    alice.ok("STORE 1 +FLAGS (\\Seen $label1)").await;
    let (flags, _) = bob.run("FETCH 1 (FLAGS)").await;
    let line = flags.iter().find(|l| l.contains("FETCH")).unwrap();
    assert!(
        line.contains("$label1") && !line.contains("\\Seen"),
        "{flags:?}"
    );

    // Bob idles; new mail and alice's actions reach him without a command.
    bob.send_raw(b"i1 IDLE\r\n").await;
    let cont = bob.read_line().await.unwrap();
    assert!(
        cont.starts_with(b"+ "),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    deliver(&d, "support@example.test", "Second", "f2").await;
    let pushed = bob.read_line().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed).trim_end(), "* 2 EXISTS");
    // RFC 3501 §7.3.2: RECENT comes with EXISTS (its count is tests/imap_rfc3501.rs's).
    let pushed = bob.read_line().await.unwrap();
    assert!(pushed.ends_with(b" RECENT\r\n"), "{pushed:?}");
    alice.ok("NOOP").await;
    alice.ok("MOVE 1 Closed").await;
    let pushed = bob.read_line().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed).trim_end(), "* 1 EXPUNGE");
    bob.send_raw(b"DONE\r\n").await;
    let (_, tagged) = bob.until_tagged("i1").await;
    assert!(tagged.contains("OK"), "{tagged}");
    d.stop().await;
}

#[tokio::test]
async fn personal_folders_and_refused_creates() {
    let d = TestDaemon::start_with(team).await;
    deliver(&d, "support@example.test", "Keep a copy", "p1").await;
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("CREATE Personal/Notes").await;
    c.refused("CREATE Personal/Notes", "NO").await;
    let tagged = c.refused("CREATE Projects", "NO").await;
    assert!(tagged.contains("[CANNOT]"), "{tagged}");
    c.ok("CREATE Closed/2026").await;
    c.ok("SELECT INBOX").await;
    let copied = c.ok("COPY 1 Personal/Notes").await;
    let _ = copied;
    let tagged = c.refused("MOVE 1 Personal/Notes", "NO").await;
    assert!(tagged.contains("[CANNOT]"), "{tagged}");
    let notes = c.ok("SELECT Personal/Notes").await;
    assert!(has(&notes, "* 1 EXISTS"), "{notes:?}");
    // APPEND with a literal, then RENAME keeps the messages.
    let msg = "From: me@example.test\r\nSubject: note\r\n\r\nremember\r\n";
    c.send_raw(format!("a1 APPEND Personal/Notes (\\Seen) {{{}}}\r\n", msg.len()).as_bytes())
        .await;
    let cont = c.read_line().await.unwrap();
    assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
    c.send_raw(format!("{msg}\r\n").as_bytes()).await;
    let (_, tagged) = c.until_tagged("a1").await;
    assert!(tagged.contains("OK [APPENDUID "), "{tagged}");
    c.ok("UNSELECT").await;
    c.ok("RENAME Personal/Notes Personal/Archive").await;
    let status = c
        .ok("STATUS Personal/Archive (MESSAGES UNSEEN UIDNEXT)")
        .await;
    assert!(has(&status, "MESSAGES 2"), "{status:?}");
    c.ok("DELETE Personal/Archive").await;
    c.refused("DELETE INBOX", "NO").await;
    // The team conversation was never touched by any of this.
    assert_eq!(d.handle.store().list_conversations().unwrap().len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn append_into_inbox_is_intake() {
    let d = TestDaemon::start_with(team).await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let msg = "From: Dragged <dragged@customer.example>\r\nTo: someone@example.test\r\nSubject: from my own mailbox\r\nMessage-ID: <drag1@customer.example>\r\n\r\nplease help\r\n";
    c.send_raw(format!("a1 APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes())
        .await;
    let (_, tagged) = c.until_tagged("a1").await;
    assert!(tagged.contains("OK"), "{tagged}");
    let convs = d.handle.store().list_conversations().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(
        convs[0].contact.as_deref(),
        Some("dragged@customer.example")
    );
    c.refused("APPEND Closed {3+}\r\nx\r\n", "NO").await;
    d.stop().await;
}

#[tokio::test]
async fn admins_read_every_inbox_but_change_none() {
    let d = TestDaemon::start_with(|c| {
        team(c);
        let mut root = c.agents[0].clone();
        root.login = "root".into();
        root.email = "root@example.test".into();
        root.admin = true;
        c.agents.push(root);
    })
    .await;
    deliver(&d, "sales@example.test", "For sales", "s1").await;
    let mut root = d.imap_as("root", "alice-password").await;
    let select = root.ok("SELECT Inboxes/Sales").await;
    assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    let (_, tagged) = root.run("SELECT Inboxes/Sales").await;
    assert!(tagged.contains("[READ-ONLY]"), "{tagged}");
    root.refused("STORE 1 +FLAGS (\\Flagged)", "NO").await;
    root.refused("MOVE 1 Closed", "NO").await;
    // And a plain member of another inbox sees nothing of Sales.
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.refused("SELECT Inboxes/Sales", "NO").await;
    let inbox = alice.ok("SELECT INBOX").await;
    assert!(has(&inbox, "* 0 EXISTS"), "{inbox:?}");
    d.stop().await;
}

#[tokio::test]
async fn malformed_commands_get_tagged_bad_and_brute_force_is_throttled() {
    let d = TestDaemon::start().await;
    let mut c = ImapConn::connect(d.imap_addr()).await;
    c.send_raw(b"x1 FROB\r\n").await;
    let line = c.read_line().await.unwrap();
    assert!(
        line.starts_with(b"x1 BAD"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    c.send_raw(b"x2 SELECT\r\n").await;
    let line = c.read_line().await.unwrap();
    assert!(
        line.starts_with(b"x2 BAD"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    for _ in 0..5 {
        c.refused("LOGIN alice wrong", "NO").await;
    }
    let tagged = c.refused("LOGIN alice alice-password", "NO").await;
    assert!(tagged.contains("too many failed attempts"), "{tagged}");
    d.stop().await;
}

#[test]
fn python_imaplib_works_the_inbox() {
    let rt = blocking_runtime();
    let d = rt.block_on(TestDaemon::start_with(team));
    rt.block_on(deliver(&d, "support@example.test", "imaplib one", "py1"));
    rt.block_on(deliver(&d, "support@example.test", "imaplib two", "py2"));
    let addr = d.imap_addr();
    let script = format!(
        r#"
import imaplib
m = imaplib.IMAP4("{ip}", {port}, timeout=20)
m.login("alice", "alice-password")
typ, data = m.select("INBOX")
assert typ == "OK" and data == [b"2"], data
typ, data = m.search(None, "ALL")
assert data == [b"1 2"], data
typ, data = m.fetch("2", "(RFC822)")
assert b"Subject: imaplib two" in data[0][1], data
typ, data = m.uid("STORE", "1", "+FLAGS", r"(\Flagged)")
assert typ == "OK", typ
typ, data = m.search(None, "FLAGGED")
assert data == [b"1"], data
typ, data = m.uid("MOVE", "1", "Closed")
assert typ == "OK", typ
typ, data = m.select("INBOX", readonly=True)
assert data == [b"1"], data
typ, data = m.list()
assert any(b"\\Archive" in l for l in data), data
m.logout()
"#,
        ip = addr.ip(),
        port = addr.port()
    );
    run_python(&script, "imaplib script");
    rt.block_on(d.stop());
}

#[test]
fn mbsync_mirrors_the_inbox_and_a_second_run_downloads_nothing_new() {
    let mbsync = require_program("mbsync");
    let rt = blocking_runtime();
    let d = rt.block_on(TestDaemon::start_with(team));
    rt.block_on(deliver(&d, "support@example.test", "mbsync one", "mb1"));
    rt.block_on(deliver(&d, "support@example.test", "mbsync two", "mb2"));
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let rc = dir.path().join("mbsyncrc");
    std::fs::create_dir_all(&maildir).unwrap();
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount t\nHost {ip}\nPort {port}\nUser alice\nPass alice-password\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount t\n\nMaildirStore local\nPath {path}/\nInbox {path}/INBOX\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\nSyncState *\n",
            ip = d.imap_addr().ip(),
            port = d.imap_addr().port(),
            path = maildir.display()
        ),
    )
    .unwrap();
    let run = || {
        let out = std::process::Command::new(&mbsync)
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mbsync failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let count = |sub: &str| {
        std::fs::read_dir(maildir.join("INBOX").join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(count("new") + count("cur"), 2);
    run();
    assert_eq!(
        count("new") + count("cur"),
        2,
        "UIDs are stable: nothing downloaded twice"
    );
    rt.block_on(deliver(&d, "support@example.test", "mbsync three", "mb3"));
    std::thread::sleep(Duration::from_millis(50));
    run();
    assert_eq!(count("new") + count("cur"), 3);
    rt.block_on(d.stop());
}

#[tokio::test]
async fn copy_then_expunge_moves_like_move_and_does_not_trash() {
    let d = TestDaemon::start_with(team).await;
    let conv = ConversationId(deliver(&d, "support@example.test", "Old-style move", "old1").await);
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    // What clients without MOVE do: COPY, mark \Deleted, EXPUNGE.
    let copied = c.ok("UID COPY 1 Closed").await;
    let _ = copied;
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    let info = d.handle.store().conversation_info(conv).unwrap().unwrap();
    assert_eq!(
        info.status,
        Status::Closed,
        "closed by the COPY, not trashed by the EXPUNGE"
    );
    let closed = c.ok("SELECT Closed").await;
    assert!(has(&closed, "* 1 EXISTS"), "{closed:?}");
    d.stop().await;
}

#[tokio::test]
async fn moving_to_another_inbox_transfers_and_threading_follows() {
    let d = TestDaemon::start_with(|c| {
        team(c);
        c.inboxes[1].members.push("alice".into());
    })
    .await;
    let conv = ConversationId(deliver(&d, "support@example.test", "Wrong team", "w1").await);
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("SELECT Inboxes/Support").await;
    alice.ok("MOVE 1 Inboxes/Sales").await;
    assert_eq!(
        d.handle
            .store()
            .conversation_info(conv)
            .unwrap()
            .unwrap()
            .inbox,
        "Sales"
    );
    let sales = alice.ok("SELECT Inboxes/Sales").await;
    assert!(has(&sales, "* 1 EXISTS"), "{sales:?}");
    // carol (Sales only) now sees it; a customer reply follows it to Sales.
    let mut carol = d.imap_as("carol", "alice-password").await;
    let inbox = carol.ok("SELECT INBOX").await;
    assert!(has(&inbox, "* 1 EXISTS"), "{inbox:?}");
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO client.example", 250).await;
    let reply = b"From: w1@customer.example\r\nTo: support@example.test\r\nSubject: Re: Wrong team\r\nMessage-ID: <w2@customer.example>\r\nIn-Reply-To: <w1@customer.example>\r\n\r\nthanks\r\n";
    let (code, text) = smtp
        .send_mail("w1@customer.example", &["support@example.test"], reply)
        .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(
        d.handle
            .store()
            .conversation(conv)
            .unwrap()
            .unwrap()
            .messages
            .len(),
        2,
        "{text:?}"
    );
    d.stop().await;
}

mod tls {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio_rustls::TlsConnector;

    use super::*;

    fn cert(dir: &std::path::Path) -> (teamgate::config::TlsFiles, TlsConnector) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = teamgate::config::TlsFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).unwrap();
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (files, TlsConnector::from(Arc::new(config)))
    }

    async fn line<S: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<S>) -> String {
        let mut s = String::new();
        tokio::time::timeout(crate::harness::STEP, r.read_line(&mut s))
            .await
            .unwrap()
            .unwrap();
        s
    }

    #[tokio::test]
    async fn starttls_and_implicit_tls_with_login_disabled_before() {
        let dir = tempfile::tempdir().unwrap();
        let (files, connector) = cert(dir.path());
        let d = TestDaemon::start_with(|c| {
            c.tls = Some(files);
            c.allow_plaintext_auth = false;
            c.imap.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        })
        .await;
        let mut plain = ImapConn::connect(d.imap_addr()).await;
        let caps = plain.ok("CAPABILITY").await;
        assert!(
            caps[0].contains("STARTTLS") && caps[0].contains("LOGINDISABLED"),
            "{caps:?}"
        );
        assert!(!caps[0].contains("AUTH=PLAIN"), "{caps:?}");
        plain.refused("LOGIN alice alice-password", "NO").await;
        plain
            .refused("AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", "NO")
            .await;
        // STARTTLS with a command pipelined behind it: the injected command is dropped.
        plain.send_raw(b"s1 STARTTLS\r\ns2 NOOP\r\n").await;
        let (_, tagged) = plain.until_tagged("s1").await;
        assert!(tagged.contains("OK"), "{tagged}");
        let tcp = plain.io.into_inner();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("handshake");
        let mut r = BufReader::new(tls);
        r.get_mut().write_all(b"s3 CAPABILITY\r\n").await.unwrap();
        let caps = line(&mut r).await;
        assert!(
            caps.starts_with("* CAPABILITY")
                && caps.contains("AUTH=PLAIN")
                && !caps.contains("STARTTLS"),
            "{caps}"
        );
        assert!(
            line(&mut r).await.starts_with("s3 OK"),
            "s2 was never answered"
        );
        r.get_mut()
            .write_all(b"s4 LOGIN alice alice-password\r\n")
            .await
            .unwrap();
        assert!(line(&mut r).await.starts_with("s4 OK"));

        // Implicit TLS (993-style): greeting inside TLS, login allowed at once.
        let tcp = tokio::net::TcpStream::connect(d.handle.addrs.imap_tls[0])
            .await
            .unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("handshake");
        let mut r = BufReader::new(tls);
        assert!(line(&mut r).await.starts_with("* OK"));
        r.get_mut()
            .write_all(b"i1 LOGIN alice alice-password\r\n")
            .await
            .unwrap();
        assert!(line(&mut r).await.starts_with("i1 OK"));
        d.stop().await;
    }

    #[tokio::test]
    async fn shutdown_says_bye_to_imap_sessions() {
        let d = TestDaemon::start().await;
        let mut c = d.imap_as("alice", "alice-password").await;
        c.ok("SELECT INBOX").await;
        let TestDaemon {
            handle, data_dir, ..
        } = d;
        let stopping = tokio::spawn(handle.shutdown());
        let bye = c.read_line().await.expect("BYE before close");
        assert!(
            bye.starts_with(b"* BYE"),
            "{}",
            String::from_utf8_lossy(&bye)
        );
        stopping.await.unwrap().unwrap();
        drop(data_dir);
    }
}

#[tokio::test]
async fn changes_reach_a_non_idle_session_on_its_next_command() {
    let d = TestDaemon::start_with(team).await;
    deliver(&d, "support@example.test", "One", "n1").await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    alice.ok("SELECT INBOX").await;
    bob.ok("SELECT INBOX").await;
    alice.ok("MOVE 1 Closed").await;
    deliver(&d, "support@example.test", "Two", "n2").await;
    // A FETCH by sequence number must not carry the EXPUNGE (RFC 3501 §7.4.1)...
    let (fetch, _) = bob.run("FETCH 1 (UID)").await;
    assert!(!fetch.iter().any(|l| l.contains("EXPUNGE")), "{fetch:?}");
    // ...a UID FETCH (or LIST, STATUS, NOOP…) does.
    let (fetch, _) = bob.run("UID FETCH 1:* (UID)").await;
    assert!(fetch.iter().any(|l| l == "* 1 EXPUNGE"), "{fetch:?}");
    assert!(fetch.iter().any(|l| l == "* 1 EXISTS"), "{fetch:?}");
    d.stop().await;
}

#[tokio::test]
async fn templates_are_shared_by_the_members_of_an_inbox() {
    let d = TestDaemon::start_with(|c| {
        team(c);
        c.inboxes[1].members.push("bob".into());
    })
    .await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let template = "From: support@example.test\r\nSubject: Refund policy\r\n\r\nHello {{contact.name}}, ...\r\n";
    alice
        .send_raw(
            format!(
                "a1 APPEND Templates {{{}+}}\r\n{template}\r\n",
                template.len()
            )
            .as_bytes(),
        )
        .await;
    let (_, tagged) = alice.until_tagged("a1").await;
    assert!(tagged.contains("OK"), "{tagged}");
    // Bob is in Support and Sales: Support's templates are under Templates/Support.
    let mut bob = d.imap_as("bob", "alice-password").await;
    let list = bob.ok("LIST \"\" \"Templates*\"").await;
    assert!(
        list.iter().any(|l| l.ends_with("Templates/Support"))
            && list.iter().any(|l| l.ends_with("Templates/Sales")),
        "{list:?}"
    );
    let status = bob.ok("STATUS Templates/Support (MESSAGES)").await;
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
    // Carol (Sales only) does not see Support's templates.
    let mut carol = d.imap_as("carol", "alice-password").await;
    let status = carol.ok("STATUS Templates (MESSAGES)").await;
    assert!(status[0].contains("MESSAGES 0"), "{status:?}");
    d.stop().await;
}

mod thunderbird;
