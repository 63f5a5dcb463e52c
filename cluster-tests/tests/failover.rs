//! Faults injected into a real cluster — 3 `plaza-broker` processes and `plaza-edge`
//! processes on loopback, clients over WebSocket — and what clients see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::presence_list::{PresenceList, assert_tracked, settle, spawn_churn};
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

/// Issue 17: join/leave pushes that happen while an edge re-attaches to another broker are
/// not replayed; the edge sends its presence subscribers a `presence_resync`, so a member list
/// kept from pushes ends equal to the room's presence (no ghost, no missed newcomer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_list_kept_from_pushes_survives_the_watcher_s_broker_dying() {
    let mut cluster = BrokerCluster::start(3, config());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    // The watcher's edge attaches to a follower (no election when it dies: the churn keeps
    // committing while the edge is away); the churn's edge avoids that follower.
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let watched = EdgeProcess::start(&cluster, 1, &followers, SECRET, LEASE, &[]);
    let attached = attached_broker(&cluster);
    let others: Vec<u64> = (1..=3).filter(|id| *id != attached).collect();
    let churn_edge = EdgeProcess::start(&cluster, 2, &others, SECRET, LEASE, &[]);
    let room = "chat:resync";
    let mut watcher = Client::connect(&watched.ws_url(), &token(SECRET, "watcher")).await;
    let mut list = PresenceList::watch(&mut watcher, room).await;
    // A user-level watcher on the same edge (protocol §12.1): its user list, kept from
    // `user_*` pushes, must end equal to the room's members grouped by user.
    let mut users_watcher = Client::connect(&watched.ws_url(), &token(SECRET, "uwatcher")).await;
    let reply = users_watcher
        .call(json!({"op": "subscribe", "room": room, "presence": "users"}))
        .await;
    assert!(reply.get("ok").is_some(), "{reply}");
    let reply = users_watcher
        .call(json!({"op": "presence", "room": room, "mode": "users"}))
        .await;
    let mut users: BTreeMap<String, u64> = reply["ok"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect();

    // Churn: a member joins every 50 ms and the oldest but three leaves, from before the kill
    // until well after the edge re-attached.
    let churn = spawn_churn(churn_edge.ws_url(), room, SECRET);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(attached);
    let present = churn.await.expect("churn");
    let actual = settle(&mut watcher, &mut list, room, Duration::from_secs(2)).await;
    assert_tracked(&list, &actual, &tail(&watched.log, 30));
    // Quiet for longer than the user-level debounce (2 s): every due `user_leave` came.
    loop {
        match users_watcher.next_push(Duration::from_secs(3)).await {
            Ok(push) => {
                let user = push["user"]["user"].as_str().unwrap_or_default().to_owned();
                match push["push"].as_str() {
                    Some("user_join" | "user_update") => {
                        users.insert(user, push["user"]["connections"].as_u64().unwrap());
                    }
                    Some("user_leave") => {
                        users.remove(&user);
                    }
                    _ => {}
                }
            }
            Err(Ended::Timeout) => break,
            Err(e) => panic!("the user-level watcher's connection ended: {e:?}"),
        }
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for user in actual.values() {
        *expected.entry(user.clone()).or_default() += 1;
    }
    assert_eq!(
        users, expected,
        "user list kept from user_* pushes vs the room's members"
    );
    drop(present);
    println!("broker {attached} killed during churn");
}
