export interface ClockSample {
    offsetMs: number;
    rttMs: number;
    /** Local time the sample was taken. */
    atMs: number;
}
export interface ClockOptions {
    /** Samples remembered (newest win). */
    window?: number;
    /** Lowest-RTT samples the estimate is taken from. */
    best?: number;
    /** The local clock; monotonic between syncs (`performance.now()` based). */
    now?: () => number;
    /** Resolution of the server's timestamps: SyncKairos sends whole
     * milliseconds, truncated, so each is on average half of one early. */
    serverResolutionMs?: number;
}
/** The platform's monotonic clock on the epoch scale. */
export declare function monotonicNow(): number;
export declare class ClockEstimator {
    private samples;
    private readonly window;
    private readonly best;
    private readonly resolution;
    readonly now: () => number;
    constructor(options?: ClockOptions);
    /** Adds one round trip; returns the sample, or `undefined` if it is
     * impossible (the reply arrived before the request left, or the server's
     * times are reversed), which a clock step can cause. */
    addSample(t0: number, t1: number, t2: number, t3: number): ClockSample | undefined;
    /** Forgets every sample (e.g. after the local clock jumped). */
    reset(): void;
    get synced(): boolean;
    get sampleCount(): number;
    /** Server clock minus local clock, in ms (0 before the first sample). */
    get offsetMs(): number;
    /** The lowest round trip seen in the window (Infinity before the first sample). */
    get rttMs(): number;
    /** Bound on the offset's error: each sample is within ± its rtt/2 (plus
     * half the server's resolution) of the truth, so their median is within
     * that of the largest rtt among them. */
    get uncertaintyMs(): number;
    /** The server's clock now, as estimated. */
    serverNow(): number;
    private bestSamples;
}
