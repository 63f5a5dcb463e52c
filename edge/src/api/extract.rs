//! Turning HTTP requests into validated values, with the API's error codes instead of axum's
//! plain-text rejections: JSON bodies (content type, size, shape), query strings, room names
//! in paths, and the field rules shared by several endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use plaza_backend::EdgeLink;
use plaza_proto::RoomName;
use plaza_proto::client::check_idem;
use serde::de::DeserializeOwned;

use super::error::{ApiCode, ApiError};
use crate::node::Node;

/// A JSON request body of type `T`: `Content-Type: application/json` (or `application/*+json`)
/// or 415, at most `http.max_body_bytes` or 413, and the right shape or 400.
pub(super) struct ApiJson<T>(pub(super) T);

impl<L: EdgeLink, T: DeserializeOwned> FromRequest<Arc<Node<L>>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, node: &Arc<Node<L>>) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiCode::UnsupportedMediaType
                .with("the body must be JSON, sent with `Content-Type: application/json`"));
        }
        // The router's `DefaultBodyLimit` makes `Bytes` stop reading past the limit.
        let limit = node.config.http.max_body_bytes;
        let body = Bytes::from_request(request, node)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiCode::TooLarge.with(format!("the body is larger than {limit} bytes"))
                } else {
                    ApiCode::BadRequest.with(rejection.body_text())
                }
            })?;
        serde_json::from_slice(&body)
            .map(ApiJson)
            .map_err(|e| ApiCode::BadRequest.with(format!("invalid body: {e}")))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// A query string of type `T`, or 400 naming the problem.
pub(super) struct ApiQuery<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|r| ApiCode::BadRequest.with(r.body_text()))
    }
}

/// The `{room}` segment of a path, percent-decoded and validated.
pub(super) struct RoomPath(pub(super) RoomName);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiCode::BadRequest.with(r.body_text()))?;
        room(&name).map(RoomPath)
    }
}

/// Validates a room name (400 `invalid_room`).
pub(super) fn room(name: &str) -> Result<RoomName, ApiError> {
    RoomName::new(name).map_err(|e| ApiCode::InvalidRoom.with(format!("room {name:?}: {e}")))
}

/// Validates an idempotency key as the WebSocket protocol does ([`check_idem`]).
pub(super) fn idem(key: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(Err(why)) = key.as_deref().map(check_idem) {
        return Err(ApiCode::BadRequest.with(why));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(ct("application/json"));
        assert!(ct("Application/JSON; charset=utf-8"));
        assert!(ct("application/merge-patch+json"));
        assert!(!ct("text/plain"));
        assert!(!ct("application/x-www-form-urlencoded"));
        assert!(!ct("json"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn idempotency_keys_are_bounded_like_the_websocket_protocol() {
        assert_eq!(idem(None), Ok(None));
        assert_eq!(idem(Some("k".into())), Ok(Some("k".into())));
        assert!(idem(Some(String::new())).is_err());
        assert!(idem(Some("k".repeat(plaza_proto::client::MAX_IDEM_LEN + 1))).is_err());
        assert!(idem(Some("a\nb".into())).is_err());
    }
}
