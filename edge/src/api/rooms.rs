//! Reading rooms: `GET /v1/api/rooms` (the active rooms, paginated) and, per room,
//! `presence`, `presence_stats` and `history`.
//!
//! Room names in paths are percent-encoded (`encodeURIComponent`), so names containing `/`
//! stay one path segment.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use plaza_backend::EdgeLink;
use plaza_proto::client::{HistoryOk, PresenceOk, PresenceStatsOk, PresenceUsersOk};
use plaza_proto::cluster::RoomsPage;
use plaza_proto::{ClientId, Position, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiCode, ApiError};
use super::extract::{self, ApiQuery, RoomPath};
use crate::node::Node;

/// Rooms per page of `GET /v1/api/rooms` when `limit` is not given.
pub const DEFAULT_ROOMS_LIMIT: u32 = 100;
/// Most rooms per page; larger `limit`s are clamped to it.
pub const MAX_ROOMS_LIMIT: u32 = 1000;

/// `GET /v1/api/rooms` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// The previous page's `next`; empty or absent for the first page.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /v1/api/rooms/{room}/history` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    since_epoch: Option<String>,
    #[serde(default)]
    since_offset: Option<u64>,
}

pub(super) async fn list<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RoomsPage>, ApiError> {
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(name) => Some(extract::room(name)?),
    };
    let limit = match q.limit {
        None => DEFAULT_ROOMS_LIMIT,
        Some(0) => return Err(ApiCode::BadRequest.with("`limit` must be at least 1")),
        Some(n) => n.min(MAX_ROOMS_LIMIT),
    };
    let page = node.rooms(after, limit).await?;
    Ok(Json(page))
}

/// `GET /v1/api/rooms/{room}/presence` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PresenceQuery {
    /// The previous page's `next`; empty or absent for the first page.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    /// `clients` (default) or `users`: one entry per user, paged by user id.
    #[serde(default)]
    mode: Option<PresenceMode>,
}

/// `mode` of the presence query.
#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(super) enum PresenceMode {
    Clients,
    Users,
}

/// A presence page: per connection, or per user with `mode=users`.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum PresenceReply {
    Clients(PresenceOk),
    Users(PresenceUsersOk),
}

/// Same semantics as the WebSocket `presence` command; `limit` defaults to and is clamped at
/// `client.max_presence_page`.
pub(super) async fn presence<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    RoomPath(room): RoomPath,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceReply>, ApiError> {
    let after = q.after.filter(|a| !a.is_empty());
    let max = node.config.client.max_presence_page;
    let limit = match q.limit {
        Some(0) => return Err(ApiCode::BadRequest.with("`limit` must be at least 1")),
        limit => limit.unwrap_or(max).min(max),
    };
    if q.mode == Some(PresenceMode::Users) {
        let after = after.map(UserId::new);
        let (users, next) = node.presence_users(&room, after, limit).await?;
        return Ok(Json(PresenceReply::Users(PresenceUsersOk { users, next })));
    }
    let page = node.presence(room, after.map(ClientId::new), limit).await?;
    Ok(Json(PresenceReply::Clients(PresenceOk {
        members: page.members,
        next: page.next,
    })))
}

pub(super) async fn presence_stats<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    RoomPath(room): RoomPath,
) -> Result<Json<PresenceStatsOk>, ApiError> {
    let s = node.presence_stats(room).await?;
    Ok(Json(PresenceStatsOk {
        clients: s.clients,
        users: s.users,
    }))
}

/// Same semantics as the WebSocket `history` command; `limit` defaults to and is clamped at
/// `client.max_history_limit`.
pub(super) async fn history<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    RoomPath(room): RoomPath,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryOk>, ApiError> {
    let since = match (q.since_epoch, q.since_offset) {
        (None, None) => None,
        (Some(epoch), Some(offset)) => Some(Position { epoch, offset }),
        _ => {
            return Err(
                ApiCode::BadRequest.with("`since_epoch` and `since_offset` must be given together")
            );
        }
    };
    let max = node.config.client.max_history_limit;
    let limit = q.limit.unwrap_or(max).min(max);
    let page = node.history(room, since, Some(limit)).await?;
    Ok(Json(HistoryOk {
        epoch: page.position.epoch,
        offset: page.position.offset,
        publications: page.publications,
        complete: page.complete,
    }))
}
