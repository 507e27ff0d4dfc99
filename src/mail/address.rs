//! Address vocabulary: normalisation of an e-mail address (the one rule, used for
//! contacts, participants and index keys alike), its domain, and what an address says
//! about its owner (a mailer daemon, a freemail provider). Pure.

/// Longest address accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// Normalises an address for use as a contact key: trims, strips `<>` and a `mailto:`
/// scheme, lower-cases the whole address and converts an IDN domain to punycode.
/// `None` unless there is exactly one `@` with a non-empty local part and a valid domain.
pub fn normalize_email(raw: &str) -> Option<String> {
    let mut s = raw.trim();
    if let Some(inner) = s.strip_prefix('<').and_then(|x| x.strip_suffix('>')) {
        s = inner.trim();
    }
    if let Some(scheme) = s.get(..7)
        && scheme.eq_ignore_ascii_case("mailto:")
    {
        s = s.get(7..).unwrap_or_default().trim();
    }
    if s.is_empty() || s.len() > MAX_EMAIL_LEN {
        return None;
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return None;
    }
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.contains('@') {
        return None;
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.starts_with('.') || domain.contains("..") {
        return None;
    }
    let domain = if domain.starts_with('[') {
        // Address literal, e.g. [192.0.2.1]: keep as is.
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).ok()?.to_ascii_lowercase()
    };
    if domain.is_empty() {
        return None;
    }
    Some(format!("{}@{}", local.to_lowercase(), domain))
}

/// An address as the store keys it (contacts, participants, subject matches): the
/// normalised form, or the string as given when it is no valid address, so a lookup
/// finds what was written. Idempotent on normalised addresses.
pub fn email_key(email: &str) -> String {
    normalize_email(email).unwrap_or_else(|| email.to_owned())
}

/// The domain of an address (after the last `@`), lower-cased, without blanks or a
/// trailing root dot; `None` without one.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_lowercase())
}

/// Mailbox-provider domains shared by unrelated people: sharing one of these is no
/// evidence of belonging to the same organisation.
const FREEMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "gmx.de",
    "gmx.net",
    "gmx.com",
    "web.de",
    "mail.com",
    "mail.ru",
    "yandex.ru",
    "yandex.com",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "163.com",
    "126.com",
    "zoho.com",
    "fastmail.com",
    "t-online.de",
    "orange.fr",
    "free.fr",
    "libero.it",
];

/// True for mailbox-provider domains (gmail.com, outlook.com, …).
pub fn is_freemail_domain(domain: &str) -> bool {
    FREEMAIL_DOMAINS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
}

/// Senders that are software, not people: never a contact, never auto-answered.
pub fn is_system_sender(email: &str) -> bool {
    let local = email
        .rsplit_once('@')
        .map_or(email, |(l, _)| l)
        .to_ascii_lowercase();
    // Sub-address: "bounces+123@", "noreply+x@".
    let base = local.split_once('+').map_or(local.as_str(), |(b, _)| b);
    const EXACT: &[&str] = &[
        "mailer-daemon",
        "mailerdaemon",
        "mail-daemon",
        "maildaemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "dontreply",
        "bounce",
        "bounces",
        "mdaemon",
        "listserv",
        "majordomo",
    ];
    if EXACT.contains(&base) {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "bounce-",
        "bounces-",
        "noreply-",
        "no-reply-",
        "no_reply-",
        "owner-",
    ];
    const SUFFIXES: &[&str] = &[
        "-bounces",
        "-bounce",
        "-noreply",
        "-no-reply",
        "-owner",
        "-request",
    ];
    PREFIXES.iter().any(|p| base.starts_with(p)) || SUFFIXES.iter().any(|s| base.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_taken_after_the_last_at() {
        assert_eq!(
            domain_of("\"a@b\"@Example.ORG").as_deref(),
            Some("example.org")
        );
        assert_eq!(domain_of("x@example.org.").as_deref(), Some("example.org"));
        assert_eq!(domain_of("nobody"), None);
        assert_eq!(domain_of("x@"), None);
    }

    #[test]
    fn normalize_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("john@example.com", Some("john@example.com")),
            ("  <John.Doe@Example.COM> ", Some("john.doe@example.com")),
            ("mailto:a@b.org", Some("a@b.org")),
            ("user@bücher.example", Some("user@xn--bcher-kva.example")),
            ("user@example.com.", Some("user@example.com")),
            ("user@[192.0.2.1]", Some("user@[192.0.2.1]")),
            ("noat.example.com", None),
            ("a@b@c", None),
            ("@example.com", None),
            ("user@", None),
            ("", None),
            ("<>", None),
            ("us er@example.com", None),
            ("user@exa..mple.com", None),
            ("a@b.com, c@d.com", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_email(raw).as_deref(), *want, "{raw:?}");
        }
        let long = format!("{}@example.com", "a".repeat(300));
        assert_eq!(normalize_email(&long), None);
    }

    #[test]
    fn system_senders() {
        for s in [
            "MAILER-DAEMON@example.com",
            "postmaster@x.org",
            "no-reply@github.com",
            "noreply@x",
            "do-not-reply@bank.example",
            "bounces+123@mailgun.example",
            "spamassassin-talk-owner@lists.sf.net",
            "ilug-request@linux.ie",
            "bounce-12345@list.example",
        ] {
            assert!(is_system_sender(s), "{s}");
        }
        for s in [
            "john@example.com",
            "support@example.com",
            "replyto@x.org",
            "bouncer@club.example",
        ] {
            assert!(!is_system_sender(s), "{s}");
        }
    }
}
