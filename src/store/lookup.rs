//! Read-only index lookups for callers outside the writer (submission finds the
//! conversation a reply belongs to before deciding anything).

use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::ConversationId;
use super::records;
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
}
