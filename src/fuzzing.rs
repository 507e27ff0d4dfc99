//! Entry points shared by the `fuzz/` targets and the seed-replay test, so CI exercises
//! the harnesses on stable without libFuzzer. Each must never panic on any input.
//!
//! The IMAP and ingest harnesses keep a real store per process (in a temp dir, rebuilt
//! every few hundred inputs so it stays small) and drive the same code the daemon runs:
//! imap-next's sans-I/O server around our `Session`, and `Ingest::deliver` with the
//! local filters.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use imap_codec::imap_types::{
    auth::AuthenticateData,
    body::{BodyStructure, SpecificFields},
    command::{Command, CommandBody},
    core::Tag,
    fetch::MessageDataItem,
    response::{CommandContinuationRequest, Data, Status},
};
use imap_next::{
    Interrupt, Io, State as _,
    server::{Event, Server},
};
use smtp_proto::request::receiver::RequestReceiver;

use crate::{
    auth::Authenticator,
    compose,
    config::{self, AgentConfig, Config, InboxConfig},
    filter::Filters,
    forward,
    imap::{
        binary, extended,
        session::{After, Answer, ImapContext, Session},
    },
    ingest::{Accepted, Ingest, Origin},
    mail::{
        envelope::{Envelope, Recipient},
        subject,
    },
    message,
    reload::Reloadable,
    replying::Replying,
    smtp::session::{Action, Mode, Session as SmtpSession},
    store::{
        ConversationAction, DeliveryOutcome, Direction, Status as ConvStatus, Store, StoreOptions,
        model::Address,
    },
    submit::Submit,
    threading,
};

/// Feeds arbitrary bytes, line by line, through the SMTP command parser and session.
pub fn smtp_session(data: &[u8]) {
    let config = Arc::new(Config::for_tests(Path::new("/nonexistent")));
    // Submission mode exercises AUTH as well as everything the MX does.
    let mode = if data.first().is_some_and(|b| b % 2 == 1) {
        Mode::Submission
    } else {
        Mode::Inbound
    };
    let mut session = SmtpSession::with_mode(config, mode, true, false);
    let mut lines = data.split_inclusive(|b| *b == b'\n').take(2048);
    while let Some(line) = lines.next() {
        let action = match RequestReceiver::default().ingest(&mut line.iter()) {
            Ok(request) => session.handle(request.into_owned()),
            Err(e) => session.parse_error(&e),
        };
        match action {
            Action::StartData | Action::StartBdat { .. } => {
                // The next line stands in for a whole body.
                let body = lines.next().unwrap_or_default();
                if session.check_message(body).is_ok() {
                    let _ = session.take_envelope();
                } else {
                    session.abort_transaction();
                }
            }
            Action::StartTls => session.reset_after_tls(),
            Action::Close(_) => return,
            Action::SaslChallenge(_) => {
                let next = lines.next().unwrap_or_default();
                let action = session.sasl_line(String::from_utf8_lossy(next).trim_end());
                if let Action::Verify { .. } = action {
                    let _ = session.verified(Err(crate::auth::AuthError::Invalid));
                }
            }
            Action::Verify { .. } => {
                let _ = session.verified(Err(crate::auth::AuthError::Invalid));
            }
            Action::Reply(_) | Action::Raw(_) | Action::SkipBdat { .. } => {}
        }
    }
}

/// Parses arbitrary bytes as a message and derives everything ingest derives.
pub fn message_analyze(data: &[u8]) {
    if let Ok(facts) = message::analyze(data, "sender@customer.example") {
        let _ = threading::thread_keys(&facts, 0);
        let _ = message::summary(&facts, Direction::In, "fallback@teamgate");
        let _ = crate::contacts::inbound_touches(&facts, facts.from.as_ref());
    }
    let _ = subject::normalize_subject(&String::from_utf8_lossy(data));
}

/// Parses arbitrary bytes as a config file.
pub fn config_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::load_from_str(text, &[]);
    }
}

/// Subject classification and normalisation: the threading base subject, reply/forward
/// prefixes, our `[#n]` tag, and the tag compose writes into outgoing subjects.
pub fn subject_normalize(data: &[u8]) {
    let subject = String::from_utf8_lossy(data);
    let base = subject::normalize_subject(&subject);
    let _ = subject::normalize_subject(&base);
    let _ = subject::subject_prefixes(&subject);
    let _ = subject::subject_tag(&subject);
    let n = u64::from(data.first().copied().unwrap_or(0)) + 1;
    let tagged = subject::tag_subject(&subject, n);
    let _ = subject::subject_tag(&tagged);
    let _ = subject::normalize_subject(&tagged);
}

/// Forward detection and original-sender extraction. An odd first byte wraps the rest as
/// the body of a "Fwd:" message, so the body scanner sees arbitrary text directly.
pub fn forward_extract(data: &[u8]) {
    let (first, rest) = match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => return,
    };
    let wrapped;
    let raw = if first % 2 == 1 {
        wrapped = [
            &b"From: Agent <agent@example.test>\r\nSubject: Fwd: question\r\n\r\n"[..],
            rest,
        ]
        .concat();
        &wrapped[..]
    } else {
        rest
    };
    // mail-parser 0.11.9 has reachable `debug_assert!`s (see message.rs); production
    // parses the same way under catch_unwind.
    let Ok(Some(msg)) =
        std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(raw))
    else {
        return;
    };
    let forwarder = Address {
        email: "agent@example.test".into(),
        name: Some("Agent".into()),
    };
    let _ = forward::detect(&msg, Some(&forwarder));
    let _ = forward::detect(&msg, None);
    // The whole analysis, which runs detection only for mail written by a person.
    let _ = message::analyze(raw, "agent@example.test");
}

/// Placeholder, snippet and email-command handling of an agent's reply. The first byte
/// picks the mode: plain or HTML placeholder expansion of the rest, or the whole
/// submission rewrite (`compose::prepare`) of the rest as a message.
pub fn placeholders(data: &[u8]) {
    let (first, rest) = match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => return,
    };
    let snippets = |name: &str| -> Option<String> {
        match name {
            "greeting" => Some("Hello {{contact_name}},\n\nthanks for writing.\n\n".into()),
            "signature" => Some("--\n{{agent_name}}\nTicket {{conversation}}".into()),
            "nested" => Some("{{snippet:greeting}}".into()),
            "empty" => Some(String::new()),
            _ => None,
        }
    };
    let ctx = compose::Context {
        contact_name: Some("Carol <Customer> & \"Co\"\r\nBcc: x"),
        contact_email: Some("carol@customer.example"),
        agent_name: "Alice Example",
        conversation: Some(42),
        snippets: &snippets,
    };
    match first % 3 {
        0 => {
            let _ = compose::expand(&String::from_utf8_lossy(rest), &ctx, false);
        }
        1 => {
            let _ = compose::expand(&String::from_utf8_lossy(rest), &ctx, true);
        }
        _ => {
            let key = *b"\x01\xd9\x3c\x2f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
            let plan = compose::HeaderPlan {
                subject_tag: Some(42),
                thread_index: Some(&key),
                x_loop: "mx.example.test",
                references: Some((
                    "<first@customer.example>",
                    vec!["<root@customer.example>".into()],
                )),
            };
            let _ = compose::prepare(rest, &ctx, &plan);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A real store per process

/// Inputs served by one store before it is replaced by a fresh one: bounds its growth
/// and how far one input's changes reach into later ones. Small, because every SELECT and
/// `FETCH 1:*` costs in proportion to what earlier inputs appended (at 500, the IMAP
/// target ran at 3 inputs/s); a fresh seeded store costs about as much as a few inputs.
const INPUTS_PER_STORE: u32 = 64;
/// Commands run per IMAP input.
const MAX_IMAP_COMMANDS: usize = 64;
/// Malformed commands tolerated per IMAP input (the server closes after as many).
const MAX_BAD_COMMANDS: u32 = 20;
/// Body sections fetched per ingested message, besides the fixed ones.
const MAX_SECTIONS: usize = 64;
const AGENT: &str = "alice";
const INBOX_ADDRESS: &str = "support@example.test";

fn peer() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 50143))
}

/// One temp-dir store and everything IMAP and ingest need around it.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<ImapContext>,
    dir: PathBuf,
    inputs: u32,
    /// Seconds added to the received time of each delivery, so deliveries are ordered.
    clock: i64,
}

impl Fixture {
    fn new() -> Fixture {
        // Unwrap: a harness without a runtime or a store cannot run at all.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = fresh_dir();
        let config = fuzz_config(&dir);
        let ctx = runtime.block_on(async {
            let opts = StoreOptions {
                segment_max_bytes: 8 << 20,
                cache_capacity_bytes: 8 << 20,
                ..StoreOptions::default()
            };
            let (store, _) = Store::open(&dir, opts).expect("fuzz store");
            let filters = Filters::from_config(&config.filter).expect("local filters");
            let config = Arc::new(Reloadable::new(config));
            let ingest = Ingest::new(
                store.clone(),
                config.clone(),
                Arc::new(Reloadable::new(filters)),
            );
            let replying = Replying::default();
            Arc::new(ImapContext {
                submit: Submit::new(
                    store.clone(),
                    config.clone(),
                    ingest.clone(),
                    replying.clone(),
                ),
                config,
                store,
                ingest,
                replying,
                auth: Authenticator::default(),
                tls: None,
                recent: Default::default(),
                fts: None,
                metrics: Default::default(),
            })
        });
        let mut fixture = Fixture {
            runtime,
            ctx,
            dir,
            inputs: 0,
            clock: 0,
        };
        fixture.seed();
        fixture
    }

    /// A few conversations in different states, through the ingest path.
    fn seed(&mut self) {
        for (i, raw) in SEED_MESSAGES.iter().enumerate() {
            let accepted = self.deliver(raw.as_bytes());
            let conversation = match accepted {
                Some(Accepted::Stored(o)) => o.deliveries.first().and_then(|(_, d)| match d {
                    DeliveryOutcome::Stored { conversation, .. } => Some(*conversation),
                    DeliveryOutcome::Duplicate { .. } => None,
                }),
                _ => None,
            };
            let action = match i {
                2 => ConversationAction::SetStatus(ConvStatus::Closed),
                3 => ConversationAction::Assign(Some(AGENT.into())),
                4 => ConversationAction::SetStatus(ConvStatus::Trash),
                _ => continue,
            };
            if let Some(c) = conversation {
                let store = self.ctx.store.clone();
                let _ = self
                    .runtime
                    .block_on(async move { store.conversation_action(c, action).await });
            }
        }
    }

    /// Delivers `raw` to the Support inbox as the MX would, filters included.
    fn deliver(&mut self, raw: &[u8]) -> Option<Accepted> {
        self.clock += 1;
        let received_at = 1_750_000_000 + self.clock;
        let envelope = Envelope {
            mail_from: "sender@customer.example".into(),
            rcpts: vec![Recipient {
                address: INBOX_ADDRESS.into(),
                inbox: Some("Support".into()),
                tag: None,
            }],
            smtputf8: true,
        };
        let origin = Origin {
            peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 25)),
            helo: "client.customer.example",
        };
        let trace = "Received: from client.customer.example by mx.example.test; Mon, 16 Jun 2025 12:00:00 +0000\r\n";
        let ingest = self.ctx.ingest.clone();
        self.runtime
            .block_on(async move {
                ingest
                    .deliver(&envelope, raw.to_vec(), trace, Some(origin), received_at)
                    .await
            })
            .ok()
    }

    /// Closes the store and removes its directory.
    fn dispose(self) {
        let store = self.ctx.store.clone();
        let _ = self.runtime.block_on(async move { store.close().await });
        drop(self.ctx);
        drop(self.runtime);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` on this process's fixture in `slot`, replacing it every `INPUTS_PER_STORE`.
fn with_fixture<R>(
    slot: &'static OnceLock<Mutex<Option<Fixture>>>,
    f: impl FnOnce(&mut Fixture) -> R,
) -> R {
    let mut guard = slot
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if guard
        .as_ref()
        .is_some_and(|fx| fx.inputs >= INPUTS_PER_STORE)
        && let Some(old) = guard.take()
    {
        old.dispose();
    }
    let fixture = guard.get_or_insert_with(Fixture::new);
    fixture.inputs += 1;
    f(fixture)
}

/// A new directory for a store: on tmpfs when there is one (each ingest and IMAP change
/// waits for an fsync), after removing the ones left by fuzzer processes that are gone
/// (libFuzzer ends with `exit`, so a process never cleans up its last one).
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("teamgate-fuzz-"))
                .and_then(|n| n.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    base.join(format!("teamgate-fuzz-{}-{n}", std::process::id()))
}

/// The test config with a second inbox and agent, so transfers and assignments have
/// somewhere to go.
fn fuzz_config(dir: &Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.inboxes.push(InboxConfig {
        name: "Sales".into(),
        addresses: vec!["sales@example.test".into()],
        members: vec![AGENT.into(), "bob".into()],
    });
    let hash = config.agents[0].password_hash.clone();
    config.agents.push(AgentConfig {
        login: "bob".into(),
        name: "Bob Example".into(),
        email: "bob@example.test".into(),
        password_hash: hash,
        admin: false,
    });
    config
}

/// Written for the harness: a question and its reply, a closed thread with an
/// attachment, an assigned HTML mail, a trashed forward, one with a blocked attachment.
const SEED_MESSAGES: [&str; 6] = [
    "From: Carol Customer <carol@customer.example>\r\nTo: support@example.test\r\nSubject: Printer on fire\r\nMessage-ID: <q1@customer.example>\r\nDate: Mon, 16 Jun 2025 10:00:00 +0000\r\n\r\nHello, the printer is on fire.\r\n",
    "From: Carol Customer <carol@customer.example>\r\nTo: support@example.test\r\nSubject: Re: Printer on fire\r\nMessage-ID: <q2@customer.example>\r\nIn-Reply-To: <q1@customer.example>\r\nReferences: <q1@customer.example>\r\nDate: Mon, 16 Jun 2025 10:05:00 +0000\r\n\r\nStill burning.\r\n> Hello, the printer is on fire.\r\n",
    "From: Dan <dan@other.example>\r\nTo: support@example.test\r\nSubject: Invoice\r\nMessage-ID: <i1@other.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSee attached, gr=C3=BC=C3=9Fe.\r\n--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--b1--\r\n",
    "From: Erin <erin@shop.example>\r\nTo: support@example.test\r\nSubject: Order 12\r\nMessage-ID: <o1@shop.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain\r\n\r\nWhere is order 12?\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>Where is <b>order 12</b>?</p>\r\n--alt--\r\n",
    "From: Frank <frank@example.net>\r\nTo: support@example.test\r\nSubject: Fwd: complaint\r\nMessage-ID: <f1@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"fw\"\r\n\r\n--fw\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--fw\r\nContent-Type: message/rfc822\r\n\r\nFrom: Gina <gina@example.org>\r\nSubject: complaint\r\nMessage-ID: <g1@example.org>\r\n\r\nI am unhappy.\r\n--fw--\r\n",
    "From: Mallory <mallory@bad.example>\r\nTo: support@example.test\r\nSubject: urgent\r\nMessage-ID: <m1@bad.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nopen it\r\n--m\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\nContent-Disposition: attachment; filename=\"run.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--m--\r\n",
];

// ---------------------------------------------------------------------------------------
// IMAP

static IMAP_FIXTURE: OnceLock<Mutex<Option<Fixture>>> = OnceLock::new();
static INGEST_FIXTURE: OnceLock<Mutex<Option<Fixture>>> = OnceLock::new();

/// Feeds arbitrary bytes to an IMAP session logged in as the test agent, through
/// imap-next's server as the daemon does (literals, AUTHENTICATE, IDLE/DONE, a BAD for
/// what does not parse), encoding every response.
pub fn imap_session(data: &[u8]) {
    with_fixture(&IMAP_FIXTURE, |fx| {
        let ctx = fx.ctx.clone();
        fx.runtime.block_on(async move {
            let Ok(mut session) = Session::logged_in(ctx.clone(), peer(), AGENT).await else {
                return;
            };
            drive(&ctx, &mut session, data, MAX_IMAP_COMMANDS, |_| {}).await;
            let _ = session.pending_updates().await;
        });
    });
}

/// Runs the commands in `input` through `session` the way `imap::server::run` does,
/// without the socket; `seen` gets every untagged data response. Returns the bytes that
/// would have been written.
async fn drive(
    ctx: &ImapContext,
    session: &mut Session,
    input: &[u8],
    max_commands: usize,
    mut seen: impl FnMut(&Data<'static>),
) -> usize {
    let config = ctx.config.current();
    let mut server = Server::new(
        crate::imap::server::protocol_options(&config),
        session.greeting(),
    );
    server.enqueue_input(input);
    let mut written = 0;
    let mut commands = 0;
    let mut bad_commands = 0u32;
    let mut idling: Option<Tag<'static>> = None;
    let mut authenticating: Option<Tag<'static>> = None;
    let mut finish_after = None;
    loop {
        let event = match server.next() {
            Ok(event) => event,
            Err(Interrupt::Io(Io::Output(bytes))) => {
                written += bytes.len();
                continue;
            }
            Err(Interrupt::Io(Io::NeedMoreInput)) => break,
            Err(Interrupt::Error(e)) => {
                // The extended forms, answered as `imap::server::run` answers them.
                let parsed = match &e {
                    imap_next::server::Error::MalformedMessage { discarded_bytes } => {
                        extended::parse(discarded_bytes.declassify())
                    }
                    _ => None,
                };
                if let Some(Ok(command)) = parsed {
                    commands += 1;
                    written += session.extended(command).await.1.len();
                    if commands >= max_commands {
                        break;
                    }
                    continue;
                }
                if let Some(Err(malformed)) = parsed {
                    written += extended::refusal(malformed).len();
                }
                bad_commands += 1;
                if bad_commands > MAX_BAD_COMMANDS {
                    break;
                }
                server.enqueue_status(bad_status());
                continue;
            }
        };
        if commands >= max_commands && finish_after.is_none() {
            // Still write what is queued, then stop.
            finish_after = Some(server.enqueue_status(bad_status()));
        }
        match event {
            Event::GreetingSent { .. } => {}
            Event::ResponseSent { handle, .. } => {
                if finish_after == Some(handle) {
                    break;
                }
            }
            Event::CommandReceived { command } => {
                commands += 1;
                let origins = binary::partial_origins(&command.body);
                let mut answer = session.command(command).await;
                // The socket driver writes a large FETCH chunk by chunk; here it is one.
                if let Some(mut cursor) = answer.more.take() {
                    while let Ok(Some(chunk)) = session.fetch_more(&mut cursor).await {
                        answer.untagged.extend(chunk);
                    }
                }
                if let Some(origins) = origins {
                    answer.untagged.iter().for_each(&mut seen);
                    written += binary::encode_with_origins(answer, &origins).len();
                    continue;
                }
                let after = answer.after;
                let handle = enqueue(&mut server, answer, &mut seen);
                if matches!(after, After::Logout | After::StartTls) {
                    finish_after = Some(handle);
                }
            }
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                commands += 1;
                let tag = command_authenticate.tag;
                if let Err(reason) = session.authenticate_allowed(&command_authenticate.mechanism) {
                    let status =
                        Status::no(Some(tag), None, reason).unwrap_or_else(|_| bad_status());
                    let _ = server.authenticate_finish(status);
                } else if let Some(initial) = command_authenticate.initial_response {
                    let answer = session.authenticate_plain(tag, initial.declassify()).await;
                    let _ = server.authenticate_finish(answer.status);
                } else {
                    authenticating = Some(tag);
                    let _ = server
                        .authenticate_continue(CommandContinuationRequest::base64(Vec::new()));
                }
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let Some(tag) = authenticating.take() else {
                    continue;
                };
                let status = match authenticate_data {
                    AuthenticateData::Continue(secret) => {
                        session
                            .authenticate_plain(tag, secret.declassify())
                            .await
                            .status
                    }
                    AuthenticateData::Cancel => {
                        Status::bad(Some(tag), None, "AUTHENTICATE cancelled")
                            .unwrap_or_else(|_| bad_status())
                    }
                };
                let _ = server.authenticate_finish(status);
            }
            Event::IdleCommandReceived { tag } => {
                commands += 1;
                let idle = Command {
                    tag: tag.clone(),
                    body: CommandBody::Idle,
                };
                let answer = session.command(idle).await;
                if answer.after == After::Idle {
                    if let Ok(ccr) = CommandContinuationRequest::basic(None, "idling") {
                        let _ = server.idle_accept(ccr);
                    }
                    idling = Some(tag);
                    for d in session.pending_updates().await {
                        seen(&d);
                        server.enqueue_data(d);
                    }
                } else {
                    let _ = server.idle_reject(answer.status);
                }
            }
            Event::IdleDoneReceived => {
                if let Some(tag) = idling.take() {
                    let status = Status::ok(Some(tag), None, "IDLE terminated")
                        .unwrap_or_else(|_| bad_status());
                    server.enqueue_status(status);
                }
            }
        }
    }
    written
}

fn enqueue(
    server: &mut Server,
    answer: Answer,
    seen: &mut impl FnMut(&Data<'static>),
) -> imap_next::server::ResponseHandle {
    for status in answer.untagged_status {
        server.enqueue_status(status);
    }
    for d in answer.untagged {
        seen(&d);
        server.enqueue_data(d);
    }
    server.enqueue_status(answer.status)
}

fn bad_status() -> Status<'static> {
    // Unwrap: a constant ASCII text always validates.
    Status::bad(None, None, "syntax error").expect("constant status text")
}

// ---------------------------------------------------------------------------------------
// Ingest, then FETCH

/// Delivers arbitrary bytes as an inbound message (filters without network, threading,
/// store), then fetches every section of the stored message over IMAP: the fixed ones
/// and one set per part of the BODYSTRUCTURE the server reports.
pub fn ingest_fetch(data: &[u8]) {
    let _ = ingest_fetch_sections(data);
}

/// [`ingest_fetch`], returning the part sections fetched (for the harness's own test).
fn ingest_fetch_sections(data: &[u8]) -> Vec<String> {
    with_fixture(&INGEST_FIXTURE, |fx| {
        let Some(accepted) = fx.deliver(data) else {
            return Vec::new();
        };
        let store = fx.ctx.store.clone();
        let mailbox = match &accepted {
            Accepted::Junk(_) => "Junk",
            Accepted::Stored(outcome) => {
                let Some(conversation) = outcome.deliveries.iter().find_map(|(_, d)| match d {
                    DeliveryOutcome::Stored { conversation, .. } => Some(*conversation),
                    DeliveryOutcome::Duplicate { .. } => None,
                }) else {
                    return Vec::new();
                };
                match store.conversation_info(conversation) {
                    Ok(Some(info)) => match info.status {
                        ConvStatus::Open => "INBOX",
                        ConvStatus::Closed => "Closed",
                        ConvStatus::Trash => "Trash",
                    },
                    _ => return Vec::new(),
                }
            }
        };
        let ctx = fx.ctx.clone();
        fx.runtime.block_on(async move {
            let Ok(mut session) = Session::logged_in(ctx.clone(), peer(), AGENT).await else {
                return Vec::new();
            };
            // The message arrived last, so it has the highest UID of its mailbox: `*`.
            let first = format!(
                "s EXAMINE {mailbox}\r\n\
                 f FETCH * (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)\r\n\
                 b FETCH * (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT FROM MESSAGE-ID)] BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)] BODY.PEEK[]<0.100> BODY.PEEK[TEXT]<10.1000> RFC822.HEADER RFC822.TEXT)\r\n"
            );
            let mut structure = None;
            drive(&ctx, &mut session, first.as_bytes(), 8, |d| {
                if let Data::Fetch { items, .. } = d {
                    for item in items.as_ref() {
                        if let MessageDataItem::BodyStructure(bs) = item {
                            structure = Some(bs.clone());
                        }
                    }
                }
            })
            .await;
            let Some(structure) = structure else {
                return Vec::new();
            };
            let mut sections = Vec::new();
            part_sections(&structure, "", &mut sections);
            for chunk in sections.chunks(16) {
                let items: Vec<String> = chunk.iter().map(|s| format!("BODY.PEEK[{s}]")).collect();
                let script = format!("p FETCH * ({})\r\n", items.join(" "));
                drive(&ctx, &mut session, script.as_bytes(), 2, |_| {}).await;
            }
            // Reading marks \Seen, as a client opening the message does.
            let read = format!("s SELECT {mailbox}\r\nr FETCH * (BODY[1])\r\n");
            drive(&ctx, &mut session, read.as_bytes(), 4, |_| {}).await;
            sections
        })
    })
}

/// IMAP section names of every part below `prefix` (RFC 3501 §6.4.5), at most
/// `MAX_SECTIONS`: the part, its MIME header, and for an enclosed message its HEADER and
/// TEXT and its own parts.
fn part_sections(structure: &BodyStructure<'_>, prefix: &str, out: &mut Vec<String>) {
    let join = |n: usize| {
        if prefix.is_empty() {
            n.to_string()
        } else {
            format!("{prefix}.{n}")
        }
    };
    match structure {
        BodyStructure::Multi { bodies, .. } => {
            for (i, body) in bodies.as_ref().iter().enumerate() {
                if out.len() >= MAX_SECTIONS {
                    return;
                }
                let path = join(i + 1);
                out.push(path.clone());
                out.push(format!("{path}.MIME"));
                if let BodyStructure::Multi { .. } = body {
                    part_sections(body, &path, out);
                } else {
                    single_sections(body, &path, out);
                }
            }
        }
        BodyStructure::Single { .. } => {
            // A single-part message's body is part 1.
            let path = join(1);
            out.push(path.clone());
            single_sections(structure, &path, out);
        }
    }
}

fn single_sections(structure: &BodyStructure<'_>, path: &str, out: &mut Vec<String>) {
    if let BodyStructure::Single { body, .. } = structure
        && let SpecificFields::Message { body_structure, .. } = &body.specific
        && out.len() < MAX_SECTIONS
    {
        out.push(format!("{path}.HEADER"));
        out.push(format!("{path}.TEXT"));
        out.push(format!("{path}.HEADER.FIELDS (FROM)"));
        part_sections(body_structure, path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches the selected state over the seeded store: a vacuous harness
    /// (no login, an empty store) would still "never panic".
    #[test]
    fn imap_harness_sees_the_seeded_conversations() {
        let fetched = with_fixture(&IMAP_FIXTURE, |fx| {
            let ctx = fx.ctx.clone();
            fx.runtime.block_on(async move {
                let mut session = Session::logged_in(ctx.clone(), peer(), AGENT)
                    .await
                    .unwrap();
                let mut fetched = 0;
                let script = b"a SELECT INBOX\r\nb FETCH 1:* (UID BODY.PEEK[])\r\n";
                let written = drive(&ctx, &mut session, script, 8, |d| {
                    if let Data::Fetch { .. } = d {
                        fetched += 1;
                    }
                })
                .await;
                assert!(written > 1000, "{written} bytes written");
                fetched
            })
        });
        assert!(fetched >= 3, "{fetched} messages fetched");
    }

    #[test]
    fn ingest_fetch_walks_the_reported_structure() {
        let raw = b"From: Carol <carol@customer.example>\r\nTo: support@example.test\r\nSubject: parts\r\nMessage-ID: <parts@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\nplain\r\n--i\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--i--\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: g@example.org\r\nSubject: inner\r\n\r\nold\r\n--o--\r\n";
        let sections = ingest_fetch_sections(raw);
        for s in [
            "1", "1.MIME", "1.1", "1.2.MIME", "2", "2.HEADER", "2.TEXT", "2.1",
        ] {
            assert!(sections.iter().any(|x| x == s), "{s} in {sections:?}");
        }
    }
}
