//! `plaza-edge --backend nats` processes on real `nats-server`s: clients on different edges,
//! recovery through the other edge, a NATS server killed while publishing, an edge killed,
//! and an edge started before NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plaza_cluster_tests::nats::NatsCluster;
use plaza_cluster_tests::presence_list::{PresenceList, assert_tracked, settle, spawn_churn};
use plaza_cluster_tests::workload::{check_delivery, publish_until};
use plaza_cluster_tests::ws::{Client, Ended};
use plaza_cluster_tests::{EdgeProcess, http_get, tail, token};
use serde_json::{Value, json};

const SECRET: &str = "nats-edges-test-secret-0123456789abcdef";
const LEASE: Duration = Duration::from_secs(2);

fn nats_edge(nats: &NatsCluster, name: &str, replicas: usize) -> EdgeProcess {
    let edge = spawn_edge(nats, name, replicas);
    edge.wait_ready(Duration::from_secs(20));
    edge
}

fn spawn_edge(nats: &NatsCluster, name: &str, replicas: usize) -> EdgeProcess {
    spawn_edge_on(nats, name, replicas, &nats.urls())
}

/// An edge that knows only the NATS servers at `urls`.
fn spawn_edge_on(nats: &NatsCluster, name: &str, replicas: usize, urls: &[String]) -> EdgeProcess {
    let args: Vec<String> = vec![
        "--backend".into(),
        "nats".into(),
        "--nats".into(),
        urls.join(","),
    ];
    // Room history far beyond what these tests publish: an edge whose NATS server was killed
    // catches up from the stream after its consumers are back, which can take a JetStream
    // meta-leader election (4-9 s) while the other edge keeps publishing; with the default 100
    // the missed publications would be pruned first and the edge would (correctly) end its
    // link and close its clients with 4004 instead.
    let env = [
        ("PLAZA_NATS__REPLICAS", replicas.to_string()),
        ("PLAZA_NATS__REAP_EVERY", "200ms".to_owned()),
        ("PLAZA_ROOMS__DEFAULTS__HISTORY_SIZE", "100000".to_owned()),
    ];
    EdgeProcess::spawn_with_env(nats.dir(), name, &args, SECRET, LEASE, &env)
}

async fn subscribe(client: &mut Client, fields: Value) -> Value {
    let mut command = json!({"op": "subscribe"});
    for (k, v) in fields.as_object().expect("object") {
        command[k] = v.clone();
    }
    let reply = client.call(command).await;
    reply
        .get("ok")
        .cloned()
        .unwrap_or_else(|| panic!("subscribe refused: {reply}"))
}

/// The next push of `kind` (for join/leave: of `user`'s member).
async fn next_push_of(
    client: &mut Client,
    kind: &str,
    user: Option<&str>,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_push(left).await {
            Ok(push)
                if push["push"] == kind && user.is_none_or(|u| push["member"]["user"] == u) =>
            {
                return push;
            }
            Ok(_) => {}
            Err(e) => panic!("no {kind} push within {within:?}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_edges_chat_see_presence_and_recover_through_the_other_edge() {
    let nats = NatsCluster::single();
    let a = nats_edge(&nats, "edge-a", 1);
    let b = nats_edge(&nats, "edge-b", 1);
    let room = "chat:nats";
    let mut ann = Client::connect(&a.ws_url(), &token(SECRET, "ann")).await;
    subscribe(&mut ann, json!({"room": room, "presence": true})).await;
    let mut bob = Client::connect(&b.ws_url(), &token(SECRET, "bob")).await;
    subscribe(&mut bob, json!({"room": room})).await;
    let join = next_push_of(&mut ann, "join", Some("bob"), Duration::from_secs(10)).await;
    assert_eq!(join["member"]["user"], "bob");

    let reply = bob
        .call(json!({"op": "publish", "room": room, "data": {"text": "hi ann"}}))
        .await;
    let first = reply["ok"]["offset"].as_u64().expect("offset");
    let epoch = reply["ok"]["epoch"].clone();
    let push = next_push_of(&mut ann, "pub", None, Duration::from_secs(10)).await;
    assert_eq!(push["data"]["text"], "hi ann");
    assert_eq!(push["offset"].as_u64(), Some(first));

    let reply = ann.call(json!({"op": "presence", "room": room})).await;
    let users: Vec<&str> = reply["ok"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert!(
        users.contains(&"ann") && users.contains(&"bob"),
        "{users:?}"
    );

    // Ann drops off edge A; Bob goes on; Ann comes back through edge B and recovers.
    drop(ann);
    let mut missed = Vec::new();
    for n in 0..3 {
        let reply = bob
            .call(json!({"op": "publish", "room": room, "data": {"n": n}}))
            .await;
        missed.push(reply["ok"]["offset"].as_u64().expect("offset"));
    }
    let mut ann = Client::connect(&b.ws_url(), &token(SECRET, "ann")).await;
    let ok = subscribe(
        &mut ann,
        json!({"room": room, "recover": {"epoch": epoch, "offset": first}}),
    )
    .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    let offsets: Vec<u64> = ok["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(offsets, missed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_nats_server_of_three_loses_no_acknowledged_publication() {
    let mut nats = NatsCluster::start(3);
    let sub_edge = nats_edge(&nats, "edge-sub", 3);
    let pub_edge = nats_edge(&nats, "edge-pub", 3);
    let room = "chat:nats-failover";
    let mut subscriber = Client::connect(&sub_edge.ws_url(), &token(SECRET, "sub")).await;
    subscribe(&mut subscriber, json!({"room": room})).await;
    let publisher = Client::connect(&pub_edge.ws_url(), &token(SECRET, "pub")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher, room, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.kill(0);
    let killed = Instant::now();
    // Long enough for JetStream to elect new stream leaders even on a loaded machine.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = publishing.await.expect("publisher");
    let after = attempts
        .iter()
        .filter(|a| a.sent >= killed && a.offset.is_some())
        .count();
    assert!(
        after > 0,
        "no publish succeeded after the kill\n{}\n{}",
        tail(&sub_edge.log, 20),
        tail(&pub_edge.log, 20)
    );
    let failed = attempts.iter().filter(|a| a.offset.is_none()).count();
    let mut reasons: Vec<&str> = attempts.iter().filter_map(|a| a.error.as_deref()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    println!("publish errors during the failover: {reasons:?}");
    let delivered = check_delivery(&mut subscriber, &attempts).await;
    println!(
        "{delivered} publications delivered exactly once, in order; {failed} publishes failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_s_members_leave_within_its_lease() {
    let nats = NatsCluster::single();
    let mut doomed = nats_edge(&nats, "edge-doomed", 1);
    let survivor = nats_edge(&nats, "edge-survivor", 1);
    let room = "chat:nats-presence";
    let mut watcher = Client::connect(&survivor.ws_url(), &token(SECRET, "watcher")).await;
    subscribe(&mut watcher, json!({"room": room, "presence": true})).await;
    let mut ghost = Client::connect(&doomed.ws_url(), &token(SECRET, "ghost")).await;
    subscribe(&mut ghost, json!({"room": room})).await;
    let join = next_push_of(&mut watcher, "join", Some("ghost"), Duration::from_secs(10)).await;
    assert_eq!(join["member"]["user"], "ghost");
    doomed.process.kill();
    let killed = Instant::now();
    let leave = next_push_of(
        &mut watcher,
        "leave",
        Some("ghost"),
        LEASE + Duration::from_secs(5),
    )
    .await;
    assert_eq!(leave["member"]["user"], "ghost");
    println!(
        "the ghost left {:?} after its edge was killed",
        killed.elapsed()
    );
    let reply = watcher.call(json!({"op": "presence", "room": room})).await;
    let members = reply["ok"]["members"].as_array().expect("members").clone();
    assert!(members.iter().all(|m| m["user"] != "ghost"), "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_started_before_nats_becomes_ready_when_nats_comes_up() {
    let mut nats = NatsCluster::prepare(1);
    let edge = spawn_edge(&nats, "edge-early", 1);
    // Up and answering, but not ready, and clients are told to come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(edge.addr, "/healthz").is_none() {
        assert!(
            Instant::now() < deadline,
            "edge did not start:\n{}",
            tail(&edge.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = http_get(edge.addr, "/readyz").expect("readyz answers");
    assert_eq!(code, 503, "ready without NATS");
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url())
        .await
        .expect("upgrade");
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a close frame");
    match closed {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4004, "{frame:?}");
        }
        other => panic!("expected close 4004, got {other:?}"),
    }

    nats.start_node(0);
    nats.wait_healthy(Duration::from_secs(20));
    edge.wait_ready(Duration::from_secs(20));
    let mut client = Client::connect(&edge.ws_url(), &token(SECRET, "late")).await;
    subscribe(&mut client, json!({"room": "chat:late"})).await;
    let reply = client
        .call(json!({"op": "publish", "room": "chat:late", "data": 1}))
        .await;
    assert!(reply.get("ok").is_some(), "{reply}");
    match client.next_push(Duration::from_secs(5)).await {
        Ok(push) => assert_eq!(push["push"], "pub"),
        Err(Ended::Timeout) => panic!("no publication pushed"),
        Err(e) => panic!("{e:?}"),
    }
}

/// Hostile input, finding 2: `"idem": "a\nb"` used to reach async-nats' header code, which
/// panics on CR/LF, killing the session task without cleanup (a zombie that kept receiving
/// publications). Now the key is refused as a bad request before any broker call, on the
/// WebSocket and on the server API, and the connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idem_key_with_a_newline_is_refused_and_the_session_survives_on_nats() {
    let nats = NatsCluster::single();
    let edge = nats_edge(&nats, "edge-idem", 1);
    let room = "chat:idem-newline";
    let mut ann = Client::connect(&edge.ws_url(), &token(SECRET, "ann")).await;
    subscribe(&mut ann, json!({"room": room})).await;
    for key in ["a\nb", "a\rb", "tab\there", "nul\u{0}"] {
        let reply = ann
            .call(json!({"op": "publish", "room": room, "data": 1, "idem": key}))
            .await;
        assert_eq!(
            reply["error"]["code"], 102,
            "{key:?}: bad_request expected, got {reply}"
        );
    }
    let ok = ann
        .call(json!({"op": "publish", "room": room, "data": "still here", "idem": "k-1"}))
        .await;
    assert!(ok.get("ok").is_some(), "{ok}");
    let push = next_push_of(&mut ann, "pub", None, Duration::from_secs(5)).await;
    assert_eq!(push["data"], "still here", "{push}");
}

/// Issue 17 on NATS: join/leave events published while an edge's NATS connection is down are
/// lost to it; after the reconnect it sends its presence subscribers a `presence_resync`, so a
/// member list kept from pushes ends equal to the room's presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_list_kept_from_pushes_survives_the_edge_s_nats_server_dying() {
    let mut nats = NatsCluster::start(3);
    let urls = nats.urls();
    let watched = spawn_edge_on(&nats, "edge-watched", 3, &urls[..1]);
    watched.wait_ready(Duration::from_secs(20));
    let churn_edge = spawn_edge_on(&nats, "edge-churn", 3, &urls[1..]);
    churn_edge.wait_ready(Duration::from_secs(20));
    let room = "chat:nats-resync";
    let mut watcher = Client::connect(&watched.ws_url(), &token(SECRET, "watcher")).await;
    let mut list = PresenceList::watch(&mut watcher, room).await;
    let churn = spawn_churn(churn_edge.ws_url(), room, SECRET);
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill(0); // the watched edge's only configured server
    tokio::time::sleep(Duration::from_millis(3000)).await;
    nats.start_node(0);
    let present = churn.await.expect("churn");
    let actual = settle(&mut watcher, &mut list, room, Duration::from_secs(3)).await;
    assert_tracked(&list, &actual, &tail(&watched.log, 30));
    drop(present);
    println!("NATS server killed under the watcher's edge during churn");
}

/// A leave that fails while JetStream is unreachable is retried by the edge's link once NATS
/// is back, instead of leaving the member listed for the edge's whole life (its lease is
/// renewed, so no other edge would ever remove it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_that_failed_while_nats_was_down_is_retried() {
    let mut nats = NatsCluster::single();
    let edge = nats_edge(&nats, "edge-retry", 1);
    let room = "chat:nats-leave-retry";
    let mut leaver = Client::connect(&edge.ws_url(), &token(SECRET, "leaver")).await;
    subscribe(&mut leaver, json!({"room": room})).await;
    nats.kill(0);
    // The edge answers the unsubscribe; its leave could not reach JetStream.
    let reply = leaver
        .call(json!({"op": "unsubscribe", "room": room}))
        .await;
    assert!(reply.get("ok").is_some(), "{reply}");
    nats.start_node(0);
    nats.wait_healthy(Duration::from_secs(20));
    edge.wait_ready(Duration::from_secs(20));
    let mut watcher = Client::connect(&edge.ws_url(), &token(SECRET, "watcher")).await;
    subscribe(&mut watcher, json!({"room": room, "presence": true})).await;
    let deadline = Instant::now() + LEASE * 5;
    loop {
        let reply = watcher.call(json!({"op": "presence", "room": room})).await;
        let members = reply["ok"]["members"].as_array().expect("members").clone();
        if members.iter().all(|m| m["user"] != "leaver") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leaver is still listed {:?} after NATS came back: {members:?}\n{}",
            LEASE * 5,
            tail(&edge.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
