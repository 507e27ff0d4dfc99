//! What teamgate learns from one raw message: ids, addresses, subject, attachments,
//! automatic-mail signals, forwards. Pure: bytes in, facts out (mail-parser does all MIME
//! and header parsing). Fed attacker-controlled bytes: never panics, all work bounded.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use thiserror::Error;

use crate::forward::{self, ForwardInfo};
use crate::mail::{
    address::{is_system_sender, normalize_email},
    header::{header_span, header_start, starts_with_header_field},
    message_id,
    subject::{normalize_subject, subject_prefixes, subject_tag},
    thread_index,
};
use crate::store::model::{Address, AttachmentInfo, Direction, MessageSummary};

/// Nested message/rfc822 levels searched for attachments.
const MAX_DEPTH: usize = 8;
/// Attachments listed per message.
const MAX_ATTACHMENTS: usize = 256;
/// Message-IDs kept from In-Reply-To + References (the newest are kept).
const MAX_IDS: usize = 100;
/// Addresses kept per To/Cc header.
const MAX_ADDRESSES: usize = 500;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("not a message: no usable header section")]
    NoHeaders,
    #[error("the MIME parser failed on this message")]
    ParserPanic,
}

/// Why a message counts as automatic (SPEC §4). Automatic mail is threaded but never
/// answered automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoReason {
    /// `Auto-Submitted:` other than `no` (value lower-cased).
    AutoSubmitted(String),
    /// `Precedence: bulk|junk|list|auto_reply` (value lower-cased).
    Precedence(String),
    XAutoreply,
    XAutorespond,
    /// `Content-Type: multipart/report` (DSN, MDN, ARF).
    MultipartReport,
    /// Null reverse-path (`MAIL FROM:<>`).
    NullSender,
    /// From is `MAILER-DAEMON`, `postmaster`, `no-reply`, … (see
    /// [`is_system_sender`]).
    SystemSender,
    /// `X-Failed-Recipients:` (Exim bounces).
    FailedRecipients,
    /// A subject that only auto-responders write: Lotus Notes "AUTO:", Outlook's localised
    /// "Automatic reply:".
    AutoSubject,
}

impl AutoReason {
    /// True for bounces, auto-replies and notifications; false for `Precedence: list`
    /// and `bulk`, which mark a person's post to a mailing list or a newsletter: still
    /// never auto-answered, but a real correspondent (contacts are touched).
    pub fn is_machine_generated(&self) -> bool {
        !matches!(self, AutoReason::Precedence(p) if p == "list" || p == "bulk")
    }
}

/// Everything threading, contacts and views need from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFacts {
    /// Message-ID without `<>`.
    pub message_id: Option<String>,
    /// Without `<>`.
    pub in_reply_to: Vec<String>,
    /// Without `<>`, oldest first as written.
    pub references: Vec<String>,
    /// RFC 2047-decoded subject, "" if none.
    pub subject: String,
    /// [`normalize_subject`] of the subject.
    pub subject_base: String,
    /// `[#123]` anywhere in the subject.
    pub subject_tag: Option<u64>,
    pub from: Option<Address>,
    pub reply_to: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    /// Date header, unix seconds.
    pub date: Option<i64>,
    /// Outlook Thread-Index, base64-decoded, first 22 bytes.
    pub thread_index: Option<Vec<u8>>,
    /// Every attachment, also inside nested messages (bounded depth); never quarantined here.
    pub attachments: Vec<AttachmentInfo>,
    pub auto: Option<AutoReason>,
    /// For a bounce/report: the Message-ID of the message it reports on.
    pub dsn_reported_message_id: Option<String>,
    pub forward: Option<ForwardInfo>,
    /// `X-Loop` header values.
    pub x_loop: Vec<String>,
    /// Reply prefix in the subject or In-Reply-To present.
    pub is_reply: bool,
}

/// Parses `raw` and extracts its facts. `envelope_sender` is the SMTP reverse-path, ""
/// for the null sender.
pub fn analyze(raw: &[u8], envelope_sender: &str) -> Result<MessageFacts, MessageError> {
    // mail-parser 0.11.9 has reachable `debug_assert!`s on malformed MIME (corpus:
    // forwards/asf-spamassassin__mime9.eml); never let one take the caller down.
    // What an MTA accepts is read as far as it can be (the stored bytes stay as they
    // came): fields after a leading mbox `From ` line or lines of spaces, and a message
    // with no header fields at all as a body under an empty header section.
    let fields = &raw[header_start(raw)..];
    let headerless;
    let readable = if fields.is_empty() {
        return Err(MessageError::NoHeaders);
    } else if starts_with_header_field(fields) {
        fields
    } else {
        headerless = [b"\r\n".as_slice(), fields].concat();
        headerless.as_slice()
    };
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(readable));
    let msg = parsed
        .map_err(|_| MessageError::ParserPanic)?
        .ok_or(MessageError::NoHeaders)?;
    // `root_part()` and the header accessors index parts[0].
    if msg.parts.is_empty() {
        return Err(MessageError::NoHeaders);
    }

    let subject = msg
        .subject()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let from = first_address(msg.from());
    let in_reply_to = ids(msg.in_reply_to());
    let references = ids(msg.references());
    let auto = auto_reason(&msg, envelope_sender, from.as_ref());
    let machine = auto.as_ref().is_some_and(AutoReason::is_machine_generated);
    let forward = if machine {
        None
    } else {
        forward::detect(&msg, from.as_ref())
    };
    let mut attachments = Vec::new();
    collect_attachments(&msg, 0, &mut attachments);

    Ok(MessageFacts {
        message_id: msg.message_id().and_then(message_id::parse),
        is_reply: subject_prefixes(&subject).reply || !in_reply_to.is_empty(),
        in_reply_to,
        references,
        subject_base: normalize_subject(&subject),
        subject_tag: subject_tag(&subject),
        subject,
        reply_to: first_address(msg.reply_to()),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        from,
        date: msg
            .date()
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp()),
        thread_index: thread_index(&msg),
        attachments,
        dsn_reported_message_id: if machine {
            reported_message_id(&msg)
        } else {
            None
        },
        auto,
        forward,
        x_loop: header_texts(&msg, "X-Loop"),
    })
}

/// The summary stored with the message record.
pub fn summary(facts: &MessageFacts, direction: Direction, synthesized_id: &str) -> MessageSummary {
    let mut references: Vec<String> = Vec::new();
    for id in facts.in_reply_to.iter().chain(&facts.references) {
        if !references.contains(id) {
            references.push(id.clone());
        }
    }
    MessageSummary {
        message_id: facts
            .message_id
            .clone()
            .unwrap_or_else(|| synthesized_id.to_string()),
        subject: facts.subject.clone(),
        from: facts.from.clone(),
        to: facts.to.clone(),
        cc: facts.cc.clone(),
        date: facts.date,
        attachments: facts.attachments.clone(),
        direction,
        automatic: facts.auto.is_some(),
        references,
        author: None,
        digest: None,
    }
}

/// What makes a message itself, whatever route it took: its author, recipients, subject
/// and Date, the MIME fields that say how to read its body, and the body, as SHA-256
/// (hex, first 16 bytes). Trace fields a relay adds (Received, Authentication-Results,
/// ...) are left out, so a retry through a backup MX is still the same message; two
/// different messages that reuse one Message-ID (broken generators, templates) are not.
pub fn content_digest(facts: &MessageFacts, raw: &[u8]) -> String {
    let header = header_span(raw);
    let body = raw.get(header.end..).unwrap_or_default();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let emails = |list: &[Address]| -> String {
        list.iter()
            .map(|a| a.email.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let fields = [
        facts
            .from
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default(),
        emails(&facts.to),
        emails(&facts.cc),
        facts.subject.clone(),
        facts.date.map(|d| d.to_string()).unwrap_or_default(),
    ];
    for field in &fields {
        ctx.update(field.as_bytes());
        ctx.update(b"\0");
    }
    let mut in_mime_field = false;
    for line in raw.get(header).unwrap_or_default().split(|b| *b == b'\n') {
        let continued = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continued {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            in_mime_field = name.len() < line.len()
                && (name.eq_ignore_ascii_case(b"content-type")
                    || name.eq_ignore_ascii_case(b"content-transfer-encoding"));
        }
        if in_mime_field {
            ctx.update(line);
        }
    }
    ctx.update(b"\0");
    ctx.update(body);
    ctx.finish()
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The summary of a message filed in a private folder (APPEND): parsed like any other,
/// never threaded. A message mail-parser cannot read gets an empty summary.
pub fn folder_summary(raw: &[u8]) -> MessageSummary {
    match analyze(raw, "folder@localhost") {
        Ok(facts) => summary(&facts, Direction::In, ""),
        Err(_) => MessageSummary {
            message_id: String::new(),
            subject: String::new(),
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            date: None,
            attachments: Vec::new(),
            direction: Direction::In,
            automatic: false,
            references: Vec::new(),
            author: None,
            digest: None,
        },
    }
}

/// Message-ids of In-Reply-To/References: one id is `Text`, several are `TextList`.
fn ids(v: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    let all: Vec<String> = match v {
        mail_parser::HeaderValue::Text(t) => message_id::parse(t).into_iter().collect(),
        mail_parser::HeaderValue::TextList(l) => {
            l.iter().filter_map(|t| message_id::parse(t)).collect()
        }
        _ => Vec::new(),
    };
    let skip = all.len().saturating_sub(MAX_IDS);
    all.into_iter().skip(skip).collect()
}

fn convert(a: &mail_parser::Addr<'_>) -> Option<Address> {
    let email = normalize_email(a.address()?)?;
    let name = a
        .name()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    Some(Address { email, name })
}

fn first_address(a: Option<&mail_parser::Address<'_>>) -> Option<Address> {
    a?.iter().find_map(convert)
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<Address> {
    a.map(|a| a.iter().take(MAX_ADDRESSES).filter_map(convert).collect())
        .unwrap_or_default()
}

/// Text values of every root header with this name.
fn header_texts(msg: &Message<'_>, name: &str) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| h.value().as_text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.headers()
        .iter()
        .any(|h| h.name().eq_ignore_ascii_case(name))
}

/// First token of a header value, lower-cased ("auto-replied; owner=x" → "auto-replied").
fn first_token(msg: &Message<'_>, name: &str) -> Option<String> {
    let v = header_texts(msg, name).into_iter().next()?;
    let t = v
        .split([';', ' ', '\t', '('])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (!t.is_empty()).then_some(t)
}

fn is_multipart_report(msg: &Message<'_>) -> bool {
    msg.root_part().is_content_type("multipart", "report")
}

fn auto_reason(
    msg: &Message<'_>,
    envelope_sender: &str,
    from: Option<&Address>,
) -> Option<AutoReason> {
    if message_id::bare(envelope_sender).is_empty() {
        return Some(AutoReason::NullSender);
    }
    if let Some(v) = first_token(msg, "Auto-Submitted")
        && v != "no"
    {
        return Some(AutoReason::AutoSubmitted(v));
    }
    if has_header(msg, "X-Autoreply") {
        return Some(AutoReason::XAutoreply);
    }
    if has_header(msg, "X-Autorespond") {
        return Some(AutoReason::XAutorespond);
    }
    if is_multipart_report(msg) {
        return Some(AutoReason::MultipartReport);
    }
    if has_header(msg, "X-Failed-Recipients") {
        return Some(AutoReason::FailedRecipients);
    }
    if from.is_some_and(|f| is_system_sender(&f.email)) {
        return Some(AutoReason::SystemSender);
    }
    if is_auto_subject(msg.subject().unwrap_or_default()) {
        return Some(AutoReason::AutoSubject);
    }
    match first_token(msg, "Precedence") {
        Some(p) if matches!(p.as_str(), "bulk" | "junk" | "list" | "auto_reply") => {
            Some(AutoReason::Precedence(p))
        }
        _ => None,
    }
}

/// Subject prefixes written only by auto-responders (case-sensitive where the client
/// writes them so: "AUTO:" is Lotus Notes, "auto:" in a person's subject is not).
fn is_auto_subject(subject: &str) -> bool {
    const EXACT: &[&str] = &["AUTO:"];
    const ANY_CASE: &[&str] = &[
        "automatic reply:",
        "autoreply:",
        "auto-reply:",
        "automatische antwort:",
        "réponse automatique :",
        "réponse automatique:",
        "respuesta automática:",
        "risposta automatica:",
        "automatisch antwoord:",
        "autosvar:",
        "automaattinen vastaus:",
    ];
    let s = subject.trim_start();
    EXACT.iter().any(|p| s.starts_with(p))
        || ANY_CASE
            .iter()
            .any(|p| s.get(..p.len()).is_some_and(|h| h.to_lowercase() == *p))
}

/// Outlook Thread-Index: the thread key of its header.
fn thread_index(msg: &Message<'_>) -> Option<Vec<u8>> {
    thread_index::thread_key(&header_texts(msg, "Thread-Index").into_iter().next()?)
}

/// The Message-ID of the message a bounce/report is about: from its message/rfc822 or
/// text/rfc822-headers part.
fn reported_message_id(msg: &Message<'_>) -> Option<String> {
    msg.parts.iter().skip(1).find_map(|p| match &p.body {
        PartType::Message(inner) => inner.message_id().and_then(message_id::parse),
        _ if p.is_content_type("text", "rfc822-headers")
            || p.is_content_type("message", "rfc822-headers") =>
        {
            // The part usually ends right after its last header (the CRLF before the
            // boundary belongs to the boundary): terminate the header block ourselves.
            let mut headers = p.contents().to_vec();
            headers.extend_from_slice(b"\r\n\r\n");
            MessageParser::default()
                .parse_headers(&headers)?
                .message_id()
                .and_then(message_id::parse)
        }
        _ => None,
    })
}

fn content_type_of(p: &mail_parser::MessagePart<'_>) -> String {
    match p.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        }
        .to_ascii_lowercase(),
        None if p.is_message() => "message/rfc822".to_string(),
        None if p.is_text() => "text/plain".to_string(),
        None => "application/octet-stream".to_string(),
    }
}

/// Attachments of `msg` and of the messages nested in it, depth-first, bounded.
fn collect_attachments(msg: &Message<'_>, depth: usize, out: &mut Vec<AttachmentInfo>) {
    for part in msg.attachments() {
        if out.len() >= MAX_ATTACHMENTS {
            return;
        }
        let name = part
            .attachment_name()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let disposed = part
            .content_disposition()
            .is_some_and(|d| d.is_attachment());
        let info = |name: String| AttachmentInfo {
            name,
            content_type: content_type_of(part),
            size: u64::try_from(part.len()).unwrap_or(u64::MAX),
            quarantined: false,
        };
        match &part.body {
            PartType::Message(inner) => {
                let fallback = inner
                    .subject()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("message");
                out.push(info(
                    name.map_or_else(|| format!("{fallback}.eml"), str::to_string),
                ));
                if depth < MAX_DEPTH {
                    collect_attachments(inner, depth + 1, out);
                }
            }
            // Unnamed text and inline parts are bodies, not attachments (CRATES §2.4 #2).
            PartType::Text(_) | PartType::Html(_) | PartType::InlineBinary(_)
                if name.is_none() && !disposed => {}
            PartType::Multipart(_) => {}
            _ => out.push(info(name.unwrap_or("unnamed").to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(raw: &str) -> MessageFacts {
        analyze(raw.as_bytes(), "sender@example.org").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn basic_headers() {
        let f = facts(
            "From: =?utf-8?q?Jos=C3=A9?= <Jose@Example.ORG>\r\nTo: a@x.com, Group: b@y.com, c@z.com;\r\n\
             Subject: Re: [#42] Printer broken\r\nMessage-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\n\
             References: <m0@x> <m1@x>\r\nDate: Thu, 1 Feb 2024 10:00:00 +0000\r\n\
             Thread-Index: AQHaVGJ3k2Fh2b5bQ0i4aGVsbG8gd29ybGQ=\r\nX-Loop: support@x.com\r\n\r\nbody\r\n",
        );
        assert_eq!(f.message_id.as_deref(), Some("m2@x"));
        assert_eq!(f.in_reply_to, vec!["m1@x"]);
        assert_eq!(f.references, vec!["m0@x", "m1@x"]);
        assert_eq!(f.subject_tag, Some(42));
        assert_eq!(f.subject_base, "printer broken");
        assert!(f.is_reply);
        let from = f.from.clone().unwrap_or_else(|| panic!("from"));
        assert_eq!(from.email, "jose@example.org");
        assert_eq!(from.name.as_deref(), Some("José"));
        assert_eq!(
            f.to.iter().map(|a| a.email.as_str()).collect::<Vec<_>>(),
            ["a@x.com", "b@y.com", "c@z.com"]
        );
        assert_eq!(f.date, Some(1_706_781_600));
        assert_eq!(f.thread_index.as_ref().map(Vec::len), Some(22));
        assert_eq!(f.x_loop, vec!["support@x.com"]);
        assert_eq!(f.auto, None);
        let s = summary(&f, Direction::In, "synth@teamgate");
        assert_eq!(s.message_id, "m2@x");
        assert_eq!(s.references, vec!["m1@x", "m0@x"]);
        assert!(!s.automatic);
    }

    #[test]
    fn content_digest_is_the_message_not_its_route() {
        let digest = |raw: &str| content_digest(&facts(raw), raw.as_bytes());
        let base = "From: a@b.org\r\nTo: s@t.example\r\nSubject: hi\r\nMessage-ID: <1@b.org>\r\n\r\nbody\r\n";
        let relayed = format!("Received: from backup-mx by us\r\n{base}");
        assert_eq!(
            digest(base),
            digest(&relayed),
            "a second route is the same message"
        );
        let typed = base.replace(
            "\r\n\r\n",
            "\r\nContent-Type: text/plain; charset=X-UNKNOWN\r\n\r\n",
        );
        assert_ne!(
            digest(base),
            digest(&typed),
            "how the body reads is content"
        );
        assert_ne!(digest(base), digest(&base.replace("body", "other")));
        assert_ne!(
            digest(base),
            digest(&base.replace("Subject: hi", "Subject: ho"))
        );
        assert_ne!(digest(base), digest(&base.replace("To: s@", "To: u@")));
        assert_eq!(digest(base).len(), 32);
        // No header section at all: the whole is the body.
        assert_ne!(digest("just text\r\n"), digest("other text\r\n"));
    }

    #[test]
    fn missing_message_id_uses_synthesized() {
        let f = facts("From: a@b.org\r\nSubject: hi\r\n\r\nx");
        assert_eq!(f.message_id, None);
        assert_eq!(summary(&f, Direction::In, "s@tg").message_id, "s@tg");
        assert!(!f.is_reply);
    }

    #[test]
    fn auto_signals() {
        let cases: &[(&str, &str, Option<AutoReason>)] = &[
            (
                "Auto-Submitted: auto-replied\r\n",
                "x@y",
                Some(AutoReason::AutoSubmitted("auto-replied".into())),
            ),
            (
                "auto-submitted: Auto-Generated; owner=x\r\n",
                "x@y",
                Some(AutoReason::AutoSubmitted("auto-generated".into())),
            ),
            ("Auto-Submitted: no\r\n", "x@y", None),
            (
                "Precedence: bulk\r\n",
                "x@y",
                Some(AutoReason::Precedence("bulk".into())),
            ),
            ("Precedence: first-class\r\n", "x@y", None),
            ("X-Autoreply: yes\r\n", "x@y", Some(AutoReason::XAutoreply)),
            (
                "X-Autorespond: yes\r\n",
                "x@y",
                Some(AutoReason::XAutorespond),
            ),
            ("X-Auto-Response-Suppress: All\r\n", "x@y", None),
            ("List-Id: <l.x.org>\r\n", "x@y", None),
            ("", "", Some(AutoReason::NullSender)),
            ("", "<>", Some(AutoReason::NullSender)),
            (
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
                "x@y",
                Some(AutoReason::MultipartReport),
            ),
        ];
        for (headers, env, want) in cases {
            let raw = format!("From: a@b.org\r\nSubject: s\r\n{headers}\r\nbody");
            let f = analyze(raw.as_bytes(), env).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&f.auto, want, "{headers:?} {env:?}");
        }
        let f = facts("From: MAILER-DAEMON@x.org\r\nSubject: failure\r\n\r\nx");
        assert_eq!(f.auto, Some(AutoReason::SystemSender));
        let f = facts("From: j@b.org\r\nSubject: AUTO: John is out of the office\r\n\r\nx");
        assert_eq!(f.auto, Some(AutoReason::AutoSubject));
        let f = facts("From: j@b.org\r\nSubject: Auto: my car\r\n\r\nx");
        assert_eq!(f.auto, None);
    }

    #[test]
    fn dsn_reports_original_id() {
        let raw = "From: MAILER-DAEMON@x.org\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n\
            --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x.org\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\n\r\n\
            --b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: agent@us.example\r\nMessage-ID: <orig-1@us.example>\r\nSubject: hi\r\n\r\n\
            --b--\r\n";
        let f = analyze(raw.as_bytes(), "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.auto, Some(AutoReason::NullSender));
        assert_eq!(
            f.dsn_reported_message_id.as_deref(),
            Some("orig-1@us.example")
        );
        assert_eq!(f.forward, None);
    }

    #[test]
    fn attachments_nested() {
        let raw = "From: a@b.org\r\nSubject: Fwd: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
            --o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
            --o\r\nContent-Type: message/rfc822\r\n\r\n\
            From: Customer <cust@c.example>\r\nSubject: invoice\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n\
            --i\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
            --i\r\nContent-Type: application/pdf; name=\"inv.pdf\"\r\nContent-Disposition: attachment; filename=\"inv.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n\
            --i--\r\n\r\n--o--\r\n";
        let f = facts(raw);
        let names: Vec<_> = f
            .attachments
            .iter()
            .map(|a| (a.name.as_str(), a.content_type.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("invoice.eml", "message/rfc822"),
                ("inv.pdf", "application/pdf")
            ]
        );
        assert_eq!(f.attachments.get(1).map(|a| a.size), Some(5));
        let fw = f.forward.clone().unwrap_or_else(|| panic!("forward"));
        assert_eq!(fw.original.email, "cust@c.example");
        assert_eq!(fw.source, crate::forward::ForwardSource::Attached);
        assert_eq!(fw.forwarder.map(|a| a.email).as_deref(), Some("a@b.org"));
    }

    /// Automatic-mail detection against the corpus `is_autoreply` labels.
    #[test]
    fn corpus_autoreplies() {
        // (tp, fp, fn, tn) for "any AutoReason" and for "machine generated".
        let mut any = [0u32; 4];
        let mut machine = [0u32; 4];
        let cell = |pred: bool, want: bool| match (pred, want) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        for row in crate::test_corpus::manifest() {
            let raw = crate::test_corpus::read(&row);
            let f = match analyze(&raw, &crate::test_corpus::envelope_sender(&raw)) {
                Ok(f) => f,
                // See corpus_forwards: mail-parser debug_assert, counted as "not automatic".
                Err(MessageError::ParserPanic) => {
                    let c = cell(false, row.is_autoreply);
                    for m in [&mut any, &mut machine] {
                        if let Some(x) = m.get_mut(c) {
                            *x += 1;
                        }
                    }
                    continue;
                }
                Err(e) => panic!("{}: {e}", row.path),
            };
            let m = f
                .auto
                .as_ref()
                .is_some_and(AutoReason::is_machine_generated);
            if let Some(c) = any.get_mut(cell(f.auto.is_some(), row.is_autoreply)) {
                *c += 1;
            }
            if let Some(c) = machine.get_mut(cell(m, row.is_autoreply)) {
                *c += 1;
            }
            if m != row.is_autoreply {
                println!(
                    "machine-generated mismatch: {} label={} kind={} got={:?}",
                    row.path, row.is_autoreply, row.auto_kind, f.auto
                );
            }
        }
        let show = |name: &str, [tp, fp, fn_, tn]: [u32; 4]| {
            let p = f64::from(tp) / f64::from((tp + fp).max(1));
            let r = f64::from(tp) / f64::from((tp + fn_).max(1));
            println!(
                "autoreply corpus ({name}): tp={tp} fp={fp} fn={fn_} tn={tn} precision={p:.3} recall={r:.3}"
            );
            (p, r)
        };
        show("any AutoReason", any);
        let (p, r) = show("machine generated", machine);
        assert!(p >= 0.85 && r >= 0.95, "autoreply detection regressed");
    }

    /// Truncated and bit-flipped corpus messages: analysis never panics.
    #[test]
    fn corpus_mutations_do_not_panic() {
        for row in crate::test_corpus::manifest() {
            let raw = crate::test_corpus::read(&row);
            let n = raw.len();
            for k in 1..8 {
                let cut = n * k / 8;
                let _ = analyze(raw.get(..cut).unwrap_or_default(), "x@y");
                let mut flipped = raw.clone();
                for i in (k * 7..n).step_by(n / 16 + 1) {
                    if let Some(b) = flipped.get_mut(i) {
                        *b ^= 0x5a;
                    }
                }
                let _ = analyze(&flipped, "");
            }
        }
    }

    #[test]
    fn garbage_input() {
        assert_eq!(analyze(b"", "x@y"), Err(MessageError::NoHeaders));
        assert_eq!(
            analyze(b"From x@y Wed Dec  2 12:00:00 2026\r\n  \r\n", "x@y"),
            Err(MessageError::NoHeaders)
        );
        // What an MTA accepts is read as far as it goes: a body with no fields at all.
        for headerless in [&b"no headers at all"[..], b"\r\n\r\n\r\n"] {
            let facts = analyze(headerless, "x@y").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(facts.message_id, None);
            assert_eq!(facts.subject, "");
        }
        // Fields after an mbox `From ` line or a line of spaces are read.
        for prefixed in [
            &b"From erin@customer.example Wed Dec  2 12:00:00 2026\r\n"[..],
            b"   \r\n",
        ] {
            let raw = [
                prefixed,
                b"Message-ID: <p@q>\r\nSubject: Hello\r\n\r\nx\r\n",
            ]
            .concat();
            let facts = analyze(&raw, "x@y").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(facts.message_id.as_deref(), Some("p@q"));
            assert_eq!(facts.subject, "Hello");
        }
        // Deep nesting and odd bytes: no panic, bounded.
        let mut raw = String::new();
        for i in 0..300 {
            raw.push_str(&format!(
                "From: a{i}@b.org\r\nContent-Type: message/rfc822\r\n\r\n"
            ));
        }
        raw.push_str("From: z@b.org\r\n\r\nend");
        let _ = analyze(raw.as_bytes(), "x@y");
        let mut bytes =
            b"From: a@b.org\r\nSubject: \xff\xfe\r\nThread-Index: !!!!\r\nReferences: <\r\n\r\n"
                .to_vec();
        bytes.extend(std::iter::repeat_n(0xffu8, 1000));
        let f = analyze(&bytes, "x@y").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.thread_index, None);
    }
}
