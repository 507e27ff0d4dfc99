//! BINARY (RFC 3516): a part's content with its Content-Transfer-Encoding undone, and
//! its size. Pure: the stored bytes in, the decoded bytes out; the part is found by
//! `render.rs`, as for `BODY[section]`. imap-types has no origin for a partial BINARY
//! answer (`BINARY[1]<0>`), so a FETCH with one is encoded here, item by item.

use std::num::NonZeroU32;

use imap_codec::{
    ResponseCodec,
    encode::Encoder,
    imap_types::{
        command::CommandBody,
        core::{IString, Literal, LiteralMode, NString, NString8, Vec1},
        extensions::binary::Literal8,
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section},
        response::{Data, Response},
    },
};
use mail_parser::{HeaderName, MessageParser};

use imap_codec::imap_types::response::Status;

use super::{render::Rendered, session::Answer};

/// The part's encoding is not one we can undo (RFC 3516 §4.3: `[UNKNOWN-CTE]`).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownCte(pub String);

/// `BINARY[section]`: the whole message for an empty section, else the part's body
/// decoded from base64 or quoted-printable (7bit, 8bit and binary are as stored).
pub fn binary(
    rendered: &Rendered<'_>,
    raw: &[u8],
    path: &[NonZeroU32],
) -> Result<Vec<u8>, UnknownCte> {
    let Ok(path) = imap_codec::imap_types::core::Vec1::try_from(path.to_vec()) else {
        return Ok(raw.to_vec());
    };
    let part = Part(path);
    let body = rendered.section(Some(&Section::Part(part.clone())));
    let mut header = rendered.section(Some(&Section::Mime(part)));
    header.extend_from_slice(b"\r\n");
    let encoding = MessageParser::default()
        .parse_headers(&header)
        .and_then(|m| {
            m.header(HeaderName::ContentTransferEncoding)
                .and_then(|v| v.as_text())
                .map(|t| t.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(body),
        // RFC 2045 §6.8: whitespace and line breaks between the characters are ignored.
        "base64" => mail_parser::decoders::base64::base64_decode(&body)
            .ok_or_else(|| UnknownCte("the base64 content does not decode".into())),
        "quoted-printable" => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(&body)
                .ok_or_else(|| UnknownCte("the quoted-printable content does not decode".into()))
        }
        other => Err(UnknownCte(format!(
            "unknown Content-Transfer-Encoding {other}"
        ))),
    }
}

/// The value of a BINARY item: a literal8 when the content holds NUL (RFC 3516 §4.2),
/// else an ordinary literal.
pub fn value(data: Vec<u8>) -> NString8<'static> {
    if data.contains(&0) {
        return NString8::Literal8(Literal8 {
            data: data.into(),
            mode: LiteralMode::Sync,
        });
    }
    match Literal::try_from(data) {
        Ok(lit) => NString8::NString(NString(Some(IString::Literal(lit)))),
        Err(_) => NString8::NString(NString(None)),
    }
}

/// For a FETCH asking for a partial BINARY: the origin of each BINARY item in request
/// order (`None` for a whole one); `None` when imap-codec can encode the answer itself.
pub fn partial_origins(body: &CommandBody<'_>) -> Option<Vec<Option<u32>>> {
    let CommandBody::Fetch {
        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
        ..
    } = body
    else {
        return None;
    };
    let origins: Vec<Option<u32>> = names
        .iter()
        .filter_map(|n| match n {
            MessageDataItemName::Binary { partial, .. } => Some(partial.map(|(o, _)| o)),
            _ => None,
        })
        .collect();
    origins.iter().any(Option::is_some).then_some(origins)
}

/// The answer encoded, each FETCH's k-th BINARY item with the k-th origin (RFC 3516
/// §4.2: `BINARY[section]<origin>`, as `BODY[section]<origin>` in RFC 3501 §7.4.2).
pub fn encode_with_origins(answer: Answer, origins: &[Option<u32>]) -> Vec<u8> {
    let mut out = encode_untagged(answer.untagged_status, answer.untagged, origins);
    out.extend(
        ResponseCodec::default()
            .encode(&Response::Status(answer.status))
            .dump(),
    );
    out
}

/// Untagged statuses, then data, encoded as [`encode_with_origins`] does (no origins:
/// plain imap-codec output).
pub fn encode_untagged(
    statuses: Vec<Status<'static>>,
    untagged: Vec<Data<'static>>,
    origins: &[Option<u32>],
) -> Vec<u8> {
    let codec = ResponseCodec::default();
    let mut out = Vec::new();
    for status in statuses {
        out.extend(codec.encode(&Response::Status(status)).dump());
    }
    let plain = origins.iter().all(Option::is_none);
    for data in untagged {
        let data = match data {
            Data::Fetch { seq, items } if !plain => (seq, items),
            other => {
                out.extend(codec.encode(&Response::Data(other)).dump());
                continue;
            }
        };
        let (seq, items) = data;
        out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
        let mut binary_index = 0;
        for (i, item) in items.into_iter().enumerate() {
            let origin = match item {
                MessageDataItem::Binary { .. } => {
                    binary_index += 1;
                    origins.get(binary_index - 1).copied().flatten()
                }
                _ => None,
            };
            // One item alone in a FETCH, then cut out of `* n FETCH (` ... `)\r\n`.
            let one = codec
                .encode(&Response::Data(Data::Fetch {
                    seq,
                    items: Vec1::from(item),
                }))
                .dump();
            let prefix = format!("* {seq} FETCH (").len();
            let mut item = one
                .get(prefix..one.len().saturating_sub(3))
                .unwrap_or_default()
                .to_vec();
            if let Some(origin) = origin
                && let Some(close) = item.iter().position(|b| *b == b']')
            {
                let tail = item.split_off(close + 1);
                item.extend_from_slice(format!("<{origin}>").as_bytes());
                item.extend(tail);
            }
            if i > 0 {
                out.push(b' ');
            }
            out.extend(item);
        }
        out.extend_from_slice(b")\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"Subject: t\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nau lait\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b--\r\n";

    fn path(p: &[u32]) -> Vec<NonZeroU32> {
        p.iter().filter_map(|n| NonZeroU32::new(*n)).collect()
    }

    #[test]
    fn parts_are_decoded() {
        let r = Rendered::new(MIXED);
        assert_eq!(
            binary(&r, MIXED, &path(&[1])).unwrap(),
            "café au lait".as_bytes()
        );
        assert_eq!(binary(&r, MIXED, &path(&[2])).unwrap(), [0, 1, 2, 3]);
        assert!(
            binary(&r, MIXED, &path(&[3]))
                .unwrap_err()
                .0
                .contains("x-uuencode")
        );
        assert_eq!(binary(&r, MIXED, &[]).unwrap(), MIXED);
    }

    #[test]
    fn only_partial_binary_fetches_are_encoded_here() {
        use imap_codec::{CommandCodec, decode::Decoder};
        let origins = |line: &str| {
            let (_, cmd) = CommandCodec::default().decode(line.as_bytes()).unwrap();
            partial_origins(&cmd.body)
        };
        assert_eq!(
            origins("a FETCH 1 (BINARY[1] BINARY.PEEK[2]<5.10> UID)\r\n"),
            Some(vec![None, Some(5)])
        );
        assert_eq!(origins("a FETCH 1 (BINARY[1] BODY[]<0.5>)\r\n"), None);
        assert_eq!(origins("a NOOP\r\n"), None);
    }

    #[test]
    fn nul_needs_literal8() {
        assert!(matches!(value(vec![0, 1]), NString8::Literal8(_)));
        assert!(matches!(value(b"text".to_vec()), NString8::NString(_)));
    }
}
