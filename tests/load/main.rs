//! Load test of one real `teamgate serve` process:
//! `cargo bench --bench load [-- --senders 50 --agents 20 --submitters 5 --duration 300]`.
//!
//! Spawns the release binary (`CARGO_BIN_EXE_teamgate`, or `--binary PATH`) with a temp
//! data dir and a generated config on free 127.0.0.1 ports, its outbound relay pointed
//! at a loopback SMTP sink run here. Then, for `--duration` seconds:
//!
//! - `--senders` SMTP clients deliver realistic customer mail in a loop: new
//!   conversations and replies (In-Reply-To/References) to their earlier ones;
//! - `--agents` IMAP agents sit in IDLE on INBOX; on EXISTS they DONE, UID FETCH the new
//!   messages' FLAGS and ENVELOPE and UID MOVE some of them (to `Mine`,
//!   `Assigned/<teammate>` or `Closed`), then IDLE again. Each conversation is moved by
//!   one agent only (thread number modulo agents), so the last acknowledged MOVE is what
//!   the store must show;
//! - `--submitters` agents reply to existing conversations over the submission port;
//!   the replies leave through the outbound queue to the sink.
//!
//! Then it stops the load, waits (bounded) for the outbound queue to drain, and checks:
//! every message answered `250` is stored exactly once and in its thread's conversation
//! (`teamgate conversations list --json` through the control socket), every accepted
//! submission reached the sink exactly once, and every acknowledged MOVE holds. It prints
//! throughput, latency percentiles, errors, and the daemon's peak RSS (VmHWM) and CPU
//! time, and exits 1 on any error or loss. Every network step has a timeout; server
//! errors are counted, never panicked on.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
};

/// Upper bound for any single network step (connect, one reply, one write).
const STEP: Duration = Duration::from_secs(30);
/// How often a waiting IDLE checks whether the run is over.
const TICK: Duration = Duration::from_millis(200);
/// How long an agent IDLEs when EXISTS already came with its last answers.
const ANNOUNCED_IDLE: Duration = Duration::from_millis(100);
/// A long IDLE is renewed well before the server's 30-minute autologout.
const IDLE_RENEW: Duration = Duration::from_secs(600);
const PASSWORD: &str = "load-test-password";
const INBOX_ADDRESS: &str = "support@example.test";

const USAGE: &str = "usage: cargo bench --bench load -- [--senders N] [--agents N] \
[--submitters N] [--duration SECS] [--drain-timeout SECS] [--sender-pause-ms MS] \
[--submit-pause-ms MS] [--binary PATH] [--spamd HOST:PORT] [--clamd ADDR] \
[--log-level LEVEL] [--moves-per-wakeup N] [--single-source-ip] [--keep] [--seed N]";

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    senders: usize,
    agents: usize,
    submitters: usize,
    duration: Duration,
    drain_timeout: Duration,
    sender_pause: Duration,
    submit_pause: Duration,
    binary: PathBuf,
    spamd: Option<String>,
    clamd: Option<String>,
    log_level: String,
    keep: bool,
    seed: u64,
    moves_per_wakeup: usize,
    single_source_ip: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        senders: 50,
        agents: 20,
        submitters: 5,
        duration: Duration::from_secs(300),
        drain_timeout: Duration::from_secs(120),
        sender_pause: Duration::ZERO,
        submit_pause: Duration::ZERO,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_teamgate")),
        spamd: None,
        clamd: None,
        log_level: "info".into(),
        keep: false,
        seed: 0,
        moves_per_wakeup: 3,
        single_source_ip: false,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        // `cargo bench` passes `--bench` to harness=false targets.
        if arg == "--bench" {
            continue;
        }
        if arg == "--keep" {
            o.keep = true;
            continue;
        }
        if arg == "--single-source-ip" {
            o.single_source_ip = true;
            continue;
        }
        if arg == "-h" || arg == "--help" {
            return Err(USAGE.into());
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
                (arg.clone(), v)
            }
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match name.as_str() {
            "--senders" => o.senders = num(&value)? as usize,
            "--agents" => o.agents = num(&value)? as usize,
            "--submitters" => o.submitters = num(&value)? as usize,
            "--duration" => o.duration = Duration::from_secs(num(&value)?),
            "--drain-timeout" => o.drain_timeout = Duration::from_secs(num(&value)?),
            "--sender-pause-ms" => o.sender_pause = Duration::from_millis(num(&value)?),
            "--submit-pause-ms" => o.submit_pause = Duration::from_millis(num(&value)?),
            "--binary" => o.binary = PathBuf::from(value),
            "--spamd" => o.spamd = Some(value),
            "--clamd" => o.clamd = Some(value),
            "--log-level" => o.log_level = value,
            "--seed" => o.seed = num(&value)?,
            "--moves-per-wakeup" => o.moves_per_wakeup = num(&value)? as usize,
            _ => return Err(format!("unknown option {name}\n{USAGE}")),
        }
    }
    if o.agents == 0 && o.submitters == 0 && o.senders == 0 {
        return Err("nothing to do: all counts are 0".into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be > 0".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Shared state: threads, acknowledgements, moves, errors, latency samples
// ---------------------------------------------------------------------------------------

/// One customer conversation as the load tool knows it.
#[derive(Debug, Clone)]
struct Thread {
    customer: String,
    customer_name: String,
    subject: String,
    /// Acknowledged Message-IDs (inbound and replies), oldest first.
    chain: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inbound,
    Submission,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    thread: u64,
    kind: Kind,
    /// When the end of data was written.
    sent: Instant,
    /// When the 250 arrived.
    at: Instant,
}

/// A MOVE target and what it means for the conversation (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gesture {
    Assign(String),
    Close,
}

#[derive(Debug, Clone)]
struct MoveRecord {
    gesture: Gesture,
    /// When the MOVE command was sent.
    sent: Instant,
}

/// A message fetched after an IDLE wake-up.
struct Observation {
    mid: String,
    idle_entered: Instant,
    exists_seen: Instant,
}

#[derive(Default)]
struct Errors {
    by_kind: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
}

impl Errors {
    fn add(&self, kind: &str, detail: impl Into<String>) {
        let mut map = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(kind.to_string()).or_default();
        entry.0 += 1;
        if entry.1.len() < 3 {
            let mut d: String = detail.into();
            d.truncate(300);
            entry.1.push(d);
        }
    }

    fn total(&self) -> u64 {
        self.by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(n, _)| n)
            .sum()
    }
}

/// Latency samples of one operation.
#[derive(Default)]
struct Samples(Mutex<Vec<Duration>>);

impl Samples {
    fn push(&self, d: Duration) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }
    fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Default)]
struct Latencies {
    smtp: Samples,
    /// 250 → EXISTS in IDLE (0 when the EXISTS came first).
    notify: Samples,
    /// End of DATA written → EXISTS in IDLE.
    notify_data: Samples,
    fetch: Samples,
    moves: Samples,
    submit: Samples,
}

struct Shared {
    opts: Options,
    run: String,
    stop: AtomicBool,
    threads: Mutex<Vec<Thread>>,
    /// Thread ids with at least one acknowledged message, per submitter.
    reply_targets: Vec<Mutex<Vec<u64>>>,
    acks: Mutex<HashMap<String, Ack>>,
    /// Transactions whose outcome is unknown (the connection broke after DATA).
    unknown: Mutex<Vec<String>>,
    moves: Mutex<HashMap<u64, MoveRecord>>,
    /// Messages an agent fetched after an EXISTS that arrived during IDLE.
    observations: Mutex<Vec<Observation>>,
    moves_done: AtomicU64,
    moves_noop: AtomicU64,
    collisions: AtomicU64,
    fetched: AtomicU64,
    idle_wakeups: AtomicU64,
    errors: Errors,
    lat: Latencies,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn acknowledge(&self, mid: &str, thread: u64, kind: Kind, sent: Instant) {
        let at = Instant::now();
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).insert(
            mid.to_string(),
            Ack {
                thread,
                kind,
                sent,
                at,
            },
        );
        let first = {
            let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            let t = &mut threads[thread as usize];
            t.chain.push(mid.to_string());
            t.chain.len() == 1
        };
        if first && !self.reply_targets.is_empty() {
            let k = thread as usize % self.reply_targets.len();
            self.reply_targets[k]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(thread);
        }
    }
}

/// Message-IDs carry the thread: `<RUN.THREAD.N@host>` (N is `rK` for submissions).
fn thread_of(run: &str, mid: &str) -> Option<u64> {
    let mid = mid.trim_matches(['<', '>']);
    let rest = mid.strip_prefix(run)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Small deterministic RNG (xorshift64*)
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------
// Message generation
// ---------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Carla", "David", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nora", "Olga", "Pavel",
];
const LAST_NAMES: &[&str] = &[
    "Meyer", "Okafor", "Rossi", "Nguyen", "Schmidt", "Kowalski", "Tanaka", "Silva", "Dubois",
    "Larsen",
];
const TOPICS: &[&str] = &[
    "Invoice {n} shows the wrong VAT rate",
    "Printer model {n} jams on tray 2",
    "Cannot log in to the portal since update {n}",
    "Order #{n} arrived damaged",
    "Question about contract {n} renewal",
    "Refund for booking {n}",
    "Delivery address change for order {n}",
    "API returns 500 for request {n}",
];
const SENTENCES: &[&str] = &[
    "I tried the steps from your help page but nothing changed.",
    "Could you please have a look at this as soon as possible?",
    "We have been a customer for several years and never had this problem before.",
    "The issue started this morning after the scheduled maintenance window.",
    "Attached you will find the document our accounting department asked for.",
    "My colleague already called your hotline but the line was busy for an hour.",
    "Please let me know if you need any further information from our side.",
    "It would be great if someone could call me back this afternoon.",
    "The reference number on the letter does not match the one in the portal.",
    "Thank you for the quick answer, unfortunately it did not solve the problem.",
    "Schöne Grüße aus dem Büro, wir warten auf eine Rückmeldung.",
];

fn body_text(rng: &mut Rng, paragraphs: usize) -> String {
    let mut out = String::new();
    for _ in 0..paragraphs {
        let n = 2 + rng.below(4);
        let mut line_len = 0;
        for _ in 0..n {
            let s = rng.pick(SENTENCES);
            if line_len + s.len() > 72 {
                out.push_str("\r\n");
                line_len = 0;
            } else if line_len > 0 {
                out.push(' ');
                line_len += 1;
            }
            out.push_str(s);
            line_len += s.len();
        }
        out.push_str("\r\n\r\n");
    }
    out
}

fn rfc2822_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 26 Nov 2026 10:00:00 +0000".into())
}

fn references(chain: &[String]) -> String {
    let start = chain.len().saturating_sub(10);
    chain[start..]
        .iter()
        .map(|m| format!("<{m}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A customer's message: a new conversation (`parent` None) or a reply.
fn customer_message(
    rng: &mut Rng,
    thread: &Thread,
    mid: &str,
    reply_to: Option<&[String]>,
) -> Vec<u8> {
    let mut m = format!(
        "From: {} <{}>\r\nTo: Support <{INBOX_ADDRESS}>\r\nDate: {}\r\nMessage-ID: <{mid}>\r\n",
        thread.customer_name,
        thread.customer,
        rfc2822_now()
    );
    match reply_to {
        Some(chain) if !chain.is_empty() => {
            m.push_str(&format!(
                "Subject: Re: {}\r\nIn-Reply-To: <{}>\r\nReferences: {}\r\n",
                thread.subject,
                chain[chain.len() - 1],
                references(chain)
            ));
        }
        _ => m.push_str(&format!("Subject: {}\r\n", thread.subject)),
    }
    m.push_str("MIME-Version: 1.0\r\nUser-Agent: load-test/1.0\r\n");
    let paragraphs = 1 + rng.below(6);
    let mut text = format!("Hello support team,\r\n\r\n{}", body_text(rng, paragraphs));
    text.push_str(&format!("Best regards,\r\n{}\r\n", thread.customer_name));
    if reply_to.is_some() {
        text.push_str("\r\nOn an earlier day, Support wrote:\r\n");
        for line in body_text(rng, 2).lines() {
            text.push_str("> ");
            text.push_str(line);
            text.push_str("\r\n");
        }
    }
    if rng.chance(15) {
        // A small PDF-like attachment (never a blocked type).
        let blob_len = 2_000 + rng.below(20_000);
        let blob: Vec<u8> = (0..blob_len).map(|_| rng.next() as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        m.push_str("Content-Type: multipart/mixed; boundary=\"=_load_b\"\r\n\r\n");
        m.push_str("--=_load_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
        m.push_str(&text);
        m.push_str("--=_load_b\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        for chunk in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap_or(""));
            m.push_str("\r\n");
        }
        m.push_str("--=_load_b--\r\n");
    } else {
        m.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        m.push_str(&text);
    }
    m.into_bytes()
}

/// An agent's reply through submission.
fn agent_reply(rng: &mut Rng, thread: &Thread, mid: &str, login: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Support <{INBOX_ADDRESS}>\r\nTo: {} <{}>\r\nDate: {}\r\nMessage-ID: <{mid}>\r\nSubject: Re: {}\r\n",
        thread.customer_name,
        thread.customer,
        rfc2822_now(),
        thread.subject
    );
    if let Some(last) = thread.chain.last() {
        m.push_str(&format!(
            "In-Reply-To: <{last}>\r\nReferences: {}\r\n",
            references(&thread.chain)
        ));
    }
    m.push_str(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    let paragraphs = 1 + rng.below(3);
    m.push_str(&format!(
        "Hello {},\r\n\r\n{}Kind regards,\r\n{login}\r\n",
        thread.customer_name,
        body_text(rng, paragraphs)
    ));
    m.into_bytes()
}

/// Dot-stuffs a body, ends it with CRLF and appends the terminating `.` line.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
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
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

// ---------------------------------------------------------------------------------------
// Client source addresses
// ---------------------------------------------------------------------------------------

/// Each client gets its own loopback source address (127.0.G.N), as agents on their own
/// machines and senders' MX hosts would; `--single-source-ip` puts all on 127.0.0.1 (an
/// office behind one NAT address).
fn source_ip(shared: &Shared, group: u8, index: usize) -> Option<IpAddr> {
    if shared.opts.single_source_ip {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::new(
        127,
        group,
        (index / 250) as u8,
        (index % 250) as u8 + 1,
    )))
}

async fn connect_from(source: Option<IpAddr>, addr: SocketAddr) -> Result<TcpStream, String> {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(addr).await
    };
    let stream = tokio::time::timeout(STEP, connect)
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

// ---------------------------------------------------------------------------------------
// SMTP client (no panics: every failure is an Err(String))
// ---------------------------------------------------------------------------------------

struct Smtp {
    io: BufReader<TcpStream>,
    /// When the last message's end of data was written.
    data_sent: Instant,
}

impl Smtp {
    async fn connect(source: Option<IpAddr>, addr: SocketAddr) -> Result<Smtp, String> {
        let stream = connect_from(source, addr).await?;
        let mut s = Smtp {
            io: BufReader::new(stream),
            data_sent: Instant::now(),
        };
        let (code, text) = s.reply().await?;
        if code != 220 {
            return Err(format!("greeting: {text}"));
        }
        Ok(s)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(STEP, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| "write timeout".to_string())?
            .map_err(|e| format!("write: {e}"))
    }

    /// One reply, possibly multi-line; (code, last line).
    async fn reply(&mut self) -> Result<(u16, String), String> {
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut line))
                .await
                .map_err(|_| "reply timeout".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let code = text
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("bad reply line {text:?}"))?;
            if text.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, String), String> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// MAIL, RCPT and DATA pipelined, then the data. Ok((code, text)) is the server's
    /// verdict (the first failing reply or the one after the data); Err is an I/O
    /// failure, after which the outcome is unknown only if the data was sent.
    async fn transaction(
        &mut self,
        from: &str,
        to: &str,
        body: &[u8],
    ) -> Result<(u16, String), (bool, String)> {
        let head = format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        self.write(head.as_bytes()).await.map_err(|e| (false, e))?;
        let mut first_failure = None;
        for expect in [250u16, 250, 354] {
            let (code, text) = self.reply().await.map_err(|e| (false, e))?;
            if code != expect && first_failure.is_none() {
                first_failure = Some((code, text.clone()));
            }
            if expect == 354 && code == 354 && first_failure.is_some() {
                // Should not happen (DATA accepted after a failure); end it empty.
                self.write(b".\r\n").await.map_err(|e| (false, e))?;
                let _ = self.reply().await.map_err(|e| (false, e))?;
            }
        }
        if let Some(f) = first_failure {
            return Ok(f);
        }
        self.write(&dot_stuff(body)).await.map_err(|e| (true, e))?;
        self.data_sent = Instant::now();
        self.reply().await.map_err(|e| (true, e))
    }
}

// ---------------------------------------------------------------------------------------
// SMTP senders (the MX role)
// ---------------------------------------------------------------------------------------

async fn sender(shared: Arc<Shared>, addr: SocketAddr, index: usize) {
    let mut rng = Rng::new(shared.opts.seed ^ (0x5E4D + index as u64 * 7919));
    let mut own: Vec<u64> = Vec::new();
    let mut conn: Option<Smtp> = None;
    let mut left_in_session = 0usize;
    let mut seq = 0u64;
    let domain = format!("customer{}.example", index % 17);
    while !shared.stopping() {
        if conn.is_none() {
            match Smtp::connect(source_ip(&shared, 3, index), addr).await {
                Ok(mut c) => match c.cmd(&format!("EHLO client{index}.{domain}")).await {
                    Ok((250, _)) => {
                        conn = Some(c);
                        left_in_session = 5 + rng.below(20);
                    }
                    Ok((_, text)) => shared.errors.add("smtp EHLO refused", text),
                    Err(e) => shared.errors.add("smtp I/O", e),
                },
                Err(e) => {
                    shared.errors.add("smtp connect", e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        // A reply to one of our recent threads, or a new conversation.
        let reply_thread = if !own.is_empty() && rng.chance(45) {
            let recent = &own[own.len().saturating_sub(30)..];
            Some(*rng.pick(recent))
        } else {
            None
        };
        let (thread_id, thread) = match reply_thread {
            Some(id) => {
                let t =
                    shared.threads.lock().unwrap_or_else(|p| p.into_inner())[id as usize].clone();
                (id, t)
            }
            None => {
                let n = rng.next() % 100_000;
                let t = Thread {
                    customer: format!("c{index}.{seq}@{domain}"),
                    customer_name: format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)),
                    subject: rng.pick(TOPICS).replace("{n}", &n.to_string()),
                    chain: Vec::new(),
                };
                let mut threads = shared.threads.lock().unwrap_or_else(|p| p.into_inner());
                threads.push(t.clone());
                ((threads.len() - 1) as u64, t)
            }
        };
        seq += 1;
        let mid = format!("{}.{thread_id}.{seq}@{domain}", shared.run);
        let reply_chain = reply_thread.map(|_| thread.chain.as_slice());
        let body = customer_message(&mut rng, &thread, &mid, reply_chain);
        let Some(c) = conn.as_mut() else { continue };
        let started = Instant::now();
        match c.transaction(&thread.customer, INBOX_ADDRESS, &body).await {
            Ok((250, _)) => {
                shared.lat.smtp.push(started.elapsed());
                shared.acknowledge(&mid, thread_id, Kind::Inbound, c.data_sent);
                if reply_thread.is_none() {
                    own.push(thread_id);
                }
            }
            Ok((code, text)) => {
                shared
                    .errors
                    .add(&format!("smtp {}xx", code / 100), format!("{mid}: {text}"));
                if c.cmd("RSET").await.is_err() {
                    conn = None;
                }
            }
            Err((data_sent, e)) => {
                if data_sent {
                    shared
                        .unknown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(mid.clone());
                }
                shared.errors.add("smtp I/O", format!("{mid}: {e}"));
                conn = None;
            }
        }
        left_in_session = left_in_session.saturating_sub(1);
        if left_in_session == 0
            && let Some(mut c) = conn.take()
        {
            let _ = c.cmd("QUIT").await;
        }
        if !shared.opts.sender_pause.is_zero() {
            tokio::time::sleep(shared.opts.sender_pause).await;
        }
    }
    if let Some(mut c) = conn {
        let _ = c.cmd("QUIT").await;
    }
}

// ---------------------------------------------------------------------------------------
// Submitters (agents replying through the submission port)
// ---------------------------------------------------------------------------------------

async fn submission_login(
    source: Option<IpAddr>,
    addr: SocketAddr,
    login: &str,
) -> Result<Smtp, String> {
    let mut c = Smtp::connect(source, addr).await?;
    let (code, text) = c.cmd("EHLO agent-laptop.example.test").await?;
    if code != 250 {
        return Err(format!("EHLO: {text}"));
    }
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{PASSWORD}"));
    let (code, text) = c.cmd(&format!("AUTH PLAIN {token}")).await?;
    if code != 235 {
        return Err(format!("AUTH: {text}"));
    }
    Ok(c)
}

async fn submitter(shared: Arc<Shared>, addr: SocketAddr, index: usize) {
    let login = submitter_login(index);
    let mut rng = Rng::new(shared.opts.seed ^ (0xA9E7 + index as u64 * 104_729));
    let mut conn: Option<Smtp> = None;
    let mut left_in_session = 0usize;
    let mut seq = 0u64;
    while !shared.stopping() {
        let target = {
            let targets = shared.reply_targets[index]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if targets.is_empty() {
                None
            } else {
                // Prefer recent conversations, sometimes an old one.
                let recent = &targets[targets.len().saturating_sub(50)..];
                Some(if rng.chance(80) {
                    *rng.pick(recent)
                } else {
                    *rng.pick(&targets)
                })
            }
        };
        let Some(thread_id) = target else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if conn.is_none() {
            match submission_login(source_ip(&shared, 2, index), addr, &login).await {
                Ok(c) => {
                    conn = Some(c);
                    left_in_session = 5 + rng.below(15);
                }
                Err(e) => {
                    shared.errors.add("submission login", e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let thread =
            shared.threads.lock().unwrap_or_else(|p| p.into_inner())[thread_id as usize].clone();
        seq += 1;
        let mid = format!("{}.{thread_id}.r{index}x{seq}@example.test", shared.run);
        let body = agent_reply(&mut rng, &thread, &mid, &login);
        let Some(c) = conn.as_mut() else { continue };
        let started = Instant::now();
        let mut outcome = c.transaction(INBOX_ADDRESS, &thread.customer, &body).await;
        if let Ok((450, text)) = &outcome
            && text.contains("4.7.1")
        {
            // Collision guard: refused once, the same message again goes out (SPEC §6).
            shared.collisions.fetch_add(1, Ordering::Relaxed);
            outcome = c.transaction(INBOX_ADDRESS, &thread.customer, &body).await;
        }
        match outcome {
            Ok((250, _)) => {
                shared.lat.submit.push(started.elapsed());
                shared.acknowledge(&mid, thread_id, Kind::Submission, c.data_sent);
            }
            Ok((code, text)) => {
                shared.errors.add(
                    &format!("submission {}xx", code / 100),
                    format!("{mid}: {text}"),
                );
                if c.cmd("RSET").await.is_err() {
                    conn = None;
                }
            }
            Err((data_sent, e)) => {
                if data_sent {
                    shared
                        .unknown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(mid.clone());
                }
                shared.errors.add("submission I/O", format!("{mid}: {e}"));
                conn = None;
            }
        }
        left_in_session = left_in_session.saturating_sub(1);
        if left_in_session == 0
            && let Some(mut c) = conn.take()
        {
            let _ = c.cmd("QUIT").await;
        }
        if !shared.opts.submit_pause.is_zero() {
            tokio::time::sleep(shared.opts.submit_pause).await;
        }
    }
    if let Some(mut c) = conn {
        let _ = c.cmd("QUIT").await;
    }
}

// ---------------------------------------------------------------------------------------
// IMAP client
// ---------------------------------------------------------------------------------------

struct Imap {
    io: BufReader<TcpStream>,
    /// A line being read when a tick timeout fired (read_until is cancel-safe with it).
    partial: Vec<u8>,
    tag: u32,
    /// Messages in the selected mailbox as the server last told us.
    exists: u64,
    /// Set when an EXISTS grew the mailbox and we have not fetched since.
    pending: Option<Instant>,
}

impl Imap {
    async fn connect(source: Option<IpAddr>, addr: SocketAddr) -> Result<Imap, String> {
        let stream = connect_from(source, addr).await?;
        let mut c = Imap {
            io: BufReader::new(stream),
            partial: Vec::new(),
            tag: 0,
            exists: 0,
            pending: None,
        };
        let greeting = c.line(STEP).await?.unwrap_or_default();
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting: {greeting}"));
        }
        Ok(c)
    }

    /// One response line with literals spliced in; Ok(None) when `wait` passes first.
    async fn line(&mut self, wait: Duration) -> Result<Option<String>, String> {
        match tokio::time::timeout(wait, self.io.read_until(b'\n', &mut self.partial)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(0)) => return Err("connection closed".into()),
            Ok(Ok(_)) => {}
        }
        if !self.partial.ends_with(b"\n") {
            return Err("connection closed mid-line".into());
        }
        let mut out = std::mem::take(&mut self.partial);
        loop {
            let trimmed = out.strip_suffix(b"\r\n").unwrap_or(&out);
            let literal = trimmed
                .strip_suffix(b"}")
                .and_then(|t| t.iter().rposition(|b| *b == b'{').map(|i| &t[i + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim_end_matches('+').parse::<usize>().ok());
            let Some(len) = literal else { break };
            let mut buf = vec![0u8; len];
            tokio::time::timeout(STEP, self.io.read_exact(&mut buf))
                .await
                .map_err(|_| "literal timeout".to_string())?
                .map_err(|e| format!("literal: {e}"))?;
            out.extend_from_slice(&buf);
            let mut rest = Vec::new();
            let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut rest))
                .await
                .map_err(|_| "read timeout".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed in a literal".into());
            }
            out.extend_from_slice(&rest);
        }
        Ok(Some(String::from_utf8_lossy(&out).trim_end().to_string()))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(STEP, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| "write timeout".to_string())?
            .map_err(|e| format!("write: {e}"))
    }

    /// Notes EXISTS / EXPUNGE; fails on BYE.
    fn untagged(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("*") {
            return Ok(());
        }
        let (Some(a), Some(b)) = (words.next(), words.next()) else {
            return Ok(());
        };
        if a.eq_ignore_ascii_case("BYE") {
            return Err(format!("server said {line}"));
        }
        if let Ok(n) = a.parse::<u64>() {
            if b.eq_ignore_ascii_case("EXISTS") {
                if n > self.exists && self.pending.is_none() {
                    self.pending = Some(Instant::now());
                }
                self.exists = n;
            } else if b.eq_ignore_ascii_case("EXPUNGE") {
                self.exists = self.exists.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("a{}", self.tag)
    }

    /// Reads until the tagged completion of `tag`; returns (untagged, tagged line).
    async fn until_tagged(&mut self, tag: &str) -> Result<(Vec<String>, String), String> {
        let mut untagged = Vec::new();
        let prefix = format!("{tag} ");
        loop {
            let line = self
                .line(STEP)
                .await?
                .ok_or_else(|| format!("no answer to {tag} within {STEP:?}"))?;
            if line.starts_with(&prefix) {
                return Ok((untagged, line));
            }
            self.untagged(&line)?;
            untagged.push(line);
        }
    }

    /// Runs a command; Err on I/O problems and on NO/BAD.
    async fn ok(&mut self, command: &str) -> Result<(Vec<String>, String), String> {
        let tag = self.next_tag();
        self.write(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let (untagged, tagged) = self.until_tagged(&tag).await?;
        if tagged.split(' ').nth(1) != Some("OK") {
            return Err(format!("{command} -> {tagged}"));
        }
        Ok((untagged, tagged))
    }
}

/// `* 3 FETCH (UID 17 FLAGS (\Seen) ENVELOPE (... "<mid>"))` → (17, "mid").
fn parse_fetch(line: &str) -> Option<(u32, Option<String>)> {
    if !line.starts_with("* ") || !line.contains(" FETCH (") {
        return None;
    }
    let after_uid = &line[line.find("UID ")? + 4..];
    let uid: u32 = after_uid
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let mid = line.find("ENVELOPE (").and_then(|at| {
        let env = &line[at..];
        let start = env.rfind("\"<")? + 2;
        let len = env[start..].find(">\"")?;
        Some(env[start..start + len].to_ascii_lowercase())
    });
    Some((uid, mid))
}

// ---------------------------------------------------------------------------------------
// IMAP agents
// ---------------------------------------------------------------------------------------

fn agent_login(index: usize) -> String {
    format!("agent{:02}", index + 1)
}

fn submitter_login(index: usize) -> String {
    format!("replier{}", index + 1)
}

async fn agent(shared: Arc<Shared>, addr: SocketAddr, index: usize) {
    // A broken session is counted and replaced, until the run is over.
    while !shared.stopping() {
        if let Err(e) = agent_session(&shared, addr, index).await {
            shared
                .errors
                .add("imap", format!("{}: {e}", agent_login(index)));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn agent_session(shared: &Shared, addr: SocketAddr, index: usize) -> Result<(), String> {
    let login = agent_login(index);
    let agents = shared.opts.agents;
    let teammate = agent_login((index + 1) % agents);
    let mut rng = Rng::new(shared.opts.seed ^ (0x1DA7 + index as u64 * 15_485_863));
    let mut c = Imap::connect(source_ip(shared, 1, index), addr).await?;
    c.ok(&format!("LOGIN {login} {PASSWORD}")).await?;
    let (untagged, _) = c.ok("SELECT INBOX").await?;
    // Only what arrives from now on is ours to handle.
    let mut last_uid: u32 = untagged
        .iter()
        .find_map(|l| {
            let at = l.find("[UIDNEXT ")? + 9;
            l[at..]
                .split(']')
                .next()?
                .parse::<u32>()
                .ok()
                .map(|n| n.saturating_sub(1))
        })
        .unwrap_or(0);
    c.pending = None;
    while !shared.stopping() {
        // Back to IDLE after every round (RFC 2177 client behaviour). EXISTS that came with
        // the last round's answers still need a FETCH: then IDLE only briefly.
        let announced = c.pending.take().is_some();
        let tag = c.next_tag();
        c.write(format!("{tag} IDLE\r\n").as_bytes()).await?;
        loop {
            let line = c
                .line(STEP)
                .await?
                .ok_or_else(|| "no continuation for IDLE".to_string())?;
            if line.starts_with('+') {
                break;
            }
            if line.starts_with(&format!("{tag} ")) {
                return Err(format!("IDLE refused: {line}"));
            }
            c.untagged(&line)?;
        }
        let entered = Instant::now();
        let limit = if announced {
            ANNOUNCED_IDLE
        } else {
            IDLE_RENEW
        };
        while c.pending.is_none() && !shared.stopping() && entered.elapsed() < limit {
            if let Some(line) = c.line(TICK.min(limit)).await? {
                c.untagged(&line)?;
            }
        }
        let wake = c.pending.map(|seen| (entered, seen));
        if wake.is_some() {
            shared.idle_wakeups.fetch_add(1, Ordering::Relaxed);
        }
        c.write(b"DONE\r\n").await?;
        let (_, tagged) = c.until_tagged(&tag).await?;
        if tagged.split(' ').nth(1) != Some("OK") {
            return Err(format!("IDLE ended with {tagged}"));
        }
        if wake.is_none() && !announced {
            continue;
        }
        c.pending = None;
        let fetch_started = Instant::now();
        let (untagged, _) = c
            .ok(&format!(
                "UID FETCH {}:* (UID FLAGS ENVELOPE)",
                last_uid + 1
            ))
            .await?;
        shared.lat.fetch.push(fetch_started.elapsed());
        // Newest UID of each thread we own, among the new messages.
        let mut owned: BTreeMap<u64, u32> = BTreeMap::new();
        let mut observed = Vec::new();
        {
            for line in &untagged {
                let Some((uid, mid)) = parse_fetch(line) else {
                    continue;
                };
                if uid <= last_uid {
                    continue;
                }
                last_uid = last_uid.max(uid);
                let Some(mid) = mid else { continue };
                let Some(thread) = thread_of(&shared.run, &mid) else {
                    continue;
                };
                shared.fetched.fetch_add(1, Ordering::Relaxed);
                // Notification delays are worked out after the run, when every 250 is
                // known (the EXISTS may come before the sender reads its 250).
                if let Some((entered, seen)) = wake {
                    observed.push(Observation {
                        mid: mid.clone(),
                        idle_entered: entered,
                        exists_seen: seen,
                    });
                }
                if thread as usize % agents == index {
                    let e = owned.entry(thread).or_insert(uid);
                    *e = (*e).max(uid);
                }
            }
        }
        if !observed.is_empty() {
            shared
                .observations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(observed);
        }
        // An agent works a few of the new conversations per wake-up, not all of them.
        let mut budget = shared.opts.moves_per_wakeup;
        for (thread, uid) in owned {
            if shared.stopping() || budget == 0 || !rng.chance(60) {
                continue;
            }
            budget -= 1;
            let roll = rng.below(100);
            let (mailbox, gesture) = if roll < 45 {
                ("Mine".to_string(), Gesture::Assign(login.clone()))
            } else if roll < 70 {
                (
                    format!("Assigned/{teammate}"),
                    Gesture::Assign(teammate.clone()),
                )
            } else {
                ("Closed".to_string(), Gesture::Close)
            };
            let sent = Instant::now();
            let tag = c.next_tag();
            c.write(format!("{tag} UID MOVE {uid} \"{mailbox}\"\r\n").as_bytes())
                .await?;
            let (_, tagged) = c.until_tagged(&tag).await?;
            if tagged.split(' ').nth(1) != Some("OK") {
                shared.errors.add(
                    "imap MOVE refused",
                    format!("{login} {uid} → {mailbox}: {tagged}"),
                );
                continue;
            }
            shared.lat.moves.push(sent.elapsed());
            if tagged.contains("nothing to do") {
                shared.moves_noop.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            shared.moves_done.fetch_add(1, Ordering::Relaxed);
            shared
                .moves
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(thread, MoveRecord { gesture, sent });
        }
    }
    let _ = c.ok("LOGOUT").await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Outbound sink (the relay): records the Message-ID of every transaction
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct SinkState {
    by_mid: HashMap<String, u32>,
    transactions: u64,
    bytes: u64,
}

async fn sink_accept(listener: TcpListener, state: Arc<Mutex<SinkState>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(sink_session(stream, state.clone()));
    }
}

async fn sink_session(stream: TcpStream, state: Arc<Mutex<SinkState>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink.load.test ESMTP\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if tokio::time::timeout(Duration::from_secs(300), read.read_until(b'\n', &mut line))
            .await
            .map_err(|_| std::io::Error::other("sink timeout"))??
            == 0
        {
            return Ok(());
        }
        let upper = String::from_utf8_lossy(&line)
            .trim_end()
            .to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.load.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
        } else if upper.starts_with("HELO") {
            b"250 sink.load.test\r\n"
        } else if upper.starts_with("MAIL FROM:") || upper.starts_with("RCPT TO:") {
            b"250 2.1.0 Ok\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if read.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
            }
            let mid = header_message_id(&data).unwrap_or_default();
            {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                *s.by_mid.entry(mid).or_default() += 1;
                s.transactions += 1;
                s.bytes += data.len() as u64;
            }
            b"250 2.0.0 Ok: queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 2.0.0 Ok\r\n"
        } else {
            b"502 5.5.1 Not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// The Message-ID header of a message (lower-case, without brackets).
fn header_message_id(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let header_end = text.find("\r\n\r\n").unwrap_or(text.len());
    let headers = &text[..header_end];
    let mut lines = headers.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.len() > 11 && line[..11].eq_ignore_ascii_case("message-id:") {
            let mut value = line[11..].to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push_str(next);
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value.trim().trim_matches(['<', '>']).to_ascii_lowercase());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The daemon process
// ---------------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    binary: PathBuf,
    smtp: SocketAddr,
    submission: SocketAddr,
    imap: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_addr() -> Result<(StdListener, SocketAddr), String> {
    let l = StdListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let a = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    Ok((l, a))
}

fn toml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn start_daemon(opts: &Options, dir: &Path, sink: SocketAddr) -> Result<Daemon, String> {
    if !opts.binary.is_file() {
        return Err(format!(
            "{} not found; run `cargo build --release` or pass --binary",
            opts.binary.display()
        ));
    }
    let (l1, smtp) = free_addr()?;
    let (l2, submission) = free_addr()?;
    let (l3, imap) = free_addr()?;
    let hash = teamgate::auth::hash_password(PASSWORD).map_err(|e| format!("hash: {e}"))?;
    let logins: Vec<String> = (0..opts.agents)
        .map(agent_login)
        .chain((0..opts.submitters).map(submitter_login))
        .collect();
    let data_dir = dir.join("data");
    let mut cfg = format!(
        r#"# Generated by tests/load (cargo bench --bench load).
[server]
hostname = "mx.load.test"
data_dir = "{data}"
shutdown_grace_secs = 10

[smtp]
listen = ["{smtp}"]
max_connections = {smtp_conns}

[submission]
listen = ["{submission}"]

[imap]
listen = ["{imap}"]
max_connections = {imap_conns}

[tls]
allow_plaintext_auth = true

[outbound]
relay = "smtp://{sink}"

[filter]
dns_server = "none"
spamd = "{spamd}"
clamd = "{clamd}"

[workflow]
snippets_dir = "{snippets}"

[log]
level = "{level}"

[[inbox]]
name = "Support"
addresses = ["{INBOX_ADDRESS}"]
members = [{members}]
"#,
        data = data_dir.display(),
        smtp_conns = opts.senders + 100,
        imap_conns = opts.agents + 100,
        spamd = opts.spamd.clone().unwrap_or_default(),
        clamd = opts.clamd.clone().unwrap_or_default(),
        snippets = dir.join("snippets").display(),
        level = opts.log_level,
        members = toml_list(&logins),
    );
    for login in &logins {
        cfg.push_str(&format!(
            "\n[[agent]]\nlogin = \"{login}\"\nname = \"Agent {login}\"\nemail = \"{login}@agents.example.test\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    let config = dir.join("teamgate.toml");
    std::fs::create_dir_all(dir.join("snippets")).map_err(|e| format!("snippets dir: {e}"))?;
    std::fs::write(&config, cfg).map_err(|e| format!("write config: {e}"))?;
    let log = dir.join("teamgate.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
    drop((l1, l2, l3));
    let child = Command::new(&opts.binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", opts.binary.display()))?;
    let mut daemon = Daemon {
        child,
        config,
        data_dir,
        log,
        binary: opts.binary.clone(),
        smtp,
        submission,
        imap,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if daemon.data_dir.join("control.sock").exists()
            && std::net::TcpStream::connect(smtp).is_ok()
            && std::net::TcpStream::connect(imap).is_ok()
            && std::net::TcpStream::connect(submission).is_ok()
        {
            return Ok(daemon);
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            return Err(format!(
                "teamgate exited early ({status}):\n{}",
                log_tail(&daemon.log, 20)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "teamgate did not start within 60 s:\n{}",
                log_tail(&daemon.log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `teamgate ARGS --json --config CFG` (bounded) and parses its JSON output.
fn cli_json(d: &Daemon, args: &[&str]) -> Result<serde_json::Value, String> {
    let child = Command::new(&d.binary)
        .args(args)
        .args(["--json", "--config"])
        .arg(&d.config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn cli: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("teamgate {args:?}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Err(format!("teamgate {args:?} took more than 120 s"));
        }
    };
    if !out.status.success() {
        return Err(format!(
            "teamgate {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("teamgate {args:?}: bad JSON: {e}"))
}

/// (VmHWM, VmRSS) in KiB and (user, system) CPU seconds of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let utime = fields.get(11)?.parse::<f64>().ok()? / ticks;
    let stime = fields.get(12)?.parse::<f64>().ok()? / ticks;
    Some((kib("VmHWM:")?, kib("VmRSS:")?, utime, stime))
}

/// (user, system) CPU seconds of this process (all its threads).
fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

fn stop_daemon(d: &mut Daemon) -> Result<(), String> {
    // SAFETY: kill(2) on the pid of our still-running child.
    unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match d.child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("teamgate exited with {status} on SIGTERM")),
            Ok(None) if Instant::now() > deadline => {
                let _ = d.child.kill();
                let _ = d.child.wait();
                return Err("teamgate did not stop within 40 s of SIGTERM (killed)".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Verdict {
    checked_messages: usize,
    conversations: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
    split_threads: Vec<String>,
    submissions_expected: usize,
    not_delivered: Vec<String>,
    delivered_twice: Vec<String>,
    unexpected_deliveries: Vec<String>,
    moves_checked: usize,
    moves_not_held: Vec<String>,
    queue_left: usize,
    junk: usize,
}

impl Verdict {
    fn failures(&self) -> usize {
        self.lost.len()
            + self.duplicated.len()
            + self.split_threads.len()
            + self.not_delivered.len()
            + self.delivered_twice.len()
            + self.unexpected_deliveries.len()
            + self.moves_not_held.len()
            + self.queue_left
            + self.junk
    }
}

fn verify(
    shared: &Shared,
    daemon: &Daemon,
    sink: &SinkState,
    queue_left: usize,
) -> Result<Verdict, String> {
    let mut v = Verdict {
        queue_left,
        ..Verdict::default()
    };
    let list = cli_json(daemon, &["conversations", "list"])?;
    let convs = list
        .as_array()
        .ok_or_else(|| "conversations list is not an array".to_string())?;
    v.conversations = convs.len();
    // Message-ID → conversations it appears in (once per appearance).
    let mut where_is: HashMap<String, Vec<u64>> = HashMap::new();
    let mut state: HashMap<u64, (String, Option<String>)> = HashMap::new();
    for c in convs {
        let id = c["id"].as_u64().unwrap_or(0);
        state.insert(
            id,
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["assignee"].as_str().map(str::to_string),
            ),
        );
        for m in c["message_ids"].as_array().into_iter().flatten() {
            if let Some(m) = m.as_str() {
                where_is
                    .entry(m.trim_matches(['<', '>']).to_ascii_lowercase())
                    .or_default()
                    .push(id);
            }
        }
    }
    let acks = shared.acks.lock().unwrap_or_else(|p| p.into_inner());
    let mut conv_of_thread: HashMap<u64, u64> = HashMap::new();
    for (mid, ack) in acks.iter() {
        v.checked_messages += 1;
        match where_is.get(mid).map(Vec::as_slice) {
            None | Some([]) => v.lost.push(mid.clone()),
            Some([conv]) => {
                let first = *conv_of_thread.entry(ack.thread).or_insert(*conv);
                if first != *conv {
                    v.split_threads.push(format!(
                        "thread {}: {mid} in #{conv}, earlier messages in #{first}",
                        ack.thread
                    ));
                }
            }
            Some(many) => v.duplicated.push(format!("{mid} in {many:?}")),
        }
        if ack.kind == Kind::Submission {
            v.submissions_expected += 1;
            match sink.by_mid.get(mid).copied().unwrap_or(0) {
                0 => v.not_delivered.push(mid.clone()),
                1 => {}
                n => v.delivered_twice.push(format!("{mid} ×{n}")),
            }
        }
    }
    let unknown: HashSet<String> = shared
        .unknown
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    for mid in sink.by_mid.keys() {
        if !acks.contains_key(mid) && !unknown.contains(mid) {
            v.unexpected_deliveries.push(mid.clone());
        }
    }
    // The last acknowledged MOVE of each thread holds, unless a customer's message that
    // arrived after it reopened a closed conversation (the team's replies never do).
    let moves = shared.moves.lock().unwrap_or_else(|p| p.into_inner());
    let mut latest: HashMap<u64, Instant> = HashMap::new();
    for a in acks.values().filter(|a| a.kind == Kind::Inbound) {
        let e = latest.entry(a.thread).or_insert(a.at);
        *e = (*e).max(a.at);
    }
    for (thread, mv) in moves.iter() {
        v.moves_checked += 1;
        let Some(conv) = conv_of_thread.get(thread) else {
            v.moves_not_held
                .push(format!("thread {thread}: conversation not found"));
            continue;
        };
        let (status, assignee) = state.get(conv).cloned().unwrap_or_default();
        let held = match &mv.gesture {
            Gesture::Assign(login) => status == "open" && assignee.as_deref() == Some(login),
            Gesture::Close => {
                status == "closed"
                    || (status == "open" && latest.get(thread).is_some_and(|at| *at > mv.sent))
            }
        };
        if !held {
            v.moves_not_held.push(format!(
                "thread {thread} (#{conv}): moved to {:?}, store says {status} / {assignee:?}",
                mv.gesture
            ));
        }
    }
    let junk = cli_json(daemon, &["junk", "list"])?;
    v.junk = junk.as_array().map_or(0, Vec::len);
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn fmt_d(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn row(name: &str, mut samples: Vec<Duration>, elapsed: Duration) -> String {
    samples.sort();
    let n = samples.len();
    let pct = |p: f64| -> String {
        if n == 0 {
            "-".into()
        } else {
            fmt_d(samples[((n as f64 * p) as usize).min(n - 1)])
        }
    };
    format!(
        "{name:<26} {n:>9} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples.last().map_or("-".into(), |d| fmt_d(*d)),
    )
}

fn list_some(label: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("  {label}: {}", items.len());
    for i in items.iter().take(5) {
        println!("    {i}");
    }
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load test failed: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(opts: Options) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("teamgate-load-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let run_id = format!(
        "lt{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() & 0xff_ffff)
            .unwrap_or(0)
    );
    let opts = Options {
        seed: if opts.seed == 0 {
            u64::from_str_radix(run_id.trim_start_matches("lt"), 16).unwrap_or(1)
        } else {
            opts.seed
        },
        ..opts
    };

    // The relay sink.
    let sink_state = Arc::new(Mutex::new(SinkState::default()));
    let sink_addr = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("sink bind: {e}"))?;
        let a = l.local_addr().map_err(|e| format!("sink addr: {e}"))?;
        tokio::spawn(sink_accept(l, sink_state.clone()));
        Ok::<_, String>(a)
    })?;

    let mut daemon = start_daemon(&opts, dir.path(), sink_addr)?;
    let pid = daemon.child.id();
    println!(
        "teamgate load test {run_id}: {} senders, {} IMAP agents, {} submitters, {} s; daemon pid {pid}, {} (data {})",
        opts.senders,
        opts.agents,
        opts.submitters,
        opts.duration.as_secs(),
        opts.binary.display(),
        daemon.data_dir.display()
    );
    let shared = Arc::new(Shared {
        run: run_id.clone(),
        stop: AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
        reply_targets: (0..opts.submitters).map(|_| Mutex::default()).collect(),
        acks: Mutex::default(),
        unknown: Mutex::default(),
        moves: Mutex::default(),
        observations: Mutex::default(),
        moves_done: AtomicU64::new(0),
        moves_noop: AtomicU64::new(0),
        collisions: AtomicU64::new(0),
        fetched: AtomicU64::new(0),
        idle_wakeups: AtomicU64::new(0),
        errors: Errors::default(),
        lat: Latencies::default(),
        opts: opts.clone(),
    });

    // Load phase.
    let (elapsed, rss_samples) = rt.block_on(async {
        let mut tasks = Vec::new();
        // Agents first, so they are idling when mail starts arriving.
        for i in 0..opts.agents {
            tasks.push(tokio::spawn(agent(shared.clone(), daemon.imap, i)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        for i in 0..opts.senders {
            tasks.push(tokio::spawn(sender(shared.clone(), daemon.smtp, i)));
        }
        for i in 0..opts.submitters {
            tasks.push(tokio::spawn(submitter(
                shared.clone(),
                daemon.submission,
                i,
            )));
        }
        let mut rss_peak_sampled = 0u64;
        let mut last_print = Instant::now();
        while started.elapsed() < opts.duration {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some((_, rss, _, _)) = proc_stats(pid) {
                rss_peak_sampled = rss_peak_sampled.max(rss);
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                let acked = shared.acks.lock().map(|a| a.len()).unwrap_or(0);
                eprintln!(
                    "  {:>4}s: {acked} acknowledged, {} moves, {} errors, RSS {} MiB",
                    started.elapsed().as_secs(),
                    shared.moves_done.load(Ordering::Relaxed),
                    shared.errors.total(),
                    rss_peak_sampled / 1024
                );
            }
        }
        shared.stop.store(true, Ordering::SeqCst);
        let elapsed = started.elapsed();
        // Every client finishes its current step (each bounded by STEP) and logs out.
        let deadline = tokio::time::Instant::now() + STEP * 3;
        for t in tasks {
            let abort = t.abort_handle();
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => shared.errors.add("client task panicked", e.to_string()),
                Err(_) => {
                    abort.abort();
                    shared
                        .errors
                        .add("client task did not stop", "aborted after the run");
                }
            }
        }
        (elapsed, rss_peak_sampled)
    });

    // Drain the outbound queue (bounded).
    let expected_out = shared
        .acks
        .lock()
        .map(|a| a.values().filter(|a| a.kind == Kind::Submission).count())
        .unwrap_or(0);
    let drain_started = Instant::now();
    let mut queue_left;
    loop {
        queue_left = match cli_json(&daemon, &["queue", "list"]) {
            Ok(q) => q.as_array().map_or(0, Vec::len),
            Err(e) => {
                shared.errors.add("queue list", e);
                0
            }
        };
        let delivered = sink_state.lock().map(|s| s.by_mid.len()).unwrap_or(0);
        if queue_left == 0 && delivered >= expected_out {
            break;
        }
        if drain_started.elapsed() > opts.drain_timeout {
            shared.errors.add(
                "outbound drain timeout",
                format!("{queue_left} queued, {delivered}/{expected_out} at the sink"),
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let drain = drain_started.elapsed();

    // Peak memory and CPU before stopping.
    let stats = proc_stats(pid);
    let sink = {
        let s = sink_state.lock().unwrap_or_else(|p| p.into_inner());
        SinkState {
            by_mid: s.by_mid.clone(),
            transactions: s.transactions,
            bytes: s.bytes,
        }
    };
    let verdict = verify(&shared, &daemon, &sink, queue_left);
    let log_problems = std::fs::read_to_string(&daemon.log)
        .map(|t| {
            (
                t.lines().filter(|l| l.contains(" WARN ")).count(),
                t.lines().filter(|l| l.contains(" ERROR ")).count(),
            )
        })
        .unwrap_or((0, 0));
    if let Err(e) = stop_daemon(&mut daemon) {
        shared.errors.add("daemon stop", e);
    }
    drop(rt);

    // Report.
    let acks = shared
        .acks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let inbound = acks.values().filter(|a| a.kind == Kind::Inbound).count();
    let threads = shared.threads.lock().map(|t| t.len()).unwrap_or(0);
    println!();
    println!(
        "load phase {:.1} s, outbound drain {:.1} s; {inbound} inbound messages in {threads} threads, {expected_out} replies submitted",
        elapsed.as_secs_f64(),
        drain.as_secs_f64()
    );
    let secs = elapsed.as_secs_f64();
    println!(
        "throughput: {:.1} messages/s over SMTP, {:.1} submissions/s, {:.1} IMAP moves/s",
        inbound as f64 / secs,
        expected_out as f64 / secs,
        shared.moves_done.load(Ordering::Relaxed) as f64 / secs
    );
    println!();
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "per s", "p50", "p90", "p99", "max"
    );
    println!("{}", "-".repeat(26 + 6 * 10));
    let lat = &shared.lat;
    // A message delivered while the agent was in IDLE, no later than the EXISTS that
    // woke it: its notification delay.
    for o in shared
        .observations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        if let Some(ack) = acks.get(&o.mid)
            && ack.sent > o.idle_entered
            && ack.sent <= o.exists_seen
        {
            lat.notify
                .push(o.exists_seen.saturating_duration_since(ack.at));
            lat.notify_data.push(o.exists_seen - ack.sent);
        }
    }
    println!(
        "{}",
        row("SMTP transaction (250)", lat.smtp.take(), elapsed)
    );
    println!("{}", row("submission (250)", lat.submit.take(), elapsed));
    println!(
        "{}",
        row("IDLE notify (250→EXISTS)", lat.notify.take(), elapsed)
    );
    println!(
        "{}",
        row("IDLE notify (DATA→EXISTS)", lat.notify_data.take(), elapsed)
    );
    println!("{}", row("IMAP UID FETCH new", lat.fetch.take(), elapsed));
    println!("{}", row("IMAP UID MOVE", lat.moves.take(), elapsed));
    println!();
    println!(
        "IMAP: {} IDLE wake-ups, {} messages fetched, {} moves acknowledged ({} no-ops); {} collision-guard refusals resent",
        shared.idle_wakeups.load(Ordering::Relaxed),
        shared.fetched.load(Ordering::Relaxed),
        shared.moves_done.load(Ordering::Relaxed),
        shared.moves_noop.load(Ordering::Relaxed),
        shared.collisions.load(Ordering::Relaxed),
    );
    println!(
        "sink: {} transactions, {:.1} MiB",
        sink.transactions,
        sink.bytes as f64 / 1_048_576.0
    );
    match stats {
        Some((hwm, rss, user, sys)) => println!(
            "daemon: peak RSS (VmHWM) {:.1} MiB, RSS at end {:.1} MiB (max sampled during load {:.1} MiB); CPU {:.1} s user + {:.1} s system = {:.0}% of one core over the load phase",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0,
            rss_samples as f64 / 1024.0,
            user,
            sys,
            (user + sys) / elapsed.as_secs_f64() * 100.0
        ),
        None => shared
            .errors
            .add("daemon stats", "could not read /proc/<pid>/status"),
    }
    let (tool_user, tool_sys) = own_cpu();
    println!(
        "load tool itself: CPU {tool_user:.1} s user + {tool_sys:.1} s system (it shares the machine: {} CPUs, load average {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "daemon log: {} WARN, {} ERROR lines ({})",
        log_problems.0,
        log_problems.1,
        daemon.log.display()
    );

    println!();
    let mut failures = 0;
    match &verdict {
        Ok(v) => {
            println!(
                "verified: {} acknowledged messages in {} conversations, {} submissions at the sink, {} last moves",
                v.checked_messages, v.conversations, v.submissions_expected, v.moves_checked
            );
            list_some("LOST (acknowledged, not stored)", &v.lost);
            list_some("stored more than once", &v.duplicated);
            list_some("thread split across conversations", &v.split_threads);
            list_some("submission never reached the sink", &v.not_delivered);
            list_some("submission delivered more than once", &v.delivered_twice);
            list_some("unexpected sink deliveries", &v.unexpected_deliveries);
            list_some("MOVE did not hold", &v.moves_not_held);
            if v.queue_left > 0 {
                println!("  outbound queue not empty: {}", v.queue_left);
            }
            if v.junk > 0 {
                println!("  messages in Junk: {}", v.junk);
            }
            failures += v.failures();
        }
        Err(e) => {
            println!("verification could not run: {e}");
            failures += 1;
        }
    }
    let errors = shared.errors.total();
    println!("errors: {errors}");
    for (kind, (n, samples)) in shared
        .errors
        .by_kind
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        println!("  {kind}: {n}");
        for s in samples {
            println!("    {s}");
        }
    }
    let ok = errors == 0 && failures == 0;
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    let _ = std::io::stdout().flush();
    if opts.keep || !ok {
        let kept = dir.keep();
        println!("kept {} (config, data, teamgate.log)", kept.display());
    }
    Ok(ok)
}
