//! Where session state lives. Every backend gives the same guarantees, checked
//! by one conformance suite (`tests/store_conformance.rs`):
//!
//! - a write is atomic: state, version, TTL, deadline index, audit events and
//!   the published update change together or not at all;
//! - writes are compare-and-set on the version, so two instances can never both
//!   apply a change read from the same state;
//! - the deadline index holds exactly the deadlines of running sessions, and
//!   due entries are *leased* to one claimer at a time.
//!
//! [`memory`] is the embedded backend (the default, and a test double); the
//! Redis backend is the production one.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::domain::{Session, SessionId, Timestamp};

/// When a write should make its session expire, in epoch ms, for a TTL of
/// `ttl_ms` (see [`Write::refresh_ttl`]).
pub fn expiry_after(write: &Write<'_>, ttl_ms: i64) -> i64 {
    let from = write.deadline.map_or(write.now, |d| d.max(write.now));
    from.ms().saturating_add(ttl_ms)
}

/// Why a store call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Create found a live session with that id.
    #[error("session already exists")]
    AlreadyExists,
    /// The stored version is not the expected one; `None` if the session is gone.
    #[error("version conflict (stored version: {actual:?})")]
    Conflict { actual: Option<u64> },
    /// The backend cannot be reached (or did not answer in time).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be decoded; never produced by our own writes.
    #[error("corrupt stored state: {0}")]
    Corrupt(String),
    /// The write's [`WriteLimit`] is spent; nothing was written.
    #[error("write limit reached")]
    RateLimited(RateDecision),
}

/// A session serialised once per write; the same bytes are stored, published
/// and kept as the audit snapshot. Cloning shares them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateJson(Arc<RawValue>);

impl StateJson {
    /// Serialises `session` (compact JSON).
    pub fn of(session: &Session) -> Self {
        // Serialising our own plain struct cannot fail; unlike
        // `RawValue::from_string`, this does not parse the text again.
        let raw =
            serde_json::value::to_raw_value(session).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self(Arc::from(raw))
    }

    /// Takes JSON text as it is (checked to be JSON, not to be a session).
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(|raw| Self(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Parses it back into a session.
    pub fn decode(&self) -> Result<Session, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for StateJson {
    fn eq(&self, other: &Self) -> bool {
        // Every event of a write shares the write's state: one pointer
        // comparison, not a comparison of the whole text per event.
        Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
    }
}

/// One atomic write: the new state and everything that must change with it.
#[derive(Clone, Debug)]
pub struct Write<'a> {
    /// The new state; its `version` is `expected_version + 1`.
    pub session: &'a Session,
    /// `session`, serialised.
    pub state: StateJson,
    /// 0 for a create ("must not exist").
    pub expected_version: u64,
    /// The deadline index entry after the write (`None` removes it).
    pub deadline: Option<Timestamp>,
    /// Server time of the write, for the TTL.
    pub now: Timestamp,
    /// Whether the TTL restarts. Client commands and creation restart it (it
    /// then ends no earlier than `deadline + TTL`, so a long timer never
    /// vanishes before its deadline); server-applied timeouts keep it, so a
    /// session nobody touches any more does end.
    pub refresh_ttl: bool,
    /// Appended to the audit outbox.
    pub events: &'a [AuditEvent],
    /// Published on the session's channel for every instance's sockets.
    pub message: &'a Bytes,
    /// A limit on the session's writes of this kind (the switch limit),
    /// checked and counted by the write itself: no extra round trip.
    pub limit: Option<WriteLimit>,
}

/// `burst` writes at once, then one per `interval_us`; the state is kept
/// with the session, so every instance counts against the same limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimit {
    pub interval_us: i64,
    pub burst: u32,
}

impl WriteLimit {
    /// `limit` per `period`; `None` when `limit` is 0 (off).
    pub fn per(limit: u32, period: std::time::Duration) -> Option<Self> {
        (limit > 0).then(|| Self {
            interval_us: rate_interval_us(limit, period),
            burst: limit,
        })
    }
}

/// What arrives on an instance's update feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// A message published for a session this instance subscribed to.
    Message {
        session_id: SessionId,
        payload: Bytes,
    },
    /// The subscription link broke: until `Resubscribed`, updates written
    /// elsewhere may not arrive, which local subscribers should be told.
    Interrupted,
    /// The subscription link was lost and is back: updates may have been
    /// missed, so every local subscriber needs a fresh full state.
    Resubscribed,
}

/// Where an outbox entry sits (its bucket's stream and entry id), so the
/// drain can acknowledge exactly what it committed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    pub bucket: u16,
    pub id: String,
}

/// An audit event read from the outbox and not yet acknowledged. `event` is
/// an error for an entry that does not decode (never one of our writes).
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub receipt: Receipt,
    pub event: Result<AuditEvent, String>,
}

/// How far behind the audit drain is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events written and not yet acknowledged (read or not).
    pub backlog: u64,
    /// Of those, the ones a drain has read and not yet acknowledged.
    pub pending: u64,
    /// When the oldest unacknowledged event was appended.
    pub oldest: Option<Timestamp>,
}

/// What one sweep of the deadline index found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Index entries repaired (should be zero).
    pub repairs: usize,
    /// Sessions stored, any status, until deleted or expired; `None` when
    /// another instance held the sweep, so this one counted nothing.
    pub sessions: Option<usize>,
}

/// One rate-limit check: whether the request may go, and what the
/// `RateLimit-*` and `Retry-After` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests still allowed at once after this one.
    pub remaining: u64,
    /// When refused: how long until one more request is allowed (µs).
    pub retry_after_us: u64,
    /// How long until the full burst is available again (µs).
    pub reset_us: u64,
}

/// The generic cell rate algorithm (GCRA): `limit` requests per period, one
/// every `interval_us`, bursts of up to `limit`. The whole state is one
/// number, the theoretical arrival time `tat` (µs); `None` = never seen.
/// Returns the decision and, when allowed, the new `tat` to store. Used by
/// the client limiter on each instance and by the embedded backend's write
/// limit; `write.lua` runs the same arithmetic for the Redis backend's.
pub fn gcra(
    tat: Option<i64>,
    now_us: i64,
    interval_us: i64,
    limit: u32,
) -> (RateDecision, Option<i64>) {
    let burst = interval_us.saturating_mul(i64::from(limit));
    let tat = tat.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(interval_us);
    let allow_at = new_tat - burst;
    let us = |d: i64| u64::try_from(d).unwrap_or(0);
    if now_us < allow_at {
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after_us: us(allow_at - now_us),
            reset_us: us(tat - now_us),
        };
        return (decision, None);
    }
    let decision = RateDecision {
        allowed: true,
        remaining: us((burst - (new_tat - now_us)) / interval_us.max(1)),
        retry_after_us: 0,
        reset_us: us(new_tat - now_us),
    };
    (decision, Some(new_tat))
}

/// The consumers of the outbox, each a consumer group every instance reads
/// with. An entry is removed once every group has acknowledged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboxGroup {
    /// The audit drain to PostgreSQL.
    Audit,
    /// Webhook deliveries.
    Webhooks,
}

impl OutboxGroup {
    pub const ALL: [OutboxGroup; 2] = [OutboxGroup::Audit, OutboxGroup::Webhooks];

    /// The group's name on the streams.
    pub fn name(self) -> &'static str {
        match self {
            OutboxGroup::Audit => "audit",
            OutboxGroup::Webhooks => "webhooks",
        }
    }
}

/// A webhook waiting in the store, from its event's acceptance until a 2xx
/// (or the dead letters): due at once and leased to the instance delivering
/// it, or due at its next retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: String,
    pub session_id: SessionId,
    /// The webhook type (`session.timeout`, …).
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    /// The body, fixed when the event was accepted: every attempt sends it.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the event happened (epoch ms), for the commit-to-2xx latency.
    pub event_ms: i64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was dead-lettered (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<i64>,
}

impl Delivery {
    /// A dead letter sent again: its attempts counted afresh.
    pub fn afresh(self) -> Self {
        Self {
            attempts: 0,
            last_error: None,
            failed_ms: None,
            ..self
        }
    }
}

/// What became of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// A 2xx: forget it.
    Delivered,
    /// Try again at this instant (epoch ms).
    RetryAt(i64),
    /// No more attempts: keep it with the dead letters.
    Dead,
}

/// The webhook schedule's size, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Deliveries waiting or in flight.
    pub scheduled: u64,
    /// Dead letters kept.
    pub dead: u64,
}

/// The state store. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs: "memory", "redis".
    fn backend(&self) -> &'static str;

    /// Creates a session unless one with that id exists ([`StoreError::AlreadyExists`]).
    async fn create(&self, write: Write<'_>) -> Result<(), StoreError>;

    /// The stored state, or `None` if unknown, deleted or expired by TTL.
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// Writes if the stored version is `write.expected_version`, else
    /// [`StoreError::Conflict`].
    async fn compare_and_set(&self, write: Write<'_>) -> Result<(), StoreError>;

    /// Deletes the session if it is at `expected_version`, removing its
    /// deadline, appending `event` and publishing `message`.
    async fn delete(
        &self,
        id: SessionId,
        expected_version: u64,
        event: &AuditEvent,
        message: &Bytes,
    ) -> Result<(), StoreError>;

    /// Starts delivering `id`'s published messages on [`Store::feed`].
    async fn subscribe(&self, id: SessionId) -> Result<(), StoreError>;

    /// Stops delivering `id`'s messages.
    async fn unsubscribe(&self, id: SessionId) -> Result<(), StoreError>;

    /// The instance-wide feed of messages for subscribed sessions. Bounded: a
    /// receiver that lags gets `RecvError::Lagged` and must resynchronise.
    fn feed(&self) -> broadcast::Receiver<FeedEvent>;

    /// Leases up to `limit` sessions per bucket whose deadline is at or before `now`: their
    /// index entry moves to `now + lease_ms`, so if the claimer dies the entry
    /// comes back; the claimer's write replaces it with the real next deadline.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Sets `id`'s index entry to `deadline` if the session is still at
    /// `version` (a claimer that found nothing due gives its lease back this
    /// way); removes the entry if the session no longer exists.
    async fn reindex(
        &self,
        id: SessionId,
        version: u64,
        deadline: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    /// Re-derives every stored session's deadline and repairs the index where
    /// it disagrees (an entry missing, stale or left behind), leaving leased
    /// entries alone. Counts the sessions on the way (the sampled
    /// `synckairos_active_sessions`); does nothing when another instance is
    /// sweeping right now.
    async fn sweep(&self, now: Timestamp, lease_ms: i64) -> Result<Swept, StoreError>;

    /// Resolves when [`Store::claim_due`] may find something: at the earliest
    /// deadline it knows of (Redis: learnt from polls and hints, with a
    /// fallback poll; see `redis::wakeups`).
    async fn wait_for_due(&self, clock: &Clock);

    /// Reads up to `limit` outbox events per bucket that no consumer has
    /// been given yet, oldest first per bucket; they stay pending (owned by
    /// `consumer`) until [`Store::outbox_ack`]. Fewer than `limit` in all
    /// means no bucket has more waiting.
    async fn outbox_read(
        &self,
        group: OutboxGroup,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Takes over up to `limit` pending events per bucket that their consumer
    /// has held for at least `min_idle_ms` (it died, or is stuck), for `consumer`.
    async fn outbox_reclaim(
        &self,
        group: OutboxGroup,
        consumer: &str,
        min_idle_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Acknowledges events `group` is done with; each is removed once no
    /// other group still has it to read or pending.
    async fn outbox_ack(&self, group: OutboxGroup, receipts: &[Receipt]) -> Result<(), StoreError>;

    /// The outbox's size and age as `group` sees it, for metrics.
    async fn outbox_stats(&self, group: OutboxGroup) -> Result<OutboxStats, StoreError>;

    /// Puts deliveries on the webhook schedule (or back on it), due at the
    /// given instants (epoch ms); one already there is replaced.
    async fn webhook_schedule(&self, deliveries: &[(Delivery, i64)]) -> Result<(), StoreError>;

    /// Leases up to `limit` deliveries due at `now_ms` until `lease_until_ms`
    /// (then they are due again, for any instance), oldest due first.
    async fn webhook_claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt's outcome: done, due again later, or dead-lettered.
    async fn webhook_settle(&self, delivery: &Delivery, outcome: Settle) -> Result<(), StoreError>;

    /// Up to `limit` dead letters, oldest failure first.
    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Moves a dead letter back on the schedule, due at `due_ms` with its
    /// attempts counted afresh; false if there is no such dead letter.
    async fn webhook_revive(&self, event_id: &str, due_ms: i64) -> Result<bool, StoreError>;

    async fn webhook_stats(&self) -> Result<WebhookStats, StoreError>;

    /// Whether the backend answers; `/ready` reports this.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Adds, for each `(key, admitted)`, the requests one instance
    /// admitted since it last settled to the shared limit of the client
    /// whose key hashes to `key` (`limiter::ClientKey`), one per
    /// `interval_us`, and returns per key (in order) how far the limit's
    /// theoretical arrival time now lies ahead of the present (µs; 0 or
    /// less: nothing is owed). Each instance's client limiter settles this
    /// way in the background, many keys per call.
    async fn rate_settle(
        &self,
        batch: &[(u64, u64)],
        interval_us: i64,
    ) -> Result<Vec<i64>, StoreError>;
}

/// The emission interval of `limit` per `period`, in µs (at least 1).
pub fn rate_interval_us(limit: u32, period: std::time::Duration) -> i64 {
    let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
    (period_us / i64::from(limit.max(1))).max(1)
}

/// Whether an index entry `indexed` disagrees with a session's deadline
/// `expected` at `now` (an entry pushed forward by a lease in progress agrees).
pub fn index_needs_repair(
    expected: Option<Timestamp>,
    indexed: Option<i64>,
    now: Timestamp,
    lease_ms: i64,
) -> bool {
    match (expected, indexed) {
        (None, None) => false,
        (Some(d), Some(at)) if at == d.ms() => false,
        (Some(d), Some(at)) => !(at > d.ms() && at <= now.ms() + lease_ms),
        _ => true,
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::gcra;

    #[test]
    fn a_burst_of_limit_then_one_per_interval() {
        // 3 per 3 s: one every second, bursts of 3.
        let (i, limit) = (1_000_000, 3);
        let mut tat = None;
        let mut allowed = Vec::new();
        for _ in 0..4 {
            let (d, next) = gcra(tat, 0, i, limit);
            allowed.push((d.allowed, d.remaining));
            tat = next.or(tat);
        }
        assert_eq!(allowed, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        let (refused, _) = gcra(tat, 0, i, limit);
        assert_eq!(
            (refused.retry_after_us, refused.reset_us),
            (1_000_000, 3_000_000)
        );
        // One interval later exactly one more goes through.
        let (d, next) = gcra(tat, 1_000_000, i, limit);
        assert!(d.allowed);
        assert!(!gcra(next, 1_000_000, i, limit).0.allowed);
        // Long idle: the full burst is back, not more.
        let (d, _) = gcra(next, 100_000_000, i, limit);
        assert_eq!((d.allowed, d.remaining), (true, 2));
    }
}
