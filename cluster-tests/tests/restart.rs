//! A broker killed while the cluster keeps committing comes back with its data dir, catches
//! up, and serves an edge again: history, publishes forwarded to the leader, live events.

use std::time::{Duration, Instant};

use plaza_backend::cluster::ClusterOptions;
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_proto::cluster::{LinkEvent, RoomEventKind};
use plaza_proto::{EdgeId, Payload, RoomName};
use serde_json::Value;

fn attach_options(name: &str) -> AttachOptions {
    AttachOptions {
        edge: EdgeId::new(name.to_owned()),
        lease: Duration::from_secs(5),
    }
}

fn field(status: &Value, key: &str) -> u64 {
    status.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_catches_up_and_serves_again() {
    let mut config = BrokerConfig::default();
    config.raft.snapshot_every = 50;
    let mut cluster = BrokerCluster::start(3, config);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill(follower);

    let survivors: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    let backend = cluster.backend_on("edge-1", &survivors, ClusterOptions::default());
    let (link, _events) = backend
        .attach(attach_options("writer"))
        .await
        .expect("attach to the survivors");
    let room = RoomName::new("chat:restart").expect("room name");
    let mut last = None;
    for n in 0..300 {
        let data = Payload::from_json(&format!("{{\"n\":{n}}}")).expect("payload");
        let ack = link
            .publish(room.clone(), data, None, None)
            .await
            .expect("publish while a broker is down");
        last = Some(ack.position);
    }
    let last = last.expect("published");

    cluster.start_node(follower);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader_status = cluster.status(leader).expect("leader status");
        let committed = field(&leader_status, "commit_index");
        let applied = cluster
            .status(follower)
            .map_or(0, |s| field(&s, "last_applied"));
        if committed > 0 && applied >= committed {
            println!("broker {follower} caught up to index {applied}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {follower} did not catch up ({applied} < {committed})\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An edge that can only reach the restarted broker.
    let backend = cluster.backend_on("edge-2", &[follower], ClusterOptions::default());
    let (reader, mut events) = backend
        .attach(attach_options("reader"))
        .await
        .expect("attach to the restarted broker");
    let page = reader
        .history(room.clone(), None, None)
        .await
        .expect("history on the restarted broker");
    assert_eq!(page.position, last, "the restarted broker's position");
    let newest = page.publications.last().expect("history");
    assert_eq!(newest.offset, last.offset);
    assert_eq!(newest.data.as_str(), "{\"n\":299}");
    assert_eq!(page.publications.len(), 100, "the default history window");

    let at = reader.subscribe(room.clone()).await.expect("subscribe");
    assert_eq!(at, last);
    let data = Payload::from_json("{\"n\":\"after\"}").expect("payload");
    let ack = reader
        .publish(room.clone(), data, None, None)
        .await
        .expect("publish through the restarted broker");
    assert!(ack.position.offset > last.offset);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the publication arrives")
        .expect("stream open");
    match event {
        LinkEvent::Room(e) => match e.kind {
            RoomEventKind::Publication(p) => assert_eq!(p.offset, ack.position.offset),
            other => panic!("unexpected event {other:?}"),
        },
        other => panic!("unexpected event {other:?}"),
    }
    reader.close().await;
    link.close().await;
}
