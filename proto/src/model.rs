//! Values shared by the client protocol and the edge↔broker protocol.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 255;

/// A validated room name: 1–255 bytes of `[A-Za-z0-9_\-:.@/=+]`.
///
/// The namespace is the part before the first `:` (empty if there is none); it selects
/// per-namespace options such as history size and presence mode. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a valid [`RoomName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is empty.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_LEN`] bytes.
    #[error("room name is {0} bytes long; at most 255 are allowed")]
    TooLong(usize),
    /// The name contains a character outside the allowed set.
    #[error("room name contains {0:?}; allowed are A-Z a-z 0-9 and _ - : . @ / = +")]
    BadChar(char),
}

impl RoomName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > MAX_ROOM_LEN {
            return Err(RoomNameError::TooLong(name.len()));
        }
        if let Some(c) = name.chars().find(|c| !is_room_char(*c)) {
            return Err(RoomNameError::BadChar(c));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The room name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `""` when there is no `:`.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }
}

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@' | '/' | '=' | '+')
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RoomName::new(&s).map_err(D::Error::custom)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

string_id!(
    /// A connection's id, chosen by the edge when the client connects; unique across edges.
    ClientId
);
string_id!(
    /// A user id: the `sub` claim of the connect token.
    UserId
);
string_id!(
    /// An edge's id, chosen at edge start; unique across the edges attached to a broker tier.
    EdgeId
);

/// A JSON value kept as its text, validated once when it enters the system.
///
/// Publication data and member info travel through the broker tier as opaque bytes and are
/// spliced into client frames without being re-parsed per subscriber. In human-readable formats
/// (JSON) it serializes as the raw JSON value; in binary formats (postcard) as a byte string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// Takes the text of an already-parsed JSON value.
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(Bytes::copy_from_slice(raw.get().as_bytes()))
    }

    /// Validates `text` as one JSON value.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self::from_raw(raw))
    }

    /// Serializes `value` as JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(Bytes::from(serde_json::to_vec(value)?)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // Invariant: constructed only from valid JSON text, which is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("null")
    }

    /// The JSON text as shared bytes (cheap to clone).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the JSON text is empty (never true for a valid payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the JSON text into `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.as_str())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let raw: &RawValue =
                serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let raw = Box::<RawValue>::deserialize(d)?;
            Ok(Self::from_raw(&raw))
        } else {
            let bytes = <std::borrow::Cow<'de, [u8]>>::deserialize(d)?;
            let text = std::str::from_utf8(&bytes).map_err(D::Error::custom)?;
            Self::from_json(text).map_err(D::Error::custom)
        }
    }
}

/// A point in a room's log: the epoch and the offset of the last publication seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Opaque; changes only if the room's log was lost.
    pub epoch: String,
    /// Offset of a publication in that epoch (0 = before the first one).
    pub offset: u64,
}

/// Who published a publication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// The publishing user.
    pub user: UserId,
    /// The publishing connection.
    pub client: ClientId,
}

/// One publication in a room's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// Strictly greater than every earlier publication's offset in the same epoch.
    pub offset: u64,
    /// The published JSON value.
    pub data: Payload,
    /// The publisher, when a client published it (`null` for server-side publishes).
    /// Never skipped when `None`: postcard is not self-describing.
    #[serde(default)]
    pub from: Option<Sender>,
}

/// A member of a room's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's connection.
    pub client: ClientId,
    /// The member's user.
    pub user: UserId,
    /// Application data from the connect token's `info` (`null` if none).
    /// Never skipped when `None`: postcard is not self-describing.
    #[serde(default)]
    pub info: Option<Payload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_accept_the_documented_alphabet() {
        for ok in ["a", "chat:lobby", "user:42@x/y=z+w.v_u-t", &"x".repeat(255)] {
            RoomName::new(ok).unwrap();
        }
        assert_eq!(RoomName::new(""), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::new(&"x".repeat(256)),
            Err(RoomNameError::TooLong(256))
        );
        assert_eq!(RoomName::new("a b"), Err(RoomNameError::BadChar(' ')));
        assert_eq!(RoomName::new("é"), Err(RoomNameError::BadChar('é')));
        assert_eq!(RoomName::new("a*"), Err(RoomNameError::BadChar('*')));
    }

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        assert_eq!(RoomName::new("chat:a:b").unwrap().namespace(), "chat");
        assert_eq!(RoomName::new("lobby").unwrap().namespace(), "");
        assert_eq!(RoomName::new(":x").unwrap().namespace(), "");
    }

    #[test]
    fn payload_is_raw_json_in_json_and_bytes_in_postcard() {
        let p = Payload::from_json(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"a": [1, 2]}"#);
        let bin = postcard::to_stdvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Payload>(&bin).unwrap(), p);
        assert!(Payload::from_json("{oops").is_err());
    }
}
