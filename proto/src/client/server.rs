//! What an edge sends a client: replies and pushes.

use std::borrow::Cow;

use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::close::{CloseCode, ErrorBody, ErrorCode};
use crate::model::{ClientId, Member, Payload, Publication, RoomName, Sender, UserId};

/// What the edge sends: a reply to a command or a push.
///
/// `T` is the type of a successful reply's body: [`ReplyOk`] when encoding (edge side);
/// `Box<RawValue>` when decoding (client side), to be read with [`Reply::ok_as`] once the
/// client has matched the id to the command it sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerFrame<T = ReplyOk> {
    /// A reply to the command with the same id.
    Reply(Reply<T>),
    /// An event not tied to a command.
    Push(Push),
}

impl ServerFrame {
    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and every payload
        // was validated as JSON when it was created.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl ServerFrame<Box<RawValue>> {
    /// Decodes a frame received from an edge (client side).
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, default)]
            push: Option<Cow<'a, str>>,
        }
        let probe: Probe<'_> = serde_json::from_str(text)?;
        match probe.push {
            Some(kind) => Push::decode(&kind, text).map(ServerFrame::Push),
            None => serde_json::from_str(text).map(ServerFrame::Reply),
        }
    }
}

/// The reply to one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T = ReplyOk> {
    /// The command's id.
    pub id: u32,
    /// `ok` or `error`.
    pub result: Result<T, ErrorBody>,
}

impl Reply<Box<RawValue>> {
    /// Reads a successful reply's body as `T` (e.g. [`SubscribeOk`]).
    pub fn ok_as<T: DeserializeOwned>(&self) -> Result<T, ReplyError> {
        match &self.result {
            Ok(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| ReplyError::Decode(e.to_string()))
            }
            Err(e) => Err(ReplyError::Server(e.clone())),
        }
    }
}

/// Why [`Reply::ok_as`] found no usable body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplyError {
    /// The edge answered with an error.
    #[error("error {}: {}", .0.code.code(), .0.message)]
    Server(ErrorBody),
    /// The body did not have the expected shape.
    #[error("unexpected reply body: {0}")]
    Decode(String),
}

impl<T: Serialize> Serialize for Reply<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("id", &self.id)?;
        match &self.result {
            Ok(ok) => map.serialize_entry("ok", ok)?,
            Err(err) => map.serialize_entry("error", err)?,
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Reply<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(bound = "T: Deserialize<'de>")]
        struct Wire<T> {
            id: u32,
            ok: Option<T>,
            error: Option<ErrorBody>,
        }
        let wire = Wire::<T>::deserialize(d)?;
        let result = match (wire.ok, wire.error) {
            (Some(ok), None) => Ok(ok),
            (None, Some(err)) => Err(err),
            _ => {
                return Err(de::Error::custom(
                    "a reply has exactly one of `ok` and `error`",
                ));
            }
        };
        Ok(Reply {
            id: wire.id,
            result,
        })
    }
}

/// The body of a successful reply, one shape per op.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyOk {
    /// `connect`.
    Connect(ConnectOk),
    /// `subscribe`.
    Subscribe(SubscribeOk),
    /// `publish`.
    Publish(PublishOk),
    /// `presence`.
    Presence(PresenceOk),
    /// `presence` with `mode: "users"`.
    PresenceUsers(PresenceUsersOk),
    /// `presence_stats`.
    PresenceStats(PresenceStatsOk),
    /// `history`.
    History(HistoryOk),
    /// `refresh`.
    Refresh(RefreshOk),
    /// `unsubscribe` and `ping`: `{}`.
    Empty(Empty),
}

/// `connect` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectOk {
    /// This connection's id.
    pub client: ClientId,
    /// The authenticated user (the token's `sub`).
    pub user: UserId,
    /// Seconds until the token expires, or `null` if it does not.
    pub expires_in: Option<u64>,
    /// Seconds between the edge's WebSocket pings; send `ping` at least this often if the
    /// client cannot see WebSocket pings and wants to detect dead connections.
    pub ping_interval: u64,
}

/// `subscribe` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeOk {
    /// The room's current epoch.
    pub epoch: String,
    /// The room's latest offset: its last publication's, or for a room without publications
    /// a position to recover from later (not necessarily 0; offsets are not contiguous).
    pub offset: u64,
    /// With `recover`: whether `publications` holds every publication missed since the
    /// given position. Without `recover`: `false`.
    pub recovered: bool,
    /// With `recover`: the missed publications, in offset order.
    pub publications: Vec<Publication>,
    /// Live-state rooms only, when the client's map must be replaced (no `recover`, or
    /// `recovered: false`): every key with its value and version, at `offset`. Later
    /// changes arrive as `pub` pushes with offsets above `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<crate::state::StateEntry>>,
}

/// `publish` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishOk {
    /// The room's epoch.
    pub epoch: String,
    /// The publication's offset.
    pub offset: u64,
}

/// `presence` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceOk {
    /// One page of members, one per connection, in client id order.
    pub members: Vec<Member>,
    /// When more members follow: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ClientId>,
}

/// `presence` reply in `mode: "users"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceUsersOk {
    /// One page of users, in user id order.
    pub users: Vec<UserMember>,
    /// When more users follow: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<UserId>,
}

/// One user in a room's user-level presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMember {
    /// The user.
    pub user: UserId,
    /// How many of the user's connections are members of the room (0 in `user_leave`).
    pub connections: u32,
    /// The `info` of the user's member connection with the smallest client id (`null` if
    /// none).
    pub info: Option<Payload>,
}

/// `presence_stats` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceStatsOk {
    /// Number of member connections.
    pub clients: u64,
    /// Number of distinct users among them.
    pub users: u64,
}

/// `history` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryOk {
    /// The room's current epoch.
    pub epoch: String,
    /// The offset of the room's latest publication.
    pub offset: u64,
    /// Publications in offset order.
    pub publications: Vec<Publication>,
    /// With `since`: false if publications after `since` are no longer held (other epoch,
    /// or pruned by size or age); `publications` is then empty. Without `since`: true.
    pub complete: bool,
}

/// `refresh` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshOk {
    /// Seconds until the new token expires, or `null`.
    pub expires_in: Option<u64>,
}

/// An empty reply body, `{}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// An event the edge sends without being asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "push", rename_all = "snake_case")]
pub enum Push {
    /// A publication in a subscribed room.
    Pub(PubPush),
    /// A member joined a room the client subscribed to with `presence: true`.
    Join(MemberPush),
    /// A member left such a room.
    Leave(MemberPush),
    /// A member of such a room changed its presence `info` (`presence_update`).
    Update(MemberPush),
    /// The server ended a subscription (e.g. the refreshed token no longer allows the room).
    Unsubscribed(UnsubscribedPush),
    /// The token expires soon: send `refresh` with a new one.
    Refresh(RefreshPush),
    /// The connection is about to close with this code.
    Disconnect(DisconnectPush),
    /// An ephemeral publication in a subscribed room: no offset, not recoverable.
    Ephemeral(EphemeralPush),
    /// Join/leave pushes of a room subscribed with `presence: true` may have been missed (the
    /// edge re-attached to the broker tier): the room's members now, replacing the client's
    /// list.
    PresenceResync(PresenceResyncPush),
    /// A user's first connection joined a room subscribed with `presence: "users"`.
    UserJoin(UserPush),
    /// A user's last connection left such a room (debounced: a re-join within
    /// `client.user_presence_debounce_ms` cancels it).
    UserLeave(UserPush),
    /// A user's connection count or info changed in such a room.
    UserUpdate(UserPush),
}

impl Push {
    fn decode(kind: &str, text: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            "pub" => Push::Pub(serde_json::from_str(text)?),
            "join" => Push::Join(serde_json::from_str(text)?),
            "leave" => Push::Leave(serde_json::from_str(text)?),
            "update" => Push::Update(serde_json::from_str(text)?),
            "unsubscribed" => Push::Unsubscribed(serde_json::from_str(text)?),
            "refresh" => Push::Refresh(serde_json::from_str(text)?),
            "disconnect" => Push::Disconnect(serde_json::from_str(text)?),
            "ephemeral" => Push::Ephemeral(serde_json::from_str(text)?),
            "presence_resync" => Push::PresenceResync(serde_json::from_str(text)?),
            "user_join" => Push::UserJoin(serde_json::from_str(text)?),
            "user_leave" => Push::UserLeave(serde_json::from_str(text)?),
            "user_update" => Push::UserUpdate(serde_json::from_str(text)?),
            other => return Err(de::Error::custom(format!("unknown push {other:?}"))),
        })
    }
}

/// `pub` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubPush {
    /// The room.
    pub room: RoomName,
    /// The publication's offset.
    pub offset: u64,
    /// The published value.
    pub data: Payload,
    /// The publisher, if a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Sender>,
}

/// `ephemeral` push: like `pub` but without an offset; it is never in `history` or recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralPush {
    /// The room.
    pub room: RoomName,
    /// The published value.
    pub data: Payload,
    /// The publisher, if a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Sender>,
}

/// `join` and `leave` pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberPush {
    /// The room.
    pub room: RoomName,
    /// Who joined or left.
    pub member: Member,
}

/// `user_join`, `user_leave` and `user_update` pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPush {
    /// The room.
    pub room: RoomName,
    /// The user as it is now (`connections: 0` in `user_leave`).
    pub user: UserMember,
}

/// `presence_resync` push: the room's members now, one per connection in client id order.
/// A client replaces its member list with `members`; if `next` is set the room has more, and
/// the client reads the rest with `presence` (`after: next`, and so on), adding them; join and
/// leave pushes after this one apply on top as usual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceResyncPush {
    /// The room.
    pub room: RoomName,
    /// The first members, in client id order.
    pub members: Vec<Member>,
    /// When more members follow: pass it as `after` to `presence` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ClientId>,
}

/// `unsubscribed` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribedPush {
    /// The room.
    pub room: RoomName,
    /// Why, as an error code.
    pub code: ErrorCode,
    /// Why, in words.
    pub reason: String,
}

/// `refresh` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshPush {
    /// Seconds until the current token expires.
    pub expires_in: u64,
}

/// `disconnect` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectPush {
    /// The close code that follows.
    pub code: CloseCode,
    /// Why, in words.
    pub reason: String,
    /// Whether the client should reconnect.
    pub reconnect: bool,
}

impl DisconnectPush {
    /// The push announcing a close with `code`.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: crate::close::bounded(reason.into()),
            reconnect: code.reconnect(),
        }
    }
}
