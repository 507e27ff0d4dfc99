//! The learn queue: messages an agent's gesture taught the spam filter about ("move to
//! Junk" = spam, "not spam" = ham), waiting to be sent to spamd's learner. Durable, so a
//! spamd that is down only delays learning; the gesture itself never waits for spamd.
//! Entries are few (they leave once taught, or once their retries run out), so the due
//! scan walks the tree.

use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{LearnClass, LearnId, LearnTask, MessageKey};
use super::records::{self, LearnRecord};
use super::request::Op;
use super::writer_state::WriterState;
use crate::mail::clock::unix_now;

fn task(k: &[u8], v: &[u8]) -> Result<LearnTask, StoreError> {
    let id = records::u64_at(TreeId::LearnQueue, k, k, 0)?;
    let rec: LearnRecord = records::decode(TreeId::LearnQueue, k, v)?;
    Ok(LearnTask {
        id: LearnId(id),
        message: rec.message,
        class: rec.class,
        attempts: rec.attempts,
        next_attempt: rec.next_attempt,
    })
}

impl Store {
    /// Queues each message to be taught as `class`, due now, durably; wakes the learner.
    pub async fn learn_enqueue(
        &self,
        messages: Vec<MessageKey>,
        class: LearnClass,
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.op_done(Op::LearnEnqueue { messages, class }).await?;
        self.inner.learn_wake.notify_one();
        Ok(())
    }

    /// Up to `limit` entries due at `now`, oldest first.
    pub fn learn_due(&self, now: i64, limit: usize) -> Result<Vec<LearnTask>, StoreError> {
        let mut due = Vec::new();
        for kv in self.inner.trees.get(TreeId::LearnQueue).iter() {
            if due.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let task = task(&k, &v)?;
            if task.next_attempt <= now {
                due.push(task);
            }
        }
        Ok(due)
    }

    /// When the soonest entry falls due (unix seconds); `None` when the queue is empty.
    pub fn learn_next_due(&self) -> Result<Option<i64>, StoreError> {
        let mut soonest: Option<i64> = None;
        for kv in self.inner.trees.get(TreeId::LearnQueue).iter() {
            let (k, v) = kv?;
            let at = task(&k, &v)?.next_attempt;
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
        }
        Ok(soonest)
    }

    /// How many messages wait to be taught (metrics, `teamgate status`).
    pub fn learn_pending(&self) -> usize {
        self.inner.trees.get(TreeId::LearnQueue).len()
    }

    /// The entry is done with: taught, or given up on.
    pub async fn learn_finish(&self, id: LearnId) -> Result<(), StoreError> {
        self.op_done(Op::LearnFinish(id)).await
    }

    /// One more failed attempt; the entry is due again at `next_attempt`.
    pub async fn learn_retry(&self, id: LearnId, next_attempt: i64) -> Result<(), StoreError> {
        self.op_done(Op::LearnRetry { id, next_attempt }).await
    }

    /// Notified after `learn_enqueue` becomes durable: the learner waits on it.
    pub fn learn_wakeup(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.inner.learn_wake.clone()
    }
}

impl WriterState {
    pub(super) fn learn_add(
        &mut self,
        messages: &[MessageKey],
        class: LearnClass,
    ) -> Result<(), StoreError> {
        let tree = self.trees.get(TreeId::LearnQueue);
        let now = unix_now();
        let mut batch = sled::Batch::default();
        for message in messages {
            let rec = LearnRecord {
                message: *message,
                class,
                attempts: 0,
                next_attempt: now,
            };
            let id = self.db.generate_id()?;
            batch.insert(
                &keys::learn(id)[..],
                records::encode(TreeId::LearnQueue, &rec)?,
            );
        }
        tree.apply_batch(batch)?;
        self.dirty = true;
        Ok(())
    }

    pub(super) fn learn_remove(&mut self, id: LearnId) -> Result<(), StoreError> {
        self.trees
            .get(TreeId::LearnQueue)
            .remove(keys::learn(id.0))?;
        self.dirty = true;
        Ok(())
    }

    pub(super) fn learn_reschedule(
        &mut self,
        id: LearnId,
        next_attempt: i64,
    ) -> Result<(), StoreError> {
        let tree = self.trees.get(TreeId::LearnQueue);
        let k = keys::learn(id.0);
        let Some(v) = tree.get(k)? else {
            return Err(StoreError::NotFound(format!("learn queue entry {}", id.0)));
        };
        let mut rec: LearnRecord = records::decode(TreeId::LearnQueue, &k, &v)?;
        rec.attempts = rec.attempts.saturating_add(1);
        rec.next_attempt = next_attempt;
        tree.insert(k, records::encode(TreeId::LearnQueue, &rec)?)?;
        self.dirty = true;
        Ok(())
    }
}
