//! `plaza-bench`: an open-loop WebSocket load generator for Plaza and its peers.
//!
//! ```text
//! plaza-bench run ──spawns──▶ plaza-bench worker ×N ──WebSockets──▶ server under test
//!      │  stdin: WorkerSpec, Phase…, Stop          │
//!      ◀─ stdout: Ready, Phase stats (histograms) ─┘
//!      └─ /proc/<server pid> CPU + RSS ─▶ table + JSON report
//! ```
//!
//! `suite` starts the servers itself (plaza-edge, nats-server, Socket.IO + redis-server,
//! uWebSockets.js, Sockudo), runs a
//! scenario against each several times and prints medians and per-CPU-second ratios.
//! `deflate` measures permessage-deflate on the wire with its own raw-socket clients.
//! See `docs/benchmarks.md`.

mod deflate;
mod plot;
mod procstat;
mod pusher;
mod report;
mod run;
mod servers;
mod spec;
mod suite;
mod tokens;
mod wire;
mod worker;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "plaza-bench",
    version,
    about = "Open-loop WebSocket load generator for Plaza and its peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario against a running server.
    Run {
        #[command(flatten)]
        args: run::RunArgs,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Start the servers, run a scenario on each target several times, print medians.
    Suite(suite::SuiteArgs),
    /// Draw SVG charts from `suite --json` reports (see `docs/benchmarks.md`).
    Plot(plot::PlotArgs),
    /// Measure permessage-deflate on the wire: bytes and edge CPU per delivery, with and
    /// without compression (starts its own edge).
    Deflate(deflate::DeflateArgs),
    /// Print the JWKS (public key) for an RS256 private key file (PKCS#1 DER).
    Jwks {
        /// The private key file.
        key: std::path::PathBuf,
    },
    /// Internal: one load-generating process, driven by `run` over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Raises the open-files limit to the hard limit (each connection is one file).
pub fn raise_nofile() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Worker => worker::main(),
        Cmd::Plot(args) => plot::plot(&args),
        Cmd::Deflate(args) => {
            raise_nofile();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(deflate::deflate(&args))
        }
        Cmd::Jwks { key } => {
            let der = std::fs::read(&key)?;
            println!("{}", serde_json::to_string_pretty(&tokens::jwks(&der)?)?);
            Ok(())
        }
        Cmd::Run { args, json } => {
            raise_nofile();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let result = rt.block_on(run::run(&args))?;
            print!("{}", run::table(&result));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
            }
            Ok(())
        }
        Cmd::Suite(args) => {
            raise_nofile();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(suite::suite(args))
        }
    }
}
