//! Sender authentication with mail-auth: SPF for the client IP and MAIL FROM (HELO for the
//! null sender, RFC 7208 §2.3), DKIM (RFC 6376) and DMARC (RFC 7489), recorded in one
//! `Authentication-Results:` field (RFC 8601). A DNS failure or timeout is a `temperror` of
//! that check, never an error of the whole filter: authentication informs spam scoring, it
//! never blocks mail on its own.

use std::time::Duration;

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    DnsError, Error as AuthError, SpfOutput, SpfResult, common::headers::HeaderWriter,
    dmarc::Policy, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use mail_parser::Message;

use super::{DECISIVE_SCORE, FilterInput, Finding, Resolver};

/// What the spam rules need from authentication, owned (the mail-auth outputs borrow the
/// message).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AuthSummary {
    /// The whole header field, CRLF-terminated.
    pub header: String,
    /// DMARC failed for this domain and its policy asks for `reject` or `quarantine`.
    pub dmarc_failed: Option<(String, Policy)>,
    /// Lower-cased domains this message is authenticated for: DKIM `d=` of each passing
    /// signature, the MAIL FROM domain when SPF passed, and the From domain when DMARC passed.
    pub authenticated_domains: Vec<String>,
    /// DMARC passed for the From domain.
    pub dmarc_passed: bool,
}

/// Runs SPF and DKIM concurrently, then DMARC over both, all within `limit`.
pub(super) async fn verify(
    resolver: &Resolver,
    input: &FilterInput<'_>,
    limit: Duration,
) -> AuthSummary {
    let message = AuthenticatedMessage::parse(input.raw);
    match tokio::time::timeout(limit, run(resolver, input, message.as_ref())).await {
        Ok(summary) => summary,
        Err(_) => timed_out(input, message.as_ref()),
    }
}

async fn run(
    resolver: &Resolver,
    input: &FilterInput<'_>,
    message: Option<&AuthenticatedMessage<'_>>,
) -> AuthSummary {
    let auth = &resolver.auth;
    let spf = async {
        if input.mail_from.is_empty() {
            auth.verify_spf(SpfParameters::verify_ehlo(
                input.peer_ip,
                input.helo,
                input.hostname,
            ))
            .await
        } else {
            auth.verify_spf(SpfParameters::verify_mail_from(
                input.peer_ip,
                input.helo,
                input.hostname,
                input.mail_from,
            ))
            .await
        }
    };
    let dkim = async {
        match message {
            Some(message) => auth.verify_dkim(message).await,
            None => Vec::new(),
        }
    };
    let (spf, dkim) = tokio::join!(spf, dkim);
    let dmarc = match message {
        Some(message) => Some(
            auth.verify_dmarc(DmarcParameters::new(
                message,
                &dkim,
                mail_from_domain(input),
                &spf,
            ))
            .await,
        ),
        None => None,
    };
    summarize(input, message, &spf, &dkim, dmarc.as_ref())
}

/// The checks ran out of time: every result is `temperror`.
fn timed_out(input: &FilterInput<'_>, message: Option<&AuthenticatedMessage<'_>>) -> AuthSummary {
    let timeout = || AuthError::Dns(DnsError::Resolver("timed out".into()));
    let spf = SpfOutput::new(mail_from_domain(input).to_string()).with_result(SpfResult::TempError);
    let dkim = [DkimOutput::temp_err(timeout())];
    let dmarc = message.map(|m| {
        DmarcOutput::new(header_from_domain(m).to_string())
            .with_spf_result(DmarcResult::TempError(timeout()))
            .with_dkim_result(DmarcResult::TempError(timeout()))
    });
    summarize(input, message, &spf, &dkim, dmarc.as_ref())
}

fn summarize(
    input: &FilterInput<'_>,
    message: Option<&AuthenticatedMessage<'_>>,
    spf: &SpfOutput,
    dkim: &[DkimOutput<'_>],
    dmarc: Option<&DmarcOutput>,
) -> AuthSummary {
    let header_from = message.map(header_from_domain).unwrap_or_default();
    let mut authenticated_domains: Vec<String> = dkim
        .iter()
        .filter(|d| *d.result() == DkimResult::Pass)
        .filter_map(|d| d.signature().map(|s| s.d.to_ascii_lowercase()))
        .collect();
    if spf.result() == SpfResult::Pass {
        authenticated_domains.push(mail_from_domain(input).to_ascii_lowercase());
    }
    let mut dmarc_failed = None;
    let mut dmarc_passed = false;
    if let Some(dmarc) = dmarc {
        match dmarc.result() {
            DmarcResult::Pass => {
                dmarc_passed = true;
                authenticated_domains.push(dmarc.domain().to_ascii_lowercase());
            }
            DmarcResult::Fail(_)
                if matches!(dmarc.policy(), Policy::Reject | Policy::Quarantine) =>
            {
                dmarc_failed = Some((dmarc.domain().to_ascii_lowercase(), dmarc.policy()));
            }
            _ => {}
        }
    }
    AuthSummary {
        header: header(input, spf, dkim, dmarc, header_from),
        dmarc_failed,
        authenticated_domains,
        dmarc_passed,
    }
}

/// `Authentication-Results: host;\r\n\tspf=…;\r\n\tdkim=…;\r\n\tdmarc=…\r\n`. mail-auth writes
/// nothing for "no signature" and "no From", so those `none`s are ours.
fn header(
    input: &FilterInput<'_>,
    spf: &SpfOutput,
    dkim: &[DkimOutput<'_>],
    dmarc: Option<&DmarcOutput>,
    header_from: &str,
) -> String {
    let spf_part = AuthenticationResults::new(input.hostname);
    let spf_part = if input.mail_from.is_empty() {
        spf_part.with_spf_ehlo_result(spf, input.peer_ip, input.helo)
    } else {
        spf_part.with_spf_mailfrom_result(spf, input.peer_ip, input.mail_from, input.helo)
    };
    // `to_header` writes the field name, the authserv-id and the SPF clause, then CRLF.
    let mut out = spf_part.to_header();
    out.truncate(out.trim_end_matches("\r\n").len());
    if dkim.is_empty() {
        out.push_str(";\r\n\tdkim=none");
    } else {
        out.push_str(
            &AuthenticationResults::new("")
                .with_dkim_results(dkim, header_from)
                .to_string(),
        );
    }
    match dmarc {
        Some(dmarc) => out.push_str(
            &AuthenticationResults::new("")
                .with_dmarc_result(dmarc)
                .to_string(),
        ),
        None => out.push_str(";\r\n\tdmarc=none"),
    }
    out.push_str("\r\n");
    out
}

/// RFC 7489 §3.1.2: the SPF identity DMARC aligns is MAIL FROM, or HELO for the null sender.
fn mail_from_domain<'a>(input: &FilterInput<'a>) -> &'a str {
    match input.mail_from.rsplit_once('@') {
        Some((_, domain)) => domain,
        None => input.helo,
    }
}

fn header_from_domain<'m>(message: &'m AuthenticatedMessage<'_>) -> &'m str {
    message
        .from
        .first()
        .and_then(|from| from.rsplit_once('@'))
        .map_or("", |(_, domain)| domain)
}

/// Built-in rule: DMARC failed and the From domain asks receivers to reject or quarantine
/// such mail. Both mean "not in the inbox" (RFC 7489 §6.3), so both are spam here.
pub(super) fn dmarc_reject(auth: &AuthSummary) -> Option<Finding> {
    let (domain, policy) = auth.dmarc_failed.as_ref()?;
    let (rule, policy) = match policy {
        Policy::Reject => ("DMARC_REJECT", "reject"),
        _ => ("DMARC_QUARANTINE", "quarantine"),
    };
    Some(Finding {
        rule,
        score: DECISIVE_SCORE,
        detail: format!("DMARC failed for {domain}, policy {policy}"),
    })
}

/// Built-in rule: the From header claims one of our own team addresses, but nothing
/// authenticates the message for that domain (no aligned DKIM or SPF pass): mail from
/// outside posing as the team.
pub(super) fn from_spoofs_team(
    auth: &AuthSummary,
    message: Option<&Message<'_>>,
    team_addresses: &[String],
) -> Option<Finding> {
    let from = message?.from()?;
    from.iter()
        .filter_map(|addr| addr.address())
        .map(str::to_ascii_lowercase)
        .find(|address| {
            let base = strip_tag(address);
            team_addresses.contains(&base)
                && !base.rsplit_once('@').is_some_and(|(_, domain)| {
                    auth.authenticated_domains
                        .iter()
                        .any(|d| aligned(d, domain))
                })
        })
        .map(|address| Finding {
            rule: "FROM_SPOOFS_TEAM",
            score: DECISIVE_SCORE,
            detail: format!("From {address} is a team address, sent unauthenticated from outside"),
        })
}

/// `support+tag@example.test` → `support@example.test`.
fn strip_tag(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map_or(local, |(base, _)| base);
            format!("{local}@{domain}")
        }
        None => address.to_string(),
    }
}

/// Relaxed alignment (RFC 7489 §3.1): the same domain or one a subdomain of the other.
/// Without a public-suffix list this is a little laxer than the organizational domain.
/// The suffix is only sliced right after an ASCII `.`, which is always a char boundary.
pub(super) fn aligned(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.');
    let b = b.trim_end_matches('.');
    a.eq_ignore_ascii_case(b)
        || (a.len() > b.len()
            && a.as_bytes()[a.len() - b.len() - 1] == b'.'
            && a[a.len() - b.len()..].eq_ignore_ascii_case(b))
        || (b.len() > a.len()
            && b.as_bytes()[b.len() - a.len() - 1] == b'.'
            && b[b.len() - a.len()..].eq_ignore_ascii_case(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn summary(domains: &[&str]) -> AuthSummary {
        AuthSummary {
            header: String::new(),
            dmarc_failed: None,
            authenticated_domains: domains.iter().map(|d| d.to_string()).collect(),
            dmarc_passed: false,
        }
    }

    #[test]
    fn alignment() {
        assert!(aligned("example.test", "EXAMPLE.test"));
        assert!(aligned("mail.example.test", "example.test"));
        assert!(aligned("example.test", "mail.example.test"));
        assert!(!aligned("badexample.test", "example.test"));
        assert!(!aligned("example.test", "test.example"));
        // Multi-byte text never panics on the slicing.
        assert!(!aligned("ééé.test", "é.test"));
    }

    #[test]
    fn spoofed_team_address() {
        let team = vec!["support@example.test".to_string()];
        let raw = b"From: Support <Support+x@Example.test>\r\nSubject: hi\r\n\r\nbody\r\n";
        let msg = MessageParser::default().parse(&raw[..]);
        let hit = from_spoofs_team(&summary(&[]), msg.as_ref(), &team).expect("spoof");
        assert_eq!(hit.rule, "FROM_SPOOFS_TEAM");
        // DKIM or SPF pass for the domain (or a parent) authenticates it.
        assert_eq!(
            from_spoofs_team(&summary(&["example.test"]), msg.as_ref(), &team),
            None
        );
        // Another sender is not affected.
        let raw = b"From: someone@example.test\r\n\r\nbody\r\n";
        let msg = MessageParser::default().parse(&raw[..]);
        assert_eq!(from_spoofs_team(&summary(&[]), msg.as_ref(), &team), None);
    }

    #[test]
    fn dmarc_policy_rules() {
        let mut auth = summary(&[]);
        assert_eq!(dmarc_reject(&auth), None);
        auth.dmarc_failed = Some(("evil.test".into(), Policy::Reject));
        assert_eq!(dmarc_reject(&auth).map(|f| f.rule), Some("DMARC_REJECT"));
        auth.dmarc_failed = Some(("evil.test".into(), Policy::Quarantine));
        assert_eq!(
            dmarc_reject(&auth).map(|f| f.rule),
            Some("DMARC_QUARANTINE")
        );
    }

    #[test]
    fn timeout_header_is_temperror() {
        let raw = b"From: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n";
        let input = FilterInput {
            raw,
            peer_ip: "192.0.2.1".parse().unwrap(),
            helo: "mx.sender.test",
            mail_from: "a@sender.test",
            team_addresses: &[],
            hostname: "mx.example.test",
            agents: &[],
            own_mail_report: false,
        };
        let message = AuthenticatedMessage::parse(raw);
        let summary = timed_out(&input, message.as_ref());
        let h = &summary.header;
        assert!(
            h.starts_with("Authentication-Results: mx.example.test;\r\n\tspf=temperror"),
            "{h}"
        );
        assert!(h.contains("dkim=temperror"), "{h}");
        assert!(h.contains("dmarc=temperror"), "{h}");
        assert!(h.ends_with("\r\n") && !h.ends_with("\r\n\r\n"), "{h}");
        assert_eq!(summary.dmarc_failed, None);
    }
}
