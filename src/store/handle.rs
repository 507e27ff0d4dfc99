//! [`Store`], the handle on an open store, and its channel to the writer thread: a
//! request goes down with a reply channel and the caller awaits the answer (given after
//! the request's durability barrier). Every part of the store API that changes anything
//! sends its request through here.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::counters::Counters;
use super::db::Trees;
use super::error::StoreError;
use super::model::MailboxSnapshot;
use super::request::{Op, OpOutput, Request, unexpected};

/// What every clone of a [`Store`] shares.
pub(super) struct Inner {
    pub(super) db: sled::Db,
    pub(super) trees: Trees,
    pub(super) meta_dir: PathBuf,
    pub(super) segments_dir: PathBuf,
    pub(super) requests: mpsc::Sender<Request>,
    pub(super) counters: Arc<Counters>,
    pub(super) changes: Arc<watch::Sender<u64>>,
    /// Poked when the outbound queue gains due work (see `queue.rs`).
    pub(super) queue_wake: Arc<Notify>,
    /// Poked when the learn queue gains work (see `learn_queue.rs`).
    pub(super) learn_wake: Arc<Notify>,
}

/// Handle on an open store. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("segments_dir", &self.inner.segments_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(super) async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn op(&self, op: Op) -> Result<OpOutput, StoreError> {
        self.request(|reply| Request::Op {
            op: Box::new(op),
            reply,
        })
        .await
    }

    pub(super) async fn op_done(&self, op: Op) -> Result<(), StoreError> {
        match self.op(op).await? {
            OpOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn op_snapshot(&self, op: Op) -> Result<MailboxSnapshot, StoreError> {
        match self.op(op).await? {
            OpOutput::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }
}
