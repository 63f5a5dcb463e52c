//! A leader that stops gracefully hands leadership over (openraft 0.9 has no
//! `transfer_leader`: the broker catches up its best follower and asks it to campaign), so a
//! rolling restart pauses writes for about a round trip instead of an election timeout. Also
//! the measurement behind `docs/operations.md`'s failover table (ignored by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::workload::{Attempt, check_delivery, publish_until};
use plaza_cluster_tests::ws::Client;
use plaza_cluster_tests::{BrokerCluster, EdgeProcess, tail, token};
use serde_json::json;

const SECRET: &str = "handover-test-secret-0123456789abcdef";
const LEASE: Duration = Duration::from_secs(2);

fn config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_millis(100);
    config
}

/// How a fault looked to one publishing client.
struct Outcome {
    /// From the fault to the first acknowledgement of a publish sent after it.
    next_ack: Duration,
    /// The longest time between two consecutive acknowledgements around the fault.
    pause: Duration,
    /// Failed publishes.
    failed: usize,
}

fn outcome(attempts: &[Attempt], fault: Instant) -> Option<Outcome> {
    let next_ack = attempts
        .iter()
        .filter(|a| a.sent >= fault && a.offset.is_some())
        .map(|a| a.done.duration_since(fault))
        .min()?;
    let acks: Vec<Instant> = attempts
        .iter()
        .filter(|a| a.offset.is_some())
        .map(|a| a.done)
        .collect();
    let pause = acks
        .windows(2)
        .filter(|w| w[1] >= fault)
        .map(|w| w[1].duration_since(w[0]))
        .max()?;
    let failed = attempts.iter().filter(|a| a.offset.is_none()).count();
    let mut errors: Vec<&str> = attempts.iter().filter_map(|a| a.error.as_deref()).collect();
    errors.sort_unstable();
    errors.dedup();
    if !errors.is_empty() {
        println!("publish errors: {errors:?}");
    }
    Some(Outcome {
        next_ack,
        pause,
        failed,
    })
}

/// Starts a cluster and an edge attached to `edge_brokers(leader)`, publishes for a while,
/// breaks the leader with `fault`, publishes on and returns what the publisher saw, checking
/// that the subscriber got every acknowledged publication exactly once, in order.
async fn around_a_leader_fault(
    edge_brokers: impl Fn(u64) -> Vec<u64>,
    fault: impl FnOnce(&mut BrokerCluster, u64),
) -> (Outcome, BrokerCluster, u64) {
    let mut cluster = BrokerCluster::start(3, config());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let edge = EdgeProcess::start(&cluster, 1, &edge_brokers(leader), SECRET, LEASE, &[]);
    let room = "chat:handover";
    let mut subscriber = Client::connect(&edge.ws_url(), &token(SECRET, "sub")).await;
    let reply = subscriber
        .call(json!({"op": "subscribe", "room": room}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe: {reply}");
    let publisher = Client::connect(&edge.ws_url(), &token(SECRET, "pub")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher, room, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = Instant::now();
    tokio::task::block_in_place(|| fault(&mut cluster, leader));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = publishing.await.expect("publisher");
    let seen = outcome(&attempts, at).unwrap_or_else(|| {
        panic!(
            "no publish succeeded after the fault\n{}\nedge:\n{}",
            cluster.logs(),
            tail(&edge.log, 40)
        )
    });
    check_delivery(&mut subscriber, &attempts).await;
    (seen, cluster, leader)
}

fn followers(leader: u64) -> Vec<u64> {
    (1..=3).filter(|id| *id != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_and_writes_pause_briefly() {
    let (seen, cluster, leader) = around_a_leader_fault(followers, |cluster, leader| {
        assert!(
            cluster.stop(leader, Duration::from_secs(10)),
            "the leader did not stop"
        );
    })
    .await;
    println!(
        "graceful stop of leader {leader}: writes paused {:?} (next ack {:?} after SIGTERM), \
         {} failed",
        seen.pause, seen.next_ack, seen.failed
    );
    let logs = cluster.logs();
    let handed = (1..=3).any(|id| {
        let log = cluster.dir().join(format!("broker-{id}.log"));
        std::fs::read_to_string(log).is_ok_and(|l| l.contains("leadership handed over"))
    });
    assert!(handed, "the leader did not hand over:\n{logs}");
    // The target is ~1 round trip (≤ 200 ms, measured, not asserted: CI is loaded); an
    // election would take ≥ 450 ms, a broken hand-over seconds.
    assert!(
        seen.pause < Duration::from_secs(3),
        "writes paused {:?}\n{logs}",
        seen.pause
    );
}

/// The failover figures of `docs/operations.md`: ten leader SIGKILLs and five graceful stops,
/// each on a fresh cluster, printed. `cargo test --release -p plaza-cluster-tests --test
/// leader_handover -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about two minutes), not a check"]
async fn measure_leader_sigkill_and_graceful_stop() {
    let mut kills = Vec::new();
    for run in 1..=10 {
        let (seen, _, leader) =
            around_a_leader_fault(|_| vec![1, 2, 3], |cluster, leader| cluster.kill(leader)).await;
        println!(
            "SIGKILL run {run}: leader {leader}, next ack after {:?}, longest pause {:?}, {} \
             failed",
            seen.next_ack, seen.pause, seen.failed
        );
        kills.push(seen.next_ack);
    }
    kills.sort();
    println!(
        "SIGKILL: median time to the next ack {:?} (min {:?}, max {:?})",
        (kills[4] + kills[5]) / 2,
        kills[0],
        kills[9]
    );
    let mut stops = Vec::new();
    for run in 1..=5 {
        let (seen, _, leader) = around_a_leader_fault(followers, |cluster, leader| {
            cluster.stop(leader, Duration::from_secs(10));
        })
        .await;
        println!(
            "graceful stop run {run}: leader {leader}, longest pause {:?}, next ack after {:?}, \
             {} failed",
            seen.pause, seen.next_ack, seen.failed
        );
        stops.push(seen.pause);
    }
    stops.sort();
    println!("graceful stop: median pause {:?}", stops[2]);
}
