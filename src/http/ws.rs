//! `/ws?sessionId=<uuid>`: the WebSocket protocol of API.md.
//!
//! Each socket is one task looping over: frames from the hub (filtered so the
//! client sees strictly increasing versions), client messages (PING,
//! RECONNECT), the heartbeat, and the two reasons to close early (kicked for
//! falling behind, server shutdown).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::extract::query_param;
use super::ratelimit::client_ip;
use crate::auth::Caller;
use crate::domain::SessionId;
use crate::fanout::{Frame, Hub, Rule};

/// Largest inbound frame or message (API.md "Limits").
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Per-socket buffers stay small so idle sockets are cheap (client messages
/// are tiny; the read buffer grows for larger frames up to the cap); the write buffer
/// is capped so a stuck client cannot hold much memory.
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 4 * 1024;
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// WebSocket settings and the instance's connection accounting.
pub struct WsLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub max_per_session: usize,
    pub ping_interval: Duration,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Cancelled at shutdown: every socket closes with 1001.
    pub shutdown: CancellationToken,
}

impl WsLimits {
    pub fn new(
        max_connections: usize,
        max_per_ip: usize,
        max_per_session: usize,
        ping_interval: Duration,
    ) -> Self {
        Self {
            max_connections,
            max_per_ip,
            max_per_session,
            ping_interval,
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Takes a connection slot, or says which limit is reached (metric label, close reason).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, (&'static str, &'static str)> {
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(("instance", "too many connections on this instance"));
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(per_ip);
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(("per_ip", "too many connections from this address"));
        }
        *n += 1;
        metrics::gauge!("synckairos_ws_connections").increment(1.0);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

/// A taken connection slot, given back when the socket ends.
struct Slot {
    limits: Arc<WsLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.connections.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        metrics::gauge!("synckairos_ws_connections").decrement(1.0);
    }
}

/// GET /ws?sessionId=<uuid>
pub async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    // Credentials are checked before the upgrade (the extractor answers 401
    // for a bad token, this 403 for another session's), never on a socket.
    let session = session_param(query.as_deref());
    if let Ok(id) = session {
        caller.read(id)?;
    }
    let expires = caller.expires_at();
    let ws = ws.map_err(|rejection| {
        ApiError::field(
            "Upgrade",
            format!(
                "must be a WebSocket upgrade request ({})",
                rejection.body_text()
            ),
        )
    })?;
    let ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES);
    // Behind a trusted proxy every socket comes from the proxy's address:
    // count the client's instead.
    let ip = client_ip(&headers, Some(peer.ip()), app.limits.trust_proxy).unwrap_or(peer.ip());
    let admitted = app.ws.admit(ip);
    let tracker = app.ws_tasks.clone();
    Ok(ws.on_upgrade(move |socket| {
        tracker.track_future(async move {
            let session = match session {
                Ok(session) => session,
                Err(reason) => return close_now(socket, 1008, reason).await,
            };
            let slot = match admitted {
                Ok(slot) => slot,
                Err((label, reason)) => {
                    metrics::counter!("synckairos_ws_rejected_total", "reason" => label)
                        .increment(1);
                    return close_now(socket, 1013, reason).await;
                }
            };
            if app.hub.watchers(session) >= app.ws.max_per_session {
                metrics::counter!("synckairos_ws_rejected_total", "reason" => "per_session")
                    .increment(1);
                return close_now(socket, 1013, "too many connections for this session").await;
            }
            serve(socket, app, session, expires, slot).await;
        })
    }))
}

/// The `sessionId` query parameter, or why it is unusable.
fn session_param(query: Option<&str>) -> Result<SessionId, &'static str> {
    let value = query_param(query, "sessionId").ok_or("missing sessionId query parameter")?;
    SessionId::parse(value).ok_or("sessionId must be a UUID")
}

async fn close_now(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Why a socket's loop ended.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer closed or the connection broke: nothing more to send.
    Gone,
}

/// Serves one socket until it ends; `expires` (the token's `exp`) closes it
/// with 4001 so a revoked-by-expiry client cannot keep watching. The `slot`
/// is given back before the hub is left, so a client that sees the watcher
/// count drop can reconnect at once.
async fn serve(
    socket: WebSocket,
    app: AppState,
    session: SessionId,
    expires: Option<SystemTime>,
    slot: Slot,
) {
    let (mut sink, mut stream) = socket.split();
    let clock = app.engine.clock().clone();
    let connected =
        json!({"type": "CONNECTED", "sessionId": session, "timestamp": clock.now().ms()});
    if sink.send(text(connected)).await.is_err() {
        return;
    }
    let mut sub = match app.hub.join(session).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(session_id = %session, error = %e, "cannot subscribe");
            let _ = close(&mut sink, 1011, "state store unavailable").await;
            return;
        }
    };
    // Subscribed first, then the state: an update racing with this sync is
    // ordered by the version filter below.
    match app.hub.state_sync(session, Rule::Advance).await {
        Ok(Some(frame)) => app.hub.deliver_to(session, sub.client, frame),
        Ok(None) => {}
        Err(e) => tracing::warn!(session_id = %session, error = %e, "initial STATE_SYNC failed"),
    }

    let mut last_version = 0u64;
    let mut ping = tokio::time::interval(app.ws.ping_interval);
    ping.tick().await; // the first tick is immediate
    let mut unanswered_pings = 0u32;
    let expiry = async {
        match expires {
            Some(at) => {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(left).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let end = loop {
        tokio::select! {
            _ = app.ws.shutdown.cancelled() => break End::Close(1001, "server shutting down"),
            _ = &mut expiry => break End::Close(4001, "token expired"),
            _ = sub.kicked.cancelled() => break KICKED,
            frame = sub.frames.recv() => match frame {
                Some(Frame::Text { text, version }) => {
                    // Per client, versions only go up (an update can race with
                    // a STATE_SYNC): see `Rule`.
                    if let Some((v, rule)) = version {
                        match rule.admit(v, last_version) {
                            Some(now_at) => last_version = now_at,
                            None => continue,
                        }
                    }
                    if let Err(end) = send(&mut sink, Message::Text(text), &sub.kicked).await {
                        break end;
                    }
                    metrics::counter!("synckairos_ws_messages_sent_total").increment(1);
                }
                Some(Frame::Close { code, reason }) => break End::Close(code, reason),
                None => break End::Gone,
            },
            inbound = stream.next() => match inbound {
                Some(Ok(Message::Text(t))) => {
                    unanswered_pings = 0;
                    if let Some(reply) = answer(&app.hub, session, sub.client, t.as_str(), &clock).await
                        && let Err(end) = send(&mut sink, text(reply), &sub.kicked).await
                    {
                        break end;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = error_message("UNSUPPORTED_FRAME", "binary frames are not supported; send JSON text");
                    if let Err(end) = send(&mut sink, text(error), &sub.kicked).await {
                        break end;
                    }
                }
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => unanswered_pings = 0,
                Some(Ok(Message::Close(_))) | None => break End::Gone,
                Some(Err(e)) => {
                    tracing::debug!(session_id = %session, error = %e, "websocket read failed");
                    break End::Close(1009, "frame too large or malformed");
                }
            },
            _ = ping.tick() => {
                if unanswered_pings >= 2 {
                    break End::Close(1001, "heartbeat: two pings unanswered");
                }
                unanswered_pings += 1;
                if let Err(end) = send(&mut sink, Message::Ping(Default::default()), &sub.kicked).await {
                        break end;
                    }
            }
        }
    };
    drop(slot);
    app.hub.leave(session, sub.client).await;
    if let End::Close(code, reason) = end {
        let _ = close(&mut sink, code, reason).await;
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends one message unless the socket is kicked meanwhile (it is usually
/// blocked right here when its queue fills).
async fn send(sink: &mut Sink, message: Message, kicked: &CancellationToken) -> Result<(), End> {
    tokio::select! {
        sent = sink.send(message) => sent.map_err(|_| End::Gone),
        _ = kicked.cancelled() => Err(KICKED),
    }
}

/// The close of a client that fell behind.
const KICKED: End = End::Close(1013, "too slow: send queue full");

async fn close(sink: &mut Sink, code: u16, reason: &'static str) -> bool {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    matches!(
        tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    )
}

fn text(message: Value) -> Message {
    Message::Text(Utf8Bytes::from(message.to_string()))
}

fn error_message(code: &str, message: &str) -> Value {
    json!({"type": "ERROR", "code": code, "message": message})
}

/// The reply to a client message, if it needs one sent directly (RECONNECT's
/// STATE_SYNC goes through the hub queue, so the version filter applies).
async fn answer(
    hub: &Arc<Hub>,
    session: SessionId,
    client: u64,
    raw: &str,
    clock: &crate::clock::Clock,
) -> Option<Value> {
    let received = clock.now().ms();
    let Ok(message) = serde_json::from_str::<Value>(raw) else {
        return Some(error_message(
            "INVALID_MESSAGE",
            "messages must be JSON objects with a type",
        ));
    };
    match message.get("type").and_then(Value::as_str) {
        Some("PING") => {
            let client_time = message
                .get("client_time")
                .filter(|v| v.is_number())
                .cloned();
            let sent = clock.now().ms();
            let mut pong = json!({"type": "PONG", "timestamp": sent});
            if let Some(t) = client_time {
                pong["client_time"] = t;
            }
            pong["server_receive_ms"] = json!(received);
            pong["server_send_ms"] = json!(sent);
            Some(pong)
        }
        Some("RECONNECT") => match hub.state_sync(session, Rule::Resync).await {
            Ok(Some(frame)) => {
                hub.deliver_to(session, client, frame);
                None
            }
            Ok(None) => Some(error_message(
                "SESSION_NOT_FOUND",
                &format!("Session {session} not found"),
            )),
            Err(_) => Some(error_message(
                "SERVICE_UNAVAILABLE",
                "state store unavailable; retry shortly",
            )),
        },
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            Some(error_message(
                "UNKNOWN_MESSAGE_TYPE",
                &format!("unknown message type {shown:?}; expected PING or RECONNECT"),
            ))
        }
        None => Some(error_message(
            "INVALID_MESSAGE",
            "messages must be JSON objects with a type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_param_requires_a_uuid() {
        let id = "6f1c2b1e-1111-4c1a-9a1a-000000000001";
        assert!(session_param(Some(&format!("sessionId={id}"))).is_ok());
        assert!(session_param(Some(&format!("x=1&sessionId={id}"))).is_ok());
        assert_eq!(
            session_param(None).err(),
            Some("missing sessionId query parameter")
        );
        assert_eq!(
            session_param(Some("sessionId=nope")).err(),
            Some("sessionId must be a UUID")
        );
    }
}
