//! `POST /v1/api/disconnect`: close every connection of a user, on every edge.
//!
//! The edge that receives the request does not look for the user's connections itself: it asks
//! the broker tier ([`EdgeLink::disconnect_user`]), which tells every attached edge — this one
//! included — and each closes the user's connections with close code 4009 (`Kicked`,
//! reconnectable). Whether the user may come back is up to the token issuer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use plaza_backend::EdgeLink;
use plaza_proto::UserId;
use plaza_proto::client::Empty;
use serde::Deserialize;

use super::error::{ApiCode, ApiError};
use super::extract::ApiJson;
use crate::node::Node;

/// Longest accepted user id, in bytes.
pub const MAX_USER_BYTES: usize = 1024;
/// Longest accepted reason, in bytes (clients see it in the `disconnect` push; the close frame
/// carries a truncated copy).
pub const MAX_REASON_BYTES: usize = 256;
/// The reason when none is given.
pub const DEFAULT_REASON: &str = "disconnected by the server";

/// `disconnect` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisconnectBody {
    user: String,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn disconnect<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<DisconnectBody>,
) -> Result<Json<Empty>, ApiError> {
    let len = body.user.len();
    if len == 0 || len > MAX_USER_BYTES {
        return Err(ApiCode::BadRequest.with(format!(
            "`user` must be 1..={MAX_USER_BYTES} bytes, got {len}"
        )));
    }
    let reason = body.reason.unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiCode::BadRequest.with(format!(
            "`reason` must be at most {MAX_REASON_BYTES} bytes, got {}",
            reason.len()
        )));
    }
    let user = UserId::new(body.user);
    tracing::info!(user = %user, reason = %reason, "server API: disconnecting user on every edge");
    node.disconnect_user(user, reason).await?;
    Ok(Json(Empty {}))
}
