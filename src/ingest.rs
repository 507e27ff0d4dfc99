//! The pipeline for an accepted message: filters (sender authentication, spam,
//! attachments) → parse → decide conversations per inbox → contacts → one durable store
//! write; or Junk, or the conversation copy with quarantined parts replaced. Also the one
//! place where ingest failures become SMTP replies.

use std::{collections::BTreeMap, fmt, net::IpAddr, sync::Arc};

use crate::{
    config::Config,
    contacts,
    filter::{
        AgentIdentity, AttachmentHit, FilterError, FilterInput, Filters, Verdict, strip_parts,
    },
    mail::{
        envelope::{Envelope, Recipient},
        reply::Reply,
    },
    message::{self, MessageFacts},
    metrics::Metrics,
    reload::Reloadable,
    store::{
        ConversationId, Delivery, DeliveryOutcome, Direction, IncomingMessage, IngestOutcome,
        JunkId, LearnClass, MessageKey, MessageSummary, NewJunk, QuarantineHit,
        QuarantinedOriginal, Status, Store, StoreError, ThreadLookup, Threading,
    },
    threading::{self, ThreadInput},
};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    FilterDown(#[from] FilterError),
    #[error("unparseable message: {0}")]
    Unparseable(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("message analysis failed: {0}")]
    Analysis(String),
}

impl IngestError {
    /// The SMTP answer for this failure. Internals never leak to the peer.
    pub fn reply(&self) -> Reply {
        match self {
            IngestError::Unparseable(why) => {
                Reply::new(550, (5, 6, 0), format!("Message refused: {why}"))
            }
            IngestError::FilterDown(e) => e.reply(),
            IngestError::Store(_) | IngestError::Analysis(_) => Reply::local_error(),
        }
    }

    /// Peer faults log at info, ours at warn.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, IngestError::Unparseable(_))
    }
}

/// What a stored message became, for the `250` text and the log.
#[derive(Debug)]
pub enum Accepted {
    Stored(IngestOutcome),
    /// Judged spam: kept in Junk (one record per inbox).
    Junk(Vec<JunkId>),
}

impl Accepted {
    /// The stored message (None for junk or an all-duplicate delivery).
    pub fn message(&self) -> Option<MessageKey> {
        match self {
            Accepted::Stored(o) => o.message,
            Accepted::Junk(_) => None,
        }
    }
}

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self {
            Accepted::Stored(o) => o,
            Accepted::Junk(ids) => return write!(f, "filed as junk ({} inbox(es))", ids.len()),
        };
        let mut first = true;
        for (inbox, outcome) in &outcome.deliveries {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match outcome {
                DeliveryOutcome::Stored { conversation, .. } => {
                    write!(f, "{inbox} #{}", conversation.0)?
                }
                DeliveryOutcome::Duplicate { conversation } => {
                    write!(f, "{inbox} #{} (duplicate)", conversation.0)?
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Ingest {
    store: Store,
    config: Arc<Reloadable<Config>>,
    /// Rebuilt on SIGHUP with the config.
    filters: Arc<Reloadable<Filters>>,
    /// Counts junk and quarantined attachments once they are stored.
    metrics: Metrics,
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(
        store: Store,
        config: Arc<Reloadable<Config>>,
        filters: Arc<Reloadable<Filters>>,
    ) -> Ingest {
        Ingest {
            store,
            config,
            filters,
            metrics: Metrics::default(),
        }
    }

    /// Reports junk and quarantine decisions to the daemon's metrics.
    pub fn with_metrics(self, metrics: Metrics) -> Ingest {
        Ingest { metrics, ..self }
    }

    /// Filters, then stores a message for every inbox of the envelope; returns only once
    /// it is durable. `trace` is our `Received:` header (prepended with the
    /// `Authentication-Results:` of the checks); `origin` is the SMTP client, or `None`
    /// for mail an agent brings in (IMAP intake, a forward to another team, a release
    /// from Junk), which is not judged as spam but still meets the attachment policy.
    pub async fn deliver(
        &self,
        envelope: &Envelope,
        body: Vec<u8>,
        trace: &str,
        origin: Option<Origin<'_>>,
        received_at: i64,
    ) -> Result<Accepted, IngestError> {
        let config = self.config.current();
        let filters = self.filters.current();
        let mut raw = Vec::with_capacity(body.len() + trace.len() + 256);
        raw.extend_from_slice(trace.as_bytes());
        let trace_len = raw.len();
        raw.extend_from_slice(&body);
        drop(body);
        // No fact depends on the Authentication-Results field, so the message is read
        // before the filters, which need to know whether it reports on our own mail.
        let (mut raw, facts) = analyze(raw, &envelope.mail_from).await?;
        let team: Arc<[String]> = config
            .inboxes
            .iter()
            .flat_map(|i| i.addresses.iter().cloned())
            .collect();
        let message = raw.get(trace_len..).unwrap_or_default();
        let (verdict, authentication_results) = match origin {
            Some(origin) => {
                let own_mail_report = self.reports_on_our_mail(&facts, envelope)?;
                if own_mail_report {
                    self.metrics.report_not_judged();
                }
                let agents: Vec<AgentIdentity> = config
                    .agents
                    .iter()
                    .map(|a| AgentIdentity {
                        name: a.name.clone(),
                        email: a.email.clone(),
                    })
                    .collect();
                let input = FilterInput {
                    // With our Received field: SpamAssassin finds the SMTP client there (the
                    // last untrusted relay, for its network tests), as behind any MTA.
                    raw: &raw,
                    peer_ip: origin.peer,
                    helo: origin.helo,
                    mail_from: &envelope.mail_from,
                    team_addresses: &team,
                    hostname: &config.server.hostname,
                    agents: &agents,
                    own_mail_report,
                };
                let outcome = filters.check(&input).await?;
                (outcome.verdict, outcome.authentication_results)
            }
            None => (filters.check_attachments(message).await?, String::new()),
        };
        raw.splice(0..0, authentication_results.bytes());
        let header_len = trace_len + authentication_results.len();

        let digest = message::content_digest(&facts, raw.get(header_len..).unwrap_or_default());
        // Named by its content: a retry of a message without a Message-ID is the same
        // message, two different ones never share a name.
        let synthesized = format!("teamgate.{digest}@{}", config.server.hostname);
        let mut summary = message::summary(&facts, Direction::In, &synthesized);
        summary.digest = Some(digest);
        // Our own X-Loop coming back (a customer's auto-responder quoting our reply, a
        // forwarding loop): filed, but treated as automatic so nothing reacts to it.
        if facts
            .x_loop
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(&config.server.hostname))
        {
            summary.automatic = true;
        }
        let rcpts: Vec<String> = envelope.rcpts.iter().map(|r| r.address.clone()).collect();

        let mut quarantined = None;
        let mut causes: Vec<&'static str> = Vec::new();
        let mut stored_raw = raw;
        match verdict {
            Verdict::Junk {
                score,
                reason,
                findings,
                hits,
            } => {
                // Spam: kept in Junk, per inbox; no conversation, no contact. Dangerous
                // parts are replaced there too (agents open Junk to find mistakes); the
                // original is kept for a release, which checks it again.
                let original = if hits.is_empty() {
                    None
                } else {
                    let stripped = replace_parts(&stored_raw, header_len, &hits);
                    mark_quarantined(&mut summary, &hits);
                    Some(std::mem::replace(&mut stored_raw, stripped))
                };
                let mut ids = Vec::new();
                for inbox in inbox_deliveries(envelope).into_keys() {
                    let junk = NewJunk {
                        raw: stored_raw.clone(),
                        received_at,
                        mail_from: envelope.mail_from.clone(),
                        rcpts: rcpts.clone(),
                        inbox,
                        summary: summary.clone(),
                        score,
                        reason: reason.clone(),
                        original: original.clone(),
                    };
                    ids.push(self.store.junk(junk).await?);
                }
                // One count per message, by the rule that weighed most.
                let strongest = findings
                    .iter()
                    .filter(|f| f.score > 0.0)
                    .max_by(|a, b| a.score.total_cmp(&b.score))
                    .map_or("score", |f| f.rule);
                self.metrics.junk(strongest);
                for hit in &hits {
                    self.metrics.quarantined(hit.cause.as_str());
                }
                return Ok(Accepted::Junk(ids));
            }
            Verdict::Quarantine { hits } => {
                // The conversation gets the message with those parts replaced by a notice;
                // the original is kept whole in quarantine (SPEC §7).
                let stripped = replace_parts(&stored_raw, header_len, &hits);
                mark_quarantined(&mut summary, &hits);
                causes = hits.iter().map(|h| h.cause.as_str()).collect();
                quarantined = Some(QuarantinedOriginal {
                    raw: std::mem::replace(&mut stored_raw, stripped),
                    hits: hits
                        .into_iter()
                        .map(|h| QuarantineHit {
                            filename: h.filename,
                            reason: h.reason,
                        })
                        .collect(),
                });
            }
            Verdict::Accept => {}
        }

        let facts = Arc::new(facts);
        let deliveries = inbox_deliveries(envelope)
            .into_iter()
            .map(|(inbox, plus)| {
                let from_other_inbox = facts
                    .from
                    .as_ref()
                    .and_then(|a| config.inbox_for_address(&a.email))
                    .is_some_and(|(sender_inbox, _)| sender_inbox.name != inbox);
                let route = Route {
                    inbox,
                    plus_conversation: plus,
                    from_other_inbox,
                };
                delivery(route, facts.clone(), team.clone(), received_at)
            })
            .collect();
        let incoming = IncomingMessage {
            raw: stored_raw,
            received_at,
            mail_from: envelope.mail_from.clone(),
            rcpts,
            summary,
            deliveries,
            quarantined,
        };
        let outcome = self.store.ingest(incoming).await?;
        for cause in causes {
            self.metrics.quarantined(cause);
        }
        Ok(Accepted::Stored(outcome))
    }

    /// "Not spam": a junk message goes through threading like any mail (moving it out of
    /// Junk in IMAP, or `teamgate junk release`), and leaves Junk. The message as received
    /// meets the attachment policy again (clamd may know more by now), so nothing leaves
    /// Junk with a dangerous part in place. Taught to spamd as ham when learning is on.
    pub async fn release_junk(&self, id: JunkId) -> Result<Accepted, IngestError> {
        let item = self
            .store
            .junk_item(id)?
            .ok_or_else(|| IngestError::Unparseable(format!("no junk message {}", id.0)))?;
        let raw = self
            .store
            .read_message(item.original.unwrap_or(item.message))?;
        let config = self.config.current();
        let rcpts: Vec<Recipient> = item
            .rcpts
            .iter()
            .filter_map(|r| {
                let (inbox, tag) = config.inbox_for_address(r)?;
                (inbox.name == item.json.inbox).then(|| Recipient {
                    address: r.clone(),
                    inbox: Some(inbox.name.clone()),
                    tag,
                })
            })
            .collect();
        let rcpts = if rcpts.is_empty() {
            let address = config
                .inbox(&item.json.inbox)
                .and_then(|i| i.addresses.first().cloned())
                .unwrap_or_default();
            vec![Recipient {
                address,
                inbox: Some(item.json.inbox.clone()),
                tag: None,
            }]
        } else {
            rcpts
        };
        let envelope = Envelope {
            mail_from: item.mail_from.clone(),
            rcpts,
            smtputf8: true,
        };
        // Already carrying its trace headers: stored as it is, or with parts replaced.
        let accepted = self
            .deliver(&envelope, raw, "", None, item.received_at)
            .await?;
        let mut ham = Vec::new();
        if let Some(key) = accepted.message() {
            ham.push(key);
        }
        // Marked as spam from a conversation (IMAP "move to Junk"): the message is still
        // in that conversation, which is marked junk (or, before that mark existed, went
        // to the trash); "not spam" brings the whole conversation back and takes all of
        // its mail out of Junk (SPEC §3: one place).
        if let Accepted::Stored(outcome) = &accepted {
            for (_, o) in &outcome.deliveries {
                if let DeliveryOutcome::Duplicate { conversation } = o
                    && self
                        .store
                        .conversation_info(*conversation)?
                        .is_some_and(|c| c.junk || c.status == Status::Trash)
                {
                    ham.extend(self.inbound_messages(*conversation)?);
                    self.store.unmark_junk(*conversation).await?;
                }
            }
        }
        if self.store.junk_item(id)?.is_some() {
            self.store.junk_remove(id).await?;
        }
        self.learn(ham, LearnClass::Ham).await?;
        Ok(accepted)
    }

    /// "Move to Junk" on a conversation (SPEC §5): its inbound mail goes to Junk, and is
    /// taught to spamd as spam when learning is on. The learning itself happens later,
    /// from the durable queue: the gesture never waits for spamd.
    pub async fn mark_spam(
        &self,
        conv: ConversationId,
        by: &str,
    ) -> Result<Vec<JunkId>, IngestError> {
        let ids = self
            .store
            .mark_junk(conv, format!("marked as spam by {by}"))
            .await?;
        let mut spam = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(item) = self.store.junk_item(*id)? {
                spam.push(item.message);
            }
        }
        self.learn(spam, LearnClass::Spam).await?;
        Ok(ids)
    }

    /// Queues the lesson when `[filter] learn` is on.
    async fn learn(&self, messages: Vec<MessageKey>, class: LearnClass) -> Result<(), StoreError> {
        if self.config.current().filter.learns() {
            self.store.learn_enqueue(messages, class).await?;
        }
        Ok(())
    }

    fn inbound_messages(&self, conv: ConversationId) -> Result<Vec<MessageKey>, StoreError> {
        let mut inbound = Vec::new();
        for key in self.store.message_keys(conv)? {
            if self
                .store
                .message_meta(key)?
                .is_some_and(|m| m.direction == Direction::In)
            {
                inbound.push(key);
            }
        }
        Ok(inbound)
    }

    /// A bounce, report or auto-reply naming a message the team sent from one of the
    /// envelope's inboxes (the report's enclosed original, or In-Reply-To/References).
    fn reports_on_our_mail(
        &self,
        facts: &MessageFacts,
        envelope: &Envelope,
    ) -> Result<bool, StoreError> {
        if !facts
            .auto
            .as_ref()
            .is_some_and(|a| a.is_machine_generated())
        {
            return Ok(false);
        }
        let named = facts
            .dsn_reported_message_id
            .iter()
            .chain(&facts.in_reply_to)
            .chain(facts.references.iter().rev().take(MAX_REPORT_REFERENCES));
        let inboxes = inbox_deliveries(envelope);
        for id in named {
            for inbox in inboxes.keys() {
                if self.store.sent_message(inbox, id)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// References a report is checked by, newest first: the message reported on is the last.
const MAX_REPORT_REFERENCES: usize = 3;

/// The message with the `hits` parts (below the first `header_len` bytes: our own trace
/// fields) replaced by notices.
fn replace_parts(raw: &[u8], header_len: usize, hits: &[AttachmentHit]) -> Vec<u8> {
    let (head, rest) = raw.split_at(header_len.min(raw.len()));
    let mut stripped = head.to_vec();
    stripped.extend_from_slice(&strip_parts(rest, hits));
    stripped
}

fn mark_quarantined(summary: &mut MessageSummary, hits: &[AttachmentHit]) {
    for a in &mut summary.attachments {
        if hits.iter().any(|h| h.filename == a.name) {
            a.quarantined = true;
        }
    }
}

/// The SMTP client a message came from (filters check it).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub peer: IpAddr,
    pub helo: &'a str,
}

/// Parses on a blocking thread under catch_unwind: it sees attacker bytes.
async fn analyze(raw: Vec<u8>, mail_from: &str) -> Result<(Vec<u8>, MessageFacts), IngestError> {
    let mail_from = mail_from.to_string();
    let (raw, facts) = tokio::task::spawn_blocking(move || {
        let facts = std::panic::catch_unwind(|| message::analyze(&raw, &mail_from));
        (raw, facts)
    })
    .await
    .map_err(|e| IngestError::Analysis(e.to_string()))?;
    match facts {
        Ok(Ok(f)) => Ok((raw, f)),
        Ok(Err(e)) => Err(IngestError::Unparseable(e.to_string())),
        Err(_) => Err(IngestError::Analysis("parser panicked".into())),
    }
}

/// One delivery per distinct inbox; a `+c123` tag on any of its recipients names a
/// conversation.
fn inbox_deliveries(envelope: &Envelope) -> BTreeMap<String, Option<u64>> {
    let mut inboxes: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for rcpt in &envelope.rcpts {
        // Outside recipients (submission) are not deliveries into an inbox.
        let Some(inbox) = &rcpt.inbox else { continue };
        let plus = rcpt.tag.as_deref().and_then(conversation_tag);
        let entry = inboxes.entry(inbox.clone()).or_default();
        if entry.is_none() {
            *entry = plus;
        }
    }
    inboxes
}

/// `c123` → 123.
fn conversation_tag(tag: &str) -> Option<u64> {
    let digits = tag.strip_prefix('c').or_else(|| tag.strip_prefix('C'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where one inbox's copy of a message goes, as the envelope and config say.
struct Route {
    inbox: String,
    /// From a `+c123` sub-address on the RCPT.
    plus_conversation: Option<u64>,
    /// The From is an address of another inbox.
    from_other_inbox: bool,
}

fn delivery(
    route: Route,
    facts: Arc<MessageFacts>,
    team_addresses: Arc<[String]>,
    now: i64,
) -> Delivery {
    let Route {
        inbox,
        plus_conversation,
        from_other_inbox,
    } = route;
    let contacts = contacts::inbound_touches(&facts, contacts::customer_of(&facts));
    let keys = threading::thread_keys(&facts, now);
    let decide_inbox = inbox.clone();
    let decide = Box::new(move |idx: &dyn ThreadLookup| -> Threading {
        let sender = facts.from.as_ref().map(|a| a.email.as_str());
        let input = ThreadInput {
            facts: &facts,
            inbox: &decide_inbox,
            plus_conversation,
            sender,
            customer: contacts::customer_of(&facts).map(|a| a.email.as_str()),
            now,
            subject_window_secs: threading::SUBJECT_WINDOW_SECS,
            from_other_inbox,
        };
        // Team addresses let reply-alls from new people in the thread join (threading.rs).
        threading::decide(&input, &team_addresses, idx)
    });
    Delivery {
        inbox,
        decide,
        keys,
        contacts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_tags() {
        assert_eq!(conversation_tag("c123"), Some(123));
        assert_eq!(conversation_tag("C7"), Some(7));
        assert_eq!(conversation_tag("c"), None);
        assert_eq!(conversation_tag("sales"), None);
        assert_eq!(conversation_tag("c12x"), None);
    }
}
