//! Builds a running instance from configuration: store, engine, background
//! tasks, HTTP listener. `main.rs` runs one; tests start several on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::drain::{self, DrainOptions};
use crate::audit::postgres::{AuditDb, DbError};
use crate::auth::{Auth, AuthConfigError};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::fanout::Hub;
use crate::http::AppState;
use crate::http::ratelimit::RateLimits;
use crate::http::ws::WsLimits;
use crate::limiter::ClientLimiter;
use crate::store::memory::MemoryStore;
use crate::store::redis::{ConnectError, RedisOptions, RedisStore};
use crate::store::{OutboxGroup, Store};
use crate::webhooks::WebhookSettings;
use crate::webhooks::deliver::Deliverer;
use crate::{http, scheduler};
use tokio_util::task::TaskTracker;

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
    #[error("{0}")]
    Webhooks(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
}

/// A bound, ready-to-run instance.
pub struct Server {
    listener: TcpListener,
    /// `METRICS_PORT`'s listener, serving `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    engine: Arc<Engine>,
    state: AppState,
    router: axum::Router,
    /// How long in-flight requests may run on after the shutdown signal.
    grace: Duration,
    /// Bound on reading a request's headers and on keep-alive idleness.
    header_timeout: Duration,
    sweep_interval: Duration,
    /// The audit drain's database and settings, when `DATABASE_URL` is set.
    drain: Option<(AuditDb, DrainOptions)>,
}

impl Server {
    /// Binds the listener and builds the store and engine; nothing runs until [`Server::run`].
    pub async fn build(config: &Config, clock: Clock) -> Result<Self, StartupError> {
        let audit = audit_db(config)?;
        let auth = Arc::new(Auth::from_config(config)?);
        let webhooks = WebhookSettings::from_config(config)
            .map_err(StartupError::Webhooks)?
            .map(Arc::new);
        // The outbox's consumers: an entry is kept until each is done with it.
        let groups: Vec<OutboxGroup> = [
            (config.outbox(), OutboxGroup::Audit),
            (webhooks.is_some(), OutboxGroup::Webhooks),
        ]
        .into_iter()
        .filter_map(|(on, group)| on.then_some(group))
        .collect();
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => Arc::new(RedisStore::connect(redis_options(config, url, &groups)).await?),
            None => Arc::new(
                MemoryStore::new(clock.clone(), config.session_ttl_seconds).with_outbox(&groups),
            ),
        };
        let deliverer = webhooks
            .map(|settings| Deliverer::new(store.clone(), settings, clock.clone()))
            .transpose()
            .map_err(StartupError::Webhooks)?;
        let engine =
            Arc::new(Engine::new(store, clock).with_switch_limit(config.rate_limit_switch));
        let listener = bind(SocketAddr::new(config.host, config.port)).await?;
        let metrics_listener = match config.metrics_port {
            Some(port) => Some(bind(SocketAddr::new(config.host, port)).await?),
            None => None,
        };
        // Install the metrics recorder before anything records.
        crate::telemetry::metrics();
        let state = AppState {
            engine: engine.clone(),
            hub: Hub::new(
                engine.clone(),
                usize::try_from(config.ws_send_queue).unwrap_or(64),
                Duration::from_millis(config.ws_ping_interval_ms),
            ),
            ws: Arc::new(WsLimits::new(
                config.ws_max_connections,
                config.ws_max_connections_per_ip,
                config.ws_max_connections_per_session,
            )),
            ws_tasks: TaskTracker::new(),
            audit: audit.clone(),
            auth,
            limits: RateLimits {
                client: (config.rate_limit_general > 0).then(|| {
                    Arc::new(ClientLimiter::new(
                        engine.store().clone(),
                        config.rate_limit_general,
                        Duration::from_secs(60),
                    ))
                }),
                trust_proxy: config.trust_proxy,
            },
            store_budget: Duration::from_millis(config.redis_timeout_ms),
            max_body: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
            webhooks: deliverer,
        };
        let drain = audit.map(|db| {
            let options = DrainOptions {
                consumer: format!("sk-{}", uuid::Uuid::new_v4().simple()),
                claim_idle: Duration::from_millis(config.audit_claim_idle_ms),
                migrate: config.migrate,
            };
            (db, options)
        });
        let router = http::router(state.clone(), config);
        Ok(Self {
            listener,
            metrics_listener,
            engine,
            state,
            router,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            header_timeout: Duration::from_millis(config.header_read_timeout_ms),
            sweep_interval: Duration::from_secs(config.sweep_interval_seconds),
            drain,
        })
    }

    /// The address actually bound (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The address of the `METRICS_PORT` listener, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    /// The engine, for tests that watch the store directly.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The WebSocket hub, for tests that count local sockets.
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes
    /// in-flight requests and stops the background tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let background = CancellationToken::new();
        let timeouts = tokio::spawn(scheduler::run(self.engine.clone(), background.clone()));
        tokio::spawn(self.state.hub.clone().run(background.clone()));
        tokio::spawn(scheduler::sweep(
            self.engine.clone(),
            self.sweep_interval,
            background.clone(),
        ));
        tokio::spawn(crate::telemetry::upkeep(background.clone()));
        if let Some(limiter) = &self.state.limits.client {
            tokio::spawn(limiter.clone().run(background.clone()));
        }
        if let Some(listener) = self.metrics_listener {
            tokio::spawn(http::listener::serve(
                listener,
                http::metrics_router(),
                self.header_timeout,
                background.clone().cancelled_owned(),
            ));
        }
        // Cancelled with the other background tasks once the HTTP side has
        // stopped: a batch being committed finishes, one not yet committed
        // stays pending in the outbox and is claimed by another instance.
        // Deliveries under way at shutdown are abandoned to their leases.
        if let Some(deliverer) = &self.state.webhooks {
            tokio::spawn(deliverer.clone().run(background.clone()));
        }
        let drain = self.drain.map(|(db, options)| {
            tokio::spawn(drain::run(
                self.engine.store().clone(),
                db,
                self.engine.clock().clone(),
                options,
                background.clone(),
            ))
        });

        // On the signal: stop accepting, close every WebSocket with 1001, let
        // in-flight requests finish. A client that holds its connection open
        // longer than the grace period does not keep the process alive.
        let ws_shutdown = self.state.ws.shutdown.clone();
        let hub = self.state.hub.clone();
        let (signalled, grace) = tokio::sync::oneshot::channel::<()>();
        let serve = http::listener::serve(
            self.listener,
            self.router,
            self.header_timeout,
            async move {
                shutdown.await;
                ws_shutdown.cancel();
                hub.close_all(1001, "server shutting down");
                let _ = signalled.send(());
            },
        );
        let grace_period = self.grace;
        let deadline = async move {
            let _ = grace.await;
            tokio::time::sleep(grace_period).await;
        };
        tokio::pin!(deadline);
        let mut expired = false;
        tokio::select! {
            () = serve => {}
            () = &mut deadline => expired = true,
        }
        // Sockets are upgraded connections: wait for their close frames too.
        self.state.ws_tasks.close();
        if !expired {
            tokio::select! {
                _ = self.state.ws_tasks.wait() => {}
                _ = &mut deadline => expired = true,
            }
        }
        if expired {
            tracing::warn!(grace = ?grace_period, "connections still open after the grace period; stopping anyway");
        }
        background.cancel();
        let _ = timeouts.await;
        if let Some(drain) = drain {
            let _ = drain.await;
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// The Redis backend's settings from the server configuration.
fn redis_options(config: &Config, url: &str, groups: &[OutboxGroup]) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        cluster: config.redis_cluster,
        buckets: config.buckets,
        ttl_seconds: config.session_ttl_seconds,
        timeout: Duration::from_millis(config.redis_timeout_ms),
        pool_size: usize::try_from(config.redis_pool_size).unwrap_or(4),
        outbox: groups.to_vec(),
    }
}

/// The audit database, if configured; the pool connects lazily, so only a
/// malformed URL stops the start-up (an unreachable database does not).
pub fn audit_db(config: &Config) -> Result<Option<AuditDb>, DbError> {
    config
        .database_url
        .as_deref()
        .map(|url| AuditDb::connect_lazy(url, Duration::from_millis(config.database_timeout_ms)))
        .transpose()
}
