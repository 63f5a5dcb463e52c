//! The one table of error codes (in `error` replies) and close codes (on the WebSocket).
//!
//! Error codes answer one command; the connection stays open. Close codes end the connection:
//! 4000–4499 mean "reconnect with backoff", 4500–4999 mean "do not reconnect" (the client or its
//! token must change first). Every disconnect is announced with a `disconnect` push carrying the
//! same code, then the close frame.

use serde::{Deserialize, Serialize};

/// Why a command failed. Serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The edge failed unexpectedly; the command may be retried.
    Internal = 100,
    /// The `op` is not one of protocol v1's commands.
    UnknownOp = 101,
    /// A field is missing or has the wrong type or value.
    BadRequest = 102,
    /// A command other than `connect` came before `connect` succeeded.
    NotConnected = 103,
    /// `connect` was sent on a connection that is already connected.
    AlreadyConnected = 104,
    /// The room name is not valid.
    InvalidRoom = 105,
    /// The token does not grant this operation on this room.
    PermissionDenied = 106,
    /// The connection is already subscribed to this room.
    AlreadySubscribed = 107,
    /// The command needs a subscription to the room and there is none.
    NotSubscribed = 108,
    /// The publication is larger than the namespace allows.
    MessageTooLarge = 109,
    /// The token is missing, malformed, or its signature or claims do not verify.
    InvalidToken = 110,
    /// The token has expired.
    TokenExpired = 111,
    /// Too many commands; slow down and retry.
    RateLimited = 112,
    /// The broker tier is unavailable or did not answer in time; retry.
    BackendUnavailable = 113,
    /// The namespace does not offer this kind of presence.
    PresenceDisabled = 114,
    /// Clients may not publish in this namespace (server-side publishing only).
    PublishDisabled = 115,
    /// A `refresh` token names a different user than the connection's.
    WrongUser = 116,
    /// A per-connection limit (such as rooms per connection) was reached, or a state room
    /// holds as many keys as its namespace allows.
    LimitExceeded = 117,
    /// `set`/`delete` on a room that is not a live-state room, or `publish` on one (its
    /// publications are its map's changes).
    NotStateRoom = 118,
    /// A compare-and-set `set`/`delete` found another version of the key; the error's
    /// `version` is the key's current version (0: absent).
    StateConflict = 119,
}

impl ErrorCode {
    /// All codes, for documentation and tests.
    pub const ALL: [ErrorCode; 20] = [
        Self::Internal,
        Self::UnknownOp,
        Self::BadRequest,
        Self::NotConnected,
        Self::AlreadyConnected,
        Self::InvalidRoom,
        Self::PermissionDenied,
        Self::AlreadySubscribed,
        Self::NotSubscribed,
        Self::MessageTooLarge,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::RateLimited,
        Self::BackendUnavailable,
        Self::PresenceDisabled,
        Self::PublishDisabled,
        Self::WrongUser,
        Self::LimitExceeded,
        Self::NotStateRoom,
        Self::StateConflict,
    ];

    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the same command may succeed if retried later, unchanged.
    pub fn temporary(self) -> bool {
        matches!(
            self,
            Self::Internal | Self::RateLimited | Self::BackendUnavailable
        )
    }

    /// A stable snake_case name, used as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::UnknownOp => "unknown_op",
            Self::BadRequest => "bad_request",
            Self::NotConnected => "not_connected",
            Self::AlreadyConnected => "already_connected",
            Self::InvalidRoom => "invalid_room",
            Self::PermissionDenied => "permission_denied",
            Self::AlreadySubscribed => "already_subscribed",
            Self::NotSubscribed => "not_subscribed",
            Self::MessageTooLarge => "message_too_large",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::RateLimited => "rate_limited",
            Self::BackendUnavailable => "backend_unavailable",
            Self::PresenceDisabled => "presence_disabled",
            Self::PublishDisabled => "publish_disabled",
            Self::WrongUser => "wrong_user",
            Self::LimitExceeded => "limit_exceeded",
            Self::NotStateRoom => "not_state_room",
            Self::StateConflict => "state_conflict",
        }
    }

    /// An error body with this code and a message.
    /// The message is cut to [`MAX_MESSAGE_BYTES`]: messages quote values from the input, and
    /// an error must never echo a large input back (an amplifier for unauthenticated sockets).
    pub fn with(self, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: self,
            message: bounded(message.into()),
            temporary: self.temporary(),
            version: None,
        }
    }
}

/// Longest error message or close reason sent to a client, in bytes (longer ones are cut and
/// end with `…`).
pub const MAX_MESSAGE_BYTES: usize = 256;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] bytes on a character boundary, marked with `…`.
pub fn bounded(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        Self::from_code(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {n}")))
    }
}

/// The `error` object of a failed command's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail, naming the values involved.
    pub message: String,
    /// Whether retrying the same command later may succeed.
    pub temporary: bool,
    /// `state_conflict` only: the key's current version (0: the key does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Why a connection is closed. Serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The edge is shutting down or draining: reconnect (to any edge).
    Shutdown = 4000,
    /// The client did not read fast enough and its outbound queue overflowed.
    SlowConsumer = 4001,
    /// The token expired and was not refreshed in time: reconnect with a fresh token.
    TokenExpired = 4002,
    /// The edge hit an unexpected error.
    ServerError = 4003,
    /// The broker tier is unreachable from this edge.
    BackendUnavailable = 4004,
    /// No `connect` command arrived within the connect timeout.
    ConnectTimeout = 4005,
    /// Nothing (not even a pong) arrived within the idle timeout.
    IdleTimeout = 4006,
    /// The client kept sending commands faster than allowed.
    RateLimited = 4007,
    /// The user has too many connections on this edge.
    TooManyConnections = 4008,
    /// The server disconnected this user on purpose (e.g. server API); may reconnect.
    Kicked = 4009,
    /// The connect token is invalid (bad signature, malformed, wrong issuer or audience).
    InvalidToken = 4500,
    /// The client broke the protocol (malformed frame, binary frame, missing id).
    BadRequest = 4501,
    /// The client is not allowed to connect.
    Forbidden = 4502,
    /// A frame exceeded the maximum frame size.
    MessageTooLarge = 4503,
    /// The client asked for a protocol version the edge does not speak.
    UnsupportedVersion = 4504,
}

impl CloseCode {
    /// All codes, for documentation and tests.
    pub const ALL: [CloseCode; 15] = [
        Self::Shutdown,
        Self::SlowConsumer,
        Self::TokenExpired,
        Self::ServerError,
        Self::BackendUnavailable,
        Self::ConnectTimeout,
        Self::IdleTimeout,
        Self::RateLimited,
        Self::TooManyConnections,
        Self::Kicked,
        Self::InvalidToken,
        Self::BadRequest,
        Self::Forbidden,
        Self::MessageTooLarge,
        Self::UnsupportedVersion,
    ];

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the client should reconnect (with backoff): codes 4000–4499.
    pub fn reconnect(self) -> bool {
        self.code() < 4500
    }

    /// The default human-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "server shutting down",
            Self::SlowConsumer => "slow consumer",
            Self::TokenExpired => "token expired",
            Self::ServerError => "server error",
            Self::BackendUnavailable => "backend unavailable",
            Self::ConnectTimeout => "connect timeout",
            Self::IdleTimeout => "idle timeout",
            Self::RateLimited => "rate limited",
            Self::TooManyConnections => "too many connections",
            Self::Kicked => "disconnected by server",
            Self::InvalidToken => "invalid token",
            Self::BadRequest => "bad request",
            Self::Forbidden => "forbidden",
            Self::MessageTooLarge => "message too large",
            Self::UnsupportedVersion => "unsupported protocol version",
        }
    }

    /// A stable snake_case name, used as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::SlowConsumer => "slow_consumer",
            Self::TokenExpired => "token_expired",
            Self::ServerError => "server_error",
            Self::BackendUnavailable => "backend_unavailable",
            Self::ConnectTimeout => "connect_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
            Self::Kicked => "kicked",
            Self::InvalidToken => "invalid_token",
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::MessageTooLarge => "message_too_large",
            Self::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl Serialize for CloseCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for CloseCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        Self::from_code(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown close code {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnectable_codes_are_below_4500_and_terminal_ones_above() {
        for c in CloseCode::ALL {
            assert!((4000..5000).contains(&c.code()), "{c:?}");
            assert_eq!(c.reconnect(), c.code() < 4500, "{c:?}");
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert!(CloseCode::SlowConsumer.reconnect());
        assert!(CloseCode::TokenExpired.reconnect());
        assert!(!CloseCode::InvalidToken.reconnect());
        assert!(!CloseCode::BadRequest.reconnect());
    }

    #[test]
    fn messages_quoting_large_input_are_cut_on_a_character_boundary() {
        let e = ErrorCode::BadRequest.with(format!(
            "field `limit`: invalid type: string {:?}",
            "é".repeat(60_000)
        ));
        assert!(e.message.len() <= MAX_MESSAGE_BYTES, "{}", e.message.len());
        assert!(e.message.ends_with('…'));
        assert_eq!(ErrorCode::BadRequest.with("short").message, "short");
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {c:?}");
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        let mut names = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            assert!(names.insert(c.name()));
        }
    }
}
