//! Conversations and contacts (SPEC §4, §8) end to end: real SMTP in, the store's
//! answers out. Corpus runs report pairwise precision/recall against MANIFEST.tsv.

use std::collections::{BTreeMap, BTreeSet};

use teamgate::store::{ConversationId, Status, ThreadRule};

use crate::harness::{SmtpConn, TestDaemon, corpus_dir, corpus_for_smtp};

struct Labelled {
    path: String,
    theme: String,
    thread_key: String,
    original_sender: String,
    is_autoreply: bool,
}

fn manifest() -> Vec<Labelled> {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let col = |i: usize| cols.get(i).copied().unwrap_or("").to_string();
            Labelled {
                path: col(0),
                theme: col(1),
                thread_key: col(5),
                original_sender: col(6),
                is_autoreply: col(7) == "yes",
            }
        })
        .collect()
}

/// Sends one message; returns the conversation number from the `250` text.
async fn deliver(
    c: &mut SmtpConn<tokio::net::TcpStream>,
    from: &str,
    to: &str,
    body: &[u8],
) -> Option<u64> {
    let (code, text) = c.send_mail(from, &[to], body).await;
    if code != 250 {
        return None;
    }
    crate::harness::conversation_number(&text)
}

/// Pairwise precision and recall of a clustering against labels.
fn pairwise(assigned: &[(String, u64)]) -> (f64, f64) {
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    for i in 0..assigned.len() {
        for j in i + 1..assigned.len() {
            let same_label = assigned[i].0 == assigned[j].0;
            let same_conv = assigned[i].1 == assigned[j].1;
            match (same_label, same_conv) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let precision = if tp + fp == 0 {
        1.0
    } else {
        f64::from(tp) / f64::from(tp + fp)
    };
    let recall = if tp + fn_ == 0 {
        1.0
    } else {
        f64::from(tp) / f64::from(tp + fn_)
    };
    (precision, recall)
}

async fn thread_corpus(reverse: bool) -> (f64, f64) {
    let d = TestDaemon::start().await;
    let mut items: Vec<Labelled> = manifest()
        .into_iter()
        .filter(|m| m.theme == "threading")
        .collect();
    // Production order: by Date header.
    items.sort_by_cached_key(|m| {
        mail_parser::MessageParser::default()
            .parse(&corpus_for_smtp(&m.path))
            .and_then(|p| p.date().map(|d| d.to_timestamp()))
            .unwrap_or(i64::MIN)
    });
    if reverse {
        items.reverse();
    }
    let mut c = d.smtp().await;
    c.cmd("EHLO corpus.example", 250).await;
    let mut assigned = Vec::new();
    for m in &items {
        let conv = deliver(
            &mut c,
            "sender@corpus.example",
            "support@example.test",
            &corpus_for_smtp(&m.path),
        )
        .await;
        let conv = conv.unwrap_or_else(|| panic!("{} was not accepted", m.path));
        assigned.push((m.thread_key.clone(), conv));
    }
    d.stop().await;
    pairwise(&assigned)
}

#[tokio::test]
async fn corpus_threads_in_date_order() {
    let (p, r) = thread_corpus(false).await;
    println!("threading corpus, Date order: pairwise precision {p:.3} recall {r:.3}");
    assert!(p >= 0.99 && r >= 0.97, "precision {p:.3} recall {r:.3}");
}

#[tokio::test]
async fn corpus_threads_in_reverse_date_order() {
    let (p, r) = thread_corpus(true).await;
    println!("threading corpus, reverse Date order: pairwise precision {p:.3} recall {r:.3}");
    // Replies before their parents: two replies naming only a parent that has not
    // arrived start two conversations (see threading_eval.rs).
    assert!(p >= 0.99 && r >= 0.86, "precision {p:.3} recall {r:.3}");
}

#[tokio::test]
async fn forwards_are_credited_to_the_original_sender() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO corpus.example", 250).await;
    let (mut right, mut labelled) = (0, 0);
    let mut wrong = Vec::new();
    for m in manifest()
        .into_iter()
        .filter(|m| m.theme == "forwards" && !m.original_sender.is_empty())
    {
        let Some(conv) = deliver(
            &mut c,
            "forwarder@corpus.example",
            "support@example.test",
            &corpus_for_smtp(&m.path),
        )
        .await
        else {
            panic!("{} refused", m.path);
        };
        labelled += 1;
        let detail = d
            .handle
            .store()
            .conversation(ConversationId(conv))
            .unwrap()
            .unwrap();
        if detail.conversation.contact.as_deref()
            == Some(m.original_sender.to_ascii_lowercase().as_str())
        {
            right += 1;
        } else {
            wrong.push(format!(
                "{}: {:?} != {}",
                m.path, detail.conversation.contact, m.original_sender
            ));
        }
    }
    println!(
        "forwards: {right}/{labelled} credited to the labelled original sender; misses: {wrong:#?}"
    );
    assert!(
        labelled >= 25 && right * 100 >= labelled * 95,
        "{right}/{labelled}"
    );
    d.stop().await;
}

#[tokio::test]
async fn auto_replies_are_flagged_and_create_no_system_contacts() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO corpus.example", 250).await;
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for m in manifest().into_iter().filter(|m| m.theme == "autoreplies") {
        let body = corpus_for_smtp(&m.path);
        let Some(conv) = deliver(
            &mut c,
            "sender@corpus.example",
            "support@example.test",
            &body,
        )
        .await
        else {
            panic!("{} refused", m.path);
        };
        let detail = d
            .handle
            .store()
            .conversation(ConversationId(conv))
            .unwrap()
            .unwrap();
        let automatic = detail.messages.last().map(|m| m.automatic).unwrap_or(false);
        match (m.is_autoreply, automatic) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    println!("auto-replies: tp {tp} fp {fp} fn {fn_} tn {tn}");
    // The three "false positives" are no-reply notification mails labelled as human.
    assert!(
        tp * 100 >= (tp + fp) * 90 && tp * 100 >= (tp + fn_) * 95,
        "tp {tp} fp {fp} fn {fn_}"
    );
    let contacts = d.handle.store().list_contacts().unwrap();
    for contact in &contacts {
        let local = contact.email.split('@').next().unwrap_or("");
        assert!(
            !["mailer-daemon", "postmaster"].contains(&local),
            "system sender became a contact: {}",
            contact.email
        );
    }
    d.stop().await;
}

fn mail(from: &str, subject: &str, id: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: Support <support@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of {id}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn replies_join_reopen_and_arrive_out_of_order() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = "support@example.test";
    let jane = "Jane Customer <jane@customer.example>";
    let first = deliver(
        &mut c,
        "jane@customer.example",
        to,
        &mail(jane, "Printer broken", "p1@customer.example", ""),
    )
    .await
    .unwrap();
    // In-Reply-To names a known message.
    let reply = mail(
        jane,
        "Re: Printer broken",
        "p2@customer.example",
        "In-Reply-To: <p1@customer.example>\r\n",
    );
    assert_eq!(
        deliver(&mut c, "jane@customer.example", to, &reply).await,
        Some(first)
    );
    // Closed, then an out-of-office arrives: filed in the conversation, still closed.
    let store = d.handle.store();
    store
        .set_status(ConversationId(first), Status::Closed)
        .await
        .unwrap();
    let ooo = mail(
        jane,
        "Automatic reply: Printer broken",
        "ooo1@customer.example",
        "In-Reply-To: <p1@customer.example>\r\nAuto-Submitted: auto-replied\r\n",
    );
    assert_eq!(
        deliver(&mut c, "jane@customer.example", to, &ooo).await,
        Some(first)
    );
    let info = store
        .conversation_info(ConversationId(first))
        .unwrap()
        .unwrap();
    assert_eq!(info.status, Status::Closed, "an auto-reply does not reopen");
    // Then a real reply arrives (only an older message of the chain is known): reopened.
    d.handle
        .store()
        .set_status(ConversationId(first), Status::Closed)
        .await
        .unwrap();
    let late = mail(
        jane,
        "AW: Printer broken",
        "p3@customer.example",
        "References: <p1@customer.example> <unknown@x.example>\r\n",
    );
    assert_eq!(
        deliver(&mut c, "jane@customer.example", to, &late).await,
        Some(first)
    );
    let info = d
        .handle
        .store()
        .conversation_info(ConversationId(first))
        .unwrap()
        .unwrap();
    assert_eq!(
        info.status,
        Status::Open,
        "a reply reopens a closed conversation"
    );
    // The subject tag and the +c sub-address name the conversation.
    let tagged = mail(
        jane,
        &format!("New question [#{first}]"),
        "p4@customer.example",
        "",
    );
    assert_eq!(
        deliver(&mut c, "jane@customer.example", to, &tagged).await,
        Some(first)
    );
    let plus = mail(jane, "Something else entirely", "p5@customer.example", "");
    assert_eq!(
        deliver(
            &mut c,
            "jane@customer.example",
            &format!("support+c{first}@example.test"),
            &plus
        )
        .await,
        Some(first)
    );

    // A reply that arrives before its parent: they still end up together.
    let bob = "Bob <bob@other.example>";
    let child = mail(
        bob,
        "Re: Invoice 42",
        "i2@other.example",
        "In-Reply-To: <i1@other.example>\r\nReferences: <i1@other.example>\r\n",
    );
    let child_conv = deliver(&mut c, "bob@other.example", to, &child)
        .await
        .unwrap();
    let parent = mail(bob, "Invoice 42", "i1@other.example", "");
    assert_eq!(
        deliver(&mut c, "bob@other.example", to, &parent).await,
        Some(child_conv)
    );
    assert_ne!(child_conv, first);
    let detail = d
        .handle
        .store()
        .conversation(ConversationId(child_conv))
        .unwrap()
        .unwrap();
    assert_eq!(
        detail.conversation.message_ids,
        ["i2@other.example", "i1@other.example"]
    );
    d.stop().await;
}

/// SPEC §4: header evidence joins whoever sends it, except for replies to the team's
/// own message addressed to several outside people (an announcement, here in Bcc): the
/// reply of someone not in its From/To/Cc starts its own conversation, linked to it.
#[tokio::test]
async fn strangers_replying_to_an_announcement_get_their_own_linked_conversations() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = "support@example.test";
    let ann = "ann@vendor.example";
    let first = mail(ann, "Maintenance on Sunday", "q1@vendor.example", "");
    let conv = deliver(&mut c, ann, to, &first).await.unwrap();
    // The team's answer to Ann, and in Bcc to two more outside people.
    let mut alice = d.submission_as("alice", "alice-password").await;
    let outside = [ann, "a@one.example", "b@two.example"];
    let announcement = format!(
        "From: Support <{to}>\r\nTo: {ann}\r\nSubject: Re: Maintenance on Sunday\r\n\
         Message-ID: <out1@example.test>\r\nIn-Reply-To: <q1@vendor.example>\r\n\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\n\r\nIt runs from 2 to 4.\r\n"
    );
    let (code, text) = alice.send_mail(to, &outside, announcement.as_bytes()).await;
    assert_eq!(code, 250, "{text:?}");
    let reply_to = |who: &str, parent: &str| {
        mail(
            who,
            "Re: Maintenance on Sunday",
            &format!("re-{parent}-{who}"),
            &format!("In-Reply-To: <{parent}>\r\nReferences: <q1@vendor.example> <{parent}>\r\n"),
        )
    };
    let mut seen = BTreeSet::new();
    for who in ["a@one.example", "b@two.example"] {
        let got = deliver(&mut c, who, to, &reply_to(who, "out1@example.test"))
            .await
            .unwrap();
        assert_ne!(got, conv, "{who} is not a participant of the announcement");
        let detail = d
            .handle
            .store()
            .conversation(ConversationId(got))
            .unwrap()
            .unwrap();
        assert_eq!(detail.linked_to, Some(ConversationId(conv)));
        let by = detail.messages[0]
            .threaded_by
            .as_ref()
            .expect("threaded_by");
        assert_eq!(by.rule, ThreadRule::New, "{by:?}");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2);
    // Who still joins: the customer, her colleague, and a stranger answering the
    // customer's own message (a list reply), not the announcement.
    for (who, parent) in [
        (ann, "out1@example.test"),
        ("c@vendor.example", "out1@example.test"),
        ("zed@list.example", "q1@vendor.example"),
    ] {
        let got = deliver(&mut c, who, to, &reply_to(who, parent)).await;
        assert_eq!(got, Some(conv), "{who} replying to {parent}");
    }
    let detail = d
        .handle
        .store()
        .conversation(ConversationId(conv))
        .unwrap()
        .unwrap();
    let rules: Vec<ThreadRule> = detail
        .messages
        .iter()
        .map(|m| {
            m.threaded_by
                .as_ref()
                .expect("threaded_by on every message")
                .rule
        })
        .collect();
    assert_eq!(
        rules,
        [
            ThreadRule::New,
            ThreadRule::InReplyTo,
            ThreadRule::InReplyTo,
            ThreadRule::InReplyTo,
            ThreadRule::InReplyTo
        ]
    );
    d.stop().await;
}

#[tokio::test]
async fn contacts_names_timelines_and_cli_json() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = "support@example.test";
    deliver(
        &mut c,
        "jane@customer.example",
        to,
        &mail("jane@customer.example", "Hello", "n1@customer.example", ""),
    )
    .await
    .unwrap();
    let with_attachment = b"From: Jane Doe <JANE@Customer.Example>\r\nTo: support@example.test\r\nSubject: Logs\r\nMessage-ID: <n2@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: text/plain; name=log.txt\r\nContent-Disposition: attachment; filename=log.txt\r\n\r\n0123456789\r\n--b--\r\n";
    deliver(&mut c, "jane@customer.example", to, with_attachment)
        .await
        .unwrap();
    // Bounces and system senders never become contacts.
    let bounce = b"From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\nTo: support@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.customer.example>\r\nAuto-Submitted: auto-replied\r\n\r\nThis is the mail system.\r\n";
    deliver(&mut c, "", to, bounce).await.unwrap();

    let contacts = d.handle.store().list_contacts().unwrap();
    let emails: Vec<&str> = contacts.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(emails, ["jane@customer.example"], "{contacts:?}");
    assert_eq!(
        contacts[0].name.as_deref(),
        Some("Jane Doe"),
        "a better display name replaces none"
    );
    assert_eq!(contacts[0].conversations.len(), 2);

    let detail = d
        .handle
        .store()
        .contact("jane@customer.example")
        .unwrap()
        .unwrap();
    let kinds: BTreeMap<String, usize> =
        detail.timeline.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(format!("{:?}", t.kind)).or_default() += 1;
            m
        });
    assert_eq!(kinds.get("Inbound"), Some(&2), "{:?}", detail.timeline);
    let attachment = detail
        .timeline
        .iter()
        .find(|t| format!("{:?}", t.kind) == "Attachment")
        .expect("attachment event");
    assert!(
        attachment.detail.contains("log.txt"),
        "{}",
        attachment.detail
    );
    d.stop().await;
}

#[tokio::test]
async fn a_bounce_joins_the_conversation_of_the_message_it_reports_on() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = "support@example.test";
    let conv = deliver(
        &mut c,
        "jane@customer.example",
        to,
        &mail(
            "Jane <jane@customer.example>",
            "Order 7",
            "o7@customer.example",
            "",
        ),
    )
    .await
    .unwrap();
    let dsn = b"From: Mail Delivery System <MAILER-DAEMON@mx.other.example>\r\nTo: support@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-o7@mx.other.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.other.example\r\n\r\nFinal-Recipient: rfc822; gone@other.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Jane <jane@customer.example>\r\nSubject: Order 7\r\nMessage-ID: <o7@customer.example>\r\n--b--\r\n";
    assert_eq!(
        deliver(&mut c, "", to, dsn).await,
        Some(conv),
        "threaded by the Message-ID it reports on"
    );
    let detail = d
        .handle
        .store()
        .conversation(ConversationId(conv))
        .unwrap()
        .unwrap();
    assert!(detail.messages.last().unwrap().automatic);
    let contacts = d.handle.store().list_contacts().unwrap();
    assert_eq!(
        contacts.len(),
        1,
        "no contact for the mailer daemon: {contacts:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn headerless_replies_join_by_subject_only_for_participants() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = "support@example.test";
    let conv = deliver(
        &mut c,
        "ann@acme.example",
        to,
        &mail("Ann <ann@acme.example>", "VPN down", "v1@acme.example", ""),
    )
    .await
    .unwrap();
    // Her colleague answers from Outlook, which dropped the reply headers.
    let colleague = mail(
        "Bo <bo@acme.example>",
        "RE: VPN down",
        "v2@acme.example",
        "",
    );
    assert_eq!(
        deliver(&mut c, "bo@acme.example", to, &colleague).await,
        Some(conv)
    );
    // A stranger with the same subject is not her conversation.
    let stranger = mail(
        "Zed <zed@other.example>",
        "Re: VPN down",
        "v3@other.example",
        "",
    );
    assert_ne!(
        deliver(&mut c, "zed@other.example", to, &stranger).await,
        Some(conv)
    );
    // Not a reply: a new message with the same subject from a colleague starts its own.
    let fresh = mail("Bo <bo@acme.example>", "VPN down", "v4@acme.example", "");
    assert_ne!(
        deliver(&mut c, "bo@acme.example", to, &fresh).await,
        Some(conv)
    );
    d.stop().await;
}
