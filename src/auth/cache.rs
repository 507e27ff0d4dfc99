//! Successful logins remembered for a while (Dovecot's `auth_cache`): a mail client opens
//! up to five connections and reconnects all day, and each would otherwise cost a full
//! argon2 check. Entries are keyed by HMAC-SHA256 of login and password under a key made
//! at start, so the table never holds a password or anything that can be tested offline
//! against one. An entry also names the password hash it was checked against: a changed
//! password (a new hash in the config) misses. The whole cache is flushed on reload.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bound on remembered logins (agents × the passwords they use: a few per agent).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    login: String,
    /// The PHC string the password was verified against.
    password_hash: String,
    expires: Instant,
}

pub(super) struct AuthCache {
    key: hmac::Key,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache").finish_non_exhaustive()
    }
}

impl AuthCache {
    pub(super) fn new() -> AuthCache {
        let mut secret = [0u8; 32];
        // The system RNG only fails where nothing else works either; a fixed key would
        // still keep passwords out of the table, just not out of reach of a memory dump.
        if SystemRandom::new().fill(&mut secret).is_err() {
            tracing::warn!("auth cache: no system randomness; keying with the process id");
            secret[..4].copy_from_slice(&std::process::id().to_be_bytes());
        }
        AuthCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, login: &str, password: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        ctx.update(&(login.len() as u64).to_be_bytes());
        ctx.update(login.as_bytes());
        ctx.update(password.as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A poisoned table only loses cached logins; never panic on it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `login` proved `password` against `password_hash` within the TTL.
    pub(super) fn hit(&self, login: &str, password: &str, password_hash: &str) -> bool {
        let tag = self.tag(login, password);
        let mut entries = self.lock();
        match entries.get(&tag) {
            Some(e)
                if e.expires > Instant::now()
                    && e.login == login
                    && e.password_hash == password_hash =>
            {
                true
            }
            Some(_) => {
                entries.remove(&tag);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful check for `ttl`.
    pub(super) fn remember(&self, login: &str, password: &str, password_hash: &str, ttl: Duration) {
        let tag = self.tag(login, password);
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            tag,
            Entry {
                login: login.to_string(),
                password_hash: password_hash.to_string(),
                expires: now + ttl,
            },
        );
    }

    pub(super) fn flush(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_login_password_and_hash_within_the_ttl() {
        let cache = AuthCache::new();
        let ttl = Duration::from_secs(60);
        cache.remember("alice", "pw", "$hash1", ttl);
        assert!(cache.hit("alice", "pw", "$hash1"));
        assert!(!cache.hit("alice", "pw2", "$hash1"), "another password");
        assert!(!cache.hit("alicE", "pw", "$hash1"), "another login");
        assert!(
            !cache.hit("alic", "epw", "$hash1"),
            "the same bytes split elsewhere"
        );
        // The password changed in the config: a miss, and the entry goes.
        assert!(!cache.hit("alice", "pw", "$hash2"));
        assert!(!cache.hit("alice", "pw", "$hash1"));
        cache.remember("alice", "pw", "$hash1", Duration::ZERO);
        assert!(!cache.hit("alice", "pw", "$hash1"), "expired");
        cache.remember("bob", "pw", "$hash3", ttl);
        cache.flush();
        assert!(!cache.hit("bob", "pw", "$hash3"), "flushed");
    }

    #[test]
    fn the_table_stays_bounded() {
        let cache = AuthCache::new();
        for i in 0..(MAX_ENTRIES + 10) {
            cache.remember(&format!("u{i}"), "pw", "$h", Duration::from_secs(60));
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert!(cache.hit(&format!("u{}", MAX_ENTRIES + 9), "pw", "$h"));
    }
}
