export { SyncKairosError, WebhookVerificationError, type WebhookVerificationErrorCode } from './errors.js';
export { SyncKairosClient, type ClientOptions } from './rest.js';
export { ClockEstimator, monotonicNow, type ClockOptions, type ClockSample } from './clock.js';
export { LiveSession, backoffDelay, type BackoffOptions, type ConnectionStatus, type LiveEvents, type LiveOptions, type SocketLike, } from './live.js';
export { verifyWebhook, type VerifyWebhookOptions, type WebhookHeaders } from './webhook.js';
export { clockFace, elapsedMs, isTicking, parseTimestamp, remainingMs, usedMs } from './timing.js';
export type * from './types.js';
import { LiveSession, type LiveOptions } from './live.js';
import type { SyncKairosClient } from './rest.js';
/** A live session on `client`'s server, connected: the usual way in. */
export declare function watch(client: SyncKairosClient, sessionId: string, options?: Omit<LiveOptions, 'url'>): LiveSession;
