//! Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3) until the client sends
//! `ENABLE UTF8=ACCEPT`, UTF-8 after it (RFC 6855 §3). Everywhere else (config, store,
//! `Mailboxes`) a name is its decoded text (`Inboxes/Kundendienst Größe`), so both wire
//! forms name the same mailbox. The codec is `encodify`'s (Stalwart), strict as RFC 3501
//! asks: one spelling per name. The session's side (arguments, ENABLE) is `cmd/names.rs`.
//!
//! A private folder created by an older teamgate, which stored the name as sent, keeps
//! its encoded text as its name (`Entw&APw-rfe` lists as `Entw&-APw-rfe`); renaming it
//! once gives it its real name.

use encodify::utf7;
use imap_codec::imap_types::{
    core::{AString, IString},
    extensions::utf8::QuotedUtf8,
    mailbox::Mailbox,
};

/// How a session spells mailbox names on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NameForm {
    #[default]
    ModifiedUtf7,
    /// After `ENABLE UTF8=ACCEPT`.
    Utf8,
}

/// The decoded text of a mailbox name or LIST pattern as the client sent it.
pub fn decode(raw: &[u8], form: NameForm) -> Result<String, String> {
    let utf8 = |raw: &[u8]| {
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| "mailbox name is not UTF-8".to_string())
    };
    match form {
        // RFC 6855 §3: the name as sent; `&` is an ordinary character.
        NameForm::Utf8 => utf8(raw),
        NameForm::ModifiedUtf7 if raw.is_ascii() => utf7::IMAP.decode(raw).map_err(|e| {
            format!("mailbox name is not modified UTF-7 (RFC 3501 section 5.1.3): {e}")
        }),
        // 8-bit bytes are never modified UTF-7: a UTF-8 name sent in a literal without
        // ENABLE, which can only mean itself.
        NameForm::ModifiedUtf7 => utf8(raw),
    }
}

/// `name` spelt for the wire.
pub fn encode(name: &str, form: NameForm) -> Result<Mailbox<'static>, String> {
    let wire = match form {
        NameForm::ModifiedUtf7 => utf7::IMAP.encode(name),
        NameForm::Utf8 => {
            // RFC 6855 §3: a quoted UTF-8 string rather than a literal (never `INBOX`,
            // which is ASCII, so `Mailbox::from` cannot refuse it).
            if !name.is_ascii()
                && let Ok(quoted) = QuotedUtf8::try_from(name.to_string())
            {
                return Ok(Mailbox::from(AString::String(IString::QuotedUtf8(quoted))));
            }
            name.to_string()
        }
    };
    Mailbox::try_from(wire).map_err(|e| format!("mailbox name cannot be sent: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_from_modified_utf7_and_encode_back() {
        for (wire, text) in [
            // RFC 3501 §5.1.3's example.
            ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
            (
                "Inboxes/Assistenza Clienti &ANw-",
                "Inboxes/Assistenza Clienti Ü",
            ),
            (
                "Inboxes/Kundendienst Gr&APYA3w-e",
                "Inboxes/Kundendienst Größe",
            ),
            ("Inboxes/&W6JnDQ-", "Inboxes/客服"),
            ("Personal/Q&-A", "Personal/Q&A"),
            ("INBOX", "INBOX"),
        ] {
            assert_eq!(
                decode(wire.as_bytes(), NameForm::ModifiedUtf7).as_deref(),
                Ok(text)
            );
            assert_eq!(utf7::IMAP.encode(text), wire);
            // After ENABLE UTF8=ACCEPT the name is itself.
            assert_eq!(decode(text.as_bytes(), NameForm::Utf8).as_deref(), Ok(text));
        }
        // A UTF-8 literal without ENABLE means itself too.
        assert_eq!(
            decode("Inboxes/客服".as_bytes(), NameForm::ModifiedUtf7).as_deref(),
            Ok("Inboxes/客服")
        );
    }

    #[test]
    fn malformed_names_are_refused_with_a_reason() {
        for bad in ["Q&A", "&ZeVnLIqe", "&AGE-", "&2D0-", "x&"] {
            let e = decode(bad.as_bytes(), NameForm::ModifiedUtf7).unwrap_err();
            assert!(e.contains("modified UTF-7"), "{bad}: {e}");
        }
        assert!(decode(b"\xff", NameForm::Utf8).is_err());
        assert!(decode(b"a\xc3", NameForm::ModifiedUtf7).is_err());
    }
}
