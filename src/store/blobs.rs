//! The append-only segment store for message bodies: `<data_dir>/segments/<n:08>.seg`.
//!
//! Each record is a 16-byte header followed by the body:
//! `magic "TGB1" | body length u64 BE | crc32 (IEEE) of the body u32 BE | body`.
//! Records are never rewritten; a sled `MessageRecord` points at one with a [`BlobLoc`].
//! Only the writer thread appends (through [`SegmentWriter`]); readers open files on
//! their own. Durability is the writer's business: [`SegmentWriter::sync`] is called
//! once per batch, before the batch's sled transactions (so sled never holds a record
//! pointing at bytes that are not on disk yet).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Record header magic.
pub const MAGIC: [u8; 4] = *b"TGB1";
/// Header length in bytes.
pub const HEADER_LEN: u64 = 16;

/// Where phase 1 of a batch put a request's bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLocs {
    /// The message as filed (in its conversations, in Junk, in a folder, in the queue).
    pub body: BlobLoc,
    /// The original of a message whose attachments were replaced.
    pub original: Option<BlobLoc>,
}

impl BodyLocs {
    pub fn body(body: BlobLoc) -> BodyLocs {
        BodyLocs {
            body,
            original: None,
        }
    }
}

/// Where a body lives: `offset` is the start of its header, `len` the body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLoc {
    pub segment: u32,
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

impl BlobLoc {
    /// Offset just past the body.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(HEADER_LEN)?.checked_add(self.len)
    }
}

pub fn segment_name(no: u32) -> String {
    format!("{no:08}.seg")
}

pub fn segment_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(segment_name(no))
}

fn header(len: u64, crc: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4..12].copy_from_slice(&len.to_be_bytes());
    h[12..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// `(len, crc)` of a header, if the magic is right.
fn parse_header(h: &[u8; HEADER_LEN as usize]) -> Option<(u64, u32)> {
    if h[..4] != MAGIC {
        return None;
    }
    let len = u64::from_be_bytes(h[4..12].try_into().ok()?);
    let crc = u32::from_be_bytes(h[12..].try_into().ok()?);
    Some((len, crc))
}

/// Segment numbers and lengths found in `dir`, ascending. Other files are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(no) = stem.parse::<u32>() else {
            continue;
        };
        out.push((no, entry.metadata()?.len()));
    }
    out.sort_unstable();
    Ok(out)
}

/// Checks that `loc` lies inside a file of `file_len` bytes and that the header there
/// matches it (magic, length, crc). Cheap: reads 16 bytes, not the body.
pub fn check_header(file: &File, file_len: u64, loc: &BlobLoc) -> Result<(), String> {
    let end = loc.end().ok_or("length overflows")?;
    if end > file_len {
        return Err(format!(
            "points past the end of {} ({end} > {file_len} bytes)",
            segment_name(loc.segment)
        ));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, loc.offset)
        .map_err(|e| format!("reading header at {}: {e}", loc.offset))?;
    match parse_header(&h) {
        None => Err(format!("no record header at offset {}", loc.offset)),
        Some((len, crc)) if len != loc.len || crc != loc.crc => Err(format!(
            "header at offset {} says len {len} crc {crc:08x}, record says len {} crc {:08x}",
            loc.offset, loc.len, loc.crc
        )),
        Some(_) => Ok(()),
    }
}

/// Reads and verifies one body. `Err(String)` describes damage; `io::Error` is for the
/// file itself (missing, unreadable).
pub fn read_body(dir: &Path, loc: &BlobLoc) -> io::Result<Result<Vec<u8>, String>> {
    let file = File::open(segment_path(dir, loc.segment))?;
    let file_len = file.metadata()?.len();
    if let Err(e) = check_header(&file, file_len, loc) {
        return Ok(Err(e));
    }
    let Ok(len) = usize::try_from(loc.len) else {
        return Ok(Err("body too large for this platform".into()));
    };
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, loc.offset + HEADER_LEN)?;
    let crc = crc32fast::hash(&body);
    if crc != loc.crc {
        return Ok(Err(format!("body crc {crc:08x} != {:08x}", loc.crc)));
    }
    Ok(Ok(body))
}

/// End of the run of intact records starting at `start` (the first offset where no
/// complete record with a valid header and crc begins). Reads the bodies it passes.
pub fn valid_end(file: &File, start: u64, file_len: u64) -> io::Result<u64> {
    let mut pos = start;
    loop {
        let Some(body_at) = pos.checked_add(HEADER_LEN).filter(|e| *e <= file_len) else {
            return Ok(pos);
        };
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, pos)?;
        let Some((len, crc)) = parse_header(&h) else {
            return Ok(pos);
        };
        let Some(end) = body_at.checked_add(len).filter(|e| *e <= file_len) else {
            return Ok(pos);
        };
        let Ok(ulen) = usize::try_from(len) else {
            return Ok(pos);
        };
        let mut body = vec![0u8; ulen];
        file.read_exact_at(&mut body, body_at)?;
        if crc32fast::hash(&body) != crc {
            return Ok(pos);
        }
        pos = end;
    }
}

struct Active {
    no: u32,
    file: File,
    len: u64,
    /// Appended to since the last sync.
    dirty: bool,
    /// A write or sync failed: do not append here again.
    broken: bool,
}

/// The writer's handle on the segment directory. Not shared: one per store, owned by the
/// writer thread.
pub struct SegmentWriter {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<Active>,
    next_no: u32,
    /// Segments rotated away since the last sync that still hold unsynced appends.
    unsynced: Vec<File>,
    /// A segment file was created since the last sync (its directory entry needs one).
    dir_dirty: bool,
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("dir", &self.dir)
            .field("current", &self.current.as_ref().map(|a| (a.no, a.len)))
            .finish_non_exhaustive()
    }
}

impl SegmentWriter {
    /// `last`: the last existing segment and its (already recovered) length, appended to
    /// until it is full.
    pub fn open(dir: &Path, max_bytes: u64, last: Option<(u32, u64)>) -> io::Result<Self> {
        let (current, next_no) = match last {
            Some((no, len)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(segment_path(dir, no))?;
                let active = Active {
                    no,
                    file,
                    len,
                    dirty: false,
                    broken: false,
                };
                (Some(active), no.saturating_add(1))
            }
            None => (None, 0),
        };
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            max_bytes,
            current,
            next_no,
            unsynced: Vec::new(),
            dir_dirty: false,
        })
    }

    /// Appends one record; not durable until [`sync`](Self::sync).
    pub fn append(&mut self, body: &[u8]) -> io::Result<BlobLoc> {
        let record_len = HEADER_LEN + body.len() as u64;
        let rotate = self.current.as_ref().is_some_and(|a| {
            a.broken || (a.len > 0 && a.len.saturating_add(record_len) > self.max_bytes)
        });
        if rotate
            && let Some(old) = self.current.take()
            && old.dirty
        {
            self.unsynced.push(old.file);
        }
        let active = match &mut self.current {
            Some(a) => a,
            None => {
                let no = self.next_no;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(segment_path(&self.dir, no))?;
                self.next_no = no.saturating_add(1);
                self.dir_dirty = true;
                self.current.insert(Active {
                    no,
                    file,
                    len: 0,
                    dirty: false,
                    broken: false,
                })
            }
        };
        let crc = crc32fast::hash(body);
        let offset = active.len;
        let written = active
            .file
            .write_all_at(&header(body.len() as u64, crc), offset)
            .and_then(|()| active.file.write_all_at(body, offset + HEADER_LEN));
        if let Err(e) = written {
            // Cut the partial record off; if even that fails, never append here again.
            if active.file.set_len(offset).is_err() {
                active.broken = true;
            }
            return Err(e);
        }
        active.len = offset + record_len;
        active.dirty = true;
        Ok(BlobLoc {
            segment: active.no,
            offset,
            len: body.len() as u64,
            crc,
        })
    }

    /// Makes every append so far durable: fdatasync of each touched segment, and of the
    /// directory when a segment was created. After a failure the current segment is
    /// abandoned (its unsynced pages may be lost), so later appends go to a new one.
    pub fn sync(&mut self) -> io::Result<()> {
        let result = self.sync_inner();
        if result.is_err()
            && let Some(a) = &mut self.current
        {
            a.broken = true;
        }
        result
    }

    fn sync_inner(&mut self) -> io::Result<()> {
        for f in self.unsynced.drain(..) {
            f.sync_data()?;
        }
        if let Some(a) = &mut self.current
            && a.dirty
        {
            a.file.sync_data()?;
            a.dirty = false;
        }
        if self.dir_dirty {
            File::open(&self.dir)?.sync_all()?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Whether anything was appended since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.dir_dirty
            || !self.unsynced.is_empty()
            || self.current.as_ref().is_some_and(|a| a.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_rotate() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut w = SegmentWriter::open(dir.path(), 104, None)?;
        let a = w.append(b"hello")?;
        let b = w.append(&[7u8; 70])?; // 21 + 86 > 104: rotates; 86 + 17 fits
        let c = w.append(b"x")?;
        assert!(w.needs_sync());
        w.sync()?;
        assert!(!w.needs_sync());
        assert_eq!((a.segment, a.offset), (0, 0));
        assert_eq!((b.segment, b.offset), (1, 0));
        assert_eq!((c.segment, c.offset), (1, 86));
        assert_eq!(read_body(dir.path(), &a)?, Ok(b"hello".to_vec()));
        assert_eq!(read_body(dir.path(), &b)?, Ok(vec![7u8; 70]));
        assert_eq!(list_segments(dir.path())?, vec![(0, 21), (1, 103)]);
        let bad = BlobLoc {
            crc: a.crc ^ 1,
            ..a
        };
        assert!(read_body(dir.path(), &bad)?.is_err());
        let past = BlobLoc { len: 1000, ..c };
        assert!(read_body(dir.path(), &past)?.is_err());
        Ok(())
    }

    #[test]
    fn valid_end_stops_at_torn_record() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut w = SegmentWriter::open(dir.path(), 1 << 20, None)?;
        w.append(b"one")?;
        let two = w.append(b"two")?;
        w.sync()?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir.path(), 0))?;
        let good = f.metadata()?.len();
        assert_eq!(valid_end(&f, 0, good)?, good);
        // A header promising more bytes than exist is a torn tail.
        f.write_all_at(&header(50, 0), good)?;
        f.write_all_at(b"partial", good + HEADER_LEN)?;
        let len = f.metadata()?.len();
        assert_eq!(valid_end(&f, 0, len)?, good);
        // A flipped body byte ends the intact run at that record.
        f.write_all_at(b"X", two.offset + HEADER_LEN)?;
        assert_eq!(valid_end(&f, 0, len)?, two.offset);
        Ok(())
    }
}
