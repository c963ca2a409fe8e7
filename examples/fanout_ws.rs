//! Fan-out latency with a lean client (issue 24; the numbers of
//! loadtest/bench-broadcast.sh and bench-fanout.sh). k6's JavaScript handlers
//! saturate a core near 1,000 sockets on a 2-core machine; this one does not.
//!
//!   cargo run --release --example fanout_ws -- <session-id> <subscribers> <switches> http://127.0.0.1:3000 [http://…]
//!
//! Opens the subscribers round-robin over the instances (a hand-made
//! handshake; from 127.0.0.1, 127.0.0.2, … on loopback, 20,000 per source
//! address), waits until every socket has its first message, then switches
//! the session every INTERVAL_MS on the first instance, waits SETTLE_MS,
//! closes every socket with a Close (1000) and prints one line:
//!
//!   updates=… expected=… p50=…ms p90=…ms p99=…ms max=…ms out_of_order=… clean_closes=…/… …
//!
//! Latency is the kernel's receive time of the read that completed a
//! STATE_UPDATE frame (SO_TIMESTAMPNS through recvmsg) minus the write's
//! commit instant `state.updated_at` (one machine, one clock): the client's
//! own scheduling does not count. The sockets are read by READERS plain
//! threads on epoll (no task per socket); frames are parsed by hand (server
//! frames are unmasked), pings answered with masked pongs. `out_of_order`
//! counts STATE_UPDATEs whose `state.version` did not rise on their socket;
//! `clean_closes` the sockets whose Close the server answered with a Close
//! within 2 s; `dropped` those the server closed or broke before that.
//!
//! Environment: INTERVAL_MS (100), SETTLE_MS (2000), CONNECT_CONCURRENCY
//! (256 handshakes at once), READERS (1 thread), FIRST_TIMEOUT_S (60).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const PER_SOURCE: usize = 20_000;
const CLOSE_WAIT: Duration = Duration::from_secs(2);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Shared between the main task and the reader threads.
#[derive(Default)]
struct Shared {
    /// Sockets that got their first message.
    first_seen: AtomicUsize,
    /// Time to send every socket a Close.
    closing: AtomicBool,
}

/// What one reader thread saw.
#[derive(Default)]
struct Stats {
    latencies: Vec<f64>,
    out_of_order: u64,
    sockets: usize,
    clean_closes: usize,
    dropped: usize,
    /// Reads that came without a kernel timestamp (timed on reading instead).
    untimed: usize,
}

struct Conn {
    stream: Option<std::net::TcpStream>,
    buf: Vec<u8>,
    seen_first: bool,
    last_update: Option<u64>,
    close_sent: bool,
}

impl Conn {
    fn send(&self, frame: &[u8]) {
        if let Some(mut s) = self.stream.as_ref() {
            let _ = s.write(frame); // non-blocking; a lost pong costs nothing here
        }
    }
}

/// A masked client frame (FIN) with a payload of at most 125 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, 0x80 | payload.len().min(125) as u8];
    out.extend_from_slice(&MASK);
    out.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4]),
    );
    out
}

/// "2026-01-02T03:04:05.678Z" → epoch ms.
fn parse_rfc3339_ms(s: &[u8]) -> Option<f64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(s.get(r)?).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut frac = 0.0;
    if s.get(19) == Some(&b'.') {
        let digits: Vec<u8> = s[20..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .copied()
            .collect();
        let text = std::str::from_utf8(&digits).ok()?;
        frac = format!("0.{text}").parse::<f64>().ok()? * 1000.0;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) as f64 + frac)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A text message: counts the first one; measures STATE_UPDATEs.
fn on_text(conn: &mut Conn, text: &[u8], at_ms: f64, shared: &Shared, stats: &mut Stats) {
    if !conn.seen_first {
        conn.seen_first = true;
        shared.first_seen.fetch_add(1, Ordering::Relaxed);
    }
    // Cheap on purpose: messages start with their type, and the state holds
    // the version and the commit instant once each.
    if !text.starts_with(br#"{"type":"STATE_UPDATE""#) {
        return;
    }
    let Some(state) = find(text, br#""state":{"#).map(|at| &text[at..]) else {
        return;
    };
    if let Some(at) = find(state, br#""updated_at":""#)
        && let Some(committed) = parse_rfc3339_ms(&state[at + 14..])
    {
        stats.latencies.push(at_ms - committed);
    }
    if let Some(at) = find(state, br#""version":"#) {
        let digits = state[at + 10..].iter().take_while(|c| c.is_ascii_digit());
        let version = digits.fold(0u64, |v, c| v * 10 + u64::from(c - b'0'));
        if conn.last_update.is_some_and(|last| version <= last) {
            stats.out_of_order += 1;
        }
        conn.last_update = Some(version);
    }
}

/// Handles the whole frames in `conn.buf`; false once the socket is done.
fn on_frames(conn: &mut Conn, at_ms: f64, shared: &Shared, stats: &mut Stats) -> bool {
    let mut used = 0;
    let mut open = true;
    loop {
        let buf = &conn.buf[used..];
        if buf.len() < 2 {
            break;
        }
        let (opcode, masked, short) = (buf[0] & 0x0f, buf[1] & 0x80 != 0, buf[1] & 0x7f);
        let (len, mut at) = match short {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        at += if masked { 4 } else { 0 };
        if buf.len() < at + len {
            break;
        }
        let payload = buf[at..at + len].to_vec();
        used += at + len;
        match opcode {
            0x1 => on_text(conn, &payload, at_ms, shared, stats),
            0x9 => conn.send(&client_frame(0xA, &payload)),
            0x8 => {
                if conn.close_sent {
                    stats.clean_closes += 1;
                } else {
                    stats.dropped += 1;
                    conn.send(&client_frame(0x8, &payload));
                }
                open = false;
                break;
            }
            _ => {}
        }
    }
    conn.buf.drain(..used);
    open
}

/// One reader thread: its sockets on one epoll, read with recvmsg to get the
/// kernel's receive timestamp of each read.
fn reader(new: std_mpsc::Receiver<(std::net::TcpStream, Vec<u8>)>, shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::default();
    // SAFETY: plain syscalls on descriptors this thread owns; buffers outlive them.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let mut conns: Vec<Conn> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut data = vec![0u8; 256 * 1024];
    let mut control = [0u64; 16];
    let mut open = 0usize;
    let mut close_deadline: Option<Instant> = None;
    let finish = |conn: &mut Conn, open: &mut usize| {
        if let Some(stream) = conn.stream.take() {
            // SAFETY: the descriptor is still open (dropped just after).
            unsafe {
                libc::epoll_ctl(
                    ep,
                    libc::EPOLL_CTL_DEL,
                    stream.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
            *open -= 1;
        }
    };
    loop {
        while let Ok((stream, leftover)) = new.try_recv() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: conns.len() as u64,
            };
            // SAFETY: a valid descriptor and event.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) };
            let mut conn = Conn {
                stream: Some(stream),
                buf: leftover,
                seen_first: false,
                last_update: None,
                close_sent: false,
            };
            open += 1;
            stats.sockets += 1;
            if !on_frames(&mut conn, now_ms(), &shared, &mut stats) {
                finish(&mut conn, &mut open);
            }
            conns.push(conn);
        }
        if close_deadline.is_none() && shared.closing.load(Ordering::Relaxed) {
            let close = client_frame(0x8, &1000u16.to_be_bytes());
            for conn in conns.iter_mut().filter(|c| c.stream.is_some()) {
                conn.send(&close);
                conn.close_sent = true;
            }
            close_deadline = Some(Instant::now() + CLOSE_WAIT);
        }
        if close_deadline.is_some_and(|d| open == 0 || Instant::now() >= d) {
            break;
        }
        // SAFETY: `events` has room for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 20) };
        for ev in &events[..n.max(0) as usize] {
            let conn = &mut conns[ev.u64 as usize];
            let Some(fd) = conn.stream.as_ref().map(|s| s.as_raw_fd()) else {
                continue;
            };
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // SAFETY: a zeroed msghdr is valid; its pointers are set below.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: msg points at live buffers of the sizes given.
            let got = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
            if got < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                continue;
            }
            if got <= 0 {
                // End of stream or an error: the server left without a Close.
                if !conn.close_sent {
                    stats.dropped += 1;
                }
                finish(conn, &mut open);
                continue;
            }
            let mut at_ms = None;
            // SAFETY: walking the control messages recvmsg filled in.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                    {
                        let ts: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                        at_ms = Some(ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6);
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            conn.buf.extend_from_slice(&data[..got as usize]);
            if at_ms.is_none() {
                stats.untimed += 1;
            }
            if !on_frames(conn, at_ms.unwrap_or_else(now_ms), &shared, &mut stats) {
                finish(conn, &mut open);
            }
        }
    }
    // SAFETY: our epoll descriptor.
    unsafe { libc::close(ep) };
    stats
}

/// Connects and upgrades one socket; returns it with what followed the 101.
async fn open(
    target: SocketAddr,
    source: Option<IpAddr>,
    request: Arc<String>,
) -> Option<(std::net::TcpStream, Vec<u8>)> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .ok()?;
    if let Some(source) = source {
        // The port is picked at connect (per destination), not by bind: with
        // thousands of sockets bind's own search is slow.
        set_int_option(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
        );
        socket.bind(SocketAddr::new(source, 0)).ok()?;
    }
    let mut stream = socket.connect(target).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let rc = set_int_option(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS);
    if rc != 0 {
        return None;
    }
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 16 * 1024 || stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    Some((stream.into_std().ok()?, buf.split_off(end)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: fanout_ws <session-id> <subscribers> <switches> <http://instance>...");
        std::process::exit(2);
    }
    let session = &args[1];
    let subscribers: usize = args[2].parse().expect("subscribers is a number");
    let switches: usize = args[3].parse().expect("switches is a number");
    let bases = &args[4..];
    let interval = Duration::from_millis(env_or("INTERVAL_MS", 100));
    let settle = Duration::from_millis(env_or("SETTLE_MS", 2000));
    let concurrency = env_or("CONNECT_CONCURRENCY", 256usize).max(1);
    let readers = env_or("READERS", 1usize).max(1);
    let first_timeout = Duration::from_secs(env_or("FIRST_TIMEOUT_S", 60));

    // Each instance: its address and its upgrade request.
    let mut targets = Vec::new();
    for base in bases {
        let hostport = base.trim_start_matches("http://").trim_end_matches('/');
        let addr = tokio::net::lookup_host(hostport)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .expect("an instance is http://host:port");
        let request = format!(
            "GET /ws?sessionId={session} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        targets.push((addr, Arc::new(request)));
    }

    let shared = Arc::new(Shared::default());
    let (mut feeds, mut threads) = (Vec::new(), Vec::new());
    for _ in 0..readers {
        let (tx, rx) = std_mpsc::channel();
        let shared = shared.clone();
        feeds.push(tx);
        threads.push(std::thread::spawn(move || reader(rx, shared)));
    }

    // Connect, CONNECT_CONCURRENCY handshakes at a time.
    let started = Instant::now();
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut pending = FuturesUnordered::new();
    let mut settle_one = |done: Option<(std::net::TcpStream, Vec<u8>)>| match done {
        Some(socket) => {
            let _ = feeds[connected % readers].send(socket);
            connected += 1;
        }
        None => failed += 1,
    };
    for i in 0..subscribers {
        let (target, request) = &targets[i % targets.len()];
        let source = target
            .ip()
            .is_loopback()
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8)))
            .filter(|_| target.is_ipv4() && i >= PER_SOURCE);
        pending.push(open(*target, source, request.clone()));
        if pending.len() >= concurrency
            && let Some(done) = pending.next().await
        {
            settle_one(done);
        }
    }
    while let Some(done) = pending.next().await {
        settle_one(done);
    }
    let connect_s = started.elapsed().as_secs_f64();
    let first_deadline = Instant::now() + first_timeout;
    while shared.first_seen.load(Ordering::Relaxed) < connected && Instant::now() < first_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = shared.first_seen.load(Ordering::Relaxed);
    eprintln!(
        "fanout_ws: connected {connected}/{subscribers} in {connect_s:.1}s ({failed} failed), first message on {first}"
    );

    // Drive.
    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1/sessions/{session}/switch",
        bases[0].trim_end_matches('/')
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut switch_ms, mut switch_errors) = (Vec::with_capacity(switches), 0usize);
    for _ in 0..switches {
        tick.tick().await;
        let sent = Instant::now();
        match client.post(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                switch_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            _ => switch_errors += 1,
        }
    }
    tokio::time::sleep(settle).await;

    // Close everything and gather.
    shared.closing.store(true, Ordering::Relaxed);
    drop(feeds);
    let mut all = Stats::default();
    for t in threads {
        let s = t.join().expect("reader thread");
        all.latencies.extend(s.latencies);
        all.out_of_order += s.out_of_order;
        all.sockets += s.sockets;
        all.clean_closes += s.clean_closes;
        all.dropped += s.dropped;
        all.untimed += s.untimed;
    }
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_unstable_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let l = &mut all.latencies;
    let (p50, p90, p99, max) = (pct(l, 0.5), pct(l, 0.9), pct(l, 0.99), pct(l, 1.0));
    let (s50, s99) = (pct(&mut switch_ms, 0.5), pct(&mut switch_ms, 0.99));
    println!(
        "updates={} expected={} p50={p50:.1}ms p90={p90:.1}ms p99={p99:.1}ms max={max:.1}ms out_of_order={} clean_closes={}/{} connected={connected}/{subscribers} dropped={} switch_errors={switch_errors} switch_p50={s50:.1}ms switch_p99={s99:.1}ms{}",
        all.latencies.len(),
        subscribers * switches,
        all.out_of_order,
        all.clean_closes,
        all.sockets,
        all.dropped,
        if all.untimed > 0 {
            format!(" untimed_reads={}", all.untimed)
        } else {
            String::new()
        },
    );
}

/// Turns on an int socket option; returns setsockopt's result.
fn set_int_option(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with an int option.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    }
}
