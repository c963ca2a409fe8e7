// Switch latency and throughput: every virtual user drives its own running
// session and switches it in a tight loop (no think time), or, with RATE,
// switches arrive at RATE per second over VUS sessions for DURATION.
//
//   k6 run -e BASE_URL=http://127.0.0.1:3000 --vus 32 --duration 30s loadtest/switch.js
//   k6 run -e BASE_URL=http://127.0.0.1:3000 -e RATE=1000 -e VUS=64 -e DURATION=30s loadtest/switch.js
//
// Sessions use 24 h banks, so no timeout interferes with the measurement.
import http from 'k6/http';
import { check } from 'k6';
import { uuidv4 } from './lib.js';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:3000';
const VUS = Number(__ENV.K6_VUS || __ENV.VUS || 1);
const JSON_HEADERS = { headers: { 'Content-Type': 'application/json' } };

const RATE = Number(__ENV.RATE || 0);

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  // Setup creates one session per VU.
  setupTimeout: '60s',
  // Also makes k6 report the switch requests alone (without setup's).
  thresholds: {
    'http_req_duration{name:switch}': ['p(99)<250'],
    checks: ['rate>0.999'],
  },
};
if (RATE > 0) {
  options.scenarios = {
    switch: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: VUS,
      maxVUs: VUS,
    },
  };
}

export function setup() {
  const ids = [];
  for (let i = 0; i < VUS; i++) {
    const id = uuidv4();
    const body = {
      session_id: id,
      sync_mode: 'per_participant',
      total_time_ms: 86400000,
      participants: [
        { participant_id: uuidv4(), participant_index: 0, total_time_ms: 86400000 },
        { participant_id: uuidv4(), participant_index: 1, total_time_ms: 86400000 },
      ],
    };
    const created = http.post(`${BASE}/v1/sessions`, JSON.stringify(body), JSON_HEADERS);
    check(created, { 'created': (r) => r.status === 201 });
    const started = http.post(`${BASE}/v1/sessions/${id}/start`);
    check(started, { 'started': (r) => r.status === 200 });
    ids.push(id);
  }
  return { ids };
}

export default function (data) {
  const id = data.ids[(__VU - 1) % data.ids.length];
  const r = http.post(`${BASE}/v1/sessions/${id}/switch`, null, { tags: { name: 'switch' } });
  check(r, { 'switch 200': (res) => res.status === 200 });
}

export function teardown(data) {
  for (const id of data.ids) {
    http.del(`${BASE}/v1/sessions/${id}`);
  }
}
