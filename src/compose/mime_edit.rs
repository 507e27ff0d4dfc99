//! Byte-level edits of the raw message: replacement ranges applied in one pass, header
//! fields replaced, removed or inserted in a part's header, which parts are body text,
//! and the rewrite of one body text part in its transfer encoding. Everything not edited
//! is copied byte for byte.

use mail_builder::headers::Header as _;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

use super::ComposeError;
use super::encode::{Cte, ascii_compatible, encode_base64, encode_qp, join_lines, needs_encoding};
use super::placeholders::one_line;

pub(super) struct Edit {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn apply_edits(raw: &[u8], mut edits: Vec<Edit>) -> Result<Vec<u8>, ComposeError> {
    // Stable: insertions at one offset keep their order.
    edits.sort_by_key(|e| (e.start, e.end));
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(raw.len() + extra);
    let mut cursor = 0;
    for e in edits {
        if e.start < cursor || e.end < e.start || e.end > raw.len() {
            return Err(ComposeError::Unparseable("overlapping rewrites".into()));
        }
        out.extend_from_slice(raw.get(cursor..e.start).unwrap_or_default());
        out.extend_from_slice(&e.bytes);
        cursor = e.end;
    }
    out.extend_from_slice(raw.get(cursor..).unwrap_or_default());
    Ok(out)
}

pub(super) fn with_eol(header_crlf: Vec<u8>, eol: &str) -> Vec<u8> {
    if eol == "\r\n" {
        return header_crlf;
    }
    String::from_utf8_lossy(&header_crlf)
        .replace("\r\n", eol)
        .into_bytes()
}

/// Fields of `part` named `name`, as (field start, field end) raw ranges.
pub(super) fn field_ranges(part: &MessagePart<'_>, name: &str) -> Vec<(usize, usize)> {
    part.headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| (h.offset_field as usize, h.offset_end as usize))
        .collect()
}

/// Edits that replace all `name` fields by `field` (at the first one's place), or insert
/// `field` at `insert_at` when there is none. `None` field: delete them all.
pub(super) fn set_field(
    part: &MessagePart<'_>,
    name: &str,
    field: Option<Vec<u8>>,
    insert_at: usize,
    edits: &mut Vec<Edit>,
) {
    let ranges = field_ranges(part, name);
    let mut field = field;
    if ranges.is_empty() {
        if let Some(f) = field {
            edits.push(Edit {
                start: insert_at,
                end: insert_at,
                bytes: f,
            });
        }
        return;
    }
    for (start, end) in ranges {
        edits.push(Edit {
            start,
            end,
            bytes: field.take().unwrap_or_default(),
        });
    }
}

/// Where new fields of a header go: after its last field. True when the last field
/// lacks its line end (header at the end of the input): the caller inserts one EOL first.
pub(super) fn header_insert_point(raw: &[u8], part: &MessagePart<'_>) -> (usize, bool) {
    let at = part
        .headers
        .iter()
        .map(|h| h.offset_end as usize)
        .max()
        .unwrap_or(part.offset_header as usize)
        .min(raw.len());
    (at, at > 0 && raw.get(at - 1) != Some(&b'\n'))
}

pub(super) fn simple_field(name: &str, value: &str, eol: &str) -> Vec<u8> {
    format!("{name}: {}{eol}", one_line(value).trim()).into_bytes()
}

pub(super) fn is_body_text(part: &MessagePart<'_>) -> Option<bool /* html */> {
    let html = match &part.body {
        PartType::Text(_) => false,
        PartType::Html(_) => true,
        _ => return None,
    };
    match part.content_type() {
        Some(ct) => {
            let sub = ct.subtype().unwrap_or_default();
            let ok = ct.ctype().eq_ignore_ascii_case("text")
                && (sub.eq_ignore_ascii_case("plain") || sub.eq_ignore_ascii_case("html"));
            if !ok || sub.eq_ignore_ascii_case("html") != html {
                return None;
            }
        }
        None if html => return None,
        None => {}
    }
    if part
        .content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
        || part.attachment_name().is_some()
    {
        return None;
    }
    Some(html)
}

pub(super) fn part_text<'m>(part: &'m MessagePart<'_>) -> &'m str {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t,
        _ => "",
    }
}

/// Edits rewriting part `part` (index `idx`) to carry `text`.
pub(super) fn rewrite_part(
    raw: &[u8],
    msg: &Message<'_>,
    idx: usize,
    text: &str,
    eol: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), ComposeError> {
    let part = msg
        .parts
        .get(idx)
        .ok_or_else(|| ComposeError::Unparseable("part index".into()))?;
    if part.is_encoding_problem && part.offset_body < part.offset_end {
        return Err(ComposeError::Unparseable(format!(
            "text part {idx} has a broken transfer encoding and would need rewriting"
        )));
    }
    let (body_start, body_end) = (part.offset_body as usize, part.offset_end as usize);
    if body_start > body_end || body_end > raw.len() {
        return Err(ComposeError::Unparseable(format!(
            "text part {idx} offsets"
        )));
    }
    let declared = part
        .content_transfer_encoding()
        .map(|c| c.trim().to_ascii_lowercase());
    let original = match part.encoding {
        Encoding::Base64 => Cte::Base64,
        Encoding::QuotedPrintable => Cte::QuotedPrintable,
        Encoding::None => match declared.as_deref() {
            Some("8bit" | "binary") => Cte::EightBit,
            _ => Cte::SevenBit,
        },
    };
    let target = match original {
        Cte::Base64 | Cte::QuotedPrintable => original,
        Cte::EightBit if needs_encoding(text) => Cte::QuotedPrintable,
        Cte::EightBit => Cte::EightBit,
        Cte::SevenBit if text.is_ascii() && !needs_encoding(text) => Cte::SevenBit,
        Cte::SevenBit => Cte::QuotedPrintable,
    };
    let raw_body = raw.get(body_start..body_end).unwrap_or_default();
    let body = match target {
        Cte::SevenBit | Cte::EightBit => join_lines(text, eol),
        Cte::QuotedPrintable => encode_qp(text, eol),
        Cte::Base64 => encode_base64(text, eol, raw_body.ends_with(b"\n")),
    };
    edits.push(Edit {
        start: body_start,
        end: body_end,
        bytes: body.into_bytes(),
    });

    // Header fields of the part.
    let top = idx == 0;
    let (insert_at, needs_eol) = header_insert_point(raw, part);
    if needs_eol && !top {
        // The root's missing EOL is added once by `prepare`.
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes: eol.as_bytes().to_vec(),
        });
    }
    let mut added_mime = false;
    let cte_ok = match declared.as_deref() {
        None => target == Cte::SevenBit,
        Some(d) => d == target.name() || (d == "binary" && target == Cte::EightBit),
    };
    if !cte_ok {
        let f = simple_field("Content-Transfer-Encoding", target.name(), eol);
        set_field(part, "Content-Transfer-Encoding", Some(f), insert_at, edits);
        added_mime = true;
    }
    let ct = part.content_type();
    let charset = ct.and_then(|c| c.attribute("charset"));
    let keep_ct = if text.is_ascii() {
        charset.is_none_or(ascii_compatible)
    } else {
        charset.is_some_and(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8"))
    };
    if !keep_ct {
        let (ctype, subtype) = ct.map_or(("text".to_string(), "plain".to_string()), |c| {
            (
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("plain").to_ascii_lowercase(),
            )
        });
        let mut builder =
            mail_builder::headers::content_type::ContentType::new(format!("{ctype}/{subtype}"));
        for a in ct.and_then(|c| c.attributes()).unwrap_or_default() {
            if !a.name.eq_ignore_ascii_case("charset") {
                builder = builder.attribute(one_line(&a.name), one_line(&a.value));
            }
        }
        builder = builder.attribute("charset", "utf-8");
        let mut v = b"Content-Type: ".to_vec();
        builder.write_header(&mut v, "Content-Type: ".len());
        let f = with_eol(v, eol);
        set_field(part, "Content-Type", Some(f), insert_at, edits);
        added_mime = true;
    }
    if top && added_mime && field_ranges(part, "MIME-Version").is_empty() {
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes: simple_field("MIME-Version", "1.0", eol),
        });
    }
    Ok(())
}

/// A real attachment: anything but multiparts, body text parts and inline images.
pub(super) fn has_attachment(msg: &Message<'_>) -> bool {
    msg.parts.iter().any(|p| match &p.body {
        PartType::Multipart(_) | PartType::InlineBinary(_) => false,
        PartType::Binary(_) | PartType::Message(_) => true,
        PartType::Text(_) | PartType::Html(_) => is_body_text(p).is_none(),
    })
}

pub(super) fn detect_eol(raw: &[u8]) -> &'static str {
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw.get(i - 1) == Some(&b'\r') => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
}
