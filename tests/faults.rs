//! Faults: a full disk is a `451` (SMTP) or `NO` (IMAP), never an acknowledgement for bytes
//! that are not stored, and the daemon recovers once space returns (the data directory is
//! a small tmpfs mounted for the test; CI runs as root, like the sessions). `kill -9` at
//! random points under mixed load (inbound SMTP, IMAP moves and appends, submission,
//! outbound delivery) loses and duplicates nothing acknowledged. Idle and slow clients are
//! dropped by timeouts; a thousand connections past `max_connections` are refused politely.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use teamgate::store::Status;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::harness::{ImapConn, Rng, STEP, TestDaemon, reserved_addr, simple_message};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let free = fs_free(dir);
    let size = free.saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).expect("write filler");
    filler
}

fn fs_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

#[tokio::test]
async fn full_disk_is_451_and_recovers_when_space_returns() {
    let fs = Tmpfs::mount("64m");
    let data_dir = tempfile::Builder::new().tempdir_in(fs.path()).unwrap();
    let d = TestDaemon::start_in(data_dir, |_| {}).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    // Something stored before the disk fills up.
    let first = simple_message("a@customer.example", "before", "before@customer.example");
    assert_eq!(
        c.send_mail("a@customer.example", &["support@example.test"], &first)
            .await
            .0,
        250
    );

    let filler = fill(fs.path(), 64 * 1024);
    let mut big = simple_message(
        "a@customer.example",
        "too big for the disk",
        "big@customer.example",
    );
    big.extend(
        std::iter::repeat_n(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n".as_slice(),
            4096,
        )
        .flatten(),
    );
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &big)
        .await;
    assert_eq!(
        code, 451,
        "a message that cannot be stored is temp-failed: {text:?}"
    );
    assert!(text[0].starts_with("451 4.3.0"), "{text:?}");

    // Space returns: the same session goes on and the message is accepted now.
    std::fs::remove_file(filler).unwrap();
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &big)
        .await;
    assert_eq!(code, 250, "{text:?}");
    c.cmd("QUIT", 221).await;

    let store = d.handle.store();
    let convs = store.list_conversations().unwrap();
    let subjects: Vec<&str> = convs.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["before", "too big for the disk"]);
    for conv in &convs {
        for key in store.message_keys(conv.id).unwrap() {
            store
                .read_message(key)
                .expect("every acknowledged message reads back intact");
        }
    }
    // And it all survives a restart on the same (once full) filesystem.
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, |_| {}).await;
    assert_eq!(d.handle.store().list_conversations().unwrap().len(), 2);
    d.stop().await;
    drop(fs);
}

#[tokio::test]
async fn full_disk_refuses_imap_writes_with_no_and_recovers() {
    let fs = Tmpfs::mount("64m");
    let data_dir = tempfile::Builder::new().tempdir_in(fs.path()).unwrap();
    let d = TestDaemon::start_in(data_dir, |_| {}).await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO client.example", 250).await;
    let first = simple_message("a@customer.example", "before", "before@customer.example");
    let (code, _) = smtp
        .send_mail("a@customer.example", &["support@example.test"], &first)
        .await;
    assert_eq!(code, 250);
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("CREATE Personal/Keep").await;
    c.ok("SELECT INBOX").await;

    let filler = fill(fs.path(), 64 * 1024);
    let append = |mailbox: &str, mid: &str| {
        let mut msg = format!(
            "From: Dragged <{mid}>\r\nTo: support@example.test\r\nSubject: big {mid}\r\nMessage-ID: <{mid}>\r\n\r\n"
        );
        for _ in 0..8192 {
            msg.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n");
        }
        format!("APPEND {mailbox} {{{}+}}\r\n{msg}", msg.len())
    };
    // Writes that need space answer NO (never OK for bytes not stored, never BAD).
    let (_, tagged) = c
        .run(&append("Personal/Keep", "keep@customer.example"))
        .await;
    assert!(tagged.split(' ').nth(1) == Some("NO"), "{tagged}");
    let (_, tagged) = c.run(&append("INBOX", "intake@customer.example")).await;
    assert!(tagged.split(' ').nth(1) == Some("NO"), "{tagged}");
    // A metadata-only change may still fit; it is OK or NO, and the session goes on.
    let (_, moved) = c.run("UID MOVE 1 Closed").await;
    let moved = match moved.split(' ').nth(1) {
        Some("OK") => true,
        Some("NO") => false,
        _ => panic!("MOVE on a full disk: {moved}"),
    };
    c.ok("NOOP").await;

    // Space returns: the same session writes again.
    std::fs::remove_file(filler).unwrap();
    c.ok(&append("Personal/Keep", "keep@customer.example"))
        .await;
    c.ok(&append("INBOX", "intake@customer.example")).await;
    if !moved {
        c.ok("SELECT INBOX").await;
        c.ok("UID MOVE 1 Closed").await;
    }
    let status = c.ok("STATUS Personal/Keep (MESSAGES)").await;
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
    c.ok("LOGOUT").await;

    let check = |d: &TestDaemon| {
        let store = d.handle.store();
        let convs = store.list_conversations().unwrap();
        let mut subjects: Vec<(String, Status)> = convs
            .iter()
            .map(|c| (c.subject.clone(), c.status))
            .collect();
        subjects.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            subjects,
            [
                ("before".to_string(), Status::Closed),
                ("big intake@customer.example".to_string(), Status::Open)
            ]
        );
        for conv in &convs {
            for key in store.message_keys(conv.id).unwrap() {
                store
                    .read_message(key)
                    .expect("every stored message reads back");
            }
        }
    };
    check(&d);
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, |_| {}).await;
    check(&d);
    let mut c = d.imap_as("alice", "alice-password").await;
    let status = c.ok("STATUS Personal/Keep (MESSAGES)").await;
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
    d.stop().await;
    drop(fs);
}

#[tokio::test]
async fn imap_idle_and_slow_clients_are_dropped_by_timeouts() {
    let d = TestDaemon::start_with(|c| {
        c.imap.login_timeout = Duration::from_millis(800);
        c.imap.timeout = Duration::from_millis(1500);
    })
    .await;
    // Silent before login: BYE, then the connection closes.
    let mut silent = ImapConn::connect(d.imap_addr()).await;
    let bye = silent.read_line().await.expect("a BYE");
    assert!(
        bye.starts_with(b"* BYE"),
        "{}",
        String::from_utf8_lossy(&bye)
    );
    assert!(silent.read_line().await.is_none(), "closed after the BYE");

    // Slow-loris before login: a byte every 100 ms never gets past the login deadline.
    let mut slow = ImapConn::connect(d.imap_addr()).await;
    let mut got = None;
    for b in b"a1 LOGIN alice alice-password-but-very-slowly-typed-indeed-x"
        .iter()
        .cycle()
        .take(100)
    {
        if slow.io.get_mut().try_write(&[*b]).is_err() {
            break;
        }
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(100), slow.read_line()).await {
            got = line;
            break;
        }
    }
    let got = got.expect("dropped within 10 s");
    assert!(
        got.starts_with(b"* BYE"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Logged in but idle past imap.timeout: autologout.
    let mut idle = d.imap_as("alice", "alice-password").await;
    idle.ok("SELECT INBOX").await;
    let bye = idle.read_line().await.expect("a BYE");
    assert!(
        bye.starts_with(b"* BYE"),
        "{}",
        String::from_utf8_lossy(&bye)
    );
    assert!(idle.read_line().await.is_none());

    // And the server still serves.
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("NOOP").await;
    d.stop().await;
}

#[tokio::test]
async fn smtp_command_slow_loris_is_cut_by_the_timeout() {
    let d = TestDaemon::start_with(|c| c.smtp.timeout = Duration::from_millis(800)).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    // One byte every 200 ms: each read comes well within the timeout, but the command
    // line never ends. The session must still end, not live as long as the client likes.
    let mut got = None;
    for b in b"MAIL FROM:<slow@customer.example>"
        .iter()
        .cycle()
        .take(100)
    {
        if c.io.get_mut().try_write(&[*b]).is_err() {
            break;
        }
        if let Ok(reply) = tokio::time::timeout(Duration::from_millis(200), c.read_reply()).await {
            got = reply;
            break;
        }
    }
    let (code, text) = got.expect("the session was cut within 20 s");
    assert_eq!(code, 421, "{text:?}");
    let mut again = d.smtp().await;
    again.cmd("EHLO client.example", 250).await;
    d.stop().await;
}

/// Raises this process's open-file limit to what 1,000 client sockets plus the in-process
/// daemon's 1,000 server sockets need (CI runners often start at 1024; as root the hard
/// limit is raised too).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = want.min(lim.rlim_max);
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            }
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    assert!(
        lim.rlim_cur >= want,
        "RLIMIT_NOFILE is {} (hard {}); {want} needed",
        lim.rlim_cur,
        lim.rlim_max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_refused_politely_past_the_limit() {
    raise_nofile(3000);
    let d = TestDaemon::start_with(|c| {
        c.smtp.max_connections = 50;
        c.imap.max_connections = 50;
    })
    .await;
    for (addr, ok, refused) in [
        (d.smtp_addr(), "220 ", "421 4.7.0"),
        (d.imap_addr(), "* OK", "* BYE"),
    ] {
        // 1,000 clients at once, each reading its first line.
        let clients: Vec<_> = (0..1000)
            .map(|_| {
                tokio::spawn(async move {
                    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
                        .await
                        .expect("connect timeout")
                        .expect("connect");
                    let mut io = BufReader::new(stream);
                    let mut line = String::new();
                    let _ = tokio::time::timeout(Duration::from_secs(20), io.read_line(&mut line))
                        .await;
                    (line, io)
                })
            })
            .collect();
        let mut served = Vec::new();
        let (mut accepted, mut busy) = (0, 0);
        let mut other = Vec::new();
        for c in clients {
            let (line, io) = c.await.unwrap();
            if line.starts_with(ok) {
                accepted += 1;
                served.push(io);
            } else if line.starts_with(refused) {
                busy += 1;
            } else {
                other.push(line);
            }
        }
        assert!(
            other.is_empty(),
            "{addr}: {} clients got neither a greeting nor a polite refusal ({accepted} served, {busy} refused): {:?}",
            other.len(),
            &other[..other.len().min(3)]
        );
        assert_eq!(accepted, 50, "exactly max_connections are served");
        assert_eq!(busy, 950);
        if addr == d.smtp_addr() {
            // The MX is full; agents can still reach submission (its own slots).
            let stream = TcpStream::connect(d.submission_addr()).await.unwrap();
            let mut c = crate::harness::SmtpConn::new(stream);
            let greeting = c.read_reply().await;
            assert!(
                matches!(greeting, Some((220, _))),
                "submission while the MX is full: {greeting:?}"
            );
        }
        drop(served);
    }
    // Freed slots serve normally again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = TcpStream::connect(d.smtp_addr()).await.unwrap();
        let mut c = crate::harness::SmtpConn::new(stream);
        if let Some((220, _)) = c.read_reply().await {
            c.cmd("EHLO client.example", 250).await;
            let msg = simple_message(
                "a@customer.example",
                "after the storm",
                "storm@customer.example",
            );
            assert_eq!(
                c.send_mail("a@customer.example", &["support@example.test"], &msg)
                    .await
                    .0,
                250
            );
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = TcpStream::connect(d.imap_addr()).await.unwrap();
        let mut io = BufReader::new(stream);
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        if line.starts_with("* OK") {
            io.get_mut()
                .write_all(b"a LOGIN alice alice-password\r\n")
                .await
                .unwrap();
            line.clear();
            io.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("a OK"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "IMAP slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// The real binary under faults: a spawned `teamgate serve` that can be killed with -9.
// ---------------------------------------------------------------------------------------

/// An argon2id hash with the smallest parameters: a debug build verifies the default ones
/// in about a second, which would leave the clients of a short run mostly logging in.
fn cheap_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    let salt = password_hash::SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A `teamgate serve` child process on free loopback ports with Support (alice, bob) and
/// Sales (carol), all with the password `pw`, relaying to a loopback sink. Killed on drop.
pub struct Spawned {
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub imap: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl Spawned {
    /// `extra` is appended to the config file (more sections or keys of new sections).
    pub fn new(relay_port: u16, smtp_section: &str, imap_section: &str, extra: &str) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let (smtp, submission, imap) = (reserved_addr(), reserved_addr(), reserved_addr());
        let config = dir.path().join("teamgate.toml");
        let hash = cheap_hash("pw");
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
{smtp_section}

[submission]
listen = ["{submission}"]

[imap]
listen = ["{imap}"]
{imap_section}

[tls]
allow_plaintext_auth = true

[outbound]
relay = "smtp://127.0.0.1:{relay_port}"
retry_schedule_secs = [1, 1, 1, 1, 1, 1, 1, 1]

[filter]
dns_server = "none"

[workflow]
snippets_dir = "{snippets}"

[[inbox]]
name = "Support"
addresses = ["support@example.test"]
members = ["alice", "bob"]

[[inbox]]
name = "Sales"
addresses = ["sales@example.test"]
members = ["carol"]

[[agent]]
login = "alice"
name = "Alice Example"
email = "alice@example.test"
password_hash = "{hash}"

[[agent]]
login = "bob"
name = "Bob Example"
email = "bob@example.test"
password_hash = "{hash}"

[[agent]]
login = "carol"
name = "Carol Example"
email = "carol@example.test"
password_hash = "{hash}"
{extra}
"#,
                data = dir.path().join("data").display(),
                snippets = dir.path().join("snippets").display(),
            ),
        )
        .unwrap();
        Spawned {
            dir,
            config,
            smtp,
            submission,
            imap,
            child: None,
            starts: 0,
        }
    }

    pub fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn control_socket(&self) -> std::path::PathBuf {
        self.dir.path().join("data/control.sock")
    }

    pub fn log_path(&self, start: u32) -> std::path::PathBuf {
        self.dir.path().join(format!("serve-{start}.log"))
    }

    /// Starts the daemon and waits until every listener and the control socket answer.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_teamgate"))
            .args(["serve", "--config", self.config_arg()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn teamgate serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A control socket left by a killed daemon exists but refuses connections.
            let up = [self.smtp, self.submission, self.imap]
                .iter()
                .all(|a| std::net::TcpStream::connect(a).is_ok())
                && std::os::unix::net::UnixStream::connect(self.control_socket()).is_ok();
            if up {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("teamgate exited early ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "teamgate did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The log of the latest start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "teamgate did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// An admin verb with `--json`; its parsed output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--json", "--config", self.config_arg()]);
        let (code, out, err) = crate::harness::teamgate(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Peak resident set size of the daemon in KiB (Linux /proc VmHWM), if it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fallible line client for SMTP and IMAP: under `kill -9` every step may fail, and a
/// failure only means "not acknowledged", never a test panic.
pub struct Wire {
    io: BufReader<TcpStream>,
}

pub type WireResult<T> = Result<T, String>;

impl Wire {
    pub async fn connect(addr: SocketAddr) -> WireResult<Wire> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Wire {
            io: BufReader::new(stream),
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> WireResult<()> {
        tokio::time::timeout(STEP, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| "write timeout".to_string())?
            .map_err(|e| e.to_string())
    }

    async fn raw_line(&mut self) -> WireResult<Vec<u8>> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "read timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(line)
    }

    /// One SMTP reply (multi-line joined); its code and last line.
    pub async fn smtp_reply(&mut self) -> WireResult<(u16, String)> {
        loop {
            let line = String::from_utf8_lossy(&self.raw_line().await?)
                .trim_end()
                .to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("bad reply {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line));
            }
        }
    }

    pub async fn smtp(&mut self, line: &str) -> WireResult<(u16, String)> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.smtp_reply().await
    }

    /// `smtp(line)` that must answer `code`.
    pub async fn smtp_ok(&mut self, line: &str, code: u16) -> WireResult<()> {
        match self.smtp(line).await? {
            (c, _) if c == code => Ok(()),
            (_, text) => Err(format!("{line} -> {text}")),
        }
    }

    /// A whole mail transaction; the reply to the end of data.
    pub async fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        body: &[u8],
    ) -> WireResult<(u16, String)> {
        self.smtp_ok(&format!("MAIL FROM:<{from}>"), 250).await?;
        for rcpt in to {
            self.smtp_ok(&format!("RCPT TO:<{rcpt}>"), 250).await?;
        }
        self.smtp_ok("DATA", 354).await?;
        let mut data = crate::harness::dot_stuff(body);
        data.extend_from_slice(b".\r\n");
        self.write(&data).await?;
        self.smtp_reply().await
    }

    /// One IMAP response with its literals spliced in.
    pub async fn imap_line(&mut self) -> WireResult<String> {
        let mut out = Vec::new();
        loop {
            let line = self.raw_line().await?;
            out.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let literal = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|b| *b == b'{').map(|i| &t[i + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim_end_matches('+').parse::<usize>().ok());
            let Some(len) = literal else {
                return Ok(String::from_utf8_lossy(&out).trim_end().to_string());
            };
            let mut buf = vec![0u8; len];
            tokio::time::timeout(STEP, self.io.read_exact(&mut buf))
                .await
                .map_err(|_| "literal timeout".to_string())?
                .map_err(|e| e.to_string())?;
            out.extend_from_slice(&buf);
        }
    }

    /// Sends `tag command` (the command may hold `{n+}` literals) and collects the
    /// untagged responses up to the tagged one.
    pub async fn imap(&mut self, tag: &str, command: &str) -> WireResult<(Vec<String>, String)> {
        self.write(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut untagged = Vec::new();
        loop {
            let line = self.imap_line().await?;
            if line.starts_with(&format!("{tag} ")) {
                return Ok((untagged, line));
            }
            untagged.push(line);
        }
    }

    /// `imap` that must answer OK.
    pub async fn imap_ok(&mut self, tag: &str, command: &str) -> WireResult<Vec<String>> {
        let (untagged, tagged) = self.imap(tag, command).await?;
        if tagged.split(' ').nth(1) == Some("OK") {
            Ok(untagged)
        } else {
            Err(format!("{command} -> {tagged}"))
        }
    }
}

/// One IMAP view of a mailbox as a client saw it.
#[derive(Debug, Clone)]
struct Snapshot {
    mailbox: String,
    validity: u32,
    uidnext: u32,
    /// (UID, Message-ID) in sequence order.
    uids: Vec<(u32, String)>,
}

/// What the daemon acknowledged, and what was only attempted.
#[derive(Default)]
struct Ledger {
    /// Message-ID → inbox, for every message answered 250 (SMTP) or OK (APPEND).
    acked: BTreeMap<String, &'static str>,
    /// Every Message-ID a client tried to store, acknowledged or not.
    tried: BTreeSet<String>,
    /// Acknowledged replies: Message-ID → the Message-ID it answers.
    replies: BTreeMap<String, String>,
    /// Messages whose conversation an acknowledged MOVE to Closed closed.
    closed: BTreeSet<String>,
    /// Messages a MOVE to Closed was tried on (acknowledged or not).
    close_tried: BTreeSet<String>,
    /// Acknowledged Sales mail not yet answered: (Message-ID, customer address).
    to_answer: Vec<(String, String)>,
    snapshots: Vec<Snapshot>,
    /// Replies a live daemon should never give (4xx/5xx to valid work).
    unexpected: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn customer_mail(from: &str, to: &str, subject: &str, mid: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n{subject}.\r\n"
    )
    .into_bytes()
}

fn message_id_in(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("message-id:")?;
    let rest = &text[at..];
    let open = rest.find('<')?;
    let close = rest[open..].find('>')?;
    Some(rest[open + 1..open + close].to_string())
}

fn number_after(line: &str, key: &str) -> Option<u32> {
    let at = line.find(key)? + key.len();
    line[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// SELECT (or EXAMINE) + UID FETCH of every Message-ID.
async fn snapshot(c: &mut Wire, tag: &str, mailbox: &str, label: &str) -> WireResult<Snapshot> {
    let select = c
        .imap_ok(&format!("{tag}s"), &format!("SELECT {mailbox}"))
        .await?;
    let find = |key: &str| select.iter().find_map(|l| number_after(l, key));
    let validity = find("[UIDVALIDITY ").ok_or("no UIDVALIDITY")?;
    let uidnext = find("[UIDNEXT ").ok_or("no UIDNEXT")?;
    let exists = select
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS").and_then(|l| l.strip_prefix("* ")))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or("no EXISTS")?;
    let mut uids = Vec::new();
    if exists > 0 {
        let fetched = c
            .imap_ok(
                &format!("{tag}f"),
                "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            )
            .await?;
        let mut last_seq = 0;
        for line in fetched {
            let Some(seq) = line
                .strip_prefix("* ")
                .and_then(|l| l.split(' ').next())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let (Some(uid), Some(mid)) = (number_after(&line, "UID "), message_id_in(&line)) else {
                continue;
            };
            if !line.contains(" FETCH (") {
                continue;
            }
            assert!(seq > last_seq, "FETCH out of sequence order: {line}");
            last_seq = seq;
            uids.push((uid, mid));
        }
    }
    Ok(Snapshot {
        mailbox: label.to_string(),
        validity,
        uidnext,
        uids,
    })
}

async fn inbound_worker(
    addr: SocketAddr,
    round: u32,
    worker: u32,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut c) = Wire::connect(addr).await else {
        return;
    };
    if c.smtp_reply().await.is_err() || c.smtp_ok("EHLO load.example", 250).await.is_err() {
        return;
    }
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (to, inbox) = if (worker + n).is_multiple_of(3) {
            ("sales@example.test", "Sales")
        } else {
            ("support@example.test", "Support")
        };
        let mid = format!("in-{round}-{worker}-{n}@customer.example");
        let from = format!("c{round}x{worker}x{n}@customer.example");
        let body = customer_mail(&from, to, &format!("load {round}/{worker}/{n}"), &mid);
        ledger.lock().unwrap().tried.insert(mid.clone());
        match c.send_mail(&from, &[to], &body).await {
            Ok((250, _)) => {
                let mut l = ledger.lock().unwrap();
                l.acked.insert(mid.clone(), inbox);
                if inbox == "Sales" {
                    l.to_answer.push((mid, from));
                }
            }
            Ok((_, text)) => {
                ledger.lock().unwrap().unexpected.push(text);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Alice works Support over IMAP: snapshots INBOX and Closed, closes conversations by
/// MOVE, and drags new mail in with APPEND (intake).
async fn imap_worker(
    addr: SocketAddr,
    round: u32,
    seed: u64,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
) {
    let mut rng = Rng(seed);
    let Ok(mut c) = Wire::connect(addr).await else {
        return;
    };
    if c.imap_line().await.is_err() || c.imap_ok("l", "LOGIN alice pw").await.is_err() {
        return;
    }
    ready.fetch_add(1, Ordering::SeqCst);
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let tag = format!("a{n}");
        if n % 4 == 3 {
            match snapshot(&mut c, &tag, "Closed", "alice/Closed").await {
                Ok(s) => ledger.lock().unwrap().snapshots.push(s),
                Err(_) => return,
            }
            continue;
        }
        let snap = match snapshot(&mut c, &tag, "INBOX", "alice/INBOX").await {
            Ok(s) => s,
            Err(_) => return,
        };
        ledger.lock().unwrap().snapshots.push(snap.clone());
        if !snap.uids.is_empty() && rng.below(2) == 0 {
            let (uid, mid) = snap.uids[rng.below(snap.uids.len() as u64) as usize].clone();
            ledger.lock().unwrap().close_tried.insert(mid.clone());
            match c
                .imap(&format!("{tag}m"), &format!("UID MOVE {uid} Closed"))
                .await
            {
                Ok((_, tagged)) if tagged.contains(" OK") => {
                    ledger.lock().unwrap().closed.insert(mid);
                }
                Ok((_, tagged)) => {
                    ledger.lock().unwrap().unexpected.push(tagged);
                    return;
                }
                Err(_) => return,
            }
        } else {
            let mid = format!("ap-{round}-{n}@customer.example");
            let from = format!("d{round}x{n}@customer.example");
            let msg = customer_mail(
                &from,
                "someone@example.test",
                &format!("dragged {round}/{n}"),
                &mid,
            );
            ledger.lock().unwrap().tried.insert(mid.clone());
            let command = format!(
                "APPEND INBOX {{{}+}}\r\n{}",
                msg.len(),
                String::from_utf8(msg).unwrap()
            );
            match c.imap(&format!("{tag}a"), &command).await {
                Ok((_, tagged)) if tagged.contains(" OK") => {
                    ledger.lock().unwrap().acked.insert(mid, "Support");
                }
                Ok((_, tagged)) => {
                    ledger.lock().unwrap().unexpected.push(tagged);
                    return;
                }
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
    }
}

/// Carol answers Sales mail over submission; each reply is queued for the sink.
async fn submission_worker(
    addr: SocketAddr,
    round: u32,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
) {
    use base64::Engine;
    let Ok(mut c) = Wire::connect(addr).await else {
        return;
    };
    let token = base64::engine::general_purpose::STANDARD.encode("\0carol\0pw");
    if c.smtp_reply().await.is_err()
        || c.smtp_ok("EHLO agent.example", 250).await.is_err()
        || c.smtp_ok(&format!("AUTH PLAIN {token}"), 235)
            .await
            .is_err()
    {
        return;
    }
    ready.fetch_add(1, Ordering::SeqCst);
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let next = ledger.lock().unwrap().to_answer.pop();
        let Some((parent, customer)) = next else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mid = format!("re-{round}-{n}@example.test");
        let body = format!(
            "From: Sales <sales@example.test>\r\nTo: {customer}\r\nSubject: Re: load\r\n\
             Message-ID: <{mid}>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnswered.\r\n"
        );
        ledger.lock().unwrap().tried.insert(mid.clone());
        match c
            .send_mail("sales@example.test", &[&customer], body.as_bytes())
            .await
        {
            Ok((250, _)) => {
                let mut l = ledger.lock().unwrap();
                l.acked.insert(mid.clone(), "Sales");
                l.replies.insert(mid, parent);
            }
            Ok((_, text)) => {
                ledger.lock().unwrap().unexpected.push(text);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Carol watches her INBOX (Sales) so its UIDs are checked across kills too.
async fn watcher(addr: SocketAddr, ledger: Shared, stop: Arc<AtomicBool>, ready: Arc<AtomicUsize>) {
    let Ok(mut c) = Wire::connect(addr).await else {
        return;
    };
    if c.imap_line().await.is_err() || c.imap_ok("l", "LOGIN carol pw").await.is_err() {
        return;
    }
    ready.fetch_add(1, Ordering::SeqCst);
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match snapshot(&mut c, &format!("w{n}"), "INBOX", "carol/INBOX").await {
            Ok(s) => ledger.lock().unwrap().snapshots.push(s),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// RFC 3501 across kills: the same UIDVALIDITY, a message keeps its UID while it stays in
/// the mailbox, and a message new to the mailbox gets a UID above every UID seen before.
fn check_uid_history(snapshots: &[Snapshot]) {
    let mut by_box: BTreeMap<&str, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        by_box.entry(&s.mailbox).or_default().push(s);
    }
    for (mailbox, list) in by_box {
        for s in &list {
            let uids: Vec<u32> = s.uids.iter().map(|(u, _)| *u).collect();
            assert!(
                uids.windows(2).all(|w| w[0] < w[1]),
                "{mailbox}: UIDs not strictly ascending in sequence order: {uids:?}"
            );
            assert!(
                uids.last().is_none_or(|u| *u < s.uidnext.max(u + 1)),
                "{mailbox}: UID at or above UIDNEXT"
            );
        }
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(a.validity, b.validity, "{mailbox}: UIDVALIDITY changed");
            let before: BTreeMap<&str, u32> =
                a.uids.iter().map(|(u, m)| (m.as_str(), *u)).collect();
            let high = a.uids.last().map_or(0, |(u, _)| *u);
            let next = a.uidnext.max(high + 1);
            assert!(
                b.uidnext >= a.uidnext,
                "{mailbox}: UIDNEXT went back {} -> {}",
                a.uidnext,
                b.uidnext
            );
            for (uid, mid) in &b.uids {
                match before.get(mid.as_str()) {
                    Some(old) => assert_eq!(old, uid, "{mailbox}: {mid} changed its UID"),
                    None => assert!(
                        *uid >= next,
                        "{mailbox}: {mid} is new with UID {uid}, below UIDNEXT {next} seen before"
                    ),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_mixed_load_loses_and_duplicates_nothing() {
    let seed = std::env::var("TEAMGATE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill -9 under mixed load: seed {seed} (replay with TEAMGATE_FAULT_SEED={seed})");
    let mut rng = Rng(seed);
    let sink = crate::sink::Sink::start().await;
    let mut d = Spawned::new(sink.port(), "", "", "");
    let ledger: Shared = Arc::default();
    const KILLS: u32 = 4;
    for round in 0..KILLS {
        tokio::task::block_in_place(|| d.start());
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..3 {
            workers.push(tokio::spawn(inbound_worker(
                d.smtp,
                round,
                w,
                ledger.clone(),
                stop.clone(),
            )));
        }
        workers.push(tokio::spawn(imap_worker(
            d.imap,
            round,
            rng.next(),
            ledger.clone(),
            stop.clone(),
            ready.clone(),
        )));
        workers.push(tokio::spawn(submission_worker(
            d.submission,
            round,
            ledger.clone(),
            stop.clone(),
            ready.clone(),
        )));
        workers.push(tokio::spawn(watcher(
            d.imap,
            ledger.clone(),
            stop.clone(),
            ready.clone(),
        )));
        // The kill comes at a random point once every client is logged in and working.
        let logged_in = Instant::now() + Duration::from_secs(20);
        while ready.load(Ordering::SeqCst) < 3 && Instant::now() < logged_in {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            ready.load(Ordering::SeqCst),
            3,
            "clients did not log in:\n{}",
            d.log()
        );
        let at = Duration::from_millis(200 + rng.below(1000));
        tokio::time::sleep(at).await;
        tokio::task::block_in_place(|| d.kill9());
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("a client notices the dead daemon")
                .expect("client task");
        }
        let l = ledger.lock().unwrap();
        println!(
            "round {round}: killed after {at:?}; acknowledged so far: {} messages, {} replies, {} closes",
            l.acked.len(),
            l.replies.len(),
            l.closed.len()
        );
    }

    // The last start: the queue drains into the sink, then everything is checked.
    tokio::task::block_in_place(|| d.start());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = tokio::task::block_in_place(|| d.cli_json(&["queue", "list"]));
        if queue.as_array().is_some_and(|q| q.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never drained: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = tokio::task::block_in_place(|| d.cli_json(&["conversations", "list"]));
    // Every client has finished: the ledger is final.
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        l.unexpected.is_empty(),
        "a live daemon refused work: {:?}",
        l.unexpected
    );
    assert!(
        l.acked.len() > 20,
        "too little load to prove anything: {}",
        l.acked.len()
    );

    // Message-ID → (conversation, inbox, status), each Message-ID in exactly one place.
    let mut place: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
    for conv in list.as_array().unwrap() {
        let id = conv["id"].as_u64().unwrap();
        let inbox = conv["inbox"].as_str().unwrap().to_string();
        let status = conv["status"].as_str().unwrap().to_string();
        for mid in conv["message_ids"].as_array().unwrap() {
            let mid = mid.as_str().unwrap().to_string();
            assert!(
                l.tried.contains(&mid),
                "#{id} holds {mid}, which no client sent"
            );
            let before = place.insert(mid.clone(), (id, inbox.clone(), status.clone()));
            assert!(
                before.is_none(),
                "{mid} is stored twice: #{id} and {before:?}"
            );
        }
    }
    for (mid, inbox) in &l.acked {
        let (_, got, _) = place
            .get(mid)
            .unwrap_or_else(|| panic!("acknowledged {mid} was lost (seed {seed})"));
        assert_eq!(got, inbox, "{mid} is in the wrong inbox");
    }
    for (reply, parent) in &l.replies {
        assert_eq!(
            place[reply].0, place[parent].0,
            "reply {reply} is not in the conversation of {parent}"
        );
    }
    for (mid, (id, _, status)) in &place {
        let want = if l.closed.contains(mid) {
            "closed"
        } else if l.close_tried.contains(mid) {
            continue;
        } else {
            "open"
        };
        assert_eq!(status, want, "#{id} ({mid}) has the wrong status");
    }
    // Every acknowledged reply reached the sink (at least once: a kill between the
    // relay's 250 and the queue update may send one twice, which SMTP allows).
    let delivered: Vec<String> = sink
        .mails()
        .iter()
        .filter_map(|m| message_id_in(&String::from_utf8_lossy(&m.data)))
        .collect();
    for reply in l.replies.keys() {
        assert!(
            delivered.contains(reply),
            "acknowledged reply {reply} never went out"
        );
    }
    println!(
        "final: {} stored, {} acknowledged, {} replies delivered {} times",
        place.len(),
        l.acked.len(),
        l.replies.len(),
        delivered.len()
    );

    // IMAP after the last restart: what each view holds is what the store says.
    let mut snaps = l.snapshots;
    let expected = |inbox: &str, status: &str| -> BTreeSet<String> {
        place
            .iter()
            .filter(|(_, (_, i, s))| i == inbox && s == status)
            .map(|(m, _)| m.clone())
            .collect()
    };
    for (login, mailbox, inbox, status) in [
        ("alice", "INBOX", "Support", "open"),
        ("alice", "Closed", "Support", "closed"),
        ("carol", "INBOX", "Sales", "open"),
    ] {
        let mut c = Wire::connect(d.imap).await.unwrap();
        c.imap_line().await.unwrap();
        c.imap_ok("l", &format!("LOGIN {login} pw")).await.unwrap();
        let s = snapshot(&mut c, "f", mailbox, &format!("{login}/{mailbox}"))
            .await
            .unwrap();
        let shown: BTreeSet<String> = s.uids.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(
            shown.len(),
            s.uids.len(),
            "{login}/{mailbox} shows a message twice"
        );
        assert_eq!(
            shown,
            expected(inbox, status),
            "{login}/{mailbox} differs from the store"
        );
        snaps.push(s);
    }
    check_uid_history(&snaps);
    tokio::task::block_in_place(|| d.stop());
}
