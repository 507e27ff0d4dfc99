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

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::{mpsc, oneshot, watch};

use super::backup::{self, BackupSnapshot};
use super::blobs::{BlobLoc, SegmentWriter};
use super::keys::{self, TreeId};
use super::model::{
    ContactTouch, ConversationAction, ConversationId, ConversationInfo, Delivery, DeliveryOutcome,
    Direction, Entry, FlagOp, Flags, FolderId, IncomingMessage, IngestOutcome, JunkId,
    MailboxSnapshot, MessageKey, MessageSummary, NewJunk, QuarantineHit, QuarantineId, Status,
    TeamView, ThreadDecision, ThreadLookup,
};
use super::quarantine;
use super::queue::{QueueOp, QueueOutput};
use super::records::{
    self, ContactRecord, ConversationRecord, MessageRecord, TimelineRecord, UidSpaceRecord,
};
use super::views;
use super::{Counters, StoreError, Trees};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What handles send to the writer.
pub enum Request {
    Ingest {
        msg: Box<IncomingMessage>,
        reply: Reply<IngestOutcome>,
    },
    /// Every other mutation (and mailbox syncs, which may assign UIDs).
    Op { op: Box<Op>, reply: Reply<OpOutput> },
    /// An outbound queue change (see `queue.rs`).
    Queue {
        op: Box<QueueOp>,
        reply: Reply<QueueOutput>,
    },
    /// Answer everything queued, flush, stop.
    Close { reply: Reply<()> },
    /// Run the batch received so far (with its barrier), then, before any later request,
    /// snapshot the store into the backup directory `dir` (see `backup.rs`).
    Backup {
        dir: PathBuf,
        segments_dir: PathBuf,
        reply: Reply<BackupSnapshot>,
    },
}

/// A request other than ingest; see the `Store` methods of the same names.
pub enum Op {
    SyncView(TeamView),
    SyncFolder(FolderId),
    StoreFlags {
        agent: String,
        keys: Vec<MessageKey>,
        op: FlagOp,
        flags: Flags,
    },
    Action {
        id: ConversationId,
        action: ConversationAction,
    },
    FolderCreate(FolderId),
    FolderDelete(FolderId),
    FolderRename {
        from: FolderId,
        to: FolderId,
    },
    FolderAppend {
        folder: FolderId,
        raw: Vec<u8>,
        summary: Box<MessageSummary>,
        flags: Flags,
        internal_date: i64,
    },
    FolderCopy {
        folder: FolderId,
        keys: Vec<MessageKey>,
    },
    FolderExpunge {
        folder: FolderId,
        uids: Vec<u32>,
    },
    Junk(Box<NewJunk>),
    JunkRemove(JunkId),
    MarkJunk {
        conv: ConversationId,
        reason: String,
    },
    QuarantineRelease(QuarantineId),
}

/// The answer to an [`Op`]; each `Store` method expects one variant.
#[derive(Debug)]
pub enum OpOutput {
    Done,
    Snapshot(MailboxSnapshot),
    Flags(Vec<Flags>),
    /// UIDVALIDITY, uid.
    Appended(u32, u32),
    /// UIDVALIDITY, uids in order.
    Copied(u32, Vec<u32>),
    Junk(JunkId),
    JunkIds(Vec<JunkId>),
    /// The new revision of a released message.
    Released(MessageKey),
}

/// Where phase 1 put an ingest's bytes.
#[derive(Debug, Clone, Copy)]
struct IngestLocs {
    /// The message as filed in its conversations.
    body: BlobLoc,
    /// The original of a message whose attachments were removed.
    original: Option<BlobLoc>,
}

/// A request inside a batch, with its answer once known.
enum Job {
    Ingest {
        msg: Box<IncomingMessage>,
        loc: Option<IngestLocs>,
        reply: Reply<IngestOutcome>,
        result: Option<Result<IngestOutcome, StoreError>>,
    },
    Op {
        op: Box<Op>,
        /// Where an appended body went (phase 1).
        loc: Option<BlobLoc>,
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
    pub(super) db: sled::Db,
    pub(super) trees: Trees,
    pub(super) segments: SegmentWriter,
    max_batch: usize,
    counters: Arc<Counters>,
    changes: Arc<watch::Sender<u64>>,
    /// `meta` `change_counter` as committed (this thread is its only writer).
    pub(super) change: u64,
    /// `meta` `view_generation` as committed.
    pub(super) view_gen: u64,
    /// Something was committed in the current batch: it needs the sled flush.
    pub(super) dirty: bool,
    /// The last sled flush failed: commits may not be durable, so the next batch
    /// flushes even if it writes nothing (a no-op answer may rely on them).
    flush_owed: bool,
    /// What each recent view generation changed, oldest first (at most `VIEW_LOG_LEN`).
    view_log: VecDeque<(u64, ViewChange)>,
    /// Each team view's entries as last synced, by UID space name (memory only).
    pub(super) view_cache: HashMap<Vec<u8>, CachedView>,
}

/// View generations remembered for incremental syncs; a space synced longer ago is
/// recomputed in full.
const VIEW_LOG_LEN: usize = 4096;
/// Team views whose entries are kept in memory; past it the cache starts over.
const VIEW_CACHE_LEN: usize = 512;

/// What one view generation changed.
#[derive(Debug, Clone)]
pub(super) enum ViewChange {
    /// Only these conversations' status, assignee, inbox or messages.
    Conversations(Vec<ConversationId>),
    /// Unknown: every view is recomputed in full.
    Everything,
}

/// A team view's entries as of its space's last sync.
#[derive(Debug, Clone)]
pub(super) struct CachedView {
    pub space: u64,
    pub synced_at: u64,
    pub entries: Vec<(u32, Entry)>,
}

/// The counter values a change writes in its transaction; applied to the writer with
/// [`Writer::bumped`] once the transaction committed.
#[derive(Debug, Clone, Copy)]
pub struct Bump {
    change: u64,
    view_gen: Option<u64>,
}

impl Bump {
    /// Writes the new counter values (inside the change's transaction).
    pub fn write(&self, tx: &Tx<'_>) -> TxResult<()> {
        let meta = tx.t(TreeId::Meta);
        meta.insert(keys::meta::CHANGE_COUNTER, &self.change.to_be_bytes()[..])?;
        if let Some(g) = self.view_gen {
            meta.insert(keys::meta::VIEW_GENERATION, &g.to_be_bytes()[..])?;
        }
        Ok(())
    }
}

impl Writer {
    pub fn new(
        db: sled::Db,
        trees: Trees,
        segments: SegmentWriter,
        max_batch: usize,
        counters: Arc<Counters>,
        changes: Arc<watch::Sender<u64>>,
    ) -> Result<Self, StoreError> {
        let meta = trees.get(TreeId::Meta);
        let read = |k: &[u8]| -> Result<u64, StoreError> {
            match meta.get(k)? {
                Some(v) => records::u64_at(TreeId::Meta, k, &v, 0),
                None => Ok(0),
            }
        };
        let change = read(keys::meta::CHANGE_COUNTER)?;
        let view_gen = read(keys::meta::VIEW_GENERATION)?;
        counters.change.store(change, Ordering::SeqCst);
        changes.send_replace(change);
        Ok(Writer {
            db,
            trees,
            segments,
            max_batch,
            counters,
            changes,
            change,
            view_gen,
            dirty: false,
            flush_owed: false,
            view_log: VecDeque::new(),
            view_cache: HashMap::new(),
        })
    }

    /// The counters a change will write; `views` when it can alter team views.
    pub(super) fn bump(&self, views: bool) -> Bump {
        Bump {
            change: self.change.wrapping_add(1),
            view_gen: views.then(|| self.view_gen.wrapping_add(1)),
        }
    }

    /// Records that the transaction carrying `b` committed. A view change is logged as
    /// [`ViewChange::Everything`] until [`Writer::touched_only`] narrows it.
    pub(super) fn bumped(&mut self, b: Bump) {
        self.change = b.change;
        self.flag_log().push(b.change, None);
        if let Some(g) = b.view_gen {
            self.view_gen = g;
            if self.view_log.len() >= VIEW_LOG_LEN {
                self.view_log.pop_front();
            }
            self.view_log.push_back((g, ViewChange::Everything));
        }
        self.dirty = true;
    }

    fn flag_log(&self) -> std::sync::MutexGuard<'_, super::FlagLog> {
        // A poisoned log only costs sessions a full flag re-read; never panic on it.
        self.counters
            .flag_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Narrows the change just committed to writing the flags of these messages only.
    pub(super) fn flags_touched_only(&mut self, messages: Vec<MessageKey>) {
        self.flag_log().narrow(self.change, messages);
    }

    /// Narrows the view change just committed to these conversations.
    pub(super) fn touched_only(&mut self, conversations: Vec<ConversationId>) {
        if let Some((g, change)) = self.view_log.back_mut()
            && *g == self.view_gen
        {
            *change = ViewChange::Conversations(conversations);
        }
    }

    /// The conversations touched by every view generation after `since`, when the log
    /// still holds all of them and each said what it touched.
    pub(super) fn touched_since(&self, since: u64) -> Option<HashSet<ConversationId>> {
        let start = self.view_log.iter().position(|(g, _)| *g == since + 1)?;
        let mut touched = HashSet::new();
        let mut expected = since + 1;
        for (g, change) in self.view_log.iter().skip(start) {
            if *g != expected {
                return None;
            }
            match change {
                ViewChange::Conversations(ids) => touched.extend(ids.iter().copied()),
                ViewChange::Everything => return None,
            }
            expected += 1;
        }
        (expected == self.view_gen + 1).then_some(touched)
    }

    /// Keeps a view's entries as of its space's last sync.
    pub(super) fn remember_view(
        &mut self,
        name: &[u8],
        rec: &UidSpaceRecord,
        entries: &[(u32, Entry)],
    ) {
        if let Some(c) = self.view_cache.get(name)
            && c.space == rec.space
            && c.synced_at == rec.synced_at
        {
            return;
        }
        if self.view_cache.len() >= VIEW_CACHE_LEN {
            self.view_cache.clear();
        }
        self.view_cache.insert(
            name.to_vec(),
            CachedView {
                space: rec.space,
                synced_at: rec.synced_at,
                entries: entries.to_vec(),
            },
        );
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
                let _ = reply.send(backup::snapshot_into(&mut self, &dir, &segments_dir));
            }
        }
        let flushed = self.db.flush();
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
        self.dirty = false;
        for job in &mut jobs {
            let appended = match job {
                Job::Ingest { msg, loc, .. } => self.append_if_needed(msg).map(|l| *loc = l),
                Job::Op { op, loc, .. } => self.append_op_body(op).map(|l| *loc = l),
                Job::Queue { op, loc, .. } => self.append_queue_body(op).map(|l| *loc = l),
            };
            if let Err(e) = appended {
                match job {
                    Job::Ingest { result, .. } => *result = Some(Err(e)),
                    Job::Op { result, .. } => *result = Some(Err(e)),
                    Job::Queue { result, .. } => *result = Some(Err(e)),
                }
            }
        }
        let needs_barrier = self.segments.needs_sync();
        let synced = if needs_barrier {
            self.segments.sync()
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
                            *result = Some(self.commit_ingest(msg, *loc));
                        }
                        Job::Op {
                            op,
                            loc,
                            result: result @ None,
                            ..
                        } => {
                            *result = Some(self.run_op(op, *loc));
                        }
                        Job::Queue {
                            op,
                            loc,
                            result: result @ None,
                            ..
                        } => {
                            *result = Some(self.run_queue_op(op, *loc));
                        }
                        _ => {}
                    }
                }
                if needs_barrier || self.dirty || self.flush_owed {
                    self.counters.barriers.fetch_add(1, Ordering::Relaxed);
                    match self.db.flush() {
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
        self.counters
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for job in jobs {
            job.answer();
        }
    }

    /// Appends the body (and a quarantined original) unless every delivery is already a
    /// duplicate (then nothing is kept). A copy that turns out to be a duplicate of an
    /// earlier request of the same batch leaves unreferenced bytes: harmless.
    fn append_if_needed(
        &mut self,
        msg: &IncomingMessage,
    ) -> Result<Option<IngestLocs>, StoreError> {
        let mid = keys::normalize_message_id(&msg.summary.message_id);
        let mut any_new = false;
        for d in &msg.deliveries {
            let known = !mid.is_empty()
                && self
                    .trees
                    .get(TreeId::ByMessageId)
                    .contains_key(keys::by_message_id(&d.inbox, &mid))?;
            if !known {
                any_new = true;
                break;
            }
        }
        if !any_new {
            return Ok(None);
        }
        let body = self
            .segments
            .append(&msg.raw)
            .map_err(|e| StoreError::io("appending a message to the segment", e))?;
        let original = match quarantined_hits(msg) {
            Some((raw, _)) => Some(self.segments.append(raw).map_err(|e| {
                StoreError::io("appending a quarantined original to the segment", e)
            })?),
            None => None,
        };
        Ok(Some(IngestLocs { body, original }))
    }

    /// Runs the threading decision with read access to the indexes, and checks it.
    fn decide(&self, d: &Delivery) -> Result<ThreadDecision, StoreError> {
        let lookup = IndexLookup {
            trees: &self.trees,
            error: RefCell::new(None),
        };
        let decision = catch_unwind(AssertUnwindSafe(|| (d.decide)(&lookup))).map_err(|_| {
            StoreError::Internal(format!("threading decision for inbox {} panicked", d.inbox))
        })?;
        if let Some(e) = lookup.error.into_inner() {
            return Err(e);
        }
        let ThreadDecision::Join(id) = decision else {
            return Ok(decision);
        };
        match views::conversation_record(&self.trees, id)? {
            Some(rec) if rec.inbox == d.inbox || rec.former_inboxes.contains(&d.inbox) => {
                Ok(decision)
            }
            found => {
                // A bug in the decision, not in the mail: keep the mail, in its own inbox.
                tracing::warn!(
                    conversation = id.0,
                    inbox = %d.inbox,
                    other_inbox = found.as_ref().map(|r| r.inbox.as_str()),
                    "store: threading joined a conversation that is missing or in another \
                     inbox; starting a new one"
                );
                Ok(ThreadDecision::New { linked_to: None })
            }
        }
    }

    /// Makes the committed change counter visible (after a barrier).
    fn publish(&self) {
        self.counters.change.store(self.change, Ordering::SeqCst);
        let change = self.change;
        self.changes.send_if_modified(|v| {
            let modified = *v != change;
            *v = change;
            modified
        });
    }

    fn commit_ingest(
        &mut self,
        msg: &IncomingMessage,
        loc: Option<IngestLocs>,
    ) -> Result<IngestOutcome, StoreError> {
        let s = &msg.summary;
        let mid = keys::normalize_message_id(&s.message_id);
        let mut actions = Vec::with_capacity(msg.deliveries.len());
        let mut first_of_inbox: HashMap<&str, usize> = HashMap::new();
        for (i, d) in msg.deliveries.iter().enumerate() {
            if let Some(&j) = first_of_inbox.get(d.inbox.as_str()) {
                actions.push(Action::SameAs(j));
                continue;
            }
            first_of_inbox.insert(&d.inbox, i);
            if !mid.is_empty() {
                let k = keys::by_message_id(&d.inbox, &mid);
                if let Some(v) = self.trees.get(TreeId::ByMessageId).get(&k)? {
                    let conv = records::u64_at(TreeId::ByMessageId, &k, &v, 0)?;
                    actions.push(Action::Duplicate(ConversationId(conv)));
                    continue;
                }
            }
            actions.push(Action::Store(self.decide(d)?));
        }

        if !actions.iter().any(|a| matches!(a, Action::Store(_))) {
            let mut deliveries: Vec<(String, DeliveryOutcome)> = Vec::new();
            for (d, a) in msg.deliveries.iter().zip(&actions) {
                let conversation = match a {
                    Action::Duplicate(c) => *c,
                    Action::SameAs(j) => conversation_of(&deliveries, *j)?,
                    Action::Store(_) => return Err(StoreError::Internal("unreachable".into())),
                };
                deliveries.push((d.inbox.clone(), DeliveryOutcome::Duplicate { conversation }));
            }
            return Ok(IngestOutcome {
                message: None,
                deliveries,
            });
        }

        let locs = loc.ok_or_else(|| {
            StoreError::Internal("message body was not appended; retry the delivery".into())
        })?;
        let key = MessageKey(self.db.generate_id()?);
        let quarantine = match (quarantined_hits(msg), locs.original) {
            (None, _) => None,
            (Some((_, hits)), Some(original_loc)) => {
                let original = MessageRecord {
                    loc: original_loc,
                    received_at: msg.received_at,
                    mail_from: msg.mail_from.clone(),
                    rcpts: msg.rcpts.clone(),
                    summary: s.clone(),
                };
                Some(QuarantinePlan {
                    original: MessageKey(self.db.generate_id()?),
                    record: records::encode(TreeId::Messages, &original)?,
                    last_id: quarantine::last_id(&self.trees)?,
                    hits,
                })
            }
            (Some(_), None) => {
                return Err(StoreError::Internal(
                    "quarantined original was not appended; retry the delivery".into(),
                ));
            }
        };
        let record = MessageRecord {
            loc: locs.body,
            received_at: msg.received_at,
            mail_from: msg.mail_from.clone(),
            rcpts: msg.rcpts.clone(),
            summary: s.clone(),
        };
        let participants: BTreeSet<String> = s
            .from
            .iter()
            .chain(&s.to)
            .chain(&s.cc)
            .map(|a| keys::normalize_email(&a.email))
            .filter(|e| !e.is_empty())
            .collect();
        let references: BTreeSet<String> = s
            .references
            .iter()
            .map(|r| keys::normalize_message_id(r))
            .filter(|r| !r.is_empty() && *r != mid)
            .collect();
        let bump = self.bump(true);
        let plan = Plan {
            bump,
            key,
            record: records::encode(TreeId::Messages, &record)?,
            mid,
            references,
            participants,
            msg,
            actions,
            quarantine,
        };
        let deliveries = self.trees.all[..]
            .transaction(|trees| apply_ingest(&Tx(trees), &plan))
            .map_err(tx_error)?;
        self.bumped(bump);
        // Ingest writes no flags of messages already stored.
        self.flags_touched_only(Vec::new());
        // A quarantined original is in no view; only the conversations filed into change.
        self.touched_only(
            deliveries
                .iter()
                .filter_map(|(_, o)| match o {
                    DeliveryOutcome::Stored { conversation, .. } => Some(*conversation),
                    _ => None,
                })
                .collect(),
        );
        Ok(IngestOutcome {
            message: Some(key),
            deliveries,
        })
    }
}

fn conversation_of(
    outcomes: &[(String, DeliveryOutcome)],
    i: usize,
) -> Result<ConversationId, StoreError> {
    match outcomes.get(i) {
        Some((_, DeliveryOutcome::Stored { conversation, .. }))
        | Some((_, DeliveryOutcome::Duplicate { conversation })) => Ok(*conversation),
        None => Err(StoreError::Internal("delivery order".into())),
    }
}

/// The original bytes and hits of a message with quarantined attachments; `None` when it
/// has none (no `quarantined`, or no hits).
fn quarantined_hits(msg: &IncomingMessage) -> Option<(&[u8], &[QuarantineHit])> {
    msg.quarantined
        .as_ref()
        .filter(|q| !q.hits.is_empty())
        .map(|q| (q.raw.as_slice(), q.hits.as_slice()))
}

/// The quarantine part of an ingest's transaction.
struct QuarantinePlan<'a> {
    /// The key of the original's message record.
    original: MessageKey,
    record: Vec<u8>,
    /// The last quarantine id handed out before this message.
    last_id: u64,
    hits: &'a [QuarantineHit],
}

/// What to do with one delivery, decided before the transaction.
enum Action {
    /// The Message-ID is already in this inbox.
    Duplicate(ConversationId),
    /// A second delivery to the same inbox as delivery `.0` of this message.
    SameAs(usize),
    Store(ThreadDecision),
}

/// Everything the transaction writes, computed beforehand so the closure stays pure.
struct Plan<'a> {
    bump: Bump,
    key: MessageKey,
    record: Vec<u8>,
    /// Normalised Message-ID ("" when the message has none: not indexed).
    mid: String,
    references: BTreeSet<String>,
    participants: BTreeSet<String>,
    msg: &'a IncomingMessage,
    actions: Vec<Action>,
    quarantine: Option<QuarantinePlan<'a>>,
}

pub type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub fn abort_with(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

pub fn abort<T>(r: Result<T, StoreError>) -> TxResult<T> {
    r.map_err(abort_with)
}

pub fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

/// The transactional views of every tree, addressed by [`TreeId`].
pub struct Tx<'a>(pub &'a [TransactionalTree]);

impl Tx<'_> {
    pub fn t(&self, id: TreeId) -> &TransactionalTree {
        &self.0[id.index()]
    }
}

fn apply_ingest(tx: &Tx<'_>, plan: &Plan<'_>) -> TxResult<Vec<(String, DeliveryOutcome)>> {
    tx.t(TreeId::Messages)
        .insert(&keys::message(plan.key)[..], plan.record.as_slice())?;
    plan.bump.write(tx)?;
    let mut outcomes: Vec<(String, DeliveryOutcome)> = Vec::with_capacity(plan.actions.len());
    let mut last_quarantine_id = plan.quarantine.as_ref().map(|q| q.last_id);
    for (d, action) in plan.msg.deliveries.iter().zip(&plan.actions) {
        let outcome = match action {
            Action::Duplicate(conversation) => DeliveryOutcome::Duplicate {
                conversation: *conversation,
            },
            Action::SameAs(j) => DeliveryOutcome::Duplicate {
                conversation: abort(conversation_of(&outcomes, *j))?,
            },
            Action::Store(decision) => {
                let outcome = store_delivery(tx, plan, d, decision)?;
                if let (Some(q), Some(last), DeliveryOutcome::Stored { conversation, .. }) =
                    (&plan.quarantine, last_quarantine_id.as_mut(), &outcome)
                {
                    for hit in q.hits {
                        *last = last.checked_add(1).ok_or_else(|| {
                            abort_with(StoreError::Internal("quarantine ids exhausted".into()))
                        })?;
                        let rec = records::QuarantineRecord {
                            id: QuarantineId(*last),
                            message_id: quarantine::bare_message_id(&plan.msg.summary.message_id),
                            inbox: d.inbox.clone(),
                            conversation: Some(*conversation),
                            filename: hit.filename.clone(),
                            reason: hit.reason.clone(),
                            at: plan.msg.received_at,
                            original: q.original,
                            stripped: Some(plan.key),
                            released: false,
                            released_as: None,
                            released_at: None,
                        };
                        quarantine::insert(tx, &rec)?;
                    }
                }
                outcome
            }
        };
        outcomes.push((d.inbox.clone(), outcome));
    }
    if let (Some(q), Some(last)) = (&plan.quarantine, last_quarantine_id) {
        tx.t(TreeId::Messages)
            .insert(&keys::message(q.original)[..], q.record.as_slice())?;
        tx.t(TreeId::Meta)
            .insert(keys::meta::LAST_QUARANTINE_ID, &last.to_be_bytes()[..])?;
    }
    Ok(outcomes)
}

fn next_conversation_id(tx: &Tx<'_>) -> TxResult<ConversationId> {
    let meta = tx.t(TreeId::Meta);
    let k = keys::meta::LAST_CONVERSATION;
    let last = match meta.get(k)? {
        Some(v) => abort(records::u64_at(TreeId::Meta, k, &v, 0))?,
        None => 0,
    };
    let id = last.checked_add(1).ok_or_else(|| {
        abort_with(StoreError::Internal(
            "conversation numbers exhausted".into(),
        ))
    })?;
    meta.insert(k, &id.to_be_bytes()[..])?;
    Ok(ConversationId(id))
}

/// Participants remembered per conversation (threading's participant rule reads them).
const MAX_PARTICIPANTS: usize = 1000;

fn store_delivery(
    tx: &Tx<'_>,
    plan: &Plan<'_>,
    d: &Delivery,
    decision: &ThreadDecision,
) -> TxResult<DeliveryOutcome> {
    let msg = plan.msg;
    let at = msg.received_at;
    let (mut conv, created, reopened) = match decision {
        ThreadDecision::Join(id) => {
            let k = keys::conversation(*id);
            let Some(v) = tx.t(TreeId::Conversations).get(k)? else {
                return Err(abort_with(StoreError::NotFound(format!(
                    "conversation {}",
                    id.0
                ))));
            };
            let mut rec: ConversationRecord =
                abort(records::decode(TreeId::Conversations, &k, &v))?;
            // SPEC §4: a reply to a closed conversation reopens it; trash stays trash.
            // Only a reply from outside does: an out-of-office or bounce is filed without
            // reopening, and so is the team's own reply or note (an agent's last word
            // before or after closing must not put it back in everyone's inbox).
            let reopened = rec.status == Status::Closed
                && !msg.summary.automatic
                && msg.summary.direction == Direction::In;
            if reopened {
                rec.status = Status::Open;
                rec.closed_at = None;
            }
            (rec, false, reopened)
        }
        ThreadDecision::New { linked_to } => {
            let id = next_conversation_id(tx)?;
            let rec = ConversationRecord {
                id,
                inbox: d.inbox.clone(),
                status: Status::Open,
                assignee: None,
                subject: msg.summary.subject.clone(),
                customer: d
                    .contacts
                    .iter()
                    .find(|c| c.is_customer)
                    .map(|c| keys::normalize_email(&c.email))
                    .filter(|e| !e.is_empty()),
                linked_to: *linked_to,
                participants: BTreeSet::new(),
                created: at,
                updated: at,
                closed_at: None,
                former_inboxes: BTreeSet::new(),
            };
            (rec, true, false)
        }
    };
    conv.updated = at;
    // Bounded: the record is read and rewritten on every message of the conversation, and
    // a sender controls how many addresses a message names.
    for p in &plan.participants {
        if conv.participants.len() >= MAX_PARTICIPANTS {
            break;
        }
        conv.participants.insert(p.clone());
    }
    let id = conv.id;
    let inbox = d.inbox.as_str();
    tx.t(TreeId::Conversations).insert(
        &keys::conversation(id)[..],
        abort(records::encode(TreeId::Conversations, &conv))?,
    )?;
    tx.t(TreeId::ConvMessages)
        .insert(&keys::conv_message(id, plan.key)[..], &[][..])?;
    tx.t(TreeId::MessageConvs)
        .insert(&keys::message_conv(plan.key, id)[..], &[][..])?;
    if !plan.mid.is_empty() {
        tx.t(TreeId::ByMessageId).insert(
            keys::by_message_id(inbox, &plan.mid),
            &keys::msgid_value(id, plan.key)[..],
        )?;
    }
    for r in &plan.references {
        tx.t(TreeId::ReferencedBy)
            .insert(keys::referenced_by(inbox, r, id), &[][..])?;
    }
    if let Some(ti) = &d.keys.thread_index {
        tx.t(TreeId::ByThreadIndex)
            .insert(keys::by_thread_index(inbox, ti), &id.0.to_be_bytes()[..])?;
    }
    if let (Some(subject), Some(customer)) = (&d.keys.subject_base, &conv.customer) {
        tx.t(TreeId::BySubject).insert(
            keys::by_subject(inbox, subject, customer),
            &keys::subject_value(id, at, plan.key)[..],
        )?;
    }
    for touch in &d.contacts {
        touch_contact(tx, plan, touch, id)?;
    }
    Ok(DeliveryOutcome::Stored {
        conversation: id,
        created,
        reopened,
    })
}

/// A display name worth keeping: present, not empty, not just the address again.
fn real_name<'a>(name: Option<&'a str>, email: &str) -> Option<&'a str> {
    name.map(str::trim)
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(email))
}

fn touch_contact(
    tx: &Tx<'_>,
    plan: &Plan<'_>,
    touch: &ContactTouch,
    conv: ConversationId,
) -> TxResult<()> {
    let email = keys::normalize_email(&touch.email);
    if email.is_empty() {
        return Ok(());
    }
    let at = plan.msg.received_at;
    let contacts = tx.t(TreeId::Contacts);
    let ck = keys::contact(&email);
    let mut rec = match contacts.get(&ck)? {
        Some(v) => abort(records::decode::<ContactRecord>(TreeId::Contacts, &ck, &v))?,
        None => ContactRecord {
            email: email.clone(),
            name: None,
            first_seen: at,
            last_seen: at,
            timeline_next: 0,
        },
    };
    rec.first_seen = rec.first_seen.min(at);
    rec.last_seen = rec.last_seen.max(at);
    // A real display name replaces a missing one or a bare address, never another name.
    if real_name(rec.name.as_deref(), &email).is_none()
        && let Some(n) = real_name(touch.name.as_deref(), &email)
    {
        rec.name = Some(n.to_owned());
    }
    for (kind, detail) in &touch.events {
        let entry = TimelineRecord {
            at,
            kind: *kind,
            conversation: Some(conv),
            message_id: Some(plan.msg.summary.message_id.clone()),
            detail: detail.clone(),
        };
        tx.t(TreeId::Timeline).insert(
            keys::timeline(&email, rec.timeline_next),
            abort(records::encode(TreeId::Timeline, &entry))?,
        )?;
        rec.timeline_next += 1;
    }
    tx.t(TreeId::ContactConvs)
        .insert(keys::contact_conv(&email, conv), &[][..])?;
    contacts.insert(ck, abort(records::encode(TreeId::Contacts, &rec))?)?;
    Ok(())
}

/// [`ThreadLookup`] over the committed indexes. Runs on the writer, so it sees every
/// earlier request (including those of the current batch). Read errors cannot go
/// through the trait: the first one is kept and fails the request afterwards.
struct IndexLookup<'a> {
    trees: &'a Trees,
    error: RefCell<Option<StoreError>>,
}

impl IndexLookup<'_> {
    fn keep<T>(&self, r: Result<Option<T>, StoreError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            let mut slot = self.error.borrow_mut();
            if slot.is_none() {
                *slot = Some(e);
            }
            None
        })
    }

    fn conv_at(&self, tree: TreeId, key: &[u8]) -> Result<Option<ConversationId>, StoreError> {
        match self.trees.get(tree).get(key)? {
            Some(v) => Ok(Some(ConversationId(records::u64_at(tree, key, &v, 0)?))),
            None => Ok(None),
        }
    }
}

impl ThreadLookup for IndexLookup<'_> {
    fn by_message_id(&self, inbox: &str, message_id: &str) -> Option<ConversationId> {
        if keys::normalize_message_id(message_id).is_empty() {
            return None;
        }
        self.keep(self.conv_at(TreeId::ByMessageId, &keys::by_message_id(inbox, message_id)))
    }

    fn referencing(&self, inbox: &str, message_id: &str) -> Option<ConversationId> {
        if keys::normalize_message_id(message_id).is_empty() {
            return None;
        }
        let prefix = keys::referenced_by_prefix(inbox, message_id);
        // Several conversations may name it (an announcement's replies): the newest wins.
        let r = match self
            .trees
            .get(TreeId::ReferencedBy)
            .scan_prefix(&prefix)
            .next_back()
        {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok((k, _))) => keys::suffix_u64(&k)
                .map(|id| Some(ConversationId(id)))
                .ok_or_else(|| records::corrupt(TreeId::ReferencedBy, &k, "short key")),
        };
        self.keep(r)
    }

    fn conversation(&self, id: ConversationId) -> Option<ConversationInfo> {
        self.keep(views::conversation_record(self.trees, id).map(|r| r.map(|r| r.info())))
    }

    fn by_thread_index(&self, inbox: &str, key: &[u8]) -> Option<ConversationId> {
        self.keep(self.conv_at(TreeId::ByThreadIndex, &keys::by_thread_index(inbox, key)))
    }

    fn by_subject(
        &self,
        inbox: &str,
        subject_base: &str,
        contact: &str,
    ) -> Option<(ConversationId, i64)> {
        let k = keys::by_subject(inbox, subject_base, contact);
        let r = (|| {
            let Some(v) = self.trees.get(TreeId::BySubject).get(&k)? else {
                return Ok(None);
            };
            let e = keys::subject_entry(&v)
                .ok_or_else(|| records::corrupt(TreeId::BySubject, &k, "short value"))?;
            Ok(Some((e.conv, e.at)))
        })();
        self.keep(r)
    }

    fn by_subject_any(&self, inbox: &str, subject_base: &str) -> Vec<(ConversationId, i64)> {
        /// A subject shared by more conversations than this is too generic to thread on.
        const MAX_CANDIDATES: usize = 16;
        let prefix = keys::by_subject_prefix(inbox, subject_base);
        let tree = TreeId::BySubject;
        let r = (|| {
            let mut found = Vec::new();
            for kv in self
                .trees
                .get(tree)
                .scan_prefix(&prefix)
                .take(MAX_CANDIDATES * 4)
            {
                let (k, v) = kv?;
                found.push(
                    keys::subject_entry(&v)
                        .ok_or_else(|| records::corrupt(tree, &k, "short value"))?,
                );
            }
            // Newest first; the message key breaks ties within one second.
            found.sort_by_key(|e| std::cmp::Reverse(e.recency()));
            found.truncate(MAX_CANDIDATES);
            Ok(Some(found.into_iter().map(|e| (e.conv, e.at)).collect()))
        })();
        self.keep(r).unwrap_or_default()
    }
}
