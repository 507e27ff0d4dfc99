//! The text SEARCH matches against (RFC 3501 §6.4.4), one copy for the scan that is the
//! reference (`imap/search.rs`) and for the full-text index (`fts`), so the index holds
//! exactly the strings the scan compares. Fed attacker-controlled bytes: never panics,
//! recursion bounded.

use mail_parser::{
    Header, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
    decoders::html::html_to_text, parsers::MessageStream,
};

/// Nested message/rfc822 levels whose text BODY and TEXT search.
const MAX_DEPTH: usize = 32;

/// The parsed message, or `None` when the bytes have no header at all.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    // mail-parser 0.11.9 has reachable `debug_assert!`s on malformed MIME (see
    // message.rs): treat a failure like a message without a header.
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
        .filter(|m| !m.parts.is_empty())
}

/// The decoded values of every top-level header called `name` (case-insensitive).
pub fn field_values<'m>(msg: &'m Message<'_>, name: &'m str) -> impl Iterator<Item = String> + 'm {
    let buf = msg.raw_message.as_ref();
    msg.parts
        .first()
        .map(|root| root.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .map(move |h| header_value(h, buf))
}

/// Decoded text of every text part (HTML as text) and every attachment's name, embedded
/// messages included; the raw bytes when they have no header.
pub fn body_text(msg: Option<&Message<'_>>, raw: &[u8]) -> String {
    match msg {
        Some(msg) => {
            let mut out = String::new();
            push_body_text(msg, 0, &mut out);
            out
        }
        None => String::from_utf8_lossy(raw).into_owned(),
    }
}

fn push_body_text(msg: &Message<'_>, depth: usize, out: &mut String) {
    for part in &msg.parts {
        match &part.body {
            PartType::Text(text) => {
                out.push_str(text);
                out.push('\n');
            }
            PartType::Html(html) => {
                out.push_str(&html_to_text(html));
                out.push('\n');
            }
            PartType::Message(inner) if depth < MAX_DEPTH => {
                out.push_str(&header_text(inner));
                push_body_text(inner, depth + 1, out);
            }
            // An attachment is found by its name, as agents look for "invoice.pdf".
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                if let Some(name) = part.attachment_name() {
                    out.push_str(name);
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
}

/// Every top-level header as `Name: decoded value` lines.
pub fn header_text(msg: &Message<'_>) -> String {
    let buf = msg.raw_message.as_ref();
    let mut out = String::new();
    for h in msg
        .parts
        .first()
        .map(|p| p.headers.as_slice())
        .unwrap_or_default()
    {
        out.push_str(h.name());
        out.push_str(": ");
        out.push_str(&header_value(h, buf));
        out.push('\n');
    }
    out
}

/// A header's value with RFC 2047 encoded-words decoded, plus the addresses mail-parser found
/// in it (which also decodes words inside quoted display names).
fn header_value(h: &Header<'_>, buf: &[u8]) -> String {
    let start = usize::try_from(h.offset_start).unwrap_or(usize::MAX);
    let end = usize::try_from(h.offset_end)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let raw = buf.get(start.min(end)..end).unwrap_or_default();
    let mut out = match MessageStream::new(raw).parse_unstructured() {
        HeaderValue::Text(text) => text.into_owned(),
        _ => String::from_utf8_lossy(raw).trim().to_string(),
    };
    if let HeaderValue::Address(addresses) = &h.value {
        for a in addresses.iter() {
            out.push('\n');
            out.push_str(a.name().unwrap_or_default());
            out.push_str(" <");
            out.push_str(a.address().unwrap_or_default());
            out.push('>');
        }
    }
    out
}

/// Whether `needle` (folded) is in a header or the text of the message (SEARCH TEXT).
pub fn text_contains(msg: Option<&Message<'_>>, raw: &[u8], needle: &str) -> bool {
    let header = msg.map(header_text).unwrap_or_default();
    contains_folded(&header, needle) || contains_folded(&body_text(msg, raw), needle)
}

/// The form both sides of a comparison take: a SEARCH string and the text it is looked
/// for in (Unicode lowercase; RFC 3501 leaves the folding to the server).
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Case-insensitive substring test; `needle` already [`fold`]ed. An empty needle is in
/// everything.
pub fn contains_folded(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || fold(haystack).contains(needle)
}
