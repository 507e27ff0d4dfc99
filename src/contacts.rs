//! Contact identity and the contact touches of an inbound message (SPEC §4).
//!
//! Pure: no I/O, no clock. The store turns each [`ContactTouch`] into a create-or-update
//! of the contact and timeline entries.
//!
//! Decisions:
//! - A contact is identified by its **whole address lower-cased**, the domain in its ASCII
//!   (punycode) form. RFC 5321 allows case-sensitive local parts, but no real mailbox
//!   provider uses them, and users expect `John.Doe@x` and `john.doe@x` to be one contact.
//! - Only senders become contacts: the customer (the From, or for a forward the original
//!   sender) and the forwarder. Recipients do not.
//! - Machine-generated mail (bounces, auto-replies, see
//!   [`AutoReason::is_machine_generated`](crate::message::AutoReason::is_machine_generated)),
//!   null senders and `MAILER-DAEMON`/`postmaster`/`no-reply`-style senders never create
//!   or touch a contact. Mailing-list posts and newsletters (`Precedence: list|bulk`) are
//!   written by a person or an organisation and do touch their sender.

use crate::message::MessageFacts;
use crate::store::model::{Address, ContactTouch, TimelineKind};

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

/// The domain part of a normalised address.
pub fn domain_of(email: &str) -> Option<&str> {
    email
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
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

/// The contact an inbound message is credited to: the original sender of a forward, else
/// the From.
pub fn customer_of(f: &MessageFacts) -> Option<&Address> {
    f.forward
        .as_ref()
        .map(|fw| &fw.original)
        .or(f.from.as_ref())
}

/// Whether this message may touch contacts at all.
fn may_touch(f: &MessageFacts) -> bool {
    !f.auto.as_ref().is_some_and(|a| a.is_machine_generated())
}

/// Timeline entries for a message's attachments: "name (type, N bytes)".
pub fn attachment_events(f: &MessageFacts) -> impl Iterator<Item = (TimelineKind, String)> + '_ {
    f.attachments.iter().map(|a| {
        (
            TimelineKind::Attachment,
            format!("{} ({}, {} bytes)", a.name, a.content_type, a.size),
        )
    })
}

/// Contacts to create or touch for an inbound message.
///
/// - The `customer` (normally [`customer_of`]) gets `is_customer = true` and the events
///   `(Inbound, subject)`, for a forward also `(ForwardedBy, forwarder email)`, then one
///   `(Attachment, "name (type, N bytes)")` per attachment.
/// - For a forward, the forwarder gets `is_customer = false` and `(Inbound, subject)`.
/// - Nothing for machine-generated mail, system senders, or a missing customer.
pub fn inbound_touches(f: &MessageFacts, customer: Option<&Address>) -> Vec<ContactTouch> {
    let mut out = Vec::new();
    if !may_touch(f) {
        return out;
    }
    let forwarder = f
        .forward
        .as_ref()
        .and_then(|fw| fw.forwarder.as_ref())
        .filter(|fwd| customer.is_none_or(|c| c.email != fwd.email));
    if let Some(c) = customer.filter(|c| !is_system_sender(&c.email)) {
        let mut events = vec![(TimelineKind::Inbound, f.subject.clone())];
        if let Some(fwd) = forwarder {
            events.push((TimelineKind::ForwardedBy, fwd.email.clone()));
        }
        events.extend(attachment_events(f));
        out.push(ContactTouch {
            email: c.email.clone(),
            name: c.name.clone(),
            is_customer: true,
            events,
        });
    }
    if let Some(fwd) = forwarder.filter(|a| !is_system_sender(&a.email)) {
        out.push(ContactTouch {
            email: fwd.email.clone(),
            name: fwd.name.clone(),
            is_customer: false,
            events: vec![(TimelineKind::Inbound, f.subject.clone())],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn touches(raw: &str, env: &str) -> Vec<ContactTouch> {
        let f = crate::message::analyze(raw.as_bytes(), env).unwrap_or_else(|e| panic!("{e}"));
        inbound_touches(&f, customer_of(&f))
    }

    #[test]
    fn inbound_touch_table() {
        let plain = touches(
            "From: Ann <Ann@Cust.example>\r\nSubject: Help\r\n\r\nx",
            "ann@cust.example",
        );
        assert_eq!(
            plain,
            vec![ContactTouch {
                email: "ann@cust.example".into(),
                name: Some("Ann".into()),
                is_customer: true,
                events: vec![(TimelineKind::Inbound, "Help".into())],
            }]
        );
        let fwd = touches(
            "From: Sam <sam@us.example>\r\nSubject: Fwd: Help\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
             ---------- Forwarded message ---------\r\nFrom: Ann <ann@cust.example>\r\n\r\nhi\r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nPDF\r\n--b--\r\n",
            "sam@us.example",
        );
        assert_eq!(
            fwd,
            vec![
                ContactTouch {
                    email: "ann@cust.example".into(),
                    name: Some("Ann".into()),
                    is_customer: true,
                    events: vec![
                        (TimelineKind::Inbound, "Fwd: Help".into()),
                        (TimelineKind::ForwardedBy, "sam@us.example".into()),
                        (
                            TimelineKind::Attachment,
                            "a.pdf (application/pdf, 3 bytes)".into()
                        ),
                    ],
                },
                ContactTouch {
                    email: "sam@us.example".into(),
                    name: Some("Sam".into()),
                    is_customer: false,
                    events: vec![(TimelineKind::Inbound, "Fwd: Help".into())],
                },
            ]
        );
        // Bounces, auto-replies and system senders touch nobody; list posts do.
        assert!(touches("From: MAILER-DAEMON@mx.example\r\nSubject: x\r\n\r\nx", "").is_empty());
        assert!(
            touches(
                "From: ann@cust.example\r\nAuto-Submitted: auto-replied\r\n\r\nx",
                "a@b"
            )
            .is_empty()
        );
        assert!(
            touches(
                "From: no-reply@shop.example\r\nSubject: order\r\n\r\nx",
                "a@b"
            )
            .is_empty()
        );
        assert_eq!(
            touches("From: ann@cust.example\r\nPrecedence: list\r\n\r\nx", "a@b").len(),
            1
        );
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
