//! Every kind of bad input gets its documented error reply or close code, and the edge keeps
//! serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use plaza_edge::auth::Capability;
use plaza_proto::{CloseCode, ErrorCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A bystander that must still be served after each bad client.
async fn bystander_still_works(edge: std::net::SocketAddr) {
    let (mut c, _) = Client::connected(edge, "bystander").await;
    c.subscribe("chat:bystander").await;
    c.publish("chat:bystander", json!("still here")).await;
    assert_eq!(publication(c.next_push().await).1, json!("still here"));
}

async fn assert_closed_with(c: &mut Client, code: CloseCode) -> Closed {
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(code.code()), "{closed:?}");
    let push = closed
        .disconnect
        .as_ref()
        .expect("a disconnect push precedes the close");
    assert_eq!(push.code, code);
    assert_eq!(push.reconnect, code.reconnect());
    closed
}

#[tokio::test]
async fn frames_that_are_not_commands_close_with_bad_request() {
    let edge = start_default().await;
    let bad = [
        "{not json",
        "[1,2,3]",
        "\"text\"",
        "17",
        r#"{"op":"ping"}"#,
        r#"{"id":"7","op":"ping"}"#,
        r#"{"id":1,"id":2,"op":"ping"}"#,
        r#"{"id":0,"op":"ping"}"#,
    ];
    for text in bad {
        let (mut c, _) = Client::connected(edge.local_addr(), "bad").await;
        c.send_text(text).await;
        let closed = assert_closed_with(&mut c, CloseCode::BadRequest).await;
        assert!(
            !closed.disconnect.unwrap().reason.is_empty(),
            "{text}: reason given"
        );
    }
    let (mut c, _) = Client::connected(edge.local_addr(), "bin").await;
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_closed_with(&mut c, CloseCode::BadRequest).await;
    bystander_still_works(edge.local_addr()).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_commands_get_error_replies_and_the_connection_stays() {
    let edge = start_default().await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    let cases = [
        (json!({"op": "fly"}), ErrorCode::UnknownOp),
        (json!({}), ErrorCode::BadRequest),
        (json!({"op": "subscribe"}), ErrorCode::BadRequest),
        (
            json!({"op": "subscribe", "room": "has space"}),
            ErrorCode::InvalidRoom,
        ),
        (
            json!({"op": "subscribe", "room": ""}),
            ErrorCode::InvalidRoom,
        ),
        (
            json!({"op": "subscribe", "room": "x".repeat(256)}),
            ErrorCode::InvalidRoom,
        ),
        (
            json!({"op": "subscribe", "room": "chat:a", "recover": {"epoch": 1}}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"op": "publish", "room": "chat:a"}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"op": "connect", "token": token("ann")}),
            ErrorCode::AlreadyConnected,
        ),
        (
            json!({"op": "subscribe", "room": "secret:a"}),
            ErrorCode::PermissionDenied,
        ),
        (
            json!({"op": "presence", "room": "secret:a"}),
            ErrorCode::PermissionDenied,
        ),
        (
            json!({"op": "history", "room": "secret:a"}),
            ErrorCode::PermissionDenied,
        ),
        (
            json!({"op": "unsubscribe", "room": "chat:a"}),
            ErrorCode::NotSubscribed,
        ),
        (
            json!({"op": "publish", "room": "chat:a", "data": 1}),
            ErrorCode::NotSubscribed,
        ),
        (
            json!({"op": "presence", "room": "nopres:a"}),
            ErrorCode::PresenceDisabled,
        ),
        (
            json!({"op": "refresh", "token": "garbage"}),
            ErrorCode::InvalidToken,
        ),
        (
            json!({"op": "refresh", "token": token("mallory")}),
            ErrorCode::WrongUser,
        ),
    ];
    for (cmd, want) in cases {
        let e = c.err(cmd.clone()).await;
        assert_eq!(e.code, want, "{cmd}: {e:?}");
        assert!(!e.message.is_empty());
    }
    c.subscribe("chat:a").await;
    assert_eq!(
        c.err(json!({"op": "subscribe", "room": "chat:a"}))
            .await
            .code,
        ErrorCode::AlreadySubscribed
    );
    c.subscribe("server:a").await;
    assert_eq!(
        c.err(json!({"op": "publish", "room": "server:a", "data": 1}))
            .await
            .code,
        ErrorCode::PublishDisabled
    );
    c.subscribe("tiny:a").await;
    let e = c
        .err(json!({"op": "publish", "room": "tiny:a", "data": "x".repeat(100)}))
        .await;
    assert_eq!(e.code, ErrorCode::MessageTooLarge);
    assert!(e.message.contains("64"), "{}", e.message);
    let e = c
        .err(json!({"op": "subscribe", "room": "nopres:a", "presence": true}))
        .await;
    assert_eq!(e.code, ErrorCode::PresenceDisabled);
    // Still connected and working.
    c.publish("chat:a", json!("fine")).await;
    assert_eq!(publication(c.next_push().await).1, json!("fine"));
    edge.shutdown().await;
}

#[tokio::test]
async fn publishing_to_a_room_the_token_does_not_allow_is_denied() {
    let edge = start_default().await;
    let read_only = token_with(
        "ro",
        vec![("news:*".into(), vec![Capability::Subscribe])],
        Some(Duration::from_secs(60)),
    );
    let mut c = Client::open(edge.local_addr()).await;
    c.connect(&read_only).await;
    c.subscribe("news:today").await;
    let e = c
        .err(json!({"op": "publish", "room": "news:today", "data": 1}))
        .await;
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let e = c
        .err(json!({"op": "subscribe", "room": "news:x", "presence": true}))
        .await;
    assert_eq!(
        e.code,
        ErrorCode::PermissionDenied,
        "presence needs its own capability"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn commands_before_connect_are_refused_until_connect() {
    let edge = start_default().await;
    let mut c = Client::open(edge.local_addr()).await;
    for cmd in [
        json!({"op": "subscribe", "room": "chat:a"}),
        json!({"op": "ping"}),
        json!({"op": "publish", "room": "chat:a", "data": 1}),
    ] {
        assert_eq!(c.err(cmd).await.code, ErrorCode::NotConnected);
    }
    c.connect(&token("ann")).await;
    c.subscribe("chat:a").await;
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_get_an_error_reply_then_the_matching_close() {
    let edge = start_default().await;
    let wrong_sig = {
        let spec = plaza_edge::auth::TokenSpec {
            user: "ann".into(),
            rooms: vec![],
            ttl: Some(Duration::from_secs(60)),
            info: None,
        };
        plaza_edge::auth::mint(b"some-other-secret-some-other-secret", "plaza", &spec).unwrap()
    };
    let expired = {
        let body = json!({"sub": "ann", "exp": plaza_edge::auth::unix_now() - 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &body,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        (wrong_sig, ErrorCode::InvalidToken, CloseCode::InvalidToken),
        (
            "not.a.jwt".to_owned(),
            ErrorCode::InvalidToken,
            CloseCode::InvalidToken,
        ),
        (expired, ErrorCode::TokenExpired, CloseCode::TokenExpired),
    ];
    for (tok, err, close) in cases {
        let mut c = Client::open(edge.local_addr()).await;
        c.send_text(&json!({"id": 1, "op": "connect", "token": tok}).to_string())
            .await;
        let closed = assert_closed_with(&mut c, close).await;
        assert_eq!(closed.errors.len(), 1, "{closed:?}");
        assert_eq!(closed.errors[0].code, err);
    }
    let mut c = Client::open(edge.local_addr()).await;
    c.send_text(r#"{"id":1,"op":"connect"}"#).await;
    let closed = assert_closed_with(&mut c, CloseCode::InvalidToken).await;
    assert_eq!(
        closed.errors[0].code,
        ErrorCode::InvalidToken,
        "a missing token is an invalid token"
    );
    bystander_still_works(edge.local_addr()).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_message_too_large() {
    let mut config = config();
    config.client.max_frame_bytes = 1024;
    config.client.outbound_queue_bytes = 64 * 1024;
    let edge = start(config).await;
    let (mut c, _) = Client::connected(edge.local_addr(), "big").await;
    let frame = json!({"id": 2, "op": "ping", "pad": "x".repeat(2000)}).to_string();
    c.send_text(&frame).await;
    let closed = c.closed().await;
    assert_eq!(
        closed.code,
        Some(CloseCode::MessageTooLarge.code()),
        "{closed:?}"
    );
    bystander_still_works(edge.local_addr()).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_sends_connect_is_closed_after_the_connect_timeout() {
    let mut config = config();
    config.client.connect_timeout = Duration::from_millis(300);
    let edge = start(config).await;
    let mut c = Client::open(edge.local_addr()).await;
    let started = std::time::Instant::now();
    assert_closed_with(&mut c, CloseCode::ConnectTimeout).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (_, metrics) = http_get(edge.local_addr(), "/metrics").await;
    assert!(
        metrics.contains("plaza_disconnects_total{code=\"connect_timeout\"}"),
        "connect timeouts are counted"
    );
    bystander_still_works(edge.local_addr()).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_as_a_slow_consumer_without_hurting_others() {
    let mut config = config();
    config.client.max_frame_bytes = 4096;
    config.client.outbound_queue_bytes = 16 * 1024;
    config.client.write_buffer_bytes = 4096;
    // The healthy publisher floods on purpose (up to 30 MB): this test is about the reader.
    config.limits.publish_bytes_per_second_per_user = 0;
    let edge = start(config).await;
    let addr = edge.local_addr();

    // A client with a tiny receive buffer that subscribes and then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), stream)
        .await
        .unwrap();
    let mut slow = ClientWrap::new(ws);
    slow.call(json!({"id": 1, "op": "connect", "token": token("slow")}))
        .await;
    slow.call(json!({"id": 2, "op": "subscribe", "room": "chat:firehose"}))
        .await;

    let (mut healthy, _) = Client::connected(addr, "healthy").await;
    healthy
        .ok(json!({"op": "subscribe", "room": "chat:firehose", "presence": true}))
        .await;
    let _own_join = healthy.next_push().await;
    let payload = "y".repeat(3000);
    let mut cut = false;
    for n in 0..10_000 {
        healthy
            .publish("chat:firehose", json!({"n": n, "pad": payload}))
            .await;
        loop {
            match healthy.next_push().await {
                plaza_proto::Push::Pub(p) => {
                    let v: serde_json::Value = serde_json::from_str(p.data.as_str()).unwrap();
                    assert_eq!(
                        v["n"],
                        json!(n),
                        "the healthy client gets every publication in order"
                    );
                    break;
                }
                plaza_proto::Push::Leave(l) => {
                    assert_eq!(l.member.user.as_str(), "slow");
                    cut = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if cut {
            break;
        }
    }
    assert!(cut, "the slow client was never disconnected");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("plaza_slow_consumer_disconnects_total"),
        "metric present"
    );
    edge.shutdown().await;
}

/// A raw client on a caller-made socket (for the slow-consumer test).
struct ClientWrap {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl ClientWrap {
    fn new(ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Self {
        Self { ws }
    }

    async fn call(&mut self, frame: serde_json::Value) {
        use futures_util::{SinkExt, StreamExt};
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(reply.to_text().unwrap().contains("\"ok\""), "{reply:?}");
    }
}
