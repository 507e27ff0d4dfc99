//! Restoring a data directory from a backup (SPEC §1 `teamgate restore DIR`; the
//! directory's layout is in `backup_format.rs`), and checking a finished backup
//! ([`verify_backup`]).
//!
//! Restore ([`restore`]) refuses a data directory that is locked by a daemon or not
//! empty (never overwrites; there is no `--force`: move the old directory aside), and a
//! backup whose manifest, lengths or checksums do not match, all before writing anything.
//! It then rebuilds sled from the export, compares sled's checksum, copies the segments
//! (checking their crc again as it goes), and opens the result with [`Store::open`]: the
//! restore succeeds only if recovery reports no bad record. On any failure it removes
//! what it wrote. UIDVALIDITY values, UIDs and every other counter live in sled, so a
//! round trip keeps them: IMAP clients do not download anything again.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::backup::{bad_backup, copy_prefix, io_err, sync_dir};
use super::backup_format::{
    BackupManifest, COPY_BUF, EXPORT_MAGIC, FORMAT, FORMAT_VERSION, MANIFEST, META_EXPORT,
    SEGMENTS, TAG_END, TAG_ENTRY, TAG_TREE,
};
use super::blobs;
use super::db::open_sled;
use super::error::StoreError;
use super::handle::Store;
use super::keys;
use super::options::StoreOptions;
use super::recovery::RecoveryReport;

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub data_dir: String,
    /// When the backup was made.
    pub created_at: String,
    pub conversations: u64,
    pub messages: u64,
    pub sled_entries: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// What `Store::open` found in the restored directory (no bad records, or the
    /// restore would have failed).
    pub recovery: RecoveryReport,
}

/// crc32 of a whole file, which must be `len` bytes long.
fn file_crc(path: &Path, len: u64) -> Result<u32, StoreError> {
    let name = path.display().to_string();
    let mut f = File::open(path).map_err(io_err(format!("opening {name}")))?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut crc = crc32fast::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(format!("reading {name}"), e)),
        };
        crc.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        return Err(bad_backup(
            &name,
            format!("has {total} bytes, the manifest says {len}"),
        ));
    }
    Ok(crc.finalize())
}

/// Reads and checks a finished backup: manifest, format and schema version, and the
/// length and crc32 of every file it lists. Reads everything once; writes nothing.
pub fn verify_backup(dir: &Path) -> Result<BackupManifest, StoreError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad_backup(
                MANIFEST,
                format!(
                    "{} has no {MANIFEST}: not a teamgate backup, or an unfinished one",
                    dir.display()
                ),
            ));
        }
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
    };
    let m: BackupManifest =
        serde_json::from_slice(&text).map_err(|e| bad_backup(MANIFEST, e.to_string()))?;
    if m.format != FORMAT || m.version != FORMAT_VERSION {
        return Err(bad_backup(
            MANIFEST,
            format!(
                "format {} version {}; this teamgate reads {FORMAT} version {FORMAT_VERSION}",
                m.format, m.version
            ),
        ));
    }
    if m.schema_version > keys::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: m.schema_version,
            supported: keys::SCHEMA_VERSION,
        });
    }
    if m.meta.file != META_EXPORT {
        return Err(bad_backup(
            MANIFEST,
            format!("metadata file {:?}, expected {META_EXPORT}", m.meta.file),
        ));
    }
    let crc = file_crc(&dir.join(META_EXPORT), m.meta.bytes)?;
    if crc != m.meta.crc32 {
        return Err(bad_backup(
            META_EXPORT,
            format!("crc32 {crc:08x}, the manifest says {:08x}", m.meta.crc32),
        ));
    }
    let mut previous = None;
    for s in &m.segments {
        // Names come from numbers, never from the manifest: no path can escape `dir`.
        if s.file != blobs::segment_name(s.no) || previous.is_some_and(|p| p >= s.no) {
            return Err(bad_backup(
                MANIFEST,
                format!("bad segment entry {} (number {})", s.file, s.no),
            ));
        }
        previous = Some(s.no);
        let crc = file_crc(&blobs::segment_path(&dir.join(SEGMENTS), s.no), s.bytes)?;
        if crc != s.crc32 {
            return Err(bad_backup(
                &s.file,
                format!("crc32 {crc:08x}, the manifest says {:08x}", s.crc32),
            ));
        }
    }
    Ok(m)
}

/// One record of `meta.export`.
enum Item {
    Tree(Vec<u8>),
    Entry(Vec<u8>, Vec<u8>),
    End {
        trees: u64,
        entries: u64,
        sled_checksum: u32,
    },
}

struct ExportReader<R> {
    inner: R,
}

impl<R: Read> ExportReader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| bad_backup(META_EXPORT, format!("truncated: {e}")))?;
        Ok(b)
    }

    /// A length-prefixed field. Grows with the bytes actually read, so a damaged length
    /// cannot make it allocate more than the file holds.
    fn field(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = u64::from(u32::from_be_bytes(self.bytes()?));
        let mut v = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut v)
            .map_err(|e| bad_backup(META_EXPORT, format!("reading: {e}")))?;
        if v.len() as u64 != len {
            return Err(bad_backup(META_EXPORT, "truncated field"));
        }
        Ok(v)
    }

    fn next(&mut self) -> Result<Item, StoreError> {
        let [tag] = self.bytes()?;
        match tag {
            TAG_TREE => Ok(Item::Tree(self.field()?)),
            TAG_ENTRY => Ok(Item::Entry(self.field()?, self.field()?)),
            TAG_END => Ok(Item::End {
                trees: u64::from_be_bytes(self.bytes()?),
                entries: u64::from_be_bytes(self.bytes()?),
                sled_checksum: u32::from_be_bytes(self.bytes()?),
            }),
            other => Err(bad_backup(
                META_EXPORT,
                format!("unknown record tag {other}"),
            )),
        }
    }
}

/// Rebuilds sled at `meta_dir` (new) from the export; checks counts and sled's checksum.
fn import_meta(backup: &Path, meta_dir: &Path, m: &BackupManifest) -> Result<u64, StoreError> {
    let path = backup.join(META_EXPORT);
    let file = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut r = ExportReader {
        inner: BufReader::with_capacity(COPY_BUF, file),
    };
    if r.bytes::<8>()? != *EXPORT_MAGIC {
        return Err(bad_backup(META_EXPORT, "not a teamgate metadata export"));
    }
    let db = open_sled(meta_dir, StoreOptions::default().cache_capacity_bytes)?;
    let (mut trees, mut entries) = (0u64, 0u64);
    let mut tree: Option<sled::Tree> = None;
    let (end_trees, end_entries, end_sum) = loop {
        match r.next()? {
            Item::Tree(name) => {
                tree = Some(db.open_tree(name)?);
                trees += 1;
            }
            Item::Entry(k, v) => {
                let Some(t) = &tree else {
                    return Err(bad_backup(META_EXPORT, "an entry before any tree"));
                };
                if t.insert(k, v)?.is_some() {
                    return Err(bad_backup(META_EXPORT, "a key appears twice"));
                }
                entries += 1;
            }
            Item::End {
                trees,
                entries,
                sled_checksum,
            } => break (trees, entries, sled_checksum),
        }
    };
    let mut rest = [0u8; 1];
    if r.inner
        .read(&mut rest)
        .map_err(io_err("reading meta.export"))?
        != 0
    {
        return Err(bad_backup(META_EXPORT, "bytes after the end record"));
    }
    if (trees, entries) != (end_trees, end_entries)
        || (trees, entries) != (m.meta.trees, m.meta.entries)
        || end_sum != m.meta.sled_checksum
    {
        return Err(bad_backup(
            META_EXPORT,
            format!(
                "holds {trees} trees and {entries} entries; its end record says {end_trees} \
                 and {end_entries}, the manifest {} and {}",
                m.meta.trees, m.meta.entries
            ),
        ));
    }
    db.flush()?;
    let sum = db.checksum()?;
    if sum != m.meta.sled_checksum {
        return Err(bad_backup(
            META_EXPORT,
            format!(
                "the rebuilt database has sled checksum {sum:08x}, the backup {:08x}",
                m.meta.sled_checksum
            ),
        ));
    }
    Ok(entries)
}

/// What a restore created in the data directory, removed again if it fails.
struct Created {
    data_dir: PathBuf,
    /// The data directory itself did not exist.
    dir: bool,
}

impl Created {
    fn undo(&self) {
        if self.dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        } else {
            let _ = std::fs::remove_dir_all(self.data_dir.join("meta"));
            let _ = std::fs::remove_dir_all(self.data_dir.join(SEGMENTS));
        }
    }
}

/// Refuses a data directory that a daemon holds or that is not empty; `Ok(true)` when it
/// does not exist yet.
fn check_target(data_dir: &Path) -> Result<bool, StoreError> {
    // sled's flock on `meta/db`: held while a daemon (or any open store) uses it.
    if let Ok(f) = File::open(data_dir.join("meta").join("db")) {
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "{}: refusing to restore into a live data directory; stop teamgate first",
                    data_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("checking the lock of {}", data_dir.display()),
                    e,
                ));
            }
        }
    }
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(false),
            Some(_) => Err(StoreError::AlreadyExists(format!(
                "data directory {} is not empty: restore never overwrites data; move it \
                 aside (or empty it) and run restore again",
                data_dir.display()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(StoreError::io(format!("reading {}", data_dir.display()), e)),
    }
}

/// The file part of a restore; returns the manifest and the sled entry count.
fn restore_files(
    backup: &Path,
    data_dir: &Path,
    created: &Created,
) -> Result<(BackupManifest, u64), StoreError> {
    let m = verify_backup(backup)?;
    std::fs::create_dir_all(data_dir)
        .map_err(io_err(format!("creating {}", data_dir.display())))?;
    let result = (|| {
        let entries = import_meta(backup, &data_dir.join("meta"), &m)?;
        let from = backup.join(SEGMENTS);
        let to = data_dir.join(SEGMENTS);
        std::fs::create_dir(&to).map_err(io_err(format!("creating {}", to.display())))?;
        for s in &m.segments {
            copy_prefix(
                &blobs::segment_path(&from, s.no),
                &blobs::segment_path(&to, s.no),
                s.bytes,
                Some(s.crc32),
            )?;
        }
        sync_dir(&to)?;
        sync_dir(data_dir)?;
        Ok(entries)
    })();
    match result {
        Ok(entries) => Ok((m, entries)),
        Err(e) => {
            created.undo();
            Err(e)
        }
    }
}

/// Restores the backup in `backup` into `data_dir`, which must not exist or be empty and
/// must not be in use (see the module docs). The restored store is opened once (recovery
/// must find no bad record) and closed again before this returns.
pub async fn restore(backup: &Path, data_dir: &Path) -> Result<RestoreReport, StoreError> {
    let (b, d) = (backup.to_path_buf(), data_dir.to_path_buf());
    let (created, files) = tokio::task::spawn_blocking(move || {
        let created = Created {
            dir: check_target(&d)?,
            data_dir: d.clone(),
        };
        let files = restore_files(&b, &d, &created)?;
        Ok::<_, StoreError>((created, files))
    })
    .await
    .map_err(|e| StoreError::Internal(format!("restore task: {e}")))??;
    let (manifest, sled_entries) = files;
    let checked = async {
        let (store, recovery) = Store::open(data_dir, StoreOptions::default())?;
        let stats = store.stats();
        store.close().await?;
        let stats = stats?;
        if !recovery.bad_records.is_empty() {
            return Err(bad_backup(
                MANIFEST,
                format!(
                    "the restored store has bad records: {}",
                    recovery.bad_records.join("; ")
                ),
            ));
        }
        Ok(RestoreReport {
            backup: backup.display().to_string(),
            data_dir: data_dir.display().to_string(),
            created_at: manifest.created_at.clone(),
            conversations: stats.conversations,
            messages: stats.messages,
            sled_entries,
            segments: stats.segments,
            segment_bytes: stats.segment_bytes,
            recovery,
        })
    }
    .await;
    if checked.is_err() {
        created.undo();
    }
    checked
}
