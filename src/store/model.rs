//! Domain types of the store: what goes in and what comes out. No sled types here, so a
//! second backend (PostgreSQL) can implement the same API. The `*View` types are also the
//! JSON shapes of SPEC §8: their field names are a public contract, never rename them.

use serde::{Deserialize, Serialize};

/// A conversation's number, `#123`: per installation, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub u64);

/// Internal id of one stored message record (one per stored body, shared by inboxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageKey(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Closed,
    Trash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
    Comment,
}

/// A mailbox as written in a header: lower-cased domain, display name if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub name: String,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    pub quarantined: bool,
}

/// What the parser learned about a message; stored with its record and used for views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// Message-ID without angle brackets (ingest synthesises one when the header is missing).
    pub message_id: String,
    pub subject: String,
    pub from: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    /// Date header as unix seconds, if parseable.
    pub date: Option<i64>,
    pub attachments: Vec<AttachmentInfo>,
    pub direction: Direction,
    /// Auto-reply, bounce, list mail: threaded, never triggers anything automatic.
    pub automatic: bool,
    /// In-Reply-To then References ids (no angle brackets), as the message names them.
    pub references: Vec<String>,
    /// The agent (login) who sent it through submission; None for mail from outside.
    #[serde(default)]
    pub author: Option<String>,
    /// [`crate::message::content_digest`] of what the sender sent: two messages under
    /// one Message-ID are one message (a retry) only when these agree. None for records
    /// written before it existed, which match any.
    #[serde(default)]
    pub digest: Option<String>,
}

/// Read-only lookups the threading decision may make. Runs on the store's single writer,
/// so a decision and the write that follows it can never interleave with another ingest.
pub trait ThreadLookup {
    /// Conversation of `inbox` holding a message with this Message-ID.
    fn by_message_id(&self, inbox: &str, message_id: &str) -> Option<ConversationId>;
    /// Conversation of `inbox` holding a message whose References/In-Reply-To name this id
    /// (the reply arrived before its parent).
    fn referencing(&self, inbox: &str, message_id: &str) -> Option<ConversationId>;
    /// A conversation by number, in any inbox.
    fn conversation(&self, id: ConversationId) -> Option<ConversationInfo>;
    /// Conversation of `inbox` whose Outlook Thread-Index starts with this 22-byte key.
    fn by_thread_index(&self, inbox: &str, key: &[u8]) -> Option<ConversationId>;
    /// Latest conversation of `inbox` with this normalised subject and this customer
    /// contact, with the unix time of its last message.
    fn by_subject(
        &self,
        inbox: &str,
        subject_base: &str,
        contact: &str,
    ) -> Option<(ConversationId, i64)>;
    /// Conversations of `inbox` with this normalised subject, whoever the customer, newest
    /// first (bounded), with the unix time of their last message.
    fn by_subject_any(&self, inbox: &str, subject_base: &str) -> Vec<(ConversationId, i64)>;
    /// The message of `inbox` filed first under this Message-ID.
    fn known_message(&self, inbox: &str, message_id: &str) -> Option<KnownMessage>;
}

/// What threading may ask about a stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownMessage {
    /// The team's own message (an agent's reply or new mail).
    pub outgoing: bool,
    /// To, Cc and the envelope's (so Bcc too), lower-cased, once each.
    pub recipients: Vec<String>,
    /// Its Subject as it came.
    pub subject: String,
}

impl ConversationInfo {
    /// Whether a message delivered to `inbox` may join it: its own inbox, or one it was
    /// transferred from (the customer still writes to the old address).
    pub fn reachable_from(&self, inbox: &str) -> bool {
        self.inbox == inbox || self.former_inboxes.iter().any(|i| i == inbox)
    }
}

/// What threading needs to know about a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub id: ConversationId,
    pub inbox: String,
    pub status: Status,
    pub assignee: Option<String>,
    /// Email of the customer contact.
    pub customer: Option<String>,
    /// Every address seen in From/To/Cc of its messages (lower-cased emails).
    pub participants: Vec<String>,
    /// Inboxes it was transferred out of: mail to their addresses still threads into it.
    #[serde(default)]
    pub former_inboxes: Vec<String>,
    /// Judged spam by an agent: in Junk only, until "not spam".
    #[serde(default)]
    pub junk: bool,
}

/// Which rule placed a message in its conversation (SPEC §8 `threaded_by.rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadRule {
    InReplyTo,
    References,
    Tag,
    SubAddress,
    ThreadIndex,
    Subject,
    ForwardOriginal,
    Merge,
    Split,
    New,
}

/// Why a message is in its conversation: the rule, and what it matched (a Message-ID,
/// `[#12]`, a subject…), so an agent can tell why mail landed where it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadedBy {
    pub rule: ThreadRule,
    pub evidence: Option<String>,
}

impl ThreadedBy {
    pub fn new(rule: ThreadRule, evidence: impl Into<String>) -> ThreadedBy {
        ThreadedBy {
            rule,
            evidence: Some(evidence.into()),
        }
    }
}

/// A threading decision and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threading {
    pub decision: ThreadDecision,
    pub by: ThreadedBy,
}

impl Threading {
    pub fn join(id: ConversationId, rule: ThreadRule, evidence: impl Into<String>) -> Threading {
        Threading {
            decision: ThreadDecision::Join(id),
            by: ThreadedBy::new(rule, evidence),
        }
    }

    /// A new conversation; `why` says what was looked for and not found (or not admitted).
    pub fn new_conversation(
        linked_to: Option<ConversationId>,
        why: impl Into<String>,
    ) -> Threading {
        Threading {
            decision: ThreadDecision::New { linked_to },
            by: ThreadedBy::new(ThreadRule::New, why),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadDecision {
    /// Join this conversation (reopened when closed).
    Join(ConversationId),
    /// Start a new conversation; `linked_to` names the conversation it replies to when a
    /// header matched but the sender was not a participant (SPEC §4 announcements).
    New { linked_to: Option<ConversationId> },
}

/// Index keys of a message, written for later threading lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadKeys {
    pub subject_base: Option<String>,
    /// First 22 bytes of a decoded Outlook Thread-Index.
    pub thread_index: Option<Vec<u8>>,
    /// The contact the subject entry is written under; None: the conversation's customer.
    /// A forward's is its forwarder (SPEC §4), so forwards of one original never match.
    pub subject_contact: Option<String>,
    /// The message's time for the subject window: its Date, clamped by its arrival (so
    /// imports and late mail keep their own time); None: the arrival.
    pub at: Option<i64>,
}

/// One kind of contact timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Inbound,
    Outbound,
    Attachment,
    ForwardedBy,
    /// A conversation of the contact's was merged into another (`#merge`, CLI).
    Merged,
    /// A conversation of the contact's was split (`#split`, CLI).
    Split,
}

/// A contact to create or touch, and what to put on its timeline. The store fills in the
/// conversation, message id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactTouch {
    pub email: String,
    pub name: Option<String>,
    /// The conversation's customer (new conversations take the first such contact).
    pub is_customer: bool,
    pub events: Vec<(TimelineKind, String)>,
}

/// A decision closure: runs on the writer with read access to the indexes.
pub type Decide = Box<dyn Fn(&dyn ThreadLookup) -> Threading + Send>;

/// One inbox's copy of an incoming message.
pub struct Delivery {
    pub inbox: String,
    pub decide: Decide,
    pub keys: ThreadKeys,
    pub contacts: Vec<ContactTouch>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("inbox", &self.inbox)
            .field("keys", &self.keys)
            .field("contacts", &self.contacts)
            .finish_non_exhaustive()
    }
}

/// A message to store durably: the bytes once, a conversation entry per delivery.
#[derive(Debug)]
pub struct IncomingMessage {
    /// Exactly the bytes to store (teamgate's trace headers already prepended).
    pub raw: Vec<u8>,
    /// Unix seconds; also the IMAP INTERNALDATE.
    pub received_at: i64,
    /// Envelope sender, "" for the null reverse-path.
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub summary: MessageSummary,
    pub deliveries: Vec<Delivery>,
    /// When attachments were removed (`raw` is then the stripped copy): the original bytes
    /// and what was removed. Stored atomically with the message: the original as a message
    /// record of its own (in no conversation), and one quarantine record per hit per
    /// stored delivery (conversation = that delivery's conversation, stripped = the stored
    /// message key). Nothing is kept for deliveries that are duplicates. `None`, or no
    /// hits: an ordinary message.
    pub quarantined: Option<QuarantinedOriginal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Stored {
        conversation: ConversationId,
        created: bool,
        reopened: bool,
    },
    /// This Message-ID was already in that inbox: stored once, nothing written.
    Duplicate { conversation: ConversationId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// None when every delivery was a duplicate (no bytes kept).
    pub message: Option<MessageKey>,
    pub deliveries: Vec<(String, DeliveryOutcome)>,
}

/// `conversations list --json` element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationJson {
    pub id: ConversationId,
    pub inbox: String,
    pub status: Status,
    pub assignee: Option<String>,
    pub subject: String,
    pub contact: Option<String>,
    pub message_ids: Vec<String>,
    /// RFC 3339.
    pub updated: String,
}

/// `conversations show ID --json` message element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageJson {
    pub message_id: String,
    pub direction: Direction,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// RFC 3339 (the Date header, else the time received).
    pub date: String,
    pub size: u64,
    pub attachments: Vec<AttachmentInfo>,
    pub automatic: bool,
    /// Why it is in this conversation; null for messages stored before it was recorded.
    #[serde(default)]
    pub threaded_by: Option<ThreadedBy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: ConversationJson,
    pub linked_to: Option<ConversationId>,
    /// Judged spam by an agent: in `Junk` and `junk list` only, whatever `status` it
    /// had (and gets back on "not spam").
    #[serde(default)]
    pub junk: bool,
    /// Merged into this conversation: it redirects there and holds no messages.
    #[serde(default)]
    pub merged_into: Option<ConversationId>,
    pub messages: Vec<MessageJson>,
}

/// `contacts list --json` element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactJson {
    pub email: String,
    pub name: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub conversations: Vec<ConversationId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: TimelineKind,
    pub conversation: Option<ConversationId>,
    pub message_id: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactDetail {
    #[serde(flatten)]
    pub contact: ContactJson,
    pub timeline: Vec<TimelineEntry>,
}

/// A team mailbox: a predicate over conversations (SPEC §5). `inboxes` are sorted and
/// deduplicated by the caller; each distinct value has its own UID space, shared by every
/// agent whose mailbox maps to the same value (GUIDE §0b fan-out).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TeamView {
    /// `INBOX` (all the agent's inboxes), `Inboxes/<name>` (one): open conversations.
    Open { inboxes: Vec<String> },
    /// `Mine`, `Assigned/<login>`: open conversations assigned to `assignee`.
    Assigned {
        inboxes: Vec<String>,
        assignee: String,
    },
    /// `Unassigned`: open conversations with no assignee.
    Unassigned { inboxes: Vec<String> },
    /// `Closed`; `Closed/<year>`: closed conversations, closed in that UTC year.
    Closed {
        inboxes: Vec<String>,
        year: Option<i32>,
    },
    /// `Trash` as `agent` sees it: conversations with status trash, and the agent's own
    /// deleted private messages (drafts, `Personal/…`), which only that agent sees. Each
    /// agent's Trash is its own UID space for that reason.
    Trash { inboxes: Vec<String>, agent: String },
    /// `Sent`: only the outgoing (`Direction::Out`) messages of conversations not in trash.
    Sent { inboxes: Vec<String> },
    /// `Junk`: the junk records of these inboxes (entries have no conversation; map one
    /// back to its record with `Store::junk_of_message`). A message junk in two of the
    /// inboxes is in the view once.
    Junk { inboxes: Vec<String> },
}

impl TeamView {
    /// The inboxes the view ranges over.
    pub fn inboxes(&self) -> &[String] {
        match self {
            TeamView::Open { inboxes }
            | TeamView::Assigned { inboxes, .. }
            | TeamView::Unassigned { inboxes }
            | TeamView::Closed { inboxes, .. }
            | TeamView::Trash { inboxes, .. }
            | TeamView::Sent { inboxes }
            | TeamView::Junk { inboxes } => inboxes,
        }
    }
}

/// A private folder: Drafts, Templates, Personal/<...> (the IMAP layer decides names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FolderId {
    /// Agent login, or `inbox:<name>` for an inbox's shared Templates.
    pub owner: String,
    pub name: String,
}

/// One message of a mailbox. Folder entries have no conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub conversation: Option<ConversationId>,
    pub message: MessageKey,
}

/// A conditional STORE (RFC 7162 §3.1.3 UNCHANGEDSINCE), checked on the writer in the
/// request that writes (`store/modseq.rs`), so two agents racing for the same message cannot both win.
#[derive(Debug, Clone)]
pub struct UnchangedSince {
    pub space: u64,
    /// The uid of each key of the STORE, in the same order.
    pub uids: Vec<u32>,
    pub modseq: u64,
}

/// A mailbox's UID space as of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSnapshot {
    /// The UID space's id: what its mod-sequences are kept under (`Store::modseqs`).
    pub space: u64,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// `(uid, entry)`, ascending uid.
    pub entries: Vec<(u32, Entry)>,
    /// The store-wide change counter the snapshot reflects (see `Store::subscribe`).
    pub highest_change: u64,
}

/// IMAP flags of a message as one agent sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Per agent.
    pub seen: bool,
    /// Shared.
    pub answered: bool,
    /// Per agent.
    pub flagged: bool,
    /// Shared.
    pub deleted: bool,
    /// Shared.
    pub draft: bool,
    /// Shared (Thunderbird tags, `$Comment`, `$Replying`, ...), except the junk-filter
    /// keywords (`Junk`, `NonJunk`, `$Junk`, `$NotJunk`, `$Phishing`), which are per agent.
    pub keywords: std::collections::BTreeSet<String>,
}

/// How a STORE combines the given flags with the current ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// `+FLAGS`: set every flag given.
    Add,
    /// `-FLAGS`: clear every flag given.
    Remove,
    /// `FLAGS`: exactly the given flags.
    Replace,
}

/// A conversation-wide change (SPEC §5: moving any message acts on its conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationAction {
    SetStatus(Status),
    Assign(Option<String>),
    /// Moves the conversation to another inbox; threading keeps finding it there.
    Transfer {
        inbox: String,
    },
}

/// What IMAP needs about a stored message besides its bytes and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// Unix seconds; the IMAP INTERNALDATE.
    pub received_at: i64,
    /// Size of the stored bytes (RFC822.SIZE).
    pub size: u64,
    /// Folder messages (APPEND) are stored as `In`: the field only matters for `Sent`.
    pub direction: Direction,
    /// Without angle brackets; "" when an appended message has none.
    pub message_id: String,
    /// The first (lowest-numbered) conversation holding it; None for folder messages.
    pub conversation: Option<ConversationId>,
    /// The agent who sent it (outgoing replies and comments).
    #[serde(default)]
    pub author: Option<String>,
}

/// An outbound queue entry's number (`teamgate queue retry ID`): per installation, never
/// reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub u64);

/// A message to deliver to the outside world (submission, auto-answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The final bytes, before DKIM signing (signing happens at delivery time).
    pub raw: Vec<u8>,
    /// Envelope sender; "" for the null reverse-path (such mail never gets a bounce).
    pub mail_from: String,
    pub recipients: Vec<String>,
    /// Without angle brackets.
    pub message_id: String,
    /// Where a bounce is filed.
    pub conversation: Option<ConversationId>,
    /// Login of the agent who sent it (named in the bounce).
    pub agent: String,
}

/// `queue list --json` element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueJson {
    pub id: QueueId,
    pub message_id: String,
    /// Recipients still to be delivered.
    pub recipients: Vec<String>,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// RFC 3339.
    pub next_attempt: String,
    pub last_error: Option<String>,
    pub conversation: Option<ConversationId>,
    pub agent: String,
    /// RFC 3339: when it was queued.
    pub created: String,
}

/// A queue entry as the delivery worker sees it (the body is read separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    pub id: QueueId,
    pub mail_from: String,
    /// Recipients still to be delivered, in queued order.
    pub recipients: Vec<String>,
    pub message_id: String,
    pub conversation: Option<ConversationId>,
    pub agent: String,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
    /// Unix seconds.
    pub created: i64,
    pub last_error: Option<String>,
}

/// What one delivery attempt did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    Delivered,
    /// Try again at the next attempt (4xx, connection trouble).
    Deferred(String),
    /// Given up: 5xx, or the retry schedule is exhausted. Bounced to the agent.
    Failed(String),
}

/// The answer to [`crate::store::Store::queue_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecorded {
    /// No recipient is left: the entry is gone from the queue.
    pub removed: bool,
    /// Recipients that failed permanently in this attempt, with the reason.
    pub failed: Vec<(String, String)>,
}

/// A junk record's number (`teamgate junk ...`): per installation, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JunkId(pub u64);

/// What an agent's gesture taught about a message: "move to Junk" is spam, "not spam"
/// (a move out of Junk) is ham. Sent to spamd's learner (`TELL`) from a durable queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearnClass {
    Spam,
    Ham,
}

impl LearnClass {
    /// The SPAMC `Message-class:` value and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LearnClass::Spam => "spam",
            LearnClass::Ham => "ham",
        }
    }
}

/// A learn queue entry's number: per installation, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LearnId(pub u64);

/// One message waiting to be taught to the spam filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnTask {
    pub id: LearnId,
    pub message: MessageKey,
    pub class: LearnClass,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
}

/// A quarantine record's number (`teamgate quarantine release ID`): per installation,
/// never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuarantineId(pub u64);

/// Mail judged spam for one inbox: kept whole, never in a conversation, no contacts
/// (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJunk {
    /// Exactly the bytes to keep.
    pub raw: Vec<u8>,
    /// Unix seconds; the IMAP INTERNALDATE and the record's `at`.
    pub received_at: i64,
    /// Envelope sender, "" for the null reverse-path.
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub inbox: String,
    pub summary: MessageSummary,
    /// The spam score; a value that is not finite (NaN, infinity) is stored as 0.
    pub score: f64,
    pub reason: String,
    /// The message as received when `raw` has dangerous attachments replaced (SPEC §7:
    /// the attachment policy holds in Junk too); kept for release, never shown.
    pub original: Option<Vec<u8>>,
}

/// `junk list --json` element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JunkJson {
    pub id: JunkId,
    /// Without angle brackets.
    pub message_id: String,
    pub inbox: String,
    /// The `From` address.
    pub from: Option<String>,
    pub subject: String,
    pub score: f64,
    pub reason: String,
    /// RFC 3339: when it was judged spam.
    pub at: String,
}

/// A junk record with what "not spam" needs to file the message again.
#[derive(Debug, Clone, PartialEq)]
pub struct JunkItem {
    pub json: JunkJson,
    /// The stored bytes (`Store::read_message`).
    pub message: MessageKey,
    /// The message as received, when `message` has dangerous attachments replaced.
    pub original: Option<MessageKey>,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// Unix seconds.
    pub received_at: i64,
}

/// An attachment removed from the conversation copy; the original message is kept whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineHit {
    /// As the sender named it ("" when it had no name).
    pub filename: String,
    /// Why, for people: "blocked file type .exe", "infected: Eicar-Signature (clamd)".
    pub reason: String,
}

/// The original of a message whose attachments were removed (see
/// [`IncomingMessage::quarantined`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedOriginal {
    pub raw: Vec<u8>,
    pub hits: Vec<QuarantineHit>,
}

/// `quarantine list --json` element (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineJson {
    pub id: QuarantineId,
    /// Without angle brackets.
    pub message_id: String,
    pub conversation: Option<ConversationId>,
    pub filename: String,
    pub reason: String,
    /// RFC 3339: when the message arrived.
    pub at: String,
    /// The original has replaced the stripped copy in the conversation.
    pub released: bool,
}

/// A quarantine record with the messages it ties together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineItem {
    pub json: QuarantineJson,
    /// The whole original bytes (`Store::read_message`); in no conversation.
    pub original: MessageKey,
    /// The stripped copy that was filed in the conversation.
    pub stripped: Option<MessageKey>,
    /// The inbox of the delivery.
    pub inbox: String,
    /// Once released: the new revision that replaced `stripped` in the conversation.
    pub released_as: Option<MessageKey>,
}
