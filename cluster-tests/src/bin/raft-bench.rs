//! `raft-bench`: committed publications per second and commit latency of a 3-broker
//! `plaza-broker` cluster on loopback (durable redb logs with fsync), driven through the
//! edges' own client (`ClusterBackend`) by many concurrent publishers.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/raft-bench --seconds 10 --edges 4 --publishers 64 --rooms 64
//! ```
//!
//! Each publisher publishes a ~100-byte JSON payload, waits for the acknowledgement (commit by
//! a majority, applied on the edge's broker), and publishes again. Edges attach to random
//! brokers, so followers forward their writes to the leader, as in production. Reported:
//! acknowledged publications per second after a warm-up, and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use plaza_backend::cluster::ClusterOptions;
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::BrokerCluster;
use plaza_proto::{EdgeId, Payload, RoomName};

/// Publish load against a 3-node loopback cluster.
#[derive(Parser)]
struct Args {
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Edge links (each its own QUIC connection to a random broker).
    #[arg(long, default_value_t = 4)]
    edges: usize,
    /// Concurrent publishers per edge, each waiting for its ack before the next publish.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Rooms the publishers spread over.
    #[arg(long, default_value_t = 64)]
    rooms: usize,
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cluster = BrokerCluster::start(args.brokers, BrokerConfig::default());
    let leader = cluster.wait_leader(Duration::from_secs(30));
    println!(
        "{} brokers up (leader {leader}), data in {}",
        args.brokers,
        cluster.dir().display()
    );
    let mut links = Vec::new();
    for e in 0..args.edges {
        let backend = cluster.backend(&format!("edge-{}", e % 4 + 1), ClusterOptions::default());
        let (link, events) = backend
            .attach(AttachOptions {
                edge: EdgeId::new(format!("bench-{e}")),
                lease: Duration::from_secs(10),
            })
            .await?;
        links.push((link, events));
    }
    let rooms: Vec<RoomName> = (0..args.rooms)
        .map(|r| RoomName::new(&format!("bench:room-{r}")))
        .collect::<Result<_, _>>()?;
    let payload = Payload::from_json(&format!("{{\"text\":\"{}\",\"n\":1}}", "x".repeat(80)))?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (e, (link, _)) in links.iter().enumerate() {
        for p in 0..args.publishers {
            let link = link.clone();
            let room = rooms[(e * args.publishers + p) % rooms.len()].clone();
            let payload = payload.clone();
            let (measuring, stop) = (measuring.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = link
                        .publish(room.clone(), payload.clone(), None, None)
                        .await;
                    if measuring.load(Ordering::Relaxed) {
                        match result {
                            Ok(_) => latencies.push(started.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                }
                (latencies, errors)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let before = cluster
        .status(leader)
        .map(|s| s["commit_index"].as_u64().unwrap_or(0));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let after = cluster
        .status(leader)
        .map(|s| s["commit_index"].as_u64().unwrap_or(0));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let count = latencies.len();
    anyhow::ensure!(count > 0, "no publication was acknowledged");
    let pct = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    let entries = match (before, after) {
        (Some(b), Some(a)) => format!("{}", a.saturating_sub(b)),
        _ => "?".into(),
    };
    println!(
        "publishers: {} ({} edges x {}), rooms: {}",
        args.edges * args.publishers,
        args.edges,
        args.publishers,
        args.rooms
    );
    println!(
        "committed publications/s: {:.0}  ({count} in {:.1}s, {errors} errors, {entries} raft entries)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "commit latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies[count - 1])
    );
    for (link, _) in &links {
        link.close().await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
