//! The drain: moves audit events from the store's outbox to PostgreSQL, off
//! the hot path, on every instance.
//!
//! ```text
//! outbox (XREADGROUP, XAUTOCLAIM) ─> bounded channel ─> batch writer ─> INSERT … ON CONFLICT DO NOTHING
//!                                                                      └─> XACK + XDEL after COMMIT
//! ```
//!
//! Nothing is acknowledged before its transaction commits, so an instance
//! that dies mid-batch leaves its events pending; after `AUDIT_CLAIM_IDLE_MS`
//! another instance claims and writes them, and the fixed event ids make the
//! second insert of anything already written a no-op. While PostgreSQL is
//! down the writer retries its batch with backoff, the channel fills and
//! reading stops: the backlog waits in Redis, not in memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::postgres::{AuditDb, DbError};
use crate::clock::Clock;
use crate::store::{OutboxEntry, OutboxGroup, Receipt, Store};

/// Most events per INSERT, and longest a batch waits to fill.
const BATCH_MAX: usize = 500;
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Events read per bucket at a time (a read returns up to this many per bucket).
const READ_LIMIT: usize = 64;
/// Events read but not yet written that one instance holds at most.
const CHANNEL_CAPACITY: usize = 2 * BATCH_MAX;
/// Pause after a read that was not full (so reads come in batches, not one
/// command per event); an empty outbox is polled less and less often, up
/// to the second.
const IDLE_POLL: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(200));
/// Retrying a failed commit or read backs off from the first to the second.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// How often the outbox gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often a drain looks for idle consumers' events, at most.
const CLAIM_EVERY_MAX: Duration = Duration::from_secs(10);
/// Longest one insert attempt may take before it counts as failed (a
/// database that stopped answering must not hold the batch, or a shutdown,
/// forever).
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an insert under way at shutdown may still take to commit.
const FINISH_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// How one instance drains.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// This instance's name in the consumer group (unique per process).
    pub consumer: String,
    /// Pending events idle this long belong to a dead (or stuck) consumer
    /// and are claimed.
    pub claim_idle: Duration,
    /// Apply the migrations before draining.
    pub migrate: bool,
}

/// Runs the drain until `shutdown`: migrations (retried until they apply),
/// then the reader, the batch writer and the gauges.
pub async fn run(
    store: Arc<dyn Store>,
    db: AuditDb,
    clock: Clock,
    options: DrainOptions,
    shutdown: CancellationToken,
) {
    if options.migrate && !migrate(&db, &shutdown).await {
        return;
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let reader = tokio::spawn(read(
        store.clone(),
        options.clone(),
        tx,
        db.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(gauges(store.clone(), clock, shutdown.clone()));
    write(store, db, rx, shutdown).await;
    let _ = reader.await;
}

/// Applies the migrations, retrying while PostgreSQL is unreachable.
/// Returns false if shut down first.
async fn migrate(db: &AuditDb, shutdown: &CancellationToken) -> bool {
    let mut backoff = Backoff::new();
    loop {
        match db.migrate().await {
            Ok(()) => {
                tracing::info!("audit database migrated");
                return true;
            }
            Err(e) => tracing::warn!(error = %e, "audit migrations not applied yet; retrying"),
        }
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
}

/// Feeds the channel: new events, and every so often the events of
/// consumers idle for longer than `claim_idle`. Not while the writer is
/// stalled (`db` known unreachable): the events it holds would look idle
/// too, and every instance would only keep taking the others' events.
async fn read(
    store: Arc<dyn Store>,
    options: DrainOptions,
    tx: mpsc::Sender<OutboxEntry>,
    db: AuditDb,
    shutdown: CancellationToken,
) {
    let claim_every = (options.claim_idle / 3).clamp(Duration::from_millis(50), CLAIM_EVERY_MAX);
    let claim_idle_ms = u64::try_from(options.claim_idle.as_millis()).unwrap_or(u64::MAX);
    // Claim once at start-up: a restarted instance picks up its dead predecessor's events.
    let mut last_claim: Option<Instant> = None;
    let mut idle = IDLE_POLL.0;
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let mut entries = Vec::new();
        let claim =
            last_claim.is_none_or(|at| at.elapsed() >= claim_every) && !db.known_unreachable();
        let polled = async {
            if claim {
                last_claim = Some(Instant::now());
                entries = store
                    .outbox_reclaim(
                        OutboxGroup::Audit,
                        &options.consumer,
                        claim_idle_ms,
                        READ_LIMIT,
                    )
                    .await?;
                if !entries.is_empty() {
                    tracing::info!(
                        events = entries.len(),
                        "claimed pending audit events of an idle consumer"
                    );
                    // There may be more: claim again on the next round.
                    last_claim = None;
                }
            }
            entries.extend(
                store
                    .outbox_read(OutboxGroup::Audit, &options.consumer, READ_LIMIT)
                    .await?,
            );
            Ok::<_, crate::store::StoreError>(())
        };
        if let Err(e) = polled.await {
            metrics::counter!("synckairos_audit_failures_total", "stage" => "read").increment(1);
            tracing::warn!(error = %e, "reading the audit outbox failed; retrying");
            if !backoff.wait(&shutdown).await {
                return;
            }
            continue;
        }
        backoff.reset();
        let read = entries.len();
        for entry in entries {
            tokio::select! {
                sent = tx.send(entry) => if sent.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        let pause = match read {
            0 => {
                let pause = idle;
                idle = (idle * 2).min(IDLE_POLL.1);
                pause
            }
            // A bucket may have more waiting (or a hot bucket certainly has).
            n if n >= READ_LIMIT => continue,
            _ => {
                idle = IDLE_POLL.0;
                IDLE_POLL.0
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Commits batches of up to [`BATCH_MAX`] events (or what arrived within
/// [`BATCH_WAIT`] of the first), then acknowledges them.
async fn write(
    store: Arc<dyn Store>,
    db: AuditDb,
    mut rx: mpsc::Receiver<OutboxEntry>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            entry = rx.recv() => match entry {
                Some(entry) => entry,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_MAX {
            tokio::select! {
                entry = rx.recv() => match entry {
                    Some(entry) => batch.push(entry),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !commit(&store, &db, batch, &shutdown).await {
            return;
        }
    }
}

/// Writes one batch until it commits, then acknowledges it. Returns false
/// if shut down before the batch committed (it stays pending, to be
/// claimed).
async fn commit(
    store: &Arc<dyn Store>,
    db: &AuditDb,
    batch: Vec<OutboxEntry>,
    shutdown: &CancellationToken,
) -> bool {
    let mut receipts: Vec<Receipt> = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    for entry in batch {
        match entry.event {
            // The same event twice in one batch (claimed while queued) is written once.
            Ok(event) if seen.insert(event.id) => events.push(event),
            Ok(_) => {}
            Err(e) => {
                // Not something our scripts wrote: keeping it would block nothing
                // but would sit in the outbox forever.
                metrics::counter!("synckairos_audit_invalid_total").increment(1);
                tracing::error!(entry = %entry.receipt.id, error = %e, "undecodable audit outbox entry dropped");
            }
        }
        receipts.push(entry.receipt);
    }
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::time::timeout(INSERT_TIMEOUT, db.insert(&events));
        let abandon = async {
            shutdown.cancelled().await;
            tokio::time::sleep(FINISH_ON_SHUTDOWN).await;
        };
        let attempt = tokio::select! {
            attempt = attempt => attempt,
            // Not committed in time: the batch stays pending, to be claimed
            // (and deduplicated, should the insert land after all).
            _ = abandon => return false,
        };
        match attempt.unwrap_or_else(|_| Err(DbError::Unavailable("insert timed out".into()))) {
            Ok(inserted) => {
                db.set_reachable(true);
                metrics::counter!("synckairos_audit_events_written_total").increment(inserted);
                metrics::counter!("synckairos_audit_duplicates_total")
                    .increment(events.len() as u64 - inserted);
                metrics::histogram!("synckairos_audit_batch_size").record(events.len() as f64);
                break;
            }
            Err(e) => {
                db.set_reachable(false);
                metrics::counter!("synckairos_audit_failures_total", "stage" => "insert")
                    .increment(1);
                tracing::warn!(error = %e, events = events.len(), "audit batch not committed; retrying");
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
    }
    // Committed. An acknowledgement that fails leaves the events pending:
    // they are claimed and inserted again, which changes nothing.
    if let Err(e) = store.outbox_ack(OutboxGroup::Audit, &receipts).await {
        metrics::counter!("synckairos_audit_failures_total", "stage" => "ack").increment(1);
        tracing::warn!(error = %e, "acknowledging committed audit events failed; they will be re-read");
    }
    true
}

/// Refreshes the outbox gauges: its size, what is being written, and how
/// old the oldest unwritten event is.
async fn gauges(store: Arc<dyn Store>, clock: Clock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(stats) = store.outbox_stats(OutboxGroup::Audit).await else {
            continue; // the store is down; /ready says so
        };
        metrics::gauge!("synckairos_audit_outbox_backlog").set(stats.backlog as f64);
        metrics::gauge!("synckairos_audit_outbox_pending").set(stats.pending as f64);
        let lag_ms = stats
            .oldest
            .map_or(0, |at| (clock.now().ms() - at.ms()).max(0));
        metrics::gauge!("synckairos_audit_lag_seconds").set(lag_ms as f64 / 1000.0);
    }
}

/// Exponential backoff with jitter between [`RETRY`]'s bounds.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: RETRY.0 }
    }

    fn reset(&mut self) {
        self.next = RETRY.0;
    }

    /// Sleeps for the next delay (half of it to all of it, at random, so
    /// instances that failed together do not retry together); false if shut
    /// down meanwhile.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let random = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        let delay = self.next / 2 + self.next / 2 * random / 1000;
        self.next = (self.next * 2).min(RETRY.1);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
