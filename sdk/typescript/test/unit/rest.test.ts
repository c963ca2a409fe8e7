import { describe, expect, it, vi } from 'vitest';
import { SyncKairosError } from '../../src/errors.js';
import { SyncKairosClient } from '../../src/rest.js';

function answering(status: number, body: unknown, headers: Record<string, string> = {}) {
  return vi.fn(async () => new Response(body === undefined ? null : JSON.stringify(body), { status, headers }));
}

describe('SyncKairosClient', () => {
  it('unwraps data, sends JSON and the bearer token', async () => {
    const fetch = answering(200, { data: { version: 4 } });
    const api = new SyncKairosClient({ baseUrl: 'http://s/', token: () => 'tok', fetch });
    expect(await api.switch('id 1', { expected_version: 3 })).toEqual({ version: 4 });
    expect(fetch).toHaveBeenCalledWith('http://s/v1/sessions/id%201/switch', {
      method: 'POST',
      headers: { accept: 'application/json', authorization: 'Bearer tok', 'content-type': 'application/json' },
      body: '{"expected_version":3}',
    });
  });

  it('throws the API error with code, status, details and Retry-After', async () => {
    const details = { expected_version: 3, actual_version: 4 };
    const api = new SyncKairosClient({
      baseUrl: 'http://s',
      fetch: answering(409, { error: { code: 'CONFLICT', message: 'Version mismatch', details } }),
    });
    const err = await api.switch('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncKairosError);
    expect(err).toMatchObject({ code: 'CONFLICT', status: 409, details, message: 'Version mismatch' });

    const limited = new SyncKairosClient({
      baseUrl: 'http://s',
      fetch: answering(429, { error: { code: 'RATE_LIMIT_EXCEEDED', message: 'slow down' } }, { 'retry-after': '2' }),
    });
    await expect(limited.getSession('x')).rejects.toMatchObject({ code: 'RATE_LIMIT_EXCEEDED', retryAfterS: 2 });
  });

  it('maps a non-JSON failure and a network failure', async () => {
    const html = new SyncKairosClient({ baseUrl: 'http://s', fetch: vi.fn(async () => new Response('<h1>bad gateway</h1>', { status: 502 })) });
    await expect(html.getSession('x')).rejects.toMatchObject({ code: 'HTTP_502', status: 502 });
    const down = new SyncKairosClient({ baseUrl: 'http://s', fetch: vi.fn(async () => Promise.reject(new TypeError('fetch failed'))) });
    await expect(down.start('x')).rejects.toMatchObject({ code: 'NETWORK_ERROR', status: 0 });
  });

  it('reads /v1/time without an envelope and DELETE as no content', async () => {
    const time = { timestamp_ms: 1, server_version: '2.0.0', drift_tolerance_ms: 50 };
    expect(await new SyncKairosClient({ baseUrl: 'http://s', fetch: answering(200, time) }).time()).toEqual(time);
    expect(await new SyncKairosClient({ baseUrl: 'http://s', fetch: answering(204, undefined) }).deleteSession('x')).toBeUndefined();
  });

  it('pages the audit history', async () => {
    const fetch = answering(200, { data: { events: [], next_before: null } });
    await new SyncKairosClient({ baseUrl: 'http://s', fetch }).events('x', { limit: 10, before: 'e1' });
    expect((fetch.mock.calls[0] as unknown[])[0]).toBe('http://s/v1/sessions/x/events?limit=10&before=e1');
  });
});

describe('SyncKairosClient.socketUrl', () => {
  it('maps http(s) to ws(s), carries the token, and resolves a relative base against the page', () => {
    expect(new SyncKairosClient({ baseUrl: 'https://t.example/', token: 'a b' }).socketUrl('s')).toBe(
      'wss://t.example/ws?sessionId=s&token=a+b',
    );
    vi.stubGlobal('location', { href: 'http://page.example:8080/demo?x=1' });
    try {
      expect(new SyncKairosClient({ baseUrl: '' }).socketUrl('s')).toBe('ws://page.example:8080/ws?sessionId=s');
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
