//! The threading lookups of an ingest: [`IndexLookup`] answers [`ThreadLookup`] (the
//! questions a delivery's threading decision asks) from the committed indexes.

use crate::mail::message_id;
use std::cell::RefCell;

use super::db::Trees;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::merge_split;
use super::model::{
    ConversationId, ConversationInfo, Direction, KnownMessage, MessageKey, ThreadLookup,
};
use super::records;
use super::views;

/// [`ThreadLookup`] over the committed indexes. Runs on the writer, so it sees every
/// earlier request (including those of the current batch). Read errors cannot go
/// through the trait: the first one is kept and fails the request afterwards.
pub(super) struct IndexLookup<'a> {
    pub(super) trees: &'a Trees,
    pub(super) error: RefCell<Option<StoreError>>,
}

impl IndexLookup<'_> {
    fn keep<T>(&self, r: Result<Option<T>, StoreError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            let mut slot = self.error.borrow_mut();
            if slot.is_none() {
                *slot = Some(e);
            }
            None
        })
    }

    fn conv_at(&self, tree: TreeId, key: &[u8]) -> Result<Option<ConversationId>, StoreError> {
        match self.trees.get(tree).get(key)? {
            Some(v) => Ok(Some(ConversationId(records::u64_at(tree, key, &v, 0)?))),
            None => Ok(None),
        }
    }
}

impl ThreadLookup for IndexLookup<'_> {
    fn by_message_id(&self, inbox: &str, message_id: &str) -> Option<ConversationId> {
        if message_id::index_form(message_id).is_empty() {
            return None;
        }
        self.keep(self.conv_at(TreeId::ByMessageId, &keys::by_message_id(inbox, message_id)))
    }

    fn referencing(&self, inbox: &str, message_id: &str) -> Option<ConversationId> {
        if message_id::index_form(message_id).is_empty() {
            return None;
        }
        let prefix = keys::referenced_by_prefix(inbox, message_id);
        // Several conversations may name it (an announcement's replies): the newest wins.
        let r = match self
            .trees
            .get(TreeId::ReferencedBy)
            .scan_prefix(&prefix)
            .next_back()
        {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok((k, _))) => keys::suffix_u64(&k)
                .map(|id| Some(ConversationId(id)))
                .ok_or_else(|| records::corrupt(TreeId::ReferencedBy, &k, "short key")),
        };
        self.keep(r)
    }

    /// A conversation judged spam takes no new mail: a reply to it starts its own
    /// conversation, visible to the team, instead of vanishing into a hidden one. A
    /// merged one answers for the conversation it was merged into.
    fn conversation(&self, id: ConversationId) -> Option<ConversationInfo> {
        self.keep(
            merge_split::resolve_redirect(self.trees, id)
                .and_then(|id| views::conversation_record(self.trees, id))
                .map(|r| r.filter(|r| !r.junk).map(|r| r.info())),
        )
    }

    fn known_message(&self, inbox: &str, message_id: &str) -> Option<KnownMessage> {
        if message_id::index_form(message_id).is_empty() {
            return None;
        }
        let tree = TreeId::ByMessageId;
        let k = keys::by_message_id(inbox, message_id);
        let r = (|| {
            let Some(v) = self.trees.get(tree).get(&k)? else {
                return Ok(None);
            };
            let msg = MessageKey(records::u64_at(tree, &k, &v, 8)?);
            let Some(m) = views::message_record(self.trees, msg)? else {
                return Ok(None);
            };
            let s = m.summary;
            let mut recipients: Vec<String> =
                s.to.iter()
                    .chain(&s.cc)
                    .map(|a| a.email.as_str())
                    .chain(m.rcpts.iter().map(String::as_str))
                    .map(str::to_ascii_lowercase)
                    .collect();
            recipients.sort_unstable();
            recipients.dedup();
            Ok(Some(KnownMessage {
                outgoing: s.direction == Direction::Out,
                recipients,
                subject: s.subject,
            }))
        })();
        self.keep(r)
    }

    fn by_thread_index(&self, inbox: &str, key: &[u8]) -> Option<ConversationId> {
        self.keep(self.conv_at(TreeId::ByThreadIndex, &keys::by_thread_index(inbox, key)))
    }

    fn by_subject(
        &self,
        inbox: &str,
        subject_base: &str,
        contact: &str,
    ) -> Option<(ConversationId, i64)> {
        let k = keys::by_subject(inbox, subject_base, contact);
        let r = (|| {
            let Some(v) = self.trees.get(TreeId::BySubject).get(&k)? else {
                return Ok(None);
            };
            let e = keys::subject_entry(&v)
                .ok_or_else(|| records::corrupt(TreeId::BySubject, &k, "short value"))?;
            Ok(Some((e.conv, e.at)))
        })();
        self.keep(r)
    }

    fn by_subject_any(&self, inbox: &str, subject_base: &str) -> Vec<(ConversationId, i64)> {
        /// A subject shared by more conversations than this is too generic to thread on.
        const MAX_CANDIDATES: usize = 16;
        let prefix = keys::by_subject_prefix(inbox, subject_base);
        let tree = TreeId::BySubject;
        let r = (|| {
            let mut found = Vec::new();
            for kv in self
                .trees
                .get(tree)
                .scan_prefix(&prefix)
                .take(MAX_CANDIDATES * 4)
            {
                let (k, v) = kv?;
                found.push(
                    keys::subject_entry(&v)
                        .ok_or_else(|| records::corrupt(tree, &k, "short value"))?,
                );
            }
            // Newest first; the message key breaks ties within one second.
            found.sort_by_key(|e| std::cmp::Reverse(e.recency()));
            found.truncate(MAX_CANDIDATES);
            Ok(Some(found.into_iter().map(|e| (e.conv, e.at)).collect()))
        })();
        self.keep(r).unwrap_or_default()
    }
}
