//! Metrics: the one owner of every metric family (names, help texts, labels, buckets),
//! served in the Prometheus text format by [`http`] when `[metrics] listen` is set, and
//! shown by `teamgate status` through [`Metrics::snapshot`] (the same exposition, parsed
//! back, so both always tell the same numbers).
//!
//! The drivers and domain owners report what happened through the small methods below;
//! nothing else knows a metric name. Every label has a small, fixed set of values (ports,
//! reply reasons, filter rules, IMAP command names): never an address, a login or a
//! peer IP. Each daemon has its own [`Metrics`] (integration tests run several daemons in
//! one process), so there is no global registry.

pub mod http;
mod snapshot;

pub use snapshot::{Series, Snapshot};

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::store::Store;
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// `Content-Type` of [`Metrics::render`] (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Which SMTP service a session or message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The MX (`[smtp] listen`).
    Inbound,
    /// Agents' submission, STARTTLS or implicit TLS.
    Submission,
}

impl Port {
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Inbound => "inbound",
            Port::Submission => "submission",
        }
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered,
    /// Temporary failure: retried per `retry_schedule_secs`.
    Deferred,
    /// Permanent failure (or the last attempt): a bounce went to the agent.
    Bounced,
}

impl DeliveryResult {
    const ALL: [DeliveryResult; 3] = [
        DeliveryResult::Delivered,
        DeliveryResult::Deferred,
        DeliveryResult::Bounced,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Deferred => "deferred",
            DeliveryResult::Bounced => "bounced",
        }
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong login or password.
    Invalid,
    /// Too many recent failures for the address or the login.
    Throttled,
}

impl AuthFailure {
    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Invalid => "invalid",
            AuthFailure::Throttled => "throttled",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    port: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LearnLabels {
    class: &'static str,
    result: &'static str,
}

/// What became of one attempt to teach spamd a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnResult {
    /// spamd's learner took it.
    Learned,
    /// spamd was down or refused: retried from the durable queue.
    Retried,
    /// Out of retries, or the message is gone or too large to be worth learning.
    Dropped,
}

impl LearnResult {
    const ALL: [LearnResult; 3] = [
        LearnResult::Learned,
        LearnResult::Retried,
        LearnResult::Dropped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LearnResult::Learned => "learned",
            LearnResult::Retried => "retried",
            LearnResult::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabel {
    how: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// IMAP commands: 0.25 ms … 8 s (a FETCH of a big mailbox, an APPEND with its barrier).
fn imap_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// End of data to reply: filters (DNS, spamd, clamd: bounded at 60 s) plus the durability
/// barrier; 1 ms … 65 s.
fn message_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Handle on one daemon's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    smtp_sessions_active: Family<PortLabel, Gauge>,
    smtp_sessions: Family<PortLabel, Counter>,
    smtp_accepted: Family<PortLabel, Counter>,
    smtp_rejected: Family<RejectLabels, Counter>,
    smtp_message_seconds: Histograms<PortLabel>,
    connections_refused: Family<ListenerLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    auth_checks: Family<HowLabel, Counter>,
    junk: Family<CauseLabel, Counter>,
    quarantined: Family<CauseLabel, Counter>,
    spam_learned: Family<LearnLabels, Counter>,
    learn_queue_depth: Gauge,
    reports_not_judged: Counter,
    searches: Family<PathLabel, Counter>,
    search_messages_read: Counter,
    search_index_documents: Gauge,
    search_index_failures: Counter,
    queue_depth: Gauge,
    delivery_attempts: Family<ResultLabel, Counter>,
    imap_sessions_active: Gauge,
    imap_sessions: Counter,
    imap_command_seconds: Histograms<CommandLabel>,
    /// Where the queue depth is read at scrape time (set once the store is open).
    store: OnceLock<Store>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family, registered, with its fixed label sets at 0 (so a rate over them works
    /// from the first scrape on).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();

        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "teamgate_build_info",
            "Always 1; the version label names the running teamgate",
            build_info,
        );
        let start_time = Gauge::<i64>::default();
        start_time.set(crate::mail::clock::unix_now());
        registry.register(
            "teamgate_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch",
            start_time,
        );

        let inner = Inner {
            registry: Registry::default(),
            smtp_sessions_active: Family::default(),
            smtp_sessions: Family::default(),
            smtp_accepted: Family::default(),
            smtp_rejected: Family::default(),
            smtp_message_seconds: Family::new_with_constructor(message_buckets),
            connections_refused: Family::default(),
            auth_failures: Family::default(),
            auth_checks: Family::default(),
            junk: Family::default(),
            quarantined: Family::default(),
            spam_learned: Family::default(),
            learn_queue_depth: Gauge::default(),
            reports_not_judged: Counter::default(),
            searches: Family::default(),
            search_messages_read: Counter::default(),
            search_index_documents: Gauge::default(),
            search_index_failures: Counter::default(),
            queue_depth: Gauge::default(),
            delivery_attempts: Family::default(),
            imap_sessions_active: Gauge::default(),
            imap_sessions: Counter::default(),
            imap_command_seconds: Family::new_with_constructor(imap_buckets),
            store: OnceLock::new(),
        };
        for port in [Port::Inbound, Port::Submission] {
            let label = PortLabel {
                port: port.as_str(),
            };
            let _ = inner.smtp_sessions_active.get_or_create(&label);
            let _ = inner.smtp_sessions.get_or_create(&label);
            let _ = inner.smtp_accepted.get_or_create(&label);
        }
        for result in DeliveryResult::ALL {
            let _ = inner.delivery_attempts.get_or_create(&ResultLabel {
                result: result.as_str(),
            });
        }
        for class in ["spam", "ham"] {
            for result in LearnResult::ALL {
                let _ = inner.spam_learned.get_or_create(&LearnLabels {
                    class,
                    result: result.as_str(),
                });
            }
        }
        for how in ["cached", "hashed"] {
            let _ = inner.auth_checks.get_or_create(&HowLabel { how });
        }
        for reason in [AuthFailure::Invalid, AuthFailure::Throttled] {
            let _ = inner.auth_failures.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }

        registry.register(
            "teamgate_smtp_sessions_active",
            "SMTP connections open now, by port (inbound = MX, submission = agents)",
            inner.smtp_sessions_active.clone(),
        );
        registry.register(
            "teamgate_smtp_sessions",
            "SMTP connections served, by port",
            inner.smtp_sessions.clone(),
        );
        registry.register(
            "teamgate_smtp_messages_accepted",
            "Messages answered 250 after DATA/BDAT (stored durably, filed as junk, or queued), by port",
            inner.smtp_accepted.clone(),
        );
        registry.register(
            "teamgate_smtp_rejected",
            "SMTP commands and messages refused with a 4xx/5xx reply, by port and reason",
            inner.smtp_rejected.clone(),
        );
        registry.register(
            "teamgate_smtp_message_duration_seconds",
            "Time from the end of a message's data to the reply (checks, filters, durable store), by port",
            inner.smtp_message_seconds.clone(),
        );
        registry.register(
            "teamgate_connections_refused",
            "Connections turned away because the listener's connection limit was reached, by listener",
            inner.connections_refused.clone(),
        );
        registry.register(
            "teamgate_auth_failures",
            "Failed logins (SMTP AUTH and IMAP LOGIN/AUTHENTICATE), by reason",
            inner.auth_failures.clone(),
        );
        registry.register(
            "teamgate_auth_checks",
            "Password checks, by how they were answered: from the login cache or by an argon2 hash",
            inner.auth_checks.clone(),
        );
        registry.register(
            "teamgate_junk",
            "Inbound messages filed as spam into Junk, by the strongest rule that fired",
            inner.junk.clone(),
        );
        registry.register(
            "teamgate_quarantined_attachments",
            "Attachments taken out of inbound mail into quarantine, by cause",
            inner.quarantined.clone(),
        );
        registry.register(
            "teamgate_spam_learn",
            "Attempts to teach spamd's learner a message agents moved into (spam) or out of (ham) Junk, by class and result",
            inner.spam_learned.clone(),
        );
        registry.register(
            "teamgate_spam_learn_queue_depth",
            "Messages waiting to be taught to spamd's learner",
            inner.learn_queue_depth.clone(),
        );
        registry.register(
            "teamgate_reports_not_judged",
            "Bounces, reports and auto-replies about the team's own mail, kept out of spam scoring",
            inner.reports_not_judged.clone(),
        );
        registry.register(
            "teamgate_searches",
            "IMAP SEARCH and `conversations search` answered, by path: index (narrowed by the full-text index) or scan",
            inner.searches.clone(),
        );
        registry.register(
            "teamgate_search_messages_read",
            "Message bodies read to evaluate searches",
            inner.search_messages_read.clone(),
        );
        registry.register(
            "teamgate_search_index_documents",
            "Messages in the searchable full-text index",
            inner.search_index_documents.clone(),
        );
        registry.register(
            "teamgate_search_index_failures",
            "Failed steps of the full-text indexer (retried)",
            inner.search_index_failures.clone(),
        );
        registry.register(
            "teamgate_outbound_queue_depth",
            "Outgoing messages waiting in the delivery queue",
            inner.queue_depth.clone(),
        );
        registry.register(
            "teamgate_outbound_delivery_attempts",
            "Delivery attempts per recipient, by result",
            inner.delivery_attempts.clone(),
        );
        registry.register(
            "teamgate_imap_sessions_active",
            "IMAP connections open now",
            inner.imap_sessions_active.clone(),
        );
        registry.register(
            "teamgate_imap_sessions",
            "IMAP connections served",
            inner.imap_sessions.clone(),
        );
        registry.register(
            "teamgate_imap_command_duration_seconds",
            "Time to answer an IMAP command, by command name",
            inner.imap_command_seconds.clone(),
        );
        Metrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// Reads the queue depth from `store` at each scrape. Only the first call counts.
    pub fn watch_store(&self, store: Store) {
        let _ = self.inner.store.set(store);
    }

    /// An SMTP connection starts; the guard counts it as active until dropped.
    pub fn smtp_session(&self, port: Port) -> SessionGuard {
        let label = PortLabel {
            port: port.as_str(),
        };
        self.inner.smtp_sessions.get_or_create(&label).inc();
        let active = self.inner.smtp_sessions_active.get_or_create_owned(&label);
        active.inc();
        SessionGuard { active }
    }

    /// A message's data was answered: `accepted` when with 2xx. A refusal is also counted
    /// by [`Metrics::smtp_rejected`] with its reason.
    pub fn smtp_message(&self, port: Port, accepted: bool, took: Duration) {
        let label = PortLabel {
            port: port.as_str(),
        };
        if accepted {
            self.inner.smtp_accepted.get_or_create(&label).inc();
        }
        self.inner
            .smtp_message_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// A 4xx/5xx SMTP reply; `reason` from `smtp::reply::Reply::refusal_reason`.
    pub fn smtp_rejected(&self, port: Port, reason: &'static str) {
        self.inner
            .smtp_rejected
            .get_or_create(&RejectLabels {
                port: port.as_str(),
                reason,
            })
            .inc();
    }

    /// A connection refused at accept for lack of slots; `listener` as in the logs
    /// (`smtp`, `submission`, `submissions`, `imap`, `metrics`).
    /// The accept loops' hook for refused connections, counting them here.
    pub fn on_refused(&self) -> crate::net::listener::OnRefused {
        let metrics = self.clone();
        std::sync::Arc::new(move |listener| metrics.connection_refused(listener))
    }

    pub fn connection_refused(&self, listener: &'static str) {
        self.inner
            .connections_refused
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }

    pub fn auth_failed(&self, why: AuthFailure) {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// A password check answered from the login cache (`cached`) or by hashing.
    pub fn auth_check(&self, cached: bool) {
        let how = if cached { "cached" } else { "hashed" };
        self.inner
            .auth_checks
            .get_or_create(&HowLabel { how })
            .inc();
    }

    /// A message filed as junk; `rule` is the filter rule with the highest score
    /// (`SPAMD`, `DMARC_REJECT`, `UPSTREAM_SPAM`, …), shown in lower case.
    pub fn junk(&self, rule: &str) {
        self.inner
            .junk
            .get_or_create(&CauseLabel {
                cause: rule.to_ascii_lowercase(),
            })
            .inc();
    }

    /// An attachment quarantined; `cause` from `filter::HitCause::as_str`.
    pub fn quarantined(&self, cause: &'static str) {
        self.inner
            .quarantined
            .get_or_create(&CauseLabel {
                cause: cause.to_string(),
            })
            .inc();
    }

    /// One attempt to teach spamd `class` ("spam" or "ham").
    pub fn spam_learn(&self, class: &'static str, result: LearnResult) {
        self.inner
            .spam_learned
            .get_or_create(&LearnLabels {
                class,
                result: result.as_str(),
            })
            .inc();
    }

    /// A report on the team's own mail went past spam scoring.
    pub fn report_not_judged(&self) {
        self.inner.reports_not_judged.inc();
    }

    /// A search was answered; `narrowed`: the full-text index chose what was read.
    pub fn search(&self, narrowed: bool, bodies_read: u64) {
        let path = if narrowed { "index" } else { "scan" };
        self.inner.searches.get_or_create(&PathLabel { path }).inc();
        self.inner.search_messages_read.inc_by(bodies_read);
    }

    pub fn search_index_committed(&self, documents: u64) {
        self.inner
            .search_index_documents
            .set(i64::try_from(documents).unwrap_or(i64::MAX));
    }

    pub fn search_index_failed(&self) {
        self.inner.search_index_failures.inc();
    }

    pub fn delivery_attempt(&self, result: DeliveryResult) {
        self.inner
            .delivery_attempts
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    /// An IMAP connection starts; the guard counts it as active until dropped.
    pub fn imap_session(&self) -> SessionGuard {
        self.inner.imap_sessions.inc();
        let active = self.inner.imap_sessions_active.clone();
        active.inc();
        SessionGuard { active }
    }

    /// An IMAP command was answered; `command` is its name (`FETCH`, `UID FETCH`, …).
    pub fn imap_command(&self, command: &'static str, took: Duration) {
        self.inner
            .imap_command_seconds
            .get_or_create(&CommandLabel { command })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition. Reads the queue depth from the store, so call it
    /// off the async threads.
    pub fn render(&self) -> String {
        if let Some(store) = self.inner.store.get() {
            self.inner
                .queue_depth
                .set(i64::try_from(store.queue_len()).unwrap_or(i64::MAX));
            self.inner
                .learn_queue_depth
                .set(i64::try_from(store.learn_pending()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The same numbers as [`Metrics::render`], as data.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::parse(&self.render())
    }
}

/// Keeps a session counted as active; dropping it ends the session.
#[derive(Debug)]
pub struct SessionGuard {
    active: Gauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot::parse_sample;
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(start)).collect()
    }

    #[test]
    fn exposition_names_types_and_fixed_labels() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("# TYPE teamgate_smtp_messages_accepted_total counter\n"));
        assert!(text.contains("# TYPE teamgate_outbound_queue_depth gauge\n"));
        assert!(!text.contains("teamgate_smtp_message_duration_seconds"));
        for l in [
            "teamgate_smtp_messages_accepted_total{port=\"inbound\"} 0",
            "teamgate_smtp_messages_accepted_total{port=\"submission\"} 0",
            "teamgate_outbound_delivery_attempts_total{result=\"bounced\"} 0",
            "teamgate_auth_failures_total{reason=\"throttled\"} 0",
            "teamgate_outbound_queue_depth 0",
            "teamgate_imap_sessions_total 0",
        ] {
            assert!(text.lines().any(|x| x == l), "{l} missing in\n{text}");
        }
        assert!(text.contains(&format!(
            "teamgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        // Families that need an event show up with their first one.
        assert!(line(&text, "teamgate_junk_total").is_empty());
        assert!(!text.contains("teamgate_imap_command_duration_seconds"));
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn events_show_up_with_their_labels() {
        let m = Metrics::new();
        {
            let _a = m.smtp_session(Port::Inbound);
            let _b = m.smtp_session(Port::Inbound);
            let _c = m.imap_session();
            let s = m.snapshot();
            assert_eq!(
                s.sum("teamgate_smtp_sessions_active", &[("port", "inbound")]),
                2.0
            );
            assert_eq!(s.sum("teamgate_imap_sessions_active", &[]), 1.0);
        }
        m.smtp_message(Port::Inbound, true, Duration::from_millis(3));
        m.smtp_message(Port::Submission, false, Duration::from_millis(5));
        m.smtp_rejected(Port::Inbound, "unknown_recipient");
        m.smtp_rejected(Port::Inbound, "unknown_recipient");
        m.smtp_rejected(Port::Submission, "auth_required");
        m.junk("UPSTREAM_SPAM");
        m.quarantined("blocked_name");
        m.delivery_attempt(DeliveryResult::Deferred);
        m.auth_failed(AuthFailure::Invalid);
        m.connection_refused("imap");
        m.imap_command("UID FETCH", Duration::from_micros(400));
        m.imap_command("UID FETCH", Duration::from_micros(600));
        let text = m.render();
        for l in [
            "teamgate_smtp_sessions_active{port=\"inbound\"} 0",
            "teamgate_smtp_sessions_total{port=\"inbound\"} 2",
            "teamgate_imap_sessions_active 0",
            "teamgate_imap_sessions_total 1",
            "teamgate_smtp_messages_accepted_total{port=\"inbound\"} 1",
            "teamgate_smtp_messages_accepted_total{port=\"submission\"} 0",
            "teamgate_smtp_rejected_total{port=\"inbound\",reason=\"unknown_recipient\"} 2",
            "teamgate_smtp_rejected_total{port=\"submission\",reason=\"auth_required\"} 1",
            "teamgate_smtp_message_duration_seconds_count{port=\"submission\"} 1",
            "teamgate_smtp_message_duration_seconds_bucket{port=\"inbound\",le=\"0.001\"} 0",
            "teamgate_smtp_message_duration_seconds_bucket{port=\"inbound\",le=\"0.004\"} 1",
            "teamgate_junk_total{cause=\"upstream_spam\"} 1",
            "teamgate_quarantined_attachments_total{cause=\"blocked_name\"} 1",
            "teamgate_outbound_delivery_attempts_total{result=\"deferred\"} 1",
            "teamgate_auth_failures_total{reason=\"invalid\"} 1",
            "teamgate_connections_refused_total{listener=\"imap\"} 1",
            "teamgate_imap_command_duration_seconds_count{command=\"UID FETCH\"} 2",
            "teamgate_imap_command_duration_seconds_bucket{command=\"UID FETCH\",le=\"0.0005\"} 1",
        ] {
            assert!(text.lines().any(|x| x == l), "{l} missing in\n{text}");
        }
    }

    #[test]
    fn snapshot_parses_our_exposition() {
        let m = Metrics::new();
        m.smtp_rejected(Port::Inbound, "too_big");
        m.imap_command("LOGIN", Duration::from_millis(30));
        let s = m.snapshot();
        assert_eq!(
            s.sum(
                "teamgate_smtp_rejected_total",
                &[("port", "inbound"), ("reason", "too_big")]
            ),
            1.0
        );
        assert_eq!(
            s.sum(
                "teamgate_imap_command_duration_seconds_bucket",
                &[("command", "LOGIN"), ("le", "+Inf")]
            ),
            1.0
        );
        let sum = s.sum("teamgate_imap_command_duration_seconds_sum", &[]);
        assert!((sum - 0.03).abs() < 1e-9, "{sum}");
        // The JSON form is the map of series and reads back the same.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["teamgate_outbound_queue_depth"],
            serde_json::json!([{ "value": 0.0 }])
        );
        assert_eq!(serde_json::from_value::<Snapshot>(json).unwrap(), s);
    }

    #[test]
    fn label_parsing_handles_escapes() {
        let (name, series) =
            parse_sample(r#"x_total{a="q\"uote",b="back\\slash",c="n\nl"} 3"#).expect("parses");
        assert_eq!(name, "x_total");
        assert_eq!(series.value, 3.0);
        assert_eq!(series.labels["a"], "q\"uote");
        assert_eq!(series.labels["b"], "back\\slash");
        assert_eq!(series.labels["c"], "n\nl");
        assert_eq!(parse_sample("broken{a=\"x\" 1"), None);
        assert_eq!(parse_sample("nothing"), None);
    }

    #[test]
    fn summary_reads_at_a_glance() {
        let m = Metrics::new();
        m.smtp_message(Port::Inbound, true, Duration::from_millis(20));
        m.smtp_rejected(Port::Inbound, "unknown_recipient");
        m.junk("SPAMD");
        let now = crate::mail::clock::unix_now();
        let lines = m.snapshot().summary(now + 125);
        let get = |topic: &str| {
            lines
                .iter()
                .find(|(t, _)| *t == topic)
                .map(|(_, l)| l.clone())
                .unwrap_or_else(|| panic!("no {topic} line in {lines:?}"))
        };
        assert!(get("daemon").starts_with("running, up 2m 5s"), "{lines:?}");
        assert_eq!(
            get("smtp in"),
            "1 accepted, 1 refused (unknown_recipient 1); 0 sessions now, 0 in all"
        );
        assert_eq!(get("junk"), "1 (spamd 1)");
        assert_eq!(
            get("smtp timing"),
            "1 messages, 20 ms on average from end of data to reply"
        );
        assert_eq!(get("outbound"), "0 waiting; 0 delivery attempts");
    }
}
