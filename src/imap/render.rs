//! FETCH data rendered from one stored message (RFC 3501 §6.4.5, §7.4.2): ENVELOPE,
//! BODY / BODYSTRUCTURE and `BODY[section]<origin.length>`. Pure: bytes in, imap-types values
//! out. mail-parser finds the structure; sections are cut out of the stored bytes with its
//! offsets and never re-encoded. Fed attacker-controlled bytes: never panics, and recursion is
//! bounded by [`MAX_DEPTH`].

use std::borrow::Cow;

use super::envelope::{envelope_of, istring, opt_nstring, phrase, raw_value};
use imap_codec::imap_types::{
    body::{
        BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    },
    core::{AString, IString, NString, Vec1},
    envelope::Envelope,
    fetch::{Part, Section},
};
use mail_parser::{
    ContentType, Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType,
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

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
