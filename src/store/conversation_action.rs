//! Conversation actions on the writer (`Store::conversation_action`): status (closing
//! records `closed_at`), assignee, and transfer to another inbox, which copies the
//! conversation's threading index entries to the new inbox ([`Rekey`]) in the same
//! transaction. Every action that changes the record moves its `updated` forward.

use crate::mail::message_id;
use sled::Transactional;

use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{ConversationAction, ConversationId, Status};
use super::records::{self, ConversationRecord};
use super::tx::{Tx, TxResult, tx_error};
use super::views;
use super::writer_state::WriterState;
use crate::mail::clock::unix_now;

/// Removals then insertions, computed before a transaction.
#[derive(Default)]
pub(super) struct Rekey {
    pub(super) removes: Vec<(TreeId, Vec<u8>)>,
    pub(super) inserts: Vec<(TreeId, Vec<u8>, Vec<u8>)>,
}

impl Rekey {
    pub(super) fn apply(&self, tx: &Tx<'_>) -> TxResult<()> {
        for (t, k) in &self.removes {
            tx.t(*t).remove(k.as_slice())?;
        }
        for (t, k, v) in &self.inserts {
            tx.t(*t).insert(k.as_slice(), v.as_slice())?;
        }
        Ok(())
    }
}

impl WriterState {
    pub(super) fn conversation_action(
        &mut self,
        id: ConversationId,
        action: &ConversationAction,
    ) -> Result<(), StoreError> {
        let old = views::conversation_record(&self.trees, id)?
            .ok_or_else(|| StoreError::NotFound(format!("conversation {}", id.0)))?;
        let mut rec = old.clone();
        let mut rekey = Rekey::default();
        match action {
            ConversationAction::SetStatus(Status::Closed) => {
                if rec.status != Status::Closed || rec.closed_at.is_none() {
                    rec.closed_at = Some(unix_now());
                }
                rec.status = Status::Closed;
            }
            ConversationAction::SetStatus(status) => {
                rec.status = *status;
                rec.closed_at = None;
            }
            ConversationAction::Assign(assignee) => rec.assignee = assignee.clone(),
            ConversationAction::Transfer { inbox } => {
                if *inbox != rec.inbox {
                    rekey = self.transfer_rekey(&rec, inbox)?;
                    rec.former_inboxes.insert(rec.inbox.clone());
                    rec.former_inboxes.remove(inbox);
                    rec.inbox = inbox.clone();
                }
            }
        }
        if rec == old {
            return Ok(());
        }
        // SPEC §8: `updated` follows the agents' actions too, never going back.
        rec.updated = rec.updated.max(unix_now());
        let k = keys::conversation(id);
        let value = records::encode(TreeId::Conversations, &rec)?;
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                rekey.apply(&tx)?;
                tx.t(TreeId::Conversations)
                    .insert(&k[..], value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        self.flags_touched_only(Vec::new());
        self.touched_only(vec![id]);
        Ok(())
    }

    /// Copies a conversation's threading index entries from its inbox to `to`, so
    /// replies arriving in the new inbox find it; the old inbox's entries stay, so mail
    /// still sent to the old address follows it too (`former_inboxes`). An entry the new inbox already
    /// has for another conversation is kept (the same message delivered to both inboxes
    /// stays threaded there), except a by-subject entry older than ours.
    fn transfer_rekey(&self, rec: &ConversationRecord, to: &str) -> Result<Rekey, StoreError> {
        let (id, from) = (rec.id, rec.inbox.as_str());
        let mut rk = Rekey::default();
        let by_mid = self.trees.get(TreeId::ByMessageId);
        for msg in views::message_keys(&self.trees, id)? {
            let m = self.check_message(msg)?;
            let mid = message_id::index_form(&m.summary.message_id);
            if !mid.is_empty() {
                let new = keys::by_message_id(to, &mid);
                if !by_mid.contains_key(&new)? {
                    rk.inserts.push((
                        TreeId::ByMessageId,
                        new,
                        keys::msgid_value(id, msg).to_vec(),
                    ));
                }
            }
            for r in &m.summary.references {
                let r = message_id::index_form(r);
                if r.is_empty() || r == mid {
                    continue;
                }
                rk.inserts.push((
                    TreeId::ReferencedBy,
                    keys::referenced_by(to, &r, id),
                    Vec::new(),
                ));
            }
        }
        let (old_prefix, new_prefix) = (keys::inbox_prefix(from), keys::inbox_prefix(to));
        for tree in [TreeId::ByThreadIndex, TreeId::BySubject] {
            let t = self.trees.get(tree);
            for kv in t.scan_prefix(&old_prefix) {
                let (k, v) = kv?;
                if records::u64_at(tree, &k, &v, 0)? != id.0 {
                    continue;
                }
                let mut new = new_prefix.clone();
                new.extend_from_slice(&k[old_prefix.len()..]);
                let replace = match t.get(&new)? {
                    None => true,
                    Some(existing) if tree == TreeId::BySubject => {
                        let recency = |b: &[u8]| {
                            keys::subject_entry(b)
                                .map(|e| e.recency())
                                .ok_or_else(|| records::corrupt(tree, &k, "short value"))
                        };
                        recency(&existing)? < recency(&v)?
                    }
                    Some(_) => false,
                };
                if replace {
                    rk.inserts.push((tree, new, v.to_vec()));
                }
            }
        }
        Ok(rk)
    }
}
