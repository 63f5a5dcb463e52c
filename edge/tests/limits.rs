//! Every limit is enforced, answered with its documented code, and counted in `/metrics`.

mod common;

use std::net::SocketAddr;

use common::*;
use plaza_proto::{CloseCode, ErrorCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};

/// Opens a WebSocket with extra handshake headers; returns the HTTP status on refusal.
async fn handshake(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<(), u16> {
    let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed oddly: {e}"),
    }
}

async fn limit_hits(addr: SocketAddr, limit: &str) -> u64 {
    let (_, body) = http_get(addr, "/metrics").await;
    let prefix = format!("plaza_limit_hits_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn commands_over_the_rate_are_refused_and_a_flood_is_disconnected() {
    let mut config = config();
    config.limits.commands_per_second = 2;
    config.limits.command_burst = 5;
    config.limits.flood_disconnect_after = 20;
    let edge = start(config).await;
    let (mut c, _) = Client::connected(edge.local_addr(), "fast").await;
    let mut refused = 0;
    for _ in 0..10 {
        match c.call(json!({"op": "ping"})).await.result {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited);
                assert!(e.temporary);
                refused += 1;
            }
        }
    }
    assert!(refused >= 4, "only {refused} of 10 refused");
    for n in 100..140 {
        c.send_text(&json!({"id": n, "op": "ping"}).to_string())
            .await;
    }
    let closed = c.closed().await;
    assert_eq!(
        closed.code,
        Some(CloseCode::RateLimited.code()),
        "{closed:?}"
    );
    assert!(limit_hits(edge.local_addr(), "commands_per_second").await >= 20);
    // Others are unaffected.
    let (mut other, _) = Client::connected(edge.local_addr(), "calm").await;
    assert_eq!(other.ok(json!({"op": "ping"})).await, json!({}));
    edge.shutdown().await;
}

#[tokio::test]
async fn new_connections_per_ip_are_limited_and_forwarding_headers_count_only_from_trusted_proxies()
{
    let mut config = config();
    config.limits.connections_per_second_per_ip = 1;
    config.limits.connection_burst_per_ip = 3;
    config.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    config.http.cf_connecting_ip = true;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        handshake(addr, &from("203.0.113.1")).await.unwrap();
    }
    assert_eq!(handshake(addr, &from("203.0.113.1")).await, Err(429));
    // Another client behind the same (trusted) proxy has its own budget.
    handshake(addr, &from("203.0.113.2")).await.unwrap();
    handshake(addr, &[("cf-connecting-ip", "198.51.100.9")])
        .await
        .unwrap();
    assert!(limit_hits(addr, "connections_per_ip").await >= 1);
    edge.shutdown().await;

    // When the peer is not a trusted proxy, spoofed headers are ignored: all share one budget.
    let mut config = common::config();
    config.limits.connections_per_second_per_ip = 1;
    config.limits.connection_burst_per_ip = 3;
    config.http.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let edge = start(config).await;
    let spoofs = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
    let mut results = Vec::new();
    for ip in spoofs {
        results.push(handshake(edge.local_addr(), &[("x-forwarded-for", ip)]).await);
    }
    assert_eq!(results.last(), Some(&Err(429)), "{results:?}");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_user_over_the_connection_limit_is_refused_with_4008() {
    let mut config = config();
    config.limits.connections_per_user = 2;
    let edge = start(config).await;
    let (_a, _) = Client::connected(edge.local_addr(), "ann").await;
    let (b, _) = Client::connected(edge.local_addr(), "ann").await;
    let mut third = Client::open(edge.local_addr()).await;
    third
        .send_text(&json!({"id": 1, "op": "connect", "token": token("ann")}).to_string())
        .await;
    let closed = third.closed().await;
    assert_eq!(
        closed.errors.first().map(|e| e.code),
        Some(ErrorCode::LimitExceeded)
    );
    assert_eq!(
        closed.code,
        Some(CloseCode::TooManyConnections.code()),
        "{closed:?}"
    );
    // Other users are unaffected, and a freed slot can be reused.
    let (_bob, _) = Client::connected(edge.local_addr(), "bob").await;
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_again, _) = Client::connected(edge.local_addr(), "ann").await;
    assert!(limit_hits(edge.local_addr(), "connections_per_user").await >= 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn browser_origins_outside_the_allowlist_get_403_before_the_upgrade() {
    let mut config = config();
    config.http.allowed_origins = vec![
        "https://app.example.com".into(),
        "https://*.example.org".into(),
    ];
    let edge = start(config).await;
    let addr = edge.local_addr();
    handshake(addr, &[("origin", "https://app.example.com")])
        .await
        .unwrap();
    handshake(addr, &[("origin", "https://tenant.example.org")])
        .await
        .unwrap();
    handshake(addr, &[]).await.unwrap();
    assert_eq!(
        handshake(addr, &[("origin", "https://evil.test")]).await,
        Err(403)
    );
    assert_eq!(
        handshake(addr, &[("origin", "https://example.org")]).await,
        Err(403)
    );
    assert_eq!(
        handshake(addr, &[("origin", "http://app.example.com")]).await,
        Err(403)
    );
    assert!(limit_hits(addr, "origin").await >= 3);
    edge.shutdown().await;
}

#[tokio::test]
async fn rooms_per_connection_and_message_size_limits_answer_with_errors() {
    let mut config = config();
    config.client.max_rooms = 2;
    let edge = start(config).await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    c.subscribe("chat:1").await;
    c.subscribe("chat:2").await;
    let e = c.err(json!({"op": "subscribe", "room": "chat:3"})).await;
    assert_eq!(e.code, ErrorCode::LimitExceeded);
    c.ok(json!({"op": "unsubscribe", "room": "chat:2"})).await;
    c.subscribe("chat:3").await;
    c.ok(json!({"op": "unsubscribe", "room": "chat:3"})).await;
    c.subscribe("tiny:x").await;
    let e = c
        .err(json!({"op": "publish", "room": "tiny:x", "data": "z".repeat(200)}))
        .await;
    assert_eq!(e.code, ErrorCode::MessageTooLarge);
    assert!(limit_hits(edge.local_addr(), "rooms_per_connection").await >= 1);
    assert!(limit_hits(edge.local_addr(), "message_bytes").await >= 1);
    edge.shutdown().await;
}

/// Finding 9 of the hostile-client review: one user with a wildcard publish grant could make the
/// broker tier keep unbounded state (history in ever new rooms, idempotency keys) at the rate of
/// all its connections' commands. Publication bytes are now budgeted per user across all of its
/// connections on the edge; other users are unaffected.
#[tokio::test]
async fn one_user_cannot_publish_past_its_byte_budget_across_its_connections() {
    let mut config = config();
    config.limits.publish_bytes_per_second_per_user = 20_000;
    config.limits.publish_burst_bytes_per_user = 80_000;
    config
        .validate()
        .expect("a burst above the largest publication is valid");
    let edge = start(config.clone()).await;
    let addr = edge.local_addr();
    let (mut a, _) = Client::connected(addr, "ann").await;
    let (mut b, _) = Client::connected(addr, "ann").await;
    let (mut bob, _) = Client::connected(addr, "bob").await;
    let big = "x".repeat(30_000);
    for (i, c) in [&mut a, &mut b, &mut bob].into_iter().enumerate() {
        c.subscribe(&format!("chat:spray-{i}")).await;
    }
    a.ok(json!({"op": "publish", "room": "chat:spray-0", "data": big}))
        .await;
    b.ok(json!({"op": "publish", "room": "chat:spray-1", "data": big}))
        .await;
    // The third 30 KB publication of the same user, from either connection, is over budget.
    for (c, room) in [(&mut a, "chat:spray-0"), (&mut b, "chat:spray-1")] {
        let e = c
            .err(json!({"op": "publish", "room": room, "data": big}))
            .await;
        assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
        assert!(e.temporary);
        assert!(e.message.contains("publish budget"), "{e:?}");
    }
    // Another user has a budget of its own.
    bob.ok(json!({"op": "publish", "room": "chat:spray-2", "data": big}))
        .await;
    // Refusals published nothing: the room's history holds only the accepted publication.
    let history = a
        .ok(json!({"op": "history", "room": "chat:spray-0", "limit": 10}))
        .await;
    assert_eq!(
        history["publications"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    // The budget refills at its rate.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    a.ok(json!({"op": "publish", "room": "chat:spray-0", "data": big}))
        .await;
    assert!(limit_hits(addr, "publish_bytes_per_user").await >= 2);
    edge.shutdown().await;

    config.limits.publish_burst_bytes_per_user = 60_000;
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("limits.publish_burst_bytes_per_user"), "{e}");
}
