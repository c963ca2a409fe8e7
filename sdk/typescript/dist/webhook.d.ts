import type { WebhookEvent } from './types.js';
/** Request headers: a plain object (names in any case; Node's
 * `req.headers` fits) or a `Headers` instance (fetch, Request). */
export type WebhookHeaders = {
    get(name: string): string | null;
} | Readonly<Record<string, string | readonly string[] | undefined>>;
export interface VerifyWebhookOptions {
    /** How far the `webhook-timestamp` may be from now, either way
     * (default 5 minutes). Older deliveries are refused as replays. */
    toleranceMs?: number;
    /** The current time (epoch ms), for tests; default `Date.now()`. */
    nowMs?: number;
}
/**
 * Checks that a webhook comes from the server holding `secret` (its
 * `WEBHOOK_SECRET`, `whsec_<base64>`; the bare base64 is accepted too) and is
 * recent, then returns its body. `rawBody` must be the bytes as received,
 * before any JSON parsing. Throws `WebhookVerificationError` (with a `code`)
 * when a header is missing, the timestamp is not a number or is more than
 * `toleranceMs` away, no `v1` signature matches, or the signed body is not
 * JSON; a `TypeError` when `secret` is not a key.
 */
export declare function verifyWebhook(secret: string, headers: WebhookHeaders, rawBody: string | Uint8Array, options?: VerifyWebhookOptions): Promise<WebhookEvent>;
