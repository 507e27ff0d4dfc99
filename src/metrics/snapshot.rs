//! The exposition read back as data: what `teamgate status` prints, and its `--json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Port;

/// One series of the exposition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The exposition as data: series by metric name (histograms as their `_bucket`, `_sum`
/// and `_count` series). The `--json` of `teamgate status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Snapshot {
    pub metrics: BTreeMap<String, Vec<Series>>,
}

impl Snapshot {
    /// Parses the text format [`Metrics::render`] writes. Lines it does not understand are
    /// skipped: this reads our own output, not a peer's.
    pub fn parse(text: &str) -> Snapshot {
        let mut metrics: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((name, series)) = parse_sample(line) {
                metrics.entry(name).or_default().push(series);
            }
        }
        Snapshot { metrics }
    }

    /// The value of the series of `name` whose labels include all of `labels`, summed.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics
            .get(name)
            .into_iter()
            .flatten()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// `label value → value` for the series of `name`, zeros left out.
    fn by_label(&self, name: &str, label: &str, filter: &[(&str, &str)]) -> Vec<(String, f64)> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for s in self.metrics.get(name).into_iter().flatten() {
            let matches = filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v));
            if let (true, Some(key)) = (matches, s.labels.get(label))
                && s.value != 0.0
            {
                *out.entry(key.clone()).or_default() += s.value;
            }
        }
        let mut list: Vec<(String, f64)> = out.into_iter().collect();
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }

    /// The readable summary of `teamgate status`: one `(topic, text)` per line.
    pub fn summary(&self, now_unix: i64) -> Vec<(&'static str, String)> {
        let mut lines = Vec::new();
        let version = self
            .metrics
            .get("teamgate_build_info")
            .and_then(|s| s.first())
            .and_then(|s| s.labels.get("version").cloned())
            .unwrap_or_default();
        let started = self.sum("teamgate_start_time_seconds", &[]) as i64;
        lines.push((
            "daemon",
            format!(
                "running, up {} (teamgate {version})",
                human_duration(now_unix.saturating_sub(started))
            ),
        ));
        for port in [Port::Inbound, Port::Submission] {
            let p = [("port", port.as_str())];
            let rejected = self.by_label("teamgate_smtp_rejected_total", "reason", &p);
            lines.push((
                match port {
                    Port::Inbound => "smtp in",
                    Port::Submission => "submission",
                },
                format!(
                    "{} accepted, {} refused{}; {} sessions now, {} in all",
                    count(self.sum("teamgate_smtp_messages_accepted_total", &p)),
                    count(self.sum("teamgate_smtp_rejected_total", &p)),
                    breakdown(&rejected),
                    count(self.sum("teamgate_smtp_sessions_active", &p)),
                    count(self.sum("teamgate_smtp_sessions_total", &p)),
                ),
            ));
        }
        let n = self.sum("teamgate_smtp_message_duration_seconds_count", &[]);
        let total = self.sum("teamgate_smtp_message_duration_seconds_sum", &[]);
        lines.push((
            "smtp timing",
            format!(
                "{} messages, {} on average from end of data to reply",
                count(n),
                average(total, n)
            ),
        ));
        let junk = self.by_label("teamgate_junk_total", "cause", &[]);
        lines.push((
            "junk",
            format!(
                "{}{}",
                count(self.sum("teamgate_junk_total", &[])),
                breakdown(&junk)
            ),
        ));
        let quarantined = self.by_label("teamgate_quarantined_attachments_total", "cause", &[]);
        lines.push((
            "quarantine",
            format!(
                "{} attachments{}",
                count(self.sum("teamgate_quarantined_attachments_total", &[])),
                breakdown(&quarantined)
            ),
        ));
        let learned = self.by_label("teamgate_spam_learn_total", "result", &[]);
        lines.push((
            "spam learning",
            format!(
                "{} waiting; {} attempts{}; {} reports on our mail not judged",
                count(self.sum("teamgate_spam_learn_queue_depth", &[])),
                count(self.sum("teamgate_spam_learn_total", &[])),
                breakdown(&learned),
                count(self.sum("teamgate_reports_not_judged_total", &[])),
            ),
        ));
        let attempts = self.by_label("teamgate_outbound_delivery_attempts_total", "result", &[]);
        lines.push((
            "outbound",
            format!(
                "{} waiting; {} delivery attempts{}",
                count(self.sum("teamgate_outbound_queue_depth", &[])),
                count(self.sum("teamgate_outbound_delivery_attempts_total", &[])),
                breakdown(&attempts)
            ),
        ));
        let n = self.sum("teamgate_imap_command_duration_seconds_count", &[]);
        let total = self.sum("teamgate_imap_command_duration_seconds_sum", &[]);
        let commands = self.by_label(
            "teamgate_imap_command_duration_seconds_count",
            "command",
            &[],
        );
        lines.push((
            "imap",
            format!(
                "{} sessions now, {} in all; {} commands{}, {} on average",
                count(self.sum("teamgate_imap_sessions_active", &[])),
                count(self.sum("teamgate_imap_sessions_total", &[])),
                count(n),
                breakdown(&commands[..commands.len().min(6)]),
                average(total, n)
            ),
        ));
        let auth = self.by_label("teamgate_auth_failures_total", "reason", &[]);
        lines.push((
            "auth failures",
            format!(
                "{}{}",
                count(self.sum("teamgate_auth_failures_total", &[])),
                breakdown(&auth)
            ),
        ));
        let refused = self.by_label("teamgate_connections_refused_total", "listener", &[]);
        lines.push((
            "over limit",
            format!(
                "{} connections refused{}",
                count(self.sum("teamgate_connections_refused_total", &[])),
                breakdown(&refused)
            ),
        ));
        lines
    }
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// ` (a 2, b 1)`, or nothing.
fn breakdown(parts: &[(String, f64)]) -> String {
    if parts.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k} {}", count(*v)))
        .collect();
    format!(" ({})", inner.join(", "))
}

fn average(total_secs: f64, n: f64) -> String {
    if n <= 0.0 {
        return "-".into();
    }
    let ms = total_secs / n * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `name{k="v",…} value` or `name value`.
pub(super) fn parse_sample(line: &str) -> Option<(String, Series)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, BTreeMap::new()),
    };
    Some((name.to_string(), Series { labels, value }))
}

/// `k="v",k2="v\"2"` (escapes: `\\`, `\"`, `\n`).
fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    Some(labels)
}
