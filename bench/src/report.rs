//! A run's results: what the coordinator merges from its workers and the server's `/proc`
//! samples, as JSON (`--json`) and as the human-readable table.

use serde::{Deserialize, Serialize};

use crate::procstat::Sample;
use crate::spec::{Alg, Scenario, Target};

/// Connect figures, merged over workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectSummary {
    /// Connections that reached "subscribed".
    pub ok: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Subscribed connections per second, first connect start to last subscribe over all workers.
    pub per_sec: f64,
    /// Median connect-to-subscribed time, ms.
    pub p50_ms: f64,
    /// 99th percentile connect-to-subscribed time, ms.
    pub p99_ms: f64,
    /// First failure.
    pub first_error: Option<String>,
}

/// One phase, merged over workers, with the server's cost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PhaseResult {
    /// Phase number.
    pub id: u32,
    /// Offered publications per second.
    pub rate: f64,
    /// Publishing seconds.
    pub secs: f64,
    /// Slow consumers were not reading.
    pub slow: bool,
    /// Publications sent.
    pub sent: u64,
    /// Deliveries to healthy clients the publications should cause.
    pub expected: u64,
    /// Deliveries to healthy clients counted.
    pub delivered: u64,
    /// `delivered / secs`.
    pub delivered_per_s: f64,
    /// Deliveries to slow consumers.
    pub delivered_slow: u64,
    /// Earlier phases' payloads seen in this one.
    pub late: u64,
    /// Errors (error replies, failed reconnects).
    pub errors: u64,
    /// Connections closed by the server.
    pub closed: u64,
    /// Reconnects done.
    pub reconnects: u64,
    /// First error.
    pub first_error: Option<String>,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Server CPU seconds during the phase (publishing + drain).
    pub server_cpu_s: f64,
    /// Deliveries per server CPU second.
    pub delivered_per_cpu_s: f64,
    /// Server RSS at the phase start, KiB.
    pub rss_start_kib: u64,
    /// Highest server RSS seen during the phase, KiB.
    pub rss_max_kib: u64,
    /// Server RSS at the phase end, KiB.
    pub rss_end_kib: u64,
    /// `storm`: the connect wave.
    pub connect: Option<ConnectSummary>,
}

/// The report of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunResult {
    /// Target name.
    pub target: Target,
    /// Scenario name.
    pub scenario: Scenario,
    /// Connections.
    pub connections: usize,
    /// Payload bytes.
    pub size: usize,
    /// Worker processes.
    pub workers: usize,
    /// Token algorithm.
    pub alg: Alg,
    /// Initial connect wave (all scenarios but `storm`).
    pub connect: ConnectSummary,
    /// Server before any connection.
    pub server_before: Sample,
    /// Server with every connection open, before the first phase.
    pub server_loaded: Sample,
    /// `(loaded − before RSS) / connections`, bytes.
    pub rss_per_conn_bytes: f64,
    /// Phases in order.
    pub phases: Vec<PhaseResult>,
    /// Highest `delivered_per_s` of a phase with p99 under the limit, no loss beyond 0.1 % and
    /// no errors (rate sweeps).
    pub best_delivered_per_s: Option<f64>,
    /// That phase's deliveries per server CPU second.
    pub best_delivered_per_cpu_s: Option<f64>,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and when it ended.
    #[serde(default)]
    pub loadavg: (String, String),
}

/// The human-readable report of one run.
pub(crate) fn table(r: &RunResult) -> String {
    let mut out = format!(
        "{} / {}: {} connections ({} ok, {} failed), {} B payload, {} worker(s), {:?}\n",
        r.target.name(),
        r.scenario.name(),
        r.connections,
        r.connect.ok,
        r.connect.failed,
        r.size,
        r.workers,
        r.alg
    );
    out.push_str(&format!(
        "  machine load average: {} at the start, {} at the end\n",
        r.loadavg.0, r.loadavg.1
    ));
    if let Some(e) = &r.connect.first_error {
        out.push_str(&format!("  first connect error: {e}\n"));
    }
    if r.scenario == Scenario::Storm {
        out.push_str("  connect: see the storm line of phase 1\n");
    } else {
        out.push_str(&format!(
        "  connect: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms; server RSS {} → {} KiB ({:.0} B/conn), {} process(es)\n",
        r.connect.per_sec,
        r.connect.p50_ms,
        r.connect.p99_ms,
        r.server_before.rss_kib,
        r.server_loaded.rss_kib,
        r.rss_per_conn_bytes,
        r.server_loaded.processes
    ));
    }
    out.push_str(
        "  phase  rate/s  slow      sent   delivered  deliv/s     p50ms   p99ms  p99.9ms   maxms  errors closed  cpu_s  deliv/cpu_s  rss_max_KiB\n",
    );
    for p in &r.phases {
        out.push_str(&format!(
            "  {:>5} {:>7.0} {:>5} {:>9} {:>11} {:>8.0} {:>9.2} {:>7.2} {:>8.2} {:>7.1} {:>7} {:>6} {:>6.2} {:>12.0} {:>12}\n",
            p.id,
            p.rate,
            p.slow,
            p.sent,
            p.delivered,
            p.delivered_per_s,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms,
            p.errors,
            p.closed,
            p.server_cpu_s,
            p.delivered_per_cpu_s,
            p.rss_max_kib
        ));
        if p.delivered < p.expected {
            out.push_str(&format!(
                "        missing deliveries: {} of {}\n",
                p.expected - p.delivered,
                p.expected
            ));
        }
        if let Some(c) = &p.connect {
            out.push_str(&format!(
                "        storm: {} ok, {} failed, {:.0} conn/s, p50 {:.1} ms, p99 {:.1} ms\n",
                c.ok, c.failed, c.per_sec, c.p50_ms, c.p99_ms
            ));
            if let Some(e) = &c.first_error {
                out.push_str(&format!("        first connect error: {e}\n"));
            }
        }
        if let Some(e) = &p.first_error {
            out.push_str(&format!("        first error: {e}\n"));
        }
    }
    if let (Some(d), Some(c)) = (r.best_delivered_per_s, r.best_delivered_per_cpu_s) {
        out.push_str(&format!(
            "  best phase within limits: {d:.0} delivered/s, {c:.0} delivered per server CPU second\n"
        ));
    }
    out
}
