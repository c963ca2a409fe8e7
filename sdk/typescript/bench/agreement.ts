// Benchmark (not a test): do two SDK clients on different instances show the
// same clock? Starts a redis-server and two instances, watches one running
// session through each, the second client with its local clock an hour and
// 1,234 ms off (so only the offset estimate can bring it back), and every
// 10 ms computes both clients' remainingMs for the same real instant.
// Reports |difference| percentiles over SAMPLES (1,000) samples taken while
// both hold the same version (a switch every 100 samples; samples between a
// switch reaching one client and the other are counted apart).
//
//   cargo build --release
//   cd sdk/typescript && SYNCKAIROS_BIN=../../target/release/synckairos npm run bench

import { SyncKairosClient, monotonicNow, remainingMs, watch } from '../src/index.js';
import type { LiveSession } from '../src/live.js';
import { Instance, Redis } from '../test/e2e/harness.js';

const SAMPLES = Number(process.env.SAMPLES ?? 1_000);
const SKEW_MS = 3_600_000 + 1_234;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await sleep(10);
}

const redis = await Redis.start();
const one = await Instance.start({ REDIS_URL: redis.url, RATE_LIMIT_SWITCH: '0', RATE_LIMIT_GENERAL: '0' });
const two = await Instance.start({ REDIS_URL: redis.url, RATE_LIMIT_SWITCH: '0', RATE_LIMIT_GENERAL: '0' });
try {
  const a = new SyncKairosClient({ baseUrl: one.base });
  const b = new SyncKairosClient({ baseUrl: two.base });
  const id = crypto.randomUUID();
  const players = [crypto.randomUUID(), crypto.randomUUID()];
  await a.createSession({
    session_id: id,
    sync_mode: 'per_participant',
    participants: players.map((p, i) => ({ participant_id: p, participant_index: i, total_time_ms: 3_600_000 })),
    total_time_ms: 7_200_000,
    increment_ms: 1_000,
  });
  await a.start(id);
  const la = watch(a, id);
  const lb = watch(b, id, { clock: { now: () => monotonicNow() + SKEW_MS } });
  const ready = (l: LiveSession) => l.status === 'open' && l.state !== undefined && l.clock.sampleCount >= 5;
  await until(() => ready(la) && ready(lb));

  const diffs: number[] = [];
  let mismatched = 0;
  while (diffs.length < SAMPLES) {
    if (diffs.length > 0 && diffs.length % 100 === 0 && mismatched < diffs.length) {
      await a.switch(id);
    }
    await sleep(10);
    const sa = la.state!;
    const sb = lb.state!;
    if (sa.version !== sb.version) {
      mismatched++;
      continue;
    }
    const t = monotonicNow();
    const active = sa.active_participant_id!;
    const ra = remainingMs(sa, active, t + la.clock.offsetMs)!;
    const rb = remainingMs(sb, active, t + SKEW_MS + lb.clock.offsetMs)!;
    diffs.push(Math.abs(ra - rb));
  }
  la.close();
  lb.close();
  diffs.sort((x, y) => x - y);
  const q = (p: number) => diffs[Math.min(diffs.length - 1, Math.floor(p * diffs.length))]!;
  console.log(
    JSON.stringify({
      samples: diffs.length,
      p50_ms: +q(0.5).toFixed(3),
      p99_ms: +q(0.99).toFixed(3),
      max_ms: +diffs.at(-1)!.toFixed(3),
      skipped_version_mismatch: mismatched,
      offset_a_ms: +la.clock.offsetMs.toFixed(3),
      offset_b_ms: +(lb.clock.offsetMs + SKEW_MS).toFixed(3),
      uncertainty_a_ms: +la.clock.uncertaintyMs.toFixed(3),
      uncertainty_b_ms: +lb.clock.uncertaintyMs.toFixed(3),
    }),
  );
} finally {
  await one.stop();
  await two.stop();
  await redis.dispose();
}
