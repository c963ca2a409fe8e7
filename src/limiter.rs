//! The client rate limit (`RATE_LIMIT_GENERAL`), decided on the instance
//! with no store call on the request path, and kept common to every
//! instance by settling with the store in the background.
//!
//! Each instance keeps, per client key, its view of the shared limit (the
//! GCRA theoretical arrival time, [`crate::store::gcra`]) and decides every
//! request on that view. What it admitted is added to the shared count in
//! the store every [`SETTLE_EVERY`], for all its clients in one call (one
//! per bucket on a Cluster), and the answer (everyone's admissions) becomes
//! its new view. An instance that admitted its
//! allowance of `L = ⌈limit / 16⌉` requests for one key since it last
//! settled settles that key before it admits more, and while that settle
//! is under way admits at most `L` more: a store call on the request path,
//! for a client bursting near its limit only.
//!
//! **Tolerance.** So at any moment each instance holds at most `2L`
//! admissions that the shared count does not have yet, and decides on a
//! view that lacks at most the others'. With `N` instances a client gets
//! at most `N × 2L` (about `N × limit / 8`) more than one exact limiter
//! would allow: 150 per instance for the default 1,200/min. The shared
//! count records those too, so the client then owes them: every instance
//! refuses it until they are paid back, and over a period the rate holds.
//! With one instance the limit is exact.
//!
//! While the store is unreachable each instance limits on its own view
//! (a client gets at most `N` times its limit) and settles when it is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline;
use crate::store::{RateDecision, Store, StoreError, gcra, rate_interval_us};

/// How often each instance settles what it admitted.
pub const SETTLE_EVERY: Duration = Duration::from_millis(50);
/// The allowance `L` is the limit divided by this (rounded up).
const ALLOWANCE_DIVISOR: u32 = 16;
/// After a failed settle, how long the request path decides locally
/// without trying the store again (the background keeps trying).
const STORE_DOWN_BACKOFF: Duration = Duration::from_secs(1);

/// Who the client limit counts, as a 64-bit FNV-1a hash of its kind and
/// name (a token's subject, an address): every instance computes the same
/// key for the same client, and building it allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(pub u64);

impl ClientKey {
    /// The key of the client named by `parts`, hashed in order.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in parts.iter().flat_map(|part| part.iter()) {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self(h)
    }
}

/// One instance's side of the client limit of `limit` requests per period.
pub struct ClientLimiter {
    store: Arc<dyn Store>,
    limit: u32,
    interval_us: i64,
    /// `L`: requests admitted for one key before it must be settled.
    allowance: u64,
    /// Origin of the µs timestamps below (monotonic: wall-clock jumps do
    /// not refill a limit).
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<ClientKey, Entry>,
    /// Until when the store counts as unreachable (µs since `epoch`).
    down_until: i64,
}

/// One client key as this instance sees it.
struct Entry {
    /// The shared theoretical arrival time as of the last settle, plus
    /// what this instance admitted since (µs since `epoch`).
    tat: i64,
    /// Admitted here and not yet added to the shared count.
    unsettled: u64,
    /// A settle of this key is under way; requests that must wait for it
    /// wait on `settled`.
    settling: bool,
    settled: Arc<Notify>,
}

impl ClientLimiter {
    /// `limit` requests per `period` per client key (`limit` > 0).
    pub fn new(store: Arc<dyn Store>, limit: u32, period: Duration) -> Self {
        Self {
            store,
            limit,
            interval_us: rate_interval_us(limit, period),
            allowance: u64::from(limit.div_ceil(ALLOWANCE_DIVISOR).max(1)),
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// The configured limit, for `RateLimit-Limit`.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one request of `key` if the limit allows it. No store call
    /// unless this instance has spent its allowance for the key: then the
    /// request waits (within its store budget) for that key's settle.
    pub async fn check(self: &Arc<Self>, key: ClientKey) -> RateDecision {
        let mut out_of_time = false;
        loop {
            let settled = {
                let mut state = self.lock();
                let now = self.now_us();
                let store_up = now >= state.down_until;
                let entry = state.keys.entry(key).or_insert_with(|| Entry {
                    tat: now,
                    unsettled: 0,
                    settling: false,
                    settled: Arc::new(Notify::new()),
                });
                // A request whose store budget ran out waiting is decided
                // on what is known (the store is not answering anyway).
                if entry.unsettled < self.allowance || !store_up || out_of_time {
                    return self.admit(entry, now);
                }
                // Registered before the lock is released, so the settle's
                // notification cannot slip past.
                let settled = entry.settled.clone().notified_owned();
                if !entry.settling {
                    entry.settling = true;
                    let admitted = std::mem::take(&mut entry.unsettled);
                    metrics::counter!("synckairos_rate_limit_settles_total", "trigger" => "allowance")
                        .increment(1);
                    // Its own task: a request that goes away mid-settle
                    // must not leave the key marked as settling.
                    tokio::spawn(self.clone().settle(vec![(key, admitted)]));
                }
                settled
            };
            out_of_time = deadline::bounded(async {
                settled.await;
                Ok::<_, StoreError>(())
            })
            .await
            .is_err();
        }
    }

    /// Settles every key with unsettled requests every [`SETTLE_EVERY`] and
    /// forgets keys whose limit is full again, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SETTLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.settle_round().await,
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// One round of [`ClientLimiter::run`].
    async fn settle_round(self: &Arc<Self>) {
        let batch: Vec<(ClientKey, u64)> = {
            let mut state = self.lock();
            let now = self.now_us();
            state
                .keys
                .retain(|_, e| e.settling || e.unsettled > 0 || e.tat > now);
            state
                .keys
                .iter_mut()
                .filter(|(_, e)| e.unsettled > 0 && !e.settling)
                .map(|(&key, e)| {
                    e.settling = true;
                    (key, std::mem::take(&mut e.unsettled))
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        metrics::counter!("synckairos_rate_limit_settles_total", "trigger" => "interval")
            .increment(batch.len() as u64);
        self.clone().settle(batch).await;
    }

    /// Adds each key's admitted requests to its shared count and takes the
    /// answers as the new views; on failure keeps the counts to add later.
    async fn settle(self: Arc<Self>, batch: Vec<(ClientKey, u64)>) {
        let hashes: Vec<(u64, u64)> = batch.iter().map(|&(key, n)| (key.0, n)).collect();
        let settled = self.store.rate_settle(&hashes, self.interval_us).await;
        let mut state = self.lock();
        let now = self.now_us();
        if let Err(e) = &settled {
            tracing::debug!(error = %e, "client limits not settled; deciding locally");
            let backoff = i64::try_from(STORE_DOWN_BACKOFF.as_micros()).unwrap_or(i64::MAX);
            state.down_until = now.saturating_add(backoff);
        }
        for (i, (key, admitted)) in batch.iter().enumerate() {
            let Some(entry) = state.keys.get_mut(key) else {
                continue;
            };
            match &settled {
                // What was admitted here while the settle was under way is
                // not in the answer yet.
                Ok(ahead) => {
                    let ahead = ahead.get(i).copied().unwrap_or(0).max(0);
                    let since = i64::try_from(entry.unsettled).unwrap_or(i64::MAX);
                    entry.tat = now
                        .saturating_add(ahead)
                        .saturating_add(since.saturating_mul(self.interval_us));
                }
                Err(_) => entry.unsettled += admitted,
            }
            entry.settling = false;
            entry.settled.notify_waiters();
        }
    }

    /// Decides one request on this instance's view.
    fn admit(&self, entry: &mut Entry, now: i64) -> RateDecision {
        let (decision, tat) = gcra(Some(entry.tat), now, self.interval_us, self.limit);
        if let Some(tat) = tat {
            entry.tat = tat;
            entry.unsettled += 1;
        }
        decision
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the map consistent; poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(name: &str) -> ClientKey {
        ClientKey::of(&[name.as_bytes()])
    }

    async fn allowed(limiter: &Arc<ClientLimiter>, name: &str, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            allowed += usize::from(limiter.check(key(name)).await.allowed);
        }
        allowed
    }

    #[tokio::test]
    async fn one_instance_is_exact() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Clock::System, 60));
        // 16 a minute: an allowance of 1 between settles.
        let limiter = Arc::new(ClientLimiter::new(store, 16, MINUTE));
        assert_eq!(allowed(&limiter, "ip:a", 40).await, 16);
        let refused = limiter.check(key("ip:a")).await;
        assert!(!refused.allowed);
        // One request per 3.75 s refills; the whole burst back in a minute.
        assert!(refused.retry_after_us > 3_000_000, "{refused:?}");
        assert_eq!(allowed(&limiter, "ip:b", 1).await, 1);
    }

    #[tokio::test]
    async fn instances_sharing_a_store_stay_within_the_tolerance() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Clock::System, 60));
        let instances: Vec<_> = (0..3)
            .map(|_| Arc::new(ClientLimiter::new(store.clone(), 16, MINUTE)))
            .collect();
        // A client spreads its requests over every instance.
        let mut admitted = 0;
        for i in 0..150 {
            admitted += usize::from(instances[i % 3].check(key("sub:x")).await.allowed);
        }
        let tolerance = 3 * 2; // N × 2L
        assert!(
            (16..=16 + tolerance).contains(&admitted),
            "{admitted} admitted"
        );
        // What they admitted together is owed: once each has settled,
        // every instance refuses.
        for limiter in &instances {
            limiter.settle_round().await;
        }
        for limiter in &instances {
            assert!(!limiter.check(key("sub:x")).await.allowed);
        }
    }
}
