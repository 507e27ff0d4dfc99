//! The layout of a backup directory (SPEC §1 `teamgate backup DIR` / `teamgate restore
//! DIR`, GUIDE §0: "sled export + segments up to a recorded length"): its file names, the
//! `meta.export` format and the manifest types, shared by making a backup (`backup.rs`)
//! and restoring one (`restore.rs`).
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
//! [`Store::backup_snapshot`]: crate::store::Store::backup_snapshot
//! [`finish_backup`]: crate::store::finish_backup

use serde::{Deserialize, Serialize};

/// `format` of every manifest.
pub const FORMAT: &str = "teamgate-backup";
/// Version of the backup layout described above.
pub const FORMAT_VERSION: u32 = 1;
pub(super) const MANIFEST: &str = "manifest.json";
pub(super) const MANIFEST_TMP: &str = "manifest.json.tmp";
pub(super) const META_EXPORT: &str = "meta.export";
pub(super) const SEGMENTS: &str = "segments";
pub(super) const EXPORT_MAGIC: &[u8; 8] = b"TGEXPRT1";
pub(super) const TAG_END: u8 = 0;
pub(super) const TAG_TREE: u8 = 1;
pub(super) const TAG_ENTRY: u8 = 2;
/// Copy buffer: large enough for sequential throughput, small enough to not matter.
pub(super) const COPY_BUF: usize = 1 << 20;

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
/// up to these lengths ([`finish_backup`](crate::store::finish_backup)).
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
