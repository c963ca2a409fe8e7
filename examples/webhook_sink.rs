//! A webhook receiver for measuring deliveries (loadtest/bench-webhooks.sh):
//! answers every POST with 204 and, once it has received `expect` distinct
//! events (by `webhook-id`) or nothing for 3 s after the first, prints one
//! JSON line: how many, duplicates, the
//! delivery rate, and the latency from each event's instant (its body's
//! `timestamp`) to its receipt, p50 / p99 / max.
//!
//!   cargo run --release --example webhook_sink -- 127.0.0.1:9400 20000

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use synckairos::domain::Timestamp;
use tokio::sync::Notify;

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    duplicates: usize,
    latencies_ms: Vec<i64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

struct Sink {
    seen: Mutex<Seen>,
    expect: usize,
    done: Notify,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(expect)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: webhook_sink <host:port> <events expected>");
        std::process::exit(2);
    };
    let sink = Arc::new(Sink {
        seen: Mutex::new(Seen::default()),
        expect,
        done: Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(addr.as_str())
        .await
        .expect("bind");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Done when all arrived, or when they stopped coming.
    loop {
        let quiet = tokio::time::sleep(std::time::Duration::from_secs(3));
        tokio::select! {
            _ = sink.done.notified() => break,
            _ = quiet => {
                let seen = sink.seen.lock().unwrap();
                if seen.last.is_some_and(|at| at.elapsed().as_secs() >= 3) {
                    break;
                }
            }
        }
    }
    let seen = sink.seen.lock().unwrap();
    let mut lat = seen.latencies_ms.clone();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let span = match (seen.first, seen.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "{}",
        serde_json::json!({
            "events": seen.ids.len(),
            "duplicates": seen.duplicates,
            "seconds": span,
            "per_second": seen.ids.len() as f64 / span.max(1e-9),
            "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": lat[lat.len() - 1]},
        })
    );
}

async fn receive(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let at = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| Timestamp::parse_rfc3339(b["timestamp"].as_str()?));
    let mut seen = sink.seen.lock().unwrap();
    let instant = Instant::now();
    seen.first.get_or_insert(instant);
    seen.last = Some(instant);
    if seen.ids.insert(id) {
        if let Some(at) = at {
            seen.latencies_ms.push(now - at.ms());
        }
    } else {
        seen.duplicates += 1;
    }
    if seen.ids.len() >= sink.expect {
        sink.done.notify_one();
    }
    StatusCode::NO_CONTENT
}
