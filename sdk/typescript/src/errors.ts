/** An error answer of the API (`{ error: { code, message, details } }`), or a
 * transport failure (`code: 'NETWORK_ERROR'`, `status: 0`). */
export class SyncKairosError extends Error {
  /** The API's error code, e.g. `CONFLICT`, `NOT_YOUR_TURN` is `FORBIDDEN`. */
  readonly code: string;
  /** The HTTP status, 0 when no answer came. */
  readonly status: number;
  /** Field errors, conflict versions or a reason, as the API sent them. */
  readonly details?: unknown;
  /** `Retry-After` in seconds, on 429 and 503 when the server said. */
  readonly retryAfterS?: number;

  constructor(code: string, message: string, status: number, details?: unknown, retryAfterS?: number) {
    super(message);
    this.name = 'SyncKairosError';
    this.code = code;
    this.status = status;
    this.details = details;
    this.retryAfterS = retryAfterS;
  }
}

/** Why `verifyWebhook` refused a delivery. */
export type WebhookVerificationErrorCode =
  | 'MISSING_HEADERS'
  | 'INVALID_TIMESTAMP'
  | 'TIMESTAMP_TOO_OLD'
  | 'TIMESTAMP_TOO_NEW'
  | 'INVALID_SIGNATURE'
  | 'INVALID_BODY';

/** A webhook delivery that did not verify (Standard Webhooks): answer it
 * with a 4xx and do not act on it. */
export class WebhookVerificationError extends Error {
  /** What was wrong, e.g. `INVALID_SIGNATURE`. */
  readonly code: WebhookVerificationErrorCode;

  constructor(code: WebhookVerificationErrorCode, message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.code = code;
  }
}
