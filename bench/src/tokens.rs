//! Bench tokens: one JWT per connection, user `b<i>`, every capability on every room, valid
//! for three hours. HS256 with the shared secret, or RS256 with a private key whose public half
//! the edge reads from a JWKS file ([`jwks`]).

use anyhow::{Context, Result};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::json;

use crate::spec::{Alg, Plan, RS_ISSUER, RS_KID, now_ns};

/// Signs bench tokens.
pub(crate) struct Minter {
    header: Header,
    key: EncodingKey,
    issuer: Option<&'static str>,
}

impl Minter {
    /// A minter for the plan's algorithm and key.
    pub(crate) fn new(plan: &Plan) -> Result<Self> {
        Ok(match plan.alg {
            Alg::Hs256 => Self {
                header: Header::new(Algorithm::HS256),
                key: EncodingKey::from_secret(plan.secret.as_bytes()),
                issuer: None,
            },
            Alg::Rs256 => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(plan.rs_key.as_deref().context("RS256 needs --rs-key")?)?;
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(RS_KID.to_owned());
                Self {
                    header,
                    key: EncodingKey::from_rsa_der(&der),
                    issuer: Some(RS_ISSUER),
                }
            }
        })
    }

    /// The token of connection `i`.
    pub(crate) fn mint(&self, i: usize) -> Result<String> {
        let mut claims = json!({
            "sub": format!("b{i}"),
            "exp": now_ns() / 1_000_000_000 + 3 * 3600,
            "plaza": {"rooms": {"*": ["subscribe", "publish"]}},
        });
        if let Some(iss) = self.issuer {
            claims["iss"] = iss.into();
        }
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.key)?)
    }
}

/// The JWKS document (public key only) for an RS256 private key in PKCS#1 DER.
pub(crate) fn jwks(der: &[u8]) -> Result<serde_json::Value> {
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(der), Algorithm::RS256)?;
    jwk.common.key_id = Some(RS_KID.to_owned());
    Ok(json!({ "keys": [jwk] }))
}
