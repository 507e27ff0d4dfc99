//! Checks run by `Store::open` before the writer starts: every message record must point
//! inside an existing segment at a matching record header, and the last segment's tail
//! must consist of whole, intact records. Problems are reported ([`RecoveryReport`]),
//! never a panic; only the torn tail is repaired (cut off), since no durable record can
//! point into it. Junk and quarantine records must name message records that exist and
//! passed that check.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::Path;

use super::blobs::{self, BlobLoc};
use super::db::Trees;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::MessageKey;
use super::records::{self, JunkRecord, MessageRecord, QuarantineRecord};

/// What [`Store::open`](crate::store::Store::open) found while checking the data directory. Problems are reported
/// here (and logged by the caller), never turned into a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Message records whose body location was checked.
    pub messages_checked: u64,
    /// Junk records checked (each must name a message with intact bytes).
    pub junk_checked: u64,
    /// Quarantine records checked (original, stripped copy and released revision must
    /// name messages with intact bytes).
    pub quarantine_checked: u64,
    /// One line per message record that does not point at an intact record, and per junk
    /// or quarantine record naming a message that is missing or damaged.
    pub bad_records: Vec<String>,
    /// Bytes cut off the end of the last segment (a torn or garbage tail).
    pub truncated_tail_bytes: u64,
}

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
    // Message keys whose record is undecodable or whose bytes are not intact.
    let mut damaged: HashSet<u64> = HashSet::new();

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
                damaged.extend(keys::be_u64(&k, 0));
                continue;
            }
        };
        let loc: BlobLoc = rec.loc;
        let Some((file, len)) = files.get(&loc.segment) else {
            report.bad_records.push(format!(
                "{name}: segment {} is missing",
                blobs::segment_name(loc.segment)
            ));
            damaged.extend(keys::be_u64(&k, 0));
            continue;
        };
        if let Err(e) = blobs::check_header(file, *len, &loc) {
            report.bad_records.push(format!("{name}: {e}"));
            damaged.extend(keys::be_u64(&k, 0));
        }
        // Never cut bytes a record claims, even a damaged one (a tool may salvage them).
        if Some(loc.segment) == last
            && let Some(end) = loc.end().filter(|end| end <= len)
        {
            referenced_end = referenced_end.max(end);
        }
    }

    check_references(trees, &damaged, &mut report)?;

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

/// Reports junk and quarantine records naming a message that is missing or damaged.
fn check_references(
    trees: &Trees,
    damaged: &HashSet<u64>,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let messages = trees.get(TreeId::Messages);
    let problem = |key: MessageKey| -> Result<Option<&'static str>, StoreError> {
        Ok(if damaged.contains(&key.0) {
            Some("is damaged")
        } else if !messages.contains_key(keys::message(key))? {
            Some("does not exist")
        } else {
            None
        })
    };
    for kv in trees.get(TreeId::Junk).iter() {
        let (k, v) = kv?;
        report.junk_checked += 1;
        let name = match keys::be_u64(&k, 0) {
            Some(id) => format!("junk record {id}"),
            None => format!("junk key {}", keys::display(&k)),
        };
        match records::decode::<JunkRecord>(TreeId::Junk, &k, &v) {
            Err(e) => report.bad_records.push(format!("{name}: {e}")),
            Ok(rec) => {
                if let Some(p) = problem(rec.message)? {
                    report.bad_records.push(format!(
                        "junk record {}: its message {} {p}",
                        rec.id.0, rec.message.0
                    ));
                }
            }
        }
    }
    for kv in trees.get(TreeId::Quarantine).iter() {
        let (k, v) = kv?;
        report.quarantine_checked += 1;
        let name = match keys::be_u64(&k, 0) {
            Some(id) => format!("quarantine record {id}"),
            None => format!("quarantine key {}", keys::display(&k)),
        };
        let rec = match records::decode::<QuarantineRecord>(TreeId::Quarantine, &k, &v) {
            Ok(rec) => rec,
            Err(e) => {
                report.bad_records.push(format!("{name}: {e}"));
                continue;
            }
        };
        let named = [
            ("original", Some(rec.original)),
            ("stripped copy", rec.stripped),
            ("released revision", rec.released_as),
        ];
        for (what, key) in named {
            if let Some(key) = key
                && let Some(p) = problem(key)?
            {
                report.bad_records.push(format!(
                    "quarantine record {}: its {what} (message {}) {p}",
                    rec.id.0, key.0
                ));
            }
        }
    }
    Ok(())
}
