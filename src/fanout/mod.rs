//! The per-instance hub of local WebSocket subscribers.
//!
//! The hub subscribes to a session's channel when its first local socket
//! arrives and unsubscribes when the last one leaves. Every published update
//! is decoded once, serialised once and encoded as WebSocket frames once per
//! instance (derived fields computed at forwarding time); writer shards
//! (`shard`) then write the same bytes to every local socket. A socket that
//! falls behind gets only the newest state (`conn`); one too far behind even
//! for that is closed with 1013. When the subscription link was lost (or the
//! feed lagged), every local socket gets a fresh STATE_SYNC.

pub mod conn;
pub mod frame;
mod shard;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use conn::{Conn, Frame, Kind, Rule};
use shard::Job;

use crate::domain::{self, Session, SessionId, Timestamp};
use crate::engine::{Engine, TimeoutNotice, Update};
use crate::store::{FeedEvent, StoreError};

/// A session's local sockets: how many in each shard.
struct Local {
    per_shard: Vec<u32>,
}

impl Local {
    fn watchers(&self) -> usize {
        self.per_shard.iter().map(|n| *n as usize).sum()
    }
}

/// Local subscribers by session.
pub struct Hub {
    engine: Arc<Engine>,
    sessions: Mutex<HashMap<SessionId, Local>>,
    /// Serialises subscribe/unsubscribe decisions, so a join and a leave of
    /// the same session cannot reorder SSUBSCRIBE and SUNSUBSCRIBE.
    membership: tokio::sync::Mutex<()>,
    next_client: AtomicU64,
    shards: Vec<mpsc::UnboundedSender<Job>>,
    queue: usize,
}

impl Hub {
    /// A hub whose sockets each let at most `queue` frames that must arrive
    /// wait, pinged every `ping_interval`. Starts the writer shards: two per
    /// core, so a large audience is written by every core.
    pub fn new(engine: Arc<Engine>, queue: usize, ping_interval: Duration) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let shards = (0..(2 * cores).min(16))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(shard::run(rx, ping_interval));
                tx
            })
            .collect();
        Arc::new(Self {
            engine,
            sessions: Mutex::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
            next_client: AtomicU64::new(1),
            shards,
            queue: queue.max(1),
        })
    }

    /// The instance's clock (timestamps of the messages).
    pub fn clock(&self) -> &crate::clock::Clock {
        self.engine.clock()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Local>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Local sockets watching `session`.
    pub fn watchers(&self, session: SessionId) -> usize {
        self.sessions().get(&session).map_or(0, Local::watchers)
    }

    fn shard_of(&self, conn: &Conn) -> usize {
        (conn.client / shard::SLICES as u64) as usize % self.shards.len()
    }

    fn job(&self, shard: usize, job: Job) {
        // A shard only stops with the runtime.
        let _ = self.shards[shard].send(job);
    }

    /// A connection for a socket of `session`, not yet joined.
    pub fn connection(&self, session: SessionId, stream: tokio::net::TcpStream) -> Arc<Conn> {
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        Arc::new(Conn::new(client, session, stream, self.queue))
    }

    /// Adds a local socket; subscribes the instance to the session's channel if
    /// it is the first. Subscribing happens before any state is read, so no
    /// update can fall between the STATE_SYNC and the first STATE_UPDATE.
    pub async fn join(&self, conn: &Arc<Conn>) -> Result<(), StoreError> {
        let session = conn.session;
        let shard = self.shard_of(conn);
        let _membership = self.membership.lock().await;
        let first = {
            let mut sessions = self.sessions();
            let local = sessions.entry(session).or_insert_with(|| Local {
                per_shard: vec![0; self.shards.len()],
            });
            local.per_shard[shard] += 1;
            self.job(shard, Job::Join(conn.clone()));
            local.watchers() == 1
        };
        if first && let Err(e) = self.engine.store().subscribe(session).await {
            self.forget(conn, shard);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a local socket; unsubscribes if it was the last.
    pub async fn leave(&self, conn: &Arc<Conn>) {
        let _membership = self.membership.lock().await;
        if self.forget(conn, self.shard_of(conn))
            && let Err(e) = self.engine.store().unsubscribe(conn.session).await
        {
            tracing::warn!(session_id = %conn.session, error = %e, "unsubscribe failed");
        }
    }

    /// Takes a socket out of its shard and the counts; true if it was the session's last.
    fn forget(&self, conn: &Arc<Conn>, shard: usize) -> bool {
        let mut sessions = self.sessions();
        let Some(local) = sessions.get_mut(&conn.session) else {
            return false;
        };
        local.per_shard[shard] -= 1;
        self.job(shard, Job::Leave(conn.clone()));
        let last = local.watchers() == 0;
        if last {
            sessions.remove(&conn.session);
        }
        last
    }

    /// Closes every local socket (server shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for shard in 0..self.shards.len() {
            self.job(shard, Job::CloseAll(code, reason));
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
        Ok(Some(state_frame("STATE_SYNC", &state, now, rule)))
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
        let frame = match update {
            Ok(Update::State {
                state, timeouts, ..
            }) => match state.decode() {
                Ok(state) => update_frame(&state, &timeouts, now),
                Err(e) => {
                    tracing::warn!(session_id = %session, error = %e, "undecodable state in update");
                    return;
                }
            },
            Ok(Update::Deleted { .. }) => deleted_frame(session, now),
            Err(e) => {
                tracing::warn!(session_id = %session, error = %e, "undecodable update");
                return;
            }
        };
        self.deliver(session, frame);
    }

    /// Hands `frame` to the shards that hold sockets of `session`.
    fn deliver(&self, session: SessionId, frame: Frame) {
        let frame = Arc::new(frame);
        let sessions = self.sessions();
        let Some(local) = sessions.get(&session) else {
            return;
        };
        for (shard, n) in local.per_shard.iter().enumerate() {
            if *n > 0 {
                self.job(shard, Job::Deliver(session, frame.clone()));
            }
        }
    }

    /// Tells every local socket that updates may not arrive until the
    /// STATE_SYNC that follows the link's return (FEED_INTERRUPTED, an
    /// extension: a client can show its clocks as unconfirmed meanwhile).
    fn interrupted_all(&self) {
        let now = self.engine.clock().now().ms();
        let sessions: Vec<SessionId> = self.sessions().keys().copied().collect();
        for session in sessions {
            let message =
                json!({"type": "FEED_INTERRUPTED", "sessionId": session, "timestamp": now});
            self.deliver(session, message_frame(&message, None, Kind::State));
        }
    }

    /// Sends every local socket a fresh STATE_SYNC (after a lost link or lag);
    /// a session deleted meanwhile gets its SESSION_DELETED and close instead.
    /// Reads that fail are retried a few times (the link just came back).
    async fn resync_all(&self) {
        let mut sessions: Vec<SessionId> = self.sessions().keys().copied().collect();
        for attempt in 0..RESYNC_ATTEMPTS {
            let mut failed = Vec::new();
            for session in sessions {
                match self.state_sync(session, Rule::Resync).await {
                    Ok(Some(frame)) => self.deliver(session, frame),
                    Ok(None) => {
                        let now = self.engine.clock().now();
                        self.deliver(session, deleted_frame(session, now));
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
const RESYNC_RETRY: Duration = Duration::from_millis(200);

/// SESSION_DELETED, then close 1000: must arrive, and ends the socket.
fn deleted_frame(session: SessionId, now: Timestamp) -> Frame {
    let message = json!({"type": "SESSION_DELETED", "sessionId": session, "timestamp": now.ms()});
    let bytes = [
        frame::text(&message.to_string()),
        frame::close(1000, "session deleted"),
    ]
    .concat();
    Frame {
        bytes: bytes.into(),
        version: None,
        attached_at: None,
        messages: 1,
        kind: Kind::Last,
    }
}

/// One state update: STATE_UPDATE, then a TIMEOUT per timeout, all carrying
/// the same view, derived once, and written together. With a TIMEOUT it must
/// arrive; without, a newer state may replace it.
fn update_frame(state: &Session, timeouts: &[TimeoutNotice], now: Timestamp) -> Frame {
    let view = view_at(state, now);
    let update = envelope("STATE_UPDATE", state, now, &view).to_string();
    let attached: Vec<String> = timeouts
        .iter()
        .map(|t| {
            json!({
                "type": "TIMEOUT",
                "sessionId": state.session_id,
                "timestamp": now.ms(),
                "participant_id": t.participant_id,
                "action_on_timeout": t.action_on_timeout,
                "state": view,
            })
            .to_string()
        })
        .collect();
    let first = frame::text(&update);
    Frame {
        attached_at: (!attached.is_empty()).then_some(first.len()),
        bytes: frame::texts(
            std::iter::once(update.as_str()).chain(attached.iter().map(String::as_str)),
        ),
        version: Some((state.version, Rule::Advance)),
        messages: 1 + attached.len().min(254) as u8,
        kind: if attached.is_empty() {
            Kind::State
        } else {
            Kind::Keep
        },
    }
}

/// The wire view of `state` at `now`, as JSON.
fn view_at(state: &Session, now: Timestamp) -> serde_json::Value {
    serde_json::to_value(domain::view(state, now)).unwrap_or_default()
}

fn envelope(
    kind: &str,
    state: &Session,
    now: Timestamp,
    view: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "type": kind,
        "sessionId": state.session_id,
        "timestamp": now.ms(),
        "state": view,
    })
}

/// A STATE_SYNC of `state` at `now`.
fn state_frame(kind: &str, state: &Session, now: Timestamp, rule: Rule) -> Frame {
    let message = envelope(kind, state, now, &view_at(state, now));
    message_frame(&message, Some((state.version, rule)), Kind::State)
}

/// One message, serialised and encoded once.
fn message_frame(message: &serde_json::Value, version: Option<(u64, Rule)>, kind: Kind) -> Frame {
    Frame {
        bytes: frame::text(&message.to_string()),
        version,
        attached_at: None,
        messages: 1,
        kind,
    }
}
