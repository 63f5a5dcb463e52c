//! The server API's errors: one table of stable codes, each with its HTTP status. Broker call
//! failures arrive as client error codes (the one mapping from broker errors is the node's,
//! `node/calls.rs`) and keep their names here.
//!
//! Every error response is `{"error": {"code": "<snake_case>", "message": "..."}}`. Codes that
//! mean the same as a WebSocket error code use that code's name ([`ErrorCode::name`]), so an
//! application sees one vocabulary on both sides.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plaza_proto::{ErrorBody, ErrorCode};
use serde::Serialize;

/// Seconds a client should wait before retrying after `backend_unavailable`.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A server API error code. Stable: applications branch on these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCode {
    /// The body, query or path is malformed or has a wrong or out-of-range field (400).
    BadRequest,
    /// A room name is not valid (400).
    InvalidRoom,
    /// The `Authorization: Bearer` header is missing, malformed or carries no accepted key (401).
    Unauthorized,
    /// No API keys are configured, so the API is off (404).
    ApiDisabled,
    /// No such endpoint (404).
    NotFound,
    /// The endpoint exists but not with this method (405).
    MethodNotAllowed,
    /// The room's namespace does not offer this kind of presence (409).
    PresenceDisabled,
    /// The room's namespace does not allow this kind of publication (ephemeral off) (409).
    PublishDisabled,
    /// A rate limit of the edge is exceeded (the room's ephemeral rate); retry later (429).
    RateLimited,
    /// The request body is larger than `http.max_body_bytes` (413).
    TooLarge,
    /// `data` is larger than the namespace's `max_message_bytes` (413).
    MessageTooLarge,
    /// A request with a body did not declare `Content-Type: application/json` (415).
    UnsupportedMediaType,
    /// This client address made too many failed key attempts; retry after `Retry-After` (429).
    TooManyFailedAttempts,
    /// The broker tier is unavailable or did not answer in time; retry after `Retry-After` (503).
    BackendUnavailable,
    /// The edge hit an unexpected error handling the request; it was logged (500).
    Internal,
    /// The broker tier does not offer this endpoint (501).
    NotSupported,
    /// A state call on a room that is not a live-state room, or a publish on one (409).
    NotStateRoom,
    /// A compare-and-set found another version; the message names the current one (409).
    StateConflict,
    /// A state room holds as many keys as its namespace allows (409).
    LimitExceeded,
}

impl ApiCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ApiCode; 19] = [
        Self::BadRequest,
        Self::InvalidRoom,
        Self::Unauthorized,
        Self::ApiDisabled,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PresenceDisabled,
        Self::PublishDisabled,
        Self::RateLimited,
        Self::TooLarge,
        Self::MessageTooLarge,
        Self::UnsupportedMediaType,
        Self::TooManyFailedAttempts,
        Self::BackendUnavailable,
        Self::Internal,
        Self::NotSupported,
        Self::NotStateRoom,
        Self::StateConflict,
        Self::LimitExceeded,
    ];

    /// The code's stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadRequest => ErrorCode::BadRequest.name(),
            Self::InvalidRoom => ErrorCode::InvalidRoom.name(),
            Self::Unauthorized => "unauthorized",
            Self::ApiDisabled => "api_disabled",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PresenceDisabled => ErrorCode::PresenceDisabled.name(),
            Self::PublishDisabled => ErrorCode::PublishDisabled.name(),
            Self::RateLimited => ErrorCode::RateLimited.name(),
            Self::TooLarge => "too_large",
            Self::MessageTooLarge => ErrorCode::MessageTooLarge.name(),
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooManyFailedAttempts => "too_many_failed_attempts",
            Self::BackendUnavailable => ErrorCode::BackendUnavailable.name(),
            Self::Internal => ErrorCode::Internal.name(),
            Self::NotSupported => "not_supported",
            Self::NotStateRoom => ErrorCode::NotStateRoom.name(),
            Self::StateConflict => ErrorCode::StateConflict.name(),
            Self::LimitExceeded => ErrorCode::LimitExceeded.name(),
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidRoom => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ApiDisabled | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PresenceDisabled
            | Self::PublishDisabled
            | Self::NotStateRoom
            | Self::StateConflict
            | Self::LimitExceeded => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge | Self::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyFailedAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotSupported => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// An error with this code and a message naming the values involved.
    /// The message is cut like the WebSocket's ([`plaza_proto::close::bounded`]): it may quote
    /// request input, which must never be echoed back at length.
    pub fn with(self, message: impl Into<String>) -> ApiError {
        ApiError {
            code: self,
            message: plaza_proto::close::bounded(message.into()),
        }
    }
}

/// A failed request: its code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct ApiError {
    /// What went wrong.
    pub code: ApiCode,
    /// Detail for humans; never contains secrets.
    pub message: String,
}

/// The `error` object of a response body (also used per room in `broadcast` results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorObject {
    /// [`ApiCode::name`].
    pub code: &'static str,
    /// [`ApiError::message`].
    pub message: String,
}

impl From<ApiError> for ErrorObject {
    fn from(e: ApiError) -> Self {
        Self {
            code: e.code.name(),
            message: e.message,
        }
    }
}

#[derive(Serialize)]
struct ErrorResponse {
    error: ErrorObject,
}

impl From<ErrorBody> for ApiError {
    /// A failed broker call (see `Node`'s calls): the client code of the same name.
    fn from(e: ErrorBody) -> Self {
        let code = match e.code {
            ErrorCode::BackendUnavailable => ApiCode::BackendUnavailable,
            ErrorCode::PresenceDisabled => ApiCode::PresenceDisabled,
            ErrorCode::PublishDisabled => ApiCode::PublishDisabled,
            ErrorCode::RateLimited => ApiCode::RateLimited,
            ErrorCode::MessageTooLarge => ApiCode::MessageTooLarge,
            ErrorCode::InvalidRoom => ApiCode::InvalidRoom,
            ErrorCode::NotStateRoom => ApiCode::NotStateRoom,
            ErrorCode::StateConflict => ApiCode::StateConflict,
            ErrorCode::LimitExceeded => ApiCode::LimitExceeded,
            // The node's calls produce no other codes; anything else is the request's fault.
            _ => ApiCode::BadRequest,
        };
        code.with(e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let mut response =
            (code.status(), Json(ErrorResponse { error: self.into() })).into_response();
        let headers = response.headers_mut();
        match code {
            ApiCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiCode::BackendUnavailable | ApiCode::RateLimited => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_errors_are_4xx_503_or_500_for_internal() {
        let names: HashSet<&str> = ApiCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ApiCode::ALL.len());
        for code in ApiCode::ALL {
            assert!(
                code.name()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code:?}"
            );
            let status = code.status();
            assert!(
                status.is_client_error()
                    || status == StatusCode::SERVICE_UNAVAILABLE
                    || (code == ApiCode::Internal && status == StatusCode::INTERNAL_SERVER_ERROR)
                    || (code == ApiCode::NotSupported && status == StatusCode::NOT_IMPLEMENTED),
                "{code:?}"
            );
        }
    }

    #[test]
    fn refusals_say_how_to_authenticate_and_outages_when_to_retry() {
        let r = ApiCode::Unauthorized.with("no key").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = ApiCode::BackendUnavailable.with("down").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiCode::NotFound.with("nothing").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn broker_errors_map_onto_api_codes() {
        use plaza_proto::cluster::BrokerError;

        use crate::node::calls::broker_error;
        let api = |e| ApiError::from(broker_error(e));
        let unavailable = api(BrokerError::Unavailable("no quorum".into()));
        assert_eq!(unavailable.code, ApiCode::BackendUnavailable);
        let disabled = api(BrokerError::PresenceDisabled {
            namespace: "big".into(),
        });
        assert_eq!(disabled.code, ApiCode::PresenceDisabled);
        let invalid = api(BrokerError::Invalid("idem".into()));
        assert_eq!(invalid.code, ApiCode::BadRequest);
        let too_large = ApiError::from(ErrorCode::MessageTooLarge.with("data is 9 bytes"));
        assert_eq!(too_large.code, ApiCode::MessageTooLarge);
    }
}
