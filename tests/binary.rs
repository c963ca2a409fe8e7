//! The `synckairos` binary as an operator runs it: configuration from the
//! environment, one start-up line, clean shutdown on SIGTERM, one clear line
//! on bad configuration.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::process::{Instance, binary};

#[tokio::test]
async fn serves_with_no_configuration_and_stops_cleanly_on_sigterm() {
    let server = Instance::start(&[]);
    // The start-up line names the backend and the bound address.
    assert_eq!(server.started["message"], "synckairos listening");
    assert_eq!(server.started["backend"], "memory");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{}/health", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        log.iter().any(|l| l.contains("synckairos stopped")),
        "{log:?}"
    );
}

/// The body of a plain HTTP/1.1 GET on a fresh connection.
fn get(addr: &str, path: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

#[test]
fn a_stalled_client_does_not_hold_shutdown_beyond_the_grace_period() {
    let server = Instance::start(&[("SHUTDOWN_GRACE_SECONDS", "1")]);
    // A connection the server is serving (a first request answered on it),
    // then a request on it whose body never arrives.
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answered = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&answered).contains("\"ok\"}") {
        let n = stalled.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before /health answered");
        answered.extend_from_slice(&buf[..n]);
    }
    stalled
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    // Wait until the server is inside that request (in flight: it and the
    // /metrics request asking), or the signal could beat its headers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::metric(
        &get(&server.addr(), "/metrics"),
        "synckairos_http_requests_in_flight",
    ) < 2.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled request never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // It exits by itself while the client still holds the connection.
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(log.iter().any(|l| l.contains("grace period")), "{log:?}");
    drop(stalled);
}

#[test]
fn bad_configuration_fails_with_one_clear_line_and_no_backtrace() {
    // A malformed webhook secret stops the start-up without showing it.
    let out = binary()
        .env("WEBHOOK_URL", "http://127.0.0.1:9/hooks")
        .env("WEBHOOK_SECRET", "not-a-whsec-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("whsec_"), "{err}");
    assert!(
        !err.contains("not-a-whsec-secret"),
        "the secret leaked: {err}"
    );

    for (var, value, expect) in [
        ("PORT", "not-a-port", "invalid value 'not-a-port'"),
        ("SESSION_TTL_SECONDS", "0", "SESSION_TTL_SECONDS"),
        ("LOG_FORMAT", "xml", "invalid value 'xml'"),
        ("REDIS_URL", "mysql://nope", "invalid REDIS_URL"),
        ("DATABASE_URL", "mysql://nope", "invalid DATABASE_URL"),
        ("MIGRATE", "maybe", "invalid value 'maybe'"),
        (
            "WEBHOOK_URL",
            "http://127.0.0.1:9/hooks",
            "WEBHOOK_SECRET is required",
        ),
        (
            "WEBHOOK_SECRET",
            "whsec_c3luY2thaXJvcy13ZWJob29rcy10ZXN0cw==",
            "neither WEBHOOK_URL",
        ),
        ("WEBHOOK_RETRY_SCHEDULE", "5 days", "WEBHOOK_RETRY_SCHEDULE"),
    ] {
        let out = binary().env(var, value).output().unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{var}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}
