// 02 — 1,000 concurrent sessions.
//
// What it measures: switch and read latency while SESSIONS (1,000) sessions
// run at once. setup() creates and starts them (24 h banks, so nothing times
// out), spread over the instances; then switches arrive at RATE/s and reads at
// GET_RATE/s (open model: constant-arrival-rate), each on a random session,
// sent to the VU's instance. teardown() deletes the sessions. The logic lives
// in loadtest/sessions.js (shared with 03-concurrent-10k.js).
//
// Parameters (__ENV, with defaults):
//   BASE_URLS / BASE_URL  instances (http://127.0.0.1:3000); VU n uses instance n mod count
//   SESSIONS   running sessions (1000)
//   RATE       switches per second (500; 0 = none)
//   GET_RATE   reads per second (= RATE; 0 = none)
//   DURATION   how long the load runs (60s)
//   VUS, MAX_VUS  VUs pre-allocated / at most, per scenario (20, 5 × VUS)
//   BATCH      parallel requests in setup/teardown (100)
//   CLEANUP    delete the sessions at the end (true)
//   P95_MS, P99_MS  latency thresholds (50, 100)
//   MAX_FAILED largest accepted http_req_failed rate (0.01)
//
// Thresholds: http_req_duration{name:switch} and {name:get} p(95)<P95_MS,
// p(99)<P99_MS; http_req_failed rate<MAX_FAILED; checks rate>0.99;
// setup_failures and sessions_lost (404 on a running session) count==0.
//
//   k6 run -e BASE_URLS=http://10.0.0.1:3000,http://10.0.0.2:3000 loadtest/02-concurrent-1k.js
//   loadtest/run-local.sh 02 -e RATE=200 -e DURATION=20s
import { concurrentSessions } from './sessions.js';

const s = concurrentSessions(1000);
export const options = s.options;
export const setup = s.setup;
export const switchOne = s.switchOne;
export const getOne = s.getOne;
export const teardown = s.teardown;
