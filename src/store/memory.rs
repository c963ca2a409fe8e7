//! The embedded, in-process backend: the default when `REDIS_URL` is unset,
//! and a test double with the same semantics as Redis (atomic compare-and-set,
//! versions, TTL, a leased deadline index, published updates).
//!
//! One mutex guards everything, as one Lua script makes a Redis write atomic;
//! it is held only for map operations, never across an `.await`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, broadcast};

use super::{
    Delivery, FeedEvent, OutboxEntry, OutboxGroup, OutboxStats, Receipt, Settle, Store, StoreError,
    Swept, WebhookStats, Write, expiry_after, gcra, index_needs_repair,
};
use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::domain::{Session, SessionId, Timestamp};

/// How many unacknowledged audit events the embedded outbox keeps, and how
/// many bytes of snapshots (oldest dropped first, counted in
/// `synckairos_audit_dropped_total`): the embedded backend lives in one
/// process's memory, so it bounds what it holds for a drain that is behind
/// or absent; one 1000-participant session snapshots ~100 KB per write.
const OUTBOX_CAPACITY: usize = 10_000;
const OUTBOX_BYTES: usize = 16 * 1024 * 1024;
/// Longest the embedded scheduler sleeps without re-reading the clock.
const MAX_SLEEP_MS: i64 = 1_000;
/// Capacity of the update feed before a slow reader lags.
const FEED_CAPACITY: usize = 4_096;

/// In-process state store.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Clock,
    ttl_ms: i64,
    feed: broadcast::Sender<FeedEvent>,
    /// Wakes the scheduler when a deadline earlier than the one it sleeps
    /// towards may have been indexed.
    due_changed: Notify,
    /// The outbox's consumers (none: writes keep no events).
    groups: Vec<OutboxGroup>,
    /// Client key hash → GCRA theoretical arrival time (µs).
    limits: Mutex<HashMap<u64, i64>>,
}

/// Rate-limit entries kept before the idle ones are dropped.
const LIMITS_BEFORE_PURGE: usize = 10_000;

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Entry>,
    /// (deadline or lease end, id): the `sk:{b}:due` sorted set.
    due: BTreeSet<(i64, SessionId)>,
    due_of: HashMap<SessionId, i64>,
    /// (TTL end, id), so expired sessions are purged even if never read again.
    expiry: BTreeSet<(i64, SessionId)>,
    subscribed: HashSet<SessionId>,
    outbox: VecDeque<Queued>,
    outbox_bytes: usize,
    /// Sequence number of the next appended event (its receipt id).
    next_seq: u64,
    /// The webhook schedule: (due, event id), and the deliveries by event id.
    webhook_due: BTreeSet<(i64, String)>,
    webhooks: HashMap<String, (i64, Delivery)>,
    dead_letters: HashMap<String, Delivery>,
}

/// An outbox event, with when each group's consumer was last given it and
/// whether the group is done with it.
struct Queued {
    seq: u64,
    event: AuditEvent,
    delivered_at: [Option<i64>; 2],
    acked: [bool; 2],
}

fn slot(group: OutboxGroup) -> usize {
    match group {
        OutboxGroup::Audit => 0,
        OutboxGroup::Webhooks => 1,
    }
}

struct Entry {
    session: Session,
    expires_at: i64,
    /// The session's write limit (GCRA theoretical arrival time, µs).
    limit_tat: Option<i64>,
}

impl MemoryStore {
    /// A store whose sessions expire `ttl_seconds` after their last write,
    /// measured on `clock`.
    pub fn new(clock: Clock, ttl_seconds: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
            ttl_ms: i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
            feed: broadcast::channel(FEED_CAPACITY).0,
            due_changed: Notify::new(),
            groups: vec![OutboxGroup::Audit],
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// The outbox's consumers (the audit drain alone by default); none
    /// when nothing will ever read it.
    pub fn with_outbox(self, groups: &[OutboxGroup]) -> Self {
        Self {
            groups: groups.to_vec(),
            ..self
        }
    }

    /// Hands out the events `pick` selects among those `group` has not
    /// acknowledged, marking them delivered to it now.
    fn deliver(
        &self,
        group: OutboxGroup,
        limit: usize,
        pick: impl Fn(Option<i64>) -> bool,
    ) -> Vec<OutboxEntry> {
        let now = self.clock.now().ms();
        let g = slot(group);
        let mut inner = self.lock();
        inner
            .outbox
            .iter_mut()
            .filter(|q| !q.acked[g] && pick(q.delivered_at[g]))
            .take(limit)
            .map(|q| {
                q.delivered_at[g] = Some(now);
                OutboxEntry {
                    receipt: Receipt {
                        bucket: 0,
                        id: q.seq.to_string(),
                    },
                    event: Ok(q.event.clone()),
                }
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write
        // (each write mutates after all checks), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, inner: &mut Inner, write: Write<'_>, limit_tat: Option<i64>) {
        let id = write.session.session_id;
        let kept = inner.sessions.get(&id).map(|e| (e.expires_at, e.limit_tat));
        let expires_at = match kept {
            Some((at, _)) if !write.refresh_ttl => at,
            _ => expiry_after(&write, self.ttl_ms),
        };
        let limit_tat = limit_tat.or(kept.and_then(|(_, tat)| tat));
        inner.remove(id);
        inner.expiry.insert((expires_at, id));
        inner.sessions.insert(
            id,
            Entry {
                session: write.session.clone(),
                expires_at,
                limit_tat,
            },
        );
        inner.set_due(id, write.deadline.map(Timestamp::ms));
        if !self.groups.is_empty() {
            inner.append(write.events, &self.groups);
        }
        self.publish(inner, id, write.message);
        self.due_changed.notify_one();
    }

    fn publish(&self, inner: &Inner, id: SessionId, message: &Bytes) {
        if inner.subscribed.contains(&id) {
            // No receiver is not an error: nobody listens yet.
            let _ = self.feed.send(FeedEvent::Message {
                session_id: id,
                payload: message.clone(),
            });
        }
    }
}

impl Inner {
    /// The live entry for `id`, dropping it (and its index entry) if its TTL ran out.
    fn live(&mut self, id: SessionId, now: i64) -> Option<&Entry> {
        if self.sessions.get(&id).is_some_and(|e| e.expires_at <= now) {
            self.remove(id);
        }
        self.sessions.get(&id)
    }

    /// Forgets a session and its index entries.
    fn remove(&mut self, id: SessionId) {
        if let Some(e) = self.sessions.remove(&id) {
            self.expiry.remove(&(e.expires_at, id));
        }
        self.set_due(id, None);
    }

    /// Drops every session whose TTL ran out by `now`.
    fn purge_expired(&mut self, now: i64) {
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.remove(id);
        }
    }

    /// Takes a delivery off the webhook schedule.
    fn unschedule(&mut self, event_id: &str) -> Option<Delivery> {
        let (due, d) = self.webhooks.remove(event_id)?;
        self.webhook_due.remove(&(due, event_id.to_owned()));
        Some(d)
    }

    fn set_due(&mut self, id: SessionId, at: Option<i64>) {
        if let Some(old) = self.due_of.remove(&id) {
            self.due.remove(&(old, id));
        }
        if let Some(at) = at {
            self.due.insert((at, id));
            self.due_of.insert(id, at);
        }
    }

    fn append(&mut self, events: &[AuditEvent], groups: &[OutboxGroup]) {
        // A group that does not consume counts as done.
        let acked = [OutboxGroup::Audit, OutboxGroup::Webhooks].map(|g| !groups.contains(&g));
        for e in events {
            self.outbox_bytes += snapshot_bytes(e);
            self.outbox.push_back(Queued {
                seq: self.next_seq,
                event: e.clone(),
                delivered_at: [None; 2],
                acked,
            });
            self.next_seq += 1;
        }
        while self.outbox.len() > OUTBOX_CAPACITY || self.outbox_bytes > OUTBOX_BYTES {
            let Some(old) = self.outbox.pop_front() else {
                break;
            };
            self.outbox_bytes -= snapshot_bytes(&old.event);
            metrics::counter!("synckairos_audit_dropped_total").increment(1);
        }
    }
}

fn snapshot_bytes(e: &AuditEvent) -> usize {
    e.state_snapshot.as_ref().map_or(0, |s| s.as_str().len())
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, write: Write<'_>) -> Result<(), StoreError> {
        let now = self.clock.now().ms();
        let mut inner = self.lock();
        if inner.live(write.session.session_id, now).is_some() {
            return Err(StoreError::AlreadyExists);
        }
        self.apply(&mut inner, write, None);
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now().ms();
        Ok(self.lock().live(id, now).map(|e| e.session.clone()))
    }

    async fn compare_and_set(&self, write: Write<'_>) -> Result<(), StoreError> {
        let now = self.clock.now().ms();
        let mut inner = self.lock();
        let actual = inner
            .live(write.session.session_id, now)
            .map(|e| e.session.version);
        if actual != Some(write.expected_version) {
            return Err(StoreError::Conflict { actual });
        }
        let mut limit_tat = None;
        if let Some(limit) = write.limit {
            let tat = inner
                .sessions
                .get(&write.session.session_id)
                .and_then(|e| e.limit_tat);
            let now_us = now.saturating_mul(1000);
            let (decision, tat) = gcra(tat, now_us, limit.interval_us, limit.burst);
            if !decision.allowed {
                return Err(StoreError::RateLimited(decision));
            }
            limit_tat = tat;
        }
        self.apply(&mut inner, write, limit_tat);
        Ok(())
    }

    async fn delete(
        &self,
        id: SessionId,
        expected_version: u64,
        event: &AuditEvent,
        message: &Bytes,
    ) -> Result<(), StoreError> {
        let now = self.clock.now().ms();
        let mut inner = self.lock();
        let actual = inner.live(id, now).map(|e| e.session.version);
        if actual != Some(expected_version) {
            return Err(StoreError::Conflict { actual });
        }
        inner.remove(id);
        if !self.groups.is_empty() {
            inner.append(std::slice::from_ref(event), &self.groups);
        }
        self.publish(&inner, id, message);
        Ok(())
    }

    async fn subscribe(&self, id: SessionId) -> Result<(), StoreError> {
        self.lock().subscribed.insert(id);
        Ok(())
    }

    async fn unsubscribe(&self, id: SessionId) -> Result<(), StoreError> {
        self.lock().subscribed.remove(&id);
        Ok(())
    }

    fn feed(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut inner = self.lock();
        inner.purge_expired(now.ms());
        let due: Vec<SessionId> = inner
            .due
            .iter()
            .take_while(|(at, _)| *at <= now.ms())
            .take(limit)
            .map(|&(_, id)| id)
            .collect();
        for &id in &due {
            inner.set_due(id, Some(now.ms() + lease_ms));
        }
        Ok(due)
    }

    async fn reindex(
        &self,
        id: SessionId,
        version: u64,
        deadline: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now().ms();
        let mut inner = self.lock();
        match inner.live(id, now).map(|e| e.session.version) {
            Some(v) if v == version => inner.set_due(id, deadline.map(Timestamp::ms)),
            Some(_) => {} // a newer write already set the index
            None => inner.set_due(id, None),
        }
        self.due_changed.notify_one();
        Ok(())
    }

    async fn sweep(&self, now: Timestamp, lease_ms: i64) -> Result<Swept, StoreError> {
        let mut inner = self.lock();
        inner.purge_expired(now.ms());
        let mut repairs = Vec::new();
        for (id, entry) in &inner.sessions {
            let expected = crate::domain::deadline(&entry.session);
            if index_needs_repair(expected, inner.due_of.get(id).copied(), now, lease_ms) {
                repairs.push((*id, expected.map(Timestamp::ms)));
            }
        }
        let orphans: Vec<SessionId> = inner
            .due_of
            .keys()
            .filter(|id| !inner.sessions.contains_key(id))
            .copied()
            .collect();
        for id in &orphans {
            repairs.push((*id, None));
        }
        for &(id, at) in &repairs {
            inner.set_due(id, at);
        }
        self.due_changed.notify_one();
        Ok(Swept {
            repairs: repairs.len(),
            sessions: Some(inner.sessions.len()),
        })
    }

    async fn wait_for_due(&self, clock: &Clock) {
        // Register interest before reading the earliest deadline, so an
        // insertion in between is not missed.
        let changed = self.due_changed.notified();
        // TTL ends count too: claim_due purges expired sessions.
        let earliest = {
            let inner = self.lock();
            let due = inner.due.first().map(|&(at, _)| at);
            let ttl = inner.expiry.first().map(|&(at, _)| at);
            due.into_iter().chain(ttl).min().map(Timestamp)
        };
        // Deadlines are wall-clock instants but sleeps are monotonic: waking at
        // least once a second bounds how late a clock step can make a timeout.
        let earliest = earliest.map(|at| at.min(clock.now().plus(MAX_SLEEP_MS)));
        match earliest {
            Some(at) => {
                tokio::select! {
                    _ = clock.sleep_until(at) => {}
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
    }

    async fn outbox_read(
        &self,
        group: OutboxGroup,
        _consumer: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.deliver(group, limit, |at| at.is_none()))
    }

    async fn outbox_reclaim(
        &self,
        group: OutboxGroup,
        _consumer: &str,
        min_idle_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let idle_since = self
            .clock
            .now()
            .ms()
            .saturating_sub(i64::try_from(min_idle_ms).unwrap_or(i64::MAX));
        Ok(self.deliver(group, limit, |at| at.is_some_and(|at| at <= idle_since)))
    }

    async fn outbox_ack(&self, group: OutboxGroup, receipts: &[Receipt]) -> Result<(), StoreError> {
        let acked: HashSet<u64> = receipts.iter().filter_map(|r| r.id.parse().ok()).collect();
        let g = slot(group);
        let mut inner = self.lock();
        let mut freed = 0;
        inner.outbox.retain_mut(|q| {
            if acked.contains(&q.seq) {
                q.acked[g] = true;
            }
            let keep = !q.acked.iter().all(|&a| a);
            if !keep {
                freed += snapshot_bytes(&q.event);
            }
            keep
        });
        inner.outbox_bytes -= freed;
        Ok(())
    }

    async fn outbox_stats(&self, group: OutboxGroup) -> Result<OutboxStats, StoreError> {
        let g = slot(group);
        let inner = self.lock();
        Ok(OutboxStats {
            // As on Redis: what the outbox holds for any group.
            backlog: inner.outbox.len() as u64,
            pending: inner
                .outbox
                .iter()
                .filter(|q| !q.acked[g] && q.delivered_at[g].is_some())
                .count() as u64,
            // UUIDv7 ids carry the instant they were made, just before the write.
            oldest: inner.outbox.front().and_then(|q| {
                let (secs, nanos) = q.event.id.get_timestamp()?.to_unix();
                Some(Timestamp(secs as i64 * 1000 + i64::from(nanos / 1_000_000)))
            }),
        })
    }

    async fn webhook_schedule(&self, deliveries: &[(Delivery, i64)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (d, due) in deliveries {
            inner.unschedule(&d.event_id);
            inner.webhook_due.insert((*due, d.event_id.clone()));
            inner.webhooks.insert(d.event_id.clone(), (*due, d.clone()));
        }
        Ok(())
    }

    async fn webhook_claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut inner = self.lock();
        let due: Vec<String> = inner
            .webhook_due
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            if let Some(d) = inner.unschedule(&id) {
                inner.webhook_due.insert((lease_until_ms, id.clone()));
                inner.webhooks.insert(id, (lease_until_ms, d.clone()));
                claimed.push(d);
            }
        }
        Ok(claimed)
    }

    async fn webhook_settle(&self, delivery: &Delivery, outcome: Settle) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.unschedule(&delivery.event_id);
        match outcome {
            Settle::Delivered => {}
            Settle::RetryAt(due) => {
                inner.webhook_due.insert((due, delivery.event_id.clone()));
                inner
                    .webhooks
                    .insert(delivery.event_id.clone(), (due, delivery.clone()));
            }
            Settle::Dead => {
                inner
                    .dead_letters
                    .insert(delivery.event_id.clone(), delivery.clone());
            }
        }
        Ok(())
    }

    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let inner = self.lock();
        let mut dead: Vec<Delivery> = inner.dead_letters.values().cloned().collect();
        dead.sort_by_key(|d| (d.failed_ms, d.event_id.clone()));
        dead.truncate(limit);
        Ok(dead)
    }

    async fn webhook_revive(&self, event_id: &str, due_ms: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(d) = inner.dead_letters.remove(event_id) else {
            return Ok(false);
        };
        let d = d.afresh();
        inner.webhook_due.insert((due_ms, d.event_id.clone()));
        inner.webhooks.insert(d.event_id.clone(), (due_ms, d));
        Ok(true)
    }

    async fn webhook_stats(&self) -> Result<WebhookStats, StoreError> {
        let inner = self.lock();
        Ok(WebhookStats {
            scheduled: inner.webhooks.len() as u64,
            dead: inner.dead_letters.len() as u64,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn rate_settle(
        &self,
        batch: &[(u64, u64)],
        interval_us: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let now_us = self.clock.now().ms().saturating_mul(1000);
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if limits.len() >= LIMITS_BEFORE_PURGE {
            limits.retain(|_, tat| *tat > now_us);
        }
        let settled = batch
            .iter()
            .map(|(key, admitted)| {
                let owed = i64::try_from(*admitted)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(interval_us);
                let tat = limits.get(key).map_or(now_us, |&t| t.max(now_us)) + owed;
                if *admitted > 0 {
                    limits.insert(*key, tat);
                }
                tat - now_us
            })
            .collect();
        Ok(settled)
    }
}
