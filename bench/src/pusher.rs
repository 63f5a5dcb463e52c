//! The Pusher protocol as Sockudo speaks it, reduced to what the bench needs: private-channel
//! subscription signatures, and publications through the signed HTTP events API
//! (`POST /apps/<id>/events`), sent over a few HTTP/1.1 connections (Sockudo closes each
//! after one response, so they are redialled).
//!
//! ```text
//! publisher ──body──▶ Publisher (round-robin) ──▶ poster task ×CONNECTIONS ──POST──▶ Sockudo
//!                                                    └─ non-2xx / failure ─▶ on_error
//! ```

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The bench app's id in Sockudo (`SOCKUDO_DEFAULT_APP_ID`).
pub(crate) const APP_ID: &str = "plaza-bench";
/// The bench app's key (`SOCKUDO_DEFAULT_APP_KEY`); its secret is the bench's HS256 secret.
pub(crate) const APP_KEY: &str = "plaza-bench-key";
/// Keep-alive HTTP connections the publisher spreads its requests over.
const CONNECTIONS: usize = 4;

/// The private channel standing for a bench room (Pusher channel names have no `:`).
pub(crate) fn channel(room: &str) -> String {
    format!("private-{}", room.replace(':', "."))
}

fn hmac_hex(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `auth` of a `pusher:subscribe` to a private channel: `key:HMAC(secret, socket_id:channel)`.
pub(crate) fn subscribe_auth(secret: &str, socket_id: &str, channel: &str) -> String {
    format!(
        "{APP_KEY}:{}",
        hmac_hex(secret, &format!("{socket_id}:{channel}"))
    )
}

/// A signed `POST /apps/<id>/events` request triggering event `m` with `data` on `channel`.
pub(crate) fn events_request(secret: &str, host: &str, channel: &str, data: &str) -> Vec<u8> {
    let body = serde_json::json!({"name": "m", "channels": [channel], "data": data}).to_string();
    let path = format!("/apps/{APP_ID}/events");
    let timestamp = crate::spec::now_ns() / 1_000_000_000;
    let body_md5 = hex(&Md5::digest(body.as_bytes()));
    // Parameters in lexical order, as the signature requires.
    let query = format!(
        "auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}"
    );
    let signature = hmac_hex(secret, &format!("POST\n{path}\n{query}"));
    format!(
        "POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Plaza's `POST /v1/api/publish` of `data` (a JSON string) to `room` with `key`, under the
/// idempotency key `idem` (so a retry after an unknown outcome cannot publish it twice).
pub(crate) fn plaza_publish_request(
    key: &str,
    host: &str,
    room: &str,
    data: &str,
    idem: &str,
) -> Request {
    let body = serde_json::json!({"room": room, "data": data, "idem": idem}).to_string();
    let bytes = format!(
        "POST /v1/api/publish HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    Request {
        bytes,
        idempotent: true,
    }
}

/// One HTTP request of a [`Publisher`].
pub(crate) struct Request {
    bytes: Vec<u8>,
    /// Safe to send again after a failure (it carries an idempotency key): it is retried,
    /// as a client of the API would, on a 5xx answer or a lost connection.
    idempotent: bool,
}

impl From<Vec<u8>> for Request {
    /// A request that is sent once (Pusher's events API has no idempotency keys).
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            idempotent: false,
        }
    }
}

/// Attempts of an idempotent request before it is reported as failed.
const ATTEMPTS: u32 = 10;
/// Pause between two attempts.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Sends publications to an HTTP API (Sockudo's, or Plaza's with `--plaza-api`) without
/// waiting for them: each goes to one of
/// [`CONNECTIONS`] poster tasks, which send one request at a time and read its response.
/// A failed request is reported and the next one dials again.
pub(crate) struct Publisher {
    senders: Vec<mpsc::UnboundedSender<Request>>,
    next: usize,
}

impl Publisher {
    /// Connects to `host` (`ip:port`); `on_error` hears about refused or failed requests.
    pub(crate) async fn connect(
        host: &str,
        on_error: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Self> {
        let mut senders = Vec::new();
        for _ in 0..CONNECTIONS {
            let stream = dial(host).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(poster(host.to_owned(), stream, rx, on_error.clone()));
            senders.push(tx);
        }
        Ok(Self { senders, next: 0 })
    }

    /// Queues one request (see [`events_request`]); false if its poster has stopped.
    pub(crate) fn send(&mut self, request: impl Into<Request>) -> bool {
        self.next = (self.next + 1) % self.senders.len();
        self.senders[self.next].send(request.into()).is_ok()
    }
}

async fn dial(host: &str) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connect to {host}"))?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

/// Sends requests one at a time; Sockudo answers `connection: close`, so a connection the
/// server closes is replaced before the next request.
async fn poster(
    host: String,
    first: BufReader<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    on_error: Arc<dyn Fn(String) + Send + Sync>,
) {
    let mut io = Some(first);
    while let Some(request) = rx.recv().await {
        let attempts = if request.idempotent { ATTEMPTS } else { 1 };
        for attempt in 1..=attempts {
            let result = async {
                let conn = match io.take() {
                    Some(conn) => conn,
                    None => dial(&host).await?,
                };
                let mut conn = conn;
                conn.get_mut().write_all(&request.bytes).await?;
                let keep = read_response(&mut conn).await?;
                anyhow::Ok(keep.then_some(conn))
            }
            .await;
            match result {
                Ok(conn) => {
                    io = conn;
                    break;
                }
                // A refusal (4xx) would only be refused again.
                Err(e) if attempt < attempts && !e.to_string().starts_with("HTTP 4") => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    on_error(format!("publishing over HTTP: {e:#}"));
                    break;
                }
            }
        }
    }
}

/// Reads one HTTP/1.1 response (Content-Length bodies only); fails on a non-2xx status.
/// Returns whether the connection stays open (no `connection: close`).
async fn read_response(io: &mut BufReader<TcpStream>) -> Result<bool> {
    let mut line = String::new();
    io.read_line(&mut line).await?;
    let status = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut length = 0usize;
    let mut keep = true;
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            bail!("connection closed mid-response");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().context("content-length")?;
            } else if name.eq_ignore_ascii_case("connection") {
                keep = !value.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0; length];
    io.read_exact(&mut body).await?;
    if !status.starts_with('2') {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_auth_is_the_documented_hmac() {
        // Pusher's documented example: key 278d425bdf160c739803, secret 7ad3773142a6692b25b8,
        // socket 1234.1234, channel private-foobar.
        let sig = hmac_hex("7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert_eq!(channel("fan:all"), "private-fan.all");
    }

    #[test]
    fn event_requests_carry_the_body_hash_and_length() {
        let req =
            String::from_utf8(events_request("s3cret", "127.0.0.1:1", "private-a", "x")).unwrap();
        let body = r#"{"channels":["private-a"],"data":"x","name":"m"}"#;
        assert!(req.starts_with("POST /apps/plaza-bench/events?auth_key=plaza-bench-key&"));
        assert!(req.contains(&format!("body_md5={}", hex(&Md5::digest(body.as_bytes())))));
        assert!(req.ends_with(&format!("Content-Length: {}\r\n\r\n{body}", body.len())));
    }
}
