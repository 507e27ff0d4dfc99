//! The operator's protocol trace (`[log] protocol_trace`): a traced login's IMAP sessions
//! are written to `<data_dir>/trace/<login>-<session>.log`, without credentials or large
//! literals; other logins leave nothing.

use base64::Engine as _;

use crate::harness::{ImapConn, TestDaemon, simple_message, with_bob};

/// Files of the trace directory: (name, contents), sorted by name.
fn traces(dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .map(|e| {
            let path = e.expect("trace entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("trace file"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_traced_login_is_written_without_credentials_or_big_literals() {
    let d = TestDaemon::start_with(|c| {
        with_bob(c);
        c.log.protocol_trace = vec!["alice".into()];
        c.log.protocol_trace_max_literal = 200;
    })
    .await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO customer.example", 250).await;
    let mut msg = simple_message(
        "jane@customer.example",
        "Printer broken",
        "t1@customer.example",
    );
    msg.extend_from_slice(&b"The printer prints nothing at all.\r\n".repeat(40));
    let (code, text) = smtp
        .send_mail("jane@customer.example", &["support@example.test"], &msg)
        .await;
    assert_eq!(code, 250, "{text:?}");

    // LOGIN, as most clients send it.
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("SELECT INBOX").await;
    alice
        .ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[])")
        .await;
    alice.ok("LOGOUT").await;
    // AUTHENTICATE PLAIN with a continuation, as Thunderbird does.
    let mut again = ImapConn::connect(d.imap_addr()).await;
    again.send_raw(b"a1 AUTHENTICATE PLAIN\r\n").await;
    let challenge = again.read_line().await.expect("challenge");
    assert!(challenge.starts_with(b"+"), "{challenge:?}");
    let secret = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0alice-password");
    again.send_raw(format!("{secret}\r\n").as_bytes()).await;
    let (_, done) = again.until_tagged("a1").await;
    assert!(done.starts_with("a1 OK"), "{done}");
    again.ok("NOOP").await;
    // An agent who is not traced.
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    bob.ok("LOGOUT").await;
    drop(again);

    let dir = d.data_dir.path().join("trace");
    // The second session's file is written as it goes: wait for its NOOP to be there.
    let mut files = Vec::new();
    for _ in 0..100 {
        files = traces(&dir);
        if files.len() == 2 && files.iter().any(|(_, t)| t.contains("NOOP completed")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(files.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("alice-") && n.ends_with(".log")),
        "{names:?}"
    );
    let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
    assert!(!all.contains("alice-password"), "{all}");
    assert!(!all.contains(&secret), "{all}");
    assert!(all.contains("LOGIN <credentials removed>"), "{all}");
    assert!(
        all.contains("C: a1 AUTHENTICATE PLAIN\nS: + \nC: <credentials removed>\n"),
        "{all}"
    );
    assert!(
        all.contains("S: * OK") && all.contains("SELECT INBOX"),
        "{all}"
    );
    // The small header literal is kept; the body is replaced by its size.
    assert!(all.contains("Subject: Printer broken"), "{all}");
    assert!(all.contains("bytes of literal omitted>"), "{all}");
    assert!(!all.contains("prints nothing at all"), "{all}");
    d.stop().await;
}

#[tokio::test]
async fn a_bad_trace_entry_is_a_config_error() {
    let toml = "[server]\nhostname = \"mx.example.test\"\n[log]\nprotocol_trace = [\"al ice\"]\n";
    let errors = teamgate::config::load_from_str(toml, &[]).expect_err("refused");
    let text = errors.to_string();
    assert!(text.contains("log.protocol_trace"), "{text}");
}
