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
    let events = tokio::time::timeout(Duration::from_secs(90), conformance::run_events(&backend));
    events.await.expect("the event checks finish in time");
    let state = tokio::time::timeout(Duration::from_secs(90), conformance::run_state(&backend));
    state.await.expect("the state room checks finish in time");
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

/// A backend on `nats` with the conformance rooms and one link attached as `edge`.
async fn attached(
    nats: &NatsCluster,
    edge: &str,
) -> (NatsBackend, <NatsBackend as plaza_backend::Backend>::Link) {
    use plaza_backend::{AttachOptions, Backend};
    let options = NatsOptions {
        servers: nats.urls(),
        ..NatsOptions::default()
    };
    let backend = NatsBackend::connect(&conformance::rooms_config(), options)
        .await
        .expect("connect to NATS");
    let (link, _events) = backend
        .attach(AttachOptions {
            edge: plaza_proto::EdgeId::new(edge),
            lease: Duration::from_secs(10),
        })
        .await
        .expect("attach");
    (backend, link)
}

/// Finding 9 of the hostile-client review: the NATS link remembered the last offset of every
/// room it ever published to, so one user publishing to ever new rooms grew every edge's map
/// without bound. Rooms no publish is using are now forgotten beyond a fixed number, and a
/// forgotten room's next publish still gets the right offset (it asks the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_ever_new_rooms_does_not_grow_the_link_without_bound() {
    use futures_util::StreamExt;
    use plaza_backend::EdgeLink;
    use plaza_backend::nats::link::PUBLISHING_CACHE;
    use plaza_proto::{Payload, RoomName};

    let nats = NatsCluster::single();
    let (_backend, link) = attached(&nats, "spray-edge").await;
    let rooms = PUBLISHING_CACHE + 300;
    let data = Payload::from_json("1").unwrap();
    let mut sprayed = futures_util::stream::iter(0..rooms)
        .map(|i| {
            let link = link.clone();
            let data = data.clone();
            async move {
                let room = RoomName::new(&format!("chat:spray-{i}")).unwrap();
                let ack = link.publish(room, data, None, None).await.expect("publish");
                (i, ack.position.offset)
            }
        })
        .buffer_unordered(32);
    let mut first = 0;
    while let Some((i, offset)) = sprayed.next().await {
        if i == 0 {
            first = offset;
        }
    }
    drop(sprayed);
    assert!(
        link.remembered_rooms() <= PUBLISHING_CACHE + 32,
        "the link remembers {} rooms",
        link.remembered_rooms()
    );
    // The first room was forgotten; publishing to it again asks the stream and succeeds first
    // time (a stale expectation would be refused and retried, not stored out of order).
    let again = link
        .publish(
            RoomName::new("chat:spray-0").unwrap(),
            data.clone(),
            None,
            None,
        )
        .await
        .expect("publish again");
    assert!(again.position.offset > first, "{again:?} after {first}");
    assert!(!again.duplicate);
}

/// The webhook sender's claim on NATS: one edge at a time until its lease runs out, cursors
/// only move forward and only for the holder, and the feed reads the same from every edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_sender_at_a_time_and_only_it_moves_cursors() {
    use plaza_backend::EdgeLink;
    use plaza_proto::cluster::BrokerError;
    use plaza_proto::events::EventFilter;

    let nats = NatsCluster::single();
    let (_a, first) = attached(&nats, "sender-a").await;
    let (_b, second) = attached(&nats, "sender-b").await;
    let lease = Duration::from_millis(1500);
    let claim = first.claim_webhooks(lease).await.expect("claim");
    assert!(claim.granted, "a free claim is granted");
    let other = second.claim_webhooks(lease).await.expect("claim");
    assert!(
        !other.granted,
        "a held claim is not granted to another edge"
    );
    first.ack_webhooks("hook".into(), 5).await.expect("ack");
    first
        .ack_webhooks("hook".into(), 3)
        .await
        .expect("ack back");
    let refused = second.ack_webhooks("hook".into(), 9).await;
    assert!(
        matches!(refused, Err(BrokerError::Invalid(_))),
        "{refused:?}"
    );
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken = second.claim_webhooks(lease).await.expect("claim");
    assert!(taken.granted, "the claim is free after the lease");
    assert_eq!(
        taken.cursors.get("hook"),
        Some(&5),
        "cursors never move back"
    );
    let fenced = first.ack_webhooks("hook".into(), 7).await;
    assert!(matches!(fenced, Err(BrokerError::Invalid(_))), "{fenced:?}");
    let a = first
        .events(None, 100, EventFilter::default())
        .await
        .expect("feed");
    let b = second
        .events(None, 100, EventFilter::default())
        .await
        .expect("feed");
    assert_eq!(a.latest, b.latest, "every edge reads the same feed");
    first.close().await;
    second.close().await;
}

/// The edge of a user's last connection dies (no close) while it also holds the deriver role:
/// another edge takes over deriving, the dead edge's lease runs out and its member is removed,
/// and `user.offline` is in the feed exactly once, one debounce later — with `user.online`
/// once before it (the new deriver repeats nothing the old one announced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_offline_follows_once_when_the_deriving_edge_of_the_last_tab_dies() {
    use plaza_backend::{AttachOptions, Backend, EdgeLink};
    use plaza_proto::events::{EventFilter, EventType};
    use plaza_proto::{ClientId, EdgeId, Member, RoomName, UserId};

    let nats = NatsCluster::single();
    let options = NatsOptions {
        servers: nats.urls(),
        reap_every: Duration::from_millis(200),
        ..NatsOptions::default()
    };
    let backend = NatsBackend::connect(&conformance::rooms_config(), options)
        .await
        .expect("connect to NATS");
    let attach = |edge: &str| {
        backend.attach(AttachOptions {
            edge: EdgeId::new(edge),
            lease: Duration::from_secs(1),
        })
    };
    let (dying, _dying_events) = attach("dying-edge").await.expect("attach");
    // The first link becomes the deriver (nobody else competes yet).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (survivor, _survivor_events) = attach("surviving-edge").await.expect("attach");
    let user = UserId::new("last-tab-user");
    let room = RoomName::new("conf:dying").unwrap();
    let member = Member {
        client: ClientId::new("tab-1"),
        user: user.clone(),
        info: None,
    };
    dying.join(room, member).await.expect("join");
    let online = |kinds: &[EventType]| {
        kinds
            .iter()
            .filter(|k| **k == EventType::UserOnline)
            .count()
    };
    let offline = |kinds: &[EventType]| {
        kinds
            .iter()
            .filter(|k| **k == EventType::UserOffline)
            .count()
    };
    let kinds_of_user = || async {
        let page = survivor
            .events(None, 1000, EventFilter::default())
            .await
            .expect("feed");
        page.events
            .into_iter()
            .filter(|e| e.user.as_ref() == Some(&user))
            .map(|e| e.kind)
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while online(&kinds_of_user().await) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no user.online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(dying); // the edge dies: no close, no leave
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let kinds = kinds_of_user().await;
        if offline(&kinds) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no user.offline after the edge died: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything emitted twice would come within another debounce.
    tokio::time::sleep(conformance::EVENT_DEBOUNCE + Duration::from_secs(1)).await;
    let kinds = kinds_of_user().await;
    assert_eq!(
        kinds,
        [
            EventType::UserOnline,
            EventType::UserJoined,
            EventType::UserLeft,
            EventType::UserOffline
        ],
        "each event once, in order"
    );
    survivor.close().await;
}
