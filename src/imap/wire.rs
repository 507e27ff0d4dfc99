//! Wire helpers: pure conversions between our types (flags, sets, dates) and
//! imap-codec's (statuses, sequence sets, FETCH values, response codes; mailbox names are
//! `names.rs`).

use std::{borrow::Cow, num::NonZeroU32};

use imap_codec::imap_types::{
    core::{Atom, IString, Literal, NString, Quoted, Vec1},
    datetime::DateTime,
    extensions::uidplus::{UidElement, UidSet},
    flag::{Flag, FlagFetch, FlagNameAttribute},
    response::{Code, Greeting, Status},
    sequence::{SeqOrUid, Sequence, SequenceSet},
};

use crate::store::Flags;

pub(super) fn ok_code(code: Code<'static>) -> Status<'static> {
    Status::ok(None, Some(code), "ok").unwrap_or_else(|_| fallback_ok())
}

pub(super) fn fallback_ok() -> Status<'static> {
    // Unwrap: a constant ASCII text always validates.
    Status::ok(None, None, "OK").expect("constant status text")
}

pub(super) fn fallback_greeting() -> Greeting<'static> {
    // Unwrap: a constant ASCII text always validates.
    Greeting::ok(None, "teamgate IMAP ready").expect("constant greeting text")
}

pub(super) fn attribute(name: &'static str) -> FlagNameAttribute<'static> {
    match Atom::try_from(name) {
        Ok(atom) => FlagNameAttribute::from(atom),
        Err(_) => FlagNameAttribute::Marked,
    }
}

pub(super) fn keyword(name: &str) -> Flag<'static> {
    match Atom::try_from(name.to_string()) {
        Ok(atom) => Flag::Keyword(atom),
        Err(_) => Flag::Flagged,
    }
}

pub(super) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

pub(super) fn seq_of(index: usize) -> NonZeroU32 {
    nz(u32::try_from(index + 1).unwrap_or(u32::MAX))
}

pub(super) fn nstring(mut bytes: Vec<u8>) -> NString<'static> {
    // IMAP4rev1 literals cannot carry NUL (CRATES.md §2.7): the rare message with one is
    // served with NUL as a space.
    for b in &mut bytes {
        if *b == 0 {
            *b = b' ';
        }
    }
    match Literal::try_from(bytes) {
        Ok(lit) => NString(Some(IString::Literal(lit))),
        Err(_) => NString(Some(IString::Quoted(Quoted::unvalidated(Cow::Borrowed(
            "",
        ))))),
    }
}

pub(super) fn internal_date(unix: i64) -> DateTime {
    let dt = chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .fixed_offset();
    DateTime::try_from(dt)
        .unwrap_or_else(|_| DateTime::unvalidated(chrono::DateTime::UNIX_EPOCH.fixed_offset()))
}

pub(super) fn header_section() -> imap_codec::imap_types::fetch::Section<'static> {
    imap_codec::imap_types::fetch::Section::Header(None)
}

pub(super) fn text_section() -> imap_codec::imap_types::fetch::Section<'static> {
    imap_codec::imap_types::fetch::Section::Text(None)
}

/// Whether `value` is named by the set (`*` = `largest`), without expanding ranges:
/// `1:4294967295` costs the same as `1`.
pub(super) fn set_contains(set: &SequenceSet, value: u32, largest: u32) -> bool {
    let expand = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => expand(s) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (expand(a), expand(b));
            (a.min(b)..=a.max(b)).contains(&value)
        }
    })
}

pub(super) fn flags_of(flags: &[Flag<'_>]) -> Flags {
    let mut out = Flags::default();
    for f in flags {
        match f {
            Flag::Seen => out.seen = true,
            Flag::Answered => out.answered = true,
            Flag::Flagged => out.flagged = true,
            Flag::Deleted => out.deleted = true,
            Flag::Draft => out.draft = true,
            Flag::Keyword(k) => {
                out.keywords.insert(k.as_ref().to_string());
            }
            Flag::Extension(_) => {}
        }
    }
    out
}

pub(super) fn flag_list_plain(flags: &Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::new();
    if flags.seen {
        out.push(Flag::Seen);
    }
    if flags.answered {
        out.push(Flag::Answered);
    }
    if flags.flagged {
        out.push(Flag::Flagged);
    }
    if flags.deleted {
        out.push(Flag::Deleted);
    }
    if flags.draft {
        out.push(Flag::Draft);
    }
    out.extend(flags.keywords.iter().map(|k| keyword(k)));
    out
}

/// FETCH FLAGS, with `\Recent` when the message is recent in this session (RFC 3501 §2.3.2).
pub(super) fn flag_list(flags: &Flags, recent: bool) -> Vec<FlagFetch<'static>> {
    let mut out: Vec<FlagFetch<'static>> = flag_list_plain(flags)
        .into_iter()
        .map(FlagFetch::Flag)
        .collect();
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

/// COPYUID for the (source uid, destination uid) pairs, compressed into single values.
pub(super) fn copy_uid_code(uid_validity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let uid_validity = NonZeroU32::new(uid_validity)?;
    let source: Vec<UidElement> = pairs
        .iter()
        .filter_map(|(s, _)| NonZeroU32::new(*s))
        .map(UidElement::Single)
        .collect();
    let destination: Vec<UidElement> = pairs
        .iter()
        .filter_map(|(_, d)| NonZeroU32::new(*d))
        .map(UidElement::Single)
        .collect();
    if source.len() != pairs.len() || destination.len() != pairs.len() {
        return None;
    }
    Some(Code::CopyUid {
        uid_validity,
        source: UidSet(Vec1::try_from(source).ok()?),
        destination: UidSet(Vec1::try_from(destination).ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_checked_without_expansion() {
        let set = SequenceSet::try_from("1:4294967295").unwrap();
        assert!(set_contains(&set, 7, 10));
        let set = SequenceSet::try_from("3,5:*").unwrap();
        assert!(!set_contains(&set, 4, 10));
        assert!(set_contains(&set, 10, 10));
        assert!(set_contains(&set, 5, 10));
        let set = SequenceSet::try_from("*:8").unwrap();
        assert!(set_contains(&set, 9, 10) && !set_contains(&set, 7, 10));
    }

    #[test]
    fn flags_round_trip() {
        let f = flags_of(&[
            Flag::Seen,
            Flag::Deleted,
            keyword("$Comment"),
            keyword("todo"),
        ]);
        assert!(f.seen && f.deleted && !f.answered);
        assert_eq!(flags_of(&flag_list_plain(&f)), f);
    }
}
