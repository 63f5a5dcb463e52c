//! Routing tests for [`Verifier`]: which issuer a token goes to, and what is refused before any
//! key is looked up. Real keys come from the test-only fixtures in `edge/tests/fixtures`;
//! end-to-end JWKS behaviour (HTTP, rotation, outages) is in `edge/tests/jwks.rs`.

use super::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const IDP: &str = "https://idp.example";
const ED25519: &[u8] = include_bytes!("../../tests/fixtures/ed25519.der");
const RSA: &[u8] = include_bytes!("../../tests/fixtures/rsa-a.der");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/rsa-a.pub.pem");

/// A shared-secret verifier that, unlike the default, accepts tokens without `exp`: the tests
/// using it sign bare claims to reach other refusals.
fn hmac_verifier() -> Verifier {
    let lenient = AuthConfig {
        require_exp: false,
        ..AuthConfig::default()
    };
    Verifier::hmac(SECRET, &lenient)
}

fn spec() -> TokenSpec {
    TokenSpec {
        user: "ann".into(),
        rooms: vec![],
        ttl: Some(Duration::from_secs(60)),
        info: None,
    }
}

fn hs256(body: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        body,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn signed(alg: Algorithm, key: &EncodingKey, kid: &str, body: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, body, key).unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn refusal(r: Result<Identity, AuthError>) -> String {
    match r {
        Err(AuthError::Invalid(m)) => m,
        other => panic!("expected an Invalid refusal, got {other:?}"),
    }
}

/// An HMAC issuer plus one file-backed JWKS issuer holding the Ed25519 and RSA fixture keys.
fn mixed_config(dir: &std::path::Path) -> AuthConfig {
    let mut set = JwkSet { keys: vec![] };
    for (kid, alg, key) in [
        ("ed", Algorithm::EdDSA, EncodingKey::from_ed_der(ED25519)),
        ("rsa", Algorithm::RS256, EncodingKey::from_rsa_der(RSA)),
    ] {
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        set.keys.push(jwk);
    }
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
    AuthConfig {
        hmac_secret: Some(crate::config::Secret(
            String::from_utf8(SECRET.to_vec()).unwrap(),
        )),
        jwks: vec![JwksConfig {
            issuer: IDP.into(),
            file: Some(path),
            algorithms: vec!["EdDSA".into(), "RS256".into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn idp_claims() -> serde_json::Value {
    json!({"sub": "ann", "iss": IDP, "exp": unix_now() + 60})
}

#[tokio::test]
async fn hmac_tokens_are_refused_with_reasons() {
    let v = hmac_verifier();
    let good = mint(SECRET, "plaza", &spec()).unwrap();
    assert_eq!(v.verify(&good).await.unwrap().user.as_str(), "ann");
    let wrong = mint(b"another-secret-another-secret-xx", "plaza", &spec()).unwrap();
    assert_eq!(
        v.verify(&wrong).await,
        Err(AuthError::Invalid("bad signature".into()))
    );
    assert!(matches!(
        v.verify("garbage").await,
        Err(AuthError::Invalid(_))
    ));
    let mut tampered = good.clone();
    tampered.insert(good.len() / 2, 'A');
    assert!(matches!(
        v.verify(&tampered).await,
        Err(AuthError::Invalid(_))
    ));
    let expired = hs256(&json!({"sub": "ann", "exp": unix_now() - 3600}), SECRET);
    assert_eq!(v.verify(&expired).await, Err(AuthError::Expired));
    let no_exp = mint(
        SECRET,
        "plaza",
        &TokenSpec {
            ttl: None,
            ..spec()
        },
    )
    .unwrap();
    // Hostile input, finding 11: a shared-secret token without `exp` worked forever; by
    // default (`auth.require_exp`) it is refused.
    assert_eq!(v.verify(&no_exp).await.unwrap().expires_at, None);
    let strict = Verifier::hmac(SECRET, &AuthConfig::default());
    assert!(refusal(strict.verify(&no_exp).await).contains("exp"));
    let bad_cap = hs256(
        &json!({"sub": "ann", "plaza": {"rooms": {"x": ["fly"]}}}),
        SECRET,
    );
    assert!(refusal(v.verify(&bad_cap).await).contains("fly"));
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"ann"}"#)
    );
    assert!(refusal(v.verify(&none).await).contains("none"));
}

#[tokio::test]
async fn a_configured_hmac_issuer_and_audience_must_be_present_not_just_equal() {
    let config = AuthConfig {
        issuer: Some("plaza-tests".into()),
        audience: Some(vec!["chat".into()]),
        require_exp: false,
        ..Default::default()
    };
    let v = Verifier::hmac(SECRET, &config);
    let ok = json!({"sub": "ann", "iss": "plaza-tests", "aud": "chat"});
    assert!(v.verify(&hs256(&ok, SECRET)).await.is_ok());
    for (claims, reason) in [
        (json!({"sub": "ann", "aud": "chat"}), "missing claim `iss`"),
        (
            json!({"sub": "ann", "iss": "plaza-tests"}),
            "missing claim `aud`",
        ),
        (
            json!({"sub": "ann", "iss": "other", "aud": "chat"}),
            "wrong issuer",
        ),
        (
            json!({"sub": "ann", "iss": "plaza-tests", "aud": "other"}),
            "wrong audience",
        ),
    ] {
        assert_eq!(refusal(v.verify(&hs256(&claims, SECRET)).await), reason);
    }
}

#[tokio::test]
async fn tokens_are_routed_by_algorithm_then_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let v = Verifier::new(&mixed_config(dir.path())).unwrap();
    let ed = EncodingKey::from_ed_der(ED25519);
    let rsa = EncodingKey::from_rsa_der(RSA);
    let id = v
        .verify(&signed(Algorithm::EdDSA, &ed, "ed", &idp_claims()))
        .await
        .unwrap();
    assert_eq!(id.user.as_str(), "ann");
    assert!(
        v.verify(&signed(Algorithm::RS256, &rsa, "rsa", &idp_claims()))
            .await
            .is_ok()
    );
    assert!(
        v.verify(&mint(SECRET, "plaza", &spec()).unwrap())
            .await
            .is_ok()
    );

    let mut other = idp_claims();
    other["iss"] = "https://elsewhere.example".into();
    let m = refusal(v.verify(&signed(Algorithm::EdDSA, &ed, "ed", &other)).await);
    assert_eq!(m, "unknown issuer");
    let mut no_iss = idp_claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    let m = refusal(
        v.verify(&signed(Algorithm::EdDSA, &ed, "ed", &no_iss))
            .await,
    );
    assert!(m.contains("missing claim `iss`"), "{m}");
    let m = refusal(
        v.verify(&signed(Algorithm::PS256, &rsa, "rsa", &idp_claims()))
            .await,
    );
    assert!(m.contains("not accepted for issuer"), "{m}");
    let m = refusal(
        v.verify(&signed(Algorithm::RS256, &rsa, "ed", &idp_claims()))
            .await,
    );
    assert!(
        m.contains("does not fit"),
        "an RS256 token naming the Ed25519 key: {m}"
    );
    let mut no_exp = idp_claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let m = refusal(
        v.verify(&signed(Algorithm::EdDSA, &ed, "ed", &no_exp))
            .await,
    );
    assert!(
        m.contains("missing claim `exp`"),
        "JWKS tokens must expire: {m}"
    );
}

#[tokio::test]
async fn an_hmac_token_naming_a_jwks_issuer_is_refused_as_algorithm_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let v = Verifier::new(&mixed_config(dir.path())).unwrap();
    // The classic attack: HS256 keyed with the provider's *public* key, which anyone has.
    let forged = hs256(&idp_claims(), RSA_PUBLIC_PEM);
    let m = refusal(v.verify(&forged).await);
    assert!(m.contains("algorithm confusion"), "{m}");
    // Without the iss trick it is an ordinary HMAC token with a wrong key.
    let mut claims = idp_claims();
    claims["iss"] = "someone".into();
    let m = refusal(v.verify(&hs256(&claims, RSA_PUBLIC_PEM)).await);
    assert_eq!(m, "bad signature");
}

#[tokio::test]
async fn hmac_tokens_are_refused_when_no_secret_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = mixed_config(dir.path());
    config.hmac_secret = None;
    let v = Verifier::new(&config).unwrap();
    let m = refusal(v.verify(&mint(SECRET, "plaza", &spec()).unwrap()).await);
    assert!(m.contains("HMAC-signed tokens are not accepted"), "{m}");
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_parsing() {
    let v = hmac_verifier();
    let huge = "a".repeat(AuthConfig::default().max_token_bytes + 1);
    let m = refusal(v.verify(&huge).await);
    assert!(m.contains("auth.max_token_bytes"), "{m}");
}

#[test]
fn setup_refuses_configs_that_cannot_work() {
    assert_eq!(
        Verifier::new(&AuthConfig::default()).unwrap_err(),
        AuthSetupError::NoIssuer
    );
    let dir = tempfile::tempdir().unwrap();
    // Outside a tokio runtime there is nowhere to run the refresh task.
    assert_eq!(
        Verifier::new(&mixed_config(dir.path())).unwrap_err(),
        AuthSetupError::NoRuntime
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut hs_in_jwks = mixed_config(dir.path());
    hs_in_jwks.jwks[0].algorithms = vec!["HS256".into()];
    assert!(matches!(
        Verifier::new(&hs_in_jwks),
        Err(AuthSetupError::Jwks { message, .. }) if message.contains("HS256")
    ));
    let mut twice = mixed_config(dir.path());
    twice.jwks.push(twice.jwks[0].clone());
    assert!(matches!(
        Verifier::new(&twice),
        Err(AuthSetupError::Jwks { message, .. }) if message.contains("twice")
    ));
}
