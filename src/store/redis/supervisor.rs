//! Keeps fred's connection tasks running.
//!
//! fred drives each client's connections from one task, which reconnects by
//! itself when a connection is lost (our reconnect policy never gives up).
//! But a few errors met while following Cluster redirects end that task for
//! good — an `ASK` towards a node the client has no connection to (a node
//! that is receiving its first slots in a live reshard) sleeps a reconnect
//! delay per try the command has left and then does — and every later
//! command on that client would wait for its timeout. Restarting the task
//! is not enough either: the commands it dropped stay counted as queued, so
//! the restarted client holds back (does not flush) a lone command that is
//! not a script until another arrives. So the command clients are replaced
//! instead: [`Connections`] swaps a fresh client in for one whose task ended.
//!
//! The pub/sub client, which other tasks hold on to, is restarted in place
//! ([`restart_on_exit`]); what it sends is subscriptions, and the probes in
//! `pubsub` notice (and `/ready` reports) one that never reaches Redis.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::clients::Client;
use fred::error::{Error, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::ConnectHandle;
use futures_util::future::try_join_all;

/// Pause after a failed attempt to connect a replacement (doubled per
/// failure up to [`RESTART_MAX_DELAY`]), and before a lost call is retried.
const RESTART_DELAY: Duration = Duration::from_millis(20);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(1);

/// The command clients, used in turn; a client whose connection task ends
/// (other than by a quit) is passed over until a new one with the same
/// config is connected in its place.
#[derive(Clone)]
pub struct Connections(Arc<Inner>);

struct Inner {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    client: RwLock<Client>,
    /// Its connection task ended; a replacement is connecting.
    down: AtomicBool,
}

impl Connections {
    /// Connects every client (failing if one cannot connect) and watches them.
    pub async fn connect(clients: Vec<Client>) -> Result<Self, Error> {
        let tasks = try_join_all(clients.iter().map(|c| c.init())).await?;
        let slots = clients
            .into_iter()
            .map(|client| Slot {
                client: RwLock::new(client),
                down: AtomicBool::new(false),
            })
            .collect();
        let connections = Self(Arc::new(Inner {
            slots,
            next: AtomicUsize::new(0),
        }));
        for (index, task) in tasks.into_iter().enumerate() {
            tokio::spawn(connections.clone().watch(index, task));
        }
        Ok(connections)
    }

    /// The client for the next command: round robin over those that are up
    /// (if none is, the next one anyway; its call fails in time).
    pub fn next(&self) -> Client {
        let slots = &self.0.slots;
        let start = self.0.next.fetch_add(1, Ordering::Relaxed);
        let index = (start..start + slots.len())
            .map(|i| i % slots.len())
            .find(|&i| !slots[i].down.load(Ordering::Relaxed))
            .unwrap_or(start % slots.len());
        self.get(index)
    }

    /// Every client that is up, e.g. to have each re-read the slot map.
    pub fn all(&self) -> Vec<Client> {
        (0..self.0.slots.len())
            .filter(|&i| !self.0.slots[i].down.load(Ordering::Relaxed))
            .map(|i| self.get(i))
            .collect()
    }

    /// Runs `call` on the next client, and again on the next one (up to
    /// [`CALL_TRIES`] in all) if the call was lost with its client (the
    /// client's connection task ended) or used up fred's own tries (a chain
    /// of redirects while slots move): the caller hears of neither. Only for
    /// calls that are safe to repeat — reads, and writes that recognise
    /// their own replay — since the lost call may have run.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut tries = 1;
        loop {
            match call(self.next()).await {
                Err(e) if tries < CALL_TRIES && worth_another_try(&e) => {
                    tracing::debug!(error = %e, "Redis call lost; trying again");
                    tries += 1;
                    tokio::time::sleep(RESTART_DELAY).await;
                }
                result => return result,
            }
        }
    }

    fn get(&self, index: usize) -> Client {
        // A poisoned lock still holds a usable client.
        match self.0.slots[index].client.read() {
            Ok(client) => client.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Waits for the connection task of client `index` to end and replaces
    /// the client then; ends when a client was told to quit.
    async fn watch(self, index: usize, mut task: ConnectHandle) {
        let slot = &self.0.slots[index];
        loop {
            let old = self.get(index);
            if !ended_unexpectedly(&old, task.await) {
                return;
            }
            slot.down.store(true, Ordering::Relaxed);
            let fresh = old.clone_new();
            task = connect_with_backoff(&fresh).await;
            match slot.client.write() {
                Ok(mut client) => *client = fresh.clone(),
                Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
            }
            slot.down.store(false, Ordering::Relaxed);
            tracing::info!(replaced = %old.id(), by = %fresh.id(), "Redis client replaced");
        }
    }
}

/// Tries of a call (see [`Connections::run`]).
const CALL_TRIES: u32 = 3;

/// Whether `e` says the call was lost rather than answered: how fred answers
/// the calls of a client whose connection task ended (those it had queued
/// are canceled or find the channel closed; the one that met the fatal ASK
/// gets "Max attempts reached."), and a call it gave up redirecting.
fn worth_another_try(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::Canceled => true,
        ErrorKind::Routing => matches!(
            e.details(),
            "Max attempts reached." | "Too many redirections."
        ),
        ErrorKind::Unknown => matches!(
            e.details(),
            "channel closed" | "Too many failed write attempts."
        ),
        _ => false,
    }
}

/// Watches `task`, the connection task of `client` (from `init`): if it
/// ends other than by a quit, connects the client again and then awaits
/// `restarted` (e.g. to resubscribe: a new task has no subscriptions).
pub fn restart_on_exit<C, F, Fut>(client: C, mut task: ConnectHandle, restarted: F)
where
    C: ClientLike + Send + Sync + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        while ended_unexpectedly(&client, task.await) {
            task = connect_with_backoff(&client).await;
            tracing::info!(client = %client.id(), "Redis client restarted");
            restarted().await;
        }
    });
}

/// Whether a connection task's result calls for a new connection (logged
/// and counted), rather than being the end of a quit.
fn ended_unexpectedly<C: ClientLike>(
    client: &C,
    ended: Result<Result<(), Error>, tokio::task::JoinError>,
) -> bool {
    match ended {
        Ok(Ok(())) => return false,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, client = %client.id(), "Redis connection task ended");
        }
        Err(e) => {
            tracing::error!(error = %e, client = %client.id(), "Redis connection task panicked");
        }
    }
    metrics::counter!("synckairos_redis_connection_restarts_total").increment(1);
    true
}

/// Connects `client`, retrying with backoff until it works.
async fn connect_with_backoff<C: ClientLike>(client: &C) -> ConnectHandle {
    let mut delay = RESTART_DELAY;
    loop {
        match client.init().await {
            Ok(task) => return task,
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?delay, "connecting a Redis client failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RESTART_MAX_DELAY);
            }
        }
    }
}
