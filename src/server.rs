//! Builds a running instance from configuration: store, engine, background
//! tasks, HTTP listener. `main.rs` runs one; tests start several on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::{ConnectError, RedisOptions, RedisStore};
use crate::{http, scheduler};

/// Why an instance could not start; printed as one line by `main`.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] ConnectError),
}

/// A bound, ready-to-run instance.
pub struct Server {
    listener: TcpListener,
    engine: Arc<Engine>,
    router: axum::Router,
    /// How long in-flight requests may run on after the shutdown signal.
    grace: Duration,
}

impl Server {
    /// Binds the listener and builds the store and engine; nothing runs until [`Server::run`].
    pub async fn build(config: &Config, clock: Clock) -> Result<Self, StartupError> {
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => Arc::new(RedisStore::connect(redis_options(config, url)).await?),
            None => Arc::new(MemoryStore::new(clock.clone(), config.session_ttl_seconds)),
        };
        let engine = Arc::new(Engine::new(store, clock));
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        // Install the metrics recorder before anything records.
        crate::telemetry::metrics();
        let router = http::router(engine.clone(), config);
        Ok(Self {
            listener,
            engine,
            router,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
        })
    }

    /// The address actually bound (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The engine, for tests that watch the store directly.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes
    /// in-flight requests and stops the background tasks.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = CancellationToken::new();
        let timeouts = tokio::spawn(scheduler::run(self.engine.clone(), background.clone()));
        tokio::spawn(crate::telemetry::upkeep(background.clone()));
        // After the signal, in-flight requests get the grace period to finish;
        // a client that holds its connection open longer does not keep the
        // process alive.
        let (signalled, grace) = tokio::sync::oneshot::channel::<()>();
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = signalled.send(());
        });
        let served = tokio::select! {
            served = serve => served,
            _ = async {
                let _ = grace.await;
                tokio::time::sleep(self.grace).await;
            } => {
                tracing::warn!(grace = ?self.grace, "connections still open after the grace period; stopping anyway");
                Ok(())
            }
        };
        background.cancel();
        let _ = timeouts.await;
        served
    }
}

/// The Redis backend's settings from the server configuration.
fn redis_options(config: &Config, url: &str) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        cluster: config.redis_cluster,
        buckets: config.buckets,
        ttl_seconds: config.session_ttl_seconds,
        timeout: Duration::from_millis(config.redis_timeout_ms),
        pool_size: usize::try_from(config.redis_pool_size).unwrap_or(4),
        // The audit drain arrives with the PostgreSQL issue; until then an
        // outbox nobody drains would only grow.
        outbox: false,
    }
}
