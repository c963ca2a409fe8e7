// NTP-style estimate of the server clock from PING/PONG round trips.
//
// For one round trip the client sends at t0 and receives at t3 (local clock);
// the server received at t1 and sent at t2 (server clock). Then
//   offset = ((t1 - t0) + (t2 - t3)) / 2      (server - local)
//   rtt    = (t3 - t0) - (t2 - t1)
// and the true offset lies within offset ± rtt/2 whatever the asymmetry of
// the two paths. Samples with the lowest round trip are the least disturbed
// by queueing, so the estimate is the median offset of the best few samples
// of a recent window.
/** The platform's monotonic clock on the epoch scale. */
export function monotonicNow() {
    return performance.timeOrigin + performance.now();
}
export class ClockEstimator {
    samples = [];
    window;
    best;
    resolution;
    now;
    constructor(options = {}) {
        this.window = Math.max(1, options.window ?? 16);
        this.best = Math.max(1, options.best ?? 3);
        this.now = options.now ?? monotonicNow;
        this.resolution = Math.max(0, options.serverResolutionMs ?? 1);
    }
    /** Adds one round trip; returns the sample, or `undefined` if it is
     * impossible (the reply arrived before the request left, or the server's
     * times are reversed), which a clock step can cause. */
    addSample(t0, t1, t2, t3) {
        const rttMs = t3 - t0 - (t2 - t1);
        if (![t0, t1, t2, t3].every(Number.isFinite) || t3 < t0 || t2 < t1 || rttMs < 0)
            return undefined;
        // Truncated server times are centred by adding half their resolution.
        const half = this.resolution / 2;
        const sample = { offsetMs: (t1 + half - t0 + (t2 + half - t3)) / 2, rttMs, atMs: t3 };
        this.samples.push(sample);
        if (this.samples.length > this.window)
            this.samples.shift();
        return sample;
    }
    /** Forgets every sample (e.g. after the local clock jumped). */
    reset() {
        this.samples = [];
    }
    get synced() {
        return this.samples.length > 0;
    }
    get sampleCount() {
        return this.samples.length;
    }
    /** Server clock minus local clock, in ms (0 before the first sample). */
    get offsetMs() {
        const best = this.bestSamples();
        if (best.length === 0)
            return 0;
        const offsets = best.map((s) => s.offsetMs).sort((a, b) => a - b);
        const mid = offsets.length >> 1;
        return offsets.length % 2 ? offsets[mid] : (offsets[mid - 1] + offsets[mid]) / 2;
    }
    /** The lowest round trip seen in the window (Infinity before the first sample). */
    get rttMs() {
        return this.bestSamples()[0]?.rttMs ?? Infinity;
    }
    /** Bound on the offset's error: each sample is within ± its rtt/2 (plus
     * half the server's resolution) of the truth, so their median is within
     * that of the largest rtt among them. */
    get uncertaintyMs() {
        const best = this.bestSamples();
        return best.length === 0 ? Infinity : best[best.length - 1].rttMs / 2 + this.resolution / 2;
    }
    /** The server's clock now, as estimated. */
    serverNow() {
        return this.now() + this.offsetMs;
    }
    bestSamples() {
        return [...this.samples].sort((a, b) => a.rttMs - b.rttMs).slice(0, this.best);
    }
}
