// Remaining time computed on the client from the last state and the server
// clock estimate: the same formulas as the server's `src/domain/timing.rs`
// (checked against vectors generated from it, `test/vectors.json`).

import type { Participant, SyncState } from './types.js';

/** RFC 3339 → epoch ms (`null` stays `null`). */
export function parseTimestamp(ts: string | null | undefined): number | null {
  if (!ts) return null;
  const ms = Date.parse(ts);
  return Number.isNaN(ms) ? null : ms;
}

/** Time since the running cycle started, at server instant `nowMs` (0 when no
 * clock runs; never negative). */
export function elapsedMs(state: SyncState, nowMs: number): number {
  const start = parseTimestamp(state.cycle_started_at);
  if (state.status !== 'running' || start === null) return 0;
  return Math.max(0, nowMs - start);
}

/** Live remaining time of a participant at server instant `nowMs`, floored at 0;
 * `undefined` for an unknown participant. */
export function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined {
  const p = state.participants.find((x) => x.participant_id === participantId);
  if (!p) return undefined;
  const live = p.is_active ? elapsedMs(state, nowMs) : 0;
  let left: number;
  switch (state.sync_mode) {
    case 'per_participant':
      left = p.total_time_ms - live;
      break;
    case 'per_group':
      left = groupBank(state, p) - live;
      break;
    case 'per_cycle': {
      const cycle = state.time_per_cycle_ms ?? 0;
      left = p.is_active ? cycle - (state.cycle_time_used_ms ?? 0) - live : cycle;
      break;
    }
    case 'global': {
      const used = state.participants.reduce((sum, x) => sum + x.time_used_ms, 0);
      left = state.total_time_ms - used - elapsedMs(state, nowMs);
      break;
    }
    case 'count_up':
      left = (state.max_time_ms ?? state.total_time_ms) - p.time_used_ms - live;
      break;
    default:
      // A mode this SDK does not know: trust the server's derived value.
      left = p.time_remaining_ms - Math.max(0, nowMs - state.server_time_ms);
  }
  return Math.max(0, left);
}

/** Time a participant has used so far (a stopwatch's face in `count_up`). */
export function usedMs(state: SyncState, participantId: string, nowMs: number): number | undefined {
  const p = state.participants.find((x) => x.participant_id === participantId);
  if (!p) return undefined;
  return p.time_used_ms + (p.is_active ? elapsedMs(state, nowMs) : 0);
}

/** Whether some clock of the session runs (worth re-rendering every frame). */
export function isTicking(state: SyncState | undefined): boolean {
  return state?.status === 'running' && state.cycle_started_at !== null;
}

/** A team clock is one clock: its members' smallest bank. */
function groupBank(state: SyncState, p: Participant): number {
  if (p.group_id === undefined) return p.total_time_ms;
  return Math.min(...state.participants.filter((m) => m.group_id === p.group_id).map((m) => m.total_time_ms));
}
