//! Read side: loads records from the trees and turns them into the `*View` / info types
//! of `model`. Synchronous sled reads; safe on any thread, concurrent with the writer
//! (each call sees committed data; a list may straddle a concurrent commit).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::db::Trees;
use super::error::StoreError;
use super::keys::{self, TreeId};
use super::model::{
    ContactDetail, ContactJson, ConversationDetail, ConversationId, ConversationInfo,
    ConversationJson, MessageJson, MessageKey, ThreadedBy, TimelineEntry,
};
use super::records::{self, ContactRecord, ConversationRecord, MessageRecord, TimelineRecord};

/// Unix seconds as RFC 3339 UTC; out-of-range values (a silly Date header) clamp to the
/// epoch rather than failing a whole listing.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl ConversationRecord {
    pub fn info(&self) -> ConversationInfo {
        ConversationInfo {
            id: self.id,
            inbox: self.inbox.clone(),
            status: self.status,
            assignee: self.assignee.clone(),
            customer: self.customer.clone(),
            participants: self.participants.iter().cloned().collect(),
            former_inboxes: self.former_inboxes.iter().cloned().collect(),
            junk: self.junk,
        }
    }
}

pub fn conversation_record(
    trees: &Trees,
    id: ConversationId,
) -> Result<Option<ConversationRecord>, StoreError> {
    let k = keys::conversation(id);
    trees
        .get(TreeId::Conversations)
        .get(k)?
        .map(|v| records::decode(TreeId::Conversations, &k, &v))
        .transpose()
}

pub fn message_record(trees: &Trees, key: MessageKey) -> Result<Option<MessageRecord>, StoreError> {
    let k = keys::message(key);
    trees
        .get(TreeId::Messages)
        .get(k)?
        .map(|v| records::decode(TreeId::Messages, &k, &v))
        .transpose()
}

pub fn message_keys(trees: &Trees, id: ConversationId) -> Result<Vec<MessageKey>, StoreError> {
    trees
        .get(TreeId::ConvMessages)
        .scan_prefix(keys::conv_messages_prefix(id))
        .map(|kv| {
            let (k, _) = kv?;
            Ok(MessageKey(records::u64_at(
                TreeId::ConvMessages,
                &k,
                &k,
                8,
            )?))
        })
        .collect()
}

fn messages_of(trees: &Trees, id: ConversationId) -> Result<Vec<MessageRecord>, StoreError> {
    message_keys(trees, id)?
        .into_iter()
        .map(|m| {
            message_record(trees, m)?.ok_or_else(|| {
                records::corrupt(
                    TreeId::ConvMessages,
                    &keys::conv_message(id, m),
                    "names a message that does not exist",
                )
            })
        })
        .collect()
}

fn conversation_view(rec: &ConversationRecord, msgs: &[MessageRecord]) -> ConversationJson {
    ConversationJson {
        id: rec.id,
        inbox: rec.inbox.clone(),
        status: rec.status,
        assignee: rec.assignee.clone(),
        subject: rec.subject.clone(),
        contact: rec.customer.clone(),
        message_ids: msgs.iter().map(|m| m.summary.message_id.clone()).collect(),
        updated: rfc3339(rec.updated),
    }
}

/// Why each message of a conversation is in it, in `message_keys` order (None: stored
/// before teamgate recorded it).
fn threaded_by_of(
    trees: &Trees,
    id: ConversationId,
) -> Result<Vec<Option<ThreadedBy>>, StoreError> {
    trees
        .get(TreeId::ConvMessages)
        .scan_prefix(keys::conv_messages_prefix(id))
        .map(|kv| {
            let (k, v) = kv?;
            if v.is_empty() {
                return Ok(None);
            }
            records::decode(TreeId::ConvMessages, &k, &v).map(Some)
        })
        .collect()
}

fn message_view(m: &MessageRecord, threaded_by: Option<ThreadedBy>) -> MessageJson {
    let s = &m.summary;
    MessageJson {
        message_id: s.message_id.clone(),
        direction: s.direction,
        from: s.from.as_ref().map(|a| a.email.clone()),
        to: s.to.iter().map(|a| a.email.clone()).collect(),
        date: rfc3339(s.date.unwrap_or(m.received_at)),
        size: m.loc.len,
        attachments: s.attachments.clone(),
        automatic: s.automatic,
        threaded_by,
    }
}

/// Every conversation but those judged spam (SPEC §8: spam is in `junk list` only).
pub fn list_conversations(trees: &Trees) -> Result<Vec<ConversationJson>, StoreError> {
    let mut out = Vec::new();
    for kv in trees.get(TreeId::Conversations).iter() {
        let (k, v) = kv?;
        let rec: ConversationRecord = records::decode(TreeId::Conversations, &k, &v)?;
        if rec.junk || rec.merged_into.is_some() {
            continue;
        }
        let msgs = messages_of(trees, rec.id)?;
        out.push(conversation_view(&rec, &msgs));
    }
    Ok(out)
}

pub fn conversation_detail(
    trees: &Trees,
    id: ConversationId,
) -> Result<Option<ConversationDetail>, StoreError> {
    let Some(rec) = conversation_record(trees, id)? else {
        return Ok(None);
    };
    let msgs = messages_of(trees, id)?;
    let mut reasons = threaded_by_of(trees, id)?.into_iter();
    Ok(Some(ConversationDetail {
        conversation: conversation_view(&rec, &msgs),
        linked_to: rec.linked_to,
        junk: rec.junk,
        merged_into: rec.merged_into,
        messages: msgs
            .iter()
            .map(|m| message_view(m, reasons.next().flatten()))
            .collect(),
    }))
}

fn contact_view(trees: &Trees, rec: &ContactRecord) -> Result<ContactJson, StoreError> {
    let conversations = trees
        .get(TreeId::ContactConvs)
        .scan_prefix(keys::contact_convs_prefix(&rec.email))
        .map(|kv| {
            let (k, _) = kv?;
            let id = keys::suffix_u64(&k)
                .ok_or_else(|| records::corrupt(TreeId::ContactConvs, &k, "short key"))?;
            Ok(ConversationId(id))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ContactJson {
        email: rec.email.clone(),
        name: rec.name.clone(),
        first_seen: rfc3339(rec.first_seen),
        last_seen: rfc3339(rec.last_seen),
        conversations,
    })
}

pub fn list_contacts(trees: &Trees) -> Result<Vec<ContactJson>, StoreError> {
    trees
        .get(TreeId::Contacts)
        .iter()
        .map(|kv| {
            let (k, v) = kv?;
            let rec: ContactRecord = records::decode(TreeId::Contacts, &k, &v)?;
            contact_view(trees, &rec)
        })
        .collect()
}

pub fn contact_detail(trees: &Trees, email: &str) -> Result<Option<ContactDetail>, StoreError> {
    let k = keys::contact(email);
    let Some(v) = trees.get(TreeId::Contacts).get(&k)? else {
        return Ok(None);
    };
    let rec: ContactRecord = records::decode(TreeId::Contacts, &k, &v)?;
    let timeline = trees
        .get(TreeId::Timeline)
        .scan_prefix(keys::timeline_prefix(&rec.email))
        .map(|kv| {
            let (k, v) = kv?;
            let t: TimelineRecord = records::decode(TreeId::Timeline, &k, &v)?;
            Ok(TimelineEntry {
                at: rfc3339(t.at),
                kind: t.kind,
                conversation: t.conversation,
                message_id: t.message_id,
                detail: t.detail,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(ContactDetail {
        contact: contact_view(trees, &rec)?,
        timeline,
    }))
}
