//! The wire protocols, reduced to what a benchmark client does: open a WebSocket,
//! authenticate, subscribe to rooms, publish a payload to a room, and recognise deliveries,
//! errors and keepalives in incoming frames.
//!
//! | | Plaza | NATS (WebSocket) | Socket.IO 4 |
//! |---|---|---|---|
//! | auth | `connect` with a JWT | `CONNECT` with `auth_token` | `40{"token":JWT}` (server checks HS256) |
//! | subscribe | `subscribe` per room | `SUB room sid` | `join` event with ack |
//! | publish | `publish` (`data` = payload as a JSON string) | `PUB room len` | `pub` event, server `io.to(room).emit` |
//! | delivery | `pub` push | `MSG` | `m` event |
//! | keepalive | WebSocket ping (auto pong) | `PING` → `PONG` | `2` → `3` |
//!
//! uWebSockets.js speaks Plaza's column (its server implements that subset). Sockudo speaks
//! Pusher: `pusher:subscribe` to `private-<room>` with an HMAC signature per connection,
//! publications through the HTTP events API (`crate::pusher`), deliveries as event `m`,
//! `pusher:ping` → `pusher:pong`.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Duration, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::spec::Target;

/// An open WebSocket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Read buffer of a benchmark client's WebSocket.
const READ_BUFFER: usize = 8 * 1024;

/// How long one handshake step may take.
const STEP: Duration = Duration::from_secs(30);

/// What an incoming frame held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A delivered publication: `(timestamp ns, phase)`.
    Delivery(u64, u32),
    /// An error reply or error line.
    Error(String),
    /// A frame the client must send back (NATS `PONG`, Engine.IO pong).
    Respond(Message),
    /// The server closed the connection.
    Closed,
}

/// Per-connection incoming-frame decoder (NATS needs a buffer: records span frames).
#[derive(Debug)]
pub(crate) enum Decoder {
    /// Plaza: one JSON object per text frame.
    Plaza,
    /// NATS: a byte stream cut into WebSocket frames anywhere.
    Nats(Vec<u8>),
    /// Socket.IO: one Engine.IO packet per text frame.
    Socketio,
    /// Pusher (Sockudo): one JSON event per text frame.
    Pusher,
}

impl Decoder {
    /// A decoder for `target`.
    pub(crate) fn new(target: Target) -> Self {
        match target {
            Target::Plaza | Target::Uws => Decoder::Plaza,
            Target::Nats => Decoder::Nats(Vec::new()),
            Target::Socketio => Decoder::Socketio,
            Target::Sockudo => Decoder::Pusher,
        }
    }

    /// Decodes `msg`, calling `out` for each event in it.
    pub(crate) fn feed(&mut self, msg: Message, out: &mut impl FnMut(Event)) {
        let data: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            Message::Close(_) => return out(Event::Closed),
            _ => return,
        };
        match self {
            Decoder::Plaza => plaza_frame(data, out),
            Decoder::Socketio => socketio_frame(data, out),
            Decoder::Pusher => pusher_frame(data, out),
            Decoder::Nats(buf) => {
                buf.extend_from_slice(data);
                let used = nats_records(buf, out);
                buf.drain(..used);
            }
        }
    }
}

fn plaza_frame(data: &[u8], out: &mut impl FnMut(Event)) {
    if data.starts_with(br#"{"push":"pub","#) || data.starts_with(br#"{"push":"ephemeral","#) {
        if let Some((ts, phase)) = crate::spec::parse_payload(data) {
            out(Event::Delivery(ts, phase));
        }
        return;
    }
    // Replies and other pushes: the field order is the edge's; look for the markers.
    let text = String::from_utf8_lossy(data);
    if text.contains(r#""error":"#) || text.contains(r#""push":"disconnect""#) {
        out(Event::Error(text.chars().take(200).collect()));
    } else if (text.contains(r#""push":"pub""#) || text.contains(r#""push":"ephemeral""#))
        && let Some((ts, phase)) = crate::spec::parse_payload(data)
    {
        out(Event::Delivery(ts, phase));
    }
}

fn pusher_frame(data: &[u8], out: &mut impl FnMut(Event)) {
    if let Some((ts, phase)) = crate::spec::parse_payload(data) {
        return out(Event::Delivery(ts, phase));
    }
    let text = String::from_utf8_lossy(data);
    if text.contains(r#""pusher:ping""#) {
        out(Event::Respond(Message::text(PUSHER_PONG)));
    } else if text.contains(r#""pusher:error""#) {
        out(Event::Error(text.chars().take(200).collect()));
    }
}

/// The answer to `pusher:ping`.
const PUSHER_PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

fn socketio_frame(data: &[u8], out: &mut impl FnMut(Event)) {
    match data.first() {
        Some(b'2') if data.len() == 1 => out(Event::Respond(Message::text("3"))),
        Some(b'4') => match data.get(1) {
            Some(b'2') => {
                if let Some((ts, phase)) = crate::spec::parse_payload(data) {
                    out(Event::Delivery(ts, phase));
                }
            }
            Some(b'4') => out(Event::Error(
                String::from_utf8_lossy(data).chars().take(200).collect(),
            )),
            _ => {}
        },
        Some(b'1') => out(Event::Closed),
        _ => {}
    }
}

/// Parses complete NATS records at the front of `buf`; returns the bytes consumed.
fn nats_records(buf: &[u8], out: &mut impl FnMut(Event)) -> usize {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return pos;
        };
        let line = &rest[..eol];
        if line.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len = line
                .rsplit(|c| *c == b' ')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            let Some(len) = len else {
                out(Event::Error("malformed MSG line".into()));
                return buf.len();
            };
            let body_start = eol + 2;
            if rest.len() < body_start + len + 2 {
                return pos;
            }
            if let Some((ts, phase)) =
                crate::spec::parse_payload(&rest[body_start..body_start + len])
            {
                out(Event::Delivery(ts, phase));
            }
            pos += body_start + len + 2;
            continue;
        }
        if line == b"PING" {
            out(Event::Respond(Message::text("PONG\r\n")));
        } else if line.starts_with(b"-ERR") {
            out(Event::Error(String::from_utf8_lossy(line).into_owned()));
        }
        pos += eol + 2;
    }
}

/// Opens a TCP connection to `url`'s host (from loopback source `source` when given, with a
/// receive buffer of `rcvbuf` bytes when given) and upgrades it to a WebSocket (no compression).
///
/// The opening handshake is written by hand — one preformatted request, the response checked
/// with `httparse` and its `Sec-WebSocket-Accept` verified — and the socket then handed to
/// tungstenite: in a connect storm the generator shares the two cores with the server, and
/// tungstenite's client handshake (an `http::Request`, header maps both ways) was a visible
/// part of the generator's cost per connection.
pub(crate) async fn open(
    url: &str,
    source: Option<std::net::IpAddr>,
    rcvbuf: Option<u32>,
) -> Result<Ws> {
    let rest = url
        .strip_prefix("ws://")
        .context("bad url: only ws:// is supported")?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/".to_owned()),
    };
    let addr: SocketAddr = match authority.parse() {
        Ok(addr) => addr,
        Err(_) => tokio::net::lookup_host(authority)
            .await?
            .next()
            .context("host does not resolve")?,
    };
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = timeout(STEP, socket.connect(addr))
        .await
        .context("tcp connect timed out")??;
    stream.set_nodelay(true)?;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let protocol = if path.starts_with("/v1/ws") {
        "Sec-WebSocket-Protocol: plaza.v1\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         {protocol}\r\n"
    );
    let rest = timeout(STEP, async {
        stream.write_all(request.as_bytes()).await?;
        read_upgrade_response(&mut stream, &key).await
    })
    .await
    .context("websocket upgrade timed out")??;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(config)).await)
}

/// Reads the server's answer to the opening handshake; checks it is a 101 with the right
/// accept key and returns the bytes that followed it (frames the server sent at once).
async fn read_upgrade_response(stream: &mut TcpStream, key: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    loop {
        if buf.len() >= 16 * 1024 {
            bail!("upgrade response too long");
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = response.parse(&buf)? else {
            continue;
        };
        if response.code != Some(101) {
            bail!(
                "upgrade refused: {} {}",
                response.code.unwrap_or_default(),
                response.reason.unwrap_or_default()
            );
        }
        let accept = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .context("101 without Sec-WebSocket-Accept")?;
        if accept.value != derive_accept_key(key.as_bytes()).as_bytes() {
            bail!("wrong Sec-WebSocket-Accept");
        }
        return Ok(buf.split_off(len));
    }
}

/// Credentials for one connection.
pub(crate) struct Credentials<'a> {
    /// JWT (Plaza, Socket.IO).
    pub token: &'a str,
    /// NATS `auth_token`.
    pub nats_token: Option<&'a str>,
    /// The HS256 secret (Sockudo: the app secret, to sign private-channel subscriptions).
    pub secret: &'a str,
}

/// Authenticates and subscribes `ws` to `rooms`; returns when every subscription is confirmed.
pub(crate) async fn join(
    ws: &mut Ws,
    target: Target,
    creds: &Credentials<'_>,
    rooms: &[String],
) -> Result<()> {
    timeout(STEP, join_inner(ws, target, creds, rooms))
        .await
        .context("handshake timed out")?
}

async fn join_inner(
    ws: &mut Ws,
    target: Target,
    creds: &Credentials<'_>,
    rooms: &[String],
) -> Result<()> {
    match target {
        Target::Plaza | Target::Uws => {
            let connect = serde_json::json!({"id": 1, "op": "connect", "token": creds.token});
            ws.send(Message::text(connect.to_string())).await?;
            expect_ok(ws).await.context("connect")?;
            for (n, room) in rooms.iter().enumerate() {
                let sub = serde_json::json!({"id": n + 2, "op": "subscribe", "room": room});
                ws.feed(Message::text(sub.to_string())).await?;
            }
            ws.flush().await?;
            for _ in rooms {
                expect_ok(ws).await.context("subscribe")?;
            }
        }
        Target::Nats => {
            let info = next_text(ws).await?;
            if !info.starts_with("INFO") {
                bail!("expected INFO, got {}", short(&info));
            }
            let mut connect = serde_json::json!({
                "verbose": false, "pedantic": false, "protocol": 1, "lang": "rust",
                "version": "plaza-bench", "headers": false, "no_responders": false,
            });
            if let Some(token) = creds.nats_token {
                connect["auth_token"] = token.into();
            }
            let mut out = format!("CONNECT {connect}\r\n");
            for (n, room) in rooms.iter().enumerate() {
                out.push_str(&format!("SUB {room} {}\r\n", n + 1));
            }
            out.push_str("PING\r\n");
            ws.send(Message::text(out)).await?;
            let mut buf = String::new();
            loop {
                buf.push_str(&next_text(ws).await?);
                if buf.contains("-ERR") {
                    bail!("nats refused: {}", short(&buf));
                }
                if buf.contains("PONG\r\n") {
                    break;
                }
            }
        }
        Target::Sockudo => {
            let hello: serde_json::Value = serde_json::from_str(&next_text(ws).await?)?;
            if hello["event"] != "pusher:connection_established" {
                bail!("expected pusher:connection_established, got {hello}");
            }
            let data: serde_json::Value =
                serde_json::from_str(hello["data"].as_str().context("connection data")?)?;
            let socket_id = data["socket_id"].as_str().context("socket_id")?;
            for room in rooms {
                let channel = crate::pusher::channel(room);
                let auth = crate::pusher::subscribe_auth(creds.secret, socket_id, &channel);
                let sub = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": {"channel": channel, "auth": auth},
                });
                ws.feed(Message::text(sub.to_string())).await?;
            }
            ws.flush().await?;
            let mut confirmed = 0;
            while confirmed < rooms.len() {
                let t = next_text(ws).await?;
                if t.contains("pusher_internal:subscription_succeeded") {
                    confirmed += 1;
                } else if t.contains("pusher:error") || t.contains("subscription_error") {
                    bail!("sockudo refused: {}", short(&t));
                } else if t.contains("pusher:ping") {
                    ws.send(Message::text(PUSHER_PONG)).await?;
                }
            }
        }
        Target::Socketio => {
            let open = next_text(ws).await?;
            if !open.starts_with('0') {
                bail!("expected engine.io open, got {}", short(&open));
            }
            let auth = serde_json::json!({"token": creds.token});
            ws.send(Message::text(format!("40{auth}"))).await?;
            loop {
                let t = next_text(ws).await?;
                if t.starts_with("40") {
                    break;
                }
                if t.starts_with("44") {
                    bail!("socket.io refused: {}", short(&t));
                }
            }
            let join = serde_json::json!(["join", rooms]);
            ws.send(Message::text(format!("421{join}"))).await?;
            loop {
                let t = next_text(ws).await?;
                if t.starts_with("431") {
                    break;
                }
                if t == "2" {
                    ws.send(Message::text("3")).await?;
                }
            }
        }
    }
    Ok(())
}

/// Keys a `--state` run updates in turn.
pub(crate) const STATE_KEYS: u64 = 10;

/// Plaza's `set` frame of key `k<key>` to `payload` in the live-state room `room`.
pub(crate) fn state_set(id: u32, room: &str, key: u64, payload: &str) -> Message {
    Message::text(format!(
        r#"{{"id":{id},"op":"set","room":"{room}","key":"k{key}","value":"{payload}"}}"#
    ))
}

/// The publish frame for `payload` to `room`; `id` is Plaza's command id; `ephemeral` asks
/// Plaza for an ephemeral publication. (Sockudo publishes over HTTP: `crate::pusher`; this
/// gives it the client-event form, which the bench does not use.)
pub(crate) fn publish(
    target: Target,
    id: u32,
    room: &str,
    payload: &str,
    ephemeral: bool,
) -> Message {
    match target {
        Target::Plaza if ephemeral => Message::text(format!(
            r#"{{"id":{id},"op":"publish","room":"{room}","data":"{payload}","ephemeral":true}}"#
        )),
        Target::Plaza | Target::Uws => Message::text(format!(
            r#"{{"id":{id},"op":"publish","room":"{room}","data":"{payload}"}}"#
        )),
        Target::Sockudo => Message::text(format!(
            r#"{{"event":"client-m","channel":"{}","data":"{payload}"}}"#,
            crate::pusher::channel(room)
        )),
        Target::Nats => Message::text(format!("PUB {room} {}\r\n{payload}\r\n", payload.len())),
        Target::Socketio => Message::text(format!(r#"42["pub","{room}","{payload}"]"#)),
    }
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Binary(b) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Message::Close(frame) => bail!("closed by server: {frame:?}"),
            _ => {}
        }
    }
}

/// Waits for a Plaza reply; pushes in between are skipped.
async fn expect_ok(ws: &mut Ws) -> Result<()> {
    loop {
        let t = next_text(ws).await?;
        if t.contains(r#""push""#) && !t.starts_with(r#"{"id""#) {
            if t.contains(r#""push":"disconnect""#) {
                bail!("disconnected: {}", short(&t));
            }
            continue;
        }
        if t.contains(r#""ok""#) {
            return Ok(());
        }
        bail!("{}", short(&t));
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(d: &mut Decoder, frames: &[&str]) -> Vec<Event> {
        let mut v = Vec::new();
        for f in frames {
            d.feed(Message::text(*f), &mut |e| v.push(e));
        }
        v
    }

    #[test]
    fn nats_records_split_over_frames_are_reassembled() {
        let p = crate::spec::payload(42, 7, 40);
        let msg = format!("MSG fan:all 1 40\r\n{p}\r\nPING\r\nMSG a 1 40\r\n{p}\r\n");
        let (a, b) = msg.split_at(25);
        let mut d = Decoder::new(Target::Nats);
        let got = events(&mut d, &[a, b]);
        assert_eq!(
            got,
            vec![
                Event::Delivery(42, 7),
                Event::Respond(Message::text("PONG\r\n")),
                Event::Delivery(42, 7)
            ]
        );
        assert!(matches!(d, Decoder::Nats(ref buf) if buf.is_empty()));
    }

    #[test]
    fn plaza_pushes_and_error_replies_are_told_apart() {
        let p = crate::spec::payload(5, 1, 40);
        let mut d = Decoder::new(Target::Plaza);
        let got = events(
            &mut d,
            &[
                &format!(r#"{{"push":"pub","room":"r","offset":3,"data":"{p}"}}"#),
                r#"{"id":9,"ok":{"epoch":"e","offset":3}}"#,
                r#"{"id":9,"error":{"code":112,"message":"slow down","temporary":true}}"#,
            ],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Event::Delivery(5, 1));
        assert!(matches!(got[1], Event::Error(_)));
    }

    #[test]
    fn socketio_events_and_pings_are_recognised() {
        let p = crate::spec::payload(8, 2, 40);
        let mut d = Decoder::new(Target::Socketio);
        let got = events(&mut d, &["2", &format!(r#"42["m","{p}"]"#)]);
        assert_eq!(
            got,
            vec![Event::Respond(Message::text("3")), Event::Delivery(8, 2)]
        );
    }

    #[test]
    fn pusher_events_pings_and_errors_are_recognised() {
        let p = crate::spec::payload(11, 4, 40);
        let mut d = Decoder::new(Target::Sockudo);
        let got = events(
            &mut d,
            &[
                &format!(r#"{{"event":"m","channel":"private-fan.all","data":"{p}"}}"#),
                r#"{"event":"pusher:ping","data":{}}"#,
                r#"{"event":"pusher:error","data":{"code":4301,"message":"over quota"}}"#,
            ],
        );
        assert_eq!(got[0], Event::Delivery(11, 4));
        assert_eq!(got[1], Event::Respond(Message::text(PUSHER_PONG)));
        assert!(matches!(got[2], Event::Error(_)));
    }
}
