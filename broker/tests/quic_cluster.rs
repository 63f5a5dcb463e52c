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

/// Hostile input, finding 5: a Raft entry had no byte bound. The batcher packed up to 1024
/// commands of up to `max_message_bytes` each into one entry; past the 16 MiB QUIC frame, its
/// AppendEntries failed as a *network* error that openraft retried forever while heartbeats
/// kept the leader in place: a cluster-wide write stall. Now entries are cut at
/// `max_batch_bytes` and an AppendEntries over a frame is split (openraft's PayloadTooLarge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_maximum_size_publishes_all_commit() {
    // openraft gives an AppendEntries one heartbeat interval; a debug build on a loaded CI
    // machine moves a 1 MiB entry over QUIC in a few hundred ms, so this test (about entry
    // sizes, not failover) uses a slow heartbeat.
    let mut timing = config();
    timing.raft.heartbeat_interval = 1000;
    timing.raft.election_timeout_min = 3000;
    timing.raft.election_timeout_max = 6000;
    let cluster = QuicCluster::start(3, timing).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let nodes: Vec<_> = cluster.nodes.values().map(|n| n.node.clone()).collect();
    // 64 KiB of JSON each (the default max_message_bytes): 300 of them are ≈ 19 MiB.
    let data = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300usize {
        let (nodes, data) = (nodes.clone(), data.clone());
        // Each publish carries an idempotency key and is retried on any node until it
        // commits, as a client does when a leader changes under load; before the fix none of
        // the retries could ever commit once an entry passed the frame size.
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut attempt = 0;
            loop {
                let node = &nodes[(leader as usize + attempt) % nodes.len()];
                let command = publish(&format!("big:{}", i % 8), &data, Some(format!("k{i}")));
                match node.write(vec![command]).await {
                    Ok(results) => return results,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "publish {i} never committed: {e}"
                        );
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    let mut offsets = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let results = done.unwrap();
        let [Ok(Applied::Published(ack))] = &results[..] else {
            panic!("{results:?}");
        };
        offsets.insert(ack.position.offset);
    }
    assert_eq!(offsets.len(), 300, "every publication stored once");
    let node = cluster.leader_node().expect("a leader").clone();
    println!("300 × 64 KiB committed in {:?}", started.elapsed());
    // Every follower has them all too.
    let want = node.applied_index();
    for (id, n) in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        while n.node.applied_index() < want {
            assert!(Instant::now() < deadline, "node {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_same_state(&cluster);
}
