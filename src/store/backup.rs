//! Backup and restore of a data directory (SPEC §1 `teamgate backup DIR` /
//! `teamgate restore DIR`, GUIDE §0: "sled export + segments up to a recorded length").
//!
//! A backup directory holds:
//! - `meta.export`: every sled tree, written by the writer thread between two batches
//!   ([`Store::backup_snapshot`]). The previous batch ended with its durability barrier
//!   and no request runs while the trees are read, so the export is one state: the state
//!   every request answered before the backup saw, and none of a later one.
//! - `segments/<n:08>.seg`: each segment copied up to the length it had at that moment
//!   ([`finish_backup`]). Segments are append-only and never rewritten, so that prefix
//!   stays valid while the daemon appends more, and the copy need not pause the writer.
//!   It need not even run in the daemon: the CLI copies the segments itself, so a long
//!   copy does not run into the control socket's request timeout. Memory is bounded (one
//!   copy buffer; the export streams tree by tree).
//! - `manifest.json`, written last (temp file, fsync, rename, fsync of the directory):
//!   format and schema version, creation time, the export's length, crc32 and sled
//!   checksum, every segment's length and crc32. Without it a directory is an unfinished
//!   backup, and restore refuses it.
//!
//! Why an export and not a copy of sled's directory: sled 0.34.7 writes its files from
//! background threads (flusher, segment cleaner) while a `Db` is open, so files copied
//! from a running daemon need not be a state sled can open again (CRATES.md §2.9 lists
//! open corruption reports about such files). The export has the shape of sled's own
//! version-agnostic `Db::export` (collection type `tree`, name, key/value pairs), but it
//! is written here: `Db::export` and `Db::import` panic on I/O errors (`unwrap`/`expect`
//! inside sled) and carry no checksum. Its sled checksum is computed as `Db::checksum`
//! does (crc32 over the tree names in byte order, each followed by its keys and values),
//! so a restore checks the rebuilt database with sled's own `checksum()`.
//!
//! `meta.export`: magic `TGEXPRT1`, then records, each starting with a tag byte: `1` a
//! tree (name), `2` an entry of the current tree (key, value), `0` the end (tree count
//! u64 BE, entry count u64 BE, sled checksum u32 BE), then end of file. Names, keys and
//! values are a u32 BE length and the bytes.
//!
//! Restore ([`restore`]) refuses a data directory that is locked by a daemon or not
//! empty (never overwrites; there is no `--force`: move the old directory aside), and a
//! backup whose manifest, lengths or checksums do not match, all before writing anything.
//! It then rebuilds sled from the export, compares sled's checksum, copies the segments
//! (checking their crc again as it goes), and opens the result with [`Store::open`]: the
//! restore succeeds only if recovery reports no bad record. On any failure it removes
//! what it wrote. UIDVALIDITY values, UIDs and every other counter live in sled, so a
//! round trip keeps them: IMAP clients do not download anything again.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blobs;
use super::keys::{self, TreeId};
use super::writer_state::WriterState;
use super::{RecoveryReport, Store, StoreError, StoreOptions};

/// `format` of every manifest.
pub const FORMAT: &str = "teamgate-backup";
/// Version of the backup layout described above.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
const META_EXPORT: &str = "meta.export";
const SEGMENTS: &str = "segments";
const EXPORT_MAGIC: &[u8; 8] = b"TGEXPRT1";
const TAG_END: u8 = 0;
const TAG_TREE: u8 = 1;
const TAG_ENTRY: u8 = 2;
/// Copy buffer: large enough for sequential throughput, small enough to not matter.
const COPY_BUF: usize = 1 << 20;

/// The metadata export of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaExport {
    pub file: String,
    pub bytes: u64,
    /// crc32 of the whole file.
    pub crc32: u32,
    /// `sled::Db::checksum` of the exported database.
    pub sled_checksum: u32,
    pub trees: u64,
    pub entries: u64,
}

/// A segment as the snapshot found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentLen {
    pub no: u32,
    pub bytes: u64,
}

/// What the writer recorded: the export is written, the segments are still to be copied
/// up to these lengths ([`finish_backup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSnapshot {
    pub schema_version: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub meta: MetaExport,
    pub segments: Vec<SegmentLen>,
    pub conversations: u64,
    pub messages: u64,
}

/// One copied segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSegment {
    pub file: String,
    pub no: u32,
    pub bytes: u64,
    pub crc32: u32,
}

/// `manifest.json` of a finished backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub version: u32,
    pub schema_version: u32,
    pub created_at: String,
    pub teamgate_version: String,
    pub meta: MetaExport,
    pub segments: Vec<BackupSegment>,
    pub conversations: u64,
    pub messages: u64,
}

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

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::io(context, e)
}

fn bad_backup(file: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: "backup",
        key: file.to_owned(),
        detail: detail.into(),
    }
}

/// `dir` must not exist (it is created; its parent must exist) or be an empty directory.
fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::AlreadyExists(format!(
                    "backup directory {} is not empty (a backup never overwrites anything)",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()), e)),
    }
    let segments = dir.join(SEGMENTS);
    std::fs::create_dir(&segments).map_err(io_err(format!("creating {}", segments.display())))
}

/// Removes what a failed backup wrote into `dir` (which was empty before).
fn remove_partial_backup(dir: &Path) {
    for name in [META_EXPORT, MANIFEST_TMP] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir_all(dir.join(SEGMENTS));
}

fn now_rfc3339() -> Result<String, StoreError> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Internal(format!("formatting the time: {e}")))
}

/// A writer that keeps the crc32 and length of everything written through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Summing<W> {
    fn new(inner: W) -> Self {
        Summing {
            inner,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn put_field(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::other("a sled key or value is 4 GiB or larger"))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }
}

/// Streams every sled tree into a new file at `path` (format in the module docs).
fn export_meta(db: &sled::Db, path: &Path) -> Result<MetaExport, StoreError> {
    let ctx = || format!("writing {}", path.display());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(ctx()))?;
    let mut out = Summing::new(BufWriter::new(file));
    out.put(EXPORT_MAGIC).map_err(io_err(ctx()))?;
    let mut names = db.tree_names();
    names.sort();
    let mut sled_sum = crc32fast::Hasher::new();
    let (mut trees, mut entries) = (0u64, 0u64);
    for name in names {
        let tree = db.open_tree(&name)?;
        out.put(&[TAG_TREE]).map_err(io_err(ctx()))?;
        out.put_field(&name).map_err(io_err(ctx()))?;
        sled_sum.update(&name);
        trees += 1;
        for kv in tree.iter() {
            let (k, v) = kv?;
            sled_sum.update(&k);
            sled_sum.update(&v);
            out.put(&[TAG_ENTRY])
                .and_then(|()| out.put_field(&k))
                .and_then(|()| out.put_field(&v))
                .map_err(io_err(ctx()))?;
            entries += 1;
        }
    }
    let sled_checksum = sled_sum.finalize();
    let mut end = Vec::with_capacity(21);
    end.push(TAG_END);
    end.extend_from_slice(&trees.to_be_bytes());
    end.extend_from_slice(&entries.to_be_bytes());
    end.extend_from_slice(&sled_checksum.to_be_bytes());
    out.put(&end).map_err(io_err(ctx()))?;
    let Summing { inner, crc, bytes } = out;
    let file = inner
        .into_inner()
        .map_err(|e| StoreError::io(ctx(), e.into_error()))?;
    file.sync_all().map_err(io_err(ctx()))?;
    Ok(MetaExport {
        file: META_EXPORT.into(),
        bytes,
        crc32: crc.finalize(),
        sled_checksum,
        trees,
        entries,
    })
}

impl WriterState {
    /// Runs on the writer thread between two batches (see `Writer::run`): makes anything
    /// pending durable, records every segment's length and exports sled into `export`.
    pub(super) fn backup_snapshot(
        &mut self,
        export: &Path,
        segments_dir: &Path,
    ) -> Result<BackupSnapshot, StoreError> {
        if self.segments.needs_sync() {
            self.segments
                .sync()
                .map_err(io_err("backup: segment fdatasync"))?;
        }
        self.db.flush()?;
        let segments = blobs::list_segments(segments_dir)
            .map_err(io_err(format!("listing {}", segments_dir.display())))?
            .into_iter()
            .map(|(no, bytes)| SegmentLen { no, bytes })
            .collect();
        let created_at = now_rfc3339()?;
        let meta = export_meta(&self.db, export)?;
        Ok(BackupSnapshot {
            schema_version: keys::SCHEMA_VERSION,
            created_at,
            meta,
            segments,
            conversations: self.trees.get(TreeId::Conversations).len() as u64,
            messages: self.trees.get(TreeId::Messages).len() as u64,
        })
    }
}

impl Store {
    /// First half of a backup into `dir`, which must not exist (its parent must) or be
    /// empty: on the writer, between two batches, records the segments' lengths and
    /// writes `dir/meta.export`. Pauses the writer only for the export. Then
    /// [`finish_backup`] (in this process or another one) copies the segments.
    pub async fn backup_snapshot(&self, dir: &Path) -> Result<BackupSnapshot, StoreError> {
        let dir = dir.to_path_buf();
        let segments_dir = self.inner.segments_dir.clone();
        self.request(|reply| super::writer::Request::Backup {
            dir,
            segments_dir,
            reply,
        })
        .await
    }
}

/// The writer's part of `Request::Backup`: prepares `dir`, then snapshots; on failure
/// removes what it wrote.
pub(super) fn snapshot_into(
    w: &mut WriterState,
    dir: &Path,
    segments_dir: &Path,
) -> Result<BackupSnapshot, StoreError> {
    prepare_dir(dir)?;
    let snap = w.backup_snapshot(&dir.join(META_EXPORT), segments_dir);
    if snap.is_err() {
        remove_partial_backup(dir);
    }
    snap
}

/// Copies exactly `len` bytes from the start of `src` into the new file `dst` (fsynced);
/// returns their crc32. `expect_crc`: fail if the bytes read do not match it.
fn copy_prefix(
    src: &Path,
    dst: &Path,
    len: u64,
    expect_crc: Option<u32>,
) -> Result<u32, StoreError> {
    let name = src.display().to_string();
    let from = File::open(src).map_err(io_err(format!("opening {name}")))?;
    let have = from
        .metadata()
        .map_err(io_err(format!("reading {name}")))?
        .len();
    if have < len {
        return Err(bad_backup(
            &name,
            format!("has {have} bytes, {len} were recorded"),
        ));
    }
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_err(format!("creating {}", dst.display())))?;
    let mut reader = from.take(len);
    let mut writer = BufWriter::with_capacity(COPY_BUF, to);
    let mut buf = vec![0u8; COPY_BUF];
    let mut crc = crc32fast::Hasher::new();
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(format!("reading {name}"), e)),
        };
        crc.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(io_err(format!("writing {}", dst.display())))?;
        copied += n as u64;
    }
    if copied != len {
        return Err(bad_backup(
            &name,
            format!("ended after {copied} of {len} bytes"),
        ));
    }
    let crc = crc.finalize();
    if let Some(expected) = expect_crc
        && crc != expected
    {
        return Err(bad_backup(
            &name,
            format!("crc32 {crc:08x}, the manifest says {expected:08x}"),
        ));
    }
    let to = writer
        .into_inner()
        .map_err(|e| StoreError::io(format!("writing {}", dst.display()), e.into_error()))?;
    to.sync_all()
        .map_err(io_err(format!("syncing {}", dst.display())))?;
    Ok(crc)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", dir.display())))
}

/// Second half of a backup: copies each segment of `data_dir` up to its recorded length
/// into `dir/segments`, then writes `dir/manifest.json` (last, atomically). On failure,
/// removes what the backup wrote into `dir`.
pub fn finish_backup(
    data_dir: &Path,
    dir: &Path,
    snap: &BackupSnapshot,
) -> Result<BackupManifest, StoreError> {
    let result = finish_inner(data_dir, dir, snap);
    if result.is_err() {
        remove_partial_backup(dir);
    }
    result
}

fn finish_inner(
    data_dir: &Path,
    dir: &Path,
    snap: &BackupSnapshot,
) -> Result<BackupManifest, StoreError> {
    let from = data_dir.join(SEGMENTS);
    let to = dir.join(SEGMENTS);
    let mut segments = Vec::with_capacity(snap.segments.len());
    for s in &snap.segments {
        let crc32 = copy_prefix(
            &blobs::segment_path(&from, s.no),
            &blobs::segment_path(&to, s.no),
            s.bytes,
            None,
        )?;
        segments.push(BackupSegment {
            file: blobs::segment_name(s.no),
            no: s.no,
            bytes: s.bytes,
            crc32,
        });
    }
    sync_dir(&to)?;
    let manifest = BackupManifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        schema_version: snap.schema_version,
        created_at: snap.created_at.clone(),
        teamgate_version: env!("CARGO_PKG_VERSION").into(),
        meta: snap.meta.clone(),
        segments,
        conversations: snap.conversations,
        messages: snap.messages,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Encode {
        tree: "backup",
        detail: e.to_string(),
    })?;
    let tmp = dir.join(MANIFEST_TMP);
    let ctx = || format!("writing {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(ctx()))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(io_err(ctx()))?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io_err(ctx()))?;
    sync_dir(dir)?;
    Ok(manifest)
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
    let db = super::open_sled(meta_dir, StoreOptions::default().cache_capacity_bytes)?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::super::tests::{T0, TestResult, new_conv, open, simple};
    use super::*;
    use crate::store::{MessageKey, TeamView};

    fn view() -> TeamView {
        TeamView::Open {
            inboxes: vec!["support".into()],
        }
    }

    /// Small segments, so a backup spans several.
    fn small_segments() -> StoreOptions {
        StoreOptions {
            segment_max_bytes: 300,
            ..StoreOptions::default()
        }
    }

    async fn ingest(store: &Store, n: usize, tag: &str) -> Result<(), StoreError> {
        for i in 0..n {
            let from = format!("c{i}@{tag}.example");
            let mid = format!("{tag}-{i}@example.com");
            store
                .ingest(simple("support", &mid, T0 + i as i64, &from, new_conv()))
                .await?;
        }
        Ok(())
    }

    async fn backup(store: &Store, data_dir: &Path, dir: &Path) -> Result<(), StoreError> {
        let snap = store.backup_snapshot(dir).await?;
        finish_backup(data_dir, dir, &snap).map(|_| ())
    }

    /// Everything a client sees: conversations, the view's UIDVALIDITY and uids, bytes.
    async fn state(
        store: &Store,
    ) -> Result<(String, u32, Vec<(u32, MessageKey)>, Vec<Vec<u8>>), StoreError> {
        let convs = serde_json::to_string(&store.list_conversations()?)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let snap = store.sync_view(&view()).await?;
        let uids: Vec<(u32, MessageKey)> =
            snap.entries.iter().map(|(u, e)| (*u, e.message)).collect();
        let bodies = uids
            .iter()
            .map(|(_, k)| store.read_message(*k))
            .collect::<Result<_, _>>()?;
        Ok((convs, snap.uid_validity, uids, bodies))
    }

    #[tokio::test]
    async fn round_trip_keeps_conversations_uids_and_bytes() -> TestResult {
        let data = tempfile::tempdir()?;
        let out = tempfile::tempdir()?;
        let dir = out.path().join("backup");
        let (store, _) = Store::open(data.path(), small_segments())?;
        ingest(&store, 6, "before").await?;
        let before = state(&store).await?;
        backup(&store, data.path(), &dir).await?;
        // Later mail is not in the backup.
        ingest(&store, 2, "after").await?;
        store.close().await?;

        let manifest = verify_backup(&dir)?;
        assert!(manifest.segments.len() > 1, "{manifest:?}");
        assert_eq!(manifest.conversations, 6);
        let target = out.path().join("restored");
        let report = restore(&dir, &target).await?;
        assert_eq!((report.conversations, report.messages), (6, 6));
        assert!(report.recovery.bad_records.is_empty());

        let (store, recovery) = Store::open(&target, small_segments())?;
        assert!(recovery.bad_records.is_empty(), "{recovery:?}");
        assert_eq!(state(&store).await?, before);
        // The restored store goes on from there: new mail gets the next uid.
        ingest(&store, 1, "later").await?;
        let next = state(&store).await?;
        assert_eq!(next.1, before.1);
        assert_eq!(next.2.len(), 7);
        assert!(next.2[6].0 > before.2[5].0);
        store.close().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn snapshot_is_consistent_while_mail_arrives() -> TestResult {
        let data = tempfile::tempdir()?;
        let out = tempfile::tempdir()?;
        let dir = out.path().join("backup");
        let (store, _) = Store::open(data.path(), small_segments())?;
        ingest(&store, 3, "first").await?;
        let mut senders = Vec::new();
        for t in 0..4 {
            let s = store.clone();
            senders.push(tokio::spawn(async move {
                ingest(&s, 10, &format!("racer{t}")).await
            }));
        }
        let snap = store.backup_snapshot(&dir).await?;
        for s in senders {
            s.await??;
        }
        let manifest = finish_backup(data.path(), &dir, &snap)?;
        store.close().await?;
        let report = restore(&dir, &out.path().join("restored")).await?;
        // Exactly the messages committed before the snapshot, each with intact bytes.
        assert_eq!(report.messages, manifest.messages);
        assert_eq!(report.conversations, manifest.conversations);
        assert!(report.recovery.bad_records.is_empty());
        assert_eq!(report.recovery.truncated_tail_bytes, 0);
        Ok(())
    }

    #[tokio::test]
    async fn refuses_to_overwrite() -> TestResult {
        let data = tempfile::tempdir()?;
        let out = tempfile::tempdir()?;
        let (store, _) = open(data.path())?;
        ingest(&store, 1, "x").await?;
        // A backup into a non-empty directory.
        let busy = out.path().join("busy");
        std::fs::create_dir(&busy)?;
        std::fs::write(busy.join("keep"), b"mine")?;
        let refused = store.backup_snapshot(&busy).await;
        assert!(
            matches!(refused, Err(StoreError::AlreadyExists(_))),
            "{refused:?}"
        );
        assert_eq!(std::fs::read_dir(&busy)?.count(), 1);
        // An empty directory is fine.
        let dir = out.path().join("empty");
        std::fs::create_dir(&dir)?;
        backup(&store, data.path(), &dir).await?;
        // Restore into the live data directory: locked.
        let live = restore(&dir, data.path()).await;
        assert!(matches!(live, Err(StoreError::Locked(_))), "{live:?}");
        store.close().await?;
        // Stopped but not empty: refused, untouched.
        let stopped = restore(&dir, data.path()).await;
        assert!(
            matches!(stopped, Err(StoreError::AlreadyExists(_))),
            "{stopped:?}"
        );
        let (store, report) = open(data.path())?;
        assert!(report.bad_records.is_empty());
        assert_eq!(store.stats()?.messages, 1);
        store.close().await?;
        Ok(())
    }

    #[tokio::test]
    async fn damaged_backups_are_refused_and_leave_nothing() -> TestResult {
        let data = tempfile::tempdir()?;
        let out = tempfile::tempdir()?;
        let dir = out.path().join("backup");
        let (store, _) = open(data.path())?;
        ingest(&store, 2, "x").await?;
        backup(&store, data.path(), &dir).await?;
        store.close().await?;
        let target = out.path().join("target");

        // A flipped byte in a segment.
        let seg = blobs::segment_path(&dir.join(SEGMENTS), 0);
        let f = OpenOptions::new().read(true).write(true).open(&seg)?;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 20)?;
        f.write_all_at(&[b[0] ^ 0x01], 20)?;
        let r = restore(&dir, &target).await;
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        assert!(!target.exists());
        f.write_all_at(&b, 20)?;

        // A flipped byte in the metadata export.
        let meta = dir.join(META_EXPORT);
        let f = OpenOptions::new().read(true).write(true).open(&meta)?;
        f.read_exact_at(&mut b, 12)?;
        f.write_all_at(&[b[0] ^ 0x80], 12)?;
        let r = restore(&dir, &target).await;
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        assert!(!target.exists());
        f.write_all_at(&b, 12)?;

        // No manifest: an unfinished backup.
        std::fs::rename(dir.join(MANIFEST), out.path().join("m"))?;
        let r = restore(&dir, &target).await;
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        std::fs::rename(out.path().join("m"), dir.join(MANIFEST))?;

        // Repaired, it restores into an existing empty directory.
        std::fs::create_dir(&target)?;
        let report = restore(&dir, &target).await?;
        assert_eq!(report.messages, 2);
        Ok(())
    }

    /// The export's checksum is sled's own: a restore compares them.
    #[tokio::test]
    async fn export_checksum_matches_sled() -> TestResult {
        let data = tempfile::tempdir()?;
        let out = tempfile::tempdir()?;
        let (store, _) = open(data.path())?;
        ingest(&store, 3, "x").await?;
        let snap = store.backup_snapshot(&out.path().join("b")).await?;
        assert_eq!(snap.meta.sled_checksum, store.inner.db.checksum()?);
        assert!(snap.meta.trees as usize > TreeId::ALL.len());
        store.close().await?;
        Ok(())
    }
}
