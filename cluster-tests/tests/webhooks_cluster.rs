//! Lifecycle events and webhooks on a real cluster: 3 `plaza-broker` processes, 2 `plaza-edge`
//! processes with `[webhooks]`, a real receiver, users churning over WebSocket while the Raft
//! leader and then the sending edge are killed. Afterwards every event of the feed was
//! delivered at least once, ids are stable, first arrivals are in feed order, and the feed
//! replay equals what the receiver got.

use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::webhook_receiver::{self, Receiver};
use plaza_cluster_tests::ws::Client;
use plaza_cluster_tests::{BrokerCluster, EdgeProcess, http_get, tail, token};
use serde_json::{Value, json};

const SECRET: &str = "webhooks-test-secret-0123456789abcdef";
const API_KEY: &str = "webhooks-cluster-api-key-0123";
const LEASE: Duration = Duration::from_secs(2);

fn broker_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_millis(100);
    config.rooms.events.debounce = Duration::from_millis(500);
    config
}

/// An edge config file with the API and one webhook endpoint.
fn edge_config(dir: &std::path::Path, url: &str) -> String {
    let path = dir.join("edge-webhooks.toml");
    let text = format!(
        "[api]\nkeys = [\"{API_KEY}\"]\n\n[webhooks]\nsecret = \"webhook-secret-0123456789\"\n\
         lease = \"1500ms\"\npoll_interval = \"50ms\"\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n\n\
         [[webhooks.endpoints]]\nname = \"chaos\"\nurl = \"{url}\"\n"
    );
    std::fs::write(&path, text).expect("write edge config");
    path.display().to_string()
}

/// `GET` with the API key, over HTTP/1.0.
fn api_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_owned(),
    ))
}

/// The whole feed, paged, read from `edge`.
fn read_feed(edge: &EdgeProcess) -> Vec<Value> {
    let mut since = String::new();
    let mut events = Vec::new();
    loop {
        let path = format!("/v1/api/events?limit=200&since={since}");
        let Some((200, body)) = api_get(edge.addr, &path) else {
            panic!("feed read failed:\n{}", tail(&edge.log, 20));
        };
        let page: Value = serde_json::from_str(&body).expect("JSON");
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        since = page["next"].as_str().unwrap_or("").to_owned();
        if page["next"] == page["latest"] {
            return events;
        }
    }
}

/// Whether `edge` reports itself as the webhook sender.
fn is_sender(edge: &EdgeProcess) -> bool {
    http_get(edge.addr, "/metrics").is_some_and(|(_, body)| {
        body.lines()
            .any(|l| l.starts_with("plaza_webhook_sender ") && l.ends_with(" 1"))
    })
}

/// A user that connects, joins a room and leaves until `until`, reconnecting inside the
/// debounce (so most cycles are invisible), on the first of `urls` that accepts it.
async fn churn(urls: Vec<String>, user: String, room: String, until: Instant) -> u32 {
    let mut cycles = 0;
    let token = token(SECRET, &user);
    let mut at = 0;
    while Instant::now() < until {
        let (url, token2, room2) = (urls[at % urls.len()].clone(), token.clone(), room.clone());
        // A refused connection (a killed edge) panics inside the task: move to the next edge.
        let cycle = tokio::spawn(async move {
            let mut c = Client::connect(&url, &token2).await;
            let _ = c.call(json!({"op": "subscribe", "room": room2})).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        });
        if cycle.await.is_err() {
            at += 1;
            continue;
        }
        cycles += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cycles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_leader_and_sender_kills_with_every_event_delivered_in_order() {
    let receiver = Receiver::start().await;
    let mut cluster = BrokerCluster::start(3, broker_config());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let config = edge_config(cluster.dir(), &receiver.url);
    let extra = ["--config", config.as_str()];
    let mut edges = vec![
        EdgeProcess::start(&cluster, 1, &[1, 2, 3], SECRET, LEASE, &extra),
        EdgeProcess::start(&cluster, 2, &[1, 2, 3], SECRET, LEASE, &extra),
    ];
    let until = Instant::now() + Duration::from_secs(8);
    let mut users = Vec::new();
    for i in 0..6 {
        let urls = vec![edges[i % 2].ws_url(), edges[1 - i % 2].ws_url()];
        users.push(tokio::spawn(churn(
            urls,
            format!("user-{i}"),
            format!("chat:r{}", i % 3),
            until,
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill the sending edge (its clients' members leave when its lease runs out).
    let sender = (0..2).find(|i| is_sender(&edges[*i])).unwrap_or(0);
    edges[sender].process.kill();
    let survivor = &edges[1 - sender];
    for u in users {
        let _ = u.await;
    }
    // Everything settles: leases of the killed edge, debounces, the new sender catching up.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (feed, verdict) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let feed = read_feed(survivor);
        let verdict = webhook_receiver::check(&receiver.received(), &feed);
        // Settled: every user's last presence event is `user.offline` (a user who reconnected
        // outside the debounce has several online/offline pairs, so a count is not enough).
        let settled = (0..6).all(|i| {
            let user = format!("user-{i}");
            feed.iter()
                .filter(|e| e["user"] == user.as_str())
                .filter_map(|e| e["type"].as_str())
                .rfind(|t| *t == "user.online" || *t == "user.offline")
                == Some("user.offline")
        });
        if (verdict.is_ok() && settled) || Instant::now() > deadline {
            break (feed, verdict);
        }
    };
    match verdict {
        Ok(summary) => println!("{summary}; sender was edge-{}", sender + 1),
        Err(why) => panic!(
            "{why}\nfeed: {} events, received {}\nsurvivor log:\n{}\n{}",
            feed.len(),
            receiver.received().len(),
            tail(&survivor.log, 40),
            cluster.logs()
        ),
    }
    // Per user: online and offline alternate, and the last close gave exactly one offline.
    for i in 0..6 {
        let user = format!("user-{i}");
        let states: Vec<&str> = feed
            .iter()
            .filter(|e| e["user"] == user.as_str())
            .filter_map(|e| e["type"].as_str())
            .filter(|t| *t == "user.online" || *t == "user.offline")
            .collect();
        assert!(!states.is_empty(), "{user} has no events");
        for (n, t) in states.iter().enumerate() {
            let expected = if n % 2 == 0 {
                "user.online"
            } else {
                "user.offline"
            };
            assert_eq!(*t, expected, "{user}: {states:?}");
        }
        assert_eq!(states.last(), Some(&"user.offline"), "{user}: {states:?}");
    }
    let kinds: Vec<&str> = feed.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "user.online",
        "user.offline",
        "room.occupied",
        "room.vacated",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in the feed");
    }
    let _ = edges.remove(sender);
}
