//! HTTP API tests against real instances on real TCP listeners.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod lifecycle;
mod ops;
mod time_controls;
mod timeouts;
mod validation;
