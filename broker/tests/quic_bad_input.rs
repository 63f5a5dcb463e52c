//! What a broker's QUIC port does with peers that are not well-behaved cluster members:
//! garbage, another protocol version, a certificate from another CA, no certificate at all.
//! In every case it refuses that peer and keeps serving the others.

mod quic_support;
mod raft_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::Vote;
use openraft::raft::VoteRequest;
use plaza_broker::raft::QuicTransport;
use plaza_broker::raft::{BrokerNode, RaftRpc, RaftRpcReply, RaftTransport, TransportError};
use plaza_net::QuicOptions;
use plaza_net::frame::{self, ERR_BAD_REQUEST, FrameError, PROTOCOL_VERSION};
use plaza_net::tls::{self, ClusterTls};
use plaza_proto::links::ALPN_RAFT;
use quic_support::{QuicNode, generate_tls, node_name};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ClientConfig, Connection, Endpoint, ReadError, ReadToEndError};
use raft_support::config;

/// A harmless real RPC: a vote request for term 0, which the node answers with a refusal.
fn stale_vote() -> RaftRpc {
    RaftRpc::Vote(VoteRequest::new(Vote::new(0, 9), None))
}

fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client_config(tls: &ClusterTls, alpn: &[u8]) -> ClientConfig {
    ClientConfig::new(Arc::new(tls.client_config(&[alpn]).unwrap()))
}

/// Connects and completes one RPC, or says why not.
async fn try_rpc(config: ClientConfig, addr: SocketAddr) -> Result<RaftRpcReply, String> {
    let endpoint = client_endpoint();
    let attempt = async {
        let conn = endpoint
            .connect_with(config, addr, "127.0.0.1")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // With TLS 1.3 the client may finish its side of the handshake before the server has
        // checked the client's certificate: a refusal then shows up as the connection closing.
        let closed = |e: String| format!("{e}; connection: {:?}", conn.close_reason());
        let (send, recv) = conn.open_bi().await.map_err(|e| closed(e.to_string()))?;
        frame::exchange::<_, RaftRpcReply>(send, recv, &stale_vote())
            .await
            .map_err(|e| closed(e.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn assert_vote_refused(reply: RaftRpcReply) {
    match reply {
        RaftRpcReply::Vote(Ok(vote)) => assert!(!vote.vote_granted),
        other => panic!("unexpected {other:?}"),
    }
}

/// A single-node cluster served over QUIC, and a client identity from the same CA.
async fn server() -> (QuicNode, ClusterTls, tls::GeneratedCluster) {
    let generated = generate_tls(1);
    let node = QuicNode::start(1, &generated.identity(&node_name(1)).unwrap(), config()).await;
    let members = [(1, BrokerNode::new(node.addr.to_string()))].into();
    node.node.initialize(members).await.unwrap();
    let client = generated.identity(&node_name(2)).unwrap();
    (node, client, generated)
}

async fn connect(tls: &ClusterTls, addr: SocketAddr) -> (Endpoint, Connection) {
    let endpoint = client_endpoint();
    let conn = endpoint
        .connect_with(client_config(tls, ALPN_RAFT), addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    (endpoint, conn)
}

/// Sends `bytes` as a whole request stream and returns what comes back.
async fn send_raw(conn: &Connection, bytes: &[u8]) -> Result<Vec<u8>, ReadToEndError> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .expect("no answer to a raw stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_streams_are_reset_and_the_server_keeps_serving_other_streams() {
    let (node, client, _) = server().await;
    let (_endpoint, conn) = connect(&client, node.addr).await;

    let mut huge = frame::MAGIC.to_vec();
    huge.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    huge.extend_from_slice(&u32::MAX.to_be_bytes()); // a length far over MAX_FRAME
    let mut bad_body = frame::MAGIC.to_vec();
    bad_body.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bad_body.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let cases: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("random bytes", b"GET / HTTP/1.1\r\n\r\n"),
        ("header only", &huge[..6]),
        ("oversized length", &huge),
        ("undecodable body", &bad_body),
    ];
    for (what, bytes) in cases {
        match send_raw(&conn, bytes).await {
            Err(ReadToEndError::Read(ReadError::Reset(code))) => {
                assert_eq!(code, ERR_BAD_REQUEST, "{what}")
            }
            other => panic!("{what}: expected a reset, got {other:?}"),
        }
    }
    // The same connection still serves well-formed requests...
    let (send, recv) = conn.open_bi().await.unwrap();
    assert_vote_refused(frame::exchange(send, recv, &stale_vote()).await.unwrap());
    // ...and so does the node, to a new connection through the real transport.
    let transport = QuicTransport::new(client_endpoint(), &client, QuicOptions::default()).unwrap();
    let reply = transport
        .call(
            1,
            &BrokerNode::new(node.addr.to_string()),
            stale_vote(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_vote_refused(reply);
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_protocol_version_gets_an_explicit_version_error() {
    let (node, client, _) = server().await;
    let (_endpoint, conn) = connect(&client, node.addr).await;
    let request = frame::encode_request(&stale_vote(), PROTOCOL_VERSION + 1).unwrap();
    let reply = send_raw(&conn, &request).await.unwrap();
    match frame::decode_reply::<RaftRpcReply>(&reply) {
        Err(FrameError::UnsupportedVersion {
            supported, message, ..
        }) => {
            assert_eq!(supported, PROTOCOL_VERSION);
            assert!(
                message.contains("unsupported protocol version 2"),
                "{message}"
            );
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    // The connection is still good for the right version.
    let (send, recv) = conn.open_bi().await.unwrap();
    assert_vote_refused(frame::exchange(send, recv, &stale_vote()).await.unwrap());
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_cannot_connect() {
    let (node, client, generated) = server().await;
    let foreign = tls::generate("other", &[("broker-2", tls::NodeRole::Broker(2))], &[]).unwrap();
    let foreign = foreign.identity("broker-2").unwrap();

    // It trusts our CA but presents a certificate ours did not sign: the server refuses it.
    let impostor = ClusterTls {
        ca: generated.identity(&node_name(2)).unwrap().ca,
        ..foreign.clone()
    };
    let refused = try_rpc(client_config(&impostor, ALPN_RAFT), node.addr).await;
    println!("impostor: {refused:?}");
    assert!(refused.unwrap_err().contains("UnknownIssuer"));

    // A whole foreign cluster: its client does not trust our server either, and the
    // transport reports the node as unreachable (openraft backs off).
    let transport =
        QuicTransport::new(client_endpoint(), &foreign, QuicOptions::default()).unwrap();
    let target = BrokerNode::new(node.addr.to_string());
    let err = transport
        .call(1, &target, stale_vote(), Duration::from_secs(5))
        .await
        .unwrap_err();
    println!("foreign cluster: {err:?}");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");

    // Members still get through.
    assert_vote_refused(
        try_rpc(client_config(&client, ALPN_RAFT), node.addr)
            .await
            .unwrap(),
    );
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_with_another_alpn_is_refused() {
    let (node, client, _) = server().await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client.ca.clone()).unwrap();
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![ALPN_RAFT.to_vec()];
    let anonymous = ClientConfig::new(Arc::new(QuicClientConfig::try_from(anonymous).unwrap()));
    let refused = try_rpc(anonymous, node.addr).await;
    println!("anonymous: {refused:?}");
    assert!(refused.unwrap_err().contains("peer sent no certificates"));

    let refused = try_rpc(client_config(&client, b"plaza-edge/1"), node.addr).await;
    println!("other alpn: {refused:?}");
    assert!(refused.unwrap_err().contains("handshake"));

    assert_vote_refused(
        try_rpc(client_config(&client, ALPN_RAFT), node.addr)
            .await
            .unwrap(),
    );
    node.kill().await;
}
