//! The per-instance hub of local WebSocket subscribers.
//!
//! The hub subscribes to a session's channel when its first local socket
//! arrives and unsubscribes when the last one leaves. Every published update
//! is decoded once and serialised once per instance (derived fields computed
//! at forwarding time); the same bytes then go to every local socket through a
//! bounded queue per socket. A socket whose queue is full is kicked, never
//! buffered without bound. When the subscription link was lost (or the feed
//! lagged), every local socket gets a fresh STATE_SYNC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, Session, SessionId, Timestamp};
use crate::engine::{Engine, TimeoutNotice, Update};
use crate::store::{FeedEvent, StoreError};

/// An outbound WebSocket frame, serialised once and shared by every socket.
#[derive(Clone, Debug)]
pub enum Frame {
    Text {
        text: Utf8Bytes,
        /// The session version the frame describes, and how it is ordered.
        version: Option<(u64, Rule)>,
    },
    /// Close the socket with this code and reason after what is queued.
    Close { code: u16, reason: &'static str },
}

/// How a versioned frame is ordered against what its client already got, so
/// that each client sees `state.version` strictly increasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Only if newer; becomes the client's version (STATE_UPDATE, first STATE_SYNC).
    Advance,
    /// Unless older; becomes the client's version (a STATE_SYNC after a lost
    /// link or on RECONNECT: the full state again, even if unchanged).
    Resync,
    /// Unless older; leaves the client's version (TIMEOUT, which accompanies
    /// the STATE_UPDATE of the same version).
    Attached,
}

impl Rule {
    /// Whether a frame of `version` goes to a client at `last`, and the
    /// client's version afterwards.
    pub fn admit(self, version: u64, last: u64) -> Option<u64> {
        match self {
            Rule::Advance if version > last => Some(version),
            Rule::Resync if version >= last => Some(version),
            Rule::Attached if version >= last => Some(last),
            _ => None,
        }
    }
}

/// A local socket's membership in the hub.
pub struct Subscription {
    pub client: u64,
    /// Frames for this socket, in order; bounded.
    pub frames: mpsc::Receiver<Frame>,
    /// Cancelled when the socket fell behind and must close.
    pub kicked: CancellationToken,
}

struct Member {
    frames: mpsc::Sender<Frame>,
    kicked: CancellationToken,
}

/// Local subscribers by session.
pub struct Hub {
    engine: Arc<Engine>,
    members: Mutex<HashMap<SessionId, HashMap<u64, Member>>>,
    /// Serialises subscribe/unsubscribe decisions, so a join and a leave of
    /// the same session cannot reorder SSUBSCRIBE and SUNSUBSCRIBE.
    membership: tokio::sync::Mutex<()>,
    next_client: AtomicU64,
    queue: usize,
}

impl Hub {
    /// A hub whose sockets each queue at most `queue` frames.
    pub fn new(engine: Arc<Engine>, queue: usize) -> Arc<Self> {
        Arc::new(Self {
            engine,
            members: Mutex::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
            next_client: AtomicU64::new(1),
            queue: queue.max(1),
        })
    }

    fn members(&self) -> MutexGuard<'_, HashMap<SessionId, HashMap<u64, Member>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Local sockets watching `session`.
    pub fn watchers(&self, session: SessionId) -> usize {
        self.members().get(&session).map_or(0, HashMap::len)
    }

    /// Adds a local socket; subscribes the instance to the session's channel if
    /// it is the first. Subscribing happens before any state is read, so no
    /// update can fall between the STATE_SYNC and the first STATE_UPDATE.
    pub async fn join(&self, session: SessionId) -> Result<Subscription, StoreError> {
        let (tx, rx) = mpsc::channel(self.queue);
        let kicked = CancellationToken::new();
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        let _membership = self.membership.lock().await;
        let first = {
            let mut members = self.members();
            let local = members.entry(session).or_default();
            local.insert(
                client,
                Member {
                    frames: tx,
                    kicked: kicked.clone(),
                },
            );
            local.len() == 1
        };
        if first && let Err(e) = self.engine.store().subscribe(session).await {
            self.members().remove(&session);
            return Err(e);
        }
        Ok(Subscription {
            client,
            frames: rx,
            kicked,
        })
    }

    /// Removes a local socket; unsubscribes if it was the last.
    pub async fn leave(&self, session: SessionId, client: u64) {
        let _membership = self.membership.lock().await;
        let last = {
            let mut members = self.members();
            let Some(local) = members.get_mut(&session) else {
                return;
            };
            local.remove(&client);
            let empty = local.is_empty();
            if empty {
                members.remove(&session);
            }
            empty
        };
        if last && let Err(e) = self.engine.store().unsubscribe(session).await {
            tracing::warn!(session_id = %session, error = %e, "unsubscribe failed");
        }
    }

    /// A STATE_SYNC of the session as stored now, or `None` if it does not exist.
    pub async fn state_sync(
        &self,
        session: SessionId,
        rule: Rule,
    ) -> Result<Option<Frame>, StoreError> {
        let Some(state) = self.engine.store().get(session).await? else {
            return Ok(None);
        };
        let now = self.engine.clock().now();
        Ok(Some(state_frame(
            "STATE_SYNC",
            &state,
            now,
            rule,
            view_at(&state, now),
        )))
    }

    /// Forwards the instance's feed to local sockets until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut feed = self.engine.store().feed();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = feed.recv() => event,
            };
            match event {
                Ok(FeedEvent::Message {
                    session_id,
                    payload,
                }) => {
                    metrics::counter!("synckairos_pubsub_messages_received_total").increment(1);
                    self.forward(session_id, &payload);
                }
                Ok(FeedEvent::Interrupted) => self.interrupted_all(),
                Ok(FeedEvent::Resubscribed) => self.resync_all().await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "update feed lagged; resynchronising local sockets");
                    self.resync_all().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// One published message: decoded once, serialised once, sent to every
    /// local socket. Messages nobody here watches are not even decoded (so
    /// the publish→receive delay is measured on the ones that matter).
    fn forward(&self, session: SessionId, payload: &[u8]) {
        if self.watchers(session) == 0 {
            return;
        }
        let now = self.engine.clock().now();
        let update = Update::decode(payload);
        if let Ok(Update::State { published_ms, .. } | Update::Deleted { published_ms, .. }) =
            &update
        {
            // Across machines this includes their clock skew (NTP: ~1 ms).
            let delay_ms = (now.ms() - published_ms).max(0);
            metrics::histogram!("synckairos_pubsub_delay_seconds").record(delay_ms as f64 / 1000.0);
        }
        let frames = match update {
            Ok(Update::State {
                state, timeouts, ..
            }) => match state.decode() {
                Ok(state) => update_frames(&state, &timeouts, now),
                Err(e) => {
                    tracing::warn!(session_id = %session, error = %e, "undecodable state in update");
                    return;
                }
            },
            Ok(Update::Deleted { .. }) => deleted_frames(session, now),
            Err(e) => {
                tracing::warn!(session_id = %session, error = %e, "undecodable update");
                return;
            }
        };
        self.deliver(session, &frames);
    }

    /// Queues frames for every local socket of `session`; a socket whose queue
    /// is full is kicked (and counted) instead of buffered.
    pub fn deliver(&self, session: SessionId, frames: &[Frame]) {
        let members = self.members();
        let Some(local) = members.get(&session) else {
            return;
        };
        for member in local.values() {
            if member.kicked.is_cancelled() {
                continue;
            }
            for frame in frames {
                if member.frames.try_send(frame.clone()).is_err() {
                    metrics::counter!("synckairos_ws_slow_client_disconnects_total").increment(1);
                    member.kicked.cancel();
                    break;
                }
            }
        }
    }

    /// Queues one frame for one local socket (the STATE_SYNC it asked for).
    pub fn deliver_to(&self, session: SessionId, client: u64, frame: Frame) {
        let members = self.members();
        if let Some(member) = members.get(&session).and_then(|local| local.get(&client))
            && member.frames.try_send(frame).is_err()
        {
            metrics::counter!("synckairos_ws_slow_client_disconnects_total").increment(1);
            member.kicked.cancel();
        }
    }

    /// Tells every local socket that updates may not arrive until the
    /// STATE_SYNC that follows the link's return (FEED_INTERRUPTED, an
    /// extension: a client can show its clocks as unconfirmed meanwhile).
    fn interrupted_all(&self) {
        let now = self.engine.clock().now().ms();
        let sessions: Vec<SessionId> = self.members().keys().copied().collect();
        for session in sessions {
            let frame = text_frame(
                json!({"type": "FEED_INTERRUPTED", "sessionId": session, "timestamp": now}),
                None,
            );
            self.deliver(session, &[frame]);
        }
    }

    /// Sends every local socket a fresh STATE_SYNC (after a lost link or lag);
    /// a session deleted meanwhile gets its SESSION_DELETED and close instead.
    /// Reads that fail are retried a few times (the link just came back).
    async fn resync_all(&self) {
        let mut sessions: Vec<SessionId> = self.members().keys().copied().collect();
        for attempt in 0..RESYNC_ATTEMPTS {
            let mut failed = Vec::new();
            for session in sessions {
                match self.state_sync(session, Rule::Resync).await {
                    Ok(Some(frame)) => self.deliver(session, &[frame]),
                    Ok(None) => {
                        let now = self.engine.clock().now();
                        self.deliver(session, &deleted_frames(session, now));
                    }
                    Err(e) => {
                        tracing::warn!(session_id = %session, error = %e, attempt, "resync failed");
                        failed.push(session);
                    }
                }
            }
            if failed.is_empty() {
                return;
            }
            sessions = failed;
            tokio::time::sleep(RESYNC_RETRY).await;
        }
    }
}

/// How often a failed resync read is tried, and how long apart.
const RESYNC_ATTEMPTS: u32 = 5;
const RESYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// SESSION_DELETED, then close 1000.
fn deleted_frames(session: SessionId, now: Timestamp) -> Vec<Frame> {
    vec![
        text_frame(
            json!({"type": "SESSION_DELETED", "sessionId": session, "timestamp": now.ms()}),
            None,
        ),
        Frame::Close {
            code: 1000,
            reason: "session deleted",
        },
    ]
}

/// The frames of one state update: STATE_UPDATE, then a TIMEOUT per timeout,
/// all carrying the same view, derived once.
fn update_frames(state: &Session, timeouts: &[TimeoutNotice], now: Timestamp) -> Vec<Frame> {
    let view = view_at(state, now);
    let mut frames = vec![state_frame(
        "STATE_UPDATE",
        state,
        now,
        Rule::Advance,
        view.clone(),
    )];
    for t in timeouts {
        frames.push(text_frame(
            json!({
                "type": "TIMEOUT",
                "sessionId": state.session_id,
                "timestamp": now.ms(),
                "participant_id": t.participant_id,
                "action_on_timeout": t.action_on_timeout,
                "state": view.clone(),
            }),
            Some((state.version, Rule::Attached)),
        ));
    }
    frames
}

/// The wire view of `state` at `now`, as JSON.
fn view_at(state: &Session, now: Timestamp) -> serde_json::Value {
    serde_json::to_value(domain::view(state, now)).unwrap_or_default()
}

/// A STATE_SYNC or STATE_UPDATE carrying `view` (the state with derived fields at `now`).
fn state_frame(
    kind: &str,
    state: &Session,
    now: Timestamp,
    rule: Rule,
    view: serde_json::Value,
) -> Frame {
    text_frame(
        json!({
            "type": kind,
            "sessionId": state.session_id,
            "timestamp": now.ms(),
            "state": view,
        }),
        Some((state.version, rule)),
    )
}

/// Serialises a message once.
fn text_frame(message: serde_json::Value, version: Option<(u64, Rule)>) -> Frame {
    Frame::Text {
        text: Utf8Bytes::from(message.to_string()),
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn each_client_sees_versions_strictly_increasing() {
        assert_eq!(Rule::Advance.admit(5, 4), Some(5));
        assert_eq!(Rule::Advance.admit(5, 5), None, "no duplicate update");
        assert_eq!(Rule::Advance.admit(4, 5), None, "never back");
        assert_eq!(
            Rule::Resync.admit(5, 5),
            Some(5),
            "a requested sync is sent again"
        );
        assert_eq!(Rule::Resync.admit(4, 5), None);
        assert_eq!(
            Rule::Attached.admit(5, 5),
            Some(5),
            "TIMEOUT follows its update"
        );
        assert_eq!(
            Rule::Attached.admit(6, 5),
            Some(5),
            "and does not consume the version"
        );
    }
}
