import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LiveSession, backoffDelay, type ConnectionStatus } from '../../src/live.js';
import type { SyncState } from '../../src/types.js';
import { FakeSocket } from './fake-socket.js';

function state(version: number, extra: Partial<SyncState> = {}): SyncState {
  return {
    session_id: 's',
    sync_mode: 'per_participant',
    status: 'running',
    version,
    participants: [],
    active_participant_id: null,
    total_time_ms: 60_000,
    time_per_cycle_ms: null,
    increment_ms: 0,
    cycle_started_at: null,
    session_started_at: null,
    session_completed_at: null,
    created_at: '2026-01-01T00:00:00.000Z',
    updated_at: '2026-01-01T00:00:00.000Z',
    server_time_ms: 0,
    ...extra,
  };
}

function live(options: Partial<ConstructorParameters<typeof LiveSession>[0]> = {}) {
  const statuses: ConnectionStatus[] = [];
  const versions: number[] = [];
  const session = new LiveSession({
    url: 'ws://server/ws?sessionId=s',
    WebSocket: FakeSocket,
    random: () => 0,
    backoff: { initialMs: 100, maxMs: 1_000, jitter: 0.5 },
    ...options,
  });
  session.on('connection', (s) => statuses.push(s));
  session.on('state', (s) => versions.push(s.version));
  return { session: session.connect(), statuses, versions, socket: () => FakeSocket.all.at(-1)! };
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('backoffDelay', () => {
  it('grows exponentially to the cap, with bounded jitter', () => {
    const opts = { initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 };
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, opts, () => 0))).toEqual([100, 200, 400, 800, 1000, 1000]);
    for (let a = 0; a < 8; a++) {
      const base = Math.min(1000, 100 * 2 ** a);
      for (const r of [0, 0.3, 0.999]) {
        const d = backoffDelay(a, opts, () => r);
        expect(d).toBeLessThanOrEqual(base);
        expect(d).toBeGreaterThanOrEqual(base / 2);
      }
    }
  });
});

describe('LiveSession', () => {
  it('keeps only newer versions', () => {
    const { socket, versions } = live();
    socket().accept();
    socket().deliver({ type: 'STATE_SYNC', state: state(3) });
    socket().deliver({ type: 'STATE_UPDATE', state: state(5) });
    socket().deliver({ type: 'STATE_UPDATE', state: state(4) }); // late
    socket().deliver({ type: 'STATE_UPDATE', state: state(5) }); // duplicate
    socket().deliver({ type: 'STATE_SYNC', state: state(2) }); // older sync
    socket().deliver({ type: 'STATE_UPDATE', state: state(6) });
    expect(versions).toEqual([3, 5, 6]);
  });

  it('reconnects with growing delays, then sends RECONNECT and takes the STATE_SYNC', () => {
    const { session, socket, statuses, versions } = live();
    socket().accept();
    socket().deliver({ type: 'STATE_SYNC', state: state(7) });
    socket().drop();
    expect(session.status).toBe('reconnecting');
    // Attempt 1 after 100 ms (jitter pinned to the full delay)...
    vi.advanceTimersByTime(99);
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.all).toHaveLength(2);
    socket().drop();
    // ...attempt 2 waits twice as long.
    vi.advanceTimersByTime(199);
    expect(FakeSocket.all).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.all).toHaveLength(3);
    socket().accept();
    expect(socket().sentOfType('RECONNECT')).toHaveLength(1);
    socket().deliver({ type: 'STATE_SYNC', state: state(9) });
    expect(versions).toEqual([7, 9]);
    expect(statuses).toEqual(['open', 'reconnecting', 'open']);
    // A later drop starts again from the first delay.
    socket().drop();
    vi.advanceTimersByTime(100);
    expect(FakeSocket.all).toHaveLength(4);
  });

  it('shows an interrupted server feed as reconnecting until the next STATE_SYNC', () => {
    const { session, socket } = live();
    socket().accept();
    socket().deliver({ type: 'FEED_INTERRUPTED', sessionId: 's', timestamp: 1 });
    expect(session.status).toBe('reconnecting');
    socket().deliver({ type: 'STATE_UPDATE', state: state(2) });
    expect(session.status).toBe('reconnecting');
    socket().deliver({ type: 'STATE_SYNC', state: state(2) });
    expect(session.status).toBe('open');
  });

  it('replaces a socket that went silent (heartbeat)', () => {
    const { socket } = live({ pingIntervalMs: 1_000, silenceTimeoutMs: 2_500 });
    const first = socket();
    first.accept();
    vi.advanceTimersByTime(2_000);
    expect(first.sentOfType('PING').length).toBeGreaterThanOrEqual(2);
    expect(first.closed).toBeUndefined();
    vi.advanceTimersByTime(1_000);
    expect(first.closed?.code).toBe(4000);
    vi.advanceTimersByTime(100);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it('samples the clock from PONGs, a burst at connect', () => {
    let local = 1_000_000;
    const { session, socket } = live({ syncBurst: 3, clock: { now: () => local, serverResolutionMs: 0 } });
    socket().accept();
    for (let i = 0; i < 3; i++) {
      const ping = socket().sentOfType('PING').at(-1)!;
      const t0 = ping.client_time as number;
      local += 10; // 10 ms round trip, the server 500 ms ahead
      socket().deliver({
        type: 'PONG',
        timestamp: t0 + 505,
        client_time: t0,
        server_receive_ms: t0 + 505,
        server_send_ms: t0 + 505,
      });
    }
    expect(socket().sentOfType('PING')).toHaveLength(3);
    expect(session.clock.sampleCount).toBe(3);
    expect(session.clock.offsetMs).toBe(500);
    expect(session.serverNow()).toBe(local + 500);
    // A PONG nobody asked for is ignored.
    socket().deliver({ type: 'PONG', timestamp: 1, client_time: 42, server_receive_ms: 1, server_send_ms: 1 });
    expect(session.clock.sampleCount).toBe(3);
  });

  it('stops for good when the session is deleted or close() is called', () => {
    const deleted = vi.fn();
    const { session, socket } = live();
    session.on('deleted', deleted);
    socket().accept();
    socket().deliver({ type: 'STATE_SYNC', state: state(2) });
    socket().deliver({ type: 'SESSION_DELETED', sessionId: 's', timestamp: 1 });
    expect(deleted).toHaveBeenCalledOnce();
    expect(session.state).toBeUndefined();
    socket().drop(1000);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(session.status).toBe('closed');

    const other = live();
    other.socket().accept();
    other.session.close();
    expect(other.socket().closed?.code).toBe(1000);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it('asks for the URL on every attempt (a refreshed token)', () => {
    let n = 0;
    const { socket } = live({ url: () => `ws://server/ws?sessionId=s&token=t${++n}` });
    socket().accept();
    socket().drop(4001, 'token expired');
    vi.advanceTimersByTime(100);
    expect(FakeSocket.all.map((s) => s.url)).toEqual([
      'ws://server/ws?sessionId=s&token=t1',
      'ws://server/ws?sessionId=s&token=t2',
    ]);
  });
});
