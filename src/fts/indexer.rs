//! The indexer: one thread that follows the store in key order, adds each message to the
//! index and commits in batches, recording in the commit the first key it does not
//! cover. It
//! never holds up an ingest (it reads what is already durable), and a crash costs only
//! the uncommitted tail, which it indexes again on the next start.

use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tantivy::{IndexWriter, TantivyDocument};
use tokio_util::sync::CancellationToken;

use super::{CommitPayload, FtsError, FtsIndex, SCHEMA_VERSION, document::document, index_err};
use crate::config::SearchConfig;
use crate::metrics::Metrics;
use crate::store::{MessageKey, Store, StoreError};

/// Messages read from the store per step.
const STEP: usize = 256;
/// Messages added between commits at most, whatever the interval.
const MAX_UNCOMMITTED: usize = 20_000;
/// Wait after a failed store read or commit before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("adding to the index: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// Runs the indexer on a thread of its own, scheduled as idle work, until `stop`; it
/// commits what it holds first. Store changes wake it through a channel, so the thread
/// never waits on the runtime (which may be gone by then).
pub fn spawn(
    index: FtsIndex,
    store: Store,
    config: SearchConfig,
    stop: CancellationToken,
    metrics: Metrics,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    let mut changes = store.subscribe();
    // Dropping `wake` (on stop, or with the runtime) ends the thread.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Full: a wake-up is already pending, which is all it needs.
                    let _ = wake.try_send(());
                }
                _ = stop.cancelled() => return,
            }
        }
    });
    std::thread::Builder::new()
        .name("fts-indexer".into())
        .spawn(move || {
            // SCHED_IDLE (inherited by tantivy's threads, started below): under full
            // load ingest keeps the CPU and the index trails (what it does not cover is
            // scanned); idle time lets it catch up.
            if let Err(e) = thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                thread_priority::ThreadPriority::Min,
                thread_priority::ThreadSchedulePolicy::Normal(
                    thread_priority::NormalThreadSchedulePolicy::Idle,
                ),
            ) {
                tracing::debug!(error = ?e, "search indexer keeps the normal priority");
            }
            let mut indexer = match Indexer::new(index, store, config) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(error = %e, "search indexer not started; SEARCH scans new mail");
                    return;
                }
            };
            metrics.search_index_committed(indexer.index.documents());
            loop {
                let wait = indexer.work(&metrics);
                let next = if wait.is_zero() {
                    match woken.try_recv() {
                        Err(TryRecvError::Disconnected) => break,
                        Ok(()) | Err(TryRecvError::Empty) => continue,
                    }
                } else {
                    woken.recv_timeout(wait)
                };
                if let Err(RecvTimeoutError::Disconnected) = next {
                    break;
                }
            }
            if indexer.uncommitted > 0 {
                indexer.commit(&metrics);
            }
        })
}

/// How long to rest after working `worked` to use `percent` of the time.
fn rest_after(worked: Duration, percent: u32) -> Duration {
    let percent = percent.clamp(1, 100);
    (worked * (100 - percent) / percent).min(Duration::from_secs(1))
}

struct Indexer {
    index: FtsIndex,
    store: Store,
    config: SearchConfig,
    writer: IndexWriter<TantivyDocument>,
    /// The first key not added yet (committed or not).
    next: MessageKey,
    uncommitted: usize,
    last_commit: Instant,
}

impl Indexer {
    fn new(index: FtsIndex, store: Store, config: SearchConfig) -> Result<Indexer, FtsError> {
        let inner = &index.inner;
        // One indexing thread: the index is a background job next to ingest.
        let writer = inner
            .index
            .writer_with_num_threads(1, config.memory_bytes)
            .map_err(|e| index_err(&inner.dir, e))?;
        let next = MessageKey(index.uncovered_from());
        Ok(Indexer {
            index,
            store,
            config,
            writer,
            next,
            uncommitted: 0,
            last_commit: Instant::now(),
        })
    }

    /// One step of work; answers how long to wait before the next (zero: go on).
    fn work(&mut self, metrics: &Metrics) -> Duration {
        let changes = self.store.change_counter();
        let started = Instant::now();
        let wait = match self.step() {
            // More is ready. While mail keeps arriving, rest so that the indexer takes
            // only its share of the CPU; the mail it has not reached is scanned.
            Ok(read) if read == STEP => {
                if self.store.change_counter() == changes {
                    Duration::ZERO
                } else {
                    rest_after(started.elapsed(), self.config.busy_cpu_percent)
                }
            }
            Ok(_) => self.commit_if_due(metrics),
            Err(e) => {
                tracing::warn!(error = %e, "search indexer: will retry");
                metrics.search_index_failed();
                RETRY_AFTER
            }
        };
        if self.uncommitted >= MAX_UNCOMMITTED {
            self.commit(metrics);
        }
        wait
    }

    /// Adds the next messages; answers how many keys it read.
    fn step(&mut self) -> Result<usize, StepError> {
        let keys = self.store.message_keys_from(self.next, STEP)?;
        for &key in &keys {
            match self.store.read_message(key) {
                Ok(raw) => {
                    let doc = document(&self.index.inner, key, &raw);
                    self.writer.add_document(doc)?;
                    self.uncommitted += 1;
                }
                // Removed since it was listed: nothing to find.
                Err(StoreError::NotFound(_)) => {}
                // Not passed over: a message left out would be missing from results.
                Err(e) => return Err(e.into()),
            }
            self.next = MessageKey(key.0.saturating_add(1));
        }
        Ok(keys.len())
    }

    /// Commits when the interval has passed; answers how long to wait for new mail.
    fn commit_if_due(&mut self, metrics: &Metrics) -> Duration {
        let idle = Duration::from_secs(60);
        if self.next.0 == self.index.uncovered_from() {
            return idle;
        }
        let since = self.last_commit.elapsed();
        if since >= self.config.commit_interval {
            self.commit(metrics);
            idle
        } else {
            self.config.commit_interval - since
        }
    }

    fn commit(&mut self, metrics: &Metrics) {
        let next = self.next;
        let inner = &self.index.inner;
        let result = (|| {
            let payload = serde_json::to_string(&CommitPayload {
                schema: SCHEMA_VERSION,
                uncovered_from: next.0,
            })
            .unwrap_or_default();
            let mut prepared = self.writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            inner.reader.reload()
        })();
        self.last_commit = Instant::now();
        match result {
            Ok(()) => {
                let messages = self.uncommitted as u64;
                self.uncommitted = 0;
                inner
                    .uncovered_from
                    .store(next.0, std::sync::atomic::Ordering::Release);
                metrics.search_index_committed(self.index.documents());
                tracing::debug!(messages, uncovered_from = next.0, "search index committed");
            }
            Err(e) => {
                // What was added stays in the writer; the next commit carries it.
                tracing::warn!(error = %index_err(&inner.dir, e), "search index commit failed");
                metrics.search_index_failed();
            }
        }
    }
}
