//! The backend conformance suite against a real 3-broker `plaza-broker` cluster, reached over
//! QUIC through `ClusterBackend` (each attach dials a random broker, so the checks' links are
//! spread over leader and followers and exercise forwarding and cross-broker routing).

use std::time::Duration;

use plaza_backend::cluster::ClusterOptions;
use plaza_backend::conformance;
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;

/// Broker settings the suite needs: its namespaces, and a tick and lease renewal fast enough
/// to expire a 1 s lease within the suite's slack.
fn config() -> BrokerConfig {
    let mut config = BrokerConfig {
        rooms: conformance::rooms_config(),
        ..BrokerConfig::default()
    };
    config.raft.tick = Duration::from_millis(100);
    config.edges.renew_every = Duration::from_millis(150);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_three_broker_cluster() {
    let mut cluster = BrokerCluster::start(3, config());
    cluster.wait_leader(Duration::from_secs(20));
    let backend = cluster.backend("edge-1", ClusterOptions::default());
    let suite = tokio::time::timeout(Duration::from_secs(120), conformance::run(&backend));
    if suite.await.is_err() {
        panic!("the suite did not finish in time\n{}", cluster.logs());
    }
    let events = tokio::time::timeout(Duration::from_secs(90), conformance::run_events(&backend));
    if events.await.is_err() {
        panic!(
            "the event checks did not finish in time\n{}",
            cluster.logs()
        );
    }
    let state = tokio::time::timeout(Duration::from_secs(60), conformance::run_state(&backend));
    if state.await.is_err() {
        panic!(
            "the state room checks did not finish in time\n{}",
            cluster.logs()
        );
    }
}
