-- The audit trail: one row per session (its settings and how it ended) and
-- one row per state change, written by the asynchronous drain of the Redis
-- outbox. Event rows are keyed by the UUIDv7 the engine made before the
-- write, so a retried or duplicated insert is a no-op.

CREATE TABLE sync_sessions (
    session_id        UUID PRIMARY KEY,
    sync_mode         TEXT NOT NULL CHECK (sync_mode IN
                        ('per_participant', 'per_cycle', 'per_group', 'global', 'count_up')),
    time_per_cycle_ms BIGINT,
    increment_ms      BIGINT NOT NULL DEFAULT 0,
    max_time_ms       BIGINT,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    final_status      TEXT CHECK (final_status IN ('expired', 'completed', 'cancelled')),
    metadata          JSONB
);

-- No foreign key to sync_sessions: events of one session may be drained by
-- several instances in any order, and deleted sessions keep their history.
CREATE TABLE sync_events (
    id                UUID PRIMARY KEY,
    session_id        UUID NOT NULL,
    event_type        TEXT NOT NULL CHECK (event_type IN
                        ('session_created', 'session_started', 'cycle_switched',
                         'session_paused', 'session_resumed', 'participant_expired',
                         'session_expired', 'session_completed', 'session_deleted')),
    participant_id    UUID,
    group_id          UUID,
    time_remaining_ms BIGINT,
    time_elapsed_ms   BIGINT,
    "timestamp"       TIMESTAMPTZ NOT NULL,
    version           BIGINT NOT NULL,
    state_snapshot    JSONB,
    metadata          JSONB,
    -- When the drain committed it: recorded_at - "timestamp" is the trail's lag.
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sync_events_session_time ON sync_events (session_id, "timestamp" DESC);
CREATE INDEX sync_events_type ON sync_events (event_type);
-- The history endpoint pages a session's events in write order.
CREATE INDEX sync_events_session_version ON sync_events (session_id, version DESC, id DESC);
