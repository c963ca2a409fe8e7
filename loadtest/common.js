// Helpers shared by the numbered k6 scenarios (01-…07-*.js): parameters from
// __ENV, the instance list, session bodies, batched set-up and clean-up, and
// WebSocket clock-offset estimation. Not a scenario itself.
//
// Instances: BASE_URLS (comma-separated) or BASE_URL (default
// http://127.0.0.1:3000). Clients are spread over the instances by VU id;
// sessions made in setup() are spread by their index.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { uuidv4 } from './lib.js';

export { uuidv4 };

/// A number from __ENV, or `def` when unset or empty; a clear error otherwise.
export function envNum(name, def) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`);
  return n;
}

/// A string from __ENV, or `def` when unset or empty.
export function envStr(name, def) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? def : raw;
}

/// A boolean from __ENV (true/1/yes/on), or `def` when unset or empty.
export function envBool(name, def) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return def;
  return ['1', 'true', 'yes', 'on'].includes(String(raw).toLowerCase());
}

/// "30s", "2m", "1h30m", "500ms" → seconds (k6 duration syntax, the usual subset).
export function durationSeconds(text) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let matched = '';
  let m;
  while ((m = re.exec(text)) !== null) {
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
    total += Number(m[1]) * unit;
    matched += m[0];
  }
  if (matched !== text) throw new Error(`bad duration: ${text}`);
  return total;
}

/// The instances: BASE_URLS, else BASE_URL, else the local default.
export const BASES = envStr('BASE_URLS', envStr('BASE_URL', 'http://127.0.0.1:3000'))
  .split(',')
  .map((s) => s.trim().replace(/\/+$/, ''))
  .filter((s) => s.length > 0);
if (BASES.length === 0) throw new Error('BASE_URLS / BASE_URL name no instance');

/// The instance for a 1-based index (a VU id, or a session index + 1).
export function baseFor(n) {
  return BASES[(Math.max(1, n) - 1) % BASES.length];
}

/// This VU's instance (setup/teardown run as VU 0 and get the first one).
export function myBase() {
  return baseFor(__VU);
}

/// ws:// or wss:// for an http:// or https:// base.
export function wsUrl(base, sessionId) {
  return `${base.replace(/^http/, 'ws')}/ws?sessionId=${sessionId}`;
}

/// Trend stats shown in every summary (p95 and p99 are what the thresholds use).
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

/// Request parameters: JSON content type (only when there is a body) and a name tag,
/// so each step is its own sub-metric (`http_req_duration{name:switch}`).
export function req(name, withBody, extra) {
  const p = { tags: { name } };
  if (withBody) p.headers = { 'Content-Type': 'application/json' };
  return Object.assign(p, extra || {});
}

/// The `{"data": …}` payload of a response, or null.
export function data(res) {
  try {
    return res.json('data');
  } catch (_) {
    return null;
  }
}

/// A create body. `bankMs` is the time budget that matters for the mode: the
/// participants' banks (per_participant), the cycle (per_cycle), the session
/// clock (global) or the cap (count_up); everything else gets 24 h, so only
/// that budget can run out. 24 h (the maximum) by default: no timeout then.
export function sessionBody(opts) {
  const o = Object.assign({ participants: 2, bankMs: 86400000, mode: 'per_participant' }, opts || {});
  const day = 86400000;
  const body = { session_id: o.id || uuidv4(), sync_mode: o.mode, total_time_ms: day, participants: [] };
  for (let i = 0; i < o.participants; i++) {
    body.participants.push({
      participant_id: uuidv4(),
      participant_index: i,
      total_time_ms: o.mode === 'per_participant' ? o.bankMs : day,
    });
  }
  if (o.mode === 'per_cycle') body.time_per_cycle_ms = o.bankMs;
  if (o.mode === 'global') body.total_time_ms = o.bankMs;
  if (o.mode === 'count_up') body.max_time_ms = o.bankMs;
  // per_cycle defaults to skip_cycle; a timeout test wants the session to end.
  if (o.endOnTimeout) body.action_on_timeout = { type: 'end_session' };
  return body;
}

/// Sessions setup() could not create or start (thresholded at 0 by the scenarios).
export const setupFailures = new Counter('setup_failures');

/// Creates and starts `count` sessions in batches of `batch` parallel requests,
/// session i on instance i % instances. `bodyFor(i)` gives each create body
/// (default: sessionBody()). Returns [{ id, base, participants, started }] for
/// the sessions that were created and started; `started` is the start response's
/// data (its `cycle_started_at` is the server's start instant).
export function createStarted(count, batch, bodyFor) {
  const make = bodyFor || (() => sessionBody());
  const out = [];
  for (let from = 0; from < count; from += batch) {
    const n = Math.min(batch, count - from);
    const bodies = [];
    for (let k = 0; k < n; k++) bodies.push({ base: baseFor(from + k + 1), body: make(from + k) });
    const created = http.batch(bodies.map((b) => ['POST', `${b.base}/v1/sessions`, JSON.stringify(b.body), req('setup_create', true)]));
    const okCreated = bodies.filter((b, k) => check(created[k], { 'setup: created 201': (r) => r.status === 201 }));
    const started = http.batch(okCreated.map((b) => ['POST', `${b.base}/v1/sessions/${b.body.session_id}/start`, null, req('setup_start', false)]));
    okCreated.forEach((b, k) => {
      if (check(started[k], { 'setup: started 200': (r) => r.status === 200 })) {
        out.push({ id: b.body.session_id, base: b.base, participants: b.body.participants.map((p) => p.participant_id), started: data(started[k]) });
      }
    });
  }
  setupFailures.add(count - out.length);
  return out;
}

/// Deletes sessions (from setup) in batches, unless CLEANUP=false.
export function deleteAll(sessions, batch) {
  if (!envBool('CLEANUP', true)) return;
  for (let from = 0; from < sessions.length; from += batch) {
    http.batch(sessions.slice(from, from + batch).map((s) => ['DELETE', `${s.base}/v1/sessions/${s.id}`, null, req('teardown_delete', false)]));
  }
}

/// Latency thresholds for one metric: p(95) and p(99) below the given ms.
export function latency(p95, p99) {
  return [`p(95)<${p95}`, `p(99)<${p99}`];
}

/// Estimates (server clock − client clock) in ms from a PONG answering a
/// PING sent at `clientTime`: NTP-style, the server read its clock halfway
/// through the round trip. Returns { offset, rtt }.
export function pongOffset(pong, receivedAt) {
  const rtt = receivedAt - pong.client_time - (pong.server_send_ms - pong.server_receive_ms);
  const offset = (pong.server_receive_ms + pong.server_send_ms) / 2 - (pong.client_time + receivedAt) / 2;
  return { offset, rtt };
}
