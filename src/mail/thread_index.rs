//! Outlook's `Thread-Index` header (MS-OXOMSG 2.2.1.3): base64 of a 22-byte header block
//! (0x01, the 40 high bits of a FILETIME, a GUID) and 5-byte child blocks. The header
//! block is the thread key that threading matches on; a reply extends the index by one
//! child block.

use base64::Engine as _;

/// Length of the header block, the thread key.
pub const THREAD_KEY_LEN: usize = 22;

/// Most child blocks kept in a Thread-Index (keeps the header line short).
const MAX_THREAD_CHILDREN: usize = 100;
/// Seconds between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_OFFSET: i64 = 11_644_473_600;
/// Base64 characters decoded at most: 100 child blocks fit in well under this.
const MAX_ENCODED_LEN: usize = 4096;

/// The decoded bytes of a `Thread-Index` header value (blanks, e.g. from folding,
/// ignored); `None` unless it is valid base64.
pub fn decode(header_value: &str) -> Option<Vec<u8>> {
    let compact: String = header_value
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(MAX_ENCODED_LEN)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
}

/// The thread key of a `Thread-Index` header value: its first 22 decoded bytes.
pub fn thread_key(header_value: &str) -> Option<Vec<u8>> {
    decode(header_value)?
        .get(..THREAD_KEY_LEN)
        .map(<[u8]>::to_vec)
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
pub fn header_unix(bytes: &[u8]) -> Option<i64> {
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
pub fn extend(existing: Option<&[u8]>, now_unix: i64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_index_round_trip() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let start = b64(&extend(None, 1_700_000_000));
        assert_eq!(start.len(), 22);
        assert_eq!(start[0], 1);
        assert_eq!(
            header_unix(&start).map(|t| (t - 1_700_000_000).abs() <= 2),
            Some(true)
        );
        let one = b64(&extend(Some(&start), 1_700_000_000 + 3600));
        assert_eq!((one.len(), &one[..22]), (27, &start[..]));
        // Delta code 0, one hour = 36e9 100ns units >> 18.
        let word = u32::from_be_bytes(one[22..26].try_into().unwrap());
        assert_eq!(word >> 31, 0);
        // (Both times keep only their 40 high bits, hence ±1 in the 2^24 unit.)
        let got = u64::from(word) << 18 >> 24;
        assert!(got.abs_diff(36_000_000_000u64 >> 24) <= 1, "{got}");
        let two = b64(&extend(Some(&one), 1_700_000_000 + 7200));
        assert_eq!((two.len(), &two[..27]), (32, &one[..]));
        // Years later: delta code 1.
        let far = b64(&extend(Some(&start), 1_700_000_000 + 5 * 365 * 86400));
        assert_eq!(far[22] >> 7, 1);
        // Garbage: short → new; ragged tail dropped.
        assert_eq!(b64(&extend(Some(&[1, 2, 3]), 0)).len(), 22);
        let ragged = [&two[..], &[9, 9]].concat();
        assert_eq!(b64(&extend(Some(&ragged), 1_700_000_000)).len(), 37);
        // Capped.
        let big = [&start[..], &[0u8; 5 * MAX_THREAD_CHILDREN + 3][..]].concat();
        assert_eq!(
            b64(&extend(Some(&big), 1)).len(),
            22 + 5 * MAX_THREAD_CHILDREN
        );
        assert_eq!(b64(&extend(None, i64::MIN)).len(), 22);
        assert_eq!(b64(&extend(Some(&start), i64::MAX)).len(), 27);
    }
}
