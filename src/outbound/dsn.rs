//! Bounces: an RFC 3464 delivery status notification (`multipart/report;
//! report-type=delivery-status`, built with mail-builder) for recipients that failed for
//! good. It is never sent anywhere: the worker stores it into the message's
//! conversation, where the agent sees it. Bounces are never bounced (RFC 3464 §1:
//! no DSN about a DSN or other automatic mail).

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_parser::MessageParser;

use crate::message;
use crate::store::QueueId;

/// What the bounce is about.
#[derive(Debug, Clone, Copy)]
pub struct Bounce<'a> {
    /// Our `[server] hostname`: `MAILER-DAEMON@<hostname>` and the Reporting-MTA.
    pub hostname: &'a str,
    pub queue_id: QueueId,
    /// The queued bytes (only their header section is quoted back).
    pub original: &'a [u8],
    /// Message-ID of the original, without angle brackets.
    pub message_id: &'a str,
    /// Envelope sender of the original (the bounce is addressed to it).
    pub mail_from: &'a str,
    /// Login of the agent who sent it.
    pub agent: &'a str,
    /// (recipient, reason) for every recipient given up on.
    pub failed: &'a [(String, String)],
    /// When the original was queued (unix seconds).
    pub queued_at: i64,
    /// Unix seconds.
    pub now: i64,
}

/// Whether a permanent failure of this message may produce a bounce: not for the null
/// sender, bounces, auto-replies or other machine-generated mail.
pub fn may_bounce(mail_from: &str, raw: &[u8]) -> bool {
    if mail_from.trim().trim_matches(['<', '>']).is_empty() {
        return false;
    }
    match message::analyze(raw, mail_from) {
        Ok(facts) => !facts
            .auto
            .as_ref()
            .is_some_and(message::AutoReason::is_machine_generated),
        // Unparseable: still tell the agent it did not go out.
        Err(_) => true,
    }
}

/// The header section of a message (up to the first empty line).
fn header_section(raw: &[u8]) -> &[u8] {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => &raw[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &raw[..a],
        (None, None) => raw,
    }
}

/// The enhanced status code (RFC 3463) named in a failure reason, else a default:
/// 4.4.7 (delivery time expired) when the schedule ran out, 5.0.0 otherwise.
pub fn status_of(reason: &str) -> String {
    let found = reason
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .find(|token| {
            let parts: Vec<&str> = token.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        });
    match found {
        Some(code) => code.to_owned(),
        None if reason.starts_with("retry schedule exhausted") => "4.4.7".into(),
        None => "5.0.0".into(),
    }
}

/// The SMTP reply inside a reason such as `mx.example.org said: 550 5.1.1 unknown`.
fn diagnostic(reason: &str) -> Option<&str> {
    let (_, reply) = reason.rsplit_once(" said: ")?;
    reply
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .map(|_| reply)
}

/// A DSN field value on one line (reasons come from remote servers).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The Message-ID of the bounce: the same for the same entry and the same failed
/// recipients, so a bounce stored again after a crash is recognised as a duplicate.
pub fn bounce_message_id(b: &Bounce<'_>) -> String {
    let mut rcpts: Vec<String> = b.failed.iter().map(|(r, _)| r.to_lowercase()).collect();
    rcpts.sort();
    let digest = crc32fast::hash(rcpts.join("\n").as_bytes());
    format!("dsn.{}.{digest:08x}@{}", b.queue_id.0, b.hostname)
}

/// Builds the bounce; returns its bytes and its Message-ID (without angle brackets).
pub fn build(b: &Bounce<'_>) -> std::io::Result<(Vec<u8>, String)> {
    let headers = header_section(b.original);
    let parsed = MessageParser::default().parse_headers(headers);
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or("(no subject)")
        .to_owned();
    let sender = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .unwrap_or(b.mail_from)
        .to_owned();
    let message_id = bounce_message_id(b);

    let mut text = format!(
        "This is the mail system at {host}.\r\n\r\n\
         The message <{mid}> sent by {agent} could not be delivered to\r\n\
         the following recipient(s). It will not be retried.\r\n\r\n",
        host = b.hostname,
        mid = b.message_id,
        agent = b.agent,
    );
    for (rcpt, reason) in b.failed {
        text.push_str(&format!("  <{rcpt}>: {}\r\n", one_line(reason)));
    }

    // RFC 3464 §2.2: per-message fields, then one block per recipient.
    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nX-Teamgate-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        b.hostname,
        b.queue_id.0,
        Date::new(b.queued_at).to_rfc822()
    );
    for (rcpt, reason) in b.failed {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {}\r\n",
            status_of(reason)
        ));
        match diagnostic(reason) {
            Some(reply) => {
                status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(reply)))
            }
            None => status.push_str(&format!("X-Teamgate-Diagnostic: {}\r\n", one_line(reason))),
        }
        status.push_str(&format!(
            "Last-Attempt-Date: {}\r\n",
            Date::new(b.now).to_rfc822()
        ));
    }

    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new(ContentType::new("text/plain"), text),
            MimePart::new(ContentType::new("message/delivery-status"), status),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                String::from_utf8_lossy(headers).into_owned(),
            ),
        ],
    );
    let bytes = MessageBuilder::new()
        .from((
            "Mail Delivery System".to_owned(),
            format!("MAILER-DAEMON@{}", b.hostname),
        ))
        .to(sender)
        .subject(format!("Undelivered Mail Returned to Sender: {subject}"))
        .message_id(message_id.clone())
        .in_reply_to(b.message_id.to_owned())
        .references(b.message_id.to_owned())
        .date(Date::new(b.now))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()?;
    Ok((bytes, message_id))
}

#[cfg(test)]
mod tests {
    use mail_parser::{MimeHeaders, PartType};

    use super::*;

    const ORIGINAL: &[u8] = b"From: Support <support@example.test>\r\n\
To: jose@example.org, ana@example.net\r\n\
Subject: Re: [#7] Printer\r\n\
Message-ID: <reply-7@example.test>\r\n\
\r\n\
The body is not quoted back.\r\n";

    fn bounce(failed: &[(String, String)]) -> Bounce<'_> {
        Bounce {
            hostname: "mx.example.test",
            queue_id: QueueId(42),
            original: ORIGINAL,
            message_id: "reply-7@example.test",
            mail_from: "support@example.test",
            agent: "alice",
            failed,
            queued_at: 1_790_000_000,
            now: 1_790_000_600,
        }
    }

    #[test]
    fn dsn_is_a_multipart_report_mail_parser_can_read() {
        let failed = vec![
            (
                "jose@example.org".to_owned(),
                "mx.example.org said: 550 5.1.1 <jose@example.org>: user unknown".to_owned(),
            ),
            (
                "ana@example.net".to_owned(),
                "retry schedule exhausted; last error: mx.example.net: timed out".to_owned(),
            ),
        ];
        let (raw, id) = build(&bounce(&failed)).expect("build");
        assert_eq!(id, bounce_message_id(&bounce(&failed)));
        let msg = MessageParser::default().parse(&raw).expect("parse");
        let ct = msg.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.message_id(), Some(id.as_str()));
        assert_eq!(
            msg.from().and_then(|f| f.first()).and_then(|a| a.address()),
            Some("MAILER-DAEMON@mx.example.test")
        );
        assert_eq!(
            msg.to().and_then(|f| f.first()).and_then(|a| a.address()),
            Some("support@example.test")
        );
        assert_eq!(
            msg.subject(),
            Some("Undelivered Mail Returned to Sender: Re: [#7] Printer")
        );
        assert_eq!(
            msg.header("Auto-Submitted").and_then(|v| v.as_text()),
            Some("auto-replied")
        );
        assert_eq!(msg.in_reply_to().as_text(), Some("reply-7@example.test"));
        let types: Vec<String> = msg
            .parts
            .iter()
            .skip(1)
            .filter_map(|p| p.content_type())
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("Final-Recipient: rfc822; jose@example.org"),
            "{text}"
        );
        assert!(text.contains("Status: 5.1.1"), "{text}");
        assert!(
            text.contains("Diagnostic-Code: smtp; 550 5.1.1 <jose@example.org>: user unknown"),
            "{text}"
        );
        assert!(
            text.contains("Final-Recipient: rfc822; ana@example.net"),
            "{text}"
        );
        assert!(text.contains("Status: 4.4.7"), "{text}");
        assert!(
            text.contains("Reporting-MTA: dns; mx.example.test"),
            "{text}"
        );
        assert!(!text.contains("The body is not quoted back"), "{text}");
        let headers_part = msg.parts.last().expect("last part");
        assert!(
            matches!(&headers_part.body, PartType::Text(t) if t.contains("Message-ID: <reply-7@example.test>"))
        );

        // teamgate's own analysis sees an automatic message: never answered, never bounced.
        let facts = message::analyze(&raw, "").expect("analyze");
        assert!(facts.auto.is_some());
        assert!(
            !may_bounce("support@example.test", &raw),
            "never bounce a bounce"
        );
    }

    #[test]
    fn bounce_ids_depend_on_entry_and_failed_set_only() {
        let a = vec![
            ("A@x.org".to_owned(), "550".to_owned()),
            ("b@y.org".to_owned(), "x".to_owned()),
        ];
        let b = vec![
            ("b@y.org".to_owned(), "other".to_owned()),
            ("a@x.org".to_owned(), "y".to_owned()),
        ];
        assert_eq!(
            bounce_message_id(&bounce(&a)),
            bounce_message_id(&bounce(&b))
        );
        assert_ne!(
            bounce_message_id(&bounce(&a)),
            bounce_message_id(&bounce(&a[..1]))
        );
    }

    #[test]
    fn who_may_be_bounced() {
        assert!(may_bounce("support@example.test", ORIGINAL));
        assert!(!may_bounce("", ORIGINAL));
        assert!(!may_bounce("<>", ORIGINAL));
        let auto = b"From: support@example.test\r\nAuto-Submitted: auto-replied\r\nSubject: got it\r\n\r\nx\r\n";
        assert!(!may_bounce("support@example.test", auto));
    }

    #[test]
    fn status_codes_come_from_the_reason() {
        assert_eq!(status_of("mx said: 550 5.1.1 unknown"), "5.1.1");
        assert_eq!(status_of("mx said: 552 5.3.4; too big"), "5.3.4");
        assert_eq!(status_of("mx said: 550 no such user"), "5.0.0");
        assert_eq!(
            status_of("retry schedule exhausted; last error: x"),
            "4.4.7"
        );
        assert_eq!(
            status_of("retry schedule exhausted; last error: mx said: 451 4.3.0 later"),
            "4.3.0"
        );
        assert_eq!(status_of("version 1.2.3.4"), "5.0.0");
        assert_eq!(diagnostic("a said: 550 5.1.1 x"), Some("550 5.1.1 x"));
        assert_eq!(diagnostic("a: timed out"), None);
        assert_eq!(header_section(b"A: b\nC: d\n\nbody"), b"A: b\nC: d\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
    }
}
