//! Admin requests shared by the control socket (daemon running) and the CLI's direct
//! path (daemon stopped), so both give the same answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    fts::{Field, FtsIndex, Prefilter},
    ingest::Ingest,
    mail::search_text,
    metrics::{Metrics, Snapshot},
    store::{
        ConversationId, ConversationJson, JunkId, QuarantineId, QueueId, Store, StoreError,
        StoreStats,
    },
};

/// What admin requests act on: the store, and the ingest pipeline for releases (a
/// released junk message is threaded like any mail).
#[derive(Clone, Debug)]
pub struct AdminContext {
    pub store: Store,
    pub ingest: Ingest,
    /// The running daemon's metrics; `None` when the CLI opened the data directory itself.
    pub metrics: Option<Metrics>,
    /// Narrows `conversations search`; `None`: it scans.
    pub fts: Option<FtsIndex>,
}

/// The answer to `teamgate status`: the store's counters (the fields it always had), and
/// from a running daemon its metrics, the numbers `/metrics` serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub store: StoreStats,
    /// Whether a daemon answered (else the data directory was read directly).
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Snapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    ConversationsList,
    ConversationsSearch { query: String },
    ConversationsShow { id: u64 },
    // Agents' corrections of threading (SPEC §4): B's messages into A; a new conversation
    // from one message onward.
    ConversationsMerge { into: u64, from: u64 },
    ConversationsSplit { id: u64, message_id: String },
    ContactsList,
    ContactsShow { email: String },
    Status,
    // The outbound queue (SPEC §8 `queue list`), and making an entry due now.
    QueueList,
    QueueRetry { id: u64 },
    // Spam (SPEC §7, §8 `junk list`) and releasing it as "not spam".
    JunkList,
    JunkRelease { id: u64 },
    // Quarantined attachments (SPEC §8 `quarantine list`), one, and putting one back.
    QuarantineList,
    QuarantineShow { id: u64 },
    QuarantineRelease { id: u64 },
    // First half of `teamgate backup DIR` (SPEC §1): the writer exports the metadata into
    // `dir` (absolute; new or empty) between two batches and answers the segments'
    // lengths; the CLI then copies the segments itself (`store::finish_backup`).
    Backup { dir: std::path::PathBuf },
}

/// A store refusal as the operator should read it.
fn refused(e: StoreError) -> AdminError {
    match e {
        StoreError::NotFound(what) => AdminError::NotFound(format!("{what} not found")),
        StoreError::InvalidInput(why) => AdminError::Invalid(why),
        other => other.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
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

pub fn execute(ctx: &AdminContext, request: &AdminRequest) -> Result<Value, AdminError> {
    let store = &ctx.store;
    let not_found = |what: String| {
        move |e: StoreError| match e {
            StoreError::NotFound(_) => AdminError::NotFound(what.clone()),
            other => AdminError::Store(other),
        }
    };
    Ok(match request {
        AdminRequest::JunkList => serde_json::to_value(store.junk_list()?)?,
        AdminRequest::JunkRelease { id } => {
            if store.junk_item(JunkId(*id))?.is_none() {
                return Err(AdminError::NotFound(format!("junk message {id} not found")));
            }
            let accepted = block_on(ctx.ingest.release_junk(JunkId(*id)))?
                .map_err(|e| AdminError::Runtime(format!("release failed: {e}")))?;
            serde_json::json!({ "id": id, "released": true, "result": accepted.to_string() })
        }
        AdminRequest::QuarantineList => serde_json::to_value(store.quarantine_list()?)?,
        AdminRequest::QuarantineShow { id } => match store.quarantine_item(QuarantineId(*id))? {
            Some(item) => {
                let original = store.read_message(item.original)?;
                let mut value = serde_json::to_value(&item.json)?;
                value["inbox"] = item.inbox.into();
                value["original_size"] = original.len().into();
                value["original_headers"] = String::from_utf8_lossy(
                    &original[..crate::mail::header::header_section_len(&original)],
                )
                .into_owned()
                .into();
                value
            }
            None => {
                return Err(AdminError::NotFound(format!(
                    "quarantine entry {id} not found"
                )));
            }
        },
        AdminRequest::QuarantineRelease { id } => {
            let key = block_on(store.quarantine_release(QuarantineId(*id)))?.map_err(not_found(
                format!("quarantine entry {id} not found or already released"),
            ))?;
            serde_json::json!({ "id": id, "released": true, "message": key })
        }
        AdminRequest::ConversationsList => serde_json::to_value(store.list_conversations()?)?,
        AdminRequest::ConversationsSearch { query } => {
            serde_json::to_value(search_conversations(ctx, query)?)?
        }
        AdminRequest::ConversationsShow { id } => match store.conversation(ConversationId(*id))? {
            Some(c) => serde_json::to_value(c)?,
            None => {
                return Err(AdminError::NotFound(format!(
                    "conversation #{id} not found"
                )));
            }
        },
        AdminRequest::ConversationsMerge { into, from } => {
            block_on(store.merge_conversations(ConversationId(*into), ConversationId(*from)))?
                .map_err(refused)?;
            serde_json::json!({ "merged": from, "into": into })
        }
        AdminRequest::ConversationsSplit { id, message_id } => {
            let new = block_on(store.split_conversation(ConversationId(*id), message_id))?
                .map_err(refused)?;
            serde_json::json!({ "split": id, "at": message_id, "new": new.0 })
        }
        AdminRequest::ContactsList => serde_json::to_value(store.list_contacts()?)?,
        AdminRequest::ContactsShow { email } => {
            let key = crate::mail::address::normalize_email(email)
                .unwrap_or_else(|| email.to_ascii_lowercase());
            match store.contact(&key)? {
                Some(c) => serde_json::to_value(c)?,
                None => return Err(AdminError::NotFound(format!("contact {email} not found"))),
            }
        }
        AdminRequest::Status => serde_json::to_value(StatusReport {
            store: store.stats()?,
            running: ctx.metrics.is_some(),
            metrics: ctx.metrics.as_ref().map(Metrics::snapshot),
        })?,
        AdminRequest::Backup { dir } => {
            // The daemon's working directory is not the CLI's.
            if !dir.is_absolute() {
                return Err(AdminError::Invalid(format!(
                    "backup directory must be an absolute path: {}",
                    dir.display()
                )));
            }
            serde_json::to_value(block_on(store.backup_snapshot(dir))??)?
        }
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

/// The conversations with a message holding `query` in a header or its text, in the
/// order `conversations list` gives. The index narrows which messages are read; each one
/// read is then checked as IMAP SEARCH TEXT checks it.
fn search_conversations(
    ctx: &AdminContext,
    query: &str,
) -> Result<Vec<ConversationJson>, AdminError> {
    let needle = search_text::fold(query.trim());
    if needle.is_empty() {
        return Err(AdminError::Invalid("the search query is empty".into()));
    }
    let prefilter = match &ctx.fts {
        Some(index) => {
            let narrow = |field| match index.candidates(field, &needle) {
                Ok(Some(c)) => Prefilter::Only(c),
                Ok(None) => Prefilter::Everything,
                Err(e) => {
                    tracing::warn!(error = %e, "search index query failed; scanning");
                    Prefilter::Everything
                }
            };
            Prefilter::any(vec![narrow(Field::Headers), narrow(Field::Body)])
        }
        None => Prefilter::Everything,
    };
    let store = &ctx.store;
    let mut found = Vec::new();
    let mut bodies_read = 0;
    for conversation in store.list_conversations()? {
        for key in store.message_keys(conversation.id)? {
            if !prefilter.admits(key) {
                continue;
            }
            bodies_read += 1;
            let raw = store.read_message(key)?;
            if search_text::text_contains(search_text::parse(&raw).as_ref(), &raw, &needle) {
                found.push(conversation);
                break;
            }
        }
    }
    if let Some(metrics) = &ctx.metrics {
        metrics.search(prefilter.narrows(), bodies_read);
    }
    Ok(found)
}
