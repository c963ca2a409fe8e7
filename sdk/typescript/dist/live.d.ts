import { ClockEstimator, type ClockOptions } from './clock.js';
import type { ClockFace, ServerMessage, SyncState } from './types.js';
/** `open`: connected and receiving updates. `reconnecting`: the socket, or
 * the server's own update feed, is down and being re-established; clocks go
 * on from the last state meanwhile. `closed`: for good (`close()`, the
 * session was deleted, or the server refused the session id). */
export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';
export interface BackoffOptions {
    /** First retry delay. */
    initialMs?: number;
    /** Longest delay. */
    maxMs?: number;
    factor?: number;
    /** Fraction of each delay that is random: 0.5 waits between 50 % and 100 %. */
    jitter?: number;
}
/** The minimal WebSocket surface used here (browsers' and Node's globals match). */
export interface SocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
}
export interface LiveOptions {
    /** The session's `/ws` URL (see `SyncKairosClient.socketUrl`), or a function
     * returning it, called on every (re)connect so a refreshed token is used. */
    url: string | (() => string);
    /** A WebSocket constructor; the platform's global by default (Node 20 needs
     * `--experimental-websocket`, or pass the `ws` package's). */
    WebSocket?: new (url: string) => SocketLike;
    backoff?: BackoffOptions;
    /** Application-level PING (heartbeat and clock sample) interval. */
    pingIntervalMs?: number;
    /** Silence after which the socket counts as dead and is replaced. */
    silenceTimeoutMs?: number;
    /** PINGs sent back to back on every connect for a first clock estimate. */
    syncBurst?: number;
    clock?: ClockOptions;
    /** Randomness for the jitter (tests pin it). */
    random?: () => number;
}
export interface LiveEvents {
    /** A newer state (STATE_SYNC or STATE_UPDATE). */
    state: (state: SyncState, kind: 'STATE_SYNC' | 'STATE_UPDATE') => void;
    /** A server-applied timeout; the matching `state` event follows or came before. */
    timeout: (message: Extract<ServerMessage, {
        type: 'TIMEOUT';
    }>) => void;
    deleted: () => void;
    connection: (status: ConnectionStatus) => void;
    /** An ERROR message from the server or a close that ends the session. */
    error: (error: {
        code: string;
        message: string;
    }) => void;
    /** A clock sample was taken. */
    clock: (offsetMs: number, rttMs: number) => void;
}
/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
export declare class LiveSession {
    readonly clock: ClockEstimator;
    private readonly options;
    private readonly listeners;
    private socket?;
    private current?;
    private statusValue;
    private attempt;
    private everConnected;
    private stopped;
    private retryTimer?;
    private pingTimer?;
    private lastHeard;
    /** Local send times of PINGs in flight, by the `client_time` they carry. */
    private inFlight;
    private burstLeft;
    constructor(options: LiveOptions);
    /** Opens the socket (once; later calls do nothing). */
    connect(): this;
    /** Closes for good. */
    close(): void;
    on<K extends keyof LiveEvents>(event: K, listener: LiveEvents[K]): () => void;
    get state(): SyncState | undefined;
    get status(): ConnectionStatus;
    /** The server's clock now, as estimated. */
    serverNow(): number;
    /** Live remaining time of a participant (`undefined` before a state or for
     * an unknown id). */
    remainingMs(participantId: string): number | undefined;
    /** A participant's time control values, live: bank, delay, periods, moves
     * and period left (`undefined` before a state, for an unknown id, or
     * without a `time_control` on a banked mode). */
    clockFace(participantId: string): ClockFace | undefined;
    /** Time a participant has used, live (a `count_up` stopwatch's face). */
    usedMs(participantId: string): number | undefined;
    /** Time since the running cycle started. */
    elapsedMs(): number;
    private open;
    private onMessage;
    private onConnected;
    private ping;
    private onPong;
    private onClose;
    private dropSocket;
    private scheduleReconnect;
    private accept;
    private send;
    private stopTimers;
    private setStatus;
    private emit;
}
