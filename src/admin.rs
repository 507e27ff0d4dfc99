//! Admin requests shared by the control socket (daemon running) and the CLI's direct
//! path (daemon stopped), so both give the same answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{ConversationId, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    ConversationsList,
    ConversationsShow { id: u64 },
    ContactsList,
    ContactsShow { email: String },
    Status,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

pub fn execute(store: &Store, request: &AdminRequest) -> Result<Value, AdminError> {
    Ok(match request {
        AdminRequest::ConversationsList => serde_json::to_value(store.list_conversations()?)?,
        AdminRequest::ConversationsShow { id } => match store.conversation(ConversationId(*id))? {
            Some(c) => serde_json::to_value(c)?,
            None => {
                return Err(AdminError::NotFound(format!(
                    "conversation #{id} not found"
                )));
            }
        },
        AdminRequest::ContactsList => serde_json::to_value(store.list_contacts()?)?,
        AdminRequest::ContactsShow { email } => {
            let key = crate::contacts::normalize_email(email)
                .unwrap_or_else(|| email.to_ascii_lowercase());
            match store.contact(&key)? {
                Some(c) => serde_json::to_value(c)?,
                None => return Err(AdminError::NotFound(format!("contact {email} not found"))),
            }
        }
        AdminRequest::Status => serde_json::to_value(store.stats()?)?,
    })
}
