//! Inbound SMTP (SPEC §3) against the real daemon over loopback TCP.

use std::time::Duration;

use teamgate::store::ConversationJson;

use crate::harness::{STEP, SmtpConn, TestDaemon, dot_stuff, simple_message};

fn conversations(d: &TestDaemon) -> Vec<ConversationJson> {
    d.handle
        .store()
        .list_conversations()
        .expect("list conversations")
}

/// The stored bytes of the only message of conversation `index` in the list.
fn stored_bytes(d: &TestDaemon, index: usize) -> Vec<u8> {
    let store = d.handle.store();
    let conv = &conversations(d)[index];
    let keys = store.message_keys(conv.id).expect("message keys");
    store.read_message(keys[0]).expect("read message")
}

#[tokio::test]
async fn accepts_and_stores_byte_exact_with_received_prepended() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    for cap in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            ehlo.iter().any(|l| l[4..].starts_with(cap)),
            "EHLO lacks {cap}: {ehlo:?}"
        );
    }
    assert!(
        !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "no TLS configured, no STARTTLS"
    );
    // Odd but legal bytes: 8-bit text, a line starting with a dot, trailing spaces.
    let body = "From: a@customer.example\r\nTo: support@example.test\r\nSubject: Grüße\r\nMessage-ID: <exact-1@customer.example>\r\n\r\nLine one  \r\n.leading dot\r\n..two dots\r\nnon-ascii: ☺\r\n".as_bytes();
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], body)
        .await;
    assert_eq!(code, 250, "{text:?}");
    c.cmd("QUIT", 221).await;

    let stored = stored_bytes(&d, 0);
    // Our trace: the checks' Authentication-Results (sender authentication is off in
    // tests: "none"), then Received, then the message exactly as sent.
    assert!(stored.starts_with(b"Authentication-Results: mx.example.test; none\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mx.example.test (teamgate) with ESMTP id "));
    assert!(stored.ends_with(body), "body must be stored byte for byte");
    let received_len = stored.len() - body.len();
    let received = std::str::from_utf8(&stored[..received_len]).expect("utf8 header");
    assert!(
        received.contains("for <support@example.test>;"),
        "{received}"
    );
    assert_eq!(received.matches("\r\n").count(), 5, "{received}");
    d.stop().await;
}

#[tokio::test]
async fn recipients_only_for_inbox_addresses() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<someone@else.example>", 550).await;
    c.cmd("RCPT TO:<nobody@example.test>", 550).await;
    // Relay attempts with source routes or percent hacks are not inbox addresses either.
    c.cmd("RCPT TO:<support%other.example@example.test>", 550)
        .await;
    let ok = c.cmd("RCPT TO:<SUPPORT@Example.TEST>", 250).await;
    assert!(ok[0].starts_with("250 2.1.5"), "{ok:?}");
    c.cmd("RCPT TO:<support+c42@example.test>", 250).await;
    let reply = c.cmd("RCPT TO:<unknown@example.test>", 550).await;
    assert!(reply[0].starts_with("550 5.1.1"), "{reply:?}");
    c.cmd("QUIT", 221).await;
    d.stop().await;
}

#[tokio::test]
async fn command_sequence_errors() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("MAIL FROM:<a@customer.example>", 503).await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 503).await;
    c.cmd("DATA", 503).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 503).await;
    c.cmd("DATA", 554).await;
    c.cmd("RSET", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 503).await;
    c.cmd("NOOP", 250).await;
    c.cmd("VRFY support", 252).await;
    c.cmd("HELP", 214).await;
    c.cmd("EXPN staff", 502).await;
    c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 503).await;
    c.cmd("STARTTLS", 502).await;
    c.cmd("FOO bar", 500).await;
    c.cmd("MAIL FROM:<a@customer.example> FOO=1", 504).await;
    c.cmd("MAIL FROM:a@@", 501).await;
    c.cmd("HELO old.example", 250).await;
    c.cmd("QUIT", 221).await;
    c.expect_closed().await;
    assert!(conversations(&d).is_empty());
    d.stop().await;
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let d = TestDaemon::start_with(|c| c.smtp.max_errors = 3).await;
    let mut c = d.smtp().await;
    c.cmd("BOGUS 1", 500).await;
    c.cmd("BOGUS 2", 500).await;
    c.cmd("BOGUS 3", 421).await;
    c.expect_closed().await;
    d.stop().await;
}

#[tokio::test]
async fn pipelined_transaction_is_answered_in_order() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let mut batch = b"MAIL FROM:<p@customer.example>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n".to_vec();
    c.send_raw(&batch).await;
    c.expect(250).await;
    c.expect(550).await;
    c.expect(250).await;
    c.expect(354).await;
    batch = dot_stuff(&simple_message(
        "p@customer.example",
        "pipelined",
        "pipe-1@customer.example",
    ));
    batch.extend_from_slice(b".\r\nNOOP\r\nQUIT\r\n");
    c.send_raw(&batch).await;
    c.expect(250).await;
    c.expect(250).await;
    c.expect(221).await;
    assert_eq!(conversations(&d).len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn empty_body_and_first_line_dot_handled() {
    // smtp-proto's DataReceiver misses a dot on the very first body line unless primed.
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b".\r\n").await;
    // An empty message has nothing in it: refused with a clear reason.
    let (code, text) = c.read_reply().await.expect("reply");
    assert_eq!(code, 550, "{text:?}");
    c.cmd("NOOP", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"..Dotted: first line\r\nFrom: a@customer.example\r\nMessage-ID: <dot@customer.example>\r\n\r\nbody\r\n.\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let stored = stored_bytes(&d, 0);
    assert!(stored.ends_with(b"\r\n.Dotted: first line\r\nFrom: a@customer.example\r\nMessage-ID: <dot@customer.example>\r\n\r\nbody\r\n"));
    d.stop().await;
}

#[tokio::test]
async fn bare_lf_and_bare_cr_never_end_data() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    // Classic smuggling attempts: <LF>.<LF>, <CR>.<CR>, <LF>.<CRLF> followed by a second
    // transaction. All of it must stay inside one message.
    let smuggle = b"From: a@customer.example\r\nMessage-ID: <smuggle@customer.example>\r\nSubject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@attacker.example>\nRCPT TO:<support@example.test>\nDATA\nsmuggled\n.\r\nmore\r.\rx\r\n";
    c.send_raw(smuggle).await;
    c.send_raw(b".\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let convs = conversations(&d);
    assert_eq!(convs.len(), 1, "exactly one message: {convs:?}");
    let stored = stored_bytes(&d, 0);
    assert!(
        stored.ends_with(&smuggle[..]),
        "the smuggled commands are body bytes"
    );
    d.stop().await;
}

#[tokio::test]
async fn bdat_chunks_and_mixed_errors() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    // Refused, but the chunk still arrives and is skipped before the reply.
    c.send_raw(b"BDAT 3\r\nabc").await;
    c.expect(503).await;
    c.cmd("NOOP", 250).await;
    c.cmd("MAIL FROM:<b@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    let part1 = b"From: b@customer.example\r\nMessage-ID: <bdat-1@customer.example>\r\n";
    let part2 = b"Subject: chunked\r\n\r\nno dot-stuffing here:\r\n.\r\n";
    c.send_raw(format!("BDAT {}\r\n", part1.len()).as_bytes())
        .await;
    c.send_raw(part1).await;
    c.expect(250).await;
    c.cmd("DATA", 503).await;
    c.send_raw(format!("BDAT {} LAST\r\n", part2.len()).as_bytes())
        .await;
    c.send_raw(part2).await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let stored = stored_bytes(&d, 0);
    let mut whole = part1.to_vec();
    whole.extend_from_slice(part2);
    assert!(
        stored.ends_with(&whole),
        "BDAT bodies are stored as sent, a lone dot included"
    );
    d.stop().await;
}

#[tokio::test]
async fn oversized_messages_get_552_and_the_session_goes_on() {
    let d = TestDaemon::start_with(|c| c.smtp.max_message_size = 10_000).await;
    let mut c = d.smtp().await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    assert!(ehlo.iter().any(|l| l.ends_with("SIZE 10000")), "{ehlo:?}");
    c.cmd("MAIL FROM:<a@customer.example> SIZE=20000", 552)
        .await;
    c.cmd("MAIL FROM:<a@customer.example> SIZE=5000", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    let mut big = simple_message("a@customer.example", "big", "big-1@customer.example");
    for _ in 0..400 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    c.send_raw(&dot_stuff(&big)).await;
    c.send_raw(b".\r\n").await;
    let reply = c.expect(552).await;
    assert!(reply[0].starts_with("552 5.3.4"), "{reply:?}");
    // BDAT over the limit, announced in one chunk.
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.send_raw(format!("BDAT {} LAST\r\n", big.len()).as_bytes())
        .await;
    c.send_raw(&big).await;
    c.expect(552).await;
    // The session is still usable and a small message goes through.
    let (code, _) = c
        .send_mail(
            "a@customer.example",
            &["support@example.test"],
            &simple_message("a@customer.example", "small", "small-1@customer.example"),
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(conversations(&d).len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let d = TestDaemon::start_with(|c| {
        c.smtp.max_recipients = 2;
        c.inboxes[0].addresses.push("help@example.test".into());
        c.inboxes[0].addresses.push("info@example.test".into());
    })
    .await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("RCPT TO:<help@example.test>", 250).await;
    let r = c.cmd("RCPT TO:<info@example.test>", 452).await;
    assert!(r[0].starts_with("452 4.5.3"), "{r:?}");
    d.stop().await;
}

#[tokio::test]
async fn long_command_lines_get_500_and_do_not_leak_into_the_next_command() {
    let d = TestDaemon::start_with(|c| c.smtp.max_line_length = 512).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    // Longer than the limit and longer than one read: the tail must not become a command.
    let long = format!("NOOP {}QUIT\r\n", "x".repeat(200_000));
    c.send_raw(long.as_bytes()).await;
    let r = c.expect(500).await;
    assert!(r[0].starts_with("500 5.5.6"), "{r:?}");
    c.cmd("NOOP", 250).await;
    // A header line over the limit inside DATA is refused at the end of data.
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(
        format!(
            "Subject: {}\r\nFrom: a@customer.example\r\n\r\nbody\r\n.\r\n",
            "y".repeat(600)
        )
        .as_bytes(),
    )
    .await;
    c.expect(500).await;
    c.cmd("QUIT", 221).await;
    assert!(conversations(&d).is_empty());
    d.stop().await;
}

/// Issue 12: what Postfix accepts is accepted, stored byte-exact and threaded on what
/// can be read; the header limits still apply to fields after an mbox line.
#[tokio::test]
async fn messages_an_mta_accepts_are_accepted_byte_exact() {
    let d = TestDaemon::start_with(|c| c.smtp.max_header_size = 2048).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let shapes: [(&[u8], Option<&str>); 3] = [
        (
            b"From erin@customer.example Wed Dec  2 12:00:00 2026\r\nFrom: Erin <erin@customer.example>\r\nMessage-ID: <mbox@customer.example>\r\nSubject: Invoice 4410\r\n\r\nHello\r\n",
            Some("Invoice 4410"),
        ),
        (
            b"    \r\nFrom: Erin <erin@customer.example>\r\nMessage-ID: <spaces@customer.example>\r\nSubject: Printer jam\r\n\r\nHello\r\n",
            Some("Printer jam"),
        ),
        (b"Just a body, no header fields at all.\r\nSecond line.\r\n", None),
    ];
    for (i, (raw, subject)) in shapes.iter().enumerate() {
        let (code, text) = c
            .send_mail("erin@customer.example", &["support@example.test"], raw)
            .await;
        assert_eq!(code, 250, "shape {i}: {text:?}");
        let convs = conversations(&d);
        assert_eq!(convs.len(), i + 1, "shape {i} is its own conversation");
        let conv = convs.iter().max_by_key(|c| c.id.0).expect("conversation");
        if let Some(subject) = subject {
            assert!(conv.subject.contains(subject), "{conv:?}");
        }
        let index = convs.iter().position(|c| c.id == conv.id).expect("listed");
        assert!(
            stored_bytes(&d, index).ends_with(raw),
            "shape {i} stored as it came"
        );
    }
    // Limits still apply: an oversized header section after an mbox line is refused.
    let mut big =
        b"From erin@customer.example Wed Dec  2 12:00:00 2026\r\nFrom: erin@customer.example\r\n"
            .to_vec();
    for i in 0..100 {
        big.extend_from_slice(format!("X-Filler-{i}: some header value to fill it\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\nbody\r\n");
    let (code, text) = c
        .send_mail("erin@customer.example", &["support@example.test"], &big)
        .await;
    assert_eq!(code, 552, "{text:?}");
    assert_eq!(conversations(&d).len(), 3);
    d.stop().await;
}

#[tokio::test]
async fn header_section_over_the_limit_gets_552() {
    let d = TestDaemon::start_with(|c| c.smtp.max_header_size = 2048).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let mut msg = b"From: a@customer.example\r\n".to_vec();
    for i in 0..100 {
        msg.extend_from_slice(
            format!("X-Filler-{i}: some header value to fill the section\r\n").as_bytes(),
        );
    }
    msg.extend_from_slice(b"\r\nbody\r\n");
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &msg)
        .await;
    assert_eq!(code, 552, "{text:?}");
    d.stop().await;
}

#[tokio::test]
async fn idle_sessions_time_out_with_421() {
    let d = TestDaemon::start_with(|c| c.smtp.timeout = Duration::from_millis(500)).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let r = c.expect(421).await;
    assert!(r[0].starts_with("421 4.4.2"), "{r:?}");
    c.expect_closed().await;
    d.stop().await;
}

#[tokio::test]
async fn slow_body_is_cut_by_the_data_timeout_and_nothing_is_stored() {
    let d = TestDaemon::start_with(|c| {
        c.smtp.data_timeout = Duration::from_millis(800);
        c.smtp.timeout = Duration::from_secs(5);
    })
    .await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    // A slow-loris body: one byte every 200 ms never ends within the body deadline.
    let mut got = None;
    for _ in 0..40 {
        if c.io.get_mut().try_write(b"x").is_err() {
            break;
        }
        if let Ok(reply) = tokio::time::timeout(Duration::from_millis(200), c.read_reply()).await {
            got = reply;
            break;
        }
    }
    assert_eq!(got.map(|r| r.0), Some(421));
    assert!(conversations(&d).is_empty());
    d.stop().await;
}

#[tokio::test]
async fn connection_dropped_mid_data_stores_nothing() {
    let d = TestDaemon::start().await;
    {
        let mut c = d.smtp().await;
        c.cmd("EHLO client.example", 250).await;
        c.cmd("MAIL FROM:<a@customer.example>", 250).await;
        c.cmd("RCPT TO:<support@example.test>", 250).await;
        c.cmd("DATA", 354).await;
        c.send_raw(b"From: a@customer.example\r\nSubject: cut\r\n\r\nhalf a message\r\n")
            .await;
    }
    // The server notices the EOF; then a complete message from a new session is the only one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let (code, _) = c
        .send_mail(
            "a@customer.example",
            &["support@example.test"],
            &simple_message("a@customer.example", "whole", "whole-1@customer.example"),
        )
        .await;
    assert_eq!(code, 250);
    let convs = conversations(&d);
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].subject, "whole");
    d.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_421() {
    let d = TestDaemon::start_with(|c| c.smtp.max_connections = 2).await;
    let _a = d.smtp().await;
    let _b = d.smtp().await;
    let stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(d.smtp_addr()))
        .await
        .unwrap()
        .unwrap();
    let mut third = SmtpConn::new(stream);
    let r = third.expect(421).await;
    assert!(r[0].starts_with("421 4.7.0"), "{r:?}");
    third.expect_closed().await;
    drop(_a);
    // A freed slot is usable again.
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stream = tokio::net::TcpStream::connect(d.smtp_addr()).await.unwrap();
        let mut c = SmtpConn::new(stream);
        if let Some((220, _)) = c.read_reply().await {
            again = Some(c);
            break;
        }
    }
    assert!(again.is_some(), "slot released after a client left");
    d.stop().await;
}

#[tokio::test]
async fn null_sender_and_utf8_addresses() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<>", 250).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<jörg@bücher.example>", 553).await;
    c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    d.stop().await;
}

#[tokio::test]
async fn bytes_of_an_abandoned_bdat_transaction_never_reach_the_next_message() {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.send_raw(b"BDAT 10\r\nLEFTOVER!!").await;
    c.expect(250).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    let msg = simple_message("a@customer.example", "clean", "clean-1@customer.example");
    c.send_raw(format!("BDAT {} LAST\r\n", msg.len()).as_bytes())
        .await;
    c.send_raw(&msg).await;
    c.expect(250).await;
    let stored = stored_bytes(&d, 0);
    assert!(
        !stored.windows(10).any(|w| w == b"LEFTOVER!!"),
        "aborted chunk leaked"
    );
    assert!(stored.ends_with(&msg));
    d.stop().await;
}

#[tokio::test]
async fn a_bdat_transaction_idling_between_chunks_is_cut_by_the_body_deadline() {
    let d = TestDaemon::start_with(|c| {
        c.smtp.data_timeout = Duration::from_millis(600);
        c.smtp.timeout = Duration::from_secs(5);
    })
    .await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<a@customer.example>", 250).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.send_raw(b"BDAT 5\r\nhello").await;
    c.expect(250).await;
    // NOOPs keep the connection busy but the body deadline still ends it.
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send_raw(b"NOOP\r\n").await;
        match c.read_reply().await {
            Some((250, _)) => {}
            Some((421, _)) | None => {
                closed = true;
                break;
            }
            Some(other) => panic!("{other:?}"),
        }
    }
    assert!(closed, "the transaction must not outlive data_timeout");
    d.stop().await;
}
