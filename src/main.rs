//! The `synckairos` binary: parse configuration, start one instance, run it
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use synckairos::clock::Clock;
use synckairos::config::Config;
use synckairos::server::Server;
use synckairos::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init_tracing(config.log_format);
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
        "synckairos listening"
    );
    if config.database_url.is_none() {
        tracing::info!("DATABASE_URL unset: audit trail to PostgreSQL is off");
    }
    match server.run(shutdown).await {
        Ok(()) => {
            tracing::info!("synckairos stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
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
