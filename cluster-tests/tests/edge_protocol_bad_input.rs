//! What a real `plaza-broker` process does with edges that break the edge protocol (ALPN
//! `plaza-edge/1`, see `broker/src/serve_edges/mod.rs`), and that it keeps serving the edges that
//! follow it:
//!
//! - garbage on the session stream (noise, a length prefix of 1 GiB, an undecodable or cut-short
//!   frame, silence) closes the connection with `CLOSE_PROTOCOL` (12);
//! - garbage on the Raft ALPN (`plaza-raft/1`, from a broker certificate: an edge's is refused
//!   outright, see `cluster_identities.rs`) is reset stream by stream and disturbs no edge
//!   (`broker/tests/quic_bad_input.rs` covers the Raft side in detail);
//! - a `Hello` in another protocol version is answered `Incompatible { supported }` and the
//!   connection closed with `CLOSE_VERSION` (13);
//! - a first frame that is not `Hello`, a second `Hello`, or a lease outside 500 ms..=600 s
//!   closes the connection with `CLOSE_PROTOCOL`;
//! - a certificate from another CA, no certificate, or an ALPN the broker does not serve gets
//!   no session at all;
//! - `unsubscribe` from a room the session never subscribed to is an `Invalid` error reply,
//!   `leave` of a member another edge owns is ignored (it stays), and the session keeps working.
//!
//! The misbehaving clients are raw QUIC connections writing the framing by hand (length-prefixed
//! postcard frames on one bidirectional stream); the well-behaved edge checked after each case is
//! a [`ClusterBackend`] that attaches, subscribes, publishes and receives its publication. Every
//! test ends by checking that the broker process is still running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plaza_backend::cluster::{ClusterBackend, ClusterOptions};
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::serve_edges::{CLOSE_PROTOCOL, CLOSE_VERSION};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_net::frame::{ERR_BAD_REQUEST, FrameError};
use plaza_net::framing::{FrameReader, write_one};
use plaza_net::tls::{self, ClusterTls};
use plaza_proto::cluster::{
    BrokerError, BrokerEvent, Call, CallOk, EdgeRequest, LinkEvent, PROTOCOL_VERSION, PresencePage,
    RoomEvent, RoomEventKind,
};
use plaza_proto::codec::write_frame;
use plaza_proto::links::ALPN_EDGE;
use plaza_proto::links::ALPN_RAFT;
use plaza_proto::{ClientId, EdgeId, Member, Payload, RoomName, UserId};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{
    ClientConfig, Connection, ConnectionError, Endpoint, ReadError, ReadToEndError, SendStream,
    VarInt,
};

/// How long the broker waits for a new connection's `Hello`: short, so that the silent clients
/// are refused quickly (well-behaved ones say hello at once).
const HELLO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a test waits for the broker to answer or to close a connection.
const PATIENCE: Duration = Duration::from_secs(5);
/// The lease raw sessions ask for.
const LEASE_MS: u64 = 5_000;

/// A one-broker cluster with an elected leader, refusing silent edges after [`HELLO_TIMEOUT`].
fn cluster() -> BrokerCluster {
    let mut config = BrokerConfig::default();
    config.edges.hello_timeout = HELLO_TIMEOUT;
    let mut cluster = BrokerCluster::start(1, config);
    cluster.wait_leader(Duration::from_secs(20));
    cluster
}

/// A client endpoint on loopback.
fn client_endpoint() -> Endpoint {
    Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a client UDP socket")
}

/// A client config presenting `tls`'s certificate, trusting `tls`'s CA, offering `alpns`.
fn client_config(tls: &ClusterTls, alpns: &[&[u8]]) -> ClientConfig {
    let crypto = tls.client_config(alpns).expect("client TLS config");
    ClientConfig::new(Arc::new(crypto))
}

/// The broker's QUIC address.
fn broker(cluster: &BrokerCluster) -> SocketAddr {
    cluster.slots[0].quic
}

/// Dials `addr` with `config` from `endpoint`: the connection, or why the handshake failed.
async fn dial(
    endpoint: &Endpoint,
    config: ClientConfig,
    addr: SocketAddr,
) -> Result<Connection, ConnectionError> {
    let connecting = endpoint
        .connect_with(config, addr, "127.0.0.1")
        .expect("a dial the endpoint accepts");
    tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("the handshake neither completed nor failed in time")
}

/// `hello` as one frame, for edge id `edge-1/<edge>` (the raw sessions present certificate
/// `edge-1`, and a broker only attaches edge ids under the certificate's name).
fn hello_frame(version: u16, edge: &str, lease_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let hello = EdgeRequest::Hello {
        version,
        edge: EdgeId::new(format!("edge-1/{edge}")),
        lease_ms,
    };
    write_frame(&hello, &mut out).expect("encode a hello");
    out
}

/// `n` pseudo-random bytes (xorshift from a fixed seed: the same bytes on every run).
fn noise(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Room `name`.
fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("a valid room name")
}

/// The JSON value `json`.
fn payload(json: &str) -> Payload {
    Payload::from_json(json).expect("valid JSON")
}

/// Waits for the broker to close `conn` and checks that it did so as the application, with
/// `code`. Returns the reason it gave.
async fn assert_closed_with(conn: &Connection, code: VarInt, case: &str) -> String {
    match tokio::time::timeout(PATIENCE, conn.closed()).await {
        Ok(ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            assert_eq!(
                close.error_code, code,
                "{case}: closed with another code ({reason})"
            );
            reason
        }
        Ok(other) => panic!("{case}: expected an application close with code {code}, got {other}"),
        Err(_) => panic!("{case}: the broker did not close the connection within {PATIENCE:?}"),
    }
}

/// A raw edge-protocol session: one connection from certificate `edge-1` on the edge ALPN and
/// its one bidirectional stream, with frames written and read by hand.
struct RawEdge {
    _endpoint: Endpoint,
    conn: Connection,
    send: SendStream,
    reader: FrameReader,
    next_req: u64,
}

impl RawEdge {
    /// Connects and opens the session stream (which the broker sees with the first bytes).
    async fn connect(cluster: &BrokerCluster) -> Self {
        let endpoint = client_endpoint();
        let config = client_config(&cluster.tls("edge-1"), &[ALPN_EDGE]);
        let conn = dial(&endpoint, config, broker(cluster))
            .await
            .expect("an edge certificate completes the handshake");
        let (send, recv) = conn.open_bi().await.expect("open the session stream");
        Self {
            _endpoint: endpoint,
            conn,
            send,
            reader: FrameReader::new(recv),
            next_req: 1,
        }
    }

    /// Connects, says hello as `edge` and checks the broker's welcome.
    async fn attach(cluster: &BrokerCluster, edge: &str) -> Self {
        let mut raw = Self::connect(cluster).await;
        raw.write_raw(&hello_frame(PROTOCOL_VERSION, edge, LEASE_MS))
            .await;
        match raw.next().await {
            Ok(Some(BrokerEvent::Welcome { version })) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected a welcome for {edge}, got {other:?}"),
        }
        raw
    }

    /// Writes `bytes` to the session stream as they are.
    async fn write_raw(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("write to the session stream");
    }

    /// Writes one frame.
    async fn write(&mut self, frame: &EdgeRequest) {
        write_one(&mut self.send, frame)
            .await
            .expect("write a frame");
    }

    /// The next frame from the broker (`Ok(None)`: it finished the stream).
    async fn next(&mut self) -> Result<Option<BrokerEvent>, FrameError> {
        tokio::time::timeout(PATIENCE, self.reader.next::<BrokerEvent>())
            .await
            .expect("no frame from the broker in time")
    }

    /// Makes `call` and returns its result, skipping room events that arrive meanwhile.
    async fn call(&mut self, call: Call) -> Result<CallOk, BrokerError> {
        let req = self.next_req;
        self.next_req += 1;
        let what = format!("{call:?}");
        self.write(&EdgeRequest::Call { req, call }).await;
        loop {
            match self.next().await {
                Ok(Some(BrokerEvent::Result { req: got, result })) if got == req => return result,
                Ok(Some(BrokerEvent::Room(_))) => {}
                other => panic!("{what}: expected its result, got {other:?}"),
            }
        }
    }

    /// Checks that the session is still up.
    fn assert_open(&self, after: &str) {
        let reason = self.conn.close_reason();
        assert!(
            reason.is_none(),
            "the session ended after {after}: {reason:?}"
        );
    }
}

/// Connects, completes a hello as `edge` and returns the broker's answer, or why there was
/// none (the connection's close reason included).
async fn try_hello(
    config: ClientConfig,
    addr: SocketAddr,
    edge: &str,
) -> Result<BrokerEvent, String> {
    let endpoint = client_endpoint();
    let conn = dial(&endpoint, config, addr)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // With TLS 1.3 the client may finish its side of the handshake before the broker has
    // checked the client's certificate: a refusal then shows up as the connection closing.
    let closed = |e: String| format!("{e}; connection: {:?}", conn.close_reason());
    let (mut send, recv) = conn.open_bi().await.map_err(|e| closed(e.to_string()))?;
    let hello = EdgeRequest::Hello {
        version: PROTOCOL_VERSION,
        edge: EdgeId::new(edge.to_owned()),
        lease_ms: LEASE_MS,
    };
    write_one(&mut send, &hello)
        .await
        .map_err(|e| closed(e.to_string()))?;
    let mut reader = FrameReader::new(recv);
    match tokio::time::timeout(PATIENCE, reader.next::<BrokerEvent>()).await {
        Ok(Ok(Some(answer))) => Ok(answer),
        Ok(Ok(None)) => Err(closed("stream finished without an answer".into())),
        Ok(Err(e)) => Err(closed(e.to_string())),
        Err(_) => Err(closed("no answer in time".into())),
    }
}

/// A well-behaved edge (a [`ClusterBackend`] with certificate `edge-2`, edge id `edge`)
/// attaches to the broker, subscribes to a room, publishes there and receives the publication;
/// and the broker process is still running.
async fn assert_edges_served(cluster: &mut BrokerCluster, edge: &str) {
    assert!(cluster.running(1), "the broker exited\n{}", cluster.logs());
    let backend = cluster.backend("edge-2", ClusterOptions::default());
    let options = AttachOptions {
        edge: EdgeId::new(edge.to_owned()),
        lease: Duration::from_secs(5),
    };
    let (link, mut events) = match backend.attach(options).await {
        Ok(attached) => attached,
        Err(e) => panic!("a well-behaved edge cannot attach: {e}\n{}", cluster.logs()),
    };
    let room = room(&format!("chat:{edge}"));
    link.subscribe(room.clone())
        .await
        .expect("subscribe as a well-behaved edge");
    let data = payload(r#"{"served":true}"#);
    let ack = link
        .publish(room.clone(), data.clone(), None, None)
        .await
        .expect("publish as a well-behaved edge");
    let event = tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("no event for the well-behaved edge in time")
        .expect("the well-behaved edge's event stream ended");
    match event {
        LinkEvent::Room(RoomEvent {
            room: got,
            kind: RoomEventKind::Publication(publication),
            ..
        }) => {
            assert_eq!(got, room);
            assert_eq!(publication.offset, ack.position.offset);
            assert_eq!(publication.data, data);
        }
        other => panic!("expected the publication, got {other:?}"),
    }
    link.close().await;
    assert!(cluster.running(1), "the broker exited\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_edge_alpn_closes_the_connection_with_code_12() {
    let mut cluster = cluster();
    let mut one_gib = (1u32 << 30).to_be_bytes().to_vec();
    one_gib.extend_from_slice(b"and a little more");
    let hello = hello_frame(PROTOCOL_VERSION, "cut-short", LEASE_MS);
    // (case, bytes, whether the stream is finished after them)
    let cases: [(&str, Vec<u8>, bool); 7] = [
        ("64 pseudo-random bytes", noise(64), true),
        ("a length prefix of 1 GiB", one_gib, false),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n".to_vec(),
            false,
        ),
        (
            "a frame that does not decode",
            vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
            false,
        ),
        ("a frame of an unknown kind", vec![0, 0, 0, 1, 0x7f], false),
        ("a hello cut short", hello[..hello.len() - 1].to_vec(), true),
        ("half a length prefix, then silence", vec![0, 0], false),
    ];
    for (case, bytes, finish) in cases {
        let mut raw = RawEdge::connect(&cluster).await;
        raw.write_raw(&bytes).await;
        if finish {
            raw.send.finish().expect("finish the session stream");
        }
        let reason = assert_closed_with(&raw.conn, CLOSE_PROTOCOL, case).await;
        println!("{case}: closed with {CLOSE_PROTOCOL} ({reason})");
        let answer = raw.next().await;
        assert!(
            !matches!(answer, Ok(Some(_))),
            "{case}: the broker answered {answer:?}"
        );
    }

    // A connection that never opens its session stream is closed once the hello is overdue.
    let endpoint = client_endpoint();
    let config = client_config(&cluster.tls("edge-1"), &[ALPN_EDGE]);
    let conn = dial(&endpoint, config, broker(&cluster))
        .await
        .expect("an edge certificate completes the handshake");
    let reason = assert_closed_with(&conn, CLOSE_PROTOCOL, "no session stream").await;
    println!("no session stream: closed with {CLOSE_PROTOCOL} ({reason})");

    assert_edges_served(&mut cluster, "after-edge-garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_raft_alpn_does_not_disturb_edges() {
    let mut cluster = cluster();
    // An edge attached before the garbage arrives keeps its session throughout.
    let mut bystander = RawEdge::attach(&cluster, "bystander").await;

    let endpoint = client_endpoint();
    // A broker's certificate: an edge's is refused on this ALPN before any stream (see
    // cluster_identities.rs).
    let config = client_config(&cluster.tls("broker-1"), &[ALPN_RAFT]);
    let conn = dial(&endpoint, config, broker(&cluster))
        .await
        .expect("raft handshake");
    let cases = [
        ("64 pseudo-random bytes", noise(64)),
        (
            "an edge hello",
            hello_frame(PROTOCOL_VERSION, "lost", LEASE_MS),
        ),
    ];
    for (case, bytes) in cases {
        let (mut send, mut recv) = conn.open_bi().await.expect("open a raft stream");
        send.write_all(&bytes).await.expect("write a raft stream");
        send.finish().expect("finish a raft stream");
        let answer = tokio::time::timeout(PATIENCE, recv.read_to_end(1 << 20))
            .await
            .expect("no answer to a raft stream in time");
        match answer {
            Err(ReadToEndError::Read(ReadError::Reset(code))) => {
                assert_eq!(code, ERR_BAD_REQUEST, "{case}")
            }
            other => panic!("{case}: expected the stream to be reset, got {other:?}"),
        }
    }
    assert!(
        conn.close_reason().is_none(),
        "garbage streams closed the whole raft connection"
    );

    let published = bystander
        .call(Call::Publish {
            room: room("chat:bystander"),
            data: payload("1"),
            from: None,
            idem: None,
        })
        .await;
    assert!(
        matches!(published, Ok(CallOk::Published(_))),
        "the bystander's publish: {published:?}"
    );
    bystander.assert_open("garbage on the raft ALPN");
    assert_edges_served(&mut cluster, "after-raft-garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_in_another_version_is_answered_incompatible_and_closed_with_code_13() {
    let mut cluster = cluster();
    for version in [0, PROTOCOL_VERSION + 1, 99, u16::MAX] {
        let case = format!("hello in version {version}");
        let mut raw = RawEdge::connect(&cluster).await;
        raw.write_raw(&hello_frame(version, &format!("v{version}"), LEASE_MS))
            .await;
        match raw.next().await {
            Ok(Some(BrokerEvent::Incompatible { supported })) => {
                assert_eq!(supported, PROTOCOL_VERSION, "{case}");
            }
            other => panic!("{case}: expected Incompatible, got {other:?}"),
        }
        let reason = assert_closed_with(&raw.conn, CLOSE_VERSION, &case).await;
        assert!(
            reason.contains(&format!("edge protocol {version} ")),
            "{case}: {reason}"
        );
        println!("{case}: closed with {CLOSE_VERSION} ({reason})");
    }
    assert_edges_served(&mut cluster, "after-other-versions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_handshake_closes_the_connection_with_code_12() {
    let mut cluster = cluster();
    let publish = EdgeRequest::Call {
        req: 1,
        call: Call::Publish {
            room: room("chat:too-early"),
            data: payload("1"),
            from: None,
            idem: None,
        },
    };
    // A first frame that is not a hello.
    for (case, first) in [
        ("a call before hello", publish),
        ("a keep-alive before hello", EdgeRequest::KeepAlive),
        ("a detach before hello", EdgeRequest::Detach),
    ] {
        let mut raw = RawEdge::connect(&cluster).await;
        raw.write(&first).await;
        let reason = assert_closed_with(&raw.conn, CLOSE_PROTOCOL, case).await;
        assert!(reason.contains("must be Hello"), "{case}: {reason}");
        let answer = raw.next().await;
        assert!(
            !matches!(answer, Ok(Some(_))),
            "{case}: the broker answered {answer:?}"
        );
    }

    // A second hello on a welcomed session.
    let mut raw = RawEdge::attach(&cluster, "twice").await;
    raw.write_raw(&hello_frame(PROTOCOL_VERSION, "twice", LEASE_MS))
        .await;
    let reason = assert_closed_with(&raw.conn, CLOSE_PROTOCOL, "hello twice").await;
    assert!(reason.contains("Hello sent twice"), "hello twice: {reason}");

    // Leases out of bounds are refused before the edge is attached (no welcome)...
    for lease_ms in [0, 1, 499, 600_001, u64::MAX] {
        let case = format!("a lease of {lease_ms} ms");
        let mut raw = RawEdge::connect(&cluster).await;
        raw.write_raw(&hello_frame(PROTOCOL_VERSION, "lease", lease_ms))
            .await;
        let reason = assert_closed_with(&raw.conn, CLOSE_PROTOCOL, &case).await;
        assert!(reason.contains("lease"), "{case}: {reason}");
        let answer = raw.next().await;
        assert!(
            !matches!(answer, Ok(Some(_))),
            "{case}: the broker answered {answer:?}"
        );
    }
    // ...and the bounds themselves are welcome.
    for lease_ms in [500, 600_000] {
        let mut raw = RawEdge::connect(&cluster).await;
        raw.write_raw(&hello_frame(
            PROTOCOL_VERSION,
            &format!("lease-{lease_ms}"),
            lease_ms,
        ))
        .await;
        match raw.next().await {
            Ok(Some(BrokerEvent::Welcome { .. })) => {}
            other => panic!("a lease of {lease_ms} ms: expected a welcome, got {other:?}"),
        }
        raw.write(&EdgeRequest::Detach).await;
        assert_closed_with(&raw.conn, VarInt::from_u32(0), "detach").await;
    }
    assert_edges_served(&mut cluster, "after-broken-handshakes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificates_and_other_alpns_get_no_session() {
    let mut cluster = cluster();
    let addr = broker(&cluster);
    let ours = cluster.tls("edge-1");
    let generated = tls::generate("impostors", &[("edge-1", tls::NodeRole::Edge)], &[])
        .expect("generate a foreign CA");
    let foreign = generated.identity("edge-1").expect("a foreign identity");

    // It trusts our CA but presents a certificate ours did not sign: the broker refuses it.
    let impostor = ClusterTls {
        ca: ours.ca.clone(),
        ..foreign.clone()
    };
    let refused = try_hello(client_config(&impostor, &[ALPN_EDGE]), addr, "impostor").await;
    println!("impostor: {refused:?}");
    let why = refused.expect_err("an impostor certificate got an answer");
    assert!(why.contains("UnknownIssuer"), "impostor: {why}");

    // A client of another cluster does not trust the broker either.
    let refused = try_hello(client_config(&foreign, &[ALPN_EDGE]), addr, "foreign").await;
    println!("foreign cluster: {refused:?}");
    let why = refused.expect_err("a foreign cluster's client got an answer");
    assert!(why.contains("UnknownIssuer"), "foreign cluster: {why}");

    // Nor does the real client: attaching with foreign certificates fails (and does not hang).
    let options = ClusterOptions {
        brokers: cluster.quic_addrs(),
        attach_timeout: Duration::from_secs(1),
        ..ClusterOptions::default()
    };
    let backend = ClusterBackend::new(&foreign, options).expect("a backend with foreign TLS");
    let attach = AttachOptions {
        edge: EdgeId::new("foreign".to_owned()),
        lease: Duration::from_secs(5),
    };
    let attached = tokio::time::timeout(PATIENCE, backend.attach(attach))
        .await
        .expect("attach with foreign certificates did not give up in time");
    match attached {
        Err(BrokerError::Unavailable(why)) => println!("foreign backend: {why}"),
        Err(other) => panic!("foreign backend: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("an edge with foreign certificates attached"),
    }

    // A client without a certificate.
    let mut roots = quinn::rustls::RootCertStore::empty();
    roots.add(ours.ca.clone()).expect("our CA as a root");
    let provider = Arc::new(quinn::rustls::crypto::ring::default_provider());
    let mut anonymous = quinn::rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&quinn::rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![ALPN_EDGE.to_vec()];
    let anonymous =
        QuicClientConfig::try_from(anonymous).expect("a QUIC config without client auth");
    let refused = try_hello(ClientConfig::new(Arc::new(anonymous)), addr, "anonymous").await;
    println!("anonymous: {refused:?}");
    let why = refused.expect_err("a client without a certificate got an answer");
    assert!(why.contains("no certificates"), "anonymous: {why}");

    // The right certificate, but an application protocol the broker does not serve, or none:
    // the handshake itself fails.
    for (case, alpns) in [("ALPN h3", &[&b"h3"[..]][..]), ("no ALPN", &[][..])] {
        let refused = try_hello(client_config(&ours, alpns), addr, "alpn").await;
        println!("{case}: {refused:?}");
        let why = refused.expect_err("a client without a served ALPN got an answer");
        assert!(why.starts_with("handshake:"), "{case}: {why}");
    }

    assert_edges_served(&mut cluster, "after-foreign-certificates").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_unsubscribes_and_foreign_leaves_are_refused_and_the_session_goes_on() {
    let mut cluster = cluster();
    let mut raw = RawEdge::attach(&cluster, "owner").await;
    let lobby = room("chat:never-declared");
    let client = ClientId::new("client-1");

    // Leaving a member this edge does not own is a no-op, like leaving an unknown one.
    let left = raw
        .call(Call::Leave {
            room: lobby.clone(),
            client: client.clone(),
        })
        .await;
    assert_eq!(left, Ok(CallOk::Done), "leave of an unknown member");
    match raw
        .call(Call::Unsubscribe {
            room: lobby.clone(),
        })
        .await
    {
        Err(BrokerError::Invalid(why)) => assert!(
            why.contains("unsubscribe from room chat:never-declared"),
            "{why}"
        ),
        other => panic!("unsubscribe from an undeclared room: expected Invalid, got {other:?}"),
    }
    raw.assert_open("unsubscribe from an undeclared room");

    // The session still serves calls (and keep-alives).
    raw.write(&EdgeRequest::KeepAlive).await;
    match raw
        .call(Call::Publish {
            room: lobby.clone(),
            data: payload(r#"{"n":1}"#),
            from: None,
            idem: None,
        })
        .await
    {
        Ok(CallOk::Published(ack)) => {
            assert_eq!(ack.position.offset, 1);
            assert!(!ack.duplicate);
        }
        other => panic!("publish after the errors: {other:?}"),
    }

    // Once subscribed, unsubscribing is fine, once.
    match raw
        .call(Call::Subscribe {
            room: lobby.clone(),
        })
        .await
    {
        Ok(CallOk::Subscribed(position)) => assert_eq!(position.offset, 1),
        other => panic!("subscribe: {other:?}"),
    }
    let unsubscribed = raw
        .call(Call::Unsubscribe {
            room: lobby.clone(),
        })
        .await;
    assert_eq!(unsubscribed, Ok(CallOk::Done));
    let again = raw
        .call(Call::Unsubscribe {
            room: lobby.clone(),
        })
        .await;
    assert!(
        matches!(again, Err(BrokerError::Invalid(_))),
        "a second unsubscribe: {again:?}"
    );

    // Members belong to the edge that joined them.
    let hall = room("chat:joined");
    let member = Member {
        client: client.clone(),
        user: UserId::new("user-1"),
        info: None,
    };
    let joined = raw
        .call(Call::Join {
            room: hall.clone(),
            member: member.clone(),
        })
        .await;
    assert_eq!(joined, Ok(CallOk::Done));
    let presence = raw
        .call(Call::Presence {
            room: hall.clone(),
            after: None,
            limit: 100,
        })
        .await;
    assert_eq!(
        presence,
        Ok(CallOk::Presence(PresencePage {
            members: vec![member.clone()],
            next: None,
        }))
    );

    // Another edge cannot make the member leave: its leave is ignored.
    let mut other = RawEdge::attach(&cluster, "stranger").await;
    let left = other
        .call(Call::Leave {
            room: hall.clone(),
            client: client.clone(),
        })
        .await;
    assert_eq!(left, Ok(CallOk::Done), "leave from another edge");
    other.assert_open("leave from another edge");
    let presence = raw
        .call(Call::Presence {
            room: hall.clone(),
            after: None,
            limit: 100,
        })
        .await;
    assert_eq!(
        presence,
        Ok(CallOk::Presence(PresencePage {
            members: vec![member],
            next: None,
        }))
    );

    let left = raw
        .call(Call::Leave {
            room: hall.clone(),
            client,
        })
        .await;
    assert_eq!(left, Ok(CallOk::Done));
    let presence = raw
        .call(Call::Presence {
            room: hall,
            after: None,
            limit: 100,
        })
        .await;
    assert_eq!(
        presence,
        Ok(CallOk::Presence(PresencePage {
            members: Vec::new(),
            next: None,
        }))
    );

    // The session ends cleanly: the broker commits the detach and closes with code 0.
    raw.write(&EdgeRequest::Detach).await;
    assert_closed_with(&raw.conn, VarInt::from_u32(0), "detach").await;
    assert_edges_served(&mut cluster, "after-undeclared-rooms").await;
}
