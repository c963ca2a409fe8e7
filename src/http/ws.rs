//! `/ws?sessionId=<uuid>`: the WebSocket protocol of API.md.
//!
//! The upgrade is answered here and the socket taken back from hyper as the
//! plain TCP stream, so the hub's writer shards can write the same encoded
//! bytes to every socket with one system call each (see `fanout`). Each
//! socket keeps one small task: it reads client messages (PING, RECONNECT,
//! pongs, the close), writes the socket's backlog when it fell behind, and
//! closes the socket (the heartbeat, a token's expiry, shutdown, the client's
//! close, answered with a close).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::extract::query_param;
use super::ratelimit::client_ip;
use crate::auth::Caller;
use crate::domain::SessionId;
use crate::fanout::conn::{Closing, Next};
use crate::fanout::frame::{self, Decoder, Inbound};
use crate::fanout::{Conn, Hub, Rule};

pub use crate::fanout::frame::MAX_MESSAGE_BYTES as MAX_FRAME_BYTES;
/// How long a closing socket waits for its close frame to go out and the
/// client's answer to come back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The kernel's send buffer per socket (it doubles it for its bookkeeping).
/// Without a bound, Linux grows it to 4 MiB for a client that stops
/// reading: stale states piled up in the kernel instead of being coalesced,
/// and 4 MiB of kernel memory per slow watcher. 256 KiB keeps a couple of
/// the largest states in flight.
const SEND_BUFFER: usize = 256 * 1024;

/// WebSocket settings and the instance's connection accounting.
pub struct WsLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub max_per_session: usize,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Cancelled at shutdown: every socket closes with 1001.
    pub shutdown: CancellationToken,
}

impl WsLimits {
    pub fn new(max_connections: usize, max_per_ip: usize, max_per_session: usize) -> Self {
        Self {
            max_connections,
            max_per_ip,
            max_per_session,
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
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    caller: Caller,
    mut request: Request,
) -> Result<Response, ApiError> {
    // Credentials are checked before the upgrade (the extractor answers 401
    // for a bad token, this 403 for another session's), never on a socket.
    let session = session_param(query.as_deref());
    if let Ok(id) = session {
        caller.read(id)?;
    }
    let expires = caller.expires_at();
    let headers = request.headers();
    let accept = accept_key(headers).map_err(|reason| {
        ApiError::field(
            "Upgrade",
            format!("must be a WebSocket upgrade request ({reason})"),
        )
    })?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            ApiError::field("Upgrade", "this connection cannot be upgraded".to_owned())
        })?;
    // Behind a trusted proxy every socket comes from the proxy's address:
    // count the client's instead.
    let ip =
        client_ip(request.headers(), Some(peer.ip()), app.limits.trust_proxy).unwrap_or(peer.ip());
    let admitted = app.ws.admit(ip);
    let (hub, limits) = (app.hub.clone(), app.ws.clone());
    let task = async move {
        // Bytes the client sent right behind its request come along.
        let (stream, early) = match on_upgrade.await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => (parts.io.into_inner(), parts.read_buf),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("upgraded connection is not a TCP stream");
                return;
            }
        };
        let session = match session {
            Ok(session) => session,
            Err(reason) => return Box::pin(refuse(stream, 1008, reason)).await,
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err((label, reason)) => {
                metrics::counter!("synckairos_ws_rejected_total", "reason" => label).increment(1);
                return Box::pin(refuse(stream, 1013, reason)).await;
            }
        };
        if hub.watchers(session) >= limits.max_per_session {
            metrics::counter!("synckairos_ws_rejected_total", "reason" => "per_session")
                .increment(1);
            return Box::pin(refuse(
                stream,
                1013,
                "too many connections for this session",
            ))
            .await;
        }
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let conn = hub.connection(session, stream);
        // Boxed: the set-up's futures are large and would otherwise stay in
        // every socket's task for its whole life.
        if Box::pin(open(&hub, &conn, &limits)).await {
            serve(&hub, &conn, expires, early).await;
        }
        drop(slot);
        Box::pin(hub.leave(&conn)).await;
    };
    app.ws_tasks.spawn(task);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// `Sec-WebSocket-Accept` for a valid upgrade request (RFC 6455 §4.2.1), or what is wrong.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !has(header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("WebSocket version not supported");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("`Sec-WebSocket-Key` header missing")?;
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&accept).map_err(|_| "unusable key")
}

/// The `sessionId` query parameter, or why it is unusable.
fn session_param(query: Option<&str>) -> Result<SessionId, &'static str> {
    let value = query_param(query, "sessionId").ok_or("missing sessionId query parameter")?;
    SessionId::parse(value).ok_or("sessionId must be a UUID")
}

/// Closes a socket that is not admitted: the close frame, then a short wait
/// for the client's answer.
async fn refuse(stream: TcpStream, code: u16, reason: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        stream.write_all(&frame::close(code, reason)).await?;
        let mut buf = [0u8; 256];
        while stream.read(&mut buf).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// Joins the hub and sends CONNECTED and the first STATE_SYNC; false if
/// the socket is already done.
async fn open(hub: &Arc<Hub>, conn: &Arc<Conn>, limits: &WsLimits) -> bool {
    let now = hub.clock().now().ms();
    conn.reply(frame::text(
        &json!({"type": "CONNECTED", "sessionId": conn.session, "timestamp": now}).to_string(),
    ));
    if let Err(e) = hub.join(conn).await {
        tracing::warn!(session_id = %conn.session, error = %e, "cannot subscribe");
        conn.close(1011, "state store unavailable");
        return finish(conn).await;
    }
    // A socket that joined after the shutdown's close-all must close too.
    if limits.shutdown.is_cancelled() {
        conn.close(1001, "server shutting down");
    }
    // Subscribed first, then the state: an update racing with this sync is
    // ordered by the version filter.
    let mut sent = 1;
    match hub.state_sync(conn.session, Rule::Advance).await {
        Ok(Some(frame)) => {
            conn.send(&frame);
            sent += 1;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(session_id = %conn.session, error = %e, "initial STATE_SYNC failed");
        }
    }
    metrics::counter!("synckairos_ws_messages_sent_total").increment(sent);
    true
}

/// Serves one socket until it is closed. `expires` (the token's `exp`)
/// closes it with 4001 so a revoked-by-expiry client cannot keep watching.
async fn serve(hub: &Arc<Hub>, conn: &Arc<Conn>, expires: Option<SystemTime>, early: Bytes) {
    let mut expiry = expires.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Box::pin(tokio::time::sleep(left))
    });
    let mut decoder = Decoder::default();
    let mut inbound = Vec::new();
    conn.received(&mut decoder, &early, &mut inbound);
    // It may be a slice of hyper's 8 KiB read buffer: not kept for the socket's life.
    drop(early);
    for message in inbound.drain(..) {
        handle(hub, conn, message);
    }
    loop {
        let backlogged = conn.backlogged();
        tokio::select! {
            () = conn.woken() => {}
            ready = conn.writable(), if backlogged => if ready.is_err() { return },
            ready = conn.readable() => {
                let open = ready.and_then(|()| conn.read(&mut decoder, &mut inbound));
                if !matches!(open, Ok(true)) {
                    return; // the client went away without a close
                }
                for message in inbound.drain(..) {
                    handle(hub, conn, message);
                }
            }
            () = async { if let Some(e) = expiry.as_mut() { e.await } else { std::future::pending().await } } => {
                expiry = None;
                conn.close(4001, "token expired");
            }
        }
        if let Next::Finish(_) = conn.write_backlog() {
            Box::pin(finish(conn)).await;
            return;
        }
    }
}

/// Ends a closing socket: its backlog and close frame go out (within
/// `CLOSE_TIMEOUT`), and a close we started waits for the client's answer.
/// Returns false.
async fn finish(conn: &Conn) -> bool {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let mut decoder = Decoder::default();
        let mut inbound = Vec::new();
        loop {
            match conn.write_backlog() {
                Next::Finish(Closing::Server) if !conn.backlogged() => {
                    // The close frame is out: wait for the client's.
                    if conn.readable().await.is_err()
                        || !matches!(conn.read(&mut decoder, &mut inbound), Ok(true))
                        || inbound.iter().any(|m| matches!(m, Inbound::Close(_)))
                    {
                        return;
                    }
                    inbound.clear();
                }
                Next::Finish(Closing::Client | Closing::Broken) if !conn.backlogged() => return,
                _ => {
                    if conn.writable().await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    false
}

/// Acts on one message or control frame from the client.
fn handle(hub: &Arc<Hub>, conn: &Arc<Conn>, message: Inbound) {
    let reply = match message {
        Inbound::Text(text) => match answer(hub, conn, &text) {
            Some(reply) => reply,
            None => return,
        },
        Inbound::Binary => error_message(
            "UNSUPPORTED_FRAME",
            "binary frames are not supported; send JSON text",
        ),
        Inbound::Ping(payload) => return conn.reply(frame::pong(&payload)),
        Inbound::Pong | Inbound::Close(_) => return,
    };
    metrics::counter!("synckairos_ws_messages_sent_total").increment(1);
    conn.reply(frame::text(&reply.to_string()));
}

fn error_message(code: &str, message: &str) -> Value {
    json!({"type": "ERROR", "code": code, "message": message})
}

/// The reply to a client message, if it needs one sent directly. RECONNECT's
/// STATE_SYNC is read by a task of its own (the socket's task stays small)
/// and goes through the version filter.
fn answer(hub: &Arc<Hub>, conn: &Arc<Conn>, raw: &str) -> Option<Value> {
    let clock = hub.clock();
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
        Some("RECONNECT") => {
            let (hub, conn) = (hub.clone(), conn.clone());
            tokio::spawn(async move {
                let error = match hub.state_sync(conn.session, Rule::Resync).await {
                    Ok(Some(frame)) => {
                        conn.send(&frame);
                        return;
                    }
                    Ok(None) => error_message(
                        "SESSION_NOT_FOUND",
                        &format!("Session {} not found", conn.session),
                    ),
                    Err(_) => error_message(
                        "SERVICE_UNAVAILABLE",
                        "state store unavailable; retry shortly",
                    ),
                };
                conn.reply(frame::text(&error.to_string()));
            });
            None
        }
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

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            accept_key(&headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(accept_key(&headers).is_err());
    }
}
