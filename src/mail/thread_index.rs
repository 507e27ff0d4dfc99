//! Outlook's `Thread-Index` header (MS-OXOMSG 2.2.1.3): base64 of a 22-byte header block
//! (0x01, the 40 high bits of a FILETIME, a GUID) and 5-byte child blocks. The header
//! block is the thread key that threading matches on.

use base64::Engine as _;

/// Length of the header block, the thread key.
pub const THREAD_KEY_LEN: usize = 22;

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
