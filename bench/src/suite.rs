//! `plaza-bench suite`: for each target, `runs` times: start the server fresh, run the scenario,
//! stop it. Then print the medians per target and Plaza's ratio to each peer in deliveries per
//! server CPU second.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::run::{self, Load, RunArgs, RunResult};
use crate::servers::{self, PlazaBackend, Programs};
use crate::spec::{Alg, Scenario, Target};

/// Suite options: the run options minus what the suite decides (target, URLs, pids, secret).
#[derive(Debug, clap::Args)]
pub(crate) struct SuiteArgs {
    /// Scenario.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Targets, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "plaza,nats,socketio"
    )]
    pub targets: Vec<Target>,
    /// Runs per target (the report shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Write every run and the medians as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the servers' logs and configs in this folder (default: a temporary folder).
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Where the server programs are.
    #[command(flatten)]
    pub programs: Programs,
    /// Load shape and limits (as for `run`).
    #[command(flatten)]
    pub load: Load,
}

/// Medians of one target's runs.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Medians {
    /// Target.
    pub target: String,
    /// Runs that completed.
    pub runs: usize,
    /// Connect rate (initial wave, or the storm phase).
    pub connect_per_sec: f64,
    /// Failed connects (largest over runs).
    pub connect_failed: u64,
    /// `storm`: connections per server CPU second.
    pub connect_per_cpu_s: Option<f64>,
    /// Server RSS per connection, bytes.
    pub rss_per_conn_bytes: f64,
    /// Best phase within limits: delivered/s (`None` if no run had one).
    pub best_delivered_per_s: Option<f64>,
    /// Best phase within limits: delivered per server CPU second.
    pub best_delivered_per_cpu_s: Option<f64>,
    /// Per phase.
    pub phases: Vec<PhaseMedians>,
}

/// Medians of one phase over runs.
#[derive(Debug, Default, Serialize)]
pub(crate) struct PhaseMedians {
    /// Offered rate.
    pub rate: f64,
    /// Slow consumers stopped.
    pub slow: bool,
    /// Delivered/s.
    pub delivered_per_s: f64,
    /// Latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Server CPU seconds.
    pub server_cpu_s: f64,
    /// Delivered per server CPU second.
    pub delivered_per_cpu_s: f64,
    /// Highest RSS, KiB.
    pub rss_max_kib: f64,
    /// Errors (largest over runs).
    pub errors: u64,
    /// Missing deliveries (largest over runs).
    pub missing: u64,
    /// Connections closed by the server (median).
    pub closed: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn medians(target: String, runs: &[RunResult]) -> Medians {
    let connect = |r: &RunResult| {
        r.phases
            .iter()
            .find_map(|p| p.connect.as_ref())
            .unwrap_or(&r.connect)
            .clone()
    };
    let best = |f: fn(&RunResult) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let phases = runs.first().map_or(0, |r| r.phases.len());
    Medians {
        target,
        runs: runs.len(),
        connect_per_sec: median(runs.iter().map(|r| connect(r).per_sec).collect()),
        connect_failed: runs.iter().map(|r| connect(r).failed).max().unwrap_or(0),
        connect_per_cpu_s: {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    let p = r.phases.iter().find(|p| p.connect.is_some())?;
                    let ok = p.connect.as_ref()?.ok as f64;
                    (p.server_cpu_s > 0.0).then(|| ok / p.server_cpu_s)
                })
                .collect();
            (!v.is_empty()).then(|| median(v))
        },
        rss_per_conn_bytes: median(runs.iter().map(|r| r.rss_per_conn_bytes).collect()),
        best_delivered_per_s: best(|r| r.best_delivered_per_s),
        best_delivered_per_cpu_s: best(|r| r.best_delivered_per_cpu_s),
        phases: (0..phases)
            .map(|i| {
                let of = |f: fn(&run::PhaseResult) -> f64| {
                    median(runs.iter().filter_map(|r| r.phases.get(i)).map(f).collect())
                };
                let ps = || runs.iter().filter_map(|r| r.phases.get(i));
                PhaseMedians {
                    rate: of(|p| p.rate),
                    slow: ps().any(|p| p.slow),
                    delivered_per_s: of(|p| p.delivered_per_s),
                    p50_ms: of(|p| p.p50_ms),
                    p99_ms: of(|p| p.p99_ms),
                    p999_ms: of(|p| p.p999_ms),
                    server_cpu_s: of(|p| p.server_cpu_s),
                    delivered_per_cpu_s: of(|p| p.delivered_per_cpu_s),
                    rss_max_kib: of(|p| p.rss_max_kib as f64),
                    errors: ps().map(|p| p.errors).max().unwrap_or(0),
                    closed: of(|p| p.closed as f64),
                    missing: ps()
                        .map(|p| p.expected.saturating_sub(p.delivered))
                        .max()
                        .unwrap_or(0),
                }
            })
            .collect(),
    }
}

/// The median table and ratios.
pub(crate) fn table(scenario: Scenario, all: &[Medians]) -> String {
    let mut out = format!("\n== {} — medians ==\n", scenario.name());
    out.push_str(
        "target           runs  connect/s  conn/cpu_s  conn_failed  rss/conn_B  best_deliv/s  best_deliv/cpu_s\n",
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    for m in all {
        out.push_str(&format!(
            "{:<16} {:>4} {:>10.0} {:>11} {:>12} {:>11.0} {:>13} {:>17}\n",
            m.target,
            m.runs,
            m.connect_per_sec,
            opt(m.connect_per_cpu_s),
            m.connect_failed,
            m.rss_per_conn_bytes,
            opt(m.best_delivered_per_s),
            opt(m.best_delivered_per_cpu_s)
        ));
    }
    out.push_str("\ntarget           phase  rate/s  slow  deliv/s    p50ms   p99ms  p99.9ms  cpu_s  deliv/cpu_s  rss_max_KiB  errors  missing\n");
    for m in all {
        for (i, p) in m.phases.iter().enumerate() {
            out.push_str(&format!(
                "{:<16} {:>5} {:>7.0} {:>5} {:>8.0} {:>8.2} {:>7.2} {:>8.2} {:>6.2} {:>12.0} {:>12.0} {:>7} {:>8}\n",
                m.target,
                i + 1,
                p.rate,
                p.slow,
                p.delivered_per_s,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.server_cpu_s,
                p.delivered_per_cpu_s,
                p.rss_max_kib,
                p.errors,
                p.missing
            ));
        }
    }
    if scenario == Scenario::Slow {
        for m in all {
            if let [a, b, c] = &m.phases[..] {
                out.push_str(&format!(
                    "\n{}: healthy p99 {:.2} → {:.2} ms ({:+.0} %) with slow consumers; server RSS max {:.0} → {:.0} KiB; {:.0} slow consumers cut off",
                    m.target,
                    a.p99_ms,
                    b.p99_ms,
                    (b.p99_ms / a.p99_ms.max(1e-9) - 1.0) * 100.0,
                    a.rss_max_kib,
                    b.rss_max_kib,
                    c.closed
                ));
            }
        }
        out.push('\n');
    }
    if let Some(plaza) = all.iter().find(|m| m.target.starts_with("plaza")) {
        for peer in all.iter().filter(|m| !m.target.starts_with("plaza")) {
            if let (Some(a), Some(b)) = (plaza.connect_per_cpu_s, peer.connect_per_cpu_s) {
                out.push_str(&format!(
                    "\n{} / {} (connections per server CPU second): {:.2}×\n",
                    plaza.target,
                    peer.target,
                    a / b
                ));
                continue;
            }
            out.push_str(&format!(
                "\n{} / {} (deliveries per server CPU second):",
                plaza.target, peer.target
            ));
            if let (Some(a), Some(b)) = (
                plaza.best_delivered_per_cpu_s,
                peer.best_delivered_per_cpu_s,
            ) && b > 0.0
            {
                out.push_str(&format!(" best phases {:.2}×;", a / b));
            }
            for (i, (a, b)) in plaza.phases.iter().zip(&peer.phases).enumerate() {
                if b.delivered_per_cpu_s > 0.0 {
                    out.push_str(&format!(
                        " phase {} {:.2}×",
                        i + 1,
                        a.delivered_per_cpu_s / b.delivered_per_cpu_s
                    ));
                }
            }
            out.push('\n');
        }
    }
    out
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..48)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

fn rs_key(dir: &std::path::Path) -> Result<PathBuf> {
    let pem = dir.join("rs256.pem");
    let der = dir.join("rs256.der");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .context("openssl (apt-get install -y openssl) generates the RS256 key")?
        .success()
        && std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .stderr(std::process::Stdio::null())
            .status()?
            .success();
    if !ok {
        bail!("openssl could not generate an RSA key");
    }
    Ok(der)
}

/// Runs the suite.
pub(crate) async fn suite(args: SuiteArgs) -> Result<()> {
    let temp = tempfile_dir()?;
    let dir = args.logs.clone().unwrap_or_else(|| temp.clone());
    std::fs::create_dir_all(&dir)?;
    let secret = random_secret();
    let (key, jwks) = if args.load.alg == Alg::Rs256 {
        let key = rs_key(&dir)?;
        let jwks = dir.join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&crate::tokens::jwks(&std::fs::read(&key)?)?)?,
        )?;
        (Some(key), Some(jwks))
    } else {
        (None, None)
    };
    let mut all_runs = Vec::new();
    let mut all_medians = Vec::new();
    // Plaza runs once per WebSocket layer asked for.
    let mut jobs: Vec<(Target, Programs)> = Vec::new();
    for &target in &args.targets {
        if target == Target::Plaza && args.programs.plaza_websocket.len() > 1 {
            for &ws in &args.programs.plaza_websocket {
                let mut programs = args.programs.clone();
                programs.plaza_websocket = vec![ws];
                jobs.push((target, programs));
            }
        } else {
            jobs.push((target, args.programs.clone()));
        }
    }
    for (target, programs) in &jobs {
        let (target, programs) = (*target, programs);
        let mut runs = Vec::new();
        for n in 1..=args.runs {
            let run_dir = dir.join(format!("{}-{n}", label(target, programs)));
            std::fs::create_dir_all(&run_dir)?;
            let server = servers::start(target, programs, &run_dir, &secret, jwks.as_deref())?;
            // Let the server finish starting before the baseline reading.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let alg = if target == Target::Plaza {
                args.load.alg
            } else {
                Alg::Hs256
            };
            let run_args = RunArgs {
                target,
                scenario: args.scenario,
                url: server.urls.clone(),
                secret: Some(secret.clone()),
                rs_key: if alg == Alg::Rs256 { key.clone() } else { None },
                nats_token: server.nats_token.clone(),
                server_pids: server.pids(),
                load: Load {
                    alg,
                    ..args.load.clone()
                },
            };
            eprintln!(
                "== {} run {n}/{} (load {}) ==",
                label(target, programs),
                args.runs,
                crate::procstat::loadavg()
            );
            let result = run::run(&run_args).await;
            drop(server);
            let result = result.with_context(|| format!("{} run {n}", target.name()))?;
            eprint!("{}", run::table(&result));
            runs.push(result);
        }
        all_medians.push(medians(label(target, programs), &runs));
        all_runs.extend(runs);
    }
    print!("{}", table(args.scenario, &all_medians));
    if let Some(path) = &args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            scenario: Scenario,
            medians: &'a [Medians],
            runs: &'a [RunResult],
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&Out {
                scenario: args.scenario,
                medians: &all_medians,
                runs: &all_runs,
            })?,
        )?;
    }
    if args.logs.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(())
}

/// The name a target's results go under: Plaza's carries its backend, edges and WebSocket layer.
fn label(target: Target, programs: &Programs) -> String {
    if target != Target::Plaza {
        return target.name().to_owned();
    }
    let mut label = match (programs.plaza_backend, programs.edges) {
        (PlazaBackend::Memory, 1) => "plaza".to_owned(),
        (backend, edges) => format!("plaza-{edges}e-{}", format!("{backend:?}").to_lowercase()),
    };
    if let Some(ws) = programs.plaza_websocket.first() {
        label.push('-');
        label.push_str(ws.name());
    }
    label
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("plaza-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
