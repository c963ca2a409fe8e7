//! The dedicated pub/sub connection. fred delivers messages on a small
//! broadcast channel (32 by default) that silently drops what a slow reader
//! misses, so one task does nothing but drain it into the instance's feed;
//! the same task resubscribes after a reconnect and tells the feed, because
//! updates may have been missed while the link was down.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::keys;
use crate::store::FeedEvent;

/// When the instance last heard its own probe, in epoch ms.
pub type LastProbe = Arc<AtomicI64>;

/// Forwards messages to `feed` until the client is dropped; records probe echoes.
pub async fn drain(
    subscriber: SubscriberClient,
    feed: broadcast::Sender<FeedEvent>,
    probe: String,
    heard: LastProbe,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(m) => {
                    if *m.channel == *probe {
                        heard.store(now_ms(), Ordering::Relaxed);
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
                    let _ = feed.send(FeedEvent::Resubscribed);
                }
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(server) => {
                    if let Err(e) = subscriber.resubscribe_all().await {
                        tracing::warn!(error = %e, "resubscribing after reconnect failed");
                    }
                    tracing::info!(%server, channels = subscriber.tracked_shard_channels().len(), "pub/sub reconnected and resubscribed");
                    let _ = feed.send(FeedEvent::Resubscribed);
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        }
    }
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
            .spublish::<(), _, _>(channel.as_str(), now_ms())
            .await
        {
            tracing::debug!(error = %e, "probe publish failed");
        }
        let silent = now_ms() - heard.load(Ordering::Relaxed);
        if silent > PROBE_TIMEOUT_MS {
            tracing::warn!(
                silent_ms = silent,
                "pub/sub probe not answered; forcing a reconnect"
            );
            let _ = subscriber.force_reconnection().await;
        }
    }
}

/// Wall-clock epoch ms (probe bookkeeping only; session time uses the engine's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
