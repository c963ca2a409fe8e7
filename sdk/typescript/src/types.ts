// The wire types of the SyncKairos API (API.md), as the server sends them.

export type SyncMode = 'per_participant' | 'per_cycle' | 'per_group' | 'global' | 'count_up';

export type Status = 'pending' | 'running' | 'paused' | 'expired' | 'completed' | 'cancelled';

export type TimeoutAction = 'end_session' | 'skip_cycle' | 'auto_action';

export interface ActionOnTimeout {
  type: TimeoutAction;
  /** Free text for the application, e.g. `"auto_fold"`. */
  action?: string;
}

/** A session's time control (API.md "Time controls"), as created and echoed
 * in the state. `fischer`, `bronstein` and `simple_delay` may have `stages`;
 * `soft_close` is `global`'s, the others are for the banked modes. */
export type TimeControl =
  | { type: 'fischer'; increment_ms: number; stages?: Stage[] }
  | { type: 'bronstein'; delay_ms: number; stages?: Stage[] }
  | { type: 'simple_delay'; delay_ms: number; stages?: Stage[] }
  | { type: 'byoyomi'; periods: number; period_ms: number }
  | { type: 'canadian'; moves: number; period_ms: number }
  | { type: 'hourglass' }
  | { type: 'soft_close'; window_ms: number; max_extension_ms?: number };

export type TimeControlType = TimeControl['type'];

/** A stage of a multi-stage control: `add_ms` joins the bank when a
 * participant completes its `after_moves`-th move. */
export interface Stage {
  after_moves: number;
  add_ms: number;
}

/** Byo-yomi and Canadian overtime, stored as of `cycle_started_at`. */
export interface Overtime {
  /** Byo-yomi: periods not yet lost. */
  periods_left?: number;
  /** Canadian: moves still owed in the current period. */
  moves_left?: number;
  /** Time used of the current period before the cycle started. */
  period_used_ms: number;
}

/** The live values a time control adds to a participant (derived; present
 * only with a `time_control` on a banked mode, each field where it applies).
 * `clockFace()` computes them at any instant. */
export interface ClockFace {
  /** The main-time bank, live: what a clock face shows before overtime. */
  bank_remaining_ms: number;
  /** `bronstein`, `simple_delay`: how much longer this turn costs nothing
   * (simple_delay) or is refunded (bronstein). */
  delay_remaining_ms?: number;
  /** `byoyomi`: periods not yet lost. */
  periods_left?: number;
  /** `canadian`: moves owed in the current period; with stages: moves to the next stage. */
  moves_left?: number;
  /** `byoyomi`, `canadian`: what is left of the current overtime period. */
  period_remaining_ms?: number;
  /** `byoyomi`, `canadian`: the bank is spent. */
  in_overtime?: boolean;
}

/** A participant: stored values as of `cycle_started_at`, plus live values. */
export interface Participant extends Partial<ClockFace> {
  participant_id: string;
  participant_index: number;
  group_id?: string;
  /** The bank as of `cycle_started_at` (stored). */
  total_time_ms: number;
  /** Time consumed as of `cycle_started_at` (stored). */
  time_used_ms: number;
  /** Live remaining time at `server_time_ms` (derived). */
  time_remaining_ms: number;
  cycle_count: number;
  is_active: boolean;
  has_expired: boolean;
  /** Byo-yomi and Canadian overtime as of `cycle_started_at` (stored). */
  overtime?: Overtime;
}

/** A session's full state (`SyncState`). Timestamps are RFC 3339 strings. */
export interface SyncState {
  session_id: string;
  sync_mode: SyncMode;
  status: Status;
  version: number;
  participants: Participant[];
  active_participant_id: string | null;
  total_time_ms: number;
  time_per_cycle_ms: number | null;
  increment_ms: number;
  max_time_ms?: number;
  cycle_started_at: string | null;
  /** Time of the running cycle consumed before the last resume. */
  cycle_time_used_ms?: number;
  session_started_at: string | null;
  session_completed_at: string | null;
  created_at: string;
  updated_at: string;
  metadata?: Record<string, unknown>;
  /** The server instant (epoch ms) at which the derived fields were computed. */
  server_time_ms: number;
  action_on_timeout?: ActionOnTimeout;
  auto_advance?: boolean;
  active_group_id?: string | null;
  expired_participant_id?: string;
  /** The game's time control; absent = Fischer with `increment_ms`. */
  time_control?: TimeControl;
  /** `soft_close`: the time added to the session clock so far. */
  extension_ms?: number;
}

/** The smaller payload of a switch. */
export interface SwitchResult {
  session_id: string;
  active_participant_id: string | null;
  cycle_started_at: string | null;
  participants: Participant[];
  status: Status;
  version: number;
  expired_participant_id?: string;
  server_time_ms: number;
  /** `soft_close`: the time added to the session clock so far (a bid is a switch). */
  extension_ms?: number;
}

export interface NewParticipant {
  participant_id: string;
  participant_index: number;
  total_time_ms: number;
  group_id?: string;
}

export interface CreateSessionRequest {
  session_id: string;
  sync_mode: SyncMode;
  participants: NewParticipant[];
  total_time_ms: number;
  time_per_cycle_ms?: number;
  increment_ms?: number;
  max_time_ms?: number;
  metadata?: Record<string, unknown>;
  action_on_timeout?: ActionOnTimeout;
  auto_advance?: boolean;
  /** For the banked modes (`soft_close` for `global`); with `fischer`, give
   * its increment here or as `increment_ms`, not both differently. */
  time_control?: TimeControl;
}

export interface SwitchRequest {
  next_participant_id?: string;
  expected_version?: number;
}

export interface ServerTime {
  timestamp_ms: number;
  server_version: string;
  drift_tolerance_ms: number;
  build_version?: string;
}

export type AuditEventType =
  | 'session_created'
  | 'session_started'
  | 'cycle_switched'
  | 'session_paused'
  | 'session_resumed'
  | 'participant_expired'
  | 'session_expired'
  | 'session_completed'
  | 'session_deleted';

export interface AuditEvent {
  id: string;
  session_id: string;
  event_type: AuditEventType;
  participant_id?: string;
  group_id?: string;
  time_remaining_ms?: number;
  time_elapsed_ms?: number;
  timestamp: string;
  version: number;
  state_snapshot?: Record<string, unknown>;
}

export interface EventsPage {
  events: AuditEvent[];
  /** Cursor for the next (older) page; null on the last page. */
  next_before: string | null;
}

/** The webhook types, one per audit event type (`session.timeout` is a
 * participant's time running out, `participant_expired` in the audit log). */
export type WebhookEventType =
  | 'session.created'
  | 'session.started'
  | 'session.switched'
  | 'session.paused'
  | 'session.resumed'
  | 'session.timeout'
  | 'session.expired'
  | 'session.completed'
  | 'session.deleted';

/** The body of a webhook, as `verifyWebhook` returns it once verified. */
export interface WebhookEvent {
  type: WebhookEventType;
  /** When the event happened (RFC 3339): a timeout at its deadline. */
  timestamp: string;
  data: WebhookEventData;
}

export interface WebhookEventData {
  session_id: string;
  /** The session's version the event's write produced. */
  version: number;
  /** The participant the event is about (who started, ended a turn,
   * paused, or timed out), when there is one. */
  participant_id?: string;
  /** `session.timeout`: the session's setting, as in the `TIMEOUT` message. */
  action_on_timeout?: ActionOnTimeout;
  /** The state as of the event; `null` for `session.deleted`. */
  state: SyncState | null;
}

export interface MintTokenRequest {
  role: 'participant' | 'viewer';
  /** Required for `participant`. */
  participant_id?: string;
  ttl_seconds?: number;
}

export interface MintedToken {
  token: string;
  token_type: 'Bearer';
  role: 'participant' | 'viewer';
  session_id: string;
  participant_id?: string;
  expires_at_ms: number;
}

/** Messages the server sends on `/ws`. */
export type ServerMessage =
  | { type: 'CONNECTED'; sessionId: string; timestamp: number }
  | { type: 'STATE_SYNC'; sessionId: string; timestamp: number; state: SyncState }
  | { type: 'STATE_UPDATE'; sessionId: string; timestamp: number; state: SyncState }
  | { type: 'SESSION_DELETED'; sessionId: string; timestamp: number }
  | {
      type: 'TIMEOUT';
      sessionId: string;
      timestamp: number;
      participant_id: string;
      action_on_timeout: ActionOnTimeout;
      state: SyncState;
    }
  | {
      type: 'PONG';
      timestamp: number;
      client_time?: number;
      server_receive_ms?: number;
      server_send_ms?: number;
    }
  | { type: 'FEED_INTERRUPTED'; sessionId: string; timestamp: number }
  | { type: 'ERROR'; code: string; message: string };
