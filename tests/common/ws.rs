//! A WebSocket client for tests (tokio-tungstenite), reading server messages
//! as JSON and failing after 10 s instead of hanging.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const WAIT: Duration = Duration::from_secs(10);

/// A connected client.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl WsClient {
    /// Connects to `/ws?sessionId=<session>` on the instance at `base` (http://…).
    pub async fn watch(base: &str, session: &str) -> Self {
        Self::connect(&format!(
            "{}/ws?sessionId={session}",
            base.replacen("http", "ws", 1)
        ))
        .await
    }

    /// Connects to any WebSocket URL.
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("connect within 10 s")
            .expect("websocket handshake");
        Self { stream }
    }

    /// Connects to `/ws?sessionId=<session>` with a 4 KiB receive buffer:
    /// as long as the test does not read, the server's writes back up after
    /// the server's bounded send buffer (a watcher on a stalled phone).
    pub async fn watch_stalled(base: &str, session: &str) -> Self {
        let url = format!("{}/ws?sessionId={session}", base.replacen("http", "ws", 1));
        let addr: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .expect("http://<ip>:<port>");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("connect");
        let (stream, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)),
        )
        .await
        .expect("handshake within 10 s")
        .expect("websocket handshake");
        Self { stream }
    }

    /// Connects with `Authorization: Bearer <token>` on the upgrade request,
    /// or returns the HTTP status the server refused the upgrade with.
    pub async fn try_connect(url: &str, token: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a WebSocket URL");
        if let Some(t) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("a header value"),
            );
        }
        match tokio::time::timeout(WAIT, connect_async(request))
            .await
            .expect("handshake within 10 s")
        {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
        }
    }

    /// The next server message, as JSON (control frames skipped).
    pub async fn next(&mut self) -> Value {
        match self.next_or_close().await {
            Ok(v) => v,
            Err(closed) => panic!("socket closed: {closed:?}"),
        }
    }

    /// The next message of `kind`, skipping others (e.g. an initial STATE_SYNC).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// The next message, or how the socket closed.
    pub async fn next_or_close(&mut self) -> Result<Value, Closed> {
        // One deadline for the whole call: heartbeat pings must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a server message within 10 s");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("JSON text frame"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(
                        Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                        |f| Closed {
                            code: f.code.into(),
                            reason: f.reason.to_string(),
                        },
                    ));
                }
                Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                Some(Err(_)) | None => {
                    return Err(Closed {
                        code: 1006,
                        reason: "connection dropped".into(),
                    });
                }
            }
        }
    }

    /// Reads until the socket closes; returns the close and the messages before it.
    pub async fn until_closed(&mut self) -> (Closed, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match self.next_or_close().await {
                Ok(v) => seen.push(v),
                Err(closed) => return (closed, seen),
            }
        }
    }

    /// Closes with `code` as a client does, and returns the close the server
    /// answered with, or how the connection ended instead (a reset: 1006).
    pub async fn close(&mut self, code: u16) -> Closed {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        self.stream
            .close(Some(frame))
            .await
            .expect("close frame sent");
        let answered = self
            .next_or_close()
            .await
            .expect_err("no message after a close");
        // After the close handshake the connection ends cleanly, without an error.
        let after = tokio::time::timeout(WAIT, self.stream.next()).await;
        match after {
            Ok(None) => answered,
            other => Closed {
                code: 1006,
                reason: format!("not a clean end after the close handshake: {other:?}"),
            },
        }
    }

    /// After a close from the server: whether the connection then ends
    /// without an error (tungstenite answered the close; the server waited for it).
    pub async fn ended_cleanly(&mut self) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.stream.next()).await,
            Ok(None)
        )
    }

    pub async fn send_json(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream
            .send(Message::Text(s.to_owned().into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.stream
            .send(Message::Binary(b.into()))
            .await
            .expect("send");
    }
}
