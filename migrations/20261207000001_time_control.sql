-- The session's time control (API.md "Time controls"), as in its state; NULL
-- for the v2 rule (Fischer with increment_ms). Kept as JSON so a new control
-- needs no migration; `time_control->>'type'` selects games by control.
ALTER TABLE sync_sessions ADD COLUMN time_control JSONB;
