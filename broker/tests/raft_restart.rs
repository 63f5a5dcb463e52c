//! Nodes on disk (redb log + snapshot file): restart from the data dir, catch up from the log
//! or, when the log was purged meanwhile, from a snapshot.

mod raft_support;

use std::time::{Duration, Instant};

use openraft::SnapshotPolicy;
use raft_support::{Cluster, assert_same_state, config, room};

fn snapshotting_config() -> plaza_broker::raft::RaftNodeConfig {
    let cfg = config();
    plaza_broker::raft::RaftNodeConfig {
        raft: openraft::Config {
            snapshot_policy: SnapshotPolicy::LogsSinceLast(50),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..cfg.raft.clone()
        },
        ..cfg
    }
}

/// Publishes `count` one at a time (so each is its own entry and snapshots trigger).
async fn publish_many(cluster: &Cluster, from: u64, count: u64) {
    for i in from..from + count {
        cluster.publish("chat:disk", &i.to_string(), None).await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_purged_logs_catches_up_from_a_snapshot_after_restart() {
    let mut cluster = Cluster::start(3, snapshotting_config(), true).await;
    publish_many(&cluster, 0, 20).await;
    cluster.converge(Duration::from_secs(5)).await;

    // Node 3 goes down; the others move on, snapshot and purge past where it stopped.
    let leader = cluster.leader(Duration::from_secs(1)).await;
    let down = if leader == 3 { 2 } else { 3 };
    let stopped_at = cluster.nodes[&down].applied_index();
    cluster.kill(down).await;
    publish_many(&cluster, 20, 150).await;
    let leader_node = cluster.leader_node().unwrap().clone();
    wait_for(
        "the leader to purge its log",
        Duration::from_secs(5),
        || {
            leader_node
                .raft()
                .metrics()
                .borrow()
                .purged
                .map_or(0, |l| l.index)
                > stopped_at
        },
    )
    .await;

    // Back with its old data dir: it restores its own state, then gets a snapshot.
    let restarted = cluster.start_unconnected(down).await;
    let mut events = restarted.subscribe();
    cluster.connect(restarted.clone());
    println!(
        "node {down} stopped at {stopped_at}; leader purged through {:?}; restarted at {}",
        leader_node.status().await.purged,
        restarted.applied_index()
    );
    cluster.converge(Duration::from_secs(10)).await;
    let state = assert_same_state(&cluster);
    drop(state);
    let snapshot = restarted
        .status()
        .await
        .snapshot
        .expect("restarted node has a snapshot");
    assert!(
        snapshot > stopped_at,
        "node caught up without a snapshot ({snapshot} <= {stopped_at})"
    );
    let page = restarted.history(&room("chat:disk"), None, None).unwrap();
    assert_eq!(page.publications.len(), 170);
    // Its event subscribers were told to resync instead of silently missing events.
    let mut resync = None;
    while let Ok(applied) = events.try_recv() {
        if applied.resync {
            resync = Some(applied.log_id.index);
        }
    }
    assert_eq!(
        resync,
        Some(snapshot),
        "no resync event for the installed snapshot"
    );

    // And it keeps replicating normally afterwards.
    publish_many(&cluster, 170, 5).await;
    cluster.converge(Duration::from_secs(5)).await;
    assert_same_state(&cluster);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarted_from_its_data_dirs_keeps_its_rooms_and_epoch() {
    let mut cluster = Cluster::start(3, snapshotting_config(), true).await;
    // Enough entries for a snapshot plus a log tail after it.
    publish_many(&cluster, 0, 80).await;
    cluster.converge(Duration::from_secs(5)).await;
    let before = assert_same_state(&cluster);
    let position = cluster.nodes[&1].position(&room("chat:disk")).unwrap();

    cluster.shutdown().await;
    for id in 1..=3 {
        cluster.start_node(id).await;
    }
    // Each node restores snapshot + committed log before any new write.
    cluster.leader(Duration::from_secs(10)).await;
    cluster.converge(Duration::from_secs(10)).await;
    assert_eq!(assert_same_state(&cluster), before);
    for node in cluster.nodes.values() {
        let s = node.status().await;
        println!(
            "after restart: node {} snapshot {:?} purged {:?} applied {:?}",
            s.id, s.snapshot, s.purged, s.last_applied
        );
    }

    let ack = cluster.publish("chat:disk", "80", None).await;
    assert_eq!(ack.position.epoch, position.epoch);
    assert!(ack.position.offset > position.offset);
    cluster.converge(Duration::from_secs(5)).await;
    let page = cluster.nodes[&2]
        .history(&room("chat:disk"), None, None)
        .unwrap();
    assert_eq!(page.publications.len(), 81);
    cluster.shutdown().await;
}
