//! Faults injected into a real cluster — 3 `plaza-broker` processes and `plaza-edge`
//! processes on loopback, clients over WebSocket — and what clients see.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::workload::{check_delivery, publish_until};
use plaza_cluster_tests::ws::{Client, Ended};
use plaza_cluster_tests::{BrokerCluster, EdgeProcess, tail, token};
use serde_json::json;

const SECRET: &str = "failover-test-secret-0123456789abcdef";
const LEASE: Duration = Duration::from_secs(2);

fn config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_millis(100);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_publication() {
    let mut cluster = BrokerCluster::start(3, config());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    // The subscriber's edge only knows the followers, so it stays attached to a survivor; the
    // publisher's edge may be attached to the leader and then has to move.
    let sub_edge = EdgeProcess::start(&cluster, 1, &followers, SECRET, LEASE, &[]);
    let pub_edge = EdgeProcess::start(&cluster, 2, &[1, 2, 3], SECRET, LEASE, &[]);
    let room = "chat:failover";
    let mut subscriber = Client::connect(&sub_edge.ws_url(), &token(SECRET, "sub")).await;
    let reply = subscriber
        .call(json!({"op": "subscribe", "room": room}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe: {reply}");
    let publisher = Client::connect(&pub_edge.ws_url(), &token(SECRET, "pub")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher, room, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(leader);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = publishing.await.expect("publisher");

    let before = attempts
        .iter()
        .filter(|a| a.sent < killed && a.offset.is_some());
    assert!(before.count() > 10, "too few publications before the kill");
    let recovered = attempts
        .iter()
        .filter(|a| a.sent >= killed && a.offset.is_some())
        .map(|a| a.done.duration_since(killed))
        .min()
        .unwrap_or_else(|| panic!("no publish succeeded after the kill\n{}", cluster.logs()));
    let failed = attempts.iter().filter(|a| a.offset.is_none()).count();
    println!("publishes succeeded again {recovered:?} after the kill; {failed} failed meanwhile");
    assert!(
        recovered <= Duration::from_secs(3),
        "publishes succeeded again only after {recovered:?}\n{}",
        cluster.logs()
    );
    let delivered = check_delivery(&mut subscriber, &attempts).await;
    println!("{delivered} publications delivered exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_broker_dies_moves_on_without_a_gap() {
    let mut cluster = BrokerCluster::start(3, config());
    cluster.wait_leader(Duration::from_secs(20));
    // One edge, for both clients: whichever broker it attached to is killed.
    let edge = EdgeProcess::start(&cluster, 1, &[1, 2, 3], SECRET, LEASE, &[]);
    let attached = attached_broker(&cluster);
    let room = "chat:moving";
    let mut subscriber = Client::connect(&edge.ws_url(), &token(SECRET, "sub")).await;
    let reply = subscriber
        .call(json!({"op": "subscribe", "room": room}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe: {reply}");
    let publisher = Client::connect(&edge.ws_url(), &token(SECRET, "pub")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher, room, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill(attached);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = publishing.await.expect("publisher");
    let delivered = check_delivery(&mut subscriber, &attempts).await;
    assert!(
        tail(&edge.log, 200).contains("re-attached"),
        "the edge did not re-attach:\n{}",
        tail(&edge.log, 30)
    );
    println!("broker {attached} killed; {delivered} publications delivered without a gap");
}

/// The broker the only attached edge is on (from each broker's `/metrics`).
fn attached_broker(cluster: &BrokerCluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for slot in &cluster.slots {
            let metrics = plaza_cluster_tests::http_get(slot.http, "/metrics");
            if let Some((200, body)) = metrics
                && body
                    .lines()
                    .any(|l| l.starts_with("plaza_broker_edge_sessions ") && l.ends_with(" 1"))
            {
                return slot.id;
            }
        }
        assert!(Instant::now() < deadline, "no broker reports the edge");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_s_members_leave_within_its_lease() {
    let mut cluster = BrokerCluster::start(3, config());
    cluster.wait_leader(Duration::from_secs(20));
    let mut doomed = EdgeProcess::start(&cluster, 1, &[1, 2, 3], SECRET, LEASE, &[]);
    let survivor = EdgeProcess::start(&cluster, 2, &[1, 2, 3], SECRET, LEASE, &[]);
    let room = "chat:presence";
    let mut watcher = Client::connect(&survivor.ws_url(), &token(SECRET, "watcher")).await;
    let reply = watcher
        .call(json!({"op": "subscribe", "room": room, "presence": true}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe: {reply}");
    let mut member = Client::connect(&doomed.ws_url(), &token(SECRET, "ghost")).await;
    let reply = member.call(json!({"op": "subscribe", "room": room})).await;
    assert!(reply.get("ok").is_some(), "subscribe: {reply}");
    wait_for_member_event(&mut watcher, "join", "ghost", Duration::from_secs(10)).await;

    doomed.process.kill();
    let killed = Instant::now();
    wait_for_member_event(
        &mut watcher,
        "leave",
        "ghost",
        LEASE + Duration::from_secs(5),
    )
    .await;
    let took = killed.elapsed();
    println!("the killed edge's member left {took:?} after the kill (lease {LEASE:?})");
    let reply = watcher.call(json!({"op": "presence", "room": room})).await;
    let members = reply["ok"]["members"].as_array().expect("members").clone();
    assert!(
        members.iter().all(|m| m["user"] != "ghost"),
        "the ghost is still present: {members:?}"
    );
}

async fn wait_for_member_event(client: &mut Client, kind: &str, user: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_push(left).await {
            Ok(push) if push["push"] == kind && push["member"]["user"] == user => return,
            Ok(_) => {}
            Err(Ended::Timeout) => panic!("no {kind} of {user} within {within:?}"),
            Err(e) => panic!("connection ended waiting for {kind}: {e:?}"),
        }
    }
}
