//! `/demo`: a chess clock in the browser, served from the binary so it needs
//! no Node at run time. The page (`demo/`) is plain ES modules importing the
//! TypeScript SDK's committed build (`sdk/typescript/dist`), served beside it.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

const JS: &str = "text/javascript; charset=utf-8";

/// A module of the SDK's build.
macro_rules! sdk {
    ($file:literal) => {
        include_str!(concat!("../../sdk/typescript/dist/", $file))
    };
}

/// Every file under `/demo/`: name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("demo/app.js")),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("demo/demo.css"),
    ),
    ("index.js", JS, sdk!("index.js")),
    ("clock.js", JS, sdk!("clock.js")),
    ("errors.js", JS, sdk!("errors.js")),
    ("live.js", JS, sdk!("live.js")),
    ("rest.js", JS, sdk!("rest.js")),
    ("timing.js", JS, sdk!("timing.js")),
    ("types.js", JS, sdk!("types.js")),
    ("webhook.js", JS, sdk!("webhook.js")),
];

/// GET /demo
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("demo/index.html"))
}

/// GET /demo/{file}
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, kind, body)| asset(kind, body))
        .ok_or_else(|| ApiError::RouteNotFound(format!("No demo file {name:?}")))
}

/// Same-origin everything: the page talks only to the server that served it.
fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
            ),
        ],
        body,
    )
        .into_response()
}
