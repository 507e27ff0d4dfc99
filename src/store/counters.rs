//! The counters the writer thread and the `Store` handles share: barriers and requests
//! run (for stats), the store-wide change counter as of the last barrier, and the flag log
//! (whose flags each recent change wrote).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::model::MessageKey;

/// Counters shared between the writer and the handles.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) barriers: AtomicU64,
    pub(super) requests: AtomicU64,
    /// The store-wide change counter as of the last barrier.
    pub(super) change: AtomicU64,
    /// Whose flags each recent change wrote (the writer appends, sessions read).
    pub(super) flag_log: Mutex<FlagLog>,
}

/// The messages whose flags each recent change (by change counter) may have altered,
/// oldest first: `None` when the change did not say. Lets an IMAP session re-read only
/// those flags instead of all of its mailbox's.
#[derive(Debug, Default)]
pub(super) struct FlagLog {
    changes: std::collections::VecDeque<(u64, Option<Vec<MessageKey>>)>,
}

impl FlagLog {
    /// Changes remembered; a session further behind re-reads every flag.
    pub(super) const LEN: usize = 4096;

    pub(super) fn push(&mut self, change: u64, keys: Option<Vec<MessageKey>>) {
        if self.changes.len() >= Self::LEN {
            self.changes.pop_front();
        }
        self.changes.push_back((change, keys));
    }

    /// Messages one change may name; a bulk STORE past it stays unnamed (sessions re-read
    /// every flag once), so the log holds at most `LEN * MAX_KEYS` keys.
    pub(super) const MAX_KEYS: usize = 1024;

    /// Narrows the entry of `change` (the latest) to `keys`.
    pub(super) fn narrow(&mut self, change: u64, keys: Vec<MessageKey>) {
        if keys.len() > Self::MAX_KEYS {
            return;
        }
        if let Some((c, k)) = self.changes.back_mut()
            && *c == change
        {
            *k = Some(keys);
        }
    }

    /// Every message whose flags a change after `since` altered, when all of those
    /// changes are remembered and each said which.
    pub(super) fn since(&self, since: u64) -> Option<HashSet<MessageKey>> {
        let start = self.changes.iter().position(|(c, _)| *c == since + 1);
        let Some(start) = start else {
            // Nothing after `since` yet, or `since` is older than the log.
            return self
                .changes
                .back()
                .is_none_or(|(c, _)| *c <= since)
                .then(HashSet::new);
        };
        let mut keys = HashSet::new();
        for (expected, (c, k)) in (since + 1..).zip(self.changes.iter().skip(start)) {
            if *c != expected {
                return None;
            }
            keys.extend(k.as_ref()?.iter().copied());
        }
        Some(keys)
    }
}
