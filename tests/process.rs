//! The real `teamgate` binary: check-config, hash-password, serve with signals, the admin
//! verbs over the control socket and offline, and durability across `kill -9`.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{require_program, reserved_addr, teamgate};

struct Instance {
    dir: tempfile::TempDir,
    config: PathBuf,
    smtp: SocketAddr,
}

impl Instance {
    fn new() -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let smtp = reserved_addr();
        let config = dir.path().join("teamgate.toml");
        let hash = teamgate::auth::hash_password("secret-pw").unwrap();
        std::fs::write(
            &config,
            format!(
                r#"
[server]
hostname = "mx.example.test"
data_dir = "{data}"
shutdown_grace_secs = 5

[smtp]
listen = ["{smtp}"]

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
name = "Alice Example"
email = "alice@example.test"
password_hash = "{hash}"
"#,
                data = dir.path().join("data").display()
            ),
        )
        .unwrap();
        Instance { dir, config, smtp }
    }

    fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn spawn(&self) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_teamgate"))
            .args(["serve", "--config", self.config_arg()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn teamgate serve");
        // Ready when the control socket answers (listeners are bound before it).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(self.smtp).is_ok() && self.control_socket().exists() {
                return child;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("teamgate exited early: {status}");
            }
            assert!(Instant::now() < deadline, "teamgate did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn control_socket(&self) -> PathBuf {
        self.dir.path().join("data/control.sock")
    }

    fn list_json(&self) -> serde_json::Value {
        let (code, out, err) = teamgate(&[
            "conversations",
            "list",
            "--json",
            "--config",
            self.config_arg(),
        ]);
        assert_eq!(code, 0, "stderr: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `sends` (Python, indented one level under `with ... as s:`) in an smtplib session
/// against the daemon.
fn python_smtp(smtp: SocketAddr, sends: &str) {
    let python = require_program("python3");
    let script = format!(
        "import smtplib\nfrom email.message import EmailMessage\n\
         with smtplib.SMTP(\"{ip}\", {port}, timeout=20) as s:\n    s.ehlo(\"python.example\")\n{sends}",
        ip = smtp.ip(),
        port = smtp.port()
    );
    let status = Command::new(python).arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "python smtplib client failed");
}

fn send_with_python(smtp: SocketAddr, count: usize, prefix: &str) {
    python_smtp(
        smtp,
        &format!(
            r#"    for i in range({count}):
        m = EmailMessage()
        m["From"] = "Py Customer <py{{}}@customer.example>".format(i)
        m["To"] = "support@example.test"
        m["Subject"] = "{prefix} {{}}".format(i)
        m["Message-ID"] = "<{prefix}-{{}}@customer.example>".format(i)
        m.set_content("hello {{}}\n.\nline after a lone dot\n".format(i))
        s.send_message(m)
"#
        ),
    );
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/teamgate.toml");
    let (code, out, err) = teamgate(&["check-config", "--config", path]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn check_config_reports_every_problem_with_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
hostname = "mx.example.test"
[smtp]
listen = ["127.0.0.1:2525"]
max_recipients = 0
[[inbox]]
name = "Support"
addresses = ["support@example.test", "not-an-address"]
members = ["ghost"]
[[inbox]]
name = "Sales"
addresses = ["SUPPORT@example.test"]
members = []
"#,
    )
    .unwrap();
    let (code, out, _) = teamgate(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    for needle in [
        "smtp.max_recipients",
        "inbox[0].addresses[1]",
        "inbox[0].members[0]",
        "inbox[1].addresses[0]",
    ] {
        assert!(out.contains(needle), "missing {needle} in:\n{out}");
    }
    assert!(
        out.lines().all(|l| l.contains("bad.toml")),
        "every line names the file:\n{out}"
    );

    let (code, out, _) = teamgate(&[
        "check-config",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("missing.toml"), "{out}");
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_teamgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(teamgate::auth::verify_password(hash, "correct horse"));
    assert!(!teamgate::auth::verify_password(hash, "correct horse\n"));
}

#[test]
fn serve_reload_and_graceful_stop_with_admin_verbs_online_and_offline() {
    let inst = Instance::new();
    let mut child = inst.spawn();
    send_with_python(inst.smtp, 3, "python");

    // While running: the CLI goes through the control socket (sled is locked).
    let online = inst.list_json();
    let list = online.as_array().expect("array");
    assert_eq!(list.len(), 3, "{online}");
    for c in list {
        for field in [
            "id",
            "inbox",
            "status",
            "assignee",
            "subject",
            "contact",
            "message_ids",
            "updated",
        ] {
            assert!(c.get(field).is_some(), "missing {field}: {c}");
        }
        assert_eq!(c["inbox"], "Support");
        assert_eq!(c["status"], "open");
    }
    let mode = std::fs::metadata(inst.control_socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let first_id = list[0]["id"].as_u64().unwrap().to_string();
    let (code, out, err) = teamgate(&[
        "conversations",
        "show",
        &first_id,
        "--json",
        "--config",
        inst.config_arg(),
    ]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["messages"][0]["direction"], "in");
    for field in [
        "message_id",
        "direction",
        "from",
        "to",
        "date",
        "size",
        "attachments",
    ] {
        assert!(
            shown["messages"][0].get(field).is_some(),
            "missing {field}: {shown}"
        );
    }
    // Why it is there (SPEC §8 threaded_by): a first message starts its conversation.
    let by = &shown["messages"][0]["threaded_by"];
    assert_eq!(by["rule"], "new", "{shown}");
    assert!(
        by["evidence"].as_str().is_some_and(|e| !e.is_empty()),
        "{shown}"
    );
    let (code, human, err) = teamgate(&[
        "conversations",
        "show",
        &first_id,
        "--config",
        inst.config_arg(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(human.contains("threaded by new: "), "{human}");
    let (code, out, err) = teamgate(&["contacts", "list", "--json", "--config", inst.config_arg()]);
    assert_eq!(code, 0, "{err}");
    let contacts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(contacts.as_array().unwrap().len(), 3, "{contacts}");
    for field in ["email", "name", "first_seen", "last_seen", "conversations"] {
        assert!(
            contacts[0].get(field).is_some(),
            "missing {field}: {contacts}"
        );
    }
    let email = contacts[0]["email"].as_str().unwrap().to_uppercase();
    let (code, out, err) = teamgate(&[
        "contacts",
        "show",
        &email,
        "--json",
        "--config",
        inst.config_arg(),
    ]);
    assert_eq!(code, 0, "lookup is case-insensitive: {err}");
    let contact: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = &contact["timeline"][0];
    for field in ["at", "kind", "conversation", "message_id", "detail"] {
        assert!(entry.get(field).is_some(), "missing {field}: {contact}");
    }
    let (code, human, _) = teamgate(&["contacts", "show", &email, "--config", inst.config_arg()]);
    assert_eq!(code, 0);
    assert!(human.contains("inbound"), "{human}");
    let (code, _, err) = teamgate(&[
        "conversations",
        "show",
        "9999",
        "--config",
        inst.config_arg(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not found"), "{err}");

    // SIGHUP with a broken file keeps the old config and the daemon running.
    let good = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        good.replace("[smtp]", "[smtp]\nbogus_key = 1"),
    )
    .unwrap();
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon must survive a bad reload"
    );
    send_with_python(inst.smtp, 1, "after-bad-reload");
    std::fs::write(&inst.config, &good).unwrap();
    signal(&child, "-HUP");

    // An idle session is told 421 on SIGTERM, and the daemon exits 0.
    let idle = std::net::TcpStream::connect(inst.smtp).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "));
    signal(&child, "-TERM");
    let mut bye = String::new();
    reader.read_line(&mut bye).unwrap();
    assert!(bye.starts_with("421 4.3.2"), "{bye:?}");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("keeping the old one"),
        "bad reload must be logged:\n{log}"
    );
    assert!(!inst.control_socket().exists(), "socket removed on exit");

    // Stopped: the CLI opens the data directory itself and gives the same answer.
    let offline = inst.list_json();
    assert_eq!(offline.as_array().unwrap().len(), 4);
    assert_eq!(
        offline.as_array().unwrap()[..3],
        online.as_array().unwrap()[..]
    );
}

#[test]
fn acknowledged_mail_survives_kill_9() {
    let inst = Instance::new();
    for round in 0..3 {
        let mut child = inst.spawn();
        // Every message is acknowledged before the next; kill -9 right after the last 250.
        send_with_python(inst.smtp, 10, &format!("round{round}"));
        signal(&child, "-KILL");
        wait_exit(&mut child, Duration::from_secs(10));
    }
    let list = inst.list_json();
    let subjects: std::collections::BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        subjects.len(),
        30,
        "every acknowledged message is there once: {subjects:?}"
    );
    // And the daemon starts cleanly on the recovered directory.
    let mut child = inst.spawn();
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}

#[test]
fn swaks_delivers_through_the_real_daemon() {
    let swaks = require_program("swaks");
    let inst = Instance::new();
    let mut child = inst.spawn();
    let out = Command::new(swaks)
        .args([
            "--server",
            &inst.smtp.to_string(),
            "--from",
            "swaks@customer.example",
            "--to",
            "support@example.test",
        ])
        .args([
            "--header",
            "Subject: hello from swaks",
            "--body",
            "Body from swaks",
            "--pipeline",
            "--timeout",
            "20",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swaks failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(require_program("swaks"))
        .args([
            "--server",
            &inst.smtp.to_string(),
            "--from",
            "swaks@customer.example",
            "--to",
            "relay@elsewhere.example",
            "--timeout",
            "20",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "relaying must be refused");
    assert!(String::from_utf8_lossy(&out.stdout).contains("550 5.1.1"));
    let list = inst.list_json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["subject"], "hello from swaks");
    assert_eq!(list[0]["contact"], "swaks@customer.example");
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}

#[test]
fn systemd_notifications_ready_reloading_stopping() {
    use std::os::unix::net::UnixDatagram;
    let inst = Instance::new();
    let socket_path = inst.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_teamgate"))
        .args(["serve", "--config", inst.config_arg()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    // Watchdog pings at half the interval.
    let ping = next();
    assert!(ping.contains("WATCHDOG=1"), "{ping}");
    signal(&child, "-HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        let m = next();
        if !m.contains("WATCHDOG=1") {
            seen.push(m);
        }
    }
    assert!(
        seen[0].contains("RELOADING=1") && seen[0].contains("MONOTONIC_USEC="),
        "{seen:?}"
    );
    signal(&child, "-TERM");
    let mut stopping = next();
    while stopping.contains("WATCHDOG=1") {
        stopping = next();
    }
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_session_fields() {
    let inst = Instance::new();
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        format!("{text}\n[log]\nformat = \"json\"\nlevel = \"info\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_teamgate"))
        .args(["serve", "--config", inst.config_arg()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(inst.smtp).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_with_python(inst.smtp, 1, "json-log");
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l.get("level").is_some() && l.get("timestamp").is_some()),
        "{log}"
    );
    let accepted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "accepted")
        .unwrap_or_else(|| panic!("no accepted line: {log}"));
    assert_eq!(accepted["span"]["protocol"], "smtp", "{accepted}");
    assert!(
        accepted["span"]["peer"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{accepted}"
    );
}

/// A thread of three from python's smtplib: t0, then t1 and t2 each replying to the one before.
fn send_thread_with_python(smtp: SocketAddr) {
    python_smtp(
        smtp,
        r#"    for i in range(3):
        m = EmailMessage()
        m["From"] = "Thread Customer <thread@customer.example>"
        m["To"] = "support@example.test"
        m["Subject"] = ("Re: " if i else "") + "Invoice question"
        m["Message-ID"] = "<t{}@customer.example>".format(i)
        if i:
            m["In-Reply-To"] = "<t{}@customer.example>".format(i - 1)
        m.set_content("part {}\n".format(i))
        s.send_message(m)
"#,
    );
}

/// `conversations split` and `merge` through the running daemon's control socket: the
/// messages move, the merged number redirects, and bad requests fail with a reason.
#[test]
fn conversations_split_and_merge_from_the_cli() {
    let inst = Instance::new();
    let mut child = inst.spawn();
    send_thread_with_python(inst.smtp);
    let cfg = inst.config_arg();
    let show = |id: &str| -> serde_json::Value {
        let (code, out, err) = teamgate(&["conversations", "show", id, "--json", "--config", cfg]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let ids = |c: &serde_json::Value| -> Vec<String> {
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = inst.list_json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let first = list[0]["id"].as_u64().unwrap().to_string();

    let (code, out, err) = teamgate(&[
        "conversations",
        "split",
        &first,
        "<t1@customer.example>",
        "--json",
        "--config",
        cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new = answer["new"]
        .as_u64()
        .expect("new conversation")
        .to_string();
    assert_eq!(ids(&show(&first)), ["t0@customer.example"]);
    let split = show(&new);
    assert_eq!(ids(&split), ["t1@customer.example", "t2@customer.example"]);
    assert_eq!(
        split["linked_to"].as_u64().map(|n| n.to_string()),
        Some(first.clone())
    );
    assert_eq!(
        split["messages"][0]["threaded_by"]["rule"], "split",
        "{split}"
    );

    let (code, human, err) = teamgate(&["conversations", "merge", &first, &new, "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        human.contains(&format!("#{new} merged into #{first}")),
        "{human}"
    );
    assert_eq!(
        ids(&show(&first)),
        [
            "t0@customer.example",
            "t1@customer.example",
            "t2@customer.example"
        ]
    );
    let merged = show(&new);
    assert_eq!(
        merged["merged_into"].as_u64().map(|n| n.to_string()),
        Some(first.clone())
    );
    assert_eq!(inst.list_json().as_array().unwrap().len(), 1);

    for (args, why) in [
        (vec!["merge", first.as_str(), first.as_str()], "into itself"),
        (
            vec!["merge", first.as_str(), new.as_str()],
            "was merged into",
        ),
        (vec!["merge", first.as_str(), "999"], "not found"),
        (
            vec!["split", first.as_str(), "t0@customer.example"],
            "starts conversation",
        ),
        (vec!["split", first.as_str(), "nope@x"], "no message"),
        (
            vec!["split", "abc", "t1@customer.example"],
            "conversation number",
        ),
    ] {
        let mut argv = vec!["conversations"];
        argv.extend(&args);
        argv.extend(["--config", cfg]);
        let (code, out, err) = teamgate(&argv);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // Nothing was changed by the refusals.
    assert_eq!(ids(&show(&first)).len(), 3);
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}
