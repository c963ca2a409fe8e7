// `useSyncKairos`: one session, live, in a React component. Re-renders on
// every animation frame only while a clock runs, and on every update.
import { useEffect, useMemo, useRef, useState } from 'react';
import { watch } from './index.js';
import { SyncKairosClient } from './rest.js';
import { isTicking } from './timing.js';
export function useSyncKairos(sessionId, options) {
    const { baseUrl, token } = options;
    const client = useMemo(() => options.client ?? new SyncKairosClient({ baseUrl: baseUrl ?? '', token }), [options.client, baseUrl, token]);
    const liveOptions = useRef(options.live);
    const [live, setLive] = useState();
    const [state, setState] = useState();
    const [status, setStatus] = useState('connecting');
    const [error, setError] = useState();
    const [clock, setClock] = useState({ offsetMs: 0, rttMs: Infinity });
    const [, setFrame] = useState(0);
    useEffect(() => {
        if (!sessionId)
            return;
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
        if (!ticking)
            return;
        const raf = globalThis.requestAnimationFrame ?? ((f) => setTimeout(f, 16));
        const cancel = globalThis.cancelAnimationFrame ?? ((id) => clearTimeout(id));
        let id = raf(function tick() {
            setFrame((n) => n + 1);
            id = raf(tick);
        });
        return () => cancel(id);
    }, [ticking]);
    const actions = useMemo(() => {
        const id = () => {
            if (!sessionId)
                throw new Error('useSyncKairos: no session id');
            return sessionId;
        };
        return {
            switch: (body) => client.switch(id(), body),
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
