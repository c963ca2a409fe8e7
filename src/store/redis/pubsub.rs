//! The dedicated pub/sub connection (one per primary, on a Cluster). fred
//! delivers messages on a small broadcast channel (32 by default) that
//! silently drops what a slow reader misses, so one task does nothing but
//! drain it into the instance's feed; the same task resubscribes after a
//! reconnect and tells the feed, because updates may have been missed while
//! the link was down. Deadline hints go to the scheduler's [`Wakeups`]
//! instead of the feed.
//!
//! Two ways a subscription dies without the connection failing, both
//! covered here: a Cluster slot moving to another primary (a failover or a
//! reshard: the old owner drops its shard subscribers with an unsolicited
//! SUNSUBSCRIBE, which fred swallows), and a server that stops delivering.
//! The first is caught when the command connections see the topology change
//! ([`follow_topology`]); both are caught by [`probe`]: the instance
//! publishes to itself on every bucket's slot and must hear every probe.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use futures_util::future::join_all;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::keys::{self, Layout};
use super::supervisor::Connections;
use super::wakeups::Wakeups;
use crate::clock::Clock;
use crate::store::FeedEvent;

/// The instance's own probe channels, one per bucket (so one in every slot
/// the deployment uses, hence on every primary that owns a bucket), and when
/// each was last heard, in epoch ms.
pub struct Probes {
    channels: Vec<String>,
    index: HashMap<String, usize>,
    heard: Vec<AtomicI64>,
}

impl Probes {
    pub fn new(layout: &Layout, instance: uuid::Uuid) -> Arc<Self> {
        let channels: Vec<String> = (0..layout.bucket_count())
            .map(|b| layout.probe_channel(b, instance))
            .collect();
        let index = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let now = wall_ms();
        let heard = channels.iter().map(|_| AtomicI64::new(now)).collect();
        Arc::new(Self {
            channels,
            index,
            heard,
        })
    }

    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// Records an echo; false if `channel` is not one of ours.
    fn heard(&self, channel: &str) -> bool {
        match self.index.get(channel) {
            Some(&i) => {
                self.heard[i].store(wall_ms(), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// How long the quietest probe has gone unheard.
    pub fn silent_ms(&self) -> i64 {
        let now = wall_ms();
        self.heard
            .iter()
            .map(|h| now - h.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

/// Forwards messages to `feed` until the client is dropped; records probe echoes.
pub async fn drain(
    subscriber: SubscriberClient,
    feed: broadcast::Sender<FeedEvent>,
    probes: Arc<Probes>,
    wakeups: Arc<Wakeups>,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    // Told once per outage, however many errors the reconnect attempts raise.
    let mut interrupted = false;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(m) => {
                    if probes.heard(&m.channel) {
                        continue;
                    }
                    if keys::is_hint_channel(&m.channel) {
                        match m.value.as_str().and_then(|at| at.parse::<i64>().ok()) {
                            Some(at) => wakeups.hint(at),
                            None => wakeups.poll_now(),
                        }
                        continue;
                    }
                    let Some(session_id) = keys::session_of_channel(&m.channel) else {
                        continue;
                    };
                    let Some(payload) = m.value.into_bytes() else {
                        continue;
                    };
                    // No receiver just means no local socket listens.
                    let _ = feed.send(FeedEvent::Message { session_id, payload });
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "pub/sub reader lagged; resynchronising local clients");
                    wakeups.poll_now();
                    let _ = feed.send(FeedEvent::Resubscribed);
                }
                Err(RecvError::Closed) => return,
            },
            failed = errors.recv() => match failed {
                Ok((e, server)) => {
                    if !interrupted {
                        interrupted = true;
                        tracing::warn!(error = %e, ?server, "pub/sub link lost; telling local clients");
                        let _ = feed.send(FeedEvent::Interrupted);
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(server) => {
                    interrupted = false;
                    resume(&subscriber, &wakeups, &feed).await;
                    tracing::info!(%server, channels = subscriber.tracked_shard_channels().len(), "pub/sub reconnected and resubscribed");
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Subscribes every channel again and has local sockets resynchronised:
/// what was published while the subscription was down never arrived here.
pub async fn resume(
    subscriber: &SubscriberClient,
    wakeups: &Wakeups,
    feed: &broadcast::Sender<FeedEvent>,
) {
    resubscribe(subscriber).await;
    wakeups.poll_now();
    let _ = feed.send(FeedEvent::Resubscribed);
}

/// Resubscribes every tracked shard channel, retrying with backoff until it
/// works: announcing a resubscription that failed would leave sockets silently
/// without updates. (fred's own `resubscribe_all` first sends a SUBSCRIBE
/// with no channels, which Redis rejects.) Channels are grouped by hash tag,
/// so each SSUBSCRIBE stays within one slot, as Redis Cluster requires.
async fn resubscribe(subscriber: &SubscriberClient) {
    let mut delay = Duration::from_millis(50);
    loop {
        let mut by_tag: HashMap<String, Vec<String>> = HashMap::new();
        for channel in subscriber.tracked_shard_channels() {
            let channel = channel.to_string();
            by_tag
                .entry(keys::hash_tag(&channel).to_owned())
                .or_default()
                .push(channel);
        }
        let mut failed = None;
        for channels in by_tag.into_values() {
            if let Err(e) = subscriber.ssubscribe(channels).await {
                failed = Some(e);
                break;
            }
        }
        let Some(e) = failed else {
            return;
        };
        tracing::warn!(error = %e, retry_in = ?delay, "resubscribing after reconnect failed");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Wall-clock epoch ms, for probe bookkeeping.
pub fn wall_ms() -> i64 {
    Clock::System.now().ms()
}

/// How often the probes are published.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Probe silence after which a link counts as broken (three probes missed).
pub const PROBE_TIMEOUT_MS: i64 = 3 * PROBE_INTERVAL.as_millis() as i64;

/// Publishes every probe each [`PROBE_INTERVAL`]; if one has not come back
/// for [`PROBE_TIMEOUT_MS`], forces the subscriber to reconnect (on a
/// Cluster, to the slots' current owners), which resubscribes and
/// resynchronises local clients.
pub async fn probe(pool: Connections, subscriber: SubscriberClient, probes: Arc<Probes>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let client = pool.next();
        let sent = probes
            .channels()
            .iter()
            .map(|channel| client.spublish::<(), _, _>(channel.as_str(), wall_ms()));
        for published in join_all(sent).await {
            if let Err(e) = published {
                tracing::debug!(error = %e, "probe publish failed");
            }
        }
        let silent = probes.silent_ms();
        if silent > PROBE_TIMEOUT_MS {
            tracing::warn!(
                silent_ms = silent,
                "pub/sub probe not answered; forcing a reconnect"
            );
            let _ = subscriber.force_reconnection().await;
        }
    }
}

/// Cluster only: when a command connection learns that slots moved (its
/// MOVED answers make fred re-read the topology), the subscriber re-reads it
/// too; if the owner of a slot this deployment uses changed (its buckets'
/// `slots`), every channel is subscribed again, each on its slot's owner
/// now, and every local socket gets a STATE_SYNC (updates published on the
/// new owner before that were not delivered here). A reshard moves slots
/// one at a time, so changes are acted on once they pause. Every
/// [`TOPOLOGY_RECHECK`] all connections re-read the map anyway.
pub async fn follow_topology(
    pool: Connections,
    subscriber: SubscriberClient,
    slots: Vec<u16>,
    feed: broadcast::Sender<FeedEvent>,
    wakeups: Arc<Wakeups>,
) {
    // Listeners on every client (built again when one was replaced).
    let listen = || -> Vec<_> {
        pool.all()
            .iter()
            .map(|c| c.cluster_change_rx())
            .chain(std::iter::once(subscriber.cluster_change_rx()))
            .collect()
    };
    let mut changes = listen();
    let owners = |subscriber: &SubscriberClient| -> Vec<Option<String>> {
        let routing = subscriber.cached_cluster_state();
        slots
            .iter()
            .map(|&slot| {
                routing
                    .as_ref()
                    .and_then(|r| r.get_server(slot))
                    .map(|s| s.to_string())
            })
            .collect()
    };
    // The owners our subscriptions were last made with.
    let mut known = owners(&subscriber);
    let mut recheck = tokio::time::interval(TOPOLOGY_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut stale = false;
        let next = changes.iter_mut().map(|rx| Box::pin(rx.recv()));
        tokio::select! {
            (changed, _, _) = futures_util::future::select_all(next) => {
                if matches!(changed, Err(RecvError::Closed)) {
                    stale = true;
                }
            }
            _ = recheck.tick() => {
                // Re-read the map on every connection now and then, so each
                // connects to a node soon after it gains slots: one that
                // follows an ASK to a node it has no connection to is lost
                // (see `supervisor`), and one that only ever sees our few
                // slots may not hear of a new node otherwise. Unchanged
                // maps cost one CLUSTER SLOTS each.
                let syncs = pool.all().into_iter().map(|c| async move {
                    tokio::time::timeout(TOPOLOGY_RECHECK, c.sync_cluster()).await
                });
                join_all(syncs).await;
            }
        }
        if stale {
            changes = listen();
            continue;
        }
        // Wait for a pause in the changes (at most TOPOLOGY_SETTLE_MAX).
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(TOPOLOGY_SETTLE).await;
            let mut more = false;
            for rx in &mut changes {
                while !matches!(
                    rx.try_recv(),
                    Err(TryRecvError::Empty | TryRecvError::Closed)
                ) {
                    more = true;
                }
            }
            if !more || started.elapsed() >= TOPOLOGY_SETTLE_MAX {
                break;
            }
        }
        if let Err(e) = subscriber.sync_cluster().await {
            tracing::warn!(error = %e, "re-reading the cluster topology failed");
        }
        let now = owners(&subscriber);
        let moved = known.iter().zip(&now).filter(|(k, n)| k != n).count();
        if moved == 0 {
            continue;
        }
        known = now;
        resume(&subscriber, &wakeups, &feed).await;
        tracing::info!(
            buckets_moved = moved,
            channels = subscriber.tracked_shard_channels().len(),
            "cluster slots of our buckets moved; resubscribed"
        );
    }
}

/// How often every connection re-reads the slot map regardless.
const TOPOLOGY_RECHECK: Duration = Duration::from_secs(2);

/// Quiet time after a topology change before acting on it, and the longest
/// a stream of changes (a reshard) may postpone that.
const TOPOLOGY_SETTLE: Duration = Duration::from_millis(200);
const TOPOLOGY_SETTLE_MAX: Duration = Duration::from_secs(2);
