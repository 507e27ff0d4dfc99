//! The developers' labelled corpus (`../shared/corpus`, MANIFEST.tsv), read by unit and
//! integration tests through this one helper. Test support only: panics on a missing
//! corpus, so a test that needs it fails instead of passing on nothing.

use std::path::PathBuf;

pub struct Row {
    pub path: String,
    pub theme: String,
    pub thread_key: String,
    pub original_sender: String,
    pub is_autoreply: bool,
    pub auto_kind: String,
    /// `is_spam`: `Some(true)` spam, `Some(false)` ham, `None` not labelled.
    pub is_spam: Option<bool>,
    /// `dangerous_attachment`, labelled the same way.
    pub dangerous_attachment: Option<bool>,
}

/// A yes/no column; anything else is "not labelled".
fn yes_no(value: &str) -> Option<bool> {
    match value {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Where the corpus is: `../shared/corpus` beside the repository, never copied into it.
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"))
}

/// Every `.eml` file of the corpus, sorted.
pub fn eml_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "eml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// MANIFEST.tsv rows, in file order.
pub fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(dir().join("MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("manifest: {e}"));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let col = |i: usize| c.get(i).map_or("", |s| s.trim()).to_string();
            Row {
                path: col(0),
                theme: col(1),
                thread_key: col(5),
                original_sender: col(6),
                is_autoreply: col(7) == "yes",
                auto_kind: col(10),
                is_spam: yes_no(&col(8)),
                dangerous_attachment: yes_no(&col(11)),
            }
        })
        .collect()
}

pub fn read(row: &Row) -> Vec<u8> {
    std::fs::read(dir().join(&row.path)).unwrap_or_else(|e| panic!("{}: {e}", row.path))
}

/// The envelope sender the receiving MTA saw, from Return-Path ("" for `<>`).
pub fn envelope_sender(raw: &[u8]) -> String {
    let msg = std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(raw))
        .ok()
        .flatten();
    let rp = msg.as_ref().and_then(|m| {
        m.header_raw("Return-Path")
            .map(str::trim)
            .map(str::to_string)
    });
    match rp {
        Some(v) if v.trim_matches(['<', '>', ' ']).is_empty() => String::new(),
        Some(v) => v.trim_matches(['<', '>', ' ']).to_string(),
        None => "unknown@corpus.invalid".to_string(),
    }
}
