//! Agents' mail from the submission port (SPEC §6): checks the sender, finds the
//! conversation, guards against colliding replies, logs the reply (or internal comment)
//! in the conversation and on the recipients' contacts, delivers to other team inboxes
//! locally, and queues the rest for outbound delivery. The one place where submission
//! failures become SMTP replies.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use crate::{
    compose::{self, Command, ComposeError, Context, HeaderPlan, Prepared},
    config::Config,
    contacts,
    ingest::Ingest,
    mail::{envelope::Envelope, reply::Reply},
    message::{self, MessageFacts},
    reload::Reloadable,
    replying::Replying,
    store::{
        ContactTouch, ConversationAction, ConversationId, Delivery, DeliveryOutcome, Direction,
        FlagOp, Flags, IncomingMessage, MessageKey, OutboundMessage, Status, Store, ThreadDecision,
        ThreadKeys, ThreadRule, ThreadedBy, Threading, TimelineKind,
    },
};

/// Replies refused by the collision guard are forgotten after this many entries.
const MAX_REMEMBERED_COLLISIONS: usize = 10_000;

/// What recognises a "send again" after the collision guard refused a reply: the agent,
/// the conversation and the message being answered. Not the Message-ID: Thunderbird makes
/// a new one on every attempt from the same compose window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefusedReply {
    agent: String,
    conversation: ConversationId,
    /// The In-Reply-To, in index form.
    parent: String,
}

#[derive(Clone)]
pub struct Submit {
    store: Store,
    config: Arc<Reloadable<Config>>,
    ingest: Ingest,
    replying: Replying,
    /// Replies refused by the collision guard → when (unix seconds).
    refused: Arc<Mutex<HashMap<RefusedReply, i64>>>,
}

impl std::fmt::Debug for Submit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submit").finish_non_exhaustive()
    }
}

/// Where a submitted message goes.
#[derive(Debug, Default)]
struct Routing {
    /// Only the notes address: an internal comment.
    comment: bool,
    /// Team inboxes other than the sender's (a forward to another team), by address.
    local: Vec<String>,
    /// Everyone outside.
    external: Vec<String>,
}

impl Submit {
    pub fn new(
        store: Store,
        config: Arc<Reloadable<Config>>,
        ingest: Ingest,
        replying: Replying,
    ) -> Submit {
        Submit {
            store,
            config,
            ingest,
            replying,
            refused: Arc::default(),
        }
    }

    /// Handles one submitted message; the reply is the SMTP answer.
    pub async fn submit(&self, agent: &str, envelope: &Envelope, raw: Vec<u8>, now: i64) -> Reply {
        match self.process(agent, envelope, raw, now).await {
            Ok(text) => Reply::ok(text),
            Err(reply) => reply,
        }
    }

    async fn process(
        &self,
        agent: &str,
        envelope: &Envelope,
        raw: Vec<u8>,
        now: i64,
    ) -> Result<String, Reply> {
        let config = self.config.current();
        let (raw, facts) = analyze(raw, &envelope.mail_from).await?;
        let inbox = sending_inbox(&config, agent, &facts)?;
        let routing = route(&config, envelope, &inbox)?;
        let found = self.find_conversation(&inbox, &facts)?;
        let conversation = found.as_ref().map(|(c, _)| *c);

        if !routing.comment
            && let Some(conv) = conversation
        {
            self.collision_guard(
                agent,
                conv,
                &facts,
                now,
                config.workflow.collision_window.as_secs() as i64,
            )?;
        }

        // Commands, placeholders, snippets and our headers: all or nothing.
        let prepared = self
            .compose(agent, &config, &facts, conversation, raw)
            .await?;
        self.check_commands(&config, &inbox, &prepared, &facts)?;
        let note = routing.comment || prepared.commands.contains(&Command::Note);
        if prepared.only_commands && !note {
            let conv = conversation.ok_or_else(|| {
                Reply::new(
                    550,
                    (5, 5, 4),
                    "Email commands need a conversation: reply to one",
                )
            })?;
            let done = self
                .run_commands(agent, conv, &prepared.commands, &facts)
                .await?;
            return Ok(format!("Commands carried out on #{}; nothing sent", done.0));
        }
        let (raw, facts) = analyze(prepared.raw, &envelope.mail_from).await?;
        let direction = if note {
            Direction::Comment
        } else {
            Direction::Out
        };
        let rcpts: Vec<String> = envelope.rcpts.iter().map(|r| r.address.clone()).collect();
        let (conv, message) = match self
            .log(
                agent,
                &inbox,
                &facts,
                raw.clone(),
                direction,
                found,
                &envelope.mail_from,
                rcpts,
                now,
            )
            .await?
        {
            Logged::New(conv, key) => (conv, key),
            Logged::Duplicate(conv) => {
                // A resend after a temporary failure: the message was logged but may not
                // have been queued (that is why the client got a 4xx). Finish the job,
                // unless it is already waiting in the queue.
                let message_id = facts.message_id.clone().unwrap_or_default();
                let queued = self
                    .store
                    .queue_list()
                    .map_err(|_| Reply::local_error())?
                    .iter()
                    .any(|q| q.message_id.eq_ignore_ascii_case(&message_id));
                if !routing.external.is_empty() && !queued && !note {
                    let id = self
                        .enqueue(agent, envelope, &routing, raw, &facts, conv)
                        .await?;
                    return Ok(format!(
                        "Logged in #{} earlier; now queued as {}",
                        conv.0, id.0
                    ));
                }
                return Ok(format!(
                    "Already logged in #{} (duplicate Message-ID)",
                    conv.0
                ));
            }
        };
        self.run_commands(agent, conv, &prepared.commands, &facts)
            .await?;

        if note {
            // An internal comment never leaves the machine (SPEC §6).
            let comment = Flags {
                keywords: BTreeSet::from(["$Comment".to_string()]),
                ..Flags::default()
            };
            self.store
                .store_flags(agent, vec![message], FlagOp::Add, comment)
                .await
                .map_err(|_| Reply::local_error())?;
            return Ok(format!("Internal comment logged in #{}", conv.0));
        }

        // The conversation's inbound messages are answered now (a shared flag), and the
        // agent is no longer "replying" to it.
        self.mark_answered(agent, conv).await;
        self.replying.replied(conv, agent);
        if self
            .store
            .conversation_info(conv)
            .ok()
            .flatten()
            .is_some_and(|c| c.status == Status::Trash)
        {
            let _ = self
                .store
                .conversation_action(conv, ConversationAction::SetStatus(Status::Open))
                .await;
        }
        for address in &routing.local {
            self.forward_locally(address, &facts, &raw, now).await?;
        }
        if !routing.external.is_empty() {
            let id = self
                .enqueue(agent, envelope, &routing, raw, &facts, conv)
                .await?;
            return Ok(format!(
                "Logged in #{}, queued as {} for {} recipient(s)",
                conv.0,
                id.0,
                routing.external.len()
            ));
        }
        Ok(format!(
            "Logged in #{}; {} outside recipient(s)",
            conv.0,
            routing.external.len()
        ))
    }

    /// Queues the reply for its outside recipients; durable before the 250 (the worker
    /// wakes on enqueue).
    async fn enqueue(
        &self,
        agent: &str,
        envelope: &Envelope,
        routing: &Routing,
        raw: Vec<u8>,
        facts: &MessageFacts,
        conv: ConversationId,
    ) -> Result<crate::store::QueueId, Reply> {
        let outgoing = OutboundMessage {
            raw,
            mail_from: envelope.mail_from.clone(),
            recipients: routing.external.clone(),
            message_id: facts.message_id.clone().unwrap_or_default(),
            conversation: Some(conv),
            agent: agent.to_string(),
        };
        self.store.enqueue(outgoing).await.map_err(|e| {
            tracing::warn!(error = %e, "reply logged but not queued");
            Reply::local_error()
        })
    }

    /// Runs the reply through `compose`: email commands found and stripped, placeholders
    /// and snippets expanded, subject tag, Thread-Index and X-Loop set.
    async fn compose(
        &self,
        agent: &str,
        config: &Config,
        facts: &MessageFacts,
        conversation: Option<ConversationId>,
        raw: Vec<u8>,
    ) -> Result<Prepared, Reply> {
        let customer = conversation
            .and_then(|c| self.store.conversation_info(c).ok().flatten())
            .and_then(|i| i.customer);
        let contact_email = customer.or_else(|| facts.to.first().map(|a| a.email.clone()));
        let contact_name = contact_email
            .as_deref()
            .and_then(|e| self.store.contact(e).ok().flatten())
            .and_then(|c| c.contact.name)
            .or_else(|| facts.to.first().and_then(|a| a.name.clone()));
        let agent_name = config
            .agent(agent)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| agent.to_string());
        let thread_index = match conversation {
            Some(c) => self.conversation_thread_key(c).await,
            None => None,
        };
        let subject_tag = if config.workflow.subject_tag {
            conversation.map(|c| c.0)
        } else {
            None
        };
        let snippets_dir = config.workflow.snippets_dir.clone();
        let hostname = config.server.hostname.clone();
        let number = conversation.map(|c| c.0);
        // Snippets are files and the rewrite is CPU work on client bytes: off the async threads.
        let prepared = tokio::task::spawn_blocking(move || {
            let snippets =
                |name: &str| std::fs::read_to_string(snippets_dir.join(format!("{name}.txt"))).ok();
            let ctx = Context {
                contact_name: contact_name.as_deref(),
                contact_email: contact_email.as_deref(),
                agent_name: &agent_name,
                conversation: number,
                snippets: &snippets,
            };
            let plan = HeaderPlan {
                subject_tag,
                thread_index: thread_index.as_deref(),
                x_loop: &hostname,
                references: None,
            };
            compose::prepare(&raw, &ctx, &plan)
        })
        .await
        .map_err(|_| Reply::local_error())?;
        prepared.map_err(|e| match e {
            ComposeError::UnknownCommand(_) => Reply::new(550, (5, 5, 4), format!("Refused: {e}")),
            _ => Reply::new(550, (5, 6, 0), format!("Refused, nothing was sent: {e}")),
        })
    }

    /// The Outlook thread key of the conversation (from the first message carrying one).
    async fn conversation_thread_key(&self, conv: ConversationId) -> Option<Vec<u8>> {
        let keys = self.store.message_keys(conv).ok()?;
        for key in keys.into_iter().take(8) {
            let raw = self.store.read_message(key).ok()?;
            let facts =
                tokio::task::spawn_blocking(move || message::analyze(&raw, "x@localhost").ok())
                    .await
                    .ok()??;
            if facts.thread_index.is_some() {
                return facts.thread_index;
            }
        }
        None
    }

    /// `#assign LOGIN` must name a member of the inbox, `#merge N` a conversation of it,
    /// and `#split` goes alone, in a reply naming the message to split from (what it
    /// would send would carry the old conversation's tag); checked before anything
    /// happens.
    fn check_commands(
        &self,
        config: &Config,
        inbox: &str,
        prepared: &crate::compose::Prepared,
        facts: &MessageFacts,
    ) -> Result<(), Reply> {
        let refuse = |why: String| Err(Reply::new(550, (5, 5, 4), why));
        for c in &prepared.commands {
            if let Command::Merge(n) = c {
                let info = self
                    .store
                    .conversation(ConversationId(*n))
                    .map_err(|_| Reply::local_error())?;
                let usable = info.as_ref().is_some_and(|d| {
                    d.conversation.inbox == inbox && d.merged_into.is_none() && !d.junk
                });
                if !usable {
                    return refuse(format!("#merge {n}: no such conversation in inbox {inbox}"));
                }
            }
            if *c == Command::Split {
                if !prepared.only_commands {
                    return refuse("#split goes alone: send it with no text, then write".into());
                }
                if facts.in_reply_to.is_empty() {
                    return refuse("#split: reply to the message to split from".into());
                }
            }
            if let Command::Assign(login) = c {
                let member = config
                    .inbox(inbox)
                    .is_some_and(|i| i.members.iter().any(|m| m.eq_ignore_ascii_case(login)));
                if !member {
                    return Err(Reply::new(
                        550,
                        (5, 5, 4),
                        format!("#assign {login}: not a member of inbox {inbox}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Carries out the commands in order; returns the conversation the reply is in
    /// after them (a `#split` moves it to the new one).
    async fn run_commands(
        &self,
        agent: &str,
        mut conv: ConversationId,
        commands: &[Command],
        facts: &MessageFacts,
    ) -> Result<ConversationId, Reply> {
        let config = self.config.current();
        for c in commands {
            let action = match c {
                Command::Merge(n) => {
                    self.store
                        .merge_conversations(conv, ConversationId(*n))
                        .await
                        .map_err(|e| refused(&format!("#merge {n}"), e))?;
                    tracing::info!(%agent, conversation = conv.0, merged = n, "email command");
                    continue;
                }
                Command::Split => {
                    let at = facts.in_reply_to.first().map_or("", String::as_str);
                    conv = self
                        .store
                        .split_conversation(conv, at)
                        .await
                        .map_err(|e| refused("#split", e))?;
                    tracing::info!(%agent, conversation = conv.0, "email command: split");
                    continue;
                }
                Command::Assign(login) => {
                    let login = config
                        .agents
                        .iter()
                        .find(|a| a.login.eq_ignore_ascii_case(login))
                        .map(|a| a.login.clone())
                        .unwrap_or_else(|| login.clone());
                    ConversationAction::Assign(Some(login))
                }
                Command::Unassign => ConversationAction::Assign(None),
                Command::Close => ConversationAction::SetStatus(Status::Closed),
                Command::Note => continue,
            };
            self.store
                .conversation_action(conv, action)
                .await
                .map_err(|_| Reply::local_error())?;
            tracing::info!(%agent, conversation = conv.0, command = ?c, "email command");
        }
        Ok(conv)
    }

    /// The message of `conv` with this Message-ID (the one logged when it was sent).
    fn logged_copy(&self, conv: ConversationId, id: &str) -> Result<Option<MessageKey>, Reply> {
        let keys = self
            .store
            .message_keys(conv)
            .map_err(|_| Reply::local_error())?;
        for key in keys {
            if self
                .store
                .message_meta(key)
                .map_err(|_| Reply::local_error())?
                .is_some_and(|m| m.message_id.eq_ignore_ascii_case(id))
            {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The copy of a sent message a client APPENDs to `Sent`: recognised by Message-ID
    /// when it was submitted here (not stored twice); otherwise logged as sent by the
    /// agent, without sending it. Returns the stored message, which for a recognised copy
    /// is the message as it was sent (with teamgate's `[#n]` tag, `X-Loop`, …), not the
    /// appended bytes, and whether it was recognised.
    pub async fn record_sent_copy(
        &self,
        agent: &str,
        raw: Vec<u8>,
        now: i64,
    ) -> Result<(MessageKey, bool), Reply> {
        let config = self.config.current();
        let (raw, facts) = analyze(raw, "").await?;
        let inbox = sending_inbox(&config, agent, &facts)?;
        if let Some(id) = &facts.message_id
            && let Some(conv) = self
                .store
                .conversation_for_message(&inbox, id)
                .map_err(|_| Reply::local_error())?
            && let Some(key) = self.logged_copy(conv, id)?
        {
            return Ok((key, true));
        }
        let found = self.find_conversation(&inbox, &facts)?;
        let rcpts = facts
            .to
            .iter()
            .chain(&facts.cc)
            .map(|a| a.email.clone())
            .collect();
        let from = facts
            .from
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default();
        match self
            .log(
                agent,
                &inbox,
                &facts,
                raw,
                Direction::Out,
                found,
                &from,
                rcpts,
                now,
            )
            .await?
        {
            Logged::New(_, key) => Ok((key, false)),
            // Logged meanwhile: the copy with its Message-ID, not just any message.
            Logged::Duplicate(conv) => facts
                .message_id
                .as_deref()
                .map(|id| self.logged_copy(conv, id))
                .transpose()?
                .flatten()
                .map(|key| (key, true))
                .ok_or_else(Reply::local_error),
        }
    }

    /// The conversation a reply draft answers, in any of the agent's inboxes.
    pub async fn draft_conversation(&self, agent: &str, raw: Vec<u8>) -> Option<ConversationId> {
        let config = self.config.current();
        let (_, facts) = analyze(raw, "").await.ok()?;
        config
            .inboxes
            .iter()
            .filter(|i| i.members.iter().any(|m| m == agent))
            .find_map(|i| self.find_conversation(&i.name, &facts).ok().flatten())
            .map(|(c, _)| c)
    }

    /// Stores an agent's message in its conversation (or a new one), durably.
    #[allow(clippy::too_many_arguments)]
    async fn log(
        &self,
        agent: &str,
        inbox: &str,
        facts: &MessageFacts,
        raw: Vec<u8>,
        direction: Direction,
        conversation: Option<(ConversationId, ThreadedBy)>,
        mail_from: &str,
        rcpts: Vec<String>,
        now: i64,
    ) -> Result<Logged, Reply> {
        let hostname = self.config.current().server.hostname.clone();
        let digest = message::content_digest(facts, &raw);
        let synthesized = format!("teamgate.{digest}@{hostname}");
        let mut summary = message::summary(facts, direction, &synthesized);
        summary.digest = Some(digest);
        summary.author = Some(agent.to_string());
        let threading = match conversation {
            Some((c, by)) => Threading {
                decision: ThreadDecision::Join(c),
                by,
            },
            None => Threading::new_conversation(None, "an agent's new message"),
        };
        let delivery = Delivery {
            inbox: inbox.to_string(),
            decide: Box::new(move |_| threading.clone()),
            keys: ThreadKeys {
                thread_index: facts.thread_index.clone(),
                ..ThreadKeys::default()
            },
            contacts: outbound_touches(facts, direction),
        };
        let incoming = IncomingMessage {
            raw,
            received_at: now,
            mail_from: mail_from.to_string(),
            rcpts,
            summary,
            deliveries: vec![delivery],
            quarantined: None,
        };
        let outcome = self.store.ingest(incoming).await.map_err(|e| {
            tracing::warn!(error = %e, "agent's message not stored");
            Reply::local_error()
        })?;
        match (outcome.deliveries.first(), outcome.message) {
            (Some((_, DeliveryOutcome::Stored { conversation, .. })), Some(key)) => {
                Ok(Logged::New(*conversation, key))
            }
            (Some((_, DeliveryOutcome::Duplicate { conversation })), _) => {
                Ok(Logged::Duplicate(*conversation))
            }
            _ => Err(Reply::local_error()),
        }
    }

    /// The conversation a reply belongs to: In-Reply-To/References naming one of this
    /// inbox's messages, else a `[#n]` tag naming one of its conversations. Only one the
    /// inbox holds now: a conversation transferred away still threads its customer's
    /// mail (SPEC §4), but the old inbox's members no longer see it, so their replies,
    /// notes and email commands must not land in it.
    fn find_conversation(
        &self,
        inbox: &str,
        facts: &MessageFacts,
    ) -> Result<Option<(ConversationId, ThreadedBy)>, Reply> {
        let held = |c: ConversationId| -> Result<bool, Reply> {
            let info = self
                .store
                .conversation_info(c)
                .map_err(|_| Reply::local_error())?;
            Ok(info.is_some_and(|i| i.inbox == inbox))
        };
        let named = (facts
            .in_reply_to
            .iter()
            .map(|id| (ThreadRule::InReplyTo, id)))
        .chain(
            facts
                .references
                .iter()
                .rev()
                .map(|id| (ThreadRule::References, id)),
        );
        for (rule, id) in named {
            if let Some(c) = self
                .store
                .conversation_for_message(inbox, id)
                .map_err(|_| Reply::local_error())?
                && held(c)?
            {
                return Ok(Some((c, ThreadedBy::new(rule, format!("<{id}>")))));
            }
        }
        if let Some(n) = facts.subject_tag
            && held(ConversationId(n))?
        {
            return Ok(Some((
                ConversationId(n),
                ThreadedBy::new(ThreadRule::Tag, format!("[#{n}]")),
            )));
        }
        Ok(None)
    }

    /// SPEC §6: a teammate's reply went out after the message being answered → refuse
    /// once with 450; the same agent answering the same message of the same conversation
    /// again within the window goes through.
    fn collision_guard(
        &self,
        agent: &str,
        conv: ConversationId,
        facts: &MessageFacts,
        now: i64,
        window: i64,
    ) -> Result<(), Reply> {
        let Some(parent) = facts.in_reply_to.first() else {
            return Ok(());
        };
        let attempt = RefusedReply {
            agent: agent.to_owned(),
            conversation: conv,
            parent: crate::mail::message_id::index_form(parent),
        };
        {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = refused.get(&attempt)
                && now - at <= window
            {
                refused.remove(&attempt);
                return Ok(());
            }
        }
        let keys = self
            .store
            .message_keys(conv)
            .map_err(|_| Reply::local_error())?;
        let metas: Vec<_> = keys
            .iter()
            .filter_map(|k| self.store.message_meta(*k).ok().flatten())
            .collect();
        // Arrival order, not clock seconds: a teammate may answer within the same second.
        let Some(parent_at) = metas
            .iter()
            .position(|m| m.message_id.eq_ignore_ascii_case(parent))
        else {
            return Ok(());
        };
        let newer = metas[parent_at + 1..].iter().rfind(|m| {
            m.direction == Direction::Out && m.author.as_deref().is_some_and(|a| a != agent)
        });
        if let Some(reply) = newer {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if refused.len() >= MAX_REMEMBERED_COLLISIONS {
                refused.retain(|_, at| now - *at <= window);
            }
            refused.insert(attempt, now);
            let who = reply.author.clone().unwrap_or_default();
            let when = time::OffsetDateTime::from_unix_timestamp(reply.received_at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            return Err(Reply::new(
                450,
                (4, 7, 1),
                format!("{who} already replied at {when}; send again to reply anyway"),
            ));
        }
        Ok(())
    }

    async fn mark_answered(&self, agent: &str, conv: ConversationId) {
        let Ok(keys) = self.store.message_keys(conv) else {
            return;
        };
        let inbound: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                self.store
                    .message_meta(*k)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.direction == Direction::In)
            })
            .collect();
        let answered = Flags {
            answered: true,
            ..Flags::default()
        };
        if let Err(e) = self
            .store
            .store_flags(agent, inbound, FlagOp::Add, answered)
            .await
        {
            tracing::warn!(error = %e, "could not mark the conversation answered");
        }
    }

    /// Mail to another team's address: delivered into that inbox locally, as inbound
    /// mail from the sending inbox (so forward detection credits the original sender).
    async fn forward_locally(
        &self,
        address: &str,
        facts: &MessageFacts,
        raw: &[u8],
        now: i64,
    ) -> Result<(), Reply> {
        let config = self.config.current();
        let Some((inbox, tag)) = config.inbox_for_address(address) else {
            return Ok(());
        };
        let envelope = Envelope {
            mail_from: facts
                .from
                .as_ref()
                .map(|a| a.email.clone())
                .unwrap_or_default(),
            rcpts: vec![crate::mail::envelope::Recipient {
                address: address.to_string(),
                inbox: Some(inbox.name.clone()),
                tag,
            }],
            smtputf8: true,
        };
        self.ingest
            .deliver(&envelope, raw.to_vec(), "", None, now)
            .await
            .map(|_| ())
            .map_err(|e| e.reply())
    }
}

enum Logged {
    New(ConversationId, MessageKey),
    Duplicate(ConversationId),
}

/// A store refusal of an email command, as the agent should read it.
fn refused(command: &str, e: crate::store::StoreError) -> Reply {
    match e {
        crate::store::StoreError::InvalidInput(why) | crate::store::StoreError::NotFound(why) => {
            Reply::new(550, (5, 5, 4), format!("{command}: {why}"))
        }
        _ => Reply::local_error(),
    }
}

/// Parses an agent's message off the async threads (it is still peer input).
async fn analyze(raw: Vec<u8>, sender: &str) -> Result<(Vec<u8>, MessageFacts), Reply> {
    let sender = sender.to_string();
    let (raw, facts) = tokio::task::spawn_blocking(move || {
        let facts = std::panic::catch_unwind(|| message::analyze(&raw, &sender));
        (raw, facts)
    })
    .await
    .map_err(|_| Reply::local_error())?;
    match facts {
        Ok(Ok(f)) => Ok((raw, f)),
        Ok(Err(e)) => Err(Reply::new(550, (5, 6, 0), format!("Message refused: {e}"))),
        Err(_) => Err(Reply::local_error()),
    }
}

/// The inbox an agent's message is sent from: its From header, like the envelope
/// sender, must be an address of one of the agent's inboxes.
fn sending_inbox(config: &Config, agent: &str, facts: &MessageFacts) -> Result<String, Reply> {
    let from = facts
        .from
        .as_ref()
        .map(|a| a.email.clone())
        .unwrap_or_default();
    if let Err(why) = crate::auth::sender_allowed(config, agent, &from) {
        return Err(Reply::new(550, (5, 7, 1), format!("From: {why}")));
    }
    config
        .inbox_for_address(&from)
        .map(|(inbox, _)| inbox.name.clone())
        .ok_or_else(|| Reply::new(550, (5, 7, 1), "From is not a team address"))
}

/// Splits the recipients; a comment must go to the notes address alone (SPEC §6), so a
/// note never leaks to a customer.
fn route(config: &Config, envelope: &Envelope, own_inbox: &str) -> Result<Routing, Reply> {
    let notes = config.workflow.notes_address.to_ascii_lowercase();
    let mut routing = Routing::default();
    let mut has_notes = false;
    for r in &envelope.rcpts {
        if r.address.eq_ignore_ascii_case(&notes) {
            has_notes = true;
        } else if let Some(inbox) = &r.inbox {
            if inbox != own_inbox {
                routing.local.push(r.address.clone());
            }
        } else {
            routing.external.push(r.address.clone());
        }
    }
    if has_notes && (!routing.local.is_empty() || !routing.external.is_empty()) {
        return Err(Reply::new(
            550,
            (5, 7, 1),
            format!(
                "{notes} (internal notes) must be the only recipient; a note never goes to anyone else"
            ),
        ));
    }
    routing.comment = has_notes;
    Ok(routing)
}

/// Each recipient of a reply becomes or updates a contact, with the message and its
/// attachments on the timeline (SPEC §6). Team addresses and system senders never do.
fn outbound_touches(facts: &MessageFacts, direction: Direction) -> Vec<ContactTouch> {
    if direction == Direction::Comment {
        return Vec::new();
    }
    let mut out: Vec<ContactTouch> = Vec::new();
    for a in facts.to.iter().chain(&facts.cc) {
        if crate::mail::address::is_system_sender(&a.email)
            || out.iter().any(|t| t.email == a.email)
        {
            continue;
        }
        let mut events = vec![(TimelineKind::Outbound, facts.subject.clone())];
        events.extend(contacts::attachment_events(facts));
        out.push(ContactTouch {
            email: a.email.clone(),
            name: a.name.clone(),
            is_customer: out.is_empty(),
            events,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mail::envelope::Recipient;

    fn rcpt(address: &str, inbox: Option<&str>) -> Recipient {
        Recipient {
            address: address.into(),
            inbox: inbox.map(Into::into),
            tag: None,
        }
    }

    #[test]
    fn notes_must_be_alone() {
        let config = Config::for_tests(Path::new("/tmp/x"));
        let notes = config.workflow.notes_address.clone();
        let env = Envelope {
            mail_from: "support@example.test".into(),
            rcpts: vec![rcpt(&notes, None)],
            smtputf8: false,
        };
        assert!(route(&config, &env, "Support").unwrap().comment);
        let mixed = Envelope {
            mail_from: "support@example.test".into(),
            rcpts: vec![rcpt(&notes, None), rcpt("jane@customer.example", None)],
            smtputf8: false,
        };
        let refused = route(&config, &mixed, "Support").unwrap_err();
        assert_eq!((refused.code, refused.status), (550, (5, 7, 1)));
        let forward = Envelope {
            mail_from: "support@example.test".into(),
            rcpts: vec![
                rcpt("sales@example.test", Some("Sales")),
                rcpt("jane@customer.example", None),
            ],
            smtputf8: false,
        };
        let r = route(&config, &forward, "Support").unwrap();
        assert_eq!((r.local.len(), r.external.len(), r.comment), (1, 1, false));
    }
}
