//! The SMTP envelope (RFC 5321 §2.3.1) as the rest of the daemon sees it: the reverse
//! path and the accepted recipients with the inbox each maps to. Built by the SMTP
//! session, by APPEND intake and by the submission pipeline alike.

/// A recipient accepted at RCPT: the address as given and the inbox it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// The inbox of a team address; `None` for outside addresses (submission only).
    pub inbox: Option<String>,
    /// `+tag` of the address, e.g. `c123` for `support+c123@…`.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path; "" for the null sender `<>`.
    pub mail_from: String,
    pub rcpts: Vec<Recipient>,
    pub smtputf8: bool,
}
