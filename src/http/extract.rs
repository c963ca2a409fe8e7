//! Extractors that turn every framework rejection into the API envelope:
//! a bad path UUID, a wrong content type, malformed or too deeply nested JSON,
//! an oversized body. Handlers only ever see parsed values.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller};
use crate::domain::SessionId;

/// Deepest JSON nesting accepted in a body (API.md "Limits").
pub const MAX_JSON_DEPTH: usize = 32;

/// The `{id}` path segment, parsed as a session UUID.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("id", "must be a UUID"))?;
        SessionId::parse(&raw).map(SessionPath).ok_or_else(|| {
            let shown: String = raw.chars().take(64).collect();
            ApiError::field("id", format!("must be a UUID (got \"{shown}\")"))
        })
    }
}

/// The verdict on a request's credentials, reached once per request by
/// [`authenticate`] and read by the rate limiter and the [`Caller`] extractor.
#[derive(Clone)]
pub struct Authenticated(pub Result<Caller, AuthError>);

/// Verifies the request's token once: from `Authorization: Bearer`, or on
/// the WebSocket upgrade also from `?token=` (browsers cannot set headers
/// there), and leaves the verdict in the request for the rate limiter and
/// the handler. Refusing is left to the routes that need a caller.
pub fn authenticate(app: &AppState, req: &mut Request) {
    let query_token = (req.uri().path() == "/ws")
        .then(|| query_param(req.uri().query(), "token"))
        .flatten();
    let verdict = app.auth.caller(bearer(req.headers()).or(query_token));
    req.extensions_mut().insert(Authenticated(verdict));
}

/// The caller of a request: 401 before the handler runs when auth is on
/// and the token does not verify.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let verdict = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(verdict)) => verdict.clone(),
            None => app.auth.caller(bearer(&parts.headers)),
        };
        Ok(verdict?)
    }
}

/// A raw query parameter (UUIDs and JWTs need no percent-decoding).
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| value)
    })
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A JSON body, or `None` when the body is empty (switch accepts that).
pub struct JsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::field(
                    "body",
                    format!("could not be read: {}", rejection.body_text()),
                )
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        if !json_type {
            return Err(ApiError::field(
                "Content-Type",
                "must be application/json for a request with a body",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::field("body", format!("is not valid JSON: {e}")))?;
        if depth(&value) > MAX_JSON_DEPTH {
            return Err(ApiError::field(
                "body",
                format!("nests deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        Ok(JsonBody(Some(value)))
    }
}

/// `application/json` or any `+json` type, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Nesting depth of a JSON value (a scalar is 0, `[]` is 1). Iterative, so a
/// hostile body cannot exhaust the stack here (serde_json already caps at 128).
fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        max = max.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
    }
}
