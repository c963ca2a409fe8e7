//! The dedicated pub/sub connection. fred delivers messages on a small
//! broadcast channel (32 by default) that silently drops what a slow reader
//! misses, so one task does nothing but drain it into the instance's feed;
//! the same task resubscribes after a reconnect and tells the feed, because
//! updates may have been missed while the link was down. Deadline hints go
//! to the scheduler's [`Wakeups`] instead of the feed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::keys;
use super::wakeups::Wakeups;
use crate::clock::Clock;
use crate::store::FeedEvent;

/// When the instance last heard its own probe, in epoch ms.
pub type LastProbe = Arc<AtomicI64>;

/// Forwards messages to `feed` until the client is dropped; records probe echoes.
pub async fn drain(
    subscriber: SubscriberClient,
    feed: broadcast::Sender<FeedEvent>,
    probe: String,
    heard: LastProbe,
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
                    if *m.channel == *probe {
                        heard.store(wall_ms(), Ordering::Relaxed);
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
                    resubscribe(&subscriber).await;
                    tracing::info!(%server, channels = subscriber.tracked_shard_channels().len(), "pub/sub reconnected and resubscribed");
                    wakeups.poll_now();
                    let _ = feed.send(FeedEvent::Resubscribed);
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        }
    }
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

/// How often the probe is published.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Probe silence after which the link counts as broken (three probes missed).
pub const PROBE_TIMEOUT_MS: i64 = 3 * PROBE_INTERVAL.as_millis() as i64;

/// Publishes the probe every [`PROBE_INTERVAL`]; if none came back for
/// [`PROBE_TIMEOUT_MS`], forces the subscriber to reconnect, which
/// resubscribes and resynchronises local clients.
pub async fn probe(pool: Pool, subscriber: SubscriberClient, channel: String, heard: LastProbe) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = pool
            .next()
            .spublish::<(), _, _>(channel.as_str(), wall_ms())
            .await
        {
            tracing::debug!(error = %e, "probe publish failed");
        }
        let silent = wall_ms() - heard.load(Ordering::Relaxed);
        if silent > PROBE_TIMEOUT_MS {
            tracing::warn!(
                silent_ms = silent,
                "pub/sub probe not answered; forcing a reconnect"
            );
            let _ = subscriber.force_reconnection().await;
        }
    }
}
