//! The raw header section of a message (RFC 5322 §2.1): where it ends and whether there
//! is one. Byte-level, before any MIME parsing.

/// Length of the header section including the blank line that ends it (the whole message
/// when there is no body).
pub fn header_section_len(raw: &[u8]) -> usize {
    let mut line_start = 0;
    while line_start < raw.len() {
        let line_end = match raw[line_start..].iter().position(|b| *b == b'\n') {
            Some(i) => line_start + i + 1,
            None => raw.len(),
        };
        let line = &raw[line_start..line_end];
        if line == b"\r\n" || line == b"\n" {
            return line_end;
        }
        line_start = line_end;
    }
    raw.len()
}

/// Where the header fields start: past a leading mbox `From ` line and lines of only
/// spaces or tabs, which real MTAs (Postfix) accept before the first field. An empty
/// line is not skipped: it ends an empty header section (RFC 5322 §2.1).
pub fn header_start(raw: &[u8]) -> usize {
    let mut start = 0;
    while start < raw.len() {
        let rest = &raw[start..];
        let line_len = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let content = rest[..line_len]
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&rest[..line_len]);
        let blank = !content.is_empty() && content.iter().all(|b| matches!(b, b' ' | b'\t'));
        let mbox = start == 0 && content.starts_with(b"From ");
        if !(blank || mbox) {
            break;
        }
        start += line_len;
    }
    start
}

/// Where the header section is, as an MTA reads it: past what [`header_start`] skips,
/// up to and including the blank line that ends it; empty when the message has no
/// header fields at all (then everything after `start` is body).
pub fn header_span(raw: &[u8]) -> std::ops::Range<usize> {
    let start = header_start(raw);
    let fields = raw.get(start..).unwrap_or_default();
    let len = if starts_with_header_field(fields) {
        header_section_len(fields)
    } else {
        0
    };
    start..start + len
}

/// True when the first line is a header field (RFC 5322 §2.2: printable name, colon).
pub fn starts_with_header_field(raw: &[u8]) -> bool {
    let name_len = raw
        .iter()
        .take_while(|b| matches!(b, b'!'..=b'9' | b';'..=b'~'))
        .count();
    name_len > 0 && raw.get(name_len) == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_start_skips_what_mtas_accept_before_the_fields() {
        let cases: [(&[u8], usize); 8] = [
            (b"From: a@b\r\n\r\nx", 0),
            (
                b"From a@b Wed Dec  2 12:00:00 2026\r\nFrom: a@b\r\n\r\nx",
                35,
            ),
            (b"   \r\nSubject: s\r\n\r\nx", 5),
            (b"From a@b Mon\n \t \nSubject: s\n\nx", 17),
            // An empty line ends an empty header section: nothing skipped.
            (b"\r\nbody", 0),
            (b"just a body line\r\n", 0),
            (b"", 0),
            // Only the first line can be an mbox separator.
            (b"   \r\nFrom x\r\n", 5),
        ];
        for (raw, want) in cases {
            assert_eq!(
                header_start(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
