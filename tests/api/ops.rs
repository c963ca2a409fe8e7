//! Operational endpoints, and the OpenAPI document against the router.

use std::collections::BTreeSet;

use crate::common::*;

#[tokio::test]
async fn time_health_and_ready() {
    let app = spawn_app_manual_clock().await;
    let t = app.get("/v1/time").await;
    assert_eq!(t.status, 200);
    assert_eq!(t.body["timestamp_ms"], T0.ms());
    assert_eq!(t.body["server_version"], "2.0.0");
    assert_eq!(t.body["drift_tolerance_ms"], 50);
    assert!(t.body.get("data").is_none(), "plain object, no envelope");

    assert_eq!(
        app.get("/health").await.body,
        serde_json::json!({"status": "ok"})
    );
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status.as_u16(), ready.body["status"].as_str()),
        (200, Some("ready"))
    );
}

#[tokio::test]
async fn metrics_expose_request_histograms_with_buckets() {
    let app = spawn_app().await;
    app.get("/health").await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        m.text
            .contains("synckairos_http_request_duration_seconds_bucket{"),
        "histogram with buckets, not a summary:\n{}",
        m.text
    );
    assert!(m.text.contains("route=\"/health\""));
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let app = spawn_app().await;
    let yaml = app.get("/openapi.yaml").await;
    assert_eq!(yaml.status, 200);
    let json = app.get("/api-docs.json").await;
    assert_eq!(json.status, 200);
    let doc = &json.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let from_yaml: serde_json::Value = serde_norway::from_str(&yaml.text).unwrap();
    assert_eq!(&from_yaml, doc, "both forms are the same document");

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = synckairos::http::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(documented, served);

    // Every documented error code is one the server can produce, and vice versa.
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum");
    for code in [
        "VALIDATION_ERROR",
        "INVALID_STATE_TRANSITION",
        "SESSION_NOT_FOUND",
        "CONFLICT",
        "SESSION_EXISTS",
        "PAYLOAD_TOO_LARGE",
        "SERVICE_UNAVAILABLE",
        "INTERNAL_ERROR",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} undocumented");
    }
}

#[tokio::test]
async fn every_served_route_answers_and_none_falls_through() {
    let app = spawn_app().await;
    let id = uuid();
    for (method, path) in synckairos::http::routes() {
        let r = app
            .call(
                method.clone(),
                &path.replace("{id}", &id).replace("{file}", "app.js"),
                None,
            )
            .await;
        assert!(
            r.code() != "NOT_FOUND" && r.code() != "METHOD_NOT_ALLOWED",
            "{method} {path} is not routed: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_errors_repeat_it() {
    let app = spawn_app().await;
    let id_of = |r: &Reply| {
        r.headers["x-request-id"]
            .to_str()
            .expect("x-request-id on every response")
            .to_owned()
    };
    // Generated when the client sends none: unique, a UUID.
    let a = app.get("/health").await;
    let b = app.get("/v1/sessions/not-a-uuid").await;
    assert_eq!(b.status, 400);
    assert_ne!(id_of(&a), id_of(&b));
    assert!(uuid::Uuid::parse_str(&id_of(&b)).is_ok(), "{}", id_of(&b));
    assert_eq!(b.body["error"]["request_id"], id_of(&b).as_str());
    // The client's own is kept, echoed and quoted in the error body...
    let send = |value: String| {
        let req = app
            .client
            .get(format!("{}/v1/sessions/{}", app.base, uuid()))
            .header("x-request-id", value);
        async move { req.send().await.unwrap() }
    };
    let own = send("client-trace_42.a:b".into()).await;
    assert_eq!(own.status(), 404);
    assert_eq!(own.headers()["x-request-id"], "client-trace_42.a:b");
    let body: serde_json::Value = own.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "client-trace_42.a:b");
    // ...unless it is too long or not plain: then it is replaced.
    for bad in ["x".repeat(129), "a b".into(), "<script>".into()] {
        let r = send(bad.clone()).await;
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{bad:?} → {echoed}");
    }
}

#[tokio::test]
async fn a_client_trickling_headers_or_idling_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.header_read_timeout_ms = 300;
    let app = spawn_with(config, synckairos::clock::Clock::System, None).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    // Slowloris: a header line every 50 ms, never the blank line that ends them.
    let slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        slow_write
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let mut sent = 0u32;
        while slow_write.write_all(b"X-Pad: a\r\n").await.is_ok() && sent < 400 {
            sent += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        sent
    });
    // A connection that never sends anything.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();

    // Others are served meanwhile.
    assert_eq!(app.get("/health").await.status, 200);

    let read_to_end = |mut s: tokio::net::tcp::OwnedReadHalf| async move {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    let wait = std::time::Duration::from_secs(10);
    let answer = tokio::time::timeout(wait, read_to_end(slow_read))
        .await
        .expect("the server closes the trickling connection");
    assert!(
        !answer.contains("200 OK"),
        "no request was served: {answer}"
    );
    let sent = trickle.await.unwrap();
    assert!(sent < 400, "cut off while still trickling ({sent} lines)");

    let mut got = Vec::new();
    tokio::time::timeout(wait, idle.read_to_end(&mut got))
        .await
        .expect("the server closes the idle connection")
        .ok();
    assert_eq!(app.get("/health").await.status, 200);
}

#[tokio::test]
async fn the_demo_page_and_every_module_it_imports_are_served() {
    let app = spawn_app().await;
    let page = app.get("/demo").await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // Follow the module graph from the page: every import must be served as
    // JavaScript (a new SDK module not listed in src/http/demo.rs fails here).
    let mut pending = vec!["/demo/app.js".to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        for line in r.text.lines() {
            let Some(from) = line
                .split(" from ")
                .nth(1)
                .filter(|_| line.starts_with("import ") || line.starts_with("export "))
            else {
                continue;
            };
            let target = from.trim_matches(|c| c == '\'' || c == '"' || c == ';');
            pending.push(match target.strip_prefix("./") {
                Some(file) => format!("/demo/{file}"),
                None => target.to_owned(),
            });
        }
    }
    assert!(seen.contains("/demo/live.js"), "{seen:?}");
    let missing = app.get("/demo/nope.js").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "NOT_FOUND");
}
