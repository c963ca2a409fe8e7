import type { ConnectionStatus, LiveOptions } from './live.js';
import { SyncKairosClient } from './rest.js';
import type { ClockFace, SwitchRequest, SwitchResult, SyncState } from './types.js';
export interface UseSyncKairosOptions {
    /** The server, e.g. `https://timers.example.com`; or pass `client`. */
    baseUrl?: string;
    client?: SyncKairosClient;
    token?: string;
    live?: Omit<LiveOptions, 'url'>;
}
export interface SyncKairosHook {
    state: SyncState | undefined;
    /** Live remaining time of a participant, at this render. */
    remaining: (participantId: string) => number | undefined;
    /** Live time used by a participant (count_up). */
    used: (participantId: string) => number | undefined;
    /** A participant's time control values at this render: `bank_remaining_ms`
     * and, where the control has them, `delay_remaining_ms`, `periods_left`,
     * `moves_left`, `period_remaining_ms`, `in_overtime` (`undefined` without a
     * `time_control`). Computed afresh on every frame while a clock runs. */
    face: (participantId: string) => ClockFace | undefined;
    status: ConnectionStatus;
    /** Server clock minus local clock, as measured. */
    offsetMs: number;
    /** Best round trip measured (the offset is good to ± half of it). */
    rttMs: number;
    /** The last error the server reported on the socket, if any. */
    error: {
        code: string;
        message: string;
    } | undefined;
    actions: {
        switch: (body?: SwitchRequest) => Promise<SwitchResult>;
        start: () => Promise<SyncState>;
        pause: () => Promise<SyncState>;
        resume: () => Promise<SyncState>;
        complete: () => Promise<SyncState>;
    };
}
export declare function useSyncKairos(sessionId: string | undefined, options: UseSyncKairosOptions): SyncKairosHook;
