//! Webhooks against a real receiver (an HTTP server on a loopback port): signed batches in feed
//! order, retries through 500s and redirects without blocking publishing, giving up after the
//! retry window while the feed keeps the events, and failover of the one sender between two
//! edges sharing a broker tier.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use hmac::{Hmac, Mac};
use plaza_backend::memory::MemoryBackend;
use plaza_edge::config::{EdgeConfig, Secret, WebhookEndpoint};
use serde_json::Value;
use sha2::Sha256;

const HOOK_SECRET: &str = "webhook-secret-0123456789";
/// In a receiver's script: answer only after the sender's timeout.
const SLOW: u16 = 0;

/// What the receiver got: one entry per POST.
#[derive(Clone, Debug)]
struct Received {
    timestamp: String,
    signature: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    /// Statuses to answer, in order, before answering 200 forever.
    script: Arc<Mutex<Vec<u16>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver answering `script` first; returns it and its URL.
    async fn start(script: &[u16]) -> (Self, String) {
        let receiver = Self::default();
        *receiver.script.lock().unwrap() = script.iter().rev().copied().collect();
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{addr}/hook"))
    }

    /// Every event delivered with a 2xx answer... and every attempted one: `(id, type, user)`
    /// of each event of each POST, in arrival order.
    fn events(&self) -> Vec<(String, String, String)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e["id"].as_str().unwrap().to_owned(),
                            e["type"].as_str().unwrap().to_owned(),
                            e["user"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn posts(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until some POST carried an event of `kind` for `user`.
    async fn wait_for(&self, kind: &str, user: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.events().iter().any(|(_, t, u)| t == kind && u == user) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} of {user} delivered; got {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    r.got.lock().unwrap().push(Received {
        timestamp: header("plaza-timestamp"),
        signature: header("plaza-signature"),
        body,
    });
    let status = r.script.lock().unwrap().pop().unwrap_or(200);
    if status == SLOW {
        // Longer than the sender's timeout, then a huge garbage body it must not read.
        tokio::time::sleep(Duration::from_secs(3)).await;
        return StatusCode::OK;
    }
    StatusCode::from_u16(status).unwrap()
}

fn hook_config(endpoints: Vec<(&str, String)>) -> EdgeConfig {
    let mut c = config();
    c.api.keys = vec![Secret(API_KEY.into())];
    c.rooms.events.debounce = Duration::from_millis(200);
    c.webhooks.secret = Some(Secret(HOOK_SECRET.into()));
    c.webhooks.lease = Duration::from_millis(900);
    c.webhooks.poll_interval = Duration::from_millis(50);
    c.webhooks.retry_initial = Duration::from_millis(50);
    c.webhooks.retry_max = Duration::from_millis(200);
    c.webhooks.timeout = Duration::from_secs(2);
    c.webhooks.endpoints = endpoints
        .into_iter()
        .map(|(name, url)| WebhookEndpoint {
            name: name.into(),
            url,
            namespaces: Vec::new(),
            types: Vec::new(),
        })
        .collect();
    c
}

/// A user's tab: connected and present in `room` until dropped.
async fn tab(addr: SocketAddr, user: &str, room: &str) -> Client {
    let (mut c, _) = Client::connected(addr, user).await;
    c.subscribe(room).await;
    c
}

/// The sum of a metric's series whose line contains every one of `parts`.
async fn metric_sum(addr: SocketAddr, name: &str, parts: &[&str]) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn verify(secret: &str, r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(r.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    r.signature == format!("v1={hex}")
}

#[tokio::test]
async fn batches_are_signed_and_arrive_in_feed_order_with_stable_ids() {
    let (receiver, url) = Receiver::start(&[]).await;
    let edge = start(hook_config(vec![("in-order", url)])).await;
    let addr = edge.local_addr();
    for user in ["ann", "bob"] {
        drop(tab(addr, user, "chat:hooks").await);
    }
    receiver.wait_for("user.offline", "ann").await;
    receiver.wait_for("user.offline", "bob").await;
    for post in receiver.posts() {
        assert!(verify(HOOK_SECRET, &post), "signature of {post:?}");
        assert!(!verify("another-secret-0123456789", &post));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ts: u64 = post.timestamp.parse().unwrap();
        assert!(ts <= now && now - ts < 60, "a fresh timestamp");
    }
    let got = receiver.events();
    let seqs: Vec<u64> = got
        .iter()
        .map(|(id, _, _)| id.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "feed order: {seqs:?}");
    let mut offline: Vec<&str> = got
        .iter()
        .filter(|(_, t, _)| t == "user.offline")
        .map(|(_, _, u)| u.as_str())
        .collect();
    offline.sort_unstable();
    assert_eq!(offline, ["ann", "bob"], "one offline each");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_through_500s_redirects_and_timeouts_without_blocking_publishing()
 {
    let (receiver, url) = Receiver::start(&[500, 503, 301, SLOW, 500]).await;
    let mut c = hook_config(vec![("flaky", url)]);
    c.webhooks.timeout = Duration::from_millis(500);
    let edge = start(c).await;
    let addr = edge.local_addr();
    let mut ann = tab(addr, "ann", "chat:busy").await;
    for i in 0..20 {
        ann.publish("chat:busy", serde_json::json!({ "i": i }))
            .await;
    }
    drop(ann);
    receiver.wait_for("user.offline", "ann").await;
    let posts = receiver.posts();
    assert!(
        posts.len() >= 6,
        "five failures, then success: {}",
        posts.len()
    );
    // Each retry re-sends the same batch: the same ids in the same order.
    let first: Value = serde_json::from_slice(&posts[0].body).unwrap();
    let sixth: Value = serde_json::from_slice(&posts[5].body).unwrap();
    assert_eq!(first["events"], sixth["events"]);
    let timeouts = metric_sum(
        addr,
        "plaza_webhook_posts_total",
        &["endpoint=\"flaky\"", "outcome=\"timeout\""],
    )
    .await;
    assert_eq!(timeouts, 1.0);
    let failures = metric_sum(
        addr,
        "plaza_webhook_posts_total",
        &["endpoint=\"flaky\"", "outcome=\"status_5xx\""],
    )
    .await;
    assert_eq!(failures, 3.0);
    let redirects = metric_sum(
        addr,
        "plaza_webhook_posts_total",
        &["endpoint=\"flaky\"", "outcome=\"redirect\""],
    )
    .await;
    assert_eq!(redirects, 1.0);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_dead_endpoint_is_given_up_after_the_retry_window_while_another_keeps_delivering() {
    // A port nothing listens on: bind one, note it, close it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (receiver, url) = Receiver::start(&[]).await;
    let mut c = hook_config(vec![
        ("dead", format!("http://{dead}/hook")),
        ("alive", url),
    ]);
    c.webhooks.retry_window = Duration::from_millis(500);
    let edge = start(c).await;
    let addr = edge.local_addr();
    drop(tab(addr, "ann", "chat:dead").await);
    receiver.wait_for("user.offline", "ann").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric_sum(
        addr,
        "plaza_webhook_events_given_up_total",
        &["endpoint=\"dead\""],
    )
    .await
        < 1.0
    {
        assert!(tokio::time::Instant::now() < deadline, "never given up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect = metric_sum(
        addr,
        "plaza_webhook_posts_total",
        &["endpoint=\"dead\"", "outcome=\"connect\""],
    )
    .await;
    assert!(connect >= 1.0);
    let (_, feed) = http_get_api(addr, "/v1/api/events?types=user.offline").await;
    assert!(
        feed.contains("user.offline"),
        "the feed keeps the events: {feed}"
    );
    edge.shutdown().await;
}

/// `GET` with the test API key.
async fn http_get_api(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

const API_KEY: &str = "webhook-test-api-key-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_fails_over_to_another_edge_without_losing_or_reordering_events() {
    let (receiver, url) = Receiver::start(&[]).await;
    let c = hook_config(vec![("failover", url)]);
    let backend = MemoryBackend::new(c.rooms.clone());
    // The first edge is alone, so it becomes the sender and delivers u1's events.
    let first = plaza_edge::start(c.clone(), backend.clone(), None)
        .await
        .expect("edge starts");
    drop(tab(first.local_addr(), "u1", "chat:fo").await);
    receiver.wait_for("user.offline", "u1").await;
    let second = plaza_edge::start(c.clone(), backend.clone(), None)
        .await
        .expect("edge starts");
    let b = second.local_addr();
    // u2 comes and goes while the sender stops; the second edge takes over after the lease.
    let u2 = tab(b, "u2", "chat:fo").await;
    first.shutdown().await;
    drop(u2);
    receiver.wait_for("user.offline", "u2").await;
    let got = receiver.events();
    let mut ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "never reordered (a re-sent batch may repeat): {seqs:?}"
    );
    ids.dedup();
    let (_, feed) = http_get_api(b, "/v1/api/events").await;
    let feed: Value = serde_json::from_str(feed.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let expected: Vec<&str> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected, "the receiver got exactly the feed, in order");
    second.shutdown().await;
}
