// verifyWebhook against the real server's deliveries: the binary (embedded
// backend) sends every event to a local receiver that keeps the raw bodies
// and headers; each delivery must verify with the server's secret, and only
// with it, and only untouched.

import { randomBytes, randomUUID } from 'node:crypto';
import { type IncomingHttpHeaders, type Server, createServer } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import {
  SyncKairosClient,
  WebhookVerificationError,
  type WebhookEvent,
  type WebhookEventType,
  verifyWebhook,
} from '../../src/index.js';
import { Instance, freePort, until } from './harness.js';

/** One request as the receiver got it. */
interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** What the receiver answered. */
  status: number;
}

/** A webhook receiver on a free port: keeps every request and answers 204,
 * or what `answer` says for a request. */
class Receiver {
  readonly deliveries: Delivery[] = [];
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(answer: (d: Omit<Delivery, 'status'>) => number = () => 204): Promise<Receiver> {
    const port = await freePort();
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const d = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
        const status = answer(d);
        receiver.deliveries.push({ ...d, status });
        res.writeHead(status).end();
      });
    });
    const receiver = new Receiver(server, port);
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(port, '127.0.0.1', done);
    });
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks`;
  }

  /** The event types of the deliveries answered with a 2xx. */
  delivered(): WebhookEventType[] {
    return this.deliveries.filter((d) => d.status < 300).map((d) => eventType(d.body));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((done) => this.server.close(() => done()));
  }
}

/** The type in a body, read without verifying (for routing in the test only). */
const eventType = (body: Buffer): WebhookEventType => (JSON.parse(body.toString('utf8')) as WebhookEvent).type;

/** A fresh Standard Webhooks key: `whsec_` and 32 random bytes in base64. */
const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** The error `verifyWebhook` rejected with (failing the test if it accepted). */
async function rejection(p: Promise<unknown>): Promise<WebhookVerificationError> {
  const e = await p.then(
    () => expect.fail('verifyWebhook accepted it'),
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(WebhookVerificationError);
  return e as WebhookVerificationError;
}

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const LIFECYCLE: WebhookEventType[] = ['session.created', 'session.started', 'session.switched', 'session.completed'];

describe('verifyWebhook against the server', () => {
  it('accepts every delivery of a session, typed, and refuses any change to one', async () => {
    // The first attempt of session.switched is refused (503), so it comes
    // again after WEBHOOK_RETRY_SCHEDULE: the retry must verify as well.
    let refused = false;
    const receiver = await Receiver.start((d) => {
      if (!refused && eventType(d.body) === 'session.switched') {
        refused = true;
        return 503;
      }
      return 204;
    });
    cleanup.push(() => receiver.close());
    const secret = newSecret();
    const server = await Instance.start({
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET: secret,
      WEBHOOK_EVENTS: '*',
      WEBHOOK_RETRY_SCHEDULE: '200ms',
    });
    cleanup.push(() => server.stop());

    const client = new SyncKairosClient({ baseUrl: server.base });
    const sessionId = randomUUID();
    const [white, black] = [randomUUID(), randomUUID()];
    const created = await client.createSession({
      session_id: sessionId,
      sync_mode: 'per_participant',
      participants: [
        { participant_id: white, participant_index: 0, total_time_ms: 60_000 },
        { participant_id: black, participant_index: 1, total_time_ms: 60_000 },
      ],
      total_time_ms: 120_000,
    });
    const started = await client.start(sessionId);
    const switched = await client.switch(sessionId, { expected_version: started.version });
    const completed = await client.complete(sessionId);
    expect(switched.active_participant_id).toBe(black);

    await until(
      `the receiver to get ${LIFECYCLE.join(', ')} (it has: ${receiver.delivered().join(', ')})`,
      () => LIFECYCLE.every((t) => receiver.delivered().includes(t)),
    );

    // Every request went to the configured path with the Standard Webhooks headers.
    for (const d of receiver.deliveries) {
      expect(d.path).toBe('/hooks');
      expect(d.headers['content-type']).toBe('application/json');
      expect(d.headers['webhook-id']).toEqual(expect.any(String));
      expect(d.headers['webhook-timestamp']).toMatch(/^\d+$/);
      expect(d.headers['webhook-signature']).toMatch(/^v1,/);
    }

    // Each delivery verifies, with Node's headers and raw bytes as received,
    // and returns the typed event.
    const events: WebhookEvent[] = [];
    for (const d of receiver.deliveries) events.push(await verifyWebhook(secret, d.headers, d.body));
    const accepted = receiver.deliveries.filter((d) => d.status < 300);
    const byType = new Map<WebhookEventType, { delivery: Delivery; event: WebhookEvent }>();
    for (const [i, d] of receiver.deliveries.entries()) {
      const event = events[i]!;
      expect(event).toEqual(JSON.parse(d.body.toString('utf8')));
      if (d.status < 300) {
        expect(byType.has(event.type), `${event.type} delivered once`).toBe(false);
        byType.set(event.type, { delivery: d, event });
      }
    }
    expect([...byType.keys()].sort()).toEqual([...LIFECYCLE].sort());
    expect(accepted).toHaveLength(LIFECYCLE.length);

    // The same, given as a fetch `Headers` and the body as a string.
    for (const { delivery } of byType.values()) {
      const headers = new Headers();
      for (const [k, v] of Object.entries(delivery.headers)) if (typeof v === 'string') headers.set(k, v);
      await expect(verifyWebhook(secret, headers, delivery.body.toString('utf8'))).resolves.toEqual(
        JSON.parse(delivery.body.toString('utf8')),
      );
    }

    // The events, in the order of the session's writes: its id, versions
    // increasing as the REST answers gave them, the state after each.
    const lifecycle = LIFECYCLE.map((t) => byType.get(t)!.event);
    expect(lifecycle.map((e) => e.type)).toEqual(LIFECYCLE);
    for (const e of lifecycle) {
      expect(e.data.session_id).toBe(sessionId);
      expect(e.data.state?.session_id).toBe(sessionId);
      expect(e.data.state?.version).toBe(e.data.version);
      expect(Number.isNaN(Date.parse(e.timestamp))).toBe(false);
    }
    const versions = lifecycle.map((e) => e.data.version);
    for (let i = 1; i < versions.length; i++) expect(versions[i]!).toBeGreaterThan(versions[i - 1]!);
    expect(versions).toEqual([created.version, started.version, switched.version, completed.version]);
    expect(lifecycle.map((e) => e.data.state?.status)).toEqual(['pending', 'running', 'running', 'completed']);
    expect(byType.get('session.switched')!.event.data.state?.active_participant_id).toBe(black);

    // The refused attempt came again under the same webhook-id with the same
    // body (a fresh signature), and both verify.
    const retried = receiver.deliveries.filter((d) => eventType(d.body) === 'session.switched');
    expect(retried.map((d) => d.status)).toEqual([503, 204]);
    expect(retried[1]!.headers['webhook-id']).toBe(retried[0]!.headers['webhook-id']);
    expect(retried[1]!.body.equals(retried[0]!.body)).toBe(true);

    // A webhook-id names one event: no two events share one.
    const ids = lifecycle.map((_, i) => byType.get(LIFECYCLE[i]!)!.delivery.headers['webhook-id'] as string);
    expect(new Set(ids).size).toBe(ids.length);
    for (const d of receiver.deliveries) {
      const id = d.headers['webhook-id'];
      const sameId = receiver.deliveries.filter((o) => o.headers['webhook-id'] === id);
      expect(sameId.every((o) => o.body.equals(d.body)), `${String(id)} carries one event`).toBe(true);
    }

    for (const { delivery: d } of byType.values()) {
      const body = d.body.toString('utf8');

      // A changed body: one character, a re-serialisation, bytes appended.
      const flipped = body.replace(/"version":(\d+)/, (_, v: string) => `"version":${Number(v) + 1}`);
      expect(flipped).not.toBe(body);
      for (const tampered of [flipped, JSON.stringify(JSON.parse(body), null, 1), `${body} `]) {
        expect((await rejection(verifyWebhook(secret, d.headers, tampered))).code).toBe('INVALID_SIGNATURE');
      }
      const bytes = Buffer.from(d.body);
      bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 1;
      expect((await rejection(verifyWebhook(secret, d.headers, bytes))).code).toBe('INVALID_SIGNATURE');

      // Another key, or the right key's bytes off by one bit.
      expect((await rejection(verifyWebhook(newSecret(), d.headers, d.body))).code).toBe('INVALID_SIGNATURE');
      const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
      key[0] = key[0]! ^ 1;
      const near = `whsec_${key.toString('base64')}`;
      expect((await rejection(verifyWebhook(near, d.headers, d.body))).code).toBe('INVALID_SIGNATURE');

      // The signature covers the id and the timestamp: another delivery's
      // id, or a second later, does not verify.
      for (const other of ids.filter((id) => id !== d.headers['webhook-id'])) {
        const headers = { ...d.headers, 'webhook-id': other };
        expect((await rejection(verifyWebhook(secret, headers, d.body))).code).toBe('INVALID_SIGNATURE');
      }
      const later = { ...d.headers, 'webhook-timestamp': String(Number(d.headers['webhook-timestamp']) + 1) };
      expect((await rejection(verifyWebhook(secret, later, d.body))).code).toBe('INVALID_SIGNATURE');

      // A signature lifted from another event does not verify this one.
      for (const { delivery: o } of byType.values()) {
        if (o === d) continue;
        const headers = { ...d.headers, 'webhook-signature': o.headers['webhook-signature'] };
        expect((await rejection(verifyWebhook(secret, headers, d.body))).code).toBe('INVALID_SIGNATURE');
      }
    }
  });
});
