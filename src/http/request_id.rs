//! Request ids: every response carries `x-request-id` (the client's own if it
//! sent a sane one, else a fresh UUID), the request's log span records it, and
//! error bodies repeat it, so a client's bug report points at our log lines.
//! [`assign`] and [`scope`] are called by the request pipeline (`pipeline`).

use std::future::Future;

use axum::extract::Request;
use axum::http::HeaderValue;

/// The header clients may send and every response carries.
pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we keep; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request being handled, for [`current`].
    static CURRENT: HeaderValue;
}

/// The id of the request this task is handling, if any (error bodies use it).
pub fn current() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

/// The request's id: the client's own if it is short plain ASCII, else a
/// fresh UUID (written into the request too, so the log span shows it).
/// Garbage a client sends is never echoed into our logs.
pub fn assign(req: &mut Request) -> HeaderValue {
    if let Some(id) = req.headers().get(HEADER).filter(|v| is_sane(v)) {
        return id.clone();
    }
    let fresh = uuid::Uuid::new_v4().hyphenated().to_string();
    // A hyphenated UUID is always a valid header value.
    let id = HeaderValue::from_str(&fresh).unwrap_or(HeaderValue::from_static("-"));
    req.headers_mut().insert(HEADER, id.clone());
    id
}

/// Runs `request` with `id` visible to [`current`].
pub async fn scope<F: Future>(id: HeaderValue, request: F) -> F::Output {
    CURRENT.scope(id, request).await
}

fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(is_sane(&HeaderValue::from_static("7f0c-abc_1.2:3")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("a b")));
        assert!(!is_sane(&HeaderValue::from_static("{\"json\":1}")));
        let long = "a".repeat(MAX_LEN + 1);
        assert!(!is_sane(&HeaderValue::from_str(&long).unwrap()));
    }
}
