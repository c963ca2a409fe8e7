//! Rate limits that hold across every instance: the counters live in the
//! store (one GCRA script call in Redis), so a client spreading requests
//! over instances gains nothing. Two limits: per client on every session
//! route and the WebSocket upgrade (`RATE_LIMIT_GENERAL` per minute), and
//! per session on switch (`RATE_LIMIT_SWITCH` per second). Operational
//! routes (`/health`, `/ready`, `/metrics`, `/v1/time`, docs) are exempt.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::Authenticated;
use crate::auth::Caller;
use crate::store::RateDecision;

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Per client per minute; 0 = off.
    pub general: u32,
    /// Per session per second on switch; 0 = off.
    pub switch: u32,
    /// Whether proxy headers name the client.
    pub trust_proxy: bool,
}

/// Checks the limits that apply to this request; a refusal is a 429 with
/// `Retry-After`, and every limited response carries `RateLimit-*`. The
/// client and session limits are asked at once (one round trip of latency).
pub async fn limit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if !(route.starts_with("/v1/sessions") || route == "/ws") {
        return next.run(req).await;
    }
    let limits = app.limits;
    let client = (limits.general > 0).then(|| client_key(&req, limits.trust_proxy));
    let session = (limits.switch > 0 && route == "/v1/sessions/{id}/switch").then(|| {
        format!(
            "switch:{}",
            req.uri().path().split('/').nth(3).unwrap_or_default()
        )
    });
    let minute = Duration::from_secs(60);
    let second = Duration::from_secs(1);
    let (general, switch) = tokio::join!(
        check(&app, client.as_deref(), limits.general, minute, "client"),
        check(&app, session.as_deref(), limits.switch, second, "switch"),
    );
    let (general, switch) = match (general, switch) {
        (Err(refused), _) | (_, Err(refused)) => return refused,
        (Ok(g), Ok(s)) => (g, s),
    };
    // Show whichever limit is closer to refusing.
    let shown = match (general, switch) {
        (Some(g), Some(s)) if s.remaining < g.remaining => Some((limits.switch, s)),
        (Some(g), _) => Some((limits.general, g)),
        (None, s) => s.map(|s| (limits.switch, s)),
    };
    let mut response = next.run(req).await;
    if let Some((limit, decision)) = shown {
        headers(response.headers_mut(), limit, &decision);
    }
    response
}

/// One limit (none when `key` is `None`): `Err` is the finished 429;
/// `Ok(None)` also when the store could not be asked (the limit fails open:
/// the request itself will meet the outage).
async fn check(
    app: &AppState,
    key: Option<&str>,
    limit: u32,
    period: Duration,
    scope: &'static str,
) -> Result<Option<RateDecision>, Response> {
    let Some(key) = key else {
        return Ok(None);
    };
    match app.engine.store().rate_limit(key, limit, period).await {
        Ok(d) if d.allowed => Ok(Some(d)),
        Ok(d) => {
            metrics::counter!("synckairos_rate_limited_total", "scope" => scope).increment(1);
            let mut response = ApiError::RateLimited {
                retry_after_s: seconds(d.retry_after_us),
            }
            .into_response();
            headers(response.headers_mut(), limit, &d);
            Err(response)
        }
        Err(e) => {
            tracing::debug!(error = %e, "rate limit not checked");
            Ok(None)
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

fn headers(h: &mut HeaderMap, limit: u32, d: &RateDecision) {
    let mut set = |name: &'static str, value: u64| {
        h.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set("ratelimit-limit", u64::from(limit));
    set("ratelimit-remaining", d.remaining);
    set("ratelimit-reset", seconds(d.reset_us));
    if !d.allowed {
        set("retry-after", seconds(d.retry_after_us));
    }
}

/// Who the general limit counts: a verified token's subject, else the
/// client address.
fn client_key(req: &Request, trust_proxy: bool) -> String {
    if let Some(Authenticated(Ok(Caller::Token(c)))) = req.extensions().get::<Authenticated>() {
        return match &c.sub {
            Some(sub) => format!("sub:{sub}"),
            None => format!("role:{:?}:{:?}:{:?}", c.role, c.sid, c.pid),
        };
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = client_ip(req.headers(), peer, trust_proxy);
    format!(
        "ip:{}",
        ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    )
}

/// The client's address: behind a trusted proxy, `Fly-Client-IP` or the
/// last `X-Forwarded-For` entry (the one the proxy itself added; earlier
/// entries come from the client and prove nothing); else the peer.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let forwarded = header("fly-client-ip")
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| {
                header("x-forwarded-for")
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|v| v.trim().parse().ok())
            });
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_count_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.7"),
        );
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(client_ip(&h, peer, false), peer);
        assert_eq!(client_ip(&h, peer, true), Some(IpAddr::from([10, 0, 0, 7])));
        h.insert("fly-client-ip", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(
            client_ip(&h, peer, true),
            Some(IpAddr::from([203, 0, 113, 9]))
        );
        h.insert("fly-client-ip", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&h, peer, true), Some(IpAddr::from([10, 0, 0, 7])));
    }

    #[test]
    fn header_seconds_round_up() {
        assert_eq!((seconds(0), seconds(1), seconds(1_000_001)), (1, 1, 2));
    }
}
