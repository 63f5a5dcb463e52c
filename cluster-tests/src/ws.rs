//! A small WebSocket client of the Plaza client protocol, for tests against edge processes.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One client connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
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
        let mut client = Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        };
        let reply = client.call(json!({"op": "connect", "token": token})).await;
        assert!(reply.get("ok").is_some(), "connect refused: {reply}");
        client
    }

    /// Sends a command (an `id` is added) and returns its whole reply frame, buffering the
    /// pushes that arrive first. Panics if the connection ends or 20 s pass.
    pub async fn call(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("send command");
        loop {
            let frame = self
                .read(Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("no reply to {command}: {e:?}"));
            if frame.get("id").and_then(Value::as_u64) == Some(id) {
                return frame;
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
                    return Ok(serde_json::from_str(&text).expect("server frames are JSON"));
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
