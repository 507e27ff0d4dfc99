//! Mod-sequences (RFC 7162 CONDSTORE/QRESYNC), the store's side. The store-wide change
//! counter is the clock: every change writes it in its own transaction (`Bump`), so a
//! mod-sequence never goes back, across restarts and kill -9 alike (a change that was not
//! flushed was never answered, and the counter it wrote is lost with it).
//!
//! What is recorded, in the `modseq` tree, each in the transaction of its change:
//! - the mod-sequence of each agent's per-agent flags and of each message's shared flags
//!   (`FlagWrite::apply`), so an agent's `\Seen` moves only that agent's mod-sequences;
//! - the mod-sequence at which a uid entered its space (view sync, APPEND, COPY);
//! - per space, a header: the mod-sequence of its last add or remove (so HIGHESTMODSEQ
//!   also moves on expunges, RFC 7162 §3.2) and a bounded expunge log for VANISHED
//!   (`StoreOptions::expunge_log_len`; a client further behind gets the full answer of
//!   RFC 7162 §3.2.5.2).
//!
//! A message's mod-sequence in a space, as one agent sees it, is the highest of its
//! entry's, its shared flags' and that agent's flags'. Must not: decide what a view
//! holds (`uid_space.rs`) or encode IMAP (`imap/`).

use super::db::Trees;
use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::model::{FlagOp, Flags, MessageKey, UnchangedSince};
use super::records;
use super::request::{Op, OpOutput, unexpected};
use super::tx::{Tx, TxResult};
use super::writer_state::WriterState;

fn read_u64(trees: &Trees, key: &[u8]) -> Result<u64, StoreError> {
    match trees.get(TreeId::Modseq).get(key)? {
        Some(v) => records::u64_at(TreeId::Modseq, key, &v, 0),
        None => Ok(0),
    }
}

/// The mod-sequence of one message of a space as `agent` sees it; 0 for data written
/// before mod-sequences were kept.
pub(super) fn message_modseq(
    trees: &Trees,
    space: u64,
    agent: &str,
    uid: u32,
    key: MessageKey,
) -> Result<u64, StoreError> {
    let entry = read_u64(trees, &keys::modseq_entry(space, uid))?;
    let shared = read_u64(trees, &keys::modseq_shared(key))?;
    let own = read_u64(trees, &keys::modseq_agent(&keys::agent_flags(agent, key)))?;
    Ok(entry.max(shared).max(own))
}

/// A space's header: (last add/remove mod-sequence, expunge log floor, logged expunges).
fn read_header(trees: &Trees, space: u64) -> Result<(u64, u64, u64), StoreError> {
    let k = keys::modseq_space(space);
    match trees.get(TreeId::Modseq).get(k)? {
        Some(v) => keys::parse_space_modseq(&v)
            .ok_or_else(|| records::corrupt(TreeId::Modseq, &k, "bad space header")),
        None => Ok((0, 0, 0)),
    }
}

/// Records that a flag record changed at `modseq` (`key` is its `modseq` key).
pub(super) fn write_flag_modseq(tx: &Tx<'_>, key: &[u8], modseq: u64) -> TxResult<()> {
    tx.t(TreeId::Modseq)
        .insert(key, &modseq.to_be_bytes()[..])?;
    Ok(())
}

/// The `modseq` writes of uids entering and leaving a space at one mod-sequence,
/// computed before the transaction.
#[derive(Debug, Default)]
pub(super) struct SpaceWrite {
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    removes: Vec<Vec<u8>>,
}

impl SpaceWrite {
    /// Takes out the mod-sequences of the entries entering `space` at uid `from` or
    /// above, for a sync that writes its new entries ahead of its transaction.
    pub(super) fn take_entries_from(&mut self, space: u64, from: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let first = keys::modseq_entry(space, from);
        let last = keys::modseq_entry(space, u32::MAX);
        let (ahead, kept) = std::mem::take(&mut self.puts)
            .into_iter()
            .partition(|(k, _)| {
                k.as_slice() >= first.as_slice() && k.as_slice() <= last.as_slice()
            });
        self.puts = kept;
        ahead
    }

    pub(super) fn apply(&self, tx: &Tx<'_>) -> TxResult<()> {
        let t = tx.t(TreeId::Modseq);
        for k in &self.removes {
            t.remove(k.as_slice())?;
        }
        for (k, v) in &self.puts {
            t.insert(k.as_slice(), v.as_slice())?;
        }
        Ok(())
    }
}

impl WriterState {
    /// The writes for `added` entering and `removed` leaving `space` at `modseq`: entry
    /// mod-sequences, the expunge log (trimmed to its bound, oldest first) and the header.
    pub(super) fn space_write(
        &self,
        space: u64,
        added: &[u32],
        removed: &[u32],
        modseq: u64,
    ) -> Result<SpaceWrite, StoreError> {
        let mut w = SpaceWrite::default();
        if added.is_empty() && removed.is_empty() {
            return Ok(w);
        }
        let (_, mut floor, logged) = read_header(&self.trees, space)?;
        let value = modseq.to_be_bytes().to_vec();
        for &uid in added {
            w.puts
                .push((keys::modseq_entry(space, uid).to_vec(), value.clone()));
        }
        for &uid in removed {
            w.removes.push(keys::modseq_entry(space, uid).to_vec());
            w.puts
                .push((keys::expunged(space, modseq, uid).to_vec(), Vec::new()));
        }
        let mut logged = logged.saturating_add(removed.len() as u64);
        let bound = self.expunge_log_len as u64;
        if logged > bound {
            // Drop the oldest; a client whose mod-sequence is below the new floor gets
            // the full VANISHED answer instead (RFC 7162 §3.2.5.2).
            let excess = logged - bound;
            let mut dropped = 0u64;
            for kv in self
                .trees
                .get(TreeId::Modseq)
                .scan_prefix(keys::expunged_prefix(space))
            {
                if dropped == excess {
                    break;
                }
                let (k, _) = kv?;
                let (m, _) = keys::parse_expunged(&k)
                    .ok_or_else(|| records::corrupt(TreeId::Modseq, &k, "bad expunge key"))?;
                floor = floor.max(m);
                w.removes.push(k.to_vec());
                dropped += 1;
            }
            logged -= dropped;
            // Still too many: this change alone overflows the log. Past the floor its
            // expunges could never be answered from the log, so none is kept.
            if dropped < excess {
                let prefix = keys::expunged_prefix(space);
                w.puts.retain(|(k, _)| !k.starts_with(&prefix));
                floor = floor.max(modseq);
                logged -= removed.len() as u64;
            }
        }
        w.puts.push((
            keys::modseq_space(space).to_vec(),
            keys::space_modseq_value(modseq, floor, logged).to_vec(),
        ));
        Ok(w)
    }

    /// Every `modseq` key of a space (a deleted folder), entry and log alike.
    pub(super) fn space_forget(&self, space: u64) -> Result<SpaceWrite, StoreError> {
        let mut w = SpaceWrite::default();
        let t = self.trees.get(TreeId::Modseq);
        let mut entries = vec![b'E'];
        entries.extend_from_slice(&space.to_be_bytes());
        for prefix in [entries, keys::expunged_prefix(space).to_vec()] {
            for kv in t.scan_prefix(prefix) {
                w.removes.push(kv?.0.to_vec());
            }
        }
        w.removes.push(keys::modseq_space(space).to_vec());
        Ok(w)
    }

    /// Indices of the STORE keys whose mod-sequence is above `guard.modseq`.
    pub(super) fn modified_since(
        &self,
        guard: &UnchangedSince,
        agent: &str,
        keys: &[MessageKey],
    ) -> Result<Vec<usize>, StoreError> {
        if guard.uids.len() != keys.len() {
            return Err(StoreError::Internal(
                "UNCHANGEDSINCE names another number of uids than keys".into(),
            ));
        }
        let mut out = Vec::new();
        for (i, (&uid, &key)) in guard.uids.iter().zip(keys).enumerate() {
            // RFC 7162 §3.1.3: fails when the mod-sequence is greater than the value.
            if message_modseq(&self.trees, guard.space, agent, uid, key)? > guard.modseq {
                out.push(i);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// The mod-sequence of each `(uid, key)` of the space as `agent` sees it, at least 1
    /// (RFC 7162 §3.1: mod-sequences are positive).
    pub fn modseqs(
        &self,
        space: u64,
        agent: &str,
        entries: &[(u32, MessageKey)],
    ) -> Result<Vec<u64>, StoreError> {
        entries
            .iter()
            .map(|&(uid, key)| {
                message_modseq(&self.inner.trees, space, agent, uid, key).map(|m| m.max(1))
            })
            .collect()
    }

    /// HIGHESTMODSEQ of the space as `agent` sees it holding `entries` (a snapshot taken
    /// at change counter `snapshot_change`): the highest of their mod-sequences and of the
    /// space's last add or remove (RFC 7162 §3.1.2.1), but never above the snapshot's
    /// counter. Flags are read after the snapshot, so one may be newer; a client told that
    /// higher value would miss an entry that a later sync adds or removes at that same
    /// counter. Capped, such a flag change is only reported twice.
    pub fn highest_modseq(
        &self,
        space: u64,
        agent: &str,
        entries: &[(u32, MessageKey)],
        snapshot_change: u64,
    ) -> Result<u64, StoreError> {
        let (space_modseq, _, _) = read_header(&self.inner.trees, space)?;
        let highest = self
            .modseqs(space, agent, entries)?
            .into_iter()
            .fold(space_modseq, u64::max);
        Ok(highest.min(snapshot_change).max(1))
    }

    /// The uids expunged from the space after mod-sequence `since`, ascending; `None`
    /// when the expunge log no longer reaches back that far.
    pub fn vanished_since(&self, space: u64, since: u64) -> Result<Option<Vec<u32>>, StoreError> {
        let (_, floor, _) = read_header(&self.inner.trees, space)?;
        if since < floor {
            return Ok(None);
        }
        let start = keys::expunged(space, since.saturating_add(1), 0);
        let prefix = keys::expunged_prefix(space);
        let mut uids = Vec::new();
        for kv in self.inner.trees.get(TreeId::Modseq).range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let (_, uid) = keys::parse_expunged(&k)
                .ok_or_else(|| records::corrupt(TreeId::Modseq, &k, "bad expunge key"))?;
            uids.push(uid);
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(Some(uids))
    }

    /// A STORE with UNCHANGEDSINCE (RFC 7162 §3.1.3): the messages whose mod-sequence is
    /// above `guard.modseq` are left alone and their indices returned; the others are
    /// stored as [`Store::store_flags`] does, in the same writer request as the check.
    pub async fn store_flags_unchanged_since(
        &self,
        agent: &str,
        keys: Vec<MessageKey>,
        op: FlagOp,
        flags: Flags,
        guard: UnchangedSince,
    ) -> Result<(Vec<Flags>, Vec<usize>), StoreError> {
        let op = Op::StoreFlags {
            agent: agent.to_owned(),
            keys,
            op,
            flags,
            guard: Some(guard),
        };
        match self.op(op).await? {
            OpOutput::GuardedFlags(f, modified) => Ok((f, modified)),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{T0, TestResult, summary};
    use super::super::{FolderId, StoreOptions};
    use super::*;

    /// Appends `n` messages to a fresh folder of a store whose expunge log holds 3.
    async fn folder_with(n: usize) -> Result<(tempfile::TempDir, Store, FolderId), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::io("temp dir", e))?;
        let opts = StoreOptions {
            expunge_log_len: 3,
            ..StoreOptions::default()
        };
        let (store, _) = Store::open(dir.path(), opts)?;
        let f = FolderId {
            owner: "alice".into(),
            name: "Notes".into(),
        };
        store.folder_create(&f).await?;
        for i in 0..n {
            let s = summary(&format!("m{i}@x"), "s", "me@x", &[], &[]);
            store
                .folder_append(&f, b"Subject: x\r\n\r\n".to_vec(), s, Flags::default(), T0)
                .await?;
        }
        Ok((dir, store, f))
    }

    #[tokio::test]
    async fn expunge_log_is_bounded_and_says_when_it_no_longer_reaches() -> TestResult {
        let (_dir, store, f) = folder_with(6).await?;
        let space = store.sync_folder(&f).await?.space;
        let start = store.change_counter();
        for uid in 1..=5 {
            store.folder_expunge(&f, vec![uid]).await?;
        }
        // Five expunges, three remembered: from `start` the log cannot answer.
        assert_eq!(store.vanished_since(space, start)?, None);
        let after_two = start + 2;
        assert_eq!(store.vanished_since(space, after_two)?, Some(vec![3, 4, 5]));
        assert_eq!(store.vanished_since(space, after_two + 2)?, Some(vec![5]));
        let t = &store.inner.trees;
        let logged = t
            .get(TreeId::Modseq)
            .scan_prefix(keys::expunged_prefix(space))
            .count();
        assert_eq!(logged, 3);
        // Expunges move HIGHESTMODSEQ; the survivor keeps its own mod-sequence.
        let snap = store.sync_folder(&f).await?;
        let keys: Vec<(u32, MessageKey)> =
            snap.entries.iter().map(|(u, e)| (*u, e.message)).collect();
        let h = store.highest_modseq(space, "alice", &keys, snap.highest_change)?;
        assert_eq!(h, store.change_counter());
        assert!(store.modseqs(space, "alice", &keys)?[0] < h);
        // One batch larger than the log: none of it is kept, the floor moves to it.
        let (_dir, store, f) = folder_with(5).await?;
        let space = store.sync_folder(&f).await?.space;
        let before = store.change_counter();
        store.folder_expunge(&f, vec![1, 2, 3, 4, 5]).await?;
        assert_eq!(store.vanished_since(space, before)?, None);
        assert_eq!(store.vanished_since(space, before + 1)?, Some(vec![]));
        let logged = store
            .inner
            .trees
            .get(TreeId::Modseq)
            .scan_prefix(keys::expunged_prefix(space))
            .count();
        assert_eq!(logged, 0);
        Ok(())
    }
}
