//! BINARY (RFC 3516): a part's content with its Content-Transfer-Encoding undone, and
//! its size. Pure: the stored bytes in, the decoded bytes out; the part is found by
//! `render.rs`, as for `BODY[section]`.

use std::num::NonZeroU32;

use imap_codec::imap_types::{
    core::{IString, Literal, LiteralMode, NString, NString8},
    extensions::binary::Literal8,
    fetch::{Part, Section},
};
use mail_parser::{HeaderName, MessageParser};

use super::render::Rendered;

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
    fn nul_needs_literal8() {
        assert!(matches!(value(vec![0, 1]), NString8::Literal8(_)));
        assert!(matches!(value(b"text".to_vec()), NString8::NString(_)));
    }
}
