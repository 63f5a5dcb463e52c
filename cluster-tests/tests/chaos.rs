//! The CI subset of `plaza-chaos`: fixed seeds, short runs, real processes. Each test starts
//! a cluster, runs the recorded workload while one scenario injects its faults, heals, and
//! asserts that every invariant held (the report is printed either way).

use std::time::Duration;

use plaza_cluster_tests::chaos::runner::{self, Backend, Options, Scenario};

async fn check(backend: Backend, scenario: Scenario, seed: u64, seconds: u64) {
    let options = Options {
        backend,
        scenario,
        seed,
        duration: Duration::from_secs(seconds),
        ..Options::default()
    };
    let report = runner::run(options).await;
    println!("{report}");
    assert!(
        report.counts.acked > 20,
        "too little work was done:\n{report}"
    );
    assert!(report.passed(), "an invariant failed:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_churn_on_the_raft_cluster() {
    check(Backend::Cluster, Scenario::LeaderChurn, 1, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_and_a_one_way_cut_on_the_raft_cluster() {
    check(Backend::Cluster, Scenario::MinorityPartition, 2, 6).await;
    check(Backend::Cluster, Scenario::OneWayPartition, 8, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_and_a_slow_network_on_the_raft_cluster() {
    check(Backend::Cluster, Scenario::Pause, 3, 5).await;
    check(Backend::Cluster, Scenario::SlowNetwork, 4, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nats_server() {
    check(Backend::Nats, Scenario::NatsKill, 5, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_edges_on_both_backends() {
    check(Backend::Cluster, Scenario::EdgeKill, 6, 5).await;
    check(Backend::Nats, Scenario::EdgeKill, 7, 5).await;
}
