//! What the benchmarks share: the real `teamgate serve` process on free loopback ports
//! with a generated config, its memory as the kernel counts it, line-based protocol
//! steps under a timeout, and percentiles.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// Upper bound for one network step (connect, one reply line).
pub const STEP: Duration = Duration::from_secs(120);
/// Every agent of a benchmark has this password.
pub const PASSWORD: &str = "bench-password";
pub const INBOX_ADDRESS: &str = "support@bench.test";

pub fn free_addr() -> Result<(StdListener, SocketAddr), String> {
    let l = StdListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let a = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    Ok((l, a))
}

pub fn login_of(i: usize) -> String {
    format!("agent{i}")
}

/// A running daemon; SIGTERM (then SIGKILL) when dropped.
pub struct Daemon {
    /// None while stopped.
    child: Option<Child>,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes the config (`agents` agents in one inbox, `server_extra` appended to
    /// `[server]`) into `dir` and starts the binary.
    pub fn start(
        binary: &Path,
        dir: &Path,
        agents: usize,
        server_extra: &str,
    ) -> Result<Daemon, String> {
        if !binary.is_file() {
            return Err(format!("{} not found", binary.display()));
        }
        let (l1, smtp) = free_addr()?;
        let (l2, imap) = free_addr()?;
        let hash = teamgate::auth::hash_password(PASSWORD).map_err(|e| format!("hash: {e}"))?;
        let logins: Vec<String> = (0..agents).map(login_of).collect();
        let members = logins
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let data_dir = dir.join("data");
        let mut cfg = format!(
            "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"{data}\"\n{server_extra}\n\
             [smtp]\nlisten = [\"{smtp}\"]\nmax_connections = 1000\n[submission]\nlisten = []\n\
             [imap]\nlisten = [\"{imap}\"]\nmax_connections = 1000\n\
             [tls]\nallow_plaintext_auth = true\n[filter]\ndns_server = \"none\"\n\
             [[inbox]]\nname = \"Support\"\naddresses = [\"{INBOX_ADDRESS}\"]\nmembers = [{members}]\n",
            data = data_dir.display(),
        );
        for login in &logins {
            cfg.push_str(&format!(
                "\n[[agent]]\nlogin = \"{login}\"\nname = \"Agent {login}\"\n\
                 email = \"{login}@agents.bench.test\"\npassword_hash = \"{hash}\"\n"
            ));
        }
        let config = dir.join("teamgate.toml");
        std::fs::write(&config, cfg).map_err(|e| format!("write config: {e}"))?;
        drop((l1, l2));
        let mut daemon = Daemon {
            child: None,
            binary: binary.to_path_buf(),
            config,
            data_dir,
            smtp,
            imap,
            log: dir.join("teamgate.log"),
        };
        daemon.restart()?;
        Ok(daemon)
    }

    /// Stops the process (SIGTERM, bounded wait, then SIGKILL).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Starts the binary on the same config and data; returns once IMAP and SMTP accept.
    pub fn restart(&mut self) -> Result<Duration, String> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("log file: {e}"))?;
        let started = Instant::now();
        let child = self.child.insert(
            Command::new(&self.binary)
                .args(["serve", "--config"])
                .arg(&self.config)
                .env_remove("RUST_LOG")
                // As systemd/teamgate.service runs it.
                .env("MALLOC_ARENA_MAX", "2")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?,
        );
        let deadline = started + Duration::from_secs(300);
        while std::net::TcpStream::connect(self.imap).is_err()
            || std::net::TcpStream::connect(self.smtp).is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "teamgate exited ({status}); see {}",
                    self.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err("teamgate did not listen within 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(started.elapsed())
    }

    /// (VmRSS, VmHWM) in MiB.
    pub fn memory(&self) -> (f64, f64) {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return (0.0, 0.0);
        };
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

    /// `teamgate ARGS --config CONFIG` through the control socket; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .map_err(|e| format!("teamgate {args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "teamgate {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line, under [`STEP`]; an error when the peer closed.
pub async fn line(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
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

pub async fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    Ok(BufReader::new(stream))
}

/// The `p` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A benchmark's `main`: its arguments parsed (exit 2 on a bad one), `run` on a
/// multi-threaded runtime, exit 1 with the error when it fails.
pub fn main_with<O, F>(
    name: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<O, String>,
    run: impl FnOnce(O) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let opts = match parse(std::env::args().skip(1)) {
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
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
