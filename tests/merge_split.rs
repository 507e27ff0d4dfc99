//! Merge and split (issue 12, SPEC §4): `#merge N` and `#split` from submission, with the
//! IMAP views, an IDLE session, threading to a merged number, contacts' timelines and
//! refusals. The CLI verbs are driven through the real binary in tests/process.rs.

use teamgate::store::{ConversationAction, ConversationId, Status, ThreadRule, TimelineKind};

use crate::harness::{SmtpConn, TestDaemon, conversation_number, exists_count};

/// The UID of the selected mailbox's message with this Message-ID.
async fn uid_of(c: &mut crate::harness::ImapConn, message_id: &str) -> u32 {
    let (lines, _) = c
        .run(&format!("UID SEARCH HEADER Message-ID \"{message_id}\""))
        .await;
    let uids: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH "))
        .flat_map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect();
    assert_eq!(uids.len(), 1, "{message_id}: {lines:?}");
    uids[0]
}

fn customer_mail(subject: &str, id: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: Erin <erin@customer.example>\r\nTo: support@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n{extra}\r\nabout {id}\r\n"
    )
    .into_bytes()
}

/// An agent's commands-only reply to `parent`.
fn commands(parent: &str, id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Support <support@example.test>\r\nTo: erin@customer.example\r\nSubject: Re: x\r\n\
         Message-ID: <{id}>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

async fn deliver(c: &mut SmtpConn<tokio::net::TcpStream>, raw: &[u8]) -> u64 {
    let (code, text) = c
        .send_mail("erin@customer.example", &["support@example.test"], raw)
        .await;
    assert_eq!(code, 250, "{text:?}");
    conversation_number(&text).unwrap_or_else(|| panic!("no conversation in {text:?}"))
}

#[tokio::test]
async fn merge_and_split_by_email_command_with_views_idle_and_timelines() {
    let d = TestDaemon::start().await;
    let store = d.handle.store();
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO customer.example", 250).await;
    let a = deliver(
        &mut smtp,
        &customer_mail("Printer broken", "a1@customer.example", ""),
    )
    .await;
    let b = deliver(
        &mut smtp,
        &customer_mail("Toner low", "b1@customer.example", ""),
    )
    .await;
    assert_ne!(a, b);
    let b_bytes = store
        .read_message(store.message_keys(ConversationId(b)).unwrap()[0])
        .unwrap();

    // A is closed; an agent watching INBOX (where only B is) while another merges.
    store
        .conversation_action(
            ConversationId(a),
            ConversationAction::SetStatus(Status::Closed),
        )
        .await
        .unwrap();
    let mut watcher = d.imap_as("alice", "alice-password").await;
    assert_eq!(exists_count(&watcher.ok("SELECT INBOX").await), 1);
    let b1_uid = uid_of(&mut watcher, "b1@customer.example").await;
    watcher.send_raw(b"i1 IDLE\r\n").await;
    let cont = watcher.read_line().await.unwrap();
    assert!(cont.starts_with(b"+ "), "{cont:?}");

    let mut alice = d.submission_as("alice", "alice-password").await;
    // Refusals first: nothing happens.
    for (body, why) in [
        (format!("#merge {a}"), "itself"),
        ("#merge 999".to_string(), "no such conversation"),
        ("#merge x".to_string(), "command"),
    ] {
        let (code, text) = alice
            .send_mail(
                "support@example.test",
                &["erin@customer.example"],
                &commands("a1@customer.example", "r0@example.test", &body),
            )
            .await;
        assert_eq!(code, 550, "{body}: {text:?}");
        assert!(text.join(" ").contains(why), "{body}: {text:?}");
    }
    let (code, text) = alice
        .send_mail(
            "support@example.test",
            &["erin@customer.example"],
            &commands(
                "a1@customer.example",
                "r1@example.test",
                &format!("#merge {b}"),
            ),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");
    assert!(text[0].contains(&format!("#{a}")), "{text:?}");

    // The merged conversation is open (B was): the IDLE session sees A's message come
    // in, and B's message keeps its UID (it never left the mailbox).
    let pushed = String::from_utf8_lossy(&watcher.read_line().await.unwrap()).into_owned();
    assert_eq!(pushed.trim_end(), "* 2 EXISTS");
    watcher.send_raw(b"DONE\r\n").await;
    let (untagged, _) = watcher.until_tagged("i1").await;
    assert!(
        untagged.iter().all(|l| !l.contains("EXPUNGE")),
        "{untagged:?}"
    );
    assert_eq!(uid_of(&mut watcher, "b1@customer.example").await, b1_uid);

    let merged = store.conversation(ConversationId(a)).unwrap().unwrap();
    let ids: Vec<&str> = merged
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids, ["a1@customer.example", "b1@customer.example"]);
    let by = merged.messages[1]
        .threaded_by
        .as_ref()
        .expect("threaded_by");
    assert_eq!(by.rule, ThreadRule::Merge, "{by:?}");
    let gone = store.conversation(ConversationId(b)).unwrap().unwrap();
    assert_eq!(gone.merged_into, Some(ConversationId(a)));
    assert!(gone.messages.is_empty());
    assert!(
        store
            .list_conversations()
            .unwrap()
            .iter()
            .all(|c| c.id.0 != b)
    );
    // Stored bytes untouched; the view holds both messages still, once each.
    let key = store.message_keys(ConversationId(a)).unwrap()[1];
    assert_eq!(store.read_message(key).unwrap(), b_bytes);
    assert_eq!(exists_count(&watcher.ok("SELECT INBOX").await), 2);

    // Mail naming the merged number, or a message of it, lands in the merged one.
    let tagged = deliver(
        &mut smtp,
        &customer_mail(&format!("Re: [#{b}] Toner low"), "b2@customer.example", ""),
    )
    .await;
    assert_eq!(tagged, a);
    let replied = deliver(
        &mut smtp,
        &customer_mail(
            "Re: Toner low",
            "b3@customer.example",
            "In-Reply-To: <b1@customer.example>\r\n",
        ),
    )
    .await;
    assert_eq!(replied, a);

    // The contact's timeline names the merged conversation only, and the merge.
    let erin = store.contact("erin@customer.example").unwrap().unwrap();
    assert!(
        erin.timeline
            .iter()
            .all(|e| e.conversation != Some(ConversationId(b))),
        "{erin:?}"
    );
    assert!(
        erin.timeline.iter().any(|e| e.kind == TimelineKind::Merged),
        "{erin:?}"
    );

    // #split in a reply to b1: a new conversation from b1 onward, linked to a.
    let (code, text) = alice
        .send_mail(
            "support@example.test",
            &["erin@customer.example"],
            &commands("b1@customer.example", "r2@example.test", "#split"),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");
    let split = conversation_number(&text).expect("conversation in reply");
    assert_ne!(split, a);
    let left = store.conversation(ConversationId(a)).unwrap().unwrap();
    let ids: Vec<&str> = left
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids, ["a1@customer.example"], "{left:?}");
    let new = store.conversation(ConversationId(split)).unwrap().unwrap();
    assert_eq!(new.linked_to, Some(ConversationId(a)));
    assert!(
        new.messages.iter().all(|m| m
            .threaded_by
            .as_ref()
            .is_some_and(|b| b.rule == ThreadRule::Split)),
        "{new:?}"
    );
    assert!(
        new.messages
            .iter()
            .any(|m| m.message_id == "b1@customer.example")
    );
    assert!(
        new.messages
            .iter()
            .any(|m| m.message_id == "b3@customer.example")
    );
    assert_eq!(
        uid_of(&mut watcher, "b1@customer.example").await,
        b1_uid,
        "a split keeps UIDs too"
    );
    // A reply to a split-off message follows it.
    let later = deliver(
        &mut smtp,
        &customer_mail(
            "Re: Toner low",
            "b4@customer.example",
            "In-Reply-To: <b3@customer.example>\r\n",
        ),
    )
    .await;
    assert_eq!(later, split);
    let erin = store.contact("erin@customer.example").unwrap().unwrap();
    assert!(
        erin.timeline.iter().any(|e| e.kind == TimelineKind::Split),
        "{erin:?}"
    );
    assert!(
        erin.contact.conversations.contains(&ConversationId(split)),
        "{erin:?}"
    );
    // #split with text, or of the first message, is refused.
    for (parent, body) in [
        ("b1@customer.example", "#split\r\n\r\nHello"),
        ("a1@customer.example", "#split"),
    ] {
        let (code, text) = alice
            .send_mail(
                "support@example.test",
                &["erin@customer.example"],
                &commands(parent, "r3@example.test", body),
            )
            .await;
        assert_eq!(code, 550, "{body}: {text:?}");
    }
    assert_eq!(exists_count(&watcher.ok("SELECT INBOX").await), 5);
    d.stop().await;
}
