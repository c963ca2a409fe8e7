//! Fan-out latency with a lean client (cross-check of loadtest/fanout.js,
//! whose JavaScript handlers saturate a core at 1,000 sockets on a 2-core box).
//!
//!   cargo run --release --example fanout_ws -- <session-id> <subscribers> <switches> http://127.0.0.1:3000 [http://…]
//!
//! Opens the subscribers spread over the instances, then switches the session
//! every 100 ms on the first instance, and prints percentiles of receive time
//! minus the write's commit instant (`state.updated_at`; one machine, one clock).

use std::time::Duration;

use futures_util::StreamExt;
use synckairos::clock::Clock;
use synckairos::domain::Timestamp;
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: fanout_ws <session-id> <subscribers> <switches> <http://instance>...");
        std::process::exit(2);
    }
    let (session, subscribers, switches) = (
        &args[1],
        args[2].parse::<usize>().unwrap(),
        args[3].parse::<usize>().unwrap(),
    );
    let bases = &args[4..];

    let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
    for i in 0..subscribers {
        let url = format!(
            "{}/ws?sessionId={session}",
            bases[i % bases.len()].replacen("http", "ws", 1)
        );
        let (mut ws, _) = connect_async(&url).await.expect("connect");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue }; // pings are answered by tungstenite
                let received = Clock::System.now().ms();
                // Cheap on purpose, so the client measures the server, not its
                // own JSON parsing: messages start with their type, and the
                // state's `updated_at` is the commit instant.
                let text = text.as_str();
                if !text.starts_with(r#"{"type":"STATE_UPDATE""#) {
                    continue;
                }
                let committed = text
                    .split_once(r#""updated_at":""#)
                    .and_then(|(_, rest)| rest.get(..24))
                    .and_then(Timestamp::parse_rfc3339);
                if let Some(committed) = committed {
                    let _ = tx.send(received - committed.ms());
                }
            }
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = reqwest::Client::new();
    let switch = format!("{}/v1/sessions/{session}/switch", bases[0]);
    for _ in 0..switches {
        let _ = client.post(&switch).send().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut samples = Vec::new();
    while let Ok(ms) = rx.try_recv() {
        samples.push(ms);
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "updates={} expected={} p50={}ms p90={}ms p99={}ms max={}ms",
        samples.len(),
        subscribers * switches,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples.last().copied().unwrap_or(-1)
    );
}
