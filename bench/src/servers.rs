//! Starting the servers under test for `suite`, each on free loopback ports, with the bench
//! configuration written out in `docs/benchmarks.md`. Every process is killed when its handle
//! drops.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::spec::{RS_ISSUER, Target};

/// Where the servers' programs are.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Programs {
    /// plaza-edge binary (default: next to this executable).
    #[arg(long)]
    pub edge_bin: Option<PathBuf>,
    /// nats-server binary (default: $PLAZA_NATS_SERVER, else .tools/nats/bin/nats-server).
    #[arg(long, env = "PLAZA_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// The Socket.IO peer's folder (server.js with node_modules installed).
    #[arg(long, default_value = "bench/peers/socketio")]
    pub socketio_dir: PathBuf,
    /// The uWebSockets.js peer's folder (server.js with node_modules installed).
    #[arg(long, default_value = "bench/peers/uws")]
    pub uws_dir: PathBuf,
    /// sockudo binary (scripts/bench.sh builds it into .tools/sockudo).
    #[arg(long, default_value = ".tools/sockudo/bin/sockudo")]
    pub sockudo: PathBuf,
    /// Plaza's WebSocket layers (`client.websocket`), comma-separated: `suite` runs Plaza once
    /// per layer (default: the edge's default).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub plaza_websocket: Vec<PlazaWs>,
    /// node binary.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Node processes for the Socket.IO peer (each on its own port, joined by the Redis adapter).
    #[arg(long, default_value_t = 2)]
    pub socketio_procs: usize,
    /// Plaza's broker tier: `memory` (one edge, in-process), `cluster` (3 plaza-broker nodes),
    /// `nats` (one nats-server with JetStream).
    #[arg(long, value_enum, default_value = "memory")]
    pub plaza_backend: PlazaBackend,
    /// Plaza edges (more than one needs `--plaza-backend cluster` or `nats`); clients are
    /// spread round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub edges: usize,
    /// plaza-broker binary (default: next to this executable).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
}

/// Plaza's broker tier in a suite run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlazaBackend {
    /// In-process, one edge.
    Memory,
    /// Three `plaza-broker` nodes (Raft over QUIC).
    Cluster,
    /// One `nats-server -js`.
    Nats,
}

/// Plaza's WebSocket layer (`client.websocket`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlazaWs {
    /// tokio-tungstenite through axum.
    Tungstenite,
    /// Plaza's own layer (`edge/src/ws`).
    Lean,
}

impl PlazaWs {
    /// The config value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PlazaWs::Tungstenite => "tungstenite",
            PlazaWs::Lean => "lean",
        }
    }
}

/// A child process, killed and reaped on drop.
pub(crate) struct Proc(Child);

impl Proc {
    pub(crate) fn spawn(command: &mut Command, log: &Path) -> Result<Self> {
        let out = File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {:?}", command.get_program()))?;
        Ok(Self(child))
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running server: its processes, the URLs clients use and its log folder.
pub(crate) struct Server {
    /// Processes (their trees are measured).
    pub procs: Vec<Proc>,
    /// WebSocket URLs.
    pub urls: Vec<String>,
    /// NATS auth token, for the NATS target.
    pub nats_token: Option<String>,
}

impl Server {
    /// Process ids to measure.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1 (QUIC).
fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary next to this executable (the workspace's own), unless `given`.
pub(crate) fn sibling(given: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    let bin = match given {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join(name),
    };
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p {name} --bin {name}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Waits until `GET /readyz` on `port` answers 200.
pub(crate) fn wait_ready(port: u16, proc: &mut Proc, log: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut response = String::new();
            if stream
                .write_all(b"GET /readyz HTTP/1.0\r\nHost: bench\r\n\r\n")
                .is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.split_whitespace().nth(1) == Some("200")
            {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            bail!("{} exited with {status}:\n{}", log.display(), tail(log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("edge on port {port} not ready after 60 s:\n{}", tail(log))
}

fn nats_server(programs: &Programs) -> Result<PathBuf> {
    let bin = programs
        .nats_server
        .clone()
        .unwrap_or_else(|| PathBuf::from(".tools/nats/bin/nats-server"));
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/bench.sh (or scripts/test.sh), which installs nats-server into .tools/nats",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts Plaza: its broker tier (if any) and `programs.edges` edges.
fn start_plaza(
    programs: &Programs,
    dir: &Path,
    secret: &str,
    jwks: Option<&Path>,
) -> Result<Server> {
    let edge_bin = sibling(&programs.edge_bin, "plaza-edge")?;
    let edges = programs.edges.max(1);
    if edges > 1 && programs.plaza_backend == PlazaBackend::Memory {
        bail!("--edges {edges} needs --plaza-backend cluster or nats (memory is one edge)");
    }
    let config = dir.join("plaza-edge.toml");
    std::fs::write(&config, edge_config(jwks))?;
    let mut procs = Vec::new();
    let mut backend_args: Vec<Vec<String>> = vec![Vec::new(); edges];
    match programs.plaza_backend {
        PlazaBackend::Memory => {}
        PlazaBackend::Nats => {
            let port = free_port()?;
            let log = dir.join("nats-js.log");
            let mut nats = Proc::spawn(
                Command::new(nats_server(programs)?)
                    .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                    .arg(dir.join("jetstream")),
                &log,
            )?;
            wait_port(port, &mut nats, &log)?;
            procs.push(nats);
            for args in &mut backend_args {
                args.extend([
                    "--backend".into(),
                    "nats".into(),
                    "--nats".into(),
                    format!("nats://127.0.0.1:{port}"),
                ]);
            }
        }
        PlazaBackend::Cluster => {
            let broker = sibling(&programs.broker_bin, "plaza-broker")?;
            let certs = dir.join("certs");
            let brokers: Vec<String> = (1..=3).map(|i| format!("broker-{i}")).collect();
            let edge_names: Vec<String> = (1..=edges).map(|i| format!("edge-{i}")).collect();
            let status = Command::new(&broker)
                .arg("cert")
                .arg("--out")
                .arg(&certs)
                .args(["--brokers", &brokers.join(",")])
                .args(["--edges", &edge_names.join(",")])
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("plaza-broker cert failed");
            }
            let quic: Vec<u16> = (0..3).map(|_| free_udp_port()).collect::<Result<_>>()?;
            let peers: Vec<String> = quic
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
                .collect();
            for (i, port) in quic.iter().enumerate() {
                let id = i + 1;
                let log = dir.join(format!("broker-{id}.log"));
                procs.push(Proc::spawn(
                    Command::new(&broker)
                        .arg("run")
                        .args(["--node-id", &id.to_string()])
                        .args(["--raft-listen", &format!("127.0.0.1:{port}")])
                        .args(["--http-listen", &format!("127.0.0.1:{}", free_port()?)])
                        .args(["--peers", &peers.join(",")])
                        .arg("--data-dir")
                        .arg(dir.join(format!("data-{id}")))
                        .arg("--tls-ca")
                        .arg(certs.join("ca.pem"))
                        .arg("--tls-cert")
                        .arg(certs.join(format!("node-broker-{id}.pem")))
                        .arg("--tls-key")
                        .arg(certs.join(format!("node-broker-{id}.key")))
                        .env("PLAZA_LOG", "warn"),
                    &log,
                )?);
            }
            let brokers: Vec<String> = quic.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            for (n, args) in backend_args.iter_mut().enumerate() {
                let name = format!("edge-{}", n + 1);
                args.extend([
                    "--backend".into(),
                    "cluster".into(),
                    "--brokers".into(),
                    brokers.join(","),
                ]);
                for (flag, file) in [
                    ("--broker-tls-ca", "ca.pem".to_owned()),
                    ("--broker-tls-cert", format!("node-{name}.pem")),
                    ("--broker-tls-key", format!("node-{name}.key")),
                ] {
                    args.push(flag.into());
                    args.push(certs.join(file).display().to_string());
                }
            }
        }
    }
    let mut urls = Vec::new();
    for (n, args) in backend_args.iter().enumerate() {
        let port = free_port()?;
        let log = dir.join(format!("plaza-edge-{}.log", n + 1));
        let mut command = Command::new(&edge_bin);
        command
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("PLAZA_AUTH__HMAC_SECRET", secret)
            .env("PLAZA_LOG", "warn");
        if let Some(ws) = programs.plaza_websocket.first() {
            command.env("PLAZA_CLIENT__WEBSOCKET", ws.name());
        }
        let mut edge = Proc::spawn(&mut command, &log)?;
        wait_ready(port, &mut edge, &log)?;
        procs.push(edge);
        urls.push(format!("ws://127.0.0.1:{port}/v1/ws"));
    }
    Ok(Server {
        procs,
        urls,
        nats_token: None,
    })
}

fn wait_port(port: u16, proc: &mut Proc, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            bail!("{} exited with {status}:\n{}", log.display(), tail(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} after 30 s:\n{}", tail(log))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The server API key of bench edges (`--plaza-api`): loopback-only throwaway servers.
pub(crate) const BENCH_API_KEY: &str = "plaza-bench-api-key-for-loopback-only";

/// The plaza-edge bench configuration: limits that would throttle a load generator on one
/// host raised, the server API on with [`BENCH_API_KEY`], everything else at its default.
/// `jwks` adds the RS256 bench key's provider.
pub(crate) fn edge_config(jwks: Option<&Path>) -> String {
    let mut toml = String::from(
        "# plaza-bench: every load generator connection comes from 127.0.0.x, so the per-IP\n\
         # handshake limit and the per-connection command rate (the fan-out publisher is one\n\
         # connection) are raised; queues, frame sizes and namespace defaults stay as shipped.\n\
         [limits]\n\
         commands_per_second = 1000000\n\
         command_burst = 1000000\n\
         connections_per_second_per_ip = 1000000\n\
         connection_burst_per_ip = 1000000\n\
         connections_per_user = 1000\n\
         max_connections_per_ip = 0\n\
         publish_bytes_per_second_per_user = 0\n\
         ephemeral_per_second = 1000000\n\
         ephemeral_burst = 1000000\n\
         ephemeral_per_second_per_room = 1000000\n\
         ephemeral_burst_per_room = 1000000\n\
         state_writes_per_second = 1000000\n\
         state_writes_burst = 1000000\n\
         \n\
         # `--state`: the fan-out room sfan:all is a live-state room, conflated to 10 pushes/s.\n\
         [rooms.namespaces.sfan]\n\
         history_size = 1000\n\
         [rooms.namespaces.sfan.state]\n\
         enabled = true\n\
         max_keys = 100\n\
         conflate_per_second = 10\n",
    );
    toml.push_str(&format!("\n[api]\nkeys = [\"{BENCH_API_KEY}\"]\n"));
    if let Some(file) = jwks {
        toml.push_str(&format!(
            "\n[[auth.jwks]]\nissuer = \"{RS_ISSUER}\"\nfile = \"{}\"\nalgorithms = [\"RS256\"]\nallow_any_audience = true\n",
            file.display()
        ));
    }
    toml
}

/// Starts `target` with its bench configuration in `dir`.
pub(crate) fn start(
    target: Target,
    programs: &Programs,
    dir: &Path,
    secret: &str,
    jwks: Option<&Path>,
) -> Result<Server> {
    match target {
        Target::Plaza => start_plaza(programs, dir, secret, jwks),
        Target::Nats => {
            let bin = nats_server(programs)?;
            let (port, ws) = (free_port()?, free_port()?);
            let token = secret[..32].to_owned();
            let config = dir.join("nats.conf");
            std::fs::write(
                &config,
                format!(
                    "# plaza-bench: core NATS (no JetStream), WebSocket listener, compression off\n\
                     listen: \"127.0.0.1:{port}\"\n\
                     authorization {{ token: \"{token}\" }}\n\
                     websocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n  compression: false\n}}\n"
                ),
            )?;
            let log = dir.join("nats.log");
            let mut proc = Proc::spawn(Command::new(&bin).arg("-c").arg(&config), &log)?;
            wait_port(ws, &mut proc, &log)?;
            Ok(Server {
                procs: vec![proc],
                urls: vec![format!("ws://127.0.0.1:{ws}")],
                nats_token: Some(token),
            })
        }
        Target::Uws => start_uws(programs, dir, secret),
        Target::Sockudo => start_sockudo(programs, dir, secret),
        Target::Socketio => {
            let script = programs.socketio_dir.join("server.js");
            if !programs
                .socketio_dir
                .join("node_modules/socket.io")
                .exists()
            {
                bail!(
                    "{} has no node_modules: run scripts/bench.sh, or npm ci --prefix {}",
                    programs.socketio_dir.display(),
                    programs.socketio_dir.display()
                );
            }
            let redis_port = free_port()?;
            let log = dir.join("redis.log");
            let mut redis = Proc::spawn(
                Command::new(&programs.redis_server)
                    .args(["--port", &redis_port.to_string()])
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no"])
                    .current_dir(dir),
                &log,
            )
            .context("redis-server (apt-get install -y redis-server)")?;
            wait_port(redis_port, &mut redis, &log)?;
            let mut procs = vec![redis];
            let mut urls = Vec::new();
            for n in 0..programs.socketio_procs.max(1) {
                let port = free_port()?;
                let log = dir.join(format!("socketio-{n}.log"));
                let mut node = Proc::spawn(
                    Command::new(&programs.node)
                        .arg(&script)
                        .env("PORT", port.to_string())
                        .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
                        .env("BENCH_SECRET", secret),
                    &log,
                )?;
                wait_port(port, &mut node, &log)?;
                procs.push(node);
                urls.push(format!(
                    "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
                ));
            }
            Ok(Server {
                procs,
                urls,
                nats_token: None,
            })
        }
    }
}

/// Starts the uWebSockets.js peer and checks that its native module (not the JavaScript
/// fallback) is what runs.
fn start_uws(programs: &Programs, dir: &Path, secret: &str) -> Result<Server> {
    let folder = &programs.uws_dir;
    if !folder
        .join("node_modules/@trufflesuite/uws-js-unofficial")
        .exists()
    {
        bail!(
            "{} has no node_modules: run scripts/bench.sh, or npm ci --prefix {}",
            folder.display(),
            folder.display()
        );
    }
    let port = free_port()?;
    let log = dir.join("uws.log");
    let mut node = Proc::spawn(
        Command::new(&programs.node)
            .arg(folder.join("server.js"))
            .env("PORT", port.to_string())
            .env("BENCH_SECRET", secret)
            .env_remove("UWS_USE_FALLBACK"),
        &log,
    )?;
    wait_port(port, &mut node, &log)?;
    // The port may accept before the listen callback has printed its line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening ") {
            if !text.contains(" native ") || !text.contains(".node") {
                bail!(
                    "uWebSockets.js did not load its native module:\n{}",
                    tail(&log)
                );
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("uWebSockets.js printed no listening line:\n{}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        procs: vec![node],
        urls: vec![format!("ws://127.0.0.1:{port}/")],
        nats_token: None,
    })
}

/// Starts Sockudo (memory app manager, local adapter) with one app whose secret is the bench
/// secret; connection and event limits raised for the load generator, compression off.
fn start_sockudo(programs: &Programs, dir: &Path, secret: &str) -> Result<Server> {
    use crate::pusher::{APP_ID, APP_KEY};
    if !programs.sockudo.exists() {
        bail!(
            "{} is missing: run scripts/bench.sh, which builds Sockudo into .tools/sockudo",
            programs.sockudo.display()
        );
    }
    // Absolute: the process runs in the run folder (where it looks for config/config.toml).
    let bin = std::fs::canonicalize(&programs.sockudo)?;
    let port = free_port()?;
    let log = dir.join("sockudo.log");
    let mut proc = Proc::spawn(
        Command::new(&bin)
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DEBUG", "false")
            .env("RUST_LOG", "warn")
            .env("APP_MANAGER_DRIVER", "memory")
            .env("ADAPTER_DRIVER", "local")
            .env("CACHE_DRIVER", "memory")
            .env("QUEUE_DRIVER", "none")
            .env("METRICS_ENABLED", "false")
            .env("RATE_LIMITER_ENABLED", "false")
            .env("WEBSOCKET_COMPRESSION", "disabled")
            .env("SOCKUDO_MAX_CONNECTIONS", "1000000")
            .env("SOCKUDO_DEFAULT_APP_ENABLED", "true")
            .env("SOCKUDO_DEFAULT_APP_ID", APP_ID)
            .env("SOCKUDO_DEFAULT_APP_KEY", APP_KEY)
            .env("SOCKUDO_DEFAULT_APP_SECRET", secret)
            .env("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", "1000000")
            .env(
                "SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND",
                "1000000",
            )
            .env(
                "SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND",
                "1000000",
            )
            .env(
                "SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND",
                "1000000",
            ),
        &log,
    )?;
    wait_port(port, &mut proc, &log)?;
    Ok(Server {
        procs: vec![proc],
        urls: vec![format!(
            "ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7&client=plaza-bench&version=1.0"
        )],
        nats_token: None,
    })
}
