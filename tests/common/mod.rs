//! Test helpers: start real SyncKairos instances on port 0 and talk to them
//! over HTTP, so each test reads like a scenario.

#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod receiver;
pub mod redis;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use synckairos::clock::{Clock, ManualClock};
use synckairos::config::Config;
use synckairos::domain::{SessionId, Timestamp};
use synckairos::engine::{Engine, Update};
use synckairos::server::Server;
use synckairos::store::FeedEvent;
use tokio::sync::oneshot;

/// 2026-01-01T10:00:00Z: where manual clocks start.
pub const T0: Timestamp = Timestamp(1_767_261_600_000);

/// A REST client for one instance (in this process or another).
pub struct Rest {
    pub base: String,
    pub client: reqwest::Client,
}

impl Rest {
    /// A client for the instance at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }
}

/// A running in-process instance; stopped when dropped. Derefs to its [`Rest`] client.
pub struct TestApp {
    pub rest: Rest,
    pub engine: Arc<Engine>,
    pub hub: Arc<synckairos::fanout::Hub>,
    /// Present when the instance runs on a manual clock.
    pub clock: Option<Arc<ManualClock>>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::ops::Deref for TestApp {
    type Target = Rest;

    fn deref(&self) -> &Rest {
        &self.rest
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl TestApp {
    /// Waits until `session` has `n` local sockets on this instance (10 s at most).
    pub async fn await_watchers(&self, session: &str, n: usize) {
        let id = SessionId::parse(session).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.hub.watchers(id) != n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} sockets, expected {n}",
                self.hub.watchers(id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, ms: i64) {
        self.clock.as_ref().expect("manual clock").advance(ms);
    }

    /// Subscribes to a session's published updates on this instance's store.
    pub async fn watch(&self, id: &str) -> Watcher {
        let id = SessionId::parse(id).unwrap();
        let feed = self.engine.store().feed();
        self.engine.store().subscribe(id).await.unwrap();
        Watcher { id, feed }
    }

    /// Sends the shutdown signal (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Configuration for a test instance: loopback, port 0, embedded backend.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.redis_url = None;
    config.database_url = None;
    // Tests drive sessions from one address as fast as they can; the rate
    // limits have their own tests (tests/ratelimit.rs).
    config.rate_limit_general = 0;
    config.rate_limit_switch = 0;
    config
}

/// An instance on the wall clock.
pub async fn spawn_app() -> TestApp {
    spawn_with(test_config(), Clock::System, None).await
}

/// An instance whose time only moves when the test says so.
pub async fn spawn_app_manual_clock() -> TestApp {
    let (clock, handle) = Clock::manual(T0);
    spawn_with(test_config(), clock, Some(handle)).await
}

/// An instance on the Redis server `redis`.
pub async fn spawn_app_redis(redis: &redis::RedisServer) -> TestApp {
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    spawn_with(config, Clock::System, None).await
}

pub async fn spawn_with(config: Config, clock: Clock, handle: Option<Arc<ManualClock>>) -> TestApp {
    let server = Server::build(&config, clock)
        .await
        .expect("test server starts");
    let base = format!("http://{}", server.local_addr());
    let engine = server.engine();
    let hub = server.hub();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        rest: Rest::new(&base),
        engine,
        hub,
        clock: handle,
        stop: Some(stop),
    }
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The `error.code` of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `data` of a success envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// The fields named in `error.details`.
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Rest {
    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_as(None, method, path, body).await
    }

    /// Sends a request with `Authorization: Bearer <token>` when a token is given.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request reaches the server")).await
    }

    /// Sends raw bytes with an optional content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::read(req.send().await.expect("request reaches the server")).await
    }

    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.call(Method::POST, path, body).await
    }

    /// Creates a session from `body` and asserts 201.
    pub async fn create(&self, body: &Value) -> Value {
        let r = self.post("/v1/sessions", Some(body.clone())).await;
        assert_eq!(r.status, 201, "create failed: {}", r.text);
        r.data().clone()
    }

    /// The session's state once the server has expired it, read by polling
    /// (its instance may be another process); fails the test after `until`.
    pub async fn await_expired(&self, id: &str, until: std::time::Instant) -> Value {
        loop {
            let r = self.get(&format!("/v1/sessions/{id}")).await;
            if r.data()["status"] == "expired" {
                return r.data().clone();
            }
            assert!(
                std::time::Instant::now() < until,
                "{id} never timed out: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a session of `mode` (`n` participants, `bank_ms` each) and
    /// starts it; returns its id.
    pub async fn started(&self, mode: &str, n: usize, bank_ms: i64) -> String {
        let body = session_body(mode, n, bank_ms);
        let id = body["session_id"].as_str().unwrap().to_owned();
        self.create(&body).await;
        self.command(&id, "start").await;
        id
    }

    /// Runs a body-less command (`start`, `pause`, …) and asserts 200.
    pub async fn command(&self, id: &str, cmd: &str) -> Value {
        let r = self.post(&format!("/v1/sessions/{id}/{cmd}"), None).await;
        assert_eq!(r.status, 200, "{cmd} failed: {}", r.text);
        r.data().clone()
    }
}

/// A session's update stream, for awaiting server-side events instead of sleeping.
pub struct Watcher {
    id: SessionId,
    feed: tokio::sync::broadcast::Receiver<FeedEvent>,
}

impl Watcher {
    /// The next update published for the watched session (fails after 10 s).
    pub async fn next(&mut self) -> Update {
        let wait = async {
            loop {
                match self.feed.recv().await {
                    Ok(FeedEvent::Message {
                        session_id,
                        payload,
                    }) if session_id == self.id => {
                        return Update::decode(&payload).expect("update decodes");
                    }
                    Ok(_) => continue,
                    Err(e) => panic!("feed closed or lagged: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("an update within 10 s")
    }
}

/// The sum of the samples of `series` in a Prometheus text page: every label
/// set of a name, or one (`name{label="v"}`, labels as rendered); 0 if absent.
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fresh random UUID string.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A create body: `n` participants with `bank_ms` each, in `mode`
/// (`per_group`: groups of two, in index order).
pub fn session_body(mode: &str, n: usize, bank_ms: i64) -> Value {
    let groups: Vec<String> = (0..n.div_ceil(2)).map(|_| uuid()).collect();
    let participants: Vec<Value> = (0..n)
        .map(|i| {
            let mut p = json!({
                "participant_id": uuid(),
                "participant_index": i,
                "total_time_ms": bank_ms,
            });
            if mode == "per_group" {
                p["group_id"] = json!(groups[i / 2]);
            }
            p
        })
        .collect();
    let mut body = json!({
        "session_id": uuid(),
        "sync_mode": mode,
        "participants": participants,
        "total_time_ms": 600_000,
    });
    if mode == "per_cycle" {
        body["time_per_cycle_ms"] = json!(30_000);
    }
    body
}

/// The participant ids of a state, in turn order.
pub fn participant_ids(state: &Value) -> Vec<String> {
    state["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["participant_id"].as_str().unwrap().to_owned())
        .collect()
}
