//! FETCH data rendered from one stored message (RFC 3501 §6.4.5, §7.4.2): ENVELOPE,
//! BODY / BODYSTRUCTURE and `BODY[section]<origin.length>`. Pure: bytes in, imap-types values
//! out. mail-parser finds the structure; sections are cut out of the stored bytes with its
//! offsets and never re-encoded. Fed attacker-controlled bytes: never panics, and recursion is
//! bounded by [`MAX_DEPTH`].

use std::borrow::Cow;

use base64::Engine as _;
use imap_codec::imap_types::{
    body::{
        BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    },
    core::{AString, IString, NString, Quoted, Vec1},
    envelope::{Address, Envelope},
    fetch::{Part, Section},
};
use mail_parser::{
    ContentType, Encoding, Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart,
    MimeHeaders, PartType,
};

/// Nesting levels (multipart and message/rfc822) rendered as structure; a part nested deeper is
/// described as an opaque `application/octet-stream` leaf.
const MAX_DEPTH: usize = 32;

/// Embedded messages are parsed again from their own bytes, breadth first, until this many
/// times the stored size (plus [`REPARSE_SLACK`]) has been parsed; the rest are described as
/// opaque leaves. Real forwards-of-forwards stay far below; a crafted deep nest cannot make one
/// FETCH parse [`MAX_DEPTH`] copies of a large message.
const REPARSE_FACTOR: usize = 4;
const REPARSE_SLACK: usize = 64 * 1024;

/// Longest UTF-8 payload per RFC 2047 encoded-word: 45 bytes are 60 base64 characters, plus the
/// 12 of `=?utf-8?b??=` stays under the 75-character limit of RFC 2047 §2.
const ENCODED_WORD_BYTES: usize = 45;

/// One stored message, parsed once, rendering any FETCH item.
#[derive(Debug)]
pub struct Rendered<'a> {
    raw: &'a [u8],
    /// `[0]` is the stored message. Each message/rfc822 part's message follows, parsed from
    /// exactly that part's bytes: mail-parser's own in-place reading of nested messages can
    /// overrun or misplace them on malformed MIME, and IMAP needs `n.HEADER` + `n.TEXT` to be
    /// exactly `BODY[n]`.
    messages: Vec<Embedded<'a>>,
}

#[derive(Debug)]
struct Embedded<'a> {
    /// The message's bytes: a slice of the stored bytes, or the decoded body of a
    /// transfer-encoded message/rfc822 part.
    bytes: Cow<'a, [u8]>,
    /// mail-parser's reading of `bytes`; `None` when they hold no header at all, and then all
    /// of `bytes` is the body under an empty header.
    msg: Option<Message<'a>>,
    /// `(index in msg.parts, index in Rendered::messages)` of each message/rfc822 part.
    nested: Vec<(usize, usize)>,
}

impl<'a> Embedded<'a> {
    fn parse(bytes: Cow<'a, [u8]>) -> Embedded<'a> {
        let msg = match &bytes {
            Cow::Borrowed(b) => parse(b),
            Cow::Owned(v) => parse(v).map(Message::into_owned),
        };
        Embedded {
            bytes,
            msg,
            nested: Vec::new(),
        }
    }

    /// The bytes of each message/rfc822 part's message, by part index.
    fn embedded_parts(&self) -> Vec<(usize, Cow<'a, [u8]>)> {
        let Some(msg) = &self.msg else {
            return Vec::new();
        };
        let mut in_digest = vec![false; msg.parts.len()];
        for part in &msg.parts {
            if let PartType::Multipart(ids) = &part.body
                && media(part, false).1 == "digest"
            {
                for id in ids {
                    if let Some(flag) = usize::try_from(*id).ok().and_then(|i| in_digest.get_mut(i))
                    {
                        *flag = true;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (index, (part, digest)) in msg.parts.iter().zip(in_digest).enumerate() {
            if matches!(part.body, PartType::Multipart(_)) || !is_rfc822(part, digest) {
                continue;
            }
            let (start, end) = (
                to_usize(part.offset_body),
                part_end(part, index == 0, &self.bytes),
            );
            let bytes = match (&self.bytes, part.encoding) {
                (Cow::Borrowed(b), Encoding::None) => Cow::Borrowed(slice(b, start, end)),
                (Cow::Owned(v), Encoding::None) => Cow::Owned(slice(v, start, end).to_vec()),
                // mail-parser decoded a transfer-encoded message/rfc822 for us.
                (_, _) => Cow::Owned(match &part.body {
                    PartType::Message(inner) => inner.raw_message.to_vec(),
                    _ => part.contents().to_vec(),
                }),
            };
            out.push((index, bytes));
        }
        out
    }
}

fn parse(bytes: &[u8]) -> Option<Message<'_>> {
    // mail-parser 0.11.9 has reachable `debug_assert!`s on malformed MIME (see message.rs); a
    // failure here degrades to "no header" rather than a panic.
    std::panic::catch_unwind(|| MessageParser::default().parse(bytes))
        .ok()
        .flatten()
        .filter(|m| !m.parts.is_empty())
}

impl<'a> Rendered<'a> {
    pub fn new(raw: &'a [u8]) -> Rendered<'a> {
        let mut messages = vec![Embedded::parse(Cow::Borrowed(raw))];
        let mut levels = vec![0];
        let mut budget = raw
            .len()
            .saturating_mul(REPARSE_FACTOR)
            .saturating_add(REPARSE_SLACK);
        let mut i = 0;
        while let (Some(current), Some(&level)) = (messages.get(i), levels.get(i)) {
            let found = if level < MAX_DEPTH {
                current.embedded_parts()
            } else {
                Vec::new()
            };
            for (part, bytes) in found {
                let Some(left) = budget.checked_sub(bytes.len()) else {
                    break;
                };
                budget = left;
                let j = messages.len();
                messages.push(Embedded::parse(bytes));
                levels.push(level + 1);
                if let Some(current) = messages.get_mut(i) {
                    current.nested.push((part, j));
                }
            }
            i += 1;
        }
        Rendered { raw, messages }
    }

    /// RFC822.SIZE: the stored byte count.
    pub fn size(&self) -> u32 {
        len_u32(self.raw)
    }

    /// The ENVELOPE of the message (RFC 3501 §7.4.2).
    pub fn envelope(&self) -> Envelope<'static> {
        self.top().envelope()
    }

    /// BODYSTRUCTURE (`extended`) or BODY (no extension data).
    pub fn body_structure(&self, extended: bool) -> BodyStructure<'static> {
        let top = self.top();
        match top.root() {
            Some(root) => structure(root, extended, 0),
            None => plain_text(top.buf(), extended),
        }
    }

    /// The bytes of `BODY[section]`; `None` is the whole message. A section naming a part that
    /// does not exist is empty.
    pub fn section(&self, section: Option<&Section<'_>>) -> Vec<u8> {
        let Some(section) = section else {
            return self.raw.to_vec();
        };
        let top = self.top();
        let out = match section {
            Section::Part(path) => resolve(top, path).map(|node| node.body().to_vec()),
            Section::Mime(path) => resolve(top, path).map(|node| node.header().to_vec()),
            Section::Header(path) => message_at(top, path.as_ref()).map(|m| m.header().to_vec()),
            Section::Text(path) => message_at(top, path.as_ref()).map(|m| m.text().to_vec()),
            Section::HeaderFields(path, names) => {
                message_at(top, path.as_ref()).map(|m| header_fields(m, names.as_ref(), true))
            }
            Section::HeaderFieldsNot(path, names) => {
                message_at(top, path.as_ref()).map(|m| header_fields(m, names.as_ref(), false))
            }
        };
        out.unwrap_or_default()
    }

    fn top(&self) -> MsgView<'_> {
        MsgView {
            all: &self.messages,
            index: 0,
        }
    }
}

/// `<origin.length>` partial fetch (RFC 3501 §6.4.5): at most `length` bytes from `origin`,
/// empty when `origin` is past the end.
pub fn partial(bytes: &[u8], origin: u32, length: u32) -> &[u8] {
    let start = to_usize(origin);
    slice(bytes, start, start.saturating_add(to_usize(length)))
}

/// One message of [`Rendered::messages`].
#[derive(Clone, Copy)]
struct MsgView<'m> {
    all: &'m [Embedded<'m>],
    index: usize,
}

impl<'m> MsgView<'m> {
    fn buf(self) -> &'m [u8] {
        self.all.get(self.index).map_or(&[], |e| e.bytes.as_ref())
    }

    fn root(self) -> Option<PartView<'m>> {
        let msg = self.all.get(self.index)?.msg.as_ref()?;
        msg.parts.first().map(|part| PartView {
            view: self,
            msg,
            index: 0,
            part,
            in_digest: false,
        })
    }

    /// The parts numbered 1, 2, … in this message (RFC 3501 §6.4.5): the children of a
    /// multipart body, else the body itself as part 1.
    fn children(self) -> Vec<Node<'m>> {
        match self.root() {
            Some(root) if matches!(root.part.body, PartType::Multipart(_)) => root.children(),
            Some(root) => vec![Node::Part(root)],
            None => vec![Node::Bare(self)],
        }
    }

    /// The header, blank line included (empty without a header).
    fn header(self) -> &'m [u8] {
        self.root().map_or(&[], PartView::header)
    }

    /// Everything after the header.
    fn text(self) -> &'m [u8] {
        self.root().map_or(self.buf(), PartView::body)
    }

    fn envelope(self) -> Envelope<'static> {
        let headers = self.root().map(|r| r.part.headers.as_slice());
        envelope_of(headers.unwrap_or_default(), self.buf())
    }
}

/// What a numeric section path names.
#[derive(Clone, Copy)]
enum Node<'m> {
    Part(PartView<'m>),
    /// The body of a message without a header: all of its bytes.
    Bare(MsgView<'m>),
}

impl<'m> Node<'m> {
    fn header(self) -> &'m [u8] {
        match self {
            Node::Part(pv) => pv.header(),
            Node::Bare(_) => &[],
        }
    }

    fn body(self) -> &'m [u8] {
        match self {
            Node::Part(pv) => pv.body(),
            Node::Bare(m) => m.buf(),
        }
    }

    fn children(self) -> Vec<Node<'m>> {
        match self {
            Node::Part(pv) => pv.children(),
            Node::Bare(_) => Vec::new(),
        }
    }

    fn embedded(self) -> Option<MsgView<'m>> {
        match self {
            Node::Part(pv) => pv.embedded(),
            Node::Bare(_) => None,
        }
    }
}

/// One MIME part of a message.
#[derive(Clone, Copy)]
struct PartView<'m> {
    view: MsgView<'m>,
    msg: &'m Message<'m>,
    /// Position in `msg.parts`; 0 is the message's top part, whose body runs to its end.
    index: usize,
    part: &'m MessagePart<'m>,
    /// A child of multipart/digest, where the default type is message/rfc822 (RFC 2046 §5.1.5).
    in_digest: bool,
}

impl<'m> PartView<'m> {
    /// The part's MIME header, blank line included.
    fn header(self) -> &'m [u8] {
        let end = to_usize(self.part.offset_body).min(self.end());
        slice(self.view.buf(), to_usize(self.part.offset_header), end)
    }

    /// The part's body in its transfer encoding.
    fn body(self) -> &'m [u8] {
        slice(self.view.buf(), to_usize(self.part.offset_body), self.end())
    }

    fn end(self) -> usize {
        part_end(self.part, self.index == 0, self.view.buf())
    }

    /// The Content-Type, when it is a valid `type/subtype`.
    fn declared(self) -> Option<&'m ContentType<'m>> {
        declared(self.part)
    }

    fn media(self) -> (String, String) {
        media(self.part, self.in_digest)
    }

    /// The embedded message of a message/rfc822 part (none beyond [`MAX_DEPTH`]).
    fn embedded(self) -> Option<MsgView<'m>> {
        let (_, index) = self
            .view
            .all
            .get(self.view.index)?
            .nested
            .iter()
            .find(|(part, _)| *part == self.index)?;
        Some(MsgView {
            all: self.view.all,
            index: *index,
        })
    }

    /// Sub-parts numbered 1, 2, … below this part.
    fn children(self) -> Vec<Node<'m>> {
        match &self.part.body {
            PartType::Multipart(ids) => {
                let in_digest = self.media().1 == "digest";
                ids.iter()
                    .filter_map(|&id| usize::try_from(id).ok())
                    .filter(|&index| index != self.index)
                    .filter_map(|index| {
                        Some(Node::Part(PartView {
                            view: self.view,
                            msg: self.msg,
                            index,
                            part: self.msg.parts.get(index)?,
                            in_digest,
                        }))
                    })
                    .collect()
            }
            _ => self.embedded().map(MsgView::children).unwrap_or_default(),
        }
    }

    /// The raw value of the first `name` header of this part.
    fn raw(self, name: HeaderName<'static>) -> Option<Vec<u8>> {
        raw_value(&self.part.headers, self.view.buf(), &name)
    }
}

/// Where a part ends in its message's bytes: the message's top part runs to the end.
fn part_end(part: &MessagePart<'_>, top: bool, buf: &[u8]) -> usize {
    if top {
        return buf.len();
    }
    let end = to_usize(part.offset_end).min(buf.len());
    // mail-parser 0.11.9 runs an unencoded message/rfc822 part on into the next boundary when
    // one boundary closes two nested messages; its own reading of the embedded message ends
    // in the right place.
    match (&part.body, part.encoding) {
        (PartType::Message(inner), Encoding::None) => inner
            .parts
            .first()
            .map_or(end, |root| end.min(to_usize(root.offset_end))),
        _ => end,
    }
}

/// The Content-Type, when it is a valid `type/subtype`.
fn declared<'m>(part: &'m MessagePart<'m>) -> Option<&'m ContentType<'m>> {
    part.content_type().filter(|ct| ct.subtype().is_some())
}

/// Lower-case media type and subtype, with the RFC 2045 §5.2 / RFC 2046 §5.1.5 defaults.
fn media(part: &MessagePart<'_>, in_digest: bool) -> (String, String) {
    match declared(part) {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase(),
        ),
        None if in_digest => ("message".into(), "rfc822".into()),
        None => ("text".into(), "plain".into()),
    }
}

fn is_rfc822(part: &MessagePart<'_>, in_digest: bool) -> bool {
    let (ty, subtype) = media(part, in_digest);
    ty == "message" && subtype == "rfc822"
}

/// The part a numeric section path names, if it exists.
fn resolve<'m>(top: MsgView<'m>, path: &Part) -> Option<Node<'m>> {
    let mut current: Option<Node<'m>> = None;
    for n in path.0.as_ref() {
        let children = match current {
            Some(node) => node.children(),
            None => top.children(),
        };
        let index = usize::try_from(n.get()).ok()?.checked_sub(1)?;
        current = Some(*children.get(index)?);
    }
    current
}

/// The message whose HEADER / TEXT a section names: the stored one, or the message/rfc822 part
/// at `path` (RFC 3501 §6.4.5; any other part type has none).
fn message_at<'m>(top: MsgView<'m>, path: Option<&Part>) -> Option<MsgView<'m>> {
    match path {
        None => Some(top),
        Some(path) => resolve(top, path)?.embedded(),
    }
}

/// HEADER.FIELDS (`keep`) or HEADER.FIELDS.NOT: the original header lines, folding kept, then
/// the blank line that ends a header.
fn header_fields(msg: MsgView<'_>, names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(root) = msg.root() {
        for h in &root.part.headers {
            let listed = names
                .iter()
                .any(|n| n.as_ref().eq_ignore_ascii_case(h.name().as_bytes()));
            if listed == keep {
                let line = slice(
                    root.header(),
                    to_usize(h.offset_field).saturating_sub(to_usize(root.part.offset_header)),
                    to_usize(h.offset_end).saturating_sub(to_usize(root.part.offset_header)),
                );
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn structure(pv: PartView<'_>, extended: bool, depth: usize) -> BodyStructure<'static> {
    let (ty, subtype) = pv.media();
    if depth < MAX_DEPTH {
        if let PartType::Multipart(_) = pv.part.body {
            let bodies: Vec<_> = pv
                .children()
                .into_iter()
                .filter_map(|child| match child {
                    Node::Part(child) => Some(structure(child, extended, depth + 1)),
                    Node::Bare(_) => None,
                })
                .collect();
            // RFC 3501 §7.4.2 needs at least one body: an empty multipart shows one empty part.
            let bodies =
                Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(plain_text(b"", extended)));
            let subtype = if ty == "multipart" {
                subtype
            } else {
                "mixed".into()
            };
            return BodyStructure::Multi {
                bodies,
                subtype: istring(subtype.as_bytes()),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(pv.declared()),
                    tail: Some(disposition_tail(pv)),
                }),
            };
        }
        if let Some(inner) = pv.embedded() {
            let body_structure = match inner.root() {
                Some(root) => structure(root, extended, depth + 1),
                None => plain_text(inner.buf(), extended),
            };
            let specific = SpecificFields::Message {
                envelope: Box::new(inner.envelope()),
                body_structure: Box::new(body_structure),
                number_of_lines: count_lines(pv.body()),
            };
            return single(pv, extended, specific, params(pv.declared()));
        }
    }
    // A multipart or message/rfc822 that mail-parser could not take apart (no boundary), or
    // one nested too deeply or past the parse budget: RFC 3501 has no leaf form for those.
    let (ty, subtype) = match (ty.as_str(), subtype.as_str()) {
        ("multipart", _) => ("text".to_string(), "plain".to_string()),
        ("message", "rfc822") => ("application".to_string(), "octet-stream".to_string()),
        _ => (ty, subtype),
    };
    let mut parameter_list = params(pv.declared());
    if pv.declared().is_none() && ty == "text" {
        parameter_list.push(default_charset());
    }
    let specific = if ty == "text" {
        SpecificFields::Text {
            subtype: istring(subtype.as_bytes()),
            number_of_lines: count_lines(pv.body()),
        }
    } else {
        SpecificFields::Basic {
            r#type: istring(ty.as_bytes()),
            subtype: istring(subtype.as_bytes()),
        }
    };
    single(pv, extended, specific, parameter_list)
}

fn single(
    pv: PartView<'_>,
    extended: bool,
    specific: SpecificFields<'static>,
    parameter_list: Vec<(IString<'static>, IString<'static>)>,
) -> BodyStructure<'static> {
    let encoding = pv
        .raw(HeaderName::ContentTransferEncoding)
        .unwrap_or_else(|| b"7bit".to_vec());
    let basic = BasicFields {
        parameter_list,
        id: opt_nstring(pv.raw(HeaderName::ContentId)),
        description: opt_nstring(pv.raw(HeaderName::ContentDescription)),
        content_transfer_encoding: istring(&encoding),
        size: len_u32(pv.body()),
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: opt_nstring(pv.raw(HeaderName::ContentMd5)),
            tail: Some(disposition_tail(pv)),
        }),
    }
}

/// A text/plain leaf without MIME header fields (RFC 2045 §5.2 defaults).
fn plain_text(body: &[u8], extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![default_charset()],
                id: NString::NIL,
                description: NString::NIL,
                content_transfer_encoding: istring(b"7bit"),
                size: len_u32(body),
            },
            specific: SpecificFields::Text {
                subtype: istring(b"plain"),
                number_of_lines: count_lines(body),
            },
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString::NIL,
            tail: Some(Disposition {
                disposition: None,
                tail: Some(Language {
                    language: Vec::new(),
                    tail: Some(Location {
                        location: NString::NIL,
                        extensions: Vec::new(),
                    }),
                }),
            }),
        }),
    }
}

fn default_charset() -> (IString<'static>, IString<'static>) {
    (istring(b"charset"), istring(b"us-ascii"))
}

/// body-fld-dsp, body-fld-lang and body-fld-loc, shared by single and multipart extensions.
fn disposition_tail(pv: PartView<'_>) -> Disposition<'static> {
    let disposition = pv
        .part
        .content_disposition()
        .map(|d| (istring(d.ctype().as_bytes()), params(Some(d))));
    let language = pv
        .raw(HeaderName::ContentLanguage)
        .map(|v| {
            v.split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|tag| !tag.is_empty())
                .map(istring)
                .collect()
        })
        .unwrap_or_default();
    Disposition {
        disposition,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location: opt_nstring(pv.raw(HeaderName::ContentLocation)),
                extensions: Vec::new(),
            }),
        }),
    }
}

/// Content-Type / Content-Disposition parameters as decoded by mail-parser (RFC 2231
/// continuations joined); non-ASCII values go out as RFC 2047 encoded-words.
fn params(ct: Option<&ContentType<'_>>) -> Vec<(IString<'static>, IString<'static>)> {
    ct.and_then(ContentType::attributes)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                istring(a.name.as_bytes()),
                istring(phrase(&a.value).as_bytes()),
            )
        })
        .collect()
}

fn envelope_of(headers: &[Header<'_>], buf: &[u8]) -> Envelope<'static> {
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
                let members = group.addresses.iter().filter_map(imap_address);
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
    Some(Address {
        name: addr
            .name
            .as_deref()
            .map_or(NString::NIL, |name| nstring(phrase(name).as_bytes())),
        adl: NString::NIL,
        mailbox: nstring(mailbox.as_bytes()),
        host: nstring(host.as_bytes()),
    })
}

/// `text` as is when it is printable ASCII, else as RFC 2047 `B` encoded-words in UTF-8.
fn phrase(text: &str) -> String {
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
fn raw_value(headers: &[Header<'_>], buf: &[u8], name: &HeaderName<'_>) -> Option<Vec<u8>> {
    headers
        .iter()
        .find(|h| h.name == *name)
        .map(|h| unfold(slice_u32(buf, h.offset_start, h.offset_end)))
}

/// RFC 5322 §2.2.3 unfolding (CR and LF dropped), then surrounding white space trimmed.
fn unfold(value: &[u8]) -> Vec<u8> {
    let kept: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| !matches!(b, b'\r' | b'\n' | 0))
        .collect();
    kept.trim_ascii().to_vec()
}

/// An IMAP string: quoted when it can be, else a literal; NUL (never allowed) is dropped.
fn istring(bytes: &[u8]) -> IString<'static> {
    let clean: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
    IString::try_from(clean).unwrap_or_else(|_| IString::from(Quoted::unvalidated("")))
}

fn nstring(bytes: &[u8]) -> NString<'static> {
    NString(Some(istring(bytes)))
}

fn opt_nstring(bytes: Option<Vec<u8>>) -> NString<'static> {
    bytes.map_or(NString::NIL, |b| nstring(&b))
}

/// Lines of a body: its LFs, plus an unterminated last line (the CRLF before a boundary
/// belongs to the boundary, RFC 2046 §5.1.1).
fn count_lines(body: &[u8]) -> u32 {
    let lfs = body.iter().filter(|&&b| b == b'\n').count();
    let lines = if body.is_empty() || body.ends_with(b"\n") {
        lfs
    } else {
        lfs + 1
    };
    u32::try_from(lines).unwrap_or(u32::MAX)
}

fn len_u32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

fn slice(bytes: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(bytes.len());
    bytes.get(start.min(end)..end).unwrap_or_default()
}

fn slice_u32(bytes: &[u8], start: u32, end: u32) -> &[u8] {
    slice(bytes, to_usize(start), to_usize(end))
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use imap_codec::{
        CommandCodec, ResponseCodec,
        decode::Decoder,
        encode::Encoder,
        imap_types::{
            command::CommandBody,
            fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
            response::{Data, Response},
            search::SearchKey,
        },
    };

    use super::*;
    use crate::imap::search::{Candidate, matches};

    /// multipart/mixed: 1 = alternative (1.1 text/plain, 1.2 text/html), 2 = attachment,
    /// 3 = message/rfc822 with a single-part body.
    const MIXED: &str = "From: =?utf-8?q?J=C3=B6rg?= Doe <jorg@example.com>
To: Support <support@example.org>, \"Smith, Ann\" <ann@example.net>
Cc: team: bob@example.org, carol@example.org;
Date: Tue, 03 Mar 2026 10:15:00 +0100
Subject: =?utf-8?q?Caf=C3=A9?= order
 #42
Message-ID: <m1@example.com>
In-Reply-To: <m0@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer\"

This is a MIME preamble.
--outer
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello caf=C3=A9,
see attachment.
--alt
Content-Type: text/html; charset=utf-8

<p>Hello <b>cafe</b> lovers</p>
--alt--

--outer
Content-Type: application/pdf; name=\"invoice.pdf\"
Content-Disposition: attachment; filename=\"invoice.pdf\"
Content-Transfer-Encoding: base64
Content-ID: <att1@example.com>
Content-Description: The invoice
Content-Language: en, de

JVBERi0xLjQK
--outer
Content-Type: message/rfc822

From: Bob <bob@example.org>
To: jorg@example.com
Subject: Inner note
Date: Mon, 02 Mar 2026 09:00:00 +0000
Message-ID: <inner@example.org>

Inner body line 1
Inner body line 2
--outer--
";

    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    fn fetch_line(item: MessageDataItem<'static>) -> Vec<u8> {
        let response = Response::Data(Data::Fetch {
            seq: NonZeroU32::MIN,
            items: Vec1::from(item),
        });
        ResponseCodec::default().encode(&response).dump()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Decodes `line` as a response and returns its single FETCH item.
    fn reparse(line: &[u8]) -> Result<MessageDataItem<'static>, String> {
        match ResponseCodec::default().decode_static(line) {
            Ok(([], Response::Data(Data::Fetch { items, .. }))) => items
                .into_iter()
                .next()
                .ok_or_else(|| "no item".to_string()),
            Ok(other) => Err(format!("unexpected {other:?}")),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    /// `BODY[<spec>]` as imap-codec decodes it from a command.
    fn sec(spec: &str) -> Option<Section<'static>> {
        let line = format!("a FETCH 1 BODY[{spec}]\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .expect(spec);
        match cmd.body {
            CommandBody::Fetch {
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
                ..
            } => match names.into_iter().next() {
                Some(MessageDataItemName::BodyExt { section, .. }) => section,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn section(r: &Rendered<'_>, spec: &str) -> String {
        text(&r.section(sec(spec).as_ref()))
    }

    const INNER_ENVELOPE: &str = "(\"Mon, 02 Mar 2026 09:00:00 +0000\" \"Inner note\" \
        ((\"Bob\" NIL \"bob\" \"example.org\")) ((\"Bob\" NIL \"bob\" \"example.org\")) \
        ((\"Bob\" NIL \"bob\" \"example.org\")) ((NIL NIL \"jorg\" \"example.com\")) \
        NIL NIL NIL \"<inner@example.org>\")";

    #[test]
    fn envelope_of_mixed_message() {
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        let line = fetch_line(MessageDataItem::Envelope(r.envelope()));
        let from = "((\"=?utf-8?b?SsO2cmcgRG9l?=\" NIL \"jorg\" \"example.com\"))";
        let expected = format!(
            "* 1 FETCH (ENVELOPE (\"Tue, 03 Mar 2026 10:15:00 +0100\" \
             \"=?utf-8?q?Caf=C3=A9?= order #42\" {from} {from} {from} \
             ((\"Support\" NIL \"support\" \"example.org\")(\"Smith, Ann\" NIL \"ann\" \"example.net\")) \
             ((NIL NIL \"team\" NIL)(NIL NIL \"bob\" \"example.org\")(NIL NIL \"carol\" \"example.org\")(NIL NIL NIL NIL)) \
             NIL \"<m0@example.com>\" \"<m1@example.com>\"))\r\n"
        );
        assert_eq!(text(&line), expected);
        assert_eq!(reparse(&line), Ok(MessageDataItem::Envelope(r.envelope())));
    }

    #[test]
    fn bodystructure_of_mixed_message() {
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        let line = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
        let expected = format!(
            "* 1 FETCH (BODYSTRUCTURE (\
             ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 33 2 NIL NIL NIL NIL)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 31 1 NIL NIL NIL NIL) \
             \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL)\
             (\"application\" \"pdf\" (\"name\" \"invoice.pdf\") \"<att1@example.com>\" \"The invoice\" \
             \"base64\" 12 NIL (\"attachment\" (\"filename\" \"invoice.pdf\")) (\"en\" \"de\") NIL)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 182 {INNER_ENVELOPE} \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 36 2 NIL NIL NIL NIL) 8 \
             NIL NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL))\r\n"
        );
        assert_eq!(text(&line), expected);
        assert_eq!(
            reparse(&line),
            Ok(MessageDataItem::BodyStructure(r.body_structure(true)))
        );
    }

    #[test]
    fn body_of_mixed_message_has_no_extension_data() {
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        let line = fetch_line(MessageDataItem::Body(r.body_structure(false)));
        let expected = format!(
            "* 1 FETCH (BODY (\
             ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 33 2)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 31 1) \"alternative\")\
             (\"application\" \"pdf\" (\"name\" \"invoice.pdf\") \"<att1@example.com>\" \"The invoice\" \
             \"base64\" 12)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 182 {INNER_ENVELOPE} \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 36 2) 8) \
             \"mixed\"))\r\n"
        );
        assert_eq!(text(&line), expected);
        assert_eq!(
            reparse(&line),
            Ok(MessageDataItem::Body(r.body_structure(false)))
        );
    }

    #[test]
    fn sections_of_mixed_message() {
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        let all = text(&raw);
        let (header, body) = all.split_once("\r\n\r\n").expect("blank line");
        assert_eq!(text(&r.section(None)), all);
        assert_eq!(section(&r, ""), all);
        assert_eq!(section(&r, "HEADER"), format!("{header}\r\n\r\n"));
        assert_eq!(section(&r, "TEXT"), body);
        assert!(section(&r, "1").starts_with("--alt\r\nContent-Type: text/plain"));
        assert!(section(&r, "1").ends_with("lovers</p>\r\n--alt--\r\n"));
        assert_eq!(section(&r, "1.1"), "Hello caf=C3=A9,\r\nsee attachment.");
        assert_eq!(section(&r, "1.2"), "<p>Hello <b>cafe</b> lovers</p>");
        assert_eq!(
            section(&r, "1.2.MIME"),
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
        );
        assert_eq!(section(&r, "2"), "JVBERi0xLjQK");
        assert_eq!(
            section(&r, "2.MIME"),
            "Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-ID: <att1@example.com>\r\n\
             Content-Description: The invoice\r\n\
             Content-Language: en, de\r\n\r\n"
        );
        let inner_header = "From: Bob <bob@example.org>\r\nTo: jorg@example.com\r\n\
             Subject: Inner note\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\n\
             Message-ID: <inner@example.org>\r\n\r\n";
        let inner_body = "Inner body line 1\r\nInner body line 2";
        assert_eq!(section(&r, "3"), format!("{inner_header}{inner_body}"));
        assert_eq!(
            section(&r, "3.MIME"),
            "Content-Type: message/rfc822\r\n\r\n"
        );
        assert_eq!(section(&r, "3.HEADER"), inner_header);
        assert_eq!(section(&r, "3.TEXT"), inner_body);
        assert_eq!(section(&r, "3.1"), inner_body);
        assert_eq!(
            section(&r, "3.HEADER.FIELDS (SUBJECT)"),
            "Subject: Inner note\r\n\r\n"
        );
        // Parts that do not exist, and HEADER/TEXT of parts that are not message/rfc822.
        for missing in [
            "4", "1.3", "2.1", "2.HEADER", "1.TEXT", "3.2", "3.1.1", "9.9.MIME",
        ] {
            assert_eq!(section(&r, missing), "", "{missing}");
        }
    }

    #[test]
    fn header_fields_keep_original_lines_and_folding() {
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        assert_eq!(
            section(&r, "HEADER.FIELDS (From Subject)"),
            "From: =?utf-8?q?J=C3=B6rg?= Doe <jorg@example.com>\r\n\
             Subject: =?utf-8?q?Caf=C3=A9?= order\r\n #42\r\n\r\n"
        );
        assert_eq!(
            section(
                &r,
                "HEADER.FIELDS.NOT (from subject to cc date message-id in-reply-to)"
            ),
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
        );
        assert_eq!(section(&r, "HEADER.FIELDS (X-None)"), "\r\n");
    }

    #[test]
    fn partial_fetch_is_clamped() {
        assert_eq!(partial(b"0123456789", 0, 4), b"0123");
        assert_eq!(partial(b"0123456789", 8, 4), b"89");
        assert_eq!(partial(b"0123456789", 10, 4), b"");
        assert_eq!(partial(b"0123456789", u32::MAX, u32::MAX), b"");
        assert_eq!(partial(b"0123456789", 3, u32::MAX), b"3456789");
        let raw = crlf(MIXED);
        let r = Rendered::new(&raw);
        assert_eq!(partial(&r.section(sec("1.1").as_ref()), 6, 9), b"caf=C3=A9");
        assert_eq!(r.size(), 1187);
    }

    #[test]
    fn single_part_message_numbers_its_body_as_part_one() {
        let raw = crlf("Subject: hi\nX-Thing: a\n\nline one\nline two\n");
        let r = Rendered::new(&raw);
        assert_eq!(section(&r, "1"), "line one\r\nline two\r\n");
        assert_eq!(section(&r, "TEXT"), "line one\r\nline two\r\n");
        assert_eq!(section(&r, "1.MIME"), "Subject: hi\r\nX-Thing: a\r\n\r\n");
        assert_eq!(section(&r, "2"), "");
        assert_eq!(section(&r, "1.1"), "");
        assert_eq!(
            text(&fetch_line(MessageDataItem::BodyStructure(
                r.body_structure(true)
            ))),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
             \"7bit\" 20 2 NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn input_without_header_is_a_plain_body() {
        let r = Rendered::new(b"");
        assert_eq!(r.size(), 0);
        assert_eq!(section(&r, "HEADER"), "");
        assert_eq!(section(&r, "HEADER.FIELDS (From)"), "\r\n");
        let line = fetch_line(MessageDataItem::Envelope(r.envelope()));
        assert_eq!(
            text(&line),
            "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
        );
        let line = fetch_line(MessageDataItem::Body(r.body_structure(false)));
        assert_eq!(
            text(&line),
            "* 1 FETCH (BODY (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0))\r\n"
        );
    }

    #[test]
    fn hostile_header_values_still_render() {
        let mut raw = b"From: \"A\x00B\" <a@b.c>\r\nSender: \r\nSubject: bad \x00\x01\x7f \xff\xfe caf\xc3\xa9\r\n\
            Date: \"quoted\\\\\"\r\nTo: undisclosed-recipients:;\r\nCc: nodomain\r\n\
            Message-ID: {5}\r\n\r\nbody"
            .to_vec();
        raw.extend_from_slice(&[0, 0xff, b'\n']);
        let r = Rendered::new(&raw);
        let envelope = r.envelope();
        let line = fetch_line(MessageDataItem::Envelope(envelope.clone()));
        assert_eq!(
            reparse(&line),
            Ok(MessageDataItem::Envelope(envelope.clone()))
        );
        // Sender present but empty defaults to From; the empty group keeps its markers.
        assert_eq!(envelope.sender, envelope.from);
        assert_eq!(envelope.to.len(), 2);
        assert_eq!(envelope.to[1].mailbox, NString::NIL);
        assert!(
            text(&line).contains("{15}\r\nbad \x01\x7f"),
            "{}",
            text(&line)
        );
        let bs = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
        assert!(reparse(&bs).is_ok());
    }

    #[test]
    fn digest_parts_default_to_message_rfc822() {
        let raw = crlf(
            "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n--d\n\
             Content-Type: text/plain\n\nsecond\n--d--\n",
        );
        let r = Rendered::new(&raw);
        let line = text(&fetch_line(MessageDataItem::Body(r.body_structure(false))));
        assert_eq!(
            line,
            "* 1 FETCH (BODY ((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 21 \
             (NIL \"one\" NIL NIL NIL NIL NIL NIL NIL NIL) \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1) 3)\
             (\"TEXT\" \"plain\" NIL NIL NIL \"7bit\" 6 1) \"digest\"))\r\n"
        );
        assert_eq!(section(&r, "1.HEADER"), "Subject: one\r\n\r\n");
        assert_eq!(section(&r, "1.1"), "first");
    }

    #[test]
    fn base64_message_rfc822_is_described_from_its_decoded_body() {
        let raw = crlf(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\
             Content-Transfer-Encoding: base64\n\nU3ViamVjdDogZW5jCgpoaWRkZW4K\n--b--\n",
        );
        let r = Rendered::new(&raw);
        assert_eq!(section(&r, "1"), "U3ViamVjdDogZW5jCgpoaWRkZW4K");
        assert_eq!(section(&r, "1.HEADER"), "Subject: enc\n\n");
        assert_eq!(section(&r, "1.TEXT"), "hidden\n");
        let line = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
        assert!(
            text(&line).contains("\"base64\" 28 (NIL \"enc\" "),
            "{}",
            text(&line)
        );
        assert!(reparse(&line).is_ok());
    }

    #[test]
    fn multipart_without_boundary_is_text() {
        let raw = crlf("Content-Type: multipart/mixed\n\nno parts here\n");
        let r = Rendered::new(&raw);
        let line = text(&fetch_line(MessageDataItem::Body(r.body_structure(false))));
        assert_eq!(
            line,
            "* 1 FETCH (BODY (\"TEXT\" \"plain\" NIL NIL NIL \"7bit\" 15 1))\r\n"
        );
    }

    fn depth(bs: &BodyStructure<'_>) -> usize {
        match bs {
            BodyStructure::Multi { bodies, .. } => {
                1 + bodies.as_ref().iter().map(depth).max().unwrap_or(0)
            }
            BodyStructure::Single {
                body:
                    Body {
                        specific: SpecificFields::Message { body_structure, .. },
                        ..
                    },
                ..
            } => 1 + depth(body_structure),
            BodyStructure::Single { .. } => 1,
        }
    }

    #[test]
    fn deep_nesting_is_capped() {
        let mut multi = String::new();
        let mut message = String::new();
        for i in 0..200 {
            multi.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
            message.push_str("Content-Type: message/rfc822\n\n");
        }
        multi.push_str("\nleaf\n");
        message.push_str("Subject: deepest\n\nleaf\n");
        for raw in [crlf(&multi), crlf(&message)] {
            let r = Rendered::new(&raw);
            let bs = r.body_structure(true);
            assert!(depth(&bs) <= MAX_DEPTH + 1, "{}", depth(&bs));
            let _ = fetch_line(MessageDataItem::BodyStructure(bs));
            let deep = vec!["1"; 300].join(".");
            let _ = r.section(sec(&deep).as_ref());
            let _ = r.section(sec(&format!("{deep}.MIME")).as_ref());
        }
    }

    #[test]
    fn reparsing_embedded_messages_is_budgeted() {
        let mut raw = "Content-Type: message/rfc822\n\n".repeat(40);
        raw.push_str("Subject: big\n\n");
        raw.push_str(&"x".repeat(200_000));
        let r = Rendered::new(raw.as_bytes());
        let bs = r.body_structure(true);
        assert!((3..10).contains(&depth(&bs)), "{}", depth(&bs));
        let deepest = vec!["1"; depth(&bs) - 1].join(".");
        let line = fetch_line(MessageDataItem::BodyStructure(bs));
        assert!(text(&line).contains("\"application\" \"octet-stream\""));
        assert!(r.section(sec(&deepest).as_ref()).ends_with(b"xxx"));
    }

    /// The part paths a structure names: (path, is message/rfc822, octets or MAX for multipart).
    fn paths(bs: &BodyStructure<'_>, prefix: &[u32], out: &mut Vec<(Vec<u32>, bool, u32)>) {
        match bs {
            BodyStructure::Multi { bodies, .. } => {
                for (i, child) in bodies.as_ref().iter().enumerate() {
                    let mut path = prefix.to_vec();
                    path.push(u32::try_from(i + 1).expect("few parts"));
                    match child {
                        BodyStructure::Multi { .. } => {
                            out.push((path.clone(), false, u32::MAX));
                            paths(child, &path, out);
                        }
                        BodyStructure::Single { .. } => single_paths(child, path, out),
                    }
                }
            }
            BodyStructure::Single { .. } => {
                let mut path = prefix.to_vec();
                path.push(1);
                single_paths(bs, path, out);
            }
        }
    }

    fn single_paths(bs: &BodyStructure<'_>, path: Vec<u32>, out: &mut Vec<(Vec<u32>, bool, u32)>) {
        if let BodyStructure::Single { body, .. } = bs {
            let is_message = matches!(body.specific, SpecificFields::Message { .. });
            out.push((path.clone(), is_message, body.basic.size));
            if let SpecificFields::Message { body_structure, .. } = &body.specific {
                paths(body_structure, &path, out);
            }
        }
    }

    #[test]
    fn corpus_renders_and_reparses() {
        let files = crate::test_corpus::eml_files();
        assert!(files.len() > 300, "{}", files.len());
        let mut too_deep_for_decoder = 0;
        for path in &files {
            let raw = std::fs::read(path).expect("read");
            let name = path.display();
            let r = Rendered::new(&raw);

            let envelope = r.envelope();
            let line = fetch_line(MessageDataItem::Envelope(envelope.clone()));
            assert_eq!(
                reparse(&line),
                Ok(MessageDataItem::Envelope(envelope)),
                "{name}"
            );

            for extended in [true, false] {
                let bs = r.body_structure(extended);
                let item = if extended {
                    MessageDataItem::BodyStructure(bs.clone())
                } else {
                    MessageDataItem::Body(bs.clone())
                };
                let line = fetch_line(item.clone());
                // imap-codec's decoder stops at 8 levels of body recursion.
                if depth(&bs) > 6 {
                    too_deep_for_decoder += 1;
                    continue;
                }
                assert_eq!(reparse(&line), Ok(item), "{name}: {}", text(&line));
            }

            let bs = r.body_structure(true);
            let mut named = Vec::new();
            paths(&bs, &[], &mut named);
            for (path, is_message, size) in named {
                let spec = path
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                let body = r.section(sec(&spec).as_ref());
                if size != u32::MAX {
                    assert_eq!(len_u32(&body), size, "{name} part {spec}");
                }
                let _ = r.section(sec(&format!("{spec}.MIME")).as_ref());
                if is_message {
                    let header = r.section(sec(&format!("{spec}.HEADER")).as_ref());
                    let text = r.section(sec(&format!("{spec}.TEXT")).as_ref());
                    assert!([header, text].concat() == body, "{name} part {spec}");
                    let _ = r.section(sec(&format!("{spec}.HEADER.FIELDS (From)")).as_ref());
                }
            }
            let header = r.section(sec("HEADER").as_ref());
            let body = r.section(sec("TEXT").as_ref());
            assert!([header, body].concat() == raw, "{name}");
            let _ = r.section(sec("HEADER.FIELDS (From Subject)").as_ref());
            let _ = r.section(sec("HEADER.FIELDS.NOT (Received)").as_ref());

            let word = MessageParser::default()
                .parse(&raw)
                .and_then(|m| {
                    m.subject()?
                        .split_whitespace()
                        .find(|w| w.len() >= 3 && w.chars().all(char::is_alphanumeric))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "zzzz".into());
            let key = SearchKey::Text(AString::try_from(word.as_str()).expect("astring"));
            let c = Candidate {
                seq: 1,
                uid: 1,
                flags: &[],
                internal_date: 0,
                raw: &raw,
            };
            let hit = matches(&key, &c, 1, 1);
            if word != "zzzz" {
                assert!(hit, "{name}: TEXT {word}");
            }
        }
        assert!(too_deep_for_decoder < 10, "{too_deep_for_decoder}");
    }
}
