//! Agents' replies through the submission port (SPEC §6) against the real daemon.

use teamgate::{
    config::Config,
    store::{ConversationId, Direction},
};

use crate::harness::{SmtpConn, TestDaemon, blocking_runtime, run_python, simple_message};

/// Bob joins Support; Sales (carol) is another team; root is an admin in no inbox.
fn team(c: &mut Config) {
    for (login, admin) in [("bob", false), ("carol", false), ("root", true)] {
        let mut a = c.agents[0].clone();
        a.login = login.into();
        a.name = format!("Agent {login}");
        a.email = format!("{login}@example.test");
        a.admin = admin;
        c.agents.push(a);
    }
    c.inboxes[0].members.push("bob".into());
    let mut sales = c.inboxes[0].clone();
    sales.name = "Sales".into();
    sales.addresses = vec!["sales@example.test".into()];
    sales.members = vec!["carol".into()];
    c.inboxes.push(sales);
}

/// A customer writes in; returns the conversation number.
async fn customer_writes(d: &TestDaemon, id: &str) -> u64 {
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example", 250).await;
    let msg = simple_message("jane@customer.example", "Printer broken", id);
    let (code, text) = c
        .send_mail("jane@customer.example", &["support@example.test"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");
    crate::harness::conversation_number(&text).expect("conversation number")
}

fn reply(from: &str, to: &str, parent: &str, id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Support <{from}>\r\nTo: {to}\r\nSubject: Re: Printer broken\r\nMessage-ID: <{id}>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\nDate: Tue, 24 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let d = TestDaemon::start_with(team).await;
    let mut c = SmtpConn::connect(d.submission_addr()).await;
    let ehlo = c.cmd("EHLO agent.example", 250).await;
    assert!(
        ehlo.iter()
            .any(|l| l.contains("AUTH PLAIN LOGIN") || l.contains("AUTH LOGIN PLAIN")),
        "{ehlo:?}"
    );
    c.cmd("MAIL FROM:<support@example.test>", 530).await;
    c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", 535).await;
    // AUTH LOGIN, step by step.
    c.cmd("AUTH LOGIN", 334).await;
    c.cmd("YWxpY2U=", 334).await;
    c.cmd("YWxpY2UtcGFzc3dvcmQ=", 235).await;
    c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 503).await;
    // Sending as someone else's inbox, or as a non-team address, is refused.
    let r = c.cmd("MAIL FROM:<sales@example.test>", 550).await;
    assert!(
        r[0].starts_with("550 5.7.1") && r[0].contains("Sales"),
        "{r:?}"
    );
    c.cmd("MAIL FROM:<alice@example.test>", 550).await;
    c.cmd("MAIL FROM:<support@example.test>", 250).await;
    c.cmd("RCPT TO:<anyone@elsewhere.example>", 250).await;
    c.cmd("QUIT", 221).await;

    // An admin who is in no inbox cannot send for it.
    let mut root = d.submission_as("root", "alice-password").await;
    root.cmd("MAIL FROM:<support@example.test>", 550).await;
    // The MX port never relays, even for a team sender.
    let mut mx = d.smtp().await;
    mx.cmd("EHLO x.example", 250).await;
    mx.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 503).await;
    mx.cmd("MAIL FROM:<support@example.test>", 250).await;
    mx.cmd("RCPT TO:<anyone@elsewhere.example>", 550).await;
    d.stop().await;
}

#[tokio::test]
async fn no_auth_over_plaintext_unless_allowed() {
    let d = TestDaemon::start_with(|c| c.allow_plaintext_auth = false).await;
    let mut c = SmtpConn::connect(d.submission_addr()).await;
    let ehlo = c.cmd("EHLO agent.example", 250).await;
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    let r = c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 538).await;
    assert!(r[0].starts_with("538 5.7.11"), "{r:?}");
    d.stop().await;
}

#[tokio::test]
async fn brute_force_is_throttled() {
    let d = TestDaemon::start_with(team).await;
    let mut c = SmtpConn::connect(d.submission_addr()).await;
    c.cmd("EHLO agent.example", 250).await;
    for _ in 0..5 {
        c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", 535).await;
    }
    let r = c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 454).await;
    assert!(r[0].starts_with("454 4.7.0"), "{r:?}");
    d.stop().await;
}

#[tokio::test]
async fn a_reply_is_logged_in_its_conversation_and_answers_it() {
    let d = TestDaemon::start_with(team).await;
    let conv = customer_writes(&d, "q1@customer.example").await;
    let mut c = d.submission_as("alice", "alice-password").await;
    let msg = reply(
        "support@example.test",
        "Jane <jane@customer.example>",
        "q1@customer.example",
        "r1@example.test",
        "We are on it.",
    );
    let (code, text) = c
        .send_mail("support@example.test", &["jane@customer.example"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");
    let store = d.handle.store();
    let detail = store.conversation(ConversationId(conv)).unwrap().unwrap();
    assert_eq!(detail.messages.len(), 2);
    assert_eq!(detail.messages[1].direction, Direction::Out);
    let contact = store.contact("jane@customer.example").unwrap().unwrap();
    assert!(
        contact
            .timeline
            .iter()
            .any(|t| format!("{:?}", t.kind) == "Outbound"),
        "{:?}",
        contact.timeline
    );

    // IMAP: the customer's message is \Answered for everyone; the reply is in Sent.
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    let (flags, _) = bob.run("FETCH 1 (FLAGS)").await;
    assert!(flags[0].contains("\\Answered"), "{flags:?}");
    let sent = bob.ok("SELECT Sent").await;
    assert!(sent.iter().any(|l| l == "* 1 EXISTS"), "{sent:?}");
    d.stop().await;
}

#[tokio::test]
async fn notes_are_comments_and_never_mixed_with_customers() {
    let d = TestDaemon::start_with(team).await;
    let conv = customer_writes(&d, "n1@customer.example").await;
    let notes = d.handle.config().workflow.notes_address.clone();
    let mut c = d.submission_as("alice", "alice-password").await;
    let note = reply(
        "support@example.test",
        &notes,
        "n1@customer.example",
        "note1@example.test",
        "Customer is VIP.",
    );
    let (code, text) = c.send_mail("support@example.test", &[&notes], &note).await;
    assert_eq!(code, 250, "{text:?}");
    let detail = d
        .handle
        .store()
        .conversation(ConversationId(conv))
        .unwrap()
        .unwrap();
    assert_eq!(detail.messages[1].direction, Direction::Comment);
    let mixed = reply(
        "support@example.test",
        &notes,
        "n1@customer.example",
        "note2@example.test",
        "oops",
    );
    c.cmd("MAIL FROM:<support@example.test>", 250).await;
    c.cmd(&format!("RCPT TO:<{notes}>"), 250).await;
    c.cmd("RCPT TO:<jane@customer.example>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(&crate::harness::dot_stuff(&mixed)).await;
    c.send_raw(b".\r\n").await;
    let r = c.expect(550).await;
    assert!(r[0].contains("only recipient"), "{r:?}");
    // IMAP shows the note with $Comment.
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("SELECT INBOX").await;
    let (flags, _) = alice.run("FETCH 2 (FLAGS)").await;
    assert!(flags[0].contains("$Comment"), "{flags:?}");
    d.stop().await;
}

#[tokio::test]
async fn forward_to_another_team_is_delivered_locally_to_the_original_sender() {
    let d = TestDaemon::start_with(team).await;
    customer_writes(&d, "fw1@customer.example").await;
    let mut c = d.submission_as("alice", "alice-password").await;
    let fwd = b"From: Support <support@example.test>\r\nTo: sales@example.test\r\nSubject: Fwd: Printer broken\r\nMessage-ID: <fwd1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nFor you.\r\n\r\n---------- Forwarded message ---------\r\nFrom: Jane <jane@customer.example>\r\nDate: Tue, 24 Nov 2026 at 10:00\r\nSubject: Printer broken\r\nTo: support@example.test\r\n\r\nHello, my printer is broken.\r\n";
    let (code, text) = c
        .send_mail("support@example.test", &["sales@example.test"], fwd)
        .await;
    assert_eq!(code, 250, "{text:?}");
    let convs = d.handle.store().list_conversations().unwrap();
    let sales: Vec<_> = convs.iter().filter(|c| c.inbox == "Sales").collect();
    assert_eq!(sales.len(), 1, "{convs:?}");
    assert_eq!(sales[0].contact.as_deref(), Some("jane@customer.example"));
    d.stop().await;
}

#[tokio::test]
async fn collision_guard_refuses_once_then_lets_it_through() {
    let d = TestDaemon::start_with(team).await;
    customer_writes(&d, "col1@customer.example").await;
    let mut bob = d.submission_as("bob", "alice-password").await;
    let first = reply(
        "support@example.test",
        "jane@customer.example",
        "col1@customer.example",
        "bob1@example.test",
        "Bob here.",
    );
    assert_eq!(
        bob.send_mail("support@example.test", &["jane@customer.example"], &first)
            .await
            .0,
        250
    );
    let mut alice = d.submission_as("alice", "alice-password").await;
    let late = reply(
        "support@example.test",
        "jane@customer.example",
        "col1@customer.example",
        "alice1@example.test",
        "Alice here.",
    );
    let (code, text) = alice
        .send_mail("support@example.test", &["jane@customer.example"], &late)
        .await;
    assert_eq!(code, 450, "{text:?}");
    assert!(
        text[0].starts_with("450 4.7.1") && text[0].contains("bob"),
        "{text:?}"
    );
    // Sent again, the same message goes through.
    let (code, text) = alice
        .send_mail("support@example.test", &["jane@customer.example"], &late)
        .await;
    assert_eq!(code, 250, "{text:?}");
    d.stop().await;
}

/// Thunderbird's "send again" from the same compose window: a new Message-ID on every
/// attempt, the same In-Reply-To and References (../shared/clients/thunderbird-153). The
/// override belongs to that agent, conversation and parent only.
#[tokio::test]
async fn collision_override_is_keyed_on_agent_conversation_and_parent_not_message_id() {
    let d = TestDaemon::start_with(|c| {
        team(c);
        c.inboxes[0].members.push("carol".into());
    })
    .await;
    customer_writes(&d, "col2@customer.example").await;
    let mut bob = d.submission_as("bob", "alice-password").await;
    let first = reply(
        "support@example.test",
        "jane@customer.example",
        "col2@customer.example",
        "bob2@example.test",
        "Bob here.",
    );
    let sent = bob
        .send_mail("support@example.test", &["jane@customer.example"], &first)
        .await;
    assert_eq!(sent.0, 250, "{sent:?}");
    let mut alice = d.submission_as("alice", "alice-password").await;
    let attempt = |message_id: &str| {
        reply(
            "support@example.test",
            "jane@customer.example",
            "col2@customer.example",
            message_id,
            "Alice here.",
        )
    };
    let (code, text) = alice
        .send_mail(
            "support@example.test",
            &["jane@customer.example"],
            &attempt("tb-1@example.test"),
        )
        .await;
    assert_eq!(code, 450, "{text:?}");
    // Another agent answering the same message is not let through by Alice's warning.
    let mut carol = d.submission_as("carol", "alice-password").await;
    let (code, text) = carol
        .send_mail(
            "support@example.test",
            &["jane@customer.example"],
            &attempt("tb-c@example.test"),
        )
        .await;
    assert_eq!(code, 450, "{text:?}");
    // Alice sends again: Thunderbird's new Message-ID, same parent. It goes through once.
    let (code, text) = alice
        .send_mail(
            "support@example.test",
            &["jane@customer.example"],
            &attempt("tb-2@example.test"),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");
    let messages = d.handle.store().list_conversations().unwrap();
    let conv = messages
        .iter()
        .find(|c| c.message_ids.iter().any(|m| m == "tb-2@example.test"))
        .unwrap_or_else(|| panic!("the retried reply is filed: {messages:?}"));
    assert!(
        !conv.message_ids.iter().any(|m| m == "tb-1@example.test"),
        "{conv:?}"
    );
    d.stop().await;
}

#[test]
fn python_smtplib_submits_with_login() {
    let rt = blocking_runtime();
    let d = rt.block_on(TestDaemon::start_with(team));
    rt.block_on(customer_writes(&d, "py1@customer.example"));
    let addr = d.submission_addr();
    let script = format!(
        r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Support <support@example.test>"
m["To"] = "jane@customer.example"
m["Subject"] = "Re: Printer broken"
m["In-Reply-To"] = "<py1@customer.example>"
m.set_content("Fixed.")
with smtplib.SMTP("{ip}", {port}, timeout=20) as s:
    s.ehlo("agent.example")
    s.login("alice", "alice-password")
    s.send_message(m)
"#,
        ip = addr.ip(),
        port = addr.port()
    );
    run_python(&script, "smtplib submission");
    let convs = d.handle.store().list_conversations().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(
        d.handle
            .store()
            .conversation(convs[0].id)
            .unwrap()
            .unwrap()
            .messages
            .len(),
        2
    );
    rt.block_on(d.stop());
}

#[tokio::test]
async fn the_clients_copy_in_sent_is_recognised_not_stored_twice() {
    let d = TestDaemon::start_with(team).await;
    let conv = customer_writes(&d, "s1@customer.example").await;
    let mut c = d.submission_as("alice", "alice-password").await;
    let msg = reply(
        "support@example.test",
        "jane@customer.example",
        "s1@customer.example",
        "sent1@example.test",
        "Done.",
    );
    assert_eq!(
        c.send_mail("support@example.test", &["jane@customer.example"], &msg)
            .await
            .0,
        250
    );
    let mut imap = d.imap_as("alice", "alice-password").await;
    // What Thunderbird does after sending: APPEND the same message to Sent.
    imap.send_raw(format!("a1 APPEND Sent (\\Seen) {{{}+}}\r\n", msg.len()).as_bytes())
        .await;
    imap.send_raw(&msg).await;
    imap.send_raw(b"\r\n").await;
    let (_, tagged) = imap.until_tagged("a1").await;
    assert!(tagged.contains("OK [APPENDUID "), "{tagged}");
    let sent = imap.ok("SELECT Sent").await;
    assert!(
        sent.iter().any(|l| l == "* 1 EXISTS"),
        "stored once: {sent:?}"
    );
    assert_eq!(
        d.handle
            .store()
            .conversation(ConversationId(conv))
            .unwrap()
            .unwrap()
            .messages
            .len(),
        2
    );
    // A message sent some other way is logged as sent (in its conversation) when appended.
    let other = reply(
        "support@example.test",
        "jane@customer.example",
        "s1@customer.example",
        "phone-note@example.test",
        "As discussed.",
    );
    imap.send_raw(format!("a2 APPEND Sent {{{}+}}\r\n", other.len()).as_bytes())
        .await;
    imap.send_raw(&other).await;
    imap.send_raw(b"\r\n").await;
    let (_, tagged) = imap.until_tagged("a2").await;
    assert!(tagged.contains("OK"), "{tagged}");
    assert_eq!(
        d.handle
            .store()
            .conversation(ConversationId(conv))
            .unwrap()
            .unwrap()
            .messages
            .len(),
        3
    );
    // Someone else's inbox address as From is refused.
    let foreign = b"From: sales@example.test\r\nSubject: x\r\nMessage-ID: <f@x>\r\n\r\nx\r\n";
    imap.send_raw(format!("a3 APPEND Sent {{{}+}}\r\n", foreign.len()).as_bytes())
        .await;
    imap.send_raw(foreign).await;
    imap.send_raw(b"\r\n").await;
    let (_, tagged) = imap.until_tagged("a3").await;
    assert!(tagged.starts_with("a3 NO"), "{tagged}");
    d.stop().await;
}

#[tokio::test]
async fn a_saved_reply_draft_shows_replying_to_teammates_until_sent() {
    let d = TestDaemon::start_with(team).await;
    customer_writes(&d, "d1@customer.example").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    bob.send_raw(b"i1 IDLE\r\n").await;
    assert!(bob.read_line().await.unwrap().starts_with(b"+ "));

    // Alice saves a reply draft (what Thunderbird does while she types).
    let mut alice = d.imap_as("alice", "alice-password").await;
    let draft = reply(
        "support@example.test",
        "jane@customer.example",
        "d1@customer.example",
        "draft1@example.test",
        "Working on it",
    );
    alice
        .send_raw(format!("a1 APPEND Drafts (\\Draft) {{{}+}}\r\n", draft.len()).as_bytes())
        .await;
    alice.send_raw(&draft).await;
    alice.send_raw(b"\r\n").await;
    let (_, tagged) = alice.until_tagged("a1").await;
    assert!(tagged.contains("OK"), "{tagged}");
    // Bob's IDLE session is told at once.
    let pushed = String::from_utf8_lossy(&bob.read_line().await.unwrap()).into_owned();
    assert!(
        pushed.contains("FETCH") && pushed.contains("$Replying"),
        "{pushed}"
    );
    // Alice herself does not see it on her own conversation.
    alice.ok("SELECT INBOX").await;
    let (flags, _) = alice.run("FETCH 1 (FLAGS)").await;
    assert!(!flags[0].contains("$Replying"), "{flags:?}");

    // She sends the reply: the keyword goes away for Bob.
    let mut smtp = d.submission_as("alice", "alice-password").await;
    let sent = reply(
        "support@example.test",
        "jane@customer.example",
        "d1@customer.example",
        "final1@example.test",
        "Done",
    );
    assert_eq!(
        smtp.send_mail("support@example.test", &["jane@customer.example"], &sent)
            .await
            .0,
        250
    );
    let mut cleared = false;
    for _ in 0..4 {
        let line = String::from_utf8_lossy(&bob.read_line().await.unwrap()).into_owned();
        if line.contains("FETCH (") && line.starts_with("* 1 FETCH") && !line.contains("$Replying")
        {
            cleared = true;
            break;
        }
    }
    assert!(cleared, "bob was told $Replying is gone");
    bob.send_raw(b"DONE\r\n").await;
    bob.until_tagged("i1").await;
    d.stop().await;
}

fn body_reply(id: &str, parent: &str, body: &str) -> Vec<u8> {
    reply(
        "support@example.test",
        "Jane <jane@customer.example>",
        parent,
        id,
        body,
    )
}

#[tokio::test]
async fn email_commands_placeholders_and_snippets() {
    let d = TestDaemon::start_with(team).await;
    let snippets = d.handle.config().workflow.snippets_dir.clone();
    std::fs::create_dir_all(&snippets).unwrap();
    std::fs::write(
        snippets.join("thanks.txt"),
        "Thanks for your patience, {{contact.name}}.\n",
    )
    .unwrap();
    let conv = ConversationId(customer_writes(&d, "cmd1@customer.example").await);
    let store = d.handle.store();
    let mut c = d.submission_as("alice", "alice-password").await;

    // Commands at the top are carried out and stripped; placeholders expanded.
    let msg = body_reply(
        "cmdr1@example.test",
        "cmd1@customer.example",
        "#assign bob\r\n\r\nHello {{contact.name}},\r\n{{snippet:thanks}}\r\n-- \r\n{{agent.name}}, ticket {{conversation.id}}",
    );
    let (code, text) = c
        .send_mail("support@example.test", &["jane@customer.example"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");
    let info = store.conversation_info(conv).unwrap().unwrap();
    assert_eq!(info.assignee.as_deref(), Some("bob"));
    let keys = store.message_keys(conv).unwrap();
    let sent = String::from_utf8(store.read_message(*keys.last().unwrap()).unwrap()).unwrap();
    assert!(!sent.contains("#assign"), "{sent}");
    assert!(
        sent.contains("Hello Customer,") || sent.contains("Hello Jane,"),
        "{sent}"
    );
    assert!(sent.contains("Thanks for your patience"), "{sent}");
    assert!(
        sent.contains(&format!("Agent alice, ticket {}", conv.0))
            || sent.contains(&format!("Alice Example, ticket {}", conv.0)),
        "{sent}"
    );
    assert!(
        sent.contains(&format!("Subject: Re: [#{}] Printer broken", conv.0)),
        "{sent}"
    );
    assert!(sent.contains("X-Loop: mx.example.test"), "{sent}");

    // Commands only: carried out, nothing logged or sent.
    let only = body_reply("cmdr2@example.test", "cmd1@customer.example", "#close");
    let (code, text) = c
        .send_mail("support@example.test", &["jane@customer.example"], &only)
        .await;
    assert_eq!(code, 250, "{text:?}");
    assert!(text[0].contains("nothing sent"), "{text:?}");
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        teamgate::store::Status::Closed
    );
    assert_eq!(store.message_keys(conv).unwrap().len(), 2);

    // Unknown command, placeholder or snippet: refused, nothing stored.
    for (id, body, status) in [
        ("bad1@example.test", "#frobnicate\r\nhi", "550 5.5.4"),
        ("bad2@example.test", "Dear {{contact.phone}}", "550 5.6.0"),
        ("bad3@example.test", "{{snippet:missing}}", "550 5.6.0"),
        ("bad4@example.test", "#assign mallory\r\nhi", "550 5.5.4"),
    ] {
        let m = body_reply(id, "cmd1@customer.example", body);
        let (code, text) = c
            .send_mail("support@example.test", &["jane@customer.example"], &m)
            .await;
        assert_eq!(code, 550, "{body}: {text:?}");
        assert!(text[0].starts_with(status), "{body}: {text:?}");
    }
    assert_eq!(store.message_keys(conv).unwrap().len(), 2);

    // #note makes it an internal comment even with a customer recipient.
    let note = body_reply(
        "cmdr3@example.test",
        "cmd1@customer.example",
        "#note\r\nCalled her, waiting for logs.",
    );
    let (code, text) = c
        .send_mail("support@example.test", &["jane@customer.example"], &note)
        .await;
    assert_eq!(code, 250, "{text:?}");
    let detail = store.conversation(conv).unwrap().unwrap();
    assert_eq!(
        detail.messages.last().unwrap().direction,
        Direction::Comment
    );
    d.stop().await;
}

#[tokio::test]
async fn replies_go_out_through_the_queue_with_our_headers() {
    let d = TestDaemon::start_with(team).await;
    let conv = customer_writes(&d, "out1@customer.example").await;
    let mut c = d.submission_as("alice", "alice-password").await;
    let msg = reply(
        "support@example.test",
        "Jane <jane@customer.example>",
        "out1@customer.example",
        "outr1@example.test",
        "Hello {{contact.email}}",
    );
    let (code, text) = c
        .send_mail("support@example.test", &["jane@customer.example"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");
    assert!(text[0].contains("queued as"), "{text:?}");
    let mails = d.sink.wait_for(1, std::time::Duration::from_secs(20)).await;
    assert_eq!(mails[0].mail_from, "support@example.test");
    assert_eq!(mails[0].rcpts, ["jane@customer.example"]);
    let data = String::from_utf8_lossy(&mails[0].data).into_owned();
    assert!(
        data.contains(&format!("Subject: Re: [#{conv}] Printer broken")),
        "{data}"
    );
    assert!(data.contains("Hello jane@customer.example"), "{data}");
    assert!(
        data.contains("X-Loop: mx.example.test")
            && data.contains("In-Reply-To: <out1@customer.example>"),
        "{data}"
    );
    // What went out is what the conversation shows as sent.
    let store = d.handle.store();
    let keys = store.message_keys(ConversationId(conv)).unwrap();
    let logged = store.read_message(*keys.last().unwrap()).unwrap();
    assert!(
        mails[0].data.ends_with(&logged[logged.len() - 40..]),
        "same body"
    );
    // A note or a commands-only message never reaches the relay.
    let notes = d.handle.config().workflow.notes_address.clone();
    let note = reply(
        "support@example.test",
        &notes,
        "out1@customer.example",
        "outn1@example.test",
        "internal",
    );
    assert_eq!(
        c.send_mail("support@example.test", &[&notes], &note)
            .await
            .0,
        250
    );
    let only = reply(
        "support@example.test",
        "jane@customer.example",
        "out1@customer.example",
        "outc1@example.test",
        "#close",
    );
    assert_eq!(
        c.send_mail("support@example.test", &["jane@customer.example"], &only)
            .await
            .0,
        250
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(d.sink.mails().len(), 1, "nothing else left the machine");
    assert!(store.queue_list().unwrap().is_empty());
    d.stop().await;
}
