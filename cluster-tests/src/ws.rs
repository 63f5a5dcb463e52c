//! A small WebSocket client of the Plaza client protocol, for tests against edge processes.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One client connection, over plain TCP (or any stream `S`: TLS through a front end).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
    next_id: u64,
    /// Pushes read while waiting for a reply.
    pushes: VecDeque<Value>,
}

/// How a read ended without a frame.
#[derive(Debug)]
pub enum Ended {
    /// The server closed with this code and reason.
    Closed(u16, String),
    /// Nothing arrived in time.
    Timeout,
    /// The socket failed.
    Failed(String),
}

impl Client {
    /// Opens `url` and sends `connect` with `token`; panics unless it succeeds.
    pub async fn connect(url: &str, token: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket handshake");
        Self::connected(ws, token).await
    }

    /// [`Self::connect`] that says why instead of panicking (for clients that ride out faults).
    pub async fn try_connect(url: &str, token: &str) -> Result<Self, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| e.to_string())?;
        Self::try_connected(ws, token).await
    }

    /// Sends `connect` with `token` on an open socket; panics unless it succeeds.
    async fn connected(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, token: &str) -> Self {
        Self::try_connected(ws, token)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Sends `connect` with `token` on an open socket.
    async fn try_connected(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        token: &str,
    ) -> Result<Self, String> {
        let mut client = Self::new(ws);
        let reply = client
            .try_call(
                json!({"op": "connect", "token": token}),
                Duration::from_secs(20),
            )
            .await
            .map_err(|e| format!("no reply to connect: {e:?}"))?;
        match reply.get("ok") {
            Some(_) => Ok(client),
            None => Err(format!("connect refused: {reply}")),
        }
    }

    /// [`Self::connect`] from the local address `source` (e.g. another loopback address, so
    /// many clients do not share one address's per-IP limits).
    pub async fn connect_from(url: &str, token: &str, source: std::net::IpAddr) -> Self {
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().expect("a ws:// URL");
        let host = uri.host().expect("a host").trim_matches(['[', ']']);
        let target = std::net::SocketAddr::new(
            host.parse().expect("an IP address in the URL"),
            uri.port_u16().expect("a port"),
        );
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind the source address");
        let tcp = socket.connect(target).await.expect("TCP connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
        Self::connected(ws, token).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client on an open socket that has not sent `connect` yet.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Sends a command (an `id` is added) and returns its whole reply frame, buffering the
    /// pushes that arrive first. Panics if the connection ends or 20 s pass.
    pub async fn call(&mut self, command: Value) -> Value {
        let text = command.to_string();
        self.try_call(command, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("no reply to {text}: {e:?}"))
    }

    /// Drops the pushes buffered while waiting for replies (a publisher does not read them).
    pub fn clear_pushes(&mut self) {
        self.pushes.clear();
    }

    /// [`Self::call`] that says how the connection ended instead of panicking; `timeout`
    /// bounds each wait for a frame.
    pub async fn try_call(
        &mut self,
        mut command: Value,
        timeout: Duration,
    ) -> Result<Value, Ended> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .map_err(|e| Ended::Failed(e.to_string()))?;
        loop {
            let frame = self.read(timeout).await?;
            if frame.get("id").and_then(Value::as_u64) == Some(id) {
                return Ok(frame);
            }
            self.pushes.push_back(frame);
        }
    }

    /// The next push (buffered ones first), or how the connection ended.
    pub async fn next_push(&mut self, timeout: Duration) -> Result<Value, Ended> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        loop {
            let frame = self.read(timeout).await?;
            if frame.get("push").is_some() {
                return Ok(frame);
            }
        }
    }

    async fn read(&mut self, timeout: Duration) -> Result<Value, Ended> {
        loop {
            let message = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return Err(Ended::Timeout),
                Ok(None) => return Err(Ended::Failed("stream ended".into())),
                Ok(Some(Err(e))) => return Err(Ended::Failed(e.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| Ended::Failed(e.to_string()));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(Ended::Closed(code, reason));
                }
                _ => {}
            }
        }
    }
}
