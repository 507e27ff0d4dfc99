//! Transfer-encoding writers for rewritten body text (reading is mail-parser's job): the
//! encodings a part can carry, line splitting and joining with the message's line end,
//! quoted-printable and base64, and which charsets are ASCII-compatible.

use base64::Engine as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cte {
    SevenBit,
    EightBit,
    QuotedPrintable,
    Base64,
}

impl Cte {
    pub(super) fn name(self) -> &'static str {
        match self {
            Cte::SevenBit => "7bit",
            Cte::EightBit => "8bit",
            Cte::QuotedPrintable => "quoted-printable",
            Cte::Base64 => "base64",
        }
    }
}

/// Lines of a text (LF or CRLF) without their line ends, and whether it ended with one.
fn text_lines(text: &str) -> (Vec<&str>, bool) {
    let ends = text.ends_with('\n');
    let body = if ends { &text[..text.len() - 1] } else { text };
    let lines = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    (lines, ends)
}

/// Needs an encoding even in 8bit: over-long lines, bare CR, NUL.
pub(super) fn needs_encoding(text: &str) -> bool {
    let (lines, _) = text_lines(text);
    lines
        .iter()
        .any(|l| l.len() > 998 || l.bytes().any(|b| b == b'\r' || b == 0))
}

pub(super) fn join_lines(text: &str, eol: &str) -> String {
    let (lines, ends) = text_lines(text);
    let mut out = lines.join(eol);
    if ends {
        out.push_str(eol);
    }
    out
}

pub(super) fn encode_qp(text: &str, eol: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let (lines, ends) = text_lines(text);
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (k, line) in lines.iter().enumerate() {
        if k > 0 {
            out.push_str(eol);
        }
        let bytes = line.as_bytes();
        let mut col = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece_len = if literal { 1 } else { 3 };
            // Leave room for the soft break "=" (76 columns at most).
            let limit = if last { 76 } else { 75 };
            if col + piece_len > limit {
                out.push('=');
                out.push_str(eol);
                col = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                out.push('=');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            col += piece_len;
        }
    }
    if ends {
        out.push_str(eol);
    }
    out
}

pub(super) fn encode_base64(text: &str, eol: &str, trailing_eol: bool) -> String {
    // Canonical form of text is CRLF.
    let canonical = join_lines(text, "\r\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(canonical.as_bytes());
    let mut out = String::with_capacity(b64.len() + b64.len() / 76 * 2 + 2);
    for (k, chunk) in b64.as_bytes().chunks(76).enumerate() {
        if k > 0 {
            out.push_str(eol);
        }
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    if trailing_eol {
        out.push_str(eol);
    }
    out
}

/// Charsets whose ASCII bytes mean ASCII.
pub(super) fn ascii_compatible(charset: &str) -> bool {
    let c = charset.to_ascii_lowercase();
    !(c.contains("utf-16")
        || c.contains("utf16")
        || c.contains("utf-32")
        || c.contains("utf32")
        || c.contains("ucs")
        || c.contains("utf-7")
        || c.contains("utf7"))
}
