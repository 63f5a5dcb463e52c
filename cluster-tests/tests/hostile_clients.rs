//! Hostile clients against a real `plaza-edge` process (memory backend), one test per finding
//! of the hardening review that needs a whole process to show: memory measured from `/proc`.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use plaza_cluster_tests::ws::Client;
use plaza_cluster_tests::{EdgeProcess, http_get, token};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "hostile-clients-secret-0123456789abcdef";

/// The value of a `/metrics` series (0 if absent).
fn metric(edge: &EdgeProcess, series: &str) -> f64 {
    let (_, body) = http_get(edge.addr, "/metrics").expect("metrics");
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Finding 1: command replies were not bounded. One connection that stopped reading and sent
/// `history` (≈ 6 MB replies from 100 × 60 KB publications) about 45 times a second grew an edge
/// by ≈ 250 MB/s. Now the edge stops reading a connection's commands while more than
/// `client.max_pending_reply_bytes` of its replies are unwritten, caps a reply at
/// `client.max_reply_bytes`, and closes a connection whose replies make no progress for
/// `client.write_timeout` as a slow consumer (4001). The edge's growth stays under 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_history_without_reading_cannot_grow_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PLAZA_CLIENT__WRITE_TIMEOUT", "3s".to_owned())];
    let edge = EdgeProcess::spawn_with_env(
        dir.path(),
        "edge-hostile",
        &[],
        SECRET,
        Duration::from_secs(5),
        &env,
    );
    edge.wait_ready(Duration::from_secs(20));
    let room = "chat:flood";
    // Ten users fill the room (each within its publish byte budget's burst).
    let big = "x".repeat(60_000);
    for u in 0..10 {
        let mut c = Client::connect(&edge.ws_url(), &token(SECRET, &format!("filler-{u}"))).await;
        c.call(json!({"op": "subscribe", "room": room})).await;
        for i in 0..10 {
            let r = c
                .call(json!({"op": "publish", "room": room, "data": {"i": u * 10 + i, "pad": big}}))
                .await;
            assert!(r.get("ok").is_some(), "{r}");
        }
    }
    // The client that must still be served at the end.
    let mut filler = Client::connect(&edge.ws_url(), &token(SECRET, "filler")).await;
    filler.call(json!({"op": "subscribe", "room": room})).await;
    let baseline = edge.process.rss_bytes().expect("rss");

    // The attacker connects, then asks for the whole history 40 times a second for 8 s and
    // never reads a byte.
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url())
        .await
        .unwrap();
    let connect = json!({"id": 1, "op": "connect", "token": token(SECRET, "mallory")});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let started = Instant::now();
    let mut peak = baseline;
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(8) {
        let history = json!({"id": 2 + sent, "op": "history", "room": room, "limit": 100});
        // Once the edge stops reading, a send only fills the socket buffers, then waits.
        if tokio::time::timeout(
            Duration::from_millis(25),
            ws.send(Message::text(history.to_string())),
        )
        .await
        .is_ok()
        {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Some(rss) = edge.process.rss_bytes() {
            peak = peak.max(rss);
        }
    }
    let growth = peak.saturating_sub(baseline);
    println!(
        "history flood: {sent} commands sent in 8 s; edge RSS {} MiB → peak {} MiB (+{} MiB)",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(growth < 64 << 20, "the edge grew by {} MiB", growth >> 20);

    // The attacker was cut as a slow consumer once its replies made no progress for the
    // write timeout; the other client is still served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&edge, "plaza_connections") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the attacker was not disconnected ({} connections open)",
            metric(&edge, "plaza_connections")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(&edge, "plaza_slow_consumer_disconnects_total") >= 1.0,
        "not closed as a slow consumer"
    );
    let r = filler
        .call(json!({"op": "publish", "room": room, "data": "still served"}))
        .await;
    assert!(r.get("ok").is_some(), "{r}");
    drop(ws);
}

/// Finding 1, unauthenticated: a decode error quoted the offending value in full, so a socket
/// without a token could make the edge send back as much as it sent (a 120 KB `limit` came back
/// as a 120 KB error). Error messages and close reasons are now cut to 256 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_error_never_echoes_a_large_value_back() {
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::spawn(dir.path(), "edge-echo", &[], SECRET, Duration::from_secs(5));
    edge.wait_ready(Duration::from_secs(20));
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url())
        .await
        .unwrap();
    let huge = "9".repeat(120_000);
    let frame = format!(r#"{{"id": 1, "op": "history", "room": "chat:x", "limit": "{huge}"}}"#);
    ws.send(Message::text(frame)).await.unwrap();
    let mut received = 0usize;
    use futures_util::StreamExt;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match msg {
            Message::Text(t) => {
                received += t.len();
                assert!(t.len() <= 1024, "a {} byte answer: {}…", t.len(), &t[..200]);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(received > 0, "an error reply was expected");
    println!("sent 120 KB, received {received} bytes");
}
