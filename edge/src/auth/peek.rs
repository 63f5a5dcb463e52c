//! Reads just enough of an *unverified* token to pick the key that must verify it: the header's
//! `alg` and `kid`, and the payload's `iss`.
//!
//! Nothing read here is trusted. It only chooses which issuer and key to try; `jsonwebtoken`
//! then verifies the signature over these same bytes and checks `iss` again, so a token that
//! lies here fails verification. Refusing `alg: none` and unknown algorithms here, before any
//! key lookup, means they can never trigger a JWKS fetch.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AuthError;

/// The routing facts of one token, unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peeked {
    /// The header's `alg`, already known to be a signing algorithm (never `none`).
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload's `iss`, if any.
    pub iss: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawIssuer {
    #[serde(default)]
    iss: Option<String>,
}

fn invalid(message: &str) -> AuthError {
    AuthError::Invalid(message.to_owned())
}

fn decode_part<T: DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Invalid(format!("malformed token: {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid(format!("malformed {what}")))
}

/// Splits `token` and reads its routing facts.
pub(super) fn peek(token: &str) -> Result<Peeked, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "malformed token: expected three base64url parts separated by `.`",
        ));
    };
    let header: RawHeader = decode_part(header, "token header")?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(invalid("unsigned tokens (alg `none`) are refused"));
    }
    let alg = Algorithm::from_str(&header.alg)
        .map_err(|_| invalid("unsupported signing algorithm (alg)"))?;
    let claims = decode_part::<RawIssuer>(payload, "claims");
    let iss = match alg {
        // An HMAC token's `iss` is read only to catch one that names a JWKS issuer; malformed
        // claims are left for verification, which checks the signature first.
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => claims.ok().and_then(|c| c.iss),
        _ => {
            claims
                .map_err(|_| invalid("malformed claims (`iss` must be a string)"))?
                .iss
        }
    };
    Ok(Peeked {
        alg,
        kid: header.kid,
        iss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    fn refused(token: &str) -> String {
        match peek(token) {
            Err(AuthError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn routing_facts_come_from_the_header_and_the_payload() {
        let p = peek(&token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"https://idp.example","sub":"ann"}"#,
        ))
        .unwrap();
        assert_eq!(p.alg, Algorithm::RS256);
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.iss.as_deref(), Some("https://idp.example"));
    }

    #[test]
    fn hmac_tokens_with_unreadable_claims_are_left_for_the_signature_check() {
        let p = peek(&token(r#"{"alg":"HS256"}"#, "not json")).unwrap();
        assert_eq!((p.alg, p.kid, p.iss), (Algorithm::HS256, None, None));
        let p = peek(&token(r#"{"alg":"HS384"}"#, r#"{"iss":"https://idp"}"#)).unwrap();
        assert_eq!(p.iss.as_deref(), Some("https://idp"));
    }

    #[test]
    fn alg_none_in_any_case_is_refused_before_anything_else() {
        for alg in ["none", "None", "NONE"] {
            let m = refused(&token(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"sub":"a"}"#));
            assert!(m.contains("alg `none`"), "{m}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        assert!(refused("garbage").contains("three"));
        assert!(refused("a.b.c.d").contains("three"));
        assert!(refused("!!.e30.c2ln").contains("base64url"));
        assert!(refused(&token("[1]", "{}")).contains("header"));
        assert!(refused(&token(r#"{"alg":"XX999"}"#, "{}")).contains("unsupported"));
        assert!(refused(&token(r#"{"alg":"RS256"}"#, "{not json")).contains("claims"));
        assert!(refused(&token(r#"{"alg":"ES256"}"#, r#"{"iss":7}"#)).contains("iss"));
        let truncated = token(r#"{"alg":"RS256"}"#, r#"{"iss":"x"}"#);
        let truncated = &truncated[..truncated.rfind('.').unwrap()];
        assert!(refused(truncated).contains("three"));
    }
}
