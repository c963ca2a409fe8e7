//! Configuration: one struct, parsed once from flags and environment variables
//! (a flag is the variable's name in kebab-case), passed down explicitly.
//! Invalid values stop the server at start-up with one clear line.

use std::net::IpAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Whether requests need a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Everyone may do everything (the v2 behaviour; loopback or trusted networks).
    None,
    /// JWT bearer tokens with roles (see `auth`).
    Jwt,
}

/// A secret from the environment; its `Debug` form never shows it, so a
/// logged configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// What the binary does besides serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Subcommand)]
pub enum Task {
    /// Apply the audit database migrations (`DATABASE_URL`) and exit.
    Migrate,
}

/// Everything an operator can set. Names are fixed by DESIGN.md.
#[derive(Clone, Debug, Parser)]
#[command(name = "synckairos", version, about = "Real-time timer/session server")]
pub struct Config {
    /// Omitted: serve.
    #[command(subcommand)]
    pub task: Option<Task>,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port for HTTP and WebSocket.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// A second port serving only `/metrics` (for scrapers on a private
    /// network); `/metrics` stays on `PORT` too.
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Redis URL (`redis://`, `rediss://`). Unset: the embedded in-process backend.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Treat `REDIS_URL` as a node of a Redis Cluster (or use a
    /// `redis-cluster://` URL).
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Upper bound on every Redis call, in milliseconds; past it the request
    /// answers 503 instead of waiting.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_timeout_ms: u64,

    /// Connections in the Redis command pool (pub/sub has its own).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub redis_pool_size: u64,

    /// PostgreSQL URL for the audit trail. Unset: audit off.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Apply the database migrations at start-up (under an advisory lock, so
    /// instances starting together are safe). `false` when a release step
    /// runs `synckairos migrate` instead.
    #[arg(long, env = "MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// Append audit events to the Redis outbox. Default: only when
    /// `DATABASE_URL` is set (without a drain the outbox would only grow);
    /// `true` keeps events for a drain elsewhere.
    #[arg(long, env = "AUDIT_OUTBOX", action = clap::ArgAction::Set)]
    pub audit_outbox: Option<bool>,

    /// Audit events read by an instance and not written for this long are
    /// taken over by another (the reader died or hangs).
    #[arg(long, env = "AUDIT_CLAIM_IDLE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub audit_claim_idle_ms: u64,

    /// How long an audit database call waits for a connection before it
    /// fails (the history endpoint then answers 503).
    #[arg(long, env = "DATABASE_TIMEOUT_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub database_timeout_ms: u64,

    /// Sessions are forgotten this long after their last write.
    #[arg(long, env = "SESSION_TTL_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub session_ttl_seconds: u64,

    /// Number of Redis key buckets; fixed per deployment.
    #[arg(long, env = "BUCKETS", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=16_384))]
    pub buckets: u16,

    /// Requests per minute per client (token `sub`, else IP) on the session
    /// routes and the WebSocket upgrade, across all instances; 0 = off.
    #[arg(long, env = "RATE_LIMIT_GENERAL", default_value_t = 1_200)]
    pub rate_limit_general: u32,

    /// Switches per second per session, across all instances; 0 = off.
    #[arg(long, env = "RATE_LIMIT_SWITCH", default_value_t = 50)]
    pub rate_limit_switch: u32,

    /// Take the client address from `Fly-Client-IP` / the last
    /// `X-Forwarded-For` entry (set only behind a proxy that writes them).
    #[arg(long, env = "TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub max_body_bytes: u64,

    /// How long a connection may take to send a request's headers, and may
    /// sit idle between requests, before it is closed (slowloris guard; it
    /// bounds the WebSocket handshake too).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,

    /// After SIGTERM, how long in-flight requests may finish before the
    /// process exits anyway (keep it below the platform's kill timeout).
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_seconds: u64,

    /// How often the deadline index is checked against the sessions (one
    /// instance at a time) and repaired.
    #[arg(long, env = "SWEEP_INTERVAL_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sweep_interval_seconds: u64,

    /// WebSocket connections this instance accepts.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub ws_max_connections: usize,

    /// WebSocket connections accepted from one client address.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub ws_max_connections_per_ip: usize,

    /// WebSocket connections to one session on this instance.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_SESSION", default_value_t = 10_000)]
    pub ws_max_connections_per_session: usize,

    /// Interval of WebSocket ping frames; a client that misses two is dropped.
    #[arg(long, env = "WS_PING_INTERVAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub ws_ping_interval_ms: u64,

    /// Messages that must arrive (TIMEOUT, SESSION_DELETED, replies) allowed
    /// to wait for a WebSocket client that fell behind before it is closed
    /// with 1013; its states coalesce instead (newest wins).
    #[arg(long, env = "WS_SEND_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub ws_send_queue: u64,

    /// Comma-separated origins allowed by CORS (`*` for any). Unset: any
    /// origin with `AUTH_MODE=none`, no CORS headers with `AUTH_MODE=jwt`.
    #[arg(long, env = "CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// `none` (everyone may do everything) or `jwt` (bearer tokens with roles).
    #[arg(long, env = "AUTH_MODE", value_enum, default_value_t = AuthMode::None)]
    pub auth_mode: AuthMode,

    /// HS256 shared secret (at least 32 bytes); lets the server mint tokens too.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Path of a PEM public key (RSA for RS256, Ed25519 for EdDSA) that
    /// tokens are verified with; they are issued elsewhere.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// Required `iss` of every token, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of every token, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Where session events are POSTed (signed; see docs/WEBHOOKS.md). Needs
    /// `WEBHOOK_SECRET`.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The signing key, `whsec_<base64>` (Standard Webhooks).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Comma list of the event types delivered, `*` for all.
    #[arg(
        long,
        env = "WEBHOOK_EVENTS",
        default_value = "session.timeout,session.expired,session.completed,session.deleted"
    )]
    pub webhook_events: String,

    /// A 2xx within this long is a delivered webhook.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub webhook_timeout_ms: u64,

    /// Delays before each retry (units ms, s, m, h); then the dead letters.
    #[arg(
        long,
        env = "WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_retry_schedule: String,

    /// Comma list of URL prefixes a session's own `webhook_url` must be under.
    #[arg(long, env = "WEBHOOK_ALLOWED_URLS")]
    pub webhook_allowed_urls: Option<String>,

    /// A delivery in flight this long on an instance is taken over by another.
    #[arg(long, env = "WEBHOOK_CLAIM_IDLE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub webhook_claim_idle_ms: u64,

    /// `json` or `pretty`. Verbosity comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Config {
    /// Whether the write script appends audit events to the outbox.
    pub fn outbox(&self) -> bool {
        self.audit_outbox.unwrap_or(self.database_url.is_some())
    }

    /// The defaults, as if started with no flags and an empty environment
    /// (tests start from this and override what they need).
    pub fn defaults() -> Self {
        // Parsing no arguments cannot fail: every field has a default or is optional.
        Self::try_parse_from(["synckairos"])
            .unwrap_or_else(|e| panic!("default configuration is invalid: {e}"))
    }
}
