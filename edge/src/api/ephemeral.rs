//! `POST /v1/api/publish_ephemeral`: a server-side ephemeral publication (no `from`): delivered
//! at most once to whoever is subscribed now, never stored, answered `{}` (no offset).
//!
//! Allowed in every namespace whose `ephemeral` mode is not `off` (`client_publish = false`
//! ones included, as for durable server publishes); the namespace's `max_message_bytes` and the
//! room's ephemeral rate through this edge apply.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use plaza_backend::EdgeLink;
use plaza_proto::Payload;
use plaza_proto::client::Empty;
use plaza_rooms::config::EphemeralMode;
use serde::Deserialize;

use super::error::{ApiCode, ApiError};
use super::extract::{self, ApiJson};
use crate::node::Node;

/// `publish_ephemeral` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EphemeralBody {
    room: String,
    data: Payload,
}

pub(super) async fn publish_ephemeral<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<EphemeralBody>,
) -> Result<Json<Empty>, ApiError> {
    let room = extract::room(&body.room)?;
    if node.namespaces.of(&room).ephemeral == EphemeralMode::Off {
        return Err(ApiCode::PublishDisabled.with(format!(
            "namespace {:?} has no ephemeral publications (its `ephemeral` is off)",
            room.namespace()
        )));
    }
    node.publish_ephemeral(room, body.data, None).await?;
    Ok(Json(Empty {}))
}
