//! The raw serde types: exactly what the TOML (and the `TEAMGATE_*` environment) says,
//! with the built-in defaults as their `Default` impls. The field docs are the reference
//! for `config/teamgate.toml` (SPEC §2). Nothing here is checked: see `validate`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{
    DEFAULT_AUTH_CACHE_SECS, DEFAULT_BLOCKED_EXTENSIONS, DEFAULT_COLLISION_WINDOW_SECS,
    DEFAULT_DATA_TIMEOUT_SECS, DEFAULT_DISPLAY_NAME_SPOOF_SCORE, DEFAULT_EXPUNGE_LOG_LEN,
    DEFAULT_LEARN_RETRY_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ERRORS, DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RECIPIENTS,
    DEFAULT_METRICS_MAX_CONNECTIONS, DEFAULT_METRICS_TIMEOUT_SECS, DEFAULT_RETRY_SCHEDULE_SECS,
    DEFAULT_SEARCH_BUSY_CPU_PERCENT, DEFAULT_SEARCH_COMMIT_MS, DEFAULT_SEARCH_MEMORY_MB,
    DEFAULT_SHUTDOWN_GRACE_SECS, DEFAULT_SPAM_THRESHOLD, DEFAULT_STORE_CACHE_MB,
    DEFAULT_TIMEOUT_SECS, DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) smtp: RawSmtp,
    pub(super) submission: RawSubmission,
    pub(super) imap: RawImap,
    pub(super) tls: RawTls,
    pub(super) inbox: Vec<RawInbox>,
    pub(super) agent: Vec<RawAgent>,
    pub(super) outbound: RawOutbound,
    pub(super) filter: RawFilter,
    pub(super) workflow: RawWorkflow,
    pub(super) log: RawLog,
    pub(super) metrics: RawMetrics,
    pub(super) store: RawStore,
    pub(super) search: RawSearch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    /// Announced in banners, EHLO and Received headers; required (no sensible default).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) hostname: Option<String>,
    /// sled metadata + message segments.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) data_dir: String,
    /// Seconds sessions get to finish after SIGTERM before they are cut.
    pub(super) shutdown_grace_secs: u64,
    /// Seconds allowed for a TLS handshake (implicit TLS and STARTTLS).
    pub(super) tls_handshake_timeout_secs: u64,
    /// Seconds a successful login is remembered (0 = every login checks the hash).
    pub(super) auth_cache_secs: u64,
    /// Threads checking passwords (0 = one per core).
    pub(super) auth_workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            hostname: None,
            data_dir: "./data".into(),
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            tls_handshake_timeout_secs: DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
            auth_cache_secs: DEFAULT_AUTH_CACHE_SECS,
            auth_workers: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSmtp {
    #[serde(deserialize_with = "lenient_list")]
    pub(super) listen: Vec<String>,
    pub(super) max_message_size: u64,
    pub(super) max_recipients: u64,
    pub(super) max_connections: u64,
    pub(super) timeout_secs: u64,
    pub(super) max_line_length: u64,
    pub(super) max_header_size: u64,
    pub(super) data_timeout_secs: u64,
    pub(super) max_errors: u64,
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
pub(super) struct RawSubmission {
    /// STARTTLS listeners (587); AUTH required.
    #[serde(deserialize_with = "lenient_list")]
    pub(super) listen: Vec<String>,
    /// Implicit-TLS listeners (465); need `[tls]`.
    #[serde(deserialize_with = "lenient_list")]
    pub(super) listen_tls: Vec<String>,
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
pub(super) struct RawImap {
    /// STARTTLS listeners (143).
    #[serde(deserialize_with = "lenient_list")]
    pub(super) listen: Vec<String>,
    /// Implicit-TLS listeners (993); need `[tls]`.
    #[serde(deserialize_with = "lenient_list")]
    pub(super) listen_tls: Vec<String>,
    /// Simultaneous IMAP connections over all IMAP listeners.
    pub(super) max_connections: u64,
    /// Autologout of an authenticated idle session (RFC 3501 §5.4: at least 30 minutes).
    pub(super) timeout_secs: u64,
    /// Time a client gets to log in.
    pub(super) login_timeout_secs: u64,
    /// Expunges remembered per mailbox for QRESYNC's VANISHED (read at start).
    pub(super) expunge_log_len: u64,
}

impl Default for RawImap {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:1143".into()],
            listen_tls: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout_secs: 30 * 60,
            login_timeout_secs: 60,
            expunge_log_len: DEFAULT_EXPUNGE_LOG_LEN,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    /// PEM certificate chain; with `key`, enables STARTTLS and implicit TLS.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) cert: Option<String>,
    /// PEM private key.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) key: Option<String>,
    /// Allow AUTH/LOGIN without TLS: loopback trials and tests only.
    pub(super) allow_plaintext_auth: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawInbox {
    /// IMAP folder `Inboxes/<name>`.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) name: Option<String>,
    /// RCPT accepted for these (and their `+tag` sub-addresses).
    #[serde(deserialize_with = "lenient_list")]
    pub(super) addresses: Vec<String>,
    /// Agent logins.
    #[serde(deserialize_with = "lenient_list")]
    pub(super) members: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAgent {
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) login: Option<String>,
    /// Display name; defaults to the login.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) name: Option<String>,
    /// The agent's own address (not a team address).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) email: Option<String>,
    /// argon2 PHC string from `teamgate hash-password`.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) password_hash: Option<String>,
    /// Admins see every inbox read-only.
    pub(super) admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutbound {
    /// "" = deliver to the recipients' MX; or "smtp://host:port".
    #[serde(deserialize_with = "lenient_string")]
    pub(super) relay: String,
    #[serde(deserialize_with = "lenient_string")]
    pub(super) dkim_selector: String,
    /// Path to a PEM private key; with `dkim_selector`, outgoing mail is signed.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) dkim_key: String,
    pub(super) retry_schedule_secs: Vec<u64>,
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
pub(super) struct RawFilter {
    /// "" = no SpamAssassin; "host:port".
    #[serde(deserialize_with = "lenient_string")]
    pub(super) spamd: String,
    pub(super) spam_threshold: f64,
    /// "" = no ClamAV; "host:port" or an absolute unix socket path.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) clamd: String,
    #[serde(deserialize_with = "lenient_list")]
    pub(super) blocked_extensions: Vec<String>,
    /// Quarantine Office documents with VBA macros.
    pub(super) block_office_macros: bool,
    /// Honour X-Spam-Flag / X-Spam-Status set by a trusted upstream relay.
    pub(super) trust_upstream_spam_headers: bool,
    /// DNS for SPF/DKIM/DMARC: "" = the system resolver (/etc/resolv.conf), "host:port" =
    /// that name server, "none" = no sender authentication checks.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) dns_server: String,
    pub(super) display_name_spoof_score: f64,
    /// Teach spamd from agents' Junk gestures; unset = whenever spamd is configured.
    pub(super) learn: Option<bool>,
    pub(super) learn_retry_secs: Vec<u64>,
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
            block_office_macros: true,
            trust_upstream_spam_headers: false,
            dns_server: String::new(),
            display_name_spoof_score: DEFAULT_DISPLAY_NAME_SPOOF_SCORE,
            learn: None,
            learn_retry_secs: DEFAULT_LEARN_RETRY_SECS.to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWorkflow {
    /// Mail to this address is an internal comment; defaults to `notes@<server.hostname>`.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub(super) notes_address: Option<String>,
    pub(super) collision_window_secs: u64,
    /// Add "[#123]" to outgoing subjects.
    pub(super) subject_tag: bool,
    #[serde(deserialize_with = "lenient_string")]
    pub(super) snippets_dir: String,
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
pub(super) struct RawLog {
    /// "text" or "json".
    #[serde(deserialize_with = "lenient_string")]
    pub(super) format: String,
    /// A tracing filter directive; RUST_LOG overrides it.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) level: String,
    /// Logins whose IMAP sessions are traced to `<data_dir>/trace/`; `"*"` = everyone.
    #[serde(deserialize_with = "lenient_list")]
    pub(super) protocol_trace: Vec<String>,
    /// Literals longer than this are left out of a trace (their size is written).
    pub(super) protocol_trace_max_literal: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
            protocol_trace: Vec::new(),
            protocol_trace_max_literal: 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    /// "" = off; "127.0.0.1:9464" = Prometheus text format at /metrics.
    #[serde(deserialize_with = "lenient_string")]
    pub(super) listen: String,
    /// Scrapes served at once; more are answered `503` and closed.
    pub(super) max_connections: u64,
    /// Seconds a scraper gets to send its request and read the answer.
    pub(super) timeout_secs: u64,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    /// MiB of sled page cache: the ceiling of the metadata's memory.
    pub(super) cache_mb: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            cache_mb: DEFAULT_STORE_CACHE_MB,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSearch {
    /// The full-text index under `<data_dir>/search` (rebuilt from the store when lost).
    pub(super) index: bool,
    /// MiB the indexer buffers before it writes a segment (tantivy's floor is 15).
    pub(super) index_memory_mb: u64,
    /// Milliseconds between index commits while mail arrives.
    pub(super) commit_interval_ms: u64,
    /// While mail arrives, the percentage of its time the indexer may work.
    pub(super) busy_cpu_percent: u64,
}

impl Default for RawSearch {
    fn default() -> Self {
        Self {
            index: true,
            index_memory_mb: DEFAULT_SEARCH_MEMORY_MB,
            commit_interval_ms: DEFAULT_SEARCH_COMMIT_MS,
            busy_cpu_percent: DEFAULT_SEARCH_BUSY_CPU_PERCENT,
        }
    }
}
