//! The audit trail's PostgreSQL side: migrations, the batch insert the drain
//! commits, and the history query behind `GET /v1/sessions/{id}/events`.
//! Queries are checked at run time (`sqlx::query`), so building needs no
//! database; the migrations are embedded in the binary.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};
use thiserror::Error;
use uuid::Uuid;

use super::AuditEvent;
use crate::domain::{EventKind, Session, SessionId, Timestamp};

/// The migrations of `migrations/`, compiled in.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why an audit database call failed.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
    /// Unreachable, timed out, or refused the statement.
    #[error("PostgreSQL: {0}")]
    Unavailable(String),
    #[error("migrations failed: {0}")]
    Migrate(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A pool of connections to the audit database.
#[derive(Clone)]
pub struct AuditDb {
    pool: PgPool,
    /// Set while the drain's inserts fail (and it retries), cleared by its
    /// next commit: readers then fail at once instead of waiting for a
    /// connection that will not come.
    unreachable: Arc<AtomicBool>,
}

/// One event of a session's history, as the API returns it.
#[derive(Debug, Serialize)]
pub struct HistoryEvent {
    pub id: Uuid,
    pub session_id: SessionId,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_remaining_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_elapsed_ms: Option<i64>,
    pub timestamp: Timestamp,
    pub version: u64,
    /// The session's state right after the write (on a write's last event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_snapshot: Option<Box<RawValue>>,
}

impl AuditDb {
    /// A pool that connects on first use, so an instance starts (and serves)
    /// while PostgreSQL is down; only a malformed URL fails here. Every call
    /// waits at most `timeout` for a connection.
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<Self, DbError> {
        // sqlx parses any scheme; a MySQL URL must not pass for ours.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(DbError::Url(
                "expected postgres:// or postgresql://".to_owned(),
            ));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| DbError::Url(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            unreachable: Arc::default(),
        })
    }

    /// Whether the drain last found the database unreachable (it keeps
    /// retrying, so this clears once the database is back).
    pub fn known_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Records whether the drain's last insert reached the database.
    pub fn set_reachable(&self, reachable: bool) {
        self.unreachable.store(!reachable, Ordering::Relaxed);
    }

    /// Applies the pending migrations. sqlx holds a PostgreSQL advisory lock
    /// while it does, so instances starting together apply each one once.
    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| DbError::Migrate(e.to_string()))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Inserts a batch of events and upserts their sessions, in one
    /// transaction. Events already present are skipped (their ids are
    /// fixed before the write), so retrying a batch is safe. Returns how
    /// many events were new.
    pub async fn insert(&self, events: &[AuditEvent]) -> Result<u64, DbError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let inserted = insert_events(events).execute(&mut *tx).await?;
        if let Some(mut sessions) = upsert_sessions(events) {
            sessions.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted.rows_affected())
    }

    /// Up to `limit` events of a session, newest first (write order: by
    /// version, then by id within a write), older than the event `before`.
    pub async fn history(
        &self,
        session: SessionId,
        limit: u32,
        before: Option<Uuid>,
    ) -> Result<Vec<HistoryEvent>, DbError> {
        let rows = sqlx::query(
            r#"SELECT id, event_type, participant_id, group_id, time_remaining_ms,
                      time_elapsed_ms, (EXTRACT(EPOCH FROM "timestamp") * 1000)::int8 AS at_ms,
                      version, state_snapshot::text AS snapshot
               FROM sync_events
               WHERE session_id = $1
                 AND ($2::uuid IS NULL OR (version, id) <
                      (SELECT version, id FROM sync_events WHERE id = $2 AND session_id = $1))
               ORDER BY version DESC, id DESC
               LIMIT $3"#,
        )
        .bind(session.0)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let snapshot: Option<String> = row.try_get("snapshot")?;
                Ok(HistoryEvent {
                    id: row.try_get("id")?,
                    session_id: session,
                    event_type: row.try_get("event_type")?,
                    participant_id: row.try_get("participant_id")?,
                    group_id: row.try_get("group_id")?,
                    time_remaining_ms: row.try_get("time_remaining_ms")?,
                    time_elapsed_ms: row.try_get("time_elapsed_ms")?,
                    timestamp: Timestamp(row.try_get("at_ms")?),
                    version: u64::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
                    state_snapshot: snapshot.and_then(|s| RawValue::from_string(s).ok()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}

/// Epoch milliseconds to `timestamptz`, exactly (no floating point).
const FROM_MS: &str = "TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * ";

/// One multi-row `INSERT … ON CONFLICT (id) DO NOTHING`, its rows bound as
/// one array per column: the same statement text for every batch size, so
/// it is prepared once per connection.
fn insert_events(
    events: &[AuditEvent],
) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        r#"INSERT INTO sync_events (id, session_id, event_type, participant_id, group_id,
             time_remaining_ms, time_elapsed_ms, "timestamp", version, state_snapshot)
           SELECT id, session_id, event_type, participant_id, group_id, remaining, elapsed,
                  TIMESTAMPTZ 'epoch' + INTERVAL '1 millisecond' * at_ms, version, snapshot::jsonb
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[],
                       $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::text[])
             AS t(id, session_id, event_type, participant_id, group_id, remaining, elapsed,
                  at_ms, version, snapshot)
           ON CONFLICT (id) DO NOTHING"#,
    )
    .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.session_id.0).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| event_type(e.event.kind))
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.event.participant_id.map(|p| p.0))
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.event.group_id.map(|g| g.0))
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.event.time_remaining_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.event.time_elapsed_ms)
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.event.at.ms()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| version(e.version))
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.state_snapshot.as_ref().map(|s| s.as_str().to_owned()))
            .collect::<Vec<_>>(),
    )
}

/// The `sync_sessions` rows the batch's lifecycle events describe, one per
/// session (from its newest snapshot), or `None` if there are none. A
/// timestamp or final status once recorded is never overwritten, so batches
/// may commit in any order.
fn upsert_sessions(events: &[AuditEvent]) -> Option<QueryBuilder<Postgres>> {
    let mut newest: HashMap<SessionId, (u64, Session)> = HashMap::new();
    for e in events {
        let lifecycle = matches!(
            e.event.kind,
            EventKind::SessionCreated
                | EventKind::SessionStarted
                | EventKind::SessionCompleted
                | EventKind::SessionExpired
        );
        let Some(snapshot) = e.state_snapshot.as_ref().filter(|_| lifecycle) else {
            continue;
        };
        if newest
            .get(&e.session_id)
            .is_some_and(|(v, _)| *v >= e.version)
        {
            continue;
        }
        // Our own snapshots always decode; one that does not only loses its
        // summary row, never the event.
        if let Ok(session) = snapshot.decode() {
            newest.insert(e.session_id, (e.version, session));
        }
    }
    if newest.is_empty() {
        return None;
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO sync_sessions (session_id, sync_mode, time_per_cycle_ms, increment_ms, \
         max_time_ms, created_at, started_at, completed_at, final_status, metadata, time_control) ",
    );
    q.push_values(newest.into_values(), |mut row, (_, s)| {
        let at = |t: Option<Timestamp>| t.map(Timestamp::ms);
        row.push_bind(s.session_id.0)
            .push_bind(s.sync_mode.as_str())
            .push_bind(s.time_per_cycle_ms)
            .push_bind(s.increment_ms)
            .push_bind(s.max_time_ms)
            .push(FROM_MS)
            .push_bind_unseparated(s.created_at.ms())
            .push(FROM_MS)
            .push_bind_unseparated(at(s.session_started_at))
            .push(FROM_MS)
            .push_bind_unseparated(at(s.session_completed_at))
            .push_bind(s.status.is_terminal().then(|| s.status.as_str()))
            .push_bind(s.metadata.as_ref().map(|m| m.to_string()))
            .push_unseparated("::jsonb")
            .push_bind(
                s.time_control
                    .as_ref()
                    .and_then(|tc| serde_json::to_string(tc).ok()),
            )
            .push_unseparated("::jsonb");
    });
    q.push(
        " ON CONFLICT (session_id) DO UPDATE SET \
           started_at = COALESCE(sync_sessions.started_at, EXCLUDED.started_at), \
           completed_at = COALESCE(sync_sessions.completed_at, EXCLUDED.completed_at), \
           final_status = COALESCE(sync_sessions.final_status, EXCLUDED.final_status)",
    );
    Some(q)
}

/// The `event_type` column's value: the event's wire name.
fn event_type(kind: EventKind) -> String {
    // A unit enum serialises to its name as a JSON string.
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
