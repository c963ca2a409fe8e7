// 07 — Timeout storm: many sessions expiring at (nearly) the same instant.
//
// What it measures: whether the server applies every timeout, once, on time,
// when nobody calls switch. setup() creates and starts SESSIONS one-participant
// sessions, spread over the instances, whose deadlines fall LEAD_MS after the
// start of setup (spread evenly over WINDOW_MS; 0 = one instant, like an exam
// ending). Each bank is the time left to its target deadline when it is
// created (at least 1000 ms, the API's minimum); the real deadline is the start
// response's cycle_started_at + bank. Then VUS observers watch their share of
// the sessions expire:
//   OBSERVE=poll  GET each session from its deadline on, every POLL_MS, until it
//                 shows `expired`
//   OBSERVE=ws    a WebSocket per session (many per VU), waiting for its
//                 TIMEOUT frame; then one GET per session to verify its state
// Per session:
//   timeout_commit_lateness_ms    the expiring write's commit instant (updated_at)
//                                 − the deadline (session_completed_at, which the
//                                 server sets to the deadline); server clock only
//   timeout_observed_lateness_ms  when the server first showed it expired − the
//                                 deadline: poll: server_time_ms of the first read
//                                 showing `expired` (includes up to POLL_MS);
//                                 ws: the TIMEOUT frame's `timestamp`
//   timeout_received_lateness_ms  (ws) our receipt of TIMEOUT − the deadline
//                                 (needs client and server on one clock)
//   sessions_expired              expired within GRACE_MS of the deadline
//   timeouts_exactly_once         expired with version 3 (created, started,
//                                 expired) and expired_participant_id set
//   setup_banks_clamped           sessions set up too late for their target
//                                 deadline (bank raised to 1000 ms, so it falls later)
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000)
//   SESSIONS    sessions (2000)
//   LEAD_MS     first deadline this long after setup begins (10000; setup must
//               create and start every session within LEAD_MS − 1000, and the
//               sockets connect before the first deadline)
//   WINDOW_MS   deadlines spread evenly over this window (1000; 0 = one instant,
//               a throughput test: see loadtest/README.md)
//   SYNC_MODE   per_participant | per_cycle | global | count_up, always with
//               end_session (per_participant)
//   OBSERVE     ws | poll (ws; polling 2000 sessions every 50 ms is more load
//               than k6 on a small machine can send, so it measures k6)
//   VUS         observers (20)
//   POLL_MS     time between two polls of a session (50)
//   GRACE_MS    a session not expired this long after its deadline is missed (5000)
//   BATCH       parallel requests in setup, polling, teardown (100)
//   P95_MS, P99_MS  thresholds of timeout_commit_lateness_ms (50, 100)
//   OBS_P99_MS  threshold of timeout_observed_lateness_ms p(99) (POLL_MS + 250)
//
// Thresholds: timeout_commit_lateness_ms p(95)<P95_MS, p(99)<P99_MS;
// timeout_observed_lateness_ms p(99)<OBS_P99_MS; sessions_expired and
// timeouts_exactly_once rate==1 (every session); with ws also timeout_frames
// rate==1; setup_failures count==0; checks rate>0.99.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3000,http://127.0.0.1:3001 loadtest/07-timeouts-storm.js
//   loadtest/run-local.sh 07 -e SESSIONS=500 -e OBSERVE=poll
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, clearTimeout } from 'k6/timers';
import { envNum, envStr, req, data, wsUrl, sessionBody, createStarted, deleteAll, TREND_STATS } from './common.js';

const SESSIONS = envNum('SESSIONS', 2000);
const LEAD_MS = envNum('LEAD_MS', 10000);
const WINDOW_MS = envNum('WINDOW_MS', 1000);
const SYNC_MODE = envStr('SYNC_MODE', 'per_participant');
const OBSERVE = envStr('OBSERVE', 'ws');
const VUS = envNum('VUS', 20);
const POLL_MS = envNum('POLL_MS', 50);
const GRACE_MS = envNum('GRACE_MS', 5000);
const BATCH = envNum('BATCH', 100);
const P95 = envNum('P95_MS', 50);
const P99 = envNum('P99_MS', 100);
const OBS_P99 = envNum('OBS_P99_MS', POLL_MS + 250);
if (!['poll', 'ws'].includes(OBSERVE)) throw new Error(`OBSERVE=${OBSERVE}: poll or ws`);

const commitLateness = new Trend('timeout_commit_lateness_ms', true);
const observedLateness = new Trend('timeout_observed_lateness_ms', true);
const receivedLateness = new Trend('timeout_received_lateness_ms', true);
const expired = new Rate('sessions_expired');
const exactlyOnce = new Rate('timeouts_exactly_once');
const frames = new Rate('timeout_frames');
const clamped = new Counter('setup_banks_clamped');

const thresholds = {
  timeout_commit_lateness_ms: [`p(95)<${P95}`, `p(99)<${P99}`],
  timeout_observed_lateness_ms: [`p(99)<${OBS_P99}`],
  sessions_expired: ['rate==1'],
  timeouts_exactly_once: ['rate==1'],
  setup_failures: ['count==0'],
  checks: ['rate>0.99'],
};
if (OBSERVE === 'ws') thresholds.timeout_frames = ['rate==1'];

export const options = {
  summaryTrendStats: TREND_STATS,
  setupTimeout: `${Math.ceil(LEAD_MS / 1000) + 120}s`,
  teardownTimeout: '300s',
  batch: BATCH,
  batchPerHost: BATCH,
  scenarios: {
    observe: {
      executor: 'per-vu-iterations', vus: VUS, iterations: 1, exec: 'observe',
      maxDuration: `${Math.ceil((LEAD_MS + WINDOW_MS + GRACE_MS) / 1000) + 120}s`,
    },
  },
  thresholds,
};

export function setup() {
  const t0 = Date.now();
  const first = t0 + LEAD_MS;
  const banks = {};
  const sessions = createStarted(SESSIONS, BATCH, (i) => {
    const target = first + Math.floor((WINDOW_MS * i) / Math.max(SESSIONS, 1));
    let bank = target - Date.now();
    if (bank < 1000) {
      clamped.add(1);
      bank = 1000;
    }
    const body = sessionBody({ participants: 1, bankMs: bank, mode: SYNC_MODE, endOnTimeout: true });
    banks[body.session_id] = bank;
    return body;
  }).map((s) => {
    const st = s.started || {};
    const startedAt = Date.parse(st.cycle_started_at || st.session_started_at);
    return { id: s.id, base: s.base, deadline: startedAt + banks[s.id] };
  });
  const deadlines = sessions.map((s) => s.deadline);
  const last = Math.max(...deadlines);
  console.log(`setup: ${sessions.length} of ${SESSIONS} sessions running ${Date.now() - t0} ms after setup began; ` +
    `deadlines span ${last - Math.min(...deadlines)} ms, the last ${last - Date.now()} ms from now`);
  return { sessions };
}

/// Records a session's expired state; returns false if it is not expired yet.
function expiredState(s, state, observedAt) {
  if (!state || state.status !== 'expired') return false;
  const completed = Date.parse(state.session_completed_at);
  commitLateness.add(Date.parse(state.updated_at) - completed);
  if (observedAt !== null) observedLateness.add(observedAt - s.deadline);
  exactlyOnce.add(state.version === 3 && !!state.expired_participant_id);
  check(completed, { 'session_completed_at = deadline': (c) => c === s.deadline });
  expired.add(true);
  return true;
}

/// This observer's sessions: every VUS-th one.
function mine(d) {
  const k = exec.scenario.iterationInTest;
  return d.sessions.filter((_, i) => i % VUS === k);
}

/// GETs sessions in batches; calls f(session, response) for each.
function getAll(list, f) {
  for (let from = 0; from < list.length; from += BATCH) {
    const chunk = list.slice(from, from + BATCH);
    const rs = http.batch(chunk.map((s) => ['GET', `${s.base}/v1/sessions/${s.id}`, null, req('get', false)]));
    chunk.forEach((s, i) => f(s, rs[i]));
  }
}

function poll(d) {
  let pending = mine(d);
  while (pending.length > 0) {
    const now = Date.now();
    const due = pending.filter((s) => s.deadline <= now);
    if (due.length === 0) {
      sleep(Math.max(1, Math.min(...pending.map((s) => s.deadline)) - now) / 1000);
      continue;
    }
    const done = new Set();
    getAll(due, (s, r) => {
      const state = r.status === 200 ? data(r) : null;
      if (expiredState(s, state, state ? state.server_time_ms : null)) {
        done.add(s.id);
      } else if (r.status !== 200 || Date.now() > s.deadline + GRACE_MS) {
        console.warn(`session ${s.id}: ${r.status} ${state ? state.status : ''} ${Date.now() - s.deadline} ms after its deadline`);
        expired.add(false);
        done.add(s.id);
      }
    });
    pending = pending.filter((s) => !done.has(s.id));
    if (pending.length > 0) sleep(POLL_MS / 1000);
  }
}

async function viaWebSockets(d) {
  const list = mine(d);
  const seen = {};
  await new Promise((resolve) => {
    const sockets = [];
    const finish = () => {
      sockets.forEach((w) => w.close());
      resolve();
    };
    const last = Math.max(...list.map((s) => s.deadline), Date.now());
    const timer = setTimeout(finish, Math.max(0, last + GRACE_MS - Date.now()));
    if (list.length === 0) {
      clearTimeout(timer);
      resolve();
      return;
    }
    list.forEach((s) => {
      const w = new WebSocket(wsUrl(s.base, s.id));
      sockets.push(w);
      w.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'TIMEOUT' && !seen[s.id]) {
          seen[s.id] = m.timestamp;
          receivedLateness.add(Date.now() - s.deadline);
          if (Object.keys(seen).length === list.length) {
            clearTimeout(timer);
            finish();
          }
        }
      };
    });
  });
  list.forEach((s) => frames.add(seen[s.id] !== undefined));
  // The authoritative check: each session's state, after the fact.
  getAll(list, (s, r) => {
    const state = r.status === 200 ? data(r) : null;
    if (!expiredState(s, state, seen[s.id] === undefined ? null : seen[s.id])) {
      console.warn(`session ${s.id}: ${r.status} ${state ? state.status : ''} ${Date.now() - s.deadline} ms after its deadline`);
      expired.add(false);
    }
  });
}

export async function observe(d) {
  if (OBSERVE === 'ws') await viaWebSockets(d);
  else poll(d);
}

export function teardown(d) {
  deleteAll(d.sessions, BATCH);
}
