//! Server-side timeouts. Every instance runs this loop: claim the sessions
//! whose deadline has passed (leasing them, so exactly one instance works on
//! each at a time and a crashed claimer's work comes back), apply the timeout
//! through the engine's normal write path, then wait for the next deadline.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::store::Swept;

/// How long a claim holds a due entry before another instance may take it.
pub const LEASE_MS: i64 = 5_000;
/// Due entries claimed per bucket and poll: small enough that a burst is
/// shared among the instances instead of leased by whichever polled first.
const BATCH: usize = 64;
/// Timeouts applied at once by one instance. Each is two Redis round trips;
/// applying them one after another would make a burst of shared deadlines
/// (an exam, a tournament round) wait on the sum of those round trips.
const CONCURRENCY: usize = 32;
/// Pause after a store error before claiming again.
const ERROR_BACKOFF: Duration = Duration::from_millis(250);

/// Runs until `shutdown` is cancelled.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let store = engine.store().clone();
    let clock = engine.clock().clone();
    loop {
        match store.claim_due(clock.now(), LEASE_MS, BATCH).await {
            Ok(due) => {
                metrics::counter!("synckairos_scheduler_claims_total").increment(due.len() as u64);
                futures_util::stream::iter(due)
                    .for_each_concurrent(CONCURRENCY, |id| {
                        let engine = &engine;
                        async move {
                            if let Err(e) = engine.apply_timeout(id).await {
                                tracing::warn!(session_id = %id, error = %e, "timeout not applied; the lease will bring it back");
                            }
                        }
                    })
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming due sessions failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ERROR_BACKOFF) => continue,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = store.wait_for_due(&clock) => {}
        }
    }
}

/// Every `interval`, re-derives deadlines from the stored sessions and repairs
/// the index (one instance at a time). Repairs should never be needed: each
/// one is logged and counted, since it means an index entry went missing.
pub async fn sweep(engine: Arc<Engine>, interval: Duration, shutdown: CancellationToken) {
    let store = engine.store().clone();
    let clock = engine.clock().clone();
    let mut tick = tokio::time::interval(interval);
    tick.tick().await; // not at start-up
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.sweep(clock.now(), LEASE_MS).await {
            Ok(Swept { repairs, sessions }) => {
                if let Some(sessions) = sessions {
                    metrics::gauge!("synckairos_active_sessions").set(sessions as f64);
                }
                if repairs > 0 {
                    metrics::counter!("synckairos_sweep_repairs_total").increment(repairs as u64);
                    tracing::warn!(repairs, "sweep repaired the deadline index");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}
