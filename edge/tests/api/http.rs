//! A minimal HTTP/1.1 client: one request per connection, the response read whole.

use std::net::SocketAddr;

use plaza_edge::api::ApiCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KEY;
use super::common::WAIT;

/// An HTTP response, read whole.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Response {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of the body, if it is an error body.
    pub(super) fn code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        body["error"]["code"].as_str().map(str::to_owned)
    }

    /// The body of a 200 response.
    pub(super) fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.json()
    }

    /// Asserts an error response with `code` and its status.
    pub(super) fn error(&self, code: ApiCode) {
        assert_eq!(self.status, code.status().as_u16(), "{self:?}");
        let body = self.json();
        assert_eq!(body["error"]["code"], code.name(), "{self:?}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the response to the end.
pub(super) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413, 401) and close before reading the whole body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("a response within the wait")
        .expect("read the response");
    parse(&buf)
}

fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// A server API client with one key.
pub(super) struct Api {
    addr: SocketAddr,
    auth: String,
}

impl Api {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self::with_key(addr, KEY)
    }

    pub(super) fn with_key(addr: SocketAddr, key: &str) -> Self {
        Self {
            addr,
            auth: format!("Bearer {key}"),
        }
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Response {
        let headers = [
            ("Authorization", self.auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        send(
            self.addr,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
        )
        .await
    }

    pub(super) async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        send(self.addr, "POST", path, &headers, body).await
    }

    pub(super) async fn get(&self, path: &str) -> Response {
        send(
            self.addr,
            "GET",
            path,
            &[("Authorization", self.auth.as_str())],
            b"",
        )
        .await
    }
}

#[tokio::test]
async fn paths_outside_the_api_do_not_ask_for_an_api_key() {
    let mut config = super::common::config();
    config.api.keys = vec![plaza_edge::config::Secret("0123456789abcdef0123".into())];
    let edge = super::common::start(config).await;
    let (status, body) = super::common::http_get(edge.local_addr(), "/favicon.ico").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = super::common::http_get(edge.local_addr(), "/v1/api/rooms").await;
    assert_eq!(status, 401);
    edge.shutdown().await;
}
