//! The values stored in sled trees (JSON, so a dump is readable) and their codec. Decode
//! failures become `StoreError::Corrupt` naming the tree and key, never a panic.
//! New fields must be `#[serde(default)]` so records written by older versions still load.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::blobs::BlobLoc;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{
    ConversationId, JunkId, LearnClass, MessageKey, MessageSummary, QuarantineId, Status,
    TimelineKind,
};

/// `messages` value: where the body is and what the parser learned about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub loc: BlobLoc,
    /// Unix seconds; the IMAP INTERNALDATE.
    pub received_at: i64,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub summary: MessageSummary,
}

/// `conversations` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub inbox: String,
    pub status: Status,
    pub assignee: Option<String>,
    pub subject: String,
    /// Normalised email of the customer contact.
    pub customer: Option<String>,
    pub linked_to: Option<ConversationId>,
    /// Normalised emails from From/To/Cc of its messages; a set so the record stays small.
    pub participants: BTreeSet<String>,
    pub created: i64,
    /// Last activity (unix seconds): the newest message's `received_at`, or the last
    /// conversation action (close, reopen, assign, transfer, trash, restore, junk), so
    /// `conversations list` orders and reports it as agents worked it (SPEC §8 `updated`).
    pub updated: i64,
    /// When it was last closed (unix seconds), while its status is closed: the
    /// `Closed/<year>` views file it by this. Records written before it existed (or
    /// closed without it) fall back to `updated`.
    #[serde(default)]
    pub closed_at: Option<i64>,
    /// Inboxes it was transferred out of; their threading index entries still point here.
    #[serde(default)]
    pub former_inboxes: BTreeSet<String>,
    /// Judged spam by an agent ("move to Junk"): its inbound messages are junk records and
    /// the conversation is in no view, no `conversations list` and no threading decision
    /// until "not spam" clears it (SPEC §3: a message is in exactly one place).
    #[serde(default)]
    pub junk: bool,
    /// Merged into this conversation (`conversations merge`, `#merge`): it holds no
    /// messages any more, is in no view or list, and mail naming it goes there.
    #[serde(default)]
    pub merged_into: Option<ConversationId>,
}

/// `uid_spaces` value: one mailbox's UID space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidSpaceRecord {
    /// Numeric id used in `uid_map` keys; never reused.
    pub space: u64,
    pub uid_validity: u32,
    /// The uid the next entry gets; only grows.
    pub uid_next: u32,
    /// The view generation (`meta` `view_generation`) the space was last brought up to
    /// date at. Unused (0) for folders, whose entries change only through folder requests.
    pub synced_at: u64,
}

/// `shared_flags` value: the flags everyone seeing a message shares (SPEC §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFlagsRecord {
    #[serde(default)]
    pub answered: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub keywords: BTreeSet<String>,
}

/// `contacts` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub email: String,
    pub name: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Sequence number of the next timeline entry (keys stay ordered by insertion).
    pub timeline_next: u64,
}

/// `timeline` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRecord {
    pub at: i64,
    pub kind: TimelineKind,
    pub conversation: Option<ConversationId>,
    pub message_id: Option<String>,
    pub detail: String,
}

/// `junk` value: one message judged spam for one inbox. What it shows (Message-ID, From,
/// Subject) comes from the message record, so it is never out of step with the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JunkRecord {
    pub id: JunkId,
    /// The stored message (a `messages` record).
    pub message: MessageKey,
    pub inbox: String,
    /// Always finite (JSON has no NaN).
    pub score: f64,
    pub reason: String,
    /// Unix seconds: when it was judged spam (received, or moved to Junk).
    pub at: i64,
    /// The message as received, when `message` has dangerous attachments replaced (a
    /// `messages` record of its own, in no view).
    #[serde(default)]
    pub original: Option<MessageKey>,
}

/// `learn_queue` value: one message to teach the spam filter (`learn_queue.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnRecord {
    pub message: MessageKey,
    pub class: LearnClass,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
}

/// `quarantine` value: one attachment removed from one delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub id: QuarantineId,
    /// Without angle brackets.
    pub message_id: String,
    pub inbox: String,
    pub conversation: Option<ConversationId>,
    pub filename: String,
    pub reason: String,
    /// Unix seconds: when the message arrived.
    pub at: i64,
    /// The whole original (a `messages` record in no conversation).
    pub original: MessageKey,
    /// The stripped copy filed in the conversation.
    pub stripped: Option<MessageKey>,
    #[serde(default)]
    pub released: bool,
    /// The revision (a new message key on the original bytes) that replaced `stripped`.
    #[serde(default)]
    pub released_as: Option<MessageKey>,
    /// Unix seconds.
    #[serde(default)]
    pub released_at: Option<i64>,
}

pub fn encode<T: Serialize>(tree: TreeId, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        tree: tree.name(),
        detail: e.to_string(),
    })
}

pub fn decode<T: DeserializeOwned>(
    tree: TreeId,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(tree, key, e.to_string()))
}

pub fn corrupt(tree: TreeId, key: &[u8], detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: tree.name(),
        key: keys::display(key),
        detail: detail.into(),
    }
}

/// A fixed-width value or key suffix that must hold a u64 at `at`.
pub fn u64_at(tree: TreeId, key: &[u8], bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    keys::be_u64(bytes, at).ok_or_else(|| corrupt(tree, key, "short id value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_corrupt_not_panic() {
        let r: Result<ContactRecord, _> = decode(TreeId::Contacts, b"a@b", b"{not json");
        match r {
            Err(StoreError::Corrupt { tree, key, .. }) => {
                assert_eq!(tree, "contacts");
                assert_eq!(key, "a@b");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
