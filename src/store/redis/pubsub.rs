//! The dedicated pub/sub connection. fred delivers messages on a small
//! broadcast channel (32 by default) that silently drops what a slow reader
//! misses, so one task does nothing but drain it into the instance's feed;
//! the same task resubscribes after a reconnect and tells the feed, because
//! updates may have been missed while the link was down.

use fred::clients::SubscriberClient;
use fred::interfaces::EventInterface;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::keys;
use crate::store::FeedEvent;

/// Forwards messages to `feed` until the client is dropped.
pub async fn drain(subscriber: SubscriberClient, feed: broadcast::Sender<FeedEvent>) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(m) => {
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
