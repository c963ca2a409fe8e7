//! `AUTH_MODE=jwt` over real HTTP and WebSocket: every cell of the
//! authorisation matrix, the tokens that must never pass (missing, expired,
//! forged, another session's, `alg: none`, an HS/RS swap), turn ownership,
//! minted tokens, and a socket closed when its token expires.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use synckairos::clock::Clock;
use synckairos::config::{AuthMode, Config};

use common::ws::WsClient;
use common::{Reply, TestApp, participant_ids, session_body, spawn_with, test_config};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn jwt_config() -> Config {
    let mut config = test_config();
    config.auth_mode = AuthMode::Jwt;
    config.jwt_secret = Some(SECRET.parse().unwrap());
    config
}

async fn spawn_jwt() -> TestApp {
    spawn_with(jwt_config(), Clock::System, None).await
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for an hour, plus `extra`.
fn claims(extra: Value) -> Value {
    let mut c = json!({ "exp": now_s() + 3600 });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn signed(claims: &Value) -> String {
    hs256(claims, SECRET.as_bytes())
}

/// An unsigned token (`alg: none`), as an attacker would send it.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

/// Who calls, in the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    Service,
    /// The participant whose turn it is.
    Active,
    /// The other participant.
    Waiting,
    Viewer,
    /// A participant token for another session.
    Stranger,
    NoToken,
    Expired,
    Forged,
    AlgNone,
}

const EVERYONE: [Who; 10] = [
    Who::Admin,
    Who::Service,
    Who::Active,
    Who::Waiting,
    Who::Viewer,
    Who::Stranger,
    Who::NoToken,
    Who::Expired,
    Who::Forged,
    Who::AlgNone,
];

fn token(who: Who, sid: &str, pids: &[String]) -> Option<String> {
    let other = common::uuid();
    let c = match who {
        Who::NoToken => return None,
        Who::Admin => claims(json!({"role": "admin", "sub": "ops"})),
        Who::Service => claims(json!({"role": "service", "sub": "game-backend"})),
        Who::Active => claims(json!({"role": "participant", "sid": sid, "pid": pids[0]})),
        Who::Waiting => claims(json!({"role": "participant", "sid": sid, "pid": pids[1]})),
        Who::Viewer => claims(json!({"role": "viewer", "sid": sid})),
        Who::Stranger => claims(json!({"role": "participant", "sid": other, "pid": pids[0]})),
        // Past the 5 s leeway.
        Who::Expired => json!({"role": "admin", "exp": now_s() - 60}),
        Who::Forged => {
            return Some(hs256(
                &claims(json!({"role": "admin"})),
                b"another-secret-another-secret-xx",
            ));
        }
        Who::AlgNone => return Some(unsigned(&claims(json!({"role": "admin"})))),
    };
    Some(signed(&c))
}

/// What the matrix allows: `true` = the role may.
fn allowed(op: &str, who: Who) -> bool {
    let operator = matches!(who, Who::Admin | Who::Service);
    let scoped = operator || matches!(who, Who::Active | Who::Waiting | Who::Viewer);
    match op {
        "create" | "delete" | "start" | "pause" | "resume" | "complete" | "tokens" => operator,
        "switch" => operator || who == Who::Active,
        "get" | "events" | "ws" => scoped,
        _ => unreachable!("{op}"),
    }
}

/// The status a refused caller gets.
fn refusal(who: Who) -> u16 {
    match who {
        Who::NoToken | Who::Expired | Who::Forged | Who::AlgNone => 401,
        _ => 403,
    }
}

/// A session created by the admin, in the status `op` needs.
async fn prepared(app: &TestApp, op: &str) -> (String, Vec<String>) {
    let admin = token(Who::Admin, "", &[]).unwrap();
    let body = session_body("per_participant", 2, 600_000);
    let sid = body["session_id"].as_str().unwrap().to_owned();
    let created = app
        .call_as(Some(&admin), Method::POST, "/v1/sessions", Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let pids = participant_ids(created.data());
    let setup: &[&str] = match op {
        "start" | "create" => &[],
        "resume" => &["start", "pause"],
        _ => &["start"],
    };
    for cmd in setup {
        let r = app
            .call_as(
                Some(&admin),
                Method::POST,
                &format!("/v1/sessions/{sid}/{cmd}"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{cmd}: {}", r.text);
    }
    (sid, pids)
}

async fn attempt(app: &TestApp, op: &str, who: Who, sid: &str, pids: &[String]) -> u16 {
    let t = token(who, sid, pids);
    let t = t.as_deref();
    let r: Reply = match op {
        "create" => {
            let body = session_body("per_participant", 2, 600_000);
            app.call_as(t, Method::POST, "/v1/sessions", Some(body))
                .await
        }
        "get" => {
            app.call_as(t, Method::GET, &format!("/v1/sessions/{sid}"), None)
                .await
        }
        "delete" => {
            app.call_as(t, Method::DELETE, &format!("/v1/sessions/{sid}"), None)
                .await
        }
        "events" => {
            app.call_as(t, Method::GET, &format!("/v1/sessions/{sid}/events"), None)
                .await
        }
        "tokens" => {
            let body = json!({"role": "viewer"});
            app.call_as(
                t,
                Method::POST,
                &format!("/v1/sessions/{sid}/tokens"),
                Some(body),
            )
            .await
        }
        "ws" => {
            let url = format!("{}/ws?sessionId={sid}", app.base.replacen("http", "ws", 1));
            return match WsClient::try_connect(&url, t).await {
                Ok(_) => 101,
                Err(status) => status,
            };
        }
        cmd => {
            app.call_as(t, Method::POST, &format!("/v1/sessions/{sid}/{cmd}"), None)
                .await
        }
    };
    if r.status.as_u16() == 401 {
        assert_eq!(r.code(), "UNAUTHORIZED", "{op} {who:?}");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    if r.status.as_u16() == 403 {
        assert_eq!(r.code(), "FORBIDDEN", "{op} {who:?}");
    }
    r.status.as_u16()
}

#[tokio::test]
async fn every_cell_of_the_authorisation_matrix() {
    let app = spawn_jwt().await;
    let ops = [
        "create", "get", "delete", "start", "pause", "resume", "complete", "switch", "events",
        "tokens", "ws",
    ];
    let mut wrong = Vec::new();
    for op in ops {
        for who in EVERYONE {
            let (sid, pids) = prepared(&app, op).await;
            let status = attempt(&app, op, who, &sid, &pids).await;
            let ok = match op {
                "create" | "tokens" => 201,
                "delete" => 204,
                "ws" => 101,
                // Authorised, then refused by the deployment: no audit trail.
                "events" => 503,
                _ => 200,
            };
            let expected = if allowed(op, who) { ok } else { refusal(who) };
            if status != expected {
                wrong.push(format!("{op} as {who:?}: {status}, expected {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn a_participant_passes_only_its_own_turn() {
    let app = spawn_jwt().await;
    let (sid, pids) = prepared(&app, "switch").await;
    let first = token(Who::Active, &sid, &pids);
    let second = token(Who::Waiting, &sid, &pids);
    let path = format!("/v1/sessions/{sid}/switch");

    let early = app
        .call_as(second.as_deref(), Method::POST, &path, None)
        .await;
    assert_eq!(early.status, 403);
    assert_eq!(early.body["error"]["details"]["reason"], "NOT_YOUR_TURN");
    let r = app
        .call_as(first.as_deref(), Method::POST, &path, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["active_participant_id"], pids[1].as_str());
    // Now the turn is the second participant's, and the first's is refused.
    let again = app
        .call_as(first.as_deref(), Method::POST, &path, None)
        .await;
    assert_eq!(again.body["error"]["details"]["reason"], "NOT_YOUR_TURN");
    let r = app
        .call_as(second.as_deref(), Method::POST, &path, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn minted_tokens_are_scoped_and_checked() {
    let app = spawn_jwt().await;
    let (sid, pids) = prepared(&app, "switch").await;
    let service = token(Who::Service, &sid, &pids);
    let mint = |body: Value| {
        let path = format!("/v1/sessions/{sid}/tokens");
        let service = service.clone();
        let app = &app;
        async move {
            app.call_as(service.as_deref(), Method::POST, &path, Some(body))
                .await
        }
    };
    let r =
        mint(json!({"role": "participant", "participant_id": pids[0], "ttl_seconds": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let minted = r.data()["token"].as_str().unwrap().to_owned();
    let exp_ms = r.data()["expires_at_ms"].as_u64().unwrap();
    assert!(exp_ms.abs_diff((now_s() + 60) * 1000) <= 2000, "{exp_ms}");
    // The minted participant token switches on its turn only.
    let path = format!("/v1/sessions/{sid}/switch");
    let r = app.call_as(Some(&minted), Method::POST, &path, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.call_as(Some(&minted), Method::POST, &path, None).await;
    assert_eq!(r.status, 403);
    // ...and cannot drive the session.
    let r = app
        .call_as(
            Some(&minted),
            Method::POST,
            &format!("/v1/sessions/{sid}/pause"),
            None,
        )
        .await;
    assert_eq!(r.status, 403);

    for (body, field) in [
        (json!({"role": "participant"}), "participant_id"),
        (
            json!({"role": "participant", "participant_id": common::uuid()}),
            "participant_id",
        ),
        (
            json!({"role": "viewer", "participant_id": pids[0]}),
            "participant_id",
        ),
        (json!({"role": "admin"}), "role"),
        (json!({"role": "viewer", "ttl_seconds": 0}), "ttl_seconds"),
        (
            json!({"role": "viewer", "ttl_seconds": 86_401}),
            "ttl_seconds",
        ),
    ] {
        let r = mint(body.clone()).await;
        assert_eq!(
            (r.status.as_u16(), r.fields()),
            (400, vec![field.to_owned()]),
            "{body}"
        );
    }
    // An unknown session: 404, no token.
    let r = app
        .call_as(
            service.as_deref(),
            Method::POST,
            &format!("/v1/sessions/{}/tokens", common::uuid()),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_socket_is_closed_with_4001_when_its_token_expires() {
    let app = spawn_jwt().await;
    let (sid, pids) = prepared(&app, "get").await;
    // Valid for two more seconds (the handshake allows 5 s of leeway, the
    // socket does not).
    let short = signed(&json!({"role": "viewer", "sid": sid, "exp": now_s() + 2}));
    let url = format!(
        "{}/ws?sessionId={sid}&token={short}",
        app.base.replacen("http", "ws", 1)
    );
    let mut ws = WsClient::connect(&url).await;
    ws.next_of("STATE_SYNC").await;
    let (closed, _) = ws.until_closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4001, "token expired")
    );
    // A token for the session in the query works as the header does; one
    // for another session is refused before the upgrade.
    let other = token(Who::Stranger, &sid, &pids).unwrap();
    let url = format!(
        "{}/ws?sessionId={sid}&token={other}",
        app.base.replacen("http", "ws", 1)
    );
    assert_eq!(WsClient::try_connect(&url, None).await.err(), Some(403));
}

#[tokio::test]
async fn public_keys_verify_their_own_algorithm_and_refuse_a_swap() {
    for (key, private, alg) in [
        ("rsa-public.pem", "rsa-private.pem", Algorithm::RS256),
        (
            "ed25519-public.pem",
            "ed25519-private.pem",
            Algorithm::EdDSA,
        ),
    ] {
        let mut config = test_config();
        config.auth_mode = AuthMode::Jwt;
        config.jwt_public_key = Some(fixture(key));
        let app = spawn_with(config, Clock::System, None).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        };
        let admin = claims(json!({"role": "admin"}));
        let good = jsonwebtoken::encode(&Header::new(alg), &admin, &encoding).unwrap();
        // The classic confusion: HS256 keyed with the public key's PEM bytes.
        let public = std::fs::read(fixture(key)).unwrap();
        let swapped = hs256(&admin, &public);
        let body = session_body("per_participant", 2, 600_000);
        for (t, expected) in [(good, 201), (swapped, 401), (unsigned(&admin), 401)] {
            let r = app
                .call_as(Some(&t), Method::POST, "/v1/sessions", Some(body.clone()))
                .await;
            assert_eq!(r.status.as_u16(), expected, "{alg:?}: {}", r.text);
            if expected == 201 {
                // Without a shared secret the server cannot mint tokens.
                let sid = body["session_id"].as_str().unwrap();
                let m = app
                    .call_as(
                        Some(&t),
                        Method::POST,
                        &format!("/v1/sessions/{sid}/tokens"),
                        Some(json!({"role": "viewer"})),
                    )
                    .await;
                assert_eq!(m.status, 403, "{}", m.text);
            }
        }
    }
}

#[tokio::test]
async fn operational_routes_stay_open_and_none_mode_needs_no_token() {
    let app = spawn_jwt().await;
    for path in ["/health", "/ready", "/v1/time", "/metrics", "/openapi.yaml"] {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    // AUTH_MODE=none: no token needed, and a bad one is not even read.
    let open = spawn_with(test_config(), Clock::System, None).await;
    let body = session_body("per_participant", 2, 600_000);
    let r = open
        .call_as(Some("garbage"), Method::POST, "/v1/sessions", Some(body))
        .await;
    assert_eq!(r.status, 201);
}

#[test]
fn a_jwt_configuration_without_a_usable_key_fails_clearly() {
    use synckairos::auth::Auth;
    let mut config = jwt_config();
    config.jwt_secret = None;
    let err = |c: &Config| Auth::from_config(c).err().map(|e| e.to_string());
    assert_eq!(
        err(&config).as_deref(),
        Some("AUTH_MODE=jwt needs JWT_SECRET or JWT_PUBLIC_KEY")
    );
    config.jwt_secret = Some("short".parse().unwrap());
    assert_eq!(
        err(&config).as_deref(),
        Some("JWT_SECRET must be at least 32 bytes")
    );
    config.jwt_secret = None;
    config.jwt_public_key = Some(format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR")));
    assert!(
        err(&config)
            .unwrap()
            .contains("is not an RSA or Ed25519 public key")
    );
    config.jwt_public_key = Some(fixture("missing.pem"));
    assert!(
        err(&config)
            .unwrap()
            .starts_with("cannot read JWT_PUBLIC_KEY")
    );
    config.jwt_secret = Some(SECRET.parse().unwrap());
    assert_eq!(
        err(&config).as_deref(),
        Some("set only one of JWT_SECRET and JWT_PUBLIC_KEY")
    );
    // The secret never shows in the configuration's debug form.
    let shown = format!("{:?}", jwt_config());
    assert!(!shown.contains(SECRET), "{shown}");
}

#[tokio::test]
async fn the_rate_limit_counts_each_token_subject_on_its_own() {
    // Same address, two subjects: each has its own budget of 2 a minute.
    let mut config = jwt_config();
    config.rate_limit_general = 2;
    let app = spawn_with(config, Clock::System, None).await;
    let path = format!("/v1/sessions/{}", common::uuid());
    let alice = signed(&claims(json!({"role": "service", "sub": "alice"})));
    let bob = signed(&claims(json!({"role": "service", "sub": "bob"})));
    for _ in 0..2 {
        let r = app.call_as(Some(&alice), Method::GET, &path, None).await;
        assert_eq!(r.status, 404);
    }
    let r = app.call_as(Some(&alice), Method::GET, &path, None).await;
    assert_eq!(r.status, 429);
    let r = app.call_as(Some(&bob), Method::GET, &path, None).await;
    assert_eq!(r.status, 404, "bob's budget is his own: {}", r.text);
}
