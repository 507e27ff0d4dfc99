//! Who is writing a reply right now (SPEC §5/§6 `$Replying`): a reply draft saved in an
//! agent's `Drafts` that answers a conversation marks that conversation's messages with
//! `$Replying` for the other agents, until the reply is sent, the draft is deleted, or
//! `collision_window_secs` pass.
//!
//! This is presence, like "is typing": it lives in memory and is derived into the flags
//! the IMAP view shows, never stored. After a restart nobody is replying until a draft
//! is saved again, which is what the agents' clients do every few seconds anyway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use crate::store::ConversationId;

#[derive(Debug, Clone)]
struct Draft {
    agent: String,
    /// UID of the draft in the agent's `Drafts`.
    uid: u32,
    /// Unix seconds after which it no longer counts.
    expires: i64,
}

#[derive(Debug, Clone)]
pub struct Replying {
    drafts: Arc<Mutex<HashMap<ConversationId, Vec<Draft>>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Replying {
    fn default() -> Self {
        Replying {
            drafts: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Replying {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Vec<Draft>>> {
        // The map holds no invariants a panic could break.
        self.drafts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumped on every change to who is replying.
    pub fn generation(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Changes to who is replying, for IDLE sessions (and when a draft expires).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn draft_saved(&self, conversation: ConversationId, agent: &str, uid: u32, expires: i64) {
        self.lock().entry(conversation).or_default().push(Draft {
            agent: agent.to_string(),
            uid,
            expires,
        });
        self.bump();
    }

    /// Drafts of `agent` with these UIDs were expunged from its `Drafts`.
    pub fn drafts_removed(&self, agent: &str, uids: &[u32]) {
        let mut changed = false;
        let mut map = self.lock();
        for drafts in map.values_mut() {
            let before = drafts.len();
            drafts.retain(|d| !(d.agent == agent && uids.contains(&d.uid)));
            changed |= drafts.len() != before;
        }
        map.retain(|_, d| !d.is_empty());
        drop(map);
        if changed {
            self.bump();
        }
    }

    /// `agent` sent its reply: its drafts for the conversation no longer count.
    pub fn replied(&self, conversation: ConversationId, agent: &str) {
        let mut map = self.lock();
        let Some(drafts) = map.get_mut(&conversation) else {
            return;
        };
        let before = drafts.len();
        drafts.retain(|d| d.agent != agent);
        let changed = drafts.len() != before;
        if drafts.is_empty() {
            map.remove(&conversation);
        }
        drop(map);
        if changed {
            self.bump();
        }
    }

    /// Whether someone other than `viewer` has a live reply draft for the conversation.
    pub fn others_replying(&self, conversation: ConversationId, viewer: &str, now: i64) -> bool {
        self.lock()
            .get(&conversation)
            .is_some_and(|d| d.iter().any(|d| d.agent != viewer && d.expires > now))
    }

    /// Drops expired drafts; returns the next expiry still ahead, if any.
    pub fn expire(&self, now: i64) -> Option<i64> {
        let mut map = self.lock();
        let mut changed = false;
        for drafts in map.values_mut() {
            let before = drafts.len();
            drafts.retain(|d| d.expires > now);
            changed |= drafts.len() != before;
        }
        map.retain(|_, d| !d.is_empty());
        let next = map.values().flatten().map(|d| d.expires).min();
        drop(map);
        if changed {
            self.bump();
        }
        next
    }
}

/// Expires drafts on time, so IDLE sessions see `$Replying` go away by itself.
pub async fn run_expiry(replying: Replying, shutdown: tokio_util::sync::CancellationToken) {
    let mut changes = replying.subscribe();
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = match replying.expire(now) {
            Some(at) => std::time::Duration::from_secs(u64::try_from(at - now).unwrap_or(0).max(1)),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_mark_others_until_sent_deleted_or_expired() {
        let r = Replying::default();
        let c = ConversationId(7);
        r.draft_saved(c, "alice", 3, 100);
        assert!(r.others_replying(c, "bob", 50));
        assert!(
            !r.others_replying(c, "alice", 50),
            "not for the one writing"
        );
        assert!(!r.others_replying(c, "bob", 100), "expired");
        r.replied(c, "alice");
        assert!(!r.others_replying(c, "bob", 50));
        r.draft_saved(c, "alice", 4, 100);
        r.drafts_removed("alice", &[4]);
        assert!(!r.others_replying(c, "bob", 50));
        r.draft_saved(c, "alice", 5, 100);
        assert_eq!(r.expire(60), Some(100));
        assert_eq!(r.expire(100), None);
        assert!(!r.others_replying(c, "bob", 50));
    }
}
