//! The requests the `Store` handles send to the writer thread (`handle.rs` sends them,
//! `writer.rs` runs them), and the answers it gives: [`Request`] (ingest, [`Op`],
//! [`QueueOp`], close, backup), with [`OpOutput`] and [`QueueOutput`].

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::backup_format::BackupSnapshot;
use super::error::StoreError;
use super::model::{
    ConversationAction, ConversationId, FlagOp, Flags, FolderId, IncomingMessage, IngestOutcome,
    JunkId, LearnClass, LearnId, MailboxSnapshot, MessageKey, MessageSummary, NewJunk,
    OutboundMessage, QuarantineId, QueueId, QueueItem, QueueRecorded, RecipientOutcome, TeamView,
    UnchangedSince,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What handles send to the writer.
pub enum Request {
    Ingest {
        msg: Box<IncomingMessage>,
        reply: Reply<IngestOutcome>,
    },
    /// Every other mutation (and mailbox syncs, which may assign UIDs).
    Op { op: Box<Op>, reply: Reply<OpOutput> },
    /// An outbound queue change (see `queue.rs`).
    Queue {
        op: Box<QueueOp>,
        reply: Reply<QueueOutput>,
    },
    /// Answer everything queued, flush, stop.
    Close { reply: Reply<()> },
    /// Run the batch received so far (with its barrier), then, before any later request,
    /// snapshot the store into the backup directory `dir` (see `backup.rs`).
    Backup {
        dir: PathBuf,
        segments_dir: PathBuf,
        reply: Reply<BackupSnapshot>,
    },
}

/// A request other than ingest; see the `Store` methods of the same names.
pub enum Op {
    SyncView(TeamView),
    SyncFolder(FolderId),
    StoreFlags {
        agent: String,
        keys: Vec<MessageKey>,
        op: FlagOp,
        flags: Flags,
        /// RFC 7162 UNCHANGEDSINCE: checked here, on the writer (see `modseq.rs`).
        guard: Option<UnchangedSince>,
    },
    Action {
        id: ConversationId,
        action: ConversationAction,
    },
    FolderCreate(FolderId),
    Subscribe {
        agent: String,
        name: String,
        subscribed: bool,
    },
    SubscriptionsAdopt {
        agent: String,
        names: Vec<String>,
    },
    FolderDelete(FolderId),
    FolderRename {
        from: FolderId,
        to: FolderId,
    },
    FolderAppend {
        folder: FolderId,
        raw: Vec<u8>,
        summary: Box<MessageSummary>,
        flags: Flags,
        internal_date: i64,
    },
    FolderCopy {
        folder: FolderId,
        keys: Vec<MessageKey>,
    },
    FolderExpunge {
        folder: FolderId,
        uids: Vec<u32>,
    },
    TrashCopy {
        view: TeamView,
        keys: Vec<MessageKey>,
    },
    TrashExpunge {
        view: TeamView,
        uids: Vec<u32>,
    },
    Junk(Box<NewJunk>),
    JunkRemove(JunkId),
    MarkJunk {
        conv: ConversationId,
        reason: String,
    },
    UnmarkJunk(ConversationId),
    QuarantineRelease(QuarantineId),
    Merge {
        into: ConversationId,
        from: ConversationId,
    },
    Split {
        conv: ConversationId,
        message_id: String,
    },
    LearnEnqueue {
        messages: Vec<MessageKey>,
        class: LearnClass,
    },
    LearnFinish(LearnId),
    LearnRetry {
        id: LearnId,
        next_attempt: i64,
    },
}

/// The answer to an [`Op`]; each `Store` method expects one variant.
#[derive(Debug)]
pub enum OpOutput {
    Done,
    Snapshot(MailboxSnapshot),
    Flags(Vec<Flags>),
    /// A STORE with UNCHANGEDSINCE: the flags, and the indices that failed the test.
    GuardedFlags(Vec<Flags>, Vec<usize>),
    /// UIDVALIDITY, uid.
    Appended(u32, u32),
    /// UIDVALIDITY, uids in order.
    Copied(u32, Vec<u32>),
    Junk(JunkId),
    JunkIds(Vec<JunkId>),
    /// The new revision of a released message.
    Released(MessageKey),
    /// The conversation a split started.
    Conversation(ConversationId),
}

/// A queue mutation; see the `Store` methods of the same names.
pub enum QueueOp {
    Add {
        msg: OutboundMessage,
        now: i64,
    },
    Retry {
        id: QueueId,
        now: i64,
    },
    Attempt {
        id: QueueId,
        next_attempt: i64,
    },
    Record {
        id: QueueId,
        results: Vec<(String, RecipientOutcome)>,
    },
}

/// The answer to a [`QueueOp`].
#[derive(Debug)]
pub enum QueueOutput {
    Added(QueueId),
    Item(QueueItem),
    Recorded(QueueRecorded),
    Done,
}

/// The error for a writer answer of another variant than the `Store` method expects (a bug).
pub(super) fn unexpected(out: OpOutput) -> StoreError {
    StoreError::Internal(format!(
        "writer answered with the wrong kind of result: {out:?}"
    ))
}
