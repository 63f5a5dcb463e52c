//! Liveness of a chaos run: how long publishing stalled. Safety (nothing lost, duplicated or
//! reordered) is the invariants' job; this is what a user of a real-time system feels — the
//! longest stretch with no acknowledged publish anywhere, and the slowest single publish
//! (first attempt to acknowledgement, retries and reconnects included).
//!
//! ```text
//!   first fault ──ack──ack────────────ack──ack── … ──ack── publishing stops
//!                        └─ no-ack window ─┘
//! ```
//!
//! The verdict compares both with a bound (`--liveness-bound`, 3 s by default). Scenarios
//! that take the majority away stall by design (Raft must not commit without a majority), so
//! they are exempt: their figures are reported, never judged.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::history::{Event, History};
use super::report::ms;
use super::runner::Scenario;

/// Stall figures of one run and their verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// The longest window (between the first fault and the end of publishing) in which no
    /// publish was acknowledged by any client.
    pub longest_no_ack: Duration,
    /// When that window started (ms since the start of the run).
    pub no_ack_from: u64,
    /// The slowest publication: first attempt to acknowledgement (retries included), with
    /// when its first attempt was sent.
    pub worst_publish: Duration,
    /// When the slowest publication was first sent (ms since the start of the run).
    pub worst_publish_at: u64,
    /// The bound both figures must stay within.
    pub bound: Duration,
    /// The scenario takes the majority away: figures reported, not judged.
    pub exempt: bool,
}

impl Liveness {
    /// Measures `history` between `from` (the first fault) and `to` (publishing stopped), both
    /// in ms since the start of the run.
    pub fn measure(
        history: &History,
        from: u64,
        to: u64,
        bound: Duration,
        scenario: Scenario,
    ) -> Self {
        let mut sent: HashMap<&str, u64> = HashMap::new();
        let mut acks = Vec::new();
        let (mut worst, mut worst_at) = (0, 0);
        for event in &history.events {
            match event {
                Event::PublishSent { id, at, .. } => {
                    sent.entry(id.as_str()).or_insert(*at);
                }
                Event::PublishAcked { id, at, .. } => {
                    acks.push(*at);
                    if let Some(s) = sent.get(id.as_str()) {
                        let took = at.saturating_sub(*s);
                        if took > worst {
                            (worst, worst_at) = (took, *s);
                        }
                    }
                }
                _ => {}
            }
        }
        let (longest, longest_from) = longest_gap(&mut acks, from, to);
        Self {
            longest_no_ack: Duration::from_millis(longest),
            no_ack_from: longest_from,
            worst_publish: Duration::from_millis(worst),
            worst_publish_at: worst_at,
            bound,
            exempt: scenario == Scenario::MajorityPartition,
        }
    }

    /// Whether both figures are within the bound (always true for an exempt scenario).
    pub fn passed(&self) -> bool {
        self.exempt || (self.longest_no_ack <= self.bound && self.worst_publish <= self.bound)
    }
}

/// The longest gap between consecutive acknowledgement times in `[from, to]`, counting the
/// window's ends as boundaries: `(length, start)`.
fn longest_gap(acks: &mut [u64], from: u64, to: u64) -> (u64, u64) {
    acks.sort_unstable();
    let mut previous = from;
    let mut best = (0, from);
    for &at in acks.iter().filter(|&&a| a > from && a <= to) {
        if at - previous > best.0 {
            best = (at - previous, previous);
        }
        previous = at;
    }
    if to.saturating_sub(previous) > best.0 {
        best = (to - previous, previous);
    }
    best
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.exempt {
            "EXEMPT (majority lost: stalls until healed by design)"
        } else if self.passed() {
            "PASS"
        } else {
            "FAIL"
        };
        write!(
            f,
            "{verdict} liveness: longest window without an acknowledged publish {:.0} ms (from \
             {:.1}s), worst publish {:.0} ms (sent at {:.1}s), bound {:.0} ms",
            ms(self.longest_no_ack),
            self.no_ack_from as f64 / 1000.0,
            ms(self.worst_publish),
            self.worst_publish_at as f64 / 1000.0,
            ms(self.bound)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_window_ends() {
        assert_eq!(longest_gap(&mut [], 100, 500), (400, 100));
        assert_eq!(longest_gap(&mut [150, 300, 320], 100, 500), (180, 320));
        assert_eq!(longest_gap(&mut [900, 110, 120], 100, 500), (380, 120));
        assert_eq!(longest_gap(&mut [50, 1000, 200], 100, 500), (300, 200));
    }
}
