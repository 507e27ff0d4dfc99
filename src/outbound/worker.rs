//! The delivery worker: one scheduler task that picks due queue entries and runs at most
//! [`MAX_CONCURRENT_DELIVERIES`] deliveries at once. Woken by [`super::Outbound::wake`]
//! (and by the store after `enqueue`/`queue_retry`), by a finished delivery, or when the
//! next entry falls due. Stops on shutdown; a delivery cut short already has its next
//! attempt persisted (GUIDE §3.5 step 4), so it is retried after a restart.
//!
//! Per entry and attempt: persist the attempt (count + next attempt) → DKIM-sign → per
//! recipient domain (or all to the relay) try the hosts in order → bounce recipients
//! that failed for good into the conversation → record the results.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::client::{self, Envelope, SessionResult, Timeouts};
use super::dkim;
use super::dsn::{self, Bounce};
use super::resolve::{self, Resolve, ResolveError, Target};
use super::retry;
use crate::config::Config;
use crate::mail::clock;
use crate::message;
use crate::metrics::{DeliveryResult, Metrics};
use crate::reload::Reloadable;
use crate::store::{
    Delivery, Direction, IncomingMessage, QueueId, QueueItem, RecipientOutcome, Store, StoreError,
    ThreadKeys, ThreadLookup, ThreadRule, Threading,
};

/// Deliveries in flight at once. Eight keeps a burst of replies moving without opening
/// dozens of connections to one provider (which many rate-limit).
pub const MAX_CONCURRENT_DELIVERIES: usize = 8;
/// Entries taken per scan of the due index.
const SCAN_BATCH: usize = 64;
/// Longest sleep without a reason to wake: bounds the effect of a clock step.
const MAX_IDLE: Duration = Duration::from_secs(300);
/// Pause after a scan that could not dispatch a due entry (a store error), so a broken
/// entry cannot make the scheduler spin.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Everything a delivery needs; shared by the scheduler and its delivery tasks.
pub struct Worker {
    pub store: Store,
    pub config: Arc<Reloadable<Config>>,
    pub resolver: Arc<dyn Resolve>,
    pub tls: TlsConnector,
    pub timeouts: Timeouts,
    pub wake: Arc<Notify>,
    /// Counts attempts per recipient by result.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("resolver", &self.resolver)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// Ids of entries being delivered right now (never dispatched twice at once).
type InFlight = Arc<Mutex<HashSet<QueueId>>>;

fn in_flight_has(set: &InFlight, id: QueueId) -> bool {
    set.lock().map(|s| s.contains(&id)).unwrap_or(false)
}

fn in_flight_len(set: &InFlight) -> usize {
    set.lock().map(|s| s.len()).unwrap_or(0)
}

fn in_flight_set(set: &InFlight, id: QueueId, present: bool) {
    // A poisoned lock only means a delivery task panicked mid-update; the set is fine.
    let mut s = match set.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    if present {
        s.insert(id);
    } else {
        s.remove(&id);
    }
}

/// The scheduler loop; returns on shutdown.
pub async fn run(worker: Arc<Worker>, tasks: TaskTracker, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    let in_flight: InFlight = Arc::default();
    loop {
        let now = clock::unix_now();
        let limit = SCAN_BATCH + in_flight_len(&in_flight);
        let store = worker.store.clone();
        let due = tokio::task::spawn_blocking(move || store.queue_due(now, limit))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))
            .and_then(|r| r);
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "outbound: cannot read the queue");
                Vec::new()
            }
        };
        let mut dispatched = 0usize;
        for item in due {
            if in_flight_has(&in_flight, item.id) {
                continue;
            }
            // Backpressure: wait for a free delivery slot.
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let Some(item) = mark_attempt(&worker, item).await else {
                continue;
            };
            dispatched += 1;
            in_flight_set(&in_flight, item.id, true);
            let (w, set, stop) = (worker.clone(), in_flight.clone(), shutdown.clone());
            tasks.spawn(async move {
                let id = item.id;
                tokio::select! {
                    _ = deliver_item(&w, item) => {}
                    // Cut short: the next attempt is already persisted.
                    _ = stop.cancelled() => debug!(id = id.0, "outbound: delivery cut by shutdown"),
                }
                in_flight_set(&set, id, false);
                drop(permit);
                w.wake.notify_one();
            });
        }
        let wait = next_wait(&worker.store, &in_flight, dispatched).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = worker.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to sleep: until the soonest entry not in flight falls due.
async fn next_wait(store: &Store, in_flight: &InFlight, dispatched: usize) -> Duration {
    let limit = in_flight_len(in_flight) + 1;
    let store = store.clone();
    let schedule = tokio::task::spawn_blocking(move || store.queue_schedule(limit)).await;
    let Ok(Ok(schedule)) = schedule else {
        return ERROR_PAUSE;
    };
    let Some((at, _)) = schedule
        .into_iter()
        .find(|(_, id)| !in_flight_has(in_flight, *id))
    else {
        return MAX_IDLE;
    };
    let due = Duration::from_secs(u64::try_from(at).unwrap_or(0));
    let now = clock::since_epoch();
    if due <= now {
        // More due work than one scan took: go on at once, unless nothing could be
        // dispatched (then something is wrong with the entry; do not spin).
        return if dispatched > 0 {
            Duration::ZERO
        } else {
            ERROR_PAUSE
        };
    }
    // A little past the second, so the entry is due when we look.
    (due - now + Duration::from_millis(20)).min(MAX_IDLE)
}

/// Persists the attempt before dialing; None if the entry is gone or the store fails.
async fn mark_attempt(worker: &Worker, item: QueueItem) -> Option<QueueItem> {
    let config = worker.config.current();
    let attempt = item.attempts.saturating_add(1);
    let next = retry::next_attempt(clock::unix_now(), attempt, &config.outbound.retry_schedule);
    match worker.store.queue_mark_attempt(item.id, next).await {
        Ok(item) => Some(item),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => {
            warn!(id = item.id.0, error = %e, "outbound: cannot record a delivery attempt");
            None
        }
    }
}

/// One attempt for one entry (already counted by [`mark_attempt`]).
pub async fn deliver_item(worker: &Worker, item: QueueItem) {
    let config = worker.config.current();
    let last = retry::is_last_attempt(item.attempts, &config.outbound.retry_schedule);
    let store = worker.store.clone();
    let id = item.id;
    let raw = tokio::task::spawn_blocking(move || store.queue_message(id))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))
        .and_then(|r| r);
    let (raw, results) = match raw {
        Ok(raw) => {
            let results = match sign(&config, &raw).await {
                Ok(signed) => deliver_message(worker, &config, &item, &signed).await,
                Err(e) => {
                    warn!(id = id.0, error = %e, "outbound: not sending unsigned mail");
                    all(&item.recipients, RecipientOutcome::Deferred(e))
                }
            };
            (raw, results)
        }
        Err(e) => {
            warn!(id = id.0, error = %e, "outbound: cannot read the queued message");
            let text = format!("cannot read the queued message: {e}");
            (
                Vec::new(),
                all(&item.recipients, RecipientOutcome::Deferred(text)),
            )
        }
    };
    let results = retry::finalize(results, last);
    let failed: Vec<(String, String)> = results
        .iter()
        .filter_map(|(r, o)| match o {
            RecipientOutcome::Failed(e) => Some((r.clone(), e.clone())),
            _ => None,
        })
        .collect();
    // Bounce before recording: a crash in between bounces again after the retry, and
    // the bounce's Message-ID makes the store keep it once.
    if !failed.is_empty() {
        bounce(worker, &config, &item, &raw, &failed).await;
    }
    for (rcpt, outcome) in &results {
        worker.metrics.delivery_attempt(match outcome {
            RecipientOutcome::Delivered => DeliveryResult::Delivered,
            RecipientOutcome::Deferred(_) => DeliveryResult::Deferred,
            RecipientOutcome::Failed(_) => DeliveryResult::Bounced,
        });
        match outcome {
            RecipientOutcome::Delivered => {
                info!(id = id.0, rcpt = %rcpt, attempt = item.attempts, "outbound: delivered")
            }
            RecipientOutcome::Deferred(e) => {
                info!(id = id.0, rcpt = %rcpt, attempt = item.attempts, error = %e, "outbound: deferred")
            }
            RecipientOutcome::Failed(e) => {
                info!(id = id.0, rcpt = %rcpt, attempt = item.attempts, error = %e, "outbound: failed")
            }
        }
    }
    if let Err(e) = worker.store.queue_record(id, results).await {
        warn!(id = id.0, error = %e, "outbound: cannot record delivery results");
    }
}

fn all(recipients: &[String], outcome: RecipientOutcome) -> Vec<(String, RecipientOutcome)> {
    recipients
        .iter()
        .map(|r| (r.clone(), outcome.clone()))
        .collect()
}

/// The bytes to send: DKIM-signed when `[outbound]` has a key.
async fn sign(config: &Config, raw: &[u8]) -> Result<Vec<u8>, String> {
    let Some(dkim_config) = config.outbound.dkim.clone() else {
        return Ok(raw.to_vec());
    };
    let raw = raw.to_vec();
    tokio::task::spawn_blocking(move || {
        let key = dkim::load_key(&dkim_config.key)?;
        dkim::sign(&raw, &dkim_config.selector, key)
    })
    .await
    .map_err(|e| format!("DKIM signing: {e}"))?
    .map_err(|e| e.to_string())
}

/// Delivers one attempt's bytes to every pending recipient; one outcome each.
async fn deliver_message(
    worker: &Worker,
    config: &Config,
    item: &QueueItem,
    message: &[u8],
) -> Vec<(String, RecipientOutcome)> {
    let mut results = Vec::with_capacity(item.recipients.len());
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let relay = config.outbound.relay.clone();
    if relay.is_some() {
        groups.insert(String::new(), item.recipients.clone());
    } else {
        for rcpt in &item.recipients {
            match crate::mail::address::domain_of(rcpt) {
                Some(domain) => groups.entry(domain).or_default().push(rcpt.clone()),
                None => results.push((
                    rcpt.clone(),
                    RecipientOutcome::Failed(format!("{rcpt}: address has no domain")),
                )),
            }
        }
    }
    for (domain, rcpts) in groups {
        let targets = match &relay {
            Some((host, port)) => resolve::relay_target(host, *port).await.map(|t| vec![t]),
            None => worker.resolver.resolve(&domain).await,
        };
        let targets = match targets {
            Ok(t) => t,
            Err(ResolveError::Permanent(e)) => {
                results.extend(all(&rcpts, RecipientOutcome::Failed(e)));
                continue;
            }
            Err(ResolveError::Temporary(e)) => {
                results.extend(all(&rcpts, RecipientOutcome::Deferred(e)));
                continue;
            }
        };
        let env = Envelope {
            helo: &config.server.hostname,
            mail_from: &item.mail_from,
            recipients: &rcpts,
            message,
        };
        results.extend(try_hosts(worker, &targets, &env).await);
    }
    results
}

/// The hosts in order until one runs a transaction; all deferred if none does.
async fn try_hosts(
    worker: &Worker,
    targets: &[Target],
    env: &Envelope<'_>,
) -> Vec<(String, RecipientOutcome)> {
    let mut last = "no mail host to try".to_owned();
    for target in targets {
        match client::deliver_to(target, env, &worker.tls, &worker.timeouts).await {
            SessionResult::Done(results) => return results,
            SessionResult::HostFailed(e) => last = e,
        }
    }
    all(env.recipients, RecipientOutcome::Deferred(last))
}

/// Stores a DSN for `failed` into the entry's conversation (SPEC §6), unless the
/// message is itself automatic (never bounce a bounce).
async fn bounce(
    worker: &Worker,
    config: &Config,
    item: &QueueItem,
    raw: &[u8],
    failed: &[(String, String)],
) {
    let id = item.id;
    if !raw.is_empty() && !dsn::may_bounce(&item.mail_from, raw) {
        info!(id = id.0, "outbound: automatic message failed; no bounce");
        return;
    }
    if item.mail_from.trim().is_empty() {
        return;
    }
    let now = clock::unix_now();
    let b = Bounce {
        hostname: &config.server.hostname,
        queue_id: id,
        original: raw,
        message_id: &item.message_id,
        mail_from: &item.mail_from,
        agent: &item.agent,
        failed,
        queued_at: item.created,
        now,
    };
    let (bytes, bounce_id) = match dsn::build(&b) {
        Ok(built) => built,
        Err(e) => {
            warn!(id = id.0, error = %e, "outbound: cannot build a bounce");
            return;
        }
    };
    let Some((inbox, decide)) = bounce_target(worker, config, item) else {
        warn!(
            id = id.0,
            message_id = %item.message_id,
            "outbound: bounce has no conversation or inbox to go to; logged only"
        );
        return;
    };
    let facts = match message::analyze(&bytes, "") {
        Ok(f) => f,
        Err(e) => {
            warn!(id = id.0, error = %e, "outbound: cannot analyse our own bounce");
            return;
        }
    };
    let mut summary = message::summary(&facts, Direction::In, &bounce_id);
    summary.automatic = true;
    let incoming = IncomingMessage {
        raw: bytes,
        received_at: now,
        // Bounces travel with the null reverse-path (RFC 5321 §4.5.5).
        mail_from: String::new(),
        rcpts: vec![item.mail_from.clone()],
        summary,
        deliveries: vec![Delivery {
            inbox,
            decide,
            keys: ThreadKeys::default(),
            // MAILER-DAEMON never becomes a contact (SPEC §4).
            contacts: Vec::new(),
        }],
        quarantined: None,
    };
    match worker.store.ingest(incoming).await {
        Ok(outcome) => info!(id = id.0, outcome = ?outcome.deliveries, "outbound: bounce stored"),
        Err(e) => warn!(id = id.0, error = %e, "outbound: cannot store the bounce"),
    }
}

/// The inbox and threading decision for a bounce: the entry's conversation when it still
/// exists; else the inbox owning the sender address, joining the conversation that holds
/// the original message if there is one.
fn bounce_target(
    worker: &Worker,
    config: &Config,
    item: &QueueItem,
) -> Option<(String, crate::store::Decide)> {
    if let Some(conv) = item.conversation {
        match worker.store.conversation_info(conv) {
            Ok(Some(info)) => {
                let decide: crate::store::Decide = Box::new(move |_: &dyn ThreadLookup| {
                    Threading::join(conv, ThreadRule::References, "a bounce of its reply")
                });
                return Some((info.inbox, decide));
            }
            Ok(None) => {}
            Err(e) => {
                warn!(conversation = conv.0, error = %e, "outbound: reading the conversation")
            }
        }
    }
    let sender = item.mail_from.to_lowercase();
    let inbox = config
        .inboxes
        .iter()
        .find(|i| i.addresses.contains(&sender))?
        .name
        .clone();
    let (decide_inbox, original) = (inbox.clone(), item.message_id.clone());
    let decide: crate::store::Decide =
        Box::new(
            move |idx: &dyn ThreadLookup| match idx.by_message_id(&decide_inbox, &original) {
                Some(conv) => Threading::join(
                    conv,
                    ThreadRule::References,
                    format!("<{original}> (a bounce of it)"),
                ),
                None => Threading::new_conversation(
                    None,
                    format!("a bounce of <{original}>, which is in no conversation"),
                ),
            },
        );
    Some((inbox, decide))
}
