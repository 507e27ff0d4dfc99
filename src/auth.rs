//! Agent authentication: argon2id verification off the async threads, bounded in
//! concurrency, with failed attempts throttled per peer address and per login.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{
    config::{self, Config},
    metrics::{AuthFailure, Metrics},
};

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
    /// Counts failed logins (both protocols come through here).
    metrics: Metrics,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::with_metrics(Metrics::default())
    }
}

impl Authenticator {
    pub fn with_metrics(metrics: Metrics) -> Authenticator {
        Authenticator {
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            failures: Arc::default(),
            metrics,
        }
    }

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
        // Checked and counted in one step, before the slow hash: parallel connections
        // cannot each get a guess past the limit.
        if !self.admit(&keys) {
            self.metrics.auth_failed(AuthFailure::Throttled);
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
                // The attempt was counted up front: a success takes it back from the
                // address (agents' clients log in often) and forgives the login's count.
                self.succeeded(&keys[0], &keys[1]);
                Ok(a.login.clone())
            }
            _ => {
                self.metrics.auth_failed(AuthFailure::Invalid);
                Err(AuthError::Invalid)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        // A poisoned table only loses throttling state; never panic on it.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether another attempt is allowed for every key; if so, it is counted for each.
    fn admit(&self, keys: &[String]) -> bool {
        let mut table = self.lock();
        let now = Instant::now();
        for k in keys {
            if table
                .get(k)
                .is_some_and(|f| now.duration_since(f.since) > FAILURE_WINDOW)
            {
                table.remove(k);
            }
        }
        if keys
            .iter()
            .any(|k| table.get(k).is_some_and(|f| f.count >= MAX_FAILURES))
        {
            return false;
        }
        for k in keys {
            if !table.contains_key(k) && table.len() >= MAX_TRACKED {
                // Make room by dropping expired windows, then the oldest one; never the
                // whole table (that would reset everyone's count at once).
                table.retain(|_, f| now.duration_since(f.since) <= FAILURE_WINDOW);
                if table.len() >= MAX_TRACKED
                    && let Some(oldest) = table
                        .iter()
                        .min_by_key(|(_, f)| f.since)
                        .map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
            }
            table
                .entry(k.clone())
                .or_insert(Failures {
                    count: 0,
                    since: now,
                })
                .count += 1;
        }
        true
    }

    fn succeeded(&self, address_key: &str, login_key: &str) {
        let mut table = self.lock();
        table.remove(login_key);
        if let Some(f) = table.get_mut(address_key) {
            f.count = f.count.saturating_sub(1);
        }
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

    #[tokio::test]
    async fn successes_never_throttle_and_parallel_guesses_are_capped() {
        let config = Arc::new(Config::for_tests(Path::new("/tmp/none")));
        let auth = Authenticator::default();
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..(MAX_FAILURES * 3) {
            assert_eq!(
                auth.verify(&config, ip, "alice", "alice-password").await,
                Ok("alice".into())
            );
        }
        // Twenty guesses at once: only MAX_FAILURES get to the hash.
        let guesses: Vec<_> = (0..20)
            .map(|_| {
                let (auth, config) = (auth.clone(), config.clone());
                tokio::spawn(async move { auth.verify(&config, ip, "alice", "guess").await })
            })
            .collect();
        let mut invalid = 0;
        for g in guesses {
            if g.await.unwrap() == Err(AuthError::Invalid) {
                invalid += 1;
            }
        }
        assert_eq!(invalid, MAX_FAILURES);
    }
}
