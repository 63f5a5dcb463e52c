//! Plaza's container deployment for real: the image built from `docker/Dockerfile`, run by
//! `docker/compose.cluster.yaml` (3 brokers + 2 edges) or `docker/compose.nats.yaml` (3 NATS
//! JetStream nodes + 2 edges) under Podman, with the compose files' nginx and Caddy both
//! terminating TLS in front. Real `wss://` clients go through the front ends while containers
//! are killed (`podman kill`) and stopped (`podman stop` = SIGTERM) under them.
//!
//! Not part of `cargo test` (`test = false` in Cargo.toml): these tests need the deployment
//! that `scripts/test-containers.sh` brings up, and that script runs them
//! (`cargo test --test containers`) and fails unless each one ran and passed. Run without it,
//! they fail. What it hands over, in the environment:
//!
//! - `PLAZA_CT_PROJECT`: the compose project (`plaza-cluster` or `plaza-nats`);
//! - `PLAZA_CT_FRONTENDS`: `name@ip:port@ca.pem` for each TLS front end, space-separated;
//! - `PLAZA_CT_SECRET_FILE`: a file holding the edges' HMAC secret (tokens are minted with
//!   `plaza-edge token`, as a backend would);
//! - `PLAZA_CT_BROKERS` (cluster): `id=ip:port` of each broker's status port, space-separated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plaza_cluster_tests::{http_get, token};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

// ---- the deployment ----------------------------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run from scripts/test-containers.sh")
    })
}

fn project() -> String {
    env("PLAZA_CT_PROJECT")
}

fn secret() -> String {
    std::fs::read_to_string(env("PLAZA_CT_SECRET_FILE"))
        .expect("read the secret file")
        .trim()
        .to_owned()
}

/// A TLS front end (nginx or Caddy) and the CA its certificate comes from.
#[derive(Clone, Debug)]
struct Frontend {
    name: String,
    addr: SocketAddr,
    ca: PathBuf,
}

fn frontends() -> Vec<Frontend> {
    let list: Vec<Frontend> = env("PLAZA_CT_FRONTENDS")
        .split_whitespace()
        .map(|item| {
            let mut parts = item.splitn(3, '@');
            let name = parts.next().expect("name").to_owned();
            let addr = parts.next().expect("address").parse().expect("ip:port");
            let ca = PathBuf::from(parts.next().expect("CA file"));
            Frontend { name, addr, ca }
        })
        .collect();
    assert!(
        list.len() >= 2,
        "expected nginx and Caddy in PLAZA_CT_FRONTENDS"
    );
    list
}

/// Runs podman; panics with its output unless it succeeds.
fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        output.status.success(),
        "podman {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The containers of compose service `service`, by name.
fn containers(service: &str) -> Vec<String> {
    let out = podman(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", project()),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    assert!(!names.is_empty(), "no container of service {service}");
    names
}

fn running(container: &str) -> bool {
    podman(&["inspect", "--format", "{{.State.Running}}", container]).trim() == "true"
}

/// Waits until `podman healthcheck run` passes for `container`.
fn wait_healthy(container: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = Command::new("podman")
            .args(["healthcheck", "run", container])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{container} not healthy within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// After a `podman kill`: the restart policy brings the container back; if the engine does
/// not (Podman restarts only containers that exited on their own), the test starts it, as an
/// operator would. Returns whether the policy restarted it.
fn bring_back(container: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if running(container) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    podman(&["start", container]);
    false
}

/// The edge id (the prefix of its client ids) of each running edge container, from the last
/// `plaza-edge listening` line of its log.
fn edge_ids() -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for container in containers("edge") {
        if !running(&container) {
            continue;
        }
        let output = Command::new("podman")
            .args(["logs", &container])
            .output()
            .expect("podman logs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let id = text
            .lines()
            .filter(|l| l.contains("plaza-edge listening"))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["fields"]["edge"].as_str().map(str::to_owned))
            .next_back();
        if let Some(id) = id {
            ids.insert(id, container);
        }
    }
    ids
}

/// The container an edge client id belongs to (its prefix is the edge id).
fn edge_of(client: &str, ids: &BTreeMap<String, String>) -> Option<String> {
    let prefix = client.split('-').next()?;
    ids.get(prefix).cloned()
}

// ---- a wss:// client through a front end -------------------------------------------------------

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// How reading ended without a frame.
#[derive(Debug)]
enum Ended {
    Closed(u16),
    Timeout,
    Failed(String),
}

struct Client {
    ws: Wss,
    next_id: u64,
    pushes: VecDeque<Value>,
    /// This connection's client id (its presence member id).
    id: String,
}

impl Client {
    async fn connect(front: &Frontend, token: &str) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&front.ca).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(front.addr))
            .await
            .map_err(|_| "TCP connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", front.name))?;
        let url = format!("wss://localhost:{}/v1/ws", front.addr.port());
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(url, tls),
        )
        .await
        .map_err(|_| "upgrade timed out".to_owned())?
        .map_err(|e| format!("upgrade through {}: {e}", front.name))?;
        let mut client = Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            id: String::new(),
        };
        let reply = client
            .call(json!({"op": "connect", "token": token}))
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        client.id = reply["ok"]["client"]
            .as_str()
            .ok_or_else(|| format!("connect refused: {reply}"))?
            .to_owned();
        Ok(client)
    }

    /// Connects, retrying for up to 60 s (an edge may be draining or restarting).
    async fn connect_retrying(front: &Frontend, token: &str) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Self::connect(front, token).await {
                Ok(client) => return client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection through {} within 60 s: {e}",
                        front.name
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    async fn call(&mut self, mut command: Value) -> Result<Value, Ended> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .map_err(|e| Ended::Failed(e.to_string()))?;
        loop {
            let frame = self.read(Duration::from_secs(20)).await?;
            if frame["id"].as_u64() == Some(id) {
                return Ok(frame);
            }
            self.pushes.push_back(frame);
        }
    }

    async fn next_push(&mut self, timeout: Duration) -> Result<Value, Ended> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        loop {
            let frame = self.read(timeout).await?;
            if frame.get("push").is_some() {
                return Ok(frame);
            }
        }
    }

    async fn read(&mut self, timeout: Duration) -> Result<Value, Ended> {
        loop {
            let message = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return Err(Ended::Timeout),
                Ok(None) => return Err(Ended::Failed("stream ended".into())),
                Ok(Some(Err(e))) => return Err(Ended::Failed(e.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).map_err(|e| Ended::Failed(e.to_string()));
                }
                Message::Close(frame) => {
                    return Err(Ended::Closed(
                        frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    ));
                }
                _ => {}
            }
        }
    }
}

// ---- a subscriber that never loses a publication -------------------------------------------------

/// The user the publishers connect as (its presence is not counted).
const PUBLISHER: &str = "publisher";

/// What one reconnecting subscriber saw.
#[derive(Default, Debug)]
struct Seen {
    /// `(offset, seq)` of every publication, live or recovered, in arrival order.
    pubs: Vec<(u64, u64)>,
    /// Close codes of the connections it lost (4000 = drained), with the lost client id.
    closes: Vec<(u16, String)>,
    /// `disconnect` pushes' codes.
    disconnects: Vec<u64>,
    /// Presence pushes of members (the publisher left out): ("join" | "leave", client id).
    presence: Vec<(String, String)>,
    /// Client ids this subscriber had, in order.
    ids: Vec<String>,
    /// Reconnects whose `recover` came back `recovered: false` (must stay 0).
    not_recovered: u32,
    /// Seconds from each lost connection to the re-subscribed one.
    reconnect_secs: Vec<f64>,
    /// For each reconnect that did not recover: the position asked for and the reply.
    unrecovered: Vec<String>,
}

/// Subscribes to `room` through `front` and follows it until `stop`, reconnecting (through the
/// same front end) and recovering from its last position whenever the connection ends.
/// Presence pushes are recorded while `watching` (not while the test tears its clients down).
async fn follow(
    front: Frontend,
    token: String,
    room: String,
    presence: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    watching: Arc<AtomicBool>,
) {
    let mut position: Option<(String, u64)> = None;
    let mut lost_at: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut client = Client::connect_retrying(&front, &token).await;
        let mut command = json!({"op": "subscribe", "room": room, "presence": presence});
        if let Some((epoch, offset)) = &position {
            command["recover"] = json!({"epoch": epoch, "offset": offset});
        }
        let reply = match client.call(command).await {
            Ok(reply) => reply,
            Err(_) => continue,
        };
        let Some(ok) = reply.get("ok") else {
            // 113 while the broker tier elects a leader: retry.
            assert_eq!(
                reply["error"]["temporary"], true,
                "subscribe refused: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        {
            let mut seen = seen.lock().await;
            seen.ids.push(client.id.clone());
            if let Some(at) = lost_at.take() {
                seen.reconnect_secs.push(at.elapsed().as_secs_f64());
            }
            if position.is_some() && ok["recovered"] != true {
                seen.not_recovered += 1;
                seen.unrecovered
                    .push(format!("recover from {position:?}: {ok}"));
            }
            for publication in ok["publications"].as_array().into_iter().flatten() {
                let offset = publication["offset"].as_u64().expect("offset");
                seen.pubs
                    .push((offset, publication["data"]["seq"].as_u64().expect("seq")));
            }
        }
        let epoch = ok["epoch"].as_str().expect("epoch").to_owned();
        let mut offset = ok["offset"].as_u64().expect("offset");
        position = Some((epoch.clone(), offset));
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match client.next_push(Duration::from_millis(500)).await {
                Ok(push) => {
                    let mut seen = seen.lock().await;
                    match push["push"].as_str() {
                        Some("pub") if push["room"] == room.as_str() => {
                            let o = push["offset"].as_u64().expect("offset");
                            seen.pubs
                                .push((o, push["data"]["seq"].as_u64().expect("seq")));
                            offset = o;
                            position = Some((epoch.clone(), offset));
                        }
                        Some(kind @ ("join" | "leave"))
                            if push["member"]["user"] != PUBLISHER
                                && watching.load(Ordering::SeqCst) =>
                        {
                            let member = push["member"]["client"].as_str().unwrap_or("").to_owned();
                            seen.presence.push((kind.to_owned(), member));
                        }
                        Some("disconnect") => {
                            seen.disconnects.push(push["code"].as_u64().unwrap_or(0));
                        }
                        _ => {}
                    }
                }
                Err(Ended::Timeout) => {}
                Err(Ended::Closed(code)) => {
                    seen.lock().await.closes.push((code, client.id.clone()));
                    lost_at = Some(Instant::now());
                    break;
                }
                Err(Ended::Failed(e)) => {
                    eprintln!("{}: connection failed: {e}", client.id);
                    seen.lock().await.closes.push((1006, client.id.clone()));
                    lost_at = Some(Instant::now());
                    break;
                }
            }
        }
    }
}

/// Publishes `count` messages `{seq}` to `room` through `front`, one at a time, each with its
/// own idempotency key, retrying a message (same key) until it is acknowledged: on a
/// temporary error, or after reconnecting and re-subscribing when the connection ends.
/// Returns `(seq, offset)` of every acknowledgement.
async fn publish_all(
    front: Frontend,
    token: String,
    room: String,
    count: u64,
    pause: Duration,
    acked: Arc<AtomicU64>,
) -> Vec<(u64, u64)> {
    let run: u64 = rand::random();
    let mut acks = Vec::new();
    let mut client: Option<Client> = None;
    for seq in 0..count {
        let deadline = Instant::now() + Duration::from_secs(90);
        let idem = format!("ct-{run:x}-{seq}");
        loop {
            assert!(
                Instant::now() < deadline,
                "publication {seq} not acknowledged within 90 s"
            );
            if client.is_none() {
                let mut c = Client::connect_retrying(&front, &token).await;
                match c.call(json!({"op": "subscribe", "room": room})).await {
                    Ok(reply) if reply.get("ok").is_some() => client = Some(c),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected");
            c.pushes.clear();
            let command =
                json!({"op": "publish", "room": room, "data": {"seq": seq}, "idem": idem});
            match c.call(command).await {
                Ok(reply) => {
                    if let Some(offset) = reply["ok"]["offset"].as_u64() {
                        acks.push((seq, offset));
                        acked.store(seq + 1, Ordering::SeqCst);
                        break;
                    }
                    assert_eq!(
                        reply["error"]["temporary"], true,
                        "publish {seq} refused: {reply}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {
                    client = None;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    acks
}

/// Every acknowledged publication reached `seen` exactly once, in order, with its offset.
fn assert_exactly_once(who: &str, seen: &Seen, acks: &[(u64, u64)]) {
    let seqs: Vec<u64> = seen.pubs.iter().map(|&(_, s)| s).collect();
    let want: Vec<u64> = acks.iter().map(|&(s, _)| s).collect();
    assert_eq!(
        seqs, want,
        "{who}: publications not exactly once in order (closes {:?})",
        seen.closes
    );
    let offsets: Vec<u64> = seen.pubs.iter().map(|&(o, _)| o).collect();
    let acked: Vec<u64> = acks.iter().map(|&(_, o)| o).collect();
    assert_eq!(
        offsets, acked,
        "{who}: offsets differ from the acknowledged ones"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "{who}: offsets not increasing"
    );
    assert_eq!(
        seen.not_recovered, 0,
        "{who}: a reconnect could not recover: {:?}",
        seen.unrecovered
    );
}

async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- scenarios --------------------------------------------------------------------------------

/// Two clients on different edges, through `front`: chat both ways and see each other's
/// presence.
async fn chat_and_presence(front: &Frontend) {
    let secret = secret();
    let room = format!("chat:ct-{}-{}", front.name, rand::random::<u32>());
    let ids = edge_ids();
    assert_eq!(ids.len(), 2, "two running edges: {ids:?}");
    // The proxy spreads connections over the edges; open until both edges have one.
    let mut by_edge: BTreeMap<String, Client> = BTreeMap::new();
    for attempt in 0..12 {
        let user = format!("user{attempt}");
        let client = Client::connect_retrying(front, &token(&secret, &user)).await;
        let edge = edge_of(&client.id, &ids).expect("client on a known edge");
        by_edge.entry(edge).or_insert(client);
        if by_edge.len() == 2 {
            break;
        }
    }
    assert_eq!(by_edge.len(), 2, "{} never reached both edges", front.name);
    let mut pair: Vec<Client> = by_edge.into_values().collect();
    let mut b = pair.pop().expect("b");
    let mut a = pair.pop().expect("a");
    for c in [&mut a, &mut b] {
        let reply = c
            .call(json!({"op": "subscribe", "room": room, "presence": true}))
            .await
            .expect("subscribe");
        assert!(reply.get("ok").is_some(), "subscribe refused: {reply}");
    }
    // a sees b join.
    let b_id = b.id.clone();
    wait_push(&mut a, |p| {
        p["push"] == "join" && p["member"]["client"] == b_id.as_str()
    })
    .await;
    // Chat both ways, across the edges.
    say(&mut a, &mut b, &room, "hello from a").await;
    say(&mut b, &mut a, &room, "hello from b").await;
    let reply = a
        .call(json!({"op": "presence", "room": room}))
        .await
        .expect("presence");
    let members: BTreeSet<&str> = reply["ok"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("presence reply: {reply}"))
        .iter()
        .filter_map(|m| m["client"].as_str())
        .collect();
    assert_eq!(members, BTreeSet::from([a.id.as_str(), b.id.as_str()]));
    // b leaves: a sees it.
    let a_seen = a.id.clone();
    drop(b);
    let push = wait_push(&mut a, |p| p["push"] == "leave").await;
    assert_eq!(
        push["member"]["client"],
        b_id.as_str(),
        "leave seen by {a_seen}"
    );
}

/// `from` publishes `text` in `room`; `to` receives it from `from`.
async fn say(from: &mut Client, to: &mut Client, room: &str, text: &str) {
    let reply = from
        .call(json!({"op": "publish", "room": room, "data": {"text": text}}))
        .await
        .expect("publish");
    assert!(reply.get("ok").is_some(), "publish refused: {reply}");
    let push = wait_push(to, |p| p["push"] == "pub" && p["data"]["text"] == text).await;
    assert_eq!(push["from"]["client"], from.id.as_str());
}

async fn wait_push(client: &mut Client, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no matching push within 15 s");
        match client.next_push(left).await {
            Ok(push) if want(&push) => return push,
            Ok(_) => {}
            Err(e) => panic!("connection ended while waiting for a push: {e:?}"),
        }
    }
}

/// A publisher (through the first front end) publishes with idempotency keys while `fault`
/// runs once `at` publications are acknowledged; a subscriber (through the second front end,
/// on the other edge if the proxy puts it there) must get every acknowledged publication
/// exactly once, in order.
async fn publish_through_fault(name: &str, count: u64, at: u64, fault: impl FnOnce()) {
    let fronts = frontends();
    let secret = secret();
    let room = format!("chat:ct-{name}-{}", rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn(follow(
        fronts[1].clone(),
        token(&secret, "reader"),
        room.clone(),
        false,
        stop.clone(),
        seen.clone(),
        Arc::new(AtomicBool::new(true)),
    ));
    wait_until(
        "the reader subscribed",
        Duration::from_secs(30),
        async || !seen.lock().await.ids.is_empty(),
    )
    .await;
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_all(
        fronts[0].clone(),
        token(&secret, PUBLISHER),
        room,
        count,
        Duration::from_millis(40),
        acked.clone(),
    ));
    wait_until(
        "publications before the fault",
        Duration::from_secs(60),
        async || acked.load(Ordering::SeqCst) >= at,
    )
    .await;
    let started = Instant::now();
    fault();
    let acks = publisher.await.expect("publisher");
    eprintln!(
        "{name}: {count} publications acknowledged, the last {} s after the fault",
        started.elapsed().as_secs()
    );
    wait_until(
        "the reader caught up",
        Duration::from_secs(60),
        async || seen.lock().await.pubs.len() >= acks.len(),
    )
    .await;
    // A moment for duplicates, if any, to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    let seen = seen.lock().await;
    assert_exactly_once("reader", &seen, &acks);
    eprintln!(
        "{name}: reader lost {} connection(s): {:?}",
        seen.closes.len(),
        seen.closes
    );
}

/// Broker status on the host port of broker `id`.
fn broker_status(addr: SocketAddr) -> Option<Value> {
    let (code, body) = http_get(addr, "/status")?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn brokers() -> BTreeMap<u64, SocketAddr> {
    env("PLAZA_CT_BROKERS")
        .split_whitespace()
        .map(|item| {
            let (id, addr) = item.split_once('=').expect("id=addr");
            (id.parse().expect("id"), addr.parse().expect("addr"))
        })
        .collect()
}

fn leader() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (&id, &addr) in &brokers() {
            if let Some(status) = broker_status(addr)
                && status["state"] == "Leader"
            {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no broker leader within 30 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Rolling restart of the edges: each edge in turn gets `podman stop` (SIGTERM; 30 s like the
/// compose file's stop_grace_period) and then `podman start`, while clients through both front
/// ends follow a room with presence and a publisher publishes. Drained clients get 4000,
/// reconnect through their proxy to the other edge, recover without loss; clients that were
/// not drained see exactly the drained clients leave and come back, nothing else.
async fn rolling_restart() {
    let fronts = frontends();
    let secret = secret();
    let room = format!("chat:ct-rolling-{}", rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let mut followers: Vec<(String, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)> = Vec::new();
    let spawn_follower = |i: usize| {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handle = tokio::spawn(follow(
            fronts[i % fronts.len()].clone(),
            token(&secret, &format!("member{i}")),
            room.clone(),
            true,
            stop.clone(),
            seen.clone(),
            watching.clone(),
        ));
        (
            format!("member{i} via {}", fronts[i % fronts.len()].name),
            seen,
            handle,
        )
    };
    for i in 0..6 {
        followers.push(spawn_follower(i));
    }
    for (_, seen, _) in &followers {
        wait_until("members subscribed", Duration::from_secs(30), async || {
            !seen.lock().await.ids.is_empty()
        })
        .await;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_all(
        fronts[0].clone(),
        token(&secret, PUBLISHER),
        room.clone(),
        u64::MAX,
        Duration::from_millis(200),
        acked.clone(),
    ));
    let edges = containers("edge");
    assert_eq!(edges.len(), 2, "two edge containers: {edges:?}");
    // Per step: the client ids drained off the stopped edge.
    let mut drained_ids: BTreeSet<String> = BTreeSet::new();
    let mut edge_history = Vec::new();
    for edge in &edges {
        let ids = edge_ids();
        edge_history.push(ids.clone());
        // At least two members on the other edge watch the presence of this step.
        let mut next = followers.len();
        loop {
            let mut on_other = 0;
            for (_, seen, _) in &followers {
                let seen = seen.lock().await;
                if let Some(id) = seen.ids.last()
                    && edge_of(id, &ids).is_some_and(|e| &e != edge)
                {
                    on_other += 1;
                }
            }
            if on_other >= 2 {
                break;
            }
            assert!(
                next < 20,
                "the proxies never put two members on the other edge"
            );
            followers.push(spawn_follower(next));
            let seen = followers.last().expect("new").1.clone();
            wait_until(
                "a new member subscribed",
                Duration::from_secs(30),
                async || !seen.lock().await.ids.is_empty(),
            )
            .await;
            next += 1;
        }
        let mut on_edge: Vec<(usize, String)> = Vec::new();
        for (i, (_, seen, _)) in followers.iter().enumerate() {
            let seen = seen.lock().await;
            let id = seen.ids.last().expect("subscribed").clone();
            if edge_of(&id, &ids).as_ref() == Some(edge) {
                on_edge.push((i, id));
            }
        }
        let before: Vec<usize> = {
            let mut v = Vec::new();
            for (_, seen, _) in &followers {
                v.push(seen.lock().await.ids.len());
            }
            v
        };
        let started = Instant::now();
        let edge_name = edge.clone();
        tokio::task::spawn_blocking(move || podman(&["stop", "--time", "30", &edge_name]))
            .await
            .expect("podman stop");
        eprintln!(
            "rolling restart: {edge} stopped in {} s, {} member(s) drained",
            started.elapsed().as_secs(),
            on_edge.len()
        );
        for (i, id) in &on_edge {
            let seen = followers[*i].1.clone();
            let count = before[*i];
            wait_until(
                "a drained member reconnected",
                Duration::from_secs(60),
                async || seen.lock().await.ids.len() > count,
            )
            .await;
            let seen = seen.lock().await;
            assert!(
                seen.closes
                    .iter()
                    .any(|(code, lost)| *code == 4000 && lost == id),
                "{}: drained without close 4000: {:?}",
                followers[*i].0,
                seen.closes
            );
            assert!(seen.disconnects.contains(&4000), "no disconnect push 4000");
            drained_ids.insert(id.clone());
        }
        let edge_name = edge.clone();
        tokio::task::spawn_blocking(move || {
            podman(&["start", &edge_name]);
            wait_healthy(&edge_name, Duration::from_secs(60));
        })
        .await
        .expect("podman start");
        // The proxies re-resolve the edges every 10 s.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let acks_before_stop = acked.load(Ordering::SeqCst);
    publisher.abort();
    let _ = publisher.await;
    assert!(
        acks_before_stop > 50,
        "only {acks_before_stop} publications during the restart"
    );
    // The publisher was aborted: the publications acknowledged are 0..acked (at most one more,
    // unacknowledged, may have been stored).
    let acked_now = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The members' own disconnects below are the test ending, not presence to check.
    watching.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    let mut leaves_seen = BTreeSet::new();
    let mut dump = format!("edge ids per step: {edge_history:?}\n");
    for (name, seen, _) in &followers {
        let seen = seen.lock().await;
        dump.push_str(&format!(
            "  {name}: ids {:?}, closes {:?}, presence {:?}\n",
            seen.ids, seen.closes, seen.presence
        ));
    }
    eprintln!("rolling restart, what each member saw:\n{dump}");
    for (name, seen, handle) in followers {
        handle.await.expect("follower");
        let seen = seen.lock().await;
        let seqs: Vec<u64> = seen.pubs.iter().map(|&(_, s)| s).collect();
        let first = seqs.first().copied().unwrap_or(0);
        assert_eq!(
            seen.not_recovered, 0,
            "{name}: a reconnect could not recover (reconnected after {:?} s; history holds 100): {:?}",
            seen.reconnect_secs, seen.unrecovered
        );
        // Members that joined before the publisher saw everything from 0; later ones from
        // their first publication on: in order, each once, with no gap.
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: publications lost, repeated or reordered: {seqs:?}"
        );
        assert!(
            seqs.last().copied().unwrap_or(0) + 1 >= acked_now,
            "{name}: missed the last publications (saw up to {:?}, {acked_now} acked)",
            seqs.last()
        );
        // Presence: only drained connections leave, and each connection (a reconnection, a
        // late member) joins at most once: no leave/join storm.
        let mut leaves = BTreeSet::new();
        let mut joins = BTreeSet::new();
        for (kind, member) in &seen.presence {
            if kind == "leave" {
                assert!(
                    drained_ids.contains(member),
                    "{name}: saw {member} leave, which was not drained"
                );
                assert!(leaves.insert(member.clone()), "{name}: {member} left twice");
            } else {
                assert!(
                    joins.insert(member.clone()),
                    "{name}: {member} joined twice"
                );
            }
        }
        leaves_seen.extend(leaves.iter().cloned());
        reports.push(format!(
            "{name}: {} pubs from {first}, reconnected in {:.1?} s, {} leaves / {} joins seen",
            seqs.len(),
            seen.reconnect_secs,
            leaves.len(),
            joins.len()
        ));
    }
    eprintln!(
        "rolling restart: {acked_now} publications, drained {} connection(s)\n  {}",
        drained_ids.len(),
        reports.join("\n  ")
    );
    assert!(!drained_ids.is_empty(), "no client was drained");
    // Members on the other edge watched each step: every drained connection's leave was seen.
    assert_eq!(
        leaves_seen, drained_ids,
        "drained connections whose leave nobody saw"
    );
}

fn for_variant(variant: &str) {
    let project = project();
    assert_eq!(
        project,
        format!("plaza-{variant}"),
        "this test is for the {variant} deployment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_chat_and_presence_through_nginx_and_caddy() {
    for_variant("cluster");
    for front in frontends() {
        chat_and_presence(&front).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_broker_leader_killed_while_publishing() {
    for_variant("cluster");
    let before = leader();
    let container = format!("{}_broker-{before}_1", project());
    assert!(containers(&format!("broker-{before}")).contains(&container));
    publish_through_fault("leader-kill", 300, 60, || {
        podman(&["kill", &container]);
        eprintln!("leader-kill: killed {container} (broker {before}, the leader)");
    })
    .await;
    let restarted = bring_back(&container);
    eprintln!(
        "leader-kill: {container} {}",
        if restarted {
            "restarted by its restart policy"
        } else {
            "started again by the test"
        }
    );
    // It rejoins from its volume and catches up with the new leader.
    let addr = brokers()[&before];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_leader = leader();
        let lead = broker_status(brokers()[&now_leader]);
        let mine = broker_status(addr);
        if let (Some(lead), Some(mine)) = (lead, mine)
            && mine["voters"].as_array().map(Vec::len) == Some(3)
            && mine["last_applied"].as_u64().is_some()
            && mine["last_applied"].as_u64() >= lead["commit_index"].as_u64()
        {
            eprintln!(
                "leader-kill: broker {before} back as {} at applied {} (leader {now_leader})",
                mine["state"], mine["last_applied"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {before} did not catch up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy(&container, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rolling_restart_of_the_edges() {
    for_variant("cluster");
    rolling_restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_chat_and_presence_through_nginx_and_caddy() {
    for_variant("nats");
    for front in frontends() {
        chat_and_presence(&front).await;
    }
}

/// The JetStream meta leader, as NATS's monitoring endpoint inside `container` reports it.
fn nats_meta_leader(container: &str) -> String {
    let text = podman(&[
        "exec",
        container,
        "wget",
        "-qO-",
        "http://127.0.0.1:8222/jsz",
    ]);
    let jsz: Value = serde_json::from_str(&text).expect("jsz JSON");
    jsz["meta_cluster"]["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta leader in {jsz}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_node_killed_while_publishing() {
    for_variant("nats");
    let any = containers("nats-1").remove(0);
    let leader = nats_meta_leader(&any);
    let container = format!("{}_{leader}_1", project());
    assert!(
        containers(&leader).contains(&container),
        "{leader} is a service"
    );
    publish_through_fault("nats-kill", 300, 60, || {
        podman(&["kill", &container]);
        eprintln!("nats-kill: killed {container} (the JetStream meta leader)");
    })
    .await;
    let restarted = bring_back(&container);
    eprintln!(
        "nats-kill: {container} {}",
        if restarted {
            "restarted by its restart policy"
        } else {
            "started again by the test"
        }
    );
    // Back with JetStream (the compose file's health check: /healthz?js-enabled-only=true).
    wait_healthy(&container, Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_rolling_restart_of_the_edges() {
    for_variant("nats");
    rolling_restart().await;
}
