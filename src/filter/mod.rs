//! Mail filters for inbound mail (SPEC §7): sender authentication (SPF, DKIM, DMARC →
//! `Authentication-Results:`), spam verdicts (spamd, trusted upstream headers, built-in
//! rules) and attachment quarantine (names, types, archive names, clamd).
//!
//! A filter returns a [`Verdict`]; it never stores, rejects or bounces anything itself
//! (GUIDE §4 example 8, maddy's `CheckResult`). The caller files spam into Junk, replaces
//! quarantined parts with [`strip_parts`] and keeps the original in quarantine. A filter that
//! is configured but unreachable is a [`FilterError`], which the caller answers with
//! `451 4.7.0`: mail is never let through unchecked and never dropped.
//!
//! Each signal is one small function (Stalwart's `spam-filter/analysis`): the signals emit
//! [`Finding`]s and the scoring happens once, in [`decide`]. The network checks run
//! concurrently, each under its own timeout, and touch nothing but their own sockets (never
//! a store lock).

mod attachments;
mod authn;
mod clamd;
mod display_name;
pub mod learn;
mod spamd;

use std::{net::IpAddr, net::SocketAddr, sync::Arc, time::Duration};

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_parser::{Message, MessageParser};

use crate::config::{ClamdAddr, DnsSource, FilterConfig};
use crate::mail::reply::Reply;

pub use attachments::strip_parts;

/// The score of a rule that decides on its own (a DMARC `p=reject` failure, a spoofed team
/// address, a trusted relay's spam flag). SpamAssassin gives its own decisive rules 100
/// (`USER_IN_BLOCKLIST`) and 1000 (`GTUBE`).
pub const DECISIVE_SCORE: f64 = 100.0;

/// Default bound on each network check (DNS, spamd, clamd). SpamAssassin's own `spamc`
/// gives up after 600 s; a mail client waits 10 minutes for the reply to DATA (RFC 5321
/// §4.5.3.2.6), so 60 s leaves room while never holding a session for long.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// One DNS query; hickory's default is 5 s with 2 retries.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// DNS answers cached by hickory (responses, not bytes); TTLs are honoured.
const DNS_CACHE_SIZE: u64 = 4096;

/// What the filters need to know about one received message.
#[derive(Debug, Clone, Copy)]
pub struct FilterInput<'a> {
    /// The message as received, under our `Received:` field (spamd reads the SMTP client
    /// from it, as it would behind any MTA).
    pub raw: &'a [u8],
    /// The connecting SMTP client.
    pub peer_ip: IpAddr,
    /// The EHLO/HELO argument.
    pub helo: &'a str,
    /// The reverse-path without brackets; "" for the null sender.
    pub mail_from: &'a str,
    /// Lower-cased inbox addresses: a `From:` claiming one of them from outside is spoofed.
    pub team_addresses: &'a [String],
    /// Our host name: the authserv-id of `Authentication-Results:`.
    pub hostname: &'a str,
    /// The configured agents: a `From:` display name claiming one of them (or an inbox's
    /// domain) without DMARC behind it is phishing's favourite trick.
    pub agents: &'a [AgentIdentity],
    /// A bounce, report or auto-reply about a message the team sent: never judged as spam
    /// (it belongs in that conversation, SPEC §6); the attachment policy still applies.
    pub own_mail_report: bool,
}

/// Who an agent is, for the display-name check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    /// Lower-cased.
    pub email: String,
}

/// One signal that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// e.g. `SPAMD`, `DMARC_REJECT`, `FROM_SPOOFS_TEAM`, `UPSTREAM_SPAM`, `ATTACHMENT`.
    pub rule: &'static str,
    /// Added up; the message is spam when the sum reaches `spam_threshold`.
    pub score: f64,
    pub detail: String,
}

/// One attachment to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentHit {
    /// mail-parser part ids from the outermost message down: `[3]` is `parts[3]` of the
    /// message; `[3, 2]` is `parts[2]` of the message/rfc822 that is `parts[3]`. Part 0 of a
    /// message is its root (a single-part message's body).
    pub part_path: Vec<usize>,
    /// The attachment's file name as the sender gave it ("" when it had none).
    pub filename: String,
    /// Why, for people: "blocked file type .exe", "infected: Eicar-Signature (clamd)", …
    pub reason: String,
    /// The most serious kind of check that hit it, for metrics.
    pub cause: HitCause,
}

/// Which check found an attachment, least serious first: a part several checks hit
/// counts under the most serious one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HitCause {
    /// Its own name has a blocked extension or a direction-control trick.
    BlockedName,
    /// A blocked name inside a zip archive.
    Archive,
    /// Executable content under another name or type.
    DisguisedExecutable,
    /// An Office document carrying VBA macros (`[filter] block_office_macros`).
    OfficeMacro,
    /// clamd could not scan it (too large).
    NotScanned,
    /// clamd found a signature.
    Virus,
}

impl HitCause {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HitCause::BlockedName => "blocked_name",
            HitCause::Archive => "archive",
            HitCause::DisguisedExecutable => "disguised_executable",
            HitCause::OfficeMacro => "office_macro",
            HitCause::NotScanned => "not_scanned",
            HitCause::Virus => "virus",
        }
    }
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Into its conversation.
    Accept,
    /// Into Junk. Wins over quarantine, but the attachment policy holds in Junk too:
    /// `hits` are replaced in the Junk copy (the original is kept for release) and listed
    /// among the findings (rule `ATTACHMENT`, score 0).
    Junk {
        score: f64,
        reason: String,
        findings: Vec<Finding>,
        hits: Vec<AttachmentHit>,
    },
    /// Into its conversation with these parts replaced ([`strip_parts`]); the original
    /// goes to quarantine.
    Quarantine { hits: Vec<AttachmentHit> },
}

/// The verdict and the header to prepend to the stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOutcome {
    pub verdict: Verdict,
    /// The complete `Authentication-Results: host; spf=…; dkim=…; dmarc=…\r\n` field
    /// (RFC 8601), folded, ending in CRLF.
    pub authentication_results: String,
    /// Every signal that fired, whatever the verdict (spamd's score of a ham message too).
    pub findings: Vec<Finding>,
}

/// A configured filter could not give an answer: the caller temp-fails the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("spamd is unavailable: {0}")]
    SpamdDown(String),
    #[error("clamd is unavailable: {0}")]
    ClamdDown(String),
    #[error("DNS resolver: {0}")]
    Resolver(String),
    /// More attachments than the policy examines: never let through unchecked.
    #[error("more attachments than can be checked (at most {0})")]
    TooManyParts(usize),
}

impl FilterError {
    /// The SMTP answer: a filter outage temp-fails (SPEC §7); a message the policy cannot
    /// examine is refused.
    pub fn reply(&self) -> Reply {
        match self {
            FilterError::TooManyParts(_) => {
                Reply::new(550, (5, 6, 0), format!("Message refused: {self}"))
            }
            _ => Reply::new(
                451,
                (4, 7, 0),
                "Message filters temporarily unavailable, try again later",
            ),
        }
    }
}

/// The DNS source of the authentication checks. Cheap to clone; hickory caches answers
/// (TTLs honoured), shared by all clones.
#[derive(Clone)]
pub struct Resolver {
    auth: MessageAuthenticator,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// The name servers of `/etc/resolv.conf`.
    pub fn system() -> Result<Resolver, FilterError> {
        let (config, _) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| FilterError::Resolver(e.to_string()))?;
        Self::build(config)
    }

    /// One name server, over UDP with TCP fallback, at `addr` (any port): a local
    /// resolver, or a loopback test server.
    pub fn name_server(addr: SocketAddr) -> Result<Resolver, FilterError> {
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        Self::build(ResolverConfig::from_name_servers(vec![server]))
    }

    fn build(config: ResolverConfig) -> Result<Resolver, FilterError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = DNS_QUERY_TIMEOUT;
        opts.attempts = 1;
        opts.cache_size = DNS_CACHE_SIZE;
        let auth = MessageAuthenticator::new(config, opts)
            .map_err(|e| FilterError::Resolver(e.to_string()))?;
        Ok(Resolver { auth })
    }
}

/// The configured filters. Cheap to clone; build once from config.
#[derive(Debug, Clone)]
pub struct Filters {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    spamd: Option<String>,
    clamd: Option<ClamdAddr>,
    spam_threshold: f64,
    blocked_extensions: Vec<String>,
    block_office_macros: bool,
    trust_upstream_spam_headers: bool,
    display_name_spoof_score: f64,
    /// None: sender authentication is off (`[filter].dns_server = "none"`).
    resolver: Option<Resolver>,
    timeout: Duration,
}

impl Filters {
    /// The filters `[filter]` asks for, with the DNS source it names.
    pub fn from_config(config: &FilterConfig) -> Result<Filters, FilterError> {
        Ok(match config.dns {
            DnsSource::System => Filters::new(config, Resolver::system()?),
            DnsSource::Server(addr) => Filters::new(config, Resolver::name_server(addr)?),
            DnsSource::Off => Filters::build(config, None),
        })
    }

    pub fn new(config: &FilterConfig, resolver: Resolver) -> Filters {
        Filters::build(config, Some(resolver))
    }

    fn build(config: &FilterConfig, resolver: Option<Resolver>) -> Filters {
        Filters {
            inner: Arc::new(Inner {
                spamd: config.spamd.clone(),
                clamd: config.clamd.clone(),
                spam_threshold: config.spam_threshold,
                blocked_extensions: config
                    .blocked_extensions
                    .iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect(),
                block_office_macros: config.block_office_macros,
                trust_upstream_spam_headers: config.trust_upstream_spam_headers,
                display_name_spoof_score: config.display_name_spoof_score,
                resolver,
                timeout: DEFAULT_CHECK_TIMEOUT,
            }),
        }
    }

    /// The same filters with another bound on each network check (DNS as a whole, spamd,
    /// clamd). A DNS check past it is `temperror`; spamd or clamd past it is down.
    pub fn with_timeout(&self, timeout: Duration) -> Filters {
        let mut inner = (*self.inner).clone();
        inner.timeout = timeout;
        Filters {
            inner: Arc::new(inner),
        }
    }

    /// The attachment policy alone (names, types, archives, clamd), for mail that is not
    /// judged as spam but must not carry a dangerous part into a conversation: an agent's
    /// intake, a forward to another team, a release from Junk. Accept or Quarantine.
    pub async fn check_attachments(&self, raw: &[u8]) -> Result<Verdict, FilterError> {
        let inner = &*self.inner;
        let parsed = parse(raw);
        let parts = parsed
            .as_ref()
            .map(attachments::collect)
            .unwrap_or_default();
        if attachments::truncated(&parts) {
            return Err(FilterError::TooManyParts(parts.len()));
        }
        let hits = self.attachment_hits(&parts).await?;
        Ok(decide(Vec::new(), hits, inner.spam_threshold))
    }

    /// The attachment policy on collected parts: names, types, archives and macros, then
    /// clamd when configured.
    async fn attachment_hits(
        &self,
        parts: &[attachments::Part<'_>],
    ) -> Result<Vec<AttachmentHit>, FilterError> {
        let inner = &*self.inner;
        let mut hits = attachments::check_names_and_types(
            parts,
            &inner.blocked_extensions,
            inner.block_office_macros,
        );
        if let Some(addr) = &inner.clamd {
            attachments::merge_hits(
                &mut hits,
                clamd::scan_parts(addr, parts, inner.timeout).await?,
            );
        }
        Ok(hits)
    }

    /// Runs every check: authentication, spamd and clamd concurrently, each bounded by the
    /// timeout; the local rules in between. Holds no lock.
    pub async fn check(&self, input: &FilterInput<'_>) -> Result<FilterOutcome, FilterError> {
        let inner = &*self.inner;
        let parsed = parse(input.raw);
        let parts = parsed
            .as_ref()
            .map(attachments::collect)
            .unwrap_or_default();
        let (auth, spam, hits) = tokio::join!(
            async {
                match &inner.resolver {
                    Some(resolver) => Some(authn::verify(resolver, input, inner.timeout).await),
                    None => None,
                }
            },
            async {
                match &inner.spamd {
                    Some(addr) if !input.own_mail_report => {
                        spamd::check(addr, input.raw, inner.timeout).await
                    }
                    _ => Ok(None),
                }
            },
            self.attachment_hits(&parts),
        );
        let spam = spam?;
        let hits = hits?;

        let mut findings = Vec::new();
        // Hundreds of attachments could hide one past the checking limit: such a message
        // is not let through unchecked.
        if attachments::truncated(&parts) {
            findings.push(Finding {
                rule: "TOO_MANY_PARTS",
                score: DECISIVE_SCORE,
                detail: "more attachments than can be checked".into(),
            });
        }
        if let Some(report) = spam {
            findings.push(spamd::finding(&report));
        }
        let judged = !input.own_mail_report;
        if judged && inner.trust_upstream_spam_headers {
            findings.extend(spamd::upstream_flag(parsed.as_ref()));
        }
        // Without sender authentication nothing is authenticated, so the rules built on
        // it (DMARC policy, team-address and display-name spoofing) cannot judge and stay
        // silent.
        let authentication_results = match &auth {
            Some(auth) => {
                if judged {
                    findings.extend(authn::dmarc_reject(auth));
                    findings.extend(authn::from_spoofs_team(
                        auth,
                        parsed.as_ref(),
                        input.team_addresses,
                    ));
                    findings.extend(display_name::spoof(
                        auth,
                        parsed.as_ref(),
                        input,
                        inner.display_name_spoof_score,
                    ));
                }
                auth.header.clone()
            }
            None => format!("Authentication-Results: {}; none\r\n", input.hostname),
        };

        Ok(FilterOutcome {
            verdict: decide(findings.clone(), hits, inner.spam_threshold),
            authentication_results,
            findings,
        })
    }
}

/// Parses the message for the local rules; `None` when it has no MIME structure at all (it
/// still goes through authentication and spamd). mail-parser 0.11.9 has reachable
/// `debug_assert!`s on malformed MIME (see message.rs); they must not take the caller down.
fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

/// The scoring step: the findings add up against the threshold; spam wins over quarantine.
fn decide(mut findings: Vec<Finding>, hits: Vec<AttachmentHit>, threshold: f64) -> Verdict {
    let score: f64 = findings.iter().map(|f| f.score).sum();
    if score >= threshold {
        let reason = findings
            .iter()
            .filter(|f| f.score > 0.0)
            .map(|f| format!("{} ({})", f.rule, f.detail))
            .collect::<Vec<_>>()
            .join("; ");
        findings.extend(hits.iter().map(|hit| Finding {
            rule: "ATTACHMENT",
            score: 0.0,
            detail: format!("{}: {}", hit.filename, hit.reason),
        }));
        Verdict::Junk {
            score,
            reason,
            findings,
            hits,
        }
    } else if hits.is_empty() {
        Verdict::Accept
    } else {
        Verdict::Quarantine { hits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &'static str, score: f64) -> Finding {
        Finding {
            rule,
            score,
            detail: "d".into(),
        }
    }

    fn hit() -> AttachmentHit {
        AttachmentHit {
            part_path: vec![2],
            filename: "a.exe".into(),
            reason: "blocked file type .exe".into(),
            cause: HitCause::BlockedName,
        }
    }

    #[test]
    fn decide_table() {
        assert_eq!(decide(vec![], vec![], 5.0), Verdict::Accept);
        assert_eq!(
            decide(vec![finding("SPAMD", 4.9)], vec![], 5.0),
            Verdict::Accept
        );
        assert_eq!(
            decide(vec![], vec![hit()], 5.0),
            Verdict::Quarantine { hits: vec![hit()] }
        );
        // A ham score from spamd does not cancel a decisive rule.
        let Verdict::Junk {
            score,
            reason,
            findings,
            hits,
        } = decide(
            vec![
                finding("SPAMD", -2.0),
                finding("DMARC_REJECT", DECISIVE_SCORE),
            ],
            vec![hit()],
            5.0,
        )
        else {
            panic!("not junk")
        };
        assert_eq!(score, 98.0);
        assert_eq!(reason, "DMARC_REJECT (d)");
        assert_eq!(findings.len(), 3);
        assert_eq!(findings[2].rule, "ATTACHMENT");
        assert_eq!(hits, vec![hit()], "the Junk copy gets them replaced too");
    }

    #[test]
    fn a_part_hit_twice_counts_under_the_most_serious_cause() {
        let exe = attachments::Part {
            path: vec![1],
            filename: "invoice.pdf".into(),
            content_type: "application/pdf".into(),
            contents: b"MZ\x90\0rest",
        };
        let mut hits = attachments::check_names_and_types(&[exe], &["exe".to_string()], true);
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].cause,
            HitCause::DisguisedExecutable,
            "{:?}",
            hits[0]
        );
        let virus = AttachmentHit {
            part_path: vec![1],
            filename: "invoice.pdf".into(),
            reason: "infected: Eicar-Signature (clamd)".into(),
            cause: HitCause::Virus,
        };
        attachments::merge_hits(&mut hits, vec![virus]);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].cause.as_str(), "virus");
        assert!(
            hits[0]
                .reason
                .ends_with("; infected: Eicar-Signature (clamd)")
        );
    }

    #[test]
    fn outage_is_451_4_7_0() {
        let reply = FilterError::SpamdDown("refused".into()).reply();
        assert_eq!((reply.code, reply.status), (451, (4, 7, 0)));
    }

    #[test]
    fn an_outage_counts_as_filter_unavailable() {
        let reply = FilterError::SpamdDown("x".into()).reply();
        assert_eq!(reply.refusal_reason(), Some("filter_unavailable"));
    }

    #[test]
    fn check_future_is_send() {
        fn is_send<T: Send>(_: &T) {}
        let filters = Filters::new(
            &FilterConfig {
                spamd: None,
                spam_threshold: 5.0,
                clamd: None,
                blocked_extensions: vec![],
                trust_upstream_spam_headers: false,
                dns: DnsSource::Off,
                ..FilterConfig::default()
            },
            Resolver::name_server("127.0.0.1:9".parse().unwrap()).unwrap(),
        );
        let input = FilterInput {
            raw: b"",
            peer_ip: "127.0.0.1".parse().unwrap(),
            helo: "h",
            mail_from: "",
            team_addresses: &[],
            hostname: "h",
            agents: &[],
            own_mail_report: false,
        };
        is_send(&filters.check(&input));
    }
}
