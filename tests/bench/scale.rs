//! Scale benchmark of one real `teamgate serve` process:
//! `cargo bench --bench scale [-- --messages 100000 --sessions 20 --size 2048 --agents 20]`.
//!
//! Builds a team mailbox with real SMTP (`--sessions` concurrent senders, as `smtp-source
//! -s 20` does; each message a new conversation of about `--size` bytes), then reports
//! the figures of issue 14's table:
//! - ingest rate and the daemon's peak RSS while ingesting;
//! - bytes per message in each sled tree (`teamgate status --json`), sled's files and the
//!   whole data directory against the raw bytes sent;
//! - how long the search index trails the last message, and its size per message;
//! - the time from start until listening, after a clean restart;
//! - what opening INBOX costs one agent (SELECT, UID FETCH 1:* (FLAGS), SEARCH UNSEEN,
//!   SEARCH SUBJECT, SEARCH BODY), and RSS after;
//! - the same with `--agents` agents at once: p50/p99 per step, RSS after.
//!
//! Any refused message or failed step fails the run (exit 1).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::io::AsyncWriteExt;

#[path = "daemon.rs"]
mod daemon;

use daemon::{Daemon, INBOX_ADDRESS, PASSWORD, connect, line, login_of, ms, percentile};

const USAGE: &str = "usage: cargo bench --bench scale -- [--messages N] [--sessions N] \
[--size BYTES] [--agents N] [--binary PATH] [--keep DIR [--build-only]]";

struct Options {
    messages: u64,
    sessions: u64,
    size: usize,
    agents: usize,
    binary: PathBuf,
    /// Build the mailbox here and keep it (else a temp dir).
    keep: Option<PathBuf>,
    /// Stop once the mailbox is built (with `keep`: to profile a daemon on it, e.g. under
    /// heaptrack, with `teamgate serve --config DIR/teamgate.toml`).
    build_only: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        messages: 100_000,
        sessions: 20,
        size: 2048,
        agents: 20,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_teamgate")),
        keep: None,
        build_only: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match arg.as_str() {
            "--messages" => opts.messages = number(value("--messages")?, "--messages")?,
            "--sessions" => opts.sessions = number(value("--sessions")?, "--sessions")?.max(1),
            "--size" => opts.size = number(value("--size")?, "--size")? as usize,
            "--agents" => opts.agents = number(value("--agents")?, "--agents")?.max(1) as usize,
            "--binary" => opts.binary = PathBuf::from(value("--binary")?),
            "--keep" => opts.keep = Some(PathBuf::from(value("--keep")?)),
            "--build-only" => opts.build_only = true,
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if opts.build_only && opts.keep.is_none() {
        return Err(format!("--build-only needs --keep DIR\n{USAGE}"));
    }
    Ok(opts)
}

/// Words the bodies are made of; `needle{n}` makes BODY searches hit a known share.
const WORDS: &[&str] = &[
    "order",
    "invoice",
    "delivery",
    "printer",
    "refund",
    "account",
    "password",
    "shipping",
    "tracking",
    "warranty",
    "replacement",
    "broken",
    "update",
    "thanks",
    "please",
    "support",
];

/// Message `n`: a customer's question, about `size` bytes.
fn message(n: u64, size: usize) -> Vec<u8> {
    let mut body = String::with_capacity(size + 100);
    let mut i = n;
    while body.len() < size.saturating_sub(400) {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        body.push_str(WORDS[(i >> 59) as usize % WORDS.len()]);
        body.push(if (i >> 40).is_multiple_of(12) {
            '\n'
        } else {
            ' '
        });
    }
    format!(
        "From: Customer {c} <customer{c}@shop{d}.test>\r\nTo: <{INBOX_ADDRESS}>\r\n\
         Subject: question {n} about order {o}\r\nMessage-ID: <scale{n}@shop{d}.test>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n{body}\r\nneedle{k}\r\n",
        c = n % 5000,
        d = n % 997,
        o = n * 7 % 100_000,
        k = n % 1000,
        body = body.replace('\n', "\r\n"),
    )
    .into_bytes()
}

async fn expect(
    reader: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    code: &str,
) -> Result<(), String> {
    loop {
        let l = line(reader).await?;
        if l.len() >= 4 && &l[3..4] == "-" {
            continue;
        }
        return if l.starts_with(code) {
            Ok(())
        } else {
            Err(format!("expected {code}, got {}", l.trim_end()))
        };
    }
}

/// One SMTP session delivering messages `first, first + step, …` below `total`.
async fn sender(
    addr: std::net::SocketAddr,
    first: u64,
    step: u64,
    total: u64,
    size: usize,
    sent: Arc<AtomicU64>,
) -> Result<(), String> {
    let mut c = connect(addr).await?;
    expect(&mut c, "220").await?;
    c.get_mut()
        .write_all(b"EHLO sender.bench.test\r\n")
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut c, "250").await?;
    let mut n = first;
    while n < total {
        let raw = message(n, size);
        c.get_mut()
            .write_all(
                format!(
                    "MAIL FROM:<customer{}@shop.test>\r\nRCPT TO:<{INBOX_ADDRESS}>\r\nDATA\r\n",
                    n % 5000
                )
                .as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        expect(&mut c, "250").await?;
        expect(&mut c, "250").await?;
        expect(&mut c, "354").await?;
        c.get_mut()
            .write_all(&raw)
            .await
            .map_err(|e| e.to_string())?;
        c.get_mut()
            .write_all(b".\r\n")
            .await
            .map_err(|e| e.to_string())?;
        expect(&mut c, "250")
            .await
            .map_err(|e| format!("message {n}: {e}"))?;
        sent.fetch_add(raw.len() as u64, Ordering::Relaxed);
        n += step;
    }
    let _ = c.get_mut().write_all(b"QUIT\r\n").await;
    Ok(())
}

/// Runs one IMAP command; the untagged lines and the time to the tagged OK.
async fn command(
    c: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    tag: &str,
    text: &str,
) -> Result<(Vec<String>, Duration), String> {
    let started = Instant::now();
    c.get_mut()
        .write_all(format!("{tag} {text}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut untagged = Vec::new();
    loop {
        let l = line(c).await?;
        if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
            return if rest.starts_with("OK") {
                Ok((untagged, started.elapsed()))
            } else {
                Err(format!("{text}: {}", rest.trim_end()))
            };
        }
        untagged.push(l);
    }
}

const STEPS: [(&str, &str); 5] = [
    ("SELECT INBOX", "SELECT INBOX"),
    ("UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)"),
    ("SEARCH UNSEEN", "UID SEARCH UNSEEN"),
    ("SEARCH SUBJECT", "UID SEARCH SUBJECT \"question 12345 \""),
    ("SEARCH BODY", "UID SEARCH BODY \"needle777\""),
];

/// What one agent's opening of INBOX measured: each step's time and, when the daemon was
/// watched, its RSS after the step (MiB); what SELECT said exists.
struct Opened {
    took: Vec<Duration>,
    rss: Vec<f64>,
    exists: u64,
}

/// One agent opening INBOX; with `watch`, the daemon's RSS is read after each step.
async fn open_inbox(
    addr: std::net::SocketAddr,
    login: &str,
    watch: Option<&Daemon>,
) -> Result<Opened, String> {
    let mut c = connect(addr).await?;
    line(&mut c).await?;
    command(&mut c, "a0", &format!("LOGIN {login} {PASSWORD}")).await?;
    let mut opened = Opened {
        took: Vec::new(),
        rss: Vec::new(),
        exists: 0,
    };
    for (i, (_, text)) in STEPS.iter().enumerate() {
        let (lines, t) = command(&mut c, &format!("s{i}"), text).await?;
        if i == 0 {
            opened.exists = lines
                .iter()
                .find_map(|l| {
                    l.strip_prefix("* ")?
                        .strip_suffix(" EXISTS\r\n")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
        }
        opened.took.push(t);
        if let Some(d) = watch {
            opened.rss.push(d.memory().0);
        }
    }
    let _ = command(&mut c, "z", "LOGOUT").await;
    Ok(opened)
}

/// Waits until the search index holds `messages` documents; answers how long that took.
/// It reads the index's own `meta.json` (the documents of each segment its last commit
/// lists): polling `teamgate status --json` would walk every sled tree each time and
/// keep the CPU the idle-priority indexer needs. At most an hour.
async fn index_caught_up(d: &Daemon, messages: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let meta = d.data_dir.join("search").join("meta.json");
    while started.elapsed() < Duration::from_secs(3600) {
        let documents: u64 = std::fs::read_to_string(&meta)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| {
                v["segments"]
                    .as_array()
                    .map(|segments| segments.iter().filter_map(|s| s["max_doc"].as_u64()).sum())
            })
            .unwrap_or(0);
        if documents >= messages {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("the search index did not catch up within an hour".into())
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => dirs.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

async fn run(opts: Options) -> Result<(), String> {
    let temp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let dir = opts
        .keep
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut d = Daemon::start(&opts.binary, &dir, opts.agents, "")?;
    let (idle, _) = d.memory();
    println!(
        "teamgate {}: {} messages of ~{} bytes over {} SMTP sessions; {} agents",
        opts.binary.display(),
        opts.messages,
        opts.size,
        opts.sessions,
        opts.agents
    );
    println!("idle RSS                     {idle:>9.1} MiB");

    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..opts.sessions)
        .map(|s| {
            let sent = sent.clone();
            tokio::spawn(sender(
                d.smtp,
                s,
                opts.sessions,
                opts.messages,
                opts.size,
                sent,
            ))
        })
        .collect();
    let mut peak = 0.0f64;
    for s in senders {
        while !s.is_finished() {
            peak = peak.max(d.memory().0);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        s.await.map_err(|e| e.to_string())??;
    }
    let took = started.elapsed();
    let (rss, hwm) = d.memory();
    let raw = sent.load(Ordering::Relaxed);
    println!(
        "ingest                       {:>9.0} msgs/s ({:.1} s); peak RSS {:.1} MiB (VmHWM {hwm:.1}), now {rss:.1} MiB",
        opts.messages as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        peak.max(rss),
    );

    let indexed = index_caught_up(&d, opts.messages).await?;
    println!(
        "search index caught up       {:>9.1} s after the last message",
        indexed.as_secs_f64()
    );
    if opts.build_only {
        d.stop();
        println!("built in {}", dir.display());
        return Ok(());
    }
    let status: serde_json::Value = serde_json::from_str(&d.cli(&["status", "--json"])?)
        .map_err(|e| format!("status --json: {e}"))?;
    let messages = status["messages"].as_u64().unwrap_or(0).max(1);
    println!("bytes per message by tree (keys + values, before sled's own overhead):");
    let mut meta = 0u64;
    for t in status["trees"].as_array().into_iter().flatten() {
        let bytes = t["key_bytes"].as_u64().unwrap_or(0) + t["value_bytes"].as_u64().unwrap_or(0);
        meta += bytes;
        if bytes > 0 {
            println!(
                "  {:<24} {:>10} entries {:>9.1} B/msg",
                t["tree"].as_str().unwrap_or("?"),
                t["entries"].as_u64().unwrap_or(0),
                bytes as f64 / messages as f64
            );
        }
    }
    let db = status["db_bytes"].as_u64().unwrap_or(0);
    let data = dir_bytes(&d.data_dir);
    println!(
        "  search index {:.0} B/msg",
        dir_bytes(&d.data_dir.join("search")) as f64 / messages as f64
    );
    println!(
        "  all trees {:.0} B/msg; sled on disk {:.0} B/msg; data dir {:.2} × the {:.1} MB sent",
        meta as f64 / messages as f64,
        db as f64 / messages as f64,
        data as f64 / raw.max(1) as f64,
        raw as f64 / 1e6
    );

    let restart = d.restart()?;
    println!(
        "restart until listening      {:>9.2} s",
        restart.as_secs_f64()
    );
    let (after_restart, _) = d.memory();

    let one = open_inbox(d.imap, &login_of(0), Some(&d)).await?;
    if one.exists != opts.messages {
        return Err(format!(
            "SELECT INBOX says {} EXISTS, {} were sent",
            one.exists, opts.messages
        ));
    }
    println!(
        "one agent opens INBOX ({} messages; RSS {after_restart:.1} MiB before):",
        one.exists
    );
    for (((name, _), t), rss) in STEPS.iter().zip(&one.took).zip(&one.rss) {
        println!("  {name:<26} {:>9.1} ms   RSS after {rss:>7.1} MiB", ms(*t));
    }
    let (rss, hwm) = d.memory();
    println!("  RSS after                  {rss:>9.1} MiB (VmHWM {hwm:.1})");

    let agents: Vec<_> = (0..opts.agents)
        .map(|i| {
            let (addr, login) = (d.imap, login_of(i));
            tokio::spawn(async move { open_inbox(addr, &login, None).await })
        })
        .collect();
    let mut per_step: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    for a in agents {
        let opened = a.await.map_err(|e| e.to_string())??;
        for (i, t) in opened.took.into_iter().enumerate() {
            per_step[i].push(t);
        }
    }
    println!("{} agents open INBOX at once:", opts.agents);
    for ((name, _), mut times) in STEPS.iter().zip(per_step) {
        times.sort_unstable();
        println!(
            "  {name:<26} p50 {:>9.1} ms  p99 {:>9.1} ms",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }
    let (rss, hwm) = d.memory();
    println!("  RSS after                  {rss:>9.1} MiB (VmHWM {hwm:.1})");
    d.stop();
    Ok(())
}

fn main() -> ExitCode {
    daemon::main_with("scale", parse_args, run)
}
