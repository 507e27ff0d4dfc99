//! Validation: turns the raw types into the typed [`Config`], checking every value and
//! recording every problem (with its key) in a `Checker`; bad parts are left out or
//! defaulted, so one run reports them all. Also the small syntax checks (mailboxes, domains,
//! `host:port`, relays, log levels, PHC hashes) and the TLS/DKIM key file checks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use password_hash::PasswordHash;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::errors::{ConfigError, Sources};
use super::raw::{
    RawAgent, RawConfig, RawFilter, RawImap, RawInbox, RawLog, RawOutbound, RawServer, RawSmtp,
    RawSubmission, RawTls, RawWorkflow,
};
use super::{
    AgentConfig, ClamdAddr, Config, DkimConfig, DnsSource, FilterConfig, ImapConfig, InboxConfig,
    LogConfig, LogFormat, MAX_SEARCH_MEMORY_MB, MIN_SEARCH_MEMORY_MB, MetricsConfig,
    OutboundConfig, SearchConfig, ServerConfig, SmtpConfig, StoreConfig, SubmissionConfig,
    TlsFiles, WorkflowConfig,
};

/// Upper bound for every `*_secs` value: one year; more is a typo and could overflow timers.
const MAX_SECS: u64 = 365 * 24 * 3600;

/// Collects every validation problem.
pub(super) struct Checker<'a> {
    pub(super) sources: &'a Sources<'a>,
    pub(super) errors: Vec<ConfigError>,
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

    /// A size in MiB within `min ..= max`; answered in bytes.
    fn mebibytes(&mut self, key: &str, v: u64, min: u64, max: u64) -> u64 {
        if v < min {
            self.push(key, format!("must be at least {min} (MiB)"));
        } else if v > max {
            self.push(key, format!("must be at most {max} (MiB)"));
        }
        v.clamp(min, max) << 20
    }

    /// A percentage: 1 ..= 100.
    fn percent(&mut self, key: &str, v: u64) -> u32 {
        if !(1..=100).contains(&v) {
            self.push(key, format!("{v} is not a percentage from 1 to 100"));
        }
        u32::try_from(v.clamp(1, 100)).unwrap_or(100)
    }

    /// A number of milliseconds: 1 ..= one hour.
    fn millis(&mut self, key: &str, v: u64) -> Duration {
        const MAX_MS: u64 = 3_600_000;
        if v == 0 {
            self.push(key, "must be greater than 0");
        } else if v > MAX_MS {
            self.push(key, format!("{v} ms is more than an hour"));
        }
        Duration::from_millis(v.clamp(1, MAX_MS))
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

impl RawConfig {
    pub(super) fn validate(self, ck: &mut Checker<'_>) -> Config {
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
        let store = StoreConfig {
            cache_bytes: ck.mebibytes("store.cache_mb", self.store.cache_mb, 1, 1 << 20),
        };
        let search = SearchConfig {
            index: self.search.index,
            memory_bytes: usize::try_from(ck.mebibytes(
                "search.index_memory_mb",
                self.search.index_memory_mb,
                MIN_SEARCH_MEMORY_MB,
                MAX_SEARCH_MEMORY_MB,
            ))
            .unwrap_or(usize::MAX),
            commit_interval: ck.millis("search.commit_interval_ms", self.search.commit_interval_ms),
            busy_cpu_percent: ck.percent("search.busy_cpu_percent", self.search.busy_cpu_percent),
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
            store,
            search,
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
            auth_cache_ttl: match self.auth_cache_secs {
                0 => Duration::ZERO,
                s => ck.secs("server.auth_cache_secs", s),
            },
            auth_workers: self.auth_workers,
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
        expunge_log_len: ck.limit("imap.expunge_log_len", imap.expunge_log_len),
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

pub(crate) fn check_password_hash(h: &str) -> Result<(), String> {
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
        if !(self.display_name_spoof_score.is_finite() && self.display_name_spoof_score >= 0.0) {
            ck.push(
                "filter.display_name_spoof_score",
                "must be a number, 0 or more (0 turns the rule off)",
            );
        }
        if self.learn == Some(true) && spamd.is_none() {
            ck.push("filter.learn", "learning needs filter.spamd");
        }
        if self.learn_retry_secs.is_empty() {
            ck.push("filter.learn_retry_secs", "must list at least one delay");
        }
        let learn_retry = self
            .learn_retry_secs
            .iter()
            .enumerate()
            .map(|(i, s)| ck.secs(&format!("filter.learn_retry_secs[{i}]"), *s))
            .collect();
        FilterConfig {
            spamd,
            spam_threshold: self.spam_threshold,
            clamd,
            blocked_extensions,
            block_office_macros: self.block_office_macros,
            trust_upstream_spam_headers: self.trust_upstream_spam_headers,
            dns,
            display_name_spoof_score: self.display_name_spoof_score,
            learn: self.learn,
            learn_retry,
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
        let protocol_trace: Vec<String> = self
            .protocol_trace
            .iter()
            .map(|l| l.trim().to_owned())
            .collect();
        for login in &protocol_trace {
            if login != "*" && login_problem(login).is_some() {
                ck.push(
                    "log.protocol_trace",
                    format!("{login:?} is neither a login nor \"*\""),
                );
            }
        }
        LogConfig {
            format,
            level,
            protocol_trace,
            protocol_trace_max_literal: self.protocol_trace_max_literal,
        }
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
pub(super) fn check_mailbox(raw: &str) -> Result<String, String> {
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
pub(super) fn parse_relay(s: &str) -> Result<(String, u16), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
