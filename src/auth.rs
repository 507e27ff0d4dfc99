//! Agent authentication: argon2id verification off the async threads, bounded in
//! concurrency, with failed attempts throttled per peer address and per login.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::config::{self, Config};

/// Failed attempts allowed per address and per login within `FAILURE_WINDOW`.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// argon2 costs ~19 MiB and ~26 ms per check: a handful at once is plenty.
const CONCURRENT_CHECKS: usize = 4;
/// The failure table never grows past this many keys (oldest windows are dropped first).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed attempts; try again later")]
    Throttled,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    checks: Arc<Semaphore>,
    failures: Arc<Mutex<HashMap<String, Failures>>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            failures: Arc::default(),
        }
    }
}

impl Authenticator {
    /// Checks a login and password; returns the agent's login.
    pub async fn verify(
        &self,
        config: &Config,
        peer: IpAddr,
        login: &str,
        password: &str,
    ) -> Result<String, AuthError> {
        let keys = [
            format!("ip:{peer}"),
            format!("login:{}", login.to_ascii_lowercase()),
        ];
        if keys.iter().any(|k| self.throttled(k)) {
            return Err(AuthError::Throttled);
        }
        let agent = config.agent(login);
        // Unknown logins still pay for a hash check, so timing does not reveal them.
        let hash = agent
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let password = password.to_string();
        let ok = {
            let _permit = self
                .checks
                .acquire()
                .await
                .map_err(|_| AuthError::Invalid)?;
            tokio::task::spawn_blocking(move || config::verify_password(&hash, &password))
                .await
                .unwrap_or(false)
        };
        match agent {
            Some(a) if ok => {
                self.clear(&keys[1]);
                Ok(a.login.clone())
            }
            _ => {
                for k in &keys {
                    self.record_failure(k);
                }
                Err(AuthError::Invalid)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        // A poisoned table only loses throttling state; never panic on it.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn throttled(&self, key: &str) -> bool {
        let mut table = self.lock();
        match table.get(key) {
            Some(f) if f.since.elapsed() > FAILURE_WINDOW => {
                table.remove(key);
                false
            }
            Some(f) => f.count >= MAX_FAILURES,
            None => false,
        }
    }

    fn record_failure(&self, key: &str) {
        let mut table = self.lock();
        if table.len() >= MAX_TRACKED {
            table.retain(|_, f| f.since.elapsed() <= FAILURE_WINDOW);
            if table.len() >= MAX_TRACKED {
                table.clear();
            }
        }
        let entry = table.entry(key.to_string()).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if entry.since.elapsed() > FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        entry.count += 1;
    }

    fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// Decodes SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`. An authzid other
/// than the authcid is refused (no proxy logins).
pub fn decode_plain(bytes: &[u8]) -> Option<(String, String)> {
    let mut parts = bytes.split(|b| *b == 0);
    let authz = parts.next()?;
    let login = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some()
        || login.is_empty()
        || (!authz.is_empty() && authz != login.as_bytes())
    {
        return None;
    }
    Some((login.to_string(), password.to_string()))
}

/// An argon2id hash of a random string nobody knows, for timing-equal failures.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$sxrGZCIbvuZL2YLMG8IW0w$dnt1GZDExAasUeiRFvco7btBCJEQtHDCHMCRxpi8h+w";

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn sasl_plain() {
        assert_eq!(
            decode_plain(b"\0alice\0pw"),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(
            decode_plain(b"alice\0alice\0pw"),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(decode_plain(b"root\0alice\0pw"), None);
        assert_eq!(decode_plain(b"alice\0pw"), None);
        assert_eq!(decode_plain(b"\0\0pw"), None);
    }

    #[tokio::test]
    async fn failures_are_throttled_per_login_and_address() {
        let config = Config::for_tests(Path::new("/tmp/none"));
        let auth = Authenticator::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.verify(&config, ip, "alice", "alice-password").await,
            Ok("alice".into())
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.verify(&config, ip, "alice", "wrong").await,
                Err(AuthError::Invalid)
            );
        }
        // Even the right password is refused while throttled, from any address.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            auth.verify(&config, other, "alice", "alice-password").await,
            Err(AuthError::Throttled)
        );
        assert_eq!(
            auth.verify(&config, ip, "nobody", "x").await,
            Err(AuthError::Throttled)
        );
        // The dummy hash is a real argon2id hash, so unknown logins cost the same.
        assert!(password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!config::verify_password(DUMMY_HASH, "x"));
    }
}
