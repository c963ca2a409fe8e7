// 01 — Baseline: the full lifecycle of a session, per iteration.
//
// What it measures: the latency of every REST step of a session's life under a
// light closed-model load (VUS clients, each running lifecycles back to back):
// create → start → SWITCHES × switch → pause → resume → complete → get →
// delete. One Trend per step (step_<name>_ms) plus the whole lifecycle
// (lifecycle_ms). Checks the status code of every step and the state it
// returns (status, active participant, final version = SWITCHES + 5).
//
// Parameters (__ENV, with defaults):
//   BASE_URLS  comma-separated instance URLs; VU n uses instance n mod count
//   BASE_URL   single instance when BASE_URLS is unset (http://127.0.0.1:3000)
//   VUS        concurrent clients (10)
//   DURATION   how long (30s)
//   SWITCHES   switches per lifecycle (10)
//   PARTICIPANTS participants per session (2)
//   SYNC_MODE  per_participant | per_cycle | global | count_up (per_participant)
//   THINK_MS   pause between steps, ms (0)
//   P95_MS, P99_MS  latency thresholds for every step (50, 100)
//   MAX_FAILED largest accepted http_req_failed rate (0.01)
//
// Thresholds: step_<name>_ms p(95)<P95_MS and p(99)<P99_MS for every step;
// http_req_failed rate<MAX_FAILED; checks rate>0.99.
//
//   k6 run -e BASE_URL=http://127.0.0.1:3000 loadtest/01-baseline.js
//   loadtest/run-local.sh 01 -e VUS=4 -e DURATION=10s
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Trend } from 'k6/metrics';
import { envNum, envStr, myBase, req, data, sessionBody, latency, TREND_STATS } from './common.js';

const VUS = envNum('VUS', 10);
const DURATION = envStr('DURATION', '30s');
const SWITCHES = envNum('SWITCHES', 10);
const PARTICIPANTS = envNum('PARTICIPANTS', 2);
const SYNC_MODE = envStr('SYNC_MODE', 'per_participant');
const THINK_S = envNum('THINK_MS', 0) / 1000;
const P95 = envNum('P95_MS', 50);
const P99 = envNum('P99_MS', 100);
const MAX_FAILED = envNum('MAX_FAILED', 0.01);

const STEPS = ['create', 'start', 'switch', 'pause', 'resume', 'complete', 'get', 'delete'];
const trends = {};
for (const s of STEPS) trends[s] = new Trend(`step_${s}_ms`, true);
const lifecycle = new Trend('lifecycle_ms', true);

const thresholds = {
  http_req_failed: [`rate<${MAX_FAILED}`],
  checks: ['rate>0.99'],
};
for (const s of STEPS) thresholds[`step_${s}_ms`] = latency(P95, P99);

export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: {
    lifecycle: { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '10s' },
  },
  thresholds,
};

/// One request of a step: records its latency and checks its status.
function step(name, expected, res, more) {
  trends[name].add(res.timings.duration);
  const checks = {};
  checks[`${name} ${expected}`] = (r) => r.status === expected;
  Object.assign(checks, more || {});
  const ok = check(res, checks);
  if (THINK_S > 0) sleep(THINK_S);
  return ok;
}

export default function () {
  const base = myBase();
  const body = sessionBody({ participants: PARTICIPANTS, mode: SYNC_MODE });
  const id = body.session_id;
  const url = `${base}/v1/sessions/${id}`;
  const t0 = Date.now();

  const created = http.post(`${base}/v1/sessions`, JSON.stringify(body), req('create', true));
  if (!step('create', 201, created, { 'create: pending, version 1': (r) => (data(r) || {}).status === 'pending' && data(r).version === 1 })) return;

  const started = http.post(`${url}/start`, null, req('start', false));
  if (!step('start', 200, started, { 'start: running': (r) => (data(r) || {}).status === 'running' })) return;

  let active = (data(started) || {}).active_participant_id;
  for (let i = 0; i < SWITCHES; i++) {
    const sw = http.post(`${url}/switch`, null, req('switch', false));
    const next = (data(sw) || {}).active_participant_id;
    step('switch', 200, sw, { 'switch: turn passed': () => PARTICIPANTS < 2 || (next && next !== active) });
    active = next;
  }

  step('pause', 200, http.post(`${url}/pause`, null, req('pause', false)), {
    'pause: paused': (r) => (data(r) || {}).status === 'paused',
  });
  step('resume', 200, http.post(`${url}/resume`, null, req('resume', false)), {
    'resume: running': (r) => (data(r) || {}).status === 'running',
  });
  step('complete', 200, http.post(`${url}/complete`, null, req('complete', false)), {
    'complete: completed': (r) => (data(r) || {}).status === 'completed',
  });
  step('get', 200, http.get(url, req('get', false)), {
    'get: completed, version = switches + 5': (r) => {
      const s = data(r) || {};
      return s.status === 'completed' && s.version === SWITCHES + 5;
    },
  });
  step('delete', 204, http.del(url, null, req('delete', false)));
  lifecycle.add(Date.now() - t0);
}
