//! The generic QUIC server: bounded concurrency per connection and stopping on cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plaza_net::{QuicOptions, RpcHandler, RpcService, endpoint, frame, serve_connections, tls};
use quinn::{ClientConfig, Endpoint};
use tokio_util::sync::CancellationToken;

/// The protocol of this test (any ALPN works; the server dispatches on it).
const ALPN_TEST: &[u8] = b"plaza-test/1";

/// Doubles numbers slowly and records how many requests it ran at once.
#[derive(Clone, Default)]
struct SlowDoubler {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl RpcHandler for SlowDoubler {
    type Request = u64;
    type Reply = u64;

    async fn handle(&self, n: u64) -> u64 {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        n * 2
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_never_has_more_requests_in_flight_than_the_limit_and_all_are_answered() {
    let generated = tls::generate(
        "test",
        &[
            ("server", tls::NodeRole::Broker(1)),
            ("client", tls::NodeRole::Edge),
        ],
        &[],
    )
    .unwrap();
    let server_tls = generated.identity("server").unwrap();
    let client_tls = generated.identity("client").unwrap();
    let options = QuicOptions {
        max_concurrent_streams: 3,
        ..QuicOptions::default()
    };
    let endpoint = endpoint(
        &server_tls,
        "127.0.0.1:0".parse().unwrap(),
        &options,
        &[ALPN_TEST],
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let handler = SlowDoubler::default();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_connections(
        endpoint.clone(),
        RpcService::new(ALPN_TEST, handler.clone(), options),
        cancel.clone(),
    ));

    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = ClientConfig::new(Arc::new(client_tls.client_config(&[ALPN_TEST]).unwrap()));
    let conn = client
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..12u64 {
        let conn = conn.clone();
        calls.spawn(async move {
            let (send, recv) = conn.open_bi().await.unwrap();
            let doubled: u64 = frame::exchange(send, recv, &n).await.unwrap();
            assert_eq!(doubled, n * 2);
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let peak = handler.peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak of {peak} requests at once");

    // Cancelling stops the server and closes the connections it accepted.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not stop")
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("connection not closed");
    println!("after cancel: {reason}");
    endpoint.close(frame::CLOSE_SHUTDOWN, b"done");
}
