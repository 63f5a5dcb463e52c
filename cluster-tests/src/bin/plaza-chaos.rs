//! `plaza-chaos`: start a real cluster on this machine, break it on purpose, and get a verdict.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/plaza-chaos --backend cluster --brokers 3 --edges 2 \
//!     --scenario leader-churn --duration 60s --seed 42
//! target/release/plaza-chaos --backend nats --scenario nats-kill --duration 30s
//! target/release/plaza-chaos --backend cluster --all --duration 20s   # every scenario
//! ```
//!
//! Prints a progress line per scenario, then a report: operations, faults injected, each
//! invariant with its first counterexample, latency percentiles, time to recover after each
//! fault, the liveness verdict (longest window without an acknowledged publish and the slowest
//! publish against `--liveness-bound`), and the command to reproduce a failure. Exits 1 if any
//! invariant or the liveness verdict failed. See
//! `docs/chaos.md`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use plaza_cluster_tests::chaos::runner::{self, Backend, Options, Scenario};

/// Break a local Plaza cluster on purpose and check that nothing was lost.
#[derive(Parser)]
#[command(name = "plaza-chaos")]
struct Args {
    /// The broker tier.
    #[arg(long, value_enum, default_value = "cluster")]
    backend: Backend,
    /// Brokers (or NATS servers).
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Edges (1–4).
    #[arg(long, default_value_t = 2)]
    edges: usize,
    /// Workload clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Rooms.
    #[arg(long, default_value_t = 2)]
    rooms: usize,
    /// What to break.
    #[arg(long, value_enum, default_value = "leader-churn")]
    scenario: Scenario,
    /// Run every scenario of the backend in turn.
    #[arg(long)]
    all: bool,
    /// How long to inject faults, e.g. `60s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The liveness bound: the longest window without an acknowledged publish (and the
    /// slowest single publish) a scenario may show; majority-loss scenarios are exempt.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    liveness_bound: Duration,
    /// Re-run a failed seed (same as `--seed`).
    #[arg(long)]
    reproduce: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios = if args.all {
        Scenario::all(args.backend)
    } else {
        vec![args.scenario]
    };
    let mut ok = true;
    for scenario in scenarios {
        let options = Options {
            backend: args.backend,
            brokers: args.brokers,
            edges: args.edges,
            clients: args.clients,
            rooms: args.rooms,
            scenario,
            duration: args.duration,
            seed: args.reproduce.unwrap_or(args.seed),
            liveness_bound: args.liveness_bound,
            ..Options::default()
        };
        eprintln!(
            "plaza-chaos: {:?} on {:?} for {:?} (seed {}) ...",
            scenario, options.backend, options.duration, options.seed
        );
        let report = runner::run(options).await;
        println!("{report}");
        ok &= report.passed();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
