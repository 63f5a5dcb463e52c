//! The cluster certificate generator: what it writes loads back and works for QUIC.

mod quic_support;
mod raft_support;

use std::time::Duration;

use plaza_broker::raft::QuicTransport;
use plaza_broker::raft::{BrokerNode, RaftRpcReply, RaftTransport};
use plaza_net::QuicOptions;
use plaza_net::tls::{self, CA_CERT_FILE, CA_KEY_FILE, ClusterTls, NodeRole, TlsError};
use plaza_proto::links::ALPN_RAFT;
use quic_support::QuicNode;
use raft_support::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_certificates_written_to_a_directory_load_back_and_connect() {
    let generated = tls::generate(
        "plaza",
        &[
            ("broker-1", NodeRole::Broker(1)),
            ("broker-2", NodeRole::Broker(2)),
        ],
        &["brokers.svc"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    tls::write_dir(&generated, dir.path()).unwrap();

    for file in [
        CA_CERT_FILE,
        CA_KEY_FILE,
        "node-broker-1.pem",
        "node-broker-1.key",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-broker-2.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }

    let one = ClusterTls::load_dir(dir.path(), "broker-1").unwrap();
    let two = ClusterTls::load_dir(dir.path(), "broker-2").unwrap();
    assert_eq!(one.ca, two.ca);
    assert_eq!(one.cert_chain.len(), 1);
    one.server_config(&[ALPN_RAFT]).unwrap();
    one.client_config(&[ALPN_RAFT]).unwrap();

    // Loaded identities talk to each other: a stale vote round trip over QUIC.
    let node = QuicNode::start(1, &one, config()).await;
    let transport = QuicTransport::new(
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap(),
        &two,
        QuicOptions::default(),
    )
    .unwrap();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(0, 2), None);
    let reply = transport
        .call(
            1,
            &BrokerNode::new(node.addr.to_string()),
            plaza_broker::raft::RaftRpc::Vote(vote),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(matches!(reply, RaftRpcReply::Vote(Ok(_))), "{reply:?}");
    node.kill().await;
}

#[test]
fn loading_missing_or_empty_files_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ClusterTls::load_dir(dir.path(), "broker-9").unwrap_err();
    assert!(missing.to_string().contains(CA_CERT_FILE), "{missing}");

    let generated = tls::generate("plaza", &[("broker-1", NodeRole::Broker(1))], &[]).unwrap();
    tls::write_dir(&generated, dir.path()).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = ClusterTls::load(&dir.path().join(CA_CERT_FILE), &empty, &empty).unwrap_err();
    assert!(
        matches!(err, TlsError::Pem { ref path, .. } if path == &empty),
        "{err}"
    );
}
