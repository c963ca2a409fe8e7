//! The server clock, injectable so tests can move time by hand. Every
//! transition gets `now` from here; nothing else in the server reads time for
//! session logic.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::domain::Timestamp;

/// Wall-clock time in production, a hand-moved clock in tests.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// Starts a manual clock at `start`; returns the clock and the handle that moves it.
    pub fn manual(start: Timestamp) -> (Clock, Arc<ManualClock>) {
        let (tx, _) = watch::channel(start.ms());
        let handle = Arc::new(ManualClock { now: tx });
        (Clock::Manual(handle.clone()), handle)
    }

    /// The current server time.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            }
            Clock::Manual(m) => Timestamp(*m.now.borrow()),
        }
    }

    /// Resolves once the clock has reached `t` (for a manual clock: once a test
    /// has moved it there).
    pub async fn sleep_until(&self, t: Timestamp) {
        match self {
            Clock::System => {
                let wait = t.ms().saturating_sub(self.now().ms()).max(0);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            Clock::Manual(m) => {
                let mut rx = m.now.subscribe();
                // The sender lives as long as the handle, which `self` holds.
                let _ = rx.wait_for(|&now| now >= t.ms()).await;
            }
        }
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    /// Moves time forward by `ms`, waking every task sleeping until then.
    pub fn advance(&self, ms: i64) {
        self.now.send_modify(|now| *now += ms);
    }

    /// The current manual time.
    pub fn now(&self) -> Timestamp {
        Timestamp(*self.now.borrow())
    }
}
