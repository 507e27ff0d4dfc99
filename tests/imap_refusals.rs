//! Every refusal an agent's client can meet is a tagged NO or BAD whose text is valid IMAP
//! text (ASCII, no CR/LF) and says why: never a bare `BAD error` (Thunderbird showed one
//! for a Drafts → Trash move). Each command below is refused for a different reason.

use crate::harness::{ImapConn, TestDaemon, simple_message};

/// The tagged line's status and text, checked to be a reasoned refusal.
fn assert_reasoned(command: &str, tagged: &str) {
    let mut words = tagged.splitn(3, ' ');
    let _tag = words.next();
    let status = words.next().unwrap_or_default();
    let text = words.next().unwrap_or_default();
    assert!(
        status == "NO" || status == "BAD",
        "{command:?} -> {tagged:?}"
    );
    assert!(tagged.is_ascii(), "{command:?} -> {tagged:?}");
    // The text after an optional [CODE] names a reason, not a placeholder.
    let reason = text.rsplit_once("] ").map_or(text, |(_, r)| r).trim();
    assert!(
        reason.len() > 6 && reason != "error" && reason != "failed",
        "{command:?} -> {tagged:?}"
    );
}

#[tokio::test]
async fn refusals_are_tagged_with_a_valid_reason() {
    let d = TestDaemon::start_with(|c| {
        c.inboxes[0].name = "Assistenza Clienti Ü".into();
    })
    .await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO customer.example", 250).await;
    let msg = simple_message(
        "jane@customer.example",
        "Printer broken",
        "r1@customer.example",
    );
    let (code, text) = smtp
        .send_mail("jane@customer.example", &["support@example.test"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");

    // Before login.
    let mut anon = ImapConn::connect(d.imap_addr()).await;
    for command in [
        "SELECT INBOX",
        "LOGIN alice wrong-password",
        "AUTHENTICATE CRAM-MD5",
    ] {
        let (_, tagged) = anon.run(command).await;
        assert_reasoned(command, &tagged);
    }

    let mut c = d.imap_as("alice", "alice-password").await;
    // Outside a selected mailbox, and with names that do not exist or are not allowed.
    for command in [
        "FETCH 1 (FLAGS)",
        "EXPUNGE",
        "SELECT Nowhere",
        "SELECT \"Inboxes/Ünknown…\"",
        "STATUS Nowhere (MESSAGES)",
        "CREATE Inboxes/New",
        "CREATE Mine/Sub",
        "DELETE INBOX",
        "RENAME INBOX Personal/Old",
        "APPEND Closed {3+}\r\nx y",
    ] {
        let (_, tagged) = c.run(command).await;
        assert_reasoned(command, &tagged);
    }
    // A private message cannot be moved into a team view other than INBOX/Inboxes.
    let draft = simple_message("support@example.test", "Draft", "d1@example.test");
    c.send_raw(format!("a1 APPEND Drafts (\\Draft) {{{}+}}\r\n", draft.len()).as_bytes())
        .await;
    c.send_raw(&draft).await;
    c.send_raw(b"\r\n").await;
    let (_, appended) = c.until_tagged("a1").await;
    assert!(appended.starts_with("a1 OK"), "{appended}");
    c.ok("SELECT Drafts").await;
    let (_, tagged) = c.run("UID MOVE 1 Closed").await;
    assert_reasoned("UID MOVE 1 Closed (from Drafts)", &tagged);
    // Read-only, bad sets and unknown flags.
    c.ok("EXAMINE INBOX").await;
    for command in [
        "STORE 1 +FLAGS (\\Seen)",
        "FETCH 0 (FLAGS)",
        "STORE 1 +FLAGS (\\Bogus)",
    ] {
        let (_, tagged) = c.run(command).await;
        assert_reasoned(command, &tagged);
    }
    // Syntax errors get a tagged BAD with the parser's reason.
    for command in ["FETCH (", "UID FROB 1", "SEARCH CHARSET X-UNKNOWN TEXT x"] {
        let (_, tagged) = c.run(command).await;
        assert_reasoned(command, &tagged);
    }
    d.stop().await;
}
