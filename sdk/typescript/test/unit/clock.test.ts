import { describe, expect, it } from 'vitest';
import { ClockEstimator } from '../../src/clock.js';

/** A deterministic PRNG, so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** One simulated round trip: true offset `offset` (server - local), `up` and
 * `down` one-way delays, `service` time at the server. */
function roundTrip(est: ClockEstimator, t0: number, offset: number, up: number, down: number, service = 0.2) {
  const t1 = t0 + up + offset;
  const t2 = t1 + service;
  const t3 = t2 - offset + down;
  return est.addSample(t0, t1, t2, t3);
}

/** Simulated servers with exact (fractional) timestamps. */
const exact = { serverResolutionMs: 0 };

describe('ClockEstimator', () => {
  it('finds the offset exactly on symmetric paths', () => {
    const est = new ClockEstimator(exact);
    roundTrip(est, 1000, 250, 20, 20);
    expect(est.offsetMs).toBeCloseTo(250, 9);
    expect(est.rttMs).toBeCloseTo(40, 9);
  });

  it('stays within ± rtt/2 of the truth under asymmetric delays', () => {
    const random = rng(7);
    for (let trial = 0; trial < 200; trial++) {
      const offset = (random() - 0.5) * 10_000;
      const est = new ClockEstimator(exact);
      for (let i = 0; i < 8; i++) {
        // Heavily asymmetric: the uplink is up to 10x slower than the downlink.
        const down = 1 + random() * 20;
        const up = down * (1 + random() * 9);
        roundTrip(est, 1_000 * i, offset, up, down);
      }
      expect(Math.abs(est.offsetMs - offset)).toBeLessThanOrEqual(est.uncertaintyMs + 1e-9);
    }
  });

  it('prefers low-RTT samples over queued ones', () => {
    const random = rng(11);
    const offset = 1234;
    const est = new ClockEstimator({ ...exact, window: 16, best: 3 });
    const naive: number[] = [];
    for (let i = 0; i < 16; i++) {
      // Most samples wait in a queue on the way up (bufferbloat); a few do not.
      const queued = i % 5 !== 0;
      const up = 5 + (queued ? 100 + random() * 400 : random());
      const s = roundTrip(est, i * 1000, offset, up, 5 + random());
      naive.push(s!.offsetMs);
    }
    const mean = naive.reduce((a, b) => a + b, 0) / naive.length;
    expect(Math.abs(est.offsetMs - offset)).toBeLessThan(2);
    expect(Math.abs(mean - offset)).toBeGreaterThan(50);
    expect(est.uncertaintyMs).toBeLessThan(7);
  });

  it('forgets old samples beyond its window', () => {
    const est = new ClockEstimator({ ...exact, window: 4, best: 1 });
    roundTrip(est, 0, 100, 1, 1); // the best, but old
    for (let i = 1; i <= 4; i++) roundTrip(est, i * 1000, 500, 10, 10);
    expect(est.sampleCount).toBe(4);
    expect(est.offsetMs).toBeCloseTo(500, 9);
  });

  it('refuses impossible samples', () => {
    const est = new ClockEstimator(exact);
    expect(est.addSample(100, 50, 60, 90)).toBeUndefined(); // reply before request
    expect(est.addSample(100, 60, 50, 120)).toBeUndefined(); // server times reversed
    expect(est.addSample(100, 150, 160, 105)).toBeUndefined(); // negative rtt
    expect(est.synced).toBe(false);
    expect(est.offsetMs).toBe(0);
  });

  it('serverNow adds the offset to the local monotonic clock', () => {
    let local = 10_000;
    const est = new ClockEstimator({ ...exact, now: () => local });
    roundTrip(est, 9_990, -3_000, 5, 5);
    expect(est.serverNow()).toBeCloseTo(7_000, 9);
    local += 1_500;
    expect(est.serverNow()).toBeCloseTo(8_500, 9);
  });

  it('centres whole-millisecond server timestamps, within the stated bound', () => {
    const random = rng(3);
    let centred = 0;
    let raw = 0;
    for (let trial = 0; trial < 200; trial++) {
      const offset = (random() - 0.5) * 1_000;
      const est = new ClockEstimator(); // SyncKairos: truncated whole ms
      const naive = new ClockEstimator(exact);
      for (let i = 0; i < 8; i++) {
        const t0 = 10_000 * i + random() * 1000;
        const up = 0.2 + random() * 0.3;
        const t1 = t0 + up + offset;
        const t2 = t1 + random() * 0.2;
        const t3 = t2 - offset + up;
        est.addSample(t0, Math.floor(t1), Math.floor(t2), t3);
        naive.addSample(t0, Math.floor(t1), Math.floor(t2), t3);
      }
      expect(Math.abs(est.offsetMs - offset)).toBeLessThanOrEqual(est.uncertaintyMs + 1e-9);
      centred += Math.abs(est.offsetMs - offset);
      raw += Math.abs(naive.offsetMs - offset);
    }
    expect(centred).toBeLessThan(raw);
  });
});
