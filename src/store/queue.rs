//! The outbound queue (GUIDE §4 example 9, SPEC §6): outgoing messages wait here, durably,
//! until every recipient is delivered or has failed for good. The body goes to the
//! segment files like an ingested message (same group-commit barrier); sled holds one
//! `QueueRecord` per entry (`queue`) and a due index (`queue_due`, see `keys.rs`).
//!
//! The worker (`outbound::worker`) persists the next attempt *before* it dials
//! ([`Store::queue_mark_attempt`]), so a crash mid-delivery means a later retry (at least
//! once), never a lost or hammered message. Retry timing is the caller's business: the
//! store records what it is told. Nothing here speaks SMTP.

use crate::mail::clock::unix_now;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use tokio::sync::Notify;

use super::blobs::{self, BlobLoc};
use super::db::Trees;
use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{
    ConversationId, OutboundMessage, QueueId, QueueItem, QueueJson, QueueRecorded, RecipientOutcome,
};
use super::records;
use super::request::{QueueOp, QueueOutput, Request};
use super::tx::{Tx, TxResult, tx_error};
use super::views::rfc3339;
use super::writer_state::WriterState;

/// `queue` value: one outgoing message and where each recipient stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct QueueRecord {
    pub id: QueueId,
    pub loc: BlobLoc,
    pub mail_from: String,
    pub message_id: String,
    pub conversation: Option<ConversationId>,
    pub agent: String,
    /// Unix seconds.
    pub created: i64,
    pub recipients: Vec<RecipientRecord>,
    /// Attempts started (counted before dialing).
    pub attempts: u32,
    /// Unix seconds; mirrored by the entry's `queue_due` key.
    pub next_attempt: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecipientRecord {
    pub address: String,
    pub state: RecipientState,
    /// The last error seen for this recipient.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RecipientState {
    Pending,
    Delivered,
    Failed,
}

impl QueueRecord {
    fn pending(&self) -> Vec<String> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
            .map(|r| r.address.clone())
            .collect()
    }

    fn item(&self) -> QueueItem {
        QueueItem {
            id: self.id,
            mail_from: self.mail_from.clone(),
            recipients: self.pending(),
            message_id: self.message_id.clone(),
            conversation: self.conversation,
            agent: self.agent.clone(),
            attempts: self.attempts,
            next_attempt: self.next_attempt,
            created: self.created,
            last_error: self.last_error.clone(),
        }
    }

    fn json(&self) -> QueueJson {
        QueueJson {
            id: self.id,
            message_id: self.message_id.clone(),
            recipients: self.pending(),
            attempts: self.attempts,
            next_attempt: rfc3339(self.next_attempt),
            last_error: self.last_error.clone(),
            conversation: self.conversation,
            agent: self.agent.clone(),
            created: rfc3339(self.created),
        }
    }
}

fn read_record(trees: &Trees, id: QueueId) -> Result<Option<QueueRecord>, StoreError> {
    let k = keys::queue(id.0);
    trees
        .get(TreeId::Queue)
        .get(k)?
        .map(|v| records::decode(TreeId::Queue, &k, &v))
        .transpose()
}

fn not_found(id: QueueId) -> StoreError {
    StoreError::NotFound(format!("queue entry {}", id.0))
}

fn unexpected(out: QueueOutput) -> StoreError {
    StoreError::Internal(format!(
        "writer answered a queue request with the wrong kind of result: {out:?}"
    ))
}

/// Recipients in queued order, each once (compared case-insensitively), blanks dropped.
fn distinct_recipients(recipients: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(recipients.len());
    for r in recipients.iter().map(|r| r.trim()) {
        if !r.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(r)) {
            out.push(r.to_owned());
        }
    }
    out
}

impl Store {
    async fn queue_request(&self, op: QueueOp) -> Result<QueueOutput, StoreError> {
        self.request(|reply| Request::Queue {
            op: Box::new(op),
            reply,
        })
        .await
    }

    /// Queues `msg` durably (its bytes go to the segment, as an ingest, under the same
    /// barrier) for a first attempt right away, and wakes the delivery worker. Returns
    /// only once the entry is durable.
    pub async fn enqueue(&self, msg: OutboundMessage) -> Result<QueueId, StoreError> {
        match self
            .queue_request(QueueOp::Add {
                msg,
                now: unix_now(),
            })
            .await?
        {
            QueueOutput::Added(id) => {
                self.inner.queue_wake.notify_one();
                Ok(id)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Every queue entry, by id (SPEC §8 `queue list`).
    pub fn queue_list(&self) -> Result<Vec<QueueJson>, StoreError> {
        self.inner
            .trees
            .get(TreeId::Queue)
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let rec: QueueRecord = records::decode(TreeId::Queue, &k, &v)?;
                Ok(rec.json())
            })
            .collect()
    }

    /// How many entries wait in the queue (metrics, `teamgate status`). sled counts by
    /// walking the tree: cheap for a queue, not for a hot path.
    pub fn queue_len(&self) -> usize {
        self.inner.trees.get(TreeId::Queue).len()
    }

    /// Makes the entry due now (`teamgate queue retry ID`) and wakes the worker; the
    /// attempt count is kept. `NotFound` if there is no such entry.
    pub async fn queue_retry(&self, id: QueueId) -> Result<(), StoreError> {
        match self
            .queue_request(QueueOp::Retry {
                id,
                now: unix_now(),
            })
            .await?
        {
            QueueOutput::Done => {
                self.inner.queue_wake.notify_one();
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// One entry as the worker sees it.
    pub fn queue_item(&self, id: QueueId) -> Result<Option<QueueItem>, StoreError> {
        Ok(read_record(&self.inner.trees, id)?.map(|r| r.item()))
    }

    /// Up to `limit` entries as (next attempt, id), soonest first.
    pub fn queue_schedule(&self, limit: usize) -> Result<Vec<(i64, QueueId)>, StoreError> {
        self.inner
            .trees
            .get(TreeId::QueueDue)
            .iter()
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                let (at, id) = keys::parse_queue_due(&k)
                    .ok_or_else(|| records::corrupt(TreeId::QueueDue, &k, "bad key"))?;
                Ok((at, QueueId(id)))
            })
            .collect()
    }

    /// Entries due at or before `now` (unix seconds), soonest first, at most `limit`.
    pub fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<QueueItem>, StoreError> {
        let trees = &self.inner.trees;
        let mut out = Vec::new();
        for kv in trees
            .get(TreeId::QueueDue)
            .range(..keys::queue_due_after(now))
            .take(limit)
        {
            let (k, _) = kv?;
            let (_, id) = keys::parse_queue_due(&k)
                .ok_or_else(|| records::corrupt(TreeId::QueueDue, &k, "bad key"))?;
            match read_record(trees, QueueId(id))? {
                Some(rec) => out.push(rec.item()),
                None => tracing::warn!(id, "store: queue_due names a missing queue entry"),
            }
        }
        Ok(out)
    }

    /// Counts an attempt and moves the entry's next attempt to `next_attempt`, durably,
    /// before the worker dials (a crash mid-delivery then retries later). Returns the
    /// entry as updated.
    pub async fn queue_mark_attempt(
        &self,
        id: QueueId,
        next_attempt: i64,
    ) -> Result<QueueItem, StoreError> {
        match self
            .queue_request(QueueOp::Attempt { id, next_attempt })
            .await?
        {
            QueueOutput::Item(item) => Ok(item),
            other => Err(unexpected(other)),
        }
    }

    /// Records an attempt's per-recipient results: delivered and failed recipients leave
    /// the pending list, deferred ones stay (with their error). The entry is removed
    /// once no recipient is pending.
    pub async fn queue_record(
        &self,
        id: QueueId,
        results: Vec<(String, RecipientOutcome)>,
    ) -> Result<QueueRecorded, StoreError> {
        match self.queue_request(QueueOp::Record { id, results }).await? {
            QueueOutput::Recorded(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The queued bytes of an entry, checked against their crc.
    pub fn queue_message(&self, id: QueueId) -> Result<Vec<u8>, StoreError> {
        let rec = read_record(&self.inner.trees, id)?.ok_or_else(|| not_found(id))?;
        let body = blobs::read_body(&self.inner.segments_dir, &rec.loc)
            .map_err(|e| StoreError::io(format!("reading segment {}", rec.loc.segment), e))?;
        body.map_err(|detail| StoreError::Corrupt {
            tree: "segments",
            key: format!("queue entry {}", id.0),
            detail,
        })
    }

    /// Notified after `enqueue` and `queue_retry` become durable: the delivery worker
    /// waits on it (the outbound `wake` handle notifies the same one).
    pub fn queue_wakeup(&self) -> Arc<Notify> {
        self.inner.queue_wake.clone()
    }
}

/// Rewrites an entry and its due key in one transaction.
fn put(tx: &Tx<'_>, old_due: Option<[u8; 16]>, rec: &[u8], new: &QueueRecord) -> TxResult<()> {
    if let Some(k) = old_due {
        tx.t(TreeId::QueueDue).remove(&k[..])?;
    }
    tx.t(TreeId::Queue)
        .insert(&keys::queue(new.id.0)[..], rec)?;
    tx.t(TreeId::QueueDue)
        .insert(&keys::queue_due(new.next_attempt, new.id.0)[..], &[][..])?;
    Ok(())
}

impl WriterState {
    /// Phase 1 of a batch for `enqueue`: the body goes to the segment.
    pub(super) fn append_queue_body(
        &mut self,
        op: &QueueOp,
    ) -> Result<Option<BlobLoc>, StoreError> {
        let QueueOp::Add { msg, .. } = op else {
            return Ok(None);
        };
        if distinct_recipients(&msg.recipients).is_empty() {
            return Err(StoreError::Encode {
                tree: TreeId::Queue.name(),
                detail: "an outbound message needs at least one recipient".into(),
            });
        }
        self.segments
            .append(&msg.raw)
            .map(Some)
            .map_err(|e| StoreError::io("appending an outbound message to the segment", e))
    }

    /// Phase 3 for one queue request.
    pub(super) fn run_queue_op(
        &mut self,
        op: &QueueOp,
        loc: Option<BlobLoc>,
    ) -> Result<QueueOutput, StoreError> {
        match op {
            QueueOp::Add { msg, now } => {
                let loc = loc.ok_or_else(|| {
                    StoreError::Internal("outbound body was not appended; retry".into())
                })?;
                self.queue_add(msg, *now, loc).map(QueueOutput::Added)
            }
            QueueOp::Retry { id, now } => {
                self.queue_update(*id, |rec| rec.next_attempt = *now)?;
                Ok(QueueOutput::Done)
            }
            QueueOp::Attempt { id, next_attempt } => {
                let rec = self.queue_update(*id, |rec| {
                    rec.attempts = rec.attempts.saturating_add(1);
                    rec.next_attempt = *next_attempt;
                })?;
                Ok(QueueOutput::Item(rec.item()))
            }
            QueueOp::Record { id, results } => {
                self.queue_apply(*id, results).map(QueueOutput::Recorded)
            }
        }
    }

    fn queue_add(
        &mut self,
        msg: &OutboundMessage,
        now: i64,
        loc: BlobLoc,
    ) -> Result<QueueId, StoreError> {
        let meta = self.trees.get(TreeId::Meta);
        let last = match meta.get(keys::meta::LAST_QUEUE_ID)? {
            Some(v) => records::u64_at(TreeId::Meta, keys::meta::LAST_QUEUE_ID, &v, 0)?,
            None => 0,
        };
        let id = last
            .checked_add(1)
            .map(QueueId)
            .ok_or_else(|| StoreError::Internal("queue ids exhausted".into()))?;
        let rec = QueueRecord {
            id,
            loc,
            mail_from: msg.mail_from.trim().to_owned(),
            message_id: crate::mail::message_id::bare(&msg.message_id).to_owned(),
            conversation: msg.conversation,
            agent: msg.agent.clone(),
            created: now,
            recipients: distinct_recipients(&msg.recipients)
                .into_iter()
                .map(|address| RecipientRecord {
                    address,
                    state: RecipientState::Pending,
                    error: None,
                })
                .collect(),
            attempts: 0,
            next_attempt: now,
            last_error: None,
        };
        let value = records::encode(TreeId::Queue, &rec)?;
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::Meta)
                    .insert(keys::meta::LAST_QUEUE_ID, &id.0.to_be_bytes()[..])?;
                put(&tx, None, &value, &rec)
            })
            .map_err(tx_error)?;
        self.dirty = true;
        Ok(id)
    }

    /// Reads an entry, changes it, writes it back with its due key moved.
    fn queue_update(
        &mut self,
        id: QueueId,
        change: impl FnOnce(&mut QueueRecord),
    ) -> Result<QueueRecord, StoreError> {
        let mut rec = read_record(&self.trees, id)?.ok_or_else(|| not_found(id))?;
        let old_due = keys::queue_due(rec.next_attempt, id.0);
        change(&mut rec);
        let value = records::encode(TreeId::Queue, &rec)?;
        self.trees.all[..]
            .transaction(|t| put(&Tx(t), Some(old_due), &value, &rec))
            .map_err(tx_error)?;
        self.dirty = true;
        Ok(rec)
    }

    fn queue_apply(
        &mut self,
        id: QueueId,
        results: &[(String, RecipientOutcome)],
    ) -> Result<QueueRecorded, StoreError> {
        let mut rec = read_record(&self.trees, id)?.ok_or_else(|| not_found(id))?;
        let old_due = keys::queue_due(rec.next_attempt, id.0);
        let mut failed = Vec::new();
        for (address, outcome) in results {
            let Some(r) = rec.recipients.iter_mut().find(|r| {
                r.state == RecipientState::Pending && r.address.eq_ignore_ascii_case(address)
            }) else {
                continue;
            };
            match outcome {
                RecipientOutcome::Delivered => {
                    r.state = RecipientState::Delivered;
                    r.error = None;
                }
                RecipientOutcome::Deferred(e) => {
                    r.error = Some(e.clone());
                    rec.last_error = Some(e.clone());
                }
                RecipientOutcome::Failed(e) => {
                    r.state = RecipientState::Failed;
                    r.error = Some(e.clone());
                    rec.last_error = Some(e.clone());
                    failed.push((r.address.clone(), e.clone()));
                }
            }
        }
        let removed = rec.pending().is_empty();
        let value = records::encode(TreeId::Queue, &rec)?;
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                if removed {
                    tx.t(TreeId::QueueDue).remove(&old_due[..])?;
                    tx.t(TreeId::Queue).remove(&keys::queue(id.0)[..])?;
                    Ok(())
                } else {
                    put(&tx, Some(old_due), &value, &rec)
                }
            })
            .map_err(tx_error)?;
        self.dirty = true;
        Ok(QueueRecorded { removed, failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn message(rcpts: &[&str]) -> OutboundMessage {
        OutboundMessage {
            raw: b"From: support@example.test\r\nTo: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
                .to_vec(),
            mail_from: "support@example.test".into(),
            recipients: rcpts.iter().map(|r| (*r).to_owned()).collect(),
            message_id: "<m1@example.test>".into(),
            conversation: Some(ConversationId(3)),
            agent: "alice".into(),
        }
    }

    #[tokio::test]
    async fn queue_lifecycle_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let wake = store.queue_wakeup();
        let id = store
            .enqueue(message(&[
                "a@example.org",
                "B@example.net",
                "a@EXAMPLE.org",
            ]))
            .await
            .expect("enqueue");
        assert_eq!(id, QueueId(1));
        // The enqueue left a wake-up permit for the worker.
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        let due = store.queue_due(unix_now(), 10).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].recipients, ["a@example.org", "B@example.net"]);
        assert_eq!(due[0].message_id, "m1@example.test");
        assert_eq!(
            store.queue_message(id).expect("body"),
            message(&[]).raw,
            "bytes as queued"
        );

        let later = unix_now() + 600;
        let item = store.queue_mark_attempt(id, later).await.expect("mark");
        assert_eq!((item.attempts, item.next_attempt), (1, later));
        assert!(store.queue_due(unix_now(), 10).expect("due").is_empty());
        assert_eq!(store.queue_schedule(10).expect("schedule"), [(later, id)]);

        let recorded = store
            .queue_record(
                id,
                vec![
                    ("a@example.org".into(), RecipientOutcome::Delivered),
                    (
                        "b@example.net".into(),
                        RecipientOutcome::Deferred("451 busy".into()),
                    ),
                ],
            )
            .await
            .expect("record");
        assert_eq!(
            recorded,
            QueueRecorded {
                removed: false,
                failed: vec![]
            }
        );
        let list = store.queue_list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].recipients, ["B@example.net"]);
        assert_eq!(list[0].attempts, 1);
        assert_eq!(list[0].last_error.as_deref(), Some("451 busy"));
        store.close().await.expect("close");

        let (store, _) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        store.queue_retry(id).await.expect("retry");
        let due = store.queue_due(unix_now(), 10).expect("due");
        assert_eq!(due.len(), 1, "retry makes it due now");
        assert_eq!(due[0].attempts, 1);
        let recorded = store
            .queue_record(
                id,
                vec![(
                    "B@example.net".into(),
                    RecipientOutcome::Failed("550 no".into()),
                )],
            )
            .await
            .expect("record");
        assert!(recorded.removed);
        assert_eq!(
            recorded.failed,
            [("B@example.net".to_owned(), "550 no".to_owned())]
        );
        assert!(store.queue_list().expect("list").is_empty());
        assert!(store.queue_schedule(10).expect("schedule").is_empty());
        assert!(matches!(
            store.queue_retry(id).await,
            Err(StoreError::NotFound(_))
        ));
        let second = store
            .enqueue(message(&["c@example.org"]))
            .await
            .expect("enqueue");
        assert_eq!(second, QueueId(2), "ids are never reused");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn enqueue_without_recipients_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
        assert!(store.enqueue(message(&[" "])).await.is_err());
        assert!(store.queue_list().expect("list").is_empty());
        store.close().await.expect("close");
    }
}
