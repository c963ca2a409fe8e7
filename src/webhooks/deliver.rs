//! The deliverer, on every instance: accepts the outbox's events onto the
//! webhook schedule, delivers what is due, and settles each attempt.
//!
//! - **Accept**: events read with the `webhooks` consumer group are put on
//!   the schedule leased to this instance, then acknowledged; an instance
//!   that dies between the read and the acknowledgement leaves them pending,
//!   and another claims them after `WEBHOOK_CLAIM_IDLE_MS`.
//! - **Deliver**: at most [`PER_ENDPOINT`] attempts at a time per URL and
//!   [`IN_FLIGHT`] in all, each bounded by `WEBHOOK_TIMEOUT_MS`. A slow or
//!   dead receiver holds only its own slots: its further deliveries wait on
//!   the schedule, not in memory, and nothing here is on the request path.
//! - **Settle**: a 2xx forgets the delivery; a 410 dead-letters it at once;
//!   anything else is due again after the next delay of
//!   `WEBHOOK_RETRY_SCHEDULE` (plus up to a tenth of it, at random, so
//!   failed deliveries do not come back together), or dead-lettered after
//!   the last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{WebhookSettings, WebhookType, event};
use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::store::{Delivery, OutboxEntry, OutboxGroup, Settle, Store};

/// Attempts under way at once towards one URL.
pub const PER_ENDPOINT: usize = 16;
/// Deliveries held by this instance at once (running or waiting for their
/// endpoint's slot); beyond it, the schedule keeps them.
pub const IN_FLIGHT: usize = 512;
/// Of those, at most a quarter for one URL: a receiver that hangs must not
/// take every slot from the others. Fewer when a held delivery could wait
/// past its lease (see [`per_endpoint_held`]).
const PER_ENDPOINT_HELD_MAX: usize = IN_FLIGHT / 4;
/// Outbox events read per bucket at a time.
const READ_LIMIT: usize = 64;
/// How often the schedule is polled for due retries and lapsed leases.
const POLL: Duration = Duration::from_millis(500);
/// Pause after an outbox read that found less than a full batch: from the
/// first, doubling while nothing comes, up to the second.
const IDLE_READ: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));
/// A delivery this instance cannot take now goes back on the schedule,
/// due this much later, for any instance.
const HAND_BACK: Duration = Duration::from_secs(1);
/// How long the endpoint may fail without a success before `/ready` says so.
pub const FAILING_AFTER: Duration = Duration::from_secs(60);
const STATS_EVERY: Duration = Duration::from_secs(5);

/// How the webhooks fare, for `/ready`: since when deliveries have been
/// failing without a success in between (0 = they are not).
#[derive(Debug, Default)]
pub struct Health {
    failing_since_ms: AtomicI64,
}

impl Health {
    /// How long deliveries have failed without a success, if they have.
    pub fn failing_for(&self, now_ms: i64) -> Option<Duration> {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        (since > 0).then(|| Duration::from_millis(u64::try_from(now_ms - since).unwrap_or(0)))
    }

    fn record(&self, ok: bool, now_ms: i64) {
        if ok {
            self.failing_since_ms.store(0, Ordering::Relaxed);
        } else {
            let _ = self.failing_since_ms.compare_exchange(
                0,
                now_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// One instance's deliverer.
pub struct Deliverer {
    store: Arc<dyn Store>,
    pub settings: Arc<WebhookSettings>,
    clock: Clock,
    http: reqwest::Client,
    /// This instance's name in the `webhooks` consumer group.
    consumer: String,
    pub health: Arc<Health>,
    /// Deliveries held, in all and per URL, with each URL's attempt slots.
    held: AtomicUsize,
    per_endpoint_held: usize,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Wakes the poller when slots free up.
    freed: Notify,
}

struct Endpoint {
    held: usize,
    slots: Arc<Semaphore>,
}

impl Deliverer {
    /// A deliverer; fails only if the HTTP client cannot be built (TLS).
    pub fn new(
        store: Arc<dyn Store>,
        settings: Arc<WebhookSettings>,
        clock: Clock,
    ) -> Result<Arc<Self>, String> {
        let http = reqwest::Client::builder()
            // A receiver cannot send the server elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(PER_ENDPOINT)
            .user_agent(concat!("SyncKairos-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))?;
        Ok(Arc::new(Self {
            per_endpoint_held: per_endpoint_held(&settings),
            store,
            settings,
            clock,
            http,
            consumer: format!("sk-{}", uuid::Uuid::new_v4().simple()),
            health: Arc::new(Health::default()),
            held: AtomicUsize::new(0),
            endpoints: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        }))
    }

    /// Accepts, delivers and settles until `shutdown`. Attempts under way
    /// then are abandoned: their leases run out and another instance
    /// delivers them again (receivers deduplicate on `webhook-id`).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::join!(
            self.clone().accept(shutdown.clone()),
            self.clone().poll(shutdown.clone()),
            self.gauges(shutdown),
        );
    }

    /// Moves new outbox events onto the schedule, leased to this instance,
    /// and starts delivering them.
    async fn accept(self: Arc<Self>, shutdown: CancellationToken) {
        let claim_every = (self.settings.claim_idle / 3).max(Duration::from_millis(50));
        let claim_idle_ms = u64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut last_claim: Option<tokio::time::Instant> = None;
        let mut idle = IDLE_READ.0;
        while !shutdown.is_cancelled() {
            let mut read = 0;
            if self.held.load(Ordering::Relaxed) < IN_FLIGHT {
                let claim = last_claim.is_none_or(|at| at.elapsed() >= claim_every);
                let polled = async {
                    let mut entries = Vec::new();
                    if claim {
                        last_claim = Some(tokio::time::Instant::now());
                        entries = self
                            .store
                            .outbox_reclaim(
                                OutboxGroup::Webhooks,
                                &self.consumer,
                                claim_idle_ms,
                                READ_LIMIT,
                            )
                            .await?;
                    }
                    entries.extend(
                        self.store
                            .outbox_read(OutboxGroup::Webhooks, &self.consumer, READ_LIMIT)
                            .await?,
                    );
                    Ok::<_, crate::store::StoreError>(entries)
                };
                match polled.await {
                    Ok(entries) => {
                        read = entries.len();
                        if let Err(e) = self.take(entries).await {
                            tracing::warn!(error = %e, "accepting webhook events failed; they will be read again");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the outbox for webhooks failed; retrying")
                    }
                }
            }
            let pause = match read {
                n if n >= READ_LIMIT => continue,
                0 => {
                    let pause = idle;
                    idle = (idle * 2).min(IDLE_READ.1);
                    pause
                }
                _ => {
                    idle = IDLE_READ.0;
                    idle
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Schedules the deliveries of `entries`, acknowledges them, and starts
    /// the deliveries.
    async fn take(
        self: &Arc<Self>,
        entries: Vec<OutboxEntry>,
    ) -> Result<(), crate::store::StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.clock.now().ms();
        let lease = now + ms(self.settings.claim_idle);
        let mut receipts = Vec::with_capacity(entries.len());
        let mut accepted = Vec::new();
        for entry in entries {
            receipts.push(entry.receipt);
            match entry.event {
                Ok(event) => {
                    if let Some(d) = self.delivery_for(&event) {
                        accepted.push((d, lease));
                    }
                }
                Err(e) => tracing::error!(error = %e, "undecodable outbox entry: no webhook"),
            }
        }
        self.store.webhook_schedule(&accepted).await?;
        self.store
            .outbox_ack(OutboxGroup::Webhooks, &receipts)
            .await?;
        for (d, _) in accepted {
            self.dispatch(d).await;
        }
        Ok(())
    }

    /// The delivery an audit event makes, if its type is selected and it
    /// has somewhere to go.
    fn delivery_for(&self, e: &AuditEvent) -> Option<Delivery> {
        let kind = WebhookType::of(e.event.kind);
        if !self.settings.events.contains(kind) {
            return None;
        }
        let url = match &e.webhook_url {
            // Admitted when the session was created; checked again in case
            // the allowed prefixes have changed since.
            Some(own) => match super::parse_session_url(own) {
                Ok(url) if self.settings.admits(&url) => url.to_string(),
                _ => {
                    metrics::counter!("synckairos_webhook_deliveries_total", "outcome" => "refused")
                        .increment(1);
                    tracing::warn!(session = %e.session_id, "session webhook_url no longer allowed: not delivered");
                    return None;
                }
            },
            None => self.settings.url.as_ref()?.to_string(),
        };
        let session = e.state_snapshot.as_ref().and_then(|s| s.decode().ok());
        let body = match event::body(e, session.as_ref()) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(error = %err, event = %e.id, "webhook body not rendered");
                return None;
            }
        };
        Some(Delivery {
            event_id: e.id.to_string(),
            session_id: e.session_id,
            kind: kind.name().to_owned(),
            url,
            body,
            attempts: 0,
            event_ms: e.event.at.ms(),
            last_error: None,
            failed_ms: None,
        })
    }

    /// Delivers what is due on the schedule: retries whose time has come,
    /// and deliveries whose instance's lease ran out.
    async fn poll(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let free = IN_FLIGHT.saturating_sub(self.held.load(Ordering::Relaxed));
            if free > 0 {
                let now = self.clock.now().ms();
                let lease = now + ms(self.settings.claim_idle);
                match self
                    .store
                    .webhook_claim(now, lease, free.min(READ_LIMIT))
                    .await
                {
                    Ok(due) => {
                        let full = due.len() >= free.min(READ_LIMIT);
                        for d in due {
                            self.dispatch(d).await;
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "polling the webhook schedule failed; retrying")
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Starts one delivery, or hands it back to the schedule when this
    /// instance holds too many (for its URL, or in all).
    async fn dispatch(self: &Arc<Self>, d: Delivery) {
        let slots = {
            let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            let endpoint = endpoints.entry(d.url.clone()).or_insert_with(|| Endpoint {
                held: 0,
                slots: Arc::new(Semaphore::new(PER_ENDPOINT)),
            });
            let room = endpoint.held < self.per_endpoint_held
                && self.held.load(Ordering::Relaxed) < IN_FLIGHT;
            if room {
                endpoint.held += 1;
                self.held.fetch_add(1, Ordering::Relaxed);
                Some(endpoint.slots.clone())
            } else {
                None
            }
        };
        let Some(slots) = slots else {
            let due = self.clock.now().ms() + ms(HAND_BACK);
            if let Err(e) = self.store.webhook_settle(&d, Settle::RetryAt(due)).await {
                tracing::warn!(error = %e, "handing a webhook back failed; its lease will bring it back");
            }
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(_slot) = slots.acquire().await {
                this.attempt(d.clone()).await;
            }
            this.release(&d.url);
        });
    }

    fn release(&self, url: &str) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(endpoint) = endpoints.get_mut(url) {
            endpoint.held -= 1;
            if endpoint.held == 0 {
                endpoints.remove(url);
            }
        }
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }

    /// One attempt, and its outcome recorded on the schedule.
    async fn attempt(&self, mut d: Delivery) {
        let timestamp = self.clock.now().ms() / 1000;
        let signature = self
            .settings
            .key
            .sign(&d.event_id, timestamp, d.body.as_bytes());
        let sent = self
            .http
            .post(&d.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.body.clone())
            .send()
            .await
            // Only the status matters; the body is not read.
            .map(|r| r.status());
        let now = self.clock.now().ms();
        d.attempts += 1;
        let gone = matches!(sent, Ok(reqwest::StatusCode::GONE));
        let (result, error) = match sent {
            Ok(status) if status.is_success() => ("2xx", None),
            Ok(status) => (
                if status.is_client_error() {
                    "4xx"
                } else {
                    "5xx"
                },
                Some(format!("HTTP {}", status.as_u16())),
            ),
            Err(e) if e.is_timeout() => (
                "timeout",
                Some(format!("no answer within {:?}", self.settings.timeout)),
            ),
            // Without the URL: a session's own may carry a token, and logs
            // and dead letters must not show it.
            Err(e) => (
                "error",
                Some(format!("not delivered: {}", causes(e.without_url()))),
            ),
        };
        metrics::counter!("synckairos_webhook_attempts_total", "result" => result).increment(1);
        self.health.record(error.is_none(), now);
        let outcome = match error {
            None => {
                metrics::histogram!("synckairos_webhook_latency_seconds")
                    .record((now - d.event_ms).max(0) as f64 / 1000.0);
                Settle::Delivered
            }
            Some(error) => {
                d.last_error = Some(error);
                match self.settings.schedule.get(d.attempts as usize - 1) {
                    Some(&delay) if !gone => Settle::RetryAt(now + ms(jittered(delay))),
                    _ => {
                        d.failed_ms = Some(now);
                        Settle::Dead
                    }
                }
            }
        };
        let label = match outcome {
            Settle::Delivered => "delivered",
            Settle::RetryAt(_) => "retried",
            Settle::Dead => "dead",
        };
        metrics::counter!("synckairos_webhook_deliveries_total", "outcome" => label).increment(1);
        if outcome == Settle::Dead {
            tracing::warn!(event = %d.event_id, kind = %d.kind, attempts = d.attempts,
                error = d.last_error.as_deref().unwrap_or(""), "webhook dead-lettered");
        }
        if let Err(e) = self.store.webhook_settle(&d, outcome).await {
            // The lease brings it back: delivered again, never lost.
            tracing::warn!(error = %e, event = %d.event_id, "recording a webhook attempt failed");
        }
    }

    /// Refreshes the schedule's gauges.
    async fn gauges(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Ok(stats) = self.store.webhook_stats().await {
                metrics::gauge!("synckairos_webhook_backlog").set(stats.scheduled as f64);
                metrics::gauge!("synckairos_webhook_dead_letters").set(stats.dead as f64);
                // Nothing left to deliver: nothing is failing any more.
                if stats.scheduled == 0 {
                    self.health.record(true, 0);
                }
            }
        }
    }
}

/// How many deliveries one URL may hold: a quarter of [`IN_FLIGHT`], but
/// no more than its attempt slots get through in half a lease even when
/// every attempt takes the whole timeout, so none waits in memory until its
/// lease lapses and another instance sends it too.
fn per_endpoint_held(settings: &WebhookSettings) -> usize {
    let timeouts_per_half_lease =
        (settings.claim_idle.as_millis() / 2 / settings.timeout.as_millis().max(1)) as usize;
    (PER_ENDPOINT * timeouts_per_half_lease).clamp(PER_ENDPOINT, PER_ENDPOINT_HELD_MAX)
}

/// An error with its causes (connection refused, DNS, TLS…), which its
/// own message leaves out.
fn causes(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `delay` plus up to a tenth of it, at random.
fn jittered(delay: Duration) -> Duration {
    let random = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    delay + delay / 10 * random / 1000
}
