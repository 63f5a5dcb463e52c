//! Live-state rooms on a 3-broker cluster survive a leader kill and a restart: the map is
//! replicated state (Raft entries, snapshots of format 3), so after the leader dies the
//! survivors serve the same map and accept a compare-and-set at its versions, and the killed
//! broker comes back from its snapshot and log with the same map.

use std::collections::BTreeMap;
use std::time::Duration;

use plaza_backend::cluster::ClusterOptions;
use plaza_backend::conformance;
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_proto::state::{StateSnapshot, StateWrite};
use plaza_proto::{EdgeId, Payload, RoomName};

fn attach_options(name: &str) -> AttachOptions {
    AttachOptions {
        edge: EdgeId::new(name.to_owned()),
        lease: Duration::from_secs(5),
    }
}

fn values(snapshot: &StateSnapshot) -> BTreeMap<String, String> {
    snapshot
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.as_str().to_owned()))
        .collect()
}

fn set(key: &str, value: &str, expect: Option<u64>) -> StateWrite {
    StateWrite::Set {
        key: key.to_owned(),
        value: Payload::from_json(value).expect("json"),
        expect,
        ttl_ms: None,
        tied: None,
        from: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_room_survives_a_leader_kill_and_a_restart() {
    let mut config = BrokerConfig {
        rooms: conformance::rooms_config(),
        ..BrokerConfig::default()
    };
    config.raft.snapshot_every = 20;
    let mut cluster = BrokerCluster::start(3, config);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let room = RoomName::new("state:survivor").expect("room");
    let mut expected = BTreeMap::new();
    {
        let backend = cluster.backend("edge-1", ClusterOptions::default());
        let (link, _events) = backend
            .attach(attach_options("writer"))
            .await
            .expect("attach");
        for n in 0..60 {
            let key = format!("k{}", n % conformance::STATE_MAX_KEYS);
            let value = n.to_string();
            link.state_write(room.clone(), set(&key, &value, None))
                .await
                .expect("set");
            expected.insert(key, value);
        }
        link.state_write(
            room.clone(),
            StateWrite::Delete {
                key: "k0".into(),
                expect: None,
                from: None,
            },
        )
        .await
        .expect("delete");
        expected.remove("k0");
        link.close().await;
    }

    cluster.kill(leader);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let backend = cluster.backend_on("edge-2", &survivors, ClusterOptions::default());
    let (link, _events) = backend
        .attach(attach_options("after-kill"))
        .await
        .expect("attach to the survivors");
    let snapshot = link
        .state_read(room.clone())
        .await
        .expect("state after the kill");
    assert_eq!(
        values(&snapshot),
        expected,
        "the survivors hold every committed change"
    );
    let k1 = snapshot
        .entries
        .iter()
        .find(|e| e.key == "k1")
        .expect("k1")
        .version;
    let ack = link
        .state_write(room.clone(), set("k1", "\"cas\"", Some(k1)))
        .await
        .expect("a compare-and-set at the surviving version");
    expected.insert("k1".into(), "\"cas\"".into());
    link.close().await;

    cluster.start_node(leader);
    cluster.wait_caught_up(leader, Duration::from_secs(30));
    let backend = cluster.backend_on("edge-3", &[leader], ClusterOptions::default());
    let (reader, _events) = backend
        .attach(attach_options("restarted"))
        .await
        .expect("attach to the restarted broker");
    let snapshot = reader
        .state_read(room)
        .await
        .expect("state on the restarted broker");
    assert_eq!(values(&snapshot), expected, "restored from snapshot + log");
    assert_eq!(snapshot.position, ack.position);
    reader.close().await;
}
