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
    match server.run(shutdown_signal()).await {
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
