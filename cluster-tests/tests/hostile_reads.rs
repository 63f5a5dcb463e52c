//! Finding 7 of the hostile-client review (read amplification), against a real 3-broker cluster:
//! every `history`/`presence`/`presence_stats` cost its own quorum round, so a read flood cost
//! the cluster as many rounds as reads. Concurrent reads on one broker now share one read
//! barrier; each is still served by a barrier taken after it arrived (linearizable).

use std::time::Duration;

use futures_util::StreamExt;
use plaza_backend::cluster::ClusterOptions;
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::{BrokerCluster, http_get};
use plaza_proto::{ClientId, EdgeId, Member, RoomName, UserId};

/// The value of a broker's `/metrics` series (0 if absent).
fn broker_metric(cluster: &BrokerCluster, id: u64, series: &str) -> f64 {
    let (_, body) = http_get(cluster.slots[(id - 1) as usize].http, "/metrics").expect("metrics");
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_shares_quorum_rounds_and_every_read_sees_the_writes_before_it() {
    let mut cluster = BrokerCluster::start(3, BrokerConfig::default());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // Reads through a follower: each barrier is a round trip to the leader plus its quorum check.
    let backend = cluster.backend_on("edge-1", &[follower], ClusterOptions::default());
    let (link, _events) = backend
        .attach(AttachOptions {
            edge: EdgeId::new("edge-1"),
            lease: Duration::from_secs(10),
        })
        .await
        .expect("attach");
    let room = RoomName::new("chat:read-flood").unwrap();
    let reads_before = broker_metric(&cluster, follower, "plaza_broker_reads_total");
    let barriers_before = broker_metric(&cluster, follower, "plaza_broker_read_barriers_total");

    // 400 readers, 64 at a time: each joins its own member, then reads presence at once. A read
    // answered from a barrier taken before its join was acknowledged would miss the member.
    let readers = 400;
    let mut flood = futures_util::stream::iter(0..readers)
        .map(|i| {
            let link = link.clone();
            let room = room.clone();
            async move {
                let member = Member {
                    client: ClientId::new(format!("edge-1.reader-{i}")),
                    user: UserId::new(format!("user-{i}")),
                    info: None,
                };
                link.join(room.clone(), member.clone()).await.expect("join");
                let members = link
                    .presence(room.clone(), None, u32::MAX)
                    .await
                    .map(|p| p.members)
                    .expect("presence");
                assert!(
                    members.iter().any(|m| m.client == member.client),
                    "reader {i} did not see its own join"
                );
                let stats = link.presence_stats(room).await.expect("presence_stats");
                assert!(stats.clients >= 1);
            }
        })
        .buffer_unordered(64);
    while flood.next().await.is_some() {}
    drop(flood);

    let reads = broker_metric(&cluster, follower, "plaza_broker_reads_total") - reads_before;
    let barriers =
        broker_metric(&cluster, follower, "plaza_broker_read_barriers_total") - barriers_before;
    println!("read flood: {reads} reads served by {barriers} read barriers");
    assert!(reads >= 800.0, "only {reads} reads counted");
    assert!(
        barriers * 2.0 <= reads,
        "{barriers} barriers for {reads} reads: concurrent reads did not share them"
    );
}
