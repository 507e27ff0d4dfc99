//! Drives an SMTP `Session` over a socket: bounded command lines, DATA and BDAT bodies
//! with size limits, per-read and per-body timeouts, STARTTLS, and graceful shutdown
//! (idle sessions get `421`, a body in flight is finished first).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, RequestReceiver,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::session::{Action, Mode, Session};
use crate::{
    auth::Authenticator,
    config::Config,
    ingest::{Ingest, Origin},
    mail::{envelope::Envelope, reply::Reply},
    metrics::{Metrics, Port},
    net::tls::Tls,
    reload::Reloadable,
    submit::Submit,
};

/// What every SMTP connection (MX and submission) shares.
pub struct SmtpContext {
    pub config: Arc<Reloadable<Config>>,
    pub tls: Option<Tls>,
    pub ingest: Ingest,
    pub auth: Authenticator,
    /// Handles agents' mail on the submission port.
    pub submit: Submit,
    pub shutdown: CancellationToken,
    /// Sessions, accepted messages, refusals and their timing.
    pub metrics: Metrics,
}

impl SmtpContext {
    /// Appends a reply, counting it when it refuses.
    fn answer(&self, conn: &Connection, reply: &Reply, out: &mut Vec<u8>) {
        if let Some(reason) = reply.refusal_reason() {
            self.metrics.smtp_rejected(conn.port, reason);
        }
        reply.write(out);
    }
}

/// Facts about the connection that go into the Received header and logs.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub id: u64,
    /// Which service, for metrics.
    pub port: Port,
}

enum Outcome {
    Closed,
    StartTls,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
}

/// How the bytes after a command line are being consumed.
enum Reading {
    Command,
    /// Discarding the rest of an over-long command line.
    SkipLine,
    Data(DataReceiver),
    /// Reading the rest of an over-size DATA body to its end, to answer 552.
    DataDiscard(DummyDataReceiver),
    Bdat(BdatReceiver),
    /// Skipping a BDAT chunk, then answering with the stored reply.
    BdatDiscard(DummyDataReceiver, Reply),
}

const READ_CHUNK: usize = 64 * 1024;

/// Serves one connection to the end: plain with STARTTLS, or implicit TLS (465).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    ctx: Arc<SmtpContext>,
    mode: Mode,
    implicit_tls: bool,
) {
    let config = ctx.config.current();
    let port = match mode {
        Mode::Inbound => Port::Inbound,
        Mode::Submission => Port::Submission,
    };
    let _active = ctx.metrics.smtp_session(port);
    let conn = Connection {
        peer,
        local: stream.local_addr().ok(),
        id,
        port,
    };
    if implicit_tls {
        let Some(tls) = &ctx.tls else { return };
        let Some(mut tls_stream) = tls
            .accept(stream, config.server.tls_handshake_timeout)
            .await
        else {
            return;
        };
        let mut session = Session::with_mode(config.clone(), mode, true, true);
        if let Err(e) = run(&mut tls_stream, &mut session, &conn, &ctx, true).await {
            debug!(error = %e, "session ended");
        }
        let _ = tls_stream.shutdown().await;
        return;
    }
    let mut session = Session::with_mode(config.clone(), mode, ctx.tls.is_some(), false);
    let mut stream = stream;
    match run(&mut stream, &mut session, &conn, &ctx, true).await {
        Ok(Outcome::Closed) => {}
        Ok(Outcome::StartTls) => {
            let Some(tls) = &ctx.tls else { return };
            let Some(mut tls_stream) = tls
                .accept(stream, config.server.tls_handshake_timeout)
                .await
            else {
                return;
            };
            session.reset_after_tls();
            if let Err(e) = run(&mut tls_stream, &mut session, &conn, &ctx, false).await {
                debug!(error = %e, "session ended");
            }
            let _ = tls_stream.shutdown().await;
        }
        Err(e) => debug!(error = %e, "session ended"),
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    session: &mut Session,
    conn: &Connection,
    ctx: &SmtpContext,
    greet: bool,
) -> Result<Outcome, ConnError> {
    let config = session.config().clone();
    let limits = &config.smtp;
    let mut buf: Vec<u8> = Vec::new();
    // Start of the unprocessed input in `buf`: consumed bytes are dropped once per read,
    // not per line (a read full of pipelined commands would otherwise be quadratic).
    let mut pos = 0usize;
    let mut out: Vec<u8> = Vec::new();
    let mut message: Vec<u8> = Vec::new();
    let mut mode = Reading::Command;
    let mut body_deadline = Instant::now();
    // When the command line still incomplete in `buf` began: it must end within
    // `timeout` of that, not merely see a byte every `timeout` (slow-loris).
    let mut line_started: Option<Instant> = None;
    let mut read_buf = vec![0u8; READ_CHUNK];
    if greet {
        out.extend_from_slice(&session.greeting());
    }
    loop {
        // 1) Work through everything already received (pipelining, RFC 2920).
        loop {
            match &mut mode {
                Reading::Command => {
                    let Some(rel) = buf[pos..].iter().position(|b| *b == b'\n') else {
                        if buf.len() - pos > limits.max_line_length {
                            buf.clear();
                            pos = 0;
                            mode = Reading::SkipLine;
                            if push_action(session.line_too_long(), &mut out, ctx, conn) {
                                write_out(io, &mut out, limits.timeout).await?;
                                return Ok(Outcome::Closed);
                            }
                        }
                        break;
                    };
                    let line: Vec<u8> = buf[pos..pos + rel + 1].to_vec();
                    pos += rel + 1;
                    line_started = None;
                    let mut action = if line.len() > limits.max_line_length {
                        session.line_too_long()
                    } else if session.in_sasl() {
                        session.sasl_line(String::from_utf8_lossy(&line).trim_end())
                    } else {
                        match RequestReceiver::default().ingest(&mut line.iter()) {
                            Ok(req) => session.handle(req.into_owned()),
                            Err(e) => session.parse_error(&e),
                        }
                    };
                    if let Action::Verify { login, password } = action {
                        let result = ctx
                            .auth
                            .verify(&config, conn.peer.ip(), &login, &password)
                            .await;
                        if let Ok(agent) = &result {
                            info!(%agent, "authenticated");
                        }
                        action = session.verified(result);
                    }
                    match action {
                        Action::StartData => {
                            out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                            message.clear();
                            body_deadline = Instant::now() + config.smtp.data_timeout;
                            mode = Reading::Data(primed_data_receiver());
                        }
                        Action::StartBdat {
                            chunk_size,
                            is_last,
                        } => {
                            if message.is_empty() {
                                // The first chunk of a transaction starts the body clock.
                                body_deadline = Instant::now() + config.smtp.data_timeout;
                            }
                            if message.len().saturating_add(chunk_size) > limits.max_message_size {
                                session.abort_transaction();
                                message = Vec::new();
                                mode = Reading::BdatDiscard(
                                    DummyDataReceiver::new_bdat(chunk_size),
                                    Reply::message_too_big(limits.max_message_size),
                                );
                            } else {
                                message.reserve(chunk_size.min(READ_CHUNK * 16));
                                mode = Reading::Bdat(BdatReceiver::new(chunk_size, is_last));
                            }
                        }
                        Action::SkipBdat { chunk_size, reply } => {
                            mode = Reading::BdatDiscard(
                                DummyDataReceiver::new_bdat(chunk_size),
                                reply,
                            );
                        }
                        Action::StartTls => {
                            Reply::new(220, (2, 0, 0), "Ready to start TLS").write(&mut out);
                            write_out(io, &mut out, limits.timeout).await?;
                            // Bytes pipelined after STARTTLS are dropped on purpose (RFC 3207 §4.2,
                            // CVE-2011-0411 command injection).
                            return Ok(Outcome::StartTls);
                        }
                        other => {
                            if push_action(other, &mut out, ctx, conn) {
                                write_out(io, &mut out, limits.timeout).await?;
                                return Ok(Outcome::Closed);
                            }
                        }
                    }
                    // RSET or EHLO between BDAT chunks ends the transaction: its bytes must
                    // never become part of the next message.
                    if !session.in_transaction() && !message.is_empty() {
                        message = Vec::new();
                    }
                }
                Reading::SkipLine => match buf[pos..].iter().position(|b| *b == b'\n') {
                    Some(rel) => {
                        pos += rel + 1;
                        line_started = None;
                        mode = Reading::Command;
                    }
                    None => {
                        buf.clear();
                        pos = 0;
                        break;
                    }
                },
                Reading::Data(rx) => {
                    let mut iter = buf[pos..].iter();
                    let done = rx.ingest(&mut iter, &mut message);
                    let consumed = buf.len() - pos - iter.as_slice().len();
                    if message.len() > limits.max_message_size {
                        let discard = DummyDataReceiver::new_data(rx);
                        pos += consumed;
                        message = Vec::new();
                        if done {
                            session.abort_transaction();
                            ctx.answer(
                                conn,
                                &Reply::message_too_big(limits.max_message_size),
                                &mut out,
                            );
                            mode = Reading::Command;
                        } else {
                            mode = Reading::DataDiscard(discard);
                        }
                        continue;
                    }
                    pos += consumed;
                    if !done {
                        break;
                    }
                    mode = Reading::Command;
                    let reply =
                        finish_message(session, conn, ctx, std::mem::take(&mut message)).await;
                    ctx.answer(conn, &reply, &mut out);
                }
                Reading::DataDiscard(rx) => {
                    let mut iter = buf[pos..].iter();
                    let done = rx.ingest(&mut iter);
                    let consumed = buf.len() - pos - iter.as_slice().len();
                    pos += consumed;
                    if !done {
                        break;
                    }
                    session.abort_transaction();
                    ctx.answer(
                        conn,
                        &Reply::message_too_big(limits.max_message_size),
                        &mut out,
                    );
                    mode = Reading::Command;
                }
                Reading::Bdat(rx) => {
                    let mut iter = buf[pos..].iter();
                    let done = rx.ingest(&mut iter, &mut message);
                    let consumed = buf.len() - pos - iter.as_slice().len();
                    pos += consumed;
                    if !done {
                        break;
                    }
                    let is_last = rx.is_last;
                    mode = Reading::Command;
                    if is_last {
                        let reply =
                            finish_message(session, conn, ctx, std::mem::take(&mut message)).await;
                        ctx.answer(conn, &reply, &mut out);
                    } else {
                        Reply::ok(format!("{} octets received so far", message.len()))
                            .write(&mut out);
                    }
                }
                Reading::BdatDiscard(rx, reply) => {
                    let mut iter = buf[pos..].iter();
                    let done = rx.ingest(&mut iter);
                    let consumed = buf.len() - pos - iter.as_slice().len();
                    pos += consumed;
                    if !done {
                        break;
                    }
                    ctx.answer(conn, reply, &mut out);
                    mode = Reading::Command;
                }
            }
        }

        buf.drain(..pos);
        pos = 0;

        // 2) Answer everything decided so far in one write.
        write_out(io, &mut out, limits.timeout).await?;

        // 3) Wait for more input. Between commands shutdown wins; a body in flight is
        //    finished (bounded by the body deadline).
        // Between BDAT chunks the body clock keeps running (RFC 3030 has no idle chunks).
        let in_body =
            !matches!(mode, Reading::Command | Reading::SkipLine) || session.in_chunking();
        let partial_line = matches!(mode, Reading::SkipLine) || !buf.is_empty();
        let read_deadline = if in_body {
            body_deadline.min(Instant::now() + limits.timeout)
        } else if partial_line {
            *line_started.get_or_insert_with(Instant::now) + limits.timeout
        } else {
            Instant::now() + limits.timeout
        };
        let n = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if !in_body => {
                ctx.answer(conn, &Reply::shutting_down(), &mut out);
                write_out(io, &mut out, limits.timeout).await?;
                return Ok(Outcome::Closed);
            }
            r = timeout_at(read_deadline, io.read(&mut read_buf)) => match r {
                Ok(r) => r?,
                Err(_) => {
                    info!(in_body, "closing idle session");
                    ctx.answer(conn, &Reply::timeout(), &mut out);
                    let _ = write_out(io, &mut out, limits.timeout).await;
                    return Err(ConnError::Timeout);
                }
            },
        };
        if n == 0 {
            if in_body {
                // RFC 5321 §4.1.1.4: no end of data, no delivery.
                info!(
                    received = message.len(),
                    "connection lost mid-body, nothing stored"
                );
            }
            return Ok(Outcome::Closed);
        }
        buf.extend_from_slice(&read_buf[..n]);
    }
}

/// Appends the reply of an action; true when the connection must close after it.
fn push_action(action: Action, out: &mut Vec<u8>, ctx: &SmtpContext, conn: &Connection) -> bool {
    match action {
        Action::Reply(r) => {
            ctx.answer(conn, &r, out);
            false
        }
        Action::Raw(bytes) => {
            out.extend_from_slice(&bytes);
            false
        }
        Action::SaslChallenge(challenge) => {
            out.extend_from_slice(format!("334 {challenge}\r\n").as_bytes());
            false
        }
        // Resolved by the caller before it gets here.
        Action::Verify { .. } => false,
        Action::Close(r) => {
            ctx.answer(conn, &r, out);
            true
        }
        // Handled by the caller before it gets here.
        Action::StartData
        | Action::StartBdat { .. }
        | Action::SkipBdat { .. }
        | Action::StartTls => false,
    }
}

async fn write_out<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), ConnError> {
    if out.is_empty() {
        return Ok(());
    }
    timeout(limit, async {
        io.write_all(out).await?;
        io.flush().await
    })
    .await
    .map_err(|_| ConnError::Timeout)??;
    out.clear();
    Ok(())
}

/// smtp-proto 0.2.5 does not treat the start of the body as a line start, so an
/// immediate `.\r\n` or a first line `..x` is mishandled (CRATES.md §2.2 pitfall 1).
/// Feeding it one CRLF first fixes both.
fn primed_data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let _ = rx.ingest(&mut b"\r\n".iter(), &mut Vec::new());
    rx
}

/// A complete body, answered and timed.
async fn finish_message(
    session: &mut Session,
    conn: &Connection,
    ctx: &SmtpContext,
    body: Vec<u8>,
) -> Reply {
    let started = Instant::now();
    let reply = store_message(session, conn, ctx, body).await;
    ctx.metrics
        .smtp_message(conn.port, reply.is_positive(), started.elapsed());
    reply
}

/// A complete body: check it, prepend our trace header, store it durably, answer.
async fn store_message(
    session: &mut Session,
    conn: &Connection,
    ctx: &SmtpContext,
    body: Vec<u8>,
) -> Reply {
    if let Err(reply) = session.check_message(&body) {
        session.abort_transaction();
        return reply;
    }
    let Some(envelope) = session.take_envelope() else {
        return Reply::bad_sequence("No transaction");
    };
    let now = time::OffsetDateTime::now_utc();
    let received = received_header(session, conn, &envelope, now);
    let delivered = match session.mode() {
        Mode::Submission => {
            let agent = session.agent().unwrap_or_default().to_string();
            let mut raw = Vec::with_capacity(received.len() + body.len());
            raw.extend_from_slice(received.as_bytes());
            raw.extend_from_slice(&body);
            drop(body);
            return ctx
                .submit
                .submit(&agent, &envelope, raw, now.unix_timestamp())
                .await;
        }
        Mode::Inbound => {
            let origin = Origin {
                peer: conn.peer.ip(),
                helo: session.helo().unwrap_or(""),
            };
            ctx.ingest
                .deliver(
                    &envelope,
                    body,
                    &received,
                    Some(origin),
                    now.unix_timestamp(),
                )
                .await
        }
    };
    match delivered {
        Ok(summary) => {
            info!(from = %envelope.mail_from, rcpts = envelope.rcpts.len(), %summary, "accepted");
            Reply::ok(format!("Message accepted: {summary}"))
        }
        Err(e) => {
            let reply = e.reply();
            if e.is_peer_fault() {
                info!(error = %e, "message refused");
            } else {
                warn!(error = %e, "message not stored");
            }
            reply
        }
    }
}

/// RFC 5321 §4.4 trace header.
fn received_header(
    session: &Session,
    conn: &Connection,
    env: &Envelope,
    now: time::OffsetDateTime,
) -> String {
    let helo = session.helo().unwrap_or("unknown");
    let helo: String = helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let date = now
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    let for_clause = match env.rcpts.as_slice() {
        [one] => format!("\r\n\tfor <{}>", one.address),
        _ => String::new(),
    };
    format!(
        "Received: from {helo} ([{}])\r\n\tby {} (teamgate) with {} id {:x}.{}{for_clause};\r\n\t{date}\r\n",
        conn.peer.ip(),
        session.config().server.hostname,
        session.protocol(),
        now.unix_timestamp(),
        conn.id,
    )
}
