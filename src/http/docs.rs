//! The OpenAPI document, embedded from the repo's `openapi.yaml` so the
//! binary always serves the contract it was built with.

use std::sync::OnceLock;

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;

/// The document as written.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The document as JSON, converted once.
pub fn openapi_json() -> Result<&'static Value, String> {
    static JSON: OnceLock<Result<Value, String>> = OnceLock::new();
    JSON.get_or_init(|| serde_norway::from_str(OPENAPI_YAML).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// GET /openapi.yaml
pub async fn yaml() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

/// GET /api-docs.json
pub async fn json() -> Result<Json<&'static Value>, ApiError> {
    openapi_json()
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("openapi.yaml does not parse: {e}")))
}
