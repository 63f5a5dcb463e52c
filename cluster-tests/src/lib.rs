//! Multi-process Plaza clusters on one machine, for fault-injection tests.
//!
//! This crate grows with the broker tiers: it will start N `plaza-broker` nodes (or a NATS
//! cluster) plus M `plaza-edge` processes on loopback, inject faults (kill -9, SIGSTOP,
//! partitions through a proxy), drive a recorded workload, and check DESIGN §2's invariants
//! with one checker per file. Until the Raft and NATS backends exist there is nothing
//! multi-process to start; the single-process guarantees are checked by the backend
//! conformance suite (`plaza_broker::backend::conformance`) and the edge's integration tests.
