//! Agent authentication: argon2id verification on a fixed set of threads that reuse their
//! memory ([`hasher`]), successful logins cached for a while ([`cache`]), failed attempts
//! throttled per peer address and per login. Also owns password hashing
//! (`teamgate hash-password`) and verification.

mod cache;
mod hasher;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHasher};
use password_hash::{SaltString, rand_core::OsRng};
use tokio::sync::Notify;

use cache::AuthCache;
use hasher::Hasher;

use crate::{
    config::Config,
    metrics::{AuthFailure, Metrics},
};

/// Failed attempts allowed per address and per login within `FAILURE_WINDOW`.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// How long an attempt waits for earlier attempts on the same address or login to finish
/// before it is refused as throttled.
const MAX_ADMISSION_WAIT: Duration = Duration::from_secs(30);
/// The failure table never grows past this many keys (oldest windows are dropped first).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed attempts; try again later")]
    Throttled,
}

/// Attempts on one key (an address or a login).
#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// Failures since `since`.
    failed: u32,
    since: Instant,
    /// Checks running now: each could still fail, so together with `failed` they may not
    /// pass `MAX_FAILURES` (parallel connections cannot each get a guess past the limit).
    in_flight: u32,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    hasher: Hasher,
    cache: Arc<AuthCache>,
    attempts: Arc<Mutex<HashMap<String, Attempts>>>,
    /// Wakes attempts waiting for a slot when a check finishes.
    finished: Arc<Notify>,
    /// Counts failed logins (both protocols come through here).
    metrics: Metrics,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(0, Metrics::default())
    }
}

/// Whether an attempt may start now.
enum Admission {
    Admitted,
    Wait,
    Throttled,
}

impl Authenticator {
    /// `workers` argon2 threads (`[server] auth_workers`; 0 = one per core).
    pub fn new(workers: usize, metrics: Metrics) -> Authenticator {
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Authenticator {
            hasher: Hasher::start(workers),
            cache: Arc::new(AuthCache::new()),
            attempts: Arc::default(),
            finished: Arc::new(Notify::new()),
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
        if !self.admit(&keys).await {
            self.metrics.auth_failed(AuthFailure::Throttled);
            return Err(AuthError::Throttled);
        }
        let agent = config.agent(login);
        let ttl = config.server.auth_cache_ttl;
        let cached = agent.is_some_and(|a| {
            !ttl.is_zero() && self.cache.hit(&a.login, password, &a.password_hash)
        });
        let ok = cached || {
            // Unknown logins still pay for a hash check, so timing does not reveal them.
            let hash = agent
                .map(|a| a.password_hash.clone())
                .unwrap_or_else(|| DUMMY_HASH.to_string());
            self.hasher.verify(hash, password.to_string()).await
        };
        self.metrics.auth_check(cached);
        if let Some(a) = agent
            && ok
            && !cached
            && !ttl.is_zero()
        {
            self.cache
                .remember(&a.login, password, &a.password_hash, ttl);
        }
        let verified = agent.filter(|_| ok).map(|a| a.login.clone());
        self.finish(&keys, verified.is_some());
        verified.ok_or_else(|| {
            self.metrics.auth_failed(AuthFailure::Invalid);
            AuthError::Invalid
        })
    }

    /// Forgets every cached login (a reload: passwords or agents may have changed).
    pub fn flush_cache(&self) {
        self.cache.flush();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attempts>> {
        // A poisoned table only loses throttling state; never panic on it.
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (bounded) until the attempt may start and marks it in flight on every key;
    /// false when a key has used up its failures, or no slot freed in time. Many agents
    /// behind one address logging in at once wait a moment each instead of being refused.
    async fn admit(&self, keys: &[String]) -> bool {
        let deadline = tokio::time::Instant::now() + MAX_ADMISSION_WAIT;
        loop {
            // Created before the check, so a check finishing in between still wakes us.
            let finished = self.finished.notified();
            match self.try_admit(keys) {
                Admission::Admitted => return true,
                Admission::Throttled => return false,
                Admission::Wait => {
                    if tokio::time::timeout_at(deadline, finished).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    fn try_admit(&self, keys: &[String]) -> Admission {
        let mut table = self.lock();
        let now = Instant::now();
        for k in keys {
            if let Some(a) = table.get_mut(k)
                && now.duration_since(a.since) > FAILURE_WINDOW
            {
                a.failed = 0;
                a.since = now;
            }
        }
        let entry = |k: &String| table.get(k).copied();
        if keys
            .iter()
            .any(|k| entry(k).is_some_and(|a| a.failed >= MAX_FAILURES))
        {
            return Admission::Throttled;
        }
        if keys
            .iter()
            .any(|k| entry(k).is_some_and(|a| a.failed + a.in_flight >= MAX_FAILURES))
        {
            return Admission::Wait;
        }
        for k in keys {
            if !table.contains_key(k) && table.len() >= MAX_TRACKED {
                // Make room by dropping idle expired windows, then the oldest idle one;
                // never the whole table (that would reset everyone's count at once).
                table.retain(|_, a| {
                    a.in_flight > 0 || now.duration_since(a.since) <= FAILURE_WINDOW
                });
                if table.len() >= MAX_TRACKED
                    && let Some(oldest) = table
                        .iter()
                        .filter(|(_, a)| a.in_flight == 0)
                        .min_by_key(|(_, a)| a.since)
                        .map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
            }
            table
                .entry(k.clone())
                .or_insert(Attempts {
                    failed: 0,
                    since: now,
                    in_flight: 0,
                })
                .in_flight += 1;
        }
        Admission::Admitted
    }

    /// Ends an admitted attempt on `[address, login]`: a failure counts on both; a
    /// success forgives the login's failures (the address keeps its own).
    fn finish(&self, keys: &[String; 2], succeeded: bool) {
        {
            let mut table = self.lock();
            for (k, is_login) in [(&keys[0], false), (&keys[1], true)] {
                let Some(a) = table.get_mut(k) else { continue };
                a.in_flight = a.in_flight.saturating_sub(1);
                if !succeeded {
                    a.failed += 1;
                } else if is_login {
                    a.failed = 0;
                }
                if a.failed == 0 && a.in_flight == 0 {
                    table.remove(k);
                }
            }
        }
        self.finished.notify_waiters();
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

/// An agent may send as (envelope sender on the submission port, From of a reply) only
/// an address of an inbox they are a member of (SPEC §6); admins who are not members
/// are refused the same way.
pub fn sender_allowed(config: &Config, agent: &str, address: &str) -> Result<(), String> {
    match config.inbox_for_address(address) {
        Some((inbox, _)) if inbox.members.iter().any(|m| m == agent) => Ok(()),
        Some((inbox, _)) => Err(format!(
            "{agent} is not a member of inbox {} and cannot send as {address}",
            inbox.name
        )),
        None => Err(format!(
            "{address} is not a team address; send as one of your inboxes"
        )),
    }
}

/// argon2id (default parameters) PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `password` matches the PHC `hash`; a malformed hash never matches. For
/// one-off checks; logins go through the [`Authenticator`]'s threads.
pub fn verify_password(hash: &str, password: &str) -> bool {
    hasher::verify_into(&mut Vec::new(), hash, password.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

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
        assert!(!verify_password(DUMMY_HASH, "x"));
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

    /// An office behind one NAT address: every agent's client connects at once after a
    /// restart. In-flight checks hold slots only until they succeed.
    #[tokio::test]
    async fn many_agents_behind_one_address_log_in_at_once() {
        let config = Arc::new(Config::for_tests(Path::new("/tmp/none")));
        let auth = Authenticator::default();
        let ip: IpAddr = "127.0.0.4".parse().unwrap();
        let logins: Vec<_> = (0..4 * MAX_FAILURES)
            .map(|_| {
                let (auth, config) = (auth.clone(), config.clone());
                tokio::spawn(
                    async move { auth.verify(&config, ip, "alice", "alice-password").await },
                )
            })
            .collect();
        for l in logins {
            assert_eq!(l.await.unwrap(), Ok("alice".into()));
        }
        assert!(auth.lock().is_empty(), "nothing left in flight or failed");
    }

    #[tokio::test]
    async fn a_successful_login_is_cached_until_the_password_or_config_changes() {
        let mut config = Config::for_tests(Path::new("/tmp/none"));
        let metrics = Metrics::default();
        let auth = Authenticator::new(1, metrics.clone());
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let checks = |how: &str| {
            metrics
                .snapshot()
                .sum("teamgate_auth_checks_total", &[("how", how)])
        };
        for _ in 0..3 {
            assert_eq!(
                auth.verify(&config, ip, "alice", "alice-password").await,
                Ok("alice".into())
            );
        }
        assert_eq!((checks("hashed"), checks("cached")), (1.0, 2.0));
        // A wrong password is never answered from the cache.
        assert_eq!(
            auth.verify(&config, ip, "alice", "alice-passwore").await,
            Err(AuthError::Invalid)
        );
        assert_eq!(checks("hashed"), 2.0);
        // A new password hash: the old password is checked again, and fails.
        config.agents[0].password_hash = hash_password("new-password").expect("hash");
        assert_eq!(
            auth.verify(&config, ip, "alice", "alice-password").await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.verify(&config, ip, "alice", "new-password").await,
            Ok("alice".into())
        );
        assert_eq!(checks("hashed"), 4.0);
        auth.flush_cache();
        assert_eq!(
            auth.verify(&config, ip, "alice", "new-password").await,
            Ok("alice".into())
        );
        assert_eq!(checks("hashed"), 5.0, "flushed");
        // `auth_cache_secs = 0`: every login hashes.
        config.server.auth_cache_ttl = Duration::ZERO;
        for _ in 0..2 {
            assert!(
                auth.verify(&config, ip, "alice", "new-password")
                    .await
                    .is_ok()
            );
        }
        assert_eq!((checks("hashed"), checks("cached")), (7.0, 2.0));
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(config::check_password_hash(&hash).is_ok());
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse!"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(
            hash,
            hash_password("correct horse").expect("hash"),
            "salts are random"
        );
    }

    /// The hashes that ship (the example config's demo agent, `Config::for_tests`' alice)
    /// are of the passwords they are documented with.
    #[test]
    fn shipped_hashes_verify() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/teamgate.toml"));
        let c = match config::load_with_env(path, std::iter::empty::<(&str, &str)>()) {
            Ok(c) => c,
            Err(e) => panic!("config/teamgate.toml:\n{e}"),
        };
        let demo = c.agent("demo").expect("demo agent");
        assert!(
            verify_password(&demo.password_hash, "demo-password"),
            "the password in the comment"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config::for_tests(dir.path());
        let alice = c.agent("alice").expect("alice");
        assert!(verify_password(&alice.password_hash, "alice-password"));
    }
}
