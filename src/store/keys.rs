//! Every on-disk byte layout of the sled side of the store: tree names, key formats and
//! the small fixed-width values. Nothing else in the crate builds a key by hand.
//!
//! Conventions:
//! - ids are big-endian `u64` so range and prefix scans come out in numeric order;
//! - strings inside composite keys carry a 4-byte big-endian length prefix, so no value
//!   can be mistaken for a prefix of another (`"ab" + "c"` never equals `"a" + "bc"`);
//! - Message-IDs are compared without angle brackets and ASCII-lower-cased, emails
//!   lower-cased, as in every index below.
//!
//! Record values (JSON) are described in `records.rs`; the segment files in `blobs.rs`.
//!
//! Trees reserved for later issues (not created yet; names and keys decided so they can
//! be added without touching the trees below):
//! - `flags`: agent (len-prefixed) ++ message key → per-agent flag bits (`\Seen`, `\Flagged`).
//! - `uid_spaces`: space id (len-prefixed view/audience name) → UIDVALIDITY, UIDNEXT.
//! - `uid_map`: space ++ uid (u32 BE) → message key; `uid_of`: space ++ message key → uid.
//! - `queue`: next attempt (i64 BE) ++ queue id (u64 BE) → outbound queue entry.
//! - `quarantine`, `junk`: id (u64 BE) → record.

use super::model::{ConversationId, MessageKey};

/// Version of the layout described in this file. Stored in `meta`; a newer one on disk
/// makes `Store::open` refuse to start.
pub const SCHEMA_VERSION: u32 = 1;

/// The sled trees of schema 1. The discriminant is the tree's index in the store's tree
/// array, so a transaction over all trees can address them by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeId {
    /// Small named values: schema version, counters. Keys in [`meta`].
    Meta,
    /// [`message`] key → `MessageRecord` (body location + parsed summary).
    Messages,
    /// [`conversation`] key → `ConversationRecord`.
    Conversations,
    /// [`conv_message`] → empty: the messages of a conversation in arrival order.
    ConvMessages,
    /// [`by_message_id`] → [`msgid_value`]: dedupe and In-Reply-To lookups.
    ByMessageId,
    /// [`referenced_by`] → empty: conversations whose messages name a Message-ID.
    ReferencedBy,
    /// [`by_thread_index`] → conversation id (u64 BE), the latest one written.
    ByThreadIndex,
    /// [`by_subject`] → [`subject_value`], the latest one written.
    BySubject,
    /// [`contact`] key → `ContactRecord`.
    Contacts,
    /// [`contact_conv`] → empty: a contact's conversations, ordered by id.
    ContactConvs,
    /// [`timeline`] → `TimelineRecord`, ordered by a per-contact sequence number.
    Timeline,
}

impl TreeId {
    /// Every tree, in discriminant order.
    pub const ALL: [TreeId; 11] = [
        TreeId::Meta,
        TreeId::Messages,
        TreeId::Conversations,
        TreeId::ConvMessages,
        TreeId::ByMessageId,
        TreeId::ReferencedBy,
        TreeId::ByThreadIndex,
        TreeId::BySubject,
        TreeId::Contacts,
        TreeId::ContactConvs,
        TreeId::Timeline,
    ];

    /// The sled tree name (part of the on-disk format).
    pub fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Messages => "messages",
            TreeId::Conversations => "conversations",
            TreeId::ConvMessages => "conv_messages",
            TreeId::ByMessageId => "by_message_id",
            TreeId::ReferencedBy => "referenced_by",
            TreeId::ByThreadIndex => "by_thread_index",
            TreeId::BySubject => "by_subject",
            TreeId::Contacts => "contacts",
            TreeId::ContactConvs => "contact_convs",
            TreeId::Timeline => "timeline",
        }
    }

    /// Position in `ALL` (and in the store's tree array).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Keys of the `meta` tree.
pub mod meta {
    /// Value: `u32` BE, the schema version the data was written with.
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    /// Value: `u64` BE, the last conversation number handed out (0 = none yet).
    pub const LAST_CONVERSATION: &[u8] = b"last_conversation";
}

/// Message-ID as indexed: no surrounding whitespace or angle brackets, ASCII lower case.
pub fn normalize_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_ascii_lowercase()
}

/// Email as indexed (contacts, participants, customer): trimmed, lower case.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    // Header values never reach 4 GiB; saturate rather than panic.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn with_strs(parts: &[&str], extra: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum::<usize>() + extra);
    for p in parts {
        push_str(&mut buf, p);
    }
    buf
}

/// `messages` key.
pub fn message(key: MessageKey) -> [u8; 8] {
    key.0.to_be_bytes()
}

/// `conversations` key.
pub fn conversation(id: ConversationId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// `conv_messages` key: conversation ++ message key.
pub fn conv_message(conv: ConversationId, msg: MessageKey) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&conv.0.to_be_bytes());
    k[8..].copy_from_slice(&msg.0.to_be_bytes());
    k
}

/// Prefix of every `conv_messages` key of one conversation.
pub fn conv_messages_prefix(conv: ConversationId) -> [u8; 8] {
    conv.0.to_be_bytes()
}

/// `by_message_id` key: inbox ++ normalised Message-ID.
pub fn by_message_id(inbox: &str, message_id: &str) -> Vec<u8> {
    with_strs(&[inbox, &normalize_message_id(message_id)], 0)
}

/// `by_message_id` value: conversation ++ message key.
pub fn msgid_value(conv: ConversationId, msg: MessageKey) -> [u8; 16] {
    conv_message(conv, msg)
}

/// Prefix of the `referenced_by` keys naming one Message-ID in one inbox.
pub fn referenced_by_prefix(inbox: &str, message_id: &str) -> Vec<u8> {
    with_strs(&[inbox, &normalize_message_id(message_id)], 8)
}

/// `referenced_by` key: inbox ++ referenced Message-ID ++ conversation.
pub fn referenced_by(inbox: &str, message_id: &str, conv: ConversationId) -> Vec<u8> {
    let mut k = referenced_by_prefix(inbox, message_id);
    k.extend_from_slice(&conv.0.to_be_bytes());
    k
}

/// `by_thread_index` key: inbox ++ the 22-byte Thread-Index prefix.
pub fn by_thread_index(inbox: &str, key: &[u8]) -> Vec<u8> {
    let mut k = with_strs(&[inbox], key.len());
    k.extend_from_slice(key);
    k
}

/// `by_subject` key: inbox ++ normalised subject ++ customer email.
pub fn by_subject(inbox: &str, subject_base: &str, contact: &str) -> Vec<u8> {
    with_strs(&[inbox, subject_base, &normalize_email(contact)], 0)
}

/// `by_subject` value: conversation ++ unix time of its last message (i64 BE).
pub fn subject_value(conv: ConversationId, at: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&conv.0.to_be_bytes());
    v[8..].copy_from_slice(&at.to_be_bytes());
    v
}

/// `contacts` key: the normalised email.
pub fn contact(email: &str) -> Vec<u8> {
    normalize_email(email).into_bytes()
}

/// Prefix of one contact's `contact_convs` keys.
pub fn contact_convs_prefix(email: &str) -> Vec<u8> {
    with_strs(&[&normalize_email(email)], 8)
}

/// `contact_convs` key: email ++ conversation.
pub fn contact_conv(email: &str, conv: ConversationId) -> Vec<u8> {
    let mut k = contact_convs_prefix(email);
    k.extend_from_slice(&conv.0.to_be_bytes());
    k
}

/// Prefix of one contact's `timeline` keys.
pub fn timeline_prefix(email: &str) -> Vec<u8> {
    with_strs(&[&normalize_email(email)], 8)
}

/// `timeline` key: email ++ per-contact sequence number.
pub fn timeline(email: &str, seq: u64) -> Vec<u8> {
    let mut k = timeline_prefix(email);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A big-endian u64 at `bytes[at..at + 8]`, if there are enough bytes.
pub fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// The last 8 bytes of a key as a big-endian u64 (the id suffix of composite keys).
pub fn suffix_u64(key: &[u8]) -> Option<u64> {
    be_u64(key, key.len().checked_sub(8)?)
}

/// A big-endian u32 value.
pub fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// A key for error messages: the text when printable ASCII, else hex.
pub fn display(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        key.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_ids_match_their_index() {
        for (i, t) in TreeId::ALL.iter().enumerate() {
            assert_eq!(t.index(), i, "{}", t.name());
        }
    }

    #[test]
    fn ids_sort_numerically() {
        assert!(conversation(ConversationId(2)) < conversation(ConversationId(256)));
        assert!(
            conv_message(ConversationId(1), MessageKey(300))
                < conv_message(ConversationId(2), MessageKey(1))
        );
        assert!(timeline("a@x", 9) < timeline("a@x", 10));
    }

    #[test]
    fn length_prefix_keeps_parts_apart() {
        assert_ne!(by_message_id("ab", "c@d"), by_message_id("a", "bc@d"));
        assert!(!contact_conv("a@xb", ConversationId(1)).starts_with(&contact_convs_prefix("a@x")));
    }

    #[test]
    fn message_ids_and_emails_are_normalised() {
        assert_eq!(
            by_message_id("s", "<AbC@Host>"),
            by_message_id("s", "abc@host")
        );
        assert_eq!(contact(" Bob@Example.COM "), b"bob@example.com".to_vec());
        assert_eq!(
            suffix_u64(&referenced_by("s", "x@y", ConversationId(7))),
            Some(7)
        );
        assert_eq!(be_u64(&[1, 2], 0), None);
    }
}
