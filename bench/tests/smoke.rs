//! CI smoke runs of the load generator against a real `plaza-edge` (started by `suite` with the
//! bench configuration), so the tool cannot silently rot. Benchmarks themselves are not part of
//! CI; these only check that publications flow, latencies are recorded and the JSON report
//! holds together.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `plaza-edge`, built next to this test by `cargo build --workspace --bins`.
fn edge_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("plaza-edge");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `plaza-bench suite --targets plaza --runs 1` with `args`; returns the JSON report.
fn suite(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_plaza-bench"))
        .args(["suite", "--targets", "plaza", "--runs", "1", "--drain", "2"])
        .arg("--edge-bin")
        .arg(edge_bin())
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run plaza-bench");
    let log = || {
        std::fs::read_to_string(dir.path().join("logs/plaza-1/plaza-edge-1.log"))
            .unwrap_or_default()
    };
    assert!(
        output.status.success(),
        "plaza-bench failed:\n{}\n{}\nedge log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log()
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report is written");
    serde_json::from_str(&text).expect("the JSON report parses")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn fanout_smoke_run_delivers_every_publication_without_errors() {
    let report = suite(&[
        "--scenario",
        "fanout",
        "--connections",
        "300",
        "--rates",
        "20",
        "--secs",
        "6",
    ]);
    let run = &report["runs"][0];
    assert_eq!(run["target"], "plaza");
    assert_eq!(num(&run["connect"], "ok"), 300.0, "{run}");
    assert_eq!(num(&run["connect"], "failed"), 0.0, "{run}");
    assert!(
        num(&run["server_loaded"], "rss_kib") > 0.0,
        "server RSS read"
    );
    let phase = &run["phases"][0];
    let sent = num(phase, "sent");
    assert!(sent >= 100.0, "about 120 publications expected: {phase}");
    assert_eq!(num(phase, "errors"), 0.0, "{phase}");
    assert_eq!(num(phase, "delivered"), sent * 300.0, "{phase}");
    assert_eq!(num(phase, "expected"), num(phase, "delivered"), "{phase}");
    assert!(num(phase, "p50_ms") > 0.0, "latency recorded: {phase}");
    assert!(num(phase, "p99_ms") >= num(phase, "p50_ms"));
    assert!(num(phase, "server_cpu_s") > 0.0, "server CPU read: {phase}");
    assert_eq!(report["medians"][0]["runs"], 1);
}

#[test]
fn rooms_smoke_run_reconnects_and_keeps_delivering() {
    let report = suite(&[
        "--scenario",
        "rooms",
        "--connections",
        "200",
        "--rates",
        "50",
        "--secs",
        "4",
        "--reconnect-pct",
        "5",
    ]);
    let phase = &report["runs"][0]["phases"][0];
    assert_eq!(num(phase, "errors"), 0.0, "{phase}");
    assert!(
        num(phase, "reconnects") >= 10.0,
        "5 %/s of 200 for 4 s: {phase}"
    );
    assert!(num(phase, "delivered") > 0.0, "{phase}");
    // Publications to a client that is reconnecting at that moment may be missed; the rest arrive.
    assert!(
        num(phase, "delivered") >= 0.9 * num(phase, "expected"),
        "{phase}"
    );
}
