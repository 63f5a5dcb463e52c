//! One chaos run: a cluster (Raft brokers behind fault proxies, or NATS) with edges, a
//! recorded workload of reconnecting, recovering, idempotently retrying clients, a fault
//! schedule drawn from a seed, then healing, draining and checking every invariant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plaza_broker::server::BrokerConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{ClientNo, Event, History};
use crate::nats::NatsCluster;
use crate::{BrokerCluster, EdgeProcess};

pub(super) const SECRET: &str = "plaza-chaos-secret-0123456789abcdef0123";

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
    /// The longest stall (window without an acknowledged publish, or one publish's latency)
    /// the liveness verdict accepts; majority-loss scenarios are exempt.
    pub liveness_bound: Duration,
    /// The edges' config file with `[webhooks]` (set by [`run`] on both backends, where a
    /// real receiver checks the webhook invariants).
    pub edge_config: Option<std::path::PathBuf>,
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
            liveness_bound: Duration::from_secs(3),
            edge_config: None,
        }
    }
}

/// The recorder shared by every client.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) start: Instant,
    pub(super) history: Arc<Mutex<History>>,
}

impl Recorder {
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn record(&self, event: Event) {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .push(event);
    }
}

/// The system under test.
pub(super) enum System {
    Raft { cluster: Box<BrokerCluster> },
    Nats { nats: NatsCluster },
}

/// Runs one scenario and checks every invariant.
pub async fn run(mut options: Options) -> Report {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let webhooks = Some(super::webhooks::Webhooks::start().await);
    options.edge_config = webhooks.as_ref().map(|w| w.edge_config.clone());
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
    let finish_watch = Arc::new(AtomicBool::new(false));
    let mut watcher = tokio::spawn(super::presence_watch::watch(
        Arc::clone(&urls),
        rooms.clone(),
        recorder.clone(),
        Arc::clone(&finish_watch),
        Instant::now() + options.duration + options.lease + Duration::from_secs(60),
    ));
    let writing = Arc::new(AtomicBool::new(true));
    let state_writer = tokio::spawn(super::state_watch::write(
        Arc::clone(&urls),
        options.seed ^ 0x5747,
        Arc::clone(&writing),
    ));
    let mut state_watcher = tokio::spawn(super::state_watch::watch(
        Arc::clone(&urls),
        recorder.clone(),
        Arc::clone(&finish_watch),
        Instant::now() + options.duration + options.lease + Duration::from_secs(60),
    ));
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
    let published_until = recorder.now();
    publishing.store(false, Ordering::Relaxed);
    writing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::time::sleep(options.lease + Duration::from_secs(2)).await;
    let healed_at = recorder.now();
    observe_presence(&urls, &rooms, options.clients, &recorder, healed_at).await;
    finish_watch.store(true, Ordering::Relaxed);
    if tokio::time::timeout(Duration::from_secs(30), &mut watcher)
        .await
        .is_err()
    {
        watcher.abort();
        eprintln!("the presence watcher did not finish");
    }
    if tokio::time::timeout(Duration::from_secs(30), &mut state_watcher)
        .await
        .is_err()
    {
        state_watcher.abort();
        eprintln!("the state watcher did not finish");
    }
    let state_writes = state_writer.await.unwrap_or(0);
    stopping.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let webhook_results = match &webhooks {
        Some(w) => w.check(&edges).await,
        None => Vec::new(),
    };
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
    let mut report = summarize(options, &history, faults, &fault_starts, published_until);
    report.counts.state_writes = state_writes;
    report.invariants.extend(webhook_results);
    report
}

/// The extra flags of a workload edge: its config file, when there is one.
pub(super) fn edge_extra(options: &Options) -> Vec<String> {
    match &options.edge_config {
        Some(path) => vec!["--config".into(), path.display().to_string()],
        None => Vec::new(),
    }
}

pub(super) fn start_system(options: &Options) -> (System, Vec<EdgeProcess>) {
    match options.backend {
        Backend::Cluster => {
            let mut config = BrokerConfig::default();
            config.raft.tick = Duration::from_millis(200);
            config.rooms.namespaces.insert(
                super::state_watch::STATE_NAMESPACE.to_owned(),
                plaza_rooms::config::NamespaceOverrides {
                    state: Some(plaza_rooms::config::StateOptions {
                        enabled: true,
                        max_keys: 100,
                        max_ttl: Duration::from_secs(10),
                        ..plaza_rooms::config::StateOptions::default()
                    }),
                    ..plaza_rooms::config::NamespaceOverrides::default()
                },
            );
            let mut cluster = BrokerCluster::start_with(options.brokers, config, true);
            cluster.wait_leader(Duration::from_secs(30));
            let ids: Vec<u64> = (1..=options.brokers as u64).collect();
            let extra = edge_extra(options);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let edges = (1..=options.edges.min(crate::EDGE_CERTS))
                .map(|n| EdgeProcess::start(&cluster, n, &ids, SECRET, options.lease, &extra))
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
                .map(|n| nats_edge(&nats, n, replicas, options))
                .collect();
            (System::Nats { nats }, edges)
        }
    }
}

pub(super) fn nats_edge(
    nats: &NatsCluster,
    n: usize,
    replicas: usize,
    options: &Options,
) -> EdgeProcess {
    let mut args: Vec<String> = vec![
        "--backend".into(),
        "nats".into(),
        "--nats".into(),
        nats.urls().join(","),
    ];
    args.extend(edge_extra(options));
    let edge = EdgeProcess::spawn_with_env(
        nats.dir(),
        &format!("edge-{n}-{}", rand::random::<u16>()),
        &args,
        SECRET,
        options.lease,
        &[
            ("PLAZA_NATS__REPLICAS", replicas.to_string()),
            ("PLAZA_NATS__REAP_EVERY", "300ms".into()),
        ],
    );
    edge.wait_ready(Duration::from_secs(30));
    edge
}

use super::clients::*;
use super::faults::*;
use super::report::summarize;
pub use super::report::{Counts, Report};
