//! Writer shards: a few tasks per worker thread that write every update to
//! their share of the instance's sockets, and pace the heartbeat.
//!
//! A socket belongs to one shard, so frames reach it in the order they were
//! published; a session's sockets are spread over every shard, so a large
//! audience is written by all cores at once. A write is one non-blocking
//! system call with bytes shared by every socket: no task wakes up per
//! socket unless that socket is behind (see `conn`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::conn::{Conn, Frame, Sent};
use crate::domain::SessionId;

/// How many slices the heartbeat interval is cut into: each tick pings one
/// slice, so the pings of 10,000 sockets are spread evenly instead of
/// firing together for the sockets that connected together.
pub(super) const SLICES: usize = 50;

pub enum Job {
    Join(Arc<Conn>),
    Leave(Arc<Conn>),
    Deliver(SessionId, Arc<Frame>),
    CloseAll(u16, &'static str),
}

/// One shard's sockets.
struct Shard {
    sessions: HashMap<SessionId, Vec<Arc<Conn>>>,
    /// The same sockets by heartbeat slice (`client % SLICES`).
    slices: Vec<Vec<Arc<Conn>>>,
}

/// Runs one shard until the hub drops its sender.
pub async fn run(mut jobs: mpsc::UnboundedReceiver<Job>, ping_interval: Duration) {
    let slices = SLICES
        .min(usize::try_from(ping_interval.as_millis() / 10).unwrap_or(SLICES))
        .max(1);
    let mut shard = Shard {
        sessions: HashMap::new(),
        slices: vec![Vec::new(); slices],
    };
    let mut tick = tokio::time::interval(ping_interval / slices as u32);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut slice = 0;
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => shard.run(job),
                None => return,
            },
            _ = tick.tick() => {
                for conn in &shard.slices[slice] {
                    conn.heartbeat();
                }
                slice = (slice + 1) % slices;
            }
        }
    }
}

impl Shard {
    fn run(&mut self, job: Job) {
        match job {
            Job::Join(conn) => {
                let slice = conn.client as usize % self.slices.len();
                self.slices[slice].push(conn.clone());
                self.sessions.entry(conn.session).or_default().push(conn);
            }
            Job::Leave(conn) => {
                let slice = conn.client as usize % self.slices.len();
                remove(&mut self.slices[slice], &conn);
                if let Some(local) = self.sessions.get_mut(&conn.session) {
                    remove(local, &conn);
                    if local.is_empty() {
                        self.sessions.remove(&conn.session);
                    }
                }
            }
            Job::Deliver(session, frame) => {
                if let Some(local) = self.sessions.get(&session) {
                    deliver(local, &frame);
                }
            }
            Job::CloseAll(code, reason) => {
                for conn in self.slices.iter().flatten() {
                    conn.close(code, reason);
                }
            }
        }
    }
}

fn remove(conns: &mut Vec<Arc<Conn>>, conn: &Arc<Conn>) {
    if let Some(i) = conns.iter().position(|c| Arc::ptr_eq(c, conn)) {
        conns.swap_remove(i);
    }
}

/// Writes `frame` to every socket of a session in this shard; metrics are
/// counted once per batch, not per socket.
fn deliver(conns: &[Arc<Conn>], frame: &Frame) {
    let (mut messages, mut coalesced, mut too_slow) = (0u64, 0u64, 0u64);
    for conn in conns {
        match conn.send(frame) {
            Sent::Written(n) => messages += u64::from(n),
            Sent::Queued {
                messages: n,
                replaced,
            } => {
                messages += u64::from(n);
                coalesced += u64::from(replaced);
            }
            Sent::Skipped => {}
            Sent::TooSlow => too_slow += 1,
        }
    }
    if messages > 0 {
        metrics::counter!("synckairos_ws_messages_sent_total").increment(messages);
    }
    if coalesced > 0 {
        metrics::counter!("synckairos_ws_coalesced_total").increment(coalesced);
    }
    if too_slow > 0 {
        metrics::counter!("synckairos_ws_slow_client_disconnects_total").increment(too_slow);
    }
}
