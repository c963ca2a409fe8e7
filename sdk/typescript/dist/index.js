// synckairos-client: the SyncKairos REST API, typed; live sessions over
// WebSocket; the server clock estimated; remaining time computed locally;
// webhooks verified.
export { SyncKairosError, WebhookVerificationError } from './errors.js';
export { SyncKairosClient } from './rest.js';
export { ClockEstimator, monotonicNow } from './clock.js';
export { LiveSession, backoffDelay, } from './live.js';
export { verifyWebhook } from './webhook.js';
export { clockFace, elapsedMs, isTicking, parseTimestamp, remainingMs, usedMs } from './timing.js';
import { LiveSession } from './live.js';
/** A live session on `client`'s server, connected: the usual way in. */
export function watch(client, sessionId, options = {}) {
    return new LiveSession({ ...options, url: () => client.socketUrl(sessionId) }).connect();
}
