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
//! writer ([`uid_space`]). Flags are one shared record plus a per-agent byte ([`flags`]).
//! Every durable change bumps a store-wide counter, published after its barrier
//! ([`Store::subscribe`]) for IDLE.
//!
//! Spam and attachments (SPEC §7): junk records ([`junk`]: `Store::junk`, `mark_junk`,
//! `unmark_junk`, the `Junk` view; a conversation marked junk is in no other view) and quarantine records ([`quarantine`]: originals kept whole, released
//! as a new revision of the conversation's message) point at ordinary message records.
//!
//! Backups (`backup.rs`, layout in `backup_format.rs`): [`Store::backup_snapshot`] exports
//! sled on the writer between two batches and records the segments' lengths;
//! [`finish_backup`] copies the segments up to those lengths and writes the manifest;
//! [`restore`] (`restore.rs`) rebuilds a stopped, empty data directory from a verified
//! backup.
//!
//! Files, bottom up; each imports only files above it in this list, none imports this
//! facade:
//! - base types: `model.rs`, `keys.rs`, `error.rs`, `options.rs`, `blobs.rs`,
//!   `records.rs`, `db.rs` (sled and its trees), `counters.rs`, `backup_format.rs`;
//! - reads and pure decisions: `views.rs`, `membership.rs`, `thread_lookup.rs`,
//!   `recovery.rs`;
//! - the writer's base: `tx.rs` (sled transaction plumbing), `writer_state.rs` (what
//!   every change runs against), and the writer protocol, `request.rs`;
//! - `handle.rs`: [`Store`] and its request channel to the writer;
//! - features, each with its changes (methods of the writer state) and its `Store`
//!   methods: `modseq.rs` (RFC 7162 mod-sequences), `flags.rs`, `uid_space.rs`, `conversation_action.rs`, `quarantine.rs`,
//!   `junk.rs`, `ingest_tx.rs`, `queue.rs`, `learn_queue.rs`, `lookup.rs`, `backup.rs`, `restore.rs`;
//! - `writer.rs`: the commit loop and the request dispatch.

mod backup;
mod backup_format;
mod blobs;
mod conversation_action;
mod counters;
mod db;
mod error;
mod flags;
mod handle;
mod ingest_tx;
mod junk;
pub mod keys;
mod learn_queue;
mod lookup;
mod membership;
mod merge_split;
pub mod model;
mod modseq;
mod options;
mod quarantine;
mod queue;
mod records;
mod recovery;
mod request;
mod restore;
mod subscriptions;
mod thread_lookup;
mod tx;
mod uid_space;
mod views;
mod writer;
mod writer_state;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc, watch};

pub use backup::finish_backup;
pub use backup_format::{BackupManifest, BackupSegment, BackupSnapshot, MetaExport, SegmentLen};
pub use error::StoreError;
pub use handle::Store;
pub use model::*;
pub use options::StoreOptions;
pub use recovery::RecoveryReport;
pub use restore::{RestoreReport, restore, verify_backup};

use counters::Counters;
use db::{Trees, open_sled, wait_for_unlock};
use handle::Inner;
use keys::TreeId;
use records::MessageRecord;
use request::{Op, OpOutput, Request, unexpected};

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
    /// What each sled tree holds: entries, and the bytes of their keys and values (before
    /// sled's own page overhead, which `db_bytes` includes).
    #[serde(default)]
    pub trees: Vec<TreeBytes>,
}

/// One sled tree's contents in [`StoreStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeBytes {
    pub tree: String,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
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
        junk::migrate_trashed_junk(&db, &trees)?;
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
            &opts,
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
            learn_wake: Arc::new(Notify::new()),
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            report,
        ))
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
    /// Brings the view's UID space up to date and returns it. Runs on the writer (it may
    /// assign UIDs, durably before it returns): entries whose conversation no longer
    /// matches are removed (expunged from this view); entries that now match and have no
    /// UID get the next UIDs in arrival order, so a message that leaves and re-enters gets
    /// a new uid. The space and its UIDVALIDITY are created on first use; one space per
    /// distinct `TeamView` value, shared by every agent asking for that value. All
    /// messages of a matching conversation are in the view, except for `Sent` (only
    /// outgoing ones); `Junk` holds the junk records of its inboxes instead (entries
    /// without a conversation). Cheap when nothing that can change views happened since the
    /// space's last sync; otherwise O(conversations) (see `uid_space`).
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
            message_id: crate::mail::message_id::bare(&rec.summary.message_id).to_owned(),
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
        flags::read_many(&self.inner.trees, agent, keys)
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
            guard: None,
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

    /// Moves copies of private messages (drafts, `Personal/…`) into the agent's `Trash`
    /// view (`TeamView::Trash`, whose `agent` alone sees them), as `folder_copy` does for
    /// a folder. Returns (UIDVALIDITY, new uids in order).
    pub async fn trash_copy(
        &self,
        view: &TeamView,
        keys: Vec<MessageKey>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let op = Op::TrashCopy {
            view: view.clone(),
            keys,
        };
        match self.op(op).await? {
            OpOutput::Copied(v, u) => Ok((v, u)),
            other => Err(unexpected(other)),
        }
    }

    /// Removes private messages from the agent's `Trash` (EXPUNGE there, or a move out);
    /// uids of trashed conversations are left alone.
    pub async fn trash_expunge(&self, view: &TeamView, uids: Vec<u32>) -> Result<(), StoreError> {
        self.op_done(Op::TrashExpunge {
            view: view.clone(),
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
    pub fn list_conversations(&self) -> Result<Vec<ConversationJson>, StoreError> {
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
    pub fn list_contacts(&self) -> Result<Vec<ContactJson>, StoreError> {
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

    /// Up to `limit` stored messages with a key of `from` or above, in key order. Keys
    /// come from the single writer in commit order, so a reader that has seen key k has
    /// seen every committed message below it (the full-text indexer relies on this).
    pub fn message_keys_from(
        &self,
        from: MessageKey,
        limit: usize,
    ) -> Result<Vec<MessageKey>, StoreError> {
        let tree = self.inner.trees.get(TreeId::Messages);
        let mut out = Vec::with_capacity(limit.min(4096));
        for kv in tree.range(keys::message(from)..).keys().take(limit) {
            let k = kv?;
            out.push(MessageKey(records::u64_at(TreeId::Messages, &k, &k, 0)?));
        }
        Ok(out)
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
        let mut trees = Vec::with_capacity(TreeId::ALL.len());
        for id in TreeId::ALL {
            let mut size = TreeBytes {
                tree: id.name().to_string(),
                entries: 0,
                key_bytes: 0,
                value_bytes: 0,
            };
            for kv in t.get(id).iter() {
                let (k, v) = kv?;
                size.entries += 1;
                size.key_bytes += k.len() as u64;
                size.value_bytes += v.len() as u64;
            }
            trees.push(size);
        }
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
            trees,
        })
    }
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod mailbox_tests;
#[cfg(test)]
mod spam_tests;
#[cfg(test)]
mod tests;
