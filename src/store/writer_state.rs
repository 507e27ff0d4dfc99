//! The state of the writer thread that every change runs against ([`WriterState`]): sled,
//! the segment writer, and what a committed change bumps: the store-wide change counter
//! and the view generation ([`Bump`], written in the change's own transaction), the log of
//! what each recent view generation touched ([`ViewChange`], so a view sync recomputes only
//! those conversations), the flag log (which messages' flags a change wrote) and the
//! in-memory cache of each team view's entries ([`CachedView`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::blobs::SegmentWriter;
use super::counters::{Counters, FlagLog};
use super::db::Trees;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{ConversationId, Entry, MessageKey};
use super::options::StoreOptions;
use super::records::{self, MessageRecord, UidSpaceRecord};
use super::tx::{Tx, TxResult};
use super::views;

/// What every change on the writer thread runs against (see the module docs). The
/// group-commit loop (`writer.rs`) owns it; feature modules add their changes as methods.
pub struct WriterState {
    pub(super) db: sled::Db,
    pub(super) trees: Trees,
    pub(super) segments: SegmentWriter,
    pub(super) counters: Arc<Counters>,
    /// `meta` `change_counter` as committed (this thread is its only writer).
    pub(super) change: u64,
    /// `meta` `view_generation` as committed.
    pub(super) view_gen: u64,
    /// Something was committed in the current batch: it needs the sled flush.
    pub(super) dirty: bool,
    /// What each recent view generation changed, oldest first (at most `VIEW_LOG_LEN`).
    view_log: VecDeque<(u64, ViewChange)>,
    /// Each team view's entries as last synced, by UID space name (memory only).
    pub(super) view_cache: HashMap<Vec<u8>, CachedView>,
    /// Expunges kept per UID space for VANISHED (`StoreOptions::expunge_log_len`).
    pub(super) expunge_log_len: usize,
    /// `StoreOptions::view_write_ahead`.
    pub(super) view_write_ahead: usize,
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

/// The counter values a change writes in its transaction; applied to the writer state
/// with [`WriterState::bumped`] once the transaction committed.
#[derive(Debug, Clone, Copy)]
pub struct Bump {
    change: u64,
    view_gen: Option<u64>,
}

impl Bump {
    /// The change counter this change writes: its mod-sequence (`modseq.rs`).
    pub fn modseq(&self) -> u64 {
        self.change
    }

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

impl WriterState {
    pub(super) fn new(
        db: sled::Db,
        trees: Trees,
        segments: SegmentWriter,
        counters: Arc<Counters>,
        opts: &StoreOptions,
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
        Ok(WriterState {
            db,
            trees,
            segments,
            counters,
            change,
            view_gen,
            dirty: false,
            view_log: VecDeque::new(),
            view_cache: HashMap::new(),
            expunge_log_len: opts.expunge_log_len,
            view_write_ahead: opts.view_write_ahead,
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
    /// [`ViewChange::Everything`] until [`WriterState::touched_only`] narrows it.
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

    fn flag_log(&self) -> std::sync::MutexGuard<'_, FlagLog> {
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

    /// The record of a message that must exist (`NotFound` otherwise).
    pub(super) fn check_message(&self, key: MessageKey) -> Result<MessageRecord, StoreError> {
        views::message_record(&self.trees, key)?
            .ok_or_else(|| StoreError::NotFound(format!("message {}", key.0)))
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
}
