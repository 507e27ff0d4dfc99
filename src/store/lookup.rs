//! Read-only index lookups for callers outside the writer (submission finds the
//! conversation a reply belongs to before deciding anything).

use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{ConversationId, Direction, MessageKey};
use super::records;
use super::views;
use crate::mail::message_id;

impl Store {
    /// The conversation of `inbox` (or one transferred out of it) holding a message with
    /// this Message-ID.
    pub fn conversation_for_message(
        &self,
        inbox: &str,
        message_id: &str,
    ) -> Result<Option<ConversationId>, StoreError> {
        if message_id::index_form(message_id).is_empty() {
            return Ok(None);
        }
        let key = keys::by_message_id(inbox, message_id);
        match self.inner.trees.get(TreeId::ByMessageId).get(&key)? {
            Some(v) => Ok(Some(ConversationId(records::u64_at(
                TreeId::ByMessageId,
                &key,
                &v,
                0,
            )?))),
            None => Ok(None),
        }
    }

    /// Whether the team sent a message with this Message-ID from `inbox` (a reply or a
    /// new message in one of its conversations).
    pub fn sent_message(&self, inbox: &str, message_id: &str) -> Result<bool, StoreError> {
        if message_id::index_form(message_id).is_empty() {
            return Ok(false);
        }
        let key = keys::by_message_id(inbox, message_id);
        let Some(v) = self.inner.trees.get(TreeId::ByMessageId).get(&key)? else {
            return Ok(false);
        };
        let message = MessageKey(records::u64_at(TreeId::ByMessageId, &key, &v, 8)?);
        Ok(views::message_record(&self.inner.trees, message)?
            .is_some_and(|m| m.summary.direction == Direction::Out))
    }
}
