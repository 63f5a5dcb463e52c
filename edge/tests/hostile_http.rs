//! Hostile input, finding 6: the HTTP listener had no request-head timeout (slowloris) and the
//! only per-IP limit needed a whole request head. Now a head must arrive within
//! `http.header_read_timeout`, and one address may hold at most `limits.max_connections_per_ip`
//! sockets, counted at accept. Finding 11: `/metrics` was served to whoever a proxy forwarded.

mod common;

use std::time::{Duration, Instant};

use common::{config, http_get, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server has closed `tcp` (EOF or reset) within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // an error response: keep reading until the close
        }
    }
}

#[tokio::test]
async fn a_slowloris_request_head_is_cut_at_the_header_timeout() {
    let mut c = config();
    c.http.header_read_timeout = Duration::from_secs(1);
    let edge = start(c).await;
    let mut tcp = TcpStream::connect(edge.local_addr()).await.unwrap();
    tcp.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header line every 300 ms: the head is never complete.
    let trickle = async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tcp
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), trickle)
        .await
        .ok();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(1)).await,
        "a trickled request head was still open after 3 s (header timeout 1 s)"
    );
    // An idle keep-alive connection is cut the same way, and real requests still work.
    let mut idle = TcpStream::connect(edge.local_addr()).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert_eq!(http_get(edge.local_addr(), "/healthz").await.0, 200);
    edge.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_sockets() {
    let mut c = config();
    c.limits.max_connections_per_ip = 5;
    let edge = start(c).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(edge.local_addr()).await.unwrap());
    }
    // Give the edge a moment to accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(edge.local_addr()).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a sixth idle socket from the same address was kept"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_get(edge.local_addr(), "/healthz").await.0, 200);
    edge.shutdown().await;
}

/// Finding 11: a proxy config that forwards every path exposed `/metrics` to the internet. The
/// edge now refuses `/metrics` to any request carrying a proxy's forwarding header (unless
/// `http.metrics_through_proxies`), while a scraper reaching it directly still gets it.
#[tokio::test]
async fn metrics_are_not_served_to_requests_that_came_through_a_proxy() {
    let edge = start(config()).await;
    let addr = edge.local_addr();
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("plaza_connections"), "{body}");
    for header in [
        "X-Forwarded-For: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
        "CF-Connecting-IP: 203.0.113.9",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 404"), "{header}: {response}");
        assert!(
            !response.contains("plaza_connections"),
            "{header}: {response}"
        );
    }
    let (_, body) = http_get(addr, "/metrics").await;
    assert!(
        body.contains("plaza_limit_hits_total{limit=\"metrics_via_proxy\"} 4"),
        "{body}"
    );

    let mut c = config();
    c.http.metrics_through_proxies = true;
    let open = start(c).await;
    let mut tcp = TcpStream::connect(open.local_addr()).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
}
