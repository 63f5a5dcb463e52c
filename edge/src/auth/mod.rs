//! Connect tokens: JWT verification and the capabilities they grant.
//!
//! A token is a JWT whose `sub` is the user id and whose capability claim (default `plaza`)
//! says what the user may do per room:
//!
//! ```json
//! {"sub": "ann", "exp": 1767225600,
//!  "plaza": {"rooms": {"chat:*": ["subscribe", "publish", "presence"],
//!                      "user:{sub}": ["subscribe"]},
//!            "info": {"name": "Ann"}}}
//! ```
//!
//! A pattern is an exact room name or ends in `*` (prefix match); `{sub}` stands for the user
//! id. Namespaces may grant capabilities to every authenticated user (`rooms.namespaces.X.allow`).
//! Permission is checked on every command, against the capabilities of the current token.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use plaza_broker::Namespaces;
use plaza_proto::{ErrorCode, Payload, RoomName, UserId};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

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

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was given.
    #[error("no token: send it in `connect`, the `token` query parameter or the token cookie")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, malformed, wrong issuer or audience, or bad claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The reply error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            Self::Missing | Self::Invalid(_) => ErrorCode::InvalidToken,
        }
    }

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Default)]
struct CapabilityClaim {
    #[serde(default)]
    rooms: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
}

/// Verifies connect tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    claim: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for HS256/384/512 tokens signed with `secret`.
    pub fn hmac(secret: &[u8], config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["sub"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.audience {
            Some(aud) => validation.set_audience(aud),
            None => validation.validate_aud = false,
        }
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
            claim: config.capability_claim.clone(),
        }
    }

    /// Verifies `token` and extracts the identity. Async because verifying against a JWKS may
    /// have to fetch an unknown key first.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_now(token)
    }

    fn verify_now(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted".into()),
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("token not valid yet (nbf)".into())
                }
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                ErrorKind::Json(_) => AuthError::Invalid("malformed claims".into()),
                _ => AuthError::Invalid("malformed token".into()),
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(AuthError::Invalid("`sub` must be 1..=255 bytes".into()));
        }
        let cap: CapabilityClaim = match claims.rest.get(&self.claim) {
            Some(value) => CapabilityClaim::deserialize(value)
                .map_err(|e| AuthError::Invalid(format!("claim `{}`: {e}", self.claim)))?,
            None => CapabilityClaim::default(),
        };
        let mut grants = Vec::with_capacity(cap.rooms.len());
        for (pattern, caps) in &cap.rooms {
            let mut bits = 0;
            for c in caps {
                let c = Capability::parse(c).ok_or_else(|| {
                    AuthError::Invalid(format!("claim `{}`: unknown capability {c:?}", self.claim))
                })?;
                bits |= c.bit();
            }
            grants.push((Pattern::new(pattern, &claims.sub), bits));
        }
        Ok(Identity {
            user: UserId::new(claims.sub),
            expires_at: claims.exp,
            grants: Grants(grants),
            info: cap.info.as_ref().and_then(|v| Payload::encode(v).ok()),
        })
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The `sub`.
    pub user: String,
    /// Room patterns and their capabilities.
    pub rooms: Vec<(String, Vec<Capability>)>,
    /// Lifetime; `None` mints a token without `exp`.
    pub ttl: Option<Duration>,
    /// Presence info.
    pub info: Option<serde_json::Value>,
}

/// Mints an HS256 token (for `--dev`, `plaza-edge token` and tests).
pub fn mint(
    secret: &[u8],
    claim: &str,
    spec: &TokenSpec,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut body = serde_json::Map::new();
    body.insert("sub".into(), spec.user.clone().into());
    let now = unix_now();
    body.insert("iat".into(), now.into());
    if let Some(ttl) = spec.ttl {
        body.insert("exp".into(), (now + ttl.as_secs()).into());
    }
    let rooms: serde_json::Map<String, serde_json::Value> = spec
        .rooms
        .iter()
        .map(|(p, caps)| (p.clone(), serde_json::to_value(caps).unwrap_or_default()))
        .collect();
    let mut cap = serde_json::Map::new();
    cap.insert("rooms".into(), rooms.into());
    if let Some(info) = &spec.info {
        cap.insert("info".into(), info.clone());
    }
    body.insert(claim.into(), cap.into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(secret),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::hmac(SECRET, &AuthConfig::default())
    }

    fn spec(rooms: &[(&str, &[Capability])]) -> TokenSpec {
        TokenSpec {
            user: "ann".into(),
            rooms: rooms
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_vec()))
                .collect(),
            ttl: Some(Duration::from_secs(60)),
            info: Some(serde_json::json!({"name": "Ann"})),
        }
    }

    fn room(s: &str) -> RoomName {
        RoomName::new(s).unwrap()
    }

    #[test]
    fn patterns_grant_exact_prefix_and_personal_rooms() {
        use Capability::*;
        let t = mint(
            SECRET,
            "plaza",
            &spec(&[
                ("chat:*", &[Subscribe, Publish]),
                ("user:{sub}", &[Subscribe]),
                ("news", &[Presence]),
            ]),
        )
        .unwrap();
        let id = verifier().verify_now(&t).unwrap();
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
        let mut s = spec(&[("user:{sub}", &[Capability::Subscribe])]);
        s.user = "a*".into();
        let id = verifier()
            .verify_now(&mint(SECRET, "plaza", &s).unwrap())
            .unwrap();
        assert!(
            !id.grants
                .token_allows(&room("user:alice"), Capability::Subscribe)
        );
        assert!(
            !id.grants
                .token_allows(&room("user:a"), Capability::Subscribe)
        );
    }

    #[test]
    fn namespaces_can_grant_to_everyone() {
        let mut rooms = plaza_broker::RoomsConfig::default();
        rooms.namespaces.insert(
            "public".into(),
            plaza_broker::config::NamespaceOverrides {
                allow: Some(vec!["subscribe".into()]),
                ..Default::default()
            },
        );
        let ns = rooms.namespaces();
        let id = verifier()
            .verify_now(&mint(SECRET, "plaza", &spec(&[])).unwrap())
            .unwrap();
        assert!(
            id.grants
                .allows(&room("public:x"), Capability::Subscribe, &ns)
        );
        assert!(
            !id.grants
                .allows(&room("public:x"), Capability::Publish, &ns)
        );
        assert!(
            !id.grants
                .allows(&room("private:x"), Capability::Subscribe, &ns)
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_reasons() {
        let v = verifier();
        let good = mint(SECRET, "plaza", &spec(&[])).unwrap();
        let wrong = mint(b"another-secret-another-secret-xx", "plaza", &spec(&[])).unwrap();
        assert_eq!(
            v.verify_now(&wrong),
            Err(AuthError::Invalid("bad signature".into()))
        );
        assert!(matches!(
            v.verify_now("garbage"),
            Err(AuthError::Invalid(_))
        ));
        let mut tampered = good.clone();
        tampered.insert(good.len() / 2, 'A');
        assert!(matches!(
            v.verify_now(&tampered),
            Err(AuthError::Invalid(_))
        ));
        let mut old = spec(&[]);
        old.ttl = None;
        let body = serde_json::json!({"sub": "ann", "exp": unix_now() - 3600});
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &body,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.verify_now(&expired), Err(AuthError::Expired));
        let no_exp = mint(SECRET, "plaza", &old).unwrap();
        assert_eq!(v.verify_now(&no_exp).unwrap().expires_at, None);
        let bad_cap = serde_json::json!({"sub": "ann", "plaza": {"rooms": {"x": ["fly"]}}});
        let bad_cap = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &bad_cap,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(v.verify_now(&bad_cap), Err(AuthError::Invalid(m)) if m.contains("fly")));
        // alg "none" is never accepted.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"ann"}"#)
        );
        assert!(matches!(v.verify_now(&none), Err(AuthError::Invalid(_))));
    }

    fn b64(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
