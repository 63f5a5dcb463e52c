//! Client protocol v1: JSON text frames between a client and an edge.
//!
//! A client sends [`ClientFrame`]s — `{"id": n, "op": "...", ...}` — and receives
//! [`ServerFrame`]s: exactly one [`Reply`] per command (`{"id": n, "ok": {...}}` or
//! `{"id": n, "error": {...}}`) and any number of [`Push`]es (`{"push": "...", ...}`, no id).
//!
//! Decoding a command ([`ClientFrame::decode`]) sorts bad input in two kinds, because the
//! answer differs: a frame that is not a command at all (not JSON, not an object, no usable
//! `id`) can't be answered and closes the connection with [`CloseCode::BadRequest`]; a command
//! with a usable `id` but a bad op or bad fields gets an `error` reply and the connection lives on.
//!
//! [`CloseCode::BadRequest`]: crate::CloseCode::BadRequest

use std::fmt;

use serde::Serialize;

use crate::close::{CloseCode, ErrorBody};
use crate::model::{ClientId, Payload, Position, RoomName};

mod decode;
mod server;

pub use server::*;

/// The WebSocket subprotocol name, echoed when a client offers it.
pub const SUBPROTOCOL: &str = "plaza.v1";

/// Every op of protocol v1.
const KNOWN_OPS: [&str; 12] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "presence_update",
    "history",
    "refresh",
    "ping",
    "set",
    "delete",
];

/// Longest accepted `idem` key, in bytes.
pub const MAX_IDEM_LEN: usize = 128;

/// Checks an idempotency key: 1..=[`MAX_IDEM_LEN`] bytes and no control characters (keys travel
/// in NATS headers and logs, where CR/LF would split a line). The error names what is wrong.
pub fn check_idem(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEM_LEN {
        return Err(format!(
            "`idem` must be 1..={MAX_IDEM_LEN} bytes, got {}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`idem` must not contain control characters, found U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

/// A command from a client: `{"id": n, "op": "<name>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientFrame {
    /// Chosen by the client (1..=2³²−1), echoed in the reply.
    pub id: u32,
    /// The operation and its fields.
    #[serde(flatten)]
    pub command: Command,
}

/// The operations of protocol v1.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Authenticate; must be the first command.
    Connect(Connect),
    /// Start receiving a room's publications (and optionally join/leave events).
    Subscribe(Subscribe),
    /// Stop receiving a room's events and leave its presence.
    Unsubscribe(RoomRef),
    /// Publish a JSON value to a room.
    Publish(Publish),
    /// List a room's members, one page at a time.
    Presence(PresenceQuery),
    /// Count a room's clients and distinct users.
    PresenceStats(RoomRef),
    /// Replace this connection's presence `info` in a room it is a member of.
    PresenceUpdate(PresenceUpdate),
    /// Read a room's recent publications.
    History(History),
    /// Replace the connection's token before it expires.
    Refresh(Refresh),
    /// Application-level ping (browsers cannot send WebSocket pings).
    Ping,
    /// Set a key of a live-state room.
    Set(StateSet),
    /// Delete a key of a live-state room.
    Delete(StateDelete),
}

impl Command {
    /// The op name as sent on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::Publish(_) => "publish",
            Self::Presence(_) => "presence",
            Self::PresenceStats(_) => "presence_stats",
            Self::PresenceUpdate(_) => "presence_update",
            Self::History(_) => "history",
            Self::Refresh(_) => "refresh",
            Self::Ping => "ping",
            Self::Set(_) => "set",
            Self::Delete(_) => "delete",
        }
    }
}

/// `connect` fields.
#[derive(Clone, PartialEq, Default, Serialize)]
pub struct Connect {
    /// The JWT; may instead come from the `?token=` query parameter or a cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Free-form client name for logs (e.g. "web").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form client version for logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are credentials: never print them.
        f.debug_struct("Connect")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

/// `subscribe` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscribe {
    /// The room.
    pub room: RoomName,
    /// Resume after this position: missed publications come in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover: Option<Position>,
    /// Also receive `join`/`leave` pushes (`"presence": true` or `"clients"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
    /// Receive user-level `user_join`/`user_leave`/`user_update` pushes (`"presence": "users"`,
    /// or `"both"` together with `presence`).
    #[serde(skip)]
    pub presence_users: bool,
}

/// A command whose only field is `room`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomRef {
    /// The room.
    pub room: RoomName,
}

/// `publish` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publish {
    /// The room.
    pub room: RoomName,
    /// Any JSON value.
    pub data: Payload,
    /// Idempotency key: a retry with the same key within the dedupe window is not published
    /// again and gets the original offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idem: Option<String>,
    /// `true`: an ephemeral publication (delivered at most once to whoever is subscribed now,
    /// never stored, no offset; the reply is `{}`); `false`: durable; absent: the namespace's
    /// default. Cannot be combined with `idem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
}

/// `set` fields (live-state rooms; see [`crate::state`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateSet {
    /// The room.
    pub room: RoomName,
    /// The key ([`crate::state::check_state_key`]).
    pub key: String,
    /// Any JSON value.
    pub value: Payload,
    /// Compare-and-set: only if the key's current version is this (0: only if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Delete the key this many seconds after this set (1..=the namespace's `state.max_ttl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Tie the key to this connection: it is deleted when the connection ends.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tied: bool,
}

/// `delete` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateDelete {
    /// The room.
    pub room: RoomName,
    /// The key.
    pub key: String,
    /// Compare-and-delete: only if the key's current version is this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `presence` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceQuery {
    /// The room.
    pub room: RoomName,
    /// Start after this client id (the previous page's `next`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<ClientId>,
    /// At most this many members (the edge clamps it to `client.max_presence_page`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `"mode": "users"`: one entry per user, paged by user id (`after` is then a user id).
    #[serde(skip)]
    pub users: bool,
}

/// `presence_update` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceUpdate {
    /// The room.
    pub room: RoomName,
    /// The new `info` (any JSON value; `null` clears it).
    pub info: Option<Payload>,
}

/// `history` fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The room.
    pub room: RoomName,
    /// Only publications after this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Position>,
    /// At most this many (the newest ones without `since`, the oldest ones after it with `since`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `refresh` fields.
#[derive(Clone, PartialEq, Serialize)]
pub struct Refresh {
    /// The new JWT, for the same user.
    pub token: String,
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a text frame is not an acceptable command.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Not a command at all (no usable `id`): close the connection with
    /// [`CloseCode::BadRequest`] and this message as the reason.
    Malformed(String),
    /// A command with a usable `id` but bad content: reply with this error.
    Command {
        /// The command's id.
        id: u32,
        /// The error to reply with.
        error: ErrorBody,
    },
}

impl DecodeError {
    /// The close code for [`DecodeError::Malformed`].
    pub const CLOSE: CloseCode = CloseCode::BadRequest;
}

#[cfg(test)]
mod tests;
