//! Which keywords the client has been told of: SELECT announces the mailbox's in FLAGS and
//! PERMANENTFLAGS, and a keyword first seen later (set by this or another session) is
//! announced with a new untagged FLAGS before the first FETCH that shows it (RFC 3501
//! §7.2.6: FLAGS lists the flags "applicable for this mailbox"; clients such as imaptest
//! refuse a FETCH keyword they were not told of).

use std::collections::BTreeSet;

use imap_codec::imap_types::{
    fetch::MessageDataItem,
    flag::{Flag, FlagFetch, FlagPerm},
    response::{Code, Data, Status},
};

use crate::{
    imap::{
        session::{Session, State},
        wire::{keyword, ok_code},
    },
    store::Flags,
};

/// Keywords every mailbox offers (SPEC §5).
const OFFERED: [&str; 2] = ["$Comment", "$Replying"];

/// The keywords to announce on SELECT: the offered ones and every one in use there.
pub(in crate::imap) fn initial_keywords(flags: &[Flags]) -> BTreeSet<String> {
    OFFERED
        .iter()
        .map(|k| k.to_string())
        .chain(flags.iter().flat_map(|f| f.keywords.iter().cloned()))
        .collect()
}

/// The untagged FLAGS (RFC 3501 §7.2.6): system flags and the announced keywords.
pub(in crate::imap) fn flags_data(keywords: &BTreeSet<String>) -> Data<'static> {
    let mut flags = vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ];
    flags.extend(keywords.iter().map(|k| keyword(k)));
    Data::Flags(flags)
}

/// PERMANENTFLAGS (RFC 3501 §7.1): empty when read-only, else the system flags and `\*`,
/// which lets the client create any keyword. Keywords are not listed: PERMANENTFLAGS goes
/// out before FLAGS, and a keyword there before FLAGS named it would confuse clients.
pub(in crate::imap) fn permanent_flags(writable: bool) -> Status<'static> {
    let mut permanent = Vec::new();
    if writable {
        permanent.extend(
            [
                Flag::Answered,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Seen,
                Flag::Draft,
            ]
            .map(FlagPerm::Flag),
        );
        permanent.push(FlagPerm::Asterisk);
    }
    ok_code(Code::PermanentFlags(permanent))
}

impl Session {
    /// Inserts an untagged FLAGS before the first FETCH in `untagged` that shows a keyword
    /// the client has not been told of (PERMANENTFLAGS holds `\*`, so it stays as it was).
    pub(in crate::imap) fn announce_keywords(&mut self, untagged: &mut Vec<Data<'static>>) {
        let State::Selected(_, sel) = &mut self.state else {
            return;
        };
        let mut first = None;
        for (i, data) in untagged.iter().enumerate() {
            let Data::Fetch { items, .. } = data else {
                continue;
            };
            for item in items.as_ref() {
                let MessageDataItem::Flags(flags) = item else {
                    continue;
                };
                for flag in flags {
                    if let FlagFetch::Flag(Flag::Keyword(k)) = flag
                        && sel.keywords.insert(k.inner().to_string())
                    {
                        first.get_or_insert(i);
                    }
                }
            }
        }
        if let Some(at) = first {
            untagged.insert(at, flags_data(&sel.keywords));
        }
    }
}
