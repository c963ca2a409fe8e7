//! When the scheduler next polls the due sets. Polling every bucket every
//! 10 ms costs Redis a few percent of a core on a deployment where nothing is
//! due (measured in docs/PERFORMANCE.md), so instead each instance sleeps until
//! the earliest deadline it knows of, as a local timer would. It learns them
//! from two sources:
//!
//! - each poll reads the earliest entry of every bucket;
//! - hints: whenever a write sets a deadline earlier than every entry of its
//!   bucket, the script publishes it on the bucket's hint channel, which every
//!   instance subscribes to. Any other deadline needs no hint: the instances
//!   already wake at or before the bucket's earliest entry, and that poll
//!   sees it.
//!
//! A hint can be lost (a pub/sub link that broke and came back), so a fallback
//! poll runs at least every [`FALLBACK_MS`]: it bounds how late a lost hint can
//! make a timeout, at a small fraction of the cost of polling every 10 ms.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::domain::Timestamp;

/// Longest time between two polls, whatever the instance knows.
pub const FALLBACK_MS: i64 = 100;
/// Shortest time between two polls: under a stream of deadlines one poll
/// then handles every deadline of the last few milliseconds at once.
pub const MIN_GAP_MS: i64 = 2;

/// The instance's knowledge of upcoming deadlines.
#[derive(Debug, Default)]
pub struct Wakeups {
    state: Mutex<State>,
    /// Woken by hints, so a sleeping scheduler moves its wake-up earlier.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// When the last poll started (epoch ms).
    polled_at: i64,
    /// The earliest deadline the last poll found in the future.
    polled_next: i64,
    /// The earliest hint since the last poll started: the poll may have been
    /// too early to see its entry, so it stays until the next poll.
    hinted: i64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            polled_at: i64::MIN,
            polled_next: i64::MAX,
            hinted: i64::MAX,
        }
    }
}

impl Wakeups {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain integers: a panic elsewhere cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A deadline at `at` became the earliest of its bucket.
    pub fn hint(&self, at: i64) {
        let mut state = self.lock();
        state.hinted = state.hinted.min(at);
        drop(state);
        self.changed.notify_one();
    }

    /// Hints may have been missed (the pub/sub link was down): poll now.
    pub fn poll_now(&self) {
        self.hint(i64::MIN);
    }

    /// A poll at `now` begins: every hint received so far concerns an entry
    /// the poll will see, since a hint is published after its write.
    pub fn poll_started(&self, now: Timestamp) {
        let mut state = self.lock();
        state.polled_at = now.ms();
        state.hinted = i64::MAX;
    }

    /// The poll found `next` as the earliest deadline (`i64::MAX`: none).
    pub fn poll_finished(&self, next: i64) {
        self.lock().polled_next = next;
    }

    /// When the next poll is due.
    fn wake_at(&self) -> i64 {
        let state = self.lock();
        let fallback = state.polled_at.saturating_add(FALLBACK_MS);
        let gap = state.polled_at.saturating_add(MIN_GAP_MS);
        state.polled_next.min(state.hinted).min(fallback).max(gap)
    }

    /// Sleeps until the next poll is due; a hint that moves it earlier
    /// shortens the sleep.
    pub async fn wait(&self, clock: &Clock) {
        loop {
            // Registered before reading the state, so a hint in between is
            // not missed (`notify_one` keeps a permit for a later waiter).
            let changed = self.changed.notified();
            let now = clock.now().ms();
            // Deadlines are wall-clock instants but sleeps are monotonic: no
            // sleep is longer than the fallback, even if the clock stepped back.
            let at = self.wake_at().min(now.saturating_add(FALLBACK_MS));
            if now >= at {
                return;
            }
            tokio::select! {
                _ = clock.sleep_until(Timestamp(at)) => return,
                _ = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_at_the_earliest_known_deadline_within_the_bounds() {
        let w = Wakeups::default();
        w.poll_started(Timestamp(1_000));
        w.poll_finished(1_050);
        assert_eq!(w.wake_at(), 1_050);
        // Nothing known: the fallback poll.
        w.poll_finished(i64::MAX);
        assert_eq!(w.wake_at(), 1_000 + FALLBACK_MS);
        // A hint for an earlier deadline, even one already past: no sooner
        // than the minimum gap.
        w.hint(1_020);
        assert_eq!(w.wake_at(), 1_020);
        w.hint(900);
        assert_eq!(w.wake_at(), 1_000 + MIN_GAP_MS);
    }

    #[test]
    fn hints_received_during_a_poll_survive_it() {
        let w = Wakeups::default();
        w.hint(1_010);
        w.poll_started(Timestamp(1_000)); // saw the hinted entry itself
        assert_eq!(w.wake_at(), 1_000 + FALLBACK_MS);
        w.hint(1_030); // published after the poll read its bucket
        w.poll_finished(1_080);
        assert_eq!(w.wake_at(), 1_030);
        w.poll_now();
        assert_eq!(w.wake_at(), 1_000 + MIN_GAP_MS);
    }

    #[tokio::test]
    async fn a_hint_shortens_a_sleep() {
        let (clock, time) = Clock::manual(Timestamp(1_000));
        let w = std::sync::Arc::new(Wakeups::default());
        w.poll_started(Timestamp(1_000));
        w.poll_finished(i64::MAX);
        let sleeper = {
            let (w, clock) = (w.clone(), clock.clone());
            tokio::spawn(async move { w.wait(&clock).await })
        };
        time.advance(10);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before the fallback");
        w.hint(1_020);
        time.advance(10);
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("the hinted deadline wakes the sleeper")
            .expect("no panic");
    }
}
