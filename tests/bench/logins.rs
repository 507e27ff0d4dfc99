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
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use tokio::io::AsyncWriteExt;

// Shared with the scale benchmark, which uses all of it.
#[allow(dead_code)]
#[path = "daemon.rs"]
mod daemon;

use daemon::{Daemon, PASSWORD, connect, line, login_of, ms, percentile};
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

/// Connect, greeting, LOGIN; returns the time from connect to the LOGIN's OK. Then LOGOUT.
async fn login_once(addr: SocketAddr, login: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut reader = connect(addr).await?;
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

fn report(what: &str, mut took: Vec<Duration>, daemon: &Daemon, idle: f64) {
    took.sort_unstable();
    let (rss, hwm) = daemon.memory();
    println!(
        "{what:<34} p50 {:>7.1} ms  p99 {:>7.1} ms  RSS {rss:>6.1} MiB (+{:.1} over idle)  peak {hwm:>6.1} MiB",
        ms(percentile(&took, 0.50)),
        ms(percentile(&took, 0.99)),
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
    let daemon = Daemon::start(
        &opts.binary,
        dir.path(),
        opts.agents,
        &format!(
            "auth_cache_secs = {}\nauth_workers = {}",
            opts.cache_secs, opts.workers
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = daemon.memory();
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
    report("50 sequential logins", sequential, &daemon, idle);
    let n = opts.agents * opts.connections;
    let first = storm(daemon.imap, &opts).await?;
    report(&format!("{n} concurrent logins"), first, &daemon, idle);
    let again = storm(daemon.imap, &opts).await?;
    report(
        &format!("{n} concurrent logins, again"),
        again,
        &daemon,
        idle,
    );
    // The checking threads give their memory back after 2 s without work.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = daemon.memory();
    println!(
        "5 s later                          RSS {rss:>6.1} MiB (+{:.1} over idle)  peak {hwm:>6.1} MiB",
        rss - idle
    );
    drop(daemon);
    Ok(())
}

fn main() -> ExitCode {
    daemon::main_with("logins", parse_args, run)
}
