//! The pipeline for an accepted message: parse → decide conversations per inbox →
//! contacts → one durable store write. Also the one place where ingest failures become
//! SMTP replies.

use std::{collections::BTreeMap, fmt, sync::Arc};

use crate::{
    config::Config,
    contacts,
    message::{self, MessageFacts},
    reload::Reloadable,
    smtp::{reply::Reply, session::Envelope},
    store::{
        Delivery, DeliveryOutcome, Direction, IncomingMessage, IngestOutcome, Store, StoreError,
        ThreadDecision, ThreadLookup,
    },
    threading::{self, ThreadInput},
};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unparseable message: {0}")]
    Unparseable(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("message analysis failed: {0}")]
    Analysis(String),
}

impl IngestError {
    /// The SMTP answer for this failure. Internals never leak to the peer.
    pub fn reply(&self) -> Reply {
        match self {
            IngestError::Unparseable(why) => {
                Reply::new(550, (5, 6, 0), format!("Message refused: {why}"))
            }
            IngestError::Store(_) | IngestError::Analysis(_) => Reply::local_error(),
        }
    }

    /// Peer faults log at info, ours at warn.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, IngestError::Unparseable(_))
    }
}

/// What a stored message became, for the `250` text and the log.
#[derive(Debug)]
pub struct Accepted(pub IngestOutcome);

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (inbox, outcome) in &self.0.deliveries {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match outcome {
                DeliveryOutcome::Stored { conversation, .. } => {
                    write!(f, "{inbox} #{}", conversation.0)?
                }
                DeliveryOutcome::Duplicate { conversation } => {
                    write!(f, "{inbox} #{} (duplicate)", conversation.0)?
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Ingest {
    store: Store,
    config: Arc<Reloadable<Config>>,
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(store: Store, config: Arc<Reloadable<Config>>) -> Ingest {
        Ingest { store, config }
    }

    /// Stores `raw` (trace headers already prepended) for every inbox of the envelope and
    /// returns only once it is durable.
    pub async fn deliver(
        &self,
        envelope: &Envelope,
        raw: Vec<u8>,
        received_at: i64,
        session_id: u64,
    ) -> Result<Accepted, IngestError> {
        let config = self.config.current();
        let mail_from = envelope.mail_from.clone();
        // Parsing runs on a blocking thread under catch_unwind: it sees attacker bytes.
        let (raw, facts) = tokio::task::spawn_blocking(move || {
            let facts = std::panic::catch_unwind(|| message::analyze(&raw, &mail_from));
            (raw, facts)
        })
        .await
        .map_err(|e| IngestError::Analysis(e.to_string()))?;
        let facts = match facts {
            Ok(Ok(f)) => Arc::new(f),
            Ok(Err(e)) => return Err(IngestError::Unparseable(e.to_string())),
            Err(_) => return Err(IngestError::Analysis("parser panicked".into())),
        };
        let synthesized = format!(
            "teamgate.{received_at:x}.{session_id}@{}",
            config.server.hostname
        );
        let mut summary = message::summary(&facts, Direction::In, &synthesized);
        // Our own X-Loop coming back (a customer's auto-responder quoting our reply, a
        // forwarding loop): filed, but treated as automatic so nothing reacts to it.
        if facts
            .x_loop
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(&config.server.hostname))
        {
            summary.automatic = true;
        }
        let team: Arc<[String]> = config
            .inboxes
            .iter()
            .flat_map(|i| i.addresses.iter().cloned())
            .collect();
        let deliveries = inbox_deliveries(envelope)
            .into_iter()
            .map(|(inbox, plus)| delivery(inbox, plus, facts.clone(), team.clone(), received_at))
            .collect();
        let incoming = IncomingMessage {
            raw,
            received_at,
            mail_from: envelope.mail_from.clone(),
            rcpts: envelope.rcpts.iter().map(|r| r.address.clone()).collect(),
            summary,
            deliveries,
        };
        Ok(Accepted(self.store.ingest(incoming).await?))
    }
}

/// One delivery per distinct inbox; a `+c123` tag on any of its recipients names a
/// conversation.
fn inbox_deliveries(envelope: &Envelope) -> BTreeMap<String, Option<u64>> {
    let mut inboxes: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for rcpt in &envelope.rcpts {
        // Outside recipients (submission) are not deliveries into an inbox.
        let Some(inbox) = &rcpt.inbox else { continue };
        let plus = rcpt.tag.as_deref().and_then(conversation_tag);
        let entry = inboxes.entry(inbox.clone()).or_default();
        if entry.is_none() {
            *entry = plus;
        }
    }
    inboxes
}

/// `c123` → 123.
fn conversation_tag(tag: &str) -> Option<u64> {
    let digits = tag.strip_prefix('c').or_else(|| tag.strip_prefix('C'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn delivery(
    inbox: String,
    plus_conversation: Option<u64>,
    facts: Arc<MessageFacts>,
    team_addresses: Arc<[String]>,
    now: i64,
) -> Delivery {
    let contacts = contacts::inbound_touches(&facts, contacts::customer_of(&facts));
    let keys = threading::thread_keys(&facts);
    let decide_inbox = inbox.clone();
    let decide = Box::new(move |idx: &dyn ThreadLookup| -> ThreadDecision {
        let sender = facts.from.as_ref().map(|a| a.email.as_str());
        let input = ThreadInput {
            facts: &facts,
            inbox: &decide_inbox,
            plus_conversation,
            sender,
            customer: contacts::customer_of(&facts).map(|a| a.email.as_str()),
            now,
            subject_window_secs: threading::SUBJECT_WINDOW_SECS,
        };
        // Team addresses let reply-alls from new people in the thread join (threading.rs).
        threading::decide_with_team(&input, &team_addresses, idx)
    });
    Delivery {
        inbox,
        decide,
        keys,
        contacts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_tags() {
        assert_eq!(conversation_tag("c123"), Some(123));
        assert_eq!(conversation_tag("C7"), Some(7));
        assert_eq!(conversation_tag("c"), None);
        assert_eq!(conversation_tag("sales"), None);
        assert_eq!(conversation_tag("c12x"), None);
    }
}
