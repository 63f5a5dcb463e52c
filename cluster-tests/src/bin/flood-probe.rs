//! `flood-probe`: what hostile clients do to everyone else on an edge. A real `plaza-edge`
//! process (memory backend, shipped limits) serves well-behaved subscribers of one room fed by
//! a steady publisher; after a quiet baseline phase, attackers start: connections that flood
//! `history` of a 6 MB room and never read, command flooders that get rate limited and cut, and
//! a user spraying publications over ever new rooms. Reported per run: the subscribers'
//! delivery latency (p50/p99) in each phase and the edge's RSS; then medians over the runs.
//!
//! ```text
//! cargo build --release --bin plaza-edge --bin flood-probe
//! target/release/flood-probe --runs 3
//! ```
//!
//! Every limit is the shipped default. The well-behaved clients connect from their own
//! loopback addresses (127.0.1.x, a few per address); the attackers all come from 127.0.0.1,
//! as one abusive host would, and run in a child process (`flood-probe attack`, at `nice 19`)
//! so their own sending does not take the CPU from the edge and the measuring clients. The
//! edge's CPU seconds in each phase show what the attack costs the edge itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use futures_util::SinkExt;
use plaza_cluster_tests::ws::{Client, Ended};
use plaza_cluster_tests::{EdgeProcess, token};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "flood-probe-secret-0123456789abcdef0123";

/// Hostile clients next to well-behaved ones on one edge.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    attack: Option<Attack>,
    #[command(flatten)]
    args: Args,
}

/// Internal: the attackers' process.
#[derive(Subcommand)]
enum Attack {
    /// Attack the edge at `url` for `secs` seconds.
    #[command(hide = true)]
    Attack {
        #[arg(long)]
        url: String,
        #[arg(long)]
        secs: u64,
        #[arg(long)]
        history_flooders: usize,
        #[arg(long)]
        command_flooders: usize,
    },
}

#[derive(clap::Args)]
struct Args {
    /// Independent runs (a fresh edge each); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each phase (baseline, then under attack).
    #[arg(long, default_value_t = 10)]
    phase_secs: u64,
    /// Well-behaved subscribers of the measured room.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Publications per second to the measured room (one connection; the shipped command
    /// rate is 50/s per connection).
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// Connections flooding `history` without reading.
    #[arg(long, default_value_t = 4)]
    history_flooders: usize,
    /// Connections flooding `ping` past the command rate (they get cut and reconnect).
    #[arg(long, default_value_t = 4)]
    command_flooders: usize,
}

/// Microseconds since the Unix epoch (publisher and subscribers share the clock).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU seconds `pid` has used (user + system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One run's figures.
struct RunResult {
    base_p50: f64,
    base_p99: f64,
    attack_p50: f64,
    attack_p99: f64,
    base_delivered: usize,
    attack_delivered: usize,
    rss_base_mib: f64,
    rss_peak_mib: f64,
    history_sent: usize,
    base_cpu: f64,
    attack_cpu: f64,
}

async fn run_once(args: &Args) -> RunResult {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [("PLAZA_LOG", "warn".to_owned())];
    let edge = EdgeProcess::spawn_with_env(
        dir.path(),
        "edge-flood",
        &[],
        SECRET,
        Duration::from_secs(5),
        &env,
    );
    edge.wait_ready(Duration::from_secs(20));
    let url = edge.ws_url();

    // The room the history flooders read: 100 publications of 60 KB (10 users, within each
    // user's publish budget burst).
    for u in 0..10 {
        let mut filler = Client::connect_from(
            &url,
            &token(SECRET, &format!("filler-{u}")),
            [127, 0, 2, 1].into(),
        )
        .await;
        filler
            .call(json!({"op": "subscribe", "room": "chat:big"}))
            .await;
        for i in 0..10 {
            let r = filler
                .call(json!({"op": "publish", "room": "chat:big", "data": {"i": i, "pad": "x".repeat(60_000)}}))
                .await;
            assert!(r.get("ok").is_some(), "filler publish refused: {r}");
        }
    }

    // Phase: 0 = warm-up, 1 = baseline, 2 = attack, 3 = done.
    let phase = Arc::new(AtomicUsize::new(0));
    let samples: Arc<[Mutex<Vec<u64>>; 2]> = Arc::new([Mutex::default(), Mutex::default()]);
    let mut subscribers = Vec::new();
    for s in 0..args.subscribers {
        // 16 clients per address, well inside the per-IP connection burst.
        let source = [127, 0, 1, 1 + (s / 16) as u8].into();
        let mut c =
            Client::connect_from(&url, &token(SECRET, &format!("viewer-{s}")), source).await;
        let r = c
            .call(json!({"op": "subscribe", "room": "chat:measured"}))
            .await;
        assert!(r.get("ok").is_some(), "subscribe refused: {r}");
        let (phase, samples) = (phase.clone(), samples.clone());
        subscribers.push(tokio::spawn(async move {
            let mut local: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
            loop {
                match c.next_push(Duration::from_millis(500)).await {
                    Ok(push) => {
                        let p = phase.load(Ordering::Relaxed);
                        if let (Some(sent), 1 | 2) = (push["data"]["t"].as_u64(), p) {
                            local[p - 1].push(now_us().saturating_sub(sent));
                        }
                    }
                    Err(Ended::Timeout) if phase.load(Ordering::Relaxed) == 3 => break,
                    Err(Ended::Timeout) => {}
                    Err(e) => panic!("a well-behaved subscriber lost its connection: {e:?}"),
                }
            }
            for (i, l) in local.into_iter().enumerate() {
                samples[i].lock().await.extend(l);
            }
        }));
    }

    // The steady publisher.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (url, stop, rate) = (url.clone(), stop.clone(), args.rate);
        tokio::spawn(async move {
            let mut c =
                Client::connect_from(&url, &token(SECRET, "publisher"), [127, 0, 3, 1].into())
                    .await;
            c.call(json!({"op": "subscribe", "room": "chat:measured"}))
                .await;
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let r = c
                    .call(
                        json!({"op": "publish", "room": "chat:measured", "data": {"t": now_us()}}),
                    )
                    .await;
                assert!(
                    r.get("ok").is_some(),
                    "the steady publisher was refused: {r}"
                );
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_base = edge.process.rss_bytes().unwrap_or(0);
    let mut rss_peak = rss_base;
    let cpu_start = cpu_seconds(edge.process.pid());
    phase.store(1, Ordering::Relaxed);
    let phase_len = Duration::from_secs(args.phase_secs);
    let started = Instant::now();
    while started.elapsed() < phase_len {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(edge.process.rss_bytes().unwrap_or(0));
    }

    // The attack, from a child process.
    let cpu_base_end = cpu_seconds(edge.process.pid());
    phase.store(2, Ordering::Relaxed);
    // At the lowest priority: on this 2-core machine the attackers' own sending would
    // otherwise compete with the edge and the measuring clients for the CPU, which an
    // attacker on its own machine does not.
    let exe = std::env::current_exe().expect("own path");
    let attackers = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(exe)
        .args([
            "attack",
            "--url",
            &url,
            "--secs",
            &args.phase_secs.to_string(),
            "--history-flooders",
            &args.history_flooders.to_string(),
            "--command-flooders",
            &args.command_flooders.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the attackers");
    let started = Instant::now();
    while started.elapsed() < phase_len {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(edge.process.rss_bytes().unwrap_or(0));
    }
    phase.store(3, Ordering::Relaxed);
    let cpu_attack_end = cpu_seconds(edge.process.pid());
    stop.store(true, Ordering::Relaxed);
    let report = attackers.wait_with_output().expect("the attackers' report");
    let history_sent = String::from_utf8_lossy(&report.stdout)
        .trim()
        .parse::<usize>()
        .unwrap_or(0);
    let _ = publisher.await;
    for s in subscribers {
        s.await.expect("a subscriber task failed");
    }
    let mut base = std::mem::take(&mut *samples[0].lock().await);
    let mut attack = std::mem::take(&mut *samples[1].lock().await);
    base.sort_unstable();
    attack.sort_unstable();
    RunResult {
        base_p50: percentile(&base, 0.5),
        base_p99: percentile(&base, 0.99),
        attack_p50: percentile(&attack, 0.5),
        attack_p99: percentile(&attack, 0.99),
        base_delivered: base.len(),
        attack_delivered: attack.len(),
        rss_base_mib: rss_base as f64 / f64::from(1 << 20),
        rss_peak_mib: rss_peak as f64 / f64::from(1 << 20),
        history_sent,
        base_cpu: cpu_base_end - cpu_start,
        attack_cpu: cpu_attack_end - cpu_base_end,
    }
}

/// The attackers: connections flooding `history` of the 6 MB room without reading, command
/// flooders that reconnect whenever they are cut, and a user spraying publications over new
/// rooms. Prints how many `history` requests were sent.
async fn attack(url: String, secs: u64, history_flooders: usize, command_flooders: usize) {
    let attacking = Arc::new(AtomicBool::new(true));
    let history_sent = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for a in 0..history_flooders {
        let (url, attacking, sent) = (url.clone(), attacking.clone(), history_sent.clone());
        attackers.push(tokio::spawn(async move {
            while attacking.load(Ordering::Relaxed) {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let token = token(SECRET, &format!("mallory-{a}"));
                let connect = json!({"id": 1, "op": "connect", "token": token});
                let _ = ws.send(Message::text(connect.to_string())).await;
                let mut id = 2u64;
                while attacking.load(Ordering::Relaxed) {
                    let history =
                        json!({"id": id, "op": "history", "room": "chat:big", "limit": 100});
                    match tokio::time::timeout(
                        Duration::from_millis(50),
                        ws.send(Message::text(history.to_string())),
                    )
                    .await
                    {
                        Ok(Ok(())) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            id += 1;
                        }
                        Ok(Err(_)) => break, // cut: reconnect
                        Err(_) => {}         // the edge stopped reading us
                    }
                }
            }
        }));
    }
    for a in 0..command_flooders {
        let (url, attacking) = (url.clone(), attacking.clone());
        attackers.push(tokio::spawn(async move {
            while attacking.load(Ordering::Relaxed) {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                    // Refused (429 from the per-IP connection rate): try again soon.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let token = token(SECRET, &format!("flooder-{a}"));
                let connect = json!({"id": 1, "op": "connect", "token": token});
                let _ = ws.send(Message::text(connect.to_string())).await;
                for id in 2..5000u64 {
                    let ping = json!({"id": id, "op": "ping"}).to_string();
                    if !attacking.load(Ordering::Relaxed)
                        || ws.send(Message::text(ping)).await.is_err()
                    {
                        break;
                    }
                }
            }
        }));
    }
    {
        let (url, attacking) = (url.clone(), attacking.clone());
        attackers.push(tokio::spawn(async move {
            let mut c = Client::connect(&url, &token(SECRET, "sprayer")).await;
            let mut n = 0u64;
            // Just under the command rate (50/s): the publish budget is what stops it.
            let mut every = tokio::time::interval(Duration::from_millis(70));
            while attacking.load(Ordering::Relaxed) {
                every.tick().await;
                let room = format!("chat:spray-{n}");
                c.call(json!({"op": "subscribe", "room": room})).await;
                c.call(json!({"op": "publish", "room": room, "data": "x".repeat(8_000)}))
                    .await;
                c.call(json!({"op": "unsubscribe", "room": room})).await;
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    attacking.store(false, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    println!("{}", history_sent.load(Ordering::Relaxed));
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(Attack::Attack {
        url,
        secs,
        history_flooders,
        command_flooders,
    }) = cli.attack
    {
        rt.block_on(attack(url, secs, history_flooders, command_flooders));
        return;
    }
    let args = cli.args;
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = rt.block_on(run_once(&args));
        println!(
            "run {run}: baseline p50 {:.2} ms p99 {:.2} ms ({} deliveries) | under attack p50 {:.2} ms \
             p99 {:.2} ms ({} deliveries) | p99 ratio {:.2} | edge RSS {:.0} → peak {:.0} MiB | \
             edge CPU {:.2} s → {:.2} s | {} history requests sent",
            r.base_p50,
            r.base_p99,
            r.base_delivered,
            r.attack_p50,
            r.attack_p99,
            r.attack_delivered,
            r.attack_p99 / r.base_p99,
            r.rss_base_mib,
            r.rss_peak_mib,
            r.base_cpu,
            r.attack_cpu,
            r.history_sent,
        );
        results.push(r);
    }
    println!(
        "median of {} runs: baseline p99 {:.2} ms, under attack p99 {:.2} ms, p99 ratio {:.2}, \
         edge RSS growth {:.0} MiB",
        results.len(),
        median(results.iter().map(|r| r.base_p99).collect()),
        median(results.iter().map(|r| r.attack_p99).collect()),
        median(results.iter().map(|r| r.attack_p99 / r.base_p99).collect()),
        median(
            results
                .iter()
                .map(|r| r.rss_peak_mib - r.rss_base_mib)
                .collect()
        ),
    );
}
