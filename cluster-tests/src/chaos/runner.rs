//! One chaos run: a cluster (Raft brokers behind fault proxies, or NATS) with edges, a
//! recorded workload of reconnecting, recovering, idempotently retrying clients, a fault
//! schedule drawn from a seed, then healing, draining and checking every invariant.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plaza_broker::server::BrokerConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::history::{ClientNo, Event, History, Violation};
use super::invariants;
use super::proxy::{Faults, Node};
use crate::nats::NatsCluster;
use crate::{BrokerCluster, EdgeProcess, token};

const SECRET: &str = "plaza-chaos-secret-0123456789abcdef0123";

/// Which broker tier to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `plaza-broker` Raft nodes, each behind a fault-injecting proxy.
    Cluster,
    /// A 3-node NATS JetStream cluster.
    Nats,
}

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Kill -9 the leader, restart it, repeat.
    LeaderChurn,
    /// Kill -9 a random broker, restart it, repeat.
    BrokerKill,
    /// Kill -9 a random edge, start a new one, repeat (clients move to other edges).
    EdgeKill,
    /// Cut the leader off from the other brokers, heal, repeat.
    LeaderPartition,
    /// Cut one random broker off from the others, heal, repeat.
    MinorityPartition,
    /// Cut every broker off from every other (no majority anywhere), heal, repeat.
    MajorityPartition,
    /// Cut the leader's outgoing traffic to the other brokers only (it still hears them).
    OneWayPartition,
    /// 40 ms of latency and 5 % packet loss on every broker link, then clear, repeat.
    SlowNetwork,
    /// SIGSTOP a random broker (a gray failure), SIGCONT it, repeat.
    Pause,
    /// Kill -9 a random NATS server, restart it, repeat.
    NatsKill,
}

impl Scenario {
    /// Every scenario that applies to `backend`.
    pub fn all(backend: Backend) -> Vec<Scenario> {
        use Scenario::*;
        match backend {
            Backend::Cluster => vec![
                LeaderChurn,
                BrokerKill,
                EdgeKill,
                LeaderPartition,
                MinorityPartition,
                MajorityPartition,
                OneWayPartition,
                SlowNetwork,
                Pause,
            ],
            Backend::Nats => vec![NatsKill, EdgeKill],
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker tier.
    pub backend: Backend,
    /// Brokers (Raft backend) or NATS servers.
    pub brokers: usize,
    /// Edges (at most 4).
    pub edges: usize,
    /// Workload clients.
    pub clients: usize,
    /// Rooms every client subscribes to and publishes in.
    pub rooms: usize,
    /// What to break.
    pub scenario: Scenario,
    /// How long faults are injected.
    pub duration: Duration,
    /// Seeds the fault schedule and the clients' choices.
    pub seed: u64,
    /// The edges' broker lease.
    pub lease: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Cluster,
            brokers: 3,
            edges: 2,
            clients: 4,
            rooms: 2,
            scenario: Scenario::LeaderChurn,
            duration: Duration::from_secs(20),
            seed: 1,
            lease: Duration::from_secs(3),
        }
    }
}

/// What a run found.
pub struct Report {
    /// The settings.
    pub options: Options,
    /// Publishes acknowledged, failed attempts, live deliveries, reconnects.
    pub counts: Counts,
    /// The faults injected, with when.
    pub faults: Vec<String>,
    /// Per invariant: passed, or the first counterexample.
    pub invariants: Vec<(&'static str, Result<(), Violation>)>,
    /// Publish latency (send to ack) percentiles: p50, p99, max.
    pub latency: (Duration, Duration, Duration),
    /// Per fault: how long until a publish sent after it was acknowledged.
    pub recoveries: Vec<Duration>,
}

/// Operation counts.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Distinct publications acknowledged.
    pub acked: usize,
    /// Failed publish attempts (retried with the same key).
    pub failed: usize,
    /// Live deliveries.
    pub delivered: usize,
    /// Subscribe replies with `recovered: true` after a reconnect.
    pub recovered: usize,
    /// Client disconnects.
    pub disconnects: usize,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|(_, r)| r.is_ok())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "plaza-chaos report: backend {:?}, scenario {:?}, seed {}, {:?} of faults",
            o.backend, o.scenario, o.seed, o.duration
        )?;
        writeln!(
            f,
            "  cluster: {} {}, {} edges, {} clients, {} rooms",
            o.brokers,
            if o.backend == Backend::Nats {
                "NATS servers"
            } else {
                "brokers"
            },
            o.edges,
            o.clients,
            o.rooms
        )?;
        let c = &self.counts;
        writeln!(
            f,
            "  operations: {} publications acknowledged, {} failed attempts (retried), {} live \
             deliveries, {} disconnects, {} recoveries",
            c.acked, c.failed, c.delivered, c.disconnects, c.recovered
        )?;
        writeln!(f, "  faults ({}):", self.faults.len())?;
        for fault in &self.faults {
            writeln!(f, "    {fault}")?;
        }
        let (p50, p99, max) = self.latency;
        writeln!(
            f,
            "  publish latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(p50),
            ms(p99),
            ms(max)
        )?;
        if !self.recoveries.is_empty() {
            let mut r = self.recoveries.clone();
            r.sort_unstable();
            writeln!(
                f,
                "  time to the next acknowledged publish after a fault: median {:.0} ms, max {:.0} ms",
                ms(r[r.len() / 2]),
                ms(r[r.len() - 1])
            )?;
        }
        writeln!(f, "  invariants:")?;
        for (name, result) in &self.invariants {
            match result {
                Ok(()) => writeln!(f, "    PASS {name}")?,
                Err(v) => writeln!(f, "    FAIL {name}: {}", v.example)?,
            }
        }
        if self.passed() {
            writeln!(f, "  verdict: PASS")
        } else {
            writeln!(
                f,
                "  verdict: FAIL — reproduce with: plaza-chaos --backend {} --scenario {} \
                 --duration {}s --seed {}",
                format!("{:?}", o.backend).to_lowercase(),
                kebab(&format!("{:?}", o.scenario)),
                o.duration.as_secs(),
                o.seed
            )
        }
    }
}

fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The recorder shared by every client.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, event: Event) {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .push(event);
    }
}

/// The system under test.
enum System {
    Raft { cluster: Box<BrokerCluster> },
    Nats { nats: NatsCluster },
}

/// Runs one scenario and checks every invariant.
pub async fn run(options: Options) -> Report {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let (mut system, mut edges) = start_system(&options);
    let urls: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(edges.iter().map(EdgeProcess::ws_url).collect()));
    let recorder = Recorder {
        start: Instant::now(),
        history: Arc::new(Mutex::new(History::default())),
    };
    let rooms: Vec<String> = (0..options.rooms)
        .map(|r| format!("chaos:room-{r}"))
        .collect();
    let publishing = Arc::new(AtomicBool::new(true));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..options.clients {
        clients.push(tokio::spawn(client(
            c as ClientNo,
            options.seed.wrapping_add(c as u64 * 7919),
            rooms.clone(),
            Arc::clone(&urls),
            recorder.clone(),
            Arc::clone(&publishing),
            Arc::clone(&stopping),
        )));
    }
    let leaders = match &system {
        System::Raft { cluster } => Some(tokio::spawn(watch_leaders(
            cluster.slots.iter().map(|s| (s.id, s.http)).collect(),
            recorder.clone(),
            Arc::clone(&stopping),
        ))),
        System::Nats { .. } => None,
    };

    // Faults.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut faults = Vec::new();
    let mut fault_starts = Vec::new();
    let end = Instant::now() + options.duration;
    while Instant::now() < end {
        let at = recorder.now();
        fault_starts.push(at);
        let what = inject(&options, &mut system, &mut edges, &urls, &mut rng).await;
        faults.push(format!("{:>6.1}s  {what}", at as f64 / 1000.0));
        let pause = Duration::from_millis(rng.random_range(1500..3000));
        tokio::time::sleep(pause).await;
    }
    heal(&mut system).await;

    // Let retries finish and deliveries catch up, then read presence.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publishing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::time::sleep(options.lease + Duration::from_secs(2)).await;
    let healed_at = recorder.now();
    observe_presence(&urls, &rooms, options.clients, &recorder, healed_at).await;
    stopping.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    if let Some(l) = leaders {
        let _ = l.await;
    }
    drop(edges);
    drop(system);

    let history = recorder
        .history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    summarize(options, &history, faults, &fault_starts)
}

fn start_system(options: &Options) -> (System, Vec<EdgeProcess>) {
    match options.backend {
        Backend::Cluster => {
            let mut config = BrokerConfig::default();
            config.raft.tick = Duration::from_millis(200);
            let mut cluster = BrokerCluster::start_with(options.brokers, config, true);
            cluster.wait_leader(Duration::from_secs(30));
            let ids: Vec<u64> = (1..=options.brokers as u64).collect();
            let edges = (1..=options.edges.min(crate::EDGE_CERTS))
                .map(|n| EdgeProcess::start(&cluster, n, &ids, SECRET, options.lease, &[]))
                .collect();
            (
                System::Raft {
                    cluster: Box::new(cluster),
                },
                edges,
            )
        }
        Backend::Nats => {
            let nats = NatsCluster::start(options.brokers.max(1));
            let replicas = if options.brokers >= 3 { 3 } else { 1 };
            let edges = (0..options.edges)
                .map(|n| nats_edge(&nats, n, replicas, options.lease))
                .collect();
            (System::Nats { nats }, edges)
        }
    }
}

fn nats_edge(nats: &NatsCluster, n: usize, replicas: usize, lease: Duration) -> EdgeProcess {
    let args: Vec<String> = vec![
        "--backend".into(),
        "nats".into(),
        "--nats".into(),
        nats.urls().join(","),
    ];
    let edge = EdgeProcess::spawn_with_env(
        nats.dir(),
        &format!("edge-{n}-{}", rand::random::<u16>()),
        &args,
        SECRET,
        lease,
        &[
            ("PLAZA_NATS__REPLICAS", replicas.to_string()),
            ("PLAZA_NATS__REAP_EVERY", "300ms".into()),
        ],
    );
    edge.wait_ready(Duration::from_secs(30));
    edge
}

/// Injects one fault of the scenario (and undoes the previous one first).
async fn inject(
    options: &Options,
    system: &mut System,
    edges: &mut Vec<EdgeProcess>,
    urls: &Arc<Mutex<Vec<String>>>,
    rng: &mut StdRng,
) -> String {
    heal(system).await;
    match (system, options.scenario) {
        (system, Scenario::EdgeKill) => {
            let victim = rng.random_range(0..edges.len());
            edges[victim].process.kill();
            let old = edges[victim].ws_url();
            urls.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|u| *u != old);
            edges.remove(victim);
            // A replacement comes up (new process, new address), as an orchestrator would.
            let n = rng.random_range(1..=crate::EDGE_CERTS);
            let fresh = match system {
                System::Raft { cluster } => {
                    let ids: Vec<u64> = cluster.slots.iter().map(|s| s.id).collect();
                    EdgeProcess::start(cluster, n, &ids, SECRET, options.lease, &[])
                }
                System::Nats { nats } => {
                    let replicas = if nats.nodes.len() >= 3 { 3 } else { 1 };
                    nats_edge(nats, n, replicas, options.lease)
                }
            };
            let url = fresh.ws_url();
            urls.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(url.clone());
            edges.push(fresh);
            format!("kill -9 edge {old}; started {url}")
        }
        (System::Nats { nats }, _) => {
            let victim = rng.random_range(0..nats.nodes.len());
            nats.kill(victim);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            nats.start_node(victim);
            format!("killed NATS server {victim}, restarted it 1.5 s later")
        }
        (System::Raft { cluster }, scenario) => {
            let ids: Vec<u64> = cluster.slots.iter().map(|s| s.id).collect();
            let leader = current_leader(cluster);
            let random = ids[rng.random_range(0..ids.len())];
            match scenario {
                Scenario::LeaderChurn | Scenario::BrokerKill => {
                    let victim = if scenario == Scenario::LeaderChurn {
                        leader.unwrap_or(random)
                    } else {
                        random
                    };
                    cluster.kill(victim);
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    cluster.start_node(victim);
                    format!("kill -9 broker {victim} (leader {leader:?}), restarted 1 s later")
                }
                Scenario::LeaderPartition | Scenario::MinorityPartition => {
                    let victim = if scenario == Scenario::LeaderPartition {
                        leader.unwrap_or(random)
                    } else {
                        random
                    };
                    let others: Vec<Node> = ids
                        .iter()
                        .filter(|id| **id != victim)
                        .map(|id| Node::Broker(*id))
                        .collect();
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| f.partition(&[Node::Broker(victim)], &others));
                    }
                    format!("partitioned broker {victim} (leader {leader:?}) from the others")
                }
                Scenario::MajorityPartition => {
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| {
                            for a in &ids {
                                for b in &ids {
                                    if a != b {
                                        f.cut.insert((Node::Broker(*a), Node::Broker(*b)));
                                    }
                                }
                            }
                        });
                    }
                    "partitioned every broker from every other (no majority)".into()
                }
                Scenario::OneWayPartition => {
                    let victim = leader.unwrap_or(random);
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| {
                            for other in ids.iter().filter(|id| **id != victim) {
                                f.cut.insert((Node::Broker(victim), Node::Broker(*other)));
                            }
                        });
                    }
                    format!(
                        "cut broker {victim}'s (leader {leader:?}) traffic to the others, one way"
                    )
                }
                Scenario::SlowNetwork => {
                    if let Some(p) = &cluster.proxies {
                        p.set(Faults {
                            latency: Duration::from_millis(40),
                            loss: 0.05,
                            ..Faults::default()
                        });
                    }
                    "40 ms latency and 5 % loss on every link".into()
                }
                Scenario::Pause => {
                    cluster.pause(random);
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    cluster.resume(random);
                    format!("SIGSTOP broker {random} (leader {leader:?}) for 1.5 s")
                }
                Scenario::NatsKill | Scenario::EdgeKill => "nothing (not a Raft scenario)".into(),
            }
        }
    }
}

/// Undoes network faults and restarts anything stopped.
async fn heal(system: &mut System) {
    match system {
        System::Raft { cluster } => {
            if let Some(p) = &cluster.proxies {
                p.heal();
            }
            for id in 1..=cluster.slots.len() as u64 {
                cluster.resume(id);
                if !cluster.running(id) {
                    cluster.start_node(id);
                }
            }
        }
        System::Nats { .. } => {}
    }
}

fn current_leader(cluster: &BrokerCluster) -> Option<u64> {
    cluster.slots.iter().find_map(|s| {
        let status = cluster.status(s.id)?;
        (status.get("state")?.as_str()? == "Leader").then_some(s.id)
    })
}

/// Records which broker says it leads in which term, every 100 ms.
async fn watch_leaders(
    brokers: Vec<(u64, std::net::SocketAddr)>,
    recorder: Recorder,
    stopping: Arc<AtomicBool>,
) {
    let mut seen: HashMap<(u64, u64), ()> = HashMap::new();
    while !stopping.load(Ordering::Relaxed) {
        for (id, http) in &brokers {
            let http = *http;
            let status = tokio::task::spawn_blocking(move || crate::http_get(http, "/status"))
                .await
                .ok()
                .flatten();
            let Some((200, body)) = status else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&body) else {
                continue;
            };
            if v["state"] == "Leader"
                && let Some(term) = v["term"].as_u64()
                && seen.insert((*id, term), ()).is_none()
            {
                recorder.record(Event::LeaderObserved {
                    node: *id,
                    term,
                    at: recorder.now(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every room's presence from a fresh client after the faults healed.
async fn observe_presence(
    urls: &Arc<Mutex<Vec<String>>>,
    rooms: &[String],
    clients: usize,
    recorder: &Recorder,
    healed_at: u64,
) {
    let url = urls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .first()
        .cloned();
    let Some(url) = url else { return };
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        return;
    };
    let mut next = 1;
    let mut call = |command: Value| {
        let mut command = command;
        command["id"] = json!(next);
        next += 1;
        command
    };
    let connect = call(json!({"op": "connect", "token": token(SECRET, "observer")}));
    if ws.send(Message::text(connect.to_string())).await.is_err() {
        return;
    }
    for room in rooms {
        let command = call(json!({"op": "presence", "room": room}));
        let id = command["id"].clone();
        if ws.send(Message::text(command.to_string())).await.is_err() {
            return;
        }
        let reply = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["id"] == id {
                        break v;
                    }
                }
                _ => return,
            }
        };
        let mut observed: Vec<String> = reply["ok"]["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["user"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        observed.sort();
        observed.dedup();
        let mut expected: Vec<String> = (0..clients).map(|c| format!("c{c}")).collect();
        expected.sort();
        recorder.record(Event::PresenceObserved {
            room: room.clone(),
            observed,
            expected,
            after_heal_ms: recorder.now().saturating_sub(healed_at),
            at: recorder.now(),
        });
    }
}

/// Subscribe requests awaiting their reply: request id → (room, position asked to recover).
type Subscribing = HashMap<u64, (String, Option<(String, u64)>)>;

/// A publish in flight or waiting to be retried.
struct Pending {
    room: String,
    id: String,
    req: Option<u64>,
}

/// One workload client: connect to a random edge, subscribe to every room (recovering from
/// its last position), publish with idempotency keys (retrying failures with the same key),
/// and start over on another edge whenever the connection ends.
async fn client(
    me: ClientNo,
    seed: u64,
    rooms: Vec<String>,
    urls: Arc<Mutex<Vec<String>>>,
    recorder: Recorder,
    publishing: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let user = format!("c{me}");
    let tok = token(SECRET, &user);
    let mut positions: HashMap<String, (String, u64)> = HashMap::new();
    let mut pending: Option<Pending> = None;
    let mut n = 0u64;
    while !stopping.load(Ordering::Relaxed) {
        let url = {
            let urls = urls.lock().unwrap_or_else(PoisonError::into_inner);
            if urls.is_empty() {
                None
            } else {
                Some(urls[rng.random_range(0..urls.len())].clone())
            }
        };
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut req = 0u64;
        let mut subscribing: Subscribing = HashMap::new();
        req += 1;
        let connect = json!({"id": req, "op": "connect", "token": tok});
        if ws.send(Message::text(connect.to_string())).await.is_err() {
            continue;
        }
        for room in &rooms {
            req += 1;
            let recover = positions.get(room).cloned();
            let mut command = json!({"id": req, "op": "subscribe", "room": room});
            if let Some((epoch, offset)) = &recover {
                command["recover"] = json!({"epoch": epoch, "offset": offset});
            }
            subscribing.insert(req, (room.clone(), recover));
            if ws.send(Message::text(command.to_string())).await.is_err() {
                break;
            }
        }
        if let Some(p) = pending.as_mut() {
            p.req = None; // resent below
        }
        let mut tick = tokio::time::interval(Duration::from_millis(rng.random_range(20..40)));
        let code = loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(f))) => break f.map_or(1005, |f| u16::from(f.code)),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break 1006,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    let retry = handle_frame(
                        me, &v, &recorder, &mut positions, &mut subscribing, &mut pending,
                    );
                    if retry {
                        // A refused subscribe (broker tier briefly unavailable): start over.
                        let _ = ws.close(None).await;
                        break 4004;
                    }
                }
                _ = tick.tick() => {
                    if stopping.load(Ordering::Relaxed) {
                        let _ = ws.close(None).await;
                        return;
                    }
                    if pending.as_ref().is_some_and(|p| p.req.is_some()) || !subscribing.is_empty() {
                        continue;
                    }
                    if pending.is_none() {
                        if !publishing.load(Ordering::Relaxed) {
                            continue;
                        }
                        n += 1;
                        let room = rooms[rng.random_range(0..rooms.len())].clone();
                        let id = format!("c{me}-{n}");
                        recorder.record(Event::PublishSent {
                            client: me, room: room.clone(), id: id.clone(), at: recorder.now(),
                        });
                        pending = Some(Pending { room, id, req: None });
                    }
                    let Some(p) = pending.as_mut() else { continue };
                    req += 1;
                    p.req = Some(req);
                    let command = json!({
                        "id": req, "op": "publish", "room": p.room,
                        "data": {"id": p.id}, "idem": p.id,
                    });
                    if ws.send(Message::text(command.to_string())).await.is_err() {
                        break 1006;
                    }
                }
            }
        };
        if let Some(p) = pending.as_mut()
            && p.req.take().is_some()
        {
            recorder.record(Event::PublishFailed {
                client: me,
                room: p.room.clone(),
                id: p.id.clone(),
                code: 0,
                at: recorder.now(),
            });
        }
        recorder.record(Event::Disconnected {
            client: me,
            code,
            at: recorder.now(),
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

/// Records one server frame; true when the connection should be started over (a subscribe
/// was refused).
fn handle_frame(
    me: ClientNo,
    v: &Value,
    recorder: &Recorder,
    positions: &mut HashMap<String, (String, u64)>,
    subscribing: &mut Subscribing,
    pending: &mut Option<Pending>,
) -> bool {
    if v["push"] == "pub" {
        let (Some(room), Some(offset), Some(id)) = (
            v["room"].as_str(),
            v["offset"].as_u64(),
            v["data"]["id"].as_str(),
        ) else {
            return false;
        };
        let epoch = positions
            .get(room)
            .map(|(e, _)| e.clone())
            .unwrap_or_default();
        positions.insert(room.to_owned(), (epoch.clone(), offset));
        recorder.record(Event::Delivered {
            client: me,
            room: room.to_owned(),
            epoch,
            offset,
            id: id.to_owned(),
            at: recorder.now(),
        });
        return false;
    }
    let Some(req) = v["id"].as_u64() else {
        return false;
    };
    if let Some((room, recover)) = subscribing.remove(&req) {
        let Some(ok) = v.get("ok") else {
            return true;
        };
        let epoch = ok["epoch"].as_str().unwrap_or_default().to_owned();
        let offset = ok["offset"].as_u64().unwrap_or(0);
        let publications: Vec<(u64, String)> = ok["publications"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        Some((p["offset"].as_u64()?, p["data"]["id"].as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        positions.insert(room.clone(), (epoch.clone(), offset));
        recorder.record(Event::Subscribed {
            client: me,
            room,
            recover,
            recovered: ok["recovered"].as_bool().unwrap_or(false),
            epoch,
            offset,
            publications,
            at: recorder.now(),
        });
        return false;
    }
    let Some(p) = pending.as_mut() else {
        return false;
    };
    if p.req != Some(req) {
        return false;
    }
    if let Some(ok) = v.get("ok") {
        recorder.record(Event::PublishAcked {
            client: me,
            room: p.room.clone(),
            id: p.id.clone(),
            epoch: ok["epoch"].as_str().unwrap_or_default().to_owned(),
            offset: ok["offset"].as_u64().unwrap_or(0),
            duplicate: ok["duplicate"].as_bool().unwrap_or(false),
            at: recorder.now(),
        });
        *pending = None;
    } else {
        let code = v["error"]["code"].as_u64().unwrap_or(0);
        recorder.record(Event::PublishFailed {
            client: me,
            room: p.room.clone(),
            id: p.id.clone(),
            code: u16::try_from(code).unwrap_or(0),
            at: recorder.now(),
        });
        p.req = None; // retried on a later tick with the same key
    }
    false
}

fn summarize(
    options: Options,
    history: &History,
    faults: Vec<String>,
    fault_starts: &[u64],
) -> Report {
    let mut counts = Counts::default();
    let mut sent: HashMap<&str, u64> = HashMap::new();
    let mut latencies = Vec::new();
    let mut acks: Vec<(u64, u64)> = Vec::new(); // (first sent, acked at)
    for event in &history.events {
        match event {
            Event::PublishSent { id, at, .. } => {
                sent.entry(id.as_str()).or_insert(*at);
            }
            Event::PublishAcked { id, at, .. } => {
                counts.acked += 1;
                if let Some(s) = sent.get(id.as_str()) {
                    latencies.push(Duration::from_millis(at.saturating_sub(*s)));
                    acks.push((*s, *at));
                }
            }
            Event::PublishFailed { .. } => counts.failed += 1,
            Event::Delivered { .. } => counts.delivered += 1,
            Event::Subscribed {
                recover: Some(_),
                recovered: true,
                ..
            } => counts.recovered += 1,
            Event::Disconnected { .. } => counts.disconnects += 1,
            _ => {}
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let latency = (
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    let recoveries = fault_starts
        .iter()
        .filter_map(|start| {
            acks.iter()
                .filter(|(s, _)| s >= start)
                .map(|(_, a)| Duration::from_millis(a - start))
                .min()
        })
        .collect();
    Report {
        options,
        counts,
        faults,
        invariants: invariants::check_all(history),
        latency,
        recoveries,
    }
}
