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

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::close::{CloseCode, ErrorBody, ErrorCode};
use crate::model::{ClientId, Member, Payload, Position, Publication, RoomName, Sender, UserId};

/// The WebSocket subprotocol name, echoed when a client offers it.
pub const SUBPROTOCOL: &str = "plaza.v1";

/// Every op of protocol v1.
const KNOWN_OPS: [&str; 9] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "refresh",
    "ping",
];

/// Longest accepted `idem` key, in bytes.
pub const MAX_IDEM_LEN: usize = 128;

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
    /// List a room's members.
    Presence(RoomRef),
    /// Count a room's clients and distinct users.
    PresenceStats(RoomRef),
    /// Read a room's recent publications.
    History(History),
    /// Replace the connection's token before it expires.
    Refresh(Refresh),
    /// Application-level ping (browsers cannot send WebSocket pings).
    Ping,
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
            Self::History(_) => "history",
            Self::Refresh(_) => "refresh",
            Self::Ping => "ping",
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
    /// Also receive `join`/`leave` pushes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
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

impl ClientFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let object: FrameObject<'_> = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                DecodeError::Malformed("frame must be a JSON object".into())
            } else {
                DecodeError::Malformed(format!("malformed JSON: {e}"))
            }
        })?;
        let fields = Fields(object.0);
        let id = fields.id()?;
        let fail = |code: ErrorCode, message: String| DecodeError::Command {
            id,
            error: code.with(message),
        };
        if let Some(key) = fields.duplicate_key() {
            return Err(fail(
                ErrorCode::BadRequest,
                format!("duplicate field `{key}`"),
            ));
        }
        let op: String = match fields.raw("op") {
            None => return Err(fail(ErrorCode::BadRequest, "missing field `op`".into())),
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|_| fail(ErrorCode::BadRequest, "`op` must be a string".into()))?,
        };
        if !KNOWN_OPS.contains(&op.as_str()) {
            let shown: String = op.chars().take(64).collect();
            return Err(fail(ErrorCode::UnknownOp, format!("unknown op {shown:?}")));
        }
        // Validate `room` before the op's own fields so every op reports a bad name alike.
        let room = match fields.raw("room") {
            None => None,
            Some(raw) => {
                let name: Cow<'_, str> = serde_json::from_str::<Key<'_>>(raw.get())
                    .map_err(|_| fail(ErrorCode::BadRequest, "`room` must be a string".into()))?
                    .0;
                Some(
                    RoomName::new(&name)
                        .map_err(|e| fail(ErrorCode::InvalidRoom, e.to_string()))?,
                )
            }
        };
        let room = || {
            room.clone()
                .ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `room`".into()))
        };
        let bad = |e: FieldError| fail(ErrorCode::BadRequest, e.0);
        let command = match op.as_str() {
            "connect" => Command::Connect(Connect {
                token: fields.optional("token").map_err(bad)?,
                name: fields.optional("name").map_err(bad)?,
                version: fields.optional("version").map_err(bad)?,
            }),
            "subscribe" => Command::Subscribe(Subscribe {
                room: room()?,
                recover: fields.optional("recover").map_err(bad)?,
                presence: fields.optional("presence").map_err(bad)?.unwrap_or(false),
            }),
            "unsubscribe" => Command::Unsubscribe(RoomRef { room: room()? }),
            "publish" => {
                let data = match fields.raw("data") {
                    Some(raw) => Payload::from_raw(raw),
                    None => return Err(fail(ErrorCode::BadRequest, "missing field `data`".into())),
                };
                let idem: Option<String> = fields.optional("idem").map_err(bad)?;
                if let Some(key) = idem
                    .as_ref()
                    .filter(|k| k.is_empty() || k.len() > MAX_IDEM_LEN)
                {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!("`idem` must be 1..={MAX_IDEM_LEN} bytes, got {}", key.len()),
                    ));
                }
                Command::Publish(Publish {
                    room: room()?,
                    data,
                    idem,
                })
            }
            "presence" => Command::Presence(RoomRef { room: room()? }),
            "presence_stats" => Command::PresenceStats(RoomRef { room: room()? }),
            "history" => Command::History(History {
                room: room()?,
                since: fields.optional("since").map_err(bad)?,
                limit: fields.optional("limit").map_err(bad)?,
            }),
            "refresh" => Command::Refresh(Refresh {
                token: fields.required("token").map_err(bad)?,
            }),
            "ping" => Command::Ping,
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(fail(ErrorCode::UnknownOp, format!("unknown op {shown:?}")));
            }
        };
        Ok(ClientFrame { id, command })
    }
}

/// A JSON object's members in order, duplicates kept so they can be reported.
struct FrameObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for FrameObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = FrameObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(FrameObject(members))
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// A string that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct FieldError(String);

struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    fn id(&self) -> Result<u32, DecodeError> {
        let ids = self.0.iter().filter(|(k, _)| k == "id").count();
        if ids > 1 {
            return Err(DecodeError::Malformed("duplicate field `id`".into()));
        }
        let raw = self
            .raw("id")
            .ok_or_else(|| DecodeError::Malformed("missing field `id`".into()))?;
        match serde_json::from_str::<u32>(raw.get()) {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(DecodeError::Malformed(format!(
                "`id` must be an integer from 1 to 4294967295, got {}",
                truncate(raw.get(), 32)
            ))),
        }
    }

    fn duplicate_key(&self) -> Option<&str> {
        let mut keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
    }

    /// An optional field; `null` counts as absent.
    fn optional<T: Deserialize<'a>>(&self, name: &str) -> Result<Option<T>, FieldError> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| FieldError(format!("field `{name}`: {}", strip_position(&e)))),
        }
    }

    fn required<T: Deserialize<'a>>(&self, name: &str) -> Result<T, FieldError> {
        self.optional(name)?
            .ok_or_else(|| FieldError(format!("missing field `{name}`")))
    }
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

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
    /// Every member, one per connection.
    pub members: Vec<Member>,
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
    /// The server ended a subscription (e.g. the refreshed token no longer allows the room).
    Unsubscribed(UnsubscribedPush),
    /// The token expires soon: send `refresh` with a new one.
    Refresh(RefreshPush),
    /// The connection is about to close with this code.
    Disconnect(DisconnectPush),
}

impl Push {
    fn decode(kind: &str, text: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            "pub" => Push::Pub(serde_json::from_str(text)?),
            "join" => Push::Join(serde_json::from_str(text)?),
            "leave" => Push::Leave(serde_json::from_str(text)?),
            "unsubscribed" => Push::Unsubscribed(serde_json::from_str(text)?),
            "refresh" => Push::Refresh(serde_json::from_str(text)?),
            "disconnect" => Push::Disconnect(serde_json::from_str(text)?),
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

/// `join` and `leave` pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberPush {
    /// The room.
    pub room: RoomName,
    /// Who joined or left.
    pub member: Member,
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
            reason: reason.into(),
            reconnect: code.reconnect(),
        }
    }
}

#[cfg(test)]
mod tests;
