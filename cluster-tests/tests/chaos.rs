//! The CI subset of `plaza-chaos`: fixed seeds, short runs, real processes. Each test starts
//! a cluster, runs the recorded workload while one scenario injects its faults, heals, and
//! asserts that every invariant held and that no stall exceeded a liveness bound (the report is
//! printed either way). The bound here is far looser than `plaza-chaos`'s 3 s default: these
//! runs share a loaded 2-core CI machine with other tests, and a test must not flake on a slow
//! scheduler; the tight figures are measured with `plaza-chaos` and reported, not asserted.

use std::time::Duration;

use plaza_cluster_tests::chaos::runner::{self, Backend, Options, Scenario};

/// The longest stall a CI run accepts on the Raft cluster (see the module docs for why it is
/// loose).
const CI_LIVENESS_BOUND: Duration = Duration::from_secs(12);

/// The same on NATS: a killed server that led a stream stalls publishes for NATS's own
/// stream-leader election (seen up to ~9 s on a loaded machine).
const CI_LIVENESS_BOUND_NATS: Duration = Duration::from_secs(20);

async fn check(backend: Backend, scenario: Scenario, seed: u64, seconds: u64) {
    let bound = match backend {
        Backend::Cluster => CI_LIVENESS_BOUND,
        Backend::Nats => CI_LIVENESS_BOUND_NATS,
    };
    let options = Options {
        backend,
        scenario,
        seed,
        duration: Duration::from_secs(seconds),
        liveness_bound: bound,
        ..Options::default()
    };
    let report = runner::run(options).await;
    println!("{report}");
    assert!(
        report.counts.acked > 20,
        "too little work was done:\n{report}"
    );
    assert!(
        report.counts.state_writes > 10,
        "the state-room writer did too little:\n{report}"
    );
    assert!(report.safe(), "an invariant failed:\n{report}");
    assert!(
        report.liveness.passed(),
        "publishing stalled longer than {bound:?}:\n{report}"
    );
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
