//! ENVELOPE (RFC 3501 §7.4.2) from a message's header fields, and the IMAP strings that
//! header values become (BODYSTRUCTURE in `render.rs` uses them too). Pure; never panics.

use base64::Engine as _;
use imap_codec::imap_types::{
    core::{IString, NString, Quoted},
    envelope::{Address, Envelope},
};
use mail_parser::{Header, HeaderName, HeaderValue};

/// Longest UTF-8 payload per RFC 2047 encoded-word: 45 bytes are 60 base64 characters, plus the
/// 12 of `=?utf-8?b??=` stays under the 75-character limit of RFC 2047 §2.
const ENCODED_WORD_BYTES: usize = 45;

pub(super) fn envelope_of(headers: &[Header<'_>], buf: &[u8]) -> Envelope<'static> {
    let text = |name: HeaderName<'static>| opt_nstring(raw_value(headers, buf, &name));
    let addresses = |name: HeaderName<'static>| {
        headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| imap_addresses(&h.value))
            .unwrap_or_default()
    };
    let from = addresses(HeaderName::From);
    // RFC 3501 §7.4.2: an absent or empty Sender / Reply-To defaults to From.
    let or_from = |list: Vec<Address<'static>>| {
        if list.is_empty() { from.clone() } else { list }
    };
    Envelope {
        date: text(HeaderName::Date),
        subject: text(HeaderName::Subject),
        sender: or_from(addresses(HeaderName::Sender)),
        reply_to: or_from(addresses(HeaderName::ReplyTo)),
        to: addresses(HeaderName::To),
        cc: addresses(HeaderName::Cc),
        bcc: addresses(HeaderName::Bcc),
        in_reply_to: text(HeaderName::InReplyTo),
        message_id: text(HeaderName::MessageId),
        from,
    }
}

/// RFC 3501 §7.4.2 address list; a named group is framed by a `(NIL NIL "name" NIL)` start
/// and a `(NIL NIL NIL NIL)` end marker.
fn imap_addresses(value: &HeaderValue<'_>) -> Vec<Address<'static>> {
    let mut out = Vec::new();
    match value {
        HeaderValue::Address(mail_parser::Address::List(list)) => {
            out.extend(list.iter().filter_map(imap_address));
        }
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            for group in groups {
                // RFC 5322 §3.4: a group's members are mailboxes; a bare comment such as
                // `group: (foo) ;` leaves mail-parser an entry with no address: none.
                let members = group
                    .addresses
                    .iter()
                    .filter(|a| group.name.is_none() || a.address.is_some())
                    .filter_map(imap_address);
                match &group.name {
                    Some(name) => {
                        out.push(Address {
                            name: NString::NIL,
                            adl: NString::NIL,
                            mailbox: nstring(phrase(name).as_bytes()),
                            host: NString::NIL,
                        });
                        out.extend(members);
                        out.push(Address {
                            name: NString::NIL,
                            adl: NString::NIL,
                            mailbox: NString::NIL,
                            host: NString::NIL,
                        });
                    }
                    None => out.extend(members),
                }
            }
        }
        _ => {}
    }
    out
}

fn imap_address(addr: &mail_parser::Addr<'_>) -> Option<Address<'static>> {
    if addr.name.is_none() && addr.address.is_none() {
        return None;
    }
    // A non-NIL host keeps an address without a domain from reading as a group marker.
    let (mailbox, host) = match addr.address.as_deref() {
        Some(address) => address.rsplit_once('@').unwrap_or((address, "")),
        None => ("", ""),
    };
    // RFC 3501 §7.4.2: the source route (RFC 5322 §4.4 obs-route `@a,@b:`) is the adl.
    let (adl, mailbox) = match mailbox.strip_prefix('@').and(mailbox.split_once(':')) {
        Some((route, local)) => (nstring(route.as_bytes()), local),
        None => (NString::NIL, mailbox),
    };
    Some(Address {
        name: addr
            .name
            .as_deref()
            .map_or(NString::NIL, |name| nstring(phrase(name).as_bytes())),
        adl,
        mailbox: nstring(mailbox.as_bytes()),
        host: nstring(host.as_bytes()),
    })
}

/// `text` as is when it is printable ASCII, else as RFC 2047 `B` encoded-words in UTF-8.
pub(super) fn phrase(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return text.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in text.chars() {
        if chunk.len() + ch.len_utf8() > ENCODED_WORD_BYTES {
            words.push(encoded_word(&chunk));
            chunk.clear();
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(encoded_word(&chunk));
    }
    words.join(" ")
}

fn encoded_word(text: &str) -> String {
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// The first `name` header's raw value: unfolded, trimmed, NUL-free.
pub(super) fn raw_value(
    headers: &[Header<'_>],
    buf: &[u8],
    name: &HeaderName<'_>,
) -> Option<Vec<u8>> {
    headers.iter().find(|h| h.name == *name).map(|h| {
        let at = |n: u32| usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
        let (start, end) = (at(h.offset_start), at(h.offset_end));
        unfold(buf.get(start.min(end)..end).unwrap_or_default())
    })
}

/// RFC 5322 §2.2.3 unfolding (CR and LF dropped), then surrounding white space trimmed.
pub(super) fn unfold(value: &[u8]) -> Vec<u8> {
    let kept: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| !matches!(b, b'\r' | b'\n' | 0))
        .collect();
    kept.trim_ascii().to_vec()
}

/// An IMAP string: quoted when it can be, else a literal; NUL (never allowed) is dropped.
pub(super) fn istring(bytes: &[u8]) -> IString<'static> {
    let clean: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
    IString::try_from(clean).unwrap_or_else(|_| IString::from(Quoted::unvalidated("")))
}

pub(super) fn nstring(bytes: &[u8]) -> NString<'static> {
    NString(Some(istring(bytes)))
}

pub(super) fn opt_nstring(bytes: Option<Vec<u8>>) -> NString<'static> {
    bytes.map_or(NString::NIL, |b| nstring(&b))
}
