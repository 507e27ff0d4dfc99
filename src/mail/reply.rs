//! SMTP replies with enhanced status codes (RFC 3463), written through smtp-proto: what
//! the MX, submission, intake and the filters answer a peer.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: (u8, u8, u8),
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: (u8, u8, u8), text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// Appends the wire form (`250 2.0.0 text\r\n`). Line breaks in the text are flattened:
    /// the text may quote peer input and must never become a second reply line.
    pub fn write(&self, out: &mut Vec<u8>) {
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let (a, b, c) = self.status;
        // Writing into a Vec cannot fail.
        let _ = smtp_proto::Response::new(self.code, a, b, c, text).write(&mut *out);
    }

    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::new(250, (2, 0, 0), text)
    }

    pub fn bad_sequence(text: impl Into<String>) -> Reply {
        Reply::new(503, (5, 5, 1), text)
    }

    pub fn line_too_long() -> Reply {
        Reply::new(500, (5, 5, 6), "Line too long")
    }

    pub fn message_too_big(max: usize) -> Reply {
        Reply::new(
            552,
            (5, 3, 4),
            format!("Message exceeds the maximum size of {max} bytes"),
        )
    }

    pub fn shutting_down() -> Reply {
        Reply::new(421, (4, 3, 2), "Service shutting down, try again later")
    }

    pub fn timeout() -> Reply {
        Reply::new(421, (4, 4, 2), "Timeout, closing connection")
    }

    pub fn local_error() -> Reply {
        Reply::new(451, (4, 3, 0), "Local error in processing, try again later")
    }

    /// Why a negative reply refuses, as a short fixed label for metrics (`None` for 2xx
    /// and 3xx). Read from the reply and enhanced status codes (RFC 3463), which name the
    /// reason at every reply point in the code: `unknown_recipient` (RCPT outside the
    /// inboxes, relaying denied), `too_big`, `too_many_recipients`, `smtputf8_required`,
    /// `policy` (submission sender or recipients not allowed), `content_refused` (no
    /// header section, unparseable, an email command or snippet error),
    /// `reply_collision`, `auth_required`, `encryption_required`, `auth_failed`,
    /// `auth_throttled`, `filter_unavailable`, `local_error` (storage),
    /// `line_too_long`, `too_many_errors`, `timeout`, `shutdown`, else `protocol`.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        if self.is_positive() {
            return None;
        }
        Some(match (self.code, self.status) {
            (550, (5, 1, 1)) => "unknown_recipient",
            (552, (5, 3, 4)) => "too_big",
            (452, (4, 5, 3)) => "too_many_recipients",
            (553, (5, 6, 7)) => "smtputf8_required",
            (550, (5, 7, 1)) => "policy",
            (550, (5, 6, 0)) | (550, (5, 5, 4)) => "content_refused",
            (450, (4, 7, 1)) => "reply_collision",
            (530, (5, 7, 0)) => "auth_required",
            (538, (5, 7, 11)) => "encryption_required",
            (535, (5, 7, 8)) => "auth_failed",
            (454, (4, 7, 0)) => "auth_throttled",
            (451, (4, 7, 0)) => "filter_unavailable",
            (451, (4, 3, 0)) => "local_error",
            (500, (5, 5, 6)) => "line_too_long",
            (421, (4, 7, 0)) => "too_many_errors",
            (421, (4, 4, 2)) => "timeout",
            (421, (4, 3, 2)) => "shutdown",
            _ => "protocol",
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.status;
        write!(f, "{} {a}.{b}.{c} {}", self.code, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons() {
        assert_eq!(Reply::ok("x").refusal_reason(), None);
        assert_eq!(Reply::new(354, (0, 0, 0), "go").refusal_reason(), None);
        let table = [
            (Reply::new(550, (5, 1, 1), "no"), "unknown_recipient"),
            (Reply::message_too_big(10), "too_big"),
            (Reply::new(530, (5, 7, 0), "auth"), "auth_required"),
            (Reply::local_error(), "local_error"),
            (Reply::line_too_long(), "line_too_long"),
            (Reply::timeout(), "timeout"),
            (Reply::shutting_down(), "shutdown"),
            (Reply::bad_sequence("MAIL first"), "protocol"),
            (Reply::new(500, (5, 5, 1), "?"), "protocol"),
        ];
        for (reply, reason) in table {
            assert_eq!(reply.refusal_reason(), Some(reason), "{reply}");
        }
    }

    #[test]
    fn wire_form_flattens_line_breaks() {
        let mut out = Vec::new();
        Reply::new(550, (5, 1, 1), "no\r\nMAIL FROM:<x>").write(&mut out);
        assert_eq!(out, b"550 5.1.1 no  MAIL FROM:<x>\r\n");
    }
}
