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
pub struct Programs {
    /// plaza-edge binary (default: next to this executable).
    #[arg(long)]
    pub edge_bin: Option<PathBuf>,
    /// nats-server binary (default: $PLAZA_NATS_SERVER, else .tools/nats/bin/nats-server).
    #[arg(long, env = "PLAZA_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// The Socket.IO peer's folder (server.js with node_modules installed).
    #[arg(long, default_value = "bench/peers/socketio")]
    pub socketio_dir: PathBuf,
    /// node binary.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Node processes for the Socket.IO peer (each on its own port, joined by the Redis adapter).
    #[arg(long, default_value_t = 2)]
    pub socketio_procs: usize,
}

/// A child process, killed and reaped on drop.
pub struct Proc(Child);

impl Proc {
    fn spawn(command: &mut Command, log: &Path) -> Result<Self> {
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
    pub fn pid(&self) -> u32 {
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
pub struct Server {
    /// Processes (their trees are measured).
    pub procs: Vec<Proc>,
    /// WebSocket URLs.
    pub urls: Vec<String>,
    /// NATS auth token, for the NATS target.
    pub nats_token: Option<String>,
}

impl Server {
    /// Process ids to measure.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

/// The plaza-edge bench configuration: limits that would throttle a load generator on one
/// host raised, everything else at its default. `jwks` adds the RS256 bench key's provider.
pub fn edge_config(jwks: Option<&Path>) -> String {
    let mut toml = String::from(
        "# plaza-bench: every load generator connection comes from 127.0.0.x, so the per-IP\n\
         # handshake limit and the per-connection command rate (the fan-out publisher is one\n\
         # connection) are raised; queues, frame sizes and namespace defaults stay as shipped.\n\
         [limits]\n\
         commands_per_second = 1000000\n\
         command_burst = 1000000\n\
         connections_per_second_per_ip = 1000000\n\
         connection_burst_per_ip = 1000000\n\
         connections_per_user = 1000\n",
    );
    if let Some(file) = jwks {
        toml.push_str(&format!(
            "\n[[auth.jwks]]\nissuer = \"{RS_ISSUER}\"\nfile = \"{}\"\nalgorithms = [\"RS256\"]\n",
            file.display()
        ));
    }
    toml
}

/// Starts `target` with its bench configuration in `dir`.
pub fn start(
    target: Target,
    programs: &Programs,
    dir: &Path,
    secret: &str,
    jwks: Option<&Path>,
) -> Result<Server> {
    match target {
        Target::Plaza => {
            let bin = match &programs.edge_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("exe dir")?
                    .join("plaza-edge"),
            };
            if !bin.exists() {
                bail!(
                    "{} is missing: cargo build --release -p plaza-edge --bin plaza-edge",
                    bin.display()
                );
            }
            let config = dir.join("plaza-edge.toml");
            std::fs::write(&config, edge_config(jwks))?;
            let port = free_port()?;
            let log = dir.join("plaza-edge.log");
            let mut proc = Proc::spawn(
                Command::new(&bin)
                    .arg("--config")
                    .arg(&config)
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .env("PLAZA_AUTH__HMAC_SECRET", secret)
                    .env("PLAZA_LOG", "warn"),
                &log,
            )?;
            wait_port(port, &mut proc, &log)?;
            Ok(Server {
                procs: vec![proc],
                urls: vec![format!("ws://127.0.0.1:{port}/v1/ws")],
                nats_token: None,
            })
        }
        Target::Nats => {
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
