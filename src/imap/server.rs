//! Drives an IMAP `Session` over a socket with imap-next's sans-I/O server (literals,
//! AUTHENTICATE rounds, IDLE/DONE): our own loop, so plain TCP, STARTTLS and implicit TLS
//! share one code path (CRATES.md §2.8). Timeouts, store-change pushes during IDLE and
//! `* BYE` on shutdown live here.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::time::Instant;

use imap_codec::imap_types::{
    auth::AuthenticateData,
    command::CommandBody,
    core::Tag,
    response::{CommandContinuationRequest, Data, Status},
};
use imap_next::{
    Interrupt, Io, State,
    server::{Event, Options, ResponseHandle, Server},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    binary, extended,
    session::{After, Answer, FetchCursor, ImapContext, Session},
    trace::{Trace, TraceConfig},
};
use crate::{config::Config, metrics::Metrics};

const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Input accepted before login (commands, a LOGIN literal): far more than any login needs.
const MAX_UNAUTHENTICATED_BYTES: usize = 64 * 1024;
/// Malformed commands tolerated before the connection is closed.
const MAX_BAD_COMMANDS: u32 = 20;

enum Outcome {
    Closed,
    StartTls,
}

/// Serves one IMAP connection to the end; `metrics` counts it and times its commands.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    session_id: u64,
    ctx: Arc<ImapContext>,
    shutdown: CancellationToken,
    implicit_tls: bool,
    metrics: Metrics,
) {
    let _active = metrics.imap_session();
    let config = ctx.config.current();
    let mut session = Session::new(ctx.clone(), peer, false);
    let trace_config = TraceConfig::of(&config);
    let mut trace = Trace::start(&trace_config).map(|t| Traced {
        trace: t,
        config: trace_config,
        session_id,
    });
    if implicit_tls {
        let Some(tls) = &ctx.tls else { return };
        let Some(mut stream) = tls
            .accept(stream, config.server.tls_handshake_timeout)
            .await
        else {
            return;
        };
        session.tls_started();
        let _ = run(
            &mut stream,
            &mut session,
            &ctx,
            &shutdown,
            true,
            &metrics,
            &mut trace,
        )
        .await;
        let _ = stream.shutdown().await;
        return;
    }
    let mut stream = stream;
    match run(
        &mut stream,
        &mut session,
        &ctx,
        &shutdown,
        true,
        &metrics,
        &mut trace,
    )
    .await
    {
        Ok(Outcome::StartTls) => {
            let Some(tls) = &ctx.tls else { return };
            let Some(mut stream) = tls
                .accept(stream, config.server.tls_handshake_timeout)
                .await
            else {
                return;
            };
            session.tls_started();
            // No second greeting after STARTTLS (RFC 3501 §6.2.1).
            let _ = run(
                &mut stream,
                &mut session,
                &ctx,
                &shutdown,
                false,
                &metrics,
                &mut trace,
            )
            .await;
            let _ = stream.shutdown().await;
        }
        Ok(Outcome::Closed) => {}
        Err(e) => debug!(error = %e, "session ended"),
    }
}

/// A session's protocol trace with what it needs to open its file at login.
struct Traced {
    trace: Trace,
    config: TraceConfig,
    session_id: u64,
}

/// imap-next's limits for our config: a literal may be as large as a message we accept
/// (APPEND), a command that much plus 64 KiB of arguments. The fuzz harness uses the same.
pub fn protocol_options(config: &Config) -> Options {
    let mut options = Options::default();
    let max_literal = u32::try_from(config.smtp.max_message_size).unwrap_or(u32::MAX - 65536);
    options.max_literal_size = max_literal;
    options.max_command_size = max_literal.saturating_add(64 * 1024);
    options
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    session: &mut Session,
    ctx: &ImapContext,
    shutdown: &CancellationToken,
    greet: bool,
    metrics: &Metrics,
    trace: &mut Option<Traced>,
) -> std::io::Result<Outcome> {
    let config = ctx.config.current();
    let mut server = Server::new(protocol_options(&config), session.greeting());
    let mut skip_greeting = !greet;
    let mut changes = ctx.store.subscribe();
    let mut presence = ctx.replying.subscribe();
    let mut idling: Option<Tag<'static>> = None;
    let mut authenticating: Option<Tag<'static>> = None;
    let mut finish_after: Option<(ResponseHandle, After)> = None;
    let mut bad_commands = 0u32;
    let mut unauthenticated_bytes = 0usize;
    let login_deadline = Instant::now() + config.imap.login_timeout;
    let mut read_buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            match server.next() {
                Ok(Event::GreetingSent { .. }) => {}
                Ok(Event::ResponseSent { handle, .. }) => {
                    if let Some((expected, after)) = finish_after
                        && expected == handle
                    {
                        match after {
                            After::Logout => return Ok(Outcome::Closed),
                            After::StartTls => return Ok(Outcome::StartTls),
                            After::Continue | After::Idle => finish_after = None,
                        }
                    }
                }
                Ok(Event::CommandReceived { command }) => {
                    let name = command_name(&command.body);
                    let origins = binary::partial_origins(&command.body);
                    let started = Instant::now();
                    let mut answer = session.command(command).await;
                    // A FETCH of many messages goes out chunk by chunk, written here: the
                    // send queue is empty, so the order holds, and the tagged status
                    // follows through the queue.
                    if let Some(cursor) = answer.more.take() {
                        stream_fetch(io, trace, session, &mut answer, cursor, &origins).await?;
                        metrics.imap_command(name, started.elapsed());
                        enqueue(&mut server, answer);
                        continue;
                    }
                    metrics.imap_command(name, started.elapsed());
                    // A partial BINARY needs an origin imap-types cannot encode; the send
                    // queue is empty here, so writing it ourselves keeps the order.
                    if let Some(origins) = origins {
                        write_timed(io, &binary::encode_with_origins(answer, &origins), trace)
                            .await?;
                        continue;
                    }
                    let after = answer.after;
                    let handle = enqueue(&mut server, answer);
                    if matches!(after, After::Logout | After::StartTls) {
                        finish_after = Some((handle, after));
                    }
                }
                Ok(Event::CommandAuthenticateReceived {
                    command_authenticate,
                }) => {
                    let tag = command_authenticate.tag;
                    if let Err(reason) =
                        session.authenticate_allowed(&command_authenticate.mechanism)
                    {
                        let status =
                            Status::no(Some(tag), None, reason).unwrap_or_else(|_| fallback_no());
                        let _ = server.authenticate_finish(status);
                    } else if let Some(initial) = command_authenticate.initial_response {
                        let started = Instant::now();
                        let answer = session.authenticate_plain(tag, initial.declassify()).await;
                        metrics.imap_command("AUTHENTICATE", started.elapsed());
                        let _ = server.authenticate_finish(answer.status);
                    } else {
                        authenticating = Some(tag);
                        let _ = server
                            .authenticate_continue(CommandContinuationRequest::base64(Vec::new()));
                    }
                }
                Ok(Event::AuthenticateDataReceived { authenticate_data }) => {
                    let Some(tag) = authenticating.take() else {
                        continue;
                    };
                    let status = match authenticate_data {
                        AuthenticateData::Continue(secret) => {
                            let started = Instant::now();
                            let answer = session.authenticate_plain(tag, secret.declassify()).await;
                            metrics.imap_command("AUTHENTICATE", started.elapsed());
                            answer.status
                        }
                        AuthenticateData::Cancel => {
                            Status::bad(Some(tag), None, "AUTHENTICATE cancelled")
                                .unwrap_or_else(|_| fallback_no())
                        }
                    };
                    let _ = server.authenticate_finish(status);
                }
                Ok(Event::IdleCommandReceived { tag }) => {
                    let answer = session.command(idle_command(tag.clone())).await;
                    if answer.after == After::Idle {
                        let ccr = CommandContinuationRequest::basic(None, "idling").ok();
                        if let Some(ccr) = ccr {
                            let _ = server.idle_accept(ccr);
                        }
                        idling = Some(tag);
                        push(&mut server, session.pending_updates().await);
                    } else {
                        let _ = server.idle_reject(answer.status);
                    }
                }
                Ok(Event::IdleDoneReceived) => {
                    if let Some(tag) = idling.take() {
                        let status = Status::ok(Some(tag), None, "IDLE terminated")
                            .unwrap_or_else(|_| fallback_no());
                        server.enqueue_status(status);
                    }
                }
                Err(Interrupt::Io(Io::Output(bytes))) => {
                    if skip_greeting {
                        skip_greeting = false;
                        continue;
                    }
                    write_timed(io, &bytes, trace).await?;
                }
                Err(Interrupt::Io(Io::NeedMoreInput)) => break,
                Err(Interrupt::Error(e)) => {
                    // Forms imap-codec does not parse (LIST-EXTENDED, ESEARCH, MULTIAPPEND)
                    // arrive here, whole and framed by imap-next. Its send queue is empty
                    // by now, so writing the answer ourselves keeps the order.
                    let parsed = match &e {
                        imap_next::server::Error::MalformedMessage { discarded_bytes } => {
                            extended::parse(discarded_bytes.declassify())
                        }
                        _ => None,
                    };
                    match parsed {
                        Some(Ok(command)) => {
                            let started = Instant::now();
                            let (name, out) = session.extended(command).await;
                            metrics.imap_command(name, started.elapsed());
                            write_timed(io, &out, trace).await?;
                            continue;
                        }
                        Some(Err(malformed)) => {
                            bad_commands += 1;
                            write_timed(io, &extended::refusal(malformed), trace).await?;
                        }
                        None => {
                            bad_commands += 1;
                            if let Some(status) = tagged_bad(&e) {
                                server.enqueue_status(status);
                            }
                        }
                    }
                    if bad_commands > MAX_BAD_COMMANDS {
                        let bye = Status::bye(None, "too many bad commands")
                            .unwrap_or_else(|_| fallback_no());
                        let handle = server.enqueue_status(bye);
                        finish_after = Some((handle, After::Logout));
                    }
                }
            }
        }
        io.flush().await?;
        if let Some(t) = trace.as_mut()
            && let Some(login) = session.logged_in_as()
        {
            t.trace.logged_in(&t.config, login, t.session_id);
        }

        let limit = if session.is_authenticated() {
            config.imap.timeout
        } else {
            config.imap.login_timeout
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                let bye = Status::bye(None, "server shutting down").unwrap_or_else(|_| fallback_no());
                server.enqueue_status(bye);
                let _ = shutdown_write(io, &mut server, trace).await;
                return Ok(Outcome::Closed);
            }
            _ = changes.changed(), if idling.is_some() => {
                push(&mut server, session.pending_updates().await);
            }
            _ = presence.changed(), if idling.is_some() => {
                push(&mut server, session.pending_updates().await);
            }
            r = timeout(limit, io.read(&mut read_buf)) => {
                let n = match r {
                    Ok(r) => r?,
                    Err(_) => {
                        let bye = Status::bye(None, "autologout: idle too long").unwrap_or_else(|_| fallback_no());
                        server.enqueue_status(bye);
                        let _ = shutdown_write(io, &mut server, trace).await;
                        return Ok(Outcome::Closed);
                    }
                };
                if n == 0 {
                    return Ok(Outcome::Closed);
                }
                // Before login a client may not make us buffer a message-sized literal or
                // take forever: both would let anyone pin memory and slots.
                if !session.is_authenticated() {
                    unauthenticated_bytes += n;
                    if unauthenticated_bytes > MAX_UNAUTHENTICATED_BYTES || Instant::now() > login_deadline {
                        let bye = Status::bye(None, "log in first, and promptly").unwrap_or_else(|_| fallback_no());
                        server.enqueue_status(bye);
                        let _ = shutdown_write(io, &mut server, trace).await;
                        return Ok(Outcome::Closed);
                    }
                }
                if let Some(t) = trace.as_mut() {
                    t.trace.client(&read_buf[..n]);
                }
                server.enqueue_input(&read_buf[..n]);
            }
        }
    }
}

/// Every write to the client goes through here, so the protocol trace sees all of it.
async fn write_timed<S: AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
    trace: &mut Option<Traced>,
) -> std::io::Result<()> {
    if let Some(t) = trace.as_mut() {
        t.trace.server(bytes);
    }
    timeout(WRITE_TIMEOUT, io.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// Writes what is queued (a BYE) without taking more input.
async fn shutdown_write<S: AsyncWrite + Unpin>(
    io: &mut S,
    server: &mut Server,
    trace: &mut Option<Traced>,
) -> std::io::Result<()> {
    for _ in 0..16 {
        match server.next() {
            Err(Interrupt::Io(Io::Output(bytes))) => write_timed(io, &bytes, trace).await?,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    io.flush().await
}

/// Writes the untagged part of `answer`, then every further chunk of its FETCH, leaving
/// only the tagged status in `answer` (a NO if a chunk failed).
async fn stream_fetch<S: AsyncWrite + Unpin>(
    io: &mut S,
    trace: &mut Option<Traced>,
    session: &mut Session,
    answer: &mut Answer,
    mut cursor: FetchCursor,
    origins: &Option<Vec<Option<u32>>>,
) -> std::io::Result<()> {
    let origins = origins.as_deref().unwrap_or_default();
    let head = binary::encode_untagged(
        std::mem::take(&mut answer.untagged_status),
        std::mem::take(&mut answer.untagged),
        origins,
    );
    write_timed(io, &head, trace).await?;
    loop {
        match session.fetch_more(&mut cursor).await {
            Ok(Some(chunk)) => {
                write_timed(
                    io,
                    &binary::encode_untagged(Vec::new(), chunk, origins),
                    trace,
                )
                .await?;
            }
            Ok(None) => return Ok(()),
            Err(refused) => {
                answer.status = refused;
                return Ok(());
            }
        }
    }
}

fn enqueue(server: &mut Server, answer: Answer) -> ResponseHandle {
    for status in answer.untagged_status {
        server.enqueue_status(status);
    }
    push(server, answer.untagged);
    server.enqueue_status(answer.status)
}

fn push(server: &mut Server, data: Vec<Data<'static>>) {
    for d in data {
        server.enqueue_data(d);
    }
}

/// The command's name as a metrics label: a fixed set (imap-types' names), with the UID
/// forms apart (`UID FETCH` costs differently from `FETCH`).
fn command_name(body: &CommandBody<'_>) -> &'static str {
    use CommandBody as C;
    match body {
        C::Fetch { uid: true, .. } => "UID FETCH",
        C::Store { uid: true, .. } => "UID STORE",
        C::Search { uid: true, .. } => "UID SEARCH",
        C::Copy { uid: true, .. } => "UID COPY",
        C::Move { uid: true, .. } => "UID MOVE",
        C::Sort { uid: true, .. } => "UID SORT",
        C::Thread { uid: true, .. } => "UID THREAD",
        C::ExpungeUid { .. } => "UID EXPUNGE",
        other => other.name(),
    }
}

fn idle_command(tag: Tag<'static>) -> imap_codec::imap_types::command::Command<'static> {
    imap_codec::imap_types::command::Command {
        tag,
        body: imap_codec::imap_types::command::CommandBody::Idle,
    }
}

/// imap-next reports malformed input without a tag; recover it from the discarded bytes
/// so the client gets a tagged BAD instead of waiting forever (CRATES.md §2.8).
fn tagged_bad(error: &imap_next::server::Error) -> Option<Status<'static>> {
    use imap_next::server::Error as E;
    let (bytes, text) = match error {
        E::ExpectedCrlfGotLf { discarded_bytes } => (discarded_bytes.declassify(), "expected CRLF"),
        E::MalformedMessage { discarded_bytes } => (discarded_bytes.declassify(), "syntax error"),
        E::CommandTooLong { discarded_bytes } => (discarded_bytes.declassify(), "command too long"),
        // imap-next already answered a too-long literal with a tagged BAD.
        E::LiteralTooLong { .. } => return None,
    };
    let tag = bytes
        .split(|b| *b == b' ')
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| Tag::try_from(t.to_string()).ok());
    match tag {
        Some(tag) => Status::bad(Some(tag), None, text).ok(),
        None => Status::bad(None, None, text).ok(),
    }
}

fn fallback_no() -> Status<'static> {
    // Unwrap: a constant ASCII text always validates.
    Status::bad(None, None, "error").expect("constant status text")
}
