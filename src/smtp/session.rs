//! The SMTP session as a pure state machine (RFC 5321, 3030, 2920, 6531; AUTH RFC 4954
//! on the submission port). No I/O, no clock: the driver in `server.rs` feeds parsed
//! requests in and carries out the returned `Action`. Everything a peer can send ends in
//! a reply, never a panic.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_AUTH, EXT_CHUNKING, EXT_ENHANCED_STATUS_CODES,
    EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Error as ProtoError,
    MAIL_SMTPUTF8, Request,
};

use crate::auth;
use crate::config::Config;
use crate::mail::{
    envelope::{Envelope, Recipient},
    header::header_span,
    reply::Reply,
};

/// Which port the session serves: the MX (only inbox recipients, no AUTH) or agents'
/// submission (AUTH required, any recipient, sender must be one of the agent's inboxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inbound,
    Submission,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Send `354` and read a dot-terminated body.
    StartData,
    /// Read a BDAT chunk of this size (RFC 3030).
    StartBdat {
        chunk_size: usize,
        is_last: bool,
    },
    /// A BDAT chunk that must be read and thrown away, then this reply sent.
    SkipBdat {
        chunk_size: usize,
        reply: Reply,
    },
    /// Send `220` and hand the connection to TLS.
    StartTls,
    /// A multi-line reply already in wire form (EHLO).
    Raw(Vec<u8>),
    /// Send `334 <challenge>` and feed the next line to `sasl_line`.
    SaslChallenge(String),
    /// Check these credentials (off the session: argon2 is slow) and report to `verified`.
    Verify {
        login: String,
        password: String,
    },
}

/// Where an AUTH exchange is (RFC 4954).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sasl {
    /// AUTH PLAIN without an initial response: the next line is the response.
    Plain,
    /// AUTH LOGIN: the next line is the user name.
    LoginUser,
    /// AUTH LOGIN: the next line is the password for this user.
    LoginPassword(String),
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Greeting sent, no HELO/EHLO yet.
    #[default]
    Connected,
    /// HELO/EHLO done, no transaction open.
    Ready,
    /// MAIL accepted; RCPTs accumulate.
    Mail(Envelope),
    /// BDAT chunks are being received for this envelope (DATA no longer allowed).
    Chunking(Envelope),
}

#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    phase: Phase,
    helo: Option<String>,
    esmtp: bool,
    tls_active: bool,
    tls_available: bool,
    errors: u32,
    mode: Mode,
    /// The agent logged in on the submission port.
    agent: Option<String>,
    sasl: Option<Sasl>,
}

impl Session {
    pub fn new(config: Arc<Config>, tls_available: bool, tls_active: bool) -> Session {
        Session::with_mode(config, Mode::Inbound, tls_available, tls_active)
    }

    pub fn with_mode(
        config: Arc<Config>,
        mode: Mode,
        tls_available: bool,
        tls_active: bool,
    ) -> Session {
        Session {
            config,
            phase: Phase::Connected,
            helo: None,
            esmtp: false,
            tls_active,
            tls_available,
            errors: 0,
            mode,
            agent: None,
            sasl: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The authenticated agent (submission).
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// AUTH is offered only over TLS unless plaintext is explicitly allowed.
    fn auth_allowed(&self) -> bool {
        self.mode == Mode::Submission && (self.tls_active || self.config.allow_plaintext_auth)
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn greeting(&self) -> Vec<u8> {
        // Written by hand: smtp-proto's Response always adds an enhanced code.
        format!("220 {} ESMTP teamgate\r\n", self.config.server.hostname).into_bytes()
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// `with` protocol name for the Received header (RFC 3848).
    pub fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls_active, self.agent.is_some()) {
            (true, true, true) => "ESMTPSA",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, false, false) => "ESMTP",
            (false, _, _) => "SMTP",
        }
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// After the TLS handshake: forget everything learned in plaintext (RFC 3207 §4.2).
    pub fn reset_after_tls(&mut self) {
        self.phase = Phase::Connected;
        self.helo = None;
        self.esmtp = false;
        self.agent = None;
        self.sasl = None;
        self.tls_active = true;
    }

    /// True while a DATA or BDAT body is expected or being received.
    pub fn in_transaction(&self) -> bool {
        matches!(self.phase, Phase::Mail(_) | Phase::Chunking(_))
    }

    /// True between BDAT chunks of a transaction.
    pub fn in_chunking(&self) -> bool {
        matches!(self.phase, Phase::Chunking(_))
    }

    /// Ends the transaction after a complete body and hands its envelope to delivery.
    pub fn take_envelope(&mut self) -> Option<Envelope> {
        match std::mem::replace(&mut self.phase, Phase::Ready) {
            Phase::Mail(env) | Phase::Chunking(env) => Some(env),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// Abandons the transaction (after a refused body).
    pub fn abort_transaction(&mut self) {
        if self.in_transaction() {
            self.phase = Phase::Ready;
        }
    }

    /// A line that could not be parsed. Too many in one session closes it.
    pub fn parse_error(&mut self, err: &ProtoError) -> Action {
        let reply = match err {
            ProtoError::UnknownCommand | ProtoError::NeedsMoreData { .. } => {
                Reply::new(500, (5, 5, 1), "Command not recognized")
            }
            ProtoError::SyntaxError { syntax } => {
                Reply::new(501, (5, 5, 4), format!("Syntax: {syntax}"))
            }
            ProtoError::InvalidSenderAddress => {
                Reply::new(501, (5, 1, 7), "Invalid sender address")
            }
            ProtoError::InvalidRecipientAddress => {
                Reply::new(501, (5, 1, 3), "Invalid recipient address")
            }
            ProtoError::InvalidParameter { param } => {
                Reply::new(501, (5, 5, 4), format!("Invalid parameter {param}"))
            }
            ProtoError::UnsupportedParameter { param } => {
                Reply::new(504, (5, 5, 4), format!("Unsupported parameter {param}"))
            }
            ProtoError::ResponseTooLong => Reply::line_too_long(),
            ProtoError::InvalidResponse { .. } => Reply::new(500, (5, 5, 2), "Syntax error"),
        };
        self.error(reply)
    }

    pub fn line_too_long(&mut self) -> Action {
        self.error(Reply::line_too_long())
    }

    fn error(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors >= self.config.smtp.max_errors {
            Action::Close(Reply::new(
                421,
                (4, 7, 0),
                "Too many errors, closing connection",
            ))
        } else {
            Action::Reply(reply)
        }
    }

    pub fn handle(&mut self, req: Request<String>) -> Action {
        match req {
            Request::Ehlo { host } => {
                self.phase = Phase::Ready;
                self.helo = Some(host);
                self.esmtp = true;
                Action::Raw(self.ehlo_reply())
            }
            Request::Helo { host } => {
                self.phase = Phase::Ready;
                self.helo = Some(host);
                self.esmtp = false;
                Action::Reply(Reply::new(
                    250,
                    (2, 0, 0),
                    self.config.server.hostname.clone(),
                ))
            }
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to.address),
            Request::Data => match &self.phase {
                Phase::Mail(env) if !env.rcpts.is_empty() => Action::StartData,
                Phase::Mail(_) => Action::Reply(Reply::new(554, (5, 5, 1), "No valid recipients")),
                Phase::Chunking(_) => {
                    Action::Reply(Reply::bad_sequence("DATA not allowed after BDAT"))
                }
                _ => Action::Reply(Reply::bad_sequence("MAIL first")),
            },
            Request::Bdat {
                chunk_size,
                is_last,
            } => {
                match std::mem::take(&mut self.phase) {
                    Phase::Mail(env) | Phase::Chunking(env) if !env.rcpts.is_empty() => {
                        self.phase = Phase::Chunking(env);
                        Action::StartBdat {
                            chunk_size,
                            is_last,
                        }
                    }
                    other => {
                        let reply = if matches!(other, Phase::Mail(_)) {
                            Reply::new(554, (5, 5, 1), "No valid recipients")
                        } else {
                            Reply::bad_sequence("MAIL first")
                        };
                        self.phase = other;
                        // The chunk arrives anyway and must be skipped (RFC 3030 §2).
                        Action::SkipBdat { chunk_size, reply }
                    }
                }
            }
            Request::Rset => {
                if self.phase != Phase::Connected {
                    self.phase = Phase::Ready;
                }
                Action::Reply(Reply::ok("Reset"))
            }
            Request::Noop { .. } => Action::Reply(Reply::ok("OK")),
            // RFC 5321 §3.5.3: 252 when we will not verify.
            Request::Vrfy { .. } => Action::Reply(Reply::new(
                252,
                (2, 5, 0),
                "Cannot VRFY user, but will accept message",
            )),
            Request::Expn { .. } => Action::Reply(Reply::new(502, (5, 5, 1), "EXPN not available")),
            Request::Help { .. } => Action::Reply(Reply::new(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT STARTTLS",
            )),
            Request::Quit => Action::Close(Reply::new(221, (2, 0, 0), "Bye")),
            Request::StartTls => {
                if self.tls_active {
                    Action::Reply(Reply::bad_sequence("TLS already active"))
                } else if !self.tls_available {
                    Action::Reply(Reply::new(502, (5, 5, 1), "STARTTLS not available"))
                } else if self.in_transaction() {
                    Action::Reply(Reply::bad_sequence(
                        "STARTTLS not allowed inside a transaction",
                    ))
                } else {
                    Action::StartTls
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            other @ (Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }) => Action::Reply(Reply::new(
                502,
                (5, 5, 1),
                format!("{} not implemented", other.name()),
            )),
        }
    }

    fn auth(&mut self, mechanism: u64, initial: String) -> Action {
        if self.mode == Mode::Inbound {
            return Action::Reply(Reply::new(
                503,
                (5, 5, 1),
                "AUTH not available on this port; use submission",
            ));
        }
        if !self.auth_allowed() {
            // RFC 4954 §4 / RFC 3207: no credentials over plaintext.
            return Action::Reply(Reply::new(
                538,
                (5, 7, 11),
                "Encryption required: STARTTLS first",
            ));
        }
        if self.agent.is_some() {
            return Action::Reply(Reply::bad_sequence("Already authenticated"));
        }
        if self.phase == Phase::Connected {
            return Action::Reply(Reply::bad_sequence("Send EHLO first"));
        }
        if self.in_transaction() {
            return Action::Reply(Reply::bad_sequence("AUTH not allowed during a transaction"));
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.sasl = Some(Sasl::Plain);
                Action::SaslChallenge(String::new())
            }
            AUTH_PLAIN => self.plain_response(&initial),
            AUTH_LOGIN if initial.is_empty() => {
                self.sasl = Some(Sasl::LoginUser);
                Action::SaslChallenge(BASE64.encode("Username:"))
            }
            AUTH_LOGIN => match decode_text(&initial) {
                Some(user) => {
                    self.sasl = Some(Sasl::LoginPassword(user));
                    Action::SaslChallenge(BASE64.encode("Password:"))
                }
                None => self.auth_failed_syntax(),
            },
            _ => Action::Reply(Reply::new(
                504,
                (5, 5, 4),
                "Unrecognized authentication mechanism",
            )),
        }
    }

    /// True while the next line belongs to an AUTH exchange.
    pub fn in_sasl(&self) -> bool {
        self.sasl.is_some()
    }

    /// A line of an AUTH exchange (without CRLF). `*` cancels (RFC 4954 §4).
    pub fn sasl_line(&mut self, line: &str) -> Action {
        let Some(state) = self.sasl.take() else {
            return Action::Reply(Reply::bad_sequence("No AUTH in progress"));
        };
        if line.trim() == "*" {
            return Action::Reply(Reply::new(501, (5, 0, 0), "Authentication cancelled"));
        }
        match state {
            Sasl::Plain => self.plain_response(line.trim()),
            Sasl::LoginUser => match decode_text(line.trim()) {
                Some(user) => {
                    self.sasl = Some(Sasl::LoginPassword(user));
                    Action::SaslChallenge(BASE64.encode("Password:"))
                }
                None => self.auth_failed_syntax(),
            },
            Sasl::LoginPassword(login) => match decode_text(line.trim()) {
                Some(password) => Action::Verify { login, password },
                None => self.auth_failed_syntax(),
            },
        }
    }

    fn plain_response(&mut self, b64: &str) -> Action {
        let decoded = BASE64.decode(b64.as_bytes()).ok();
        match decoded.as_deref().and_then(crate::auth::decode_plain) {
            Some((login, password)) => Action::Verify { login, password },
            None => self.auth_failed_syntax(),
        }
    }

    fn auth_failed_syntax(&mut self) -> Action {
        self.error(Reply::new(
            501,
            (5, 5, 2),
            "Cannot decode the authentication response",
        ))
    }

    /// The outcome of checking the credentials from `Action::Verify`.
    pub fn verified(&mut self, result: Result<String, crate::auth::AuthError>) -> Action {
        match result {
            Ok(login) => {
                self.agent = Some(login);
                Action::Reply(Reply::new(235, (2, 7, 0), "Authentication successful"))
            }
            Err(crate::auth::AuthError::Throttled) => Action::Reply(Reply::new(
                454,
                (4, 7, 0),
                "Too many failed attempts, try again later",
            )),
            Err(crate::auth::AuthError::Invalid) => self.error(Reply::new(
                535,
                (5, 7, 8),
                "Authentication credentials invalid",
            )),
        }
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Action {
        if self.mode == Mode::Submission {
            let Some(agent) = &self.agent else {
                return Action::Reply(Reply::new(530, (5, 7, 0), "Authentication required"));
            };
            if let Err(reason) = auth::sender_allowed(&self.config, agent, &from.address) {
                return Action::Reply(Reply::new(550, (5, 7, 1), reason));
            }
        }
        match self.phase {
            Phase::Connected => {
                return Action::Reply(Reply::bad_sequence("Send EHLO or HELO first"));
            }
            Phase::Mail(_) | Phase::Chunking(_) => {
                return Action::Reply(Reply::bad_sequence("Nested MAIL command"));
            }
            Phase::Ready => {}
        }
        let max = self.config.smtp.max_message_size;
        if from.size > max {
            return Action::Reply(Reply::message_too_big(max));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Action::Reply(Reply::new(
                553,
                (5, 6, 7),
                "Non-ASCII address requires SMTPUTF8",
            ));
        }
        self.phase = Phase::Mail(Envelope {
            mail_from: from.address,
            rcpts: Vec::new(),
            smtputf8,
        });
        Action::Reply(Reply::new(250, (2, 1, 0), "Sender OK"))
    }

    fn rcpt(&mut self, address: String) -> Action {
        let max_rcpts = self.config.smtp.max_recipients;
        let Phase::Mail(env) = &mut self.phase else {
            return Action::Reply(Reply::bad_sequence("MAIL first"));
        };
        if !env.smtputf8 && !address.is_ascii() {
            return Action::Reply(Reply::new(
                553,
                (5, 6, 7),
                "Non-ASCII address requires SMTPUTF8",
            ));
        }
        let (inbox, tag) = match self.config.inbox_for_address(&address) {
            Some((inbox, tag)) => (Some(inbox.name.clone()), tag),
            // Agents reply to anyone; the MX accepts only its inboxes (never an open relay).
            None if self.mode == Mode::Submission => (None, None),
            None => {
                return Action::Reply(Reply::new(
                    550,
                    (5, 1, 1),
                    "No such mailbox here; relaying denied",
                ));
            }
        };
        if env
            .rcpts
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&address))
        {
            return Action::Reply(Reply::new(250, (2, 1, 5), "Recipient OK (duplicate)"));
        }
        // RFC 5321 §4.5.3.1.8: 452 for too many recipients, the client retries the rest.
        if env.rcpts.len() >= max_rcpts {
            return Action::Reply(Reply::new(452, (4, 5, 3), "Too many recipients"));
        }
        env.rcpts.push(Recipient {
            address,
            inbox,
            tag,
        });
        Action::Reply(Reply::new(250, (2, 1, 5), "Recipient OK"))
    }

    fn ehlo_reply(&self) -> Vec<u8> {
        let mut ehlo = EhloResponse::new(self.config.server.hostname.as_str());
        ehlo.capabilities = EXT_8BIT_MIME
            | EXT_ENHANCED_STATUS_CODES
            | EXT_PIPELINING
            | EXT_SIZE
            | EXT_CHUNKING
            | EXT_SMTP_UTF8;
        if self.tls_available && !self.tls_active {
            ehlo.capabilities |= EXT_START_TLS;
        }
        if self.auth_allowed() && self.agent.is_none() {
            ehlo.capabilities |= EXT_AUTH;
            ehlo.auth_mechanisms = AUTH_PLAIN | AUTH_LOGIN;
        }
        ehlo.size = self.config.smtp.max_message_size;
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ehlo.write(&mut out);
        out
    }

    /// Checks a complete body against the header limits before it is stored.
    pub fn check_message(&self, raw: &[u8]) -> Result<(), Reply> {
        // Like Postfix, accept what has no header fields or has an mbox `From ` line or
        // blank lines before them (an MX that bounces those loses real mail); only a
        // message with nothing in it is refused.
        let span = header_span(raw);
        if span.start >= raw.len() {
            return Err(Reply::new(550, (5, 6, 0), "Message is empty"));
        }
        if span.len() > self.config.smtp.max_header_size {
            return Err(Reply::new(552, (5, 3, 4), "Header section too large"));
        }
        let max_line = self.config.smtp.max_line_length;
        if raw
            .get(span)
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .any(|line| line.len() > max_line)
        {
            return Err(Reply::new(500, (5, 5, 6), "Header line too long"));
        }
        Ok(())
    }
}

fn decode_text(b64: &str) -> Option<String> {
    BASE64
        .decode(b64.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}
