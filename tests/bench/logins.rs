//! Login storm benchmark of one real `teamgate serve` process:
//! `cargo bench --bench logins [-- --agents 40 --connections 5 --cache-secs 300]`.
//!
//! The morning of a team: every agent's client opens `--connections` IMAP connections at
//! once (Thunderbird opens up to five). The benchmark starts the release binary
//! (`CARGO_BIN_EXE_teamgate`, or `--binary PATH`) on a free loopback port with `--agents`
//! agents on an empty store, and measures:
//! - the daemon's RSS when idle;
//! - 50 sequential logins: latency p50/p99, RSS after;
//! - `agents × connections` concurrent logins (all at once, then LOGOUT): latency p50/p99,
//!   RSS after and peak (VmHWM);
//! - the same storm again (clients reconnecting).
//!
//! `--cache-secs 0` turns the login cache off, to see the cost of the hash alone. Every
//! network step has a timeout; a failed login fails the run (exit 1).

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(60);
const PASSWORD: &str = "storm-password";
const USAGE: &str = "usage: cargo bench --bench logins -- [--agents N] [--connections N] \
[--cache-secs SECS] [--workers N] [--binary PATH]";

struct Options {
    agents: usize,
    connections: usize,
    cache_secs: u64,
    workers: usize,
    binary: PathBuf,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        agents: 40,
        connections: 5,
        cache_secs: 300,
        workers: 0,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_teamgate")),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match arg.as_str() {
            "--agents" => opts.agents = number(value("--agents")?, "--agents")? as usize,
            "--connections" => {
                opts.connections = number(value("--connections")?, "--connections")? as usize
            }
            "--cache-secs" => opts.cache_secs = number(value("--cache-secs")?, "--cache-secs")?,
            "--workers" => opts.workers = number(value("--workers")?, "--workers")? as usize,
            "--binary" => opts.binary = PathBuf::from(value("--binary")?),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if opts.agents == 0 || opts.connections == 0 {
        return Err(format!(
            "--agents and --connections must be at least 1\n{USAGE}"
        ));
    }
    Ok(opts)
}

fn free_addr() -> Result<(StdListener, SocketAddr), String> {
    let l = StdListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let a = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    Ok((l, a))
}

fn login_of(i: usize) -> String {
    format!("agent{i}")
}

struct Daemon {
    child: Child,
    imap: SocketAddr,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(opts: &Options, dir: &Path) -> Result<Daemon, String> {
    if !opts.binary.is_file() {
        return Err(format!("{} not found", opts.binary.display()));
    }
    let (l1, smtp) = free_addr()?;
    let (l2, imap) = free_addr()?;
    let hash = teamgate::auth::hash_password(PASSWORD).map_err(|e| format!("hash: {e}"))?;
    let logins: Vec<String> = (0..opts.agents).map(login_of).collect();
    let members = logins
        .iter()
        .map(|l| format!("\"{l}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut cfg = format!(
        "[server]\nhostname = \"mx.storm.test\"\ndata_dir = \"{data}\"\nauth_cache_secs = {cache}\n\
         auth_workers = {workers}\n[smtp]\nlisten = [\"{smtp}\"]\n[submission]\nlisten = []\n\
         [imap]\nlisten = [\"{imap}\"]\nmax_connections = {conns}\n[tls]\nallow_plaintext_auth = true\n\
         [filter]\ndns_server = \"none\"\n[[inbox]]\nname = \"Support\"\n\
         addresses = [\"support@storm.test\"]\nmembers = [{members}]\n",
        data = dir.join("data").display(),
        cache = opts.cache_secs,
        workers = opts.workers,
        conns = opts.agents * opts.connections + 100,
    );
    for login in &logins {
        cfg.push_str(&format!(
            "\n[[agent]]\nlogin = \"{login}\"\nname = \"Agent {login}\"\n\
             email = \"{login}@agents.storm.test\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    let config = dir.join("teamgate.toml");
    std::fs::write(&config, cfg).map_err(|e| format!("write config: {e}"))?;
    let log = dir.join("teamgate.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
    drop((l1, l2));
    let child = Command::new(&opts.binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", opts.binary.display()))?;
    let mut daemon = Daemon { child, imap, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(imap).is_err() {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            return Err(format!(
                "teamgate exited early ({status}); see {}",
                daemon.log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err("teamgate did not start within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

async fn line(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut text = String::new();
    let n = tokio::time::timeout(STEP, reader.read_line(&mut text))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(text)
}

/// Connect, greeting, LOGIN; returns the time from connect to the LOGIN's OK. Then LOGOUT.
async fn login_once(addr: SocketAddr, login: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let mut reader = BufReader::new(stream);
    line(&mut reader).await?;
    reader
        .get_mut()
        .write_all(format!("a1 LOGIN {login} {PASSWORD}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let answer = line(&mut reader).await?;
        if answer.starts_with("a1 ") {
            if !answer.starts_with("a1 OK") {
                return Err(format!("{login}: {}", answer.trim_end()));
            }
            break;
        }
    }
    let took = started.elapsed();
    let _ = reader.get_mut().write_all(b"a2 LOGOUT\r\n").await;
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut took: Vec<Duration>, pid: u32, idle: f64) {
    took.sort_unstable();
    let (rss, hwm) = memory(pid);
    println!(
        "{what:<34} p50 {:>7.1} ms  p99 {:>7.1} ms  RSS {rss:>6.1} MiB (+{:.1} over idle)  peak {hwm:>6.1} MiB",
        percentile(&took, 0.50).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3,
        rss - idle,
    );
}

async fn storm(addr: SocketAddr, opts: &Options) -> Result<Vec<Duration>, String> {
    let tasks: Vec<_> = (0..opts.agents * opts.connections)
        .map(|i| {
            let login = login_of(i % opts.agents);
            tokio::spawn(async move { login_once(addr, &login).await })
        })
        .collect();
    let mut took = Vec::with_capacity(tasks.len());
    for t in tasks {
        took.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(took)
}

async fn run(opts: Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let daemon = start_daemon(&opts, dir.path())?;
    let pid = daemon.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory(pid);
    println!(
        "teamgate {}: {} agents, {} connections each, auth_cache_secs {}, auth_workers {} (0 = cores)",
        opts.binary.display(),
        opts.agents,
        opts.connections,
        opts.cache_secs,
        opts.workers
    );
    println!("idle                               RSS {idle:>6.1} MiB");
    let mut sequential = Vec::new();
    for i in 0..50 {
        sequential.push(login_once(daemon.imap, &login_of(i % opts.agents)).await?);
    }
    report("50 sequential logins", sequential, pid, idle);
    let n = opts.agents * opts.connections;
    let first = storm(daemon.imap, &opts).await?;
    report(&format!("{n} concurrent logins"), first, pid, idle);
    let again = storm(daemon.imap, &opts).await?;
    report(&format!("{n} concurrent logins, again"), again, pid, idle);
    // The checking threads give their memory back after 2 s without work.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = memory(pid);
    println!(
        "5 s later                          RSS {rss:>6.1} MiB (+{:.1} over idle)  peak {hwm:>6.1} MiB",
        rss - idle
    );
    drop(daemon);
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logins: {e}");
            ExitCode::FAILURE
        }
    }
}
