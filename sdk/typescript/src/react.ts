// `useSyncKairos`: one session, live, in a React component. Re-renders on
// every animation frame only while a clock runs, and on every update.

import { useEffect, useMemo, useRef, useState } from 'react';
import { watch } from './index.js';
import type { ConnectionStatus, LiveOptions, LiveSession } from './live.js';
import { SyncKairosClient } from './rest.js';
import { isTicking } from './timing.js';
import type { ClockFace, SwitchRequest, SwitchResult, SyncState } from './types.js';

export interface UseSyncKairosOptions {
  /** The server, e.g. `https://timers.example.com`; or pass `client`. */
  baseUrl?: string;
  client?: SyncKairosClient;
  token?: string;
  live?: Omit<LiveOptions, 'url'>;
}

export interface SyncKairosHook {
  state: SyncState | undefined;
  /** Live remaining time of a participant, at this render. */
  remaining: (participantId: string) => number | undefined;
  /** Live time used by a participant (count_up). */
  used: (participantId: string) => number | undefined;
  /** A participant's time control values at this render: `bank_remaining_ms`
   * and, where the control has them, `delay_remaining_ms`, `periods_left`,
   * `moves_left`, `period_remaining_ms`, `in_overtime` (`undefined` without a
   * `time_control`). Computed afresh on every frame while a clock runs. */
  face: (participantId: string) => ClockFace | undefined;
  status: ConnectionStatus;
  /** Server clock minus local clock, as measured. */
  offsetMs: number;
  /** Best round trip measured (the offset is good to ± half of it). */
  rttMs: number;
  /** The last error the server reported on the socket, if any. */
  error: { code: string; message: string } | undefined;
  actions: {
    switch: (body?: SwitchRequest) => Promise<SwitchResult>;
    start: () => Promise<SyncState>;
    pause: () => Promise<SyncState>;
    resume: () => Promise<SyncState>;
    complete: () => Promise<SyncState>;
  };
}

export function useSyncKairos(sessionId: string | undefined, options: UseSyncKairosOptions): SyncKairosHook {
  const { baseUrl, token } = options;
  const client = useMemo(
    () => options.client ?? new SyncKairosClient({ baseUrl: baseUrl ?? '', token }),
    [options.client, baseUrl, token],
  );
  const liveOptions = useRef(options.live);
  const [live, setLive] = useState<LiveSession>();
  const [state, setState] = useState<SyncState>();
  const [status, setStatus] = useState<ConnectionStatus>('connecting');
  const [error, setError] = useState<{ code: string; message: string }>();
  const [clock, setClock] = useState({ offsetMs: 0, rttMs: Infinity });
  const [, setFrame] = useState(0);

  useEffect(() => {
    if (!sessionId) return;
    const session = watch(client, sessionId, liveOptions.current);
    setLive(session);
    setState(session.state);
    setStatus(session.status);
    const off = [
      session.on('state', setState),
      session.on('deleted', () => setState(undefined)),
      session.on('connection', setStatus),
      session.on('error', setError),
      session.on('clock', (offsetMs) => setClock({ offsetMs, rttMs: session.clock.rttMs })),
    ];
    return () => {
      off.forEach((f) => f());
      session.close();
      setLive(undefined);
    };
  }, [client, sessionId]);

  const ticking = isTicking(state);
  useEffect(() => {
    if (!ticking) return;
    const raf = globalThis.requestAnimationFrame ?? ((f: () => void) => setTimeout(f, 16) as unknown as number);
    const cancel = globalThis.cancelAnimationFrame ?? ((id: number) => clearTimeout(id));
    let id = raf(function tick() {
      setFrame((n) => n + 1);
      id = raf(tick);
    });
    return () => cancel(id);
  }, [ticking]);

  const actions = useMemo(() => {
    const id = () => {
      if (!sessionId) throw new Error('useSyncKairos: no session id');
      return sessionId;
    };
    return {
      switch: (body?: SwitchRequest) => client.switch(id(), body),
      start: () => client.start(id()),
      pause: () => client.pause(id()),
      resume: () => client.resume(id()),
      complete: () => client.complete(id()),
    };
  }, [client, sessionId]);

  return {
    state,
    remaining: (pid) => live?.remainingMs(pid),
    used: (pid) => live?.usedMs(pid),
    face: (pid) => live?.clockFace(pid),
    status,
    offsetMs: clock.offsetMs,
    rttMs: clock.rttMs,
    error,
    actions,
  };
}
