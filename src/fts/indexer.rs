//! The indexer: one task that follows the store in key order, adds each message to the
//! index and commits in batches, recording in the commit the first key it does not
//! cover. It
//! never holds up an ingest (it reads what is already durable), and a crash costs only
//! the uncommitted tail, which it indexes again on the next start.

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

/// Runs the indexer until `stop`; it commits what it holds first. Its work runs on the
/// blocking pool, one step at a time, so a runtime shutting down never finds it waiting.
pub fn spawn(
    index: FtsIndex,
    store: Store,
    config: SearchConfig,
    stop: CancellationToken,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        let started = tokio::task::spawn_blocking(move || Indexer::new(index, store, config)).await;
        let mut indexer = match started {
            Ok(Ok(indexer)) => indexer,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "search indexer not started; SEARCH scans new mail");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "search indexer failed to start");
                return;
            }
        };
        metrics.search_index_committed(indexer.index.documents());
        while !stop.is_cancelled() {
            let m = metrics.clone();
            let worked = tokio::task::spawn_blocking(move || {
                let wait = indexer.work(&m);
                (indexer, wait)
            })
            .await;
            let wait = match worked {
                Ok((back, wait)) => {
                    indexer = back;
                    wait
                }
                Err(e) => {
                    tracing::error!(error = %e, "search indexer stopped; SEARCH scans new mail");
                    return;
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
        }
        let m = metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if indexer.uncommitted > 0 {
                indexer.commit(&m);
            }
        })
        .await;
    })
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

    /// One step of work; answers how long to wait for new mail (zero: more is ready).
    fn work(&mut self, metrics: &Metrics) -> Duration {
        let wait = match self.step() {
            Ok(read) if read == STEP => Duration::ZERO,
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
