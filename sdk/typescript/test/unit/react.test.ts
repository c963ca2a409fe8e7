// @vitest-environment jsdom
import { act, createElement } from 'react';
import { type Root, createRoot } from 'react-dom/client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type SyncKairosHook, useSyncKairos } from '../../src/react.js';
import { SyncKairosClient } from '../../src/rest.js';
import { FakeSocket } from './fake-socket.js';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const pid = 'aaaaaaaa-0000-4000-8000-000000000001';
function running(version: number, startedMs: number) {
  return {
    session_id: 's1',
    sync_mode: 'per_participant',
    status: 'running',
    version,
    participants: [
      { participant_id: pid, participant_index: 0, total_time_ms: 60_000, time_used_ms: 0, time_remaining_ms: 60_000, cycle_count: 0, is_active: true, has_expired: false },
    ],
    active_participant_id: pid,
    total_time_ms: 60_000,
    time_per_cycle_ms: null,
    increment_ms: 0,
    cycle_started_at: new Date(startedMs).toISOString(),
    session_started_at: new Date(startedMs).toISOString(),
    session_completed_at: null,
    created_at: new Date(startedMs).toISOString(),
    updated_at: new Date(startedMs).toISOString(),
    server_time_ms: startedMs,
  };
}

let root: Root | undefined;
afterEach(() => {
  act(() => root?.unmount());
  root = undefined;
  FakeSocket.all = [];
});

describe('useSyncKairos', () => {
  it('follows the session, re-renders while a clock runs, and closes its socket on unmount', async () => {
    let local = 1_000_000;
    const seen: SyncKairosHook[] = [];
    const fetch = vi.fn(async () => new Response(JSON.stringify({ data: running(3, local) }), { status: 200 }));
    const client = new SyncKairosClient({ baseUrl: 'http://server', fetch });
    function Clock() {
      const hook = useSyncKairos('s1', { client, live: { WebSocket: FakeSocket, clock: { now: () => local } } });
      seen.push(hook);
      return createElement('span', null, String(hook.remaining(pid)));
    }
    const el = document.createElement('div');
    root = createRoot(el);
    act(() => root!.render(createElement(Clock)));
    expect(FakeSocket.all).toHaveLength(1);
    expect(FakeSocket.all[0]!.url).toBe('ws://server/ws?sessionId=s1');
    const socket = FakeSocket.all[0]!;

    act(() => {
      socket.accept();
      socket.deliver({ type: 'STATE_SYNC', sessionId: 's1', timestamp: local, state: running(2, local) });
    });
    expect(seen.at(-1)!.status).toBe('open');
    expect(seen.at(-1)!.state?.version).toBe(2);
    expect(el.textContent).toBe('60000');

    // The clock runs: the component re-renders on animation frames, each
    // computing the remaining time afresh from the state and the clock.
    local += 1_500;
    await act(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    expect(el.textContent).toBe('58500');

    await act(() => seen.at(-1)!.actions.switch({ expected_version: 2 }));
    expect(fetch).toHaveBeenCalledWith('http://server/v1/sessions/s1/switch', expect.objectContaining({ method: 'POST' }));

    act(() => root!.unmount());
    root = undefined;
    expect(socket.closed?.code).toBe(1000);
  });

  it('exposes the time control values live: a byo-yomi period is lost while the clock runs', async () => {
    let local = 2_000_000;
    const seen: SyncKairosHook[] = [];
    // The bank is spent and the first of 3 periods of 5 s is 3 s in.
    const byoyomi = () => {
      const s = running(4, local);
      s.participants[0] = {
        ...s.participants[0]!,
        total_time_ms: 0,
        overtime: { periods_left: 3, period_used_ms: 3_000 },
      } as (typeof s.participants)[0];
      return { ...s, time_control: { type: 'byoyomi', periods: 3, period_ms: 5_000 } };
    };
    const fetch = vi.fn(async () => new Response(JSON.stringify({ data: byoyomi() }), { status: 200 }));
    const client = new SyncKairosClient({ baseUrl: 'http://server', fetch });
    function Clock() {
      const hook = useSyncKairos('s1', { client, live: { WebSocket: FakeSocket, clock: { now: () => local } } });
      seen.push(hook);
      const f = hook.face(pid);
      return createElement('span', null, `${hook.remaining(pid)} ${f?.periods_left} ${f?.period_remaining_ms} ${f?.in_overtime}`);
    }
    const el = document.createElement('div');
    root = createRoot(el);
    act(() => root!.render(createElement(Clock)));
    act(() => {
      FakeSocket.all[0]!.accept();
      FakeSocket.all[0]!.deliver({ type: 'STATE_SYNC', sessionId: 's1', timestamp: local, state: byoyomi() });
    });
    expect(el.textContent).toBe('12000 3 2000 true');
    expect(seen.at(-1)!.face('nobody')).toBeUndefined();

    // 2.5 s on: the period ran out (lost), the next one is 0.5 s in.
    local += 2_500;
    await act(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    expect(el.textContent).toBe('9500 2 4500 true');
  });
});
