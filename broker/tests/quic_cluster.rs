//! A 3-node Raft cluster over real QUIC sockets on 127.0.0.1, with mutual TLS from one CA.

mod quic_support;
mod raft_support;

use std::time::{Duration, Instant};

use plaza_rooms::Applied;
use quic_support::QuicCluster;
use raft_support::{config, publish, room};

async fn publish_ok(cluster: &QuicCluster, room_name: &str, data: &str) -> u64 {
    match cluster
        .propose_one(publish(room_name, data, None), Duration::from_secs(10))
        .await
        .unwrap()
    {
        Applied::Published(ack) => ack.position.offset,
        other => panic!("unexpected {other:?}"),
    }
}

/// Every live node's applied state is the same.
fn assert_same_state(cluster: &QuicCluster) {
    let states: Vec<_> = cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.node.read(|r| r.state().clone()).unwrap()))
        .collect();
    for (id, state) in &states[1..] {
        assert_eq!(
            state, &states[0].1,
            "node {id} differs from node {}",
            states[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_quic_elect_a_leader_commit_publishes_and_converge() {
    let started = Instant::now();
    let mut cluster = QuicCluster::start(3, config()).await;
    let elected = started.elapsed();
    let leader = cluster.leader(Duration::from_secs(5)).await;

    let began = Instant::now();
    let mut offsets = Vec::new();
    for i in 0..30 {
        offsets.push(publish_ok(&cluster, "chat:quic", &i.to_string()).await);
    }
    let per_publish = began.elapsed() / 30;
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // Concurrent publishes are batched and replicated too.
    let leader_node = cluster.nodes[&leader].node.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let node = leader_node.clone();
        tasks.spawn(async move {
            node.propose_one(publish(&format!("load:{}", i % 4), "1", None))
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert!(matches!(done.unwrap(), Ok(Ok(Applied::Published(_)))));
    }

    cluster.converge(Duration::from_secs(5)).await;
    assert_same_state(&cluster);
    for n in cluster.nodes.values() {
        let page = n.node.history(&room("chat:quic"), None, None).unwrap();
        let seen: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(seen, offsets, "node {}", n.node.id());
    }
    let status = cluster.nodes[&leader].node.status().await;
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.lag.len(), 3, "{status:?}");
    println!("leader elected in {elected:?}; sequential publish {per_publish:?} each");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_endpoint_elects_a_new_leader_and_publishes_resume() {
    let mut cluster = QuicCluster::start(3, config()).await;
    let before = publish_ok(&cluster, "chat:failover", "\"before\"").await;
    let old = cluster.leader(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    cluster.kill(old).await;
    let new = cluster.leader(Duration::from_secs(5)).await;
    let elected = killed_at.elapsed();
    assert_ne!(new, old);
    let after = publish_ok(&cluster, "chat:failover", "\"after\"").await;
    let resumed = killed_at.elapsed();
    println!(
        "node {old} killed: node {new} leads after {elected:?}, first publish after {resumed:?}"
    );
    assert!(after > before);
    assert!(
        resumed < Duration::from_secs(3),
        "publishing resumed only after {resumed:?}"
    );

    cluster.converge(Duration::from_secs(5)).await;
    assert_same_state(&cluster);
    for n in cluster.nodes.values() {
        let page = n.node.history(&room("chat:failover"), None, None).unwrap();
        let data: Vec<&str> = page.publications.iter().map(|p| p.data.as_str()).collect();
        assert_eq!(data, ["\"before\"", "\"after\""], "node {}", n.node.id());
    }
    cluster.shutdown().await;
}
