//! Message-ID vocabulary (RFC 5322 §3.6.4): the one way to take the `<>` off an id, and
//! the forms built on it: as parsed, as indexed, as written into a header.

/// Longest id written into a header we build: RFC 5322 lines stay under 998 octets with
/// room for a References list.
const MAX_HEADER_ID_LEN: usize = 250;

/// The id without surrounding blanks or angle brackets, case kept.
pub fn bare(id: &str) -> &str {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

/// A usable id from a header value: bare, non-empty and without inner blanks.
pub fn parse(id: &str) -> Option<String> {
    let id = bare(id);
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_owned())
}

/// The id as indexed (lookups by In-Reply-To and References): bare and ASCII lower case,
/// since clients re-case ids they quote.
pub fn index_form(id: &str) -> String {
    bare(id).to_ascii_lowercase()
}

/// The id as written into a header we build: bare, with blanks, controls and stray
/// brackets removed and the length bounded, so it can never break the header line.
pub fn header_form(id: &str) -> String {
    bare(id)
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>')
        .take(MAX_HEADER_ID_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_id() {
        assert_eq!(bare("  <Abc@X>  "), "Abc@X");
        assert_eq!(bare("< Abc@X >"), "Abc@X");
        assert_eq!(parse("<Abc@X>").as_deref(), Some("Abc@X"));
        assert_eq!(parse("<>"), None);
        assert_eq!(parse("<a b@x>"), None);
        assert_eq!(index_form(" <Abc@X> "), "abc@x");
        assert_eq!(header_form("<a\r\n b@x>"), "ab@x");
        assert_eq!(header_form(&"x".repeat(400)).len(), MAX_HEADER_ID_LEN);
    }
}
