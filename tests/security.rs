//! Security properties not covered elsewhere (see the report in each test's doc): no open
//! relay through any port or address trick, authentication only where and as allowed and
//! throttled across connections and protocols, strict inbox isolation through every IMAP
//! command and through submission, no header or response injection from display names and
//! placeholders, and MIME/zip bombs bounded in memory and time by the real binary.
//!
//! Covered elsewhere and not repeated: MX port refuses outside RCPT and AUTH
//! (smtp_inbound `recipients_only_for_inbox_addresses`, submission
//! `auth_is_required_and_checked`), AUTH PLAIN over plaintext refused on submission
//! (`no_auth_over_plaintext_unless_allowed`, tls `submission_offers_auth_only_inside_tls`),
//! IMAP LOGINDISABLED (imap `starttls_and_implicit_tls_with_login_disabled_before`), brute
//! force within one session (imap and submission), admins read-only
//! (`admins_read_every_inbox_but_change_none`), SMTP smuggling (`bare_lf_and_bare_cr_never_end_data`).

use std::{sync::Arc, time::Duration};

use base64::Engine;
use rustls::pki_types::ServerName;
use teamgate::{
    config::{Config, TlsFiles},
    store::{ConversationId, Status},
};
use tokio_rustls::TlsConnector;

use crate::harness::{ImapConn, SmtpConn, TestDaemon, simple_message};

/// Support: alice and bob. Sales: carol only.
fn team(c: &mut Config) {
    for login in ["bob", "carol"] {
        let mut a = c.agents[0].clone();
        a.login = login.into();
        a.name = format!("Agent {login}");
        a.email = format!("{login}@example.test");
        c.agents.push(a);
    }
    c.inboxes[0].members.push("bob".into());
    let mut sales = c.inboxes[0].clone();
    sales.name = "Sales".into();
    sales.addresses = vec!["sales@example.test".into()];
    sales.members = vec!["carol".into()];
    c.inboxes.push(sales);
}

fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A customer mail; returns the conversation number from the 250 text.
async fn deliver(d: &TestDaemon, from: &str, to: &str, subject: &str, mid: &str) -> u64 {
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example", 250).await;
    let msg = format!(
        "From: Customer <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nsecret of {subject}\r\n"
    );
    let (code, text) = c.send_mail(from, &[to], msg.as_bytes()).await;
    assert_eq!(code, 250, "{text:?}");
    crate::harness::conversation_number(&text)
        .unwrap_or_else(|| panic!("no conversation number in {text:?}"))
}

fn tls_files(dir: &std::path::Path) -> (TlsFiles, TlsConnector) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
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

/// The MX port accepts mail only for team addresses, whatever the address syntax; the
/// submission ports (STARTTLS and implicit TLS) accept nothing without AUTH. Nothing is
/// ever queued for or delivered to the outside.
#[tokio::test]
async fn no_open_relay_from_any_port_or_address_trick() {
    let cert_dir = tempfile::tempdir().unwrap();
    let (files, connector) = tls_files(cert_dir.path());
    let d = TestDaemon::start_with(|c| {
        team(c);
        c.tls = Some(files);
        c.submission.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;

    let mut mx = d.smtp().await;
    mx.cmd("EHLO relay-tester.example", 250).await;
    mx.cmd("MAIL FROM:<support@example.test>", 250).await;
    for rcpt in [
        "victim@elsewhere.example",
        "@mx.example.test:victim@elsewhere.example",
        "@example.test,@mx.example.test:victim@elsewhere.example",
        "victim%elsewhere.example@example.test",
        "victim%elsewhere.example@mx.example.test",
        "elsewhere.example!victim@example.test",
        "\"victim@elsewhere.example\"@example.test",
        "support@example.test@elsewhere.example",
        "support@elsewhere.example",
        "support@example.test.elsewhere.example",
        "support@[127.0.0.1]",
        "postmaster@elsewhere.example",
        "alice@example.test",
        "notes@mx.example.test",
    ] {
        mx.send_raw(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await;
        let (code, text) = mx.read_reply().await.expect("a reply");
        assert!(
            (500..600).contains(&code),
            "RCPT {rcpt} must be refused on the MX port: {text:?}"
        );
    }
    mx.cmd("RCPT TO:<support@example.test>", 250).await;
    mx.cmd("RSET", 250).await;

    // Submission without AUTH, on the STARTTLS port (plaintext and after STARTTLS) and
    // on the implicit-TLS port; also after a failed AUTH.
    let mut sub = SmtpConn::connect(d.submission_addr()).await;
    sub.cmd("EHLO relay-tester.example", 250).await;
    sub.cmd("MAIL FROM:<support@example.test>", 530).await;
    sub.cmd("RCPT TO:<victim@elsewhere.example>", 503).await;
    sub.cmd("DATA", 503).await;
    sub.cmd("STARTTLS", 220).await;
    let tls = connector
        .connect(
            ServerName::try_from("localhost").unwrap(),
            sub.io.into_inner(),
        )
        .await
        .expect("handshake");
    let mut sub = SmtpConn::new(tls);
    sub.cmd("EHLO relay-tester.example", 250).await;
    sub.cmd("MAIL FROM:<support@example.test>", 530).await;
    sub.cmd(&format!("AUTH PLAIN {}", plain("alice", "wrong")), 535)
        .await;
    sub.cmd("MAIL FROM:<support@example.test>", 530).await;
    // BDAT without a transaction: the chunk is read and dropped, then refused.
    sub.send_raw(b"BDAT 10 LAST\r\n0123456789").await;
    sub.expect(503).await;

    let tcp = tokio::net::TcpStream::connect(d.handle.addrs.submission_tls[0])
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    let mut implicit = SmtpConn::new(tls);
    implicit.expect(220).await;
    implicit.cmd("EHLO relay-tester.example", 250).await;
    implicit.cmd("MAIL FROM:<support@example.test>", 530).await;
    implicit
        .cmd("RCPT TO:<victim@elsewhere.example>", 503)
        .await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.handle.store().queue_list().unwrap().is_empty());
    assert!(d.sink.mails().is_empty(), "nothing left the machine");
    assert!(d.handle.store().list_conversations().unwrap().is_empty());
    d.stop().await;
}

/// Without TLS and without `allow_plaintext_auth`, no mechanism authenticates: AUTH LOGIN
/// on submission, LOGIN and AUTHENTICATE PLAIN (with and without SASL-IR) on IMAP.
#[tokio::test]
async fn no_mechanism_authenticates_over_plaintext() {
    let d = TestDaemon::start_with(|c| c.allow_plaintext_auth = false).await;
    let mut sub = SmtpConn::connect(d.submission_addr()).await;
    sub.cmd("EHLO agent.example", 250).await;
    let r = sub.cmd("AUTH LOGIN", 538).await;
    assert!(r[0].starts_with("538 5.7.11"), "{r:?}");
    sub.cmd(&format!("AUTH LOGIN {}", b64("alice")), 538).await;
    sub.cmd("MAIL FROM:<support@example.test>", 530).await;

    let mut imap = ImapConn::connect(d.imap_addr()).await;
    let caps = imap.ok("CAPABILITY").await;
    assert!(caps[0].contains("LOGINDISABLED"), "{caps:?}");
    assert!(!caps[0].contains("AUTH=PLAIN"), "{caps:?}");
    imap.refused("LOGIN alice alice-password", "NO").await;
    imap.refused(
        &format!("AUTHENTICATE PLAIN {}", plain("alice", "alice-password")),
        "NO",
    )
    .await;
    imap.send_raw(b"a9 AUTHENTICATE PLAIN\r\n").await;
    let line = imap.read_line().await.unwrap();
    assert!(
        line.starts_with(b"a9 NO") || line.starts_with(b"a9 BAD"),
        "no challenge before TLS: {}",
        String::from_utf8_lossy(&line)
    );
    imap.refused("SELECT INBOX", "BAD").await;
    d.stop().await;
}

/// Failed attempts count per login and per address across connections, mechanisms and
/// protocols: guessing over fresh SMTP connections locks IMAP too, and vice versa, and
/// the right password does not get through while throttled.
#[tokio::test]
async fn brute_force_is_throttled_across_connections_and_protocols() {
    let d = TestDaemon::start_with(team).await;
    for i in 0..3 {
        let mut c = SmtpConn::connect(d.submission_addr()).await;
        c.cmd("EHLO guesser.example", 250).await;
        c.cmd("AUTH LOGIN", 334).await;
        c.cmd(&b64("alice"), 334).await;
        c.cmd(&b64(&format!("guess{i}")), 535).await;
    }
    for i in 3..5 {
        let mut c = ImapConn::connect(d.imap_addr()).await;
        c.refused(&format!("LOGIN alice guess{i}"), "NO").await;
    }
    let mut c = SmtpConn::connect(d.submission_addr()).await;
    c.cmd("EHLO guesser.example", 250).await;
    let r = c
        .cmd(
            &format!("AUTH PLAIN {}", plain("alice", "alice-password")),
            454,
        )
        .await;
    assert!(r[0].starts_with("454 4.7.0"), "{r:?}");
    let mut i = ImapConn::connect(d.imap_addr()).await;
    let tagged = i.refused("LOGIN alice alice-password", "NO").await;
    assert!(tagged.contains("too many failed attempts"), "{tagged}");
    // Another login from the same address is throttled too (per address), so spraying
    // logins does not help either.
    let tagged = i.refused("LOGIN bob alice-password", "NO").await;
    assert!(tagged.contains("too many failed attempts"), "{tagged}");
    d.stop().await;
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// alice (Support) against Sales (carol's): every IMAP path to a foreign inbox's messages
/// is closed: naming tricks, UID sets spanning the other view's UIDs, COPY/MOVE/APPEND
/// into it, SEARCH, STORE, STATUS, CREATE/RENAME/DELETE, and IDLE pushes.
#[tokio::test]
async fn imap_never_shows_or_changes_another_inbox() {
    let d = TestDaemon::start_with(team).await;
    let mut sales = Vec::new();
    for i in 0..3 {
        sales.push(ConversationId(
            deliver(
                &d,
                &format!("buyer{i}@customer.example"),
                "sales@example.test",
                &format!("Sales secret {i}"),
                &format!("sales{i}@customer.example"),
            )
            .await,
        ));
    }
    let mine = ConversationId(
        deliver(
            &d,
            "jane@customer.example",
            "support@example.test",
            "Support question",
            "support1@customer.example",
        )
        .await,
    );
    // carol gives Sales messages UIDs in her views and closes one.
    let mut carol = d.imap_as("carol", "alice-password").await;
    let inbox = carol.ok("SELECT INBOX").await;
    assert!(has(&inbox, "* 3 EXISTS"), "{inbox:?}");
    carol.ok("UID MOVE 3 Closed").await;
    carol.ok("SELECT Closed").await;

    let mut alice = d.imap_as("alice", "alice-password").await;
    let list = alice.ok("LIST \"\" \"*\"").await;
    assert!(!has(&list, "Sales"), "{list:?}");
    let list = alice.ok("LIST \"\" \"Inboxes/%\"").await;
    assert!(!has(&list, "Sales"), "{list:?}");
    for name in [
        "Inboxes/Sales",
        "inboxes/sales",
        "INBOXES/SALES",
        "\"Inboxes/Sales/\"",
        "\"Inboxes//Sales\"",
        "\"Inboxes/./Sales\"",
        "\"Inboxes/Support/../Sales\"",
        "\"INBOX/../Inboxes/Sales\"",
        "\"/Inboxes/Sales\"",
        "Assigned/carol",
        "\"Personal/../Inboxes/Sales\"",
    ] {
        for verb in ["SELECT", "EXAMINE"] {
            let (_, tagged) = alice.run(&format!("{verb} {name}")).await;
            assert!(!tagged.contains(" OK"), "{verb} {name} -> {tagged}");
        }
        let (_, tagged) = alice
            .run(&format!("STATUS {name} (MESSAGES UIDNEXT)"))
            .await;
        assert!(!tagged.contains(" OK"), "STATUS {name} -> {tagged}");
        let (_, tagged) = alice.run(&format!("APPEND {name} {{4+}}\r\nhi\r\n")).await;
        assert!(!tagged.contains(" OK"), "APPEND {name} -> {tagged}");
    }
    for command in [
        "CREATE Inboxes/Sales/x",
        "DELETE Inboxes/Sales",
        "RENAME Inboxes/Sales Personal/Stolen",
        "RENAME Personal/x Inboxes/Sales",
    ] {
        let (_, tagged) = alice.run(command).await;
        assert!(!tagged.contains(" OK"), "{command} -> {tagged}");
    }

    // In her own views, any UID or sequence set reaches only Support's message.
    let select = alice.ok("SELECT INBOX").await;
    assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    for fetch in [
        "UID FETCH 1:4294967295 (UID BODY.PEEK[])",
        "UID FETCH 1,2,3,4,5,6,7,8,9,10 (UID BODY.PEEK[])",
        "FETCH 1:* (BODY.PEEK[] ENVELOPE)",
        "UID FETCH * (BODY.PEEK[])",
    ] {
        let out = alice.ok(fetch).await.join("\n");
        assert!(!out.contains("Sales secret"), "{fetch}: {out}");
        assert!(out.contains("Support question"), "{fetch}: {out}");
    }
    // Sequence numbers past her view: nothing (a NO or an empty answer), never Sales.
    let out = alice.run("FETCH 2:4 (BODY.PEEK[])").await.0.join("\n");
    assert!(!out.contains("Sales secret"), "{out}");
    assert_eq!(alice.ok("SEARCH ALL").await, ["* SEARCH 1"]);
    assert_eq!(
        alice.ok("UID SEARCH TEXT \"Sales secret\"").await,
        ["* SEARCH"]
    );
    assert_eq!(alice.ok("SEARCH SUBJECT secret").await, ["* SEARCH"]);
    alice
        .ok("UID STORE 1:* +FLAGS (\\Flagged $alice-was-here)")
        .await;
    for (command, status) in [
        ("UID COPY 1:* Inboxes/Sales", "NO"),
        ("UID MOVE 1:* Inboxes/Sales", "NO"),
        ("COPY 1 Assigned/carol", "NO"),
    ] {
        let (_, tagged) = alice.run(command).await;
        assert!(!tagged.contains(" OK"), "{command} -> {tagged} ({status})");
    }
    for mailbox in ["Closed", "Sent", "Junk", "Trash", "Mine", "Unassigned"] {
        alice.ok(&format!("SELECT {mailbox}")).await;
        let out = alice.ok("FETCH 1:* (BODY.PEEK[])").await.join("\n");
        assert!(!out.contains("Sales secret"), "{mailbox}: {out}");
    }

    // IDLE: Sales mail is never pushed to alice; her own inbox's mail is.
    alice.ok("SELECT INBOX").await;
    alice.send_raw(b"i1 IDLE\r\n").await;
    let cont = alice.read_line().await.unwrap();
    assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
    deliver(
        &d,
        "buyer9@customer.example",
        "sales@example.test",
        "Sales secret 9",
        "sales9@customer.example",
    )
    .await;
    deliver(
        &d,
        "jane2@customer.example",
        "support@example.test",
        "Support two",
        "support2@customer.example",
    )
    .await;
    let pushed = alice.read_line().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed).trim_end(), "* 2 EXISTS");
    alice.send_raw(b"DONE\r\n").await;
    alice.until_tagged("i1").await;

    // Nothing of Sales changed; carol sees none of alice's flags.
    let store = d.handle.store();
    for (i, conv) in sales.iter().enumerate() {
        let info = store.conversation_info(*conv).unwrap().unwrap();
        assert_eq!(info.inbox, "Sales");
        let want = if i == 2 { Status::Closed } else { Status::Open };
        assert_eq!(info.status, want, "#{}", conv.0);
        assert_eq!(store.message_keys(*conv).unwrap().len(), 1);
    }
    assert_eq!(
        store.conversation_info(mine).unwrap().unwrap().inbox,
        "Support"
    );
    carol.ok("SELECT INBOX").await;
    let flags = carol.ok("FETCH 1:* (FLAGS)").await.join("\n");
    assert!(
        !flags.contains("alice-was-here") && !flags.contains("\\Flagged"),
        "{flags}"
    );
    let sales_count = store
        .list_conversations()
        .unwrap()
        .iter()
        .filter(|c| c.inbox == "Sales")
        .count();
    assert_eq!(sales_count, 4);
    d.stop().await;
}

fn agent_mail(from: &str, to: &str, subject: &str, mid: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Support <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n{extra}\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// alice (Support) cannot reply into, command, or copy into a Sales conversation by any
/// submission or IMAP route: In-Reply-To/References of a Sales message, `[#n]` of a Sales
/// conversation, `+c<n>` on a Sales address, a Sent copy or a draft naming it.
#[tokio::test]
async fn submission_never_joins_or_commands_a_foreign_conversation() {
    let d = TestDaemon::start_with(team).await;
    let foreign = deliver(
        &d,
        "buyer@customer.example",
        "sales@example.test",
        "Big order",
        "order1@customer.example",
    )
    .await;
    let conv = ConversationId(foreign);
    let store = d.handle.store();
    let count = |c: ConversationId| store.message_keys(c).unwrap().len();
    let mut alice = d.submission_as("alice", "alice-password").await;

    // Sending as Sales is refused outright.
    alice.cmd("MAIL FROM:<sales@example.test>", 550).await;

    // As Support, naming the Sales conversation every way: never joins it.
    let tag = format!("Re: [#{foreign}] Big order");
    for (mid, subject, extra) in [
        (
            "x2@example.test",
            "Re: Big order",
            "In-Reply-To: <order1@customer.example>\r\nReferences: <order1@customer.example>\r\n",
        ),
        ("x3@example.test", tag.as_str(), ""),
    ] {
        let msg = agent_mail(
            "support@example.test",
            "buyer@customer.example",
            subject,
            mid,
            extra,
            "Hello {{contact.name}}",
        );
        let (code, text) = alice
            .send_mail("support@example.test", &["buyer@customer.example"], &msg)
            .await;
        assert_eq!(code, 250, "{text:?}");
        assert!(
            !text[0].contains(&format!("#{foreign} "))
                && !text[0].contains(&format!("#{foreign},")),
            "{text:?}"
        );
        assert_eq!(count(conv), 1, "{mid} joined the Sales conversation");
    }
    // Email commands against it: no conversation of hers, so refused, nothing done.
    let msg = agent_mail(
        "support@example.test",
        "buyer@customer.example",
        &tag,
        "x4@example.test",
        "",
        "#close",
    );
    let (code, text) = alice
        .send_mail("support@example.test", &["buyer@customer.example"], &msg)
        .await;
    assert_eq!(code, 550, "{text:?}");
    assert_eq!(
        store.conversation_info(conv).unwrap().unwrap().status,
        Status::Open
    );
    // `+c<n>` on the Sales address, or a Sales Message-ID in the headers, of a mail to
    // Sales (a local forward): Sales gets it as new mail, not inside its conversation.
    for (mid, extra) in [
        ("x5@example.test", ""),
        (
            "x6@example.test",
            "In-Reply-To: <order1@customer.example>\r\nReferences: <order1@customer.example>\r\n",
        ),
    ] {
        let rcpt = format!("sales+c{foreign}@example.test");
        let msg = agent_mail("support@example.test", &rcpt, &tag, mid, extra, "psst");
        let (code, text) = alice
            .send_mail("support@example.test", &[&rcpt], &msg)
            .await;
        assert_eq!(code, 250, "{text:?}");
        assert_eq!(
            count(conv),
            1,
            "{mid} was injected into the Sales conversation"
        );
    }
    // The IMAP routes: a Sent copy and a draft naming the Sales message.
    let mut imap = d.imap_as("alice", "alice-password").await;
    for (mailbox, mid) in [("Sent", "x7@example.test"), ("Drafts", "x8@example.test")] {
        let msg = agent_mail(
            "support@example.test",
            "buyer@customer.example",
            &tag,
            mid,
            "In-Reply-To: <order1@customer.example>\r\n",
            "copy",
        );
        let msg = String::from_utf8(msg).unwrap();
        imap.ok(&format!("APPEND {mailbox} {{{}+}}\r\n{msg}", msg.len()))
            .await;
    }
    assert_eq!(count(conv), 1);
    let mut carol = d.imap_as("carol", "alice-password").await;
    carol.ok("SELECT INBOX").await;
    let flags = carol.ok("FETCH 1 (FLAGS)").await.join("\n");
    assert!(
        !flags.contains("$Replying") && !flags.contains("\\Answered"),
        "alice's draft or replies show on a Sales message: {flags}"
    );
    d.stop().await;
}

/// A customer's display name is attacker-controlled: decoded from an encoded word it may
/// hold CR LF. Expanded into a reply's Subject or body by a placeholder, and rendered in
/// IMAP ENVELOPE, it never becomes a header line or an IMAP response line of its own.
#[tokio::test]
async fn display_names_and_placeholders_cannot_inject_headers_or_responses() {
    let d = TestDaemon::start_with(team).await;
    let evil = "=?utf-8?b?RXZlDQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGUNCiogMSBFWFBVTkdF?=";
    // Decodes to "Eve\r\nBcc: victim@evil.example\r\n* 1 EXPUNGE".
    let raw = format!(
        "From: {evil} <eve@customer.example>\r\nTo: support@example.test\r\nSubject: {evil}\r\n\
         Message-ID: <eve1@customer.example>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n"
    );
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example", 250).await;
    let (code, text) = c
        .send_mail(
            "eve@customer.example",
            &["support@example.test"],
            raw.as_bytes(),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");

    // IMAP: ENVELOPE and the header fields come back as one response, then the tag.
    let mut imap = d.imap_as("alice", "alice-password").await;
    imap.ok("SELECT INBOX").await;
    let untagged = imap
        .ok("FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
        .await;
    assert_eq!(untagged.len(), 1, "an injected response line: {untagged:?}");
    assert!(untagged[0].starts_with("* 1 FETCH ("), "{untagged:?}");

    // A reply expanding the name into the Subject and the body.
    let mut sub = d.submission_as("alice", "alice-password").await;
    let reply = agent_mail(
        "support@example.test",
        "eve@customer.example",
        "Re: hello {{contact.name}}",
        "r1@example.test",
        "In-Reply-To: <eve1@customer.example>\r\n",
        "Dear {{contact.name}} <{{contact.email}}>,\r\nsolved.",
    );
    let (code, text) = sub
        .send_mail("support@example.test", &["eve@customer.example"], &reply)
        .await;
    assert_eq!(code, 250, "{text:?}");
    let mails = d.sink.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(
        mails[0].rcpts,
        ["eve@customer.example"],
        "only the envelope recipient"
    );
    let data = String::from_utf8_lossy(&mails[0].data).into_owned();
    let header = data.split("\r\n\r\n").next().unwrap();
    for line in header.split("\r\n") {
        assert!(
            !line.to_ascii_lowercase().starts_with("bcc:") && !line.starts_with("* "),
            "injected header line {line:?} in:\n{header}"
        );
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    }
    let subject: Vec<&str> = header
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("subject:"))
        .collect();
    assert_eq!(subject.len(), 1, "{header}");
    d.stop().await;
}

/// Zip archives built by Python's zipfile (deflate): a bomb whose one member inflates to
/// 1 GiB of zeros, and a zip inside a zip inside a zip with a blocked name at the core.
fn zip_bombs() -> (Vec<u8>, Vec<u8>) {
    let python = crate::harness::require_program("python3");
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import io, sys, zipfile
out = sys.argv[1]
with zipfile.ZipFile(out + "/bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    with z.open("zeros.bin", "w", force_zip64=True) as f:
        block = b"\0" * (1 << 20)
        for _ in range(1024):
            f.write(block)
inner = io.BytesIO()
with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("invoice.exe", b"MZ" + b"\0" * 1000)
for level in range(3):
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("level%d.zip" % level, inner.getvalue())
    inner = outer
open(out + "/nested.zip", "wb").write(inner.getvalue())
"#;
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "python zipfile failed");
    (
        std::fs::read(dir.path().join("bomb.zip")).unwrap(),
        std::fs::read(dir.path().join("nested.zip")).unwrap(),
    )
}

fn with_attachment(mid: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut body = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(chunk).unwrap());
        body.push_str("\r\n");
    }
    format!(
        "From: Bomber <bomber@customer.example>\r\nTo: support@example.test\r\nSubject: {mid}\r\n\
         Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/zip; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}--b--\r\n"
    )
    .into_bytes()
}

/// `depth` multiparts, each the only part of its parent.
fn nested_multipart(mid: &str, depth: usize) -> Vec<u8> {
    let mut out = format!(
        "From: Bomber <bomber@customer.example>\r\nTo: support@example.test\r\nSubject: {mid}\r\n\
         Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
    );
    for i in 1..depth {
        out.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n",
            i - 1
        ));
    }
    out.push_str(&format!(
        "--b{}\r\nContent-Type: text/plain\r\n\r\ndeep down\r\n",
        depth - 1
    ));
    for i in (0..depth).rev() {
        out.push_str(&format!("--b{i}--\r\n"));
    }
    out.into_bytes()
}

/// `depth` message/rfc822 parts, each wrapping the next.
fn nested_messages(mid: &str, depth: usize) -> Vec<u8> {
    let mut out = format!(
        "From: Bomber <bomber@customer.example>\r\nTo: support@example.test\r\nSubject: {mid}\r\n\
         Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\n"
    );
    for _ in 0..depth {
        out.push_str("Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n");
    }
    out.push_str("Content-Type: text/plain\r\n\r\ncore\r\n");
    out.into_bytes()
}

/// Many sibling parts in one multipart.
fn many_parts(mid: &str, parts: usize) -> Vec<u8> {
    let mut out = format!(
        "From: Bomber <bomber@customer.example>\r\nTo: support@example.test\r\nSubject: {mid}\r\n\
         Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
    );
    for i in 0..parts {
        out.push_str(&format!(
            "--b\r\nContent-Type: application/octet-stream; name=\"f{i}.txt\"\r\n\r\nx\r\n"
        ));
    }
    out.push_str("--b--\r\n");
    out.into_bytes()
}

/// Structure, envelope, deep and odd sections, and search over every message of the
/// selected mailbox: each command completes with a tagged answer.
async fn fetch_every_way(c: &mut crate::faults::Wire, d: &crate::faults::Spawned, mailbox: &str) {
    for (n, item) in [
        "FETCH 1:* (BODYSTRUCTURE)",
        "FETCH 1:* (ENVELOPE)",
        "FETCH 1:* (BODY.PEEK[1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1])",
        "FETCH 1:* (BODY.PEEK[1.MIME])",
        "FETCH 1:* (BINARY.PEEK[2])",
        "FETCH 1:* (RFC822.SIZE BODY.PEEK[TEXT]<0.100>)",
        "SEARCH TEXT \"core\"",
    ]
    .iter()
    .enumerate()
    {
        let (_, tagged) = c
            .imap(&format!("f{mailbox}{n}"), item)
            .await
            .unwrap_or_else(|e| panic!("{mailbox}: {item}: {e}; log:\n{}", d.log()));
        assert!(
            tagged.contains(" OK") || tagged.contains(" NO") || tagged.contains(" BAD"),
            "{mailbox}: {item}: {tagged}"
        );
    }
}

/// MIME and zip bombs against the real binary (a crash would not take the test runner
/// with it): each is answered (stored, or refused with a proper code), every IMAP FETCH
/// of it completes, the daemon keeps serving, and its peak memory stays far below what
/// expanding any of them would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mime_and_zip_bombs_are_bounded_in_memory_and_time() {
    let (bomb, nested_zip) = zip_bombs();
    let sink = crate::sink::Sink::start().await;
    let mut d = crate::faults::Spawned::new(sink.port(), "", "", "");
    tokio::task::block_in_place(|| d.start());
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        (
            "zipbomb@b.example",
            with_attachment("zipbomb@b.example", "report.zip", &bomb),
        ),
        (
            "nestedzip@b.example",
            with_attachment("nestedzip@b.example", "docs.zip", &nested_zip),
        ),
        (
            "deepmime@b.example",
            nested_multipart("deepmime@b.example", 10_000),
        ),
        (
            "deepmsg@b.example",
            nested_messages("deepmsg@b.example", 5_000),
        ),
        (
            "manyparts@b.example",
            many_parts("manyparts@b.example", 20_000),
        ),
    ];
    let mut stored = Vec::new();
    for (mid, raw) in &bombs {
        let mut c = crate::faults::Wire::connect(d.smtp).await.unwrap();
        c.smtp_reply().await.unwrap();
        c.smtp_ok("EHLO bomber.example", 250).await.unwrap();
        let (code, text) = c
            .send_mail("bomber@customer.example", &["support@example.test"], raw)
            .await
            .unwrap_or_else(|e| panic!("{mid}: no answer ({e}); log:\n{}", d.log()));
        assert!(
            code == 250 || (550..=554).contains(&code),
            "{mid}: {code} {text}"
        );
        if code == 250 {
            stored.push(*mid);
        }
        assert!(d.running(), "{mid} killed the daemon:\n{}", d.log());
    }
    assert!(stored.contains(&"zipbomb@b.example"), "{stored:?}");

    // Every stored bomb renders over IMAP: structure, envelope, a deep section, search.
    let mut c = crate::faults::Wire::connect(d.imap).await.unwrap();
    c.imap_line().await.unwrap();
    c.imap_ok("l", "LOGIN alice pw").await.unwrap();
    // Too many parts to check is junk (src/filter/mod.rs); the rest are conversations.
    let mut shown = 0;
    for mailbox in ["INBOX", "Junk"] {
        let select = c
            .imap_ok(&format!("s{mailbox}"), &format!("SELECT {mailbox}"))
            .await
            .unwrap();
        shown += select
            .iter()
            .find_map(|l| {
                l.strip_prefix("* ")?
                    .strip_suffix(" EXISTS")?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        fetch_every_way(&mut c, &d, mailbox).await;
    }
    assert_eq!(shown, stored.len(), "{stored:?}");
    assert!(
        d.running(),
        "IMAP rendering killed the daemon:\n{}",
        d.log()
    );

    // Still serving, and never near the size of what the bombs expand to.
    let mut c = crate::faults::Wire::connect(d.smtp).await.unwrap();
    c.smtp_reply().await.unwrap();
    c.smtp_ok("EHLO after.example", 250).await.unwrap();
    let (code, _) = c
        .send_mail(
            "calm@customer.example",
            &["support@example.test"],
            &simple_message("calm@customer.example", "after the bombs", "calm@b.example"),
        )
        .await
        .unwrap();
    assert_eq!(code, 250);
    let peak = d.peak_rss_kib().expect("VmHWM");
    println!("daemon peak RSS after the bombs: {} MiB", peak / 1024);
    assert!(peak < 768 * 1024, "peak RSS {} MiB", peak / 1024);
    let list = tokio::task::block_in_place(|| d.cli_json(&["conversations", "list"]));
    let junk = tokio::task::block_in_place(|| d.cli_json(&["junk", "list"]));
    assert_eq!(
        list.as_array().unwrap().len() + junk.as_array().unwrap().len(),
        stored.len() + 1,
        "{list} {junk}"
    );
    tokio::task::block_in_place(|| d.stop());
}

/// Two inboxes' conversations never share bytes through a reused Message-ID: a customer
/// (or an agent's Sent copy) claiming a Sales message's Message-ID gets its own copy in
/// Support, and alice reads only what was sent to Support.
#[tokio::test]
async fn a_reused_message_id_never_exposes_another_inboxs_bytes() {
    let d = TestDaemon::start_with(team).await;
    deliver(
        &d,
        "buyer@customer.example",
        "sales@example.test",
        "Sales secret price",
        "shared@customer.example",
    )
    .await;
    deliver(
        &d,
        "mallory@customer.example",
        "support@example.test",
        "Innocent",
        "shared@customer.example",
    )
    .await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("SELECT INBOX").await;
    let out = alice.ok("FETCH 1:* (BODY.PEEK[])").await.join("\n");
    assert!(out.contains("Innocent"), "{out}");
    assert!(!out.contains("Sales secret"), "{out}");
    d.stop().await;
}

/// Drafts and Personal folders belong to one agent, Templates to one inbox: a teammate
/// or an agent of another inbox never sees them, whatever name it tries.
#[tokio::test]
async fn private_folders_and_other_inboxes_templates_stay_private() {
    let d = TestDaemon::start_with(team).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut carol = d.imap_as("carol", "alice-password").await;
    let note = |what: &str| {
        let m = format!("From: x@example.test\r\nSubject: {what}\r\n\r\nprivate {what}\r\n");
        format!("{{{}+}}\r\n{m}", m.len())
    };
    alice.ok("CREATE Personal/Secret").await;
    alice
        .ok(&format!("APPEND Personal/Secret {}", note("alice diary")))
        .await;
    alice
        .ok(&format!("APPEND Drafts {}", note("alice draft")))
        .await;
    carol
        .ok(&format!("APPEND Templates {}", note("sales template")))
        .await;

    let mut bob = d.imap_as("bob", "alice-password").await;
    let list = bob.ok("LIST \"\" \"*\"").await;
    assert!(!has(&list, "Secret"), "{list:?}");
    for (who, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        for name in ["Personal/Secret", "\"Personal/../Personal/Secret\""] {
            let (_, tagged) = c.run(&format!("SELECT {name}")).await;
            assert!(!tagged.contains(" OK"), "{who}: SELECT {name} -> {tagged}");
        }
        c.ok("SELECT Drafts").await;
        let out = c.ok("FETCH 1:* (BODY.PEEK[])").await.join("\n");
        assert!(!out.contains("alice draft"), "{who}: {out}");
    }
    for mailbox in ["Templates", "Drafts", "Sent"] {
        alice.ok(&format!("SELECT {mailbox}")).await;
        let out = alice.ok("FETCH 1:* (BODY.PEEK[])").await.join("\n");
        assert!(!out.contains("sales template"), "{mailbox}: {out}");
    }
    d.stop().await;
}

/// A conversation transferred from Support to Sales leaves Support's members: its
/// Support Message-IDs and `[#n]` keep threading the customer's mail into it (SPEC
/// §4 transfers), but a Support-only agent's reply, note or email command never lands in
/// it any more.
#[tokio::test]
async fn a_transferred_conversation_is_out_of_reach_of_the_old_inbox() {
    let d = TestDaemon::start_with(team).await;
    let n = deliver(
        &d,
        "moved@customer.example",
        "support@example.test",
        "Wrong team",
        "moved1@customer.example",
    )
    .await;
    let conv = ConversationId(n);
    let store = d.handle.store();
    store
        .conversation_action(
            conv,
            teamgate::store::ConversationAction::Transfer {
                inbox: "Sales".into(),
            },
        )
        .await
        .unwrap();
    let count = || store.message_keys(conv).unwrap().len();
    let notes = d.handle.config().workflow.notes_address.clone();
    let mut alice = d.submission_as("alice", "alice-password").await;
    let tag = format!("Re: [#{n}] Wrong team");
    for (mid, to, subject, extra, body) in [
        (
            "t1@example.test",
            "moved@customer.example",
            "Re: Wrong team",
            "In-Reply-To: <moved1@customer.example>\r\n",
            "still mine?",
        ),
        (
            "t2@example.test",
            "moved@customer.example",
            tag.as_str(),
            "",
            "still mine?",
        ),
        (
            "t3@example.test",
            notes.as_str(),
            tag.as_str(),
            "",
            "a note",
        ),
    ] {
        let msg = agent_mail("support@example.test", to, subject, mid, extra, body);
        let (code, text) = alice.send_mail("support@example.test", &[to], &msg).await;
        assert_eq!(code, 250, "{text:?}");
        assert_eq!(
            count(),
            1,
            "{mid} landed in the transferred conversation: {text:?}"
        );
    }
    let msg = agent_mail(
        "support@example.test",
        "moved@customer.example",
        &tag,
        "t4@example.test",
        "In-Reply-To: <moved1@customer.example>\r\n",
        "#close",
    );
    let (code, text) = alice
        .send_mail("support@example.test", &["moved@customer.example"], &msg)
        .await;
    assert_eq!(code, 550, "{text:?}");
    let info = store.conversation_info(conv).unwrap().unwrap();
    assert_eq!((info.inbox.as_str(), info.status), ("Sales", Status::Open));

    // The customer's own reply still follows the conversation to Sales.
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example", 250).await;
    let reply = b"From: moved@customer.example\r\nTo: support@example.test\r\nSubject: Re: Wrong team\r\nMessage-ID: <moved2@customer.example>\r\nIn-Reply-To: <moved1@customer.example>\r\n\r\nthanks\r\n";
    let (code, _) = c
        .send_mail("moved@customer.example", &["support@example.test"], reply)
        .await;
    assert_eq!(code, 250);
    assert_eq!(count(), 2);
    d.stop().await;
}

/// A client's reconnects are answered from the login cache; a reload (a password may have
/// changed) makes the next login check its hash again, over IMAP and submission alike.
#[tokio::test]
async fn logins_are_cached_until_a_reload() {
    let d = TestDaemon::start().await;
    let hashed = || {
        d.handle
            .metrics()
            .snapshot()
            .sum("teamgate_auth_checks_total", &[("how", "hashed")])
    };
    for _ in 0..3 {
        d.imap_as("alice", "alice-password").await;
    }
    d.submission_as("alice", "alice-password").await;
    assert_eq!(hashed(), 1.0, "one hash for four logins");
    d.handle
        .reload(d.handle.config().as_ref().clone())
        .expect("reload");
    d.imap_as("alice", "alice-password").await;
    assert_eq!(hashed(), 2.0, "the reload flushed the cache");
    // A wrong password never comes from the cache.
    let mut c = ImapConn::connect(d.imap_addr()).await;
    c.refused("LOGIN alice alice-passwore", "NO").await;
    assert_eq!(hashed(), 3.0);
    d.stop().await;
}
