//! SyncKairos: a horizontally scaled real-time timer/session server.
//!
//! ```text
//! http (routes, errors) ──┐
//! scheduler (timeouts) ───┴─> engine (load → transition → CAS → publish)
//!                                 │                    │
//!                            domain (pure)        store (trait)
//!                                                   └─ memory (embedded)
//! ```
//!
//! - [`domain`]: the rules of time, pure; `now` is always passed in.
//! - [`engine`]: the single write path every change goes through.
//! - [`store`]: where state lives; [`store::memory`] is the embedded backend.
//! - [`scheduler`]: applies timeouts when deadlines pass, with no client involved.
//! - [`http`]: the REST API of API.md.
//! - [`limiter`]: the client rate limit, decided locally, settled in the background.
//! - [`deadline`]: one store budget per request.
//! - [`auth`]: tokens and roles: who may do what.
//! - [`audit`]: audit records written atomically with each change.
//! - [`server`]: wires it all together; `main.rs` and the tests start it.
//! - [`config`], [`clock`], [`telemetry`]: configuration, time, logs and metrics.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod engine;
pub mod fanout;
pub mod http;
pub mod limiter;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;
