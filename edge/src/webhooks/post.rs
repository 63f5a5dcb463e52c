//! One POST of a batch: the body, the signature headers, and a classified outcome.
//!
//! The signature is `Plaza-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
//! `Plaza-Timestamp: <unix seconds>`, made fresh for every attempt, so a receiver can refuse
//! old (replayed) deliveries by their timestamp. The response body is never read: a slow,
//! huge or garbage answer cannot hold the sender beyond `webhooks.timeout`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::api::events::EventJson;

/// Header carrying the signature.
pub(crate) const SIGNATURE_HEADER: &str = "plaza-signature";
/// Header carrying the signing time (unix seconds).
pub(crate) const TIMESTAMP_HEADER: &str = "plaza-timestamp";
/// Header naming the endpoint (its configured name).
pub(crate) const ENDPOINT_HEADER: &str = "plaza-endpoint";

/// The body of one delivery.
#[derive(Serialize)]
pub(super) struct Batch<'a> {
    pub(super) endpoint: &'a str,
    pub(super) events: &'a [EventJson],
}

/// How a POST ended. Everything but `Delivered` is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 2xx.
    Delivered,
    /// 3xx: redirects are not followed (a moved endpoint is a configuration change).
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx or any other status.
    ServerError,
    /// No answer within `webhooks.timeout`.
    Timeout,
    /// Could not connect (refused, DNS, TLS handshake or certificate).
    Connect,
    /// Anything else (the connection broke mid-request, a malformed response).
    Other,
}

impl Outcome {
    /// The `outcome` label of `plaza_webhook_posts_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Redirect => "redirect",
            Self::ClientError => "status_4xx",
            Self::ServerError => "status_5xx",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Other => "other",
        }
    }
}

/// `v1=<hex>` for `body` signed at `timestamp` with `secret`.
pub(crate) fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The HTTP client of the sender: no redirects, the configured timeout, rustls with ring.
pub(super) fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        // reqwest is built with `rustls-no-provider`; a provider already installed is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("plaza-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` to `url`, signed, and classifies the answer.
pub(super) async fn post(
    client: &reqwest::Client,
    url: &str,
    endpoint: &str,
    secret: &[u8],
    body: Vec<u8>,
) -> Outcome {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = sign(secret, timestamp, &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp)
        .header(SIGNATURE_HEADER, signature)
        .header(ENDPOINT_HEADER, endpoint)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            // Dropping the response without reading its body closes the exchange.
            drop(response);
            if status.is_success() {
                Outcome::Delivered
            } else if status.is_redirection() {
                Outcome::Redirect
            } else if status.is_client_error() {
                Outcome::ClientError
            } else {
                Outcome::ServerError
            }
        }
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) if e.is_connect() => Outcome::Connect,
        Err(_) => Outcome::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() {
        // Recomputed independently: Python's hmac.new(b"Jefe", b"0.what do ya want for
        // nothing?", hashlib.sha256).hexdigest().
        let sig = sign(b"Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert_ne!(
            sign(b"Jefe", 1, b"x"),
            sign(b"Jefe", 2, b"x"),
            "time is signed"
        );
        assert_ne!(sign(b"k1", 1, b"x"), sign(b"k2", 1, b"x"));
    }
}
