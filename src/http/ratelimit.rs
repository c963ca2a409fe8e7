//! Rate limits at no store round trip. Two limits: per client on every
//! session route and the WebSocket upgrade (`RATE_LIMIT_GENERAL` per
//! minute), decided on the instance by [`ClientLimiter`] and settled with
//! the other instances in the background; and per session on switch
//! (`RATE_LIMIT_SWITCH` per second), checked by the switch's own write (see
//! `Engine::with_switch_limit`). Operational routes (`/health`, `/ready`,
//! `/metrics`, `/v1/time`, docs) are exempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::future::Future;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, RATELIMIT_LIMIT, rate_limit_headers};
use super::extract::Authenticated;
use crate::auth::Caller;
use crate::limiter::{ClientKey, ClientLimiter};

/// The request-path side of the limits, from the configuration.
#[derive(Clone)]
pub struct RateLimits {
    /// The client limit; `None` when `RATE_LIMIT_GENERAL` is 0.
    pub client: Option<Arc<ClientLimiter>>,
    /// Whether proxy headers name the client.
    pub trust_proxy: bool,
}

/// Answers `req` with `inner` if the client limit allows it; a refusal is
/// a 429 with `Retry-After`, and every limited response carries
/// `RateLimit-*`. `route` is the matched template.
pub async fn limit<F, Fut>(app: &AppState, route: Option<&str>, req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !route.is_some_and(|r| r.starts_with("/v1/sessions") || r == "/ws") {
        return inner(req).await;
    }
    let limits = &app.limits;
    let Some(limiter) = &limits.client else {
        return inner(req).await;
    };
    let decision = limiter.check(client_key(&req, limits.trust_proxy)).await;
    if !decision.allowed {
        metrics::counter!("synckairos_rate_limited_total", "scope" => "client").increment(1);
        return ApiError::RateLimited {
            limit: limiter.limit(),
            decision,
        }
        .into_response();
    }
    let mut response = inner(req).await;
    // A refused switch reports the switch limit instead.
    if !response.headers().contains_key(RATELIMIT_LIMIT) {
        rate_limit_headers(response.headers_mut(), limiter.limit(), &decision);
    }
    response
}

/// Who the general limit counts: a verified token's subject, else the
/// client address.
fn client_key(req: &Request, trust_proxy: bool) -> ClientKey {
    if let Some(Authenticated(Ok(Caller::Token(c)))) = req.extensions().get::<Authenticated>() {
        return match &c.sub {
            Some(sub) => ClientKey::of(&[b"sub:", sub.as_bytes()]),
            None => {
                let claims = format!("{:?}:{:?}:{:?}", c.role, c.sid, c.pid);
                ClientKey::of(&[b"role:", claims.as_bytes()])
            }
        };
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match client_ip(req.headers(), peer, trust_proxy) {
        Some(IpAddr::V4(ip)) => ClientKey::of(&[b"ip4:", &ip.octets()]),
        Some(IpAddr::V6(ip)) => ClientKey::of(&[b"ip6:", &ip.octets()]),
        None => ClientKey::of(&[b"ip:unknown"]),
    }
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
    use axum::http::HeaderValue;

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
}
