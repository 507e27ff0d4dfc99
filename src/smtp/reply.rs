//! SMTP replies with enhanced status codes (RFC 3463), written through smtp-proto.

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
    fn wire_form_flattens_line_breaks() {
        let mut out = Vec::new();
        Reply::new(550, (5, 1, 1), "no\r\nMAIL FROM:<x>").write(&mut out);
        assert_eq!(out, b"550 5.1.1 no  MAIL FROM:<x>\r\n");
    }
}
