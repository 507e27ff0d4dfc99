//! The real filter programs a test starts (SpamAssassin's `spamd`, ClamAV's `clamd`,
//! `dnsmasq` as the loopback DNS server), each on free loopback ports with temp
//! configuration and stopped by its process id when done, and the messages the filter
//! tests send. A missing program fails the test: tests/run.sh installs them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use teamgate::filter::Resolver;
use tempfile::TempDir;

use crate::harness::{require_program, reserved_addr};

/// Upper bound for a daemon to start listening (spamd compiles its rules first).
const STARTUP: Duration = Duration::from_secs(90);

pub(crate) const TEAM: &str = "support@example.test";

pub(crate) fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A daemon started by a test; stopped with SIGTERM (so spamd takes its children along),
/// then SIGKILL, when the test is done or asks for it.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) command: Command,
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Service {
    pub(crate) fn start(name: &'static str, mut command: Command, log: PathBuf) -> Service {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} failed to start: {e}"));
        Service {
            name,
            command,
            child: Some(child),
            log,
        }
    }

    /// Starts the same command again (same ports, same files).
    pub(crate) fn restart(&mut self) {
        self.stop();
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        self.command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        self.child = Some(self.command.spawn().expect("restart"));
    }

    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds, bounded; panics with the daemon's log otherwise.
    pub(crate) async fn wait_until(&mut self, what: &str, mut ready: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if ready().await {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} not ready ({what}) within {STARTUP:?}:\n{}",
            self.name,
            self.log()
        );
    }

    pub(crate) async fn wait_tcp(&mut self, addr: SocketAddr) {
        self.wait_until(&format!("listening on {addr}"), async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// dnsmasq answering TXT records for `*.test` from memory, NXDOMAIN for other `*.test`
/// names, and nothing from upstream.
pub(crate) struct Dns {
    pub(crate) service: Service,
    pub(crate) addr: SocketAddr,
    pub(crate) _dir: TempDir,
}

impl Dns {
    pub(crate) async fn start(txt: &[(&str, &str)]) -> Dns {
        let program = require_program("dnsmasq");
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = reserved_addr();
        let mut command = Command::new(program);
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-poll")
            .arg("--bind-interfaces")
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("dnsmasq.pid").display()
            ))
            .arg("--local=/test/")
            .arg("--log-facility=-");
        for (name, text) in txt {
            // A comma separates character-strings in dnsmasq; these texts have none.
            command.arg(format!("--txt-record={name},{text}"));
        }
        let mut service = Service::start("dnsmasq", command, dir.path().join("dnsmasq.log"));
        service.wait_tcp(addr).await;
        Dns {
            service,
            addr,
            _dir: dir,
        }
    }

    pub(crate) fn resolver(&self) -> Resolver {
        Resolver::name_server(self.addr).expect("resolver")
    }
}

pub(crate) fn text_message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{TEAM}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nmy printer is broken.\r\n"
    )
    .into_bytes()
}

/// A multipart/mixed message: a text part, then one base64 part per `(name, type, data)`.
pub(crate) fn with_attachments(files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut raw = format!(
        "From: <customer@sender.test>\r\nTo: <{TEAM}>\r\nSubject: files\r\n\
         Message-ID: <files@sender.test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attached files.\r\n"
    );
    for (name, ctype, data) in files {
        let encoded = b64(data)
            .as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n");
        raw.push_str(&format!(
            "--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        ));
    }
    raw.push_str("--b1--\r\n");
    raw.into_bytes()
}

/// The EICAR test string, built so that this source file itself is not a test virus.
pub(crate) fn eicar() -> Vec<u8> {
    [
        r"X5O!P%@AP[4\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
    .into_bytes()
}

pub(crate) const CLEAN_PDF: &[u8] =
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";

pub(crate) struct Spamd {
    pub(crate) service: Service,
    pub(crate) addr: String,
    pub(crate) _dir: TempDir,
}

/// spamd with SpamAssassin's own rules from the Debian package, local tests only (`-L`:
/// no DNS blocklists, no network), no Bayes, no per-user config, one child.
pub(crate) async fn start_spamd() -> Spamd {
    start_spamd_with(false).await
}

/// spamd as [`start_spamd`], but with a Bayes database of its own that learns only from
/// `TELL` (`--allow-tell`; autolearn off). Bayes joins the score once it has learned 20
/// spam and 20 ham (SpamAssassin's default is 200 of each: a test teaches fewer).
pub(crate) async fn start_spamd_learning() -> Spamd {
    start_spamd_with(true).await
}

async fn start_spamd_with(bayes: bool) -> Spamd {
    let program = require_program("spamd");
    let dir = tempfile::tempdir().expect("temp dir");
    // The site config dir must hold the `.pre` files that load the Check plugin & co.
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("site dir");
    let system_site = Path::new("/etc/spamassassin");
    for entry in std::fs::read_dir(system_site).expect("/etc/spamassassin (spamassassin package)") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pre") {
            std::fs::copy(&path, site.join(path.file_name().expect("name"))).expect("copy .pre");
        }
    }
    let common = "skip_rbl_checks 1\ndns_available no\nuse_razor2 0\nuse_pyzor 0\n\
                  use_auto_whitelist 0\nbayes_auto_learn 0\n";
    let bayes_conf = if bayes {
        // Writable by the user spamd's children run as.
        let db = dir.path().join("bayes");
        std::fs::create_dir(&db).expect("bayes dir");
        let _ = Command::new("chmod").arg("0777").arg(&db).status();
        format!(
            "use_bayes 1\nbayes_path {}/bayes\nbayes_file_mode 0666\n\
             bayes_min_spam_num 20\nbayes_min_ham_num 20\n",
            db.display()
        )
    } else {
        "use_bayes 0\n".to_string()
    };
    std::fs::write(site.join("local.cf"), format!("{bayes_conf}{common}")).expect("local.cf");
    // The helper home must be writable by the user spamd switches to.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let _ = Command::new("chmod").arg("0777").arg(&home).status();
    let _ = Command::new("chmod").arg("0755").arg(dir.path()).status();

    let addr = reserved_addr();
    let mut command = Command::new(program);
    command
        .arg(format!("--listen={addr}"))
        .arg("--local")
        .arg("--nouser-config")
        .arg("--max-children=1")
        .arg("--min-children=1")
        .arg(format!("--siteconfigpath={}", site.display()))
        .arg(format!("--helper-home-dir={}", home.display()))
        .arg(format!(
            "--pidfile={}",
            dir.path().join("spamd.pid").display()
        ))
        .arg("--syslog=stderr");
    if bayes {
        command.arg("--allow-tell");
    }
    if is_root() {
        // spamd refuses to run its children as root.
        command.arg("--username=nobody");
    }
    let mut service = Service::start("spamd", command, dir.path().join("spamd.log"));
    service.wait_tcp(addr).await;
    Spamd {
        service,
        addr: addr.to_string(),
        _dir: dir,
    }
}

pub(crate) struct Clamd {
    pub(crate) service: Service,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: PathBuf,
    pub(crate) _dir: TempDir,
}

/// clamd with only the signature database in tests/clamav/ (no freshclam downloads).
pub(crate) async fn start_clamd() -> Clamd {
    let program = require_program("clamd");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    std::fs::create_dir(&db).expect("db dir");
    let ndb = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clamav/teamgate-test.ndb");
    std::fs::copy(&ndb, db.join("teamgate-test.ndb")).expect("copy signatures");
    let addr = reserved_addr();
    let socket = dir.path().join("clamd.sock");
    let conf = dir.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "Foreground yes\nDatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr {ip}\n\
             LocalSocket {socket}\nTemporaryDirectory {tmp}\nLogFile {log}\nLogTime yes\n",
            db = db.display(),
            port = addr.port(),
            ip = addr.ip(),
            socket = socket.display(),
            tmp = dir.path().display(),
            log = dir.path().join("clamd-file.log").display(),
        ),
    )
    .expect("clamd.conf");
    let mut command = Command::new(program);
    command.arg(format!("--config-file={}", conf.display()));
    let mut service = Service::start("clamd", command, dir.path().join("clamd.log"));
    service.wait_tcp(addr).await;
    Clamd {
        service,
        addr,
        socket,
        _dir: dir,
    }
}

pub(crate) fn with_message_id(raw: Vec<u8>, id: &str) -> Vec<u8> {
    String::from_utf8_lossy(&raw)
        .replace("<files@sender.test>", &format!("<{id}>"))
        .into_bytes()
}
