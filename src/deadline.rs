//! One deadline per request for its store work. A request may call the
//! store several times (a limiter settle, the read, the write, retries on
//! another connection); each call is bounded by the client's command
//! timeout, but in an outage the bounds would add up. Inside [`scope`],
//! [`bounded`] calls share one budget of `REDIS_TIMEOUT_MS`, counted from
//! the first of them (reading a slow client's body does not spend it), so
//! every request answers 503 within that budget.
//!
//! The scope is task-local: the HTTP layer opens it around a request and
//! the engine and the limiter honour it without threading it through every
//! signature. Work outside a request (the scheduler, the drain, sockets)
//! keeps the per-command timeout alone.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreError;

tokio::task_local! {
    static REQUEST: Budget;
}

/// The request's budget and when its first store call started.
struct Budget {
    total: Duration,
    started: Cell<Option<Instant>>,
}

/// Runs `request` with one store budget of `total` for all its store calls.
pub async fn scope<F: Future>(total: Duration, request: F) -> F::Output {
    let budget = Budget {
        total,
        started: Cell::new(None),
    };
    REQUEST.scope(budget, request).await
}

/// Runs store work within what is left of the request's budget; past it,
/// the work is dropped and the store counts as unavailable. Outside a
/// request scope the work runs unbounded here.
pub async fn bounded<T, E: From<StoreError>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let deadline = REQUEST.try_with(|budget| {
        let started = budget.started.get().unwrap_or_else(|| {
            let now = Instant::now();
            budget.started.set(Some(now));
            now
        });
        started + budget.total
    });
    match deadline {
        Ok(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| {
                metrics::counter!("synckairos_redis_errors_total", "kind" => "deadline")
                    .increment(1);
                Err(StoreError::Unavailable("the request's store deadline passed".into()).into())
            }),
        Err(_) => work.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_in_one_request_share_one_budget() {
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok::<_, StoreError>(())
        };
        let (first, second) = scope(Duration::from_secs(1), async {
            (bounded(slow()).await, bounded(slow()).await)
        })
        .await;
        assert_eq!(first, Ok(()));
        assert!(matches!(second, Err(StoreError::Unavailable(_))));
        // Outside a request nothing is bounded here.
        assert_eq!(bounded(slow()).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_starts_with_the_first_store_call() {
        let answered = scope(Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_secs(5)).await; // a slow body
            bounded(async { Ok::<_, StoreError>(7) }).await
        })
        .await;
        assert_eq!(answered, Ok(7));
    }
}
