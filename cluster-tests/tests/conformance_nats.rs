//! The backend conformance suite against real `nats-server` processes: one JetStream server,
//! and a 3-server JetStream cluster (streams and buckets with 3 replicas).

use std::time::Duration;

use plaza_backend::conformance;
use plaza_backend::nats::{NatsBackend, NatsError, NatsOptions};
use plaza_cluster_tests::nats::NatsCluster;

async fn run_suite(nats: &NatsCluster, replicas: usize) {
    let options = NatsOptions {
        servers: nats.urls(),
        replicas,
        reap_every: Duration::from_millis(150),
        ..NatsOptions::default()
    };
    let backend = NatsBackend::connect(&conformance::rooms_config(), options)
        .await
        .expect("connect to NATS");
    let suite = tokio::time::timeout(Duration::from_secs(180), conformance::run(&backend));
    suite.await.expect("the suite finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_one_nats_server() {
    let nats = NatsCluster::single();
    run_suite(&nats, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_three_node_nats_cluster() {
    let nats = NatsCluster::start(3);
    run_suite(&nats, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_refuses_a_stream_with_other_settings() {
    let nats = NatsCluster::single();
    let options = || NatsOptions {
        servers: nats.urls(),
        ..NatsOptions::default()
    };
    let rooms = plaza_rooms::config::RoomsConfig::default();
    let first = NatsBackend::connect(&rooms, options())
        .await
        .expect("create");
    assert!(first.ready());
    let again = NatsBackend::connect(&rooms, options())
        .await
        .expect("the same settings again");
    assert!(again.ready());

    let mut other = rooms.clone();
    other.defaults.history_size = 5;
    match NatsBackend::connect(&other, options()).await {
        Err(NatsError::Incompatible {
            stream, setting, ..
        }) => {
            assert_eq!(stream, "PLAZA_DEFAULT");
            assert_eq!(setting, "max_msgs_per_subject");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a stream with other settings was accepted"),
    }
}
