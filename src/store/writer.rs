//! The single writer thread: every mutation of the store happens here, so a threading
//! decision and the write that follows it never interleave with another request.
//!
//! A batch is up to `max_batch` queued requests, run in four phases:
//! 1. append the body of each ingest that is not a duplicate everywhere to the segment
//!    (and its quarantined original, if any), and the bodies of appends, junk, queue;
//! 2. fdatasync the segment(s) once;
//! 3. per request: threading decisions (plain sled reads), then ONE sled transaction with
//!    all its writes (the closure is pure: sled may run it again on conflict);
//! 4. `Db::flush` once, then answer every request of the batch.
//!
//! Requests that change nothing (a mailbox sync that found it up to date) make no
//! barrier of their own: a batch of only those is answered without a flush.
//! After a barrier, the store-wide change counter is published (see `Store::subscribe`).
//!
//! Syncing the segment before the transactions means that sled (which may persist a
//! commit on its own, from its background flusher) never holds a record pointing at
//! bytes that are not durable. Nobody is answered `Ok` before phase 4 succeeded.
//!
//! This file is the loop: batching, the barriers, and which module runs each request.
//! The changes themselves are methods of [`WriterState`] (`writer_state.rs`) in their
//! feature modules: ingest (`ingest_tx.rs`), UID spaces (`uid_space.rs`), flags,
//! conversation actions (`conversation_action.rs`), junk, quarantine, the outbound queue
//! and the backup snapshot.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};

use super::backup;
use super::blobs::{BlobLoc, BodyLocs, SegmentWriter};
use super::counters::Counters;
use super::db::Trees;
use super::error::StoreError;
use super::model::{IncomingMessage, IngestOutcome};
use super::options::StoreOptions;
use super::request::{Op, OpOutput, QueueOp, QueueOutput, Reply, Request};
use super::uid_space;
use super::writer_state::WriterState;

/// A request inside a batch, with its answer once known.
enum Job {
    Ingest {
        msg: Box<IncomingMessage>,
        loc: Option<BodyLocs>,
        reply: Reply<IngestOutcome>,
        result: Option<Result<IngestOutcome, StoreError>>,
    },
    Op {
        op: Box<Op>,
        /// Where an appended body went (phase 1).
        loc: Option<BodyLocs>,
        reply: Reply<OpOutput>,
        result: Option<Result<OpOutput, StoreError>>,
    },
    Queue {
        op: Box<QueueOp>,
        /// Where an enqueued body went (phase 1).
        loc: Option<BlobLoc>,
        reply: Reply<QueueOutput>,
        result: Option<Result<QueueOutput, StoreError>>,
    },
}

impl Job {
    /// Replaces a pending or successful answer with `err()` (a failed barrier).
    fn fail(&mut self, err: impl Fn() -> StoreError) {
        match self {
            Job::Ingest { result, .. } => {
                if !matches!(result, Some(Err(_))) {
                    *result = Some(Err(err()));
                }
            }
            Job::Op { result, .. } => {
                if !matches!(result, Some(Err(_))) {
                    *result = Some(Err(err()));
                }
            }
            Job::Queue { result, .. } => {
                if !matches!(result, Some(Err(_))) {
                    *result = Some(Err(err()));
                }
            }
        }
    }

    fn answer(self) {
        fn missing<T>() -> Result<T, StoreError> {
            Err(StoreError::Internal("request was not processed".into()))
        }
        // A send error means the caller gave up waiting: nothing to do.
        match self {
            Job::Ingest { reply, result, .. } => {
                let _ = reply.send(result.unwrap_or_else(missing));
            }
            Job::Op { reply, result, .. } => {
                let _ = reply.send(result.unwrap_or_else(missing));
            }
            Job::Queue { reply, result, .. } => {
                let _ = reply.send(result.unwrap_or_else(missing));
            }
        }
    }
}

fn barrier_error(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::io(
        format!("durability barrier ({what})"),
        io::Error::other(e.to_string()),
    )
}

pub struct Writer {
    /// What every change runs against (`writer_state.rs`).
    state: WriterState,
    max_batch: usize,
    changes: Arc<watch::Sender<u64>>,
    /// The last sled flush failed: commits may not be durable, so the next batch
    /// flushes even if it writes nothing (a no-op answer may rely on them).
    flush_owed: bool,
}

impl Writer {
    pub fn new(
        db: sled::Db,
        trees: Trees,
        segments: SegmentWriter,
        max_batch: usize,
        counters: Arc<Counters>,
        changes: Arc<watch::Sender<u64>>,
        opts: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let state = WriterState::new(db, trees, segments, counters, opts)?;
        state.counters.change.store(state.change, Ordering::SeqCst);
        changes.send_replace(state.change);
        Ok(Writer {
            state,
            max_batch,
            changes,
            flush_owed: false,
        })
    }

    /// The thread's body: until every handle is gone or `Close` was received and the
    /// queue drained.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut closers = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut backup = None;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Ingest { msg, reply } => batch.push(Job::Ingest {
                        msg,
                        loc: None,
                        reply,
                        result: None,
                    }),
                    Request::Op { op, reply } => batch.push(Job::Op {
                        op,
                        loc: None,
                        reply,
                        result: None,
                    }),
                    Request::Queue { op, reply } => batch.push(Job::Queue {
                        op,
                        loc: None,
                        reply,
                        result: None,
                    }),
                    Request::Close { reply } => {
                        // Requests already queued are still answered; new ones see Closed.
                        closers.push(reply);
                        rx.close();
                    }
                    // Ends the batch: later requests are not in the snapshot.
                    Request::Backup {
                        dir,
                        segments_dir,
                        reply,
                    } => backup = Some((dir, segments_dir, reply)),
                }
                if batch.len() < self.max_batch && backup.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.run_batch(batch);
            }
            if let Some((dir, segments_dir, reply)) = backup {
                let _ = reply.send(backup::snapshot_into(&mut self.state, &dir, &segments_dir));
            }
        }
        let flushed = self.state.db.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "store: final flush failed");
        }
        // Release this thread's sled handle before anyone hears that the store is closed.
        drop(self);
        for reply in closers {
            let answer = match &flushed {
                Ok(_) => Ok(()),
                Err(e) => Err(barrier_error("final flush", e)),
            };
            let _ = reply.send(answer);
        }
    }

    fn run_batch(&mut self, mut jobs: Vec<Job>) {
        self.state.dirty = false;
        for job in &mut jobs {
            let appended = match job {
                Job::Ingest { msg, loc, .. } => self.state.append_if_needed(msg).map(|l| *loc = l),
                Job::Op { op, loc, .. } => self.state.append_op_body(op).map(|l| *loc = l),
                Job::Queue { op, loc, .. } => self.state.append_queue_body(op).map(|l| *loc = l),
            };
            if let Err(e) = appended {
                match job {
                    Job::Ingest { result, .. } => *result = Some(Err(e)),
                    Job::Op { result, .. } => *result = Some(Err(e)),
                    Job::Queue { result, .. } => *result = Some(Err(e)),
                }
            }
        }
        let needs_barrier = self.state.segments.needs_sync();
        let synced = if needs_barrier {
            self.state.segments.sync()
        } else {
            Ok(())
        };
        match synced {
            Err(e) => {
                tracing::error!(error = %e, "store: segment fdatasync failed");
                for job in &mut jobs {
                    job.fail(|| barrier_error("segment fdatasync", &e));
                }
            }
            Ok(()) => {
                for job in &mut jobs {
                    match job {
                        Job::Ingest {
                            msg,
                            loc,
                            result: result @ None,
                            ..
                        } => {
                            *result = Some(self.state.commit_ingest(msg, *loc));
                        }
                        Job::Op {
                            op,
                            loc,
                            result: result @ None,
                            ..
                        } => {
                            *result = Some(self.state.run_op(op, *loc));
                        }
                        Job::Queue {
                            op,
                            loc,
                            result: result @ None,
                            ..
                        } => {
                            *result = Some(self.state.run_queue_op(op, *loc));
                        }
                        _ => {}
                    }
                }
                if needs_barrier || self.state.dirty || self.flush_owed {
                    self.state.counters.barriers.fetch_add(1, Ordering::Relaxed);
                    match self.state.db.flush() {
                        Err(e) => {
                            tracing::error!(error = %e, "store: sled flush failed");
                            self.flush_owed = true;
                            for job in &mut jobs {
                                job.fail(|| barrier_error("sled flush", &e));
                            }
                        }
                        Ok(_) => {
                            self.flush_owed = false;
                            self.publish();
                        }
                    }
                }
            }
        }
        self.state
            .counters
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for job in jobs {
            job.answer();
        }
    }

    /// Makes the committed change counter visible (after a barrier).
    fn publish(&self) {
        self.state
            .counters
            .change
            .store(self.state.change, Ordering::SeqCst);
        let change = self.state.change;
        self.changes.send_if_modified(|v| {
            let modified = *v != change;
            *v = change;
            modified
        });
    }
}

/// The request dispatch: which feature module runs each [`Op`] (phases 1 and 3).
impl WriterState {
    /// Phase 1 of a batch for an APPEND: the body goes to the segment (after checking
    /// the folder exists, so a refused APPEND leaves no bytes behind).
    /// For junk, the bytes go to the segment unless the message is junk already.
    fn append_op_body(&mut self, op: &Op) -> Result<Option<BodyLocs>, StoreError> {
        match op {
            Op::FolderAppend { folder, raw, .. } => {
                self.folder_space(folder)?;
                self.segments
                    .append(raw)
                    .map(|loc| Some(BodyLocs::body(loc)))
                    .map_err(|e| StoreError::io("appending a message to the segment", e))
            }
            Op::Junk(j) => self.append_junk_body(j),
            _ => Ok(None),
        }
    }

    /// Phase 3 for one op.
    fn run_op(&mut self, op: &Op, loc: Option<BodyLocs>) -> Result<OpOutput, StoreError> {
        match op {
            Op::SyncView(view) => self.sync_view(view).map(OpOutput::Snapshot),
            Op::SyncFolder(folder) => {
                let (_, rec) = self.folder_space(folder)?;
                uid_space::snapshot(&self.trees, &rec, self.change).map(OpOutput::Snapshot)
            }
            Op::StoreFlags {
                agent,
                keys,
                op,
                flags,
                guard,
            } => {
                let (flags, modified) =
                    self.store_flags(agent, keys, *op, flags, guard.as_ref())?;
                Ok(match guard {
                    Some(_) => OpOutput::GuardedFlags(flags, modified),
                    None => OpOutput::Flags(flags),
                })
            }
            Op::Action { id, action } => self
                .conversation_action(*id, action)
                .map(|()| OpOutput::Done),
            Op::FolderCreate(folder) => self.folder_create(folder).map(|()| OpOutput::Done),
            Op::Subscribe {
                agent,
                name,
                subscribed,
            } => self
                .subscription_set(agent, name, *subscribed)
                .map(|()| OpOutput::Done),
            Op::SubscriptionsAdopt { agent, names } => self
                .subscriptions_adopt(agent, names)
                .map(|()| OpOutput::Done),
            Op::FolderDelete(folder) => self.folder_delete(folder).map(|()| OpOutput::Done),
            Op::FolderRename { from, to } => self.folder_rename(from, to).map(|()| OpOutput::Done),
            Op::FolderAppend {
                folder,
                summary,
                flags,
                internal_date,
                ..
            } => {
                let loc = loc.ok_or_else(|| {
                    StoreError::Internal("message body was not appended; retry".into())
                })?;
                self.folder_append(folder, summary, flags, *internal_date, loc.body)
                    .map(|(v, u)| OpOutput::Appended(v, u))
            }
            Op::FolderCopy { folder, keys } => self
                .folder_copy(folder, keys)
                .map(|(v, u)| OpOutput::Copied(v, u)),
            Op::FolderExpunge { folder, uids } => {
                self.folder_expunge(folder, uids).map(|()| OpOutput::Done)
            }
            Op::TrashCopy { view, keys } => self
                .trash_copy(view, keys)
                .map(|(v, u)| OpOutput::Copied(v, u)),
            Op::TrashExpunge { view, uids } => {
                self.trash_expunge(view, uids).map(|()| OpOutput::Done)
            }
            Op::Junk(j) => self.junk_add(j, loc).map(OpOutput::Junk),
            Op::JunkRemove(id) => self.junk_remove(*id).map(|()| OpOutput::Done),
            Op::MarkJunk { conv, reason } => self.mark_junk(*conv, reason).map(OpOutput::JunkIds),
            Op::UnmarkJunk(conv) => self.unmark_junk(*conv).map(|()| OpOutput::Done),
            Op::QuarantineRelease(id) => self.quarantine_release(*id).map(OpOutput::Released),
            Op::Merge { into, from } => self.merge(*into, *from).map(|()| OpOutput::Done),
            Op::LearnEnqueue { messages, class } => {
                self.learn_add(messages, *class).map(|()| OpOutput::Done)
            }
            Op::LearnFinish(id) => self.learn_remove(*id).map(|()| OpOutput::Done),
            Op::LearnRetry { id, next_attempt } => self
                .learn_reschedule(*id, *next_attempt)
                .map(|()| OpOutput::Done),
            Op::Split { conv, message_id } => {
                self.split(*conv, message_id).map(OpOutput::Conversation)
            }
        }
    }
}
