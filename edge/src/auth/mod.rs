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
//!
//! Tokens come from two kinds of issuer: the shared-secret issuer (`auth.hmac_secret`,
//! HS256/384/512) and identity providers verified against their JWKS (`[[auth.jwks]]`, RS*, PS*,
//! ES256/384, EdDSA). A token is routed before anything is verified:
//!
//! ```text
//!  token ─▶ length ≤ max_token_bytes ─▶ peek (unverified): header alg + kid, payload iss
//!    ├─ alg HS*  ─▶ HMAC issuer only (refused if its iss names a JWKS issuer: alg confusion)
//!    └─ other    ─▶ the JWKS issuer whose `issuer` == iss ─▶ alg in its `algorithms`?
//!                   ─▶ key by kid (jwks.rs: cached, refetched on unknown kid, rate-limited)
//!  ─▶ jsonwebtoken::decode: signature, key family == alg family, exp/nbf (± leeway), iss, aud
//!  ─▶ claims.rs: sub + capability claim ─▶ Identity
//! ```
//!
//! Files: `claims.rs` (what a verified token grants), `peek.rs` (the unverified routing read),
//! `decode.rs` (per-issuer rules, error reasons), `jwks.rs` (key-set cache, rate-limited
//! refetch, background refresh), `source.rs` (fetching and parsing a JWKS).

mod claims;
mod decode;
mod jwks;
mod peek;
mod source;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use plaza_proto::ErrorCode;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use claims::{Capability, Grants, Identity};
pub use decode::MAX_LEEWAY;
pub use source::MAX_JWKS_BYTES;

use crate::config::{AuthConfig, JwksConfig};
use decode::Rules;
use jwks::KeySet;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was given.
    #[error("no token: send it in `connect`, the `token` query parameter or the token cookie")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, malformed, wrong issuer or audience, bad claims, unknown key.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token names an identity provider whose keys could not be loaded (provider down,
    /// slow, or serving garbage, and no earlier key set to fall back on). Not the client's
    /// fault: it should retry.
    #[error("cannot verify the token now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The reply error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            Self::Missing | Self::Invalid(_) => ErrorCode::InvalidToken,
            Self::Unavailable(_) => ErrorCode::BackendUnavailable,
        }
    }

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
            Self::Unavailable(_) => "keys_unavailable",
        }
    }
}

/// Why a [`Verifier`] could not be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSetupError {
    /// Neither an HMAC secret nor any JWKS issuer is configured: no token could ever pass.
    #[error("no token issuer: set auth.hmac_secret or add an [[auth.jwks]] identity provider")]
    NoIssuer,
    /// One `[[auth.jwks]]` entry cannot work.
    #[error("[[auth.jwks]] issuer {issuer:?}: {message}")]
    Jwks {
        /// The entry's `issuer`.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// Key sets refresh on a background task, which needs a tokio runtime.
    #[error("[[auth.jwks]] needs to be set up inside a tokio runtime")]
    NoRuntime,
}

/// The shared-secret issuer.
struct HmacIssuer {
    key: DecodingKey,
    validation: Validation,
}

/// An identity provider: its cached key set and one validation per accepted algorithm (a
/// `Validation` may only list algorithms of one key family).
struct JwksIssuer {
    keys: Arc<KeySet>,
    validations: Vec<(Algorithm, Validation)>,
    /// Prepended to `sub` so users of different providers cannot collide.
    user_prefix: String,
}

/// Verifies connect tokens. Cheap to share behind an `Arc`.
///
/// A verifier with `[[auth.jwks]]` issuers owns one background task per issuer that keeps its
/// key set fresh; the tasks stop when the verifier is dropped.
pub struct Verifier {
    claim: String,
    max_token_bytes: usize,
    hmac: Option<HmacIssuer>,
    /// `--dev` only: the dev-only key `/dev/token` signs with (header `kid` [`DEV_KID`]),
    /// generated at start, never a configured secret.
    dev: Option<HmacIssuer>,
    /// By `issuer` (the `iss` claim routes to it).
    jwks: HashMap<String, JwksIssuer>,
    /// Cancels the refresh tasks when the verifier is dropped.
    _refresh: Option<DropGuard>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("claim", &self.claim)
            .field("hmac", &self.hmac.is_some())
            .field("jwks", &self.jwks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The `kid` of tokens minted by `--dev`'s `/dev/token` with the process's dev-only key.
pub const DEV_KID: &str = "plaza-dev";

fn hmac_issuer(secret: &[u8], config: &AuthConfig) -> HmacIssuer {
    let rules = Rules {
        issuer: config.issuer.as_deref(),
        audience: config.audience.as_deref(),
        leeway: config.leeway,
        require_exp: config.require_exp,
    };
    HmacIssuer {
        key: DecodingKey::from_secret(secret),
        validation: rules.validation(&HMAC_ALGS),
    }
}

fn jwks_issuer(config: &JwksConfig, leeway: Duration) -> Result<JwksIssuer, AuthSetupError> {
    let rules = Rules {
        issuer: Some(&config.issuer),
        audience: config.audience.as_deref(),
        leeway,
        // Identity providers always set `exp`; a token without one would never expire.
        require_exp: true,
    };
    let mut validations = Vec::new();
    for name in &config.algorithms {
        let alg = name
            .parse::<Algorithm>()
            .ok()
            .filter(|a| !HMAC_ALGS.contains(a))
            .ok_or_else(|| AuthSetupError::Jwks {
                issuer: config.issuer.clone(),
                message: format!("algorithm {name:?} cannot be verified with a JWKS"),
            })?;
        validations.push((alg, rules.validation(&[alg])));
    }
    if config.audience.is_none() {
        // Only with `allow_any_audience` (validation refuses it otherwise).
        tracing::warn!(
            issuer = %config.issuer,
            "allow_any_audience: tokens this provider issued for any application are accepted"
        );
    }
    Ok(JwksIssuer {
        keys: KeySet::new(config)?,
        validations,
        user_prefix: config.user_prefix.clone().unwrap_or_default(),
    })
}

impl Verifier {
    /// A verifier for every issuer in `config`: the HMAC issuer if `hmac_secret` is set, and
    /// one identity provider per `[[auth.jwks]]`.
    ///
    /// Does not wait on the network: key sets from a `url` are fetched by a background task
    /// (owned by the verifier, stopped when it is dropped), and a token that arrives before
    /// they load waits for that fetch, at most `fetch_timeout`. A `file` key set is read
    /// here, so a bad file is an error now. With `[[auth.jwks]]` this must run inside a
    /// tokio runtime.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        Self::with_dev_key(config, None)
    }

    /// [`Verifier::new`], also accepting `--dev` tokens signed with `dev_key` (the process's
    /// fresh dev-only key; header `kid` [`DEV_KID`]).
    pub fn with_dev_key(
        config: &AuthConfig,
        dev_key: Option<&[u8]>,
    ) -> Result<Self, AuthSetupError> {
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| hmac_issuer(s.0.as_bytes(), config));
        let dev = dev_key.map(|key| {
            let rules = Rules {
                issuer: None,
                audience: None,
                leeway: config.leeway,
                require_exp: true,
            };
            HmacIssuer {
                key: DecodingKey::from_secret(key),
                validation: rules.validation(&[Algorithm::HS256]),
            }
        });
        if hmac.is_none() && dev.is_none() && config.jwks.is_empty() {
            return Err(AuthSetupError::NoIssuer);
        }
        let mut jwks = HashMap::new();
        for j in &config.jwks {
            if jwks.contains_key(&j.issuer) {
                return Err(AuthSetupError::Jwks {
                    issuer: j.issuer.clone(),
                    message: "configured twice".into(),
                });
            }
            jwks.insert(j.issuer.clone(), jwks_issuer(j, config.leeway)?);
        }
        let refresh = if jwks.is_empty() {
            None
        } else {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| AuthSetupError::NoRuntime)?;
            let stop = CancellationToken::new();
            for issuer in jwks.values() {
                let (keys, stop) = (issuer.keys.clone(), stop.clone());
                runtime.spawn(async move {
                    // `refresh_forever` never ends on its own; dropping it mid-fetch is safe
                    // (see `KeySet::refetch`).
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = keys.refresh_forever() => {}
                    }
                });
            }
            Some(stop.drop_guard())
        };
        Ok(Self {
            claim: config.capability_claim.clone(),
            max_token_bytes: config.max_token_bytes,
            hmac,
            dev,
            jwks,
            _refresh: refresh,
        })
    }

    /// A verifier for HS256/384/512 tokens signed with `secret` only (`[[auth.jwks]]` in
    /// `config` is ignored).
    pub fn hmac(secret: &[u8], config: &AuthConfig) -> Self {
        Self {
            claim: config.capability_claim.clone(),
            max_token_bytes: config.max_token_bytes,
            hmac: Some(hmac_issuer(secret, config)),
            dev: None,
            jwks: HashMap::new(),
            _refresh: None,
        }
    }

    /// Verifies `token` and extracts the identity. Async because verifying against a JWKS may
    /// have to fetch an unknown key first.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::Invalid(format!(
                "token is {} bytes, longer than the {} accepted (auth.max_token_bytes)",
                token.len(),
                self.max_token_bytes
            )));
        }
        let route = peek::peek(token)?;
        let (claims, prefix) = if HMAC_ALGS.contains(&route.alg) {
            let confused = route
                .iss
                .as_ref()
                .filter(|iss| self.jwks.contains_key(*iss));
            if let Some(iss) = confused {
                return Err(AuthError::Invalid(format!(
                    "issuer {iss} signs with its JWKS keys; an HMAC-signed token claiming it is \
                     refused (algorithm confusion)"
                )));
            }
            let dev = self
                .dev
                .as_ref()
                .filter(|_| route.kid.as_deref() == Some(DEV_KID));
            let hmac = dev.or(self.hmac.as_ref()).ok_or_else(|| {
                AuthError::Invalid("HMAC-signed tokens are not accepted here".into())
            })?;
            (decode::decode(token, &hmac.key, &hmac.validation)?, "")
        } else {
            let iss = route.iss.ok_or_else(|| {
                AuthError::Invalid("missing claim `iss` (it selects the signing keys)".into())
            })?;
            let issuer = self
                .jwks
                .get(&iss)
                .ok_or_else(|| AuthError::Invalid("unknown issuer".into()))?;
            let (_, validation) = issuer
                .validations
                .iter()
                .find(|(a, _)| *a == route.alg)
                .ok_or_else(|| {
                    AuthError::Invalid(format!(
                        "algorithm {:?} not accepted for issuer {iss}",
                        route.alg
                    ))
                })?;
            let kid = route
                .kid
                .ok_or_else(|| AuthError::Invalid("token header has no `kid` (key id)".into()))?;
            let key = issuer.keys.key(&kid).await?;
            if !key.fits(route.alg) {
                return Err(AuthError::Invalid(
                    "the signing key does not fit the token's algorithm".into(),
                ));
            }
            (
                decode::decode(token, &key.key, validation)?,
                issuer.user_prefix.as_str(),
            )
        };
        claims.into_identity(&self.claim, prefix)
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

/// Mints an HS256 token (for `plaza-edge token` and tests).
pub fn mint(
    secret: &[u8],
    claim: &str,
    spec: &TokenSpec,
) -> Result<String, jsonwebtoken::errors::Error> {
    mint_with(Header::new(Algorithm::HS256), secret, claim, spec)
}

/// Mints a `--dev` token with the process's dev-only key (header `kid` [`DEV_KID`], so the
/// verifier checks it against that key and never against a configured secret).
pub fn mint_dev(
    dev_key: &[u8],
    claim: &str,
    spec: &TokenSpec,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(DEV_KID.to_owned());
    mint_with(header, dev_key, claim, spec)
}

fn mint_with(
    header: Header,
    secret: &[u8],
    claim: &str,
    spec: &TokenSpec,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut body = serde_json::Map::new();
    body.insert("sub".into(), spec.user.clone().into());
    let now = unix_now();
    body.insert("iat".into(), now.into());
    if let Some(ttl) = spec.ttl {
        body.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
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
    jsonwebtoken::encode(&header, &body, &EncodingKey::from_secret(secret))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
