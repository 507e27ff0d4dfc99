//! The ingest slice of the writer: phase 1 of a batch appends an incoming
//! message's body (and a quarantined original) unless every delivery is a duplicate;
//! phase 3 decides per delivery (duplicate, second delivery to the same inbox, or the
//! threading decision run against [`IndexLookup`]), then files the message in ONE sled
//! transaction ([`apply_ingest`]): message record, conversations, threading indexes,
//! contacts and their timelines, quarantine records.

use crate::mail::address;
use crate::mail::message_id;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use sled::Transactional;

use super::blobs::BodyLocs;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::merge_split;
use super::model::{
    ContactTouch, ConversationId, Delivery, DeliveryOutcome, Direction, IncomingMessage,
    IngestOutcome, MessageKey, MessageSummary, QuarantineHit, QuarantineId, Status, ThreadDecision,
    Threading,
};
use super::quarantine;
use super::records::{self, ContactRecord, ConversationRecord, MessageRecord, TimelineRecord};
use super::thread_lookup::IndexLookup;
use super::tx::{Tx, TxResult, abort, abort_with, tx_error};
use super::views;
use super::writer_state::{Bump, WriterState};

impl WriterState {
    /// Appends the body (and a quarantined original) unless every delivery is already a
    /// duplicate (then nothing is kept). A copy that turns out to be a duplicate of an
    /// earlier request of the same batch leaves unreferenced bytes: harmless.
    pub(super) fn append_if_needed(
        &mut self,
        msg: &IncomingMessage,
    ) -> Result<Option<BodyLocs>, StoreError> {
        let mut any_new = false;
        for d in &msg.deliveries {
            if self.duplicate_of(&d.inbox, &msg.summary)?.is_none() {
                any_new = true;
                break;
            }
        }
        if !any_new {
            return Ok(None);
        }
        let body = self
            .segments
            .append(&msg.raw)
            .map_err(|e| StoreError::io("appending a message to the segment", e))?;
        let original = match quarantined_hits(msg) {
            Some((raw, _)) => Some(self.segments.append(raw).map_err(|e| {
                StoreError::io("appending a quarantined original to the segment", e)
            })?),
            None => None,
        };
        Ok(Some(BodyLocs { body, original }))
    }

    /// Runs the threading decision with read access to the indexes, and checks it.
    fn decide(&self, d: &Delivery) -> Result<Threading, StoreError> {
        let lookup = IndexLookup {
            trees: &self.trees,
            error: RefCell::new(None),
        };
        let decision = catch_unwind(AssertUnwindSafe(|| (d.decide)(&lookup))).map_err(|_| {
            StoreError::Internal(format!("threading decision for inbox {} panicked", d.inbox))
        })?;
        if let Some(e) = lookup.error.into_inner() {
            return Err(e);
        }
        let ThreadDecision::Join(named) = decision.decision else {
            return Ok(decision);
        };
        // A merged conversation's number leads to the one it was merged into.
        let id = merge_split::resolve_redirect(&self.trees, named)?;
        let decision = Threading {
            decision: ThreadDecision::Join(id),
            by: decision.by,
        };
        match views::conversation_record(&self.trees, id)? {
            Some(rec) if rec.inbox == d.inbox || rec.former_inboxes.contains(&d.inbox) => {
                Ok(decision)
            }
            found => {
                // A bug in the decision, not in the mail: keep the mail, in its own inbox.
                tracing::warn!(
                    conversation = id.0,
                    inbox = %d.inbox,
                    other_inbox = found.as_ref().map(|r| r.inbox.as_str()),
                    "store: threading joined a conversation that is missing or in another \
                     inbox; starting a new one"
                );
                Ok(Threading::new_conversation(
                    None,
                    format!("conversation {} is not in this inbox", id.0),
                ))
            }
        }
    }

    /// The conversation of `inbox` already holding this message: same Message-ID and,
    /// where both are known, the same content digest (a retry, or a second route). A
    /// different message reusing the Message-ID is not a duplicate: it is stored.
    fn duplicate_of(
        &self,
        inbox: &str,
        summary: &MessageSummary,
    ) -> Result<Option<ConversationId>, StoreError> {
        let mid = message_id::index_form(&summary.message_id);
        if mid.is_empty() {
            return Ok(None);
        }
        let k = keys::by_message_id(inbox, &mid);
        let Some(v) = self.trees.get(TreeId::ByMessageId).get(&k)? else {
            return Ok(None);
        };
        let conv = records::u64_at(TreeId::ByMessageId, &k, &v, 0)?;
        let stored = records::u64_at(TreeId::ByMessageId, &k, &v, 8)?;
        let stored_digest =
            views::message_record(&self.trees, MessageKey(stored))?.and_then(|r| r.summary.digest);
        let same = match (&summary.digest, &stored_digest) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        Ok(same.then_some(ConversationId(conv)))
    }

    pub(super) fn commit_ingest(
        &mut self,
        msg: &IncomingMessage,
        loc: Option<BodyLocs>,
    ) -> Result<IngestOutcome, StoreError> {
        let s = &msg.summary;
        let mid = message_id::index_form(&s.message_id);
        let mut actions = Vec::with_capacity(msg.deliveries.len());
        let mut first_of_inbox: HashMap<&str, usize> = HashMap::new();
        for (i, d) in msg.deliveries.iter().enumerate() {
            if let Some(&j) = first_of_inbox.get(d.inbox.as_str()) {
                actions.push(Action::SameAs(j));
                continue;
            }
            first_of_inbox.insert(&d.inbox, i);
            if let Some(conv) = self.duplicate_of(&d.inbox, s)? {
                actions.push(Action::Duplicate(conv));
                continue;
            }
            actions.push(Action::Store(self.decide(d)?));
        }

        if !actions.iter().any(|a| matches!(a, Action::Store(_))) {
            let mut deliveries: Vec<(String, DeliveryOutcome)> = Vec::new();
            for (d, a) in msg.deliveries.iter().zip(&actions) {
                let conversation = match a {
                    Action::Duplicate(c) => *c,
                    Action::SameAs(j) => conversation_of(&deliveries, *j)?,
                    Action::Store(_) => return Err(StoreError::Internal("unreachable".into())),
                };
                deliveries.push((d.inbox.clone(), DeliveryOutcome::Duplicate { conversation }));
            }
            return Ok(IngestOutcome {
                message: None,
                deliveries,
            });
        }

        let locs = loc.ok_or_else(|| {
            StoreError::Internal("message body was not appended; retry the delivery".into())
        })?;
        let key = MessageKey(self.db.generate_id()?);
        let quarantine = match (quarantined_hits(msg), locs.original) {
            (None, _) => None,
            (Some((_, hits)), Some(original_loc)) => {
                let original = MessageRecord {
                    loc: original_loc,
                    received_at: msg.received_at,
                    mail_from: msg.mail_from.clone(),
                    rcpts: msg.rcpts.clone(),
                    summary: s.clone(),
                };
                Some(QuarantinePlan {
                    original: MessageKey(self.db.generate_id()?),
                    record: records::encode(TreeId::Messages, &original)?,
                    last_id: quarantine::last_id(&self.trees)?,
                    hits,
                })
            }
            (Some(_), None) => {
                return Err(StoreError::Internal(
                    "quarantined original was not appended; retry the delivery".into(),
                ));
            }
        };
        let record = MessageRecord {
            loc: locs.body,
            received_at: msg.received_at,
            mail_from: msg.mail_from.clone(),
            rcpts: msg.rcpts.clone(),
            summary: s.clone(),
        };
        let participants: BTreeSet<String> = s
            .from
            .iter()
            .chain(&s.to)
            .chain(&s.cc)
            .map(|a| address::email_key(&a.email))
            .filter(|e| !e.is_empty())
            .collect();
        let references: BTreeSet<String> = s
            .references
            .iter()
            .map(|r| message_id::index_form(r))
            .filter(|r| !r.is_empty() && *r != mid)
            .collect();
        let bump = self.bump(true);
        let plan = Plan {
            bump,
            key,
            record: records::encode(TreeId::Messages, &record)?,
            mid,
            references,
            participants,
            msg,
            actions,
            quarantine,
        };
        let deliveries = self.trees.all[..]
            .transaction(|trees| apply_ingest(&Tx(trees), &plan))
            .map_err(tx_error)?;
        self.bumped(bump);
        // Ingest writes no flags of messages already stored.
        self.flags_touched_only(Vec::new());
        // A quarantined original is in no view; only the conversations filed into change.
        self.touched_only(
            deliveries
                .iter()
                .filter_map(|(_, o)| match o {
                    DeliveryOutcome::Stored { conversation, .. } => Some(*conversation),
                    _ => None,
                })
                .collect(),
        );
        Ok(IngestOutcome {
            message: Some(key),
            deliveries,
        })
    }
}

fn conversation_of(
    outcomes: &[(String, DeliveryOutcome)],
    i: usize,
) -> Result<ConversationId, StoreError> {
    match outcomes.get(i) {
        Some((_, DeliveryOutcome::Stored { conversation, .. }))
        | Some((_, DeliveryOutcome::Duplicate { conversation })) => Ok(*conversation),
        None => Err(StoreError::Internal("delivery order".into())),
    }
}

/// The original bytes and hits of a message with quarantined attachments; `None` when it
/// has none (no `quarantined`, or no hits).
fn quarantined_hits(msg: &IncomingMessage) -> Option<(&[u8], &[QuarantineHit])> {
    msg.quarantined
        .as_ref()
        .filter(|q| !q.hits.is_empty())
        .map(|q| (q.raw.as_slice(), q.hits.as_slice()))
}

/// The quarantine part of an ingest's transaction.
struct QuarantinePlan<'a> {
    /// The key of the original's message record.
    original: MessageKey,
    record: Vec<u8>,
    /// The last quarantine id handed out before this message.
    last_id: u64,
    hits: &'a [QuarantineHit],
}

/// What to do with one delivery, decided before the transaction.
enum Action {
    /// The Message-ID is already in this inbox.
    Duplicate(ConversationId),
    /// A second delivery to the same inbox as delivery `.0` of this message.
    SameAs(usize),
    Store(Threading),
}

/// Everything the transaction writes, computed beforehand so the closure stays pure.
struct Plan<'a> {
    bump: Bump,
    key: MessageKey,
    record: Vec<u8>,
    /// Normalised Message-ID ("" when the message has none: not indexed).
    mid: String,
    references: BTreeSet<String>,
    participants: BTreeSet<String>,
    msg: &'a IncomingMessage,
    actions: Vec<Action>,
    quarantine: Option<QuarantinePlan<'a>>,
}

fn apply_ingest(tx: &Tx<'_>, plan: &Plan<'_>) -> TxResult<Vec<(String, DeliveryOutcome)>> {
    tx.t(TreeId::Messages)
        .insert(&keys::message(plan.key)[..], plan.record.as_slice())?;
    plan.bump.write(tx)?;
    let mut outcomes: Vec<(String, DeliveryOutcome)> = Vec::with_capacity(plan.actions.len());
    let mut last_quarantine_id = plan.quarantine.as_ref().map(|q| q.last_id);
    for (d, action) in plan.msg.deliveries.iter().zip(&plan.actions) {
        let outcome = match action {
            Action::Duplicate(conversation) => DeliveryOutcome::Duplicate {
                conversation: *conversation,
            },
            Action::SameAs(j) => DeliveryOutcome::Duplicate {
                conversation: abort(conversation_of(&outcomes, *j))?,
            },
            Action::Store(decision) => {
                let outcome = store_delivery(tx, plan, d, decision)?;
                if let (Some(q), Some(last), DeliveryOutcome::Stored { conversation, .. }) =
                    (&plan.quarantine, last_quarantine_id.as_mut(), &outcome)
                {
                    for hit in q.hits {
                        *last = last.checked_add(1).ok_or_else(|| {
                            abort_with(StoreError::Internal("quarantine ids exhausted".into()))
                        })?;
                        let rec = records::QuarantineRecord {
                            id: QuarantineId(*last),
                            message_id: message_id::bare(&plan.msg.summary.message_id).to_owned(),
                            inbox: d.inbox.clone(),
                            conversation: Some(*conversation),
                            filename: hit.filename.clone(),
                            reason: hit.reason.clone(),
                            at: plan.msg.received_at,
                            original: q.original,
                            stripped: Some(plan.key),
                            released: false,
                            released_as: None,
                            released_at: None,
                        };
                        quarantine::insert(tx, &rec)?;
                    }
                }
                outcome
            }
        };
        outcomes.push((d.inbox.clone(), outcome));
    }
    if let (Some(q), Some(last)) = (&plan.quarantine, last_quarantine_id) {
        tx.t(TreeId::Messages)
            .insert(&keys::message(q.original)[..], q.record.as_slice())?;
        tx.t(TreeId::Meta)
            .insert(keys::meta::LAST_QUARANTINE_ID, &last.to_be_bytes()[..])?;
    }
    Ok(outcomes)
}

fn next_conversation_id(tx: &Tx<'_>) -> TxResult<ConversationId> {
    let meta = tx.t(TreeId::Meta);
    let k = keys::meta::LAST_CONVERSATION;
    let last = match meta.get(k)? {
        Some(v) => abort(records::u64_at(TreeId::Meta, k, &v, 0))?,
        None => 0,
    };
    let id = last.checked_add(1).ok_or_else(|| {
        abort_with(StoreError::Internal(
            "conversation numbers exhausted".into(),
        ))
    })?;
    meta.insert(k, &id.to_be_bytes()[..])?;
    Ok(ConversationId(id))
}

/// Participants remembered per conversation (threading's participant rule reads them).
const MAX_PARTICIPANTS: usize = 1000;

fn store_delivery(
    tx: &Tx<'_>,
    plan: &Plan<'_>,
    d: &Delivery,
    threading: &Threading,
) -> TxResult<DeliveryOutcome> {
    let decision = &threading.decision;
    let msg = plan.msg;
    let at = msg.received_at;
    let (mut conv, created, reopened) = match decision {
        ThreadDecision::Join(id) => {
            let k = keys::conversation(*id);
            let Some(v) = tx.t(TreeId::Conversations).get(k)? else {
                return Err(abort_with(StoreError::NotFound(format!(
                    "conversation {}",
                    id.0
                ))));
            };
            let mut rec: ConversationRecord =
                abort(records::decode(TreeId::Conversations, &k, &v))?;
            // SPEC §4: a reply to a closed conversation reopens it; trash stays trash.
            // Only a reply from outside does: an out-of-office or bounce is filed without
            // reopening, and so is the team's own reply or note (an agent's last word
            // before or after closing must not put it back in everyone's inbox).
            let reopened = rec.status == Status::Closed
                && !msg.summary.automatic
                && msg.summary.direction == Direction::In;
            if reopened {
                rec.status = Status::Open;
                rec.closed_at = None;
            }
            (rec, false, reopened)
        }
        ThreadDecision::New { linked_to } => {
            let id = next_conversation_id(tx)?;
            let rec = ConversationRecord {
                id,
                inbox: d.inbox.clone(),
                status: Status::Open,
                assignee: None,
                subject: msg.summary.subject.clone(),
                customer: d
                    .contacts
                    .iter()
                    .find(|c| c.is_customer)
                    .map(|c| address::email_key(&c.email))
                    .filter(|e| !e.is_empty()),
                linked_to: *linked_to,
                participants: BTreeSet::new(),
                created: at,
                updated: at,
                closed_at: None,
                former_inboxes: BTreeSet::new(),
                junk: false,
                merged_into: None,
            };
            (rec, true, false)
        }
    };
    conv.updated = at;
    // Bounded: the record is read and rewritten on every message of the conversation, and
    // a sender controls how many addresses a message names.
    for p in &plan.participants {
        if conv.participants.len() >= MAX_PARTICIPANTS {
            break;
        }
        conv.participants.insert(p.clone());
    }
    let id = conv.id;
    let inbox = d.inbox.as_str();
    tx.t(TreeId::Conversations).insert(
        &keys::conversation(id)[..],
        abort(records::encode(TreeId::Conversations, &conv))?,
    )?;
    tx.t(TreeId::ConvMessages).insert(
        &keys::conv_message(id, plan.key)[..],
        abort(records::encode(TreeId::ConvMessages, &threading.by))?,
    )?;
    tx.t(TreeId::MessageConvs)
        .insert(&keys::message_conv(plan.key, id)[..], &[][..])?;
    // The first message under a Message-ID keeps it: replies naming it thread there.
    let by_mid = keys::by_message_id(inbox, &plan.mid);
    if !plan.mid.is_empty() && tx.t(TreeId::ByMessageId).get(&by_mid)?.is_none() {
        tx.t(TreeId::ByMessageId)
            .insert(by_mid, &keys::msgid_value(id, plan.key)[..])?;
    }
    for r in &plan.references {
        tx.t(TreeId::ReferencedBy)
            .insert(keys::referenced_by(inbox, r, id), &[][..])?;
    }
    if let Some(ti) = &d.keys.thread_index {
        tx.t(TreeId::ByThreadIndex)
            .insert(keys::by_thread_index(inbox, ti), &id.0.to_be_bytes()[..])?;
    }
    let subject_contact = d.keys.subject_contact.as_ref().or(conv.customer.as_ref());
    if let (Some(subject), Some(contact)) = (&d.keys.subject_base, subject_contact) {
        tx.t(TreeId::BySubject).insert(
            keys::by_subject(inbox, subject, contact),
            &keys::subject_value(id, d.keys.at.unwrap_or(at), plan.key)[..],
        )?;
    }
    for touch in &d.contacts {
        touch_contact(tx, plan, touch, id)?;
    }
    Ok(DeliveryOutcome::Stored {
        conversation: id,
        created,
        reopened,
    })
}

/// A display name worth keeping: present, not empty, not just the address again.
fn real_name<'a>(name: Option<&'a str>, email: &str) -> Option<&'a str> {
    name.map(str::trim)
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(email))
}

fn touch_contact(
    tx: &Tx<'_>,
    plan: &Plan<'_>,
    touch: &ContactTouch,
    conv: ConversationId,
) -> TxResult<()> {
    let email = address::email_key(&touch.email);
    if email.is_empty() {
        return Ok(());
    }
    let at = plan.msg.received_at;
    let contacts = tx.t(TreeId::Contacts);
    let ck = keys::contact(&email);
    let mut rec = match contacts.get(&ck)? {
        Some(v) => abort(records::decode::<ContactRecord>(TreeId::Contacts, &ck, &v))?,
        None => ContactRecord {
            email: email.clone(),
            name: None,
            first_seen: at,
            last_seen: at,
            timeline_next: 0,
        },
    };
    rec.first_seen = rec.first_seen.min(at);
    rec.last_seen = rec.last_seen.max(at);
    // A real display name replaces a missing one or a bare address, never another name.
    if real_name(rec.name.as_deref(), &email).is_none()
        && let Some(n) = real_name(touch.name.as_deref(), &email)
    {
        rec.name = Some(n.to_owned());
    }
    for (kind, detail) in &touch.events {
        let entry = TimelineRecord {
            at,
            kind: *kind,
            conversation: Some(conv),
            message_id: Some(plan.msg.summary.message_id.clone()),
            detail: detail.clone(),
        };
        tx.t(TreeId::Timeline).insert(
            keys::timeline(&email, rec.timeline_next),
            abort(records::encode(TreeId::Timeline, &entry))?,
        )?;
        rec.timeline_next += 1;
    }
    tx.t(TreeId::ContactConvs)
        .insert(keys::contact_conv(&email, conv), &[][..])?;
    contacts.insert(ck, abort(records::encode(TreeId::Contacts, &rec))?)?;
    Ok(())
}
