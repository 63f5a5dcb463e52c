//! What a chaos run found: counts, latencies, recoveries and each invariant's verdict, and
//! how it prints (the `plaza-chaos` output).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::history::{Event, History, Violation};
use super::invariants;
use super::liveness::Liveness;
use super::runner::*;

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
    /// The longest stall and the slowest publish, judged against the liveness bound.
    pub liveness: Liveness,
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
    /// State-room writes the state writer got acknowledged (`state_watch.rs`).
    pub state_writes: u64,
}

impl Report {
    /// Whether every safety invariant held and liveness stayed within its bound.
    pub fn passed(&self) -> bool {
        self.safe() && self.liveness.passed()
    }

    /// Whether every safety invariant held (liveness aside).
    pub fn safe(&self) -> bool {
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
             deliveries, {} disconnects, {} recoveries, {} state-room writes",
            c.acked, c.failed, c.delivered, c.disconnects, c.recovered, c.state_writes
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
        writeln!(f, "    {}", self.liveness)?;
        if self.passed() {
            writeln!(f, "  verdict: PASS")
        } else {
            writeln!(
                f,
                "  verdict: FAIL — reproduce with: plaza-chaos --backend {} --scenario {} \
                 --duration {}s --seed {} --liveness-bound {}ms",
                format!("{:?}", o.backend).to_lowercase(),
                kebab(&format!("{:?}", o.scenario)),
                o.duration.as_secs(),
                o.seed,
                o.liveness_bound.as_millis()
            )
        }
    }
}

pub(super) fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn summarize(
    options: Options,
    history: &History,
    faults: Vec<String>,
    fault_starts: &[u64],
    published_until: u64,
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
    let liveness = Liveness::measure(
        history,
        fault_starts.first().copied().unwrap_or(0),
        published_until,
        options.liveness_bound,
        options.scenario,
    );
    Report {
        options,
        counts,
        faults,
        invariants: invariants::check_all(history),
        latency,
        recoveries,
        liveness,
    }
}
