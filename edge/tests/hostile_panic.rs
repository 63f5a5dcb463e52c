//! Hostile input, finding 2: a handler that panics must not leave a zombie session behind.
//! Before the fix a panic inside a command (reproduced with `"idem": "a\nb"` on the NATS
//! backend, see `cluster-tests/tests/nats_edges.rs`) killed the session task without cleanup:
//! the socket kept receiving publications after its token expired, its presence member stayed,
//! `plaza_connections` was never decremented, and the API task died with the connection.
//! Here a broker tier with a deliberate bug (`publish` panics in namespace `boom`) stands in for
//! any such bug. One test per binary: the metrics recorder is process-wide.

mod common;

use std::time::Duration;

use common::faulty::Flaky;
use common::{Client, WAIT, config, metric, token, token_with};
use plaza_backend::memory::MemoryBackend;
use plaza_edge::auth::Capability;
use plaza_proto::{CloseCode, Push};
use serde_json::json;

#[tokio::test]
async fn a_panicking_command_handler_leaves_no_zombie_session() {
    let mut config = config();
    config.api.keys = vec![plaza_edge::config::Secret(
        "panic-test-api-key-0123456789".into(),
    )];
    let backend = Flaky(MemoryBackend::new(config.rooms.clone()));
    let edge = plaza_edge::start(config, backend, None).await.unwrap();
    let addr = edge.local_addr();

    // Bob watches the room's presence; the victim joins it and a `boom` room.
    let mut bob = Client::open(addr).await;
    bob.connect(&token("bob")).await;
    bob.ok(json!({"op": "subscribe", "room": "chat:panic", "presence": true}))
        .await;
    let mut victim = Client::open(addr).await;
    victim.connect(&victim_token()).await;
    victim.subscribe("chat:panic").await;
    victim.subscribe("boom:x").await;
    loop {
        match bob.next_push().await {
            Push::Join(j) if j.member.user.as_str() == "victim" => break,
            Push::Join(_) => {} // bob's own
            other => panic!("expected the victim's join, got {other:?}"),
        }
    }
    assert_eq!(metric(addr, "plaza_connections").await, 2.0);

    // The handler panics: the client is closed with 4003 (reconnectable), not left hanging.
    victim
        .send_text(r#"{"id": 99, "op": "publish", "room": "boom:x", "data": 1}"#)
        .await;
    let closed = victim.closed().await;
    assert_eq!(
        closed.code,
        Some(CloseCode::ServerError.code()),
        "{closed:?}"
    );

    // Its presence is released, it is no longer counted, and it receives nothing more.
    match bob.next_push().await {
        Push::Leave(l) => assert_eq!(l.member.user.as_str(), "victim"),
        other => panic!("expected the victim's leave, got {other:?}"),
    }
    let members = bob
        .ok(json!({"op": "presence", "room": "chat:panic"}))
        .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(addr, "plaza_connections").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection gauge not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(addr, r#"plaza_handler_panics_total{stage="command"}"#).await,
        1.0
    );
    bob.publish("chat:panic", json!("after the panic")).await;

    // The server API's handler panics too: a JSON 500, and the edge keeps serving.
    let (status, body) = api_post(
        addr,
        "panic-test-api-key-0123456789",
        r#"{"room": "boom:x", "data": 1}"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(r#""code":"internal""#), "{body}");
    assert_eq!(
        metric(addr, r#"plaza_handler_panics_total{stage="api"}"#).await,
        1.0
    );
    let mut again = Client::open(addr).await;
    again.connect(&victim_token()).await;
    again.subscribe("chat:panic").await;
    edge.shutdown().await;
}

/// Every capability on `chat:*` and `boom:*`.
fn victim_token() -> String {
    let all = vec![
        Capability::Subscribe,
        Capability::Publish,
        Capability::Presence,
    ];
    let rooms = ["chat:*", "boom:*"]
        .iter()
        .map(|p| (p.to_string(), all.clone()))
        .collect();
    token_with("victim", rooms, Some(Duration::from_secs(3600)))
}

/// `POST /v1/api/publish` with `body`; returns the status and the body.
async fn api_post(addr: std::net::SocketAddr, key: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/api/publish HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("an answer")
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}
