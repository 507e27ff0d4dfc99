//! IMAP command handling (RFC 3501 + IDLE, UIDPLUS, MOVE, SPECIAL-USE, NAMESPACE, ID,
//! ENABLE, UNSELECT): the NotAuthenticated / Authenticated / Selected states and one
//! handler per command, turning commands into store calls and responses. No socket I/O:
//! the driver in `server.rs` feeds commands in and writes the answers.

use std::{borrow::Cow, collections::BTreeSet, net::SocketAddr, num::NonZeroU32, sync::Arc};

use imap_codec::imap_types::{
    ToStatic,
    auth::AuthMechanism,
    command::{Command, CommandBody},
    core::{Atom, IString, Literal, NString, Quoted, QuotedChar, Tag, Vec1},
    datetime::DateTime,
    extensions::{namespace::Namespace, uidplus::UidElement, uidplus::UidSet},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag, FlagFetch, FlagNameAttribute, FlagPerm, StoreResponse, StoreType},
    mailbox::{ListMailbox, Mailbox},
    response::{Capability, Code, CodeOther, Data, Greeting, Status},
    search::SearchKey,
    sequence::{SeqOrUid, Sequence, SequenceSet},
    status::{StatusDataItem, StatusDataItemName},
};

use super::{
    mailbox::{self, Gesture, MailboxInfo, Mailboxes, Target},
    render::{Rendered, partial},
    search::{self, Candidate},
};
use crate::{
    mail::envelope::{Envelope, Recipient},
    auth::{self, AuthError, Authenticator},
    config::Config,
    ingest::Ingest,
    net::tls::Tls,
    reload::Reloadable,
    replying::Replying,
    store::{
        ConversationAction, ConversationId, Entry, FlagOp, Flags, FolderId, MailboxSnapshot,
        MessageKey, Status as ConvStatus, Store, StoreError, TeamView,
    },
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
}

#[derive(Debug)]
struct Agent {
    login: String,
    boxes: Mailboxes,
}

#[derive(Debug)]
struct Selected {
    name: String,
    target: Target,
    writable: bool,
    uid_validity: u32,
    uid_next: u32,
    /// Sequence number = index + 1 (RFC 3501 §2.3.1.2).
    entries: Vec<(u32, Entry)>,
    /// Flags the client was last told, parallel to `entries`.
    flags: Vec<Flags>,
    /// (store change counter, `$Replying` generation) this state reflects: while both
    /// stand still there is nothing to report, so commands skip the per-message work.
    synced_at: (u64, u64),
}

#[derive(Debug)]
enum State {
    NotAuthenticated,
    Authenticated(Agent),
    Selected(Agent, Selected),
}

/// Failure of a command, turned into a tagged NO/BAD by `respond`.
#[derive(Debug)]
enum Refusal {
    No(Option<&'static str>, String),
    Bad(String),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

type Outcome = Result<Answer, Refusal>;

fn no(code: Option<&'static str>, text: impl Into<String>) -> Refusal {
    Refusal::No(code, text.into())
}

/// Status text may quote client input (a mailbox name sent as a literal can hold CR/LF),
/// which IMAP text must not contain.
fn status_text(text: String) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.trim().is_empty() {
        "failed".to_string()
    } else {
        clean
    }
}

pub struct Session {
    ctx: Arc<ImapContext>,
    config: Arc<Config>,
    peer: SocketAddr,
    tls_active: bool,
    state: State,
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
        ]);
        for other in ["SPECIAL-USE", "CHILDREN"] {
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
        // Changes made by others reach this session on its next command too, where RFC
        // 3501 §7.4.1 allows (never an EXPUNGE during FETCH, STORE or SEARCH).
        if reports_changes && let Ok(answer) = &mut outcome {
            answer.untagged.extend(self.pending_updates().await);
        }
        respond(tag, outcome)
    }

    async fn dispatch(&mut self, body: CommandBody<'static>) -> Outcome {
        use CommandBody as C;
        match body {
            C::Capability => Ok(done(
                vec![Data::Capability(self.capabilities())],
                "CAPABILITY completed",
            )),
            C::Noop | C::Check => {
                let untagged = self.sync().await?;
                Ok(done(untagged, "NOOP completed"))
            }
            C::Logout => {
                let bye = Status::bye(None, "teamgate logging out")
                    .map_err(|e| Refusal::Bad(e.to_string()))?;
                let mut answer = done(Vec::new(), "LOGOUT completed");
                answer.untagged_status.push(bye);
                answer.after = After::Logout;
                self.state = State::NotAuthenticated;
                Ok(answer)
            }
            C::StartTLS => {
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
            C::Login { username, password } => {
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(&login, &password).await
            }
            C::Authenticate { .. } => {
                Err(Refusal::Bad("AUTHENTICATE is handled by the driver".into()))
            }
            C::Id { .. } => {
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
            C::Enable { .. } => {
                self.agent()?;
                Ok(done(
                    vec![Data::Enabled {
                        capabilities: Vec::new(),
                    }],
                    "ENABLE completed",
                ))
            }
            C::Namespace => {
                self.agent()?;
                let personal = vec![Namespace {
                    prefix: IString::try_from("").map_err(bad)?,
                    delimiter: QuotedChar::try_from(mailbox::DELIMITER).ok(),
                    extensions: Vec::new(),
                }];
                Ok(done(
                    vec![Data::Namespace {
                        personal,
                        other: Vec::new(),
                        shared: Vec::new(),
                    }],
                    "NAMESPACE completed",
                ))
            }
            C::Select { mailbox, .. } => self.select(&mailbox_name(&mailbox), false).await,
            C::Examine { mailbox, .. } => self.select(&mailbox_name(&mailbox), true).await,
            C::Unselect => {
                self.selected()?;
                self.unselect();
                Ok(done(Vec::new(), "UNSELECT completed"))
            }
            C::Close => {
                let writable = self.selected()?.writable;
                if writable {
                    self.expunge(None, true).await?;
                }
                self.unselect();
                Ok(done(Vec::new(), "CLOSE completed"))
            }
            C::Expunge => {
                let untagged = self.expunge(None, false).await?;
                Ok(done(untagged, "EXPUNGE completed"))
            }
            C::ExpungeUid { sequence_set } => {
                let untagged = self.expunge(Some(sequence_set), false).await?;
                Ok(done(untagged, "UID EXPUNGE completed"))
            }
            C::Create { mailbox } => self.create(&mailbox_name(&mailbox)).await,
            C::Delete { mailbox } => self.delete(&mailbox_name(&mailbox)).await,
            C::Rename { from, to } => self.rename(&mailbox_name(&from), &mailbox_name(&to)).await,
            C::Subscribe { mailbox } | C::Unsubscribe { mailbox } => {
                let name = mailbox_name(&mailbox);
                self.lookup(&name)?;
                Ok(done(Vec::new(), "completed (every mailbox is subscribed)"))
            }
            C::List {
                reference,
                mailbox_wildcard,
            } => self.list(
                &mailbox_name(&reference),
                &wildcard(&mailbox_wildcard),
                false,
            ),
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(
                &mailbox_name(&reference),
                &wildcard(&mailbox_wildcard),
                true,
            ),
            C::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox_name(&mailbox), &item_names).await,
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let raw = match message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data().to_vec()
                    }
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.to_vec()
                    }
                };
                let date = date.map(|d| d.as_ref().timestamp());
                self.append(&mailbox_name(&mailbox), &flags, date, raw)
                    .await
            }
            C::Search {
                criteria,
                uid,
                charset,
            } => {
                if let Some(cs) = charset {
                    let cs = cs.as_ref().to_ascii_uppercase();
                    if cs != "UTF-8" && cs != "US-ASCII" {
                        return Err(no(Some("BADCHARSET"), "only UTF-8 and US-ASCII"));
                    }
                }
                self.search(criteria.as_ref(), uid).await
            }
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => self.fetch(&sequence_set, &macro_or_item_names, uid).await,
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => self.store(&sequence_set, kind, response, &flags, uid).await,
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(&sequence_set, &mailbox_name(&mailbox), uid, false)
                    .await
            }
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(&sequence_set, &mailbox_name(&mailbox), uid, true)
                    .await
            }
            C::Idle => {
                self.agent()?;
                let mut answer = done(Vec::new(), "IDLE terminated");
                answer.after = After::Idle;
                Ok(answer)
            }
            _ => Err(Refusal::Bad("command not supported".into())),
        }
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

    fn agent(&self) -> Result<&Agent, Refusal> {
        match &self.state {
            State::Authenticated(a) | State::Selected(a, _) => Ok(a),
            State::NotAuthenticated => Err(Refusal::Bad("log in first".into())),
        }
    }

    fn selected(&self) -> Result<&Selected, Refusal> {
        match &self.state {
            State::Selected(_, s) => Ok(s),
            _ => Err(Refusal::Bad("select a mailbox first".into())),
        }
    }

    fn unselect(&mut self) {
        if let State::Selected(..) = self.state {
            let state = std::mem::replace(&mut self.state, State::NotAuthenticated);
            if let State::Selected(agent, _) = state {
                self.state = State::Authenticated(agent);
            }
        }
    }

    /// Every mailbox of the agent, with its private folders and `Closed/<year>` folders.
    fn mailboxes(&self) -> Result<Vec<MailboxInfo>, Refusal> {
        let agent = self.agent()?;
        let folders = self.ctx.store.folder_list(&agent.login)?;
        let personal: Vec<String> = folders
            .iter()
            .filter_map(|f| f.strip_prefix("Personal/").map(str::to_string))
            .collect();
        let years: Vec<i32> = folders
            .iter()
            .filter_map(|f| f.strip_prefix("Closed/").and_then(mailbox::closed_year))
            .collect();
        Ok(agent.boxes.list(&personal, &years))
    }

    fn lookup(&self, name: &str) -> Result<MailboxInfo, Refusal> {
        let name = mailbox::canonical(name);
        self.mailboxes()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| no(Some("NONEXISTENT"), format!("no mailbox {name}")))
    }

    async fn snapshot(&self, target: &Target) -> Result<MailboxSnapshot, Refusal> {
        Ok(match target {
            Target::Team(view) => self.ctx.store.sync_view(view).await?,
            Target::Folder(folder) => self.ctx.store.sync_folder(folder).await?,
        })
    }

    async fn select(&mut self, name: &str, read_only: bool) -> Outcome {
        self.unselect();
        let info = self.lookup(name)?;
        let Some(target) = info.target.clone() else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", info.name),
            ));
        };
        let agent = self.agent()?;
        let synced_at = self.generations();
        let snapshot = self.snapshot(&target).await?;
        let flags = shown_flags(&self.ctx, &agent.login, &snapshot.entries)?;
        let writable = info.writable && !read_only;
        let exists = u32::try_from(snapshot.entries.len()).unwrap_or(u32::MAX);
        let mut untagged = vec![
            Data::Flags(vec![
                Flag::Answered,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Seen,
                Flag::Draft,
                keyword("$Comment"),
                keyword("$Replying"),
            ]),
            Data::Exists(exists),
            Data::Recent(0),
        ];
        let mut statuses = Vec::new();
        let permanent = if writable {
            vec![
                FlagPerm::Flag(Flag::Answered),
                FlagPerm::Flag(Flag::Flagged),
                FlagPerm::Flag(Flag::Deleted),
                FlagPerm::Flag(Flag::Seen),
                FlagPerm::Flag(Flag::Draft),
                FlagPerm::Asterisk,
            ]
        } else {
            Vec::new()
        };
        statuses.push(ok_code(Code::PermanentFlags(permanent)));
        if let Some(first_unseen) = flags.iter().position(|f| !f.seen)
            && let Some(n) = NonZeroU32::new(u32::try_from(first_unseen + 1).unwrap_or(u32::MAX))
        {
            statuses.push(ok_code(Code::Unseen(n)));
        }
        if let Some(v) = NonZeroU32::new(snapshot.uid_validity) {
            statuses.push(ok_code(Code::UidValidity(v)));
        }
        if let Some(n) = NonZeroU32::new(snapshot.uid_next) {
            statuses.push(ok_code(Code::UidNext(n)));
        }
        let selected = Selected {
            name: info.name.clone(),
            target,
            writable,
            uid_validity: snapshot.uid_validity,
            uid_next: snapshot.uid_next,
            entries: snapshot.entries,
            flags,
            synced_at,
        };
        let state = std::mem::replace(&mut self.state, State::NotAuthenticated);
        if let State::Authenticated(agent) = state {
            self.state = State::Selected(agent, selected);
        }
        let code = if writable {
            Code::ReadWrite
        } else {
            Code::ReadOnly
        };
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        untagged.shrink_to_fit();
        Ok(Answer {
            untagged,
            untagged_status: statuses,
            status: Status::ok(None, Some(code), format!("{verb} completed")).map_err(bad)?,
            after: After::Continue,
        })
    }

    /// Changes to push while the client idles; a store failure pushes nothing (the next
    /// command reports it).
    pub async fn pending_updates(&mut self) -> Vec<Data<'static>> {
        match self.sync().await {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = ?e, "mailbox update failed");
                Vec::new()
            }
        }
    }

    /// Brings the selected mailbox up to date: EXPUNGE for messages that left (highest
    /// first, so numbers stay valid), EXISTS for new ones, FETCH FLAGS for changed flags.
    /// What the selected state was last brought up to date against.
    fn generations(&self) -> (u64, u64) {
        (
            self.ctx.store.change_counter(),
            self.ctx.replying.generation(),
        )
    }

    async fn sync(&mut self) -> Result<Vec<Data<'static>>, Refusal> {
        // Read before looking: a change landing meanwhile is seen by the next sync.
        let generations = self.generations();
        let State::Selected(agent, sel) = &mut self.state else {
            return Ok(Vec::new());
        };
        if sel.synced_at == generations {
            return Ok(Vec::new());
        }
        let snapshot = match &sel.target {
            Target::Team(view) => self.ctx.store.sync_view(view).await?,
            Target::Folder(folder) => match self.ctx.store.sync_folder(folder).await {
                Ok(s) => s,
                // The folder was deleted by another session: everything is gone.
                Err(StoreError::NotFound(_)) => MailboxSnapshot {
                    uid_validity: sel.uid_validity,
                    uid_next: sel.uid_next,
                    entries: Vec::new(),
                    highest_change: 0,
                },
                Err(e) => return Err(e.into()),
            },
        };
        let mut untagged = Vec::new();
        let now: BTreeSet<u32> = snapshot.entries.iter().map(|(uid, _)| *uid).collect();
        for index in (0..sel.entries.len()).rev() {
            if !now.contains(&sel.entries[index].0) {
                sel.entries.remove(index);
                sel.flags.remove(index);
                if let Some(seq) = NonZeroU32::new(u32::try_from(index + 1).unwrap_or(u32::MAX)) {
                    untagged.push(Data::Expunge(seq));
                }
            }
        }
        let known_max = sel.entries.last().map(|(uid, _)| *uid).unwrap_or(0);
        let fresh: Vec<(u32, Entry)> = snapshot
            .entries
            .iter()
            .filter(|(uid, _)| *uid > known_max)
            .copied()
            .collect();
        // Only the flags written since the last sync can differ, unless presence moved
        // or the store no longer remembers which were written.
        let written = if sel.synced_at.1 == generations.1 {
            self.ctx.store.flags_changed_since(sel.synced_at.0)
        } else {
            None
        };
        let stale: Vec<usize> = match &written {
            Some(keys) => (0..sel.entries.len())
                .filter(|&i| keys.contains(&sel.entries[i].1.message))
                .collect(),
            None => (0..sel.entries.len()).collect(),
        };
        let stale_entries: Vec<(u32, Entry)> = stale.iter().map(|&i| sel.entries[i]).collect();
        let current = shown_flags(&self.ctx, &agent.login, &stale_entries)?;
        for (index, flags) in stale.into_iter().zip(current) {
            if sel.flags[index] != flags {
                let seq = seq_of(index);
                let items = vec![
                    MessageDataItem::Uid(nz(sel.entries[index].0)),
                    MessageDataItem::Flags(flag_list(&flags)),
                ];
                untagged.push(Data::Fetch {
                    seq,
                    items: Vec1::unvalidated(items),
                });
                sel.flags[index] = flags;
            }
        }
        if !fresh.is_empty() {
            let fresh_flags = shown_flags(&self.ctx, &agent.login, &fresh)?;
            sel.entries.extend(fresh);
            sel.flags.extend(fresh_flags);
            untagged.push(Data::Exists(
                u32::try_from(sel.entries.len()).unwrap_or(u32::MAX),
            ));
        }
        sel.uid_next = snapshot.uid_next;
        sel.synced_at = generations;
        Ok(untagged)
    }

    /// Indices of the selected messages named by a sequence set (or UID set).
    fn resolve(sel: &Selected, set: &SequenceSet, uid: bool) -> Vec<usize> {
        if sel.entries.is_empty() {
            return Vec::new();
        }
        let largest = if uid {
            sel.entries.last().map(|(u, _)| *u).unwrap_or(1)
        } else {
            sel.entries.len() as u32
        };
        sel.entries
            .iter()
            .enumerate()
            .filter(|(index, (u, _))| {
                let value = if uid { *u } else { *index as u32 + 1 };
                set_contains(set, value, largest)
            })
            .map(|(index, _)| index)
            .collect()
    }

    async fn fetch(
        &mut self,
        set: &SequenceSet,
        items: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> Outcome {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let mut names: Vec<MessageDataItemName<'_>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m.expand(),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n.clone(),
        };
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Body
                    | MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
            )
        });
        let marks_seen = sel.writable
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let indices = Self::resolve(sel, set, uid);
        if marks_seen {
            let unseen: Vec<MessageKey> = indices
                .iter()
                .filter(|i| !sel.flags[**i].seen)
                .map(|i| sel.entries[*i].1.message)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags {
                    seen: true,
                    ..Flags::default()
                };
                self.ctx
                    .store
                    .store_flags(&agent.login, unseen, FlagOp::Add, seen)
                    .await?;
            }
        }
        let mut untagged = Vec::with_capacity(indices.len());
        for index in indices {
            let (uid_value, entry) = sel.entries[index];
            let meta = self.ctx.store.message_meta(entry.message)?;
            let raw = if needs_body {
                self.ctx.store.read_message(entry.message)?
            } else {
                Vec::new()
            };
            let rendered = needs_body.then(|| Rendered::new(&raw));
            let mut out = Vec::with_capacity(names.len());
            let mut flags_sent = false;
            for name in &names {
                let item = match name {
                    MessageDataItemName::Uid => MessageDataItem::Uid(nz(uid_value)),
                    MessageDataItemName::Flags => {
                        flags_sent = true;
                        let flags = shown_flag(&self.ctx, &agent.login, (uid_value, entry))?;
                        sel.flags[index] = flags.clone();
                        MessageDataItem::Flags(flag_list(&flags))
                    }
                    MessageDataItemName::InternalDate => MessageDataItem::InternalDate(
                        internal_date(meta.as_ref().map(|m| m.received_at).unwrap_or(0)),
                    ),
                    MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(
                        u32::try_from(meta.as_ref().map(|m| m.size).unwrap_or(0))
                            .unwrap_or(u32::MAX),
                    ),
                    MessageDataItemName::Envelope => match &rendered {
                        Some(r) => MessageDataItem::Envelope(r.envelope()),
                        None => continue,
                    },
                    MessageDataItemName::BodyStructure => match &rendered {
                        Some(r) => MessageDataItem::BodyStructure(r.body_structure(true)),
                        None => continue,
                    },
                    MessageDataItemName::Body => match &rendered {
                        Some(r) => MessageDataItem::Body(r.body_structure(false)),
                        None => continue,
                    },
                    MessageDataItemName::BodyExt {
                        section,
                        partial: part,
                        ..
                    } => {
                        let Some(r) = &rendered else { continue };
                        let bytes = r.section(section.as_ref());
                        let (origin, data) = match part {
                            Some((origin, length)) => (
                                Some(*origin),
                                partial(&bytes, *origin, length.get()).to_vec(),
                            ),
                            None => (None, bytes),
                        };
                        MessageDataItem::BodyExt {
                            section: section.as_ref().map(ToStatic::to_static),
                            origin,
                            data: nstring(data),
                        }
                    }
                    MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(raw.clone())),
                    MessageDataItemName::Rfc822Header => match &rendered {
                        Some(r) => MessageDataItem::Rfc822Header(nstring(
                            r.section(Some(&header_section())),
                        )),
                        None => continue,
                    },
                    MessageDataItemName::Rfc822Text => match &rendered {
                        Some(r) => {
                            MessageDataItem::Rfc822Text(nstring(r.section(Some(&text_section()))))
                        }
                        None => continue,
                    },
                    _ => return Err(Refusal::Bad("unsupported FETCH item".into())),
                };
                out.push(item);
            }
            if marks_seen && !flags_sent {
                let flags = shown_flag(&self.ctx, &agent.login, (uid_value, entry))?;
                if flags != sel.flags[index] {
                    sel.flags[index] = flags.clone();
                    out.push(MessageDataItem::Flags(flag_list(&flags)));
                }
            }
            if let Ok(items) = Vec1::try_from(out) {
                untagged.push(Data::Fetch {
                    seq: seq_of(index),
                    items,
                });
            }
        }
        Ok(done(untagged, "FETCH completed"))
    }

    async fn store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Outcome {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if !sel.writable {
            return Err(no(Some("NOPERM"), "mailbox is read-only"));
        }
        let indices = Self::resolve(sel, set, uid);
        let keys: Vec<MessageKey> = indices.iter().map(|i| sel.entries[*i].1.message).collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let results = self
            .ctx
            .store
            .store_flags(&agent.login, keys, op, flags_of(flags))
            .await?;
        let mut untagged = Vec::new();
        for (index, mut flags) in indices.into_iter().zip(results) {
            add_presence(&self.ctx, &agent.login, sel.entries[index].1, &mut flags);
            sel.flags[index] = flags.clone();
            // .SILENT: the client knows what it set (RFC 3501 §6.4.6).
            if response == StoreResponse::Answer {
                let mut items = vec![MessageDataItem::Flags(flag_list(&flags))];
                if uid {
                    items.insert(0, MessageDataItem::Uid(nz(sel.entries[index].0)));
                }
                untagged.push(Data::Fetch {
                    seq: seq_of(index),
                    items: Vec1::unvalidated(items),
                });
            }
        }
        Ok(done(untagged, "STORE completed"))
    }

    async fn search(&mut self, criteria: &[SearchKey<'_>], uid: bool) -> Outcome {
        let State::Selected(_, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let key = match criteria {
            [one] => one.clone(),
            many => SearchKey::And(Vec1::unvalidated(many.to_vec())),
        };
        let needs_content = needs_content(&key);
        let max_seq = sel.entries.len() as u32;
        let max_uid = sel.entries.last().map(|(u, _)| *u).unwrap_or(0);
        let mut hits = Vec::new();
        for (index, (uid_value, entry)) in sel.entries.iter().enumerate() {
            let flags = flag_list_plain(&sel.flags[index]);
            let meta = self.ctx.store.message_meta(entry.message)?;
            let raw = if needs_content {
                self.ctx.store.read_message(entry.message)?
            } else {
                Vec::new()
            };
            let candidate = Candidate {
                seq: index as u32 + 1,
                uid: *uid_value,
                flags: &flags,
                internal_date: meta.as_ref().map(|m| m.received_at).unwrap_or(0),
                raw: &raw,
            };
            if search::matches(&key, &candidate, max_seq, max_uid) {
                hits.push(nz(if uid { *uid_value } else { index as u32 + 1 }));
            }
        }
        Ok(done(vec![Data::Search(hits, None)], "SEARCH completed"))
    }

    /// EXPUNGE / UID EXPUNGE / CLOSE. In a team view it moves the conversations of the
    /// `\Deleted` messages to the trash (nothing is destroyed, SPEC §5); in a folder it
    /// removes the messages.
    async fn expunge(
        &mut self,
        only: Option<SequenceSet>,
        silent: bool,
    ) -> Result<Vec<Data<'static>>, Refusal> {
        let State::Selected(agent, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if !sel.writable {
            return Err(no(Some("NOPERM"), "mailbox is read-only"));
        }
        let mut chosen: Vec<usize> = (0..sel.entries.len())
            .filter(|i| sel.flags[*i].deleted)
            .collect();
        if let Some(set) = &only {
            let named = Self::resolve(sel, set, true);
            chosen.retain(|i| named.contains(i));
        }
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let login = agent.login.clone();
        match &sel.target {
            Target::Folder(folder) => {
                let uids: Vec<u32> = chosen.iter().map(|i| sel.entries[*i].0).collect();
                self.remove_from_folder(folder, uids).await?;
            }
            Target::Team(view) => {
                let keys: Vec<MessageKey> =
                    chosen.iter().map(|i| sel.entries[*i].1.message).collect();
                // Only conversations still in this view go to the trash. Clients that move
                // by COPY + \Deleted + EXPUNGE have already moved the conversation with the
                // COPY (e.g. closed it); its EXPUNGE must not trash it as well.
                let current = self.ctx.store.sync_view(view).await?;
                let conversations: BTreeSet<ConversationId> = chosen
                    .iter()
                    .map(|i| sel.entries[*i])
                    .filter(|(uid, _)| current.entries.iter().any(|(u, _)| u == uid))
                    .filter_map(|(_, e)| e.conversation)
                    .collect();
                for conv in conversations {
                    self.ctx
                        .store
                        .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Trash))
                        .await?;
                }
                let deleted = Flags {
                    deleted: true,
                    ..Flags::default()
                };
                self.ctx
                    .store
                    .store_flags(&login, keys, FlagOp::Remove, deleted)
                    .await?;
            }
        }
        let untagged = self.sync().await?;
        Ok(if silent { Vec::new() } else { untagged })
    }

    async fn copy_or_move(
        &mut self,
        set: &SequenceSet,
        target_name: &str,
        uid: bool,
        is_move: bool,
    ) -> Outcome {
        let verb = if is_move { "MOVE" } else { "COPY" };
        let target = self.lookup(target_name)?;
        let State::Selected(agent, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if is_move && !sel.writable {
            return Err(no(Some("NOPERM"), "source mailbox is read-only"));
        }
        let indices = Self::resolve(sel, set, uid);
        if indices.is_empty() {
            return Ok(done(
                Vec::new(),
                format!("{verb} completed (nothing to do)"),
            ));
        }
        let entries: Vec<(u32, Entry)> = indices.iter().map(|i| sel.entries[*i]).collect();
        let source_is_team = matches!(sel.target, Target::Team(_));
        let source_is_junk = matches!(sel.target, Target::Team(TeamView::Junk { .. }));
        let source_folder = match &sel.target {
            Target::Folder(f) => Some(f.clone()),
            Target::Team(_) => None,
        };
        let Some(target_box) = target.target.clone() else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", target.name),
            ));
        };
        if !target.writable {
            return Err(no(
                Some("NOPERM"),
                format!("{} is read-only for you", target.name),
            ));
        }
        let gesture = agent.boxes.gesture(&target.name);
        let (uid_validity, pairs) = match (&target_box, source_is_team) {
            (Target::Team(view), true) => {
                let Some(gesture) = gesture else {
                    return Err(no(
                        Some("CANNOT"),
                        format!("messages cannot be moved into {}", target.name),
                    ));
                };
                if source_is_junk {
                    if gesture == Gesture::Junk {
                        return Ok(done(Vec::new(), format!("{verb} completed (already junk)")));
                    }
                    // "Not spam": threaded like any mail; then what the target means.
                    let mut released = Vec::new();
                    for (src, e) in &entries {
                        let Some(id) = self.ctx.store.junk_of_message(e.message)? else {
                            continue;
                        };
                        let accepted = self
                            .ctx
                            .ingest
                            .release_junk(id)
                            .await
                            .map_err(|e| no(None, e.to_string()))?;
                        // A duplicate (it never left its conversation) keeps its key.
                        if let Some(key) = accepted.message().or(Some(e.message)) {
                            released.push((*src, key));
                            if let Some(conv) = self
                                .ctx
                                .store
                                .message_meta(key)?
                                .and_then(|m| m.conversation)
                                && !matches!(gesture, Gesture::Open | Gesture::OpenIn(_))
                            {
                                self.act(conv, &gesture).await?;
                            }
                        }
                    }
                    let snapshot = self.ctx.store.sync_view(view).await?;
                    let pairs: Vec<(u32, u32)> = released
                        .iter()
                        .filter_map(|(src, key)| {
                            snapshot
                                .entries
                                .iter()
                                .find(|(_, d)| d.message == *key)
                                .map(|(dst, _)| (*src, *dst))
                        })
                        .collect();
                    let copyuid = copy_uid_code(snapshot.uid_validity, &pairs);
                    let mut answer = done(Vec::new(), format!("{verb} completed"));
                    if let Some(code) = copyuid {
                        answer.untagged_status.push(ok_code(code));
                    }
                    answer.untagged = self.sync().await?;
                    return Ok(answer);
                }
                let conversations: BTreeSet<ConversationId> =
                    entries.iter().filter_map(|(_, e)| e.conversation).collect();
                for conv in &conversations {
                    self.act(*conv, &gesture).await?;
                }
                let snapshot = self.ctx.store.sync_view(view).await?;
                let pairs: Vec<(u32, u32)> = entries
                    .iter()
                    .filter_map(|(src, e)| {
                        snapshot
                            .entries
                            .iter()
                            .find(|(_, d)| d == e)
                            .map(|(dst, _)| (*src, *dst))
                    })
                    .collect();
                (snapshot.uid_validity, pairs)
            }
            (Target::Team(_), false) => {
                // A private message dragged into a team inbox: intake (SPEC §5 APPEND rule).
                let Some(Gesture::Open | Gesture::OpenIn(_)) = gesture else {
                    return Err(no(
                        Some("CANNOT"),
                        format!(
                            "private messages can only go to INBOX or Inboxes/…, not {}",
                            target.name
                        ),
                    ));
                };
                for (_, e) in &entries {
                    let raw = self.ctx.store.read_message(e.message)?;
                    self.intake(&target.name, raw).await?;
                }
                if is_move && let Some(folder) = &source_folder {
                    self.remove_from_folder(folder, entries.iter().map(|(u, _)| *u).collect())
                        .await?;
                }
                let untagged = self.sync().await?;
                return Ok(done(untagged, format!("{verb} completed")));
            }
            (Target::Folder(folder), from_team) => {
                if is_move && from_team {
                    return Err(no(
                        Some("CANNOT"),
                        "moving would take the conversation from the team; COPY it instead",
                    ));
                }
                let keys = entries.iter().map(|(_, e)| e.message).collect();
                let (validity, new_uids) = self.ctx.store.folder_copy(folder, keys).await?;
                if is_move && let Some(src) = &source_folder {
                    self.remove_from_folder(src, entries.iter().map(|(u, _)| *u).collect())
                        .await?;
                }
                (
                    validity,
                    entries.iter().map(|(u, _)| *u).zip(new_uids).collect(),
                )
            }
        };
        let copyuid = copy_uid_code(uid_validity, &pairs);
        let mut answer = done(Vec::new(), format!("{verb} completed"));
        if is_move {
            if let Some(code) = copyuid {
                answer.untagged_status.push(ok_code(code));
            }
            answer.untagged = self.sync().await?;
        } else if let Some(code) = copyuid {
            answer.status = Status::ok(None, Some(code), "COPY completed").map_err(bad)?;
        }
        Ok(answer)
    }

    /// Expunges from a private folder; a draft leaving `Drafts` no longer marks its
    /// conversation `$Replying`.
    async fn remove_from_folder(&self, folder: &FolderId, uids: Vec<u32>) -> Result<(), Refusal> {
        if folder.name == "Drafts" {
            self.ctx.replying.drafts_removed(&folder.owner, &uids);
        }
        self.ctx.store.folder_expunge(folder, uids).await?;
        Ok(())
    }

    /// Carries out what moving a conversation into a team view means (SPEC §5).
    async fn act(&self, conv: ConversationId, gesture: &Gesture) -> Result<(), Refusal> {
        let store = &self.ctx.store;
        let open = ConversationAction::SetStatus(ConvStatus::Open);
        match gesture {
            Gesture::Open => store.conversation_action(conv, open).await?,
            Gesture::OpenIn(inbox) => {
                let info = store
                    .conversation_info(conv)?
                    .ok_or_else(|| no(Some("NONEXISTENT"), "conversation gone"))?;
                if &info.inbox != inbox {
                    store
                        .conversation_action(
                            conv,
                            ConversationAction::Transfer {
                                inbox: inbox.clone(),
                            },
                        )
                        .await?;
                }
                store.conversation_action(conv, open).await?;
            }
            Gesture::Close => {
                store
                    .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Closed))
                    .await?
            }
            Gesture::Trash => {
                store
                    .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Trash))
                    .await?
            }
            Gesture::Assign(login) => {
                store
                    .conversation_action(conv, ConversationAction::Assign(Some(login.clone())))
                    .await?;
                store.conversation_action(conv, open).await?;
            }
            Gesture::Junk => {
                let login = self.agent()?.login.clone();
                store
                    .mark_junk(conv, format!("marked as spam by {login}"))
                    .await?;
            }
            Gesture::Unassign => {
                store
                    .conversation_action(conv, ConversationAction::Assign(None))
                    .await?;
                store.conversation_action(conv, open).await?;
            }
        }
        Ok(())
    }

    /// A message entering a team inbox as if it arrived by SMTP, credited to its From.
    async fn intake(&self, target: &str, raw: Vec<u8>) -> Result<Option<MessageKey>, Refusal> {
        let agent = self.agent()?;
        let inbox = match agent.boxes.gesture(target) {
            Some(Gesture::OpenIn(inbox)) => inbox,
            // INBOX: the agent's first inbox.
            _ => agent
                .boxes
                .member_of
                .first()
                .cloned()
                .ok_or_else(|| no(Some("NOPERM"), "you are in no inbox"))?,
        };
        if !agent.boxes.member_of.contains(&inbox) {
            return Err(no(
                Some("NOPERM"),
                format!("you are not a member of {inbox}"),
            ));
        }
        let address = self
            .config
            .inbox(&inbox)
            .and_then(|i| i.addresses.first().cloned())
            .ok_or_else(|| no(None, format!("inbox {inbox} has no address")))?;
        // Credited to its own From (SPEC §5), not to a null sender (which would make it
        // look like a bounce).
        let from = mail_parser::MessageParser::default()
            .parse_headers(&raw)
            .and_then(|m| {
                m.from()
                    .and_then(|a| a.first())
                    .and_then(|a| a.address())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let envelope = Envelope {
            mail_from: from,
            rcpts: vec![Recipient {
                address,
                inbox: Some(inbox),
                tag: None,
            }],
            smtputf8: true,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // An agent's deliberate intake: not filtered, no trace header of ours.
        match self
            .ctx
            .ingest
            .deliver(&envelope, raw, "", None, now, 0)
            .await
        {
            Ok(accepted) => Ok(accepted.message()),
            Err(e) => Err(no(None, format!("message refused: {e}"))),
        }
    }

    async fn append(
        &mut self,
        name: &str,
        flags: &[Flag<'_>],
        date: Option<i64>,
        raw: Vec<u8>,
    ) -> Outcome {
        let info = self
            .lookup(name)
            .map_err(|_| no(Some("TRYCREATE"), format!("no mailbox {name}")))?;
        if !info.writable {
            return Err(no(
                Some("NOPERM"),
                format!("{} is read-only for you", info.name),
            ));
        }
        let max = self.config.smtp.max_message_size;
        if raw.len() > max {
            return Err(no(Some("TOOBIG"), format!("message exceeds {max} bytes")));
        }
        let (validity, uid) = match &info.target {
            Some(Target::Folder(folder)) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let date = date.unwrap_or(now);
                let login = self.agent()?.login.clone();
                let draft = (folder.owner == login && folder.name == "Drafts").then(|| raw.clone());
                // Parsing sees client bytes: off the async threads.
                let (raw, summary) = tokio::task::spawn_blocking(move || {
                    let summary = crate::message::folder_summary(&raw);
                    (raw, summary)
                })
                .await
                .map_err(|e| Refusal::Bad(format!("message not parsed: {e}")))?;
                let (validity, uid) = self
                    .ctx
                    .store
                    .folder_append(folder, raw, summary, flags_of(flags), date)
                    .await?;
                // A reply draft: teammates see `$Replying` on its conversation for a while.
                if let Some(draft) = draft
                    && let Some(conv) = self.ctx.submit.draft_conversation(&login, draft).await
                {
                    let window = self.config.workflow.collision_window.as_secs() as i64;
                    self.ctx
                        .replying
                        .draft_saved(conv, &login, uid, now + window);
                }
                (validity, uid)
            }
            Some(Target::Team(view))
                if matches!(
                    self.agent()?.boxes.gesture(&info.name),
                    Some(Gesture::Open | Gesture::OpenIn(_))
                ) =>
            {
                let key = self.intake(&info.name, raw).await?;
                let snapshot = self.ctx.store.sync_view(view).await?;
                let uid = key
                    .and_then(|k| {
                        snapshot
                            .entries
                            .iter()
                            .rev()
                            .find(|(_, e)| e.message == k)
                            .map(|(u, _)| *u)
                    })
                    .unwrap_or(0);
                (snapshot.uid_validity, uid)
            }
            Some(Target::Team(view @ TeamView::Sent { .. })) => {
                // The client's copy of a reply it just submitted: recognised by Message-ID
                // and not stored twice; a message sent some other way is logged as sent.
                let agent = self.agent()?.login.clone();
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let key = self
                    .ctx
                    .submit
                    .record_sent_copy(&agent, raw, now)
                    .await
                    .map_err(|r| no(None, r.text))?;
                let snapshot = self.ctx.store.sync_view(view).await?;
                let uid = snapshot
                    .entries
                    .iter()
                    .rev()
                    .find(|(_, e)| e.message == key)
                    .map(|(u, _)| *u)
                    .unwrap_or(0);
                (snapshot.uid_validity, uid)
            }
            _ => {
                return Err(no(
                    Some("CANNOT"),
                    format!("messages cannot be appended to {}", info.name),
                ));
            }
        };
        let untagged = self.sync().await?;
        let mut answer = done(untagged, "APPEND completed");
        if let (Some(uid_validity), Some(uid)) = (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
            answer.status = Status::ok(
                None,
                Some(Code::AppendUid { uid_validity, uid }),
                "APPEND completed",
            )
            .map_err(bad)?;
        }
        Ok(answer)
    }

    async fn create(&mut self, name: &str) -> Outcome {
        let login = self.agent()?.login.clone();
        let name = mailbox::canonical(name);
        let folder = if mailbox::personal_name(&name).is_some() {
            FolderId {
                owner: login,
                name: name.clone(),
            }
        } else if name
            .strip_prefix("Closed/")
            .and_then(mailbox::closed_year)
            .is_some()
        {
            // Thunderbird's yearly archive folders: a marker; the mailbox is a view.
            FolderId {
                owner: login,
                name: name.clone(),
            }
        } else {
            return Err(no(
                Some("CANNOT"),
                format!(
                    "{name}: team mailboxes are fixed; create private folders below Personal/ (or Closed/<year>)"
                ),
            ));
        };
        match self.ctx.store.folder_create(&folder).await {
            Ok(()) => Ok(done(Vec::new(), "CREATE completed")),
            Err(StoreError::AlreadyExists(_)) => {
                Err(no(Some("ALREADYEXISTS"), format!("{name} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&mut self, name: &str) -> Outcome {
        let login = self.agent()?.login.clone();
        let name = mailbox::canonical(name);
        let deletable = mailbox::personal_name(&name).is_some()
            || name
                .strip_prefix("Closed/")
                .and_then(mailbox::closed_year)
                .is_some();
        if !deletable {
            return Err(no(Some("CANNOT"), format!("{name} cannot be deleted")));
        }
        if let State::Selected(_, sel) = &self.state
            && sel.name == name
        {
            self.unselect();
        }
        match self
            .ctx
            .store
            .folder_delete(&FolderId {
                owner: login,
                name: name.clone(),
            })
            .await
        {
            Ok(()) => Ok(done(Vec::new(), "DELETE completed")),
            Err(StoreError::NotFound(_)) => {
                Err(no(Some("NONEXISTENT"), format!("no mailbox {name}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn rename(&mut self, from: &str, to: &str) -> Outcome {
        let login = self.agent()?.login.clone();
        let (from, to) = (mailbox::canonical(from), mailbox::canonical(to));
        if mailbox::personal_name(&from).is_none() || mailbox::personal_name(&to).is_none() {
            return Err(no(
                Some("CANNOT"),
                "only folders below Personal/ can be renamed, within Personal/",
            ));
        }
        let source = FolderId {
            owner: login.clone(),
            name: from.clone(),
        };
        let target = FolderId {
            owner: login,
            name: to.clone(),
        };
        match self.ctx.store.folder_rename(&source, &target).await {
            Ok(()) => Ok(done(Vec::new(), "RENAME completed")),
            Err(StoreError::NotFound(_)) => {
                Err(no(Some("NONEXISTENT"), format!("no mailbox {from}")))
            }
            Err(StoreError::AlreadyExists(_)) => {
                Err(no(Some("ALREADYEXISTS"), format!("{to} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self, reference: &str, pattern: &str, lsub: bool) -> Outcome {
        let delimiter = QuotedChar::try_from(mailbox::DELIMITER).ok();
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            let data = Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: Mailbox::try_from("").map_err(bad)?,
            };
            return Ok(done(vec![data], "LIST completed"));
        }
        let full = format!("{reference}{pattern}");
        let boxes = self.mailboxes()?;
        let mut untagged = Vec::new();
        for b in &boxes {
            if !mailbox::wildcard_match(&full, &b.name) {
                continue;
            }
            let prefix = format!("{}{}", b.name, mailbox::DELIMITER);
            let children = boxes.iter().any(|o| o.name.starts_with(&prefix));
            let mut items = Vec::new();
            if b.no_select {
                items.push(FlagNameAttribute::Noselect);
            }
            items.push(attribute(if children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            if let Some(special) = b.special_use {
                items.push(attribute(special.attribute()));
            }
            let mailbox = Mailbox::try_from(b.name.clone()).map_err(bad)?;
            untagged.push(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            });
        }
        Ok(done(
            untagged,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
        ))
    }

    async fn status(&mut self, name: &str, items: &[StatusDataItemName]) -> Outcome {
        let info = self.lookup(name)?;
        let Some(target) = &info.target else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", info.name),
            ));
        };
        let login = self.agent()?.login.clone();
        let snapshot = self.snapshot(target).await?;
        let mut out = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => {
                    out.push(StatusDataItem::Messages(snapshot.entries.len() as u32))
                }
                StatusDataItemName::Recent => out.push(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => {
                    out.push(StatusDataItem::UidNext(nz(snapshot.uid_next)))
                }
                StatusDataItemName::UidValidity => {
                    out.push(StatusDataItem::UidValidity(nz(snapshot.uid_validity)))
                }
                StatusDataItemName::Unseen => {
                    let keys: Vec<MessageKey> =
                        snapshot.entries.iter().map(|(_, e)| e.message).collect();
                    let unseen = self
                        .ctx
                        .store
                        .flags_many(&login, &keys)?
                        .iter()
                        .filter(|f| !f.seen)
                        .count();
                    out.push(StatusDataItem::Unseen(unseen as u32));
                }
                _ => {}
            }
        }
        let data = Data::Status {
            mailbox: Mailbox::try_from(info.name.clone()).map_err(bad)?,
            items: Cow::Owned(out),
        };
        Ok(done(vec![data], "STATUS completed"))
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

/// Whether evaluating `key` needs the message bytes (headers, body or size), so flag
/// and UID searches never read a body.
fn needs_content(key: &SearchKey<'_>) -> bool {
    use SearchKey as K;
    match key {
        K::And(keys) => keys.as_ref().iter().any(needs_content),
        K::Not(k) => needs_content(k),
        K::Or(a, b) => needs_content(a) || needs_content(b),
        K::Bcc(_)
        | K::Body(_)
        | K::Cc(_)
        | K::From(_)
        | K::Header(..)
        | K::Larger(_)
        | K::SentBefore(_)
        | K::SentOn(_)
        | K::SentSince(_)
        | K::Smaller(_)
        | K::Subject(_)
        | K::Text(_)
        | K::To(_) => true,
        _ => false,
    }
}

/// Flags as `login` sees them: stored flags plus `$Replying` while a teammate has a
/// reply draft open for the conversation (derived presence, never stored).
fn shown_flags(
    ctx: &ImapContext,
    login: &str,
    entries: &[(u32, Entry)],
) -> Result<Vec<Flags>, StoreError> {
    let keys: Vec<MessageKey> = entries.iter().map(|(_, e)| e.message).collect();
    let mut flags = ctx.store.flags_many(login, &keys)?;
    for (f, (_, entry)) in flags.iter_mut().zip(entries) {
        add_presence(ctx, login, *entry, f);
    }
    Ok(flags)
}

fn shown_flag(ctx: &ImapContext, login: &str, entry: (u32, Entry)) -> Result<Flags, StoreError> {
    let mut f = ctx.store.flags(login, entry.1.message)?;
    add_presence(ctx, login, entry.1, &mut f);
    Ok(f)
}

fn add_presence(ctx: &ImapContext, login: &str, entry: Entry, flags: &mut Flags) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Some(conv) = entry.conversation
        && ctx.replying.others_replying(conv, login, now)
    {
        flags.keywords.insert(REPLYING.to_string());
    }
}

/// The presence keyword of SPEC §5.
const REPLYING: &str = "$Replying";

async fn ensure_folder(store: &Store, folder: &FolderId) -> Result<(), Refusal> {
    match store.folder_create(folder).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn done(untagged: Vec<Data<'static>>, text: impl Into<String>) -> Answer {
    let text: String = text.into();
    Answer {
        untagged,
        untagged_status: Vec::new(),
        status: Status::ok(None, None, text).unwrap_or_else(|_| fallback_ok()),
        after: After::Continue,
    }
}

/// Puts the tag on the final status, or turns a refusal into a tagged NO/BAD.
fn respond(tag: Tag<'static>, outcome: Outcome) -> Answer {
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

fn ok_code(code: Code<'static>) -> Status<'static> {
    Status::ok(None, Some(code), "ok").unwrap_or_else(|_| fallback_ok())
}

fn fallback_ok() -> Status<'static> {
    // Unwrap: a constant ASCII text always validates.
    Status::ok(None, None, "OK").expect("constant status text")
}

fn fallback_greeting() -> Greeting<'static> {
    // Unwrap: a constant ASCII text always validates.
    Greeting::ok(None, "teamgate IMAP ready").expect("constant greeting text")
}

fn bad<E: std::fmt::Display>(e: E) -> Refusal {
    Refusal::Bad(e.to_string())
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

fn wildcard(m: &ListMailbox<'_>) -> String {
    match m {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    }
}

fn attribute(name: &'static str) -> FlagNameAttribute<'static> {
    match Atom::try_from(name) {
        Ok(atom) => FlagNameAttribute::from(atom),
        Err(_) => FlagNameAttribute::Marked,
    }
}

fn keyword(name: &str) -> Flag<'static> {
    match Atom::try_from(name.to_string()) {
        Ok(atom) => Flag::Keyword(atom),
        Err(_) => Flag::Flagged,
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn seq_of(index: usize) -> NonZeroU32 {
    nz(u32::try_from(index + 1).unwrap_or(u32::MAX))
}

fn nstring(mut bytes: Vec<u8>) -> NString<'static> {
    // IMAP4rev1 literals cannot carry NUL (CRATES.md §2.7): the rare message with one is
    // served with NUL as a space.
    for b in &mut bytes {
        if *b == 0 {
            *b = b' ';
        }
    }
    match Literal::try_from(bytes) {
        Ok(lit) => NString(Some(IString::Literal(lit))),
        Err(_) => NString(Some(IString::Quoted(Quoted::unvalidated(Cow::Borrowed(
            "",
        ))))),
    }
}

fn internal_date(unix: i64) -> DateTime {
    let dt = chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .fixed_offset();
    DateTime::try_from(dt)
        .unwrap_or_else(|_| DateTime::unvalidated(chrono::DateTime::UNIX_EPOCH.fixed_offset()))
}

fn header_section() -> imap_codec::imap_types::fetch::Section<'static> {
    imap_codec::imap_types::fetch::Section::Header(None)
}

fn text_section() -> imap_codec::imap_types::fetch::Section<'static> {
    imap_codec::imap_types::fetch::Section::Text(None)
}

/// Whether `value` is named by the set (`*` = `largest`), without expanding ranges:
/// `1:4294967295` costs the same as `1`.
fn set_contains(set: &SequenceSet, value: u32, largest: u32) -> bool {
    let expand = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => expand(s) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (expand(a), expand(b));
            (a.min(b)..=a.max(b)).contains(&value)
        }
    })
}

fn flags_of(flags: &[Flag<'_>]) -> Flags {
    let mut out = Flags::default();
    for f in flags {
        match f {
            Flag::Seen => out.seen = true,
            Flag::Answered => out.answered = true,
            Flag::Flagged => out.flagged = true,
            Flag::Deleted => out.deleted = true,
            Flag::Draft => out.draft = true,
            Flag::Keyword(k) => {
                out.keywords.insert(k.as_ref().to_string());
            }
            Flag::Extension(_) => {}
        }
    }
    out
}

fn flag_list_plain(flags: &Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::new();
    if flags.seen {
        out.push(Flag::Seen);
    }
    if flags.answered {
        out.push(Flag::Answered);
    }
    if flags.flagged {
        out.push(Flag::Flagged);
    }
    if flags.deleted {
        out.push(Flag::Deleted);
    }
    if flags.draft {
        out.push(Flag::Draft);
    }
    out.extend(flags.keywords.iter().map(|k| keyword(k)));
    out
}

fn flag_list(flags: &Flags) -> Vec<FlagFetch<'static>> {
    flag_list_plain(flags)
        .into_iter()
        .map(FlagFetch::Flag)
        .collect()
}

/// COPYUID for the (source uid, destination uid) pairs, compressed into single values.
fn copy_uid_code(uid_validity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let uid_validity = NonZeroU32::new(uid_validity)?;
    let source: Vec<UidElement> = pairs
        .iter()
        .filter_map(|(s, _)| NonZeroU32::new(*s))
        .map(UidElement::Single)
        .collect();
    let destination: Vec<UidElement> = pairs
        .iter()
        .filter_map(|(_, d)| NonZeroU32::new(*d))
        .map(UidElement::Single)
        .collect();
    if source.len() != pairs.len() || destination.len() != pairs.len() {
        return None;
    }
    Some(Code::CopyUid {
        uid_validity,
        source: UidSet(Vec1::try_from(source).ok()?),
        destination: UidSet(Vec1::try_from(destination).ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_checked_without_expansion() {
        let set = SequenceSet::try_from("1:4294967295").unwrap();
        assert!(set_contains(&set, 7, 10));
        let set = SequenceSet::try_from("3,5:*").unwrap();
        assert!(!set_contains(&set, 4, 10));
        assert!(set_contains(&set, 10, 10));
        assert!(set_contains(&set, 5, 10));
        let set = SequenceSet::try_from("*:8").unwrap();
        assert!(set_contains(&set, 9, 10) && !set_contains(&set, 7, 10));
    }

    #[test]
    fn flags_round_trip() {
        let f = flags_of(&[
            Flag::Seen,
            Flag::Deleted,
            keyword("$Comment"),
            keyword("todo"),
        ]);
        assert!(f.seen && f.deleted && !f.answered);
        assert_eq!(flags_of(&flag_list_plain(&f)), f);
    }
}
