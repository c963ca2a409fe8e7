// 06 — Sustained mixed load (soak).
//
// What it measures: whether latency and errors stay flat over a long run
// (default 10 minutes) of mixed traffic at a constant arrival rate. setup()
// starts a pool of SESSIONS running sessions; then RATE operations per second
// arrive (open model), each chosen by weight:
//   switch  (SWITCH_PCT) a random pool session, through the VU's instance
//   get     (GET_PCT)    a random pool session
//   create  (CREATE_PCT) a short session: create → start → switch → complete →
//                        delete, so the number of live sessions stays constant
// plus, optionally, WATCHERS WebSocket clients that each watch a random pool
// session for WATCH_SECONDS, then reconnect to another (connection churn).
// Every request is tagged with the third of the run it falls in (phase:
// early / middle / late), and the same latency bound applies to the early and
// the late third: a server that degrades or leaks fails the late one first
// (run-local.sh also prints each instance's RSS before and after, and its peak).
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000); VU n uses instance n mod count
//   DURATION      how long (10m)
//   RATE          operations per second (100)
//   SESSIONS      pool of running sessions (200)
//   SWITCH_PCT, GET_PCT, CREATE_PCT  operation weights (60, 30, 10)
//   VUS, MAX_VUS  VUs pre-allocated / at most (20, 100)
//   WATCHERS      WebSocket watchers, 0 = none (0)
//   WATCH_SECONDS how long a watcher stays on a session before moving (20)
//   P95_MS, P99_MS        HTTP latency thresholds (50, 100)
//   WS_P95_MS, WS_P99_MS  watcher latency thresholds (100, 250)
//   MAX_FAILED    largest accepted http_req_failed rate (0.001)
//
// Thresholds: http_req_duration{phase:early} and {phase:late}, and per
// operation {name:switch}, {name:get}, {name:create}: p(95)<P95_MS,
// p(99)<P99_MS; http_req_failed rate<MAX_FAILED; checks rate>0.999;
// setup_failures count==0; with WATCHERS: ws_update_latency_ms p(95)<WS_P95_MS,
// p(99)<WS_P99_MS, ws_dropped count==0.
//
//   k6 run -e BASE_URLS=http://10.0.0.1:3000,http://10.0.0.2:3000 -e RATE=500 -e WATCHERS=100 loadtest/06-sustained.js
//   loadtest/run-local.sh 06 -e DURATION=2m -e WATCHERS=20
import http from 'k6/http';
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { envNum, envStr, myBase, data, wsUrl, sessionBody, createStarted, deleteAll, durationSeconds, latency, TREND_STATS } from './common.js';

const DURATION = envStr('DURATION', '10m');
const RATE = envNum('RATE', 100);
const SESSIONS = envNum('SESSIONS', 200);
const WEIGHTS = [
  ['switch', envNum('SWITCH_PCT', 60)],
  ['get', envNum('GET_PCT', 30)],
  ['create', envNum('CREATE_PCT', 10)],
];
const TOTAL_WEIGHT = WEIGHTS.reduce((s, w) => s + w[1], 0);
const VUS = envNum('VUS', 20);
const MAX_VUS = envNum('MAX_VUS', 100);
const WATCHERS = envNum('WATCHERS', 0);
const WATCH_S = envNum('WATCH_SECONDS', 20);
const P95 = envNum('P95_MS', 50);
const P99 = envNum('P99_MS', 100);
const WS_P95 = envNum('WS_P95_MS', 100);
const WS_P99 = envNum('WS_P99_MS', 250);
const MAX_FAILED = envNum('MAX_FAILED', 0.001);
const RUN_MS = durationSeconds(DURATION) * 1000;

const updateLatency = new Trend('ws_update_latency_ms', true);
const dropped = new Counter('ws_dropped');

const scenarios = {
  mixed: {
    executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
    preAllocatedVUs: VUS, maxVUs: MAX_VUS, exec: 'mixed',
  },
};
const thresholds = {
  'http_req_duration{phase:early}': latency(P95, P99),
  'http_req_duration{phase:late}': latency(P95, P99),
  'http_req_duration{name:switch}': latency(P95, P99),
  'http_req_duration{name:get}': latency(P95, P99),
  'http_req_duration{name:create}': latency(P95, P99),
  http_req_failed: [`rate<${MAX_FAILED}`],
  checks: ['rate>0.999'],
  setup_failures: ['count==0'],
};
if (WATCHERS > 0) {
  scenarios.watchers = {
    executor: 'constant-vus', vus: WATCHERS, duration: DURATION, exec: 'watch', gracefulStop: `${WATCH_S + 5}s`,
  };
  thresholds.ws_update_latency_ms = latency(WS_P95, WS_P99);
  thresholds.ws_dropped = ['count==0'];
}

export const options = {
  summaryTrendStats: TREND_STATS,
  setupTimeout: '300s',
  teardownTimeout: '300s',
  scenarios,
  thresholds,
};

export function setup() {
  return { ids: createStarted(SESSIONS, 50).map((s) => s.id) };
}

/// early / middle / late third of the scenario.
function phase() {
  const elapsed = Date.now() - exec.scenario.startTime;
  return elapsed < RUN_MS / 3 ? 'early' : elapsed < (2 * RUN_MS) / 3 ? 'middle' : 'late';
}

function params(name, withBody, ph) {
  const p = { tags: { name, phase: ph } };
  if (withBody) p.headers = { 'Content-Type': 'application/json' };
  return p;
}

function pick(d) {
  return d.ids[Math.floor(Math.random() * d.ids.length)];
}

function choose() {
  let x = Math.random() * TOTAL_WEIGHT;
  for (const [op, w] of WEIGHTS) {
    if (x < w) return op;
    x -= w;
  }
  return WEIGHTS[0][0];
}

export function mixed(d) {
  const base = myBase();
  const ph = phase();
  const op = choose();
  if (op === 'switch') {
    const r = http.post(`${base}/v1/sessions/${pick(d)}/switch`, null, params('switch', false, ph));
    check(r, { 'switch 200': (x) => x.status === 200 });
  } else if (op === 'get') {
    const r = http.get(`${base}/v1/sessions/${pick(d)}`, params('get', false, ph));
    check(r, { 'get 200, running': (x) => x.status === 200 && (data(x) || {}).status === 'running' });
  } else {
    const body = sessionBody();
    const url = `${base}/v1/sessions/${body.session_id}`;
    const c = http.post(`${base}/v1/sessions`, JSON.stringify(body), params('create', true, ph));
    if (!check(c, { 'create 201': (x) => x.status === 201 })) return;
    check(http.post(`${url}/start`, null, params('start', false, ph)), { 'start 200': (x) => x.status === 200 });
    check(http.post(`${url}/switch`, null, params('switch', false, ph)), { 'switch 200': (x) => x.status === 200 });
    check(http.post(`${url}/complete`, null, params('complete', false, ph)), { 'complete 200': (x) => x.status === 200 });
    check(http.del(url, null, params('delete', false, ph)), { 'delete 204': (x) => x.status === 204 });
  }
}

export function watch(d) {
  let closing = false;
  // Never past the end of the run, so the last connection closes by itself.
  const left = RUN_MS - (Date.now() - exec.scenario.startTime);
  if (left < 1000) {
    sleep(Math.max(0, left) / 1000);
    return;
  }
  const stay = Math.min(WATCH_S * 1000, left);
  const res = ws.connect(wsUrl(myBase(), pick(d)), { tags: { name: 'ws' } }, (socket) => {
    socket.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type === 'STATE_UPDATE') updateLatency.add(Date.now() - Date.parse(m.state.updated_at));
    });
    socket.on('close', () => {
      if (!closing) dropped.add(1);
    });
    socket.setTimeout(() => {
      closing = true;
      socket.close();
    }, stay);
  });
  check(res, { 'ws upgraded (101)': (r) => r && r.status === 101 });
}

export function teardown(d) {
  deleteAll(d.ids.map((id) => ({ id, base: myBase() })), 50);
}
