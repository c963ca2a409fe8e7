import { SyncKairosError } from './errors.js';
import type {
  CreateSessionRequest,
  EventsPage,
  MintTokenRequest,
  MintedToken,
  ServerTime,
  SwitchRequest,
  SwitchResult,
  SyncState,
} from './types.js';

export interface ClientOptions {
  /** The server's base URL, e.g. `https://timers.example.com`; in a
   * browser `''` means the page's own origin. */
  baseUrl: string;
  /** A bearer token (`AUTH_MODE=jwt`), or a function returning the current one. */
  token?: string | (() => string | undefined);
  /** A `fetch` implementation; the platform's by default. */
  fetch?: typeof fetch;
}

/** Typed calls for every REST endpoint. Failures throw {@link SyncKairosError}. */
export class SyncKairosClient {
  readonly baseUrl: string;
  private readonly token?: ClientOptions['token'];
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  createSession(body: CreateSessionRequest): Promise<SyncState> {
    return this.call('POST', '/v1/sessions', body);
  }

  getSession(id: string): Promise<SyncState> {
    return this.call('GET', `/v1/sessions/${enc(id)}`);
  }

  start(id: string): Promise<SyncState> {
    return this.call('POST', `/v1/sessions/${enc(id)}/start`);
  }

  /** Passes the turn: to the next participant, or to `next_participant_id`;
   * with `expected_version`, only if the session is still at that version. */
  switch(id: string, body: SwitchRequest = {}): Promise<SwitchResult> {
    return this.call('POST', `/v1/sessions/${enc(id)}/switch`, body);
  }

  pause(id: string): Promise<SyncState> {
    return this.call('POST', `/v1/sessions/${enc(id)}/pause`);
  }

  resume(id: string): Promise<SyncState> {
    return this.call('POST', `/v1/sessions/${enc(id)}/resume`);
  }

  complete(id: string): Promise<SyncState> {
    return this.call('POST', `/v1/sessions/${enc(id)}/complete`);
  }

  /** Idempotent: resolves for unknown ids too. */
  async deleteSession(id: string): Promise<void> {
    await this.call('DELETE', `/v1/sessions/${enc(id)}`);
  }

  /** One page of the audit history, newest first (needs the server's audit trail). */
  events(id: string, page: { limit?: number; before?: string } = {}): Promise<EventsPage> {
    const q = new URLSearchParams();
    if (page.limit !== undefined) q.set('limit', String(page.limit));
    if (page.before !== undefined) q.set('before', page.before);
    const query = q.size > 0 ? `?${q}` : '';
    return this.call('GET', `/v1/sessions/${enc(id)}/events${query}`);
  }

  /** Mints a participant or viewer token for one session (HS256 servers). */
  mintToken(id: string, body: MintTokenRequest): Promise<MintedToken> {
    return this.call('POST', `/v1/sessions/${enc(id)}/tokens`, body);
  }

  /** The server clock, once; for continuous sync use a live session's estimator. */
  time(): Promise<ServerTime> {
    return this.call('GET', '/v1/time', undefined, false);
  }

  /** The `/ws` URL of a session, with the token as `?token=` when there is one. */
  socketUrl(sessionId: string): string {
    // A relative base (`''`, `'/'`) is resolved against the page's address.
    const url = new URL(`${this.baseUrl}/ws`, (globalThis as { location?: { href: string } }).location?.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('sessionId', sessionId);
    const token = this.currentToken();
    if (token) url.searchParams.set('token', token);
    return url.toString();
  }

  private currentToken(): string | undefined {
    return typeof this.token === 'function' ? this.token() : this.token;
  }

  private async call<T>(method: string, path: string, body?: unknown, enveloped = true): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const token = this.currentToken();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new SyncKairosError('NETWORK_ERROR', `${method} ${path}: ${String(e)}`, 0);
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string; details?: unknown } })?.error;
      const retry = Number(res.headers.get('retry-after'));
      throw new SyncKairosError(
        err?.code ?? `HTTP_${res.status}`,
        err?.message ?? `${method} ${path} answered ${res.status}`,
        res.status,
        err?.details,
        Number.isFinite(retry) && retry > 0 ? retry : undefined,
      );
    }
    return (enveloped ? (json as { data: T }).data : json) as T;
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
