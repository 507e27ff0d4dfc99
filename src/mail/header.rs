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

/// True when the first line is a header field (RFC 5322 §2.2: printable name, colon).
pub fn starts_with_header_field(raw: &[u8]) -> bool {
    let name_len = raw
        .iter()
        .take_while(|b| matches!(b, b'!'..=b'9' | b';'..=b'~'))
        .count();
    name_len > 0 && raw.get(name_len) == Some(&b':')
}
