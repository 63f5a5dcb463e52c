//! The loop every property-based fuzz target runs (shared by the `fuzz_*` test files of
//! plaza-proto, plaza-edge and plaza-broker through `#[path]`, so each crate's targets count and
//! report alike).
//!
//! - `PLAZA_FUZZ_CASES` sets the number of generated cases of every target (each target has a
//!   default sized so that all of them together stay within the CI budget, `docs/fuzzing.md`).
//! - Each target writes one line to stderr — `fuzz <target>: N executions in S s, ...` —
//!   straight to the stream, so it shows in `cargo test` output even when the test passes.
//! - A failure is shrunk to a minimal input, saved by proptest under `proptest-regressions/`
//!   (replayed first on every later run; commit it) and reported with that input.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Growth of the process's peak virtual memory allowed during one target: far above what any
/// decoder of these small inputs needs, far below what a length prefix trusted blindly asks
/// for (an absurd allocation either aborts the process or shows here).
const MAX_PEAK_GROWTH_MIB: u64 = 1024;

/// Runs `test` on `default_cases` values of `strategy` (or `PLAZA_FUZZ_CASES`), then reports.
pub(crate) fn fuzz<S: Strategy>(
    name: &str,
    source_file: &'static str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) {
    let cases = std::env::var("PLAZA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        source_file: Some(source_file),
        ..Config::default()
    });
    let executions = AtomicU64::new(0);
    let peak_before = vm_peak_mib();
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let growth = vm_peak_mib().saturating_sub(peak_before);
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {} executions ({cases} cases) in {:.1} s, peak memory +{growth} MiB, {}",
        executions.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        if result.is_ok() {
            "no failure"
        } else {
            "FAILED"
        },
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    assert!(
        growth < MAX_PEAK_GROWTH_MIB,
        "fuzz {name}: peak virtual memory grew by {growth} MiB"
    );
}

/// The process's peak virtual memory (`VmPeak`), in MiB; 0 where /proc is not available.
fn vm_peak_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmPeak:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
