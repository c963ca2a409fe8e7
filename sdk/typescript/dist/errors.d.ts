/** An error answer of the API (`{ error: { code, message, details } }`), or a
 * transport failure (`code: 'NETWORK_ERROR'`, `status: 0`). */
export declare class SyncKairosError extends Error {
    /** The API's error code, e.g. `CONFLICT`, `NOT_YOUR_TURN` is `FORBIDDEN`. */
    readonly code: string;
    /** The HTTP status, 0 when no answer came. */
    readonly status: number;
    /** Field errors, conflict versions or a reason, as the API sent them. */
    readonly details?: unknown;
    /** `Retry-After` in seconds, on 429 and 503 when the server said. */
    readonly retryAfterS?: number;
    constructor(code: string, message: string, status: number, details?: unknown, retryAfterS?: number);
}
