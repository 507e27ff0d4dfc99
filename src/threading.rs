//! Which conversation an inbound message joins (SPEC §4), as a pure function over a
//! read-only [`ThreadLookup`], with the reason ([`Threading::by`], SPEC §8 `threaded_by`).
//!
//! Evidence, strongest first:
//! 1. `In-Reply-To`, then `References` newest first, naming a message of this inbox; a
//!    conversation that already holds a reply to this message (the reply came first); a
//!    conversation holding another reply to a parent named here (siblings whose parent
//!    has not arrived); for a bounce/DSN the Message-ID of the message it reports on.
//!    Header evidence joins whoever sends it (a colleague joining, the customer's second
//!    address, a list reply). The one exception is an announcement: a reply to the team's
//!    own message that was addressed to several outside recipients joins only when its
//!    sender is a participant; other replies each start a conversation linked to it.
//!    A message reusing the Message-ID of a different stored one gets no indirect
//!    evidence (the reply-came-first and sibling rules): its headers are copies.
//! 2. A forward's enclosed original, by its Message-ID (and, attached whole, its subject).
//! 3. A `[#123]` tag in the subject naming a conversation of this inbox.
//! 4. A `+c123` sub-address on the recipient naming a conversation of this inbox.
//! 5. The Outlook `Thread-Index` thread key (first 22 bytes).
//! 6. The subject rule, the weakest, for replies only (a freshly written message or a
//!    forward is new by its sender's own account): a specific (not generic, see
//!    [`is_generic_subject`]) normalised subject from the same contact, with Date headers
//!    (clamped by arrival) within the window. A forward's subject is keyed on its
//!    forwarder, not the credited original sender, so the forwarder's later reply finds
//!    it while forwards of one customer mail by several people stay apart. Then the same
//!    subject in a conversation the sender takes part in (a colleague of the customer, a
//!    reply-all to the same outside people) whose client dropped In-Reply-To.
//!
//! A message with no evidence starts a new conversation.

use crate::mail::address::{domain_of, is_freemail_domain};
use crate::mail::subject::{is_generic_subject, normalize_subject};
use crate::message::MessageFacts;
use crate::store::model::{
    ConversationId, ConversationInfo, ThreadKeys, ThreadLookup, ThreadRule, Threading,
};

/// Default window for subject matching: 14 days.
pub const SUBJECT_WINDOW_SECS: i64 = 14 * 24 * 3600;

/// The time a message is compared by: its Date, never later than its arrival (a clock
/// in the future cannot pull it forward), else the arrival. Imports and late mail keep
/// their own time, so they do not glue to whatever arrived the same day.
pub fn message_time(f: &MessageFacts, arrival: i64) -> i64 {
    f.date.map_or(arrival, |d| d.min(arrival))
}

/// Index keys of a message, written with it for later lookups.
pub fn thread_keys(f: &MessageFacts, arrival: i64) -> ThreadKeys {
    let subject_base = Some(f.subject_base.clone()).filter(|s| !is_generic_subject(s));
    ThreadKeys {
        subject_base,
        thread_index: f.thread_index.clone(),
        // SPEC §4: the subject rule applies to a forward's forwarder.
        subject_contact: f
            .forward
            .as_ref()
            .and_then(|fw| fw.forwarder.as_ref())
            .map(|a| a.email.clone()),
        at: Some(message_time(f, arrival)),
    }
}

/// Everything [`decide`] needs besides the index.
#[derive(Debug, Clone, Copy)]
pub struct ThreadInput<'a> {
    pub facts: &'a MessageFacts,
    pub inbox: &'a str,
    /// From a `+c123` sub-address on the RCPT.
    pub plus_conversation: Option<u64>,
    /// Lower-cased email credited as sender (the From).
    pub sender: Option<&'a str>,
    /// The contact this message is credited to: From, or the original sender of a forward.
    pub customer: Option<&'a str>,
    /// Arrival time (unix seconds).
    pub now: i64,
    pub subject_window_secs: i64,
    /// Sent from another inbox's address (an agent's mail handed over between inboxes):
    /// it starts a conversation of its own, so no agent writes into a conversation of an
    /// inbox they do not work in, by any header, tag or sub-address.
    pub from_other_inbox: bool,
}

/// Whether the sender takes part in `info`: its customer or a participant, or shares the
/// customer's (non-freemail) domain, or the message is addressed to an outside
/// participant of it (a reply-all or mailing-list discussion).
fn is_participant(info: &ConversationInfo, input: &ThreadInput<'_>, team: &[String]) -> bool {
    let known = |e: &str| {
        info.customer
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(e))
            || info.participants.iter().any(|p| p.eq_ignore_ascii_case(e))
    };
    if let Some(sender) = input.sender {
        if known(sender) {
            return true;
        }
        if let (Some(a), Some(b)) = (
            domain_of(sender),
            info.customer.as_deref().and_then(domain_of),
        ) && a == b
            && !is_freemail_domain(&a)
        {
            return true;
        }
    }
    let f = input.facts;
    f.to.iter()
        .chain(&f.cc)
        .map(|a| a.email.as_str())
        .filter(|e| Some(*e) != input.sender && !is_team(team, e))
        .any(known)
}

fn is_team(team: &[String], email: &str) -> bool {
    team.iter().any(|t| t.eq_ignore_ascii_case(email))
}

/// The conversation, when it takes mail of this inbox (its own, or one it left).
fn reachable(
    input: &ThreadInput<'_>,
    idx: &dyn ThreadLookup,
    id: ConversationId,
) -> Option<ConversationInfo> {
    idx.conversation(id)
        .filter(|info| info.reachable_from(input.inbox))
}

/// Message-IDs this message names, strongest first: In-Reply-To, then References newest
/// first.
fn named_ids(f: &MessageFacts) -> impl Iterator<Item = (ThreadRule, &str)> {
    let irt = f.in_reply_to.iter().map(|id| (ThreadRule::InReplyTo, id));
    let refs = f
        .references
        .iter()
        .rev()
        .map(|id| (ThreadRule::References, id));
    irt.chain(refs).map(|(rule, id)| (rule, id.as_str()))
}

/// Rule 1: a message this one names. A reply to an announcement (the team's message to
/// several outside recipients) from someone not in it starts a linked conversation.
fn by_headers(
    input: &ThreadInput<'_>,
    team: &[String],
    idx: &dyn ThreadLookup,
) -> Option<Threading> {
    let (f, inbox) = (input.facts, input.inbox);
    for (rule, id) in named_ids(f) {
        let Some(conv) = idx.by_message_id(inbox, id) else {
            continue;
        };
        let Some(info) = reachable(input, idx, conv) else {
            continue;
        };
        let announcement = idx.known_message(inbox, id).is_some_and(|m| {
            m.outgoing && m.recipients.iter().filter(|r| !is_team(team, r)).count() >= 2
        });
        if announcement && !is_participant(&info, input, team) {
            return Some(Threading::new_conversation(
                Some(conv),
                format!("<{id}>: a reply to an announcement from someone not in it"),
            ));
        }
        return Some(Threading::join(conv, rule, format!("<{id}>")));
    }
    // What follows is indirect evidence, about this message's own Message-ID and its
    // siblings. A message reusing the Message-ID of a different stored one (templates,
    // broken generators) has copied headers too: they are not evidence.
    if f.message_id
        .as_deref()
        .is_some_and(|mid| idx.by_message_id(inbox, mid).is_some())
    {
        return None;
    }
    // The reply came first: a conversation already names this message.
    if let Some(mid) = f.message_id.as_deref()
        && let Some(conv) = idx.referencing(inbox, mid)
        && reachable(input, idx, conv).is_some()
    {
        return Some(Threading::join(
            conv,
            ThreadRule::References,
            format!("<{mid}> (named by a reply already there)"),
        ));
    }
    // A sibling: another reply to the same parent, which has not arrived.
    for (rule, id) in named_ids(f) {
        if let Some(conv) = idx.referencing(inbox, id)
            && reachable(input, idx, conv).is_some()
        {
            return Some(Threading::join(
                conv,
                rule,
                format!("<{id}> (also named by a message there)"),
            ));
        }
    }
    // A bounce or report on one of our messages: from a mailer daemon by nature.
    let reported = f.dsn_reported_message_id.as_deref()?;
    let conv = idx.by_message_id(inbox, reported)?;
    reachable(input, idx, conv)?;
    Some(Threading::join(
        conv,
        ThreadRule::References,
        format!("<{reported}> (the message this report is about)"),
    ))
}

/// Rule 2: a forward whose enclosed original is a known message. When the original is
/// attached whole, its subject must be the known message's too: a Message-ID alone can
/// be reused.
fn by_forward_original(input: &ThreadInput<'_>, idx: &dyn ThreadLookup) -> Option<Threading> {
    let fw = input.facts.forward.as_ref()?;
    let mid = fw.original_message_id.as_deref()?;
    let conv = idx.by_message_id(input.inbox, mid)?;
    reachable(input, idx, conv)?;
    if let Some(subject) = &fw.original_subject {
        let known = idx.known_message(input.inbox, mid)?;
        if normalize_subject(&known.subject) != normalize_subject(subject) {
            return None;
        }
    }
    Some(Threading::join(
        conv,
        ThreadRule::ForwardOriginal,
        format!("<{mid}>"),
    ))
}

/// Rule 6: a reply's subject from the same contact, Date headers within the window.
fn by_subject(
    input: &ThreadInput<'_>,
    team: &[String],
    idx: &dyn ThreadLookup,
) -> Option<Threading> {
    let f = input.facts;
    let base = f.subject_base.as_str();
    // A freshly written message (no Re:, no In-Reply-To) or a forward is new by its
    // sender's own account, whatever its subject: only header evidence ties those.
    if is_generic_subject(base) || !f.is_reply || f.forward.is_some() {
        return None;
    }
    let window = input.subject_window_secs.unsigned_abs();
    let t = message_time(f, input.now);
    let evidence = || format!("\"{base}\"");
    // Never a forward here, so the contact is the customer (the From).
    if let Some(contact) = input.customer
        && let Some((conv, last)) = idx.by_subject(input.inbox, base, contact)
        && t.abs_diff(last) <= window
        && reachable(input, idx, conv).is_some()
    {
        return Some(Threading::join(conv, ThreadRule::Subject, evidence()));
    }
    // A reply whose client dropped In-Reply-To, from someone who takes part in a
    // conversation with this subject. Newest matching conversation wins.
    idx.by_subject_any(input.inbox, base)
        .into_iter()
        .filter(|(_, last)| t.abs_diff(*last) <= window)
        .find(|(conv, _)| {
            reachable(input, idx, *conv).is_some_and(|i| is_participant(&i, input, team))
        })
        .map(|(conv, _)| {
            Threading::join(
                conv,
                ThreadRule::Subject,
                format!(
                    "{} (a reply in a thread the sender takes part in)",
                    evidence()
                ),
            )
        })
}

/// The threading decision for one inbox's copy of a message, knowing the team's own
/// addresses (`[[inbox]] addresses`, lower-cased): they are not "outside recipients" of
/// an announcement, nor outside participants of a reply-all.
pub fn decide(input: &ThreadInput<'_>, team: &[String], idx: &dyn ThreadLookup) -> Threading {
    let f = input.facts;
    if input.from_other_inbox {
        return Threading::new_conversation(None, "mail from another inbox starts its own");
    }
    if let Some(t) = by_headers(input, team, idx) {
        return t;
    }
    if let Some(t) = by_forward_original(input, idx) {
        return t;
    }
    let explicit = [
        (ThreadRule::Tag, f.subject_tag),
        (ThreadRule::SubAddress, input.plus_conversation),
    ];
    for (rule, n) in explicit {
        let Some(n) = n else { continue };
        if reachable(input, idx, ConversationId(n)).is_some() {
            let evidence = match rule {
                ThreadRule::Tag => format!("[#{n}]"),
                _ => format!("+c{n}"),
            };
            return Threading::join(ConversationId(n), rule, evidence);
        }
    }
    if let Some(key) = f.thread_index.as_deref()
        && let Some(conv) = idx.by_thread_index(input.inbox, key)
        && reachable(input, idx, conv).is_some()
    {
        let hex: String = key.iter().take(6).map(|b| format!("{b:02x}")).collect();
        return Threading::join(conv, ThreadRule::ThreadIndex, format!("{hex}…"));
    }
    if let Some(t) = by_subject(input, team, idx) {
        return t;
    }
    Threading::new_conversation(None, new_reason(f))
}

/// What a message that starts a conversation had to go on.
fn new_reason(f: &MessageFacts) -> String {
    if f.forward.is_some() {
        "a forward with no header tying it to a known message".into()
    } else if !f.in_reply_to.is_empty() || !f.references.is_empty() {
        "names no known message, and no other evidence".into()
    } else if is_generic_subject(&f.subject_base) {
        "no headers to follow, and a generic or empty subject".into()
    } else {
        "no headers to follow, and no recent conversation with this subject and contact".into()
    }
}

#[cfg(test)]
mod tests;
