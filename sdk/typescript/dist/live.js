// A live view of one session over `/ws`: reconnects with backoff and jitter,
// keeps only newer versions, measures the server clock, and computes the
// clocks locally between updates ("calculate, don't count").
import { ClockEstimator } from './clock.js';
import { clockFace, elapsedMs, remainingMs, usedMs } from './timing.js';
const OPEN = 1;
/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const initial = options.initialMs ?? 250;
    const max = options.maxMs ?? 10_000;
    const factor = options.factor ?? 2;
    const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
    const base = Math.min(max, initial * factor ** attempt);
    return base * (1 - jitter * random());
}
export class LiveSession {
    clock;
    options;
    listeners = {
        state: new Set(),
        timeout: new Set(),
        deleted: new Set(),
        connection: new Set(),
        error: new Set(),
        clock: new Set(),
    };
    socket;
    current;
    statusValue = 'connecting';
    attempt = 0;
    everConnected = false;
    stopped = false;
    retryTimer;
    pingTimer;
    lastHeard = 0;
    /** Local send times of PINGs in flight, by the `client_time` they carry. */
    inFlight = new Set();
    burstLeft = 0;
    constructor(options) {
        this.options = options;
        this.clock = new ClockEstimator(options.clock);
    }
    /** Opens the socket (once; later calls do nothing). */
    connect() {
        if (!this.socket && !this.stopped && this.retryTimer === undefined)
            this.open();
        return this;
    }
    /** Closes for good. */
    close() {
        this.stopped = true;
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        this.stopTimers();
        const socket = this.socket;
        this.socket = undefined;
        if (socket) {
            detach(socket);
            socket.close(1000, 'client closed');
        }
        this.setStatus('closed');
    }
    on(event, listener) {
        this.listeners[event].add(listener);
        return () => this.listeners[event].delete(listener);
    }
    get state() {
        return this.current;
    }
    get status() {
        return this.statusValue;
    }
    /** The server's clock now, as estimated. */
    serverNow() {
        return this.clock.serverNow();
    }
    /** Live remaining time of a participant (`undefined` before a state or for
     * an unknown id). */
    remainingMs(participantId) {
        return this.current && remainingMs(this.current, participantId, this.serverNow());
    }
    /** A participant's time control values, live: bank, delay, periods, moves
     * and period left (`undefined` before a state, for an unknown id, or
     * without a `time_control` on a banked mode). */
    clockFace(participantId) {
        return this.current && clockFace(this.current, participantId, this.serverNow());
    }
    /** Time a participant has used, live (a `count_up` stopwatch's face). */
    usedMs(participantId) {
        return this.current && usedMs(this.current, participantId, this.serverNow());
    }
    /** Time since the running cycle started. */
    elapsedMs() {
        return this.current ? elapsedMs(this.current, this.serverNow()) : 0;
    }
    open() {
        this.retryTimer = undefined;
        this.setStatus(this.everConnected ? 'reconnecting' : 'connecting');
        const url = typeof this.options.url === 'function' ? this.options.url() : this.options.url;
        const Ctor = this.options.WebSocket ?? globalThis.WebSocket;
        if (!Ctor)
            throw new Error('no WebSocket implementation: pass options.WebSocket');
        let socket;
        try {
            socket = new Ctor(url);
        }
        catch (e) {
            this.emit('error', { code: 'CONNECT_FAILED', message: String(e) });
            this.scheduleReconnect();
            return;
        }
        this.socket = socket;
        socket.onmessage = (ev) => this.onMessage(ev.data);
        socket.onclose = (ev) => this.onClose(socket, ev.code, ev.reason);
        socket.onerror = () => {
            // A close event follows; it decides what happens next.
        };
    }
    onMessage(data) {
        this.lastHeard = this.clock.now();
        if (typeof data !== 'string')
            return;
        let msg;
        try {
            msg = JSON.parse(data);
        }
        catch {
            return;
        }
        switch (msg.type) {
            case 'CONNECTED':
                this.onConnected();
                break;
            case 'STATE_SYNC':
                // A sync replaces the state unless older; it also ends an interruption.
                if (!this.current || msg.state.version >= this.current.version)
                    this.accept(msg.state, 'STATE_SYNC');
                this.setStatus('open');
                break;
            case 'STATE_UPDATE':
                if (!this.current || msg.state.version > this.current.version)
                    this.accept(msg.state, 'STATE_UPDATE');
                break;
            case 'TIMEOUT':
                this.emit('timeout', msg);
                if (!this.current || msg.state.version > this.current.version)
                    this.accept(msg.state, 'STATE_UPDATE');
                break;
            case 'SESSION_DELETED':
                // A session created again under the same id starts at version 1.
                this.current = undefined;
                this.emit('deleted');
                break;
            case 'FEED_INTERRUPTED':
                this.setStatus('reconnecting');
                break;
            case 'PONG':
                this.onPong(msg);
                break;
            case 'ERROR':
                this.emit('error', { code: msg.code, message: msg.message });
                break;
        }
    }
    onConnected() {
        const resumed = this.everConnected;
        this.everConnected = true;
        this.attempt = 0;
        this.setStatus('open');
        // After a reconnect, ask for the full state explicitly (the server also
        // sends one right after CONNECTED when the session exists).
        if (resumed)
            this.send({ type: 'RECONNECT' });
        this.burstLeft = Math.max(1, this.options.syncBurst ?? 5);
        this.ping();
        this.stopTimers();
        const interval = this.options.pingIntervalMs ?? 5_000;
        const silence = this.options.silenceTimeoutMs ?? 2 * interval + 1_000;
        this.pingTimer = setInterval(() => {
            if (this.clock.now() - this.lastHeard > silence) {
                // Half-open: nothing heard, not even PONGs. Replace the socket.
                this.dropSocket(4000, 'heartbeat timeout');
                return;
            }
            this.ping();
        }, interval);
    }
    ping() {
        const t0 = this.clock.now();
        this.inFlight.add(t0);
        if (this.inFlight.size > 32)
            this.inFlight.delete(this.inFlight.values().next().value);
        this.send({ type: 'PING', client_time: t0 });
    }
    onPong(msg) {
        const t3 = this.clock.now();
        const t0 = msg.client_time;
        if (t0 === undefined || !this.inFlight.delete(t0))
            return;
        const t1 = msg.server_receive_ms ?? msg.timestamp;
        const t2 = msg.server_send_ms ?? msg.timestamp;
        const sample = this.clock.addSample(t0, t1, t2, t3);
        if (sample)
            this.emit('clock', this.clock.offsetMs, sample.rttMs);
        if (this.burstLeft > 1) {
            this.burstLeft -= 1;
            this.ping();
        }
        else {
            this.burstLeft = 0;
        }
    }
    onClose(socket, code, reason) {
        if (socket !== this.socket)
            return;
        this.socket = undefined;
        this.stopTimers();
        this.inFlight.clear();
        if (this.stopped)
            return;
        // 1000 after SESSION_DELETED, 1008: the session id was refused. Neither
        // gets better by retrying.
        if (code === 1000 || code === 1008) {
            if (code === 1008)
                this.emit('error', { code: 'POLICY_VIOLATION', message: reason });
            this.stopped = true;
            this.setStatus('closed');
            return;
        }
        this.scheduleReconnect();
    }
    dropSocket(code, reason) {
        const socket = this.socket;
        if (!socket)
            return;
        this.socket = undefined;
        this.stopTimers();
        detach(socket);
        try {
            socket.close(code, reason);
        }
        catch {
            // Already closing.
        }
        this.scheduleReconnect();
    }
    scheduleReconnect() {
        if (this.stopped)
            return;
        this.setStatus(this.everConnected ? 'reconnecting' : 'connecting');
        const delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
        this.attempt += 1;
        this.retryTimer = setTimeout(() => this.open(), delay);
    }
    accept(state, kind) {
        this.current = state;
        this.emit('state', state, kind);
    }
    send(message) {
        if (this.socket?.readyState === OPEN)
            this.socket.send(JSON.stringify(message));
    }
    stopTimers() {
        clearInterval(this.pingTimer);
        this.pingTimer = undefined;
    }
    setStatus(status) {
        if (this.statusValue === status)
            return;
        this.statusValue = status;
        this.emit('connection', status);
    }
    emit(event, ...args) {
        for (const listener of this.listeners[event]) {
            listener(...args);
        }
    }
}
function detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
}
