//! Junk (SPEC §5 `Junk` mailbox, §7, §8 `junk list`). Spam is kept whole as an ordinary
//! message record that no conversation names, with a `JunkRecord` saying for which inbox,
//! why and with what score; it creates no contact and never reaches a conversation view.
//! "Move to Junk" on a conversation makes junk records of its inbound messages (same
//! message keys, no bytes copied) and marks the conversation `junk`: it leaves every
//! view (Trash too), `conversations list` and threading, so its mail is in Junk only.
//! "Not spam" ([`Store::unmark_junk`]) removes all of its junk records and opens it
//! again, so its mail is in the conversation only (SPEC §3: exactly one place).
//!
//! The `Junk` team view ([`TeamView::Junk`]) lists the junk records of its inboxes (its
//! entries are computed with the other views', in `uid_space.rs`); they carry no
//! conversation, and [`Store::junk_of_message`] maps one back to its record. Every junk
//! change bumps the view generation, so views resync.

use crate::mail::message_id;
use std::collections::HashSet;

use sled::Transactional;

use super::blobs::BodyLocs;
use super::db::Trees;
use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{
    ConversationId, Direction, JunkId, JunkItem, JunkJson, MessageKey, NewJunk, Status,
};
use super::records::{self, JunkRecord, MessageRecord};
use super::request::{Op, OpOutput, unexpected};
use super::tx::{Tx, TxResult, tx_error};
use super::views::{self, rfc3339};
use super::writer_state::WriterState;
use crate::mail::clock::unix_now;

fn read_record(trees: &Trees, id: JunkId) -> Result<Option<JunkRecord>, StoreError> {
    let k = keys::junk(id);
    trees
        .get(TreeId::Junk)
        .get(k)?
        .map(|v| records::decode(TreeId::Junk, &k, &v))
        .transpose()
}

fn message_of(trees: &Trees, rec: &JunkRecord) -> Result<MessageRecord, StoreError> {
    views::message_record(trees, rec.message)?.ok_or_else(|| {
        records::corrupt(
            TreeId::Junk,
            &keys::junk(rec.id),
            format!("names message {} that does not exist", rec.message.0),
        )
    })
}

fn last_id(trees: &Trees) -> Result<u64, StoreError> {
    let k = keys::meta::LAST_JUNK_ID;
    match trees.get(TreeId::Meta).get(k)? {
        Some(v) => records::u64_at(TreeId::Meta, k, &v, 0),
        None => Ok(0),
    }
}

fn next_id(last: u64) -> Result<u64, StoreError> {
    last.checked_add(1)
        .ok_or_else(|| StoreError::Internal("junk ids exhausted".into()))
}

/// Data written before the conversation `junk` mark: "move to Junk" made junk records of
/// a conversation's messages and trashed it, so "restore from Trash" left the mail in
/// both Junk and INBOX. Once, on open: such a conversation still in the trash is marked
/// junk (in Junk only); one already taken out of the trash keeps its place and loses the
/// records. Idempotent, so a crash before the marker only repeats it.
pub(super) fn migrate_trashed_junk(db: &sled::Db, trees: &Trees) -> Result<(), StoreError> {
    let meta = trees.get(TreeId::Meta);
    if meta.contains_key(keys::meta::JUNK_MARK_BUILT)? {
        return Ok(());
    }
    let by_message = trees.get(TreeId::JunkByMessage);
    let entries = by_message
        .iter()
        .keys()
        .collect::<Result<Vec<_>, sled::Error>>()?;
    for k in entries {
        let msg = MessageKey(records::u64_at(TreeId::JunkByMessage, &k, &k, 0)?);
        let id = JunkId(records::u64_at(TreeId::JunkByMessage, &k, &k, 8)?);
        let Some(kv) = trees
            .get(TreeId::MessageConvs)
            .scan_prefix(keys::message_convs_prefix(msg))
            .next()
        else {
            continue; // spam that never was in a conversation
        };
        let (ck, _) = kv?;
        let conv = ConversationId(records::u64_at(TreeId::MessageConvs, &ck, &ck, 8)?);
        let (Some(rec), Some(mut c)) = (
            read_record(trees, id)?,
            views::conversation_record(trees, conv)?,
        ) else {
            continue;
        };
        if c.junk || c.inbox != rec.inbox {
            continue;
        }
        if c.status == Status::Trash {
            c.junk = true;
            trees.get(TreeId::Conversations).insert(
                keys::conversation(conv),
                records::encode(TreeId::Conversations, &c)?,
            )?;
            continue;
        }
        let mid = views::message_record(trees, msg)?
            .map(|m| m.summary.message_id)
            .unwrap_or_default();
        if !message_id::index_form(&mid).is_empty() {
            let k = keys::junk_by_message_id(&rec.inbox, &mid);
            let held = trees.get(TreeId::JunkByMessageId).get(&k)?;
            if held.is_some_and(|v| v.as_ref() == id.0.to_be_bytes()) {
                trees.get(TreeId::JunkByMessageId).remove(k)?;
            }
        }
        trees.get(TreeId::Junk).remove(keys::junk(id))?;
        by_message.remove(&k)?;
    }
    meta.insert(keys::meta::JUNK_MARK_BUILT, &[][..])?;
    db.flush()?;
    Ok(())
}

/// JSON has no NaN or infinity: such a score is kept as 0.
fn finite(score: f64) -> f64 {
    if score.is_finite() { score } else { 0.0 }
}

impl JunkRecord {
    fn json(&self, msg: &MessageRecord) -> JunkJson {
        JunkJson {
            id: self.id,
            message_id: message_id::bare(&msg.summary.message_id).to_owned(),
            inbox: self.inbox.clone(),
            from: msg.summary.from.as_ref().map(|a| a.email.clone()),
            subject: msg.summary.subject.clone(),
            score: self.score,
            reason: self.reason.clone(),
            at: rfc3339(self.at),
        }
    }
}

/// Writes a record and its `junk_by_message` entry (inside a transaction).
fn insert(tx: &Tx<'_>, rec: &JunkRecord, value: &[u8]) -> TxResult<()> {
    tx.t(TreeId::Junk).insert(&keys::junk(rec.id)[..], value)?;
    tx.t(TreeId::JunkByMessage)
        .insert(&keys::junk_by_message(rec.message, rec.id)[..], &[][..])?;
    Ok(())
}

impl Store {
    /// Keeps spam for `j.inbox`: the bytes (segment) and a junk record, durable when it
    /// returns (one barrier, as ingest). The same Message-ID already junk for that inbox
    /// is not stored again: its record's id is returned.
    pub async fn junk(&self, j: NewJunk) -> Result<JunkId, StoreError> {
        match self.op(Op::Junk(Box::new(j))).await? {
            OpOutput::Junk(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Every junk record, by id (SPEC §8 `junk list`).
    pub fn junk_list(&self) -> Result<Vec<JunkJson>, StoreError> {
        let trees = &self.inner.trees;
        trees
            .get(TreeId::Junk)
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let rec: JunkRecord = records::decode(TreeId::Junk, &k, &v)?;
                Ok(rec.json(&message_of(trees, &rec)?))
            })
            .collect()
    }

    pub fn junk_item(&self, id: JunkId) -> Result<Option<JunkItem>, StoreError> {
        let trees = &self.inner.trees;
        let Some(rec) = read_record(trees, id)? else {
            return Ok(None);
        };
        let msg = message_of(trees, &rec)?;
        Ok(Some(JunkItem {
            json: rec.json(&msg),
            message: rec.message,
            original: rec.original,
            mail_from: msg.mail_from,
            rcpts: msg.rcpts,
            received_at: msg.received_at,
        }))
    }

    /// The (lowest-numbered) junk record of a message: IMAP maps a `Junk` entry back.
    pub fn junk_of_message(&self, key: MessageKey) -> Result<Option<JunkId>, StoreError> {
        match self
            .inner
            .trees
            .get(TreeId::JunkByMessage)
            .scan_prefix(keys::junk_by_message_prefix(key))
            .next()
        {
            None => Ok(None),
            Some(kv) => {
                let (k, _) = kv?;
                keys::suffix_u64(&k)
                    .map(|id| Some(JunkId(id)))
                    .ok_or_else(|| records::corrupt(TreeId::JunkByMessage, &k, "short key"))
            }
        }
    }

    /// Removes a junk record (after "not spam" filed the message again); the message
    /// leaves the `Junk` views. The bytes stay in the segments. `NotFound` if unknown.
    pub async fn junk_remove(&self, id: JunkId) -> Result<(), StoreError> {
        match self.op(Op::JunkRemove(id)).await? {
            OpOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// IMAP "move to Junk": each inbound message of the conversation becomes a junk record
    /// of the conversation's inbox (same message key, no bytes copied; score 0, this
    /// reason; a message already junk for that inbox keeps its record), and the
    /// conversation is marked junk (out of every view and list) — one transaction. Returns the records' ids in the
    /// conversation's message order. `NotFound` if the conversation does not exist.
    pub async fn mark_junk(
        &self,
        conv: ConversationId,
        reason: String,
    ) -> Result<Vec<JunkId>, StoreError> {
        match self.op(Op::MarkJunk { conv, reason }).await? {
            OpOutput::JunkIds(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    /// "Not spam" for a conversation judged spam (or, from before the `junk` mark, put in
    /// the trash by "move to Junk"): every junk record of its messages for its inbox goes,
    /// and it is open again — one transaction. `NotFound` if the conversation does not
    /// exist.
    pub async fn unmark_junk(&self, conv: ConversationId) -> Result<(), StoreError> {
        match self.op(Op::UnmarkJunk(conv)).await? {
            OpOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

impl WriterState {
    /// The junk record already kept for this inbox and Message-ID, if any.
    pub(super) fn junk_known(
        &self,
        inbox: &str,
        message_id: &str,
    ) -> Result<Option<JunkId>, StoreError> {
        if message_id::index_form(message_id).is_empty() {
            return Ok(None);
        }
        let k = keys::junk_by_message_id(inbox, message_id);
        match self.trees.get(TreeId::JunkByMessageId).get(&k)? {
            Some(v) => Ok(Some(JunkId(records::u64_at(
                TreeId::JunkByMessageId,
                &k,
                &v,
                0,
            )?))),
            None => Ok(None),
        }
    }

    /// Phase 1 of a batch for `junk`: the bytes (and a replaced original) go to the segment
    /// unless the message is junk for that inbox already.
    pub(super) fn append_junk_body(&mut self, j: &NewJunk) -> Result<Option<BodyLocs>, StoreError> {
        if self.junk_known(&j.inbox, &j.summary.message_id)?.is_some() {
            return Ok(None);
        }
        let body = self
            .segments
            .append(&j.raw)
            .map_err(|e| StoreError::io("appending a junk message to the segment", e))?;
        let original = match &j.original {
            Some(raw) => Some(self.segments.append(raw).map_err(|e| {
                StoreError::io("appending a junk message's original to the segment", e)
            })?),
            None => None,
        };
        Ok(Some(BodyLocs { body, original }))
    }

    pub(super) fn junk_add(
        &mut self,
        j: &NewJunk,
        loc: Option<BodyLocs>,
    ) -> Result<JunkId, StoreError> {
        if let Some(id) = self.junk_known(&j.inbox, &j.summary.message_id)? {
            return Ok(id);
        }
        let locs = loc.ok_or_else(|| {
            StoreError::Internal("junk message was not appended; retry the delivery".into())
        })?;
        let record = |loc| MessageRecord {
            loc,
            received_at: j.received_at,
            mail_from: j.mail_from.clone(),
            rcpts: j.rcpts.clone(),
            summary: j.summary.clone(),
        };
        let key = MessageKey(self.db.generate_id()?);
        let message = records::encode(TreeId::Messages, &record(locs.body))?;
        let original = match (&j.original, locs.original) {
            (None, _) => None,
            (Some(_), Some(loc)) => Some((
                MessageKey(self.db.generate_id()?),
                records::encode(TreeId::Messages, &record(loc))?,
            )),
            (Some(_), None) => {
                return Err(StoreError::Internal(
                    "junk message's original was not appended; retry the delivery".into(),
                ));
            }
        };
        let id = JunkId(next_id(last_id(&self.trees)?)?);
        let rec = JunkRecord {
            id,
            message: key,
            inbox: j.inbox.clone(),
            score: finite(j.score),
            reason: j.reason.clone(),
            at: j.received_at,
            original: original.as_ref().map(|(key, _)| *key),
        };
        let value = records::encode(TreeId::Junk, &rec)?;
        let by_mid = (!message_id::index_form(&j.summary.message_id).is_empty())
            .then(|| keys::junk_by_message_id(&j.inbox, &j.summary.message_id));
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::Messages)
                    .insert(&keys::message(key)[..], message.as_slice())?;
                if let Some((key, record)) = &original {
                    tx.t(TreeId::Messages)
                        .insert(&keys::message(*key)[..], record.as_slice())?;
                }
                insert(&tx, &rec, &value)?;
                if let Some(k) = &by_mid {
                    tx.t(TreeId::JunkByMessageId)
                        .insert(k.as_slice(), &id.0.to_be_bytes()[..])?;
                }
                tx.t(TreeId::Meta)
                    .insert(keys::meta::LAST_JUNK_ID, &id.0.to_be_bytes()[..])?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(id)
    }

    pub(super) fn junk_remove(&mut self, id: JunkId) -> Result<(), StoreError> {
        let rec = read_record(&self.trees, id)?
            .ok_or_else(|| StoreError::NotFound(format!("junk record {}", id.0)))?;
        let mid = views::message_record(&self.trees, rec.message)?
            .map(|m| m.summary.message_id)
            .unwrap_or_default();
        let by_mid = match self.junk_known(&rec.inbox, &mid)? {
            Some(known) if known == id => Some(keys::junk_by_message_id(&rec.inbox, &mid)),
            _ => None,
        };
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::Junk).remove(&keys::junk(id)[..])?;
                tx.t(TreeId::JunkByMessage)
                    .remove(&keys::junk_by_message(rec.message, id)[..])?;
                if let Some(k) = &by_mid {
                    tx.t(TreeId::JunkByMessageId).remove(k.as_slice())?;
                }
                // Only the record named the original; its bytes stay in the segment
                // like any removed message's.
                if let Some(original) = rec.original {
                    tx.t(TreeId::Messages)
                        .remove(&keys::message(original)[..])?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }

    /// The junk record of `inbox` that already holds this message, if any.
    fn junk_of(&self, key: MessageKey, inbox: &str) -> Result<Option<JunkId>, StoreError> {
        for kv in self
            .trees
            .get(TreeId::JunkByMessage)
            .scan_prefix(keys::junk_by_message_prefix(key))
        {
            let (k, _) = kv?;
            let id = keys::suffix_u64(&k)
                .map(JunkId)
                .ok_or_else(|| records::corrupt(TreeId::JunkByMessage, &k, "short key"))?;
            if read_record(&self.trees, id)?.is_some_and(|r| r.inbox == inbox) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub(super) fn mark_junk(
        &mut self,
        conv: ConversationId,
        reason: &str,
    ) -> Result<Vec<JunkId>, StoreError> {
        let old = views::conversation_record(&self.trees, conv)?
            .ok_or_else(|| StoreError::NotFound(format!("conversation {}", conv.0)))?;
        let inbox = old.inbox.as_str();
        let at = unix_now();
        let mut last = last_id(&self.trees)?;
        let mut ids = Vec::new();
        // (record, encoded record, junk_by_message_id key to claim)
        let mut new = Vec::new();
        let mut claimed = HashSet::new();
        for key in views::message_keys(&self.trees, conv)? {
            let msg = views::message_record(&self.trees, key)?.ok_or_else(|| {
                records::corrupt(
                    TreeId::ConvMessages,
                    &keys::conv_message(conv, key),
                    "names a message that does not exist",
                )
            })?;
            if msg.summary.direction != Direction::In {
                continue;
            }
            if let Some(id) = self.junk_of(key, inbox)? {
                ids.push(id);
                continue;
            }
            last = next_id(last)?;
            let rec = JunkRecord {
                id: JunkId(last),
                message: key,
                inbox: inbox.to_owned(),
                score: 0.0,
                reason: reason.to_owned(),
                at,
                original: None,
            };
            let value = records::encode(TreeId::Junk, &rec)?;
            let mid = &msg.summary.message_id;
            let by_mid = if self.junk_known(inbox, mid)?.is_none()
                && !message_id::index_form(mid).is_empty()
            {
                let k = keys::junk_by_message_id(inbox, mid);
                claimed.insert(k.clone()).then_some(k)
            } else {
                None
            };
            ids.push(rec.id);
            new.push((rec, value, by_mid));
        }
        let mut rec = old.clone();
        rec.junk = true;
        if new.is_empty() && rec == old {
            return Ok(ids);
        }
        rec.updated = rec.updated.max(at);
        let conv_value = records::encode(TreeId::Conversations, &rec)?;
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                for (rec, value, by_mid) in &new {
                    insert(&tx, rec, value)?;
                    if let Some(k) = by_mid {
                        tx.t(TreeId::JunkByMessageId)
                            .insert(k.as_slice(), &rec.id.0.to_be_bytes()[..])?;
                    }
                }
                if !new.is_empty() {
                    tx.t(TreeId::Meta)
                        .insert(keys::meta::LAST_JUNK_ID, &last.to_be_bytes()[..])?;
                }
                tx.t(TreeId::Conversations)
                    .insert(&keys::conversation(conv)[..], conv_value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(ids)
    }

    pub(super) fn unmark_junk(&mut self, conv: ConversationId) -> Result<(), StoreError> {
        let old = views::conversation_record(&self.trees, conv)?
            .ok_or_else(|| StoreError::NotFound(format!("conversation {}", conv.0)))?;
        // (record id, message key, junk_by_message_id key it holds)
        let mut gone = Vec::new();
        for key in views::message_keys(&self.trees, conv)? {
            let Some(id) = self.junk_of(key, &old.inbox)? else {
                continue;
            };
            let mid = views::message_record(&self.trees, key)?
                .map(|m| m.summary.message_id)
                .unwrap_or_default();
            let by_mid = (self.junk_known(&old.inbox, &mid)? == Some(id))
                .then(|| keys::junk_by_message_id(&old.inbox, &mid));
            gone.push((id, key, by_mid));
        }
        let mut rec = old.clone();
        rec.junk = false;
        rec.status = Status::Open;
        rec.closed_at = None;
        if gone.is_empty() && rec == old {
            return Ok(());
        }
        rec.updated = rec.updated.max(unix_now());
        let conv_value = records::encode(TreeId::Conversations, &rec)?;
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                for (id, key, by_mid) in &gone {
                    tx.t(TreeId::Junk).remove(&keys::junk(*id)[..])?;
                    tx.t(TreeId::JunkByMessage)
                        .remove(&keys::junk_by_message(*key, *id)[..])?;
                    if let Some(k) = by_mid {
                        tx.t(TreeId::JunkByMessageId).remove(k.as_slice())?;
                    }
                }
                tx.t(TreeId::Conversations)
                    .insert(&keys::conversation(conv)[..], conv_value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }
}
