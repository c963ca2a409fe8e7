// 08 — Live event: 10,000 watchers of one session.
//
// What it measures: one session watched by WATCHERS WebSocket clients at once
// (a stream's audience, a live exam, an auction floor), spread over the
// instances (watcher k through instance k mod count), while a driver switches
// it RATE times a second through the instances in turn. For each STATE_UPDATE
// a watcher receives:
//   ws_update_latency_ms  the write's commit instant (`state.updated_at`) →
//                         receipt, corrected by the clock offset each watcher
//                         estimates from PING/PONG (CLOCK_SYNC), like 05
// At the end every watcher closes with a Close (1000) and waits for the
// server's; a socket that ends any other way (dropped without a Close, closed
// with another code, an error, or closed by the server first) is abnormal, and
// one still waiting when the scenario's maxDuration ends is not counted clean:
//   ws_updates_received     STATE_UPDATEs received
//   ws_version_gaps         versions a watcher never saw
//   ws_version_regressions  STATE_UPDATEs whose version did not rise
//   ws_connect_failures     watchers that never opened
//   ws_dropped              sockets the server closed before the end
//   ws_errors               error events (k6 reports a close other than 1000 or
//                           1001, or a connection lost without one, as an error)
//   ws_abnormal_closes      sockets that did not end with the close handshake
//   ws_clean_closes         sockets that did (threshold: all WATCHERS)
// Watchers are VUS_SOCKETS to a VU (k6/experimental/websockets, one event loop
// per VU), opened evenly over the first 80 % of CONNECT_SECONDS; the driver (one
// VU, so no two switches race: a lost compare-and-set would answer 409) starts
// after CONNECT_SECONDS.
// Note: k6's JavaScript handlers are slow: on a 2-core machine k6 saturates a
// core past a few thousand sockets and then measures itself (the latency grows
// with k6's own queue, not the server's). The numbers for this load on a small
// machine come from the lean Rust client, examples/fanout_ws.rs, through
// loadtest/bench-broadcast.sh (which also measures the machine's floor).
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000)
//   WATCHERS         WebSocket watchers of the one session (10000)
//   VUS_SOCKETS      watchers per VU (100)
//   RATE             switches per second (10: every 100 ms; a switch that takes
//                    longer delays the next, so compare switches_sent with
//                    RATE × DURATION)
//   CONNECT_SECONDS  time for the watchers to connect before driving (WATCHERS / 500, at least 5)
//   DURATION         how long the driver switches (30s)
//   CLOCK_SYNC       estimate each watcher's clock offset with PING/PONG (true)
//   P95_MS, P99_MS   thresholds of ws_update_latency_ms (100, 250)
//
// Thresholds: ws_update_latency_ms p(95)<P95_MS, p(99)<P99_MS;
// ws_updates_received count>0; ws_version_gaps, ws_version_regressions,
// ws_connect_failures, ws_dropped, ws_errors, ws_abnormal_closes and
// setup_failures count==0; ws_clean_closes count>=WATCHERS; checks rate>0.99;
// http_req_failed rate<0.01.
//
//   k6 run -e BASE_URLS=http://10.0.0.1:3000,http://10.0.0.2:3000 loadtest/08-live-event-10k.js
//   loadtest/run-local.sh 08 -e WATCHERS=200
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, clearTimeout } from 'k6/timers';
import { BASES, envNum, envStr, envBool, baseFor, req, wsUrl, createStarted, deleteAll, durationSeconds, latency, pongOffset, TREND_STATS } from './common.js';

const WATCHERS = envNum('WATCHERS', 10000);
const VUS_SOCKETS = Math.max(1, envNum('VUS_SOCKETS', 100));
const RATE = envNum('RATE', 10);
const CONNECT_S = envNum('CONNECT_SECONDS', Math.max(5, Math.ceil(WATCHERS / 500)));
const DURATION = envStr('DURATION', '30s');
const CLOCK_SYNC = envBool('CLOCK_SYNC', true);
const P95 = envNum('P95_MS', 100);
const P99 = envNum('P99_MS', 250);
const VUS = Math.ceil(WATCHERS / VUS_SOCKETS);
// Watchers hold until the driver is done and its last updates are in.
const HOLD_MS = (CONNECT_S + durationSeconds(DURATION) + 2) * 1000;

const updateLatency = new Trend('ws_update_latency_ms', true);
const clockOffset = new Trend('ws_clock_offset_ms', true);
const received = new Counter('ws_updates_received');
const gaps = new Counter('ws_version_gaps');
const regressions = new Counter('ws_version_regressions');
const connectFailures = new Counter('ws_connect_failures');
const dropped = new Counter('ws_dropped');
const errors = new Counter('ws_errors');
const abnormal = new Counter('ws_abnormal_closes');
const clean = new Counter('ws_clean_closes');
const switches = new Counter('switches_sent');

export const options = {
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  scenarios: {
    watchers: {
      executor: 'per-vu-iterations', vus: VUS, iterations: 1, exec: 'watch',
      maxDuration: `${Math.ceil(HOLD_MS / 1000) + 60}s`,
    },
    driver: {
      executor: 'constant-vus', vus: 1, duration: DURATION,
      startTime: `${CONNECT_S}s`, exec: 'drive', gracefulStop: '5s',
    },
  },
  thresholds: {
    ws_update_latency_ms: latency(P95, P99),
    ws_updates_received: ['count>0'],
    ws_version_gaps: ['count==0'],
    ws_version_regressions: ['count==0'],
    ws_connect_failures: ['count==0'],
    ws_dropped: ['count==0'],
    ws_errors: ['count==0'],
    ws_abnormal_closes: ['count==0'],
    ws_clean_closes: [`count>=${WATCHERS}`],
    setup_failures: ['count==0'],
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
  },
};

export function setup() {
  const [s] = createStarted(1, 1);
  return { id: s ? s.id : null };
}

// The few fields we need, without parsing 1 KB of JSON 10,000 times per
// update: messages start with their type, and the state holds its version
// and its commit instant once each.
function field(text, name, from) {
  const at = text.indexOf(`"${name}":`, from);
  return at < 0 ? null : at + name.length + 3;
}

// One line from each of the first 10 VUs, not one per socket.
let warned = false;
function warn(text) {
  if (!warned && exec.vu.idInTest <= 10) console.warn(text);
  warned = true;
}

// One watcher: its socket, and a promise settled when the socket has ended.
function watcher(k, id, closeAt) {
  return new Promise((resolve) => {
    const w = new WebSocket(wsUrl(baseFor(k + 1), id));
    let opened = false;
    let closing = false;
    let failed = false; // an error event, or the server closed first
    let last = null; // last state.version
    let offset = 0; // server clock − ours
    let bestRtt = Infinity;
    const ping = () => {
      if (w.readyState === 1) w.send(JSON.stringify({ type: 'PING', client_time: Date.now() }));
    };
    const holdTimer = setTimeout(() => {
      if (w.readyState !== 1) return;
      closing = true;
      w.close(1000); // then wait for the server's Close (or the end of maxDuration)
    }, Math.max(0, closeAt - Date.now()));
    w.onopen = () => {
      opened = true;
      if (CLOCK_SYNC) {
        ping();
        setTimeout(ping, 200);
        setTimeout(ping, 400);
      }
    };
    w.onmessage = (e) => {
      const now = Date.now();
      const text = e.data;
      const update = text.startsWith('{"type":"STATE_UPDATE"');
      if (update || text.startsWith('{"type":"STATE_SYNC"')) {
        const state = text.indexOf('"state":{');
        const v = field(text, 'version', state);
        const version = v === null ? NaN : parseInt(text.slice(v, v + 20), 10);
        if (update) {
          const u = field(text, 'updated_at', state);
          if (u !== null) updateLatency.add(now + offset - Date.parse(text.slice(u + 1, u + 25)));
          received.add(1);
          if (last !== null && version <= last) regressions.add(1);
          if (last !== null && version > last + 1) gaps.add(version - last - 1);
        }
        if (last === null || version > last) last = version;
      } else if (text.startsWith('{"type":"PONG"')) {
        const m = JSON.parse(text);
        if (m.client_time !== undefined) {
          const est = pongOffset(m, now);
          if (est.rtt < bestRtt) {
            bestRtt = est.rtt;
            offset = est.offset;
          }
        }
      }
    };
    w.onerror = (e) => {
      // After our Close, a ping the server sent before reading it can no
      // longer be answered ("close sent"): a race of the handshake, not a fault.
      if (closing && String(e.error).includes('close sent')) return;
      failed = true;
      errors.add(1);
      warn(`watcher ${k}: ${e.error}`);
    };
    w.onclose = () => {
      clearTimeout(holdTimer);
      if (!opened) {
        connectFailures.add(1);
      } else {
        if (!closing) dropped.add(1);
        if (closing && !failed) clean.add(1);
        else abnormal.add(1);
      }
      if (CLOCK_SYNC && bestRtt < Infinity) clockOffset.add(offset);
      resolve();
    };
  });
}

export async function watch(d) {
  if (!d.id) return;
  const t0 = Date.now();
  const first = exec.scenario.iterationInTest * VUS_SOCKETS;
  const count = Math.min(VUS_SOCKETS, WATCHERS - first);
  const ends = [];
  for (let i = 0; i < count; i++) {
    const k = first + i;
    // Watcher k opens at k/WATCHERS of the first 80 % of the connect window.
    const openAt = t0 + (k / WATCHERS) * CONNECT_S * 800;
    ends.push(new Promise((resolve) => {
      setTimeout(() => watcher(k, d.id, t0 + HOLD_MS).then(resolve), Math.max(0, openAt - Date.now()));
    }));
  }
  await Promise.all(ends);
}

// One switch every 1/RATE s, through the instances in turn.
export function drive(d) {
  if (!d.id) return;
  const t0 = Date.now();
  const base = BASES[exec.scenario.iterationInTest % BASES.length];
  const r = http.post(`${base}/v1/sessions/${d.id}/switch`, null, req('switch', false));
  check(r, { 'switch 200': (x) => x.status === 200 });
  switches.add(1);
  const left = 1 / RATE - (Date.now() - t0) / 1000;
  if (left > 0) sleep(left);
}

export function teardown(d) {
  if (d.id) deleteAll([{ id: d.id, base: baseFor(1) }], 1);
}
