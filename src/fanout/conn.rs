//! One WebSocket connection's outbound side: where slow consumers are
//! coalesced.
//!
//! Whoever has a frame for the socket (a writer shard, or the socket's own
//! task for a reply) writes it straight to the kernel with one non-blocking
//! write. Only when the kernel's buffer is full does the socket get a
//! backlog, which its own task writes out as the socket drains. The backlog
//! holds at most one state message, the newest: every state message carries
//! the whole state, so a newer one replaces an older one still waiting.
//! Frames that must arrive (TIMEOUT, SESSION_DELETED, replies to the client)
//! are queued in order; a socket with more than its limit of those waiting
//! is too far behind even for coalescing and is closed with 1013.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;

use super::frame::{self, Decoder, Inbound};
use crate::domain::SessionId;

/// An outbound message (or several written together), encoded once for
/// every socket of an instance.
#[derive(Clone, Debug)]
pub struct Frame {
    pub bytes: Bytes,
    /// The session version the frame describes, and how it is ordered.
    pub version: Option<(u64, Rule)>,
    /// Where the messages that only accompany the version begin (the
    /// TIMEOUTs after their STATE_UPDATE): a client that already has the
    /// version still gets those.
    pub attached_at: Option<usize>,
    /// Text messages in `bytes` (for the sent-messages metric).
    pub messages: u8,
    pub kind: Kind,
}

/// What a frame may become when its socket is behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole state: a newer one replaces it while it waits.
    State,
    /// Must arrive, in order (TIMEOUT with its state, replies).
    Keep,
    /// Must arrive, and the socket closes after it (SESSION_DELETED).
    Last,
}

/// How a versioned frame is ordered against what its client already got, so
/// that each client sees `state.version` strictly increasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Only if newer; becomes the client's version (STATE_UPDATE, first STATE_SYNC).
    Advance,
    /// Unless older; becomes the client's version (a STATE_SYNC after a lost
    /// link or on RECONNECT: the full state again, even if unchanged).
    Resync,
}

impl Rule {
    /// Whether a frame of `version` goes to a client at `last`, and the
    /// client's version afterwards.
    pub fn admit(self, version: u64, last: u64) -> Option<u64> {
        match self {
            Rule::Advance if version > last => Some(version),
            Rule::Resync if version >= last => Some(version),
            _ => None,
        }
    }
}

impl Frame {
    /// What of this frame goes to a client at version `last`, and its version after.
    /// A whole admitted versioned frame carries a state at least as new as
    /// any the client waits for, so it supersedes a waiting one.
    fn admit(&self, last: u64) -> Option<Admitted> {
        let whole = |version| Admitted {
            bytes: self.bytes.clone(),
            version,
            messages: self.messages,
            supersedes: self.version.is_some(),
        };
        let Some((version, rule)) = self.version else {
            return Some(whole(last));
        };
        match (rule.admit(version, last), self.attached_at) {
            (Some(now), _) => Some(whole(now)),
            (None, Some(at)) if version == last => Some(Admitted {
                bytes: self.bytes.slice(at..),
                version: last,
                messages: self.messages.saturating_sub(1),
                supersedes: false,
            }),
            _ => None,
        }
    }
}

/// The part of a frame that goes to one client.
struct Admitted {
    bytes: Bytes,
    version: u64,
    messages: u8,
    supersedes: bool,
}

impl Admitted {
    /// An unversioned frame of our own (a reply, a close).
    fn reply(bytes: Bytes, messages: u8) -> Self {
        Self {
            bytes,
            version: 0,
            messages,
            supersedes: false,
        }
    }
}

/// What became of a frame handed to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Written to the kernel (this many messages).
    Written(u8),
    /// Waiting in the backlog (this many messages); `replaced` says whether
    /// it replaced an older state.
    Queued { messages: u8, replaced: bool },
    /// Not for this client (older than what it has) or the socket is closing.
    Skipped,
    /// Too far behind: the socket is being closed with 1013.
    TooSlow,
}

/// A connected WebSocket.
pub struct Conn {
    pub client: u64,
    pub session: SessionId,
    stream: TcpStream,
    out: Mutex<Out>,
    /// Wakes the socket's task: a backlog to write, or the socket is closing.
    /// (A waker and a flag, not a `Notify`: the task's future stays small.)
    waker: AtomicWaker,
    woken: AtomicBool,
    /// Heartbeat pings since the client last sent anything.
    unanswered: AtomicU8,
    /// Frames that must arrive allowed to wait (`WS_SEND_QUEUE`).
    limit: u32,
}

#[derive(Default)]
struct Out {
    /// The session version the client has.
    version: u64,
    /// What waits for the socket to become writable; `None` while writes go straight out.
    backlog: Option<Box<Backlog>>,
    /// Set when a close frame is queued: nothing is sent after it.
    closing: Option<Closing>,
}

struct Backlog {
    /// The rest of the frame being written (frames are never interleaved).
    head: Bytes,
    /// The frames after it, in order; at most one of them a state.
    queue: VecDeque<(Bytes, Kind)>,
}

/// Who closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// We sent a close frame and wait for the client's answer.
    Server,
    /// We answered the client's close frame.
    Client,
    /// The connection failed: nothing more can be written.
    Broken,
}

/// After a wake-up: what the socket's task does next.
pub enum Next {
    /// Keep serving.
    Serve,
    /// The close frame is out (or cannot go): finish the close.
    Finish(Closing),
}

impl Conn {
    pub fn new(client: u64, session: SessionId, stream: TcpStream, limit: usize) -> Self {
        Self {
            client,
            session,
            stream,
            out: Mutex::default(),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            unanswered: AtomicU8::new(0),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `frame` if it is for this client, writing it now when the
    /// socket takes it; never waits.
    pub fn send(&self, frame: &Frame) -> Sent {
        let mut out = self.out();
        if out.closing.is_some() {
            return Sent::Skipped;
        }
        let Some(admitted) = frame.admit(out.version) else {
            return Sent::Skipped;
        };
        out.version = admitted.version;
        let sent = self.push(&mut out, admitted, frame.kind);
        if frame.kind == Kind::Last {
            out.closing.get_or_insert(Closing::Server);
            self.wake();
        }
        sent
    }

    /// Sends a reply to the client (PONG, ERROR, a pong frame): it must arrive.
    pub fn reply(&self, bytes: Bytes) {
        let mut out = self.out();
        if out.closing.is_none() {
            self.push(&mut out, Admitted::reply(bytes, 1), Kind::Keep);
        }
    }

    /// Writes `bytes` now, or puts it in the backlog (coalescing states).
    fn push(&self, out: &mut Out, frame: Admitted, kind: Kind) -> Sent {
        let bytes = frame.bytes;
        let Some(backlog) = out.backlog.as_mut() else {
            return match self.stream.try_write(&bytes) {
                Ok(n) if n == bytes.len() => Sent::Written(frame.messages),
                Ok(n) => self.start_backlog(out, bytes.slice(n..), frame.messages),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.start_backlog(out, bytes, frame.messages)
                }
                Err(_) => {
                    self.broken(out);
                    Sent::Skipped
                }
            };
        };
        // A newer state (alone or with its TIMEOUT) supersedes a waiting one.
        let mut replaced = false;
        if frame.supersedes {
            let before = backlog.queue.len();
            backlog.queue.retain(|(_, k)| *k != Kind::State);
            replaced = before != backlog.queue.len();
        }
        let kept = backlog
            .queue
            .iter()
            .filter(|(_, k)| *k != Kind::State)
            .count();
        if kind != Kind::State && kept >= self.limit as usize {
            self.close_now(out, 1013, "too slow: too far behind");
            return Sent::TooSlow;
        }
        backlog.queue.push_back((bytes, kind));
        Sent::Queued {
            messages: frame.messages,
            replaced,
        }
    }

    fn start_backlog(&self, out: &mut Out, head: Bytes, messages: u8) -> Sent {
        out.backlog = Some(Box::new(Backlog {
            head,
            queue: VecDeque::new(),
        }));
        self.wake();
        Sent::Queued {
            messages,
            replaced: false,
        }
    }

    fn broken(&self, out: &mut Out) {
        out.backlog = None;
        out.closing = Some(Closing::Broken);
        self.wake();
    }

    /// Closes with `code`: what is already queued goes first, then the close frame.
    pub fn close(&self, code: u16, reason: &str) {
        let mut out = self.out();
        if out.closing.is_none() {
            self.push(
                &mut out,
                Admitted::reply(frame::close(code, reason), 0),
                Kind::Keep,
            );
            out.closing.get_or_insert(Closing::Server);
            self.wake();
        }
    }

    /// Closes at once: what waits is dropped, the close frame follows the
    /// frame being written.
    fn close_now(&self, out: &mut Out, code: u16, reason: &str) {
        if let Some(backlog) = out.backlog.as_mut() {
            backlog.queue.clear();
            backlog
                .queue
                .push_back((frame::close(code, reason), Kind::Keep));
        }
        out.closing = Some(Closing::Server);
        self.wake();
    }

    /// A heartbeat: closes with 1001 after two pings unanswered, else pings
    /// (unless the socket is behind: the backlog is in the way, and the client
    /// will answer what it reads).
    pub fn heartbeat(&self) {
        if self.unanswered.fetch_add(1, Ordering::Relaxed) >= 2 {
            self.close(1001, "heartbeat: two pings unanswered");
            return;
        }
        let out = self.out();
        if out.backlog.is_none()
            && out.closing.is_none()
            && let Err(e) = self.stream.try_write(frame::PING_FRAME)
            && e.kind() != io::ErrorKind::WouldBlock
        {
            drop(out);
            self.broken(&mut self.out());
        }
    }

    /// Writes what waits as far as the socket takes it, and says what the
    /// socket's task does next.
    pub fn write_backlog(&self) -> Next {
        let mut out = self.out();
        while let Some(backlog) = out.backlog.as_mut() {
            match self.stream.try_write(&backlog.head) {
                Ok(n) if n > 0 => {
                    backlog.head.advance(n);
                    if backlog.head.is_empty() {
                        match backlog.queue.pop_front() {
                            Some((next, _)) => backlog.head = next,
                            None => out.backlog = None,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Serve,
                _ => {
                    self.broken(&mut out);
                    break;
                }
            }
        }
        match out.closing {
            Some(closing) => Next::Finish(closing),
            None => Next::Serve,
        }
    }

    /// Whether bytes wait for the socket to become writable.
    pub fn backlogged(&self) -> bool {
        self.out().backlog.is_some()
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until someone queued a backlog or started a close.
    pub async fn woken(&self) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.woken.swap(false, Ordering::AcqRel) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
    }

    // Readiness is polled, not awaited through `TcpStream::readable`: the
    // waker goes in the stream's own slot, which replaces (and frees) the
    // one hyper's finished connection task left there, and the task's future
    // holds no waiter node.

    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.stream.poll_read_ready(cx)).await
    }

    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.stream.poll_write_ready(cx)).await
    }

    /// Reads what the client sent so far; `Ok(false)` once it closed the
    /// connection. Any frame counts as a sign of life for the heartbeat, and
    /// a close frame from the client is answered with the same code.
    pub fn read(&self, decoder: &mut Decoder, inbound: &mut Vec<Inbound>) -> io::Result<bool> {
        // On the thread's stack, not in the task: idle sockets hold no buffer.
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.try_read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    if !self.received(decoder, &buf[..n], inbound) {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Decodes bytes from the client; false once nothing more is to be read
    /// (a protocol violation, now being closed, or the client's close, answered).
    pub fn received(&self, decoder: &mut Decoder, data: &[u8], inbound: &mut Vec<Inbound>) -> bool {
        let before = inbound.len();
        if let Err(violation) = decoder.feed(data, inbound) {
            self.close(violation.0, violation.1);
            return false;
        }
        if inbound.len() > before {
            self.unanswered.store(0, Ordering::Relaxed);
        }
        if let Some(Inbound::Close(code)) = inbound.last() {
            self.answer_close(*code);
            return false;
        }
        true
    }

    /// Answers the client's close frame (RFC 6455 §5.5.1), echoing its code.
    fn answer_close(&self, code: Option<u16>) {
        let mut out = self.out();
        if out.closing.is_some() {
            // Our close crossed theirs: the close handshake is complete.
            out.closing = Some(Closing::Client);
        } else {
            let answer = match code {
                Some(code) if valid_close_code(code) => frame::close(code, ""),
                Some(_) => frame::close(1002, "invalid close code"),
                None => frame::close_empty(),
            };
            self.push(&mut out, Admitted::reply(answer, 0), Kind::Keep);
            if out.closing.is_none() {
                out.closing = Some(Closing::Client);
            }
        }
        self.wake();
    }
}

/// Close codes a client may send (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// STATE_UPDATE of version 5 with its TIMEOUT, written together.
    fn update_with_timeout() -> Frame {
        let update = frame::text("update");
        Frame {
            attached_at: Some(update.len()),
            bytes: frame::texts(["update", "timeout"]),
            version: Some((5, Rule::Advance)),
            messages: 2,
            kind: Kind::Keep,
        }
    }

    #[test]
    fn a_timeout_reaches_a_client_that_already_has_its_version() {
        let f = update_with_timeout();
        let whole = f.admit(4).unwrap();
        assert_eq!(
            (whole.bytes.len(), whole.version, whole.messages),
            (f.bytes.len(), 5, 2)
        );
        assert!(whole.supersedes, "a newer state replaces a waiting one");
        // A STATE_SYNC of version 5 got there first: only the TIMEOUT goes.
        let tail = f.admit(5).unwrap();
        assert_eq!(&tail.bytes[..], &frame::text("timeout")[..]);
        assert_eq!(
            (tail.version, tail.messages, tail.supersedes),
            (5, 1, false)
        );
        assert!(f.admit(6).is_none(), "never back");
    }

    #[test]
    fn each_client_sees_versions_strictly_increasing() {
        assert_eq!(Rule::Advance.admit(5, 4), Some(5));
        assert_eq!(Rule::Advance.admit(5, 5), None, "no duplicate update");
        assert_eq!(Rule::Advance.admit(4, 5), None, "never back");
        assert_eq!(
            Rule::Resync.admit(5, 5),
            Some(5),
            "a requested sync is sent again"
        );
        assert_eq!(Rule::Resync.admit(4, 5), None);
    }
}
