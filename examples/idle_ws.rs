//! Opens many idle WebSocket connections to one SyncKairos instance and holds
//! them, for measuring memory per idle connection (loadtest/bench-idle.sh).
//!
//!   cargo run --release --example idle_ws -- ws://127.0.0.1:3000 <session-id> 10000 60
//!
//! Connections come from 127.0.0.1, 127.0.0.2, … (20,000 per source address),
//! since one source address has only ~28k ephemeral ports. Traffic stays on
//! the loopback range. CONCURRENCY (default 256) handshakes run at once, so a
//! server can be filled "32 at a time" or "200 at a time".

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpSocket;
use tokio_tungstenite::client_async;

const PER_SOURCE: usize = 20_000;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(session), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: idle_ws <ws://host:port> <session-id> <count> [hold-seconds]");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("count is a number");
    let hold: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(30);
    let hostport = base.trim_start_matches("ws://").to_owned();
    let target: SocketAddr = hostport.parse().expect("ws://<ip>:<port>");
    let url = format!("{base}/ws?sessionId={session}");
    let concurrency: usize = std::env::var("CONCURRENCY")
        .ok()
        .map(|c| c.parse().expect("CONCURRENCY is a number"))
        .unwrap_or(256)
        .max(1);

    let mut open = Vec::with_capacity(count);
    let mut pending = FuturesUnordered::new();
    let mut failed = 0usize;
    for i in 0..count {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8);
        let url = url.clone();
        pending.push(async move {
            let socket = TcpSocket::new_v4().ok()?;
            // The first source is the default one; binding it would only slow
            // connecting down (bind searches its own port for each socket).
            if i >= PER_SOURCE {
                socket.bind(SocketAddr::new(source.into(), 0)).ok()?;
            }
            let stream = socket.connect(target).await.ok()?;
            client_async(url, stream).await.ok().map(|(ws, _)| ws)
        });
        if pending.len() >= concurrency
            && let Some(done) = pending.next().await
        {
            match done {
                Some(ws) => open.push(ws),
                None => failed += 1,
            }
        }
    }
    while let Some(done) = pending.next().await {
        match done {
            Some(ws) => open.push(ws),
            None => failed += 1,
        }
    }
    println!("open={} failed={failed}", open.len());
    // Hold them idle (the client answers nothing: heartbeats are the server's
    // business; set WS_PING_INTERVAL_MS high for this measurement).
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(open);
}
