//! UID spaces, the writer's side of IMAP mailboxes (GUIDE §0b): every team view and
//! private folder has one (its uid → entry map, UIDVALIDITY and UIDNEXT); a view's is
//! synced against what the view should hold ([`desired_entries`], by [`membership`]),
//! a folder's takes APPEND, COPY, EXPUNGE, create, rename and delete. Runs only on the
//! writer thread, so reading the indexes and then committing one transaction never
//! interleaves with another request. Transaction closures are pure (everything is
//! computed before).
//!
//! Team views are synced lazily: a view's UID space is brought up to date on the first
//! SELECT/STATUS/IDLE wake-up after a change (GUIDE §0b allows it), so ingest costs the
//! same whatever the number of views or members. The writer logs which conversations
//! each view generation touched (`ViewChange`, in `writer_state.rs`) and keeps each
//! view's last entries in memory, so a sync recomputes only the touched conversations and
//! answers the other sessions of the same view from memory. A full scan of every
//! conversation happens on a view's first sync after a start, after a change that did not
//! say what it touched, or when the space was last synced longer ago than the log reaches.

use crate::mail::clock::unix_now;
use std::collections::{BTreeSet, HashMap, HashSet};

use sled::Transactional;

use super::blobs::BlobLoc;
use super::db::Trees;
use super::error::StoreError;
use super::flags::{self, FlagWrite};
use super::keys::{self, TreeId};
use super::membership::{self, Membership};
use super::model::{
    ConversationId, Entry, Flags, FolderId, MailboxSnapshot, MessageKey, MessageSummary, TeamView,
};
use super::records::{self, ConversationRecord, JunkRecord, MessageRecord, UidSpaceRecord};
use super::tx::{Tx, TxResult, tx_error};
use super::views;
use super::writer_state::{CachedView, WriterState};

/// The agent whose per-agent flags a folder's APPEND/COPY sets: its owner, unless the
/// folder belongs to an inbox (shared Templates), where only shared flags are kept.
fn agent_owner(owner: &str) -> Option<&str> {
    (!owner.starts_with("inbox:")).then_some(owner)
}

/// The entries of a UID space, ascending uid.
/// Writes per batch when a large sync writes its entries ahead of its transaction
/// (`StoreOptions::view_write_ahead`).
const WRITE_AHEAD_BATCH: usize = 2_000;

/// The space's entries: its `uid_map` below `uid_next`. Entries at `uid_next` or above
/// are a sync's write-ahead that its transaction never committed (a crash in between);
/// they are not in the mailbox, and the next sync overwrites them.
fn read_entries(trees: &Trees, rec: &UidSpaceRecord) -> Result<Vec<(u32, Entry)>, StoreError> {
    let mut entries = Vec::new();
    for kv in trees
        .get(TreeId::UidMap)
        .scan_prefix(keys::uid_map_prefix(rec.space))
    {
        let (k, v) = kv?;
        let uid = keys::uid_of_key(&k)
            .ok_or_else(|| records::corrupt(TreeId::UidMap, &k, "short key"))?;
        if uid >= rec.uid_next {
            break;
        }
        let entry = keys::parse_entry(&v)
            .ok_or_else(|| records::corrupt(TreeId::UidMap, &k, "bad entry value"))?;
        entries.push((uid, entry));
    }
    Ok(entries)
}

/// Writes a large sync's new `uid_map` entries and their mod-sequences ahead of its
/// transaction, in bounded batches (each atomic per tree). They lie at or above the
/// space's old `uid_next`, so until the transaction raises it they are in no mailbox.
fn write_ahead(
    db: &sled::Db,
    trees: &Trees,
    space: u64,
    inserts: &[(u32, Entry)],
    modseqs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), StoreError> {
    for chunk in inserts.chunks(WRITE_AHEAD_BATCH) {
        let mut batch = sled::Batch::default();
        for (uid, e) in chunk {
            batch.insert(&keys::uid_map(space, *uid)[..], &keys::entry_value(e)[..]);
        }
        trees.get(TreeId::UidMap).apply_batch(batch)?;
        // sled holds every page a write touched in memory until it is flushed.
        db.flush()?;
    }
    for chunk in modseqs.chunks(WRITE_AHEAD_BATCH) {
        let mut batch = sled::Batch::default();
        for (k, v) in chunk {
            batch.insert(k.as_slice(), v.as_slice());
        }
        trees.get(TreeId::Modseq).apply_batch(batch)?;
        db.flush()?;
    }
    Ok(())
}

pub(super) fn snapshot(
    trees: &Trees,
    rec: &UidSpaceRecord,
    change: u64,
) -> Result<MailboxSnapshot, StoreError> {
    Ok(MailboxSnapshot {
        space: rec.space,
        uid_validity: rec.uid_validity,
        uid_next: rec.uid_next,
        entries: read_entries(trees, rec)?,
        highest_change: change,
    })
}

/// Every (conversation, message) the view should hold, in arrival order (message key,
/// which `generate_id` hands out increasingly). `Junk` holds junk records, not
/// conversations.
fn desired_entries(trees: &Trees, view: &TeamView) -> Result<Vec<Entry>, StoreError> {
    if let TeamView::Junk { inboxes } = view {
        return junk_entries(trees, inboxes);
    }
    let mut out = Vec::new();
    for kv in trees.get(TreeId::Conversations).iter() {
        let (k, v) = kv?;
        let conv: ConversationRecord = records::decode(TreeId::Conversations, &k, &v)?;
        conversation_entries(trees, view, &conv, &mut out)?;
    }
    out.sort_by_key(|e| (e.message, e.conversation));
    Ok(out)
}

/// [`desired_entries`] restricted to the conversations in `touched` (not for `Junk`).
fn desired_entries_of(
    trees: &Trees,
    view: &TeamView,
    touched: &HashSet<ConversationId>,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    for &id in touched {
        if let Some(conv) = views::conversation_record(trees, id)? {
            conversation_entries(trees, view, &conv, &mut out)?;
        }
    }
    out.sort_by_key(|e| (e.message, e.conversation));
    Ok(out)
}

/// The entries of a `Junk` view over `inboxes`: each junk message once, in arrival order.
fn junk_entries(trees: &Trees, inboxes: &[String]) -> Result<Vec<Entry>, StoreError> {
    let mut messages = BTreeSet::new();
    for kv in trees.get(TreeId::Junk).iter() {
        let (k, v) = kv?;
        let rec: JunkRecord = records::decode(TreeId::Junk, &k, &v)?;
        if inboxes.contains(&rec.inbox) {
            messages.insert(rec.message);
        }
    }
    Ok(messages
        .into_iter()
        .map(|message| Entry {
            conversation: None,
            message,
        })
        .collect())
}

/// Appends the entries of one conversation that `view` holds.
fn conversation_entries(
    trees: &Trees,
    view: &TeamView,
    conv: &ConversationRecord,
    out: &mut Vec<Entry>,
) -> Result<(), StoreError> {
    let m = membership::membership(view, conv);
    if m == Membership::None {
        return Ok(());
    }
    for msg in views::message_keys(trees, conv.id)? {
        let keep = match m {
            Membership::All => true,
            _ => {
                let rec = views::message_record(trees, msg)?.ok_or_else(|| {
                    records::corrupt(
                        TreeId::ConvMessages,
                        &keys::conv_message(conv.id, msg),
                        "names a message that does not exist",
                    )
                })?;
                membership::in_view(view, conv, rec.summary.direction)
            }
        };
        if keep {
            out.push(Entry {
                conversation: Some(conv.id),
                message: msg,
            });
        }
    }
    Ok(())
}

/// `meta` values a new UID space consumes.
struct SpaceAlloc {
    space: u64,
    uid_validity: u32,
}

impl SpaceAlloc {
    fn write(&self, tx: &Tx<'_>) -> TxResult<()> {
        let meta = tx.t(TreeId::Meta);
        meta.insert(keys::meta::LAST_UID_SPACE, &self.space.to_be_bytes()[..])?;
        meta.insert(
            keys::meta::LAST_UID_VALIDITY,
            &self.uid_validity.to_be_bytes()[..],
        )?;
        Ok(())
    }
}

impl WriterState {
    fn space_record(&self, name: &[u8]) -> Result<Option<UidSpaceRecord>, StoreError> {
        self.trees
            .get(TreeId::UidSpaces)
            .get(name)?
            .map(|v| records::decode(TreeId::UidSpaces, name, &v))
            .transpose()
    }

    /// The key and record of an existing folder.
    pub(super) fn folder_space(
        &self,
        folder: &FolderId,
    ) -> Result<(Vec<u8>, UidSpaceRecord), StoreError> {
        let name = keys::folder_space(folder);
        match self.space_record(&name)? {
            Some(rec) => Ok((name, rec)),
            None => Err(StoreError::NotFound(format!(
                "folder {:?} of {:?}",
                folder.name, folder.owner
            ))),
        }
    }

    fn meta_u64(&self, k: &[u8]) -> Result<u64, StoreError> {
        match self.trees.get(TreeId::Meta).get(k)? {
            Some(v) => records::u64_at(TreeId::Meta, k, &v, 0),
            None => Ok(0),
        }
    }

    /// A new, empty UID space: a fresh numeric id and a UIDVALIDITY from the clock,
    /// strictly above every one handed out before (store-wide).
    fn new_space(&self) -> Result<(UidSpaceRecord, SpaceAlloc), StoreError> {
        let space = self
            .meta_u64(keys::meta::LAST_UID_SPACE)?
            .checked_add(1)
            .ok_or_else(|| StoreError::Internal("UID space ids exhausted".into()))?;
        let k = keys::meta::LAST_UID_VALIDITY;
        let last = match self.trees.get(TreeId::Meta).get(k)? {
            Some(v) => {
                keys::be_u32(&v).ok_or_else(|| records::corrupt(TreeId::Meta, k, "not a u32"))?
            }
            None => 0,
        };
        let after_last = last
            .checked_add(1)
            .ok_or_else(|| StoreError::Internal("UIDVALIDITY values exhausted".into()))?;
        let uid_validity = u32::try_from(unix_now()).unwrap_or(0).max(after_last);
        let rec = UidSpaceRecord {
            space,
            uid_validity,
            uid_next: 1,
            synced_at: 0,
        };
        Ok((
            rec,
            SpaceAlloc {
                space,
                uid_validity,
            },
        ))
    }

    pub(super) fn sync_view(&mut self, view: &TeamView) -> Result<MailboxSnapshot, StoreError> {
        let name = keys::view_space(view);
        let existing = self.space_record(&name)?;
        let cached = |rec: &UidSpaceRecord, cache: &HashMap<Vec<u8>, CachedView>| {
            cache
                .get(&name)
                .filter(|c| c.space == rec.space && c.synced_at == rec.synced_at)
                .map(|c| c.entries.clone())
        };
        if let Some(rec) = &existing
            && rec.synced_at == self.view_gen
        {
            let entries = match cached(rec, &self.view_cache) {
                Some(entries) => entries,
                None => read_entries(&self.trees, rec)?,
            };
            self.remember_view(&name, rec, &entries);
            return Ok(MailboxSnapshot {
                space: rec.space,
                uid_validity: rec.uid_validity,
                uid_next: rec.uid_next,
                entries,
                highest_change: self.change,
            });
        }
        let (mut rec, alloc, current) = match existing {
            Some(rec) => {
                let current = match cached(&rec, &self.view_cache) {
                    Some(entries) => entries,
                    None => read_entries(&self.trees, &rec)?,
                };
                (rec, None, current)
            }
            None => {
                let (rec, alloc) = self.new_space()?;
                (rec, Some(alloc), Vec::new())
            }
        };
        let touched = match (view, &alloc) {
            (TeamView::Junk { .. }, _) | (_, Some(_)) => None,
            _ => self.touched_since(rec.synced_at),
        };
        // Only the touched conversations can have entered or left the view; with no
        // record of what changed, every conversation is looked at.
        let desired = match &touched {
            Some(touched) => desired_entries_of(&self.trees, view, touched)?,
            None => desired_entries(&self.trees, view)?,
        };
        // A Trash's private messages (no conversation) are put and taken by
        // `trash_copy`/`trash_expunge`, never by a sync. Junk entries have no
        // conversation either, but are all synced.
        let keeps_private = matches!(view, TeamView::Trash { .. });
        let in_scope = |e: &Entry| match e.conversation {
            None if keeps_private => false,
            conversation => touched
                .as_ref()
                .is_none_or(|t| conversation.is_some_and(|c| t.contains(&c))),
        };
        let wanted: HashSet<Entry> = desired.iter().copied().collect();
        let (kept, removed): (Vec<_>, Vec<_>) = current
            .into_iter()
            .partition(|(_, e)| !in_scope(e) || wanted.contains(e));
        let have: HashSet<Entry> = kept
            .iter()
            .filter(|(_, e)| in_scope(e))
            .map(|(_, e)| *e)
            .collect();
        let added: Vec<Entry> = desired.into_iter().filter(|e| !have.contains(e)).collect();
        let (removed, added, moved) = keep_moved_uids(removed, added);
        let first = rec.uid_next;
        rec.uid_next = u32::try_from(added.len())
            .ok()
            .and_then(|n| first.checked_add(n))
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "UID space of {view:?} is exhausted (uid_next {first})"
                ))
            })?;
        rec.synced_at = self.view_gen;
        let space = rec.space;
        let value = records::encode(TreeId::UidSpaces, &rec)?;
        let inserts: Vec<(u32, Entry)> = (first..rec.uid_next).zip(added).collect();
        // Entries enter or leave at the current change counter: it is above what this
        // space held at its last sync (the view change that moved them came after it),
        // and HIGHESTMODSEQ never exceeds a snapshot's counter (`Store::highest_modseq`).
        let added: Vec<u32> = inserts.iter().map(|(u, _)| *u).collect();
        let gone: Vec<u32> = removed.iter().map(|(u, _)| *u).collect();
        let mut space_write = self.space_write(space, &added, &gone, self.change)?;
        let ahead = inserts.len() > self.view_write_ahead;
        if ahead {
            write_ahead(
                &self.db,
                &self.trees,
                space,
                &inserts,
                space_write.take_entries_from(space, first),
            )?;
        }
        let in_transaction = if ahead { &[][..] } else { &inserts[..] };
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                if let Some(a) = &alloc {
                    a.write(&tx)?;
                }
                space_write.apply(&tx)?;
                tx.t(TreeId::UidSpaces)
                    .insert(name.as_slice(), value.as_slice())?;
                let map = tx.t(TreeId::UidMap);
                for (uid, _) in &removed {
                    map.remove(&keys::uid_map(space, *uid)[..])?;
                }
                for (uid, e) in in_transaction.iter().chain(&moved) {
                    map.insert(&keys::uid_map(space, *uid)[..], keys::entry_value(e))?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.dirty = true;
        let mut entries = kept;
        entries.extend(moved);
        entries.sort_unstable_by_key(|(uid, _)| *uid);
        entries.extend(inserts);
        self.remember_view(&name, &rec, &entries);
        Ok(MailboxSnapshot {
            space,
            uid_validity: rec.uid_validity,
            uid_next: rec.uid_next,
            entries,
            highest_change: self.change,
        })
    }
    pub(super) fn folder_create(&mut self, folder: &FolderId) -> Result<(), StoreError> {
        let name = keys::folder_space(folder);
        if self.space_record(&name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "folder {:?} of {:?}",
                folder.name, folder.owner
            )));
        }
        let (rec, alloc) = self.new_space()?;
        let value = records::encode(TreeId::UidSpaces, &rec)?;
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                alloc.write(&tx)?;
                tx.t(TreeId::UidSpaces)
                    .insert(name.as_slice(), value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }

    pub(super) fn folder_delete(&mut self, folder: &FolderId) -> Result<(), StoreError> {
        let (name, rec) = self.folder_space(folder)?;
        let uids: Vec<u32> = read_entries(&self.trees, &rec)?
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        let forget = self.space_forget(rec.space)?;
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                forget.apply(&tx)?;
                tx.t(TreeId::UidSpaces).remove(name.as_slice())?;
                for uid in &uids {
                    tx.t(TreeId::UidMap)
                        .remove(&keys::uid_map(rec.space, *uid)[..])?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }

    pub(super) fn folder_rename(
        &mut self,
        from: &FolderId,
        to: &FolderId,
    ) -> Result<(), StoreError> {
        let (old, rec) = self.folder_space(from)?;
        let new = keys::folder_space(to);
        if self.space_record(&new)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "folder {:?} of {:?}",
                to.name, to.owner
            )));
        }
        let value = records::encode(TreeId::UidSpaces, &rec)?;
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::UidSpaces).remove(old.as_slice())?;
                tx.t(TreeId::UidSpaces)
                    .insert(new.as_slice(), value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }

    /// Adds new message records with their flags to a folder, one uid each, in order.
    fn folder_add(
        &mut self,
        folder: &FolderId,
        new: Vec<(MessageRecord, Flags)>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let (name, rec) = self.folder_space(folder)?;
        self.space_add(&name, rec, agent_owner(&folder.owner), new)
    }

    /// Adds new message records (no conversation) with their flags to the UID space
    /// `name`, one uid each, in order; `agent` gets the per-agent flags.
    fn space_add(
        &mut self,
        name: &[u8],
        mut rec: UidSpaceRecord,
        agent: Option<&str>,
        new: Vec<(MessageRecord, Flags)>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        if new.is_empty() {
            return Ok((rec.uid_validity, Vec::new()));
        }
        let first = rec.uid_next;
        rec.uid_next = u32::try_from(new.len())
            .ok()
            .and_then(|n| first.checked_add(n))
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "UID space {} is exhausted (uid_next {first})",
                    rec.space
                ))
            })?;
        let mut rows = Vec::with_capacity(new.len());
        for (uid, (record, flags)) in (first..rec.uid_next).zip(new) {
            let key = MessageKey(self.db.generate_id()?);
            let value = records::encode(TreeId::Messages, &record)?;
            let fw = FlagWrite::new(agent, key, &Flags::default(), &flags)?;
            rows.push((uid, key, value, fw));
        }
        let space_value = records::encode(TreeId::UidSpaces, &rec)?;
        let bump = self.bump(false);
        let uids: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let space_write = self.space_write(rec.space, &uids, &[], bump.modseq())?;
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                for (uid, key, value, fw) in &rows {
                    tx.t(TreeId::Messages)
                        .insert(&keys::message(*key)[..], value.as_slice())?;
                    let entry = Entry {
                        conversation: None,
                        message: *key,
                    };
                    tx.t(TreeId::UidMap).insert(
                        &keys::uid_map(rec.space, *uid)[..],
                        keys::entry_value(&entry),
                    )?;
                    fw.apply(&tx, bump.modseq())?;
                }
                space_write.apply(&tx)?;
                tx.t(TreeId::UidSpaces)
                    .insert(name, space_value.as_slice())?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok((rec.uid_validity, rows.iter().map(|r| r.0).collect()))
    }

    pub(super) fn folder_append(
        &mut self,
        folder: &FolderId,
        summary: &MessageSummary,
        flags: &Flags,
        internal_date: i64,
        loc: BlobLoc,
    ) -> Result<(u32, u32), StoreError> {
        let record = MessageRecord {
            loc,
            received_at: internal_date,
            mail_from: String::new(),
            rcpts: Vec::new(),
            summary: summary.clone(),
        };
        let (validity, uids) = self.folder_add(folder, vec![(record, flags.clone())])?;
        let uid = uids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Internal("append assigned no uid".into()))?;
        Ok((validity, uid))
    }

    /// New message records sharing the source bodies (no bytes copied), with the
    /// source's shared flags and the owner's per-agent flags.
    pub(super) fn folder_copy(
        &mut self,
        folder: &FolderId,
        keys: &[MessageKey],
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let new = self.copies(agent_owner(&folder.owner).unwrap_or(""), keys)?;
        self.folder_add(folder, new)
    }

    /// New records for copies of `keys`, with the flags `agent` sees on each.
    fn copies(
        &self,
        agent: &str,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageRecord, Flags)>, StoreError> {
        let mut new = Vec::with_capacity(keys.len());
        for &key in keys {
            let record = self.check_message(key)?;
            new.push((record, flags::read(&self.trees, agent, key)?));
        }
        Ok(new)
    }

    /// Puts copies of private messages into the agent's `Trash` (a deleted draft or
    /// `Personal/…` message), where only that agent sees them; they stay until expunged
    /// there or moved out. Returns (UIDVALIDITY, new uids in order).
    pub(super) fn trash_copy(
        &mut self,
        view: &TeamView,
        keys: &[MessageKey],
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let TeamView::Trash { agent, .. } = view else {
            return Err(StoreError::Internal(format!(
                "private messages only go to a Trash, not {view:?}"
            )));
        };
        let new = self.copies(agent, keys)?;
        // The space exists and its conversation part is current before uids are added.
        self.sync_view(view)?;
        let name = keys::view_space(view);
        let rec = self
            .space_record(&name)?
            .ok_or_else(|| StoreError::Internal("a synced view has no UID space".into()))?;
        let added = self.space_add(&name, rec, agent_owner(agent), new);
        self.view_cache.remove(&name);
        added
    }

    /// Removes private messages from the agent's `Trash`; uids that are not private
    /// messages there (trashed conversations) are left alone.
    pub(super) fn trash_expunge(
        &mut self,
        view: &TeamView,
        uids: &[u32],
    ) -> Result<(), StoreError> {
        let name = keys::view_space(view);
        let Some(rec) = self.space_record(&name)? else {
            return Ok(());
        };
        let map = self.trees.get(TreeId::UidMap);
        let mut private = Vec::new();
        for &uid in uids {
            let k = keys::uid_map(rec.space, uid);
            if let Some(v) = map.get(k)?
                && keys::parse_entry(&v).is_some_and(|e| e.conversation.is_none())
            {
                private.push(uid);
            }
        }
        let removed = self.space_expunge(&rec, &private);
        self.view_cache.remove(&name);
        removed
    }

    pub(super) fn folder_expunge(
        &mut self,
        folder: &FolderId,
        uids: &[u32],
    ) -> Result<(), StoreError> {
        let (_, rec) = self.folder_space(folder)?;
        self.space_expunge(&rec, uids)
    }

    /// Removes these uids (unknown ones ignored) from a UID space.
    fn space_expunge(&mut self, rec: &UidSpaceRecord, uids: &[u32]) -> Result<(), StoreError> {
        let map = self.trees.get(TreeId::UidMap);
        let mut gone = Vec::new();
        let mut gone_uids = Vec::new();
        for &uid in uids {
            let k = keys::uid_map(rec.space, uid);
            if map.contains_key(k)? && !gone.contains(&k) {
                gone.push(k);
                gone_uids.push(uid);
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let bump = self.bump(false);
        let space_write = self.space_write(rec.space, &[], &gone_uids, bump.modseq())?;
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                space_write.apply(&tx)?;
                for k in &gone {
                    tx.t(TreeId::UidMap).remove(&k[..])?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }
}

/// A mailbox entry and its UID.
type UidEntry = (u32, Entry);

/// A message that left one conversation of the view for another (merge, split) is the
/// same message in the same mailbox: it keeps its UID, with its entry pointing at the
/// new conversation. Pairs only a message that left once and came back once.
fn keep_moved_uids(
    removed: Vec<UidEntry>,
    added: Vec<Entry>,
) -> (Vec<UidEntry>, Vec<Entry>, Vec<UidEntry>) {
    let mut left: HashMap<MessageKey, usize> = HashMap::new();
    for (_, e) in &removed {
        *left.entry(e.message).or_default() += 1;
    }
    let mut came: HashMap<MessageKey, usize> = HashMap::new();
    for e in &added {
        *came.entry(e.message).or_default() += 1;
    }
    let moves = |m: &MessageKey| left.get(m) == Some(&1) && came.get(m) == Some(&1);
    let new_entry: HashMap<MessageKey, Entry> = added
        .iter()
        .filter(|e| moves(&e.message))
        .map(|e| (e.message, *e))
        .collect();
    let mut moved = Vec::new();
    let mut gone = Vec::new();
    for (uid, e) in removed {
        match new_entry.get(&e.message) {
            Some(to) if e.conversation.is_some() => moved.push((uid, *to)),
            _ => gone.push((uid, e)),
        }
    }
    let kept_keys: HashSet<MessageKey> = moved.iter().map(|(_, e)| e.message).collect();
    let added = added
        .into_iter()
        .filter(|e| !kept_keys.contains(&e.message))
        .collect();
    (gone, added, moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_owners_keep_no_agent_flags() {
        assert_eq!(agent_owner("bob"), Some("bob"));
        assert_eq!(agent_owner("inbox:support"), None);
    }

    fn e(conv: u64, msg: u64) -> Entry {
        Entry {
            conversation: Some(ConversationId(conv)),
            message: MessageKey(msg),
        }
    }

    #[test]
    fn a_moved_message_keeps_its_uid_an_ambiguous_one_does_not() {
        // Message 7 moved from conversation 1 to 2; message 8 left; message 9 came.
        let (gone, added, moved) =
            keep_moved_uids(vec![(3, e(1, 7)), (4, e(1, 8))], vec![e(2, 7), e(2, 9)]);
        assert_eq!(moved, [(3, e(2, 7))]);
        assert_eq!(gone, [(4, e(1, 8))]);
        assert_eq!(added, [e(2, 9)]);
        // The same message twice in the view (two inboxes' conversations): no guessing.
        let (gone, added, moved) = keep_moved_uids(vec![(3, e(1, 7)), (5, e(4, 7))], vec![e(2, 7)]);
        assert!(moved.is_empty());
        assert_eq!((gone.len(), added.len()), (2, 1));
    }
}
