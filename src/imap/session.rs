//! IMAP session (RFC 3501 + IDLE, UIDPLUS, MOVE, SPECIAL-USE, NAMESPACE, ID, ENABLE,
//! UNSELECT, CONDSTORE, QRESYNC): the NotAuthenticated / Authenticated / Selected state,
//! the login gate, capabilities and `dispatch`, which routes each command to its family's
//! handler in `cmd/`. No socket I/O: the driver in `server.rs` feeds commands in and writes
//! the answers.

use std::{
    collections::{BTreeSet, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use imap_codec::imap_types::{
    auth::AuthMechanism,
    command::{Command, CommandBody},
    core::{AString, Atom, IString, NString, Tag, Vec1},
    extensions::{thread::ThreadingAlgorithm, utf8::Utf8Kind},
    fetch::MessageDataItemName,
    response::{Capability, Code, CodeOther, Data, Greeting, Status},
    secret::Secret,
};

use super::{
    mailbox::{Mailboxes, Target},
    names::NameForm,
    recent::RecentMarks,
    wire::{fallback_greeting, fallback_ok},
};
use crate::{
    auth::{self, AuthError, Authenticator},
    config::Config,
    fts::FtsIndex,
    ingest::Ingest,
    metrics::Metrics,
    net::tls::Tls,
    reload::Reloadable,
    replying::Replying,
    store::{Entry, Flags, FolderId, MessageKey, Store, StoreError},
    submit::Submit,
};

/// What every IMAP connection shares.
pub struct ImapContext {
    pub config: Arc<Reloadable<Config>>,
    pub store: Store,
    pub ingest: Ingest,
    /// Logs copies of sent mail appended to `Sent`.
    pub submit: Submit,
    /// Who has a reply draft open (`$Replying`).
    pub replying: Replying,
    pub auth: Authenticator,
    pub tls: Option<Tls>,
    /// Which messages are `\Recent`, and to whom (RFC 3501 §2.3.2).
    pub recent: RecentMarks,
    /// Narrows SEARCH; `None`: SEARCH scans.
    pub fts: Option<FtsIndex>,
    pub metrics: Metrics,
}

/// What the driver does after writing an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    Logout,
    StartTls,
    /// Send `+ idling` and push changes until DONE.
    Idle,
}

#[derive(Debug)]
pub struct Answer {
    pub untagged: Vec<Data<'static>>,
    /// Untagged OK responses with codes (e.g. COPYUID during MOVE), sent before the data.
    pub untagged_status: Vec<Status<'static>>,
    pub status: Status<'static>,
    pub after: After,
    /// A FETCH too large for one answer: the driver writes `untagged`, then each chunk
    /// of [`Session::fetch_more`], then `status`.
    pub more: Option<FetchCursor>,
}

/// What is left of a FETCH answered in chunks (`Answer::more`; `cmd/fetch.rs` fills
/// and renders it).
#[derive(Debug)]
pub struct FetchCursor {
    pub(super) names: Vec<MessageDataItemName<'static>>,
    /// Indices into the selected entries, in answer order.
    pub(super) indices: Vec<usize>,
    /// Mod-sequences parallel to `indices` (empty unless MODSEQ is fetched).
    pub(super) mods: Vec<u64>,
    /// The first of `indices` not rendered yet.
    pub(super) next: usize,
    pub(super) needs_meta: bool,
    pub(super) needs_body: bool,
    pub(super) marks_seen: bool,
    /// The messages whose flags were written since the session's last sync; `None`:
    /// any may have changed.
    pub(super) flags_written: Option<HashSet<MessageKey>>,
    /// Changes by other sessions are reported after the last chunk.
    pub(super) updates_at_end: bool,
    pub(super) finished: bool,
    /// The command's tag, for a refusal in a later chunk; set by [`Session::command`].
    pub(super) tag: Tag<'static>,
}

#[derive(Debug)]
pub(super) struct Agent {
    pub(super) login: String,
    pub(super) boxes: Mailboxes,
}

#[derive(Debug)]
pub(super) struct Selected {
    pub(super) name: String,
    pub(super) target: Target,
    /// The store's UID space id (mod-sequences are kept under it).
    pub(super) space: u64,
    pub(super) writable: bool,
    pub(super) uid_validity: u32,
    pub(super) uid_next: u32,
    /// Sequence number = index + 1 (RFC 3501 §2.3.1.2).
    pub(super) entries: Vec<(u32, Entry)>,
    /// Flags the client was last told, parallel to `entries`.
    pub(super) flags: Vec<Flags>,
    /// UIDs that are `\Recent` in this session (RFC 3501 §2.3.2).
    pub(super) recent: BTreeSet<u32>,
    /// Keywords the client has been told of in FLAGS (`cmd/keywords.rs`).
    pub(super) keywords: BTreeSet<String>,
    /// (store change counter, `$Replying` generation) this state reflects: while both
    /// stand still there is nothing to report, so commands skip the per-message work.
    pub(super) synced_at: (u64, u64),
}

/// What this session turned on (RFC 7162 §3.1, §3.2.3).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Condstore {
    /// MODSEQ in every FETCH with FLAGS and every unsolicited FETCH (RFC 7162 §3.1).
    pub(super) enabled: bool,
    /// VANISHED instead of EXPUNGE, the QRESYNC select parameter (RFC 7162 §3.2.3).
    pub(super) qresync: bool,
}

#[derive(Debug)]
pub(super) enum State {
    NotAuthenticated,
    Authenticated(Agent),
    /// Boxed: the selected state is far larger than the others.
    Selected(Agent, Box<Selected>),
}

/// Failure of a command, turned into a tagged NO/BAD by `respond`.
#[derive(Debug)]
pub(super) enum Refusal {
    No(Option<&'static str>, String),
    Bad(String),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

pub(super) type Outcome = Result<Answer, Refusal>;

pub(super) fn no(code: Option<&'static str>, text: impl Into<String>) -> Refusal {
    Refusal::No(code, text.into())
}

pub struct Session {
    pub(super) ctx: Arc<ImapContext>,
    pub(super) config: Arc<Config>,
    peer: SocketAddr,
    tls_active: bool,
    pub(super) state: State,
    /// Modified UTF-7 until `ENABLE UTF8=ACCEPT` (`names.rs`).
    pub(super) names: NameForm,
    /// CONDSTORE / QRESYNC as enabled by this client (RFC 7162).
    pub(super) condstore: Condstore,
}

impl Session {
    pub fn new(ctx: Arc<ImapContext>, peer: SocketAddr, tls_active: bool) -> Session {
        let config = ctx.config.current();
        Session {
            ctx,
            config,
            peer,
            tls_active,
            state: State::NotAuthenticated,
            names: NameForm::default(),
            condstore: Condstore::default(),
        }
    }

    pub fn greeting(&self) -> Greeting<'static> {
        let code = Code::Capability(self.capabilities());
        Greeting::ok(Some(code), "teamgate IMAP ready").unwrap_or_else(|_| fallback_greeting())
    }

    /// After the TLS handshake: the session starts over (RFC 3501 §6.2.1).
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.state = State::NotAuthenticated;
    }

    pub fn is_authenticated(&self) -> bool {
        !matches!(self.state, State::NotAuthenticated)
    }

    /// The agent logged in, if any.
    pub fn logged_in_as(&self) -> Option<&str> {
        match &self.state {
            State::NotAuthenticated => None,
            State::Authenticated(agent) | State::Selected(agent, _) => Some(&agent.login),
        }
    }

    fn plaintext_auth_allowed(&self) -> bool {
        self.tls_active || self.config.allow_plaintext_auth
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        let authenticated = !matches!(self.state, State::NotAuthenticated);
        if !authenticated {
            if self.ctx.tls.is_some() && !self.tls_active {
                caps.push(Capability::StartTls);
            }
            if self.plaintext_auth_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::LiteralPlus,
            Capability::Namespace,
            Capability::Id,
            Capability::Enable,
            Capability::Unselect,
            // RFC 3516 (`binary.rs`) and RFC 5256 (`cmd/sort_thread.rs`).
            Capability::Binary,
            // RFC 6855: names after ENABLE (`cmd/names.rs`), APPEND's UTF8 form
            // (`extended.rs`).
            Capability::Utf8(Utf8Kind::Accept),
            Capability::Sort(None),
            Capability::Thread(ThreadingAlgorithm::References),
            Capability::Thread(ThreadingAlgorithm::OrderedSubject),
            Capability::CondStore,
            Capability::QResync,
        ]);
        // The extended forms are answered by `cmd/extended.rs` (RFC 5258, 5819, 4731, 3502).
        for other in [
            "SPECIAL-USE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "ESEARCH",
            "MULTIAPPEND",
        ] {
            if let Ok(atom) = Atom::try_from(other) {
                caps.push(Capability::from(atom));
            }
        }
        Vec1::unvalidated(caps)
    }

    /// Handles one command. Never fails: problems become tagged NO/BAD.
    pub async fn command(&mut self, command: Command<'static>) -> Answer {
        let tag = command.tag.clone();
        let reports_changes = reports_changes(&command.body);
        let mut outcome = self.dispatch(command.body).await;
        if let Ok(answer) = &mut outcome {
            self.announce_keywords(&mut answer.untagged);
        }
        // Changes made by others reach this session on its next command too, where RFC
        // 3501 §7.4.1 allows (never an EXPUNGE during FETCH, STORE or SEARCH).
        if let Ok(Answer {
            more: Some(cursor), ..
        }) = &mut outcome
        {
            cursor.tag = tag.clone();
            cursor.updates_at_end = reports_changes;
        } else if reports_changes && let Ok(answer) = &mut outcome {
            answer.untagged.extend(self.pending_updates().await);
        }
        respond(tag, outcome)
    }

    /// Routes a command to its family's handler (`cmd/*`), which unpacks the arguments.
    async fn dispatch(&mut self, body: CommandBody<'static>) -> Outcome {
        use CommandBody as C;
        match body {
            C::Capability => self.handle_capability(),
            C::Noop | C::Check => self.handle_noop().await,
            C::Logout => self.handle_logout(),
            C::StartTLS => self.handle_starttls(),
            C::Login { username, password } => self.handle_login(username, password).await,
            C::Authenticate { .. } => {
                Err(Refusal::Bad("AUTHENTICATE is handled by the driver".into()))
            }
            C::Id { .. } => self.handle_id(),
            C::Enable { capabilities } => self.handle_enable(capabilities.as_ref()),
            C::Namespace => self.handle_namespace(),
            C::Select {
                mailbox,
                parameters,
            } => self.handle_select(&mailbox, false, &parameters).await,
            C::Examine {
                mailbox,
                parameters,
            } => self.handle_select(&mailbox, true, &parameters).await,
            C::Unselect => self.handle_unselect(),
            C::Close => self.handle_close().await,
            C::Expunge => self.handle_expunge().await,
            C::ExpungeUid { sequence_set } => self.handle_uid_expunge(sequence_set).await,
            C::Create { mailbox } => self.handle_create(&mailbox).await,
            C::Delete { mailbox } => self.handle_delete(&mailbox).await,
            C::Rename { from, to } => self.handle_rename(&from, &to).await,
            C::Subscribe { mailbox } => self.handle_subscribe(&mailbox, true).await,
            C::Unsubscribe { mailbox } => self.handle_subscribe(&mailbox, false).await,
            C::List {
                reference,
                mailbox_wildcard,
            } => self.handle_list(&reference, &mailbox_wildcard, false),
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => self.handle_list(&reference, &mailbox_wildcard, true),
            C::Status {
                mailbox,
                item_names,
            } => self.handle_status(&mailbox, &item_names).await,
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.handle_append(&mailbox, &flags, date, message).await,
            C::Search {
                criteria,
                uid,
                charset,
            } => self.handle_search(charset, &criteria, uid).await,
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                self.handle_fetch(&sequence_set, &macro_or_item_names, uid, &modifiers)
                    .await
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.handle_store(&sequence_set, kind, response, &flags, uid, &modifiers)
                    .await
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.handle_copy_or_move(&sequence_set, &mailbox, uid, false)
                    .await
            }
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.handle_copy_or_move(&sequence_set, &mailbox, uid, true)
                    .await
            }
            C::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                self.handle_sort(&sort_criteria, charset, &search_criteria, uid)
                    .await
            }
            C::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                self.handle_thread(&algorithm, charset, &search_criteria, uid)
                    .await
            }
            C::Idle => self.handle_idle(),
            _ => Err(Refusal::Bad("command not supported".into())),
        }
    }

    fn handle_capability(&self) -> Outcome {
        Ok(done(
            vec![Data::Capability(self.capabilities())],
            "CAPABILITY completed",
        ))
    }

    fn handle_logout(&mut self) -> Outcome {
        let bye =
            Status::bye(None, "teamgate logging out").map_err(|e| Refusal::Bad(e.to_string()))?;
        let mut answer = done(Vec::new(), "LOGOUT completed");
        answer.untagged_status.push(bye);
        answer.after = After::Logout;
        self.state = State::NotAuthenticated;
        Ok(answer)
    }

    fn handle_starttls(&self) -> Outcome {
        if self.tls_active {
            return Err(Refusal::Bad("TLS already active".into()));
        }
        if self.ctx.tls.is_none() {
            return Err(Refusal::Bad("STARTTLS not available".into()));
        }
        if !matches!(self.state, State::NotAuthenticated) {
            return Err(Refusal::Bad("STARTTLS only before authentication".into()));
        }
        let mut answer = done(Vec::new(), "Begin TLS negotiation now");
        answer.after = After::StartTls;
        Ok(answer)
    }

    async fn handle_login(
        &mut self,
        username: AString<'_>,
        password: Secret<AString<'_>>,
    ) -> Outcome {
        let login = String::from_utf8_lossy(username.as_ref()).into_owned();
        let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
        self.login(&login, &password).await
    }

    fn handle_id(&self) -> Outcome {
        let params = vec![
            (
                IString::try_from("name").map_err(bad)?,
                NString::try_from("teamgate").map_err(bad)?,
            ),
            (
                IString::try_from("version").map_err(bad)?,
                NString::try_from(env!("CARGO_PKG_VERSION")).map_err(bad)?,
            ),
        ];
        Ok(done(
            vec![Data::Id {
                parameters: Some(params),
            }],
            "ID completed",
        ))
    }

    /// AUTHENTICATE PLAIN with the decoded SASL response.
    pub async fn authenticate_plain(&mut self, tag: Tag<'static>, response: &[u8]) -> Answer {
        let outcome = match auth::decode_plain(response) {
            Some((login, password)) => self.login(&login, &password).await,
            None => Err(Refusal::Bad("malformed PLAIN response".into())),
        };
        respond(tag, outcome)
    }

    /// Whether AUTHENTICATE may start now; the reason when not.
    pub fn authenticate_allowed(&self, mechanism: &AuthMechanism<'_>) -> Result<(), String> {
        if !matches!(self.state, State::NotAuthenticated) {
            return Err("already authenticated".into());
        }
        if !self.plaintext_auth_allowed() {
            return Err("use STARTTLS first".into());
        }
        if *mechanism != AuthMechanism::Plain {
            return Err("only PLAIN is supported".into());
        }
        Ok(())
    }

    async fn login(&mut self, login: &str, password: &str) -> Outcome {
        if !matches!(self.state, State::NotAuthenticated) {
            return Err(Refusal::Bad("already authenticated".into()));
        }
        if !self.plaintext_auth_allowed() {
            return Err(no(Some("PRIVACYREQUIRED"), "use STARTTLS first"));
        }
        let config = self.config.clone();
        let login = match self
            .ctx
            .auth
            .verify(&config, self.peer.ip(), login, password)
            .await
        {
            Ok(l) => l,
            Err(AuthError::Throttled) => {
                return Err(no(
                    Some("UNAVAILABLE"),
                    "too many failed attempts, try later",
                ));
            }
            Err(AuthError::Invalid) => {
                return Err(no(Some("AUTHENTICATIONFAILED"), "invalid credentials"));
            }
        };
        self.enter(login).await
    }

    /// A session already logged in as `login` (a configured agent), without the argon2
    /// check: the IMAP fuzz harness (`crate::fuzzing`) starts a session per input, and
    /// ~26 ms of hashing each would dwarf the commands it fuzzes.
    pub(crate) async fn logged_in(
        ctx: Arc<ImapContext>,
        peer: SocketAddr,
        login: &str,
    ) -> Result<Session, String> {
        let mut session = Session::new(ctx, peer, true);
        let login = session
            .config
            .agent(login)
            .map(|a| a.login.clone())
            .ok_or_else(|| format!("no agent {login}"))?;
        match session.enter(login).await {
            Ok(_) => Ok(session),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    /// The authenticated state for a verified `login`.
    async fn enter(&mut self, login: String) -> Outcome {
        let config = self.config.clone();
        let boxes = Mailboxes::for_agent(&config, &login);
        // The private folders every agent has exist from the first login on.
        for name in ["Drafts"] {
            ensure_folder(
                &self.ctx.store,
                &FolderId {
                    owner: login.clone(),
                    name: name.into(),
                },
            )
            .await?;
        }
        for folder in boxes.template_folders() {
            ensure_folder(&self.ctx.store, &folder).await?;
        }
        self.adopt_subscriptions(&login).await?;
        tracing::info!(agent = %login, "logged in");
        self.state = State::Authenticated(Agent { login, boxes });
        let mut answer = done(Vec::new(), "LOGIN completed");
        answer.status = Status::ok(
            None,
            Some(Code::Capability(self.capabilities())),
            "LOGIN completed",
        )
        .unwrap_or(answer.status);
        Ok(answer)
    }

    pub(super) fn agent(&self) -> Result<&Agent, Refusal> {
        match &self.state {
            State::Authenticated(a) | State::Selected(a, _) => Ok(a),
            State::NotAuthenticated => Err(Refusal::Bad("log in first".into())),
        }
    }

    pub(super) fn selected(&self) -> Result<&Selected, Refusal> {
        match &self.state {
            State::Selected(_, s) => Ok(s),
            _ => Err(Refusal::Bad("select a mailbox first".into())),
        }
    }
}

/// Commands after which pending mailbox changes are reported (the rest either report
/// them themselves, e.g. NOOP, or must not carry EXPUNGE: FETCH, STORE, SEARCH by number).
fn reports_changes(body: &CommandBody<'_>) -> bool {
    use CommandBody as C;
    match body {
        C::Fetch { uid, .. } | C::Store { uid, .. } | C::Search { uid, .. } => *uid,
        C::Capability
        | C::List { .. }
        | C::Lsub { .. }
        | C::Status { .. }
        | C::Namespace
        | C::Id { .. }
        | C::Create { .. }
        | C::Delete { .. }
        | C::Rename { .. }
        | C::Subscribe { .. }
        | C::Unsubscribe { .. }
        | C::Copy { .. } => true,
        _ => false,
    }
}

async fn ensure_folder(store: &Store, folder: &FolderId) -> Result<(), Refusal> {
    match store.folder_create(folder).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn done(untagged: Vec<Data<'static>>, text: impl Into<String>) -> Answer {
    let text: String = text.into();
    Answer {
        untagged,
        untagged_status: Vec::new(),
        status: Status::ok(None, None, text).unwrap_or_else(|_| fallback_ok()),
        after: After::Continue,
        more: None,
    }
}

/// Status text may quote client input (a mailbox name sent as a literal can hold CR/LF
/// or UTF-8), and IMAP text is ASCII without CR/LF (RFC 3501 `text`; imap-codec refuses
/// anything else, which used to leave a bare `BAD error`). Controls become blanks, other
/// non-ASCII characters `?`.
fn status_text(text: String) -> String {
    let clean: String = text
        .chars()
        .map(|c| match c {
            c if c.is_ascii_control() || c.is_control() => ' ',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect();
    if clean.trim().is_empty() {
        "failed".to_string()
    } else {
        clean
    }
}

/// Puts the tag on the final status, or turns a refusal into a tagged NO/BAD.
pub(super) fn respond(tag: Tag<'static>, outcome: Outcome) -> Answer {
    match outcome {
        Ok(mut answer) => {
            if let Status::Tagged(t) = &mut answer.status {
                t.tag = tag;
            } else if let Ok(s) = retag(answer.status.clone(), tag) {
                answer.status = s;
            }
            answer
        }
        Err(refusal) => {
            let status = match refusal {
                Refusal::No(code, text) => Status::no(
                    Some(tag.clone()),
                    code.map(|c| Code::Other(CodeOther::unvalidated(c.as_bytes()))),
                    status_text(text),
                ),
                Refusal::Bad(text) => Status::bad(Some(tag.clone()), None, status_text(text)),
                Refusal::Store(e) => {
                    tracing::warn!(error = %e, "store error in IMAP command");
                    let code = Some(Code::Other(CodeOther::unvalidated(b"SERVERBUG".as_slice())));
                    Status::no(
                        Some(tag.clone()),
                        code,
                        "internal error, try again later".to_string(),
                    )
                }
            };
            // A refusal must stay a tagged refusal whatever its text.
            let status = status
                .or_else(|_| Status::bad(Some(tag), None, "error"))
                .unwrap_or_else(|_| fallback_ok());
            Answer {
                untagged: Vec::new(),
                untagged_status: Vec::new(),
                status,
                after: After::Continue,
                more: None,
            }
        }
    }
}

/// `Status::ok(None, ..)` is untagged; give it the command's tag.
fn retag(status: Status<'static>, tag: Tag<'static>) -> Result<Status<'static>, ()> {
    match status {
        Status::Untagged(u) => Status::ok(Some(tag), u.code, u.text.to_string()).map_err(|_| ()),
        other => Ok(other),
    }
}

pub(super) fn bad<E: std::fmt::Display>(e: E) -> Refusal {
    Refusal::Bad(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal stays a tagged NO/BAD that says why, whatever its text holds.
    #[test]
    fn refusal_texts_are_valid_imap_text() {
        let tag = || Tag::try_from("a1").expect("tag");
        for text in ["Inboxes/…, not Trash", "Ü\r\n* 1 EXPUNGE", "", "日本語"] {
            for refusal in [no(Some("CANNOT"), text), Refusal::Bad(text.into())] {
                let answer = respond(tag(), Err(refusal));
                let Status::Tagged(tagged) = &answer.status else {
                    panic!("untagged: {:?}", answer.status);
                };
                let shown = tagged.body.text.inner();
                assert!(
                    shown.is_ascii() && !shown.contains(['\r', '\n']),
                    "{shown:?}"
                );
                assert_ne!(shown, "error", "{text:?}");
            }
        }
        let answer = respond(tag(), Err(no(None, "private messages: Inboxes/…")));
        let Status::Tagged(tagged) = &answer.status else {
            panic!()
        };
        assert!(
            tagged
                .body
                .text
                .inner()
                .starts_with("private messages: Inboxes/")
        );
    }
}
