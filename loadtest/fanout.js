// Fan-out latency: SUBSCRIBERS WebSocket clients watch one session, spread
// over the instances in BASE_URLS; one driver switches it every 100 ms on the
// first instance. For every STATE_UPDATE a client receives, the latency is
// receive time minus the write's commit instant (state.updated_at); clocks
// are shared because everything runs on one machine.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3000,http://127.0.0.1:3001 -e SUBSCRIBERS=1000 loadtest/fanout.js
import http from 'k6/http';
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { uuidv4 } from './lib.js';

const BASES = (__ENV.BASE_URLS || 'http://127.0.0.1:3000').split(',');
const SUBSCRIBERS = Number(__ENV.SUBSCRIBERS || 1000);
const HOLD_S = Number(__ENV.HOLD_SECONDS || 40);
const DRIVE_S = Number(__ENV.DRIVE_SECONDS || 20);

const fanout = new Trend('fanout_latency_ms', true);
// The two parts: commit → the instance serialises the message (its
// `timestamp`), and that → this client has parsed it.
const forward = new Trend('fanout_server_ms', true);
const delivery = new Trend('fanout_delivery_ms', true);
const updates = new Counter('updates_received');

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  setupTimeout: '60s',
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations', vus: SUBSCRIBERS, iterations: 1,
      maxDuration: `${HOLD_S + 30}s`, exec: 'subscribe',
    },
    driver: {
      // Starts once the subscribers are connected.
      executor: 'constant-vus', vus: 1, duration: `${DRIVE_S}s`,
      startTime: `${HOLD_S - DRIVE_S - 5}s`, exec: 'drive',
    },
  },
};

export function setup() {
  const id = uuidv4();
  const body = {
    session_id: id, sync_mode: 'per_participant', total_time_ms: 86400000,
    participants: [
      { participant_id: uuidv4(), participant_index: 0, total_time_ms: 86400000 },
      { participant_id: uuidv4(), participant_index: 1, total_time_ms: 86400000 },
    ],
  };
  const headers = { headers: { 'Content-Type': 'application/json' } };
  check(http.post(`${BASES[0]}/v1/sessions`, JSON.stringify(body), headers), { created: (r) => r.status === 201 });
  check(http.post(`${BASES[0]}/v1/sessions/${id}/start`), { started: (r) => r.status === 200 });
  return { id };
}

export function subscribe(data) {
  const base = BASES[(__VU - 1) % BASES.length].replace('http', 'ws');
  const res = ws.connect(`${base}/ws?sessionId=${data.id}`, {}, (socket) => {
    socket.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type === 'STATE_UPDATE') {
        const now = Date.now();
        const committed = Date.parse(m.state.updated_at);
        fanout.add(now - committed);
        forward.add(m.timestamp - committed);
        delivery.add(now - m.timestamp);
        updates.add(1);
      }
    });
    socket.setTimeout(() => socket.close(), HOLD_S * 1000);
  });
  check(res, { 'upgraded': (r) => r && r.status === 101 });
}

export function drive(data) {
  http.post(`${BASES[0]}/v1/sessions/${data.id}/switch`, null, { tags: { name: 'switch' } });
  sleep(0.1);
}

export function teardown(data) {
  http.del(`${BASES[0]}/v1/sessions/${data.id}`);
}
