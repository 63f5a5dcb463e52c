//! User-level presence (`presence: "users"`) across two `plaza-edge` processes, on a real
//! `nats-server` and on a real 3-broker cluster: a user's connections on both edges count as
//! one user, pushes come only on the first/last connection, and the leave is debounced.

use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::nats::NatsCluster;
use plaza_cluster_tests::ws::Client;
use plaza_cluster_tests::{BrokerCluster, EdgeProcess, token};
use serde_json::{Value, json};

const SECRET: &str = "user-presence-nats-secret-0123456789abcdef";
const LEASE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(10);

fn nats_edge(nats: &NatsCluster, name: &str) -> EdgeProcess {
    let args: Vec<String> = vec![
        "--backend".into(),
        "nats".into(),
        "--nats".into(),
        nats.urls().join(","),
    ];
    let env = [
        ("PLAZA_NATS__REPLICAS", "1".to_owned()),
        ("PLAZA_CLIENT__USER_PRESENCE_DEBOUNCE", "500ms".to_owned()),
    ];
    let edge = EdgeProcess::spawn_with_env(nats.dir(), name, &args, SECRET, LEASE, &env);
    edge.wait_ready(Duration::from_secs(20));
    edge
}

async fn ok(client: &mut Client, command: Value) -> Value {
    let reply = client.call(command.clone()).await;
    reply
        .get("ok")
        .cloned()
        .unwrap_or_else(|| panic!("{command} refused: {reply}"))
}

/// The next `user_*` push, skipping others.
async fn next_user_push(client: &mut Client) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_push(left).await {
            Ok(push)
                if push["push"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("user_")) =>
            {
                return push;
            }
            Ok(_) => {}
            Err(e) => panic!("no user push within {WAIT:?}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_user_on_two_edges_is_one_user_with_two_connections() {
    let nats = NatsCluster::single();
    let a = nats_edge(&nats, "edge-a");
    let b = nats_edge(&nats, "edge-b");
    two_edges(&a, &b, "chat:users-nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_a_user_on_two_edges_is_one_user_with_two_connections() {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_millis(100);
    let mut cluster = BrokerCluster::start(3, config);
    cluster.wait_leader(Duration::from_secs(20));
    // The edges on different brokers: the events cross the cluster. Default debounce (2 s).
    let a = EdgeProcess::start(&cluster, 1, &[1], SECRET, LEASE, &[]);
    let b = EdgeProcess::start(&cluster, 2, &[2], SECRET, LEASE, &[]);
    two_edges(&a, &b, "chat:users-cluster").await;
}

/// Ann on edge A and edge B, watched from edge A, read from edge B.
async fn two_edges(a: &EdgeProcess, b: &EdgeProcess, room: &str) {
    let mut watcher = Client::connect(&a.ws_url(), &token(SECRET, "wat")).await;
    ok(
        &mut watcher,
        json!({"op": "subscribe", "room": room, "presence": "users"}),
    )
    .await;

    let mut ann_a = Client::connect(&a.ws_url(), &token(SECRET, "ann")).await;
    ok(&mut ann_a, json!({"op": "subscribe", "room": room})).await;
    let push = next_user_push(&mut watcher).await;
    assert_eq!(push["push"], "user_join", "{push}");
    assert_eq!(push["user"]["user"], "ann");
    assert_eq!(push["user"]["connections"], 1);

    let mut ann_b = Client::connect(&b.ws_url(), &token(SECRET, "ann")).await;
    ok(&mut ann_b, json!({"op": "subscribe", "room": room})).await;
    let push = next_user_push(&mut watcher).await;
    assert_eq!(push["push"], "user_update", "{push}");
    assert_eq!(push["user"]["connections"], 2);

    // Edge B's view, without a local user-level subscriber, agrees.
    let mut reader = Client::connect(&b.ws_url(), &token(SECRET, "red")).await;
    let listed = ok(
        &mut reader,
        json!({"op": "presence", "room": room, "mode": "users"}),
    )
    .await;
    let ann = listed["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == "ann")
        .cloned()
        .expect("ann listed");
    assert_eq!(ann["connections"], 2, "{listed}");

    // Both go; the last leave is announced once, after the debounce.
    drop(ann_a);
    let push = next_user_push(&mut watcher).await;
    assert_eq!(push["push"], "user_update", "{push}");
    assert_eq!(push["user"]["connections"], 1);
    drop(ann_b);
    let push = next_user_push(&mut watcher).await;
    assert_eq!(push["push"], "user_leave", "{push}");
    assert_eq!(push["user"]["user"], "ann");
    assert_eq!(push["user"]["connections"], 0);
}
