//! Merging and splitting conversations (SPEC §4, issue 12): an agent's correction of
//! threading. Each is one transaction that moves messages between conversations with
//! every index that names them (`conv_messages`/`message_convs`, the threading indexes,
//! the contacts' conversation lists and timelines), records why each moved message is
//! where it is now (`threaded_by`: merge or split), and notes the action on the
//! contacts' timelines. A merged conversation stays as a redirect (`merged_into`), so
//! mail and tags naming it land in the one it was merged into.

use std::collections::BTreeSet;

use sled::Transactional;

use super::Store;
use super::conversation_action::Rekey;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{ConversationId, MessageKey, Status, ThreadRule, ThreadedBy, TimelineKind};
use super::records::{self, ConversationRecord, MessageRecord, TimelineRecord};
use super::request::{Op, OpOutput, unexpected};
use super::tx::{Tx, tx_error};
use super::views;
use super::writer_state::WriterState;
use crate::mail::address;
use crate::mail::clock::unix_now;
use crate::mail::message_id;

/// Most redirects followed from a merged conversation to the one that holds its mail.
pub const MAX_REDIRECTS: usize = 16;

impl Store {
    /// Moves every message of `from` into `into` (same inbox); `from` becomes a redirect
    /// to `into`. `NotFound` for an unknown conversation, `InvalidInput` for the same one
    /// twice, another inbox, or one already merged.
    pub async fn merge_conversations(
        &self,
        into: ConversationId,
        from: ConversationId,
    ) -> Result<(), StoreError> {
        match self.op(Op::Merge { into, from }).await? {
            OpOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a new conversation with the messages of `conv` from the one with this
    /// Message-ID onward (arrival order), linked to `conv`; returns its number.
    /// `InvalidInput` when no message of `conv` has it, or it is the first.
    pub async fn split_conversation(
        &self,
        conv: ConversationId,
        message_id: &str,
    ) -> Result<ConversationId, StoreError> {
        let message_id = message_id.to_string();
        match self.op(Op::Split { conv, message_id }).await? {
            OpOutput::Conversation(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }
}

/// The conversation mail for `id` goes to: itself, or where its merges lead.
pub fn resolve_redirect(
    trees: &super::db::Trees,
    id: ConversationId,
) -> Result<ConversationId, StoreError> {
    let mut current = id;
    for _ in 0..MAX_REDIRECTS {
        match views::conversation_record(trees, current)?.and_then(|r| r.merged_into) {
            Some(next) => current = next,
            None => return Ok(current),
        }
    }
    Err(StoreError::Internal(format!(
        "conversation {}: more than {MAX_REDIRECTS} merge redirects",
        id.0
    )))
}

fn invalid(why: String) -> StoreError {
    StoreError::InvalidInput(why)
}

impl WriterState {
    fn live_conversation(&self, id: ConversationId) -> Result<ConversationRecord, StoreError> {
        let rec = views::conversation_record(&self.trees, id)?
            .ok_or_else(|| StoreError::NotFound(format!("conversation {}", id.0)))?;
        if let Some(to) = rec.merged_into {
            return Err(invalid(format!(
                "conversation {} was merged into {}",
                id.0, to.0
            )));
        }
        Ok(rec)
    }

    pub(super) fn merge(
        &mut self,
        into: ConversationId,
        from: ConversationId,
    ) -> Result<(), StoreError> {
        if into == from {
            return Err(invalid(format!("conversation {} into itself", into.0)));
        }
        let mut target = self.live_conversation(into)?;
        let mut source = self.live_conversation(from)?;
        if target.inbox != source.inbox {
            return Err(invalid(format!(
                "conversation {} is in inbox {}, {} in {}",
                from.0, source.inbox, into.0, target.inbox
            )));
        }
        let messages = self.messages_of(from)?;
        let by = ThreadedBy::new(
            ThreadRule::Merge,
            format!("#{} merged into #{}", from.0, into.0),
        );
        let mut rk = self.move_messages(&source, into, &messages, &by)?;
        self.repoint_inbox_entries(&source, into, |_| true, &mut rk)?;
        let now = unix_now();
        target
            .participants
            .extend(source.participants.iter().cloned());
        if source.status == Status::Open && target.status == Status::Closed {
            // Open work stays in view: the merged conversation is open if either was.
            target.status = Status::Open;
            target.closed_at = None;
        }
        target.updated = target.updated.max(source.updated).max(now);
        source.merged_into = Some(into);
        source.updated = source.updated.max(now);
        let contacts = contacts_of(&source, &messages);
        let detail = format!("#{} merged into #{}", from.0, into.0);
        self.commit_move(
            &rk,
            &[&target, &source],
            None,
            &contacts,
            (from, into, &messages),
            (TimelineKind::Merged, &detail),
        )
    }

    pub(super) fn split(
        &mut self,
        conv: ConversationId,
        message_id: &str,
    ) -> Result<ConversationId, StoreError> {
        let mut source = self.live_conversation(conv)?;
        let all = self.messages_of(conv)?;
        let wanted = message_id::index_form(message_id);
        let Some(pos) = all
            .iter()
            .position(|(_, m)| message_id::index_form(&m.summary.message_id) == wanted)
        else {
            return Err(invalid(format!(
                "no message <{wanted}> in conversation {}",
                conv.0
            )));
        };
        if pos == 0 {
            return Err(invalid(format!(
                "the message starts conversation {}: nothing to split from",
                conv.0
            )));
        }
        let (kept, moved) = all.split_at(pos);
        let Some((_, first)) = moved.first() else {
            return Err(invalid(format!("nothing to split in {}", conv.0)));
        };
        let last = match self
            .trees
            .get(TreeId::Meta)
            .get(keys::meta::LAST_CONVERSATION)?
        {
            Some(v) => records::u64_at(TreeId::Meta, keys::meta::LAST_CONVERSATION, &v, 0)?,
            None => 0,
        };
        let id = ConversationId(
            last.checked_add(1)
                .ok_or_else(|| StoreError::Internal("conversation numbers exhausted".into()))?,
        );
        let now = unix_now();
        let mut participants = BTreeSet::new();
        for (_, m) in moved {
            let s = &m.summary;
            for a in s.from.iter().chain(&s.to).chain(&s.cc) {
                participants.insert(address::email_key(&a.email));
            }
        }
        let customer = moved
            .iter()
            .find(|(_, m)| m.summary.direction == super::model::Direction::In)
            .and_then(|(_, m)| m.summary.from.as_ref())
            .map(|a| address::email_key(&a.email))
            .or_else(|| source.customer.clone());
        let created = ConversationRecord {
            id,
            inbox: source.inbox.clone(),
            status: Status::Open,
            assignee: source.assignee.clone(),
            subject: first.summary.subject.clone(),
            customer,
            linked_to: Some(conv),
            participants,
            created: now,
            updated: now,
            closed_at: None,
            former_inboxes: source.former_inboxes.clone(),
            junk: false,
            merged_into: None,
        };
        let mid = message_id::index_form(&first.summary.message_id);
        let by = ThreadedBy::new(
            ThreadRule::Split,
            format!("<{mid}> onward split from #{}", conv.0),
        );
        let mut rk = self.move_messages(&source, id, moved, &by)?;
        let moved_keys: BTreeSet<u64> = moved.iter().map(|(k, _)| k.0).collect();
        self.repoint_inbox_entries(
            &source,
            id,
            |entry| keys::subject_entry(entry).is_some_and(|e| moved_keys.contains(&e.message)),
            &mut rk,
        )?;
        // A Message-ID both halves name keeps its `referenced_by` entry for `conv`.
        let inboxes: Vec<&String> = std::iter::once(&source.inbox)
            .chain(&source.former_inboxes)
            .collect();
        let still_named: BTreeSet<Vec<u8>> = kept
            .iter()
            .flat_map(|(_, m)| m.summary.references.iter())
            .map(|r| message_id::index_form(r))
            .flat_map(|r| {
                inboxes
                    .iter()
                    .map(move |inbox| keys::referenced_by(inbox, &r, conv))
            })
            .collect();
        rk.removes
            .retain(|(tree, k)| *tree != TreeId::ReferencedBy || !still_named.contains(k));
        source.updated = source.updated.max(now);
        let mut contacts = contacts_of(&source, moved);
        contacts.extend(created.customer.iter().cloned());
        let detail = format!("#{} split into #{}", conv.0, id.0);
        self.commit_move(
            &rk,
            &[&source, &created],
            Some(id),
            &contacts,
            (conv, id, moved),
            (TimelineKind::Split, &detail),
        )?;
        Ok(id)
    }

    /// The messages of `conv` in arrival order, with their records.
    fn messages_of(
        &self,
        conv: ConversationId,
    ) -> Result<Vec<(MessageKey, MessageRecord)>, StoreError> {
        views::message_keys(&self.trees, conv)?
            .into_iter()
            .map(|k| Ok((k, self.check_message(k)?)))
            .collect()
    }

    /// Moves `messages` from `source` to `to`: membership both ways, and the
    /// `by_message_id`/`referenced_by` entries of every inbox the source is reachable from.
    fn move_messages(
        &self,
        source: &ConversationRecord,
        to: ConversationId,
        messages: &[(MessageKey, MessageRecord)],
        by: &ThreadedBy,
    ) -> Result<Rekey, StoreError> {
        let from = source.id;
        let mut rk = Rekey::default();
        let by_value = records::encode(TreeId::ConvMessages, by)?;
        let inboxes: Vec<&str> = std::iter::once(source.inbox.as_str())
            .chain(source.former_inboxes.iter().map(String::as_str))
            .collect();
        let by_mid = self.trees.get(TreeId::ByMessageId);
        for (key, m) in messages {
            rk.removes.push((
                TreeId::ConvMessages,
                keys::conv_message(from, *key).to_vec(),
            ));
            rk.inserts.push((
                TreeId::ConvMessages,
                keys::conv_message(to, *key).to_vec(),
                by_value.clone(),
            ));
            rk.removes.push((
                TreeId::MessageConvs,
                keys::message_conv(*key, from).to_vec(),
            ));
            rk.inserts.push((
                TreeId::MessageConvs,
                keys::message_conv(*key, to).to_vec(),
                Vec::new(),
            ));
            let mid = message_id::index_form(&m.summary.message_id);
            for inbox in &inboxes {
                let k = keys::by_message_id(inbox, &mid);
                if !mid.is_empty()
                    && let Some(v) = by_mid.get(&k)?
                    && records::u64_at(TreeId::ByMessageId, &k, &v, 0)? == from.0
                {
                    let held = MessageKey(records::u64_at(TreeId::ByMessageId, &k, &v, 8)?);
                    rk.inserts
                        .push((TreeId::ByMessageId, k, keys::msgid_value(to, held).to_vec()));
                }
                for r in &m.summary.references {
                    let r = message_id::index_form(r);
                    if r.is_empty() {
                        continue;
                    }
                    rk.removes
                        .push((TreeId::ReferencedBy, keys::referenced_by(inbox, &r, from)));
                    rk.inserts.push((
                        TreeId::ReferencedBy,
                        keys::referenced_by(inbox, &r, to),
                        Vec::new(),
                    ));
                }
            }
        }
        Ok(rk)
    }

    /// Thread-Index and subject entries of the source's inboxes that point at it (and
    /// pass `moves`, given the entry's value) now point at `to`.
    fn repoint_inbox_entries(
        &self,
        source: &ConversationRecord,
        to: ConversationId,
        moves: impl Fn(&[u8]) -> bool,
        rk: &mut Rekey,
    ) -> Result<(), StoreError> {
        let inboxes = std::iter::once(&source.inbox).chain(&source.former_inboxes);
        for inbox in inboxes {
            let prefix = keys::inbox_prefix(inbox);
            for tree in [TreeId::ByThreadIndex, TreeId::BySubject] {
                for kv in self.trees.get(tree).scan_prefix(&prefix) {
                    let (k, v) = kv?;
                    if records::u64_at(tree, &k, &v, 0)? != source.id.0 || !moves(&v) {
                        continue;
                    }
                    // The value starts with the conversation (u64_at just read it).
                    let mut value = v.to_vec();
                    if let Some(head) = value.get_mut(..8) {
                        head.copy_from_slice(&to.0.to_be_bytes());
                    }
                    rk.inserts.push((tree, k.to_vec(), value));
                }
            }
        }
        Ok(())
    }

    /// One transaction: the rekeying, the conversation records, the contacts'
    /// conversation lists and timelines (entries of moved messages follow them), and a
    /// timeline note of the action; then views resync for both conversations.
    fn commit_move(
        &mut self,
        rk: &Rekey,
        conversations: &[&ConversationRecord],
        allocated: Option<ConversationId>,
        contacts: &BTreeSet<String>,
        (from, to, moved): (
            ConversationId,
            ConversationId,
            &[(MessageKey, MessageRecord)],
        ),
        (kind, detail): (TimelineKind, &str),
    ) -> Result<(), StoreError> {
        let moved_ids: BTreeSet<String> = moved
            .iter()
            .map(|(_, m)| m.summary.message_id.clone())
            .collect();
        // A merge moves everything, also timeline notes naming no message; a split (which
        // allocates the new conversation) only its messages' entries.
        let everything_moves = allocated.is_none();
        let mut contact_rk = Rekey::default();
        let mut notes: Vec<(String, Vec<u8>)> = Vec::new();
        let now = unix_now();
        for email in contacts {
            let ck = keys::contact(email);
            let Some(v) = self.trees.get(TreeId::Contacts).get(&ck)? else {
                continue;
            };
            let mut contact: records::ContactRecord = records::decode(TreeId::Contacts, &ck, &v)?;
            let mut still_in_from = false;
            for kv in self
                .trees
                .get(TreeId::Timeline)
                .scan_prefix(keys::timeline_prefix(email))
            {
                let (k, v) = kv?;
                let mut entry: TimelineRecord = records::decode(TreeId::Timeline, &k, &v)?;
                if entry.conversation != Some(from) {
                    continue;
                }
                let follows = entry
                    .message_id
                    .as_ref()
                    .is_some_and(|m| moved_ids.contains(m))
                    || everything_moves;
                if follows {
                    entry.conversation = Some(to);
                    contact_rk.inserts.push((
                        TreeId::Timeline,
                        k.to_vec(),
                        records::encode(TreeId::Timeline, &entry)?,
                    ));
                } else {
                    still_in_from = true;
                }
            }
            if !still_in_from {
                contact_rk
                    .removes
                    .push((TreeId::ContactConvs, keys::contact_conv(email, from)));
            }
            contact_rk.inserts.push((
                TreeId::ContactConvs,
                keys::contact_conv(email, to),
                Vec::new(),
            ));
            let note = TimelineRecord {
                at: now,
                kind,
                conversation: Some(to),
                message_id: None,
                detail: detail.to_string(),
            };
            contact_rk.inserts.push((
                TreeId::Timeline,
                keys::timeline(email, contact.timeline_next),
                records::encode(TreeId::Timeline, &note)?,
            ));
            contact.timeline_next += 1;
            notes.push((email.clone(), records::encode(TreeId::Contacts, &contact)?));
        }
        let records: Vec<([u8; 8], Vec<u8>)> = conversations
            .iter()
            .map(|r| {
                Ok((
                    keys::conversation(r.id),
                    records::encode(TreeId::Conversations, *r)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let bump = self.bump(true);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                rk.apply(&tx)?;
                contact_rk.apply(&tx)?;
                for (email, value) in &notes {
                    tx.t(TreeId::Contacts)
                        .insert(keys::contact(email), value.as_slice())?;
                }
                for (k, v) in &records {
                    tx.t(TreeId::Conversations).insert(&k[..], v.as_slice())?;
                }
                if let Some(id) = allocated {
                    tx.t(TreeId::Meta)
                        .insert(keys::meta::LAST_CONVERSATION, &id.0.to_be_bytes()[..])?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        self.flags_touched_only(Vec::new());
        self.touched_only(vec![from, to]);
        Ok(())
    }
}

/// Whose contact records name a conversation's messages: its customer and the senders.
fn contacts_of(
    conv: &ConversationRecord,
    messages: &[(MessageKey, MessageRecord)],
) -> BTreeSet<String> {
    conv.customer
        .iter()
        .cloned()
        .chain(
            messages
                .iter()
                .filter_map(|(_, m)| m.summary.from.as_ref())
                .map(|a| address::email_key(&a.email)),
        )
        .filter(|e| !e.is_empty())
        .collect()
}
