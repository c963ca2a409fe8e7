//! Keeps fred's connection tasks running.
//!
//! fred drives each client's connections from one task, which reconnects by
//! itself when a connection is lost (our reconnect policy never gives up).
//! But a few errors met while following Cluster redirects end that task for
//! good — an `ASK` for a command whose attempts are used up, seen during a
//! live reshard, is one — and every later command on that client would then
//! wait for its timeout: the instance answers 503 until restarted. So each
//! client's task is watched, and started again when it ends without the
//! client having been told to quit.

use std::future::Future;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::types::ConnectHandle;

/// First pause before a restart; doubled per failed attempt up to
/// [`RESTART_MAX_DELAY`].
const RESTART_DELAY: Duration = Duration::from_millis(20);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(1);

/// Watches `task`, the connection task of `client` (from `init`), in the
/// background: if it ends other than by a quit, connects the client again,
/// then awaits `restarted` (e.g. to resubscribe: a new task starts with no
/// subscriptions on the server).
pub fn supervise<C, F, Fut>(client: C, mut task: ConnectHandle, restarted: F)
where
    C: ClientLike + Send + Sync + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            match task.await {
                // A quit: the client is being shut down.
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, client = %client.id(), "Redis connection task ended; restarting it");
                }
                Err(e) => {
                    tracing::error!(error = %e, client = %client.id(), "Redis connection task panicked; restarting it");
                }
            }
            metrics::counter!("synckairos_redis_connection_restarts_total").increment(1);
            let mut delay = RESTART_DELAY;
            task = loop {
                tokio::time::sleep(delay).await;
                match client.init().await {
                    Ok(task) => break task,
                    Err(e) => {
                        tracing::debug!(error = %e, retry_in = ?delay, "restarting a Redis connection failed");
                        delay = (delay * 2).min(RESTART_MAX_DELAY);
                    }
                }
            };
            tracing::info!(client = %client.id(), "Redis connection task restarted");
            restarted().await;
        }
    });
}
