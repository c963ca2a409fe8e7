import { SyncKairosError } from './errors.js';
/** Typed calls for every REST endpoint. Failures throw {@link SyncKairosError}. */
export class SyncKairosClient {
    baseUrl;
    token;
    fetchImpl;
    constructor(options) {
        this.baseUrl = options.baseUrl.replace(/\/+$/, '');
        this.token = options.token;
        this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    }
    createSession(body) {
        return this.call('POST', '/v1/sessions', body);
    }
    getSession(id) {
        return this.call('GET', `/v1/sessions/${enc(id)}`);
    }
    start(id) {
        return this.call('POST', `/v1/sessions/${enc(id)}/start`);
    }
    /** Passes the turn: to the next participant, or to `next_participant_id`;
     * with `expected_version`, only if the session is still at that version. */
    switch(id, body = {}) {
        return this.call('POST', `/v1/sessions/${enc(id)}/switch`, body);
    }
    pause(id) {
        return this.call('POST', `/v1/sessions/${enc(id)}/pause`);
    }
    resume(id) {
        return this.call('POST', `/v1/sessions/${enc(id)}/resume`);
    }
    complete(id) {
        return this.call('POST', `/v1/sessions/${enc(id)}/complete`);
    }
    /** Idempotent: resolves for unknown ids too. */
    async deleteSession(id) {
        await this.call('DELETE', `/v1/sessions/${enc(id)}`);
    }
    /** One page of the audit history, newest first (needs the server's audit trail). */
    events(id, page = {}) {
        const q = new URLSearchParams();
        if (page.limit !== undefined)
            q.set('limit', String(page.limit));
        if (page.before !== undefined)
            q.set('before', page.before);
        const query = q.size > 0 ? `?${q}` : '';
        return this.call('GET', `/v1/sessions/${enc(id)}/events${query}`);
    }
    /** Mints a participant or viewer token for one session (HS256 servers). */
    mintToken(id, body) {
        return this.call('POST', `/v1/sessions/${enc(id)}/tokens`, body);
    }
    /** The server clock, once; for continuous sync use a live session's estimator. */
    time() {
        return this.call('GET', '/v1/time', undefined, false);
    }
    /** The `/ws` URL of a session, with the token as `?token=` when there is one. */
    socketUrl(sessionId) {
        // A relative base (`''`, `'/'`) is resolved against the page's address.
        const url = new URL(`${this.baseUrl}/ws`, globalThis.location?.href);
        url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
        url.searchParams.set('sessionId', sessionId);
        const token = this.currentToken();
        if (token)
            url.searchParams.set('token', token);
        return url.toString();
    }
    currentToken() {
        return typeof this.token === 'function' ? this.token() : this.token;
    }
    async call(method, path, body, enveloped = true) {
        const headers = { accept: 'application/json' };
        const token = this.currentToken();
        if (token)
            headers.authorization = `Bearer ${token}`;
        if (body !== undefined)
            headers['content-type'] = 'application/json';
        let res;
        try {
            res = await this.fetchImpl(`${this.baseUrl}${path}`, {
                method,
                headers,
                body: body === undefined ? undefined : JSON.stringify(body),
            });
        }
        catch (e) {
            throw new SyncKairosError('NETWORK_ERROR', `${method} ${path}: ${String(e)}`, 0);
        }
        if (res.status === 204)
            return undefined;
        const text = await res.text();
        let json;
        try {
            json = text ? JSON.parse(text) : undefined;
        }
        catch {
            json = undefined;
        }
        if (!res.ok) {
            const err = json?.error;
            const retry = Number(res.headers.get('retry-after'));
            throw new SyncKairosError(err?.code ?? `HTTP_${res.status}`, err?.message ?? `${method} ${path} answered ${res.status}`, res.status, err?.details, Number.isFinite(retry) && retry > 0 ? retry : undefined);
        }
        return (enveloped ? json.data : json);
    }
}
function enc(id) {
    return encodeURIComponent(id);
}
