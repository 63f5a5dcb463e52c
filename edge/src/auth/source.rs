//! Where an identity provider's key set comes from (an HTTPS URL or a file), and how its JSON
//! becomes verification keys.
//!
//! Loading is all-or-nothing per attempt: an attempt either yields a complete [`Keys`] or a
//! [`FetchError`], never a half-updated set, so the caller can keep the last good set on error.
//! Individual keys Plaza cannot use (no `kid`, encryption keys, symmetric `oct` keys, unknown
//! types or curves) are skipped, not fatal: providers publish such keys alongside signing keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::AuthSetupError;
use crate::config::JwksConfig;

/// Largest key set accepted, in bytes. Real ones are a few KiB; the cap bounds the memory a
/// misbehaving (or hostile) endpoint can make the edge allocate.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key from a key set.
#[derive(Debug)]
pub(super) struct Key {
    /// The public key; its family (RSA, EC, Ed) is checked against the token's `alg`.
    pub key: DecodingKey,
    /// The `alg` the JWK restricts itself to, if it names one.
    pub alg: Option<Algorithm>,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: same family, and the JWK's own
    /// `alg` (if any) agrees. `jsonwebtoken` checks the family again while verifying.
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// A loaded key set, by `kid`. Immutable once built; a refresh builds a new one.
#[derive(Debug, Default)]
pub(super) struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
}

impl Keys {
    /// The key named `kid`.
    pub(super) fn get(&self, kid: &str) -> Option<Arc<Key>> {
        self.by_kid.get(kid).cloned()
    }

    /// How many usable keys the set holds.
    pub(super) fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// Parses a JWKS document. Fails if it is not a JWKS or holds no usable key: an empty
    /// set from a confused provider must not replace a good one and lock every user out.
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, FetchError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(bytes)
            .map_err(|e| FetchError::Invalid(format!("not a JWKS document ({e})")))?;
        let mut by_kid = HashMap::new();
        for value in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some((kid, key)) = usable(&jwk) {
                by_kid.entry(kid).or_insert_with(|| Arc::new(key));
            }
        }
        if by_kid.is_empty() {
            return Err(FetchError::NoUsableKeys);
        }
        Ok(Self { by_kid })
    }
}

/// The `kid` and key of a JWK that can verify signatures, or `None` to skip it.
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(&jwk.common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p)
            if matches!(p.curve, EllipticCurve::P256 | EllipticCurve::P384) =>
        {
            AlgorithmFamily::Ec
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            AlgorithmFamily::Ed
        }
        // Symmetric (`oct`) keys are never taken from a key set: whoever can read the set could
        // sign with them. Anything else is a type or curve Plaza cannot verify.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { key, alg }))
}

/// Why one attempt to load a key set failed. Messages name no URL (it may carry credentials)
/// and no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FetchError {
    /// The whole attempt took longer than `fetch_timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The provider answered with a non-success status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// Connecting, TLS, or reading the response failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The document exceeds [`MAX_JWKS_BYTES`].
    #[error("key set larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The file could not be read.
    #[error("cannot read the key set file: {0}")]
    Io(String),
    /// The body is not a JWKS document.
    #[error("{0}")]
    Invalid(String),
    /// The document parsed but holds no key Plaza can use.
    #[error("no usable signing key (each needs a `kid` and an RSA, P-256/P-384 or Ed25519 key)")]
    NoUsableKeys,
}

impl FetchError {
    /// A stable label for metrics.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "http_status",
            Self::Request(_) => "request",
            Self::TooLarge => "too_large",
            Self::Io(_) => "io",
            Self::Invalid(_) | Self::NoUsableKeys => "invalid",
        }
    }
}

/// Where a key set is loaded from.
pub(super) enum Source {
    /// Fetched over HTTP(S).
    Url {
        /// A client whose redirect policy enforces the same scheme rule as the URL.
        client: reqwest::Client,
        /// The JWKS endpoint.
        url: reqwest::Url,
    },
    /// Read from a file (re-read on every refresh, so replacing the file rotates keys).
    File(PathBuf),
}

/// Installs the ring provider as the process default once; reqwest (built with
/// `rustls-no-provider`) uses the process default. Installing fails only if a provider is
/// already installed, and then that one is used: nothing to do.
fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Source {
    /// Builds the source of `config` (exactly one of `url` and `file` must be set).
    pub(super) fn new(config: &JwksConfig) -> Result<Self, AuthSetupError> {
        let bad = |message: String| AuthSetupError::Jwks {
            issuer: config.issuer.clone(),
            message,
        };
        match (&config.url, &config.file) {
            (Some(url), None) => {
                let url = reqwest::Url::parse(url).map_err(|e| bad(format!("bad url: {e}")))?;
                let allow_http = config.allow_http;
                match url.scheme() {
                    "https" => {}
                    "http" if allow_http => {}
                    _ => return Err(bad("url must be https:// (http:// needs allow_http)".into())),
                }
                install_crypto_provider();
                // A redirect must not downgrade to plain HTTP, nor loop.
                let redirects = reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= 5 {
                        attempt.error("too many redirects")
                    } else if attempt.url().scheme() != "https" && !allow_http {
                        attempt.error("redirect to a non-https URL")
                    } else {
                        attempt.follow()
                    }
                });
                let client = reqwest::Client::builder()
                    .redirect(redirects)
                    .connect_timeout(config.fetch_timeout)
                    .timeout(config.fetch_timeout)
                    .user_agent(concat!("plaza-edge/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
                Ok(Self::Url { client, url })
            }
            (None, Some(path)) => Ok(Self::File(path.clone())),
            _ => Err(bad("set exactly one of url and file".into())),
        }
    }

    /// Loads and parses the key set, giving up after `timeout`.
    pub(super) async fn load(&self, timeout: Duration) -> Result<Keys, FetchError> {
        let bytes = tokio::time::timeout(timeout, self.read())
            .await
            .map_err(|_| FetchError::Timeout(timeout))??;
        Keys::parse(&bytes)
    }

    /// Loads a file source synchronously (at startup, so a bad file is a startup error).
    pub(super) fn load_file_now(&self) -> Option<Result<Keys, FetchError>> {
        match self {
            Self::File(path) => Some(read_file(path).and_then(|b| Keys::parse(&b))),
            Self::Url { .. } => None,
        }
    }

    async fn read(&self) -> Result<Vec<u8>, FetchError> {
        match self {
            Self::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|e| FetchError::Io(e.to_string()))?
            }
            Self::Url { client, url } => {
                let request_failed = |e: reqwest::Error| {
                    if e.is_timeout() {
                        FetchError::Request("timed out".into())
                    } else {
                        FetchError::Request(error_chain(&e.without_url()))
                    }
                };
                let mut response = client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(request_failed)?;
                if !response.status().is_success() {
                    return Err(FetchError::Status(response.status().as_u16()));
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    return Err(FetchError::TooLarge);
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| FetchError::Io(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FetchError::Io(e.to_string()))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(bytes)
}

/// `error: cause: cause`, since reqwest's own message ("error sending request") hides the
/// useful part (connection refused, certificate unknown, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Any base64url value will do: the modulus is only decoded, not used.
    const N: &str = "3q2-7w";

    fn rsa(extra: serde_json::Value) -> serde_json::Value {
        let mut k = json!({"kty": "RSA", "n": N, "e": "AQAB"});
        k.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        k
    }

    #[test]
    fn keys_plaza_cannot_verify_with_are_skipped_not_fatal() {
        let doc = json!({"keys": [
            rsa(json!({"kid": "good", "alg": "RS256", "use": "sig"})),
            rsa(json!({})),                                        // no kid
            rsa(json!({"kid": "enc", "use": "enc"})),              // encryption key
            rsa(json!({"kid": "ops", "key_ops": ["encrypt"]})),    // not for verifying
            rsa(json!({"kid": "oaep", "alg": "RSA-OAEP"})),        // encryption alg
            rsa(json!({"kid": "mislabelled", "alg": "ES256"})),    // alg of another family
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},       // symmetric: never
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "weird", "kid": "w"},
            "not even an object",
        ]});
        let keys = Keys::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        let good = keys.get("good").unwrap();
        assert!(good.fits(Algorithm::RS256));
        assert!(!good.fits(Algorithm::PS256), "the JWK pins RS256");
        assert!(!good.fits(Algorithm::HS256));
    }

    #[test]
    fn an_rsa_key_without_alg_fits_every_rsa_algorithm_and_nothing_else() {
        let doc = json!({"keys": [rsa(json!({"kid": "k"}))]});
        let key = Keys::parse(doc.to_string().as_bytes())
            .unwrap()
            .get("k")
            .unwrap();
        assert!(key.fits(Algorithm::RS256) && key.fits(Algorithm::PS512));
        assert!(!key.fits(Algorithm::HS256) && !key.fits(Algorithm::ES256));
    }

    #[test]
    fn garbage_and_empty_sets_are_errors_so_the_last_good_set_stays() {
        assert!(matches!(
            Keys::parse(b"<html>"),
            Err(FetchError::Invalid(_))
        ));
        assert!(matches!(
            Keys::parse(br#"{"keys": {}}"#),
            Err(FetchError::Invalid(_))
        ));
        assert_eq!(
            Keys::parse(br#"{"keys": []}"#).unwrap_err(),
            FetchError::NoUsableKeys
        );
    }

    #[test]
    fn only_https_urls_are_accepted_unless_http_is_allowed() {
        let mut c = JwksConfig {
            issuer: "https://idp.example".into(),
            url: Some("http://idp.example/jwks".into()),
            ..Default::default()
        };
        assert!(matches!(Source::new(&c), Err(AuthSetupError::Jwks { .. })));
        c.allow_http = true;
        assert!(Source::new(&c).is_ok());
        c.url = Some("ftp://idp.example/jwks".into());
        assert!(Source::new(&c).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_https_provider_is_a_fetch_error_not_a_panic() {
        // Building the client needs the process-wide rustls provider; this proves it is there.
        let c = JwksConfig {
            issuer: "https://idp.example".into(),
            url: Some("https://127.0.0.1:1/jwks".into()),
            ..Default::default()
        };
        let loaded = Source::new(&c).unwrap().load(Duration::from_secs(2)).await;
        assert!(matches!(loaded, Err(FetchError::Request(_))), "{loaded:?}");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
        assert_eq!(read_file(&path).unwrap_err(), FetchError::TooLarge);
    }
}
