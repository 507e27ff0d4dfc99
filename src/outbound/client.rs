//! One SMTP client session to one host (mail-send's low-level path, CRATES §2.3):
//! connect → 220 → EHLO → STARTTLS when offered → EHLO again → MAIL → RCPT per recipient
//! (each with its own result) → DATA or BDAT → QUIT. Every phase has its own timeout.
//! Nothing here knows about the queue: the caller gets per-recipient outcomes, or "this
//! host did not work, try the next one".

use std::net::SocketAddr;
use std::time::Duration;

use mail_send::SmtpClient;
use mail_send::smtp::AssertReply;
use mail_send::smtp::message::Parameters;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_CHUNKING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::resolve::Target;
use crate::store::RecipientOutcome;

/// Establishing the TCP connection. RFC 5321 §4.5.3.2 sets no connect timeout; 30 s
/// lets an unreachable host fail fast so the next MX gets its turn.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 §4.5.3.2.1: initial 220 message, 5 minutes.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.2 and §4.5.3.2.3: MAIL and RCPT replies, 5 minutes (used for EHLO,
/// STARTTLS and QUIT too).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.6: the reply to the end of data, 10 minutes (mail-send applies one
/// timeout to the whole DATA/BDAT exchange, so this also bounds the transfer).
pub const DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Per-phase limits; [`Default`] holds the RFC values above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            greeting: GREETING_TIMEOUT,
            command: COMMAND_TIMEOUT,
            data: DATA_TIMEOUT,
        }
    }
}

/// What to send in one session.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Our name in EHLO (`[server] hostname`).
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub message: &'a [u8],
}

/// How a session with one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionResult {
    /// A transaction ran: one outcome per recipient of the envelope.
    Done(Vec<(String, RecipientOutcome)>),
    /// No transaction (connection, greeting, EHLO, TLS, or a 4xx to MAIL): try the next
    /// host, then later.
    HostFailed(String),
}

/// `550 5.1.1 text` (multi-line texts joined).
fn reply_text(r: &smtp_proto::Response<String>) -> String {
    let text = r.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if r.esc[0] == 0 {
        format!("{} {text}", r.code)
    } else {
        format!("{} {}.{}.{} {text}", r.code, r.esc[0], r.esc[1], r.esc[2])
    }
}

fn error_text(host: &str, e: &mail_send::Error) -> String {
    match e {
        mail_send::Error::UnexpectedReply(r) => format!("{host} said: {}", reply_text(r)),
        mail_send::Error::Timeout => format!("{host}: timed out"),
        other => format!("{host}: {other}"),
    }
}

/// A reply code ≥ 500 (permanent), if the error is a reply at all.
fn is_permanent(e: &mail_send::Error) -> bool {
    matches!(e, mail_send::Error::UnexpectedReply(r) if r.code >= 500)
}

/// Delivers to one target: its addresses in order until one holds a session.
pub async fn deliver_to(
    target: &Target,
    env: &Envelope<'_>,
    tls: &TlsConnector,
    timeouts: &Timeouts,
) -> SessionResult {
    let mut last = format!("{}: no address", target.host);
    for addr in &target.addrs {
        match session(*addr, target, env, tls, timeouts).await {
            SessionResult::HostFailed(e) => {
                tracing::debug!(host = %target.host, %addr, error = %e, "outbound: host failed");
                last = e;
            }
            done => return done,
        }
    }
    SessionResult::HostFailed(last)
}

async fn session(
    addr: SocketAddr,
    target: &Target,
    env: &Envelope<'_>,
    tls: &TlsConnector,
    timeouts: &Timeouts,
) -> SessionResult {
    let host = target.host.as_str();
    let fail = |e: mail_send::Error| SessionResult::HostFailed(error_text(host, &e));
    let mut c = match SmtpClient::connect(addr, timeouts.connect).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    c.timeout = timeouts.command;
    match tokio::time::timeout(timeouts.greeting, c.read()).await {
        Err(_) => return fail(mail_send::Error::Timeout),
        Ok(Err(e)) => return fail(e),
        Ok(Ok(greeting)) => {
            if let Err(e) = greeting.assert_positive_completion() {
                return fail(e);
            }
        }
    }
    let caps = match c.ehlo(env.helo).await {
        Ok(caps) => caps,
        Err(e) => return fail(e),
    };
    if caps.has_capability(EXT_START_TLS) {
        // Opportunistic TLS: any certificate is accepted (the caller's connector), since
        // refusing it would only make us fall back to plaintext (CRATES §2.3 pitfall 3).
        let mut c = match c.start_tls(tls, host).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        // RFC 3207 §4.2: forget what was learnt before TLS; ask again.
        let caps = match c.ehlo(env.helo).await {
            Ok(caps) => caps,
            Err(e) => return fail(e),
        };
        transaction(&mut c, host, &caps, env, timeouts).await
    } else {
        transaction(&mut c, host, &caps, env, timeouts).await
    }
}

async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    host: &str,
    caps: &EhloResponse<String>,
    env: &Envelope<'_>,
    timeouts: &Timeouts,
) -> SessionResult {
    let all = |outcome: RecipientOutcome| {
        env.recipients
            .iter()
            .map(|r| (r.clone(), outcome.clone()))
            .collect::<Vec<_>>()
    };
    // RFC 1870: a host announcing a smaller limit will refuse the message anyway.
    if caps.has_capability(EXT_SIZE) && caps.size > 0 && env.message.len() > caps.size {
        quit(c).await;
        return SessionResult::Done(all(RecipientOutcome::Failed(format!(
            "{host}: message of {} bytes exceeds the host's limit of {} bytes",
            env.message.len(),
            caps.size
        ))));
    }
    let size = env.message.len().to_string();
    let mut params = Parameters::new();
    if caps.has_capability(EXT_SIZE) {
        params.add(("SIZE", size.as_str()));
    }
    // RFC 6152: declare 8-bit bodies where the host can take them.
    if caps.has_capability(EXT_8BIT_MIME) && !env.message.is_ascii() {
        params.add(("BODY", "8BITMIME"));
    }
    // RFC 6531: internationalised addresses need SMTPUTF8.
    let utf8 = !env.mail_from.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii());
    if utf8 && caps.has_capability(EXT_SMTP_UTF8) {
        params.add("SMTPUTF8");
    }
    if let Err(e) = c.mail_from(env.mail_from, &params).await {
        let text = error_text(host, &e);
        if is_permanent(&e) {
            quit(c).await;
            return SessionResult::Done(all(RecipientOutcome::Failed(text)));
        }
        return SessionResult::HostFailed(text);
    }
    let mut results = Vec::with_capacity(env.recipients.len());
    let mut accepted = Vec::new();
    for (i, rcpt) in env.recipients.iter().enumerate() {
        match c.rcpt_to(rcpt, &Parameters::new()).await {
            Ok(()) => accepted.push(rcpt.clone()),
            Err(e @ mail_send::Error::UnexpectedReply(_)) => {
                let text = error_text(host, &e);
                let outcome = if is_permanent(&e) {
                    RecipientOutcome::Failed(text)
                } else {
                    RecipientOutcome::Deferred(text)
                };
                results.push((rcpt.clone(), outcome));
            }
            Err(e) => {
                // The connection broke: everyone not yet answered waits for a retry.
                let text = error_text(host, &e);
                for r in accepted.iter().chain(&env.recipients[i..]) {
                    results.push((r.clone(), RecipientOutcome::Deferred(text.clone())));
                }
                return SessionResult::Done(results);
            }
        }
    }
    if accepted.is_empty() {
        quit(c).await;
        return SessionResult::Done(results);
    }
    c.timeout = timeouts.data;
    let sent = if caps.has_capability(EXT_CHUNKING) {
        c.bdat(env.message).await
    } else {
        // mail-send always ends DATA with CRLF . CRLF; leave out the message's own final
        // CRLF so the bytes arrive exactly as queued (CRATES §2.3 pitfall 5).
        c.data(env.message.strip_suffix(b"\r\n").unwrap_or(env.message))
            .await
    };
    c.timeout = timeouts.command;
    let outcome = match sent {
        Ok(_) => RecipientOutcome::Delivered,
        Err(e) if is_permanent(&e) => RecipientOutcome::Failed(error_text(host, &e)),
        // A 4xx, or no answer: whether it arrived is unknown; retrying may duplicate it,
        // which SMTP accepts (at least once), losing it would not be.
        Err(e) => RecipientOutcome::Deferred(error_text(host, &e)),
    };
    results.extend(accepted.into_iter().map(|r| (r, outcome.clone())));
    quit(c).await;
    SessionResult::Done(results)
}

/// QUIT, best effort: the transaction's outcome is already known.
async fn quit<T: AsyncRead + AsyncWrite + Unpin>(c: &mut SmtpClient<T>) {
    let _ = c.cmd(b"QUIT\r\n").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_like_smtp() {
        let r = smtp_proto::Response {
            code: 550,
            esc: [5, 1, 1],
            message: "no such\nuser".to_string(),
        };
        assert_eq!(reply_text(&r), "550 5.1.1 no such user");
        let r = smtp_proto::Response {
            code: 421,
            esc: [0, 0, 0],
            message: "busy".to_string(),
        };
        assert_eq!(reply_text(&r), "421 busy");
        let e = mail_send::Error::UnexpectedReply(r);
        assert!(!is_permanent(&e));
        assert_eq!(error_text("mx.test", &e), "mx.test said: 421 busy");
    }
}
