//! Learning from agents' gestures, built in (the IMAPSieve + `sa-learn` pattern of
//! Dovecot deployments): "move to Junk" teaches spamd's Bayes learner the message as spam,
//! a move out of Junk ("not spam") as ham. The gesture only queues the lesson durably
//! (`Store::learn_enqueue`); [`run`] sends it with the SPAMC `TELL` command, as
//! `spamc -L spam|ham` does, and retries from the queue while spamd is down. spamd must
//! run with `--allow-tell`.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::spamd::{self, MAX_SCAN_BYTES};
use crate::config::Config;
use crate::mail::clock::unix_now;
use crate::metrics::{LearnResult, Metrics};
use crate::reload::Reloadable;
use crate::store::{LearnClass, LearnTask, Store, StoreError};

/// Lessons sent per pass over the queue.
const BATCH: usize = 64;
/// Bound on one TELL (spamd learns a message in well under a second).
const TELL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest sleep between looks at the queue when nothing wakes the learner.
const IDLE_WAIT: Duration = Duration::from_secs(300);

/// Teaches spamd at `addr` that `raw` is `class` (`Set: local`, the Bayes database).
/// Unreachable, timed out or refused (spamd without `--allow-tell`): an error to retry.
pub async fn tell(addr: &str, raw: &[u8], class: LearnClass) -> Result<(), String> {
    let head = format!(
        "TELL SPAMC/1.5\r\nMessage-class: {}\r\nSet: local\r\nContent-length: {}\r\nUser: teamgate\r\n\r\n",
        class.as_str(),
        raw.len()
    );
    let response = tokio::time::timeout(TELL_TIMEOUT, spamd::exchange(addr, &head, raw))
        .await
        .map_err(|_| format!("{addr}: no answer within {TELL_TIMEOUT:?}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    check_response(&response).map_err(|e| format!("{addr}: {e}"))
}

/// `SPAMD/1.1 0 EX_OK` (with `DidSet: local`, or without it when the message was learned
/// as that class before) is success; any other code is spamd's refusal.
fn check_response(response: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(response);
    let status = text.lines().next().unwrap_or_default().trim();
    let mut words = status.split_whitespace();
    match (words.next(), words.next()) {
        (Some(v), Some("0")) if v.starts_with("SPAMD/") => Ok(()),
        (Some(v), Some(_)) if v.starts_with("SPAMD/") => Err(format!("spamd refused: {status}")),
        _ => Err(format!("bad answer {status:?}")),
    }
}

/// The learner: sends queued lessons while learning is on, until shutdown.
pub async fn run(
    store: Store,
    config: Arc<Reloadable<Config>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let wake = store.learn_wakeup();
    loop {
        let filter = config.current().filter.clone();
        if let (true, Some(addr)) = (filter.learns(), filter.spamd.as_deref()) {
            let now = unix_now();
            let s = store.clone();
            let due = tokio::task::spawn_blocking(move || s.learn_due(now, BATCH))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))
                .and_then(|r| r);
            match due {
                Ok(due) => {
                    for task in due {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = teach(&store, addr, &filter.learn_retry, &metrics, task) => {}
                        }
                    }
                }
                Err(e) => warn!(error = %e, "spam learning: cannot read the queue"),
            }
        }
        let wait = next_wait(&store).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends one lesson and records what became of it.
async fn teach(store: &Store, addr: &str, retry: &[Duration], metrics: &Metrics, task: LearnTask) {
    let class = task.class.as_str();
    let s = store.clone();
    let raw = tokio::task::spawn_blocking(move || s.read_message(task.message)).await;
    let raw = match raw {
        Ok(Ok(raw)) if raw.len() <= MAX_SCAN_BYTES => raw,
        Ok(Ok(raw)) => {
            debug!(
                size = raw.len(),
                "spam learning: too large to be scored, not taught"
            );
            return finish(store, metrics, &task, LearnResult::Dropped).await;
        }
        Ok(Err(StoreError::NotFound(_))) => {
            debug!(message = task.message.0, "spam learning: message gone");
            return finish(store, metrics, &task, LearnResult::Dropped).await;
        }
        Ok(Err(e)) => {
            warn!(error = %e, "spam learning: cannot read the message");
            return reschedule(store, retry, metrics, &task, &e.to_string()).await;
        }
        Err(e) => return reschedule(store, retry, metrics, &task, &e.to_string()).await,
    };
    match tell(addr, &raw, task.class).await {
        Ok(()) => {
            debug!(message = task.message.0, class, "spam learning: taught");
            finish(store, metrics, &task, LearnResult::Learned).await;
        }
        Err(e) => reschedule(store, retry, metrics, &task, &e).await,
    }
}

async fn finish(store: &Store, metrics: &Metrics, task: &LearnTask, result: LearnResult) {
    metrics.spam_learn(task.class.as_str(), result);
    if let Err(e) = store.learn_finish(task.id).await {
        warn!(error = %e, id = task.id.0, "spam learning: cannot remove a queue entry");
    }
}

/// Due again after the next wait of `learn_retry_secs`; past the last one, dropped.
async fn reschedule(
    store: &Store,
    retry: &[Duration],
    metrics: &Metrics,
    task: &LearnTask,
    error: &str,
) {
    let Some(wait) = retry.get(task.attempts as usize) else {
        warn!(
            error,
            id = task.id.0,
            attempts = task.attempts + 1,
            "spam learning: giving up on a message"
        );
        return finish(store, metrics, task, LearnResult::Dropped).await;
    };
    warn!(error, id = task.id.0, retry_in = ?wait, "spam learning: spamd did not learn; will retry");
    metrics.spam_learn(task.class.as_str(), LearnResult::Retried);
    let next = unix_now().saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
    if let Err(e) = store.learn_retry(task.id, next).await {
        warn!(error = %e, id = task.id.0, "spam learning: cannot reschedule a queue entry");
    }
}

/// Until the soonest entry falls due, at most [`IDLE_WAIT`] (a config reload that turns
/// learning on is noticed by then).
async fn next_wait(store: &Store) -> Duration {
    let s = store.clone();
    let soonest = tokio::task::spawn_blocking(move || s.learn_next_due())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    match soonest {
        Some(at) => {
            let secs = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
            Duration::from_secs(secs.max(1)).min(IDLE_WAIT)
        }
        None => IDLE_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tell_answers() {
        assert!(check_response(b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n").is_ok());
        assert!(check_response(b"SPAMD/1.1 0 EX_OK\r\n\r\n").is_ok());
        for bad in [
            &b""[..],
            b"SPAMD/1.0 69 EX_UNAVAILABLE TELL commands are not enabled, set the --allow-tell switch.\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"\xff\xfe",
        ] {
            assert!(check_response(bad).is_err(), "{bad:?}");
        }
    }
}
