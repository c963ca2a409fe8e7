// 04 — High-frequency switching on few sessions.
//
// What it measures: switch latency and throughput when a few sessions are
// switched as fast as possible (closed model, no think time): each of the VUS
// clients owns a running session (or VUS_PER_SESSION clients share one, to
// provoke lost compare-and-sets) and switches it in a tight loop through its
// instance. Latency of the successful switches goes to switch_ok_ms; 409
// CONFLICT answers are expected under sharing and counted separately
// (switch_conflicts, switch_conflict_rate), never as failures; 429s (a
// per-session switch rate limit, RATE_LIMIT_SWITCH, once deployed) are counted
// in switch_rate_limited and do fail.
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000); VU n uses instance n mod count
//   VUS              clients (10)
//   DURATION         how long (30s)
//   VUS_PER_SESSION  clients sharing one session (1: every client owns one)
//   PARTICIPANTS     participants per session (2)
//   EXPECTED_VERSION send expected_version from the last answer (false); with
//                    sharing this turns every lost race into a 409
//   P95_MS, P99_MS   switch latency thresholds (50, 100)
//   MAX_FAILED       largest accepted http_req_failed rate (0.01)
//   MAX_CONFLICT_RATE largest accepted 409 share (0 with VUS_PER_SESSION=1, else 1)
//
// Thresholds: switch_ok_ms p(95)<P95_MS, p(99)<P99_MS; http_req_failed
// rate<MAX_FAILED (409 counts as expected); checks rate>0.99;
// switch_conflict_rate rate<=MAX_CONFLICT_RATE; setup_failures count==0.
//
//   k6 run -e BASE_URL=http://127.0.0.1:3000 -e VUS=32 loadtest/04-high-frequency-switching.js
//   loadtest/run-local.sh 04 -e VUS=8 -e VUS_PER_SESSION=4 -e DURATION=10s
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { envNum, envStr, envBool, myBase, req, data, createStarted, deleteAll, sessionBody, latency, TREND_STATS } from './common.js';

const VUS = envNum('VUS', 10);
const DURATION = envStr('DURATION', '30s');
const PER_SESSION = Math.max(1, envNum('VUS_PER_SESSION', 1));
const PARTICIPANTS = envNum('PARTICIPANTS', 2);
const EXPECTED_VERSION = envBool('EXPECTED_VERSION', false);
const P95 = envNum('P95_MS', 50);
const P99 = envNum('P99_MS', 100);
const MAX_FAILED = envNum('MAX_FAILED', 0.01);
const MAX_CONFLICT_RATE = envNum('MAX_CONFLICT_RATE', PER_SESSION === 1 ? 0 : 1);
const SESSIONS = Math.ceil(VUS / PER_SESSION);

const switchOk = new Trend('switch_ok_ms', true);
const conflicts = new Counter('switch_conflicts');
const conflictRate = new Rate('switch_conflict_rate');
const rateLimited = new Counter('switch_rate_limited');
const OK_OR_CONFLICT = http.expectedStatuses(200, 409);

export const options = {
  summaryTrendStats: TREND_STATS,
  setupTimeout: '120s',
  scenarios: {
    switching: { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '5s' },
  },
  thresholds: {
    switch_ok_ms: latency(P95, P99),
    http_req_failed: [`rate<${MAX_FAILED}`],
    checks: ['rate>0.99'],
    switch_conflict_rate: [`rate<=${MAX_CONFLICT_RATE}`],
    setup_failures: ['count==0'],
  },
};

export function setup() {
  // Session k on instance k mod count; VU n drives session (n-1)/VUS_PER_SESSION
  // through its own instance, which may be another one (any instance serves any session).
  const sessions = createStarted(SESSIONS, 50, () => sessionBody({ participants: PARTICIPANTS }));
  return { sessions: sessions.map((s) => ({ id: s.id, base: s.base, version: (s.started || {}).version || 2 })) };
}

// The version this VU last saw of its session (for EXPECTED_VERSION).
let version = null;

export default function (d) {
  const s = d.sessions[Math.floor((__VU - 1) / PER_SESSION) % d.sessions.length];
  if (!s) return;
  if (version === null) version = s.version;
  const body = EXPECTED_VERSION ? JSON.stringify({ expected_version: version }) : null;
  const r = http.post(`${myBase()}/v1/sessions/${s.id}/switch`, body,
    req('switch', EXPECTED_VERSION, { responseCallback: OK_OR_CONFLICT }));
  conflictRate.add(r.status === 409);
  if (r.status === 200) {
    switchOk.add(r.timings.duration);
    version = (data(r) || {}).version || version;
  } else if (r.status === 409) {
    conflicts.add(1);
    try {
      version = r.json('error.details.actual_version') || version;
    } catch (_) { /* keep the old one */ }
  } else if (r.status === 429) {
    rateLimited.add(1);
  }
  check(r, { 'switch 200 (or 409 under sharing)': (x) => x.status === 200 || x.status === 409 });
}

export function teardown(d) {
  deleteAll(d.sessions, 50);
}
