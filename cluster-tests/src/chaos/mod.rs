//! Jepsen-style chaos testing on real processes: a recorded workload ([`history`]), faults
//! ([`proxy`] for the network, signals for processes), invariant checkers ([`invariants`]), the stall bound ([`liveness`]),
//! and the scenario runner behind `plaza-chaos` ([`runner`]).

mod clients;
mod faults;
pub mod history;
pub mod invariants;
pub mod liveness;
mod presence_watch;
pub mod proxy;
mod report;
pub mod runner;
pub mod state_watch;
mod webhooks;
