import type { SyncState } from './types.js';
/** RFC 3339 → epoch ms (`null` stays `null`). */
export declare function parseTimestamp(ts: string | null | undefined): number | null;
/** Time since the running cycle started, at server instant `nowMs` (0 when no
 * clock runs; never negative). */
export declare function elapsedMs(state: SyncState, nowMs: number): number;
/** Live remaining time of a participant at server instant `nowMs`, floored at 0;
 * `undefined` for an unknown participant. */
export declare function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined;
/** Time a participant has used so far (a stopwatch's face in `count_up`). */
export declare function usedMs(state: SyncState, participantId: string, nowMs: number): number | undefined;
/** Whether some clock of the session runs (worth re-rendering every frame). */
export declare function isTicking(state: SyncState | undefined): boolean;
