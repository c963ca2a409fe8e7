import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { WebhookVerificationError } from '../../src/errors.js';
import type { WebhookEvent } from '../../src/types.js';
import { verifyWebhook } from '../../src/webhook.js';

// The Standard Webhooks libraries' own test vector (also the server's, src/webhooks/sign.rs).
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const BARE = 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const ID = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
const TS = 1614265330;
const BODY = '{"test": 2432232314}';
const SIGNATURE = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
const OTHER = 'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=';
const AT = { nowMs: TS * 1000 };

const headers = (signature = SIGNATURE, timestamp = String(TS), id = ID): Record<string, string> => ({
  'webhook-id': id,
  'webhook-timestamp': timestamp,
  'webhook-signature': signature,
});

/** An independent signer (node:crypto) for timestamps other than the vector's. */
function sign(timestamp: number, body: string | Uint8Array = BODY, id = ID): string {
  const mac = createHmac('sha256', Buffer.from(BARE, 'base64'));
  mac.update(`${id}.${timestamp}.`).update(body);
  return `v1,${mac.digest('base64')}`;
}

async function refusal(promise: Promise<unknown>): Promise<WebhookVerificationError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WebhookVerificationError);
  return err as WebhookVerificationError;
}

describe('verifyWebhook', () => {
  it('accepts the Standard Webhooks vector and returns the parsed body', async () => {
    expect(sign(TS)).toBe(SIGNATURE);
    expect(await verifyWebhook(SECRET, headers(), BODY, AT)).toEqual({ test: 2432232314 });
  });

  it('works with and without the whsec_ prefix, on a string or the raw bytes', async () => {
    const bytes = new TextEncoder().encode(BODY);
    for (const secret of [SECRET, BARE]) {
      for (const body of [BODY, bytes, Buffer.from(BODY)]) {
        expect(await verifyWebhook(secret, headers(), body, AT)).toEqual({ test: 2432232314 });
      }
    }
  });

  it('signs the bytes as received, not a re-encoding of them', async () => {
    const bytes = new Uint8Array([...new TextEncoder().encode('{"s":"'), 0xff, ...new TextEncoder().encode('"}')]);
    const err = await refusal(verifyWebhook(SECRET, headers(sign(TS, bytes)), bytes, AT));
    expect(err.code).toBe('INVALID_BODY'); // signature fine, but not UTF-8 JSON
    expect((await refusal(verifyWebhook(SECRET, headers(sign(TS, bytes)), '{"s":"\uFFFD"}', AT))).code).toBe(
      'INVALID_SIGNATURE',
    );
  });

  it('accepts one valid signature among several', async () => {
    const v2 = OTHER.replace('v1,', 'v2,');
    expect(await verifyWebhook(SECRET, headers([OTHER, v2, SIGNATURE, OTHER].join(' ')), BODY, AT)).toEqual({
      test: 2432232314,
    });
    // as a proxy or Headers joins repeated headers
    expect(await verifyWebhook(SECRET, headers(`${OTHER}, ${SIGNATURE}`), BODY, AT)).toBeDefined();
  });

  it('reads header names in any case, Node header arrays, and Headers', async () => {
    const upper = { 'Webhook-Id': ID, 'WEBHOOK-TIMESTAMP': String(TS), 'webhook-Signature': [SIGNATURE] };
    expect(await verifyWebhook(SECRET, upper, BODY, AT)).toBeDefined();
    expect(await verifyWebhook(SECRET, new Headers(headers()), BODY, AT)).toBeDefined();
  });

  it('refuses wrong, partial, empty and non-v1 signatures', async () => {
    for (const signature of [
      OTHER,
      'v1,dawfeoifkpqwoekfpqoekf',
      SIGNATURE.slice(0, 8),
      SIGNATURE.slice(0, -1),
      'v1,',
      'v1',
      SIGNATURE.replace('v1,', 'v2,'),
      SIGNATURE.replace('v1,', ''),
      SIGNATURE.replace('v1,', 'v1, '),
      `${SIGNATURE}x`,
    ]) {
      const err = await refusal(verifyWebhook(SECRET, headers(signature), BODY, AT));
      expect(err, signature).toMatchObject({ code: 'INVALID_SIGNATURE', name: 'WebhookVerificationError' });
    }
  });

  it('refuses another body, id, timestamp or key', async () => {
    const refused = async (p: Promise<unknown>) => expect((await refusal(p)).code).toBe('INVALID_SIGNATURE');
    await refused(verifyWebhook(SECRET, headers(), '{"test": 2432232315}', AT));
    await refused(verifyWebhook(SECRET, headers(SIGNATURE, String(TS), 'msg_other'), BODY, AT));
    await refused(verifyWebhook(SECRET, headers(SIGNATURE, String(TS + 1)), BODY, AT));
    await refused(verifyWebhook('whsec_' + btoa('another key of 24 bytes!'), headers(), BODY, AT));
  });

  it('refuses missing headers, naming them', async () => {
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const h = headers();
      delete h[name];
      const err = await refusal(verifyWebhook(SECRET, h, BODY, AT));
      expect(err.code).toBe('MISSING_HEADERS');
      expect(err.message).toContain(name);
      h[name] = '';
      expect((await refusal(verifyWebhook(SECRET, h, BODY, AT))).code).toBe('MISSING_HEADERS');
    }
    expect((await refusal(verifyWebhook(SECRET, {}, BODY, AT))).message).toContain(
      'webhook-id, webhook-timestamp, webhook-signature',
    );
    expect((await refusal(verifyWebhook(SECRET, new Headers(), BODY, AT))).code).toBe('MISSING_HEADERS');
  });

  it('refuses a timestamp that is not Unix seconds', async () => {
    for (const ts of ['hello', '1614265330.5', '-1614265330', '1614265330abc', ' 1614265330', '1e9', '0x60380a72']) {
      expect((await refusal(verifyWebhook(SECRET, headers(SIGNATURE, ts), BODY, AT))).code, ts).toBe('INVALID_TIMESTAMP');
    }
  });

  it('refuses a timestamp older or newer than the tolerance, 5 minutes by default', async () => {
    const now = TS * 1000;
    // at the edges: accepted
    expect(await verifyWebhook(SECRET, headers(), BODY, { nowMs: now + 300_000 })).toBeDefined();
    expect(await verifyWebhook(SECRET, headers(), BODY, { nowMs: now - 300_000 })).toBeDefined();
    // beyond: refused, before the signature is even checked
    const old = await refusal(verifyWebhook(SECRET, headers(), BODY, { nowMs: now + 301_000 }));
    expect(old.code).toBe('TIMESTAMP_TOO_OLD');
    const early = await refusal(verifyWebhook(SECRET, headers(), BODY, { nowMs: now - 301_000 }));
    expect(early.code).toBe('TIMESTAMP_TOO_NEW');
    // configurable
    expect(await verifyWebhook(SECRET, headers(), BODY, { nowMs: now + 3_600_000, toleranceMs: 3_600_000 })).toBeDefined();
    const strict = await refusal(verifyWebhook(SECRET, headers(), BODY, { nowMs: now + 2_000, toleranceMs: 1_000 }));
    expect(strict.code).toBe('TIMESTAMP_TOO_OLD');
  });

  it('checks against the real clock by default', async () => {
    const fresh = Math.floor(Date.now() / 1000);
    expect(await verifyWebhook(SECRET, headers(sign(fresh), String(fresh)), BODY)).toEqual({ test: 2432232314 });
    for (const [ts, code] of [
      [fresh - 301, 'TIMESTAMP_TOO_OLD'],
      [fresh + 301, 'TIMESTAMP_TOO_NEW'],
    ] as const) {
      expect((await refusal(verifyWebhook(SECRET, headers(sign(ts), String(ts)), BODY))).code).toBe(code);
    }
    // the vector itself is years old
    expect((await refusal(verifyWebhook(SECRET, headers(), BODY))).code).toBe('TIMESTAMP_TOO_OLD');
  });

  it('refuses a signed body that is not JSON', async () => {
    for (const body of ['', 'not json']) {
      expect((await refusal(verifyWebhook(SECRET, headers(sign(TS, body)), body, AT))).code).toBe('INVALID_BODY');
    }
  });

  it('throws a TypeError, not a verification error, for a secret that is no key or a bad tolerance', async () => {
    for (const secret of ['', 'whsec_', 'whsec_!!!', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS', 'whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']) {
      await expect(verifyWebhook(secret, headers(), BODY, AT), secret).rejects.toBeInstanceOf(TypeError);
    }
    await expect(verifyWebhook(SECRET, headers(), BODY, { ...AT, toleranceMs: -1 })).rejects.toBeInstanceOf(TypeError);
    await expect(verifyWebhook(SECRET, {}, BODY, { toleranceMs: Number.NaN })).rejects.toBeInstanceOf(TypeError);
  });

  it('returns a server webhook typed as WebhookEvent', async () => {
    const event: WebhookEvent = {
      type: 'session.timeout',
      timestamp: '2026-05-01T12:00:00.000Z',
      data: {
        session_id: '8a1c0f7e-0000-4000-8000-000000000001',
        version: 7,
        participant_id: 'p1',
        action_on_timeout: { type: 'end_session' },
        state: null,
      },
    };
    const body = JSON.stringify(event);
    const verified = await verifyWebhook(SECRET, headers(sign(TS, body)), body, AT);
    expect(verified).toEqual(event);
    expect(verified.type).toBe('session.timeout');
  });
});
