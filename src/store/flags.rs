//! IMAP flags (SPEC §5): `\Seen`, `\Flagged` and the junk-filter keywords (`Junk`,
//! `NonJunk`, `$Junk`, `$NotJunk`, `$Phishing`) per agent (`flags` tree, one byte per
//! agent and message), `\Answered`, `\Deleted`, `\Draft` and every other keyword shared
//! by everyone seeing the message (`shared_flags` tree, one JSON record per message).
//!
//! A junk keyword stored shared before it became per agent is shown to nobody: whose
//! filter set it cannot be told, and showing it to everyone was the bug. It stays in the
//! shared record (which still decodes as before) until that message's shared flags are
//! next written, and is dropped then.
//! Reading and combining them, and writing them on the writer: [`FlagWrite`] (a STORE,
//! and the flags an APPEND or COPY gives a folder's new message) and `store_flags`. Each
//! write also records its mod-sequence (`modseq.rs`).

use super::db::Trees;
use super::error::StoreError;
use std::collections::HashMap;

use sled::Transactional;

use super::keys::{self, TreeId};
use super::model::{FlagOp, Flags, MessageKey, UnchangedSince};
use super::modseq;
use super::records::{self, SharedFlagsRecord};
use super::tx::{Tx, TxResult, tx_error};
use super::writer_state::WriterState;

/// The canonical spelling of `keyword` if it is one of the per-agent junk keywords.
/// Matched without regard to case, as clients differ in the case they send.
pub fn per_agent_keyword(keyword: &str) -> Option<&'static str> {
    keys::AGENT_KEYWORDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(keyword))
        .map(|(name, _)| *name)
}

/// The per-agent byte of `flags`.
pub fn agent_bits(f: &Flags) -> u8 {
    let mut b = 0;
    if f.seen {
        b |= keys::AGENT_SEEN;
    }
    if f.flagged {
        b |= keys::AGENT_FLAGGED;
    }
    for (name, bit) in keys::AGENT_KEYWORDS {
        if f.keywords.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            b |= bit;
        }
    }
    b
}

/// The shared record of `flags`.
pub fn shared_part(f: &Flags) -> SharedFlagsRecord {
    SharedFlagsRecord {
        answered: f.answered,
        deleted: f.deleted,
        draft: f.draft,
        keywords: f
            .keywords
            .iter()
            .filter(|k| per_agent_keyword(k).is_none())
            .cloned()
            .collect(),
    }
}

/// Flags as one agent sees them, from its byte and the shared record.
pub fn join(bits: u8, shared: SharedFlagsRecord) -> Flags {
    // A legacy shared junk keyword is not shown (module docs).
    let mut keywords: std::collections::BTreeSet<String> = shared
        .keywords
        .into_iter()
        .filter(|k| per_agent_keyword(k).is_none())
        .collect();
    for (name, bit) in keys::AGENT_KEYWORDS {
        if bits & bit != 0 {
            keywords.insert(name.to_string());
        }
    }
    Flags {
        seen: bits & keys::AGENT_SEEN != 0,
        flagged: bits & keys::AGENT_FLAGGED != 0,
        answered: shared.answered,
        deleted: shared.deleted,
        draft: shared.draft,
        keywords,
    }
}

/// The result of a STORE of `given` with `op` on `current`.
pub fn combine(op: FlagOp, current: &Flags, given: &Flags) -> Flags {
    // `junk` and `Junk` are one keyword: compare in the spelling `join` shows.
    let given = &Flags {
        keywords: given
            .keywords
            .iter()
            .map(|k| per_agent_keyword(k).map_or_else(|| k.clone(), str::to_string))
            .collect(),
        ..given.clone()
    };
    match op {
        FlagOp::Replace => given.clone(),
        FlagOp::Add => Flags {
            seen: current.seen || given.seen,
            answered: current.answered || given.answered,
            flagged: current.flagged || given.flagged,
            deleted: current.deleted || given.deleted,
            draft: current.draft || given.draft,
            keywords: current.keywords.union(&given.keywords).cloned().collect(),
        },
        FlagOp::Remove => Flags {
            seen: current.seen && !given.seen,
            answered: current.answered && !given.answered,
            flagged: current.flagged && !given.flagged,
            deleted: current.deleted && !given.deleted,
            draft: current.draft && !given.draft,
            keywords: current
                .keywords
                .difference(&given.keywords)
                .cloned()
                .collect(),
        },
    }
}

pub fn read_agent_bits(trees: &Trees, agent: &str, key: MessageKey) -> Result<u8, StoreError> {
    let k = keys::agent_flags(agent, key);
    match trees.get(TreeId::Flags).get(&k)? {
        None => Ok(0),
        Some(v) => match v.as_ref() {
            [b] => Ok(*b),
            _ => Err(records::corrupt(
                TreeId::Flags,
                &k,
                "flag value is not one byte",
            )),
        },
    }
}

pub fn read_shared(trees: &Trees, key: MessageKey) -> Result<SharedFlagsRecord, StoreError> {
    let k = keys::shared_flags(key);
    match trees.get(TreeId::SharedFlags).get(k)? {
        None => Ok(SharedFlagsRecord::default()),
        Some(v) => records::decode(TreeId::SharedFlags, &k, &v),
    }
}

/// Flags of `key` as `agent` sees them (committed state).
pub fn read(trees: &Trees, agent: &str, key: MessageKey) -> Result<Flags, StoreError> {
    Ok(join(
        read_agent_bits(trees, agent, key)?,
        read_shared(trees, key)?,
    ))
}

/// Below this many keys, or when the keys are sparser than one in [`SCAN_SPAN`] of their
/// range, [`read_many`] reads each message's flags alone.
const SCAN_AT_LEAST: usize = 64;
const SCAN_SPAN: u64 = 8;

/// Flags of many messages as `agent` sees them, in the order of `keys`. A mailbox's
/// messages are mostly a dense run of keys: two range scans (the agent's bytes, the
/// shared records) then replace two point reads per message, and messages without flags
/// cost nothing.
pub fn read_many(
    trees: &Trees,
    agent: &str,
    keys: &[MessageKey],
) -> Result<Vec<Flags>, StoreError> {
    let (Some(lo), Some(hi)) = (keys.iter().min(), keys.iter().max()) else {
        return Ok(Vec::new());
    };
    let span = hi.0 - lo.0 + 1;
    if keys.len() < SCAN_AT_LEAST || (keys.len() as u64).saturating_mul(SCAN_SPAN) < span {
        return keys.iter().map(|k| read(trees, agent, *k)).collect();
    }
    let mut bits: Vec<(u64, u8)> = Vec::new();
    let tree = trees.get(TreeId::Flags);
    for kv in tree.range(keys::agent_flags(agent, *lo)..=keys::agent_flags(agent, *hi)) {
        let (k, v) = kv?;
        let Some((_, msg)) = keys::parse_agent_flags(&k) else {
            return Err(records::corrupt(TreeId::Flags, &k, "malformed flags key"));
        };
        match v.as_ref() {
            [b] => bits.push((msg.0, *b)),
            _ => {
                return Err(records::corrupt(
                    TreeId::Flags,
                    &k,
                    "flag value is not one byte",
                ));
            }
        }
    }
    let mut shared: Vec<(u64, SharedFlagsRecord)> = Vec::new();
    let tree = trees.get(TreeId::SharedFlags);
    for kv in tree.range(keys::shared_flags(*lo)..=keys::shared_flags(*hi)) {
        let (k, v) = kv?;
        let msg = records::u64_at(TreeId::SharedFlags, &k, &k, 0)?;
        shared.push((msg, records::decode(TreeId::SharedFlags, &k, &v)?));
    }
    // Both scans come back in key order (big-endian keys).
    Ok(keys
        .iter()
        .map(|k| {
            let b = bits
                .binary_search_by_key(&k.0, |(m, _)| *m)
                .map_or(0, |i| bits[i].1);
            let s = shared
                .binary_search_by_key(&k.0, |(m, _)| *m)
                .map_or_else(|_| SharedFlagsRecord::default(), |i| shared[i].1.clone());
            join(b, s)
        })
        .collect())
}

/// Encoded flag writes for one message: the agent byte (None = remove) and the shared
/// record (None = remove).
pub(super) struct FlagWrite {
    agent: Option<(Vec<u8>, Option<u8>)>,
    shared: Option<([u8; 8], Option<Vec<u8>>)>,
}

impl FlagWrite {
    /// The writes that take `key` from `before` to `after` for `agent` (None: shared only).
    pub(super) fn new(
        agent: Option<&str>,
        key: MessageKey,
        before: &Flags,
        after: &Flags,
    ) -> Result<Self, StoreError> {
        let agent = match agent {
            Some(a) if agent_bits(before) != agent_bits(after) => {
                let bits = agent_bits(after);
                Some((keys::agent_flags(a, key), (bits != 0).then_some(bits)))
            }
            _ => None,
        };
        let (sb, sa) = (shared_part(before), shared_part(after));
        let shared = if sb == sa {
            None
        } else if sa == SharedFlagsRecord::default() {
            Some((keys::shared_flags(key), None))
        } else {
            Some((
                keys::shared_flags(key),
                Some(records::encode(TreeId::SharedFlags, &sa)?),
            ))
        };
        Ok(FlagWrite { agent, shared })
    }

    fn is_empty(&self) -> bool {
        self.agent.is_none() && self.shared.is_none()
    }

    /// Writes the flags and, for each part written, that it changed at `modseq`.
    pub(super) fn apply(&self, tx: &Tx<'_>, modseq: u64) -> TxResult<()> {
        if let Some((k, v)) = &self.agent {
            match v {
                Some(b) => tx.t(TreeId::Flags).insert(k.as_slice(), &[*b][..])?,
                None => tx.t(TreeId::Flags).remove(k.as_slice())?,
            };
            modseq::write_flag_modseq(tx, &keys::modseq_agent(k), modseq)?;
        }
        if let Some((k, v)) = &self.shared {
            match v {
                Some(b) => tx.t(TreeId::SharedFlags).insert(&k[..], b.as_slice())?,
                None => tx.t(TreeId::SharedFlags).remove(&k[..])?,
            };
            let msg = MessageKey(u64::from_be_bytes(*k));
            modseq::write_flag_modseq(tx, &keys::modseq_shared(msg), modseq)?;
        }
        Ok(())
    }
}

impl WriterState {
    pub(super) fn store_flags(
        &mut self,
        agent: &str,
        keys: &[MessageKey],
        op: FlagOp,
        given: &Flags,
        guard: Option<&UnchangedSince>,
    ) -> Result<(Vec<Flags>, Vec<usize>), StoreError> {
        let modified = match guard {
            Some(g) => self.modified_since(g, agent, keys)?,
            None => Vec::new(),
        };
        // (flags before this STORE, flags now) per distinct key.
        let mut state: HashMap<MessageKey, (Flags, Flags)> = HashMap::new();
        let mut results = Vec::with_capacity(keys.len());
        for (i, &key) in keys.iter().enumerate() {
            let current = match state.get(&key) {
                Some((_, now)) => now.clone(),
                None => {
                    self.check_message(key)?;
                    read(&self.trees, agent, key)?
                }
            };
            // RFC 7162 §3.1.3: a message that failed UNCHANGEDSINCE keeps its flags.
            let new = if modified.contains(&i) {
                current.clone()
            } else {
                combine(op, &current, given)
            };
            state
                .entry(key)
                .or_insert_with(|| (current, Flags::default()))
                .1 = new.clone();
            results.push(new);
        }
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (key, (before, after)) in &state {
            let w = FlagWrite::new(Some(agent), *key, before, after)?;
            if !w.is_empty() {
                writes.push(w);
                written.push(*key);
            }
        }
        if writes.is_empty() {
            return Ok((results, modified));
        }
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                for w in &writes {
                    w.apply(&tx, bump.modseq())?;
                }
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        self.flags_touched_only(written);
        Ok((results, modified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(seen: bool, flagged: bool, deleted: bool, kw: &[&str]) -> Flags {
        Flags {
            seen,
            flagged,
            deleted,
            keywords: kw.iter().map(|s| (*s).to_owned()).collect(),
            ..Flags::default()
        }
    }

    #[test]
    fn combine_ops() {
        let cur = f(true, false, false, &["$a", "$b"]);
        assert_eq!(
            combine(FlagOp::Add, &cur, &f(false, true, false, &["$c"])),
            f(true, true, false, &["$a", "$b", "$c"])
        );
        assert_eq!(
            combine(FlagOp::Remove, &cur, &f(true, true, false, &["$a", "$z"])),
            f(false, false, false, &["$b"])
        );
        assert_eq!(
            combine(FlagOp::Replace, &cur, &f(false, false, true, &[])),
            f(false, false, true, &[])
        );
    }

    #[test]
    fn junk_keywords_are_per_agent_and_legacy_shared_ones_are_hidden() {
        let x = f(
            false,
            false,
            false,
            &["Junk", "$NotJunk", "$Phishing", "$label1"],
        );
        let shared = shared_part(&x);
        assert_eq!(shared.keywords, ["$label1".to_owned()].into());
        assert_eq!(join(agent_bits(&x), shared.clone()), x);
        // A teammate (no bits of its own) sees only the shared keyword.
        assert_eq!(join(0, shared).keywords, ["$label1".to_owned()].into());
        // Stored shared before this change: readable, not shown.
        let legacy = SharedFlagsRecord {
            keywords: ["Junk".to_owned(), "todo".to_owned()].into(),
            ..SharedFlagsRecord::default()
        };
        assert_eq!(join(0, legacy).keywords, ["todo".to_owned()].into());
        // Case does not matter; the canonical spelling is shown.
        let cur = combine(
            FlagOp::Add,
            &Flags::default(),
            &f(false, false, false, &["junk"]),
        );
        assert_eq!(cur.keywords, ["Junk".to_owned()].into());
        let off = combine(FlagOp::Remove, &cur, &f(false, false, false, &["JUNK"]));
        assert!(off.keywords.is_empty(), "{off:?}");
    }

    #[test]
    fn split_and_join_round_trip() {
        let all = Flags {
            seen: true,
            answered: true,
            flagged: true,
            deleted: true,
            draft: true,
            keywords: ["$Comment".to_owned()].into(),
        };
        for x in [Flags::default(), all, f(false, true, false, &["k"])] {
            assert_eq!(join(agent_bits(&x), shared_part(&x)), x);
        }
    }
}
