//! API key authentication: `Authorization: Bearer <key>` against every configured key.
//!
//! The presented key is compared with *every* configured key in constant time and the results
//! are combined without branching, so timing reveals neither which key matched nor how much
//! of a wrong key was right (only whether its length equals a configured key's, which is not
//! secret). Several keys may be configured at once, which is how keys are rotated: add the new
//! key, move the callers over, remove the old one. Keys are never logged; failures are counted
//! in `plaza_auth_failures_total{reason}`. A client address with too many failures in a window
//! (`api.max_failed_auth_per_ip`) is answered 429 without its key being looked at until the
//! window ends ([`crate::limits::FailedAuth`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plaza_backend::EdgeLink;
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiCode;
use crate::client_ip::client_ip;
use crate::config::Secret;
use crate::metrics as m;
use crate::node::Node;

/// Middleware: lets the request through only with an accepted key; answers 404
/// `api_disabled` when no keys are configured and 401 `unauthorized` otherwise.
pub(super) async fn require_key<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &node.config.api.keys;
    if keys.is_empty() {
        return ApiCode::ApiDisabled
            .with("the server API is disabled: no keys are configured in [api] keys")
            .into_response();
    }
    let http = &node.config.http;
    // Requests always carry the peer address (the listener adds it); a router driven without
    // one (in-process tests) is keyed by the unspecified address.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    let ip = client_ip(
        peer,
        request.headers(),
        &http.trusted_proxies,
        http.cf_connecting_ip,
    );
    if let Err(wait) = node.failed_auth.admit(ip) {
        let mut response = ApiCode::TooManyFailedAttempts
            .with(format!(
                "too many failed API key attempts from {ip}; retry in {} s",
                wait.as_secs().max(1)
            ))
            .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return response;
    }
    let refusal = match bearer(request.headers()) {
        None => Some((
            "missing",
            "missing or malformed Authorization header; expected `Bearer <API key>`",
        )),
        Some(presented) if !accepted(keys, presented) => Some(("invalid", "invalid API key")),
        Some(_) => None,
    };
    if let Some((reason, message)) = refusal {
        metrics::counter!(m::AUTH_FAILURES, "reason" => format!("api_key_{reason}")).increment(1);
        node.failed_auth.failed(ip);
        return ApiCode::Unauthorized.with(message).into_response();
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None; // Two headers: ambiguous, refuse.
    }
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` equals any of `keys`, comparing with all of them in constant time.
fn accepted(keys: &[Secret], presented: &[u8]) -> bool {
    keys.iter()
        .fold(Choice::from(0), |any, key| {
            any | key.0.as_bytes().ct_eq(presented)
        })
        .into()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_credentials_are_read_strictly() {
        assert_eq!(bearer(&headers(&["Bearer abc"])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Some(&b"abc"[..]));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Basic abc",
            "Token abc",
        ] {
            assert_eq!(bearer(&headers(&[bad])), None, "{bad:?}");
        }
        assert_eq!(bearer(&headers(&["Bearer a", "Bearer b"])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn any_configured_key_is_accepted_and_nothing_else() {
        let keys = [
            Secret("old-key-0123456789".into()),
            Secret("new-key-0123456789".into()),
        ];
        assert!(accepted(&keys, b"old-key-0123456789"));
        assert!(accepted(&keys, b"new-key-0123456789"));
        assert!(!accepted(&keys, b"new-key-012345678"));
        assert!(!accepted(&keys, b"new-key-01234567890"));
        assert!(!accepted(&keys, b""));
        assert!(!accepted(&[], b""));
    }
}
