//! `POST /v1/api/publish` and `POST /v1/api/broadcast`: server-side publishing.
//!
//! Server publications have no `from` (subscribers see `from` absent) and are allowed in every
//! namespace, `client_publish = false` ones included — those exist for exactly this. The
//! namespace's `max_message_bytes` still applies.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use futures_util::StreamExt;
use plaza_backend::EdgeLink;
use plaza_proto::client::PublishOk;
use plaza_proto::{Payload, RoomName};
use serde::{Deserialize, Serialize};

use super::error::{ApiCode, ApiError, ErrorObject};
use super::extract::{self, ApiJson};
use crate::node::Node;

/// Most rooms one `broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 1000;

/// Publishes of one `broadcast` in flight at once: enough to hide broker latency, few enough
/// that one request cannot monopolise the broker link.
const BROADCAST_CONCURRENCY: usize = 32;

/// `publish` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    room: String,
    data: Payload,
    #[serde(default)]
    idem: Option<String>,
}

/// `broadcast` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BroadcastBody {
    rooms: Vec<String>,
    data: Payload,
    #[serde(default)]
    idem: Option<String>,
}

/// `broadcast` response body: one result per requested room, in request order.
#[derive(Serialize)]
pub(super) struct BroadcastOk {
    results: Vec<RoomResult>,
}

/// One room's outcome of a `broadcast`.
#[derive(Serialize)]
#[serde(untagged)]
enum RoomResult {
    Published {
        room: RoomName,
        epoch: String,
        offset: u64,
    },
    Failed {
        room: RoomName,
        error: ErrorObject,
    },
}

pub(super) async fn publish<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<Json<PublishOk>, ApiError> {
    let room = extract::room(&body.room)?;
    let idem = extract::idem(body.idem)?;
    publish_one(&node, room, body.data, idem).await.map(Json)
}

/// Validates the whole request first (nothing is published if any room name is invalid), then
/// publishes to every room; per-room failures are reported in the results, not as an HTTP error.
pub(super) async fn broadcast<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiJson(body): ApiJson<BroadcastBody>,
) -> Result<Json<BroadcastOk>, ApiError> {
    let n = body.rooms.len();
    if n == 0 || n > MAX_BROADCAST_ROOMS {
        return Err(ApiCode::BadRequest.with(format!(
            "`rooms` must name 1..={MAX_BROADCAST_ROOMS} rooms, got {n}"
        )));
    }
    let mut seen = HashSet::with_capacity(n);
    let mut rooms = Vec::with_capacity(n);
    for (i, name) in body.rooms.iter().enumerate() {
        let room = extract::room(name)
            .map_err(|e| ApiCode::InvalidRoom.with(format!("rooms[{i}]: {}", e.message)))?;
        if !seen.insert(room.clone()) {
            return Err(ApiCode::BadRequest.with(format!("rooms[{i}]: {room} is listed twice")));
        }
        rooms.push(room);
    }
    let idem = extract::idem(body.idem)?;
    let node = &node;
    let (data, idem) = (&body.data, &idem);
    let results = futures_util::stream::iter(rooms)
        .map(|room| async move {
            match publish_one(node, room.clone(), data.clone(), idem.clone()).await {
                Ok(ok) => RoomResult::Published {
                    room,
                    epoch: ok.epoch,
                    offset: ok.offset,
                },
                Err(e) => RoomResult::Failed {
                    room,
                    error: e.into(),
                },
            }
        })
        .buffered(BROADCAST_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(BroadcastOk { results }))
}

/// Publishes `data` to `room` as the server (no `from`).
async fn publish_one<L: EdgeLink>(
    node: &Node<L>,
    room: RoomName,
    data: Payload,
    idem: Option<String>,
) -> Result<PublishOk, ApiError> {
    let ack = node.publish(room, data, None, idem).await?;
    Ok(PublishOk {
        epoch: ack.position.epoch,
        offset: ack.position.offset,
    })
}
