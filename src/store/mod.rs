//! The store: conversations, messages, contacts, indexes. The only module that touches
//! sled or the message segment files; everything else uses the typed API below, with the
//! backend-neutral domain types of [`model`].
//!
//! Layout (GUIDE §0): sled at `<data_dir>/meta` holds metadata and indexes (trees and key
//! formats in [`keys`]); message bodies are appended to `<data_dir>/segments/*.seg`
//! ([`blobs`]). One writer thread ([`writer`]) performs every mutation, one sled
//! transaction per request, and answers a batch of requests only after one durability
//! barrier (segment fdatasync, then `Db::flush`): group commit. Reads are synchronous
//! sled lookups and may run on any thread (async callers use `spawn_blocking` for scans).
//! [`Store::open`] checks the schema version and that every message record points at an
//! intact record header ([`recovery`]).
//!
//! IMAP mailboxes (GUIDE §0b, SPEC §5): every team view ([`TeamView`]) and private folder
//! ([`FolderId`]) has a persistent UID space. Views are predicates over conversations
//! ([`membership`]); their spaces are brought up to date by [`Store::sync_view`] on the
//! writer ([`ops`]). Flags are one shared record plus a per-agent byte ([`flags`]).
//! Every durable change bumps a store-wide counter, published after its barrier
//! ([`Store::subscribe`]) for IDLE.
//!
//! Spam and attachments (SPEC §7): junk records ([`junk`]: `Store::junk`, `mark_junk`,
//! the `Junk` view) and quarantine records ([`quarantine`]: originals kept whole, released
//! as a new revision of the conversation's message) point at ordinary message records.
//!
//! Backups (`backup.rs`, layout in `backup_format.rs`): [`Store::backup_snapshot`] exports
//! sled on the writer between two batches and records the segments' lengths;
//! [`finish_backup`] copies the segments up to those lengths and writes the manifest;
//! [`restore`] (`restore.rs`) rebuilds a stopped, empty data directory from a verified
//! backup.

mod backup;
mod backup_format;
mod blobs;
mod flags;
mod ingest_tx;
mod junk;
pub mod keys;
mod lookup;
mod membership;
pub mod model;
mod ops;
mod quarantine;
mod queue;
mod records;
mod recovery;
mod restore;
mod thread_lookup;
mod tx;
mod views;
mod writer;
mod writer_state;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use backup::finish_backup;
pub use backup_format::{BackupManifest, BackupSegment, BackupSnapshot, MetaExport, SegmentLen};
pub use model::*;
pub use restore::{RestoreReport, restore, verify_backup};

use keys::TreeId;
use records::MessageRecord;
use writer::{Op, OpOutput, Request};

/// Tuning knobs of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A new segment file is started when an append would grow the current one past
    /// this. 64 MiB: few files, and a backup can copy whole segments cheaply.
    pub segment_max_bytes: u64,
    /// sled page cache. 64 MiB instead of sled's 1 GiB default: sled holds only small
    /// metadata records here, the bodies live in segments.
    pub cache_capacity_bytes: u64,
    /// Most requests answered by one durability barrier. 256 covers every SMTP session
    /// a busy gateway has in DATA at once; the bound keeps a batch's latency finite.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_max_bytes: 64 << 20,
            cache_capacity_bytes: 64 << 20,
            max_batch: 256,
        }
    }
}

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
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What [`Store::open`] found while checking the data directory. Problems are reported
/// here (and logged by the caller), never turned into a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Message records whose body location was checked.
    pub messages_checked: u64,
    /// Junk records checked (each must name a message with intact bytes).
    pub junk_checked: u64,
    /// Quarantine records checked (original, stripped copy and released revision must
    /// name messages with intact bytes).
    pub quarantine_checked: u64,
    /// One line per message record that does not point at an intact record, and per junk
    /// or quarantine record naming a message that is missing or damaged.
    pub bad_records: Vec<String>,
    /// Bytes cut off the end of the last segment (a torn or garbage tail).
    pub truncated_tail_bytes: u64,
}

/// Counters for the CLI and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    pub conversations: u64,
    pub messages: u64,
    pub contacts: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// sled's files (metadata and indexes).
    pub db_bytes: u64,
    /// Durability barriers (segment fdatasync + sled flush) run since open; with group
    /// commit this is far below the number of requests.
    pub barriers: u64,
    /// Requests (ingests, status changes) answered since open.
    pub requests: u64,
    /// Outgoing messages waiting in the queue.
    #[serde(default)]
    pub queued: u64,
}

/// Counters shared between the writer and the handles.
#[derive(Debug, Default)]
struct Counters {
    barriers: AtomicU64,
    requests: AtomicU64,
    /// The store-wide change counter as of the last barrier.
    change: AtomicU64,
    /// Whose flags each recent change wrote (the writer appends, sessions read).
    flag_log: Mutex<FlagLog>,
}

/// The messages whose flags each recent change (by change counter) may have altered,
/// oldest first: `None` when the change did not say. Lets an IMAP session re-read only
/// those flags instead of all of its mailbox's.
#[derive(Debug, Default)]
struct FlagLog {
    changes: std::collections::VecDeque<(u64, Option<Vec<MessageKey>>)>,
}

impl FlagLog {
    /// Changes remembered; a session further behind re-reads every flag.
    const LEN: usize = 4096;

    fn push(&mut self, change: u64, keys: Option<Vec<MessageKey>>) {
        if self.changes.len() >= Self::LEN {
            self.changes.pop_front();
        }
        self.changes.push_back((change, keys));
    }

    /// Messages one change may name; a bulk STORE past it stays unnamed (sessions re-read
    /// every flag once), so the log holds at most `LEN * MAX_KEYS` keys.
    const MAX_KEYS: usize = 1024;

    /// Narrows the entry of `change` (the latest) to `keys`.
    fn narrow(&mut self, change: u64, keys: Vec<MessageKey>) {
        if keys.len() > Self::MAX_KEYS {
            return;
        }
        if let Some((c, k)) = self.changes.back_mut()
            && *c == change
        {
            *k = Some(keys);
        }
    }

    /// Every message whose flags a change after `since` altered, when all of those
    /// changes are remembered and each said which.
    fn since(&self, since: u64) -> Option<HashSet<MessageKey>> {
        let start = self.changes.iter().position(|(c, _)| *c == since + 1);
        let Some(start) = start else {
            // Nothing after `since` yet, or `since` is older than the log.
            return self
                .changes
                .back()
                .is_none_or(|(c, _)| *c <= since)
                .then(HashSet::new);
        };
        let mut keys = HashSet::new();
        for (expected, (c, k)) in (since + 1..).zip(self.changes.iter().skip(start)) {
            if *c != expected {
                return None;
            }
            keys.extend(k.as_ref()?.iter().copied());
        }
        Some(keys)
    }
}

/// The trees of [`keys::TreeId`], in that order.
#[derive(Clone)]
struct Trees {
    all: [sled::Tree; TreeId::ALL.len()],
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let opened = TreeId::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let all = opened
            .try_into()
            .map_err(|_| StoreError::Internal("tree count mismatch".into()))?;
        Ok(Trees { all })
    }

    fn get(&self, id: TreeId) -> &sled::Tree {
        &self.all[id.index()]
    }
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    meta_dir: PathBuf,
    segments_dir: PathBuf,
    requests: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    changes: Arc<watch::Sender<u64>>,
    /// Poked when the outbound queue gains due work (see `queue.rs`).
    queue_wake: Arc<Notify>,
}

/// Handle on an open store. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("segments_dir", &self.inner.segments_dir)
            .finish_non_exhaustive()
    }
}

fn map_open_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        // sled 0.34.7 config.rs `try_lock`: an `Other` io error with this text when the
        // flock on `<path>/db` is held (by another process or another open handle).
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked(format!("{}: {io}", path.display()))
        }
        other => StoreError::Db(other),
    }
}

fn check_schema(db: &sled::Db, trees: &Trees) -> Result<(), StoreError> {
    let meta = trees.get(TreeId::Meta);
    match meta.get(keys::meta::SCHEMA_VERSION)? {
        None => {
            meta.insert(
                keys::meta::SCHEMA_VERSION,
                &keys::SCHEMA_VERSION.to_be_bytes(),
            )?;
            db.flush()?;
            Ok(())
        }
        Some(v) => match keys::be_u32(&v) {
            Some(found) if found > keys::SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                found,
                supported: keys::SCHEMA_VERSION,
            }),
            Some(keys::SCHEMA_VERSION) => Ok(()),
            _ => Err(records::corrupt(
                TreeId::Meta,
                keys::meta::SCHEMA_VERSION,
                format!("unknown schema version value {v:?}"),
            )),
        },
    }
}

/// Fills `message_convs` from `conv_messages` once (data written before that tree
/// existed); later ingests keep it up to date in their own transaction.
fn build_message_convs(db: &sled::Db, trees: &Trees) -> Result<(), StoreError> {
    let meta = trees.get(TreeId::Meta);
    if meta.contains_key(keys::meta::MESSAGE_CONVS_BUILT)? {
        return Ok(());
    }
    let reverse = trees.get(TreeId::MessageConvs);
    for kv in trees.get(TreeId::ConvMessages).iter() {
        let (k, _) = kv?;
        let conv = records::u64_at(TreeId::ConvMessages, &k, &k, 0)?;
        let msg = records::u64_at(TreeId::ConvMessages, &k, &k, 8)?;
        reverse.insert(
            keys::message_conv(MessageKey(msg), ConversationId(conv)),
            &[][..],
        )?;
    }
    meta.insert(keys::meta::MESSAGE_CONVS_BUILT, &[][..])?;
    db.flush()?;
    Ok(())
}

/// How long a handle dropped in this process may keep sled's lock: sled's background
/// threads hold the lock file for a moment after the last `Db` handle is dropped
/// (measured: an immediate reopen failed about once in 300 tries).
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(1);

fn open_sled(meta_dir: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(meta_dir)
            .cache_capacity(cache_capacity)
            .open();
        match opened.map_err(|e| map_open_error(meta_dir, e)) {
            Err(StoreError::Locked(_)) if started.elapsed() < LOCK_RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Waits until sled's lock file in `meta_dir` is free (probing with our own flock,
/// released at once), at most [`LOCK_RELEASE_WAIT`].
async fn wait_for_unlock(meta_dir: &Path) {
    let started = Instant::now();
    let Ok(file) = std::fs::File::open(meta_dir.join("db")) else {
        return;
    };
    while started.elapsed() < LOCK_RELEASE_WAIT {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(std::fs::TryLockError::Error(_)) => return,
        }
    }
    tracing::warn!(dir = %meta_dir.display(), "store: sled lock still held after close");
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`: sled at `<data_dir>/meta`,
    /// segments in `<data_dir>/segments`. Checks the schema version, verifies message
    /// records against their segments and cuts a torn tail off the last segment.
    pub fn open(
        data_dir: &Path,
        opts: StoreOptions,
    ) -> Result<(Store, RecoveryReport), StoreError> {
        let segments_dir = data_dir.join("segments");
        std::fs::create_dir_all(&segments_dir)
            .map_err(|e| StoreError::io(format!("creating {}", segments_dir.display()), e))?;
        let meta_dir = data_dir.join("meta");
        let db = open_sled(&meta_dir, opts.cache_capacity_bytes)?;
        let trees = Trees::open(&db)?;
        check_schema(&db, &trees)?;
        build_message_convs(&db, &trees)?;
        let (report, last) = recovery::recover(&trees, &segments_dir)?;
        let segments = blobs::SegmentWriter::open(&segments_dir, opts.segment_max_bytes, last)
            .map_err(|e| StoreError::io("opening the last segment", e))?;
        let counters = Arc::new(Counters::default());
        let max_batch = opts.max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(2));
        let changes = Arc::new(watch::Sender::new(0));
        let w = writer::Writer::new(
            db.clone(),
            trees.clone(),
            segments,
            max_batch,
            counters.clone(),
            changes.clone(),
        )?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::io("starting the store writer thread", e))?;
        let inner = Inner {
            db,
            trees,
            meta_dir,
            segments_dir,
            requests: tx,
            counters,
            changes,
            queue_wake: Arc::new(Notify::new()),
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    async fn request<T>(
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

    /// Stores `msg` durably: answers only after the durability barrier that covers it.
    pub async fn ingest(&self, msg: IncomingMessage) -> Result<IngestOutcome, StoreError> {
        self.request(|reply| Request::Ingest {
            msg: Box::new(msg),
            reply,
        })
        .await
    }

    /// Sets a conversation's status, durably (as `conversation_action(SetStatus)`).
    pub async fn set_status(&self, id: ConversationId, status: Status) -> Result<(), StoreError> {
        self.conversation_action(id, ConversationAction::SetStatus(status))
            .await
    }

    async fn op(&self, op: Op) -> Result<OpOutput, StoreError> {
        self.request(|reply| Request::Op {
            op: Box::new(op),
            reply,
        })
        .await
    }

    async fn op_done(&self, op: Op) -> Result<(), StoreError> {
        match self.op(op).await? {
            OpOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn op_snapshot(&self, op: Op) -> Result<MailboxSnapshot, StoreError> {
        match self.op(op).await? {
            OpOutput::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Brings the view's UID space up to date and returns it. Runs on the writer (it may
    /// assign UIDs, durably before it returns): entries whose conversation no longer
    /// matches are removed (expunged from this view); entries that now match and have no
    /// UID get the next UIDs in arrival order, so a message that leaves and re-enters gets
    /// a new uid. The space and its UIDVALIDITY are created on first use; one space per
    /// distinct `TeamView` value, shared by every agent asking for that value. All
    /// messages of a matching conversation are in the view, except for `Sent` (only
    /// outgoing ones); `Junk` holds the junk records of its inboxes instead (entries
    /// without a conversation). Cheap when nothing that can change views happened since the
    /// space's last sync; otherwise O(conversations) (see `ops`).
    pub async fn sync_view(&self, view: &TeamView) -> Result<MailboxSnapshot, StoreError> {
        self.op_snapshot(Op::SyncView(view.clone())).await
    }

    /// The folder's UID space. `NotFound` if it does not exist.
    pub async fn sync_folder(&self, folder: &FolderId) -> Result<MailboxSnapshot, StoreError> {
        self.op_snapshot(Op::SyncFolder(folder.clone())).await
    }

    /// The store-wide change counter as of the last durability barrier (no writer
    /// round trip). Never goes back, also across restarts.
    pub fn change_counter(&self) -> u64 {
        self.inner.counters.change.load(Ordering::SeqCst)
    }

    /// Notified (after the barrier) with the new change counter on every durable change
    /// that can alter a mailbox or flags: ingest, conversation actions, flag stores,
    /// folder changes, junk (`junk`, `junk_remove`, `mark_junk`), quarantine releases.
    /// IMAP sessions await it (IDLE) and resync.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub fn message_meta(&self, key: MessageKey) -> Result<Option<MessageMeta>, StoreError> {
        let t = &self.inner.trees;
        let Some(rec) = views::message_record(t, key)? else {
            return Ok(None);
        };
        let conversation = match t
            .get(TreeId::MessageConvs)
            .scan_prefix(keys::message_convs_prefix(key))
            .next()
        {
            None => None,
            Some(kv) => {
                let (k, _) = kv?;
                Some(ConversationId(records::u64_at(
                    TreeId::MessageConvs,
                    &k,
                    &k,
                    8,
                )?))
            }
        };
        Ok(Some(MessageMeta {
            received_at: rec.received_at,
            size: rec.loc.len,
            direction: rec.summary.direction,
            message_id: rec
                .summary
                .message_id
                .trim()
                .trim_matches(['<', '>'])
                .to_owned(),
            conversation,
            author: rec.summary.author.clone(),
        }))
    }

    /// Flags as `agent` sees them: `\Seen` and `\Flagged` are per agent; `\Answered`,
    /// `\Deleted`, `\Draft` and every keyword are shared by everyone seeing the message.
    pub fn flags(&self, agent: &str, key: MessageKey) -> Result<Flags, StoreError> {
        flags::read(&self.inner.trees, agent, key)
    }

    /// The messages whose flags changed after change `since` (see [`Store::change_counter`]),
    /// when the store still knows; `None`: re-read them all.
    pub fn flags_changed_since(&self, since: u64) -> Option<HashSet<MessageKey>> {
        self.inner
            .counters
            .flag_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .since(since)
    }

    pub fn flags_many(&self, agent: &str, keys: &[MessageKey]) -> Result<Vec<Flags>, StoreError> {
        keys.iter()
            .map(|k| flags::read(&self.inner.trees, agent, *k))
            .collect()
    }

    /// Applies a STORE; returns the resulting flags per key (as `agent` sees them).
    /// Durable when it returns; `NotFound` (and nothing changed) if a key is unknown.
    pub async fn store_flags(
        &self,
        agent: &str,
        keys: Vec<MessageKey>,
        op: FlagOp,
        flags: Flags,
    ) -> Result<Vec<Flags>, StoreError> {
        let op = Op::StoreFlags {
            agent: agent.to_owned(),
            keys,
            op,
            flags,
        };
        match self.op(op).await? {
            OpOutput::Flags(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    /// One conversation-wide action in one transaction, durable when it returns.
    /// `SetStatus(Closed)` records `closed_at` (for `Closed/<year>`), any other status
    /// clears it. `Transfer` moves the conversation and its threading index entries to
    /// another inbox. An action that changes nothing writes nothing.
    pub async fn conversation_action(
        &self,
        id: ConversationId,
        action: ConversationAction,
    ) -> Result<(), StoreError> {
        self.op_done(Op::Action { id, action }).await
    }

    /// `AlreadyExists` if it exists.
    pub async fn folder_create(&self, folder: &FolderId) -> Result<(), StoreError> {
        self.op_done(Op::FolderCreate(folder.clone())).await
    }

    /// Removes the folder and its entries (the bytes stay in the segments).
    pub async fn folder_delete(&self, folder: &FolderId) -> Result<(), StoreError> {
        self.op_done(Op::FolderDelete(folder.clone())).await
    }

    /// Renames one folder (not its children: the IMAP layer renames each), keeping its
    /// UIDVALIDITY and UIDs. `AlreadyExists` if `to` exists.
    pub async fn folder_rename(&self, from: &FolderId, to: &FolderId) -> Result<(), StoreError> {
        self.op_done(Op::FolderRename {
            from: from.clone(),
            to: to.clone(),
        })
        .await
    }

    /// The names of `owner`'s folders, sorted (by their stored byte order).
    pub fn folder_list(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let prefix = keys::folder_spaces_prefix(owner);
        let mut names = self
            .inner
            .trees
            .get(TreeId::UidSpaces)
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, _) = kv?;
                keys::folder_name(&k, &prefix)
                    .ok_or_else(|| records::corrupt(TreeId::UidSpaces, &k, "bad folder key"))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        names.sort();
        Ok(names)
    }

    /// Stores `raw` durably (segment + barrier, as ingest) as a new message of the folder
    /// with these flags and INTERNALDATE; returns (UIDVALIDITY, uid). The caller parses
    /// the message (`summary`); the store never reads message bytes.
    pub async fn folder_append(
        &self,
        folder: &FolderId,
        raw: Vec<u8>,
        summary: MessageSummary,
        flags: Flags,
        internal_date: i64,
    ) -> Result<(u32, u32), StoreError> {
        let op = Op::FolderAppend {
            folder: folder.clone(),
            raw,
            summary: Box::new(summary),
            flags,
            internal_date,
        };
        match self.op(op).await? {
            OpOutput::Appended(v, u) => Ok((v, u)),
            other => Err(unexpected(other)),
        }
    }

    /// Copies messages (team or folder) into a folder without copying bytes: each copy is
    /// a new message key (its own flags, starting as the source's as the folder owner
    /// sees them) pointing at the same stored body. Returns (UIDVALIDITY, new uids in
    /// order). `NotFound` (and nothing copied) if a key is unknown.
    pub async fn folder_copy(
        &self,
        folder: &FolderId,
        keys: Vec<MessageKey>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let op = Op::FolderCopy {
            folder: folder.clone(),
            keys,
        };
        match self.op(op).await? {
            OpOutput::Copied(v, u) => Ok((v, u)),
            other => Err(unexpected(other)),
        }
    }

    /// Removes these uids from the folder (EXPUNGE, UID EXPUNGE, MOVE out); unknown uids
    /// are ignored.
    pub async fn folder_expunge(
        &self,
        folder: &FolderId,
        uids: Vec<u32>,
    ) -> Result<(), StoreError> {
        self.op_done(Op::FolderExpunge {
            folder: folder.clone(),
            uids,
        })
        .await
    }

    /// Stops the writer after it has answered every request queued before this call, and
    /// flushes. The sled lock is released once every clone of this handle is dropped;
    /// when this was the last one, returns only after the lock is free (so the same
    /// process can open the directory again at once).
    pub async fn close(self) -> Result<(), StoreError> {
        let result = self.request(|reply| Request::Close { reply }).await;
        let meta_dir = self.inner.meta_dir.clone();
        if let Some(inner) = Arc::into_inner(self.inner) {
            drop(inner);
            wait_for_unlock(&meta_dir).await;
        }
        result
    }

    /// Every conversation, ordered by number.
    pub fn list_conversations(&self) -> Result<Vec<ConversationView>, StoreError> {
        views::list_conversations(&self.inner.trees)
    }

    pub fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetail>, StoreError> {
        views::conversation_detail(&self.inner.trees, id)
    }

    pub fn conversation_info(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationInfo>, StoreError> {
        Ok(views::conversation_record(&self.inner.trees, id)?.map(|r| r.info()))
    }

    /// Every contact, ordered by (normalised) email.
    pub fn list_contacts(&self) -> Result<Vec<ContactView>, StoreError> {
        views::list_contacts(&self.inner.trees)
    }

    pub fn contact(&self, email: &str) -> Result<Option<ContactDetail>, StoreError> {
        views::contact_detail(&self.inner.trees, email)
    }

    /// The stored bytes of a message, checked against their crc.
    pub fn read_message(&self, key: MessageKey) -> Result<Vec<u8>, StoreError> {
        let k = keys::message(key);
        let rec: MessageRecord = views::message_record(&self.inner.trees, key)?
            .ok_or_else(|| StoreError::NotFound(format!("message {}", key.0)))?;
        let body = blobs::read_body(&self.inner.segments_dir, &rec.loc)
            .map_err(|e| StoreError::io(format!("reading segment {}", rec.loc.segment), e))?;
        body.map_err(|detail| StoreError::Corrupt {
            tree: "segments",
            key: keys::display(&k),
            detail,
        })
    }

    /// The messages of a conversation, oldest first.
    pub fn message_keys(&self, id: ConversationId) -> Result<Vec<MessageKey>, StoreError> {
        if views::conversation_record(&self.inner.trees, id)?.is_none() {
            return Err(StoreError::NotFound(format!("conversation {}", id.0)));
        }
        views::message_keys(&self.inner.trees, id)
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let t = &self.inner.trees;
        let segs = blobs::list_segments(&self.inner.segments_dir)
            .map_err(|e| StoreError::io("listing segments", e))?;
        Ok(StoreStats {
            conversations: t.get(TreeId::Conversations).len() as u64,
            messages: t.get(TreeId::Messages).len() as u64,
            contacts: t.get(TreeId::Contacts).len() as u64,
            segments: segs.len() as u64,
            segment_bytes: segs.iter().map(|(_, len)| len).sum(),
            db_bytes: self.inner.db.size_on_disk()?,
            barriers: self.inner.counters.barriers.load(Ordering::Relaxed),
            requests: self.inner.counters.requests.load(Ordering::Relaxed),
            queued: self.queue_len() as u64,
        })
    }
}

fn unexpected(out: OpOutput) -> StoreError {
    StoreError::Internal(format!(
        "writer answered with the wrong kind of result: {out:?}"
    ))
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod mailbox_tests;
#[cfg(test)]
mod spam_tests;
#[cfg(test)]
mod tests;
