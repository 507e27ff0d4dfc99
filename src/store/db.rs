//! The sled database: opening it (waiting out a lock another handle of this process is
//! still releasing), its trees ([`Trees`], one per [`TreeId`]), and waiting for its lock
//! to be free after close.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::StoreError;
use super::keys::TreeId;

/// The trees of [`TreeId`], in that order.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) all: [sled::Tree; TreeId::ALL.len()],
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let opened = TreeId::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let all = opened
            .try_into()
            .map_err(|_| StoreError::Internal("tree count mismatch".into()))?;
        Ok(Trees { all })
    }

    pub(super) fn get(&self, id: TreeId) -> &sled::Tree {
        &self.all[id.index()]
    }
}

fn map_open_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        // sled 0.34.7 config.rs `try_lock`: an `Other` io error with this text when the
        // flock on `<path>/db` is held (by another process or another open handle).
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked(format!("{}: {io}", path.display()))
        }
        other => StoreError::Db(other),
    }
}

/// How long a handle dropped in this process may keep sled's lock: sled's background
/// threads hold the lock file for a moment after the last `Db` handle is dropped
/// (measured: an immediate reopen failed about once in 300 tries).
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(1);

pub(super) fn open_sled(meta_dir: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(meta_dir)
            .cache_capacity(cache_capacity)
            .open();
        match opened.map_err(|e| map_open_error(meta_dir, e)) {
            Err(StoreError::Locked(_)) if started.elapsed() < LOCK_RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Waits until sled's lock file in `meta_dir` is free (probing with our own flock,
/// released at once), at most [`LOCK_RELEASE_WAIT`].
pub(super) async fn wait_for_unlock(meta_dir: &Path) {
    let started = Instant::now();
    let Ok(file) = std::fs::File::open(meta_dir.join("db")) else {
        return;
    };
    while started.elapsed() < LOCK_RELEASE_WAIT {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(std::fs::TryLockError::Error(_)) => return,
        }
    }
    tracing::warn!(dir = %meta_dir.display(), "store: sled lock still held after close");
}
