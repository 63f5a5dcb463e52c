//! `plaza-bench run`: the coordinator. Spawns workers (re-executions of this binary), hands each
//! its share of the connections, drives the phases in lock step, samples the server's `/proc`,
//! merges the workers' histograms and prints the report.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::{Duration, Instant};

use crate::procstat;
use crate::spec::{
    Alg, Command, ConnectStats, PhaseSpec, PhaseStats, Plan, Report, Scenario, Target, WorkerSpec,
};
use crate::worker::histogram;

pub(crate) use crate::report::{ConnectSummary, PhaseResult, RunResult, table};

/// Options of one run (also what `suite` passes per run).
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Server under test.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Scenario.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// WebSocket URL(s), comma-separated; connections are spread round-robin
    /// (plaza: ws://HOST:PORT/v1/ws, nats: ws://HOST:PORT, socketio:
    /// ws://HOST:PORT/socket.io/?EIO=4&transport=websocket).
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// HS256 secret (at least 32 bytes).
    #[arg(long, env = "PLAZA_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// RS256 private key file, PKCS#1 DER (`openssl genrsa -traditional | openssl rsa -outform DER`).
    #[arg(long)]
    pub rs_key: Option<std::path::PathBuf>,
    /// NATS `auth_token`.
    #[arg(long, env = "PLAZA_BENCH_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// Server process ids whose CPU and RSS (with descendants) are reported.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Load shape and limits.
    #[command(flatten)]
    pub load: Load,
}

/// The load's shape and limits: the options `run` and `suite` share.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Load {
    /// Total connections.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Worker processes (default: one per 8,000 connections, at least one; more than one
    /// spreads the generator's own CPU over the cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Publications per second, one phase per value (`fanout`, `rooms`, `slow`).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rates: Vec<f64>,
    /// Seconds per phase (publishing time; `idle`: holding time).
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Seconds to keep receiving after each phase's publishing.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Members per group room (`rooms`).
    #[arg(long, default_value_t = 10)]
    pub group: usize,
    /// Every N-th connection is a slow consumer in the second `slow` phase.
    #[arg(long, default_value_t = 100)]
    pub slow_every: usize,
    /// Per cent of connections reconnecting per second (`rooms`).
    #[arg(long, default_value_t = 1.0)]
    pub reconnect_pct: f64,
    /// Plaza: publish ephemerally (`"ephemeral": true`: no offset, no consensus) instead of
    /// durably; deliveries are `ephemeral` pushes.
    #[arg(long)]
    pub ephemeral: bool,
    /// Plaza, fan-out: update a live-state room instead (`set` of one of 10 keys per message, in
    /// `sfan:all`, whose namespace conflates to 10 pushes a second per edge); deliveries are
    /// the conflated change pushes, so "delivered" is far below "expected" by design.
    #[arg(long, conflicts_with = "ephemeral")]
    pub state: bool,
    /// Plaza: publish through the server HTTP API (`POST /v1/api/publish`, keep-alive
    /// connections to the first edge) instead of from a client's WebSocket.
    #[arg(long, conflicts_with = "state")]
    pub plaza_api: bool,
    /// Token algorithm (Plaza; Socket.IO always HS256).
    #[arg(long, value_enum, default_value = "hs256")]
    pub alg: Alg,
    /// Connects in flight per worker.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Loopback source addresses 127.0.0.2… to spread connections over (1 = kernel's choice);
    /// each gives ~28k ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub sources: usize,
    /// The p99 bound (ms) for the "best rate" line of rate sweeps.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, line: &impl Serialize) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.stdin.write_all(text.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn report(&mut self) -> Result<Report> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("worker exited early (see its stderr above)")?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// Builds the plan the workers share from the run options.
pub(crate) fn plan(args: &RunArgs) -> Result<Plan> {
    let secret = args.secret.clone().unwrap_or_default();
    if args.target != Target::Nats
        && (args.load.alg == Alg::Hs256 || args.target != Target::Plaza)
        && secret.len() < 32
    {
        bail!(
            "--secret (or PLAZA_BENCH_SECRET) of at least 32 bytes is required for {}",
            args.target.name()
        );
    }
    let rs_key = match (&args.load.alg, &args.rs_key) {
        (Alg::Rs256, Some(path)) => {
            use base64::Engine;
            let der = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            Some(base64::engine::general_purpose::STANDARD.encode(der))
        }
        (Alg::Rs256, None) => bail!("--alg rs256 needs --rs-key"),
        _ => None,
    };
    if args.load.sources > 250 {
        bail!("--sources must be at most 250");
    }
    Ok(Plan {
        target: args.target,
        scenario: args.scenario,
        urls: args.url.clone(),
        connections: args.load.connections,
        sources: args.load.sources.max(1),
        concurrency: args.load.concurrency,
        size: args.load.size,
        group: args.load.group,
        slow_every: args.load.slow_every,
        reconnect_pct: args.load.reconnect_pct,
        ephemeral: args.load.ephemeral,
        state: args.load.state,
        api: args.load.plaza_api,
        alg: args.load.alg,
        secret,
        rs_key,
        nats_token: args.nats_token.clone(),
        drain_secs: args.load.drain,
    })
}

/// The phases of a scenario.
fn phases(args: &RunArgs) -> Vec<PhaseSpec> {
    let phase = |id: u32, rate: f64, slow: bool, storm: bool| PhaseSpec {
        id,
        rate,
        secs: args.load.secs,
        slow,
        storm,
    };
    match args.scenario {
        Scenario::Idle => vec![phase(1, 0.0, false, false)],
        Scenario::Storm => vec![phase(1, 0.0, false, true)],
        Scenario::Fanout | Scenario::Rooms => args
            .load
            .rates
            .iter()
            .enumerate()
            .map(|(n, r)| phase(n as u32 + 1, *r, false, false))
            .collect(),
        // Phase 3 publishes nothing: the slow consumers read again, and find out whether the
        // server cut them off (`closed`).
        Scenario::Slow => vec![
            phase(1, args.load.rates[0], false, false),
            phase(2, args.load.rates[0], true, false),
            PhaseSpec {
                secs: 1.0,
                ..phase(3, 0.0, false, false)
            },
        ],
    }
}

fn merge(into: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for (value, count) in pairs {
        into.saturating_record_n(*value, *count);
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn connect_summary(parts: &[ConnectStats]) -> ConnectSummary {
    let mut h = histogram();
    let mut s = ConnectSummary::default();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for p in parts {
        s.ok += p.ok;
        s.failed += p.failed;
        if s.first_error.is_none() {
            s.first_error = p.first_error.clone();
        }
        merge(&mut h, &p.latency);
        if p.ok > 0 {
            first = first.min(p.span_ns.0);
            last = last.max(p.span_ns.1);
        }
    }
    if last > first {
        s.per_sec = s.ok as f64 / ((last - first) as f64 / 1e9);
    }
    s.p50_ms = ms(&h, 0.5);
    s.p99_ms = ms(&h, 0.99);
    s
}

/// Runs one benchmark and returns its report.
pub(crate) async fn run(args: &RunArgs) -> Result<RunResult> {
    let plan = plan(args)?;
    let load_start = procstat::loadavg();
    let workers = args
        .load
        .workers
        .unwrap_or(args.load.connections.div_ceil(8000))
        .clamp(1, args.load.connections.max(1));
    let server_before = procstat::sample(&args.server_pids);
    let exe = std::env::current_exe()?;
    let mut procs = Vec::new();
    let mut first = 0;
    for w in 0..workers {
        let count =
            args.load.connections / workers + usize::from(w < args.load.connections % workers);
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawn worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let mut worker = Worker {
            child,
            stdin,
            lines,
        };
        worker
            .send(&WorkerSpec {
                worker: w,
                first,
                count,
                plan: plan.clone(),
            })
            .await?;
        first += count;
        procs.push(worker);
    }
    let mut ready = Vec::new();
    for w in &mut procs {
        match w.report().await? {
            Report::Ready(c) => ready.push(c),
            other => bail!("unexpected worker report {other:?}"),
        }
    }
    let connect = connect_summary(&ready);
    // Let the server settle (allocator, lazily created rooms) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_loaded = procstat::sample(&args.server_pids);
    let rss_per_conn_bytes = if connect.ok > 0 {
        (server_loaded.rss_kib as f64 - server_before.rss_kib as f64) * 1024.0 / connect.ok as f64
    } else {
        0.0
    };

    let mut results = Vec::new();
    for spec in phases(args) {
        results.push(run_phase(args, &mut procs, &spec).await?);
    }
    for w in &mut procs {
        let _ = w.send(&Command::Stop).await;
    }
    for w in &mut procs {
        if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
            .await
            .is_err()
        {
            let _ = w.child.kill().await;
        }
    }

    let best = results
        .iter()
        .filter(|p| {
            p.delivered > 0
                && p.p99_ms < args.load.p99_limit_ms
                && p.errors == 0
                && (p.delivered as f64) >= 0.999 * p.expected as f64
        })
        .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s));
    Ok(RunResult {
        target: args.target,
        scenario: args.scenario,
        connections: args.load.connections,
        size: args.load.size,
        workers,
        alg: args.load.alg,
        connect,
        server_before,
        server_loaded,
        rss_per_conn_bytes,
        best_delivered_per_s: best.map(|p| p.delivered_per_s),
        best_delivered_per_cpu_s: best.map(|p| p.delivered_per_cpu_s),
        phases: results,
        loadavg: (load_start, procstat::loadavg()),
    })
}

async fn run_phase(args: &RunArgs, procs: &mut [Worker], spec: &PhaseSpec) -> Result<PhaseResult> {
    let start = procstat::sample(&args.server_pids);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let pids = args.server_pids.clone();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut max = 0;
            let mut tick = tokio::time::interval_at(Instant::now(), Duration::from_millis(250));
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                let pids = pids.clone();
                let s = tokio::task::spawn_blocking(move || procstat::sample(&pids))
                    .await
                    .unwrap_or_default();
                max = max.max(s.rss_kib);
            }
            max
        })
    };
    for w in procs.iter_mut() {
        w.send(&Command::Phase(spec.clone())).await?;
    }
    let mut parts: Vec<PhaseStats> = Vec::new();
    for w in procs.iter_mut() {
        match w.report().await? {
            Report::Phase(p) => parts.push(p),
            other => bail!("unexpected worker report {other:?}"),
        }
    }
    let end = procstat::sample(&args.server_pids);
    sampling.store(false, Ordering::Relaxed);
    let rss_max = sampler.await.unwrap_or(0).max(end.rss_kib);

    let mut h = histogram();
    let mut r = PhaseResult {
        id: spec.id,
        rate: spec.rate,
        secs: spec.secs,
        slow: spec.slow,
        ..Default::default()
    };
    let mut connects = Vec::new();
    for p in &mut parts {
        r.sent += p.sent;
        r.expected += p.expected;
        r.delivered += p.delivered;
        r.delivered_slow += p.delivered_slow;
        r.late += p.late;
        r.errors += p.errors;
        r.closed += p.closed;
        r.reconnects += p.reconnects;
        if r.first_error.is_none() {
            r.first_error = p.first_error.clone();
        }
        merge(&mut h, &p.latency);
        if let Some(c) = p.connect.take() {
            connects.push(c);
        }
    }
    if spec.storm {
        r.connect = Some(connect_summary(&connects));
    }
    r.delivered_per_s = r.delivered as f64 / spec.secs.max(1e-9);
    r.p50_ms = ms(&h, 0.5);
    r.p99_ms = ms(&h, 0.99);
    r.p999_ms = ms(&h, 0.999);
    r.max_ms = if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    };
    r.server_cpu_s = end.cpu_secs - start.cpu_secs;
    r.delivered_per_cpu_s = if r.server_cpu_s > 0.0 {
        r.delivered as f64 / r.server_cpu_s
    } else {
        0.0
    };
    r.rss_start_kib = start.rss_kib;
    r.rss_end_kib = end.rss_kib;
    r.rss_max_kib = rss_max;
    Ok(r)
}
