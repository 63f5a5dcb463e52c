//! Live-state rooms: a room that holds a map key → JSON value instead of (only) a stream.
//!
//! Every change of a state room's map takes the next offset of the room's log, like a
//! publication, and *is* a publication there: its `data` is a change record
//! ([`StateChange::encode`]) and its offset is the key's new version. So the room's position,
//! its history, `recover` and live delivery work for state rooms exactly as for other rooms;
//! what a state room adds is the map itself ([`StateSnapshot`]), which `subscribe` returns so a
//! client never needs the whole log.
//!
//! ```text
//!   set/delete ──▶ state machine: map[key] = (value, version = next offset)
//!                                 + publication {"key": k, "value": v} / {"key": k, "deleted": true}
//!   subscribe  ──▶ snapshot (every key with its version, at position P) + changes after P
//! ```

use serde::{Deserialize, Serialize};

use crate::model::{ClientId, Payload, Position, Sender};

/// Longest state key, in bytes.
pub const MAX_STATE_KEY_LEN: usize = 256;

/// Checks a state key: 1..=[`MAX_STATE_KEY_LEN`] bytes, no control characters. The error
/// names what is wrong.
pub fn check_state_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_STATE_KEY_LEN {
        return Err(format!(
            "`key` must be 1..={MAX_STATE_KEY_LEN} bytes, got {}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`key` must not contain control characters, found U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

/// One key of a state room's map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// Its JSON value.
    pub value: Payload,
    /// The offset of the change that set it: strictly increasing per room within an epoch.
    pub version: u64,
}

/// A state room's whole map at one position: every change at or below `position` is in it,
/// none after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// The room's position the map is at.
    pub position: Position,
    /// Every key, sorted by key.
    pub entries: Vec<StateEntry>,
}

/// A change to a state room's map, asked for by an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StateWrite {
    /// Set `key` to `value`.
    Set {
        /// The key ([`check_state_key`]).
        key: String,
        /// The JSON value.
        value: Payload,
        /// Compare-and-set: the key's current version must be this (0: the key must not
        /// exist); `None` sets unconditionally.
        expect: Option<u64>,
        /// The key is deleted this many milliseconds after this set (unless set again).
        ttl_ms: Option<u64>,
        /// Tie the key to this connection of the calling edge: it is deleted when the
        /// connection releases its keys, or when the edge detaches or its lease runs out.
        tied: Option<ClientId>,
        /// Who set it, if a client.
        from: Option<Sender>,
    },
    /// Delete `key` (a missing key is not an error unless `expect` says otherwise).
    Delete {
        /// The key.
        key: String,
        /// Compare-and-delete: the key's current version must be this.
        expect: Option<u64>,
        /// Who deleted it, if a client.
        from: Option<Sender>,
    },
    /// Delete every key tied to `client` of the calling edge (its connection ended).
    Release {
        /// The connection.
        client: ClientId,
    },
}

impl StateWrite {
    /// About how many bytes the write takes in a log entry.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Set { key, value, .. } => key.len() + value.len() + 128,
            Self::Delete { key, .. } => key.len() + 128,
            Self::Release { client } => client.as_str().len() + 64,
        }
    }
}

/// The outcome of a [`StateWrite`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateAck {
    /// The room's position after the write; its offset is the changed key's new version
    /// (for a delete of a missing key or a release that removed nothing: the room's position).
    pub position: Position,
}

/// What a state room's publication says changed ([`StateChange::encode`] /
/// [`StateChange::decode`]); its offset is the version.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// `key` now holds `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Payload,
    },
    /// `key` was deleted (by a client, its TTL, or its connection leaving).
    Deleted {
        /// The key.
        key: String,
    },
}

#[derive(Serialize, Deserialize)]
struct ChangeWire<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Payload>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

impl StateChange {
    /// The change record: `{"key": k, "value": v}` or `{"key": k, "deleted": true}`.
    pub fn encode(&self) -> Payload {
        let wire = match self {
            Self::Set { key, value } => ChangeWire {
                key: key.as_str().into(),
                value: Some(value.clone()),
                deleted: false,
            },
            Self::Deleted { key } => ChangeWire {
                key: key.as_str().into(),
                value: None,
                deleted: true,
            },
        };
        // A string key and an already validated JSON value always serialize.
        Payload::encode(&wire).unwrap_or_else(|_| Payload::from_json("null").expect("null"))
    }

    /// Reads a change record; `None` if `data` is not one.
    pub fn decode(data: &Payload) -> Option<Self> {
        let wire: ChangeWire<'_> = data.decode().ok()?;
        match (wire.value, wire.deleted) {
            (Some(value), false) => Some(Self::Set {
                key: wire.key.into_owned(),
                value,
            }),
            (None, true) => Some(Self::Deleted {
                key: wire.key.into_owned(),
            }),
            _ => None,
        }
    }

    /// The changed key.
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. } | Self::Deleted { key } => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_records_round_trip() {
        let set = StateChange::Set {
            key: "a\"b".into(),
            value: Payload::from_json(r#"{"n":1}"#).unwrap(),
        };
        assert_eq!(set.encode().as_str(), r#"{"key":"a\"b","value":{"n":1}}"#);
        assert_eq!(StateChange::decode(&set.encode()), Some(set));
        let del = StateChange::Deleted { key: "k".into() };
        assert_eq!(del.encode().as_str(), r#"{"key":"k","deleted":true}"#);
        assert_eq!(StateChange::decode(&del.encode()), Some(del));
        assert_eq!(StateChange::decode(&Payload::from_json("1").unwrap()), None);
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_state_key("cursor:ann").is_ok());
        assert!(check_state_key("").is_err());
        assert!(check_state_key(&"x".repeat(MAX_STATE_KEY_LEN + 1)).is_err());
        assert!(check_state_key("a\nb").is_err());
    }
}
