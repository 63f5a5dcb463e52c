//! What a verified token grants: the `sub`, and the capability claim turned into [`Grants`].
//!
//! This module never sees a signature or a key; it runs only on claims that
//! [`super::Verifier`] has already verified, so every issuer (HMAC or JWKS) grants the same way.

use std::collections::{BTreeMap, HashMap};

use plaza_proto::{Payload, RoomName, UserId};
use plaza_rooms::config::Namespaces;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// One thing a token may allow on a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Receive publications (and subscribe).
    Subscribe,
    /// Publish.
    Publish,
    /// See presence (`presence`, `presence_stats`, join/leave pushes).
    Presence,
}

impl Capability {
    fn bit(self) -> u8 {
        match self {
            Self::Subscribe => 1,
            Self::Publish => 2,
            Self::Presence => 4,
        }
    }

    /// Parses a capability name as written in tokens and config.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "subscribe" => Some(Self::Subscribe),
            "publish" => Some(Self::Publish),
            "presence" => Some(Self::Presence),
            _ => None,
        }
    }
}

/// Whether `c` may appear in a user id substituted for `{sub}`: a room-name character that is
/// not a separator (`:` `/` `.`) or a wildcard (`*`), so `files:{sub}:*` for `bob:x` cannot
/// become a prefix inside `bob`'s rooms.
fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '+' | '=')
}

/// A room pattern with `{sub}` already replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    /// Whether the pattern is a prefix is decided before `{sub}` is substituted, so a user id
    /// containing `*` cannot turn an exact grant into a prefix grant.
    fn new(pattern: &str, user: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.replace("{sub}", user)),
            None => Self::Exact(pattern.replace("{sub}", user)),
        }
    }

    fn matches(&self, room: &str) -> bool {
        match self {
            Self::Exact(p) => p == room,
            Self::Prefix(p) => room.starts_with(p.as_str()),
        }
    }
}

/// The room capabilities granted by one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<(Pattern, u8)>);

impl Grants {
    /// Whether the token grants `cap` on `room`.
    pub fn token_allows(&self, room: &RoomName, cap: Capability) -> bool {
        self.0
            .iter()
            .any(|(p, bits)| bits & cap.bit() != 0 && p.matches(room.as_str()))
    }

    /// Whether the token or the room's namespace grants `cap` on `room`.
    pub fn allows(&self, room: &RoomName, cap: Capability, namespaces: &Namespaces) -> bool {
        self.token_allows(room, cap)
            || namespaces
                .of(room)
                .allow
                .iter()
                .any(|a| Capability::parse(a) == Some(cap))
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The `sub` claim.
    pub user: UserId,
    /// `exp`, as seconds since the Unix epoch, if the token expires.
    pub expires_at: Option<u64>,
    /// Room capabilities.
    pub grants: Grants,
    /// The capability claim's `info`, shown to other members in presence.
    pub info: Option<Payload>,
}

impl Identity {
    /// Seconds until expiry (0 if past), or `None` if the token does not expire.
    pub fn expires_in(&self, now: u64) -> Option<u64> {
        self.expires_at.map(|exp| exp.saturating_sub(now))
    }
}

/// The claims Plaza reads. `exp`, `nbf`, `iss` and `aud` are checked by `jsonwebtoken` before
/// this is looked at; `rest` holds the capability claim, whatever its configured name.
#[derive(Deserialize)]
pub(super) struct Claims {
    sub: String,
    exp: Option<u64>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// `{"rooms": {"<pattern>": ["subscribe", ...]}, "info": {...}}`.
#[derive(Serialize, Deserialize, Default)]
struct CapabilityClaim {
    #[serde(default)]
    rooms: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
}

impl Claims {
    /// Turns verified claims into an identity; `claim` names the capability claim. A token
    /// without that claim grants nothing (namespaces may still allow); a malformed one is
    /// refused rather than half-applied. `prefix` (the issuer's `user_prefix`) is prepended to
    /// `sub` to form the user id, which is also what `{sub}` in patterns stands for.
    pub(super) fn into_identity(
        mut self,
        claim: &str,
        prefix: &str,
    ) -> Result<Identity, AuthError> {
        if self.sub.is_empty() || self.sub.len() > 255 {
            return Err(AuthError::Invalid("`sub` must be 1..=255 bytes".into()));
        }
        let personal = |pattern: &str| pattern.contains("{sub}");
        if let Some(c) = self.sub.chars().find(|c| !is_segment_char(*c))
            && self.rest.get(claim).is_some_and(|v| {
                v.get("rooms")
                    .and_then(|r| r.as_object())
                    .is_some_and(|rooms| rooms.keys().any(|p| personal(p)))
            })
        {
            return Err(AuthError::Invalid(format!(
                "`sub` contains {c:?}: a token with `{{sub}}` room patterns needs a user id of \
                 letters, digits and _ - @ + = only (a separator would reach into another \
                 user's rooms)"
            )));
        }
        self.sub.insert_str(0, prefix);
        let cap: CapabilityClaim = match self.rest.get(claim) {
            // serde would also read a struct from an array, by position (`[]` as "no rooms",
            // `[{"chat:*": [..]}]` as `rooms`): only the documented object shape is accepted.
            Some(value) if !value.is_object() => {
                return Err(AuthError::Invalid(format!(
                    "claim `{claim}` must be an object with `rooms` and `info`"
                )));
            }
            Some(value) => CapabilityClaim::deserialize(value)
                .map_err(|e| AuthError::Invalid(format!("claim `{claim}`: {e}")))?,
            None => CapabilityClaim::default(),
        };
        let mut grants = Vec::with_capacity(cap.rooms.len());
        for (pattern, caps) in &cap.rooms {
            let mut bits = 0;
            for c in caps {
                let c = Capability::parse(c).ok_or_else(|| {
                    AuthError::Invalid(format!("claim `{claim}`: unknown capability {c:?}"))
                })?;
                bits |= c.bit();
            }
            grants.push((Pattern::new(pattern, &self.sub), bits));
        }
        Ok(Identity {
            user: UserId::new(self.sub),
            expires_at: self.exp,
            grants: Grants(grants),
            info: cap.info.as_ref().and_then(|v| Payload::encode(v).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(claims: serde_json::Value) -> Result<Identity, AuthError> {
        serde_json::from_value::<Claims>(claims)
            .unwrap()
            .into_identity("plaza", "")
    }

    fn room(s: &str) -> RoomName {
        RoomName::new(s).unwrap()
    }

    /// Hostile input, finding 8: `{sub}` was substituted verbatim, so a `sub` holding a
    /// separator reached into another user's hierarchical rooms (`files:{sub}:*` with sub
    /// `bob:x` granted `files:bob:x:…`, inside bob's `files:bob:*`).
    #[test]
    fn a_sub_with_a_separator_cannot_reach_into_another_users_personal_rooms() {
        for sub in ["bob:x", "bob/x", "bob.x", "bob*", "bob x"] {
            let r = identity(json!({"sub": sub, "plaza": {
                "rooms": {"files:{sub}:*": ["subscribe"], "chat:*": ["subscribe"]}}}));
            assert!(r.is_err(), "{sub}: {r:?}");
        }
        // Without personal patterns such a user id is fine, and plain ids keep their rooms.
        let id = identity(json!({"sub": "bob:x", "plaza": {"rooms": {"chat:*": ["subscribe"]}}}))
            .unwrap();
        assert!(
            id.grants
                .token_allows(&RoomName::new("chat:x").unwrap(), Capability::Subscribe)
        );
        let id =
            identity(json!({"sub": "bob", "plaza": {"rooms": {"files:{sub}:*": ["subscribe"]}}}))
                .unwrap();
        assert!(id.grants.token_allows(
            &RoomName::new("files:bob:x").unwrap(),
            Capability::Subscribe
        ));
    }

    #[test]
    fn patterns_grant_exact_prefix_and_personal_rooms() {
        use Capability::*;
        let id = identity(json!({"sub": "ann", "plaza": {
            "rooms": {"chat:*": ["subscribe", "publish"], "user:{sub}": ["subscribe"],
                      "news": ["presence"]},
            "info": {"name": "Ann"}}}))
        .unwrap();
        assert_eq!(id.user.as_str(), "ann");
        assert_eq!(id.info.as_ref().unwrap().as_str(), r#"{"name":"Ann"}"#);
        assert!(id.grants.token_allows(&room("chat:lobby"), Publish));
        assert!(!id.grants.token_allows(&room("chat:lobby"), Presence));
        assert!(id.grants.token_allows(&room("user:ann"), Subscribe));
        assert!(!id.grants.token_allows(&room("user:bob"), Subscribe));
        assert!(id.grants.token_allows(&room("news"), Presence));
        assert!(!id.grants.token_allows(&room("news2"), Presence));
        assert!(!id.grants.token_allows(&room("chatx"), Subscribe));
    }

    #[test]
    fn a_user_id_with_a_star_does_not_widen_a_personal_grant() {
        // Refused outright: a `{sub}` grant is never built from a user id with a wildcard.
        let refused =
            identity(json!({"sub": "a*", "plaza": {"rooms": {"user:{sub}": ["subscribe"]}}}));
        assert!(refused.is_err(), "{refused:?}");
        // And an exact grant stays exact even where the pattern itself ends the id.
        assert_eq!(
            Pattern::new("user:{sub}", "a"),
            Pattern::Exact("user:a".into())
        );
    }

    #[test]
    fn namespaces_can_grant_to_everyone() {
        let mut rooms = plaza_rooms::config::RoomsConfig::default();
        rooms.namespaces.insert(
            "public".into(),
            plaza_rooms::config::NamespaceOverrides {
                allow: Some(vec!["subscribe".into()]),
                ..Default::default()
            },
        );
        let ns = rooms.namespaces();
        let id = identity(json!({"sub": "ann"})).unwrap();
        let allows = |r, c| id.grants.allows(&room(r), c, &ns);
        assert!(allows("public:x", Capability::Subscribe));
        assert!(!allows("public:x", Capability::Publish));
        assert!(!allows("private:x", Capability::Subscribe));
    }

    /// Found by `edge/tests/fuzz_tokens.rs`: `"plaza": []` was accepted (as no rooms) and
    /// `"plaza": [{"chat:*": ["publish"]}]` granted `chat:*` (serde reads a struct from an
    /// array by position).
    #[test]
    fn a_capability_claim_that_is_an_array_is_refused() {
        for plaza in [
            json!([]),
            json!([{"chat:*": ["publish"]}]),
            json!([{}, {"a": 1}]),
        ] {
            match identity(json!({"sub": "ann", "plaza": plaza})) {
                Err(AuthError::Invalid(m)) => assert!(m.contains("claim `plaza`"), "{m}"),
                other => panic!("expected a refusal of {plaza}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_capability_claim_of_the_wrong_shape_is_refused_not_ignored() {
        for (claims, needle) in [
            (
                json!({"sub": "ann", "plaza": {"rooms": {"x": ["fly"]}}}),
                "fly",
            ),
            (
                json!({"sub": "ann", "plaza": {"rooms": ["chat:*"]}}),
                "claim `plaza`",
            ),
            (
                json!({"sub": "ann", "plaza": "everything"}),
                "claim `plaza`",
            ),
            (json!({"sub": "", "plaza": {}}), "`sub`"),
        ] {
            match identity(claims) {
                Err(AuthError::Invalid(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("expected a refusal mentioning {needle}, got {other:?}"),
            }
        }
    }
}
