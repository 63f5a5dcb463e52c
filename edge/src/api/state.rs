//! Live-state rooms in the server API: `POST /v1/api/state/set`, `POST /v1/api/state/delete`
//! and `GET /v1/api/rooms/{room}/state`. The same checks and error codes as the WebSocket
//! `set`/`delete` (no `from`, no tied keys, no per-connection rate: API keys are trusted), and
//! allowed in `client_publish = false` namespaces, as server publishes are.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use plaza_backend::EdgeLink;
use plaza_proto::Payload;
use plaza_proto::client::PublishOk;
use plaza_proto::state::{StateEntry, check_state_key};
use serde::{Deserialize, Serialize};

use super::error::{ApiCode, ApiError};
use super::extract::{self, ApiJson, RoomPath};
use crate::node::Node;
use crate::node::state::SetRequest;

/// `state/set` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    room: String,
    key: String,
    value: Payload,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    ttl: Option<u64>,
}

/// `state/delete` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteBody {
    room: String,
    key: String,
    #[serde(default)]
    version: Option<u64>,
}

/// `GET /v1/api/rooms/{room}/state` response.
#[derive(Serialize)]
pub(super) struct StateOk {
    epoch: String,
    offset: u64,
    state: Vec<StateEntry>,
}

fn key(key: &str) -> Result<(), ApiError> {
    check_state_key(key).map_err(|why| ApiCode::BadRequest.with(why))
}

pub(super) async fn set<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<SetBody>,
) -> Result<Json<PublishOk>, ApiError> {
    let room = extract::room(&body.room)?;
    key(&body.key)?;
    let set = SetRequest {
        key: body.key,
        value: body.value,
        expect: body.version,
        ttl: body.ttl,
        tied: None,
        from: None,
    };
    let ack = node.state_set(room, set).await?;
    Ok(Json(PublishOk {
        epoch: ack.position.epoch,
        offset: ack.position.offset,
    }))
}

pub(super) async fn delete<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<Json<PublishOk>, ApiError> {
    let room = extract::room(&body.room)?;
    key(&body.key)?;
    let ack = node
        .state_delete(room, body.key, body.version, None)
        .await?;
    Ok(Json(PublishOk {
        epoch: ack.position.epoch,
        offset: ack.position.offset,
    }))
}

pub(super) async fn read<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    RoomPath(room): RoomPath,
) -> Result<Json<StateOk>, ApiError> {
    let snapshot = node.state_read(room).await?;
    Ok(Json(StateOk {
        epoch: snapshot.position.epoch,
        offset: snapshot.position.offset,
        state: snapshot.entries,
    }))
}
