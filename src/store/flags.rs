//! IMAP flags (SPEC §5): `\Seen` and `\Flagged` per agent (`flags` tree, one byte per
//! agent and message), `\Answered`, `\Deleted`, `\Draft` and every keyword shared by
//! everyone seeing the message (`shared_flags` tree, one JSON record per message).

use super::db::Trees;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{FlagOp, Flags, MessageKey};
use super::records::{self, SharedFlagsRecord};

/// The per-agent byte of `flags`.
pub fn agent_bits(f: &Flags) -> u8 {
    let mut b = 0;
    if f.seen {
        b |= keys::AGENT_SEEN;
    }
    if f.flagged {
        b |= keys::AGENT_FLAGGED;
    }
    b
}

/// The shared record of `flags`.
pub fn shared_part(f: &Flags) -> SharedFlagsRecord {
    SharedFlagsRecord {
        answered: f.answered,
        deleted: f.deleted,
        draft: f.draft,
        keywords: f.keywords.clone(),
    }
}

/// Flags as one agent sees them, from its byte and the shared record.
pub fn join(bits: u8, shared: SharedFlagsRecord) -> Flags {
    Flags {
        seen: bits & keys::AGENT_SEEN != 0,
        flagged: bits & keys::AGENT_FLAGGED != 0,
        answered: shared.answered,
        deleted: shared.deleted,
        draft: shared.draft,
        keywords: shared.keywords,
    }
}

/// The result of a STORE of `given` with `op` on `current`.
pub fn combine(op: FlagOp, current: &Flags, given: &Flags) -> Flags {
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
