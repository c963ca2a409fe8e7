// A live view of one session over `/ws`: reconnects with backoff and jitter,
// keeps only newer versions, measures the server clock, and computes the
// clocks locally between updates ("calculate, don't count").

import { ClockEstimator, type ClockOptions } from './clock.js';
import { clockFace, elapsedMs, remainingMs, usedMs } from './timing.js';
import type { ClockFace, ServerMessage, SyncState } from './types.js';

/** `open`: connected and receiving updates. `reconnecting`: the socket, or
 * the server's own update feed, is down and being re-established; clocks go
 * on from the last state meanwhile. `closed`: for good (`close()`, the
 * session was deleted, or the server refused the session id). */
export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface BackoffOptions {
  /** First retry delay. */
  initialMs?: number;
  /** Longest delay. */
  maxMs?: number;
  factor?: number;
  /** Fraction of each delay that is random: 0.5 waits between 50 % and 100 %. */
  jitter?: number;
}

/** The minimal WebSocket surface used here (browsers' and Node's globals match). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface LiveOptions {
  /** The session's `/ws` URL (see `SyncKairosClient.socketUrl`), or a function
   * returning it, called on every (re)connect so a refreshed token is used. */
  url: string | (() => string);
  /** A WebSocket constructor; the platform's global by default (Node 20 needs
   * `--experimental-websocket`, or pass the `ws` package's). */
  WebSocket?: new (url: string) => SocketLike;
  backoff?: BackoffOptions;
  /** Application-level PING (heartbeat and clock sample) interval. */
  pingIntervalMs?: number;
  /** Silence after which the socket counts as dead and is replaced. */
  silenceTimeoutMs?: number;
  /** PINGs sent back to back on every connect for a first clock estimate. */
  syncBurst?: number;
  clock?: ClockOptions;
  /** Randomness for the jitter (tests pin it). */
  random?: () => number;
}

export interface LiveEvents {
  /** A newer state (STATE_SYNC or STATE_UPDATE). */
  state: (state: SyncState, kind: 'STATE_SYNC' | 'STATE_UPDATE') => void;
  /** A server-applied timeout; the matching `state` event follows or came before. */
  timeout: (message: Extract<ServerMessage, { type: 'TIMEOUT' }>) => void;
  deleted: () => void;
  connection: (status: ConnectionStatus) => void;
  /** An ERROR message from the server or a close that ends the session. */
  error: (error: { code: string; message: string }) => void;
  /** A clock sample was taken. */
  clock: (offsetMs: number, rttMs: number) => void;
}

type Listeners = { [K in keyof LiveEvents]: Set<LiveEvents[K]> };

const OPEN = 1;

/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random = Math.random): number {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 10_000;
  const factor = options.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
  const base = Math.min(max, initial * factor ** attempt);
  return base * (1 - jitter * random());
}

export class LiveSession {
  readonly clock: ClockEstimator;
  private readonly options: LiveOptions;
  private readonly listeners: Listeners = {
    state: new Set(),
    timeout: new Set(),
    deleted: new Set(),
    connection: new Set(),
    error: new Set(),
    clock: new Set(),
  };
  private socket?: SocketLike;
  private current?: SyncState;
  private statusValue: ConnectionStatus = 'connecting';
  private attempt = 0;
  private everConnected = false;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private pingTimer?: ReturnType<typeof setInterval>;
  private lastHeard = 0;
  /** Local send times of PINGs in flight, by the `client_time` they carry. */
  private inFlight = new Set<number>();
  private burstLeft = 0;

  constructor(options: LiveOptions) {
    this.options = options;
    this.clock = new ClockEstimator(options.clock);
  }

  /** Opens the socket (once; later calls do nothing). */
  connect(): this {
    if (!this.socket && !this.stopped && this.retryTimer === undefined) this.open();
    return this;
  }

  /** Closes for good. */
  close(): void {
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

  on<K extends keyof LiveEvents>(event: K, listener: LiveEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  get state(): SyncState | undefined {
    return this.current;
  }

  get status(): ConnectionStatus {
    return this.statusValue;
  }

  /** The server's clock now, as estimated. */
  serverNow(): number {
    return this.clock.serverNow();
  }

  /** Live remaining time of a participant (`undefined` before a state or for
   * an unknown id). */
  remainingMs(participantId: string): number | undefined {
    return this.current && remainingMs(this.current, participantId, this.serverNow());
  }

  /** A participant's time control values, live: bank, delay, periods, moves
   * and period left (`undefined` before a state, for an unknown id, or
   * without a `time_control` on a banked mode). */
  clockFace(participantId: string): ClockFace | undefined {
    return this.current && clockFace(this.current, participantId, this.serverNow());
  }

  /** Time a participant has used, live (a `count_up` stopwatch's face). */
  usedMs(participantId: string): number | undefined {
    return this.current && usedMs(this.current, participantId, this.serverNow());
  }

  /** Time since the running cycle started. */
  elapsedMs(): number {
    return this.current ? elapsedMs(this.current, this.serverNow()) : 0;
  }

  private open(): void {
    this.retryTimer = undefined;
    this.setStatus(this.everConnected ? 'reconnecting' : 'connecting');
    const url = typeof this.options.url === 'function' ? this.options.url() : this.options.url;
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: LiveOptions['WebSocket'] }).WebSocket;
    if (!Ctor) throw new Error('no WebSocket implementation: pass options.WebSocket');
    let socket: SocketLike;
    try {
      socket = new Ctor(url);
    } catch (e) {
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

  private onMessage(data: unknown): void {
    this.lastHeard = this.clock.now();
    if (typeof data !== 'string') return;
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      return;
    }
    switch (msg.type) {
      case 'CONNECTED':
        this.onConnected();
        break;
      case 'STATE_SYNC':
        // A sync replaces the state unless older; it also ends an interruption.
        if (!this.current || msg.state.version >= this.current.version) this.accept(msg.state, 'STATE_SYNC');
        this.setStatus('open');
        break;
      case 'STATE_UPDATE':
        if (!this.current || msg.state.version > this.current.version) this.accept(msg.state, 'STATE_UPDATE');
        break;
      case 'TIMEOUT':
        this.emit('timeout', msg);
        if (!this.current || msg.state.version > this.current.version) this.accept(msg.state, 'STATE_UPDATE');
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

  private onConnected(): void {
    const resumed = this.everConnected;
    this.everConnected = true;
    this.attempt = 0;
    this.setStatus('open');
    // After a reconnect, ask for the full state explicitly (the server also
    // sends one right after CONNECTED when the session exists).
    if (resumed) this.send({ type: 'RECONNECT' });
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

  private ping(): void {
    const t0 = this.clock.now();
    this.inFlight.add(t0);
    if (this.inFlight.size > 32) this.inFlight.delete(this.inFlight.values().next().value!);
    this.send({ type: 'PING', client_time: t0 });
  }

  private onPong(msg: Extract<ServerMessage, { type: 'PONG' }>): void {
    const t3 = this.clock.now();
    const t0 = msg.client_time;
    if (t0 === undefined || !this.inFlight.delete(t0)) return;
    const t1 = msg.server_receive_ms ?? msg.timestamp;
    const t2 = msg.server_send_ms ?? msg.timestamp;
    const sample = this.clock.addSample(t0, t1, t2, t3);
    if (sample) this.emit('clock', this.clock.offsetMs, sample.rttMs);
    if (this.burstLeft > 1) {
      this.burstLeft -= 1;
      this.ping();
    } else {
      this.burstLeft = 0;
    }
  }

  private onClose(socket: SocketLike, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.stopTimers();
    this.inFlight.clear();
    if (this.stopped) return;
    // 1000 after SESSION_DELETED, 1008: the session id was refused. Neither
    // gets better by retrying.
    if (code === 1000 || code === 1008) {
      if (code === 1008) this.emit('error', { code: 'POLICY_VIOLATION', message: reason });
      this.stopped = true;
      this.setStatus('closed');
      return;
    }
    this.scheduleReconnect();
  }

  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    this.socket = undefined;
    this.stopTimers();
    detach(socket);
    try {
      socket.close(code, reason);
    } catch {
      // Already closing.
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    this.setStatus(this.everConnected ? 'reconnecting' : 'connecting');
    const delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  private accept(state: SyncState, kind: 'STATE_SYNC' | 'STATE_UPDATE'): void {
    this.current = state;
    this.emit('state', state, kind);
  }

  private send(message: unknown): void {
    if (this.socket?.readyState === OPEN) this.socket.send(JSON.stringify(message));
  }

  private stopTimers(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  private setStatus(status: ConnectionStatus): void {
    if (this.statusValue === status) return;
    this.statusValue = status;
    this.emit('connection', status);
  }

  private emit<K extends keyof LiveEvents>(event: K, ...args: Parameters<LiveEvents[K]>): void {
    for (const listener of this.listeners[event]) {
      (listener as (...a: Parameters<LiveEvents[K]>) => void)(...args);
    }
  }
}

function detach(socket: SocketLike): void {
  socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
}
