//! Issue 11, Thunderbird: the command lines Thunderbird 153 sends
//! (/work/shared/clients/thunderbird-153/imap.log) for deleting a draft, the junk key,
//! the `Sent` copy after sending, and the `updated` field the CLI reports after each
//! conversation gesture.

use std::time::Duration;

use teamgate::config::Config;

use super::{deliver, has, team};
use crate::harness::{ImapConn, TestDaemon, exists_count};

/// A reply as Thunderbird composes it (headers in its order, imap.log ~1487, ~2967).
fn thunderbird_reply(message_id: &str, parent: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "Message-ID: <{message_id}>\r\nDate: Wed, 2 Dec 2026 12:50:02 +0000\r\nMIME-Version: 1.0\r\nUser-Agent: Mozilla Thunderbird\r\nSubject: Re: Signed contract attached\r\nTo: Erin Chen <{parent}>\r\nReferences: <{parent}>\r\nContent-Language: en-US\r\nFrom: Alice Example <support@example.test>\r\n{extra}In-Reply-To: <{parent}>\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\nThanks Erin, we received the signed contract. Alice (support)\r\n{body}"
    )
    .into_bytes()
}

/// `<tag> append "<mailbox>" (<flags>) {n+}` with the message as a LITERAL+ literal.
async fn append(c: &mut ImapConn, tag: &str, mailbox: &str, flags: &str, msg: &[u8]) -> String {
    c.send_raw(
        format!(
            "{tag} append \"{mailbox}\" ({flags}) {{{}+}}\r\n",
            msg.len()
        )
        .as_bytes(),
    )
    .await;
    c.send_raw(msg).await;
    c.send_raw(b"\r\n").await;
    let (_, tagged) = c.until_tagged(tag).await;
    tagged
}

/// Reads IDLE pushes until one satisfies `want` (at most `max` lines).
async fn pushed_until(c: &mut ImapConn, max: usize, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..max {
        let line = String::from_utf8_lossy(&c.read_line().await.unwrap()).into_owned();
        let hit = want(&line);
        seen.push(line);
        if hit {
            return seen;
        }
    }
    panic!("not pushed: {seen:?}");
}

#[tokio::test]
async fn issue_11_deleting_a_draft_moves_it_out_of_drafts_and_clears_replying() {
    let d = TestDaemon::start_with(team).await;
    deliver(
        &d,
        "support@example.test",
        "Signed contract attached",
        "erin",
    )
    .await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    bob.send_raw(b"i1 IDLE\r\n").await;
    assert!(bob.read_line().await.unwrap().starts_with(b"+ "));

    // imap.log 2967: Thunderbird saves the reply draft.
    let mut alice = d.imap_as("alice", "alice-password").await;
    let draft = thunderbird_reply(
        "6063c73a-draft@example.test",
        "erin@customer.example",
        "X-Mozilla-Draft-Info: internal/draft; vcard=0; receipt=0; DSN=0; uuencode=0;\r\n attachmentreminder=0; deliveryformat=0\r\nX-Identity-Key: id1\r\nFcc: imap://alice@127.0.0.1/Sent\r\n",
        "",
    );
    let tagged = append(&mut alice, "183", "Drafts", "\\Draft", &draft).await;
    assert!(tagged.starts_with("183 OK"), "{tagged}");
    pushed_until(&mut bob, 4, |l| {
        l.contains("FETCH") && l.contains("$Replying")
    })
    .await;

    // imap.log 4948-4970: select Drafts, mark it seen, Delete = move to Trash.
    alice.ok("select \"Drafts\"").await;
    alice.ok("uid store 1 +Flags (\\Seen)").await;
    let (untagged, tagged) = alice.run("uid move 1 \"Trash\"").await;
    assert!(tagged.contains(" OK "), "{tagged}");
    assert!(has(&untagged, "* 1 EXPUNGE"), "{untagged:?}");
    // The draft has a uid in Alice's Trash, so the MOVE names it (RFC 4315 COPYUID).
    let copyuid = untagged
        .iter()
        .find(|l| l.contains("[COPYUID "))
        .unwrap_or_else(|| panic!("no COPYUID in {untagged:?}"));
    let trash_uid: u32 = copyuid
        .split([' ', ']'])
        .nth(5)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("bad COPYUID {copyuid}"));
    // Bob's IDLE session is told the conversation is no longer being replied to.
    pushed_until(&mut bob, 4, |l| {
        l.contains("FETCH (") && !l.contains("$Replying")
    })
    .await;
    bob.send_raw(b"DONE\r\n").await;
    bob.until_tagged("i1").await;

    // The draft left Drafts and is in Alice's Trash only (never a teammate's), with
    // the flags it had.
    assert_eq!(exists_count(&alice.ok("select \"Drafts\"").await), 0);
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 1);
    let fetched = alice
        .ok(&format!(
            "UID FETCH {trash_uid} (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        ))
        .await;
    assert!(
        has(&fetched, "\\Seen") && has(&fetched, "\\Draft"),
        "{fetched:?}"
    );
    assert!(has(&fetched, "6063c73a-draft@example.test"), "{fetched:?}");
    assert_eq!(exists_count(&bob.ok("SELECT Trash").await), 0);
    // The conversation itself stayed open, and is not in Trash for anyone.
    assert_eq!(exists_count(&bob.ok("SELECT INBOX").await), 1);

    // Restore: from Trash back to Drafts, where it is a draft again.
    alice.ok("SELECT Trash").await;
    let (untagged, tagged) = alice.run(&format!("UID MOVE {trash_uid} Drafts")).await;
    assert!(tagged.contains(" OK "), "{tagged}");
    assert!(
        has(&untagged, "COPYUID") && has(&untagged, "* 1 EXPUNGE"),
        "{untagged:?}"
    );
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 0);
    assert_eq!(exists_count(&alice.ok("select \"Drafts\"").await), 1);
    let fetched = alice
        .ok("FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        .await;
    assert!(has(&fetched, "6063c73a-draft@example.test"), "{fetched:?}");

    // A client without MOVE deletes by COPY + \Deleted + EXPUNGE: the COPY puts a copy
    // in Trash, the EXPUNGE removes the original.
    alice.ok("CREATE Personal/Notes").await;
    let tagged = append(&mut alice, "a1", "Personal/Notes", "\\Seen", &draft).await;
    assert!(tagged.starts_with("a1 OK"), "{tagged}");
    alice.ok("SELECT Personal/Notes").await;
    let (_, tagged) = alice.run("COPY 1 Trash").await;
    assert!(tagged.contains(" OK [COPYUID "), "{tagged}");
    alice.ok("STORE 1 +FLAGS (\\Deleted)").await;
    assert!(has(&alice.ok("EXPUNGE").await, "* 1 EXPUNGE"));
    assert_eq!(exists_count(&alice.ok("SELECT Personal/Notes").await), 0);

    // Deleted private messages survive a restart.
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, team).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 1);
    // Emptying Trash deletes them for good; trashed conversations there stay.
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    bob.ok("MOVE 1 Trash").await;
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 2);
    alice.ok("STORE 1:* +FLAGS (\\Deleted)").await;
    alice.ok("EXPUNGE").await;
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 1);
    let fetched = alice
        .ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert!(has(&fetched, "Signed contract attached"), "{fetched:?}");
    assert!(!has(&fetched, "Re: Signed"), "{fetched:?}");
    assert_eq!(exists_count(&bob.ok("SELECT Trash").await), 1);
    d.stop().await;
}

#[tokio::test]
async fn issue_11_junk_is_one_place_moving_in_and_out() {
    let d = TestDaemon::start_with(team).await;
    let conv = deliver(&d, "support@example.test", "Cheap watches", "spam1").await;
    let store = d.handle.store().clone();
    let listed = |s: &teamgate::store::Store| {
        s.list_conversations()
            .unwrap()
            .iter()
            .any(|c| c.id.0 == conv)
    };
    let mut alice = d.imap_as("alice", "alice-password").await;

    // INBOX → Junk (imap.log 2847, the junk key): in Junk and `junk list` only.
    alice.ok("SELECT INBOX").await;
    let (_, tagged) = alice.run("uid move 1 \"Junk\"").await;
    assert!(tagged.contains(" OK "), "{tagged}");
    assert_eq!(store.junk_list().unwrap().len(), 1);
    assert!(!listed(&store), "spam is not in conversations list");
    let shown = |s: &teamgate::store::Store| {
        s.conversation(teamgate::store::ConversationId(conv))
            .unwrap()
            .expect("conversation")
    };
    assert!(shown(&store).junk, "`conversations show` says it is junk");
    assert_eq!(
        exists_count(&alice.ok("SELECT Trash").await),
        0,
        "not in the trash"
    );
    assert_eq!(exists_count(&alice.ok("SELECT INBOX").await), 0);
    assert_eq!(exists_count(&alice.ok("SELECT Junk").await), 1);

    // Junk → INBOX (imap.log 3196): a conversation again, not junk.
    let (_, tagged) = alice.run("uid move 1 \"INBOX\"").await;
    assert!(tagged.contains(" OK "), "{tagged}");
    assert!(store.junk_list().unwrap().is_empty());
    assert!(listed(&store));
    assert!(!shown(&store).junk);
    assert_eq!(exists_count(&alice.ok("SELECT Junk").await), 0);
    assert_eq!(exists_count(&alice.ok("SELECT INBOX").await), 1);

    // Deleted, then junk from the trash, then restored from Junk: still one place each time.
    alice.ok("MOVE 1 Trash").await;
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 1);
    alice.ok("MOVE 1 Junk").await;
    assert_eq!(
        exists_count(&alice.ok("SELECT Trash").await),
        0,
        "junk leaves the trash"
    );
    assert!(!listed(&store));
    assert_eq!(store.junk_list().unwrap().len(), 1);
    alice.ok("SELECT Junk").await;
    alice.ok("MOVE 1 Trash").await;
    assert!(
        store.junk_list().unwrap().is_empty(),
        "not spam: out of Junk"
    );
    assert_eq!(exists_count(&alice.ok("SELECT Junk").await), 0);
    // Trash → INBOX after a junk: in INBOX only.
    let trash = alice.ok("SELECT Trash").await;
    assert_eq!(exists_count(&trash), 1);
    let (_, tagged) = alice.run("MOVE 1 INBOX").await;
    assert!(tagged.contains(" OK "), "{tagged}");
    assert_eq!(exists_count(&alice.ok("SELECT INBOX").await), 1);
    assert_eq!(exists_count(&alice.ok("SELECT Junk").await), 0);
    assert_eq!(exists_count(&alice.ok("SELECT Trash").await), 0);
    assert!(store.junk_list().unwrap().is_empty());
    let c = store.list_conversations().unwrap();
    let c = c.iter().find(|c| c.id.0 == conv).unwrap();
    assert_eq!(c.status, teamgate::store::Status::Open);

    // A reply to a conversation judged spam starts its own, visible conversation.
    alice.ok("SELECT INBOX").await;
    alice.ok("MOVE 1 Junk").await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO customer.example", 250).await;
    let follow = b"From: spam1@customer.example\r\nTo: support@example.test\r\nSubject: Re: Cheap watches\r\nMessage-ID: <spam2@customer.example>\r\nIn-Reply-To: <spam1@customer.example>\r\n\r\nStill cheap\r\n";
    let (code, text) = smtp
        .send_mail("spam1@customer.example", &["support@example.test"], follow)
        .await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(
        exists_count(&alice.ok("SELECT INBOX").await),
        1,
        "not hidden"
    );
    assert!(!listed(&store));
    d.stop().await;
}

#[tokio::test]
async fn issue_11_sent_copy_gets_the_clients_flags_and_names_the_message_sent() {
    let d = TestDaemon::start_with(team).await;
    let conv = deliver(
        &d,
        "support@example.test",
        "Signed contract attached",
        "erin",
    )
    .await;
    let msg = thunderbird_reply(
        "fed8f139-sent@example.test",
        "erin@customer.example",
        "",
        "",
    );
    let mut smtp = d.submission_as("alice", "alice-password").await;
    let (code, text) = smtp
        .send_mail("support@example.test", &["erin@customer.example"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");

    // imap.log 1486: Thunderbird's copy for Sent, flagged \Seen.
    let mut alice = d.imap_as("alice", "alice-password").await;
    let tagged = append(&mut alice, "123", "Sent", "\\Seen", &msg).await;
    assert!(tagged.starts_with("123 OK [APPENDUID "), "{tagged}");
    let uid = tagged
        .split(['[', ']'])
        .nth(1)
        .and_then(|code| code.split(' ').nth(2))
        .unwrap()
        .to_string();

    // imap.log 4321: her own reply is not unread for her; for bob it still is.
    let status = alice
        .ok("STATUS \"Sent\" (UIDNEXT MESSAGES UNSEEN RECENT)")
        .await;
    assert!(
        has(&status, "MESSAGES 1") && has(&status, "UNSEEN 0"),
        "{status:?}"
    );
    let mut bob = d.imap_as("bob", "alice-password").await;
    let status = bob.ok("STATUS \"Sent\" (UNSEEN)").await;
    assert!(has(&status, "UNSEEN 1"), "{status:?}");

    // APPENDUID names the reply as sent: the client's Message-ID, teamgate's [#n] tag.
    alice.ok("SELECT Sent").await;
    let (fetch, tagged) = alice
        .run(&format!(
            "UID FETCH {uid} (FLAGS BODY.PEEK[HEADER.FIELDS (Message-ID Subject)])"
        ))
        .await;
    assert!(tagged.contains(" OK "), "{tagged}");
    let fetched = fetch.join("\n");
    assert!(fetched.contains("\\Seen"), "{fetched}");
    assert!(
        fetched.contains("<fed8f139-sent@example.test>"),
        "{fetched}"
    );
    assert!(fetched.contains(&format!("[#{conv}]")), "{fetched}");
    d.stop().await;
}

/// `team`, with alice also in Sales, so she can transfer a conversation there.
fn two_teams(c: &mut Config) {
    team(c);
    c.inboxes[1].members.push("alice".into());
}

#[tokio::test]
async fn issue_11_updated_follows_every_conversation_action() {
    let d = TestDaemon::start_with(two_teams).await;
    let conv = deliver(&d, "support@example.test", "Printer broken", "u1").await;
    let store = d.handle.store().clone();
    let updated = || {
        let c = store.list_conversations().unwrap();
        let at = &c.iter().find(|c| c.id.0 == conv).unwrap().updated;
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut last = updated();
    // (mailbox the conversation is in, where Thunderbird moves it, what that means)
    // Thunderbird archives into `Closed/<this year>` (imap.log 1153), creating it first.
    let archive = format!("Closed/{}", time::OffsetDateTime::now_utc().year());
    alice.ok(&format!("create \"{archive}\"")).await;
    for (from, to, action) in [
        ("INBOX", archive.as_str(), "close"),
        (archive.as_str(), "INBOX", "reopen"),
        ("INBOX", "Assigned/bob", "assign"),
        ("INBOX", "Inboxes/Sales", "transfer"),
        ("INBOX", "Trash", "trash"),
        ("Trash", "INBOX", "restore"),
    ] {
        // `updated` has whole seconds.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        alice.ok(&format!("SELECT \"{from}\"")).await;
        let (_, tagged) = alice.run(&format!("MOVE 1 \"{to}\"")).await;
        assert!(tagged.contains(" OK "), "{action}: {tagged}");
        let now = updated();
        assert!(now > last, "{action}: updated stayed at {last}");
        last = now;
    }
    d.stop().await;
}
