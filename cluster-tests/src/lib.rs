//! Multi-process Plaza clusters on one machine, for fault-injection tests and benchmarks.
//!
//! [`BrokerCluster`] starts N real `plaza-broker` processes on loopback with a fresh cluster
//! CA (node certificates `broker-<id>` plus edge certificates `edge-<n>`), each with its own
//! data dir and log file, and lets a test kill (SIGKILL) and restart them. [`EdgeProcess`]
//! runs a real `plaza-edge` attached to such a cluster. Every process is killed when its
//! handle drops, so a failing test leaves nothing running.
//!
//! The binaries are the workspace's own, found next to the test executable
//! (`target/<profile>/`); `cargo test --workspace` builds them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plaza_backend::cluster::{ClusterBackend, ClusterOptions};
use plaza_broker::server::BrokerConfig;
use plaza_net::tls::{self, ClusterTls};
use tempfile::TempDir;

pub mod chaos;
pub mod nats;
pub mod presence_list;
pub mod webhook_receiver;
pub mod workload;
pub mod ws;

/// Edge certificates every cluster carries (`edge-1` …).
pub const EDGE_CERTS: usize = 4;

/// The path of workspace binary `name` (`plaza-broker`, `plaza-edge`), built by
/// `cargo test --workspace` / `cargo build --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether run folders (logs, data dirs, certificates) are kept after the run:
/// `PLAZA_KEEP_RUNS=1`. By default they are deleted when the cluster is dropped.
pub fn keep_runs() -> bool {
    std::env::var_os("PLAZA_KEEP_RUNS").is_some_and(|v| v != "0")
}

/// A free UDP port on 127.0.0.1 (bound, read, released: a tiny race with other processes,
/// fine for tests; never one this process handed out before).
pub fn free_udp() -> SocketAddr {
    unused_port(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        socket.local_addr().expect("udp addr")
    })
}

/// A free TCP port on 127.0.0.1 (as [`free_udp`]).
pub fn free_tcp() -> SocketAddr {
    unused_port(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        listener.local_addr().expect("tcp addr")
    })
}

/// Asks `bind` for released ports until one this process has not handed out yet: the kernel
/// may offer a just-released port again, and two servers of one cluster given the same port
/// fail to start (seen: two brokers' HTTP ports).
fn unused_port(bind: impl Fn() -> SocketAddr) -> SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let addr = bind();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(addr.port()) {
            return addr;
        }
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
}

impl Process {
    /// Spawns `command` with stderr to `log` and stdout discarded.
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn process");
        Self { child: Some(child) }
    }

    /// Kills the process at once (SIGKILL: no shutdown, no detach) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it to exit; kills it
    /// if it does not. Returns whether it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, ...).
    pub fn signal(&mut self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory (`VmRSS`) in bytes, from `/proc`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One broker slot: its addresses, data dir and (while running) its process.
pub struct BrokerSlot {
    /// Raft node id (1-based).
    pub id: u64,
    /// QUIC (Raft and edges) address peers and edges dial: the proxy's when the cluster has
    /// proxies, else the broker's own.
    pub quic: SocketAddr,
    /// The address the broker binds (behind its proxy, if any).
    pub bind: SocketAddr,
    /// HTTP status address.
    pub http: SocketAddr,
    process: Option<Process>,
}

/// N `plaza-broker` processes on loopback.
pub struct BrokerCluster {
    dir: TempDir,
    config: BrokerConfig,
    generated: tls::GeneratedCluster,
    /// The brokers, `slots[i].id == i + 1`.
    pub slots: Vec<BrokerSlot>,
    /// The fault-injecting proxies in front of the brokers, if started with them.
    pub proxies: Option<chaos::proxy::ProxyNet>,
}

impl BrokerCluster {
    /// Starts `size` brokers whose settings (rooms, raft timing, edges) come from `config`
    /// (addresses, ids, peers, data dirs and TLS are filled in here). Returns at once; use
    /// [`Self::wait_leader`] before expecting commits.
    pub fn start(size: usize, config: BrokerConfig) -> Self {
        Self::start_with(size, config, false)
    }

    /// [`Self::start`], with a fault-injecting proxy in front of every broker when `proxies`
    /// (see [`chaos::proxy`]).
    pub fn start_with(size: usize, config: BrokerConfig, proxies: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plaza-cluster-")
            .disable_cleanup(crate::keep_runs())
            .tempdir()
            .expect("temp dir");
        let mut names: Vec<(String, tls::NodeRole)> = (1..=size)
            .map(|i| (format!("broker-{i}"), tls::NodeRole::Broker(i as u64)))
            .collect();
        names.extend((1..=EDGE_CERTS).map(|i| (format!("edge-{i}"), tls::NodeRole::Edge)));
        let nodes: Vec<(&str, tls::NodeRole)> =
            names.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let generated = tls::generate("plaza-test", &nodes, &[]).expect("generate certificates");
        tls::write_dir(&generated, &dir.path().join("certs")).expect("write certificates");
        let slots: Vec<BrokerSlot> = (1..=size as u64)
            .map(|id| {
                let bind = free_udp();
                BrokerSlot {
                    id,
                    quic: if proxies { free_udp() } else { bind },
                    bind,
                    http: free_tcp(),
                    process: None,
                }
            })
            .collect();
        let proxies = proxies.then(|| {
            let links: Vec<_> = slots.iter().map(|s| (s.id, s.quic, s.bind)).collect();
            chaos::proxy::ProxyNet::start(&links).expect("start the proxies")
        });
        let mut cluster = Self {
            dir,
            config,
            generated,
            slots,
            proxies,
        };
        for id in 1..=size as u64 {
            cluster.start_node(id);
        }
        cluster
    }

    /// The directory holding certificates, data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The QUIC addresses of all brokers, as edges are given them.
    pub fn quic_addrs(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.quic.to_string()).collect()
    }

    /// The `tls.ca`/`cert`/`key` file paths of certificate `name`.
    pub fn cert_files(&self, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let certs = self.dir.path().join("certs");
        let (cert, key) = tls::node_files(name);
        (certs.join("ca.pem"), certs.join(cert), certs.join(key))
    }

    /// The TLS identity `name` (a broker or `edge-<n>`).
    pub fn tls(&self, name: &str) -> ClusterTls {
        self.generated.identity(name).expect("identity")
    }

    /// A [`ClusterBackend`] dialling every broker, as edge certificate `edge`.
    pub fn backend(&self, edge: &str, options: ClusterOptions) -> ClusterBackend {
        let options = ClusterOptions {
            brokers: self.quic_addrs(),
            ..options
        };
        ClusterBackend::new(&self.tls(edge), options).expect("cluster backend")
    }

    /// A [`ClusterBackend`] dialling only brokers `ids`, as edge certificate `edge`.
    pub fn backend_on(&self, edge: &str, ids: &[u64], options: ClusterOptions) -> ClusterBackend {
        let brokers = ids
            .iter()
            .map(|id| self.slots[(*id - 1) as usize].quic.to_string())
            .collect();
        let options = ClusterOptions { brokers, ..options };
        ClusterBackend::new(&self.tls(edge), options).expect("cluster backend")
    }

    /// (Re)starts broker `id` with its data dir.
    pub fn start_node(&mut self, id: u64) {
        let peers: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("{}={}", s.id, s.quic))
            .collect();
        let slot = &self.slots[(id - 1) as usize];
        let name = format!("broker-{id}");
        let (ca, cert, key) = self.cert_files(&name);
        let config_path = self.dir.path().join(format!("{name}.toml"));
        let mut config = self.config.clone();
        config.data_dir = Some(self.dir.path().join(format!("data-{id}")));
        let text = toml::to_string(&config).expect("config as TOML");
        std::fs::write(&config_path, text).expect("write config");
        let mut command = Command::new(binary("plaza-broker"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--node-id", &id.to_string()])
            .args(["--raft-listen", &slot.bind.to_string()])
            .args(["--http-listen", &slot.http.to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--tls-ca")
            .arg(ca)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("PLAZA_LOG", "info,plaza_broker=debug");
        let process = Process::spawn(command, &self.dir.path().join(format!("{name}.log")));
        self.slots[(id - 1) as usize].process = Some(process);
    }

    /// Stops broker `id` with SIGSTOP (a gray failure: its sockets stay open, nothing answers).
    pub fn pause(&mut self, id: u64) {
        if let Some(p) = self.slots[(id - 1) as usize].process.as_mut() {
            p.signal("STOP");
        }
    }

    /// Resumes a paused broker with SIGCONT.
    pub fn resume(&mut self, id: u64) {
        if let Some(p) = self.slots[(id - 1) as usize].process.as_mut() {
            p.signal("CONT");
        }
    }

    /// Stops broker `id` gracefully (SIGTERM: a leader hands leadership over first) and waits
    /// up to `timeout` for it to exit (then kills it); returns whether it exited by itself.
    pub fn stop(&mut self, id: u64, timeout: Duration) -> bool {
        match self.slots[(id - 1) as usize].process.take() {
            Some(mut p) => p.terminate(timeout),
            None => true,
        }
    }

    /// Kills broker `id` with SIGKILL.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut p) = self.slots[(id - 1) as usize].process.take() {
            p.kill();
        }
    }

    /// Whether broker `id` is running.
    pub fn running(&mut self, id: u64) -> bool {
        self.slots[(id - 1) as usize]
            .process
            .as_mut()
            .is_some_and(Process::running)
    }

    /// Broker `id`'s `/status`, if it answers.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.slots[(id - 1) as usize].http, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits (blocking, polling `/status`) until broker `id` has applied everything the other
    /// running brokers have committed. Panics with the brokers' logs after `timeout`.
    pub fn wait_caught_up(&self, id: u64, timeout: Duration) {
        let field = |s: &serde_json::Value, key: &str| {
            s.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
        };
        let deadline = Instant::now() + timeout;
        loop {
            let committed = (1..=self.slots.len() as u64)
                .filter(|other| *other != id)
                .filter_map(|other| self.status(other))
                .map(|s| field(&s, "commit_index"))
                .max()
                .unwrap_or(0);
            let applied = self.status(id).map_or(0, |s| field(&s, "last_applied"));
            if committed > 0 && applied >= committed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} did not catch up ({applied} < {committed})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a running broker reports itself leader and every running broker agrees;
    /// returns its id. Panics with the brokers' logs after `timeout`.
    pub fn wait_leader(&mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<u64> = (1..=self.slots.len() as u64)
                .filter(|id| self.running(*id))
                .collect();
            let leaders: Vec<Option<u64>> = running
                .iter()
                .map(|id| {
                    self.status(*id)
                        .and_then(|s| s.get("leader").and_then(serde_json::Value::as_u64))
                })
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && running.contains(leader)
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for slot in &self.slots {
            let path = self.dir.path().join(format!("broker-{}.log", slot.id));
            out.push_str(&format!("--- broker-{} ({})\n", slot.id, path.display()));
            out.push_str(&tail(&path, 20));
        }
        out
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}

/// A `plaza-edge` process attached to a [`BrokerCluster`].
pub struct EdgeProcess {
    /// Its HTTP/WebSocket address.
    pub addr: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// The process.
    pub process: Process,
}

impl EdgeProcess {
    /// Starts edge `n` (certificate `edge-<n>`) against brokers `brokers` (ids) of `cluster`,
    /// with HMAC secret `secret`, `lease` as its broker lease, and `extra` flags. Waits until
    /// `/readyz` answers 200.
    pub fn start(
        cluster: &BrokerCluster,
        n: usize,
        brokers: &[u64],
        secret: &str,
        lease: Duration,
        extra: &[&str],
    ) -> Self {
        let brokers: Vec<String> = brokers
            .iter()
            .map(|id| cluster.slots[(*id - 1) as usize].quic.to_string())
            .collect();
        let name = format!("edge-{n}");
        let (ca, cert, key) = cluster.cert_files(&name);
        let mut args: Vec<String> = vec![
            "--backend".into(),
            "cluster".into(),
            "--brokers".into(),
            brokers.join(","),
        ];
        for (flag, path) in [
            ("--broker-tls-ca", ca),
            ("--broker-tls-cert", cert),
            ("--broker-tls-key", key),
        ] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let edge = Self::spawn(cluster.dir(), &name, &args, secret, lease);
        edge.wait_ready(Duration::from_secs(20));
        edge
    }

    /// Starts edge `name` with `args` (backend flags and more), HMAC secret `secret` and broker
    /// lease `lease`, logging into `dir`; returns at once (see [`Self::wait_ready`]).
    pub fn spawn(dir: &Path, name: &str, args: &[String], secret: &str, lease: Duration) -> Self {
        Self::spawn_with_env(dir, name, args, secret, lease, &[])
    }

    /// [`Self::spawn`] with extra environment variables (config keys as `PLAZA_*`).
    pub fn spawn_with_env(
        dir: &Path,
        name: &str,
        args: &[String],
        secret: &str,
        lease: Duration,
        env: &[(&str, String)],
    ) -> Self {
        let addr = free_tcp();
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(binary("plaza-edge"));
        command
            .args(["--listen", &addr.to_string()])
            .args(args)
            .env("PLAZA_AUTH__HMAC_SECRET", secret)
            .env("PLAZA_BROKER__LEASE", format!("{}ms", lease.as_millis()))
            .env("PLAZA_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let process = Process::spawn(command, &log);
        Self { addr, log, process }
    }

    /// Waits until `/readyz` answers 200; panics with the log after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get(self.addr, "/readyz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "edge at {} not ready:\n{}",
                self.addr,
                tail(&self.log, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

/// `GET path` over HTTP/1.0; `None` if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// An HS256 connect token for `user` with every capability in every room, minted by the
/// `plaza-edge token` command with `secret`.
pub fn token(secret: &str, user: &str) -> String {
    let output = Command::new(binary("plaza-edge"))
        .args(["token", "--user", user, "--room", "*", "--ttl", "1h"])
        .env("PLAZA_AUTH__HMAC_SECRET", secret)
        .output()
        .expect("run plaza-edge token");
    assert!(output.status.success(), "plaza-edge token failed");
    String::from_utf8(output.stdout)
        .expect("utf-8 token")
        .trim()
        .to_owned()
}
