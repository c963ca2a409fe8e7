//! A webhook receiver for tests: a real HTTP server on a free port that
//! records every delivery and checks its Standard Webhooks signature with an
//! implementation of its own (not the server's). What it answers is set by
//! the test: a status, or no answer at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{Notify, oneshot};

/// A `whsec_` secret for the tests (24 bytes).
pub const SECRET: &str = "whsec_c3luY2thaXJvcy13ZWJob29rcy10ZXN0cw==";

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    /// Whether a `v1` signature matched, by this receiver's own check.
    pub verified: bool,
    pub path: String,
    pub raw: String,
    pub body: Value,
    /// What the receiver answered (0: nothing, it hung).
    pub answered: u16,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    status: AtomicU16,
    hang: AtomicBool,
    /// Answer this many requests with 500 before answering `status`.
    fail_first: Mutex<usize>,
}

/// A running receiver; stopped when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    /// Starts a receiver answering 204.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(Shared::default())).await
    }

    async fn start_on(addr: SocketAddr, shared: Arc<Shared>) -> Self {
        if shared.status.load(Ordering::Relaxed) == 0 {
            shared.status.store(204, Ordering::Relaxed);
        }
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What to answer from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// Answers the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        *self.shared.fail_first.lock().unwrap() = n;
    }

    /// Holds every request open without answering (until turned off).
    pub fn hang(&self, on: bool) {
        self.shared.hang.store(on, Ordering::Relaxed);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received (fails after 60 s).
    pub async fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let got = self.received();
                if done(&got) {
                    return got;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(got) => got,
            Err(_) => panic!(
                "receiver: {what} never happened; got {:#?}",
                self.received()
            ),
        }
    }

    /// Stops listening: deliveries fail to connect until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn restart(&mut self) {
        // The old listener closes as its server task notices the stop.
        let again = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        drop(again);
        *self = Self::start_on(self.addr, self.shared.clone()).await;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, signature) = (header("webhook-id"), header("webhook-signature"));
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(-1);
    let raw = String::from_utf8_lossy(&body).into_owned();
    let hang = shared.hang.load(Ordering::Relaxed);
    let status = {
        let mut fail = shared.fail_first.lock().unwrap();
        if hang {
            0
        } else if *fail > 0 {
            *fail -= 1;
            500
        } else {
            shared.status.load(Ordering::Relaxed)
        }
    };
    shared.received.lock().unwrap().push(Received {
        verified: verify(&id, timestamp, &body, &signature),
        id,
        timestamp,
        signature,
        path: uri.path().to_owned(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        answered: status,
    });
    shared.arrived.notify_waiters();
    if hang {
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(status).unwrap()
}

/// Standard Webhooks 1.0: some `v1,` entry is base64(HMAC-SHA256(key, "id.ts.body")).
fn verify(id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}
