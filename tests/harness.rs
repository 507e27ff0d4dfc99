//! One harness for every integration test: a real daemon on ephemeral loopback ports with
//! a temp data dir, and a raw SMTP client that asserts reply codes (Stalwart `cmd` style).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use teamgate::{
    config::Config,
    daemon::{self, DaemonHandle},
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// An address of its own for a server a test starts, stops and starts again: a free port
/// on a loopback IP (127.x.y.z) that no other test of this process is handed. Tests that
/// bind `127.0.0.1:0` can never take it meanwhile, unlike a port freed on 127.0.0.1
/// (which the kernel may hand the next ephemeral bind). Free for TCP and UDP alike.
pub fn reserved_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Bounded: a busy pair on an address nobody else uses is rare; a few tries settle it.
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let process = u8::try_from(std::process::id() % 200).unwrap_or(0);
        let ip = std::net::Ipv4Addr::new(
            127,
            20 + process,
            u8::try_from(n / 250 % 250).unwrap_or(0),
            u8::try_from(n % 250).unwrap_or(0) + 2,
        );
        let tcp = std::net::TcpListener::bind((ip, 0)).expect("bind a loopback address");
        let addr = tcp.local_addr().expect("local addr");
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback address for TCP and UDP after 100 tries");
}

/// The conversation number an SMTP `250` text names (`... #12 ...`).
pub fn conversation_number(reply: &[String]) -> Option<u64> {
    reply
        .first()?
        .split('#')
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The count of `* n EXISTS` in an IMAP answer.
pub fn exists_count(lines: &[String]) -> u32 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {lines:?}"))
}

/// Upper bound for any single network step of a test.
pub const STEP: Duration = Duration::from_secs(10);

/// The corpus is read through the crate's one helper.
pub use teamgate::test_corpus::dir as corpus_dir;

pub fn corpus(path: &str) -> Vec<u8> {
    let p = corpus_dir().join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("corpus file {}: {e}", p.display()))
}

/// A corpus file as an SMTP client would send it: without the mbox `From ` line some
/// files carry, and with CRLF line ends.
pub fn corpus_for_smtp(path: &str) -> Vec<u8> {
    let raw = corpus(path);
    let raw = if raw.starts_with(b"From ") {
        match raw.iter().position(|b| *b == b'\n') {
            Some(lf) => raw[lf + 1..].to_vec(),
            None => Vec::new(),
        }
    } else {
        raw
    };
    with_crlf(&raw)
}

/// A corpus file byte for byte as stored, only with CRLF line ends (SMTP's): a leading
/// mbox `From ` line stays, as a careless relay would pass it on.
pub fn corpus_as_stored(path: &str) -> Vec<u8> {
    with_crlf(&corpus(path))
}

fn with_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

pub struct TestDaemon {
    pub handle: DaemonHandle,
    pub data_dir: TempDir,
    /// Outbound mail goes here (a loopback relay), never to the internet.
    pub sink: crate::sink::Sink,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestDaemon {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, tweak).await
    }

    pub async fn start_in(data_dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
        let mut config = Config::for_tests(data_dir.path());
        let sink = crate::sink::Sink::start().await;
        config.outbound.relay = Some(("127.0.0.1".into(), sink.port()));
        tweak(&mut config);
        let handle = daemon::start(config).await.expect("daemon start");
        TestDaemon {
            handle,
            data_dir,
            sink,
        }
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.handle.addrs.smtp[0]
    }

    pub fn submission_addr(&self) -> SocketAddr {
        self.handle.addrs.submission[0]
    }

    /// A submission session logged in with AUTH PLAIN (EHLO done).
    pub async fn submission_as(&self, user: &str, password: &str) -> SmtpConn<TcpStream> {
        use base64::Engine;
        let mut c = SmtpConn::connect(self.submission_addr()).await;
        c.cmd("EHLO agent.example", 250).await;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        c.cmd(&format!("AUTH PLAIN {token}"), 235).await;
        c
    }

    pub fn imap_addr(&self) -> SocketAddr {
        self.handle.addrs.imap[0]
    }

    /// Logs in as a seeded agent (`alice`/`alice-password`, or one added by a test).
    pub async fn imap_as(&self, user: &str, password: &str) -> ImapConn {
        ImapConn::login(self.imap_addr(), user, password).await
    }

    pub async fn smtp(&self) -> SmtpConn<TcpStream> {
        SmtpConn::connect(self.smtp_addr()).await
    }

    /// Graceful stop; keeps the data dir for restart tests.
    pub async fn stop(self) -> TempDir {
        tokio::time::timeout(Duration::from_secs(30), self.handle.shutdown())
            .await
            .expect("shutdown within 30 s")
            .expect("clean shutdown");
        self.data_dir
    }
}

pub struct SmtpConn<S> {
    pub io: BufReader<S>,
}

impl SmtpConn<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> SmtpConn<TcpStream> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut c = SmtpConn {
            io: BufReader::new(stream),
        };
        c.expect(220).await;
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpConn<S> {
    pub fn new(stream: S) -> Self {
        SmtpConn {
            io: BufReader::new(stream),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, async {
            self.io.get_mut().write_all(bytes).await?;
            self.io.get_mut().flush().await
        })
        .await
        .expect("write timeout")
        .expect("write");
    }

    /// Reads one (possibly multi-line) reply; `None` on EOF.
    pub async fn read_reply(&mut self) -> Option<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.io.read_line(&mut line))
                .await
                .expect("reply timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end().to_string();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad reply line {line:?}"));
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some((code, lines));
            }
        }
    }

    pub async fn expect(&mut self, code: u16) -> Vec<String> {
        let (got, lines) = self
            .read_reply()
            .await
            .expect("connection closed while waiting for a reply");
        assert_eq!(got, code, "unexpected reply: {lines:?}");
        lines
    }

    /// Sends one command line and asserts the reply code.
    pub async fn cmd(&mut self, line: &str, code: u16) -> Vec<String> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.expect(code).await
    }

    /// A whole transaction with DATA; returns the final reply code and text.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> (u16, Vec<String>) {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.cmd("DATA", 354).await;
        self.send_raw(&dot_stuff(body)).await;
        self.send_raw(b".\r\n").await;
        self.read_reply().await.expect("reply to end of data")
    }

    /// Asserts that the server closed the connection.
    pub async fn expect_closed(&mut self) {
        assert!(
            self.read_reply().await.is_none(),
            "connection should be closed"
        );
    }
}

/// Dot-stuffs a body and makes sure it ends with CRLF (RFC 5321 §4.5.2).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        if out.ends_with(b"\n") {
            out.pop();
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A minimal valid message.
pub fn simple_message(from: &str, subject: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nmy printer is broken.\r\n"
    )
    .into_bytes()
}

/// Runs the real `teamgate` binary with arguments; returns (status code, stdout, stderr).
pub fn teamgate(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teamgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run teamgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Adds an agent like the first one (alice's password) as `login`, with the address
/// `<login>@example.test`; returns it for further changes.
pub fn add_agent<'c>(c: &'c mut Config, login: &str) -> &'c mut teamgate::config::AgentConfig {
    let mut agent = c.agents[0].clone();
    agent.login = login.into();
    agent.email = format!("{login}@example.test");
    c.agents.push(agent);
    c.agents.last_mut().expect("just pushed")
}

/// Adds agent `bob` (alice's password) to the first inbox, so both see its conversations.
pub fn with_bob(c: &mut Config) {
    add_agent(c, "bob");
    c.inboxes[0].members.push("bob".into());
}

/// A runtime for tests that run a blocking client (a Python script, mbsync) between the
/// daemon's async steps.
pub fn blocking_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs a Python 3 script (imaplib, smtplib: real clients) and asserts it succeeds.
pub fn run_python(script: &str, what: &str) {
    let python = require_program("python3");
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .status()
        .expect("run python3");
    assert!(status.success(), "{what} failed");
}

/// Fails (never skips) when an external program the tests need is missing.
pub fn require_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed; run tests/run.sh, which installs it")
}

/// A raw IMAP client: sends tagged commands, collects untagged responses (literals
/// included, as bytes) until the tagged completion.
pub struct ImapConn {
    pub io: BufReader<TcpStream>,
    next_tag: u32,
}

/// One response line with any literals spliced in.
pub type ImapLine = Vec<u8>;

impl ImapConn {
    pub async fn connect(addr: SocketAddr) -> ImapConn {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut c = ImapConn {
            io: BufReader::new(stream),
            next_tag: 0,
        };
        let greeting = c.read_line().await.expect("greeting");
        assert!(
            greeting.starts_with(b"* OK"),
            "{}",
            String::from_utf8_lossy(&greeting)
        );
        c
    }

    /// Reads one response, splicing literals `{n}` into it.
    pub async fn read_line(&mut self) -> Option<ImapLine> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut line))
                .await
                .expect("read timeout")
                .ok()?;
            if n == 0 {
                return if out.is_empty() { None } else { Some(out) };
            }
            out.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let literal = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|b| *b == b'{').map(|i| &t[i + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim_end_matches('+').parse::<usize>().ok());
            match literal {
                Some(len) => {
                    let mut buf = vec![0u8; len];
                    tokio::time::timeout(
                        STEP,
                        tokio::io::AsyncReadExt::read_exact(&mut self.io, &mut buf),
                    )
                    .await
                    .expect("literal timeout")
                    .ok()?;
                    out.extend_from_slice(&buf);
                }
                None => return Some(out),
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.io.get_mut().write_all(bytes))
            .await
            .expect("write timeout")
            .expect("write");
    }

    /// Sends `<tag> <command>` and returns (untagged responses, tagged completion line).
    pub async fn run(&mut self, command: &str) -> (Vec<String>, String) {
        self.next_tag += 1;
        let tag = format!("t{}", self.next_tag);
        self.send_raw(format!("{tag} {command}\r\n").as_bytes())
            .await;
        self.until_tagged(&tag).await
    }

    pub async fn until_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let line = self
                .read_line()
                .await
                .unwrap_or_else(|| panic!("connection closed; got {untagged:?}"));
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if text.starts_with(&format!("{tag} ")) {
                return (untagged, text);
            }
            untagged.push(text);
        }
    }

    /// Runs a command and asserts `OK`; returns the untagged responses.
    pub async fn ok(&mut self, command: &str) -> Vec<String> {
        let (untagged, tagged) = self.run(command).await;
        assert!(
            tagged.split(' ').nth(1) == Some("OK"),
            "{command} -> {tagged} ({untagged:?})"
        );
        untagged
    }

    /// Runs a command and asserts `NO` (or `BAD`); returns the tagged line.
    pub async fn refused(&mut self, command: &str, status: &str) -> String {
        let (_, tagged) = self.run(command).await;
        assert!(
            tagged.split(' ').nth(1) == Some(status),
            "{command} -> {tagged}"
        );
        tagged
    }

    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> ImapConn {
        let mut c = ImapConn::connect(addr).await;
        c.ok(&format!("LOGIN {user} {password}")).await;
        c
    }
}

/// A small deterministic generator (SplitMix64) for tests that draw their inputs: the
/// seed is printed, so a failing run can be replayed with it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into a collection of `len` items (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        (self.next() % len.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}
