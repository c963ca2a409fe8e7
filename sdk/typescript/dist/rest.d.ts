import type { CreateSessionRequest, EventsPage, MintTokenRequest, MintedToken, ServerTime, SwitchRequest, SwitchResult, SyncState } from './types.js';
export interface ClientOptions {
    /** The server's base URL, e.g. `https://timers.example.com`; in a
     * browser `''` means the page's own origin. */
    baseUrl: string;
    /** A bearer token (`AUTH_MODE=jwt`), or a function returning the current one. */
    token?: string | (() => string | undefined);
    /** A `fetch` implementation; the platform's by default. */
    fetch?: typeof fetch;
}
/** Typed calls for every REST endpoint. Failures throw {@link SyncKairosError}. */
export declare class SyncKairosClient {
    readonly baseUrl: string;
    private readonly token?;
    private readonly fetchImpl;
    constructor(options: ClientOptions);
    createSession(body: CreateSessionRequest): Promise<SyncState>;
    getSession(id: string): Promise<SyncState>;
    start(id: string): Promise<SyncState>;
    /** Passes the turn: to the next participant, or to `next_participant_id`;
     * with `expected_version`, only if the session is still at that version. */
    switch(id: string, body?: SwitchRequest): Promise<SwitchResult>;
    pause(id: string): Promise<SyncState>;
    resume(id: string): Promise<SyncState>;
    complete(id: string): Promise<SyncState>;
    /** Idempotent: resolves for unknown ids too. */
    deleteSession(id: string): Promise<void>;
    /** One page of the audit history, newest first (needs the server's audit trail). */
    events(id: string, page?: {
        limit?: number;
        before?: string;
    }): Promise<EventsPage>;
    /** Mints a participant or viewer token for one session (HS256 servers). */
    mintToken(id: string, body: MintTokenRequest): Promise<MintedToken>;
    /** The server clock, once; for continuous sync use a live session's estimator. */
    time(): Promise<ServerTime>;
    /** The `/ws` URL of a session, with the token as `?token=` when there is one. */
    socketUrl(sessionId: string): string;
    private currentToken;
    private call;
}
