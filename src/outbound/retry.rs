//! Pure retry arithmetic for the outbound queue (no clock, no I/O; time is passed in).
//!
//! Attempt 1 happens as soon as a message is queued. After attempt `n` fails
//! temporarily, attempt `n + 1` is due `schedule[n - 1]` after attempt `n` started
//! (`[outbound] retry_schedule_secs`, RFC 5321 §4.5.4.1: retry, with growing delays).
//! So a schedule of `k` delays allows `k + 1` attempts; when the last one fails
//! temporarily too, the message bounces.

use std::time::Duration;

use crate::store::RecipientOutcome;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// When to try again if attempt number `attempt` (1-based, the one about to start at
/// `now`) fails temporarily. After the last attempt there is no retry, but the value
/// is still persisted before dialing: if the daemon dies mid-delivery, that attempt is
/// repeated after the last delay of the schedule (at least once, never lost).
pub fn next_attempt(now: i64, attempt: u32, schedule: &[Duration]) -> i64 {
    let idx = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    let delay = schedule
        .get(idx)
        .or(schedule.last())
        .copied()
        .map(secs)
        .unwrap_or(0)
        // Never due again at once: a schedule entry of 0 s would spin.
        .max(1);
    now.saturating_add(delay)
}

/// Whether attempt number `attempt` (1-based) is the last the schedule allows.
pub fn is_last_attempt(attempt: u32, schedule: &[Duration]) -> bool {
    usize::try_from(attempt).map_or(true, |a| a > schedule.len())
}

/// On the last attempt, a deferral becomes a permanent failure (then a bounce).
pub fn finalize(
    results: Vec<(String, RecipientOutcome)>,
    last_attempt: bool,
) -> Vec<(String, RecipientOutcome)> {
    if !last_attempt {
        return results;
    }
    results
        .into_iter()
        .map(|(rcpt, outcome)| match outcome {
            RecipientOutcome::Deferred(e) => (
                rcpt,
                RecipientOutcome::Failed(format!("retry schedule exhausted; last error: {e}")),
            ),
            other => (rcpt, other),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn next_attempt_follows_the_schedule() {
        let s = schedule(&[60, 300, 900]);
        assert_eq!(next_attempt(1_000, 1, &s), 1_060);
        assert_eq!(next_attempt(1_000, 2, &s), 1_300);
        assert_eq!(next_attempt(1_000, 3, &s), 1_900);
        // The last attempt keeps a lease of the last delay (crash recovery).
        assert_eq!(next_attempt(1_000, 4, &s), 1_900);
        assert_eq!(next_attempt(1_000, 40, &s), 1_900);
        assert_eq!(next_attempt(i64::MAX - 5, 1, &s), i64::MAX);
        assert_eq!(next_attempt(1_000, 1, &schedule(&[0])), 1_001);
        assert_eq!(next_attempt(1_000, 0, &s), 1_060);
    }

    #[test]
    fn schedule_of_k_delays_allows_k_plus_one_attempts() {
        let s = schedule(&[60, 300]);
        assert!(!is_last_attempt(1, &s));
        assert!(!is_last_attempt(2, &s));
        assert!(is_last_attempt(3, &s));
        assert!(is_last_attempt(4, &s));
        assert!(is_last_attempt(1, &[]));
    }

    #[test]
    fn last_attempt_turns_deferrals_into_failures() {
        let results = vec![
            ("a@x".to_owned(), RecipientOutcome::Delivered),
            (
                "b@x".to_owned(),
                RecipientOutcome::Deferred("451 later".into()),
            ),
            ("c@x".to_owned(), RecipientOutcome::Failed("550 no".into())),
        ];
        assert_eq!(finalize(results.clone(), false), results);
        let last = finalize(results, true);
        assert_eq!(last[0].1, RecipientOutcome::Delivered);
        assert_eq!(
            last[1].1,
            RecipientOutcome::Failed("retry schedule exhausted; last error: 451 later".into())
        );
        assert_eq!(last[2].1, RecipientOutcome::Failed("550 no".into()));
    }
}
