//! The floor for WebSocket fan-out (issue 24): a minimal broadcaster that
//! speaks SyncKairos's watcher protocol, so a benchmark can put the server's
//! fan-out latency next to what this machine can do at best, in the same run
//! (loadtest/bench-broadcast.sh).
//!
//!   PORT=4000 [HOST=127.0.0.1] [REDIS_URL=redis://127.0.0.1:6379] \
//!       cargo run --release --example broadcast_floor
//!
//! - `GET /ready` → 200.
//! - `GET /ws?sessionId=<uuid>` → a hand-made WebSocket handshake, then a
//!   CONNECTED frame; client frames are read and ignored (a Close is answered
//!   with a Close).
//! - `POST /v1/sessions/<id>/switch` → one STATE_UPDATE of about 1.1 KB shaped
//!   like SyncKairos's (a 2-participant per_participant session), `updated_at`
//!   now and the version rising (per instance: drive one instance), sent to
//!   every watcher of the session: directly, or with REDIS_URL through SPUBLISH
//!   on `floor:{<id>}`, which every instance SSUBSCRIBEs to and broadcasts.
//!
//! Why it is a floor: no store, no JSON on the hot path (the state is one
//! format!), the frame is encoded once (server frames are unmasked, so the
//! same bytes suit every socket) and each socket costs one non-blocking
//! `try_write` from a few long-lived shard tasks (2 × worker threads), with no
//! per-socket task, queue or wake-up. A socket that cannot take a whole frame
//! moves to a writer task of its own (bounded; a socket 64 frames behind is
//! dropped), so it never holds the others up. Heartbeat pings go out every
//! 5 s per socket, a fiftieth of each shard every 100 ms, never in a burst.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
// The server's own encoder: the same bytes on the wire, no second copy of RFC 6455.
use fred::clients::SubscriberClient;
use fred::prelude::*;
use synckairos::fanout::frame;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const MAX_HEAD: usize = 16 * 1024;
const MAX_CLIENT_FRAME: u64 = 64 * 1024;
const PING_SLICES: u64 = 50; // × 100 ms = every socket pinged every 5 s
const SLOW_QUEUE: usize = 64;

type Session = Arc<str>;

enum Cmd {
    Add(Session, u64, Arc<TcpStream>),
    Remove(Session, u64),
    /// The client sent Close: answer it and forget the socket.
    Close(Session, u64),
    Broadcast(Session, Bytes),
}

struct Sock {
    id: u64,
    stream: Arc<TcpStream>,
    /// Set once a write came short: the rest goes through this socket's writer.
    slow: Option<mpsc::Sender<Bytes>>,
}

impl Sock {
    /// Sends a whole frame without waiting, or drops the connection (its
    /// reader then ends) and returns false.
    fn send_or_drop(&mut self, frame: &Bytes) -> bool {
        let sent = self.send(frame);
        if !sent {
            // SAFETY: shutdown(2) on a descriptor the Arc keeps open.
            unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
        }
        sent
    }

    /// Sends a whole frame without waiting; false if the socket should go.
    fn send(&mut self, frame: &Bytes) -> bool {
        if let Some(slow) = &self.slow {
            return slow.try_send(frame.clone()).is_ok();
        }
        let written = match self.stream.try_write(frame) {
            Ok(n) if n == frame.len() => return true,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        // Short write: a writer task finishes this frame and takes the next ones.
        let (tx, mut rx) = mpsc::channel::<Bytes>(SLOW_QUEUE);
        let _ = tx.try_send(frame.slice(written..));
        let stream = self.stream.clone();
        tokio::spawn(async move {
            while let Some(mut rest) = rx.recv().await {
                while !rest.is_empty() {
                    if stream.writable().await.is_err() {
                        return;
                    }
                    match stream.try_write(&rest) {
                        Ok(n) => rest = rest.slice(n..),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            }
        });
        self.slow = Some(tx);
        true
    }
}

/// One shard: its sockets by session, fed by a channel.
async fn shard(mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut sessions: HashMap<Session, Vec<Sock>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ping = Bytes::from_static(&[0x89, 0x00]);
    let close = Bytes::from_static(&[0x88, 0x02, 0x03, 0xe8]); // 1000
    let mut slice = 0u64;
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Add(session, id, stream)) => {
                    let mut sock = Sock { id, stream, slow: None };
                    let connected = format!(
                        r#"{{"type":"CONNECTED","sessionId":"{session}","timestamp":{}}}"#,
                        now_ms()
                    );
                    if sock.send_or_drop(&frame::text(&connected)) {
                        sessions.entry(session).or_default().push(sock);
                    }
                }
                Some(Cmd::Remove(session, id)) => {
                    forget(&mut sessions, &session, id);
                }
                Some(Cmd::Close(session, id)) => {
                    if let Some(mut sock) = forget(&mut sessions, &session, id) {
                        sock.send_or_drop(&close);
                    }
                }
                Some(Cmd::Broadcast(session, frame)) => {
                    if let Some(socks) = sessions.get_mut(&session) {
                        socks.retain_mut(|s| s.send_or_drop(&frame));
                    }
                }
            },
            _ = tick.tick() => {
                slice = (slice + 1) % PING_SLICES;
                for socks in sessions.values_mut() {
                    socks.retain_mut(|s| s.id % PING_SLICES != slice || s.send_or_drop(&ping));
                }
            }
        }
    }
}

fn forget(sessions: &mut HashMap<Session, Vec<Sock>>, session: &str, id: u64) -> Option<Sock> {
    let socks = sessions.get_mut(session)?;
    let at = socks.iter().position(|s| s.id == id)?;
    let sock = socks.swap_remove(at);
    if socks.is_empty() {
        sessions.remove(session);
    }
    Some(sock)
}

struct Floor {
    shards: Vec<mpsc::UnboundedSender<Cmd>>,
    next_id: AtomicU64,
    versions: std::sync::Mutex<HashMap<String, u64>>,
    redis: Option<(Client, SubscriberClient)>,
    subscribed: tokio::sync::Mutex<HashSet<String>>,
}

impl Floor {
    fn broadcast(&self, session: &str, text: &str) {
        let (session, frame): (Session, _) = (session.into(), frame::text(text));
        for shard in &self.shards {
            let _ = shard.send(Cmd::Broadcast(session.clone(), frame.clone()));
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Epoch ms as RFC 3339 with milliseconds, UTC ("2026-01-02T03:04:05.678Z").
fn rfc3339(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A STATE_UPDATE shaped like SyncKairos's for a 2-participant
/// per_participant session (same fields in the same order, about 1.1 KB),
/// committed now.
fn state_update(session: &str, version: u64) -> String {
    let now = now_ms();
    let at = rfc3339(now);
    let active = version % 2;
    let used = version * 250;
    let p = |i: u64| {
        format!(
            r#"{{"participant_id":"aaaaaaaa-0000-4000-8000-00000000000{}","participant_index":{i},"total_time_ms":{},"time_used_ms":{used},"cycle_count":{},"is_active":{},"has_expired":false,"time_remaining_ms":{}}}"#,
            i + 1,
            86_400_000 - used,
            version / 2,
            i == active,
            86_400_000 - used,
        )
    };
    format!(
        r#"{{"type":"STATE_UPDATE","sessionId":"{session}","timestamp":{now},"state":{{"session_id":"{session}","sync_mode":"per_participant","status":"running","version":{version},"participants":[{},{}],"active_participant_id":"aaaaaaaa-0000-4000-8000-00000000000{}","total_time_ms":86400000,"time_per_cycle_ms":null,"increment_ms":0,"cycle_started_at":"{at}","cycle_time_used_ms":0,"session_started_at":"{at}","session_completed_at":null,"created_at":"{at}","updated_at":"{at}","server_time_ms":{now},"action_on_timeout":{{"type":"end_session"}},"auto_advance":false,"active_group_id":null}}}}"#,
        p(0),
        p(1),
        active + 1,
    )
}

/// An HTTP/1.1 request head: method, target, and the headers we use.
struct Head {
    method: String,
    target: String,
    ws_key: Option<String>,
    content_length: usize,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let (mut ws_key, mut content_length) = (None, 0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            ws_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        }
    }
    Some(Head {
        method,
        target,
        ws_key,
        content_length,
    })
}

/// Reads more bytes into `buf`; false at end of stream or on error.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

/// Serves HTTP requests on one connection (keep-alive) until one upgrades.
async fn serve(floor: Arc<Floor>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_HEAD || !fill(&stream, &mut buf).await {
                return;
            }
        };
        let Some(head) = parse_head(&buf[..end]) else {
            return;
        };
        while buf.len() < end + head.content_length {
            if head.content_length > MAX_HEAD || !fill(&stream, &mut buf).await {
                return;
            }
        }
        buf.drain(..end + head.content_length);
        let path = head.target.split('?').next().unwrap_or_default();
        let (status, body) = match (head.method.as_str(), path) {
            ("GET", "/ready") => ("200 OK", r#"{"status":"ready"}"#.to_owned()),
            ("GET", "/ws") => {
                let session = head
                    .target
                    .split_once("sessionId=")
                    .map(|(_, s)| s.split('&').next().unwrap_or_default())
                    .and_then(|s| uuid::Uuid::parse_str(s).ok());
                match (session, &head.ws_key) {
                    (Some(session), Some(key)) => {
                        let accept = derive_accept_key(key.as_bytes());
                        let answer = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                        );
                        if stream.write_all(answer.as_bytes()).await.is_ok() {
                            watch(floor, stream, session.to_string(), buf).await;
                        }
                        return;
                    }
                    _ => ("400 Bad Request", r#"{"error":"sessionId"}"#.to_owned()),
                }
            }
            ("POST", p)
                if p.strip_prefix("/v1/sessions/")
                    .and_then(|p| p.strip_suffix("/switch"))
                    .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()) =>
            {
                let session = &p["/v1/sessions/".len()..p.len() - "/switch".len()];
                let version = {
                    let mut versions = floor.versions.lock().unwrap_or_else(|e| e.into_inner());
                    let v = versions.entry(session.to_owned()).or_insert(2);
                    *v += 1;
                    *v
                };
                let message = state_update(session, version);
                match &floor.redis {
                    Some((client, _)) => {
                        let channel = format!("floor:{{{session}}}");
                        if let Err(e) = client.spublish::<(), _, _>(channel, message).await {
                            eprintln!("spublish: {e}");
                        }
                    }
                    None => floor.broadcast(session, &message),
                }
                ("200 OK", format!(r#"{{"data":{{"version":{version}}}}}"#))
            }
            // Enough of the rest for the k6 scenarios' set-up and clean-up:
            // sessions need no creating here.
            ("POST", "/v1/sessions") => ("201 Created", r#"{"data":{}}"#.to_owned()),
            ("POST", p) if p.starts_with("/v1/sessions/") => {
                ("200 OK", r#"{"data":{}}"#.to_owned())
            }
            ("DELETE", p) if p.starts_with("/v1/sessions/") => {
                ("200 OK", r#"{"data":{}}"#.to_owned())
            }
            _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A watcher: registered with a shard, then its frames are read and ignored.
async fn watch(floor: Arc<Floor>, stream: TcpStream, session: String, mut buf: Vec<u8>) {
    if let Some((_, subscriber)) = &floor.redis {
        let mut subscribed = floor.subscribed.lock().await;
        if !subscribed.contains(&session) {
            if let Err(e) = subscriber.ssubscribe(format!("floor:{{{session}}}")).await {
                eprintln!("ssubscribe: {e}");
                return;
            }
            subscribed.insert(session.clone());
        }
    }
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed);
    let shard = &floor.shards[(id % floor.shards.len() as u64) as usize];
    let (session, stream): (Session, _) = (session.into(), Arc::new(stream));
    let _ = shard.send(Cmd::Add(session.clone(), id, stream.clone()));
    loop {
        // Skip whole client frames (masked); a Close is answered with a Close.
        while buf.len() >= 2 {
            let (opcode, short) = (buf[0] & 0x0f, u64::from(buf[1] & 0x7f));
            let (len, mut at) = match short {
                126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(n), 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            if len > MAX_CLIENT_FRAME {
                let _ = shard.send(Cmd::Remove(session, id));
                return;
            }
            at += if buf[1] & 0x80 != 0 { 4 } else { 0 };
            let total = at + len as usize;
            if buf.len() < total {
                break;
            }
            buf.drain(..total);
            if opcode == 0x8 {
                let _ = shard.send(Cmd::Close(session, id));
                // Let the client close the connection after our Close.
                let _ = tokio::time::timeout(Duration::from_secs(2), fill(&stream, &mut buf)).await;
                return;
            }
        }
        if !fill(&stream, &mut buf).await {
            let _ = shard.send(Cmd::Remove(session, id));
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").expect("PORT is required");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shards = (0..2 * workers)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(shard(rx));
            tx
        })
        .collect();

    let redis = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let config = Config::from_url(&url).expect("REDIS_URL");
            let builder = Builder::from_config(config);
            let client = builder.build().expect("redis client");
            let subscriber = builder.build_subscriber_client().expect("redis subscriber");
            client.init().await.expect("redis connect");
            subscriber.init().await.expect("redis connect");
            Some((client, subscriber))
        }
        Err(_) => None,
    };
    let floor = Arc::new(Floor {
        shards,
        next_id: AtomicU64::new(0),
        versions: Default::default(),
        redis,
        subscribed: Default::default(),
    });
    if let Some((_, subscriber)) = &floor.redis {
        // Drain the subscriber's messages in a task of its own.
        let (floor, mut messages) = (floor.clone(), subscriber.message_rx());
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(m) => {
                        let session = m
                            .channel
                            .trim_start_matches("floor:{")
                            .trim_end_matches('}');
                        if let Some(text) = m.value.as_str() {
                            floor.broadcast(session, &text);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("subscriber lagged by {n} messages");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    let listener = TcpListener::bind(format!("{host}:{port}"))
        .await
        .expect("bind HOST:PORT");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: wait a little.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(floor.clone(), stream));
    }
}
