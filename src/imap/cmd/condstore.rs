//! CONDSTORE and QRESYNC (RFC 7162), the IMAP side: what ENABLE and the CONDSTORE-enabling
//! commands turn on (`Condstore`, in `session.rs`), the mod-sequences of the selected messages,
//! HIGHESTMODSEQ, the QRESYNC select parameter, and VANISHED. The mod-sequences
//! themselves are kept by the store (`store/modseq.rs`).
//!
//! The atomic claim (two agents tagging the same conversation): `STORE (UNCHANGEDSINCE
//! m) +FLAGS (<shared keyword>)` is checked and written in one store writer request, so
//! one agent wins and the other gets `[MODIFIED]`. MOVE has no conditional form in RFC
//! 7162 and stays last-writer-wins; clients that need a claim before moving tag first.
//!
//! QUIRK(teamgate): `$Replying` is derived presence, not stored, so it has no
//! mod-sequence: CHANGEDSINCE and QRESYNC do not report it coming and going; selected
//! sessions still get it pushed as a FETCH (`select.rs` compares shown flags).

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::{
    command::SelectParameter,
    core::Vec1,
    extensions::enable::CapabilityEnable,
    fetch::MessageDataItem,
    response::{Code, Data, Status},
    sequence::{SeqOrUid, Sequence, SequenceSet},
};

use crate::{
    imap::{
        session::{ImapContext, Outcome, Selected, Session, done},
        wire::{flag_list, nz, ok_code, seq_of},
    },
    store::{MailboxSnapshot, MessageKey, StoreError},
};

/// The capability name ENABLE turns QRESYNC on with (imap-codec has no variant).
const QRESYNC: &str = "QRESYNC";

impl Session {
    /// RFC 5161 ENABLE: CONDSTORE, and QRESYNC, which implies CONDSTORE (RFC 7162 §3.2.3).
    pub(in crate::imap) fn handle_enable(&mut self, caps: &[CapabilityEnable<'_>]) -> Outcome {
        self.agent()?;
        // RFC 6855 §3: UTF8=ACCEPT switches mailbox names to UTF-8 (`cmd/names.rs`).
        let mut enabled = self.enable_names(caps);
        for cap in caps {
            match cap {
                CapabilityEnable::CondStore => {
                    self.condstore.enabled = true;
                    enabled.push(CapabilityEnable::CondStore);
                }
                other if other.to_string().eq_ignore_ascii_case(QRESYNC) => {
                    self.condstore.enabled = true;
                    self.condstore.qresync = true;
                    if let Ok(q) = CapabilityEnable::try_from(QRESYNC) {
                        enabled.push(q);
                    }
                }
                // RFC 5161 §3.1: unknown capabilities are ignored.
                _ => {}
            }
        }
        Ok(done(
            vec![Data::Enabled {
                capabilities: enabled,
            }],
            "ENABLE completed",
        ))
    }
}

/// The mod-sequence of each selected message at `indices`, as `login` sees it.
pub(in crate::imap) fn modseqs(
    ctx: &ImapContext,
    login: &str,
    sel: &Selected,
    indices: &[usize],
) -> Result<Vec<u64>, StoreError> {
    let entries: Vec<(u32, MessageKey)> = indices
        .iter()
        .map(|&i| (sel.entries[i].0, sel.entries[i].1.message))
        .collect();
    ctx.store.modseqs(sel.space, login, &entries)
}

/// HIGHESTMODSEQ of a mailbox snapshot for `login` (RFC 7162 §3.1.2.1).
pub(in crate::imap) fn highest(
    ctx: &ImapContext,
    login: &str,
    snapshot: &MailboxSnapshot,
) -> Result<NonZeroU64, StoreError> {
    let keys: Vec<(u32, MessageKey)> = snapshot
        .entries
        .iter()
        .map(|(u, e)| (*u, e.message))
        .collect();
    let h = ctx
        .store
        .highest_modseq(snapshot.space, login, &keys, snapshot.highest_change)?;
    Ok(modseq_value(h))
}

/// `* OK [HIGHESTMODSEQ n]` for the selected mailbox, sent when a command other than
/// SELECT turned CONDSTORE on while it was selected (RFC 7162 §3.1). Capped at the change
/// counter of its last sync, like SELECT's.
pub(in crate::imap) fn announce_highest(
    ctx: &ImapContext,
    login: &str,
    sel: &Selected,
) -> Result<Status<'static>, StoreError> {
    let keys: Vec<(u32, MessageKey)> = sel.entries.iter().map(|(u, e)| (*u, e.message)).collect();
    let h = ctx
        .store
        .highest_modseq(sel.space, login, &keys, sel.synced_at.0)?;
    Ok(ok_code(Code::HighestModSeq(modseq_value(h))))
}

pub(in crate::imap) fn modseq_value(m: u64) -> NonZeroU64 {
    NonZeroU64::new(m).unwrap_or(NonZeroU64::MIN)
}

pub(in crate::imap) fn modseq_item(m: u64) -> MessageDataItem<'static> {
    MessageDataItem::ModSeq(modseq_value(m))
}

/// The sorted, merged ranges a set names, `*` standing for `largest`.
fn ranges(set: &SequenceSet, largest: u32) -> Vec<(u32, u32)> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut out: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(v) => (value(v), value(v)),
            Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
        })
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(out.len());
    for (lo, hi) in out {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// A compact set of ascending ranges; `None` when empty.
fn set_of_ranges(ranges: &[(u32, u32)]) -> Option<SequenceSet> {
    let seqs: Vec<Sequence> = ranges
        .iter()
        .filter_map(|&(lo, hi)| {
            let (lo, hi) = (NonZeroU32::new(lo)?, NonZeroU32::new(hi)?);
            Some(if lo == hi {
                Sequence::Single(SeqOrUid::Value(lo))
            } else {
                Sequence::Range(SeqOrUid::Value(lo), SeqOrUid::Value(hi))
            })
        })
        .collect();
    Vec1::try_from(seqs).ok().map(SequenceSet)
}

/// A compact set of ascending values (e.g. `3:7,9`); `None` when empty.
pub(in crate::imap) fn compact_set(values: &[u32]) -> Option<SequenceSet> {
    let mut rs: Vec<(u32, u32)> = Vec::new();
    for &v in values {
        match rs.last_mut() {
            Some(last) if v == last.1.saturating_add(1) => last.1 = v,
            Some(last) if v <= last.1 => {}
            _ => rs.push((v, v)),
        }
    }
    set_of_ranges(&rs)
}

/// `VANISHED (EARLIER)` for the uids expunged from the selected mailbox after `since`,
/// restricted to `within` (RFC 7162 §3.2.5, §3.2.6). When the store's expunge log does
/// not reach back that far, every uid of the range that is not in the mailbox (RFC 7162
/// §3.2.5.2 allows naming uids the client never saw).
pub(in crate::imap) fn vanished_earlier(
    ctx: &ImapContext,
    sel: &Selected,
    since: u64,
    within: Option<&SequenceSet>,
) -> Result<Option<Data<'static>>, StoreError> {
    let largest = sel.uid_next.saturating_sub(1);
    if largest == 0 {
        return Ok(None);
    }
    let scope = match within {
        Some(set) => ranges(set, largest),
        None => vec![(1, largest)],
    };
    let present: Vec<u32> = sel.entries.iter().map(|(u, _)| *u).collect();
    let gone: Vec<(u32, u32)> = match ctx.store.vanished_since(sel.space, since)? {
        Some(uids) => {
            let inside: Vec<u32> = uids
                .into_iter()
                .filter(|u| scope.iter().any(|(lo, hi)| (lo..=hi).contains(&u)))
                .collect();
            return Ok(compact_set(&inside).map(|known_uids| Data::Vanished {
                earlier: true,
                known_uids,
            }));
        }
        None => scope
            .iter()
            .flat_map(|&(lo, hi)| gaps(&present, lo, hi.min(largest)))
            .collect(),
    };
    Ok(set_of_ranges(&gone).map(|known_uids| Data::Vanished {
        earlier: true,
        known_uids,
    }))
}

/// The ranges of `lo..=hi` not in `present` (ascending).
fn gaps(present: &[u32], lo: u32, hi: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let mut next = lo;
    let start = present.partition_point(|&u| u < lo);
    for &u in &present[start..] {
        if u > hi {
            break;
        }
        if u > next {
            out.push((next, u - 1));
        }
        next = u.saturating_add(1);
    }
    if next <= hi && next >= lo {
        out.push((next, hi));
    }
    out
}

/// What `SELECT box (QRESYNC (...))` adds after the usual answer (RFC 7162 §3.2.5):
/// VANISHED (EARLIER) for what left since the client's mod-sequence, then FETCH (UID
/// FLAGS MODSEQ) for what changed or arrived. Nothing when the UIDVALIDITY differs (the
/// client must resync in full).
pub(in crate::imap) fn qresync_answer(
    ctx: &ImapContext,
    login: &str,
    sel: &Selected,
    param: &SelectParameter,
) -> Result<Vec<Data<'static>>, StoreError> {
    let SelectParameter::QResync {
        uid_validity,
        mod_sequence_value,
        known_uids,
        ..
    } = param
    else {
        return Ok(Vec::new());
    };
    if uid_validity.get() != sel.uid_validity {
        return Ok(Vec::new());
    }
    let since = mod_sequence_value.get();
    let mut out = Vec::new();
    if let Some(v) = vanished_earlier(ctx, sel, since, known_uids.as_ref())? {
        out.push(v);
    }
    let largest = sel.uid_next.saturating_sub(1);
    let scope: Vec<usize> = (0..sel.entries.len())
        .filter(|&i| {
            known_uids
                .as_ref()
                .is_none_or(|k| crate::imap::wire::set_contains(k, sel.entries[i].0, largest))
        })
        .collect();
    let mods = modseqs(ctx, login, sel, &scope)?;
    for (i, m) in scope.into_iter().zip(mods) {
        if m > since {
            out.push(Data::Fetch {
                seq: seq_of(i),
                items: Vec1::unvalidated(vec![
                    MessageDataItem::Uid(nz(sel.entries[i].0)),
                    MessageDataItem::Flags(flag_list(
                        &sel.flags[i],
                        sel.recent.contains(&sel.entries[i].0),
                    )),
                    modseq_item(m),
                ]),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_compact() {
        let s = compact_set(&[1, 2, 3, 5, 7, 8]).unwrap();
        assert_eq!(ranges(&s, 100), vec![(1, 3), (5, 5), (7, 8)]);
        assert!(compact_set(&[]).is_none());
        let set = SequenceSet::try_from("5:*,1,2").unwrap();
        assert_eq!(ranges(&set, 9), vec![(1, 2), (5, 9)]);
    }

    #[test]
    fn gaps_between_present_uids() {
        assert_eq!(gaps(&[2, 3, 6], 1, 8), vec![(1, 1), (4, 5), (7, 8)]);
        assert_eq!(gaps(&[1, 2], 1, 2), Vec::<(u32, u32)>::new());
        assert_eq!(gaps(&[], 3, 4), vec![(3, 4)]);
    }
}
