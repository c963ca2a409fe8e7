/** An error answer of the API (`{ error: { code, message, details } }`), or a
 * transport failure (`code: 'NETWORK_ERROR'`, `status: 0`). */
export class SyncKairosError extends Error {
    /** The API's error code, e.g. `CONFLICT`, `NOT_YOUR_TURN` is `FORBIDDEN`. */
    code;
    /** The HTTP status, 0 when no answer came. */
    status;
    /** Field errors, conflict versions or a reason, as the API sent them. */
    details;
    /** `Retry-After` in seconds, on 429 and 503 when the server said. */
    retryAfterS;
    constructor(code, message, status, details, retryAfterS) {
        super(message);
        this.name = 'SyncKairosError';
        this.code = code;
        this.status = status;
        this.details = details;
        this.retryAfterS = retryAfterS;
    }
}
/** A webhook delivery that did not verify (Standard Webhooks): answer it
 * with a 4xx and do not act on it. */
export class WebhookVerificationError extends Error {
    /** What was wrong, e.g. `INVALID_SIGNATURE`. */
    code;
    constructor(code, message) {
        super(message);
        this.name = 'WebhookVerificationError';
        this.code = code;
    }
}
