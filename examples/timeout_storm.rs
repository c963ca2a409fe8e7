//! Timeout detection lag: the benchmark behind docs/PERFORMANCE.md ("Server-side
//! timeouts"), run by loadtest/bench-timeouts.sh.
//!
//!   cargo run --release --example timeout_storm -- <sessions> <window-ms> <lead-ms> http://127.0.0.1:3000 [http://…]
//!   cargo run --release --example timeout_storm -- hold <sessions> http://127.0.0.1:3000 [http://…]
//!
//! `hold` only sets up running sessions with deadlines an hour away (the due
//! sets of a busy deployment in which nothing is due yet) and exits. Otherwise it creates and starts `sessions` one-participant sessions (spread over the
//! instances) whose deadlines fall evenly over `window-ms`, starting `lead-ms`
//! after launch (a window of 0 gives them all the same deadline, like an exam).
//! Nobody calls switch. Once every deadline has passed it reads each session
//! back and reports the lag of each timeout: the expiring write's commit instant
//! (`updated_at`) minus the deadline (`session_completed_at`, set to the
//! deadline by the server). One machine, one clock. It also checks that each
//! session expired exactly once (version 3: created, started, expired).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use synckairos::clock::Clock;
use synckairos::domain::Timestamp;

/// Requests in flight while setting up and reading back.
const CONCURRENCY: usize = 64;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold = args.first().is_some_and(|a| a == "hold");
    let parsed = match (hold, args.as_slice()) {
        (true, [_, n, bases @ ..]) if !bases.is_empty() => {
            n.parse().ok().map(|n| (n, 0, 3_600_000, bases))
        }
        (false, [n, window, lead, bases @ ..]) if !bases.is_empty() => (|| {
            Some((
                n.parse().ok()?,
                window.parse().ok()?,
                lead.parse().ok()?,
                bases,
            ))
        })(),
        _ => None,
    };
    let Some((sessions, window_ms, lead_ms, bases)): Option<(usize, i64, i64, &[String])> = parsed
    else {
        eprintln!("usage: timeout_storm <sessions> <window-ms> <lead-ms> <http://instance>...");
        eprintln!("       timeout_storm hold <sessions> <http://instance>...");
        std::process::exit(2);
    };
    let client = reqwest::Client::new();
    let first_deadline = Clock::System.now().ms() + lead_ms;

    // Set-up: deadline i lands at first_deadline + i * window / sessions.
    let ids: Vec<String> = futures_util::stream::iter(0..sessions)
        .map(|i| {
            let (client, base) = (&client, &bases[i % bases.len()]);
            async move {
                let id = uuid::Uuid::new_v4().to_string();
                let deadline = first_deadline + window_ms * i as i64 / sessions.max(1) as i64;
                let body = json!({
                    "session_id": id,
                    "sync_mode": "per_participant",
                    "total_time_ms": 86_400_000,
                    // Set up a little ahead: the start below happens soon after.
                    "participants": [{
                        "participant_id": uuid::Uuid::new_v4().to_string(),
                        "participant_index": 0,
                        "total_time_ms": (deadline - Clock::System.now().ms()).max(1_000),
                    }],
                });
                post(client, &format!("{base}/v1/sessions"), Some(body)).await?;
                post(client, &format!("{base}/v1/sessions/{id}/start"), None).await?;
                Some(id)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|id| async move { id })
        .collect()
        .await;
    let set_up = Clock::System.now().ms();
    println!(
        "set up {} of {sessions} sessions in {} ms; first deadline {} ms after set-up",
        ids.len(),
        set_up - (first_deadline - lead_ms),
        first_deadline - set_up
    );
    if hold {
        return;
    }

    let last_deadline = first_deadline + window_ms;
    let wait = last_deadline + 2_000 - Clock::System.now().ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;

    // Read back: (lag ms, version) of each session, None if not expired.
    let results: Vec<Option<(i64, i64)>> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let (client, base) = (&client, &bases[i % bases.len()]);
            async move {
                let state: Value = client
                    .get(format!("{base}/v1/sessions/{id}"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let state = &state["data"];
                if state["status"] != "expired" {
                    return None;
                }
                let at = |field: &str| state[field].as_str().and_then(Timestamp::parse_rfc3339);
                let lag = at("updated_at")?.ms() - at("session_completed_at")?.ms();
                Some((lag, state["version"].as_i64()?))
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;

    let expired: Vec<(i64, i64)> = results.iter().flatten().copied().collect();
    let exactly_once = expired.iter().filter(|(_, v)| *v == 3).count();
    let mut lags: Vec<i64> = expired.iter().map(|(lag, _)| *lag).collect();
    lags.sort_unstable();
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "expired={} of {} (version 3: {exactly_once}) lag p50={}ms p90={}ms p99={}ms max={}ms",
        expired.len(),
        ids.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lags.last().copied().unwrap_or(-1)
    );
}

/// POSTs and returns `Some` on a 2xx, reporting anything else.
async fn post(client: &reqwest::Client, url: &str, body: Option<Value>) -> Option<()> {
    let request = client.post(url);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => Some(()),
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            None
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            None
        }
    }
}
