//! Logs and metrics. The Prometheus recorder is the one process-wide global
//! (the `metrics` facade requires it); everything else is passed down.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Histogram buckets in seconds, from sub-millisecond Redis round trips to
/// multi-second outliers. Set explicitly: without buckets the exporter renders
/// summaries, which cannot be aggregated across instances.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for the audit drain's batch sizes (events per INSERT, at most 500).
const BATCH_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0];

/// Installs the log subscriber; `RUST_LOG` sets verbosity (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: a second server in the same process (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("synckairos_audit_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then our handle
        // renders nothing, which is visible on /metrics, not fatal.
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// Every counter and gauge, with its help text, registered at zero: a series
/// that exists from the start lets `rate()` and alerts see its first
/// increment. (Histograms appear with their first sample.) The table in
/// docs/METRICS.md says the same; a test keeps the two in step.
fn describe() {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    let counters: &[(&str, &str, &str, &[&str])] = &[
        (
            "synckairos_cas_conflicts_total",
            "lost compare-and-sets",
            "source",
            &["command", "timeout"],
        ),
        (
            "synckairos_timeouts_applied_total",
            "timeouts the server applied",
            "",
            &[],
        ),
        (
            "synckairos_scheduler_claims_total",
            "due index entries this instance claimed",
            "",
            &[],
        ),
        (
            "synckairos_sweep_repairs_total",
            "deadline index entries the sweep repaired",
            "",
            &[],
        ),
        (
            "synckairos_ws_messages_sent_total",
            "messages written to sockets",
            "",
            &[],
        ),
        (
            "synckairos_ws_slow_client_disconnects_total",
            "clients closed for falling too far behind (1013)",
            "",
            &[],
        ),
        (
            "synckairos_ws_coalesced_total",
            "stale states a client that fell behind skipped",
            "",
            &[],
        ),
        (
            "synckairos_ws_rejected_total",
            "sockets refused by a connection limit",
            "reason",
            &["instance", "per_ip", "per_session"],
        ),
        (
            "synckairos_pubsub_messages_received_total",
            "updates received from Redis pub/sub",
            "",
            &[],
        ),
        (
            "synckairos_redis_errors_total",
            "failed Redis calls",
            "kind",
            &["timeout", "deadline", "error"],
        ),
        (
            "synckairos_redis_connection_restarts_total",
            "Redis clients whose connection task ended on its own (replaced or restarted)",
            "",
            &[],
        ),
        (
            "synckairos_rate_limited_total",
            "requests refused by a rate limit",
            "scope",
            &["client", "switch"],
        ),
        (
            "synckairos_rate_limit_settles_total",
            "client-limit keys settled with the store",
            "trigger",
            &["interval", "allowance"],
        ),
        (
            "synckairos_audit_events_written_total",
            "audit events inserted",
            "",
            &[],
        ),
        (
            "synckairos_audit_duplicates_total",
            "audit events found already written",
            "",
            &[],
        ),
        (
            "synckairos_audit_failures_total",
            "failed audit drain steps",
            "stage",
            &["read", "insert", "ack"],
        ),
        (
            "synckairos_audit_invalid_total",
            "undecodable outbox entries dropped",
            "",
            &[],
        ),
        (
            "synckairos_audit_dropped_total",
            "events dropped from the embedded outbox",
            "",
            &[],
        ),
    ];
    for &(name, help, label, values) in counters {
        describe_counter!(name, help);
        if values.is_empty() {
            counter!(name).increment(0);
        }
        for &value in values {
            counter!(name, label => value).increment(0);
        }
    }
    for (name, help) in [
        (
            "synckairos_http_requests_in_flight",
            "requests being served",
        ),
        ("synckairos_ws_connections", "open WebSocket connections"),
        (
            "synckairos_active_sessions",
            "sessions stored, sampled by the sweep",
        ),
        (
            "synckairos_audit_outbox_backlog",
            "audit events not yet written",
        ),
        (
            "synckairos_audit_outbox_pending",
            "audit events read, not yet acknowledged",
        ),
        (
            "synckairos_audit_lag_seconds",
            "age of the oldest unwritten audit event",
        ),
    ] {
        describe_gauge!(name, help);
        gauge!(name).increment(0.0);
    }
    for (name, help) in [
        (
            "synckairos_http_request_duration_seconds",
            "request latency by route template",
        ),
        (
            "synckairos_engine_write_duration_seconds",
            "one store write by command",
        ),
        (
            "synckairos_timeout_lag_seconds",
            "timeout applied after its deadline",
        ),
        (
            "synckairos_pubsub_delay_seconds",
            "publish to receipt of an update",
        ),
        (
            "synckairos_audit_batch_size",
            "events per committed audit batch",
        ),
    ] {
        describe_histogram!(name, help);
    }
}

/// Drains histogram buffers periodically, as the exporter requires when it
/// does not run its own HTTP listener.
pub async fn upkeep(shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => metrics().run_upkeep(),
        }
    }
}
