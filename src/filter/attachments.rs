//! Attachment policy: which parts are attachments (also inside nested message/rfc822 and
//! names inside zip archives), which names and contents are dangerous (blocked extensions,
//! double extensions, direction-override tricks, executables posing as documents), and
//! [`strip_parts`], which swaps a dangerous part for a short notice and leaves every other
//! byte alone. Pure: no I/O; all work bounded (parts, depth, archive entries).

use mail_builder::mime::MimePart;
use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};

use super::{AttachmentHit, HitCause};

/// Nested message/rfc822 levels searched (the same bound as message.rs).
const MAX_DEPTH: usize = 8;
/// Attachments examined per message; past it the rest is not examined by name or by clamd.
const MAX_PARTS: usize = 256;
/// Central-directory entries read per zip archive. Names only: nothing is decompressed, so
/// a zip bomb costs no more than its directory.
const MAX_ZIP_ENTRIES: usize = 1000;
/// Reasons listed for one archive.
const MAX_ARCHIVE_REASONS: usize = 3;

/// File extensions that honestly announce executable content.
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "scr", "com", "sys", "cpl", "ocx", "drv", "efi", "msi", "pif", "bin", "elf",
    "so", "o", "out", "run", "app", "appimage", "dylib", "command", "sh", "bash", "zsh", "ksh",
    "csh", "py", "pl", "rb", "php", "lnk",
];
/// Content types that honestly announce executable content.
const EXECUTABLE_TYPES: &[&str] = &[
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-dosexec",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-elf",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/x-sh",
    "application/x-shellscript",
    "application/x-python",
    "application/x-perl",
    "application/x-ms-shortcut",
];

/// Office formats that carry macros by design (OOXML `*m`, add-ins, binary workbooks).
const MACRO_EXTENSIONS: &[&str] = &[
    "docm", "dotm", "xlsm", "xltm", "xlam", "xlsb", "pptm", "potm", "ppam", "ppsm", "sldm",
];
/// The OLE2 compound-file signature (`.doc`, `.xls`, `.ppt`, and `vbaProject.bin` itself).
const OLE2_MAGIC: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";

/// One attachment, as the checks see it.
#[derive(Debug)]
pub(super) struct Part<'m> {
    /// See [`AttachmentHit::part_path`].
    pub path: Vec<usize>,
    /// "" when the part has no file name.
    pub filename: String,
    /// Lower-cased `type/subtype`; "" when absent.
    pub content_type: String,
    /// Decoded contents (transfer encoding undone).
    pub contents: &'m [u8],
}

/// Every attachment of `msg`, depth-first, nested messages included, bounded.
/// Whether `collect` stopped at its limit: the rest of the message went unchecked.
pub(super) fn truncated(parts: &[Part<'_>]) -> bool {
    parts.len() >= MAX_PARTS
}

pub(super) fn collect<'m>(msg: &'m Message<'m>) -> Vec<Part<'m>> {
    let mut out = Vec::new();
    collect_into(msg, &mut Vec::new(), &mut out);
    out
}

fn collect_into<'m>(msg: &'m Message<'m>, path: &mut Vec<usize>, out: &mut Vec<Part<'m>>) {
    for (id, part) in msg.parts.iter().enumerate() {
        if out.len() >= MAX_PARTS {
            return;
        }
        let name = part
            .attachment_name()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let listed = msg.attachments.contains(&(id as u32))
            || name.is_some()
            || part
                .content_disposition()
                .is_some_and(|d| d.is_attachment());
        match &part.body {
            PartType::Multipart(_) => {}
            PartType::Message(inner) if path.len() < MAX_DEPTH => {
                path.push(id);
                collect_into(inner, path, out);
                path.pop();
            }
            PartType::Message(_) => {}
            _ if listed => {
                let mut part_path = path.clone();
                part_path.push(id);
                out.push(Part {
                    path: part_path,
                    filename: name.unwrap_or_default().to_string(),
                    content_type: content_type_of(part),
                    contents: part.contents(),
                });
            }
            _ => {}
        }
    }
}

fn content_type_of(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => String::new(),
    }
}

/// The local checks (no clamd): names, archive names, executable content under another
/// name or type. `blocked` holds lower-case extensions without the dot.
/// With `macros`, Office documents carrying VBA macros count too (by content, whatever
/// their name, and macro-enabled names inside archives, which are not opened).
pub(super) fn check_names_and_types(
    parts: &[Part<'_>],
    blocked: &[String],
    macros: bool,
) -> Vec<AttachmentHit> {
    parts
        .iter()
        .filter_map(|part| {
            let mut reasons = Vec::new();
            let mut cause = None;
            let mut found = |why: Option<String>, kind: HitCause| {
                if let Some(why) = why {
                    reasons.push(why);
                    cause = cause.max(Some(kind));
                }
            };
            found(name_reason(&part.filename, blocked), HitCause::BlockedName);
            found(disguised_executable(part), HitCause::DisguisedExecutable);
            let entries = if is_zip(part) {
                zip_names(part.contents)
            } else {
                Vec::new()
            };
            if macros {
                found(office_macros(part, &entries), HitCause::OfficeMacro);
            }
            for entry in entries
                .iter()
                .filter_map(|entry| {
                    let why = name_reason(entry, blocked)
                        .or_else(|| macros.then(|| macro_name_reason(entry)).flatten())?;
                    Some(format!("archive contains {}: {why}", printable(entry)))
                })
                .take(MAX_ARCHIVE_REASONS)
            {
                found(Some(entry), HitCause::Archive);
            }
            Some(AttachmentHit {
                part_path: part.path.clone(),
                filename: part.filename.clone(),
                reason: reasons.join("; "),
                cause: cause?,
            })
        })
        .collect()
}

/// Adds `more` to `hits`; a part hit twice gets both reasons.
pub(super) fn merge_hits(hits: &mut Vec<AttachmentHit>, more: Vec<AttachmentHit>) {
    for hit in more {
        match hits.iter_mut().find(|h| h.part_path == hit.part_path) {
            Some(existing) => {
                existing.reason.push_str("; ");
                existing.reason.push_str(&hit.reason);
                existing.cause = existing.cause.max(hit.cause);
            }
            None => hits.push(hit),
        }
    }
}

/// Unicode controls that reorder text: `invoice\u{202E}fdp.exe` displays as `invoiceexe.pdf`.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The last path component, lower-cased, without the trailing dots and blanks that Windows
/// drops (`evil.exe.` and `evil.exe ` run as `evil.exe`).
fn normalize(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .to_lowercase()
}

/// `("invoice.pdf", "exe")` for `invoice.pdf.exe`.
fn split_extension(name: &str) -> Option<(&str, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some((stem, ext.trim()))
}

/// Why a file name is dangerous, if it is.
fn name_reason(name: &str, blocked: &[String]) -> Option<String> {
    if name.chars().any(is_direction_control) {
        return Some("file name hides its extension with a text-direction control".into());
    }
    let name = normalize(name);
    let (stem, ext) = split_extension(&name)?;
    if !blocked.iter().any(|b| b == ext) {
        return None;
    }
    let stem = stem.trim_end();
    match split_extension(stem) {
        Some((_, inner))
            if (1..=5).contains(&inner.len())
                && inner.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Some(format!(
                "blocked file type .{ext} behind a double extension .{inner}.{ext}"
            ))
        }
        _ => Some(format!("blocked file type .{ext}")),
    }
}

/// What executable content looks like (magic bytes), if it is executable.
fn sniff_executable(data: &[u8]) -> Option<&'static str> {
    const MACHO: [[u8; 4]; 4] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
    ];
    if data.starts_with(b"MZ") {
        Some("Windows executable")
    } else if data.starts_with(b"\x7fELF") {
        Some("ELF executable")
    } else if MACHO.iter().any(|m| data.starts_with(m)) {
        Some("Mach-O executable")
    } else if data.starts_with(b"L\0\0\0\x01\x14\x02\0") {
        Some("Windows shortcut")
    } else if let Some(rest) = data.strip_prefix(b"#!") {
        // `#!/bin/sh`, `#! /usr/bin/env python`
        let rest = rest.trim_ascii_start();
        rest.starts_with(b"/").then_some("script")
    } else {
        None
    }
}

/// Executable content whose name or declared type says it is something else.
fn disguised_executable(part: &Part<'_>) -> Option<String> {
    let kind = sniff_executable(part.contents)?;
    let ct = part.content_type.as_str();
    let type_is_executable = EXECUTABLE_TYPES.contains(&ct)
        || (kind == "script" && (ct.starts_with("text/x-") || ct == "text/x-sh"));
    let type_is_neutral = type_is_executable
        || ct.is_empty()
        || ct == "application/octet-stream"
        || (kind == "script" && ct == "text/plain");
    if part.filename.is_empty() {
        return (!type_is_executable).then(|| {
            let declared = if ct.is_empty() { "no type" } else { ct };
            format!("{kind} without a file name, declared as {declared}")
        });
    }
    let name = normalize(&part.filename);
    match split_extension(&name) {
        Some((_, ext)) if EXECUTABLE_EXTENSIONS.contains(&ext) => {
            (!type_is_neutral).then(|| format!("{kind} declared as {ct}"))
        }
        Some((_, ext)) => Some(format!("{kind} disguised as .{ext}")),
        None => Some(format!("{kind} disguised as a file without extension")),
    }
}

/// An Office document with a VBA project: an OOXML package holding `vbaProject.bin`, or
/// an OLE2 file with a `_VBA_PROJECT` stream. By content, so a renamed one is caught too.
fn office_macros(part: &Part<'_>, zip_entries: &[String]) -> Option<String> {
    if zip_entries.iter().any(|e| {
        e.rsplit('/')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("vbaProject.bin"))
    }) {
        return Some("Office document with VBA macros (vbaProject.bin)".into());
    }
    if !part.contents.starts_with(OLE2_MAGIC) {
        return None;
    }
    let vba_stream: Vec<u8> = "_VBA_PROJECT"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    part.contents
        .windows(vba_stream.len())
        .any(|w| w == vba_stream.as_slice())
        .then(|| "Office document with VBA macros (_VBA_PROJECT)".into())
}

/// A name inside an archive in a macro-enabled Office format (its content is not read).
fn macro_name_reason(name: &str) -> Option<String> {
    let name = normalize(name);
    let (_, ext) = split_extension(&name)?;
    MACRO_EXTENSIONS
        .contains(&ext)
        .then(|| format!("macro-enabled Office document .{ext}"))
}

fn is_zip(part: &Part<'_>) -> bool {
    part.contents.starts_with(b"PK\x03\x04")
        || part.contents.starts_with(b"PK\x05\x06")
        || normalize(&part.filename).ends_with(".zip")
        || part.content_type == "application/zip"
        || part.content_type == "application/x-zip-compressed"
}

/// The file names in a zip archive's central directory, read with the `zip` crate.
/// Reads no file data; an archive whose directory cannot be read yields no names (clamd,
/// when configured, still scans the part).
fn zip_names(data: &[u8]) -> Vec<String> {
    match zip::ZipArchive::new(std::io::Cursor::new(data)) {
        Ok(archive) => archive
            .file_names()
            .take(MAX_ZIP_ENTRIES)
            .filter_map(|name| name.ok().map(std::borrow::Cow::into_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A file name fit for a notice: no controls, no direction tricks, bounded.
fn printable(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_control() || is_direction_control(c) {
                '?'
            } else {
                c
            }
        })
        .take(200)
        .collect();
    if clean.is_empty() {
        "(no name)".into()
    } else {
        clean
    }
}

/// A byte range of the raw message to replace by a notice.
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    /// For the root part of a (nested) message: the byte ranges of its header fields
    /// that stay (all but the `Content-*` ones that described the removed body).
    root_headers: Option<Vec<(usize, usize)>>,
    notices: Vec<String>,
}

/// Replaces each hit part of `raw` with a short text/plain part naming the file and the
/// reason; every other byte stays as it was, and the result parses as MIME again. A hit
/// inside a message/rfc822 part that is itself transfer-encoded (its bytes are not in
/// `raw` as such) replaces that whole enclosing part. Paths that match no part are ignored.
pub fn strip_parts(raw: &[u8], hits: &[AttachmentHit]) -> Vec<u8> {
    if hits.is_empty() {
        return raw.to_vec();
    }
    let Some(msg) = super::parse(raw) else {
        return raw.to_vec();
    };
    let mut edits: Vec<Edit> = hits
        .iter()
        .filter_map(|hit| {
            let mut edit = locate(&msg, raw, &hit.part_path)?;
            edit.notices.push(notice(hit));
            Some(edit)
        })
        .collect();
    edits.sort_by_key(|e| (e.start, std::cmp::Reverse(e.end)));
    let mut merged: Vec<Edit> = Vec::with_capacity(edits.len());
    for edit in edits {
        match merged.last_mut() {
            // Inside (or the same as) the previous edit: one notice part lists both.
            Some(last) if edit.start < last.end => {
                for n in edit.notices {
                    if !last.notices.contains(&n) {
                        last.notices.push(n);
                    }
                }
            }
            _ => merged.push(edit),
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for edit in &merged {
        out.extend_from_slice(&raw[pos..edit.start]);
        replacement(raw, edit, &mut out);
        pos = edit.end;
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

fn notice(hit: &AttachmentHit) -> String {
    format!(
        "[teamgate] The attachment \"{}\" was removed: {}.",
        printable(&hit.filename),
        hit.reason
    )
}

/// Finds the bytes of the part at `path` in `raw`.
fn locate(msg: &Message<'_>, raw: &[u8], path: &[usize]) -> Option<Edit> {
    let mut current = msg;
    let mut enclosing: Option<Edit> = None;
    for (depth, &id) in path.iter().enumerate() {
        let part = current.parts.get(id)?;
        if depth + 1 == path.len() {
            return match enclosing {
                Some(edit) => Some(edit),
                None => edit_for(part, id, raw),
            };
        }
        let PartType::Message(inner) = &part.body else {
            return None;
        };
        // A nested message that mail-parser had to decode lives in its own buffer, and
        // its offsets point there: the whole encoded part is what `raw` holds.
        if enclosing.is_none() && !same_buffer(&inner.raw_message, raw) {
            enclosing = Some(edit_for(part, id, raw)?);
        }
        current = inner;
    }
    None
}

fn same_buffer(buffer: &[u8], raw: &[u8]) -> bool {
    buffer.as_ptr() == raw.as_ptr() && buffer.len() == raw.len()
}

fn edit_for(part: &MessagePart<'_>, id: usize, raw: &[u8]) -> Option<Edit> {
    let start = usize::try_from(part.offset_header).ok()?;
    let body = usize::try_from(part.offset_body).ok()?;
    let end = usize::try_from(part.offset_end).ok()?;
    if !(start <= body && body <= end && end <= raw.len()) {
        return None;
    }
    let root_headers = (id == 0).then(|| {
        part.headers
            .iter()
            .filter(|h| {
                !matches!(
                    h.name,
                    HeaderName::ContentType
                        | HeaderName::ContentTransferEncoding
                        | HeaderName::ContentDisposition
                )
            })
            .filter_map(|h| {
                let (from, to) = (
                    usize::try_from(h.offset_field).ok()?,
                    usize::try_from(h.offset_end).ok()?,
                );
                (start <= from && from <= to && to <= body).then_some((from, to))
            })
            .collect()
    });
    Some(Edit {
        start,
        end,
        root_headers,
        notices: Vec::new(),
    })
}

/// The notice part (built by mail-builder) in place of the removed bytes.
fn replacement(raw: &[u8], edit: &Edit, out: &mut Vec<u8>) {
    if let Some(fields) = &edit.root_headers {
        for &(from, to) in fields {
            out.extend_from_slice(&raw[from..to]);
        }
    }
    let mut lines = edit.notices.clone();
    lines.push(
        "The original message is kept in quarantine; an administrator can release it.".into(),
    );
    MimePart::new("text/plain", lines.join("\r\n"))
        .inline()
        .write_part(out);
    if edit.root_headers.is_some() {
        // A root body runs to the end of its message; a multipart body part ends before
        // the CRLF that belongs to the next boundary, which stays in place.
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn blocked() -> Vec<String> {
        ["exe", "js", "scr", "bat"].map(String::from).to_vec()
    }

    #[test]
    fn name_rules() {
        let b = blocked();
        assert_eq!(name_reason("report.pdf", &b), None);
        assert_eq!(name_reason("", &b), None);
        assert_eq!(name_reason("noext", &b), None);
        assert_eq!(
            name_reason("setup.EXE", &b).as_deref(),
            Some("blocked file type .exe")
        );
        assert_eq!(
            name_reason("invoice.pdf.exe", &b).as_deref(),
            Some("blocked file type .exe behind a double extension .pdf.exe")
        );
        assert_eq!(
            name_reason("invoice.pdf   .exe", &b).as_deref(),
            Some("blocked file type .exe behind a double extension .pdf.exe")
        );
        // Windows drops trailing dots and blanks.
        assert!(name_reason("evil.exe. . ", &b).is_some());
        assert!(name_reason("dir\\sub/evil.js", &b).is_some());
        assert!(name_reason("invoice\u{202E}fdp.txt", &b).is_some());
        assert_eq!(name_reason(".exe", &b), None);
    }

    fn part<'a>(name: &str, ct: &str, contents: &'a [u8]) -> Part<'a> {
        Part {
            path: vec![1],
            filename: name.into(),
            content_type: ct.into(),
            contents,
        }
    }

    #[test]
    fn executable_mismatch() {
        let pe = b"MZ\x90\0\x03\0\0\0";
        assert_eq!(
            disguised_executable(&part("invoice.pdf", "application/pdf", pe)).as_deref(),
            Some("Windows executable disguised as .pdf")
        );
        assert_eq!(
            disguised_executable(&part("tool.exe", "application/octet-stream", pe)),
            None
        );
        assert_eq!(
            disguised_executable(&part("tool.exe", "image/png", pe)).as_deref(),
            Some("Windows executable declared as image/png")
        );
        assert!(disguised_executable(&part("", "image/png", b"\x7fELF\x02")).is_some());
        assert_eq!(
            disguised_executable(&part("", "application/x-executable", b"\x7fELF\x02")),
            None
        );
        assert_eq!(
            disguised_executable(&part("run.sh", "text/plain", b"#!/bin/sh\necho")),
            None
        );
        assert!(disguised_executable(&part("notes.txt", "text/plain", b"#! /bin/sh\n")).is_some());
        assert_eq!(
            disguised_executable(&part("notes.txt", "text/plain", b"#!! hi")),
            None
        );
        assert_eq!(
            disguised_executable(&part("a.pdf", "application/pdf", b"%PDF-1.4")),
            None
        );
    }

    /// A zip archive with the given (stored, empty) file names.
    fn zip(names: &[&str]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in names {
            w.start_file(*name, stored).expect("start_file");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn zip_directory_names() {
        let z = zip(&["docs/readme.txt", "docs/payload.exe"]);
        assert_eq!(zip_names(&z), vec!["docs/readme.txt", "docs/payload.exe"]);
        let hits = check_names_and_types(
            &[part("files.zip", "application/zip", &z)],
            &blocked(),
            true,
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].reason,
            "archive contains docs/payload.exe: blocked file type .exe"
        );
        // Truncated, damaged, lying or empty archives never panic.
        for cut in 0..z.len() {
            let _ = zip_names(&z[..cut]);
            let mut bad = z.clone();
            bad[cut] ^= 0xff;
            let _ = zip_names(&bad);
        }
        assert!(zip_names(b"PK\x05\x06").is_empty());
        // A directory claiming 65535 entries is not believed.
        let mut lying = zip(&["a.txt"]);
        let n = lying.len();
        lying[n - 12..n - 10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(zip_names(&lying).len() <= 1);
        // The entry bound holds for an archive with more names than it.
        let many: Vec<String> = (0..MAX_ZIP_ENTRIES + 5)
            .map(|i| format!("f{i}.txt"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(zip_names(&zip(&many)).len(), MAX_ZIP_ENTRIES);
    }

    const NESTED: &[u8] = b"From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\npre\r\n\
--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n\
--i\r\nContent-Type: text/plain\r\n\r\ninner body\r\n\
--i\r\nContent-Type: application/pdf; name=\"inv.pdf.exe\"\r\nContent-Disposition: attachment; filename=\"inv.pdf.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAA=\r\n--i--\r\n\r\n\
--o\r\nContent-Type: application/pdf; name=ok.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--o--\r\n";

    #[test]
    fn nested_attachment_is_found_and_stripped() {
        let msg = MessageParser::default().parse(NESTED).unwrap();
        let parts = collect(&msg);
        let names: Vec<_> = parts
            .iter()
            .map(|p| (p.path.clone(), p.filename.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![(vec![2, 2], "inv.pdf.exe"), (vec![3], "ok.pdf")]
        );
        let hits = check_names_and_types(&parts, &blocked(), true);
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].reason,
            "blocked file type .exe behind a double extension .pdf.exe; \
             Windows executable declared as application/pdf"
        );

        let out = strip_parts(NESTED, &hits);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("TVqQAAMAAAA="), "{text}");
        assert!(text.contains("inner body"));
        assert!(text.ends_with("--o\r\nContent-Type: application/pdf; name=ok.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--o--\r\n"));
        let again = MessageParser::default().parse(&out[..]).unwrap();
        let parts = collect(&again);
        assert_eq!(parts.len(), 1, "{parts:?}");
        assert_eq!(parts[0].filename, "ok.pdf");
        let PartType::Message(inner) = &again.parts[2].body else {
            panic!("nested message lost")
        };
        let notice = inner.body_text(1).unwrap();
        assert!(notice.contains("\"inv.pdf.exe\" was removed"), "{notice}");
    }

    #[test]
    fn root_part_keeps_its_headers() {
        let raw = b"From: a@b.test\r\nSubject: tool\r\nContent-Type: application/octet-stream;\r\n name=\"a.exe\"\r\nContent-Transfer-Encoding: base64\r\nX-Other: kept\r\n\r\nTVo=\r\n";
        let hit = AttachmentHit {
            part_path: vec![0],
            filename: "a.exe".into(),
            reason: "blocked file type .exe".into(),
            cause: HitCause::BlockedName,
        };
        let out = strip_parts(raw, &[hit]);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with(
                "From: a@b.test\r\nSubject: tool\r\nX-Other: kept\r\nContent-Type: text/plain"
            ),
            "{text}"
        );
        let again = MessageParser::default().parse(&out[..]).unwrap();
        assert_eq!(again.subject(), Some("tool"));
        assert!(
            again
                .body_text(0)
                .unwrap()
                .contains("\"a.exe\" was removed: blocked file type .exe.")
        );
    }

    #[test]
    fn encoded_nested_message_is_replaced_whole() {
        use base64::Engine;
        let inner =
            b"Subject: inner\r\nContent-Type: application/octet-stream; name=x.exe\r\n\r\nMZ\r\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(inner);
        let raw = format!(
            "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b--\r\n"
        );
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let parts = collect(&msg);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].path, vec![2, 0]);
        let hits = check_names_and_types(&parts, &blocked(), true);
        let out = strip_parts(raw.as_bytes(), &hits);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(&encoded));
        assert!(text.starts_with("Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/plain"), "{text}");
        assert!(text.ends_with("\r\n--b--\r\n"));
    }

    #[test]
    fn stray_paths_and_garbage_are_harmless() {
        let hit = |path: Vec<usize>| AttachmentHit {
            part_path: path,
            filename: "x".into(),
            reason: "r".into(),
            cause: HitCause::BlockedName,
        };
        assert_eq!(
            strip_parts(NESTED, &[hit(vec![99]), hit(vec![1, 0]), hit(vec![])]),
            NESTED
        );
        assert_eq!(strip_parts(b"", &[hit(vec![0])]), b"".to_vec());
        assert_eq!(strip_parts(NESTED, &[]), NESTED);
    }

    #[test]
    fn long_non_ascii_notice_is_encoded_and_reads_back() {
        let name = "é=x ".repeat(30);
        let hit = AttachmentHit {
            part_path: vec![2],
            filename: name.clone(),
            reason: "blocked file type .exe".into(),
            cause: HitCause::BlockedName,
        };
        let out = strip_parts(NESTED, &[hit]);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.lines().all(|l| l.len() <= 78), "{text}");
        let msg = MessageParser::default().parse(&out).unwrap();
        let notice = msg
            .parts
            .iter()
            .filter_map(|p| p.text_contents())
            .find(|t| t.contains("was removed"))
            .expect("notice part");
        assert!(notice.contains(&name), "{notice}");
        assert!(notice.contains("kept in quarantine"), "{notice}");
    }

    #[test]
    fn office_macros_by_content_and_by_name_inside_archives() {
        let xlsm = zip(&[
            "[Content_Types].xml",
            "xl/workbook.xml",
            "xl/vbaProject.bin",
        ]);
        let xlsx = zip(&["[Content_Types].xml", "xl/workbook.xml"]);
        let mut ole2 = OLE2_MAGIC.to_vec();
        ole2.extend("_VBA_PROJECT".encode_utf16().flat_map(u16::to_le_bytes));
        let inner = zip(&["macro.xlsm"]);
        let parts = [
            part("report.xlsm", "application/octet-stream", &xlsm),
            // The extension lies: the content decides.
            part("photo.jpg", "image/jpeg", &xlsm),
            part("old.xls", "application/vnd.ms-excel", &ole2),
            part("bundle.zip", "application/zip", &inner),
            part("table.xlsx", "application/octet-stream", &xlsx),
            part("plain.doc", "application/msword", OLE2_MAGIC),
        ];
        let hits = check_names_and_types(&parts, &blocked(), true);
        let hit_names: Vec<&str> = hits.iter().map(|h| h.filename.as_str()).collect();
        assert_eq!(
            hit_names,
            ["report.xlsm", "photo.jpg", "old.xls", "bundle.zip"],
            "{hits:?}"
        );
        assert_eq!(hits[0].cause, HitCause::OfficeMacro);
        assert_eq!(hits[3].cause, HitCause::Archive);
        assert!(
            hits[3]
                .reason
                .contains("macro-enabled Office document .xlsm"),
            "{hits:?}"
        );
        // `block_office_macros = false`: none of them.
        assert!(check_names_and_types(&parts, &blocked(), false).is_empty());
    }
}
