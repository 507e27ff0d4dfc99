//! The argon2 checks, on a fixed set of threads: one per core by default, since the hash is
//! CPU-bound and more at once only queue for the cores. Each thread hashes into one memory
//! block that it keeps while it has work. Before this, every check allocated its
//! ~19 MiB afresh on whichever blocking-pool thread ran it, and each of those threads' malloc
//! arenas kept it: 200 concurrent logins left 600 MB behind. Now memory is bounded by
//! threads × one block, whatever the number of logins, and a thread idle for
//! [`IDLE_RELEASE`] gives its block back (a block that size is its own mapping, so the
//! memory returns to the system).

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::{Output, PasswordHash};
use tokio::sync::oneshot;

/// A checking thread without work for this long frees its memory block. Logins come in
/// bursts (a client's connections, a team's morning); between them nothing is held.
const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// One check for a worker thread.
struct Job {
    hash: String,
    password: String,
    reply: oneshot::Sender<bool>,
}

/// Handle on the checking threads; cheap to clone. The threads end once the last handle
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct Hasher {
    jobs: Sender<Job>,
}

impl Hasher {
    /// Starts `threads` checking threads (at least one).
    pub(super) fn start(threads: usize) -> Hasher {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("teamgate-auth-{n}"))
                .spawn(move || work(&queue));
            if let Err(e) = spawned {
                // The remaining threads (or none: every check then fails) still answer.
                tracing::error!(error = %e, "cannot start a password-checking thread");
            }
        }
        Hasher { jobs }
    }

    /// Whether `password` matches the PHC `hash`; false for a malformed hash, and when no
    /// checking thread is left to answer.
    pub(super) async fn verify(&self, hash: String, password: String) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            hash,
            password,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

fn work(queue: &Receiver<Job>) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        let next = if blocks.is_empty() {
            queue.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            queue.recv_timeout(IDLE_RELEASE)
        };
        match next {
            Ok(job) => {
                let ok = verify_into(&mut blocks, &job.hash, job.password.as_bytes());
                let _ = job.reply.send(ok);
            }
            Err(RecvTimeoutError::Timeout) => blocks = Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `verify_password` into caller-owned memory: the block grows to the largest cost seen
/// and is reused for every later check.
pub(super) fn verify_into(blocks: &mut Vec<Block>, hash: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let argon = Argon2::new(algorithm, version, params);
    let Ok(computed) = Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
            .map_err(|_| password_hash::Error::Password)
    }) else {
        return false;
    };
    // `Output`'s equality is constant-time.
    computed == expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_like_the_crate_into_reused_memory() {
        let hash = crate::auth::hash_password("correct horse").expect("hash");
        let mut blocks = Vec::new();
        assert!(verify_into(&mut blocks, &hash, b"correct horse"));
        let size = blocks.len();
        assert_eq!(size, 19_456, "argon2 default m_cost, in 1 KiB blocks");
        assert!(!verify_into(&mut blocks, &hash, b"correct horse!"));
        assert_eq!(blocks.len(), size, "the same block, not a new one");
        for bad in [
            "not a hash",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
            "$argon2id$v=99$m=19456,t=2,p=1$sxrGZCIbvuZL2YLMG8IW0w$dnt1GZDExAasUeiRFvco7btBCJEQtHDCHMCRxpi8h+w",
            "$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA",
        ] {
            assert!(!verify_into(&mut blocks, bad, b"x"), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_threads_answer_every_check() {
        let hash = crate::auth::hash_password("pw").expect("hash");
        let hasher = Hasher::start(2);
        let checks: Vec<_> = (0..6)
            .map(|i| {
                let (hasher, hash) = (hasher.clone(), hash.clone());
                tokio::spawn(async move {
                    hasher
                        .verify(hash, if i % 2 == 0 { "pw" } else { "no" }.into())
                        .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for c in checks {
            results.push(c.await.expect("task"));
        }
        assert_eq!(results, [true, false, true, false, true, false]);
    }
}
