//! Request ids: every response carries `x-request-id` (the client's own if it
//! sent a sane one, else a fresh UUID), the request's log span records it, and
//! error bodies repeat it, so a client's bug report points at our log lines.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;

/// The header, as tower-http's `x_request_id` layers use it.
pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we keep; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request being handled, for [`current`].
    static CURRENT: String;
}

/// The id of the request this task is handling, if any (error bodies use it).
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Drops a client-supplied id that is too long or not plain ASCII, so the
/// layer after it generates one instead of echoing garbage into our logs.
pub async fn sanitize(mut req: Request, next: Next) -> Response {
    let sane = req.headers().get(HEADER).is_none_or(is_sane);
    if !sane {
        req.headers_mut().remove(HEADER);
    }
    next.run(req).await
}

/// Makes the id (set by tower-http's `SetRequestIdLayer`) visible to
/// [`current`] while the request is handled.
pub async fn scope(req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    CURRENT.scope(id, next.run(req)).await
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
