//! The lean WebSocket layer (`client.websocket = "lean"`) with permessage-deflate, against a
//! real edge over a raw socket: negotiation, compressed client commands, publications sent
//! compressed, and the inflation bound.

mod common;

use std::net::SocketAddr;

use plaza_edge::ws::deflate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{WAIT, config, start, token};

/// A minimal client: masked frames out, whole frames in.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A received frame: RSV1, opcode, payload (inflated if RSV1).
struct Frame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Raw {
    async fn open(addr: SocketAddr, extensions: Option<&str>) -> (Self, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: plaza.v1\r\n{ext}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                buf.drain(..end + 4);
                break head;
            }
        };
        assert!(head.starts_with("http/1.1 101"), "{head}");
        (Self { tcp, buf }, head)
    }

    async fn send(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&out).await.unwrap();
    }

    async fn send_json(&mut self, value: &Value, compressed: bool) {
        let text = value.to_string();
        if compressed {
            self.send(0x1, true, &deflate::compress(text.as_bytes()))
                .await;
        } else {
            self.send(0x1, false, text.as_bytes()).await;
        }
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 2 {
                let (len, hl) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(a) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                if len != usize::MAX && self.buf.len() >= hl + len {
                    let rsv1 = self.buf[0] & 0x40 != 0;
                    let opcode = self.buf[0] & 0x0F;
                    let mut payload: Vec<u8> = self.buf.drain(..hl + len).skip(hl).collect();
                    if rsv1 {
                        payload = deflate::inflate(&payload, 1 << 20).unwrap();
                    }
                    return Frame {
                        rsv1,
                        opcode,
                        payload,
                    };
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame as JSON, skipping pings.
    async fn json(&mut self) -> (bool, Value) {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x1 {
                return (f.rsv1, serde_json::from_slice(&f.payload).unwrap());
            }
            assert_eq!(f.opcode, 0x9, "unexpected frame {}", f.opcode);
        }
    }

    /// The code of the close frame that ends the connection.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

fn lean_config(deflate: bool) -> plaza_edge::config::EdgeConfig {
    let mut c = config();
    c.client.websocket = plaza_edge::config::WebSocketImpl::Lean;
    c.client.permessage_deflate = deflate;
    c
}

#[tokio::test]
async fn compressed_commands_are_answered_and_publications_arrive_compressed() {
    let edge = start(lean_config(true)).await;
    let offer = "permessage-deflate; client_max_window_bits";
    let (mut c, head) = Raw::open(edge.local_addr(), Some(offer)).await;
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ),
        "{head}"
    );
    assert!(head.contains("sec-websocket-protocol: plaza.v1"), "{head}");
    c.send_json(
        &json!({"id": 1, "op": "connect", "token": token("ann")}),
        true,
    )
    .await;
    let (_, reply) = c.json().await;
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    c.send_json(
        &json!({"id": 2, "op": "subscribe", "room": "chat:lean"}),
        true,
    )
    .await;
    assert_eq!(c.json().await.1["id"], 2);
    let text = "a chat message that repeats itself, ".repeat(28);
    c.send_json(
        &json!({"id": 3, "op": "publish", "room": "chat:lean", "data": {"text": text}}),
        false,
    )
    .await;
    let mut push = None;
    for _ in 0..2 {
        let (rsv1, v) = c.json().await;
        if v.get("id").is_none() {
            push = Some((rsv1, v));
        }
    }
    let (rsv1, push) = push.expect("the publication arrives");
    assert!(rsv1, "a 1 KiB publication is sent compressed");
    assert_eq!(push.to_string().matches(&text).count(), 1, "{push}");
}

#[tokio::test]
async fn an_inflated_message_over_the_frame_limit_closes_with_4503() {
    let edge = start(lean_config(true)).await;
    let (mut c, _) = Raw::open(edge.local_addr(), Some("permessage-deflate")).await;
    let bomb = deflate::compress(&vec![b' '; 1 << 20]);
    assert!(
        bomb.len() < 64 * 1024,
        "the compressed frame is under the frame limit"
    );
    c.send(0x1, true, &bomb).await;
    assert_eq!(c.close_code().await, 4503);
}

#[tokio::test]
async fn without_the_option_no_extension_is_negotiated_and_rsv1_is_refused() {
    let edge = start(lean_config(false)).await;
    let (mut c, head) = Raw::open(edge.local_addr(), Some("permessage-deflate")).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    c.send(0x1, true, &deflate::compress(b"{}")).await;
    let code = c.close_code().await;
    assert!((4000..5000).contains(&code), "{code}");
}
