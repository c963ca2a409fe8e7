//! The single write path. Every change of a session, a client command or a
//! server timeout alike, goes: read → pure transition ([`domain::decide`]) →
//! one atomic compare-and-set on the version read, which also moves the
//! deadline index, appends the audit events and publishes the update.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::deadline;
use crate::domain::{
    self, ActionOnTimeout, Command, DomainError, EventKind, NewSession, ParticipantId, Session,
    SessionId, Timestamp, Transition,
};
use crate::store::{RateDecision, StateJson, Store, StoreError, Write, WriteLimit};

/// How often a server-side write (a timeout, a delete) is retried after losing
/// a compare-and-set: each loss means another write landed (and every write
/// settles due timeouts), so a second attempt almost always suffices.
const WRITE_ATTEMPTS: usize = 5;

/// Why the engine refused or failed a request.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("Session {0} not found")]
    NotFound(SessionId),
    #[error("Session {0} already exists")]
    Exists(SessionId),
    /// Another write landed between our read and our compare-and-set.
    #[error("Session was modified concurrently (expected version {expected}, found {actual})")]
    Conflict { expected: u64, actual: u64 },
    /// The session's switch limit (`limit` per second) is spent; nothing
    /// was written.
    #[error("Too many switches of this session")]
    SwitchLimited { limit: u32, decision: RateDecision },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A session state together with the server time its derived fields are computed at.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub session: Session,
    pub at: Timestamp,
}

/// A timeout that a write applied, for the TIMEOUT message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeoutNotice {
    pub participant_id: ParticipantId,
    pub at: Timestamp,
    pub action_on_timeout: ActionOnTimeout,
}

/// What is published on a session's channel after a write; every instance
/// decodes it once and forwards it to its local sockets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Externally tagged: a raw JSON state cannot pass through the buffering that
// internally tagged enums need.
#[serde(rename_all = "snake_case")]
pub enum Update {
    /// The new state, and the timeouts the write applied.
    State {
        /// The stored form (derived fields are added by whoever forwards it).
        state: StateJson,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        timeouts: Vec<TimeoutNotice>,
        /// Server time of publication, to measure fan-out delay.
        published_ms: i64,
    },
    Deleted {
        session_id: SessionId,
        published_ms: i64,
    },
}

impl Update {
    /// Decodes a published message.
    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    fn encode(&self) -> Bytes {
        // Serialising our own plain structs cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What a scheduled timeout attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// This call wrote the timeout.
    Applied,
    /// Nothing was due (someone else applied it, or the index was stale);
    /// the index entry was set back to the session's real deadline.
    NotDue,
    /// The session no longer exists.
    Gone,
}

/// Runs commands against the store. Within a request, each call's store
/// work together is bounded by the request's budget ([`deadline`]).
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Clock,
    /// `RATE_LIMIT_SWITCH`, enforced by the switch's own write.
    switch_limit: Option<WriteLimit>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self {
            store,
            clock,
            switch_limit: None,
        }
    }

    /// Limits each session to `per_second` switches (0 = no limit).
    pub fn with_switch_limit(self, per_second: u32) -> Self {
        Self {
            switch_limit: WriteLimit::per(per_second, std::time::Duration::from_secs(1)),
            ..self
        }
    }

    /// The switch limit's burst, for the `RateLimit-Limit` header.
    fn switch_limit(&self) -> u32 {
        self.switch_limit.map_or(0, |l| l.burst)
    }

    /// The store, for the parts of the server that watch it (fan-out, scheduler, readiness).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The server clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Creates a session at version 1; never overwrites a live one.
    pub async fn create(&self, new: NewSession) -> Result<Snapshot, EngineError> {
        deadline::bounded(async {
            let now = self.clock.now();
            let t = new.into_created(now);
            let id = t.session.session_id;
            self.write("create", 0, &t, now, true, None)
                .await
                .map_err(|e| match e {
                    StoreError::AlreadyExists => EngineError::Exists(id),
                    e => EngineError::Store(e),
                })?;
            Ok(Snapshot {
                session: t.session,
                at: now,
            })
        })
        .await
    }

    /// The current state; derived fields at the time of the read. A read never
    /// writes: between a deadline and its handling it shows 0 remaining.
    pub async fn get(&self, id: SessionId) -> Result<Snapshot, EngineError> {
        deadline::bounded(async {
            let session = self.load(id).await?;
            Ok(Snapshot {
                session,
                at: self.clock.now(),
            })
        })
        .await
    }

    /// Runs one command through the write path. A lost compare-and-set is
    /// reported as [`EngineError::Conflict`], not retried: the client decided
    /// on a state that no longer exists.
    pub async fn execute(&self, id: SessionId, cmd: Command) -> Result<Snapshot, EngineError> {
        deadline::bounded(async {
            let current = self.load(id).await?;
            let now = self.clock.now();
            let decision = domain::decide(&current, &cmd, now);
            let Some(t) = decision.write else {
                decision.result?;
                return Ok(Snapshot {
                    session: current,
                    at: now,
                });
            };
            // Only a switch that goes through counts against the switch limit
            // (one refused by the rules writes no more than a settled timeout).
            let limit = match cmd {
                Command::Switch { .. } if decision.result.is_ok() => self.switch_limit,
                _ => None,
            };
            self.write(cmd.name(), current.version, &t, now, true, limit)
                .await
                .map_err(|e| match e {
                    StoreError::RateLimited(decision) => {
                        metrics::counter!("synckairos_rate_limited_total", "scope" => "switch")
                            .increment(1);
                        EngineError::SwitchLimited {
                            limit: self.switch_limit(),
                            decision,
                        }
                    }
                    e => conflict_or_store(id, current.version, e),
                })?;
            record_timeouts(&t, now);
            // A refused command may still have settled a timeout: that is written
            // above, and the refusal reported here.
            decision.result?;
            Ok(Snapshot {
                session: t.session,
                at: now,
            })
        })
        .await
    }

    /// Applies whatever timeout is due for `id`, retrying on conflicts by
    /// re-reading. Idempotent: if nothing is due it only gives the index entry back.
    pub async fn apply_timeout(&self, id: SessionId) -> Result<TimeoutOutcome, EngineError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(current) = self.store.get(id).await.map_err(EngineError::Store)? else {
                self.store
                    .reindex(id, 0, None)
                    .await
                    .map_err(EngineError::Store)?;
                return Ok(TimeoutOutcome::Gone);
            };
            let now = self.clock.now();
            let Some(t) = domain::decide(&current, &Command::Timeout, now).write else {
                self.store
                    .reindex(id, current.version, domain::deadline(&current))
                    .await
                    .map_err(EngineError::Store)?;
                return Ok(TimeoutOutcome::NotDue);
            };
            // A server-applied timeout does not restart the TTL.
            match self
                .write("timeout", current.version, &t, now, false, None)
                .await
            {
                Ok(()) => {
                    record_timeouts(&t, now);
                    return Ok(TimeoutOutcome::Applied);
                }
                Err(StoreError::Conflict { .. }) => {
                    metrics::counter!("synckairos_cas_conflicts_total", "source" => "timeout")
                        .increment(1);
                    continue;
                }
                Err(e) => return Err(EngineError::Store(e)),
            }
        }
        // Still contended after several rounds: the lease brings it back later.
        Ok(TimeoutOutcome::NotDue)
    }

    /// Deletes a session; succeeds for unknown ids too (DELETE is idempotent).
    pub async fn delete(&self, id: SessionId) -> Result<(), EngineError> {
        deadline::bounded(async {
            for _ in 0..WRITE_ATTEMPTS {
                let Some(current) = self.store.get(id).await.map_err(EngineError::Store)? else {
                    return Ok(());
                };
                let now = self.clock.now();
                let event = AuditEvent::deleted(&current, now);
                let message = Update::Deleted {
                    session_id: id,
                    published_ms: now.ms(),
                }
                .encode();
                let started = Instant::now();
                let deleted = self
                    .store
                    .delete(id, current.version, &event, &message)
                    .await;
                record_write("delete", started);
                match deleted {
                    Ok(()) => return Ok(()),
                    Err(StoreError::Conflict { actual: None }) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(EngineError::Store(e)),
                }
            }
            Err(EngineError::Store(StoreError::Unavailable(
                "session kept changing during delete".into(),
            )))
        })
        .await
    }

    async fn load(&self, id: SessionId) -> Result<Session, EngineError> {
        self.store
            .get(id)
            .await
            .map_err(EngineError::Store)?
            .ok_or(EngineError::NotFound(id))
    }

    /// The one write: state + deadline + audit events + published update,
    /// refused as a whole if `limit` is spent. `command` labels its
    /// duration metric.
    async fn write(
        &self,
        command: &'static str,
        expected: u64,
        t: &Transition,
        now: Timestamp,
        refresh_ttl: bool,
        limit: Option<WriteLimit>,
    ) -> Result<(), StoreError> {
        let state = StateJson::of(&t.session);
        // Every event of the write carries the state after it (shared, and
        // sent to Redis once).
        let events: Vec<AuditEvent> = t
            .events
            .iter()
            .map(|e| AuditEvent::stamp(e, &t.session, Some(state.clone())))
            .collect();
        let timeouts = t
            .events
            .iter()
            .filter(|e| e.kind == EventKind::ParticipantExpired)
            .filter_map(|e| {
                Some(TimeoutNotice {
                    participant_id: e.participant_id?,
                    at: e.at,
                    action_on_timeout: t.session.action_on_timeout.clone(),
                })
            })
            .collect();
        let message = Update::State {
            state: state.clone(),
            timeouts,
            published_ms: now.ms(),
        }
        .encode();
        let write = Write {
            session: &t.session,
            state,
            expected_version: expected,
            deadline: domain::deadline(&t.session),
            now,
            refresh_ttl,
            events: &events,
            message: &message,
            limit,
        };
        let started = Instant::now();
        let written = if expected == 0 {
            self.store.create(write).await
        } else {
            self.store.compare_and_set(write).await
        };
        record_write(command, started);
        written
    }
}

/// How long one store write took (conflicts and failures included: they cost
/// the same round trip).
fn record_write(command: &'static str, started: Instant) {
    metrics::histogram!("synckairos_engine_write_duration_seconds", "command" => command)
        .record(started.elapsed().as_secs_f64());
}

/// Counts the timeouts a write applied and how late each was detected
/// (applied at `now`, due at its deadline).
fn record_timeouts(t: &Transition, now: Timestamp) {
    for e in t
        .events
        .iter()
        .filter(|e| e.kind == EventKind::ParticipantExpired)
    {
        metrics::counter!("synckairos_timeouts_applied_total").increment(1);
        let lag_ms = (now.ms() - e.at.ms()).max(0);
        metrics::histogram!("synckairos_timeout_lag_seconds").record(lag_ms as f64 / 1000.0);
    }
}

fn conflict_or_store(id: SessionId, expected: u64, e: StoreError) -> EngineError {
    if matches!(e, StoreError::Conflict { actual: Some(_) }) {
        metrics::counter!("synckairos_cas_conflicts_total", "source" => "command").increment(1);
    }
    match e {
        StoreError::Conflict {
            actual: Some(actual),
        } => EngineError::Conflict { expected, actual },
        StoreError::Conflict { actual: None } => EngineError::NotFound(id),
        e => EngineError::Store(e),
    }
}
