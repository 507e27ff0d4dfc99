//! Quarantined attachments (SPEC §7). A message with blocked or infected attachments is
//! filed in its conversation with those parts replaced (the *stripped copy*, an ordinary
//! message); its original bytes are kept as a message record of their own, in no
//! conversation. Ingest writes both, and one `QuarantineRecord` per hit per stored
//! delivery, in the message's own transaction (`ingest_tx.rs`).
//!
//! A release makes the original a new *revision* in the conversation: a new message key
//! pointing at the original bytes (nothing is copied) takes the stripped copy's place in
//! every conversation holding it (`conv_messages`, `message_convs`, `by_message_id`), with
//! its flags. IMAP views then expunge the stripped copy's UID and show the revision under a
//! new one (GUIDE §0b: a changed message is a new message). The revision's key is newer
//! than the conversation's other messages, so it is listed after them.

use crate::mail::message_id;
use std::iter;

use sled::Transactional;

use super::db::Trees;
use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{ConversationId, MessageKey, QuarantineId, QuarantineItem, QuarantineJson};
use super::records::{self, MessageRecord, QuarantineRecord};
use super::request::{Op, OpOutput, unexpected};
use super::tx::{Tx, TxResult, abort, tx_error};
use super::views::{self, rfc3339};
use super::writer_state::WriterState;
use crate::mail::clock::unix_now;

/// The last quarantine id handed out (0 = none yet).
pub(super) fn last_id(trees: &Trees) -> Result<u64, StoreError> {
    let k = keys::meta::LAST_QUARANTINE_ID;
    match trees.get(TreeId::Meta).get(k)? {
        Some(v) => records::u64_at(TreeId::Meta, k, &v, 0),
        None => Ok(0),
    }
}

/// Writes a record and its `quarantine_by_message` entry (inside a transaction).
pub(super) fn insert(tx: &Tx<'_>, rec: &QuarantineRecord) -> TxResult<()> {
    let value = abort(records::encode(TreeId::Quarantine, rec))?;
    tx.t(TreeId::Quarantine)
        .insert(&keys::quarantine(rec.id)[..], value)?;
    if let Some(stripped) = rec.stripped {
        tx.t(TreeId::QuarantineByMessage)
            .insert(&keys::quarantine_by_message(stripped, rec.id)[..], &[][..])?;
    }
    Ok(())
}

pub(super) fn read_record(
    trees: &Trees,
    id: QuarantineId,
) -> Result<Option<QuarantineRecord>, StoreError> {
    let k = keys::quarantine(id);
    trees
        .get(TreeId::Quarantine)
        .get(k)?
        .map(|v| records::decode(TreeId::Quarantine, &k, &v))
        .transpose()
}

fn not_found(id: QuarantineId) -> StoreError {
    StoreError::NotFound(format!("quarantine record {}", id.0))
}

impl QuarantineRecord {
    fn json(&self) -> QuarantineJson {
        QuarantineJson {
            id: self.id,
            message_id: self.message_id.clone(),
            conversation: self.conversation,
            filename: self.filename.clone(),
            reason: self.reason.clone(),
            at: rfc3339(self.at),
            released: self.released,
        }
    }

    fn item(&self) -> QuarantineItem {
        QuarantineItem {
            json: self.json(),
            original: self.original,
            stripped: self.stripped,
            inbox: self.inbox.clone(),
            released_as: self.released_as,
        }
    }
}

impl Store {
    /// Every quarantine record, by id, released ones included (SPEC §8 `quarantine list`).
    pub fn quarantine_list(&self) -> Result<Vec<QuarantineJson>, StoreError> {
        self.inner
            .trees
            .get(TreeId::Quarantine)
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let rec: QuarantineRecord = records::decode(TreeId::Quarantine, &k, &v)?;
                Ok(rec.json())
            })
            .collect()
    }

    pub fn quarantine_item(&self, id: QuarantineId) -> Result<Option<QuarantineItem>, StoreError> {
        Ok(read_record(&self.inner.trees, id)?.map(|r| r.item()))
    }

    /// Releases a quarantined original: a new message key on the original bytes (no copy)
    /// replaces the stripped copy in every conversation holding it (`conv_messages`,
    /// `message_convs`, the `by_message_id` entries naming it), carrying over its shared
    /// and per-agent flags; this record and every other hit of the same stripped copy are
    /// marked released. Returns the new key; durable when it returns. `NotFound` for an
    /// unknown record, `AlreadyExists` for one released before.
    pub async fn quarantine_release(&self, id: QuarantineId) -> Result<MessageKey, StoreError> {
        match self.op(Op::QuarantineRelease(id)).await? {
            OpOutput::Released(key) => Ok(key),
            other => Err(unexpected(other)),
        }
    }
}

/// The conversations holding a message.
fn conversations_of(trees: &Trees, key: MessageKey) -> Result<Vec<ConversationId>, StoreError> {
    trees
        .get(TreeId::MessageConvs)
        .scan_prefix(keys::message_convs_prefix(key))
        .map(|kv| {
            let (k, _) = kv?;
            Ok(ConversationId(records::u64_at(
                TreeId::MessageConvs,
                &k,
                &k,
                8,
            )?))
        })
        .collect()
}

fn message(
    trees: &Trees,
    rec: &QuarantineRecord,
    key: MessageKey,
) -> Result<MessageRecord, StoreError> {
    views::message_record(trees, key)?.ok_or_else(|| {
        records::corrupt(
            TreeId::Quarantine,
            &keys::quarantine(rec.id),
            format!("names message {} that does not exist", key.0),
        )
    })
}

impl WriterState {
    pub(super) fn quarantine_release(
        &mut self,
        id: QuarantineId,
    ) -> Result<MessageKey, StoreError> {
        let trees = &self.trees;
        let rec = read_record(trees, id)?.ok_or_else(|| not_found(id))?;
        if rec.released {
            return Err(StoreError::AlreadyExists(format!(
                "quarantine record {} is released already",
                id.0
            )));
        }
        let stripped = rec.stripped.ok_or_else(|| {
            StoreError::NotFound(format!(
                "the conversation copy of quarantine record {}",
                id.0
            ))
        })?;
        let original = message(trees, &rec, rec.original)?;
        let copy = message(trees, &rec, stripped)?;
        let convs = conversations_of(trees, stripped)?;
        if convs.is_empty() {
            return Err(StoreError::NotFound(format!(
                "a conversation holding message {} (quarantine record {})",
                stripped.0, id.0
            )));
        }

        let revision_key = MessageKey(self.db.generate_id()?);
        let mut summary = original.summary.clone();
        for a in &mut summary.attachments {
            a.quarantined = false;
        }
        let revision = records::encode(
            TreeId::Messages,
            &MessageRecord {
                loc: original.loc,
                received_at: copy.received_at,
                mail_from: copy.mail_from.clone(),
                rcpts: copy.rcpts.clone(),
                summary,
            },
        )?;

        // Message-ID index entries naming the stripped copy now name the revision.
        let mid = message_id::index_form(&copy.summary.message_id);
        let mut by_mid = Vec::new();
        for &conv in &convs {
            if mid.is_empty() {
                break;
            }
            let c = views::conversation_record(trees, conv)?.ok_or_else(|| {
                records::corrupt(
                    TreeId::MessageConvs,
                    &keys::message_conv(stripped, conv),
                    "names a conversation that does not exist",
                )
            })?;
            for inbox in iter::once(&c.inbox).chain(&c.former_inboxes) {
                let k = keys::by_message_id(inbox, &mid);
                let v = trees.get(TreeId::ByMessageId).get(&k)?;
                if v.as_deref() == Some(&keys::msgid_value(conv, stripped)[..]) {
                    by_mid.push((k, keys::msgid_value(conv, revision_key)));
                }
            }
        }

        // Flags: the shared record, and every agent's byte (a scan of `flags`: agents
        // are its key prefix; a release is rare).
        let shared = trees
            .get(TreeId::SharedFlags)
            .get(keys::shared_flags(stripped))?;
        let mut agent_flags = Vec::new();
        for kv in trees.get(TreeId::Flags).iter() {
            let (k, v) = kv?;
            if let Some((agent, msg)) = keys::parse_agent_flags(&k)
                && msg == stripped
            {
                agent_flags.push((keys::agent_flags(&agent, revision_key), v));
            }
        }

        // This record and every other hit of the same stripped copy.
        let at = unix_now();
        let mut marked = Vec::new();
        for kv in trees
            .get(TreeId::QuarantineByMessage)
            .scan_prefix(keys::quarantine_by_message_prefix(stripped))
        {
            let (k, _) = kv?;
            let other = keys::suffix_u64(&k)
                .map(QuarantineId)
                .ok_or_else(|| records::corrupt(TreeId::QuarantineByMessage, &k, "short key"))?;
            match read_record(trees, other)? {
                Some(r) if !r.released => marked.push(r),
                Some(_) => {}
                None => tracing::warn!(
                    id = other.0,
                    "store: quarantine_by_message names a missing record"
                ),
            }
        }
        if !marked.iter().any(|r| r.id == id) {
            marked.push(rec);
        }
        for r in &mut marked {
            r.released = true;
            r.released_as = Some(revision_key);
            r.released_at = Some(at);
        }

        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::Messages)
                    .insert(&keys::message(revision_key)[..], revision.as_slice())?;
                for &conv in &convs {
                    // The revision keeps the reason the stripped copy was threaded by.
                    let reason = tx
                        .t(TreeId::ConvMessages)
                        .remove(&keys::conv_message(conv, stripped)[..])?
                        .unwrap_or_default();
                    tx.t(TreeId::ConvMessages)
                        .insert(&keys::conv_message(conv, revision_key)[..], reason)?;
                    tx.t(TreeId::MessageConvs)
                        .remove(&keys::message_conv(stripped, conv)[..])?;
                    tx.t(TreeId::MessageConvs)
                        .insert(&keys::message_conv(revision_key, conv)[..], &[][..])?;
                }
                for (k, v) in &by_mid {
                    tx.t(TreeId::ByMessageId).insert(k.as_slice(), &v[..])?;
                }
                if let Some(v) = &shared {
                    tx.t(TreeId::SharedFlags)
                        .insert(&keys::shared_flags(revision_key)[..], v.clone())?;
                }
                for (k, v) in &agent_flags {
                    tx.t(TreeId::Flags).insert(k.as_slice(), v.clone())?;
                }
                for r in &marked {
                    insert(&tx, r)?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(revision_key)
    }
}
