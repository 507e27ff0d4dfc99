//! `DISPLAY_NAME_SPOOF`: phishing that borrows the team's name. A `From:` whose display
//! name claims an inbox's domain ("support@example.test", "Example.test IT") or a
//! configured agent ("Alice Example") while the address is elsewhere, and DMARC does not
//! vouch for the From domain. Mail clients show the display name, not the address, so
//! this is what the agent sees. Pure; the score is `[filter] display_name_spoof_score`.

use mail_parser::Message;

use super::authn::{AuthSummary, aligned};
use super::{FilterInput, Finding};

/// The rule's finding, or `None` when the name claims nothing of ours, DMARC passed, or
/// the score is 0 (the rule is off).
pub(super) fn spoof(
    auth: &AuthSummary,
    message: Option<&Message<'_>>,
    input: &FilterInput<'_>,
    score: f64,
) -> Option<Finding> {
    if auth.dmarc_passed || score <= 0.0 {
        return None;
    }
    let from = message?.from()?.first()?;
    let name = from.name()?.to_lowercase();
    let address = from.address().unwrap_or_default().to_ascii_lowercase();
    let claim = claim(&name, &address, input)?;
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    Some(Finding {
        rule: "DISPLAY_NAME_SPOOF",
        score,
        detail: format!(
            "display name {:?} claims {claim}, sent from {address:?} without DMARC pass{}",
            from.name().unwrap_or_default(),
            if domain.is_empty() {
                String::new()
            } else {
                format!(" for {domain}")
            }
        ),
    })
}

/// What of ours the lower-cased display `name` claims, when `address` is not it.
fn claim(name: &str, address: &str, input: &FilterInput<'_>) -> Option<String> {
    let from_domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let tokens = words(name, |c| c.is_alphanumeric() || c == '.' || c == '-');
    for team in input.team_addresses {
        let Some((_, domain)) = team.rsplit_once('@') else {
            continue;
        };
        if !aligned(from_domain, domain) && tokens.iter().any(|t| within(t, domain)) {
            return Some(format!("the team's domain {domain}"));
        }
    }
    let name_words = words(name, char::is_alphanumeric);
    input.agents.iter().find_map(|agent| {
        if agent.email.is_empty() || agent.email == address {
            return None;
        }
        let agent_name = agent.name.to_lowercase();
        let agent_words = words(&agent_name, char::is_alphanumeric);
        // A first name alone is every second customer's; a full name is a claim.
        let names_agent = agent_words.len() >= 2
            && name_words
                .windows(agent_words.len())
                .any(|w| w == agent_words.as_slice());
        (names_agent || name.contains(&agent.email))
            .then(|| format!("agent {} <{}>", agent.name, agent.email))
    })
}

/// `name` is `domain` or one of its subdomains (never a parent: "test" does not claim
/// "example.test").
fn within(name: &str, domain: &str) -> bool {
    name.eq_ignore_ascii_case(domain)
        || name
            .len()
            .checked_sub(domain.len() + 1)
            .and_then(|dot| name.get(dot..))
            .is_some_and(|tail| tail.starts_with('.') && tail[1..].eq_ignore_ascii_case(domain))
}

/// The maximal runs of `keep` characters.
fn words(text: &str, keep: impl Fn(char) -> bool) -> Vec<&str> {
    text.split(|c: char| !keep(c))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::AgentIdentity;
    use mail_parser::MessageParser;

    fn auth(dmarc_passed: bool) -> AuthSummary {
        AuthSummary {
            header: String::new(),
            dmarc_failed: None,
            authenticated_domains: Vec::new(),
            dmarc_passed,
        }
    }

    fn judge(from: &str, dmarc_passed: bool) -> Option<Finding> {
        let team = vec!["support@example.test".to_string()];
        let agents = vec![AgentIdentity {
            name: "Alice Example".into(),
            email: "alice@example.test".into(),
        }];
        let input = FilterInput {
            raw: b"",
            peer_ip: "127.0.0.1".parse().expect("ip"),
            helo: "h",
            mail_from: "",
            team_addresses: &team,
            hostname: "mx.example.test",
            agents: &agents,
            own_mail_report: false,
        };
        let raw = format!("From: {from}\r\nSubject: s\r\n\r\nb\r\n");
        let msg = MessageParser::default().parse(raw.as_bytes());
        spoof(&auth(dmarc_passed), msg.as_ref(), &input, 4.0)
    }

    #[test]
    fn claims_of_the_team_without_dmarc_hit() {
        for from in [
            "\"support@example.test\" <evil@phish.test>",
            "\"Example.test Helpdesk\" <evil@phish.test>",
            "\"IT at mail.example.test\" <evil@phish.test>",
            "\"Alice Example\" <alice.example@gmail.test>",
            "\"Urgent: alice example (CEO)\" <x@phish.test>",
            "\"alice@example.test via Docs\" <share@docs.test>",
        ] {
            let hit = judge(from, false).unwrap_or_else(|| panic!("no hit for {from}"));
            assert_eq!((hit.rule, hit.score), ("DISPLAY_NAME_SPOOF", 4.0), "{from}");
        }
    }

    #[test]
    fn honest_names_and_dmarc_pass_do_not() {
        for from in [
            "\"Alice Example\" <alice@example.test>",
            "\"Support\" <helpdesk@example.test>",
            "\"Alice\" <alice@customer.test>",
            "\"Bob at myexample.test\" <bob@myexample.test>",
            "\"Customer\" <c@customer.test>",
            "\"Test User\" <test@example.com>",
            "\"example\" <x@phish.test>",
            "plain@customer.test",
        ] {
            assert_eq!(judge(from, false), None, "{from}");
        }
        assert_eq!(judge("\"Alice Example\" <x@phish.test>", true), None);
    }
}
