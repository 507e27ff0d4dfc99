//! Configuration: loading (built-in defaults < TOML file < `TEAMGATE_*` environment),
//! validation that reports *every* problem with its key and origin, and the typed
//! [`Config`] the rest of the daemon uses.
//!
//! Owns: the defaults, the typed config and the loading API (here), the raw serde types
//! (`raw`, the reference for `config/teamgate.toml`, SPEC §2), the environment provider
//! (`env`), error reporting (`errors`) and validation (`validate`). Must not: open sockets,
//! touch the data directory, or read anything but the config file, the environment and the
//! TLS/DKIM key files it validates. Password hashing lives in `auth`.

mod env;
mod errors;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};

use env::EnvProvider;
use errors::Sources;
use raw::RawConfig;
use validate::Checker;

pub use env::ENV_PREFIX;
pub use errors::{ConfigError, ConfigErrors, ConfigOrigin};
/// So `auth`'s tests can check that `auth::hash_password` makes hashes config accepts.
#[cfg(test)]
pub(crate) use validate::check_password_hash;

// ---------------------------------------------------------------------------------------
// Defaults (each with its reason). Shared by the raw types and `Config::for_tests`.
// ---------------------------------------------------------------------------------------

/// 25 MiB: what the large free-mail providers accept, so senders rarely get a bounce.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 26_214_400;
/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
pub const DEFAULT_MAX_RECIPIENTS: u64 = 100;
/// Enough for a busy MX, far below the default file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 500;
/// Expunges kept per mailbox for QRESYNC: weeks of a busy shared view; a client further
/// behind gets every vanished UID of its range instead (RFC 7162 §3.2.5.2).
pub const DEFAULT_EXPUNGE_LOG_LEN: u64 = 10_000;
/// RFC 5321 §4.5.3.2.7: the server timeout should be at least 5 minutes.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// RFC 5321 §4.5.3.1.6 asks for 1000 octets; 4096 tolerates sloppy senders.
pub const DEFAULT_MAX_LINE_LENGTH: u64 = 4096;
/// 256 KiB of headers is far beyond any legitimate message (long Received chains included).
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 262_144;
/// RFC 5321 §4.5.3.2.6 suggests 10 minutes for the end of data.
pub const DEFAULT_DATA_TIMEOUT_SECS: u64 = 600;
/// Bad commands tolerated before `421` and close (mox uses a similar small number).
pub const DEFAULT_MAX_ERRORS: u64 = 10;
/// Time given to sessions to finish after SIGTERM; below systemd's TimeoutStopSec=30.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 20;
/// A TLS handshake needs a few round trips; 10 s stops slowloris-style handshakes.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Dovecot's `auth_cache_ttl` is an hour; five minutes covers a client's morning burst of
/// connections and its reconnects while bounding how long a changed password is honoured
/// before a reload.
pub const DEFAULT_AUTH_CACHE_SECS: u64 = 300;
/// Two agents answering the same conversation within 10 minutes get warned.
pub const DEFAULT_COLLISION_WINDOW_SECS: u64 = 600;
/// SpamAssassin's own default threshold.
pub const DEFAULT_SPAM_THRESHOLD: f64 = 5.0;
/// A Prometheus server or two plus an operator's curl; a scrape takes milliseconds.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: u64 = 16;
/// Prometheus' default scrape_timeout is 10 s; a scraper slower than that has given up.
pub const DEFAULT_METRICS_TIMEOUT_SECS: u64 = 10;
/// 64 MiB instead of sled's 1 GiB: sled holds only metadata, the bodies live in segments.
pub const DEFAULT_STORE_CACHE_MB: u64 = 64;
/// tantivy refuses less than 15 MiB per indexing thread, and 4 GiB or more.
pub const MIN_SEARCH_MEMORY_MB: u64 = 15;
pub const MAX_SEARCH_MEMORY_MB: u64 = 4000;
pub const DEFAULT_SEARCH_MEMORY_MB: u64 = 16;
/// A new message waits about a second to be indexed; the scan covers it meanwhile.
pub const DEFAULT_SEARCH_COMMIT_MS: u64 = 1000;
/// On 2 cores, a quarter of one keeps ingest within a few percent of no index at all.
pub const DEFAULT_SEARCH_BUSY_CPU_PERCENT: u64 = 25;
/// 1 min, 5 min, 15 min, 1 h, 4 h: then a bounce to the agent.
pub const DEFAULT_RETRY_SCHEDULE_SECS: [u64; 5] = [60, 300, 900, 3600, 14400];
/// A display name claiming the team without DMARC behind it: near the threshold on its
/// own, so it decides together with spamd's score rather than alone.
pub const DEFAULT_DISPLAY_NAME_SPOOF_SCORE: f64 = 4.0;
/// 1 min, 5 min, 30 min, 2 h, 12 h between attempts to teach spamd; then given up.
pub const DEFAULT_LEARN_RETRY_SECS: [u64; 5] = [60, 300, 1800, 7200, 43200];
/// Executable and script types commonly used to deliver malware.
pub const DEFAULT_BLOCKED_EXTENSIONS: [&str; 13] = [
    "exe", "scr", "js", "vbs", "bat", "cmd", "com", "jar", "msi", "ps1", "hta", "iso", "lnk",
];

// ---------------------------------------------------------------------------------------
// Typed config: what the code uses. Every value here has passed validation.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (`None` for `for_tests` / `load_from_str`); SIGHUP reloads it.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub smtp: SmtpConfig,
    pub submission: SubmissionConfig,
    pub imap: ImapConfig,
    /// `None`: no STARTTLS and no implicit-TLS listener.
    pub tls: Option<TlsFiles>,
    /// `[tls] allow_plaintext_auth`: AUTH/LOGIN accepted without TLS.
    pub allow_plaintext_auth: bool,
    pub inboxes: Vec<InboxConfig>,
    pub agents: Vec<AgentConfig>,
    pub outbound: OutboundConfig,
    pub filter: FilterConfig,
    pub workflow: WorkflowConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub store: StoreConfig,
    pub search: SearchConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
    /// How long a successful login is remembered; zero = not at all.
    pub auth_cache_ttl: Duration,
    /// argon2 threads; 0 = one per core.
    pub auth_workers: usize,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: Vec<SocketAddr>,
    /// Larger → `552 5.3.4`.
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    /// Idle time allowed between commands.
    pub timeout: Duration,
    /// Time allowed for a whole DATA/BDAT transfer.
    pub data_timeout: Duration,
    /// Longer command or body lines → `500 5.5.6`.
    pub max_line_length: usize,
    /// Larger header section → `552 5.3.4`.
    pub max_header_size: usize,
    /// Bad commands before `421` and close.
    pub max_errors: u32,
}

#[derive(Debug, Clone)]
pub struct SubmissionConfig {
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub max_connections: usize,
    pub timeout: Duration,
    pub login_timeout: Duration,
    /// Expunges kept per UID space for QRESYNC (`StoreOptions::expunge_log_len`).
    pub expunge_log_len: usize,
}

/// Checked to be readable and to hold a certificate chain / a private key at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct InboxConfig {
    pub name: String,
    /// Lower-cased.
    pub addresses: Vec<String>,
    /// Agent logins, each an existing agent.
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub login: String,
    pub name: String,
    /// Lower-cased.
    pub email: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// `None`: deliver to the recipients' MX.
    pub relay: Option<(String, u16)>,
    /// `None`: outgoing mail is not signed.
    pub dkim: Option<DkimConfig>,
    /// Never empty; after the last attempt the agent gets a bounce.
    pub retry_schedule: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimConfig {
    pub selector: String,
    /// PEM private key (checked parseable at load time).
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct FilterConfig {
    /// `host:port` of spamd.
    pub spamd: Option<String>,
    pub spam_threshold: f64,
    pub clamd: Option<ClamdAddr>,
    /// Lower-case, without leading dot.
    pub blocked_extensions: Vec<String>,
    /// Quarantine Office documents that carry VBA macros.
    pub block_office_macros: bool,
    pub trust_upstream_spam_headers: bool,
    pub dns: DnsSource,
    /// Added when DMARC does not pass and the From display name claims an agent or an
    /// inbox's domain (rule `DISPLAY_NAME_SPOOF`).
    pub display_name_spoof_score: f64,
    /// `[filter] learn`; unset = on whenever spamd is configured (see [`Self::learns`]).
    pub learn: Option<bool>,
    /// Waits between attempts to teach spamd; after the last one the lesson is dropped.
    pub learn_retry: Vec<Duration>,
}

impl FilterConfig {
    /// Whether agents' Junk gestures are sent to spamd's learner.
    pub fn learns(&self) -> bool {
        self.spamd.is_some() && self.learn.unwrap_or(true)
    }
}

impl Default for FilterConfig {
    /// The documented defaults: no spamd, no clamd, system DNS.
    fn default() -> Self {
        FilterConfig {
            spamd: None,
            spam_threshold: DEFAULT_SPAM_THRESHOLD,
            clamd: None,
            blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            block_office_macros: true,
            trust_upstream_spam_headers: false,
            dns: DnsSource::System,
            display_name_spoof_score: DEFAULT_DISPLAY_NAME_SPOOF_SCORE,
            learn: None,
            learn_retry: DEFAULT_LEARN_RETRY_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
        }
    }
}

/// Where SPF/DKIM/DMARC look things up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsSource {
    System,
    Server(SocketAddr),
    /// Sender authentication off (loopback trials, tests without DNS).
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct WorkflowConfig {
    /// Lower-cased; mail to it is an internal comment.
    pub notes_address: String,
    pub collision_window: Duration,
    pub subject_tag: bool,
    pub snippets_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive (checked); RUST_LOG overrides it.
    pub level: String,
    /// Logins whose IMAP sessions are traced (`"*"`: all); empty: no trace.
    pub protocol_trace: Vec<String>,
    /// Longest literal written into a trace; longer ones are replaced by their size.
    pub protocol_trace_max_literal: usize,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled's page cache.
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Whether SEARCH and `conversations search` use the full-text index (else they scan).
    pub index: bool,
    /// The indexer's buffer before it writes a segment.
    pub memory_bytes: usize,
    /// How long a new message may wait for the index to commit it (the scan covers it
    /// meanwhile).
    pub commit_interval: Duration,
    /// While mail arrives, the share of its time the indexer works (1..=100).
    pub busy_cpu_percent: u32,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `None`: no metrics endpoint (the numbers still show in `teamgate status`).
    pub listen: Option<SocketAddr>,
    /// Scrapes served at once.
    pub max_connections: usize,
    /// For reading a request and writing its answer.
    pub timeout: Duration,
}

/// argon2id PHC hash of "alice-password" (for `Config::for_tests`).
const TEST_ALICE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$1T6klqsV88fAXm3C3QaLhg$hF7WGiA887AGmSWbOch6VlHtIvPIPrARAKydNl9WwyQ";

impl Config {
    /// Inbox whose address matches `rcpt`: case-insensitive, `local+tag@domain` matches
    /// `local@domain`. Returns the inbox and the tag (e.g. "c123") if any.
    pub fn inbox_for_address(&self, rcpt: &str) -> Option<(&InboxConfig, Option<String>)> {
        let rcpt = rcpt
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_lowercase();
        let find = |addr: &str| {
            self.inboxes
                .iter()
                .find(|i| i.addresses.iter().any(|a| a == addr))
        };
        if let Some(inbox) = find(&rcpt) {
            return Some((inbox, None));
        }
        let (local, domain) = rcpt.rsplit_once('@')?;
        let (base, tag) = local.split_once('+')?;
        let inbox = find(&format!("{base}@{domain}"))?;
        Some((inbox, Some(tag.to_owned()).filter(|t| !t.is_empty())))
    }

    pub fn agent(&self, login: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.login == login)
    }

    pub fn inbox(&self, name: &str) -> Option<&InboxConfig> {
        self.inboxes.iter().find(|i| i.name == name)
    }

    /// A config for tests: hostname "mx.example.test", the given data_dir, SMTP,
    /// submission and IMAP on 127.0.0.1:0 (no implicit-TLS listeners), short timeouts, one inbox "Support"
    /// (support@example.test) and one agent "alice" (password "alice-password").
    pub fn for_tests(data_dir: &Path) -> Config {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            source: None,
            server: ServerConfig {
                hostname: "mx.example.test".into(),
                data_dir: data_dir.to_path_buf(),
                shutdown_grace: Duration::from_secs(5),
                tls_handshake_timeout: Duration::from_secs(5),
                auth_cache_ttl: Duration::from_secs(DEFAULT_AUTH_CACHE_SECS),
                auth_workers: 0,
            },
            smtp: SmtpConfig {
                listen: vec![loopback],
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE as usize,
                max_recipients: DEFAULT_MAX_RECIPIENTS as usize,
                max_connections: DEFAULT_MAX_CONNECTIONS as usize,
                timeout: Duration::from_secs(5),
                data_timeout: Duration::from_secs(10),
                max_line_length: DEFAULT_MAX_LINE_LENGTH as usize,
                max_header_size: DEFAULT_MAX_HEADER_SIZE as usize,
                max_errors: DEFAULT_MAX_ERRORS as u32,
            },
            submission: SubmissionConfig {
                listen: vec![loopback],
                listen_tls: Vec::new(),
            },
            imap: ImapConfig {
                listen: vec![loopback],
                listen_tls: Vec::new(),
                max_connections: DEFAULT_MAX_CONNECTIONS as usize,
                timeout: Duration::from_secs(30 * 60),
                login_timeout: Duration::from_secs(10),
                expunge_log_len: DEFAULT_EXPUNGE_LOG_LEN as usize,
            },
            tls: None,
            allow_plaintext_auth: true,
            inboxes: vec![InboxConfig {
                name: "Support".into(),
                addresses: vec!["support@example.test".into()],
                members: vec!["alice".into()],
            }],
            agents: vec![AgentConfig {
                login: "alice".into(),
                name: "Alice Example".into(),
                email: "alice@example.test".into(),
                password_hash: TEST_ALICE_HASH.into(),
                admin: false,
            }],
            outbound: OutboundConfig {
                relay: None,
                dkim: None,
                retry_schedule: DEFAULT_RETRY_SCHEDULE_SECS
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
            },
            filter: FilterConfig {
                // Tests never query real DNS.
                dns: DnsSource::Off,
                ..FilterConfig::default()
            },
            workflow: WorkflowConfig {
                notes_address: "notes@mx.example.test".into(),
                collision_window: Duration::from_secs(DEFAULT_COLLISION_WINDOW_SECS),
                subject_tag: true,
                snippets_dir: data_dir.join("snippets"),
            },
            log: LogConfig {
                format: LogFormat::Text,
                level: "info".into(),
                protocol_trace: Vec::new(),
                protocol_trace_max_literal: 1024,
            },
            metrics: MetricsConfig {
                listen: None,
                max_connections: DEFAULT_METRICS_MAX_CONNECTIONS as usize,
                timeout: Duration::from_secs(DEFAULT_METRICS_TIMEOUT_SECS),
            },
            store: StoreConfig {
                cache_bytes: DEFAULT_STORE_CACHE_MB << 20,
            },
            search: SearchConfig {
                index: true,
                memory_bytes: (DEFAULT_SEARCH_MEMORY_MB << 20) as usize,
                commit_interval: Duration::from_millis(DEFAULT_SEARCH_COMMIT_MS),
                busy_cpu_percent: DEFAULT_SEARCH_BUSY_CPU_PERCENT as u32,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Load and validate `path`, with `TEAMGATE_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_inner(Some(path), None, &EnvProvider::from_process())
}

/// Like [`load`], but the environment is `env` (name, value pairs; only `TEAMGATE_*`
/// names are used) instead of the process environment.
pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    load_inner(Some(path), None, &EnvProvider::new(env))
}

/// Load a config given as TOML text, with environment pairs as in [`load_with_env`].
pub fn load_from_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    load_inner(None, Some(toml), &EnvProvider::new(env.iter().copied()))
}

fn load_inner(
    path: Option<&Path>,
    text: Option<&str>,
    env: &EnvProvider,
) -> Result<Config, ConfigErrors> {
    let default_origin = path.map_or(ConfigOrigin::Inline, |p| {
        ConfigOrigin::File(p.to_path_buf())
    });
    let whole_file = |message: String| {
        ConfigErrors(vec![ConfigError {
            key: String::new(),
            origin: default_origin.clone(),
            message,
        }])
    };
    let mut figment = Figment::new();
    if let Some(path) = path {
        // figment 0.10.19 treats a missing file as empty; say so instead (CRATES §2.10).
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(whole_file("config file is not a regular file".into())),
            Err(e) => return Err(whole_file(format!("cannot read config file: {e}"))),
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(whole_file(format!("cannot read config file: {e}")));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    if let Some(text) = text {
        figment = figment.merge(Toml::string(text));
    }
    let figment = figment.merge(env.clone());
    let sources = Sources {
        figment: &figment,
        env,
        default_origin,
    };
    // Serde stops at the first error, so validation runs only on a complete extraction.
    let raw: RawConfig = figment.extract().map_err(|e| sources.figment_errors(e))?;
    let mut ck = Checker {
        sources: &sources,
        errors: Vec::new(),
    };
    let mut config = raw.validate(&mut ck);
    if ck.errors.is_empty() {
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    } else {
        Err(ConfigErrors(ck.errors))
    }
}
