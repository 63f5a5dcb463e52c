//! What a real `plaza-broker` lets each cluster certificate do (finding 4 of the hardening
//! issue: "any cluster certificate can act as a broker"). Every test is one attack, made with a
//! certificate the harness issued from the cluster's own CA, so the TLS handshake succeeds and
//! only the role checks stand in the way (`docs/security.md`, "Cluster identities"):
//!
//! - an edge certificate may not speak `plaza-raft/1` at all (closed with `ERR_WRONG_ROLE`);
//! - a broker certificate may not send Raft RPCs claiming another node's id;
//! - an edge certificate may not attach as another edge (and so cannot detach it, which would
//!   remove that edge's members);
//! - a snapshot chunk with a huge offset is refused instead of making the broker reserve
//!   `offset` bytes (before: the broker process aborted on the allocation).
//!
//! The attackers are raw QUIC connections; each test ends by checking that the broker process
//! is still running and that well-behaved edges are still served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, Vote};
use plaza_backend::cluster::ClusterOptions;
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::raft::{RaftRpc, RaftRpcReply, TypeConfig};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_net::frame::{self, ERR_WRONG_ROLE};
use plaza_net::framing::{FrameReader, write_one};
use plaza_net::tls::ClusterTls;
use plaza_proto::cluster::{BrokerEvent, EdgeRequest, PROTOCOL_VERSION};
use plaza_proto::links::{ALPN_EDGE, ALPN_RAFT};
use plaza_proto::{ClientId, EdgeId, Member, RoomName, UserId};
use quinn::{ClientConfig, Connection, ConnectionError, Endpoint};

/// How long a test waits for the broker to answer or to close a connection.
const PATIENCE: Duration = Duration::from_secs(5);

/// A one-broker cluster (node 1) with an elected leader.
fn cluster() -> BrokerCluster {
    let mut cluster = BrokerCluster::start(1, BrokerConfig::default());
    cluster.wait_leader(Duration::from_secs(20));
    cluster
}

/// A QUIC connection to broker 1 presenting certificate `cert` and offering `alpn`. The
/// handshake must succeed: every certificate here is signed by the cluster CA.
async fn connect(cluster: &BrokerCluster, cert: &str, alpn: &[u8]) -> (Endpoint, Connection) {
    let endpoint =
        Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a client UDP socket");
    let tls: ClusterTls = cluster.tls(cert);
    let config = ClientConfig::new(Arc::new(tls.client_config(&[alpn]).expect("client TLS")));
    let connecting = endpoint
        .connect_with(config, cluster.slots[0].quic, "127.0.0.1")
        .expect("a dial the endpoint accepts");
    let conn = tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("the handshake neither completed nor failed in time")
        .expect("a certificate of the cluster's CA completes the handshake");
    (endpoint, conn)
}

/// Sends one Raft RPC on `conn` and returns the reply, or why there was none.
async fn raft_call(conn: &Connection, rpc: &RaftRpc) -> Result<RaftRpcReply, String> {
    let exchange = async {
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        frame::exchange::<RaftRpc, RaftRpcReply>(send, recv, rpc)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(reply) => reply,
        Err(_) => Err("no reply in time".into()),
    }
}

/// Waits for the broker to close `conn` with [`ERR_WRONG_ROLE`]; returns its reason.
async fn assert_closed_for_role(conn: &Connection, case: &str) -> String {
    match tokio::time::timeout(PATIENCE, conn.closed()).await {
        Ok(ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, ERR_WRONG_ROLE, "{case}: {close:?}");
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        Ok(other) => panic!("{case}: expected a close with ERR_WRONG_ROLE, got {other:?}"),
        Err(_) => panic!("{case}: the broker kept the connection open"),
    }
}

/// A vote request from candidate `candidate` in a term far above the cluster's.
fn vote_as(candidate: u64) -> RaftRpc {
    RaftRpc::Vote(VoteRequest::new(Vote::new(1_000, candidate), None))
}

/// A well-behaved edge (certificate `edge-4`) attaches, joins a member and reads it back; and
/// broker 1 is still running.
async fn assert_edges_served(cluster: &mut BrokerCluster, case: &str) {
    assert!(
        cluster.running(1),
        "{case}: the broker exited\n{}",
        cluster.logs()
    );
    let backend = cluster.backend("edge-4", ClusterOptions::default());
    let options = AttachOptions {
        edge: EdgeId::new("bystander".to_owned()),
        lease: Duration::from_secs(5),
    };
    let (link, _events) = match backend.attach(options).await {
        Ok(attached) => attached,
        Err(e) => panic!(
            "{case}: a well-behaved edge cannot attach: {e}\n{}",
            cluster.logs()
        ),
    };
    let room = RoomName::new("chat:bystander").expect("a room name");
    link.join(room.clone(), member("bystander-1"))
        .await
        .expect("join as a well-behaved edge");
    let members = link
        .presence(room, None, u32::MAX)
        .await
        .map(|p| p.members)
        .expect("presence");
    assert_eq!(members.len(), 1, "{case}: {members:?}");
    link.close().await;
    assert!(
        cluster.running(1),
        "{case}: the broker exited\n{}",
        cluster.logs()
    );
}

fn member(client: &str) -> Member {
    Member {
        client: ClientId::new(client),
        user: UserId::new("user"),
        info: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_certificate_is_refused_on_the_raft_alpn() {
    let mut cluster = cluster();
    let (_endpoint, conn) = connect(&cluster, "edge-3", ALPN_RAFT).await;
    // Before roles, this vote for a term far above the cluster's was answered (and granted
    // if the log was long enough): an edge's key could campaign and depose the leader.
    let reply = raft_call(&conn, &vote_as(1)).await;
    assert!(
        reply.is_err(),
        "an edge certificate got an answer to a Raft vote: {reply:?}"
    );
    let why = assert_closed_for_role(&conn, "an edge on plaza-raft/1").await;
    assert!(why.contains("broker certificates only"), "{why}");
    assert_edges_served(&mut cluster, "after an edge on the Raft ALPN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_cannot_send_raft_rpcs_as_another_node() {
    let mut cluster = cluster();
    let (_endpoint, conn) = connect(&cluster, "broker-1", ALPN_RAFT).await;
    // Broker 1's key claiming to be candidate 2.
    match raft_call(&conn, &vote_as(2)).await {
        Ok(RaftRpcReply::Refused(why)) => {
            assert!(why.contains("node 2") && why.contains("node 1"), "{why}")
        }
        other => panic!("a vote as another node was not refused: {other:?}"),
    }
    // Its own id is served (the vote is answered, whatever its outcome).
    match raft_call(&conn, &vote_as(1)).await {
        Ok(RaftRpcReply::Vote(_)) => {}
        other => panic!("a vote as the certificate's own node: {other:?}"),
    }
    assert_edges_served(&mut cluster, "after a vote as another node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cannot_say_hello_as_another_edge_and_detach_its_members() {
    let mut cluster = cluster();
    // The victim: certificate edge-1, edge id "edge-1", one member in a room.
    let victim = cluster.backend("edge-1", ClusterOptions::default());
    let options = AttachOptions {
        edge: EdgeId::new("edge-1".to_owned()),
        lease: Duration::from_secs(30),
    };
    let (link, _events) = victim.attach(options).await.expect("the victim attaches");
    let room = RoomName::new("chat:victim").expect("a room name");
    link.join(room.clone(), member("victim-1"))
        .await
        .expect("the victim's member joins");

    // The attacker holds edge-2's certificate and says Hello as "edge-1", then Detach.
    let (_endpoint, conn) = connect(&cluster, "edge-2", ALPN_EDGE).await;
    let (mut send, recv) = conn.open_bi().await.expect("open the session stream");
    let hello = EdgeRequest::Hello {
        version: PROTOCOL_VERSION,
        edge: EdgeId::new("edge-1".to_owned()),
        lease_ms: 30_000,
    };
    write_one(&mut send, &hello).await.expect("write the hello");
    let mut reader = FrameReader::new(recv);
    let answer = tokio::time::timeout(PATIENCE, reader.next::<BrokerEvent>()).await;
    if let Ok(Ok(Some(BrokerEvent::Welcome { .. }))) = answer {
        // What happened before: the impersonation was welcomed and could detach the victim.
        let _ = write_one(&mut send, &EdgeRequest::Detach).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let why = assert_closed_for_role(&conn, "a hello as another edge").await;
    assert!(why.contains("does not belong"), "{why}");

    let members = link
        .presence(room, None, u32::MAX)
        .await
        .map(|p| p.members)
        .expect("the victim still reads presence");
    assert_eq!(
        members,
        vec![member("victim-1")],
        "the victim's member was removed by another edge"
    );
    link.close().await;
    assert_edges_served(&mut cluster, "after a hello as another edge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_with_a_huge_offset_does_not_make_the_broker_reserve_it() {
    let mut cluster = cluster();
    let (_endpoint, conn) = connect(&cluster, "broker-1", ALPN_RAFT).await;
    let chunk = |offset: u64| {
        RaftRpc::InstallSnapshot(InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(1_000, 1),
            meta: SnapshotMeta {
                snapshot_id: "attack".into(),
                ..SnapshotMeta::default()
            },
            offset,
            data: vec![0; 16],
            done: false,
        })
    };
    // A snapshot starts...
    match raft_call(&conn, &chunk(0)).await {
        Ok(RaftRpcReply::InstallSnapshot(_)) => {}
        other => panic!("the first chunk: {other:?}"),
    }
    // ...and its next chunk claims to start 4 EiB in. Before, openraft seeked there and the
    // broker tried to grow the snapshot buffer to that size (the process aborted).
    match raft_call(&conn, &chunk(1 << 62)).await {
        Ok(RaftRpcReply::InstallSnapshot(Err(e))) => {
            let why = e.to_string();
            assert!(why.contains("attack"), "{why}");
        }
        other => panic!(
            "a chunk 4 EiB past the received bytes was not refused: {other:?}\n{}",
            cluster.logs()
        ),
    }
    assert_edges_served(&mut cluster, "after a snapshot chunk with a huge offset").await;
}
