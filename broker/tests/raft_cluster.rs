//! A 3-node in-process cluster: election, replication, batching.

mod raft_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plaza_broker::raft::ProposeError;
use plaza_rooms::Applied;
use raft_support::{Cluster, assert_same_state, config, publish, room};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_reach_the_same_state() {
    let mut cluster = Cluster::start(3, config(), false).await;
    let leader = cluster.leader(Duration::from_secs(5)).await;

    let mut acks = Vec::new();
    for i in 0..30 {
        let r = ["chat:a", "chat:b", "chat:c"][i % 3];
        acks.push((r, cluster.publish(r, &format!("{i}"), None).await));
    }
    cluster.converge(Duration::from_secs(5)).await;
    let state = assert_same_state(&cluster);
    drop(state);

    for name in ["chat:a", "chat:b", "chat:c"] {
        let pages: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| n.history(&room(name), None, None).unwrap())
            .collect();
        assert_eq!(pages[0].publications.len(), 10);
        assert!(
            pages.iter().all(|p| p == &pages[0]),
            "histories of {name} differ"
        );
        let positions: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| n.position(&room(name)).unwrap())
            .collect();
        assert!(positions.iter().all(|p| p == &positions[0]));
    }
    // Every ack is where the history says it is, with one epoch everywhere.
    let epoch = &acks[0].1.position.epoch;
    for (name, ack) in &acks {
        assert_eq!(&ack.position.epoch, epoch);
        let page = cluster.nodes[&leader]
            .history(&room(name), None, None)
            .unwrap();
        assert!(
            page.publications
                .iter()
                .any(|p| p.offset == ack.position.offset)
        );
    }

    // A follower refuses writes and names the leader.
    let follower = cluster.nodes.values().find(|n| n.id() != leader).unwrap();
    match follower.propose(vec![publish("chat:a", "1", None)]).await {
        Err(ProposeError::NotLeader {
            leader: Some(l),
            node: Some(n),
        }) => {
            assert_eq!(l, leader);
            assert_eq!(n.addr, format!("node-{leader}"));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let status = follower.status().await;
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.voters.len(), 3);
    assert!(status.committed.unwrap() >= 31, "{status:?}");
    let leader_status = cluster.nodes[&leader].status().await;
    assert_eq!(leader_status.lag.len(), 3, "{leader_status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_batched_into_fewer_entries_with_increasing_offsets() {
    batched_publishes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_on_fsynced_redb_logs_are_batched_too() {
    batched_publishes(true).await;
}

/// 1000 concurrent publishes over 10 rooms on the leader; prints throughput and latency.
async fn batched_publishes(on_disk: bool) {
    let mut cluster = Cluster::start(3, config(), on_disk).await;
    // One publish first, so the genesis entry is out of the way.
    cluster.publish("warmup:x", "0", None).await;
    let leader = cluster.leader_node().unwrap().clone();
    let before = leader.status().await.last_log_index.unwrap();

    const N: usize = 1000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let node = leader.clone();
        tasks.spawn(async move {
            let r = format!("load:{}", i % 10);
            let began = Instant::now();
            let out = node.propose_one(publish(&r, &format!("{i}"), None)).await;
            (r, out, began.elapsed())
        });
    }
    let mut by_room: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (r, out, latency) = joined.unwrap();
        match out.unwrap().unwrap() {
            Applied::Published(ack) => by_room.entry(r).or_default().push(ack.position.offset),
            other => panic!("unexpected {other:?}"),
        }
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    let entries = leader.status().await.last_log_index.unwrap() - before;
    latencies.sort();
    println!(
        "{} {N} publishes in {elapsed:?} ({:.0}/s) over {entries} entries; latency p50 {:?} p99 {:?}",
        if on_disk { "redb:" } else { "memory:" },
        N as f64 / elapsed.as_secs_f64(),
        latencies[N / 2],
        latencies[N * 99 / 100],
    );
    assert!(
        (entries as usize) < N,
        "{entries} entries for {N} publishes"
    );

    // Offsets are unique, and each room's history is in strictly increasing offset order and
    // holds exactly the acknowledged offsets.
    let total: usize = by_room.values().map(Vec::len).sum();
    assert_eq!(total, N);
    for (name, mut offsets) in by_room {
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), N / 10);
        let page = leader.history(&room(&name), None, None).unwrap();
        let history: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert!(history.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(history, offsets);
    }
    cluster.converge(Duration::from_secs(5)).await;
    assert_same_state(&cluster);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_emits_the_applied_events_in_log_order() {
    let mut cluster = Cluster::start(3, config(), false).await;
    let mut subscriptions: Vec<_> = cluster
        .nodes
        .values()
        .map(|n| (n.id(), n.subscribe()))
        .collect();
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(
            cluster
                .publish("chat:events", &i.to_string(), None)
                .await
                .position
                .offset,
        );
    }
    for (id, rx) in &mut subscriptions {
        let mut offsets = Vec::new();
        let mut last_log = 0;
        while offsets.len() < acks.len() {
            let applied = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("node {id}: events missing"))
                .unwrap();
            assert!(!applied.resync);
            assert!(
                applied.log_id.index > last_log,
                "node {id}: log ids not increasing"
            );
            last_log = applied.log_id.index;
            for event in applied.events.iter() {
                assert_eq!(event.room, room("chat:events"));
                match &event.kind {
                    plaza_proto::cluster::RoomEventKind::Publication(p) => offsets.push(p.offset),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(offsets, acks, "node {id}");
    }
    cluster.shutdown().await;
}
