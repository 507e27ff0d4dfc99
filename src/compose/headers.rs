//! The header plan of an outgoing reply: the `[#n]` subject tag (our own tags found,
//! one kept or put after the reply/forward prefixes), the Outlook Thread-Index (header
//! time decoded, index extended by one child block), `X-Loop`, and
//! `In-Reply-To`/`References` with cleaned message ids. The tag and Thread-Index helpers
//! stay together and need only `threading`, so they can move to a bottom module as one.

use base64::Engine as _;
use mail_builder::headers::Header as _;
use mail_parser::Message;

use crate::threading::{subject_prefixes, subject_tag};

use super::mime_edit::{
    Edit, field_ranges, header_insert_point, set_field, simple_field, with_eol,
};
use super::placeholders::{Budget, expand_inner, one_line};
use super::{ComposeError, Context, HeaderPlan};

/// Most child blocks kept in a Thread-Index (keeps the header line short).
const MAX_THREAD_CHILDREN: usize = 100;
/// Outlook thread key length.
const THREAD_KEY_LEN: usize = 22;
/// Seconds between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_OFFSET: i64 = 11_644_473_600;

/// Byte ranges of our `[#n]` tags in `subject` (each candidate is checked on its own
/// short slice, so the work stays linear).
fn own_tags(subject: &str) -> Vec<(usize, usize)> {
    subject
        .match_indices("[#")
        .filter_map(|(i, _)| {
            let tail = subject.get(i..)?;
            let close = tail.char_indices().take(24).find(|(_, c)| *c == ']')?.0;
            let candidate = tail.get(..=close)?;
            let n = subject_tag(candidate)?;
            (candidate == format!("[#{n}]")).then_some((i, i + candidate.len()))
        })
        .collect()
}

/// The subject with exactly one `[#n]`, right after the reply/forward prefixes.
pub(crate) fn tag_subject(subject: &str, n: u64) -> String {
    let tags = own_tags(subject);
    let tag = format!("[#{n}]");
    if tags.len() == 1 && subject_tag(subject) == Some(n) {
        return subject.to_string();
    }
    // Remove every own tag (and one blank after it).
    let mut s = String::with_capacity(subject.len() + tag.len() + 1);
    let mut cursor = 0;
    for (a, b) in tags {
        if a < cursor {
            continue;
        }
        s.push_str(subject.get(cursor..a).unwrap_or_default());
        cursor = b;
        if subject.get(cursor..).is_some_and(|r| r.starts_with(' ')) {
            cursor += 1;
        }
    }
    s.push_str(subject.get(cursor..).unwrap_or_default());
    // Skip reply/forward prefixes, as threading classifies them.
    let mut pos = 0;
    for _ in 0..32 {
        let rest = s.get(pos..).unwrap_or_default();
        let Some((c, colon)) = rest
            .char_indices()
            .take(40)
            .find(|(_, ch)| *ch == ':' || *ch == '：')
        else {
            break;
        };
        let piece = rest.get(..c + colon.len_utf8()).unwrap_or_default();
        let p = subject_prefixes(piece);
        if !(p.reply || p.forward) || piece.trim().is_empty() {
            break;
        }
        pos += piece.len();
    }
    let (head, tail) = (
        s.get(..pos).unwrap_or_default().trim_end(),
        s.get(pos..).unwrap_or_default().trim(),
    );
    let mut out = String::new();
    if !head.is_empty() {
        out.push_str(head);
        out.push(' ');
    }
    out.push_str(&tag);
    if !tail.is_empty() {
        out.push(' ');
        out.push_str(tail);
    }
    out
}

/// A message id without brackets, blanks or controls.
fn clean_id(id: &str) -> String {
    id.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>')
        .take(250)
        .collect()
}

fn filetime_40(unix: i64) -> u64 {
    let ft = (i128::from(unix) + i128::from(FILETIME_UNIX_OFFSET)) * 10_000_000;
    let ft = u64::try_from(ft.max(0)).unwrap_or(u64::MAX);
    ft >> 24
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Unix time of a Thread-Index header block.
fn thread_index_unix(bytes: &[u8]) -> Option<i64> {
    let t = bytes.get(1..6)?;
    let ft = t.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) << 24;
    i64::try_from(ft / 10_000_000)
        .ok()
        .map(|s| s - FILETIME_UNIX_OFFSET)
}

/// Outlook Thread-Index (MS-OXOMSG 2.2.1.3): base64 of a 22-byte header block (0x01,
/// the 40 high bits of a FILETIME, a GUID) and 5-byte child blocks. Given the
/// conversation's existing bytes, returns them with one child block appended for
/// `now_unix` (delta to the header time: code 0 with bits 18–48 when it fits, else code
/// 1 with bits 23–53; then a byte derived from the input in place of a random one).
/// Without usable bytes (shorter than 22), starts a new index whose GUID is derived from
/// `now_unix` (deterministic: callers should keep the conversation's key). Trailing bytes
/// that are not a whole child block are dropped; at 100 child blocks nothing is appended.
pub fn extend_thread_index(existing: Option<&[u8]>, now_unix: i64) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let Some(ex) = existing.filter(|e| e.len() >= THREAD_KEY_LEN) else {
        let mut out = Vec::with_capacity(THREAD_KEY_LEN);
        out.push(1u8);
        out.extend_from_slice(&filetime_40(now_unix).to_be_bytes()[3..]);
        let a = mix64(now_unix as u64);
        let b = mix64(a ^ 0x5443_4741_5445);
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&b.to_be_bytes());
        return b64(&out);
    };
    let children = ((ex.len() - THREAD_KEY_LEN) / 5).min(MAX_THREAD_CHILDREN);
    let mut out = ex
        .get(..THREAD_KEY_LEN + 5 * children)
        .unwrap_or(ex)
        .to_vec();
    if children >= MAX_THREAD_CHILDREN {
        return b64(&out);
    }
    let head_ft = ex
        .get(1..6)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        << 24;
    let now_ft = filetime_40(now_unix) << 24;
    let delta = now_ft.saturating_sub(head_ft);
    let word: u32 = if delta >> 49 == 0 {
        ((delta >> 18) & 0x7FFF_FFFF) as u32
    } else {
        0x8000_0000 | ((delta >> 23) & 0x7FFF_FFFF) as u32
    };
    let seed = out
        .iter()
        .fold(now_unix as u64, |acc, &b| mix64(acc ^ u64::from(b)));
    out.extend_from_slice(&word.to_be_bytes());
    out.push((seed & 0xFF) as u8);
    b64(&out)
}

pub(super) fn plan_edits(
    raw: &[u8],
    msg: &Message<'_>,
    ctx: &Context<'_>,
    plan: &HeaderPlan<'_>,
    eol: &str,
    budget: &mut Budget,
    edits: &mut Vec<Edit>,
) -> Result<(), ComposeError> {
    let root = msg
        .parts
        .first()
        .ok_or_else(|| ComposeError::Unparseable("no parts".into()))?;
    let (insert_at, _) = header_insert_point(raw, root);
    let insert = |bytes: Vec<u8>, edits: &mut Vec<Edit>| {
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes,
        });
    };

    // Subject.
    let old = msg.subject().unwrap_or_default();
    let mut subject = one_line(&expand_inner(old, ctx, false, budget, None)?);
    if let Some(n) = plan.subject_tag {
        subject = tag_subject(&subject, n);
    }
    if subject != old {
        let mut f = b"Subject: ".to_vec();
        mail_builder::headers::text::Text::new(subject.as_str()).write_header(&mut f, 9);
        let f = with_eol(f, eol);
        if field_ranges(root, "Subject").is_empty() {
            insert(f, edits);
        } else {
            set_field(root, "Subject", Some(f), insert_at, edits);
        }
    }

    // Thread-Index.
    if let Some(key) = plan.thread_index.filter(|k| k.len() >= THREAD_KEY_LEN) {
        let key = &key[..THREAD_KEY_LEN];
        let client = msg
            .header_raw("Thread-Index")
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_whitespace())
                    .take(4096)
                    .collect::<String>()
            })
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        if client.as_deref().and_then(|c| c.get(..THREAD_KEY_LEN)) != Some(key) {
            let now = msg
                .date()
                .map(|d| d.to_timestamp())
                .or_else(|| thread_index_unix(key))
                .unwrap_or(0);
            let f = simple_field("Thread-Index", &extend_thread_index(Some(key), now), eol);
            if field_ranges(root, "Thread-Index").is_empty() {
                insert(f, edits);
            } else {
                set_field(root, "Thread-Index", Some(f), insert_at, edits);
            }
        }
    }

    // X-Loop.
    let x_loop = one_line(plan.x_loop).trim().to_string();
    if !x_loop.is_empty() {
        let present = root.headers.iter().any(|h| {
            h.name.as_str().eq_ignore_ascii_case("X-Loop")
                && h.value
                    .as_text()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(&x_loop))
        });
        if !present {
            insert(simple_field("X-Loop", &x_loop, eol), edits);
        }
    }

    // In-Reply-To / References.
    if let Some((irt, refs)) = &plan.references {
        let has = !field_ranges(root, "In-Reply-To").is_empty()
            || !field_ranges(root, "References").is_empty();
        let irt = clean_id(irt);
        if !has && !irt.is_empty() {
            insert(simple_field("In-Reply-To", &format!("<{irt}>"), eol), edits);
            let mut ids: Vec<String> = refs
                .iter()
                .map(|r| clean_id(r))
                .filter(|r| !r.is_empty())
                .collect();
            if !ids.contains(&irt) {
                ids.push(irt);
            }
            let skip = ids.len().saturating_sub(50);
            let mut line = String::from("References:");
            let mut col = line.len();
            for id in ids.iter().skip(skip) {
                let w = id.len() + 3;
                if col + w > 76 && col > "References:".len() {
                    line.push_str(eol);
                    col = 0;
                }
                line.push_str(" <");
                line.push_str(id);
                line.push('>');
                col += w;
            }
            line.push_str(eol);
            insert(line.into_bytes(), edits);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tagging() {
        for (s, want) in [
            ("Re: Printer", "Re: [#12] Printer"),
            ("Printer", "[#12] Printer"),
            ("RE: AW: Fwd: Printer", "RE: AW: Fwd: [#12] Printer"),
            ("Re: [#12] Printer", "Re: [#12] Printer"),
            ("Printer [#12]", "Printer [#12]"),
            ("Re: [#5] Printer", "Re: [#12] Printer"),
            ("Invoice: 42", "[#12] Invoice: 42"),
            ("", "[#12]"),
            ("Re:", "Re: [#12]"),
        ] {
            assert_eq!(tag_subject(s, 12), want, "{s}");
        }
    }

    #[test]
    fn thread_index_round_trip() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let start = b64(&extend_thread_index(None, 1_700_000_000));
        assert_eq!(start.len(), 22);
        assert_eq!(start[0], 1);
        assert_eq!(
            thread_index_unix(&start).map(|t| (t - 1_700_000_000).abs() <= 2),
            Some(true)
        );
        let one = b64(&extend_thread_index(Some(&start), 1_700_000_000 + 3600));
        assert_eq!((one.len(), &one[..22]), (27, &start[..]));
        // Delta code 0, one hour = 36e9 100ns units >> 18.
        let word = u32::from_be_bytes(one[22..26].try_into().unwrap());
        assert_eq!(word >> 31, 0);
        // (Both times keep only their 40 high bits, hence ±1 in the 2^24 unit.)
        let got = u64::from(word) << 18 >> 24;
        assert!(got.abs_diff(36_000_000_000u64 >> 24) <= 1, "{got}");
        let two = b64(&extend_thread_index(Some(&one), 1_700_000_000 + 7200));
        assert_eq!((two.len(), &two[..27]), (32, &one[..]));
        // Years later: delta code 1.
        let far = b64(&extend_thread_index(
            Some(&start),
            1_700_000_000 + 5 * 365 * 86400,
        ));
        assert_eq!(far[22] >> 7, 1);
        // Garbage: short → new; ragged tail dropped.
        assert_eq!(b64(&extend_thread_index(Some(&[1, 2, 3]), 0)).len(), 22);
        let ragged = [&two[..], &[9, 9]].concat();
        assert_eq!(
            b64(&extend_thread_index(Some(&ragged), 1_700_000_000)).len(),
            37
        );
        // Capped.
        let big = [&start[..], &[0u8; 5 * MAX_THREAD_CHILDREN + 3][..]].concat();
        assert_eq!(
            b64(&extend_thread_index(Some(&big), 1)).len(),
            22 + 5 * MAX_THREAD_CHILDREN
        );
        assert_eq!(b64(&extend_thread_index(None, i64::MIN)).len(), 22);
        assert_eq!(b64(&extend_thread_index(Some(&start), i64::MAX)).len(), 27);
    }
}
