// The many-concurrent-sessions scenario shared by 02-concurrent-1k.js and
// 03-concurrent-10k.js (they differ only in the default of SESSIONS). Not run
// directly: `concurrentSessions(defaultSessions)` returns the options and the
// functions a scenario file exports.
//
// setup() creates and starts SESSIONS sessions (24 h banks, so none times out),
// spread over the instances, in batches of BATCH parallel requests. Then, for
// DURATION, switches arrive at RATE per second and reads at GET_RATE per
// second (open model, constant-arrival-rate), each on a random session, sent
// to the VU's instance (so a session is often driven through an instance other
// than the one that created it). teardown() deletes the sessions.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { envNum, envStr, myBase, req, data, createStarted, deleteAll, latency, TREND_STATS } from './common.js';

export function concurrentSessions(defaultSessions) {
  const SESSIONS = envNum('SESSIONS', defaultSessions);
  const RATE = envNum('RATE', 500);
  const GET_RATE = envNum('GET_RATE', RATE);
  const DURATION = envStr('DURATION', '60s');
  const VUS = envNum('VUS', 20);
  const MAX_VUS = envNum('MAX_VUS', VUS * 5);
  const BATCH = envNum('BATCH', 100);
  const P95 = envNum('P95_MS', 50);
  const P99 = envNum('P99_MS', 100);
  const MAX_FAILED = envNum('MAX_FAILED', 0.01);

  const notFound = new Counter('sessions_lost');

  const scenarios = {};
  if (RATE > 0) {
    scenarios.switches = {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: VUS, maxVUs: MAX_VUS, exec: 'switchOne',
    };
  }
  if (GET_RATE > 0) {
    scenarios.reads = {
      executor: 'constant-arrival-rate', rate: GET_RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: VUS, maxVUs: MAX_VUS, exec: 'getOne',
    };
  }

  const options = {
    summaryTrendStats: TREND_STATS,
    setupTimeout: envStr('SETUP_TIMEOUT', '600s'),
    teardownTimeout: envStr('TEARDOWN_TIMEOUT', '600s'),
    batch: BATCH,
    batchPerHost: BATCH,
    scenarios,
    thresholds: {
      'http_req_duration{name:switch}': latency(P95, P99),
      'http_req_duration{name:get}': latency(P95, P99),
      http_req_failed: [`rate<${MAX_FAILED}`],
      checks: ['rate>0.99'],
      setup_failures: ['count==0'],
      sessions_lost: ['count==0'],
    },
  };

  function pick(d) {
    return d.ids[Math.floor(Math.random() * d.ids.length)];
  }

  return {
    options,
    setup() {
      const t0 = Date.now();
      const ids = createStarted(SESSIONS, BATCH).map((s) => s.id);
      console.log(`setup: ${ids.length} of ${SESSIONS} sessions running after ${Date.now() - t0} ms`);
      return { ids };
    },
    switchOne(d) {
      const r = http.post(`${myBase()}/v1/sessions/${pick(d)}/switch`, null, req('switch', false));
      if (r.status === 404) notFound.add(1);
      check(r, { 'switch 200': (x) => x.status === 200 });
    },
    getOne(d) {
      const r = http.get(`${myBase()}/v1/sessions/${pick(d)}`, req('get', false));
      if (r.status === 404) notFound.add(1);
      check(r, { 'get 200, running': (x) => x.status === 200 && (data(x) || {}).status === 'running' });
    },
    teardown(d) {
      deleteAll(d.ids.map((id) => ({ id, base: myBase() })), BATCH);
    },
  };
}
