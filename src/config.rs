//! Configuration: loading (built-in defaults < TOML file < `TEAMGATE_*` environment),
//! validation that reports *every* problem with its key and origin, and the typed
//! [`Config`] the rest of the daemon uses.
//!
//! Owns: the raw serde types (the reference for `config/teamgate.toml`, SPEC §2), the
//! typed config, and (for now) password hashing. Must not: open sockets, touch the
//! data directory, or read anything but the config file, the environment and the
//! TLS/DKIM key files it validates.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use password_hash::{PasswordHash, SaltString, rand_core::OsRng};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "TEAMGATE_";
/// `TEAMGATE_CONFIG` names the config file (clap `env`), it is not a config key.
const ENV_IGNORED: &[&str] = &["config"];
/// Name of our environment provider's metadata; how errors recognise env values.
const ENV_SOURCE_NAME: &str = "`TEAMGATE_` environment variable(s)";

// ---------------------------------------------------------------------------------------
// Defaults (each with its reason). Shared by the raw types and `Config::for_tests`.
// ---------------------------------------------------------------------------------------

/// 25 MiB: what the large free-mail providers accept, so senders rarely get a bounce.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 26_214_400;
/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
pub const DEFAULT_MAX_RECIPIENTS: u64 = 100;
/// Enough for a busy MX, far below the default file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 500;
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
/// Two agents answering the same conversation within 10 minutes get warned.
pub const DEFAULT_COLLISION_WINDOW_SECS: u64 = 600;
/// SpamAssassin's own default threshold.
pub const DEFAULT_SPAM_THRESHOLD: f64 = 5.0;
/// A Prometheus server or two plus an operator's curl; a scrape takes milliseconds.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: u64 = 16;
/// Prometheus' default scrape_timeout is 10 s; a scraper slower than that has given up.
pub const DEFAULT_METRICS_TIMEOUT_SECS: u64 = 10;
/// 1 min, 5 min, 15 min, 1 h, 4 h: then a bounce to the agent.
pub const DEFAULT_RETRY_SCHEDULE_SECS: [u64; 5] = [60, 300, 900, 3600, 14400];
/// Executable and script types commonly used to deliver malware.
pub const DEFAULT_BLOCKED_EXTENSIONS: [&str; 13] = [
    "exe", "scr", "js", "vbs", "bat", "cmd", "com", "jar", "msi", "ps1", "hta", "iso", "lnk",
];
/// Upper bound for every `*_secs` value: one year; more is a typo and could overflow timers.
const MAX_SECS: u64 = 365 * 24 * 3600;

// ---------------------------------------------------------------------------------------
// Raw types: exactly what the TOML says (field docs are the reference for teamgate.toml).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    smtp: RawSmtp,
    submission: RawSubmission,
    imap: RawImap,
    tls: RawTls,
    inbox: Vec<RawInbox>,
    agent: Vec<RawAgent>,
    outbound: RawOutbound,
    filter: RawFilter,
    workflow: RawWorkflow,
    log: RawLog,
    metrics: RawMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    /// Announced in banners, EHLO and Received headers; required (no sensible default).
    #[serde(deserialize_with = "lenient_opt_string")]
    hostname: Option<String>,
    /// sled metadata + message segments.
    #[serde(deserialize_with = "lenient_string")]
    data_dir: String,
    /// Seconds sessions get to finish after SIGTERM before they are cut.
    shutdown_grace_secs: u64,
    /// Seconds allowed for a TLS handshake (implicit TLS and STARTTLS).
    tls_handshake_timeout_secs: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            hostname: None,
            data_dir: "./data".into(),
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            tls_handshake_timeout_secs: DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSmtp {
    #[serde(deserialize_with = "lenient_list")]
    listen: Vec<String>,
    max_message_size: u64,
    max_recipients: u64,
    max_connections: u64,
    timeout_secs: u64,
    max_line_length: u64,
    max_header_size: u64,
    data_timeout_secs: u64,
    max_errors: u64,
}

impl Default for RawSmtp {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:2525".into()],
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            data_timeout_secs: DEFAULT_DATA_TIMEOUT_SECS,
            max_errors: DEFAULT_MAX_ERRORS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSubmission {
    /// STARTTLS listeners (587); AUTH required.
    #[serde(deserialize_with = "lenient_list")]
    listen: Vec<String>,
    /// Implicit-TLS listeners (465); need `[tls]`.
    #[serde(deserialize_with = "lenient_list")]
    listen_tls: Vec<String>,
}

impl Default for RawSubmission {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:2587".into()],
            listen_tls: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawImap {
    /// STARTTLS listeners (143).
    #[serde(deserialize_with = "lenient_list")]
    listen: Vec<String>,
    /// Implicit-TLS listeners (993); need `[tls]`.
    #[serde(deserialize_with = "lenient_list")]
    listen_tls: Vec<String>,
    /// Simultaneous IMAP connections over all IMAP listeners.
    max_connections: u64,
    /// Autologout of an authenticated idle session (RFC 3501 §5.4: at least 30 minutes).
    timeout_secs: u64,
    /// Time a client gets to log in.
    login_timeout_secs: u64,
}

impl Default for RawImap {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:1143".into()],
            listen_tls: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout_secs: 30 * 60,
            login_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    /// PEM certificate chain; with `key`, enables STARTTLS and implicit TLS.
    #[serde(deserialize_with = "lenient_opt_string")]
    cert: Option<String>,
    /// PEM private key.
    #[serde(deserialize_with = "lenient_opt_string")]
    key: Option<String>,
    /// Allow AUTH/LOGIN without TLS: loopback trials and tests only.
    allow_plaintext_auth: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInbox {
    /// IMAP folder `Inboxes/<name>`.
    #[serde(deserialize_with = "lenient_opt_string")]
    name: Option<String>,
    /// RCPT accepted for these (and their `+tag` sub-addresses).
    #[serde(deserialize_with = "lenient_list")]
    addresses: Vec<String>,
    /// Agent logins.
    #[serde(deserialize_with = "lenient_list")]
    members: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAgent {
    #[serde(deserialize_with = "lenient_opt_string")]
    login: Option<String>,
    /// Display name; defaults to the login.
    #[serde(deserialize_with = "lenient_opt_string")]
    name: Option<String>,
    /// The agent's own address (not a team address).
    #[serde(deserialize_with = "lenient_opt_string")]
    email: Option<String>,
    /// argon2 PHC string from `teamgate hash-password`.
    #[serde(deserialize_with = "lenient_opt_string")]
    password_hash: Option<String>,
    /// Admins see every inbox read-only.
    admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutbound {
    /// "" = deliver to the recipients' MX; or "smtp://host:port".
    #[serde(deserialize_with = "lenient_string")]
    relay: String,
    #[serde(deserialize_with = "lenient_string")]
    dkim_selector: String,
    /// Path to a PEM private key; with `dkim_selector`, outgoing mail is signed.
    #[serde(deserialize_with = "lenient_string")]
    dkim_key: String,
    retry_schedule_secs: Vec<u64>,
}

impl Default for RawOutbound {
    fn default() -> Self {
        Self {
            relay: String::new(),
            dkim_selector: String::new(),
            dkim_key: String::new(),
            retry_schedule_secs: DEFAULT_RETRY_SCHEDULE_SECS.to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFilter {
    /// "" = no SpamAssassin; "host:port".
    #[serde(deserialize_with = "lenient_string")]
    spamd: String,
    spam_threshold: f64,
    /// "" = no ClamAV; "host:port" or an absolute unix socket path.
    #[serde(deserialize_with = "lenient_string")]
    clamd: String,
    #[serde(deserialize_with = "lenient_list")]
    blocked_extensions: Vec<String>,
    /// Honour X-Spam-Flag / X-Spam-Status set by a trusted upstream relay.
    trust_upstream_spam_headers: bool,
    /// DNS for SPF/DKIM/DMARC: "" = the system resolver (/etc/resolv.conf), "host:port" =
    /// that name server, "none" = no sender authentication checks.
    #[serde(deserialize_with = "lenient_string")]
    dns_server: String,
}

impl Default for RawFilter {
    fn default() -> Self {
        Self {
            spamd: String::new(),
            spam_threshold: DEFAULT_SPAM_THRESHOLD,
            clamd: String::new(),
            blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            trust_upstream_spam_headers: false,
            dns_server: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWorkflow {
    /// Mail to this address is an internal comment; defaults to `notes@<server.hostname>`.
    #[serde(deserialize_with = "lenient_opt_string")]
    notes_address: Option<String>,
    collision_window_secs: u64,
    /// Add "[#123]" to outgoing subjects.
    subject_tag: bool,
    #[serde(deserialize_with = "lenient_string")]
    snippets_dir: String,
}

impl Default for RawWorkflow {
    fn default() -> Self {
        Self {
            notes_address: None,
            collision_window_secs: DEFAULT_COLLISION_WINDOW_SECS,
            subject_tag: true,
            snippets_dir: "config/snippets".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    /// "text" or "json".
    #[serde(deserialize_with = "lenient_string")]
    format: String,
    /// A tracing filter directive; RUST_LOG overrides it.
    #[serde(deserialize_with = "lenient_string")]
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    /// "" = off; "127.0.0.1:9464" = Prometheus text format at /metrics.
    #[serde(deserialize_with = "lenient_string")]
    listen: String,
    /// Scrapes served at once; more are answered `503` and closed.
    max_connections: u64,
    /// Seconds a scraper gets to send its request and read the answer.
    timeout_secs: u64,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: String::new(),
            max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            timeout_secs: DEFAULT_METRICS_TIMEOUT_SECS,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lenient string fields: figment types environment values as TOML, so
// `TEAMGATE_OUTBOUND__DKIM_SELECTOR=2024` arrives as an integer (CRATES §2.10 pitfall 1).
// String fields therefore also accept numbers and booleans (leading zeros are lost by then:
// quote such values, `TEAMGATE_X='"007"'`). Lists also accept a single string.
// ---------------------------------------------------------------------------------------

struct Lenient(String);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Lenient, E> {
                Ok(Lenient(v))
            }
            fn visit_char<E: de::Error>(self, v: char) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Lenient::deserialize(d).map(|l| l.0)
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Lenient::deserialize(d).map(|l| Some(l.0))
}

fn lenient_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Lenient(s)) = seq.next_element()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

// ---------------------------------------------------------------------------------------
// Environment provider: the same rules as `figment::providers::Env::prefixed(..).split("__")`,
// but fed from any list of pairs, so tests never touch the process environment.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct EnvVar {
    /// The variable's name as given (`TEAMGATE_SMTP__MAX_MESSAGE_SIZE`).
    name: String,
    /// Lower-cased key path (`["smtp", "max_message_size"]`).
    key: Vec<String>,
    value: String,
}

#[derive(Debug, Clone, Default)]
struct EnvProvider {
    vars: Vec<EnvVar>,
}

impl EnvProvider {
    fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut vars: Vec<EnvVar> = pairs
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.as_ref().trim();
                let prefix = name.get(..ENV_PREFIX.len())?;
                if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
                    return None;
                }
                let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
                if ENV_IGNORED.contains(&rest.as_str()) {
                    return None;
                }
                let key: Vec<String> = rest.split("__").map(str::to_owned).collect();
                if key.iter().any(String::is_empty) {
                    return None;
                }
                Some(EnvVar {
                    name: name.to_owned(),
                    key,
                    value: v.as_ref().to_owned(),
                })
            })
            .collect();
        // The process environment has no order; make merging deterministic.
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        Self { vars }
    }

    fn from_process() -> Self {
        Self::new(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// The variable that supplied `path` (or a parent or child of it).
    fn var_for(&self, path: &[String]) -> String {
        let is_prefix = |a: &[String], b: &[String]| {
            a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
        };
        self.vars
            .iter()
            .filter(|v| is_prefix(&v.key, path))
            .max_by_key(|v| v.key.len())
            .or_else(|| self.vars.iter().find(|v| is_prefix(path, &v.key)))
            .map_or_else(|| format!("{ENV_PREFIX}*"), |v| v.name.clone())
    }
}

fn insert_nested(dict: &mut Dict, key: &[String], value: Value) {
    match key {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for var in &self.vars {
            // Typed like TOML, exactly as figment's `Env` does.
            let Ok(value) = var.value.parse::<Value>();
            insert_nested(&mut root, &var.key, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The config file (also used for values missing from it, and built-in defaults).
    File(PathBuf),
    /// An environment variable, by name (`TEAMGATE_SMTP__MAX_MESSAGE_SIZE`).
    Env(String),
    /// A config given as a string (`load_from_str`).
    Inline,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Inline => f.write_str("<inline config>"),
        }
    }
}

/// One problem: the key (`inbox[1].addresses[0]`), where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path with `[n]` indices; empty for whole-file problems (syntax, missing).
    pub key: String,
    pub origin: ConfigOrigin,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first problem reported for `key`, if any.
    pub fn find(&self, key: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `["inbox", "1", "name"]` → `inbox[1].name`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// `inbox[1].name` → `["inbox", "1", "name"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(name.to_owned());
        }
        out.extend(pieces.map(|p| p.trim_end_matches(']').to_owned()));
    }
    out
}

/// Knows where each value came from, to name the file or the variable in an error.
struct Sources<'a> {
    figment: &'a Figment,
    env: &'a EnvProvider,
    default_origin: ConfigOrigin,
}

impl Sources<'_> {
    fn is_env(metadata: Option<&Metadata>) -> bool {
        metadata.is_some_and(|m| m.name == ENV_SOURCE_NAME)
    }

    fn origin_of(&self, key: &str) -> ConfigOrigin {
        let path = split_key(key);
        let figment = self.figment;
        let Some((first, rest)) = path.split_first() else {
            return self.default_origin.clone();
        };
        let Ok(root) = figment.find_value(first) else {
            return self.default_origin.clone();
        };
        let mut cur = &root;
        for seg in rest {
            let next = match cur {
                Value::Dict(_, d) => d.get(seg),
                Value::Array(_, a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => break,
            }
        }
        if Self::is_env(figment.get_metadata(cur.tag())) {
            ConfigOrigin::Env(self.env.var_for(&path))
        } else {
            self.default_origin.clone()
        }
    }

    fn figment_errors(&self, err: figment::Error) -> ConfigErrors {
        let mut out = Vec::new();
        for e in err {
            let mut path = e.path.clone();
            if let figment::error::Kind::MissingField(field) = &e.kind
                && path.last().map(String::as_str) != Some(field.as_ref())
            {
                path.push(field.to_string());
            }
            let origin = if Self::is_env(e.metadata.as_ref()) {
                ConfigOrigin::Env(self.env.var_for(&path))
            } else {
                self.default_origin.clone()
            };
            out.push(ConfigError {
                key: display_path(&path),
                origin,
                message: e.kind.to_string(),
            });
        }
        ConfigErrors(out)
    }
}

/// Collects every validation problem.
struct Checker<'a> {
    sources: &'a Sources<'a>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let origin = self.sources.origin_of(&key);
        self.errors.push(ConfigError {
            key,
            origin,
            message: message.into(),
        });
    }

    /// A count or size limit: must be > 0.
    fn limit(&mut self, key: &str, v: u64) -> usize {
        if v == 0 {
            self.push(key, "must be greater than 0");
        }
        usize::try_from(v).unwrap_or(usize::MAX)
    }

    /// A number of seconds: 1 ..= one year.
    fn secs(&mut self, key: &str, v: u64) -> Duration {
        if v == 0 {
            self.push(key, "must be greater than 0");
        } else if v > MAX_SECS {
            self.push(
                key,
                format!("{v} s is more than a year; must be at most {MAX_SECS}"),
            );
        }
        Duration::from_secs(v.min(MAX_SECS))
    }

    fn socket_addrs(&mut self, key: &str, list: &[String]) -> Vec<SocketAddr> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| self.socket_addr(&format!("{key}[{i}]"), s))
            .collect()
    }

    fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(
                    key,
                    format!("{s:?} is not a socket address (IP:port, e.g. \"127.0.0.1:2525\" or \"[::1]:2525\")"),
                );
                None
            }
        }
    }
}

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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
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
    pub trust_upstream_spam_headers: bool,
    pub dns: DnsSource,
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
                spamd: None,
                spam_threshold: DEFAULT_SPAM_THRESHOLD,
                clamd: None,
                blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                trust_upstream_spam_headers: false,
                // Tests never query real DNS.
                dns: DnsSource::Off,
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
            },
            metrics: MetricsConfig {
                listen: None,
                max_connections: DEFAULT_METRICS_MAX_CONNECTIONS as usize,
                timeout: Duration::from_secs(DEFAULT_METRICS_TIMEOUT_SECS),
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

// ---------------------------------------------------------------------------------------
// Validation: always builds a `Config` (bad parts left out or defaulted) and records every
// problem in the checker; the caller returns the errors if there are any.
// ---------------------------------------------------------------------------------------

impl RawConfig {
    fn validate(self, ck: &mut Checker<'_>) -> Config {
        let server = self.server.validate(ck);
        let smtp = self.smtp.validate(ck);
        let allow_plaintext_auth = self.tls.allow_plaintext_auth;
        let (tls, submission, imap) =
            validate_tls_and_listeners(ck, self.tls, self.submission, self.imap);
        let agents = validate_agents(ck, &self.agent);
        let inboxes = validate_inboxes(ck, &self.inbox, &agents);
        let inbox_addresses: HashMap<&str, &str> = inboxes
            .iter()
            .flat_map(|i| {
                i.addresses
                    .iter()
                    .map(move |a| (a.as_str(), i.name.as_str()))
            })
            .collect();
        for (i, agent) in agents.iter().enumerate() {
            if let Some(inbox) = inbox_addresses.get(agent.email.as_str()) {
                ck.push(
                    format!("agent[{i}].email"),
                    format!("{} is an address of inbox {inbox:?}; an agent needs an address of their own", agent.email),
                );
            }
        }
        let outbound = self.outbound.validate(ck);
        let filter = self.filter.validate(ck);
        let workflow = self
            .workflow
            .validate(ck, &server.hostname, &inbox_addresses);
        let log = self.log.validate(ck);
        let metrics = MetricsConfig {
            listen: match self.metrics.listen.trim() {
                "" => None,
                s => ck.socket_addr("metrics.listen", s),
            },
            max_connections: ck.limit("metrics.max_connections", self.metrics.max_connections),
            timeout: ck.secs("metrics.timeout_secs", self.metrics.timeout_secs),
        };
        if self.inbox.is_empty() {
            ck.push(
                "inbox",
                "no [[inbox]] configured: the gateway would refuse all mail",
            );
        }
        // Two listeners on one address: the second bind would fail at startup.
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        let listeners = [
            ("smtp.listen", &smtp.listen),
            ("submission.listen", &submission.listen),
            ("submission.listen_tls", &submission.listen_tls),
            ("imap.listen", &imap.listen),
            ("imap.listen_tls", &imap.listen_tls),
        ];
        let metrics_list: Vec<SocketAddr> = metrics.listen.into_iter().collect();
        for (key, list) in listeners
            .into_iter()
            .chain([("metrics.listen", &metrics_list)])
        {
            for (i, addr) in list.iter().enumerate() {
                let this = if key == "metrics.listen" {
                    key.to_owned()
                } else {
                    format!("{key}[{i}]")
                };
                if addr.port() == 0 {
                    continue;
                }
                if let Some(other) = seen.get(addr) {
                    ck.push(this, format!("{addr} is already used by {other}"));
                } else {
                    seen.insert(*addr, this);
                }
            }
        }
        Config {
            source: None,
            server,
            smtp,
            submission,
            imap,
            tls,
            allow_plaintext_auth,
            inboxes,
            agents,
            outbound,
            filter,
            workflow,
            log,
            metrics,
        }
    }
}

impl RawServer {
    fn validate(self, ck: &mut Checker<'_>) -> ServerConfig {
        let hostname = match self.hostname.as_deref().map(str::trim) {
            None => {
                ck.push(
                    "server.hostname",
                    "missing: the name announced in banners and EHLO is required",
                );
                String::new()
            }
            Some("") => {
                ck.push("server.hostname", "must not be empty");
                String::new()
            }
            Some(h) => {
                if !plausible_domain(h, false)
                    || (!h.contains('.') && !h.eq_ignore_ascii_case("localhost"))
                {
                    ck.push(
                        "server.hostname",
                        format!(
                            "{h:?} is not a fully qualified domain name (e.g. \"mx.example.com\")"
                        ),
                    );
                }
                h.to_owned()
            }
        };
        if self.data_dir.trim().is_empty() {
            ck.push("server.data_dir", "must not be empty");
        }
        ServerConfig {
            hostname,
            data_dir: PathBuf::from(self.data_dir),
            shutdown_grace: ck.secs("server.shutdown_grace_secs", self.shutdown_grace_secs),
            tls_handshake_timeout: ck.secs(
                "server.tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
        }
    }
}

impl RawSmtp {
    fn validate(self, ck: &mut Checker<'_>) -> SmtpConfig {
        let max_line_length = ck.limit("smtp.max_line_length", self.max_line_length);
        // RFC 5321 §4.5.3.1.6: text lines of 1000 octets (CRLF included) must be accepted.
        if (1..1000).contains(&self.max_line_length) {
            ck.push(
                "smtp.max_line_length",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)",
            );
        }
        let max_errors = if self.max_errors == 0 {
            ck.push("smtp.max_errors", "must be greater than 0");
            0
        } else {
            u32::try_from(self.max_errors).unwrap_or(u32::MAX)
        };
        SmtpConfig {
            listen: ck.socket_addrs("smtp.listen", &self.listen),
            max_message_size: ck.limit("smtp.max_message_size", self.max_message_size),
            max_recipients: ck.limit("smtp.max_recipients", self.max_recipients),
            max_connections: ck.limit("smtp.max_connections", self.max_connections),
            timeout: ck.secs("smtp.timeout_secs", self.timeout_secs),
            data_timeout: ck.secs("smtp.data_timeout_secs", self.data_timeout_secs),
            max_line_length,
            max_header_size: ck.limit("smtp.max_header_size", self.max_header_size),
            max_errors,
        }
    }
}

fn validate_tls_and_listeners(
    ck: &mut Checker<'_>,
    tls: RawTls,
    submission: RawSubmission,
    imap: RawImap,
) -> (Option<TlsFiles>, SubmissionConfig, ImapConfig) {
    let cert = tls.cert.filter(|s| !s.trim().is_empty());
    let key = tls.key.filter(|s| !s.trim().is_empty());
    let tls_files = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            ck.push(
                "tls.key",
                "missing: tls.cert is set, and cert and key go together (both or neither)",
            );
            None
        }
        (None, Some(_)) => {
            ck.push(
                "tls.cert",
                "missing: tls.key is set, and cert and key go together (both or neither)",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            };
            if let Err(e) = check_cert_file(&files.cert) {
                ck.push("tls.cert", e);
            }
            if let Err(e) = check_key_file(&files.key) {
                ck.push("tls.key", e);
            }
            Some(files)
        }
    };
    let submission = SubmissionConfig {
        listen: ck.socket_addrs("submission.listen", &submission.listen),
        listen_tls: ck.socket_addrs("submission.listen_tls", &submission.listen_tls),
    };
    let imap = ImapConfig {
        listen: ck.socket_addrs("imap.listen", &imap.listen),
        listen_tls: ck.socket_addrs("imap.listen_tls", &imap.listen_tls),
        max_connections: ck.limit("imap.max_connections", imap.max_connections),
        timeout: ck.secs("imap.timeout_secs", imap.timeout_secs),
        login_timeout: ck.secs("imap.login_timeout_secs", imap.login_timeout_secs),
    };
    if tls_files.is_none() {
        for (key, list) in [
            ("submission.listen_tls", &submission.listen_tls),
            ("imap.listen_tls", &imap.listen_tls),
        ] {
            if !list.is_empty() {
                ck.push(key, "implicit-TLS listeners need [tls] cert and key");
            }
        }
        if !tls.allow_plaintext_auth {
            for (key, list) in [
                ("submission.listen", &submission.listen),
                ("imap.listen", &imap.listen),
            ] {
                if !list.is_empty() {
                    ck.push(
                        key,
                        "agents could never log in here: no [tls] cert/key and tls.allow_plaintext_auth = false \
                         (configure TLS, or allow plaintext AUTH on loopback trials only)",
                    );
                }
            }
        }
    }
    (tls_files, submission, imap)
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// At least one CERTIFICATE PEM block, and no malformed PEM.
fn check_cert_file(path: &Path) -> Result<(), String> {
    let bytes = read_pem_file(path)?;
    let mut count = 0;
    for item in CertificateDer::pem_slice_iter(&bytes) {
        item.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{}: no CERTIFICATE PEM block found",
            path.display()
        ));
    }
    Ok(())
}

/// A private key PEM block (PKCS#8, PKCS#1 or SEC1).
fn check_key_file(path: &Path) -> Result<(), String> {
    let bytes = read_pem_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(_) => Ok(()),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "{}: no private key PEM block found (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        )),
        Err(e) => Err(format!("{}: invalid PEM: {e}", path.display())),
    }
}

/// Logins name IMAP folders (`Assigned/<login>`) and are typed into mail clients.
fn login_problem(login: &str) -> Option<&'static str> {
    if login.is_empty() {
        Some("must not be empty")
    } else if login.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else if login.contains(['/', '%', '*', '"', '\\']) {
        Some("must not contain / % * \" or \\ (it names the IMAP folder Assigned/<login>)")
    } else {
        None
    }
}

fn validate_agents(ck: &mut Checker<'_>, raw: &[RawAgent]) -> Vec<AgentConfig> {
    let mut agents = Vec::new();
    let mut logins: HashMap<String, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    for (i, a) in raw.iter().enumerate() {
        let login = match a.login.as_deref().map(str::trim) {
            None => {
                ck.push(format!("agent[{i}].login"), "missing (required)");
                String::new()
            }
            Some(l) => {
                if let Some(p) = login_problem(l) {
                    ck.push(format!("agent[{i}].login"), p);
                } else if let Some(j) = logins.get(&l.to_lowercase()) {
                    ck.push(
                        format!("agent[{i}].login"),
                        format!("duplicate login {l:?} (also agent[{j}])"),
                    );
                } else {
                    logins.insert(l.to_lowercase(), i);
                }
                l.to_owned()
            }
        };
        let email = match a.email.as_deref() {
            None => {
                ck.push(
                    format!("agent[{i}].email"),
                    "missing (required): the agent's own address",
                );
                String::new()
            }
            Some(e) => match check_mailbox(e) {
                Ok(e) => {
                    if let Some(j) = emails.get(&e) {
                        ck.push(
                            format!("agent[{i}].email"),
                            format!("{e} is already the address of agent[{j}]"),
                        );
                    } else {
                        emails.insert(e.clone(), i);
                    }
                    e
                }
                Err(why) => {
                    ck.push(format!("agent[{i}].email"), why);
                    String::new()
                }
            },
        };
        let password_hash = match a.password_hash.as_deref().map(str::trim) {
            None => {
                ck.push(
                    format!("agent[{i}].password_hash"),
                    "missing (required): make one with `teamgate hash-password`",
                );
                String::new()
            }
            Some(h) => {
                if let Err(why) = check_password_hash(h) {
                    ck.push(format!("agent[{i}].password_hash"), why);
                }
                h.to_owned()
            }
        };
        let name = a
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(&login)
            .to_owned();
        agents.push(AgentConfig {
            login,
            name,
            email,
            password_hash,
            admin: a.admin,
        });
    }
    agents
}

fn check_password_hash(h: &str) -> Result<(), String> {
    const HINT: &str = "make one with `teamgate hash-password`";
    let parsed = PasswordHash::new(h)
        .map_err(|e| format!("not a PHC password hash string ({e}); {HINT}"))?;
    let alg = parsed.algorithm.as_str();
    if !matches!(alg, "argon2id" | "argon2i" | "argon2d") {
        return Err(format!("algorithm {alg:?} is not argon2; {HINT}"));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(format!("the hash has no salt or no hash value; {HINT}"));
    }
    argon2::Params::try_from(&parsed)
        .map_err(|e| format!("invalid argon2 parameters ({e}); {HINT}"))?;
    Ok(())
}

/// IMAP folder `Inboxes/<name>`: no hierarchy separator, no LIST wildcards, no controls.
fn inbox_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.trim() != name {
        Some("must not start or end with spaces")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if name.contains(['/', '%', '*', '"', '\\']) {
        Some("must not contain / % * \" or \\ (it names the IMAP folder Inboxes/<name>)")
    } else {
        None
    }
}

fn validate_inboxes(
    ck: &mut Checker<'_>,
    raw: &[RawInbox],
    agents: &[AgentConfig],
) -> Vec<InboxConfig> {
    let logins: HashSet<&str> = agents.iter().map(|a| a.login.as_str()).collect();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addresses_seen: HashMap<String, String> = HashMap::new();
    let mut inboxes = Vec::new();
    for (i, raw_inbox) in raw.iter().enumerate() {
        let name = match raw_inbox.name.as_deref() {
            None => {
                ck.push(
                    format!("inbox[{i}].name"),
                    "missing (required): it names the IMAP folder Inboxes/<name>",
                );
                String::new()
            }
            Some(n) => {
                if let Some(p) = inbox_name_problem(n) {
                    ck.push(format!("inbox[{i}].name"), p);
                } else if let Some(j) = names.get(&n.to_lowercase()) {
                    ck.push(
                        format!("inbox[{i}].name"),
                        format!("duplicate inbox name {n:?} (also inbox[{j}])"),
                    );
                } else {
                    names.insert(n.to_lowercase(), i);
                }
                n.to_owned()
            }
        };
        if raw_inbox.addresses.is_empty() {
            ck.push(
                format!("inbox[{i}].addresses"),
                "at least one address is required",
            );
        }
        let mut addresses = Vec::new();
        for (j, a) in raw_inbox.addresses.iter().enumerate() {
            let key = format!("inbox[{i}].addresses[{j}]");
            match check_mailbox(a) {
                Ok(addr) => {
                    if let Some(first) = addresses_seen.get(&addr) {
                        ck.push(key, format!("duplicate address {addr} (also {first})"));
                    } else {
                        addresses_seen.insert(addr.clone(), key);
                        addresses.push(addr);
                    }
                }
                Err(why) => ck.push(key, why),
            }
        }
        let mut members: Vec<String> = Vec::new();
        for (j, m) in raw_inbox.members.iter().enumerate() {
            let key = format!("inbox[{i}].members[{j}]");
            let m = m.trim();
            if !logins.contains(m) {
                ck.push(key, format!("{m:?} is not the login of any [[agent]]"));
            } else if members.iter().any(|x| x == m) {
                ck.push(key, format!("{m:?} is listed twice"));
            } else {
                members.push(m.to_owned());
            }
        }
        inboxes.push(InboxConfig {
            name,
            addresses,
            members,
        });
    }
    inboxes
}

impl RawOutbound {
    fn validate(self, ck: &mut Checker<'_>) -> OutboundConfig {
        let relay = match self.relay.trim() {
            "" => None,
            r => match parse_relay(r) {
                Ok(hp) => Some(hp),
                Err(why) => {
                    ck.push("outbound.relay", why);
                    None
                }
            },
        };
        let selector = self.dkim_selector.trim();
        let key = self.dkim_key.trim();
        let dkim = match (selector.is_empty(), key.is_empty()) {
            (true, true) => None,
            (false, true) => {
                ck.push(
                    "outbound.dkim_key",
                    "missing: dkim_selector is set (selector and key go together)",
                );
                None
            }
            (true, false) => {
                ck.push(
                    "outbound.dkim_selector",
                    "missing: dkim_key is set (selector and key go together)",
                );
                None
            }
            (false, false) => {
                if !selector.split('.').all(dns_label_ok) {
                    ck.push(
                        "outbound.dkim_selector",
                        format!("{selector:?} is not a valid DNS label"),
                    );
                }
                if let Err(e) = check_key_file(Path::new(key)) {
                    ck.push("outbound.dkim_key", e);
                }
                Some(DkimConfig {
                    selector: selector.to_owned(),
                    key: PathBuf::from(key),
                })
            }
        };
        if self.retry_schedule_secs.is_empty() {
            ck.push(
                "outbound.retry_schedule_secs",
                "must list at least one delay",
            );
        }
        let retry_schedule = self
            .retry_schedule_secs
            .iter()
            .enumerate()
            .map(|(i, s)| ck.secs(&format!("outbound.retry_schedule_secs[{i}]"), *s))
            .collect();
        OutboundConfig {
            relay,
            dkim,
            retry_schedule,
        }
    }
}

impl RawFilter {
    fn validate(self, ck: &mut Checker<'_>) -> FilterConfig {
        let spamd = match self.spamd.trim() {
            "" => None,
            s => match parse_host_port(s) {
                Ok(_) => Some(s.to_owned()),
                Err(why) => {
                    ck.push(
                        "filter.spamd",
                        format!("{why} (expected \"\" or host:port, e.g. \"127.0.0.1:783\")"),
                    );
                    None
                }
            },
        };
        let clamd = match self.clamd.trim() {
            "" => None,
            s if s.starts_with('/') => Some(ClamdAddr::Unix(PathBuf::from(s))),
            s => match parse_host_port(s) {
                Ok(_) => Some(ClamdAddr::Tcp(s.to_owned())),
                Err(why) => {
                    ck.push(
                        "filter.clamd",
                        format!("{why} (expected \"\", host:port or an absolute unix socket path)"),
                    );
                    None
                }
            },
        };
        if !(self.spam_threshold.is_finite() && self.spam_threshold > 0.0) {
            ck.push("filter.spam_threshold", "must be a number greater than 0");
        }
        let mut blocked_extensions = Vec::new();
        for (i, ext) in self.blocked_extensions.iter().enumerate() {
            let e = ext.trim().trim_start_matches('.').to_lowercase();
            if e.is_empty() || e.contains(['/', '\\']) || e.chars().any(char::is_whitespace) {
                ck.push(
                    format!("filter.blocked_extensions[{i}]"),
                    format!("{ext:?} is not a file extension"),
                );
            } else if !blocked_extensions.contains(&e) {
                blocked_extensions.push(e);
            }
        }
        let dns = match self.dns_server.trim() {
            "" => DnsSource::System,
            "none" => DnsSource::Off,
            s => match s.parse::<SocketAddr>() {
                Ok(a) => DnsSource::Server(a),
                Err(_) => {
                    ck.push(
                        "filter.dns_server",
                        format!("{s:?}: expected \"\", \"none\" or ip:port"),
                    );
                    DnsSource::Off
                }
            },
        };
        FilterConfig {
            spamd,
            spam_threshold: self.spam_threshold,
            clamd,
            blocked_extensions,
            trust_upstream_spam_headers: self.trust_upstream_spam_headers,
            dns,
        }
    }
}

impl RawWorkflow {
    fn validate(
        self,
        ck: &mut Checker<'_>,
        hostname: &str,
        inbox_addresses: &HashMap<&str, &str>,
    ) -> WorkflowConfig {
        let raw_notes = match self.notes_address {
            Some(n) => Some(n),
            // Derived only from a valid hostname, so a bad one is reported once.
            None if plausible_domain(hostname, true) => Some(format!("notes@{hostname}")),
            None => None,
        };
        let notes_address = match raw_notes.as_deref().map(check_mailbox) {
            None => String::new(),
            Some(Ok(n)) => {
                if let Some(inbox) = inbox_addresses.get(n.as_str()) {
                    ck.push(
                        "workflow.notes_address",
                        format!("{n} is also an address of inbox {inbox:?}; mail to it would be a comment"),
                    );
                }
                n
            }
            Some(Err(why)) => {
                ck.push("workflow.notes_address", why);
                String::new()
            }
        };
        if self.snippets_dir.trim().is_empty() {
            ck.push("workflow.snippets_dir", "must not be empty");
        }
        WorkflowConfig {
            notes_address,
            collision_window: ck.secs("workflow.collision_window_secs", self.collision_window_secs),
            subject_tag: self.subject_tag,
            snippets_dir: PathBuf::from(self.snippets_dir),
        }
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl RawLog {
    fn validate(self, ck: &mut Checker<'_>) -> LogConfig {
        let format = match self.format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                ck.push(
                    "log.format",
                    format!("{other:?} is neither \"text\" nor \"json\""),
                );
                LogFormat::Text
            }
        };
        let level = self.level.trim().to_owned();
        if let Err(why) = check_log_level(&level) {
            ck.push("log.level", why);
        }
        LogConfig { format, level }
    }
}

/// A level name, or a comma-separated list of `level` / `target=level` directives.
fn check_log_level(level: &str) -> Result<(), String> {
    const HINT: &str =
        "expected a level (trace, debug, info, warn, error, off) or target=level, comma-separated";
    if level.is_empty() {
        return Err(format!("must not be empty; {HINT}"));
    }
    for directive in level.split(',').map(str::trim) {
        let lvl = match directive.rsplit_once('=') {
            Some((target, lvl)) if !target.trim().is_empty() => lvl,
            Some(_) => return Err(format!("{directive:?} has no target before '='; {HINT}")),
            None => directive,
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl.trim())) {
            return Err(format!("{directive:?} does not end in a level; {HINT}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("{e}; {HINT}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Small syntax checks
// ---------------------------------------------------------------------------------------

fn dns_label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// Letters/digits/hyphens labels (Unicode letters allowed: IDNs), total ≤ 253.
fn plausible_domain(s: &str, require_dot: bool) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && (!require_dot || s.contains('.'))
        && s.split('.').all(dns_label_ok)
        && s.parse::<IpAddr>().is_err()
        // An all-numeric top-level label is an IP address typo, not a domain.
        && !s.rsplit('.').next().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
}

/// A simple RFC 5321 mailbox check: `local@domain`, no spaces/brackets/quotes, the domain
/// with a dot or an address literal. Returns the lower-cased address.
fn check_mailbox(raw: &str) -> Result<String, String> {
    let addr = raw.trim();
    let bad = || Err(format!("{raw:?} is not an email address (local@domain)"));
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return bad();
    };
    // RFC 5321 §4.5.3.1.1: local part at most 64 octets.
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"()<>[]\\,;:@\"".contains(c));
    let domain_ok = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        // RFC 5321 §4.1.3 address literals.
        Some(lit) => match lit.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => lit.parse::<std::net::Ipv4Addr>().is_ok(),
        },
        None => plausible_domain(domain, true),
    };
    if local_ok && domain_ok {
        Ok(addr.to_lowercase())
    } else {
        bad()
    }
}

/// `host:port` with a domain, IPv4 or `[IPv6]` host and a non-zero port.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        (v6, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no :port"))?;
        if host.parse::<std::net::Ipv4Addr>().is_err() && !plausible_domain(host, false) {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("{port:?} is not a port number (1-65535)")),
    }
}

/// `smtp://host:port`; the port defaults to 25.
fn parse_relay(s: &str) -> Result<(String, u16), String> {
    let hint = "expected \"\" or \"smtp://host:port\"";
    let Some(rest) = s.strip_prefix("smtp://") else {
        return Err(format!("{s:?}: unsupported scheme; {hint}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let has_port = if rest.starts_with('[') {
        rest.contains("]:")
    } else {
        rest.contains(':')
    };
    let with_port = if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:25")
    };
    parse_host_port(&with_port).map_err(|why| format!("{why}; {hint}"))
}

// ---------------------------------------------------------------------------------------
// Passwords (will move to an auth module)
// ---------------------------------------------------------------------------------------

/// argon2id (default parameters) PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `password` matches the PHC `hash`; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_HASH: &str = TEST_ALICE_HASH;

    fn good_toml() -> String {
        format!(
            r#"
[server]
hostname = "mx.example.test"

[tls]
allow_plaintext_auth = true

[[inbox]]
name = "Support"
addresses = ["Support@Example.test", "help@example.test"]
members = ["alice"]

[[agent]]
login = "alice"
email = "alice@example.test"
password_hash = "{ALICE_HASH}"
"#
        )
    }

    struct Fixture {
        /// Keeps the directory alive as long as the fixture.
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn write(toml: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("teamgate.toml");
        std::fs::write(&path, toml).expect("write config");
        Fixture { _dir: dir, path }
    }

    fn load_ok(toml: &str, env: &[(&str, &str)]) -> Config {
        let f = write(toml);
        match load_with_env(&f.path, env.iter().copied()) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn load_err(toml: &str, env: &[(&str, &str)]) -> (ConfigErrors, Fixture) {
        let f = write(toml);
        match load_with_env(&f.path, env.iter().copied()) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => (e, f),
        }
    }

    /// The error for `key` exists, names the file, and its message contains `needle`.
    #[track_caller]
    fn assert_file_err(errs: &ConfigErrors, f: &Fixture, key: &str, needle: &str) {
        let Some(e) = errs.find(key) else {
            panic!("no error for {key:?} in:\n{errs}")
        };
        assert_eq!(e.origin, ConfigOrigin::File(f.path.clone()), "{e}");
        assert!(
            e.message.contains(needle),
            "{key}: {:?} does not contain {needle:?}",
            e.message
        );
        let line = e.to_string();
        assert!(
            line.starts_with(&format!("{}: {key}: ", f.path.display())),
            "{line}"
        );
    }

    /// `good_toml()` with `old` replaced by `new` (which must occur).
    fn edit(old: &str, new: &str) -> String {
        let t = good_toml();
        assert!(t.contains(old), "{old:?} not in the good config");
        t.replacen(old, new, 1)
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = load_ok(&good_toml(), &[]);
        assert_eq!(c.server.hostname, "mx.example.test");
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.server.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            c.smtp.listen,
            vec!["127.0.0.1:2525".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(c.smtp.max_message_size, 26_214_400);
        assert_eq!(c.smtp.max_recipients, 100);
        assert_eq!(c.smtp.max_connections, 500);
        assert_eq!(c.smtp.timeout, Duration::from_secs(300));
        assert_eq!(c.smtp.data_timeout, Duration::from_secs(600));
        assert_eq!(c.smtp.max_line_length, 4096);
        assert_eq!(c.smtp.max_header_size, 262_144);
        assert_eq!(c.smtp.max_errors, 10);
        assert_eq!(
            c.submission.listen,
            vec!["127.0.0.1:2587".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            c.imap.listen,
            vec!["127.0.0.1:1143".parse::<SocketAddr>().expect("addr")]
        );
        assert!(c.submission.listen_tls.is_empty() && c.imap.listen_tls.is_empty());
        assert_eq!(c.tls, None);
        assert!(c.allow_plaintext_auth);
        assert_eq!(
            c.inboxes[0].addresses,
            vec!["support@example.test", "help@example.test"]
        );
        assert_eq!(c.agents[0].name, "alice", "name defaults to the login");
        assert!(!c.agents[0].admin);
        assert_eq!(c.outbound.relay, None);
        assert_eq!(c.outbound.dkim, None);
        assert_eq!(c.outbound.retry_schedule.len(), 5);
        assert_eq!(c.outbound.retry_schedule[4], Duration::from_secs(14400));
        assert_eq!(c.filter.spam_threshold, 5.0);
        assert_eq!(c.filter.blocked_extensions.len(), 13);
        assert!(c.workflow.subject_tag);
        assert_eq!(
            c.workflow.notes_address, "notes@mx.example.test",
            "defaults from the hostname"
        );
        assert_eq!(c.workflow.collision_window, Duration::from_secs(600));
        assert_eq!(c.workflow.snippets_dir, PathBuf::from("config/snippets"));
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.metrics.listen, None);
        assert!(c.source.is_some());
    }

    #[test]
    fn example_config_file_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/teamgate.toml"));
        let c = match load_with_env(path, std::iter::empty::<(&str, &str)>()) {
            Ok(c) => c,
            Err(e) => panic!("config/teamgate.toml:\n{e}"),
        };
        assert_eq!(c.source.as_deref(), Some(path));
        assert_eq!(c.server.hostname, "mx.example.test");
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert_eq!(
            c.smtp.listen,
            vec!["127.0.0.1:2525".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            c.submission.listen,
            vec!["127.0.0.1:2587".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            c.imap.listen,
            vec!["127.0.0.1:1143".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(c.tls, None);
        assert!(c.allow_plaintext_auth);
        assert_eq!(c.inboxes.len(), 1);
        assert_eq!(c.inboxes[0].name, "Support");
        assert_eq!(c.inboxes[0].members, vec!["demo"]);
        let (inbox, _) = c
            .inbox_for_address("support@example.test")
            .expect("support inbox");
        assert_eq!(inbox.name, "Support");
        let demo = c.agent("demo").expect("demo agent");
        assert!(
            verify_password(&demo.password_hash, "demo-password"),
            "the password in the comment"
        );
        assert_eq!(c.workflow.notes_address, "notes@mx.example.test");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.metrics.listen, None);
        // Every key of the example is spelled out (SPEC §2 plus the additions).
        let text = std::fs::read_to_string(path).expect("read example");
        for key in [
            "shutdown_grace_secs",
            "tls_handshake_timeout_secs",
            "max_line_length",
            "max_header_size",
            "data_timeout_secs",
            "max_errors",
            "listen_tls",
            "allow_plaintext_auth",
            "dkim_selector",
            "retry_schedule_secs",
            "trust_upstream_spam_headers",
            "collision_window_secs",
            "snippets_dir",
        ] {
            assert!(
                text.contains(key),
                "{key} missing from config/teamgate.toml"
            );
        }
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.toml");
        let errs =
            load_with_env(&path, std::iter::empty::<(&str, &str)>()).expect_err("missing file");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs.0[0].origin, ConfigOrigin::File(path.clone()));
        let text = errs.to_string();
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn toml_syntax_error_names_file() {
        let (errs, f) = load_err("[server\nhostname = 1", &[]);
        assert_eq!(errs.0[0].origin, ConfigOrigin::File(f.path.clone()));
        assert!(errs.to_string().contains("TOML parse error"), "{errs}");
    }

    #[test]
    fn missing_hostname_is_named() {
        let (errs, f) = load_err(&edit("hostname = \"mx.example.test\"", ""), &[]);
        assert_file_err(&errs, &f, "server.hostname", "missing");
    }

    #[test]
    fn implausible_hostname_is_named() {
        for bad in [
            "mx example.test",
            "-mx.example.test",
            "mx..example.test",
            "192.168.1.1",
            "mx",
        ] {
            let (errs, f) = load_err(&edit("\"mx.example.test\"", &format!("{bad:?}")), &[]);
            assert_file_err(
                &errs,
                &f,
                "server.hostname",
                "not a fully qualified domain name",
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let (errs, f) = load_err(
            &format!("{}\n[smtp]\nmax_mesage_size = 5\n", good_toml()),
            &[],
        );
        assert_file_err(&errs, &f, "smtp.max_mesage_size", "unknown field");
        let (errs, f) = load_err(&format!("{}\n[smpt]\nlisten = []\n", good_toml()), &[]);
        assert_file_err(&errs, &f, "smpt", "unknown field");
        let (errs, f) = load_err(
            &edit(
                "login = \"alice\"",
                "login = \"alice\"\npasword_hash = \"x\"",
            ),
            &[],
        );
        assert_file_err(&errs, &f, "agent[0].pasword_hash", "unknown field");
    }

    #[test]
    fn wrong_type_is_named() {
        let (errs, f) = load_err(
            &format!("{}\n[smtp]\nmax_recipients = \"many\"\n", good_toml()),
            &[],
        );
        assert_file_err(&errs, &f, "smtp.max_recipients", "invalid type");
        let (errs, f) = load_err(
            &format!("{}\n[smtp]\nmax_recipients = -1\n", good_toml()),
            &[],
        );
        assert_file_err(&errs, &f, "smtp.max_recipients", "");
    }

    #[test]
    fn bad_listen_addresses_are_named() {
        let t = format!(
            "{}\n[smtp]\nlisten = [\"127.0.0.1:2525\", \"localhost:25\"]\n[metrics]\nlisten = \"9464\"\n",
            good_toml()
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "smtp.listen[1]", "not a socket address");
        assert_file_err(&errs, &f, "metrics.listen", "not a socket address");
        assert!(errs.find("smtp.listen[0]").is_none());
    }

    #[test]
    fn duplicate_listeners_are_named() {
        let t = format!("{}\n[imap]\nlisten = [\"127.0.0.1:2525\"]\n", good_toml());
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(
            &errs,
            &f,
            "imap.listen[0]",
            "already used by smtp.listen[0]",
        );
    }

    #[test]
    fn zero_limits_are_named() {
        let t = edit(
            "hostname = \"mx.example.test\"",
            "hostname = \"mx.example.test\"\nshutdown_grace_secs = 0\ntls_handshake_timeout_secs = 0",
        ) + "\n[smtp]\nmax_message_size = 0\nmax_recipients = 0\nmax_connections = 0\ntimeout_secs = 0\n\
             max_line_length = 0\nmax_header_size = 0\ndata_timeout_secs = 0\nmax_errors = 0\n\
             [workflow]\ncollision_window_secs = 0\n[metrics]\nmax_connections = 0\ntimeout_secs = 0\n";
        let (errs, f) = load_err(&t, &[]);
        for key in [
            "metrics.max_connections",
            "metrics.timeout_secs",
            "smtp.max_message_size",
            "smtp.max_recipients",
            "smtp.max_connections",
            "smtp.timeout_secs",
            "smtp.max_line_length",
            "smtp.max_header_size",
            "smtp.data_timeout_secs",
            "smtp.max_errors",
            "server.shutdown_grace_secs",
            "server.tls_handshake_timeout_secs",
            "workflow.collision_window_secs",
        ] {
            assert_file_err(&errs, &f, key, "greater than 0");
        }
        let (errs, f) = load_err(
            &format!("{}\n[smtp]\nmax_line_length = 512\n", good_toml()),
            &[],
        );
        assert_file_err(&errs, &f, "smtp.max_line_length", "at least 1000");
        let (errs, f) = load_err(
            &format!("{}\n[smtp]\ntimeout_secs = 99999999999\n", good_toml()),
            &[],
        );
        assert_file_err(&errs, &f, "smtp.timeout_secs", "at most");
    }

    #[test]
    fn bad_email_addresses_are_named() {
        let t = edit("\"help@example.test\"", "\"help desk@example.test\"")
            .replacen("alice@example.test", "alice@localhost", 1)
            .replacen(
                "[tls]",
                "[workflow]\nnotes_address = \"<notes>@example.test\"\n[tls]",
                1,
            );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "inbox[0].addresses[1]", "not an email address");
        assert_file_err(&errs, &f, "agent[0].email", "not an email address");
        assert_file_err(&errs, &f, "workflow.notes_address", "not an email address");
        assert!(errs.find("inbox[0].addresses[0]").is_none(), "{errs}");
        for bad in [
            "plain",
            "@example.test",
            "a@b",
            "a..b@example.test",
            "a@[1.2.3]",
            "a@exa mple.test",
        ] {
            assert!(check_mailbox(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "a.b+c@example.test",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
            "Ünï@bücher.example",
        ] {
            assert!(check_mailbox(good).is_ok(), "{good} rejected");
        }
    }

    #[test]
    fn duplicate_inbox_addresses_and_names_are_named() {
        let t = format!(
            "{}\n[[inbox]]\nname = \"support\"\naddresses = [\"sales@example.test\", \"SUPPORT@example.test\", \"Sales@Example.Test\"]\n",
            good_toml()
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "inbox[1].name", "duplicate inbox name");
        assert_file_err(
            &errs,
            &f,
            "inbox[1].addresses[1]",
            "also inbox[0].addresses[0]",
        );
        assert_file_err(
            &errs,
            &f,
            "inbox[1].addresses[2]",
            "also inbox[1].addresses[0]",
        );
        assert!(errs.find("inbox[1].addresses[0]").is_none(), "{errs}");
    }

    #[test]
    fn invalid_inbox_names_are_named() {
        for bad in ["", "Sales/EU", "Tab\there", " Padded", "All*"] {
            let (errs, f) = load_err(&edit("name = \"Support\"", &format!("name = {bad:?}")), &[]);
            assert_file_err(&errs, &f, "inbox[0].name", "must not");
        }
        let (errs, f) = load_err(
            &edit(
                "addresses = [\"Support@Example.test\", \"help@example.test\"]",
                "",
            ),
            &[],
        );
        assert_file_err(&errs, &f, "inbox[0].addresses", "at least one");
    }

    #[test]
    fn agents_are_checked() {
        let t = format!(
            "{}\n[[agent]]\nlogin = \"alice\"\nemail = \"support@example.test\"\npassword_hash = \"{ALICE_HASH}\"\n\
             [[agent]]\nlogin = \"bob\"\nemail = \"bob@example.test\"\npassword_hash = \"hunter2\"\n\
             [[agent]]\nlogin = \"carol\"\nemail = \"carol@example.test\"\n\
             password_hash = \"$pbkdf2-sha256$i=600000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n\
             [[agent]]\nlogin = \"dave/x\"\nemail = \"dave@example.test\"\n",
            edit(
                "members = [\"alice\"]",
                "members = [\"alice\", \"zoe\", \"alice\"]"
            )
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(
            &errs,
            &f,
            "inbox[0].members[1]",
            "not the login of any [[agent]]",
        );
        assert_file_err(&errs, &f, "inbox[0].members[2]", "listed twice");
        assert_file_err(&errs, &f, "agent[1].login", "duplicate login");
        assert_file_err(
            &errs,
            &f,
            "agent[1].email",
            "is an address of inbox \"Support\"",
        );
        assert_file_err(
            &errs,
            &f,
            "agent[2].password_hash",
            "not a PHC password hash",
        );
        assert_file_err(&errs, &f, "agent[3].password_hash", "not argon2");
        assert_file_err(&errs, &f, "agent[4].login", "must not contain");
        assert_file_err(&errs, &f, "agent[4].password_hash", "missing");
        assert!(errs.find("agent[0].password_hash").is_none(), "{errs}");
    }

    #[test]
    fn no_inbox_is_an_error() {
        let t = good_toml();
        let start = t.find("[[inbox]]").expect("inbox");
        let end = t.find("[[agent]]").expect("agent");
        let t = format!("{}{}", &t[..start], &t[end..]);
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "inbox", "refuse all mail");
    }

    fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
        let ck =
            rcgen::generate_simple_self_signed(vec!["mx.example.test".to_owned()]).expect("rcgen");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    fn with_tls(cert: &Path, key: &Path, extra: &str) -> String {
        edit(
            "[tls]\nallow_plaintext_auth = true",
            &format!(
                "[tls]\ncert = {:?}\nkey = {:?}\n{extra}",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
    }

    #[test]
    fn tls_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = tls_files(dir.path());
        let c = load_ok(
            &format!(
                "{}\n[imap]\nlisten_tls = [\"127.0.0.1:1993\"]\n",
                with_tls(&cert, &key, "")
            ),
            &[],
        );
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone()
            })
        );
        assert!(!c.allow_plaintext_auth);
        assert_eq!(c.imap.listen_tls.len(), 1);

        // Swapped: the cert file holds no CERTIFICATE, the key file no private key.
        let (errs, f) = load_err(&with_tls(&key, &cert, ""), &[]);
        assert_file_err(&errs, &f, "tls.cert", "no CERTIFICATE PEM block");
        assert_file_err(&errs, &f, "tls.key", "no private key PEM block");

        // Unreadable: missing file, and a directory.
        let (errs, f) = load_err(&with_tls(&dir.path().join("gone.pem"), dir.path(), ""), &[]);
        assert_file_err(&errs, &f, "tls.cert", "No such file or directory");
        assert_file_err(&errs, &f, "tls.key", "cannot read");
        assert!(
            errs.find("tls.key")
                .is_some_and(|e| e.message.contains("os error")),
            "{errs}"
        );
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = tls_files(dir.path());
        let t = edit(
            "[tls]\n",
            &format!("[tls]\ncert = {:?}\n", cert.display().to_string()),
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "tls.key", "both or neither");
        // Empty strings mean "no TLS", and then implicit-TLS listeners are an error.
        let t = edit("[tls]\n", "[tls]\ncert = \"\"\nkey = \"\"\n");
        let t = format!("{t}\n[submission]\nlisten_tls = [\"127.0.0.1:2465\"]\n");
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "submission.listen_tls", "need [tls]");
        assert!(
            errs.find("tls.cert").is_none() && errs.find("tls.key").is_none(),
            "{errs}"
        );
    }

    #[test]
    fn plaintext_auth_without_tls_is_an_error() {
        let (errs, f) = load_err(
            &edit(
                "allow_plaintext_auth = true",
                "allow_plaintext_auth = false",
            ),
            &[],
        );
        assert_file_err(&errs, &f, "submission.listen", "never log in");
        assert_file_err(&errs, &f, "imap.listen", "never log in");
        let t = edit("allow_plaintext_auth = true", "")
            + "\n[submission]\nlisten = []\n[imap]\nlisten = []\n";
        load_ok(&t, &[]);
    }

    #[test]
    fn outbound_filter_log_values_are_checked() {
        let t = format!(
            "{}\n[outbound]\nrelay = \"mail.example.test:25\"\nretry_schedule_secs = []\ndkim_selector = \"s1\"\n\
             [filter]\nspamd = \"localhost\"\nclamd = \"clamd.sock\"\nspam_threshold = 0\nblocked_extensions = [\"\"]\n\
             [log]\nformat = \"xml\"\nlevel = \"verbose\"\n",
            good_toml()
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "outbound.relay", "smtp://host:port");
        assert_file_err(&errs, &f, "outbound.retry_schedule_secs", "at least one");
        assert_file_err(&errs, &f, "outbound.dkim_key", "go together");
        assert_file_err(&errs, &f, "filter.spamd", "host:port");
        assert_file_err(&errs, &f, "filter.clamd", "unix socket path");
        assert_file_err(&errs, &f, "filter.spam_threshold", "greater than 0");
        assert_file_err(
            &errs,
            &f,
            "filter.blocked_extensions[0]",
            "not a file extension",
        );
        assert_file_err(&errs, &f, "log.format", "neither");
        assert_file_err(&errs, &f, "log.level", "level");

        let t = format!(
            "{}\n[outbound]\nrelay = \"smtp://[::1]:2526\"\n[filter]\nspamd = \"127.0.0.1:783\"\n\
             clamd = \"/run/clamav/clamd.ctl\"\nblocked_extensions = [\".EXE\"]\n\
             [log]\nformat = \"json\"\nlevel = \"warn,teamgate::smtp=debug\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
            good_toml()
        );
        let c = load_ok(&t, &[]);
        assert_eq!(c.outbound.relay, Some(("::1".to_owned(), 2526)));
        assert_eq!(c.filter.spamd.as_deref(), Some("127.0.0.1:783"));
        assert_eq!(
            c.filter.clamd,
            Some(ClamdAddr::Unix(PathBuf::from("/run/clamav/clamd.ctl")))
        );
        assert_eq!(c.filter.blocked_extensions, vec!["exe"]);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.metrics.listen,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        assert_eq!(
            parse_relay("smtp://relay.example.test"),
            Ok(("relay.example.test".to_owned(), 25))
        );
        assert!(parse_relay("smtp://relay.example.test:0").is_err());
    }

    #[test]
    fn dkim_key_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = tls_files(dir.path());
        let t = format!(
            "{}\n[outbound]\ndkim_selector = \"2024\"\ndkim_key = {:?}\n",
            good_toml(),
            key.display().to_string()
        );
        let c = load_ok(&t, &[]);
        assert_eq!(
            c.outbound.dkim,
            Some(DkimConfig {
                selector: "2024".into(),
                key
            })
        );
        let t = format!(
            "{}\n[outbound]\ndkim_selector = \"s 1\"\ndkim_key = {:?}\n",
            good_toml(),
            cert.display().to_string()
        );
        let (errs, f) = load_err(&t, &[]);
        assert_file_err(&errs, &f, "outbound.dkim_key", "no private key");
        assert_file_err(&errs, &f, "outbound.dkim_selector", "DNS label");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let t = edit("hostname = \"mx.example.test\"", "hostname = \"\"")
            .replacen("\"help@example.test\"", "\"nope\"", 1)
            .replacen("members = [\"alice\"]", "members = [\"nobody\"]", 1)
            + "\n[smtp]\nmax_message_size = 0\nlisten = [\"x\"]\n[log]\nformat = \"yaml\"\n";
        let (errs, f) = load_err(&t, &[]);
        for key in [
            "server.hostname",
            "inbox[0].addresses[1]",
            "inbox[0].members[0]",
            "smtp.max_message_size",
            "smtp.listen[0]",
            "log.format",
        ] {
            assert_file_err(&errs, &f, key, "");
        }
        assert_eq!(errs.len(), 6, "{errs}");
        let text = errs.to_string();
        assert_eq!(text.lines().count(), 6, "one problem per line:\n{text}");
        assert!(
            text.lines()
                .all(|l| l.starts_with(&f.path.display().to_string())),
            "{text}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let c = load_ok(
            &format!("{}\n[smtp]\nmax_message_size = 5000\n", good_toml()),
            &[
                ("TEAMGATE_SMTP__MAX_MESSAGE_SIZE", "1048576"),
                ("teamgate_filter__spam_threshold", "7.5"),
                ("TEAMGATE_SMTP__LISTEN", "127.0.0.1:2626"),
                (
                    "TEAMGATE_IMAP__LISTEN",
                    "[\"127.0.0.1:2143\", \"[::1]:2143\"]",
                ),
                ("TEAMGATE_CONFIG", "/etc/teamgate/other.toml"),
                ("OTHER_SMTP__MAX_RECIPIENTS", "1"),
            ],
        );
        assert_eq!(c.smtp.max_message_size, 1_048_576);
        assert_eq!(c.filter.spam_threshold, 7.5);
        assert_eq!(
            c.smtp.listen,
            vec!["127.0.0.1:2626".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(c.imap.listen.len(), 2);
        assert_eq!(c.smtp.max_recipients, 100);
    }

    #[test]
    fn env_numeric_string_for_string_field() {
        let c = load_ok(
            &good_toml(),
            &[
                ("TEAMGATE_SERVER__DATA_DIR", "12345"),
                ("TEAMGATE_WORKFLOW__SNIPPETS_DIR", "true"),
            ],
        );
        assert_eq!(c.server.data_dir, PathBuf::from("12345"));
        assert_eq!(c.workflow.snippets_dir, PathBuf::from("true"));
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let (errs, _f) = load_err(&good_toml(), &[("TEAMGATE_SMTP__MAX_MESSAGE_SIZE", "soon")]);
        let e = errs
            .find("smtp.max_message_size")
            .expect("error for the key");
        assert_eq!(
            e.origin,
            ConfigOrigin::Env("TEAMGATE_SMTP__MAX_MESSAGE_SIZE".into())
        );
        assert!(e.to_string().starts_with(
            "environment variable TEAMGATE_SMTP__MAX_MESSAGE_SIZE: smtp.max_message_size: "
        ));

        // Validation errors name the variable too, down to array elements.
        let (errs, _) = load_err(
            &good_toml(),
            &[
                ("TEAMGATE_SMTP__MAX_RECIPIENTS", "0"),
                (
                    "TEAMGATE_INBOX",
                    "[{name = \"Sales\", addresses = [\"bad\"], members = [\"alice\"]}]",
                ),
            ],
        );
        let e = errs.find("smtp.max_recipients").expect("max_recipients");
        assert_eq!(
            e.origin,
            ConfigOrigin::Env("TEAMGATE_SMTP__MAX_RECIPIENTS".into())
        );
        let e = errs.find("inbox[0].addresses[0]").expect("inbox address");
        assert_eq!(e.origin, ConfigOrigin::Env("TEAMGATE_INBOX".into()));
        // Values from the file still name the file.
        let (errs, _) = load_err(
            &format!("{}\n[log]\nformat = \"xml\"\n", good_toml()),
            &[("TEAMGATE_SMTP__MAX_RECIPIENTS", "0")],
        );
        assert!(
            matches!(
                errs.find("log.format").map(|e| &e.origin),
                Some(ConfigOrigin::File(_))
            ),
            "{errs}"
        );
        assert!(errs.find("smtp.max_recipients").is_some(), "{errs}");
        // An unknown key from the environment names the variable.
        let (errs, _) = load_err(&good_toml(), &[("TEAMGATE_SMTP__MAX_MESAGE_SIZE", "1")]);
        let e = errs.find("smtp.max_mesage_size").expect("typo from env");
        assert_eq!(
            e.origin,
            ConfigOrigin::Env("TEAMGATE_SMTP__MAX_MESAGE_SIZE".into())
        );
    }

    #[test]
    fn load_from_str_works_without_files() {
        let c = load_from_str(&good_toml(), &[("TEAMGATE_SMTP__MAX_ERRORS", "3")]).expect("valid");
        assert_eq!(c.smtp.max_errors, 3);
        assert_eq!(c.source, None);
        let errs = load_from_str("[log]\nformat = 1\n", &[]).expect_err("invalid");
        assert_eq!(errs.0[0].origin, ConfigOrigin::Inline);
    }

    #[test]
    fn inbox_for_address_folds_case_and_tags() {
        let c = load_ok(&good_toml(), &[]);
        let name = |r: &str| c.inbox_for_address(r).map(|(i, t)| (i.name.clone(), t));
        assert_eq!(name("support@example.test"), Some(("Support".into(), None)));
        assert_eq!(name("SUPPORT@EXAMPLE.TEST"), Some(("Support".into(), None)));
        assert_eq!(name("<Help@example.test>"), Some(("Support".into(), None)));
        assert_eq!(
            name("support+c123@example.test"),
            Some(("Support".into(), Some("c123".into())))
        );
        assert_eq!(
            name("Support+C123@Example.Test"),
            Some(("Support".into(), Some("c123".into())))
        );
        assert_eq!(
            name("support+@example.test"),
            Some(("Support".into(), None))
        );
        assert_eq!(name("sales@example.test"), None);
        assert_eq!(name("support@other.test"), None);
        assert_eq!(name("support"), None);
        assert_eq!(
            c.agent("alice").map(|a| a.email.as_str()),
            Some("alice@example.test")
        );
        assert!(c.agent("Alice").is_none());
        assert!(c.inbox("Support").is_some());
    }

    #[test]
    fn for_tests_config_is_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config::for_tests(dir.path());
        assert_eq!(c.server.data_dir, dir.path());
        assert_eq!(c.smtp.listen, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
        assert_eq!(c.smtp.timeout, Duration::from_secs(5));
        assert!(c.allow_plaintext_auth);
        assert!(c.inbox_for_address("support+c7@example.test").is_some());
        let alice = c.agent("alice").expect("alice");
        assert!(check_password_hash(&alice.password_hash).is_ok());
        assert!(verify_password(&alice.password_hash, "alice-password"));
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(check_password_hash(&hash).is_ok());
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse!"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(
            hash,
            hash_password("correct horse").expect("hash"),
            "salts are random"
        );
    }

    #[test]
    fn log_level_directives() {
        for good in [
            "info",
            "WARN",
            "off",
            "teamgate=debug",
            "info,teamgate::smtp=trace,sled=warn",
        ] {
            assert!(check_log_level(good).is_ok(), "{good}");
        }
        for bad in ["", "verbose", "=info", "teamgate=loud", "info,"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_paths_round_trip() {
        let path = split_key("inbox[1].addresses[0]");
        assert_eq!(path, vec!["inbox", "1", "addresses", "0"]);
        assert_eq!(display_path(&path), "inbox[1].addresses[0]");
    }
}
