// 05 — WebSocket fan-out latency, across instances.
//
// What it measures: how long a state change takes to reach every watcher.
// SESSIONS running sessions each have SUBSCRIBERS WebSocket watchers, spread
// over the instances (watcher k watches session k mod SESSIONS through
// instance ⌊k / SESSIONS⌋ mod count, so every session is watched on every
// instance); after CONNECT_SECONDS a driver switches every session each
// SWITCH_INTERVAL_MS for DURATION, through the instances in turn. For each
// STATE_UPDATE a watcher receives (the logic of loadtest/fanout.js):
//   ws_delivery_ms        message `timestamp` (server epoch ms at send) → receipt
//   ws_update_latency_ms  the write's commit instant (`state.updated_at`) → receipt
//   ws_server_ms          commit → the instance serialised it (`timestamp`), server clocks only
// Receipt times are corrected by the clock offset each watcher estimates from
// PING/PONG (`server_receive_ms`/`server_send_ms`, NTP-style; CLOCK_SYNC), so a
// remote deployment with a skewed clock still gives meaningful numbers. Also
// counts missed updates (ws_version_gaps: versions skipped), regressions
// (ws_version_regressions) and sockets the server closed (ws_dropped).
// Note: k6's JavaScript handlers are slow; at ~1,000 sockets on a small machine
// k6 measures itself (see docs/PERFORMANCE.md, examples/fanout_ws.rs).
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000)
//   SESSIONS            watched sessions (10)
//   SUBSCRIBERS         watchers per session (20)
//   CONNECT_SECONDS     time for the watchers to connect before driving (5)
//   DURATION            how long the driver switches (30s)
//   SWITCH_INTERVAL_MS  time between two switches of a session (100)
//   CLOCK_SYNC          estimate the clock offset with PING/PONG (true)
//   P95_MS, P99_MS      thresholds of ws_delivery_ms and ws_update_latency_ms (100, 250)
//
// Thresholds: ws_delivery_ms and ws_update_latency_ms p(95)<P95_MS,
// p(99)<P99_MS; ws_version_gaps, ws_version_regressions, ws_dropped,
// setup_failures count==0; ws_updates_received count>0; checks rate>0.99;
// http_req_failed rate<0.01.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3000,http://127.0.0.1:3001 -e SESSIONS=5 -e SUBSCRIBERS=100 loadtest/05-websocket-fanout.js
//   loadtest/run-local.sh 05 -e SESSIONS=4 -e SUBSCRIBERS=10 -e DURATION=10s
import http from 'k6/http';
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { BASES, envNum, envStr, envBool, baseFor, req, wsUrl, createStarted, deleteAll, durationSeconds, latency, pongOffset, TREND_STATS } from './common.js';

const SESSIONS = envNum('SESSIONS', 10);
const SUBSCRIBERS = envNum('SUBSCRIBERS', 20);
const CONNECT_S = envNum('CONNECT_SECONDS', 5);
const DURATION = envStr('DURATION', '30s');
const INTERVAL_S = envNum('SWITCH_INTERVAL_MS', 100) / 1000;
const CLOCK_SYNC = envBool('CLOCK_SYNC', true);
const P95 = envNum('P95_MS', 100);
const P99 = envNum('P99_MS', 250);
const WATCHERS = SESSIONS * SUBSCRIBERS;
const HOLD_S = CONNECT_S + durationSeconds(DURATION) + 2;

const delivery = new Trend('ws_delivery_ms', true);
const updateLatency = new Trend('ws_update_latency_ms', true);
const serverPart = new Trend('ws_server_ms', true);
const clockOffset = new Trend('ws_clock_offset_ms', true);
const received = new Counter('ws_updates_received');
const gaps = new Counter('ws_version_gaps');
const regressions = new Counter('ws_version_regressions');
const dropped = new Counter('ws_dropped');
const switches = new Counter('switches_sent');

export const options = {
  summaryTrendStats: TREND_STATS,
  setupTimeout: '120s',
  batch: Math.max(SESSIONS, 1),
  batchPerHost: Math.max(SESSIONS, 1),
  scenarios: {
    watchers: {
      executor: 'per-vu-iterations', vus: WATCHERS, iterations: 1,
      maxDuration: `${Math.ceil(HOLD_S) + 30}s`, exec: 'watch',
    },
    driver: {
      executor: 'constant-vus', vus: 1, duration: DURATION,
      startTime: `${CONNECT_S}s`, exec: 'drive', gracefulStop: '5s',
    },
  },
  thresholds: {
    ws_delivery_ms: latency(P95, P99),
    ws_update_latency_ms: latency(P95, P99),
    ws_version_gaps: ['count==0'],
    ws_version_regressions: ['count==0'],
    ws_dropped: ['count==0'],
    ws_updates_received: ['count>0'],
    setup_failures: ['count==0'],
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
  },
};

export function setup() {
  return { sessions: createStarted(SESSIONS, 50).map((s) => s.id) };
}

export function watch(d) {
  const k = exec.scenario.iterationInTest;
  const id = d.sessions[k % d.sessions.length];
  if (!id) return;
  const base = BASES[Math.floor(k / SESSIONS) % BASES.length];
  let connected = false;
  let closing = false;
  let last = null; // last state.version seen
  let offset = 0; // server clock − our clock
  let bestRtt = Infinity;

  const res = ws.connect(wsUrl(base, id), { tags: { name: 'ws' } }, (socket) => {
    const ping = () => socket.send(JSON.stringify({ type: 'PING', client_time: Date.now() }));
    socket.on('open', () => {
      if (CLOCK_SYNC) {
        ping();
        socket.setTimeout(ping, 200);
        socket.setTimeout(ping, 400);
      }
    });
    socket.on('message', (raw) => {
      const now = Date.now();
      const m = JSON.parse(raw);
      if (m.type === 'CONNECTED') {
        connected = true;
      } else if (m.type === 'PONG' && m.client_time !== undefined) {
        const est = pongOffset(m, now);
        if (est.rtt < bestRtt) {
          bestRtt = est.rtt;
          offset = est.offset;
        }
      } else if (m.type === 'STATE_SYNC') {
        last = m.state.version;
      } else if (m.type === 'STATE_UPDATE') {
        const at = now + offset;
        const committed = Date.parse(m.state.updated_at);
        delivery.add(at - m.timestamp);
        updateLatency.add(at - committed);
        serverPart.add(m.timestamp - committed);
        received.add(1);
        const v = m.state.version;
        if (last !== null && v <= last) regressions.add(1);
        if (last !== null && v > last + 1) gaps.add(v - last - 1);
        if (last === null || v > last) last = v;
      }
    });
    socket.on('close', () => {
      if (!closing) dropped.add(1);
    });
    socket.setTimeout(() => {
      closing = true;
      socket.close();
    }, HOLD_S * 1000);
  });
  check(res, { 'ws upgraded (101)': (r) => r && r.status === 101 });
  check(connected, { 'ws CONNECTED received': (c) => c });
  if (CLOCK_SYNC && bestRtt < Infinity) clockOffset.add(offset);
}

// One round: every session switched once, through the instances in turn.
let round = 0;
export function drive(d) {
  const t0 = Date.now();
  round++;
  const rs = http.batch(d.sessions.map((id, i) => ['POST', `${baseFor(i + round)}/v1/sessions/${id}/switch`, null, req('switch', false)]));
  rs.forEach((r) => check(r, { 'switch 200': (x) => x.status === 200 }));
  switches.add(rs.length);
  const left = INTERVAL_S - (Date.now() - t0) / 1000;
  if (left > 0) sleep(left);
}

export function teardown(d) {
  deleteAll(d.sessions.map((id) => ({ id, base: baseFor(1) })), 50);
}
