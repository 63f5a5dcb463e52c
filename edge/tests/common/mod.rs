//! Test harness: a real edge on a loopback port with the memory backend, and a raw WebSocket
//! client that speaks protocol v1 frame by frame.
#![allow(dead_code)]

pub(crate) mod faulty;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use plaza_backend::memory::MemoryBackend;
use plaza_edge::RunningEdge;
use plaza_edge::auth::{Capability, TokenSpec, mint};
use plaza_edge::config::{EdgeConfig, Secret};
use plaza_proto::client::{ConnectOk, Push, Reply, ServerFrame};
use plaza_rooms::config::NamespaceOverrides;
use plaza_rooms::config::PresenceMode;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const SECRET: &str = "test-secret-test-secret-test-secret!";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Config for tests: loopback port 0, the test secret, and namespaces with distinct options.
pub(crate) fn config() -> EdgeConfig {
    let mut c = EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    c.auth.hmac_secret = Some(Secret(SECRET.into()));
    c.drain.window = Duration::from_millis(200);
    // Tests drive edges hard from one address; the limits get tests of their own.
    c.limits.commands_per_second = 100_000;
    c.limits.command_burst = 100_000;
    c.limits.connections_per_second_per_ip = 10_000;
    c.limits.connection_burst_per_ip = 10_000;
    c.drain.grace = Duration::from_secs(3);
    let ns = &mut c.rooms.namespaces;
    ns.insert(
        "small".into(),
        NamespaceOverrides {
            history_size: Some(3),
            ..Default::default()
        },
    );
    ns.insert(
        "counts".into(),
        NamespaceOverrides {
            presence: Some(PresenceMode::Counts),
            ..Default::default()
        },
    );
    ns.insert(
        "nopres".into(),
        NamespaceOverrides {
            presence: Some(PresenceMode::Off),
            ..Default::default()
        },
    );
    ns.insert(
        "server".into(),
        NamespaceOverrides {
            client_publish: Some(false),
            ..Default::default()
        },
    );
    ns.insert(
        "tiny".into(),
        NamespaceOverrides {
            max_message_bytes: Some(64),
            ..Default::default()
        },
    );
    ns.insert(
        "public".into(),
        NamespaceOverrides {
            allow: Some(vec!["subscribe".into()]),
            ..Default::default()
        },
    );
    c
}

pub(crate) async fn start(config: EdgeConfig) -> RunningEdge {
    let backend = MemoryBackend::new(config.rooms.clone());
    plaza_edge::start(config, backend, None)
        .await
        .expect("edge starts")
}

pub(crate) async fn start_default() -> RunningEdge {
    start(config()).await
}

/// A token for `user` with every capability on `chat:*`, `small:*`, `counts:*`, `nopres:*`,
/// `server:*`, `tiny:*` and `user:{sub}`, valid for an hour.
pub(crate) fn token(user: &str) -> String {
    let all = vec![
        Capability::Subscribe,
        Capability::Publish,
        Capability::Presence,
    ];
    let rooms = [
        "chat:*",
        "small:*",
        "counts:*",
        "nopres:*",
        "server:*",
        "tiny:*",
        "user:{sub}",
    ]
    .iter()
    .map(|p| (p.to_string(), all.clone()))
    .collect();
    token_with(user, rooms, Some(Duration::from_secs(3600)))
}

pub(crate) fn token_with(
    user: &str,
    rooms: Vec<(String, Vec<Capability>)>,
    ttl: Option<Duration>,
) -> String {
    let spec = TokenSpec {
        user: user.into(),
        rooms,
        ttl,
        info: Some(serde_json::json!({"name": user})),
    };
    mint(SECRET.as_bytes(), "plaza", &spec).unwrap()
}

pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    pushes: VecDeque<Push>,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) struct Closed {
    /// The close frame's code (None if the socket just ended).
    pub code: Option<u16>,
    /// The `disconnect` push received before it, if any.
    pub disconnect: Option<plaza_proto::client::DisconnectPush>,
    /// Error replies received while waiting.
    pub errors: Vec<plaza_proto::ErrorBody>,
}

impl Client {
    pub(crate) async fn open(addr: SocketAddr) -> Self {
        Self::open_url(&format!("ws://{addr}/v1/ws")).await
    }

    pub(crate) async fn open_url(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("websocket handshake");
        Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Opens and connects as `user`.
    pub(crate) async fn connected(addr: SocketAddr, user: &str) -> (Self, ConnectOk) {
        let mut c = Self::open(addr).await;
        let ok = c.connect(&token(user)).await;
        (c, ok)
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub(crate) async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Reads the next server frame (text), failing after [`WAIT`].
    pub(crate) async fn next_frame(&mut self) -> Option<ServerFrame<Box<RawValue>>> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(
                        ServerFrame::decode(&t)
                            .unwrap_or_else(|e| panic!("bad server frame {t}: {e}")),
                    );
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(b))) => panic!("server sent a binary frame: {b:?}"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            }
        }
    }

    /// Sends `{"id": n, ...fields}` and waits for the reply to it, keeping pushes for later.
    pub(crate) async fn call(&mut self, fields: Value) -> Reply<Box<RawValue>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = fields;
        frame["id"] = id.into();
        self.send_text(&frame.to_string()).await;
        self.reply_to(id).await
    }

    pub(crate) async fn reply_to(&mut self, id: u32) -> Reply<Box<RawValue>> {
        loop {
            match self.next_frame().await {
                Some(ServerFrame::Reply(r)) if r.id == id => return r,
                Some(ServerFrame::Reply(r)) => panic!("reply to {} while waiting for {id}", r.id),
                Some(ServerFrame::Push(p)) => self.pushes.push_back(p),
                None => panic!("connection closed while waiting for reply {id}"),
            }
        }
    }

    /// Calls and returns the ok body as JSON, panicking on an error reply.
    pub(crate) async fn ok(&mut self, fields: Value) -> Value {
        let what = fields.to_string();
        let r = self.call(fields).await;
        match r.result {
            Ok(raw) => serde_json::from_str(raw.get()).unwrap(),
            Err(e) => panic!("{what} failed: {e:?}"),
        }
    }

    /// Calls and returns the error body, panicking on success.
    pub(crate) async fn err(&mut self, fields: Value) -> plaza_proto::ErrorBody {
        let what = fields.to_string();
        match self.call(fields).await.result {
            Ok(raw) => panic!("{what} unexpectedly succeeded: {}", raw.get()),
            Err(e) => e,
        }
    }

    pub(crate) async fn connect(&mut self, token: &str) -> ConnectOk {
        let r = self
            .call(serde_json::json!({"op": "connect", "token": token}))
            .await;
        r.ok_as().unwrap_or_else(|e| panic!("connect failed: {e}"))
    }

    pub(crate) async fn subscribe(&mut self, room: &str) -> Value {
        self.ok(serde_json::json!({"op": "subscribe", "room": room}))
            .await
    }

    pub(crate) async fn publish(&mut self, room: &str, data: Value) -> Value {
        self.ok(serde_json::json!({"op": "publish", "room": room, "data": data}))
            .await
    }

    /// The next push (queued or read), failing after [`WAIT`].
    pub(crate) async fn next_push(&mut self) -> Push {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        match self.next_frame().await {
            Some(ServerFrame::Push(p)) => p,
            Some(ServerFrame::Reply(r)) => panic!("unexpected reply {}", r.id),
            None => panic!("connection closed while waiting for a push"),
        }
    }

    /// Asserts nothing arrives within `d` (pings aside).
    pub(crate) async fn expect_silence(&mut self, d: Duration) {
        assert!(self.pushes.is_empty(), "queued pushes: {:?}", self.pushes);
        match tokio::time::timeout(d, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => return other,
                }
            }
        })
        .await
        {
            Err(_) => {}
            Ok(frame) => panic!("expected silence, got {frame:?}"),
        }
    }

    /// Reads until the connection closes; returns the close code and the disconnect push.
    pub(crate) async fn closed(&mut self) -> Closed {
        let mut out = Closed {
            code: None,
            disconnect: None,
            errors: Vec::new(),
        };
        loop {
            let msg = tokio::time::timeout(WAIT * 3, self.ws.next())
                .await
                .expect("the server closes");
            match msg {
                Some(Ok(Message::Text(t))) => match ServerFrame::decode(&t).unwrap() {
                    ServerFrame::Push(Push::Disconnect(d)) => out.disconnect = Some(d),
                    ServerFrame::Reply(Reply { result: Err(e), .. }) => out.errors.push(e),
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    out.code = frame.map(|f| u16::from(f.code));
                    return out;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return out,
            }
        }
    }

    pub(crate) fn queued_pushes(&mut self) -> Vec<Push> {
        self.pushes.drain(..).collect()
    }
}

/// The value of the metric series whose line starts with `series` (e.g.
/// `plaza_connections` or `plaza_limit_hits_total{limit="origin"}`), 0 if absent.
pub(crate) async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
}

/// The `data` and `offset` of a `pub` push, or a panic.
pub(crate) fn publication(p: Push) -> (u64, Value) {
    match p {
        Push::Pub(p) => (p.offset, serde_json::from_str(p.data.as_str()).unwrap()),
        other => panic!("expected pub, got {other:?}"),
    }
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
