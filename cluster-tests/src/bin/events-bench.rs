//! `events-bench`: how fast lifecycle events reach a webhook, and what deriving them costs the
//! publish path, on a 3-broker `plaza-broker` cluster on loopback with a real `plaza-edge`
//! process as the webhook sender and a real receiver.
//!
//! ```text
//! cargo build --release -p plaza-broker -p plaza-edge -p plaza-cluster-tests --bins
//! target/release/events-bench --seconds 10 --publishers 64 --churn 50
//! target/release/events-bench --backend nats   # 3 nats-servers, R3, a NATS edge as sender
//! ```
//!
//! Three runs on fresh clusters, each with the same publish load (publishers each waiting for
//! their ack, like `raft-bench`) and the same membership churn (`--churn` joins per second,
//! each member leaving 100 ms later, through a second edge link):
//!
//! 1. events off (`rooms.events.user_online = false`, no namespace events), no webhooks;
//! 2. events on (`member.*`, `user.*`, `room.*`), no webhooks (the cost of deriving them);
//! 3. events on with a webhook endpoint (a `plaza-edge` process as the sender).
//!
//! Reported: acknowledged publications per second in each run (the cost of events on
//! publishing), and in run 2 the latency from a join's acknowledgement (committed and applied)
//! to the arrival of its `member.joined` at the receiver, p50/p99/max. That latency includes
//! the sender's feed polling (`--poll-ms`, the `webhooks.poll_interval`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use plaza_backend::cluster::ClusterOptions;
use plaza_backend::nats::{NatsBackend, NatsOptions};
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::nats::NatsCluster;
use plaza_cluster_tests::webhook_receiver::Receiver;
use plaza_cluster_tests::{BrokerCluster, EdgeProcess};
use plaza_proto::events::EventType;
use plaza_proto::{ClientId, EdgeId, Member, Payload, RoomName, UserId};
use plaza_rooms::config::NamespaceOverrides;

/// Event delivery latency and publish cost.
#[derive(Parser)]
struct Args {
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent publishers (one edge link), each waiting for its ack.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Joins per second (each member leaves 100 ms later).
    #[arg(long, default_value_t = 50)]
    churn: u64,
    /// The webhook sender's feed polling interval, in milliseconds.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// The broker tier: `cluster` (3 `plaza-broker`s) or `nats` (3 `nats-server`s, R3).
    #[arg(long, default_value = "cluster")]
    backend: String,
}

const SECRET: &str = "events-bench-secret-0123456789abcdef";

fn broker_config(events: bool) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.raft.tick = Duration::from_millis(100);
    if events {
        let all = EventType::ALL
            .into_iter()
            .filter(|t| t.is_room_scoped())
            .collect();
        config.rooms.defaults.events = all;
    } else {
        config.rooms.defaults.events = Vec::new();
        config.rooms.events.user_online = false;
    }
    // Publications go to their own namespace, without presence, as in a chat's message rooms.
    config.rooms.namespaces.insert(
        "pub".into(),
        NamespaceOverrides {
            history_size: Some(100),
            ..Default::default()
        },
    );
    config
}

struct Run {
    publishes_per_second: f64,
    latencies_ms: Vec<f64>,
    joins: usize,
}

async fn run(args: &Args, events: bool, webhooks: bool) -> anyhow::Result<Run> {
    if args.backend == "nats" {
        return run_nats(args, events, webhooks).await;
    }
    let receiver = Receiver::start().await;
    let mut cluster = BrokerCluster::start(3, broker_config(events));
    cluster.wait_leader(Duration::from_secs(30));
    let mut _sender = None;
    if webhooks {
        let path = cluster.dir().join("edge-webhooks.toml");
        std::fs::write(&path, webhook_config(args, &receiver, ""))?;
        let config = path.display().to_string();
        _sender = Some(EdgeProcess::start(
            &cluster,
            1,
            &[1, 2, 3],
            SECRET,
            Duration::from_secs(10),
            &["--config", &config],
        ));
    }
    let (publisher, _events1) = cluster
        .backend("edge-2", ClusterOptions::default())
        .attach(attach("bench-pub"))
        .await?;
    let (churner, _events2) = cluster
        .backend("edge-3", ClusterOptions::default())
        .attach(attach("bench-churn"))
        .await?;
    load(args, publisher, churner, &receiver).await
}

/// The same on three `nats-server`s (streams and buckets with 3 replicas); the webhook
/// sender is a `plaza-edge --backend nats` process with the same room config.
async fn run_nats(args: &Args, events: bool, webhooks: bool) -> anyhow::Result<Run> {
    let receiver = Receiver::start().await;
    let nats = NatsCluster::start(3);
    let rooms = broker_config(events).rooms;
    let options = || NatsOptions {
        servers: nats.urls(),
        replicas: 3,
        ..NatsOptions::default()
    };
    let mut _sender = None;
    if webhooks {
        let path = nats.dir().join("edge-webhooks.toml");
        let room_events: Vec<String> = rooms
            .defaults
            .events
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect();
        let rooms_toml = format!(
            "[rooms.defaults]\nevents = [{}]\n[rooms.events]\nuser_online = {}\n\
             [rooms.namespaces.pub]\nhistory_size = 100\n",
            room_events.join(", "),
            rooms.events.user_online
        );
        std::fs::write(&path, webhook_config(args, &receiver, &rooms_toml))?;
        let cli: Vec<String> = vec![
            "--backend".into(),
            "nats".into(),
            "--nats".into(),
            nats.urls().join(","),
            "--config".into(),
            path.display().to_string(),
        ];
        let edge = EdgeProcess::spawn_with_env(
            nats.dir(),
            "bench-sender",
            &cli,
            SECRET,
            Duration::from_secs(10),
            &[("PLAZA_NATS__REPLICAS", "3".into())],
        );
        edge.wait_ready(Duration::from_secs(30));
        _sender = Some(edge);
    }
    let (publisher, _events1) = NatsBackend::connect(&rooms, options())
        .await?
        .attach(attach("bench-pub"))
        .await?;
    let (churner, _events2) = NatsBackend::connect(&rooms, options())
        .await?
        .attach(attach("bench-churn"))
        .await?;
    load(args, publisher, churner, &receiver).await
}

fn attach(name: &str) -> AttachOptions {
    AttachOptions {
        edge: EdgeId::new(name),
        lease: Duration::from_secs(10),
    }
}

/// The sender edge's config: `[webhooks]` to the receiver (`member.joined` only), plus `extra`.
fn webhook_config(args: &Args, receiver: &Receiver, extra: &str) -> String {
    format!(
        "{extra}[webhooks]\nsecret = \"events-bench-webhook-secret\"\npoll_interval = \"{}ms\"\n\
         [[webhooks.endpoints]]\nname = \"bench\"\nurl = \"{}\"\ntypes = [\"member.joined\"]\n",
        args.poll_ms, receiver.url
    )
}

/// Publishers and churn through the two links for `args.seconds`; what the receiver got.
async fn load<L: EdgeLink>(
    args: &Args,
    publisher: L,
    churner: L,
    receiver: &Receiver,
) -> anyhow::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let (link, stop) = (publisher.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let room = RoomName::new(&format!("pub:r{}", p % 16)).expect("room");
            let data = Payload::from_json(
                r#"{"text":"a chat message of about sixty bytes, give or take"}"#,
            )
            .expect("json");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if link
                    .publish(room.clone(), data.clone(), None, None)
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    // Churn: joins at a fixed rate, each left 100 ms later; acknowledged times by client id.
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let churn = {
        let (link, stop, acked) = (churner.clone(), stop.clone(), acked.clone());
        let every = Duration::from_micros(1_000_000 / args.churn.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let (link, acked) = (link.clone(), acked.clone());
                tokio::spawn(async move {
                    let room = RoomName::new(&format!("chat:c{}", i % 32)).expect("room");
                    let member = Member {
                        client: ClientId::new(format!("bench-{i}")),
                        user: UserId::new(format!("u{}", i % 200)),
                        info: None,
                    };
                    let client = member.client.clone();
                    if link.join(room.clone(), member).await.is_ok() {
                        let now = Instant::now();
                        acked.lock().expect("lock").insert(client.to_string(), now);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = link.leave(room, client).await;
                    }
                });
            }
        })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut published = 0;
    for t in tasks {
        published += t.await?;
    }
    churn.await?;
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_millis(args.poll_ms * 4 + 2000)).await;
    let acked = acked.lock().expect("lock").clone();
    let mut latencies_ms = Vec::new();
    for r in receiver.distinct().into_values() {
        if let Some(client) = r.event["client"].as_str()
            && let Some(at) = acked.get(client)
        {
            let ms = r.at.saturating_duration_since(*at).as_secs_f64() * 1000.0;
            latencies_ms.push(ms);
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    publisher.close().await;
    churner.close().await;
    Ok(Run {
        publishes_per_second: published as f64 / elapsed,
        latencies_ms,
        joins: acked.len(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let off = run(&args, false, false).await?;
    println!(
        "events off: {:.0} publishes/s with {} joins",
        off.publishes_per_second, off.joins
    );
    let derived = run(&args, true, false).await?;
    println!(
        "events on, no webhook: {:.0} publishes/s with {} joins ({:+.1} % vs off)",
        derived.publishes_per_second,
        derived.joins,
        (derived.publishes_per_second / off.publishes_per_second - 1.0) * 100.0
    );
    let on = run(&args, true, true).await?;
    println!(
        "events on + webhook: {:.0} publishes/s with {} joins ({:+.1} % vs off)",
        on.publishes_per_second,
        on.joins,
        (on.publishes_per_second / off.publishes_per_second - 1.0) * 100.0
    );
    let l = &on.latencies_ms;
    println!(
        "join ack -> member.joined at the webhook (poll {} ms): {} delivered of {} joins; \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.poll_ms,
        l.len(),
        on.joins,
        percentile(l, 0.5),
        percentile(l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
