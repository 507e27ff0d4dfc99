//! The outbound queue against a loopback SMTP sink (tests/sink.rs) configured as the
//! relay: delivery byte for byte (DATA and BDAT), DKIM, retries while the sink is down,
//! bounces filed into the conversation, restart survival and `teamgate queue` JSON.

use std::{path::Path, sync::Arc, time::Duration};

use teamgate::{
    config::{Config, DkimConfig},
    outbound::{ResolveError, StaticResolver, Target, Timeouts},
    reload::Reloadable,
    store::{ConversationId, Direction, OutboundMessage, QueueJson, Store, StoreOptions},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::harness::{TestDaemon, simple_message, teamgate};
use crate::sink::Sink;

const LIMIT: Duration = Duration::from_secs(15);

fn relay_to(port: u16, schedule_secs: &[u64]) -> impl FnOnce(&mut Config) {
    let schedule = schedule_secs
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect();
    move |c: &mut Config| {
        c.outbound.relay = Some(("127.0.0.1".into(), port));
        c.outbound.retry_schedule = schedule;
    }
}

fn reply(to: &[&str], message_id: &str) -> Vec<u8> {
    format!(
        "From: Support <support@example.test>\r\nTo: {}\r\nSubject: Re: Printer\r\n\
         Message-ID: <{message_id}>\r\nDate: Tue, 24 Nov 2026 10:05:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello,\r\n.a line starting with a dot\r\nwe are on it.\r\n",
        to.join(", ")
    )
    .into_bytes()
}

fn outbound(
    to: &[&str],
    message_id: &str,
    conversation: Option<ConversationId>,
) -> OutboundMessage {
    OutboundMessage {
        raw: reply(to, message_id),
        mail_from: "support@example.test".into(),
        recipients: to.iter().map(|s| (*s).to_owned()).collect(),
        message_id: message_id.into(),
        conversation,
        agent: "alice".into(),
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn queue(store: &Store) -> Vec<QueueJson> {
    store.queue_list().expect("queue list")
}

/// A conversation started by a customer's mail over SMTP.
async fn conversation(d: &TestDaemon) -> ConversationId {
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example.org", 250).await;
    let (code, lines) = c
        .send_mail(
            "jose@example.org",
            &["support@example.test"],
            &simple_message("jose@example.org", "Printer", "q-1@example.org"),
        )
        .await;
    assert_eq!(code, 250, "{lines:?}");
    let list = d.handle.store().list_conversations().expect("list");
    list.last().expect("a conversation").id
}

#[tokio::test]
async fn queued_mail_reaches_the_relay_byte_for_byte_with_data_and_bdat() {
    let sink = Sink::start().await;
    let d = TestDaemon::start_with(relay_to(sink.port(), &[60])).await;
    let store = d.handle.store();
    let msg = outbound(
        &["jose@example.org", "ana@example.net"],
        "r-1@example.test",
        None,
    );
    store.enqueue(msg.clone()).await.expect("enqueue");
    d.handle.outbound().wake();
    let mails = sink.wait_for(1, LIMIT).await;
    assert_eq!(mails[0].mail_from, "support@example.test");
    assert_eq!(mails[0].rcpts, ["jose@example.org", "ana@example.net"]);
    assert_eq!(
        mails[0].data, msg.raw,
        "DATA carries the queued bytes exactly"
    );
    wait_until("an empty queue", || queue(store).is_empty()).await;

    sink.set_chunking(true);
    let msg = outbound(&["jose@example.org"], "r-2@example.test", None);
    store.enqueue(msg.clone()).await.expect("enqueue");
    let mails = sink.wait_for(2, LIMIT).await;
    assert_eq!(
        mails[1].data, msg.raw,
        "BDAT carries the queued bytes exactly"
    );
    wait_until("an empty queue", || queue(store).is_empty()).await;
    d.stop().await;
}

#[tokio::test]
async fn dkim_signature_is_prepended_when_configured() {
    let sink = Sink::start().await;
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("dkim.pem");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/outbound/testdata/dkim-rsa.pem"),
        &key,
    )
    .expect("copy key");
    let relay = relay_to(sink.port(), &[60]);
    let d = TestDaemon::start_with(move |c| {
        relay(c);
        c.outbound.dkim = Some(DkimConfig {
            selector: "tg2026".into(),
            key,
        });
    })
    .await;
    let msg = outbound(&["jose@example.org"], "r-3@example.test", None);
    d.handle
        .store()
        .enqueue(msg.clone())
        .await
        .expect("enqueue");
    let mails = sink.wait_for(1, LIMIT).await;
    let data = &mails[0].data;
    assert!(
        data.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"),
        "{}",
        String::from_utf8_lossy(data)
    );
    assert!(
        data.ends_with(&msg.raw),
        "the queued bytes follow the signature"
    );
    let header = String::from_utf8_lossy(&data[..data.len() - msg.raw.len()]);
    assert!(header.contains("d=example.test;"), "{header}");
    assert!(header.contains("s=tg2026;"), "{header}");
    d.stop().await;
}

#[tokio::test]
async fn a_down_relay_is_retried_per_schedule_then_delivered() {
    let mut sink = Sink::start_down().await;
    let d = TestDaemon::start_with(relay_to(sink.port(), &[1, 1, 1, 1, 30])).await;
    let store = d.handle.store();
    let msg = outbound(&["jose@example.org"], "r-4@example.test", None);
    let id = store.enqueue(msg.clone()).await.expect("enqueue");
    wait_until("a failed first attempt", || {
        queue(store)
            .first()
            .is_some_and(|q| q.attempts >= 1 && q.last_error.is_some())
    })
    .await;
    let q = &queue(store)[0];
    assert_eq!(q.id, id);
    assert_eq!(q.recipients, ["jose@example.org"]);
    assert!(
        q.last_error.as_deref().unwrap_or("").contains("127.0.0.1"),
        "{q:?}"
    );
    assert_eq!(sink.connections(), 0);
    sink.up().await;
    let mails = sink.wait_for(1, LIMIT).await;
    assert_eq!(mails[0].data, msg.raw);
    wait_until("an empty queue", || queue(store).is_empty()).await;
    d.stop().await;
}

#[tokio::test]
async fn a_5xx_recipient_bounces_into_the_conversation_and_bounces_never_bounce() {
    let sink = Sink::start().await;
    sink.reply_to_rcpt(
        "bad@example.org",
        "550 5.1.1 <bad@example.org>: Recipient address rejected",
    );
    let d = TestDaemon::start_with(relay_to(sink.port(), &[60])).await;
    let store = d.handle.store();
    let conv = conversation(&d).await;
    store
        .enqueue(outbound(
            &["jose@example.org", "bad@example.org"],
            "r-5@example.test",
            Some(conv),
        ))
        .await
        .expect("enqueue");
    let mails = sink.wait_for(1, LIMIT).await;
    assert_eq!(
        mails[0].rcpts,
        ["jose@example.org"],
        "the good one still goes"
    );
    wait_until("an empty queue", || queue(store).is_empty()).await;
    wait_until("a bounce in the conversation", || {
        store
            .conversation(conv)
            .ok()
            .flatten()
            .is_some_and(|c| c.messages.len() == 2)
    })
    .await;
    let detail = store
        .conversation(conv)
        .expect("read")
        .expect("conversation");
    let bounce = &detail.messages[1];
    assert!(bounce.automatic, "{bounce:?}");
    assert_eq!(bounce.direction, Direction::In);
    assert!(bounce.message_id.starts_with("dsn."), "{bounce:?}");
    assert_eq!(
        bounce
            .from
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("mailer-daemon@mx.example.test")
    );
    assert_eq!(
        format!("{:?}", detail.conversation.status),
        "Open",
        "still open"
    );
    let keys = store.message_keys(conv).expect("keys");
    let raw = store.read_message(keys[1]).expect("bounce bytes");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("Content-Type: multipart/report"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; bad@example.org"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        !text.contains("Final-Recipient: rfc822; jose@example.org"),
        "{text}"
    );
    assert!(
        store
            .contact("mailer-daemon@mx.example.test")
            .expect("contact")
            .is_none(),
        "MAILER-DAEMON is no contact"
    );

    // An automatic message (here: null sender) that fails gets no bounce.
    let mut auto = outbound(&["bad@example.org"], "r-6@example.test", Some(conv));
    auto.mail_from = String::new();
    store.enqueue(auto).await.expect("enqueue");
    wait_until("the refused RCPT", || {
        sink.rcpts_seen()
            .iter()
            .filter(|r| *r == "bad@example.org")
            .count()
            == 2
    })
    .await;
    wait_until("an empty queue", || queue(store).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let detail = store
        .conversation(conv)
        .expect("read")
        .expect("conversation");
    assert_eq!(
        detail.messages.len(),
        2,
        "no bounce about the null-sender mail"
    );
    d.stop().await;
}

#[tokio::test]
async fn an_exhausted_schedule_bounces_with_4_4_7() {
    let sink = Sink::start_down().await;
    let d = TestDaemon::start_with(relay_to(sink.port(), &[1])).await;
    let store = d.handle.store();
    let conv = conversation(&d).await;
    store
        .enqueue(outbound(
            &["jose@example.org"],
            "r-7@example.test",
            Some(conv),
        ))
        .await
        .expect("enqueue");
    wait_until("the bounce", || {
        store
            .conversation(conv)
            .ok()
            .flatten()
            .is_some_and(|c| c.messages.len() == 2)
    })
    .await;
    // The bounce is stored just before the entry leaves the queue.
    wait_until("given up after 2 attempts", || queue(store).is_empty()).await;
    let keys = store.message_keys(conv).expect("keys");
    let text = String::from_utf8_lossy(&store.read_message(keys[1]).expect("bytes")).into_owned();
    assert!(text.contains("Status: 4.4.7"), "{text}");
    assert!(text.contains("retry schedule exhausted"), "{text}");
    d.stop().await;
}

/// A config file for the CLI, naming the test daemon's data directory.
fn cli_config(dir: &Path, data_dir: &Path) -> String {
    let path = dir.join("teamgate.toml");
    let hash = teamgate::auth::hash_password("pw").expect("hash");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
hostname = "mx.example.test"
data_dir = "{}"

[smtp]
listen = ["127.0.0.1:0"]

[submission]
listen = []

[imap]
listen = []

[[inbox]]
name = "Support"
addresses = ["support@example.test"]
members = ["alice"]

[[agent]]
login = "alice"
name = "Alice Example"
email = "alice@example.test"
password_hash = "{hash}"
"#,
            data_dir.display()
        ),
    )
    .expect("write config");
    path.to_string_lossy().into_owned()
}

/// Runs the CLI off the async threads (the daemon answers it in this process).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        teamgate(&args)
    })
    .await
    .expect("cli thread")
}

fn args(list: &[&str], config: &str) -> Vec<String> {
    list.iter()
        .map(|s| (*s).to_owned())
        .chain(["--config".to_owned(), config.to_owned()])
        .collect()
}

fn check_json_entry(out: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 1, "{v}");
    let e = &list[0];
    for field in [
        "id",
        "message_id",
        "recipients",
        "attempts",
        "next_attempt",
        "last_error",
    ] {
        assert!(e.get(field).is_some(), "missing {field}: {e}");
    }
    assert_eq!(e["id"], 1);
    assert_eq!(e["message_id"], "r-8@example.test");
    assert_eq!(e["recipients"], serde_json::json!(["jose@example.org"]));
    assert_eq!(e["attempts"], 1);
    assert!(
        e["next_attempt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );
    assert!(e["last_error"].as_str().is_some(), "{e}");
    v
}

#[tokio::test]
async fn queue_survives_a_restart_and_the_cli_lists_and_retries_it() {
    let mut sink = Sink::start_down().await;
    let d = TestDaemon::start_with(relay_to(sink.port(), &[3600])).await;
    let store = d.handle.store().clone();
    let msg = outbound(&["jose@example.org"], "r-8@example.test", None);
    store.enqueue(msg.clone()).await.expect("enqueue");
    wait_until("a failed first attempt", || {
        queue(&store)
            .first()
            .is_some_and(|q| q.attempts == 1 && q.last_error.is_some())
    })
    .await;
    drop(store);
    let cfg_dir = tempfile::tempdir().expect("temp dir");
    let config = cli_config(cfg_dir.path(), d.data_dir.path());

    // Online: over the control socket.
    let (code, out, err) = cli(args(&["queue", "list", "--json"], &config)).await;
    assert_eq!(code, 0, "{err}");
    check_json_entry(&out);
    let (code, out, _) = cli(args(&["queue", "list"], &config)).await;
    assert_eq!(code, 0);
    assert!(out.contains("r-8@example.test"), "{out}");
    let (code, _, err) = cli(args(&["queue", "retry", "99"], &config)).await;
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // Offline: the daemon is stopped, the CLI opens the data directory.
    let data_dir = d.stop().await;
    let (code, out, err) = cli(args(&["queue", "list", "--json"], &config)).await;
    assert_eq!(code, 0, "{err}");
    check_json_entry(&out);
    let (code, out, err) = cli(args(&["queue", "retry", "1"], &config)).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retried now"), "{out}");

    // Restarted with the sink up: the entry (due now after the retry) goes out.
    sink.up().await;
    let d = TestDaemon::start_in(data_dir, relay_to(sink.port(), &[3600])).await;
    let mails = sink.wait_for(1, LIMIT).await;
    assert_eq!(mails[0].data, msg.raw);
    wait_until("an empty queue", || queue(d.handle.store()).is_empty()).await;
    let (code, out, err) = cli(args(&["queue", "list", "--json"], &config)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "[]");
    d.stop().await;
}

#[tokio::test]
async fn mx_delivery_groups_by_domain_and_falls_back_to_the_next_host() {
    let org = Sink::start().await;
    let net = Sink::start().await;
    let dead = Sink::start_down().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let config = Arc::new(Reloadable::new(Config::for_tests(dir.path())));
    let resolver = StaticResolver::new()
        .route("example.org", org.addr())
        .targets(
            "example.net",
            vec![
                Target {
                    host: "mx1.example.net".into(),
                    addrs: vec![dead.addr()],
                },
                Target {
                    host: "mx2.example.net".into(),
                    addrs: vec![net.addr()],
                },
            ],
        )
        .fail(
            "nullmx.test",
            ResolveError::Permanent("domain nullmx.test accepts no mail (null MX)".into()),
        );
    let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        ..Timeouts::default()
    };
    let out = teamgate::outbound::spawn_with(
        store.clone(),
        config,
        &tasks,
        shutdown.clone(),
        Arc::new(resolver),
        timeouts,
        teamgate::metrics::Metrics::default(),
    );
    let msg = outbound(
        &[
            "x@example.org",
            "y@example.net",
            "z@nullmx.test",
            "w@EXAMPLE.org",
        ],
        "r-9@example.test",
        None,
    );
    store.enqueue(msg.clone()).await.expect("enqueue");
    out.wake();
    let to_org = org.wait_for(1, LIMIT).await;
    assert_eq!(to_org[0].rcpts, ["x@example.org", "w@EXAMPLE.org"]);
    assert_eq!(to_org[0].data, msg.raw);
    let to_net = net.wait_for(1, LIMIT).await;
    assert_eq!(to_net[0].rcpts, ["y@example.net"], "after mx1 refused");
    wait_until("an empty queue", || queue(&store).is_empty()).await;
    // No conversation was named: the bounce goes to the sender's inbox.
    wait_until("the bounce for the null MX", || {
        store.list_conversations().is_ok_and(|l| l.len() == 1)
    })
    .await;
    let conv = store.list_conversations().expect("list")[0].id;
    let keys = store.message_keys(conv).expect("keys");
    let text = String::from_utf8_lossy(&store.read_message(keys[0]).expect("bytes")).into_owned();
    assert!(
        text.contains("Final-Recipient: rfc822; z@nullmx.test"),
        "{text}"
    );
    assert!(text.contains("null MX"), "{text}");
    assert_eq!(org.mails().len() + net.mails().len(), 2, "each host once");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    store.close().await.expect("close");
}
