//! Making a backup of a running store (SPEC §1 `teamgate backup DIR`). The writer
//! snapshots between two batches ([`Store::backup_snapshot`]): it makes what is pending
//! durable, records every segment's length and exports sled into `meta.export`; then
//! [`finish_backup`] copies the segments up to those lengths and writes the manifest,
//! last. The directory's layout and formats are in `backup_format.rs`; restoring one is
//! `restore.rs`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::backup_format::{
    BackupManifest, BackupSegment, BackupSnapshot, COPY_BUF, EXPORT_MAGIC, FORMAT, FORMAT_VERSION,
    MANIFEST, MANIFEST_TMP, META_EXPORT, MetaExport, SEGMENTS, SegmentLen, TAG_END, TAG_ENTRY,
    TAG_TREE,
};
use super::blobs;
use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::request::Request;
use super::writer_state::WriterState;

pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::io(context, e)
}

pub(super) fn bad_backup(file: &str, detail: impl Into<String>) -> StoreError {
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
        self.request(|reply| Request::Backup {
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
pub(super) fn copy_prefix(
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
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
