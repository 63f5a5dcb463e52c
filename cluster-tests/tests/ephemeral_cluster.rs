//! Ephemeral publications on a real 3-broker cluster: they cross brokers (an edge on broker 1
//! reaches an edge on broker 2) and create no Raft entries — every broker's last log index is
//! the same before and after hundreds of them, while one durable publish moves it.

use std::time::Duration;

use plaza_backend::cluster::ClusterOptions;
use plaza_backend::{AttachOptions, Backend, EdgeLink, LinkEvents};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_proto::cluster::LinkEvent;
use plaza_proto::{EdgeId, Payload, RoomName};

/// A cluster that writes nothing to its log on its own while the test runs: ticks and lease
/// renewals once an hour (leases are longer still).
fn quiet_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_secs(3600);
    config.edges.renew_every = Duration::from_secs(3600);
    config.edges.min_lease = Duration::from_secs(7200);
    config.edges.max_lease = Duration::from_secs(10_800);
    config
}

fn attach_options(edge: &str) -> AttachOptions {
    AttachOptions {
        edge: EdgeId::new(edge.to_owned()),
        lease: Duration::from_secs(9000),
    }
}

/// Every broker's last log index (they must agree once the cluster is idle).
fn log_indexes(cluster: &BrokerCluster) -> Vec<u64> {
    (1..=3)
        .map(|id| {
            let status = cluster.status(id).expect("status");
            status
                .get("last_log_index")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        })
        .collect()
}

/// Waits until every broker reports the same last log index and returns it.
async fn settled_index(cluster: &BrokerCluster) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let indexes = log_indexes(cluster);
        if indexes.iter().all(|i| *i == indexes[0]) {
            return indexes[0];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brokers disagree on the log index: {indexes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next ephemeral publication's data on `events`.
async fn next_ephemeral(events: &mut LinkEvents) -> Option<Payload> {
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(LinkEvent::Ephemeral(e)) => return Some(e.data),
                Some(_) => {}
                None => return None,
            }
        }
    });
    wait.await.ok().flatten()
}

fn n(i: usize) -> Payload {
    Payload::from_json(&format!("{i}")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_publications_cross_brokers_and_create_no_raft_entries() {
    let mut cluster = BrokerCluster::start(3, quiet_config());
    cluster.wait_leader(Duration::from_secs(20));
    let one = cluster.backend_on("edge-1", &[1], ClusterOptions::default());
    let two = cluster.backend_on("edge-2", &[2], ClusterOptions::default());
    let (a, mut a_events) = one
        .attach(attach_options("edge-1"))
        .await
        .expect("attach a");
    let (b, mut b_events) = two
        .attach(attach_options("edge-2"))
        .await
        .expect("attach b");
    let room = RoomName::new("chat:typing").expect("room");
    let start = a.subscribe(room.clone()).await.expect("subscribe a");
    b.subscribe(room.clone()).await.expect("subscribe b");

    // The first one opens the path (the relay connection to broker 2 is dialled on demand).
    let mut opened = false;
    for _ in 0..50 {
        a.publish_ephemeral(room.clone(), n(0), None)
            .await
            .expect("publish_ephemeral");
        if next_ephemeral_within(&mut b_events, Duration::from_millis(200))
            .await
            .is_some()
        {
            opened = true;
            break;
        }
    }
    assert!(
        opened,
        "no ephemeral publication crossed from broker 1 to broker 2\n{}",
        cluster.logs()
    );
    while next_ephemeral_within(&mut b_events, Duration::from_millis(300))
        .await
        .is_some()
    {}

    let before = settled_index(&cluster).await;
    let count = 300;
    for i in 1..=count {
        a.publish_ephemeral(room.clone(), n(i), None)
            .await
            .expect("publish_ephemeral");
    }
    for i in 1..=count {
        assert_eq!(
            next_ephemeral(&mut b_events).await,
            Some(n(i)),
            "the edge on broker 2 must get every ephemeral publication once, in order"
        );
    }
    let mut own = 0;
    while let Some(data) = next_ephemeral_within(&mut a_events, Duration::from_millis(300)).await {
        if data != n(0) {
            own += 1;
        }
    }
    assert_eq!(
        own, count,
        "the publishing edge gets its own ephemeral publications too"
    );
    let after = settled_index(&cluster).await;
    assert_eq!(
        after,
        before,
        "{count} ephemeral publications wrote {} Raft entries",
        after - before
    );
    let page = a.history(room.clone(), None, None).await.expect("history");
    assert!(
        page.publications.is_empty(),
        "ephemeral publications were stored"
    );
    assert_eq!(page.position, start);

    // The index does move for a durable publication: the measurement above measures.
    a.publish(room.clone(), n(1), None, None)
        .await
        .expect("publish");
    let durable = settled_index(&cluster).await;
    assert!(
        durable > after,
        "a durable publish did not move the log index"
    );
}

async fn next_ephemeral_within(events: &mut LinkEvents, within: Duration) -> Option<Payload> {
    let wait = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Some(LinkEvent::Ephemeral(e)) => return Some(e.data),
                Some(_) => {}
                None => return None,
            }
        }
    });
    wait.await.ok().flatten()
}
