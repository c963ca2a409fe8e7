// Remaining time computed on the client from the last state and the server
// clock estimate: the same formulas as the server's `src/domain/timing.rs`
// (checked against vectors generated from it, `test/vectors.json`).

import type { ClockFace, Overtime, Participant, SyncState, TimeControl } from './types.js';

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

/** Live remaining time of a participant at server instant `nowMs`, floored at 0:
 * the time until its flag falls if it does not move (delay and overtime
 * included, as the server's `time_remaining_ms`); `undefined` for an unknown
 * participant. */
export function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined {
  const i = state.participants.findIndex((x) => x.participant_id === participantId);
  if (i < 0) return undefined;
  const p = state.participants[i]!;
  if (isBanked(state)) {
    const tc = control(state);
    if (!tc) return trustServer(state, p, nowMs, p.is_active);
    const run = runTime(state, tc, nowMs);
    if (state.sync_mode === 'per_group' && p.group_id !== undefined) {
      // A team clock is one clock: every member shows the distance to the
      // group's flag, set by its first member to run out.
      let min = Infinity;
      state.participants.forEach((m, j) => {
        if (m.group_id === p.group_id) min = Math.min(min, ownToFlag(state, tc, j, run));
      });
      return Math.max(0, min);
    }
    return Math.max(0, ownToFlag(state, tc, i, run));
  }
  const live = p.is_active ? elapsedMs(state, nowMs) : 0;
  let left: number;
  switch (state.sync_mode) {
    case 'per_cycle': {
      const cycle = state.time_per_cycle_ms ?? 0;
      left = p.is_active ? cycle - (state.cycle_time_used_ms ?? 0) - live : cycle;
      break;
    }
    case 'global':
      left = globalBudget(state) - globalUsed(state) - elapsedMs(state, nowMs);
      break;
    case 'count_up':
      left = (state.max_time_ms ?? state.total_time_ms) - p.time_used_ms - live;
      break;
    default:
      // A mode this SDK does not know: trust the server's derived value.
      return trustServer(state, p, nowMs, true);
  }
  return Math.max(0, left);
}

/** The live values of a participant's time control at server instant `nowMs`
 * (`bank_remaining_ms`, and where the control has them `delay_remaining_ms`,
 * `periods_left`, `moves_left`, `period_remaining_ms`, `in_overtime`): what
 * the server would send in the participant at that instant. `undefined` for
 * an unknown participant, and where the server sends none: a session without
 * a `time_control`, or not in a banked mode (`per_participant`, `per_group`). */
export function clockFace(state: SyncState, participantId: string, nowMs: number): ClockFace | undefined {
  const i = state.participants.findIndex((x) => x.participant_id === participantId);
  const tc = control(state);
  if (i < 0 || !isBanked(state) || !state.time_control || !tc) return undefined;
  const { clock, turnMs } = liveClock(state, tc, i, runTime(state, tc, nowMs));
  return face(tc, clock, turnMs, state.participants[i]!.cycle_count);
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

// ------------------------------------------------------------------------
// The rules of the time controls, as the server's `src/domain/time_control.rs`
// and `timing.rs`: a stored clock is its value as of `cycle_started_at`, run
// forward to any instant; nothing counts.

/** What a participant's clock holds: its main-time bank and its overtime. */
interface Clock {
  bank: number;
  overtime: Overtime | undefined;
}

const KNOWN = new Set<string>(['fischer', 'bronstein', 'simple_delay', 'byoyomi', 'canadian', 'hourglass', 'soft_close']);

/** A banked session without a `time_control`: the bank simply runs down. */
const PLAIN: TimeControl = { type: 'fischer', increment_ms: 0 };

function isBanked(state: SyncState): boolean {
  return state.sync_mode === 'per_participant' || state.sync_mode === 'per_group';
}

/** The rule the clocks run by; `undefined` for a control this SDK does not know. */
function control(state: SyncState): TimeControl | undefined {
  const tc = state.time_control ?? PLAIN;
  return KNOWN.has(tc.type) ? tc : undefined;
}

/** The derived value from the state, run down since `server_time_ms`. */
function trustServer(state: SyncState, p: Participant, nowMs: number, runs: boolean): number {
  const since = runs && state.status === 'running' ? Math.max(0, nowMs - state.server_time_ms) : 0;
  return Math.max(0, p.time_remaining_ms - since);
}

function clockOf(p: Participant): Clock {
  return { bank: p.total_time_ms, overtime: p.overtime && { ...p.overtime } };
}

/** Time until the flag of `c` falls if it runs without a move, its turn
 * having used `turnMs` already. */
function toFlag(tc: TimeControl, c: Clock, turnMs: number): number {
  const ot = c.overtime;
  switch (tc.type) {
    case 'simple_delay':
      return Math.max(0, tc.delay_ms - turnMs) + c.bank;
    case 'byoyomi':
      return c.bank + (ot?.periods_left ?? 0) * tc.period_ms - (ot?.period_used_ms ?? 0);
    case 'canadian':
      return c.bank + tc.period_ms - (ot?.period_used_ms ?? 0);
    default:
      return c.bank;
  }
}

/** Runs `c` (in place) for `e` ms of a turn that had used `turnMs` before;
 * `e` is at most `toFlag`. A byo-yomi period that runs out on the instant is lost. */
function run(tc: TimeControl, c: Clock, turnMs: number, e: number): void {
  const costs = tc.type === 'simple_delay' ? Math.max(0, e - Math.max(0, tc.delay_ms - turnMs)) : e;
  const fromBank = Math.min(costs, c.bank);
  c.bank -= fromBank;
  const over = costs - fromBank;
  const ot = c.overtime;
  if (!ot) return;
  if (tc.type === 'byoyomi') {
    const into = ot.period_used_ms + over;
    const kept = Math.max(0, (ot.periods_left ?? 0) - Math.floor(into / tc.period_ms));
    ot.periods_left = kept;
    ot.period_used_ms = kept === 0 ? 0 : into % tc.period_ms;
  } else if (tc.type === 'canadian') {
    ot.period_used_ms += over;
  }
}

/** The live values of clock `c` (already run forward), its turn having used
 * `turnMs` (0 while waiting), after `moves` completed moves. */
function face(tc: TimeControl, c: Clock, turnMs: number, moves: number): ClockFace {
  const f: ClockFace = { bank_remaining_ms: c.bank };
  const ot = c.overtime;
  switch (tc.type) {
    case 'bronstein':
    case 'simple_delay':
      f.delay_remaining_ms = Math.max(0, tc.delay_ms - turnMs);
      break;
    case 'byoyomi': {
      const left = ot?.periods_left ?? 0;
      f.periods_left = left;
      f.period_remaining_ms = left === 0 ? 0 : tc.period_ms - (ot?.period_used_ms ?? 0);
      f.in_overtime = c.bank === 0;
      break;
    }
    case 'canadian':
      if (ot?.moves_left !== undefined) f.moves_left = ot.moves_left;
      f.period_remaining_ms = tc.period_ms - (ot?.period_used_ms ?? 0);
      f.in_overtime = c.bank === 0;
      break;
  }
  const stages = 'stages' in tc ? (tc.stages ?? []) : [];
  const next = stages.find((st) => st.after_moves > moves);
  if (next) f.moves_left = next.after_moves - moves;
  return f;
}

/** The participants whose clocks run in the current cycle: the whole active
 * group in `per_group`, else the active participant alone. */
function runningIndices(state: SyncState): number[] {
  const active = state.participants.findIndex((x) => x.participant_id === state.active_participant_id);
  if (state.active_participant_id === null || active < 0) return [];
  const group = state.participants[active]!.group_id;
  if (state.sync_mode !== 'per_group' || group === undefined) return [active];
  return state.participants.flatMap((m, j) => (m.group_id === group ? [j] : []));
}

/** Time the running cycle of a banked session has run at `nowMs`, capped at
 * its budget (the earliest flag of the running clocks): a read after the
 * deadline shows the flag fallen. */
function runTime(state: SyncState, tc: TimeControl, nowMs: number): number {
  const running = runningIndices(state);
  if (state.status !== 'running' || running.length === 0) return 0;
  const turn = state.cycle_time_used_ms ?? 0;
  const budget = Math.max(0, Math.min(...running.map((j) => toFlag(tc, clockOf(state.participants[j]!), turn))));
  return Math.min(elapsedMs(state, nowMs), budget);
}

/** Participant `i`'s clock after the running cycle has run `runMs`, with the
 * time its turn has run: its stored clock run forward while its turn runs;
 * in hourglass, while the other side's runs, credited with what it spends. */
function liveClock(state: SyncState, tc: TimeControl, i: number, runMs: number): { clock: Clock; turnMs: number } {
  const p = state.participants[i]!;
  const clock = clockOf(p);
  if (p.is_active) {
    const turn = state.cycle_time_used_ms ?? 0;
    run(tc, clock, turn, runMs);
    return { clock, turnMs: turn + runMs };
  }
  if (tc.type === 'hourglass') clock.bank += runMs;
  return { clock, turnMs: 0 };
}

/** Live time until banked participant `i`'s own flag falls if it does not move. */
function ownToFlag(state: SyncState, tc: TimeControl, i: number, runMs: number): number {
  const { clock, turnMs } = liveClock(state, tc, i, runMs);
  return toFlag(tc, clock, turnMs);
}

/** The `global` session clock: its budget plus any soft-close extension. */
function globalBudget(state: SyncState): number {
  return state.total_time_ms + (state.extension_ms ?? 0);
}

/** Session clock consumed in `global` mode as of `cycle_started_at`. */
function globalUsed(state: SyncState): number {
  return state.participants.reduce((sum, x) => sum + x.time_used_ms, 0);
}
