//! `\Recent` (RFC 3501 §2.3.2): a message is recent in the one session that is first told
//! of it. The daemon keeps, per mailbox (and UIDVALIDITY), the highest UID some read-write
//! session has been told of; UIDs above it are recent. Kept in memory (a mark per selected
//! mailbox): after a restart the first session to select a mailbox sees its messages as
//! recent again, as Dovecot does when it loses its index.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use super::mailbox::Target;

#[derive(Debug, Default)]
pub struct RecentMarks {
    /// (mailbox, UIDVALIDITY) → highest UID a session has claimed as recent.
    marks: Mutex<HashMap<(Target, u32), u32>>,
}

impl RecentMarks {
    /// The UIDs (ascending) of `uids` that are recent for a session told of them now. A
    /// read-write session claims them (no later session sees them as recent); a read-only
    /// one does not (RFC 3501 §6.3.2: EXAMINE makes no change, \Recent included).
    pub fn told(&self, target: &Target, uid_validity: u32, uids: &[u32], claim: bool) -> Vec<u32> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (target.clone(), uid_validity);
        let mark = marks.get(&key).copied().unwrap_or(0);
        let recent: Vec<u32> = uids.iter().copied().filter(|u| *u > mark).collect();
        if claim && let Some(highest) = recent.iter().max() {
            marks.insert(key, *highest);
        }
        recent
    }

    /// How many of `uids` no session has claimed yet (STATUS RECENT, RFC 3501 §6.3.10).
    pub fn count(&self, target: &Target, uid_validity: u32, uids: &[u32]) -> usize {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = marks
            .get(&(target.clone(), uid_validity))
            .copied()
            .unwrap_or(0);
        uids.iter().filter(|u| **u > mark).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FolderId;

    #[test]
    fn the_first_read_write_session_claims_and_examine_does_not() {
        let marks = RecentMarks::default();
        let t = Target::Folder(FolderId {
            owner: "alice".into(),
            name: "Personal/x".into(),
        });
        assert_eq!(marks.told(&t, 7, &[1, 2], false), vec![1, 2]);
        assert_eq!(marks.count(&t, 7, &[1, 2]), 2);
        assert_eq!(marks.told(&t, 7, &[1, 2], true), vec![1, 2]);
        assert_eq!(marks.told(&t, 7, &[1, 2, 3], true), vec![3]);
        assert_eq!(marks.count(&t, 7, &[1, 2, 3]), 0);
        // A new UIDVALIDITY starts over.
        assert_eq!(marks.count(&t, 8, &[1]), 1);
    }
}
