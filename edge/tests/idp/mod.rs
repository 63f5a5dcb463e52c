//! A test identity provider: signing keys from the TEST-ONLY fixtures in `tests/fixtures`, and
//! a real HTTP server (axum on 127.0.0.1:0) serving their JWKS, whose contents a test can
//! change (rotation) and which can be told to fail, hang or return garbage. It counts the
//! requests it gets, so tests can prove the edge's refetch rate limit.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plaza_edge::config::JwksConfig;
use serde_json::{Value, json};

pub(crate) const ISSUER: &str = "https://idp.test";
pub(crate) const AUDIENCE: &str = "plaza-tests";

const RSA_A: &[u8] = include_bytes!("../fixtures/rsa-a.der");
const RSA_B: &[u8] = include_bytes!("../fixtures/rsa-b.der");
const EC_P256: &[u8] = include_bytes!("../fixtures/ec-p256.der");
const ED25519: &[u8] = include_bytes!("../fixtures/ed25519.der");
/// The PEM public key of [`Key::rsa_a`]: what an attacker would use as an HMAC secret.
pub(crate) const RSA_A_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/rsa-a.pub.pem");

/// A private signing key with the `kid` and `alg` it is published under.
#[derive(Clone)]
pub(crate) struct Key {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
}

impl Key {
    pub(crate) fn rsa_a(kid: &str) -> Self {
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(RSA_A))
    }

    pub(crate) fn rsa_b(kid: &str) -> Self {
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(RSA_B))
    }

    /// [`Key::rsa_b`] published for RSASSA-PSS.
    pub(crate) fn pss(kid: &str) -> Self {
        Self::new(kid, Algorithm::PS256, EncodingKey::from_rsa_der(RSA_B))
    }

    pub(crate) fn ec(kid: &str) -> Self {
        Self::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(EC_P256))
    }

    pub(crate) fn ed(kid: &str) -> Self {
        Self::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(ED25519))
    }

    fn new(kid: &str, alg: Algorithm, key: EncodingKey) -> Self {
        Self {
            kid: kid.into(),
            alg,
            key,
        }
    }

    /// The public JWK, as a provider publishes it (`kid`, `alg`, `use: sig`).
    pub(crate) fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        jwk
    }

    /// Signs `claims` with this key, naming it in the header.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs `claims` with this key but names `kid` in the header.
    pub(crate) fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// The JWKS document publishing `keys`.
pub(crate) fn jwks(keys: &[&Key]) -> String {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    };
    serde_json::to_string(&set).unwrap()
}

/// Claims the test provider puts in a token for `user`: valid for an hour, for [`AUDIENCE`],
/// with every capability on `chat:*`.
pub(crate) fn claims(user: &str) -> Value {
    let now = plaza_edge::auth::unix_now();
    json!({
        "sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600,
        "plaza": {"rooms": {"chat:*": ["subscribe", "publish", "presence"]}}
    })
}

/// A token assembled by hand, for headers or payloads no honest encoder produces.
pub(crate) fn forge(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        signature
    )
}

/// How the test provider answers `GET /jwks.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 200 with the current key set.
    Serve,
    /// 500.
    Fail,
    /// Never answers (well, after a minute).
    Hang,
    /// 200 with HTML.
    Garbage,
}

struct State {
    mode: Mutex<Mode>,
    body: Mutex<String>,
    requests: AtomicUsize,
}

/// The running test provider; its server stops when this is dropped.
pub(crate) struct Idp {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Idp {
    pub(crate) async fn start(keys: &[&Key], mode: Mode) -> Self {
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            body: Mutex::new(jwks(keys)),
            requests: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Publishes `keys` from now on (rotation).
    pub(crate) fn publish(&self, keys: &[&Key]) {
        *self.state.body.lock().unwrap() = jwks(keys);
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// An `[[auth.jwks]]` entry for this provider with short, test-sized intervals.
    pub(crate) fn config(&self) -> JwksConfig {
        JwksConfig {
            issuer: ISSUER.into(),
            audience: Some(vec![AUDIENCE.into()]),
            url: Some(self.url()),
            allow_http: true,
            refresh_interval: Duration::from_secs(60),
            min_refetch_interval: Duration::from_millis(300),
            fetch_timeout: Duration::from_millis(500),
            ..Default::default()
        }
    }
}

async fn serve(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Serve => {
            let body = state.body.lock().unwrap().clone();
            ([("content-type", "application/json")], body).into_response()
        }
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::Garbage => "<html>we moved</html>".into_response(),
    }
}
