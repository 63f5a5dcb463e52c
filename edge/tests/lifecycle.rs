//! Connection lifecycle: token refresh and expiry, idle timeout, drain, health endpoints.

mod common;

use std::time::Duration;

use common::*;
use plaza_edge::auth::Capability;
use plaza_proto::{CloseCode, ErrorCode, Push};
use serde_json::json;

#[tokio::test]
async fn an_expiring_token_gets_a_refresh_push_then_a_token_expired_close() {
    let mut config = config();
    config.auth.leeway = Duration::ZERO;
    config.client.refresh_ahead = Duration::from_secs(1);
    let edge = start(config).await;
    let short = token_with(
        "ann",
        vec![("chat:*".into(), vec![Capability::Subscribe])],
        Some(Duration::from_secs(2)),
    );
    let mut c = Client::open(edge.local_addr()).await;
    let ok = c.connect(&short).await;
    assert!(ok.expires_in.is_some_and(|s| s <= 2));
    let Push::Refresh(r) = c.next_push().await else {
        panic!("refresh push")
    };
    assert!(r.expires_in <= 2);
    let closed = c.closed().await;
    assert_eq!(
        closed.code,
        Some(CloseCode::TokenExpired.code()),
        "{closed:?}"
    );
    assert!(closed.disconnect.unwrap().reconnect);
    edge.shutdown().await;
}

#[tokio::test]
async fn refreshing_extends_the_connection_and_revokes_rooms_no_longer_allowed() {
    let mut config = config();
    config.auth.leeway = Duration::ZERO;
    config.client.refresh_ahead = Duration::from_secs(1);
    let edge = start(config).await;
    let all = vec![
        Capability::Subscribe,
        Capability::Publish,
        Capability::Presence,
    ];
    let first = token_with(
        "ann",
        vec![("chat:*".into(), all.clone())],
        Some(Duration::from_secs(2)),
    );
    let mut c = Client::open(edge.local_addr()).await;
    c.connect(&first).await;
    c.subscribe("chat:keep").await;
    c.subscribe("chat:drop").await;
    let Push::Refresh(_) = c.next_push().await else {
        panic!("refresh push")
    };
    let narrower = token_with(
        "ann",
        vec![("chat:keep".into(), all)],
        Some(Duration::from_secs(3600)),
    );
    let ok = c.ok(json!({"op": "refresh", "token": narrower})).await;
    assert!(ok["expires_in"].as_u64().unwrap() > 3500);
    let Push::Unsubscribed(u) = c.next_push().await else {
        panic!("unsubscribed push")
    };
    assert_eq!(
        (u.room.as_str(), u.code),
        ("chat:drop", ErrorCode::PermissionDenied)
    );
    // Past the first token's expiry the connection lives on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.publish("chat:keep", json!("alive")).await;
    assert_eq!(publication(c.next_push().await).1, json!("alive"));
    assert_eq!(
        c.err(json!({"op": "publish", "room": "chat:drop", "data": 1}))
            .await
            .code,
        ErrorCode::NotSubscribed
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_that_answers_nothing_is_closed_after_the_idle_timeout() {
    let mut config = config();
    config.client.ping_interval = Duration::from_millis(200);
    config.client.idle_timeout = Duration::from_millis(600);
    let edge = start(config).await;
    // Connect, then stop reading: no pongs go back, so the edge sees silence.
    let (mut c, _) = Client::connected(edge.local_addr(), "quiet").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Reading now makes the client answer the queued pings on a socket the edge already
    // closed, which can reset it before the close frame is read; the edge's count is exact.
    let _ = c.closed().await;
    let (_, metrics) = http_get(edge.local_addr(), "/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("plaza_disconnects_total{code=\"idle_timeout\"}")
                && !l.ends_with(" 0")
        ),
        "no idle-timeout disconnect counted:\n{metrics}"
    );
    // A client that keeps reading (and so answers pings) stays.
    let (mut live, _) = Client::connected(edge.local_addr(), "live").await;
    live.expect_silence(Duration::from_millis(1200)).await;
    assert_eq!(live.ok(json!({"op": "ping"})).await, json!({}));
    edge.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints_answer() {
    let edge = start_default().await;
    let addr = edge.local_addr();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let (mut c, _) = Client::connected(addr, "ann").await;
    c.subscribe("chat:m").await;
    c.publish("chat:m", json!(1)).await;
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "plaza_connections",
        "plaza_commands_total",
        "plaza_publications_in_total",
        "plaza_broker_call_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(
        http_get(addr, "/").await.0,
        404,
        "no demo page outside dev mode"
    );
    assert_eq!(
        http_get(addr, "/dev/token?user=x").await.0,
        404,
        "no dev tokens outside dev mode"
    );
    let (status, _) = http_get(addr, "/v1/ws").await;
    assert!(
        status >= 400,
        "a plain GET on /v1/ws is not an upgrade: {status}"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn draining_disconnects_clients_with_a_reconnectable_code_and_refuses_new_ones() {
    let edge = start_default().await;
    let addr = edge.local_addr();
    let mut clients = Vec::new();
    for i in 0..5 {
        let (mut c, _) = Client::connected(addr, &format!("u{i}")).await;
        c.subscribe("chat:drain").await;
        clients.push(c);
    }
    edge.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    for c in &mut clients {
        let closed = c.closed().await;
        assert_eq!(closed.code, Some(CloseCode::Shutdown.code()), "{closed:?}");
        assert!(closed.disconnect.unwrap().reconnect);
    }
    edge.wait().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the drain"
    );
}

/// `connect` moves a connection's earliest deadline later (from the connect timeout to the next
/// ping): the timer entry for the old one wakes the session once, and it must then ask for the
/// new one — a connection idle past its connect timeout still gets its pings and its turn in a
/// drain.
#[tokio::test]
async fn a_quiet_connection_keeps_its_deadlines_after_connect_moves_them_later() {
    let mut config = config();
    config.client.connect_timeout = Duration::from_millis(200);
    config.client.ping_interval = Duration::from_millis(700);
    let edge = start(config).await;
    let (mut c, _) = Client::connected(edge.local_addr(), "quiet").await;
    c.subscribe("chat:quiet").await;
    // Past the connect timeout's entry and the first ping: the client answers it (reading).
    c.expect_silence(Duration::from_millis(1000)).await;
    edge.begin_shutdown();
    let closed = tokio::time::timeout(WAIT, c.closed())
        .await
        .expect("a quiet connection is closed by the drain");
    assert_eq!(closed.code, Some(CloseCode::Shutdown.code()), "{closed:?}");
    edge.wait().await;
}

#[tokio::test]
async fn a_token_expiring_in_the_far_future_connects_without_deadline_overflow() {
    let edge = start_default().await;
    let body =
        json!({"sub": "ann", "exp": u64::MAX, "plaza": {"rooms": {"chat:*": ["subscribe"]}}});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let t = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &body, &key).unwrap();
    let mut c = Client::open(edge.local_addr()).await;
    c.connect(&t).await;
    c.subscribe("chat:far").await;
    assert_eq!(c.ok(json!({"op": "ping"})).await, json!({}));
    edge.shutdown().await;
}

#[tokio::test]
async fn a_history_reply_larger_than_the_outbound_queue_is_delivered() {
    let mut config = config();
    config.client.outbound_queue_bytes = 256 * 1024;
    let edge = start(config).await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    let first = c.subscribe("chat:big").await;
    let big = "x".repeat(60_000);
    for n in 0..10 {
        c.publish("chat:big", json!({"n": n, "pad": big})).await;
        let _ = c.next_push().await;
    }
    let h = c.ok(json!({"op": "history", "room": "chat:big"})).await;
    assert_eq!(
        h["publications"].as_array().unwrap().len(),
        10,
        "600 KB reply through a 256 KiB queue"
    );
    let (mut late, _) = Client::connected(edge.local_addr(), "bob").await;
    let since = json!({"epoch": first["epoch"], "offset": first["offset"]});
    let ok = late
        .ok(json!({"op": "subscribe", "room": "chat:big", "recover": since}))
        .await;
    assert_eq!(ok["recovered"], json!(true));
    assert_eq!(ok["publications"].as_array().unwrap().len(), 10);
    edge.shutdown().await;
}
