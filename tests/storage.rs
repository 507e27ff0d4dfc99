//! Durable storage through the SMTP path: group commit under concurrency, duplicates,
//! one message to two inboxes, restart, and the drain on shutdown.

use std::time::Duration;

use crate::harness::{SmtpConn, TestDaemon, dot_stuff, simple_message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_share_durability_barriers() {
    let d = TestDaemon::start().await;
    let addr = d.smtp_addr();
    let before = d.handle.store().stats().unwrap().barriers;
    let mut sessions = Vec::new();
    for i in 0..50 {
        sessions.push(tokio::spawn(async move {
            let mut c = SmtpConn::connect(addr).await;
            c.cmd("EHLO client.example", 250).await;
            for j in 0..2 {
                let msg = simple_message(
                    &format!("c{i}@customer.example"),
                    &format!("load {i}/{j}"),
                    &format!("load-{i}-{j}@customer.example"),
                );
                let (code, text) = c
                    .send_mail(
                        &format!("c{i}@customer.example"),
                        &["support@example.test"],
                        &msg,
                    )
                    .await;
                assert_eq!(code, 250, "{text:?}");
            }
            c.cmd("QUIT", 221).await;
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
    let stats = d.handle.store().stats().unwrap();
    let barriers = stats.barriers - before;
    println!("100 messages from 50 concurrent sessions took {barriers} durability barriers");
    assert_eq!(d.handle.store().list_conversations().unwrap().len(), 100);
    assert!(
        barriers < 100,
        "group commit: {barriers} barriers for 100 messages"
    );
    d.stop().await;
}

#[tokio::test]
async fn same_message_id_is_stored_once_and_two_inboxes_get_one_conversation_each() {
    let d = TestDaemon::start_with(|c| {
        let mut sales = c.inboxes[0].clone();
        sales.name = "Sales".into();
        sales.addresses = vec!["sales@example.test".into()];
        c.inboxes.push(sales);
    })
    .await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let msg = simple_message(
        "a@customer.example",
        "both teams",
        "both-1@customer.example",
    );
    let (code, _) = c
        .send_mail(
            "a@customer.example",
            &["support@example.test", "sales@example.test"],
            &msg,
        )
        .await;
    assert_eq!(code, 250);
    // A retry of the same message (same Message-ID) changes nothing.
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &msg)
        .await;
    assert_eq!(code, 250);
    assert!(text[0].contains("duplicate"), "{text:?}");
    let store = d.handle.store();
    let convs = store.list_conversations().unwrap();
    assert_eq!(convs.len(), 2, "{convs:?}");
    let mut inboxes: Vec<&str> = convs.iter().map(|c| c.inbox.as_str()).collect();
    inboxes.sort();
    assert_eq!(inboxes, ["Sales", "Support"]);
    assert_eq!(
        store.message_keys(convs[0].id).unwrap(),
        store.message_keys(convs[1].id).unwrap(),
        "bytes shared"
    );
    assert_eq!(convs[0].message_ids, ["both-1@customer.example"]);
    d.stop().await;
}

/// Dedup is by Message-ID and content: a retry through another relay is one message;
/// different messages under one Message-ID (templates, broken generators) and messages
/// without one, in the same second of the same session, are each kept.
#[tokio::test]
async fn only_the_same_content_under_one_message_id_is_a_duplicate() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let to = ["support@example.test"];
    let msg = simple_message("a@customer.example", "Order 7", "reused@customer.example");
    let (code, first) = c.send_mail("a@customer.example", &to, &msg).await;
    assert_eq!(code, 250, "{first:?}");
    let mut relayed =
        b"Received: from backup-mx.customer.example by mx; Tue, 24 Nov 2026 10:00:01 +0000\r\n"
            .to_vec();
    relayed.extend_from_slice(&msg);
    let (code, text) = c.send_mail("a@customer.example", &to, &relayed).await;
    assert_eq!(code, 250);
    assert!(
        text[0].contains("duplicate"),
        "a retry by another route: {text:?}"
    );
    let other = simple_message("a@customer.example", "Invoice 9", "reused@customer.example");
    let (code, text) = c.send_mail("a@customer.example", &to, &other).await;
    assert_eq!(code, 250);
    assert!(
        !text[0].contains("duplicate"),
        "another message under the same id: {text:?}"
    );
    for body in ["first without an id", "second without an id"] {
        let raw = format!(
            "From: b@customer.example\r\nTo: support@example.test\r\nSubject: {body}\r\n\r\n{body}\r\n"
        );
        let (code, text) = c.send_mail("b@customer.example", &to, raw.as_bytes()).await;
        assert_eq!(code, 250);
        assert!(!text[0].contains("duplicate"), "{body}: {text:?}");
    }
    let store = d.handle.store();
    let convs = store.list_conversations().unwrap();
    let messages: usize = convs
        .iter()
        .map(|c| store.message_keys(c.id).unwrap().len())
        .sum();
    assert_eq!(messages, 4, "{convs:?}");
    // Each kept message reads back as it was sent.
    let mut subjects = Vec::new();
    for conv in &convs {
        for key in store.message_keys(conv.id).unwrap() {
            let raw = store.read_message(key).unwrap();
            let text = String::from_utf8_lossy(&raw).to_string();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            subjects.push(subject);
        }
    }
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Invoice 9",
            "Order 7",
            "first without an id",
            "second without an id"
        ]
    );
    d.stop().await;
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let msg = simple_message(
        "r@customer.example",
        "restart me",
        "restart-1@customer.example",
    );
    assert_eq!(
        c.send_mail("r@customer.example", &["support@example.test"], &msg)
            .await
            .0,
        250
    );
    drop(c);
    let before = d.handle.store().list_conversations().unwrap();
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, |_| {}).await;
    let store = d.handle.store();
    let after = store.list_conversations().unwrap();
    assert_eq!(before, after);
    let raw = store
        .read_message(store.message_keys(after[0].id).unwrap()[0])
        .unwrap();
    assert!(raw.ends_with(&msg));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_body_in_flight_then_refuses() {
    let d = TestDaemon::start().await;
    let addr = d.smtp_addr();
    let mut busy = d.smtp().await;
    let mut idle = d.smtp().await;
    busy.cmd("EHLO client.example", 250).await;
    busy.cmd("MAIL FROM:<a@customer.example>", 250).await;
    busy.cmd("RCPT TO:<support@example.test>", 250).await;
    busy.cmd("DATA", 354).await;
    let msg = simple_message(
        "a@customer.example",
        "in flight",
        "flight-1@customer.example",
    );
    let (head, tail) = msg.split_at(40);
    busy.send_raw(&dot_stuff(head)[..40]).await;

    let data_dir_path = d.data_dir.path().to_path_buf();
    let TestDaemon {
        handle, data_dir, ..
    } = d;
    let stopping = tokio::spawn(handle.shutdown());
    // The idle session is told at once.
    let r = idle.expect(421).await;
    assert!(r[0].starts_with("421 4.3.2"), "{r:?}");
    idle.expect_closed().await;
    // New connections are no longer accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    // The body in flight completes and is stored, then the session is closed.
    busy.send_raw(&dot_stuff(tail)).await;
    busy.send_raw(b".\r\n").await;
    busy.expect(250).await;
    busy.expect(421).await;
    stopping.await.unwrap().expect("clean shutdown");

    let d = TestDaemon::start_in(data_dir, |_| {}).await;
    let convs = d.handle.store().list_conversations().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].subject, "in flight");
    assert_eq!(d.data_dir.path(), data_dir_path);
    d.stop().await;
}
