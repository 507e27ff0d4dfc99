//! Checks run by `Store::open` before the writer starts: every message record must point
//! inside an existing segment at a matching record header, and the last segment's tail
//! must consist of whole, intact records. Problems are reported, never a panic; only the
//! torn tail is repaired (cut off), since no durable record can point into it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use super::blobs::{self, BlobLoc};
use super::keys::{self, TreeId};
use super::records::{self, MessageRecord};
use super::{RecoveryReport, StoreError, Trees};

/// Returns the report and the last segment with its length after repair (appends go on
/// from there).
pub fn recover(
    trees: &Trees,
    dir: &Path,
) -> Result<(RecoveryReport, Option<(u32, u64)>), StoreError> {
    let io = |what: String| move |e| StoreError::io(what, e);
    let segments = blobs::list_segments(dir).map_err(io(format!("listing {}", dir.display())))?;
    let mut files: HashMap<u32, (File, u64)> = HashMap::new();
    for &(no, len) in &segments {
        let path = blobs::segment_path(dir, no);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        files.insert(no, (f, len));
    }
    let last = segments.last().map(|&(no, _)| no);
    let mut report = RecoveryReport::default();
    // End of the last intact referenced record in the last segment.
    let mut referenced_end = 0u64;

    for kv in trees.get(TreeId::Messages).iter() {
        let (k, v) = kv?;
        report.messages_checked += 1;
        let name = match keys::be_u64(&k, 0) {
            Some(id) => format!("message {id}"),
            None => format!("message key {}", keys::display(&k)),
        };
        let rec: MessageRecord = match records::decode(TreeId::Messages, &k, &v) {
            Ok(r) => r,
            Err(e) => {
                report.bad_records.push(format!("{name}: {e}"));
                continue;
            }
        };
        let loc: BlobLoc = rec.loc;
        let Some((file, len)) = files.get(&loc.segment) else {
            report.bad_records.push(format!(
                "{name}: segment {} is missing",
                blobs::segment_name(loc.segment)
            ));
            continue;
        };
        if let Err(e) = blobs::check_header(file, *len, &loc) {
            report.bad_records.push(format!("{name}: {e}"));
        }
        // Never cut bytes a record claims, even a damaged one (a tool may salvage them).
        if Some(loc.segment) == last
            && let Some(end) = loc.end().filter(|end| end <= len)
        {
            referenced_end = referenced_end.max(end);
        }
    }

    let Some(last) = last else {
        return Ok((report, None));
    };
    let Some((file, len)) = files.get(&last) else {
        return Ok((report, None));
    };
    let path = blobs::segment_path(dir, last);
    let good = blobs::valid_end(file, referenced_end, *len)
        .map_err(io(format!("scanning {}", path.display())))?;
    if good < *len {
        file.set_len(good)
            .and_then(|()| file.sync_all())
            .map_err(io(format!("truncating {}", path.display())))?;
        report.truncated_tail_bytes = len - good;
    }
    Ok((report, Some((last, good))))
}
