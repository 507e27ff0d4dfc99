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
//! IMAP mailboxes (GUIDE §0b) use `uid_spaces` (name → numeric space + UIDVALIDITY,
//! UIDNEXT), `uid_map` (space ++ uid → entry), `flags` (per agent) and `shared_flags`.
//! A space is addressed by a number so a folder rename moves one key, not its whole map.
//! `uid_of` (space ++ message → uid), reserved earlier, is not created: a sync reads the
//! space's whole `uid_map` anyway, and nothing else needs the reverse lookup yet.
//!
//! The outbound queue is two trees: `queue` (queue id → entry, for listing and lookups
//! by id) and `queue_due` (next attempt ++ queue id → empty, so the worker finds what is
//! due with one ordered range scan).
//!
//! Junk (SPEC §7) is three trees: `junk` (junk id → `JunkRecord`), `junk_by_message`
//! (message key ++ junk id → empty: IMAP maps a `Junk` view entry back to its record) and
//! `junk_by_message_id` (inbox ++ Message-ID → junk id: the same spam arriving again for
//! the same inbox is kept once). A junk message is an ordinary `messages` record that no
//! conversation names (or, after "move to Junk", one its junk-marked conversation names).
//!
//! Quarantine (SPEC §7) is two trees: `quarantine` (quarantine id → `QuarantineRecord`)
//! and `quarantine_by_message` (stripped message key ++ quarantine id → empty: a release
//! finds every hit of the same stripped copy). The original bytes are a `messages` record
//! in no conversation; a release adds a new message key pointing at the same bytes.

use super::model::{ConversationId, Entry, FolderId, JunkId, MessageKey, QuarantineId, TeamView};
use crate::mail::{address, message_id};

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
    /// [`message_conv`] → empty: the conversations holding a message (reverse of
    /// `conv_messages`; built from it on open when missing, see [`meta::MESSAGE_CONVS_BUILT`]).
    MessageConvs,
    /// [`agent_flags`] → one byte of [`AGENT_SEEN`] | [`AGENT_FLAGGED`] | the
    /// [`AGENT_KEYWORDS`] bits; absent = none.
    Flags,
    /// [`shared_flags`] → `SharedFlagsRecord`; absent = none.
    SharedFlags,
    /// [`view_space`] / [`folder_space`] → `UidSpaceRecord`.
    UidSpaces,
    /// [`uid_map`] → [`entry_value`]: a space's messages by uid.
    UidMap,
    /// [`queue`] key → `QueueRecord` (store/queue.rs): one outgoing message.
    Queue,
    /// [`queue_due`] → empty: every queue entry by its next attempt.
    QueueDue,
    /// [`junk`] key → `JunkRecord`.
    Junk,
    /// [`junk_by_message`] → empty: the junk records of a message.
    JunkByMessage,
    /// [`junk_by_message_id`] → junk id (u64 BE): dedupe of junk per inbox.
    JunkByMessageId,
    /// [`quarantine`] key → `QuarantineRecord`.
    Quarantine,
    /// [`quarantine_by_message`] → empty: the quarantine records of a stripped copy.
    QuarantineByMessage,
    /// [`subscription`] → one byte, 1 subscribed / 0 unsubscribed: an agent's IMAP
    /// SUBSCRIBE / UNSUBSCRIBE of a mailbox name (store/subscriptions.rs).
    Subscriptions,
    /// Mod-sequences (RFC 7162, `store/modseq.rs`): [`modseq_agent`], [`modseq_shared`],
    /// [`modseq_entry`] → u64 BE; [`modseq_space`] → [`space_modseq_value`];
    /// [`expunged`] → empty (the expunge log).
    Modseq,
    /// [`learn`] key → `LearnRecord`: messages waiting to be taught to the spam filter.
    LearnQueue,
}

impl TreeId {
    /// Every tree, in discriminant order.
    pub const ALL: [TreeId; 26] = [
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
        TreeId::MessageConvs,
        TreeId::Flags,
        TreeId::SharedFlags,
        TreeId::UidSpaces,
        TreeId::UidMap,
        TreeId::Queue,
        TreeId::QueueDue,
        TreeId::Junk,
        TreeId::JunkByMessage,
        TreeId::JunkByMessageId,
        TreeId::Quarantine,
        TreeId::QuarantineByMessage,
        TreeId::Subscriptions,
        TreeId::Modseq,
        TreeId::LearnQueue,
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
            TreeId::MessageConvs => "message_convs",
            TreeId::Flags => "flags",
            TreeId::SharedFlags => "shared_flags",
            TreeId::UidSpaces => "uid_spaces",
            TreeId::UidMap => "uid_map",
            TreeId::Queue => "queue",
            TreeId::QueueDue => "queue_due",
            TreeId::Junk => "junk",
            TreeId::JunkByMessage => "junk_by_message",
            TreeId::JunkByMessageId => "junk_by_message_id",
            TreeId::Quarantine => "quarantine",
            TreeId::QuarantineByMessage => "quarantine_by_message",
            TreeId::Subscriptions => "subscriptions",
            TreeId::Modseq => "modseq",
            TreeId::LearnQueue => "learn_queue",
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
    /// Value: `u64` BE, the store-wide change counter (mailbox contents or flags); written
    /// in the transaction of every change, so it never goes back (usable as a MODSEQ).
    pub const CHANGE_COUNTER: &[u8] = b"change_counter";
    /// Value: `u64` BE, bumped by every change that can alter which conversations or
    /// messages a team view holds (ingest, conversation actions). A view space synced at
    /// the current generation is up to date.
    pub const VIEW_GENERATION: &[u8] = b"view_generation";
    /// Value: `u64` BE, the last numeric UID space id handed out (0 = none yet).
    pub const LAST_UID_SPACE: &[u8] = b"last_uid_space";
    /// Value: `u32` BE, the last UIDVALIDITY handed out (store-wide, so a space created
    /// again under an old name never repeats one).
    pub const LAST_UID_VALIDITY: &[u8] = b"last_uid_validity";
    /// Present (empty value) once `message_convs` holds every `conv_messages` entry.
    pub const MESSAGE_CONVS_BUILT: &[u8] = b"message_convs_built";
    /// Value: `u64` BE, the last outbound queue id handed out (0 = none yet).
    pub const LAST_QUEUE_ID: &[u8] = b"last_queue_id";
    /// Value: `u64` BE, the last junk id handed out (0 = none yet).
    pub const LAST_JUNK_ID: &[u8] = b"last_junk_id";
    /// Present (empty value) once junk records of data written before the conversation
    /// `junk` mark are made consistent with it (`junk::migrate_trashed_junk`).
    pub const JUNK_MARK_BUILT: &[u8] = b"junk_mark_built";
    /// Value: `u64` BE, the last quarantine id handed out (0 = none yet).
    pub const LAST_QUARANTINE_ID: &[u8] = b"last_quarantine_id";
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
    with_strs(&[inbox, &message_id::index_form(message_id)], 0)
}

/// `by_message_id` value: conversation ++ message key.
pub fn msgid_value(conv: ConversationId, msg: MessageKey) -> [u8; 16] {
    conv_message(conv, msg)
}

/// Prefix of the `referenced_by` keys naming one Message-ID in one inbox.
pub fn referenced_by_prefix(inbox: &str, message_id: &str) -> Vec<u8> {
    with_strs(&[inbox, &message_id::index_form(message_id)], 8)
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

/// Prefix of every `by_thread_index` and `by_subject` key of one inbox (both start with
/// the length-prefixed inbox): a transfer re-keys what follows it under the new inbox.
pub fn inbox_prefix(inbox: &str) -> Vec<u8> {
    with_strs(&[inbox], 0)
}

/// `by_subject` prefix of every customer's entry for a subject.
pub fn by_subject_prefix(inbox: &str, subject_base: &str) -> Vec<u8> {
    with_strs(&[inbox, subject_base], 0)
}

/// `by_subject` key: inbox ++ normalised subject ++ customer email.
pub fn by_subject(inbox: &str, subject_base: &str, contact: &str) -> Vec<u8> {
    with_strs(&[inbox, subject_base, &address::email_key(contact)], 0)
}

/// `by_subject` value: conversation ++ unix time of its last message (i64 BE) ++ that
/// message's key, which orders activity exactly where seconds tie.
pub fn subject_value(conv: ConversationId, at: i64, message: MessageKey) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&conv.0.to_be_bytes());
    v[8..16].copy_from_slice(&at.to_be_bytes());
    v[16..].copy_from_slice(&message.0.to_be_bytes());
    v
}

/// A decoded `by_subject` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectEntry {
    pub conv: ConversationId,
    pub at: i64,
    /// 0 in values written before the message key was recorded.
    pub message: u64,
}

impl SubjectEntry {
    /// Recency order: time, then message key.
    pub fn recency(&self) -> (i64, u64) {
        (self.at, self.message)
    }
}

/// Decodes a `by_subject` value; `None` when shorter than the 16-byte original layout.
pub fn subject_entry(v: &[u8]) -> Option<SubjectEntry> {
    Some(SubjectEntry {
        conv: ConversationId(be_u64(v, 0)?),
        at: i64::from_be_bytes(be_u64(v, 8)?.to_be_bytes()),
        message: be_u64(v, 16).unwrap_or(0),
    })
}

/// `contacts` key: the normalised email.
pub fn contact(email: &str) -> Vec<u8> {
    address::email_key(email).into_bytes()
}

/// Prefix of one contact's `contact_convs` keys.
pub fn contact_convs_prefix(email: &str) -> Vec<u8> {
    with_strs(&[&address::email_key(email)], 8)
}

/// `contact_convs` key: email ++ conversation.
pub fn contact_conv(email: &str, conv: ConversationId) -> Vec<u8> {
    let mut k = contact_convs_prefix(email);
    k.extend_from_slice(&conv.0.to_be_bytes());
    k
}

/// Prefix of one contact's `timeline` keys.
pub fn timeline_prefix(email: &str) -> Vec<u8> {
    with_strs(&[&address::email_key(email)], 8)
}

/// `timeline` key: email ++ per-contact sequence number.
pub fn timeline(email: &str, seq: u64) -> Vec<u8> {
    let mut k = timeline_prefix(email);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `message_convs` key: message key ++ conversation.
pub fn message_conv(msg: MessageKey, conv: ConversationId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&msg.0.to_be_bytes());
    k[8..].copy_from_slice(&conv.0.to_be_bytes());
    k
}

/// Prefix of the `message_convs` keys of one message.
pub fn message_convs_prefix(msg: MessageKey) -> [u8; 8] {
    msg.0.to_be_bytes()
}

/// `flags` value bit: `\Seen`.
pub const AGENT_SEEN: u8 = 1;
/// `flags` value bit: `\Flagged`.
pub const AGENT_FLAGGED: u8 = 2;
/// `flags` value bits of the junk-filter keywords clients set on their own (SPEC §5:
/// per agent, so one agent's untrained filter never tags a teammate's mail), in their
/// canonical spelling. Bits never change meaning: stored bytes are read back as written.
pub const AGENT_KEYWORDS: [(&str, u8); 5] = [
    ("Junk", 4),
    ("NonJunk", 8),
    ("$Junk", 16),
    ("$NotJunk", 32),
    ("$Phishing", 64),
];

/// `flags` key: agent login ++ message key.
pub fn agent_flags(agent: &str, msg: MessageKey) -> Vec<u8> {
    let mut k = with_strs(&[agent], 8);
    k.extend_from_slice(&msg.0.to_be_bytes());
    k
}

/// The agent and message of a `flags` key (inverse of [`agent_flags`]).
pub fn parse_agent_flags(key: &[u8]) -> Option<(String, MessageKey)> {
    let len = usize::try_from(be_u32(key.get(..4)?)?).ok()?;
    let end = len.checked_add(4)?;
    if key.len() != end.checked_add(8)? {
        return None;
    }
    let agent = String::from_utf8(key.get(4..end)?.to_vec()).ok()?;
    Some((agent, MessageKey(be_u64(key, end)?)))
}

/// `shared_flags` key.
pub fn shared_flags(msg: MessageKey) -> [u8; 8] {
    msg.0.to_be_bytes()
}

/// `uid_spaces` key of a team view: `"view"`, a tag per variant, its parameters, then the
/// inboxes, each length-prefixed. Part of the on-disk format: changing it loses every
/// view's UIDs (clients re-download), so a new variant gets a new tag.
pub fn view_space(view: &TeamView) -> Vec<u8> {
    let year;
    let mut parts: Vec<&str> = vec!["view"];
    match view {
        TeamView::Open { .. } => parts.push("open"),
        TeamView::Assigned { assignee, .. } => parts.extend(["assigned", assignee.as_str()]),
        TeamView::Unassigned { .. } => parts.push("unassigned"),
        TeamView::Closed { year: None, .. } => parts.push("closed"),
        TeamView::Closed { year: Some(y), .. } => {
            year = y.to_string();
            parts.extend(["closed_in", year.as_str()]);
        }
        TeamView::Trash { agent, .. } => parts.extend(["trash_of", agent.as_str()]),
        TeamView::Sent { .. } => parts.push("sent"),
        TeamView::Junk { .. } => parts.push("junk"),
    }
    parts.extend(view.inboxes().iter().map(String::as_str));
    with_strs(&parts, 0)
}

/// Prefix of every folder's `uid_spaces` key of one owner.
pub fn folder_spaces_prefix(owner: &str) -> Vec<u8> {
    with_strs(&["folder", owner], 0)
}

/// `uid_spaces` key of a private folder: `"folder"` ++ owner ++ name.
pub fn folder_space(folder: &FolderId) -> Vec<u8> {
    with_strs(&["folder", &folder.owner, &folder.name], 0)
}

/// The folder name of a `uid_spaces` key found under [`folder_spaces_prefix`].
pub fn folder_name(key: &[u8], owner_prefix: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(owner_prefix)?;
    let len = usize::try_from(be_u32(rest.get(..4)?)?).ok()?;
    let name = rest.get(4..)?;
    (name.len() == len)
        .then(|| String::from_utf8(name.to_vec()).ok())
        .flatten()
}

/// Prefix of every `subscriptions` key of one agent.
pub fn subscriptions_prefix(agent: &str) -> Vec<u8> {
    with_strs(&[agent], 0)
}

/// `subscriptions` key: agent ++ mailbox name (read back with [`folder_name`]).
pub fn subscription(agent: &str, name: &str) -> Vec<u8> {
    with_strs(&[agent, name], 0)
}

/// Prefix of one space's `uid_map` keys.
pub fn uid_map_prefix(space: u64) -> [u8; 8] {
    space.to_be_bytes()
}

/// `uid_map` key: space (u64 BE) ++ uid (u32 BE), so a prefix scan is in uid order.
pub fn uid_map(space: u64, uid: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&space.to_be_bytes());
    k[8..].copy_from_slice(&uid.to_be_bytes());
    k
}

/// The uid of a `uid_map` key.
pub fn uid_of_key(key: &[u8]) -> Option<u32> {
    be_u32(key.get(8..12)?)
}

/// `uid_map` value: conversation ++ message (16 bytes) for a view entry, message alone
/// (8 bytes) for a folder entry.
pub fn entry_value(entry: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    if let Some(c) = entry.conversation {
        v.extend_from_slice(&c.0.to_be_bytes());
    }
    v.extend_from_slice(&entry.message.0.to_be_bytes());
    v
}

/// Inverse of [`entry_value`].
pub fn parse_entry(v: &[u8]) -> Option<Entry> {
    match v.len() {
        8 => Some(Entry {
            conversation: None,
            message: MessageKey(be_u64(v, 0)?),
        }),
        16 => Some(Entry {
            conversation: Some(ConversationId(be_u64(v, 0)?)),
            message: MessageKey(be_u64(v, 8)?),
        }),
        _ => None,
    }
}

/// `modseq` key of the mod-sequence of an agent's flags: `A` ++ its [`agent_flags`] key.
pub fn modseq_agent(agent_flags_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + agent_flags_key.len());
    k.push(b'A');
    k.extend_from_slice(agent_flags_key);
    k
}

/// `modseq` key of the mod-sequence of a message's shared flags: `S` ++ message.
pub fn modseq_shared(msg: MessageKey) -> [u8; 9] {
    let mut k = [b'S'; 9];
    k[1..].copy_from_slice(&msg.0.to_be_bytes());
    k
}

/// `modseq` key of the mod-sequence at which a uid entered its space: `E` ++ space ++ uid.
pub fn modseq_entry(space: u64, uid: u32) -> [u8; 13] {
    let mut k = [b'E'; 13];
    k[1..9].copy_from_slice(&space.to_be_bytes());
    k[9..].copy_from_slice(&uid.to_be_bytes());
    k
}

/// `modseq` key of a space's mod-sequence header: `H` ++ space.
pub fn modseq_space(space: u64) -> [u8; 9] {
    let mut k = [b'H'; 9];
    k[1..].copy_from_slice(&space.to_be_bytes());
    k
}

/// [`modseq_space`] value: the space's last add/remove mod-sequence, the expunge log's
/// floor (expunges at or below it were dropped) and the number of logged expunges, each
/// u64 BE.
pub fn space_modseq_value(highest: u64, floor: u64, logged: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&highest.to_be_bytes());
    v[8..16].copy_from_slice(&floor.to_be_bytes());
    v[16..].copy_from_slice(&logged.to_be_bytes());
    v
}

/// Inverse of [`space_modseq_value`].
pub fn parse_space_modseq(v: &[u8]) -> Option<(u64, u64, u64)> {
    (v.len() == 24).then_some((be_u64(v, 0)?, be_u64(v, 8)?, be_u64(v, 16)?))
}

/// Prefix of one space's expunge log.
pub fn expunged_prefix(space: u64) -> [u8; 9] {
    let mut k = [b'X'; 9];
    k[1..].copy_from_slice(&space.to_be_bytes());
    k
}

/// `modseq` key of one expunge: `X` ++ space ++ mod-sequence ++ uid, so a space's log
/// scans oldest first.
pub fn expunged(space: u64, modseq: u64, uid: u32) -> [u8; 21] {
    let mut k = [b'X'; 21];
    k[1..9].copy_from_slice(&space.to_be_bytes());
    k[9..17].copy_from_slice(&modseq.to_be_bytes());
    k[17..].copy_from_slice(&uid.to_be_bytes());
    k
}

/// The (mod-sequence, uid) of an [`expunged`] key.
pub fn parse_expunged(k: &[u8]) -> Option<(u64, u32)> {
    (k.len() == 21).then_some((be_u64(k, 9)?, be_u32(k.get(17..)?)?))
}

/// `queue` key.
pub fn queue(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// `learn_queue` key.
pub fn learn(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// `junk` key.
pub fn junk(id: JunkId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// `junk_by_message` key: message key ++ junk id.
pub fn junk_by_message(msg: MessageKey, id: JunkId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&msg.0.to_be_bytes());
    k[8..].copy_from_slice(&id.0.to_be_bytes());
    k
}

/// Prefix of the `junk_by_message` keys of one message.
pub fn junk_by_message_prefix(msg: MessageKey) -> [u8; 8] {
    msg.0.to_be_bytes()
}

/// `junk_by_message_id` key: inbox ++ normalised Message-ID.
pub fn junk_by_message_id(inbox: &str, message_id: &str) -> Vec<u8> {
    with_strs(&[inbox, &message_id::index_form(message_id)], 0)
}

/// `quarantine` key.
pub fn quarantine(id: QuarantineId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// `quarantine_by_message` key: stripped message key ++ quarantine id.
pub fn quarantine_by_message(msg: MessageKey, id: QuarantineId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&msg.0.to_be_bytes());
    k[8..].copy_from_slice(&id.0.to_be_bytes());
    k
}

/// Prefix of the `quarantine_by_message` keys of one stripped message.
pub fn quarantine_by_message_prefix(msg: MessageKey) -> [u8; 8] {
    msg.0.to_be_bytes()
}

/// Unix seconds as 8 bytes that sort like the numbers (sign bit flipped), so a time
/// before 1970 (a clock gone wrong) still sorts first instead of last.
fn ordered_time(t: i64) -> [u8; 8] {
    (u64::from_be_bytes(t.to_be_bytes()) ^ (1 << 63)).to_be_bytes()
}

/// `queue_due` key: next attempt (unix seconds, [`ordered_time`]) ++ queue id.
pub fn queue_due(next_attempt: i64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ordered_time(next_attempt));
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The first `queue_due` key after every entry due at or before `t`.
pub fn queue_due_after(t: i64) -> [u8; 16] {
    match t.checked_add(1) {
        Some(next) => queue_due(next, 0),
        None => [0xff; 16],
    }
}

/// Inverse of [`queue_due`]: (next attempt, queue id).
pub fn parse_queue_due(key: &[u8]) -> Option<(i64, u64)> {
    if key.len() != 16 {
        return None;
    }
    let t = be_u64(key, 0)? ^ (1 << 63);
    Some((i64::from_be_bytes(t.to_be_bytes()), be_u64(key, 8)?))
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
    fn mailbox_keys_round_trip_and_stay_apart() {
        let open = |i: &[&str]| TeamView::Open {
            inboxes: i.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_ne!(
            view_space(&open(&["ab", "c"])),
            view_space(&open(&["a", "bc"]))
        );
        assert_ne!(
            view_space(&open(&["a"])),
            view_space(&TeamView::Unassigned {
                inboxes: vec!["a".into()]
            })
        );
        let closed = |year| TeamView::Closed {
            inboxes: vec!["a".into()],
            year,
        };
        assert_ne!(view_space(&closed(None)), view_space(&closed(Some(2026))));
        let f = FolderId {
            owner: "bob".into(),
            name: "Personal/x".into(),
        };
        let prefix = folder_spaces_prefix("bob");
        assert_eq!(
            folder_name(&folder_space(&f), &prefix).as_deref(),
            Some("Personal/x")
        );
        assert_eq!(
            folder_name(&folder_space(&f), &folder_spaces_prefix("bo")),
            None
        );
        assert!(uid_map(1, 9) < uid_map(1, 10));
        assert!(uid_map(1, u32::MAX) < uid_map(2, 0));
        assert_eq!(uid_of_key(&uid_map(3, 77)), Some(77));
        for e in [
            Entry {
                conversation: None,
                message: MessageKey(5),
            },
            Entry {
                conversation: Some(ConversationId(2)),
                message: MessageKey(5),
            },
        ] {
            assert_eq!(parse_entry(&entry_value(&e)), Some(e));
        }
        assert_eq!(parse_entry(&[1, 2, 3]), None);
    }

    #[test]
    fn junk_quarantine_and_flag_keys() {
        assert!(
            junk_by_message(MessageKey(1), JunkId(u64::MAX))
                < junk_by_message(MessageKey(2), JunkId(0))
        );
        assert!(
            junk_by_message(MessageKey(7), JunkId(3))
                .starts_with(&junk_by_message_prefix(MessageKey(7)))
        );
        assert!(
            quarantine_by_message(MessageKey(7), QuarantineId(3))
                .starts_with(&quarantine_by_message_prefix(MessageKey(7)))
        );
        assert!(junk(JunkId(9)) < junk(JunkId(10)));
        assert!(quarantine(QuarantineId(9)) < quarantine(QuarantineId(256)));
        assert_eq!(
            junk_by_message_id("s", "<A@B>"),
            junk_by_message_id("s", "a@b")
        );
        assert_ne!(
            view_space(&TeamView::Junk {
                inboxes: vec!["a".into()]
            }),
            view_space(&TeamView::Trash {
                inboxes: vec!["a".into()],
                agent: "x".into(),
            })
        );
        // Each agent's Trash is its own UID space (it holds the agent's private messages).
        assert_ne!(
            view_space(&TeamView::Trash {
                inboxes: vec!["a".into()],
                agent: "x".into(),
            }),
            view_space(&TeamView::Trash {
                inboxes: vec!["a".into()],
                agent: "y".into(),
            })
        );
        assert_eq!(
            parse_agent_flags(&agent_flags("bob", MessageKey(42))),
            Some(("bob".to_owned(), MessageKey(42)))
        );
        assert_eq!(parse_agent_flags(&[0, 0, 0, 9, b'x']), None);
    }

    #[test]
    fn queue_due_keys_sort_by_time_then_id() {
        assert!(queue_due(-5, 9) < queue_due(0, 1));
        assert!(queue_due(100, 2) < queue_due(100, 3));
        assert!(queue_due(100, u64::MAX) < queue_due(101, 0));
        assert!(queue_due(100, u64::MAX) < queue_due_after(100));
        assert!(queue_due_after(100) <= queue_due(101, 0));
        for (t, id) in [(0, 0), (-1, 7), (1_900_000_000, 42), (i64::MAX, u64::MAX)] {
            assert_eq!(parse_queue_due(&queue_due(t, id)), Some((t, id)));
        }
        assert_eq!(parse_queue_due(&[1, 2, 3]), None);
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
