//! Decoding a text frame into a [`ClientFrame`], with an error precise enough to answer.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::*;
use crate::close::ErrorCode;

/// The `presence` field of `subscribe`: a flag or a mode name.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "true, false, \"clients\", \"users\" or \"both\""
)]
enum PresenceOption {
    Flag(bool),
    Mode(String),
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
            "subscribe" => {
                let (presence, presence_users) = match fields
                    .optional::<PresenceOption>("presence")
                    .map_err(bad)?
                {
                    None | Some(PresenceOption::Flag(false)) => (false, false),
                    Some(PresenceOption::Flag(true)) => (true, false),
                    Some(PresenceOption::Mode(m)) if m == "clients" => (true, false),
                    Some(PresenceOption::Mode(m)) if m == "users" => (false, true),
                    Some(PresenceOption::Mode(m)) if m == "both" => (true, true),
                    Some(PresenceOption::Mode(_)) => {
                        return Err(fail(
                                ErrorCode::BadRequest,
                                "field `presence`: expected true, false, \"clients\", \"users\" or \"both\""
                                    .into(),
                            ));
                    }
                };
                Command::Subscribe(Subscribe {
                    room: room()?,
                    recover: fields.optional("recover").map_err(bad)?,
                    presence,
                    presence_users,
                })
            }
            "unsubscribe" => Command::Unsubscribe(RoomRef { room: room()? }),
            "publish" => {
                let data = match fields.raw("data") {
                    Some(raw) => Payload::from_raw(raw),
                    None => return Err(fail(ErrorCode::BadRequest, "missing field `data`".into())),
                };
                let idem: Option<String> = fields.optional("idem").map_err(bad)?;
                if let Some(Err(why)) = idem.as_deref().map(check_idem) {
                    return Err(fail(ErrorCode::BadRequest, why));
                }
                let ephemeral: Option<bool> = fields.optional("ephemeral").map_err(bad)?;
                if ephemeral == Some(true) && idem.is_some() {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        "`idem` cannot be combined with `ephemeral: true` (ephemeral \
                         publications are never stored, so there is nothing to deduplicate)"
                            .into(),
                    ));
                }
                Command::Publish(Publish {
                    room: room()?,
                    data,
                    idem,
                    ephemeral,
                })
            }
            "presence" => {
                let mode: Option<String> = fields.optional("mode").map_err(bad)?;
                let users = match mode.as_deref() {
                    None | Some("clients") => false,
                    Some("users") => true,
                    Some(_) => {
                        return Err(fail(
                            ErrorCode::BadRequest,
                            "field `mode`: expected \"clients\" or \"users\"".into(),
                        ));
                    }
                };
                Command::Presence(PresenceQuery {
                    room: room()?,
                    after: fields.optional("after").map_err(bad)?,
                    limit: fields.optional("limit").map_err(bad)?,
                    users,
                })
            }
            "presence_stats" => Command::PresenceStats(RoomRef { room: room()? }),
            "presence_update" => {
                let info = match fields.raw("info") {
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => Some(Payload::from_raw(raw)),
                    None => return Err(fail(ErrorCode::BadRequest, "missing field `info`".into())),
                };
                Command::PresenceUpdate(PresenceUpdate {
                    room: room()?,
                    info,
                })
            }
            "history" => Command::History(History {
                room: room()?,
                since: fields.optional("since").map_err(bad)?,
                limit: fields.optional("limit").map_err(bad)?,
            }),
            "refresh" => Command::Refresh(Refresh {
                token: fields.required("token").map_err(bad)?,
            }),
            "ping" => Command::Ping,
            "set" => {
                let value = match fields.raw("value") {
                    Some(raw) => Payload::from_raw(raw),
                    None => {
                        return Err(fail(ErrorCode::BadRequest, "missing field `value`".into()));
                    }
                };
                let key: String = fields.required("key").map_err(bad)?;
                crate::state::check_state_key(&key)
                    .map_err(|why| fail(ErrorCode::BadRequest, why))?;
                Command::Set(StateSet {
                    room: room()?,
                    key,
                    value,
                    version: fields.optional("version").map_err(bad)?,
                    ttl: fields.optional("ttl").map_err(bad)?,
                    tied: fields.optional("tied").map_err(bad)?.unwrap_or(false),
                })
            }
            "delete" => {
                let key: String = fields.required("key").map_err(bad)?;
                crate::state::check_state_key(&key)
                    .map_err(|why| fail(ErrorCode::BadRequest, why))?;
                Command::Delete(StateDelete {
                    room: room()?,
                    key,
                    version: fields.optional("version").map_err(bad)?,
                })
            }
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
