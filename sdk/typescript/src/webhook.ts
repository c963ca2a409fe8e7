// Verifying the server's webhooks (Standard Webhooks 1.0): the headers
// `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
// space-separated list of `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`,
// with the key given as `whsec_<base64>`. WebCrypto does the HMAC, so this
// runs in browsers and Node alike with no dependency.

import { WebhookVerificationError } from './errors.js';
import type { WebhookEvent } from './types.js';

/** Request headers: a plain object (names in any case; Node's
 * `req.headers` fits) or a `Headers` instance (fetch, Request). */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyWebhookOptions {
  /** How far the `webhook-timestamp` may be from now, either way
   * (default 5 minutes). Older deliveries are refused as replays. */
  toleranceMs?: number;
  /** The current time (epoch ms), for tests; default `Date.now()`. */
  nowMs?: number;
}

const PREFIX = 'whsec_';
const DEFAULT_TOLERANCE_MS = 5 * 60 * 1000;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Checks that a webhook comes from the server holding `secret` (its
 * `WEBHOOK_SECRET`, `whsec_<base64>`; the bare base64 is accepted too) and is
 * recent, then returns its body. `rawBody` must be the bytes as received,
 * before any JSON parsing. Throws `WebhookVerificationError` (with a `code`)
 * when a header is missing, the timestamp is not a number or is more than
 * `toleranceMs` away, no `v1` signature matches, or the signed body is not
 * JSON; a `TypeError` when `secret` is not a key.
 */
export async function verifyWebhook(
  secret: string,
  headers: WebhookHeaders,
  rawBody: string | Uint8Array,
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent> {
  const toleranceMs = options.toleranceMs ?? DEFAULT_TOLERANCE_MS;
  if (!(toleranceMs >= 0)) throw new TypeError('verifyWebhook: toleranceMs must be a number >= 0');
  const key = await importKey(secret);

  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  const missing = [
    id ? '' : 'webhook-id',
    timestamp ? '' : 'webhook-timestamp',
    signatures ? '' : 'webhook-signature',
  ].filter(Boolean);
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError('MISSING_HEADERS', `Missing webhook header(s): ${missing.join(', ')}`);
  }

  if (!/^[0-9]{1,15}$/.test(timestamp)) {
    throw new WebhookVerificationError('INVALID_TIMESTAMP', 'webhook-timestamp is not a Unix time in seconds');
  }
  const sentMs = Number(timestamp) * 1000;
  const nowMs = options.nowMs ?? Date.now();
  if (nowMs - sentMs > toleranceMs) {
    throw new WebhookVerificationError('TIMESTAMP_TOO_OLD', 'Webhook timestamp too old');
  }
  if (sentMs - nowMs > toleranceMs) {
    throw new WebhookVerificationError('TIMESTAMP_TOO_NEW', 'Webhook timestamp too new');
  }

  // The signed content is exactly what was sent: id and timestamp as in
  // their headers, the body's bytes untouched.
  const body = typeof rawBody === 'string' ? new TextEncoder().encode(rawBody) : rawBody;
  const head = new TextEncoder().encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(head.length + body.length);
  signed.set(head);
  signed.set(body, head.length);
  const expected = toBase64(new Uint8Array(await subtle().sign('HMAC', key, signed)));

  // Space-separated; a trailing comma is tolerated for a header that a
  // proxy or `Headers` joined from several (", ").
  const matched = signatures
    .split(/\s+/)
    .map((s) => s.replace(/,$/, ''))
    .some((s) => s.startsWith('v1,') && equalInConstantTime(s.slice(3), expected));
  if (!matched) {
    throw new WebhookVerificationError('INVALID_SIGNATURE', 'No matching webhook signature');
  }

  try {
    const text = typeof rawBody === 'string' ? rawBody : new TextDecoder('utf-8', { fatal: true }).decode(rawBody);
    return JSON.parse(text) as WebhookEvent;
  } catch {
    throw new WebhookVerificationError('INVALID_BODY', 'The webhook body is not JSON');
  }
}

/** A header's value, or undefined when absent or empty. */
function header(headers: WebhookHeaders, name: string): string | undefined {
  let value: string | readonly string[] | null | undefined;
  if (typeof headers.get === 'function') {
    value = (headers as { get(name: string): string | null }).get(name);
  } else {
    const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
    const found = Object.keys(record).find((k) => k.toLowerCase() === name);
    value = found === undefined ? undefined : record[found];
  }
  const text = typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : undefined;
  return text || undefined;
}

async function importKey(secret: string): Promise<CryptoKey> {
  if (typeof secret !== 'string') throw new TypeError('verifyWebhook: the secret must be a string');
  const encoded = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret;
  if (!encoded || !BASE64.test(encoded)) {
    throw new TypeError('verifyWebhook: the secret must be whsec_ followed by a non-empty base64 key');
  }
  const raw = atob(encoded);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return subtle().importKey('raw', bytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
}

function subtle(): SubtleCrypto {
  const api = globalThis.crypto?.subtle;
  if (!api) {
    throw new Error('verifyWebhook needs WebCrypto (crypto.subtle): Node >= 20, or a browser page served over HTTPS');
  }
  return api;
}

function toBase64(bytes: Uint8Array): string {
  let raw = '';
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw);
}

/** String equality whose time depends only on the lengths. */
function equalInConstantTime(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
