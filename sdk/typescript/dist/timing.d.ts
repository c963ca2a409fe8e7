import type { ClockFace, SyncState } from './types.js';
/** RFC 3339 → epoch ms (`null` stays `null`). */
export declare function parseTimestamp(ts: string | null | undefined): number | null;
/** Time since the running cycle started, at server instant `nowMs` (0 when no
 * clock runs; never negative). */
export declare function elapsedMs(state: SyncState, nowMs: number): number;
/** Live remaining time of a participant at server instant `nowMs`, floored at 0:
 * the time until its flag falls if it does not move (delay and overtime
 * included, as the server's `time_remaining_ms`); `undefined` for an unknown
 * participant. */
export declare function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined;
/** The live values of a participant's time control at server instant `nowMs`
 * (`bank_remaining_ms`, and where the control has them `delay_remaining_ms`,
 * `periods_left`, `moves_left`, `period_remaining_ms`, `in_overtime`): what
 * the server would send in the participant at that instant. `undefined` for
 * an unknown participant, and where the server sends none: a session without
 * a `time_control`, or not in a banked mode (`per_participant`, `per_group`). */
export declare function clockFace(state: SyncState, participantId: string, nowMs: number): ClockFace | undefined;
/** Time a participant has used so far (a stopwatch's face in `count_up`). */
export declare function usedMs(state: SyncState, participantId: string, nowMs: number): number | undefined;
/** Whether some clock of the session runs (worth re-rendering every frame). */
export declare function isTicking(state: SyncState | undefined): boolean;
