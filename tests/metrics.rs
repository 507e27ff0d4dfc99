//! Observability: the `[metrics] listen` endpoint scraped with curl after real SMTP,
//! submission and IMAP traffic (exact counter values), its HTTP edge cases, a bad or
//! busy listen address, and `teamgate status` online and offline.

use std::{net::SocketAddr, path::Path, time::Duration};

use teamgate::metrics::Snapshot;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{STEP, TestDaemon, require_program, simple_message, teamgate};

async fn start() -> TestDaemon {
    TestDaemon::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.filter.trust_upstream_spam_headers = true;
    })
    .await
}

fn metrics_addr(d: &TestDaemon) -> SocketAddr {
    d.handle.addrs.metrics.expect("metrics listener bound")
}

/// Runs curl with `args`; returns stdout.
async fn curl(args: &[&str]) -> String {
    let curl = require_program("curl");
    let out = tokio::time::timeout(
        STEP,
        tokio::process::Command::new(curl)
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl within 10 s")
    .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn scrape(addr: SocketAddr) -> Snapshot {
    Snapshot::parse(&curl(&[&format!("http://{addr}/metrics")]).await)
}

/// Scrapes until `ready` holds (counters that move after the reply, e.g. when a session
/// has closed or a queued message went out).
async fn scrape_until(addr: SocketAddr, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(addr).await;
        if ready(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never got there: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spam(id: &str) -> Vec<u8> {
    let mut raw = b"X-Spam-Flag: YES\r\n".to_vec();
    raw.extend_from_slice(&simple_message("spammer@bulk.example", "Cheap pills", id));
    raw
}

fn with_exe(id: &str) -> Vec<u8> {
    format!(
        "From: Jane <jane@customer.example>\r\nTo: support@example.test\r\nSubject: Invoice\r\n\
         Message-ID: <{id}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         see attached\r\n--b\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\n\
         Content-Disposition: attachment; filename=\"setup.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn counters_follow_real_traffic() {
    let d = start().await;
    let addr = metrics_addr(&d);
    let before = scrape(addr).await;
    assert_eq!(
        before.sum("teamgate_smtp_messages_accepted_total", &[]),
        0.0
    );
    assert_eq!(before.sum("teamgate_outbound_queue_depth", &[]), 0.0);

    // Inbound: one refused recipient, then plain mail, spam (trusted upstream flag) and a
    // blocked attachment, all in one session.
    let mut c = d.smtp().await;
    c.cmd("EHLO customer.example", 250).await;
    c.cmd("MAIL FROM:<jane@customer.example>", 250).await;
    c.cmd("RCPT TO:<nobody@example.test>", 550).await;
    c.cmd("RCPT TO:<support@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(&crate::harness::dot_stuff(&simple_message(
        "jane@customer.example",
        "Printer",
        "m1@customer.example",
    )))
    .await;
    c.send_raw(b".\r\n").await;
    c.expect(250).await;
    for msg in [spam("m2@bulk.example"), with_exe("m3@customer.example")] {
        let (code, text) = c
            .send_mail("jane@customer.example", &["support@example.test"], &msg)
            .await;
        assert_eq!(code, 250, "{text:?}");
    }
    c.cmd("QUIT", 221).await;

    // Submission: a wrong password, then a new message to a customer (out via the sink).
    let mut s = crate::harness::SmtpConn::connect(d.submission_addr()).await;
    s.cmd("EHLO agent.example", 250).await;
    s.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", 535).await;
    s.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 235).await;
    let out = b"From: Support <support@example.test>\r\nTo: bob@elsewhere.example\r\n\
                Subject: Hello\r\nMessage-ID: <out1@example.test>\r\n\
                Date: Tue, 24 Nov 2026 11:00:00 +0000\r\n\r\nHi Bob\r\n";
    let (code, text) = s
        .send_mail("support@example.test", &["bob@elsewhere.example"], out)
        .await;
    assert_eq!(code, 250, "{text:?}");
    s.cmd("QUIT", 221).await;

    // IMAP: a few commands, plain and UID forms.
    let mut i = d.imap_as("alice", "alice-password").await;
    i.ok("SELECT INBOX").await;
    i.ok("FETCH 1:* (FLAGS)").await;
    i.ok("UID FETCH 1:* (FLAGS)").await;
    i.ok("NOOP").await;
    i.run("LOGOUT").await;

    let m = scrape_until(addr, |s| {
        s.sum("teamgate_outbound_delivery_attempts_total", &[]) >= 1.0
            && s.sum("teamgate_smtp_sessions_active", &[]) == 0.0
            && s.sum("teamgate_imap_sessions_active", &[]) == 0.0
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| m.sum(name, labels);
    let inbound = [("port", "inbound")];
    let submission = [("port", "submission")];
    assert_eq!(v("teamgate_smtp_messages_accepted_total", &inbound), 3.0);
    assert_eq!(v("teamgate_smtp_messages_accepted_total", &submission), 1.0);
    assert_eq!(
        v(
            "teamgate_smtp_rejected_total",
            &[("port", "inbound"), ("reason", "unknown_recipient")]
        ),
        1.0
    );
    assert_eq!(v("teamgate_smtp_rejected_total", &inbound), 1.0);
    assert_eq!(
        v(
            "teamgate_smtp_rejected_total",
            &[("port", "submission"), ("reason", "auth_failed")]
        ),
        1.0
    );
    assert_eq!(v("teamgate_smtp_rejected_total", &submission), 1.0);
    assert_eq!(v("teamgate_smtp_sessions_total", &inbound), 1.0);
    assert_eq!(v("teamgate_smtp_sessions_total", &submission), 1.0);
    assert_eq!(
        v("teamgate_smtp_message_duration_seconds_count", &inbound),
        3.0
    );
    assert_eq!(v("teamgate_junk_total", &[("cause", "upstream_spam")]), 1.0);
    assert_eq!(v("teamgate_junk_total", &[]), 1.0);
    assert_eq!(
        v(
            "teamgate_quarantined_attachments_total",
            &[("cause", "blocked_name")]
        ),
        1.0
    );
    assert_eq!(
        v("teamgate_auth_failures_total", &[("reason", "invalid")]),
        1.0
    );
    assert_eq!(v("teamgate_auth_failures_total", &[]), 1.0);
    assert_eq!(
        v(
            "teamgate_outbound_delivery_attempts_total",
            &[("result", "delivered")]
        ),
        1.0
    );
    assert_eq!(v("teamgate_outbound_delivery_attempts_total", &[]), 1.0);
    assert_eq!(v("teamgate_outbound_queue_depth", &[]), 0.0);
    assert_eq!(v("teamgate_imap_sessions_total", &[]), 1.0);
    for command in ["LOGIN", "SELECT", "FETCH", "UID FETCH", "NOOP", "LOGOUT"] {
        assert_eq!(
            v(
                "teamgate_imap_command_duration_seconds_count",
                &[("command", command)]
            ),
            1.0,
            "{command}"
        );
    }
    assert_eq!(v("teamgate_connections_refused_total", &[]), 0.0);
    // The same numbers as the daemon's own handle.
    assert_eq!(
        d.handle
            .metrics()
            .snapshot()
            .sum("teamgate_smtp_messages_accepted_total", &[]),
        4.0
    );

    // `teamgate status` against this daemon, over its control socket.
    let config = status_config(d.data_dir.path());
    let args = ["status", "--config", config.to_str().unwrap()];
    let (code, text, err) = run_cli(&args).await;
    assert_eq!(code, 0, "{err}");
    for (topic, summary) in [
        (
            "smtp in",
            "3 accepted, 1 refused (unknown_recipient 1); 0 sessions now, 1 in all",
        ),
        (
            "submission",
            "1 accepted, 1 refused (auth_failed 1); 0 sessions now, 1 in all",
        ),
        ("junk", "1 (upstream_spam 1)"),
        ("quarantine", "1 attachments (blocked_name 1)"),
        ("outbound", "0 waiting; 1 delivery attempts (delivered 1)"),
        (
            "spam learning",
            "0 waiting; 0 attempts; 0 reports on our mail not judged",
        ),
        ("auth failures", "1 (invalid 1)"),
    ] {
        let line = status_line(topic, summary);
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    assert!(
        text.starts_with(&status_line("daemon", "running, up ")),
        "{text}"
    );
    let imap = status_line("imap", "0 sessions now, 1 in all; 6 commands");
    assert!(text.lines().any(|l| l.starts_with(&imap)), "{text}");
    let (code, json, err) = run_cli(&[&args[..], &["--json"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["running"], true);
    // The fields status always had are still there.
    assert!(json["conversations"].as_u64().unwrap() >= 1, "{json}");
    assert!(json["messages"].as_u64().unwrap() >= 3, "{json}");
    assert_eq!(json["queued"], 0);
    // What each tree holds (issue 14: bytes per message per tree).
    let trees = json["trees"].as_array().expect("trees");
    let messages = trees
        .iter()
        .find(|t| t["tree"] == "messages")
        .expect("the messages tree");
    assert!(messages["entries"].as_u64().unwrap() >= 3, "{messages}");
    assert!(
        messages["value_bytes"].as_u64().unwrap() > 100,
        "{messages}"
    );
    assert_eq!(trees.len(), 26, "every tree: {trees:?}");
    let snapshot: Snapshot = serde_json::from_value(json["metrics"].clone()).expect("snapshot");
    assert_eq!(
        snapshot.sum("teamgate_smtp_messages_accepted_total", &inbound),
        3.0
    );

    // Stopped: the store's counts, and a plain "not running".
    let dir = d.stop().await;
    let (code, text, err) = run_cli(&args).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with(&status_line("daemon", "not running")),
        "{text}"
    );
    assert!(text.contains(&status_line("store", "")), "{text}");
    let (code, json, _) = run_cli(&[&args[..], &["--json"]].concat()).await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["running"], false);
    assert!(json.get("metrics").is_none(), "{json}");
    drop(dir);
}

/// A line of `teamgate status` as printed: the topic in a column, then its summary.
fn status_line(topic: &str, summary: &str) -> String {
    format!("{:<16}{summary}", format!("{topic}:"))
}

/// A config for the CLI that points at a test daemon's data directory.
fn status_config(data_dir: &Path) -> std::path::PathBuf {
    let path = data_dir.join("status.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
hostname = "mx.example.test"
data_dir = "{}"

[submission]
listen = []

[imap]
listen = []

[filter]
dns_server = "none"

[[inbox]]
name = "Support"
addresses = ["support@example.test"]
members = ["alice"]

[[agent]]
login = "alice"
email = "alice@example.test"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$1T6klqsV88fAXm3C3QaLhg$hF7WGiA887AGmSWbOch6VlHtIvPIPrARAKydNl9WwyQ"
"#,
            data_dir.display()
        ),
    )
    .unwrap();
    path
}

/// The real binary, off the test's runtime thread (the daemon answers on it).
async fn run_cli(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        teamgate(&args)
    })
    .await
    .expect("cli")
}

/// Sends raw bytes, returns everything the endpoint answers before it closes.
async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn endpoint_speaks_plain_http() {
    let d = start().await;
    let addr = metrics_addr(&d);
    let base = format!("http://{addr}");

    let head = curl(&["-i", &format!("{base}/metrics")]).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(head.contains("# TYPE teamgate_smtp_messages_accepted_total counter"));
    // HEAD: the headers only.
    let only_head = curl(&["-I", &format!("{base}/metrics")]).await;
    assert!(only_head.starts_with("HTTP/1.1 200 OK\r\n"), "{only_head}");
    assert!(!only_head.contains("# TYPE"), "{only_head}");
    // A query string does not matter; other paths do.
    let code = |path: &str, method: &str| {
        let url = format!("{base}{path}");
        let method = method.to_string();
        async move { curl(&["-o", "/dev/null", "-w", "%{http_code}", "-X", &method, &url]).await }
    };
    assert_eq!(code("/metrics?x=1", "GET").await, "200");
    assert_eq!(code("/", "GET").await, "404");
    assert_eq!(code("/metrics/extra", "GET").await, "404");
    assert_eq!(code("/metrics", "POST").await, "405");
    assert_eq!(code("/metrics", "DELETE").await, "405");
    let not_allowed = curl(&["-i", "-X", "PUT", &format!("{base}/metrics")]).await;
    assert!(
        not_allowed.contains("Allow: GET, HEAD\r\n"),
        "{not_allowed}"
    );

    // Not HTTP at all, and a request head that never ends.
    let bad = raw_http(addr, b"HELO there\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
    let mut long = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    long.resize(teamgate::metrics::http::MAX_REQUEST_BYTES + 100, b'a');
    let big = raw_http(addr, &long).await;
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    // A raw HTTP/1.0 client works too.
    let ok = raw_http(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
    d.stop().await;
}

#[tokio::test]
async fn slow_scrapers_time_out_and_extra_ones_are_turned_away() {
    let d = TestDaemon::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics.max_connections = 1;
        c.metrics.timeout = Duration::from_millis(500);
    })
    .await;
    let addr = metrics_addr(&d);
    // Holds the only slot without sending a request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = raw_http(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    // The idle one is answered 408 and closed when its time is up.
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, idle.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
    // Once the slot is free again (the 408'd task may still be ending), scrapes work.
    let m = scrape_until(addr, |s| !s.metrics.is_empty()).await;
    assert_eq!(
        m.sum(
            "teamgate_connections_refused_total",
            &[("listener", "metrics")]
        ),
        1.0
    );
    d.stop().await;
}

#[tokio::test]
async fn listen_address_problems_are_clear() {
    // Taken by someone else: the daemon does not start, and says which key.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = teamgate::config::Config::for_tests(dir.path());
    config.metrics.listen = Some(busy);
    let err = teamgate::daemon::start(config)
        .await
        .err()
        .expect("start must fail");
    let text = err.to_string();
    assert!(
        text.contains("metrics.listen") && text.contains(&busy.to_string()),
        "{text}"
    );

    // Not an address: check-config names the key and fails.
    let path = status_config(dir.path());
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str("\n[metrics]\nlisten = \"localhost:9464\"\n");
    std::fs::write(&path, toml).unwrap();
    let (code, out, _) = teamgate(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("metrics.listen") && out.contains("not a socket address"),
        "{out}"
    );
}
