//! Per-issuer validation rules, and the one call that checks a signature and the standard
//! claims (`jsonwebtoken::decode`), with its errors turned into reasons a client can act on.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::AuthError;
use super::claims::Claims;

/// Longest accepted `auth.leeway`: clock skew is seconds, a day is already generous.
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What one issuer requires of its tokens, besides the signature.
pub(super) struct Rules<'a> {
    /// Required `iss`, if any.
    pub issuer: Option<&'a str>,
    /// Accepted `aud` values (one of), if any.
    pub audience: Option<&'a [String]>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
}

impl Rules<'_> {
    /// A `Validation` accepting exactly `algs`, which must share one key family:
    /// `jsonwebtoken` refuses to verify when the listed algorithms and the key disagree on the
    /// family, which is what stops an RSA key from being used as an HMAC secret.
    ///
    /// A configured `iss` or `aud` is also *required*: `jsonwebtoken` alone only compares them
    /// when the token carries them.
    pub(super) fn validation(&self, algs: &[Algorithm]) -> Validation {
        let mut v = Validation::new(algs[0]);
        v.algorithms = algs.to_vec();
        // Capped even for a hand-built config (`auth.leeway` is validated against the same
        // bound): jsonwebtoken computes `now - leeway`, which overflows for a leeway longer
        // than the time since 1970 (a panic in debug builds, every token "expired" in release).
        v.leeway = self.leeway.min(MAX_LEEWAY).as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["sub"];
        if self.require_exp {
            required.push("exp");
        }
        if let Some(iss) = self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match self.audience {
            Some(aud) => {
                v.set_audience(aud);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}

/// Verifies `token`'s signature with `key` and checks its claims against `validation`.
pub(super) fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Claims, AuthError> {
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| reason(e.kind()))
}

fn reason(kind: &ErrorKind) -> AuthError {
    let invalid = |m: &str| AuthError::Invalid(m.to_owned());
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            invalid("algorithm not accepted")
        }
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => {
            invalid("the signing key does not fit the token's algorithm")
        }
        ErrorKind::ImmatureSignature => invalid("token not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => invalid("wrong issuer"),
        ErrorKind::InvalidAudience => invalid("wrong audience"),
        ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("missing claim `{c}`")),
        ErrorKind::InvalidClaimFormat(c) => AuthError::Invalid(format!("malformed claim `{c}`")),
        ErrorKind::Json(_) => invalid("malformed claims"),
        _ => invalid("malformed token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};

    const RSA: &[u8] = include_bytes!("../../tests/fixtures/rsa-a.der");
    const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa-a.pub.pem");

    fn rsa_public_key() -> DecodingKey {
        let jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(RSA), Algorithm::RS256);
        DecodingKey::from_jwk(&jwk.unwrap()).unwrap()
    }

    fn rules() -> Rules<'static> {
        Rules {
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            require_exp: false,
        }
    }

    fn forged_hs256() -> String {
        let body = serde_json::json!({"sub": "mallory"});
        let key = EncodingKey::from_secret(RSA_PUBLIC_PEM);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key).unwrap()
    }

    /// The routing in `Verifier::verify` never hands an RSA key to an HS* token; this proves
    /// the library underneath would refuse even if it did.
    #[test]
    fn jsonwebtoken_refuses_an_rsa_key_for_an_hmac_algorithm() {
        let key = rsa_public_key();
        let as_hmac = decode(
            &forged_hs256(),
            &key,
            &rules().validation(&[Algorithm::HS256]),
        );
        assert_eq!(
            as_hmac.err(),
            Some(AuthError::Invalid(
                "the signing key does not fit the token's algorithm".into()
            ))
        );
        let as_rsa = decode(
            &forged_hs256(),
            &key,
            &rules().validation(&[Algorithm::RS256]),
        );
        assert_eq!(
            as_rsa.err(),
            Some(AuthError::Invalid("algorithm not accepted".into()))
        );
    }

    /// Found by `edge/tests/fuzz_config.rs` (`PLAZA_AUTH__LEEWAY="60 years"`): jsonwebtoken's
    /// `now - leeway` overflowed and panicked on every token.
    #[test]
    fn a_leeway_of_60_years_is_capped_not_an_overflow() {
        let rules = Rules {
            leeway: Duration::from_secs(60 * 365 * 24 * 3600),
            ..rules()
        };
        let body = serde_json::json!({"sub": "ann", "exp": 4_000_000_000u64});
        let key = EncodingKey::from_secret(b"secret");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key).unwrap();
        let claims = decode(
            &token,
            &DecodingKey::from_secret(b"secret"),
            &rules.validation(&[Algorithm::HS256]),
        );
        assert!(claims.is_ok());
    }

    #[test]
    fn an_rsa_signed_token_verifies_with_its_public_jwk() {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k".into());
        let body = serde_json::json!({"sub": "ann"});
        let token = jsonwebtoken::encode(&header, &body, &EncodingKey::from_rsa_der(RSA)).unwrap();
        let claims = decode(
            &token,
            &rsa_public_key(),
            &rules().validation(&[Algorithm::RS256]),
        );
        assert!(claims.is_ok());
    }
}
