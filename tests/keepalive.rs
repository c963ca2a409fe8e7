//! Early answers never break a keep-alive connection: keep-alive clients
//! that send headers and body in separate writes hammer past every limit
//! (switch and client rate limits, missing and refused tokens, oversized
//! bodies, bad paths, unknown routes) and none of them sees a connection
//! closed without `Connection: close`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use synckairos::clock::Clock;
use synckairos::config::{AuthMode, Config};

use common::raw::{RawClient, RawRequest};
use common::{session_body, spawn_with, test_config};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const CLIENTS: usize = 8;
const ROUNDS: usize = 25;
/// Per token subject (or address) per minute: each shared subject below
/// sends `CLIENTS * ROUNDS` = 200 requests, so most are refused.
const GENERAL_LIMIT: u32 = 50;
/// Per session per second, for the switches on the busy session.
const SWITCH_LIMIT: u32 = 5;
const MAX_BODY: usize = 4096;

fn config() -> Config {
    let mut config = test_config();
    config.auth_mode = AuthMode::Jwt;
    config.jwt_secret = Some(SECRET.parse().unwrap());
    config.rate_limit_general = GENERAL_LIMIT;
    config.rate_limit_switch = SWITCH_LIMIT;
    config.max_body_bytes = MAX_BODY as u64;
    config
}

/// A token signed with `secret`, valid for an hour.
fn token_with(claims: Value, secret: &[u8]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn token(claims: Value) -> String {
    token_with(claims, SECRET.as_bytes())
}

/// One kind of request each client sends every round, and the refusal it
/// is there to provoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Switches on one busy session, each client under its own subject:
    /// past `RATE_LIMIT_SWITCH` → 429.
    Switch,
    /// One subject for everybody: past `RATE_LIMIT_GENERAL` → 429 (404 before).
    Flood,
    /// No token → 401.
    NoToken,
    /// A token signed with another key → 401.
    Forged,
    /// A viewer may not pause → 403.
    Viewer,
    /// Not a UUID in the path → 400, from the path alone.
    BadPath,
    /// A body that is not JSON → 400, once read.
    NotJson,
    /// A body over `MAX_BODY_BYTES` but small enough to drain → 413.
    Oversized,
    /// A huge declared body behind `Expect: 100-continue` → 413 with
    /// `Connection: close`; the body is never sent.
    Huge,
    /// No such route → 404.
    NoRoute,
    /// No such route, the body chunked (no declared length) → 404.
    Chunked,
}

const KINDS: [Kind; 11] = [
    Kind::Switch,
    Kind::Flood,
    Kind::NoToken,
    Kind::Forged,
    Kind::Viewer,
    Kind::BadPath,
    Kind::NotJson,
    Kind::Oversized,
    Kind::Huge,
    Kind::NoRoute,
    Kind::Chunked,
];

/// What every client needs to build its requests.
struct Scene {
    base: String,
    busy: String,
    switcher: Vec<String>,
    flood: String,
    forged: String,
    viewer: String,
    uploader: String,
    malformed: String,
    big: Vec<u8>,
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<(Kind, u16), usize>,
    /// Answers that announced the close, by kind.
    closes: BTreeMap<Kind, usize>,
    errors: Vec<String>,
    connects: usize,
}

async fn run_client(scene: &Scene, i: usize) -> Tally {
    let mut client = RawClient::new(&scene.base);
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        for kind in KINDS {
            let switch_busy = format!("/v1/sessions/{}/switch", scene.busy);
            let pause_busy = format!("/v1/sessions/{}/pause", scene.busy);
            let random_pause = format!("/v1/sessions/{}/pause", common::uuid());
            let bad_path = format!("/v1/sessions/not-a-uuid-{i}-{round}/switch");
            let (req, token) = match kind {
                Kind::Switch => (
                    RawRequest::new("POST", &switch_busy, b"{}"),
                    Some(&scene.switcher[i]),
                ),
                Kind::Flood => (
                    RawRequest::new("POST", &random_pause, b"{}"),
                    Some(&scene.flood),
                ),
                Kind::NoToken => (RawRequest::new("POST", &pause_busy, b"{}"), None),
                Kind::Forged => (
                    RawRequest::new("POST", &pause_busy, b"{}"),
                    Some(&scene.forged),
                ),
                Kind::Viewer => (
                    RawRequest::new("POST", &pause_busy, b"{}"),
                    Some(&scene.viewer),
                ),
                Kind::BadPath => (
                    RawRequest::new("POST", &bad_path, b"{}"),
                    Some(&scene.malformed),
                ),
                Kind::NotJson => (
                    RawRequest::new("POST", "/v1/sessions", b"{}")
                        .header("content-type", "text/plain"),
                    Some(&scene.malformed),
                ),
                Kind::Oversized => (
                    RawRequest::new("POST", "/v1/sessions", &scene.big),
                    Some(&scene.uploader),
                ),
                Kind::Huge => {
                    let mut req = RawRequest::new("POST", "/v1/sessions", b"")
                        .header("expect", "100-continue");
                    req.declared_length = Some(1 << 20);
                    (req, Some(&scene.uploader))
                }
                Kind::NoRoute => (RawRequest::new("POST", "/no/such/route", b"{}"), None),
                Kind::Chunked => {
                    let mut req = RawRequest::new("POST", "/no/such/route", b"{}");
                    req.chunked = true;
                    (req, None)
                }
            };
            let req = match kind {
                Kind::NotJson => req,
                _ => req.header("content-type", "application/json"),
            }
            .bearer(token.map(String::as_str));
            match client.send(&req).await {
                Ok(reply) => {
                    *tally.statuses.entry((kind, reply.status)).or_default() += 1;
                    if reply.closes() {
                        *tally.closes.entry(kind).or_default() += 1;
                    }
                }
                Err(e) => tally.errors.push(format!("{kind:?}: {e}")),
            }
        }
    }
    // The last answer may have closed the connection silently too.
    let health = RawRequest::new("GET", "/health", b"");
    if let Err(e) = client.send(&health).await {
        tally.errors.push(format!("final /health: {e}"));
    }
    tally.connects = client.connects;
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_hammering_past_every_limit_see_no_broken_connection() {
    let app = spawn_with(config(), Clock::System, None).await;
    let admin = token(json!({"role": "admin", "sub": "setup"}));
    let body = session_body("per_participant", 2, 600_000);
    let busy = body["session_id"].as_str().unwrap().to_owned();
    let created = app
        .call_as(Some(&admin), Method::POST, "/v1/sessions", Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let started = app
        .call_as(
            Some(&admin),
            Method::POST,
            &format!("/v1/sessions/{busy}/start"),
            None,
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.text);

    let scene = Scene {
        base: app.base.clone(),
        switcher: (0..CLIENTS)
            .map(|i| token(json!({"role": "service", "sub": format!("switcher-{i}")})))
            .collect(),
        flood: token(json!({"role": "service", "sub": "flood"})),
        forged: token_with(
            json!({"role": "admin"}),
            b"another-secret-another-secret-xx",
        ),
        viewer: token(json!({"role": "viewer", "sid": busy})),
        uploader: token(json!({"role": "admin", "sub": "uploader"})),
        malformed: token(json!({"role": "service", "sub": "malformed"})),
        big: vec![b' '; 2 * MAX_BODY],
        busy,
    };
    let tallies = futures_util::future::join_all((0..CLIENTS).map(|i| run_client(&scene, i))).await;

    let mut statuses = BTreeMap::<(Kind, u16), usize>::new();
    let mut closes = BTreeMap::<Kind, usize>::new();
    let mut errors = Vec::new();
    let mut connects = 0;
    for t in tallies {
        for (k, n) in t.statuses {
            *statuses.entry(k).or_default() += n;
        }
        for (k, n) in t.closes {
            *closes.entry(k).or_default() += n;
        }
        errors.extend(t.errors);
        connects += t.connects;
    }
    assert!(
        errors.is_empty(),
        "{} connection errors, first ones: {:#?}\nstatuses: {statuses:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );

    // Every limit was passed, every refusal given.
    let seen = |kind: Kind, status: u16| statuses.get(&(kind, status)).copied().unwrap_or(0);
    for (kind, status) in [
        (Kind::Switch, 429),
        (Kind::Flood, 404),
        (Kind::Flood, 429),
        (Kind::NoToken, 401),
        (Kind::Forged, 401),
        (Kind::Viewer, 403),
        (Kind::BadPath, 400),
        (Kind::NotJson, 400),
        (Kind::Oversized, 413),
        (Kind::Huge, 413),
        (Kind::NoRoute, 404),
        (Kind::Chunked, 404),
    ] {
        assert!(
            seen(kind, status) > 0,
            "no {status} for {kind:?}: {statuses:?}"
        );
    }
    // A small unread body is drained and the connection kept; only the huge
    // one, never sent, costs the connection (announced).
    let requests = CLIENTS * ROUNDS;
    assert_eq!(
        closes.get(&Kind::Huge).copied(),
        Some(requests),
        "{closes:?}"
    );
    assert_eq!(closes.len(), 1, "only the huge body closes: {closes:?}");
    assert_eq!(connects, CLIENTS + requests, "one reconnect per huge body");
}

#[tokio::test]
async fn a_refused_body_that_never_comes_costs_the_connection_announced() {
    let app = spawn_with(config(), Clock::System, None).await;
    let mut client = RawClient::new(&app.base);
    // Ten bytes declared, none sent, no `Expect`: a stalled upload.
    let mut req = RawRequest::new("POST", "/no/such/route", b"");
    req.declared_length = Some(10);
    let asked = Instant::now();
    let reply = client.send(&req).await.expect("an answer");
    assert_eq!(reply.status, 404);
    assert!(reply.closes(), "{:?}", reply.headers);
    // Answered once the wait for the body ran out, not at the request timeout.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // The next request reconnects, and a body-less one keeps its connection.
    let health = RawRequest::new("GET", "/health", b"");
    for _ in 0..3 {
        let reply = client.send(&health).await.expect("an answer");
        assert_eq!(reply.status, 200);
        assert!(!reply.closes());
    }
    assert_eq!(client.connects, 2);
}
