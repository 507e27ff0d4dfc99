//! Admin requests shared by the control socket (daemon running) and the CLI's direct
//! path (daemon stopped), so both give the same answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{ConversationId, QueueId, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    ConversationsList,
    ConversationsShow { id: u64 },
    ContactsList,
    ContactsShow { email: String },
    Status,
    // The outbound queue (SPEC §8 `queue list`), and making an entry due now.
    QueueList,
    QueueRetry { id: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the answer: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("internal error: {0}")]
    Runtime(String),
}

/// Runs a store future to completion from synchronous code: on the caller's runtime
/// when called from one of its blocking threads (the control socket runs `execute` in
/// `spawn_blocking`), else on a small runtime of its own (the CLI's offline path).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, AdminError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(f)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f))
            .map_err(|e| AdminError::Runtime(e.to_string())),
    }
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
        AdminRequest::QueueList => serde_json::to_value(store.queue_list()?)?,
        AdminRequest::QueueRetry { id } => match block_on(store.queue_retry(QueueId(*id)))? {
            Ok(()) => serde_json::json!({ "id": id, "retry": "now" }),
            Err(StoreError::NotFound(_)) => {
                return Err(AdminError::NotFound(format!("queue entry {id} not found")));
            }
            Err(e) => return Err(e.into()),
        },
    })
}
