//! Mailbox names in commands and responses, in the session's form (`imap/names.rs`), and
//! `ENABLE UTF8=ACCEPT`, which switches that form to UTF-8 (RFC 6855 §3).

use imap_codec::imap_types::{
    extensions::{enable::CapabilityEnable, utf8::Utf8Kind},
    mailbox::{ListMailbox, Mailbox},
};

use crate::imap::{
    names::{self, NameForm},
    session::{Refusal, Session},
};

impl Session {
    /// The decoded name of a mailbox argument. A name that is a valid atom or string but
    /// not modified UTF-7 names no mailbox: `NO [CANNOT]` with the reason, as Dovecot
    /// answers (the command itself was well formed, so not BAD).
    pub(in crate::imap) fn mailbox_arg(&self, mailbox: &Mailbox<'_>) -> Result<String, Refusal> {
        match mailbox {
            Mailbox::Inbox => Ok("INBOX".to_string()),
            Mailbox::Other(other) => names::decode(other.as_ref(), self.names)
                .map_err(|why| Refusal::No(Some("CANNOT"), why)),
        }
    }

    /// The decoded LIST pattern (`*` and `%` are ASCII, so they survive decoding).
    pub(in crate::imap) fn pattern_arg(
        &self,
        pattern: &ListMailbox<'_>,
    ) -> Result<String, Refusal> {
        let raw: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        // A pattern that is not modified UTF-7 can match no (encoded) name: it is kept
        // as written, so LIST answers OK with nothing (RFC 3501 §6.3.8).
        Ok(names::decode(raw, self.names)
            .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()))
    }

    /// `name` as this session writes it in LIST, LSUB and STATUS.
    pub(in crate::imap) fn wire_mailbox(&self, name: &str) -> Result<Mailbox<'static>, Refusal> {
        names::encode(name, self.names).map_err(Refusal::Bad)
    }

    /// The ENABLE arguments this session turns on now, for the ENABLED response
    /// (RFC 5161 §3.1: what this command enabled; the rest is ignored).
    pub(in crate::imap) fn enable_names(
        &mut self,
        capabilities: &[CapabilityEnable<'_>],
    ) -> Vec<CapabilityEnable<'static>> {
        let asked = capabilities.contains(&CapabilityEnable::Utf8(Utf8Kind::Accept));
        if asked && self.names != NameForm::Utf8 {
            self.names = NameForm::Utf8;
            vec![CapabilityEnable::Utf8(Utf8Kind::Accept)]
        } else {
            Vec::new()
        }
    }
}
