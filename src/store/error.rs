//! [`StoreError`]: every error of the store's API.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled directory is locked by another process: a teamgate daemon is running.
    #[error("data directory is in use (is teamgate already running?): {0}")]
    Locked(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// A stored value or body that cannot be decoded or fails its checksum.
    #[error("corrupt data in {tree} at {key}: {detail}")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },
    #[error("cannot encode a record for {tree}: {detail}")]
    Encode { tree: &'static str, detail: String },
    #[error(
        "data directory has schema version {found}, this teamgate supports up to {supported}: \
         upgrade teamgate (or restore a backup made by this version)"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("not found: {0}")]
    NotFound(String),
    /// A request the stored data does not allow (merging a conversation into itself...).
    #[error("{0}")]
    InvalidInput(String),
    /// A folder to create or rename to exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The writer thread is gone (store closed, or it stopped after a bug).
    #[error("store is closed")]
    Closed,
    /// A bug caught at the store's boundary (for example a panicking threading decision).
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(super) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
