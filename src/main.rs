//! The `synckairos` binary: parse configuration, start one instance, run it
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use synckairos::clock::Clock;
use synckairos::config::{AuthMode, Config, Task};
use synckairos::server::{Server, audit_db};
use synckairos::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init_tracing(config.log_format);
    if config.task == Some(Task::Migrate) {
        return migrate(&config).await;
    }
    // Handlers first: a SIGTERM that arrives right after the start-up line
    // must shut down cleanly, not kill the process.
    let shutdown = match shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("synckairos: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::build(&config, Clock::System).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("synckairos: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        backend = server.engine().store().backend(),
        addr = %server.local_addr(),
        metrics_addr = server.metrics_addr().map(|a| a.to_string()),
        "synckairos listening"
    );
    if config.auth_mode == AuthMode::None && !config.host.is_loopback() {
        tracing::warn!(
            host = %config.host,
            "AUTH_MODE=none: anyone who can reach this address can create, drive and delete every session; set AUTH_MODE=jwt"
        );
    }
    match (&config.database_url, config.outbox()) {
        (Some(_), _) => tracing::info!(
            migrate = config.migrate,
            "audit trail: draining the outbox to PostgreSQL"
        ),
        (None, true) => tracing::info!(
            "DATABASE_URL unset: audit trail kept in the outbox for a drain elsewhere"
        ),
        (None, false) => tracing::info!("DATABASE_URL unset: audit trail to PostgreSQL is off"),
    }
    server.run(shutdown).await;
    tracing::info!("synckairos stopped");
    ExitCode::SUCCESS
}

/// `synckairos migrate`: applies the migrations and exits (a release step).
/// Without DATABASE_URL the audit log is off, so there is nothing to migrate
/// and a first deploy without Postgres still goes through.
async fn migrate(config: &Config) -> ExitCode {
    let db = match audit_db(config) {
        Ok(Some(db)) => db,
        Ok(None) => {
            eprintln!("synckairos: DATABASE_URL is not set (audit off): nothing to migrate");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("synckairos: {e}");
            return ExitCode::FAILURE;
        }
    };
    match db.migrate().await {
        Ok(()) => {
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synckairos: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGINT (Ctrl-C) and SIGTERM (what orchestrators send)
/// handlers now, and returns a future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    })
}
