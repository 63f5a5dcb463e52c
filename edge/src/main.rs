//! `plaza-edge`: run an edge, or mint a token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use plaza_backend::cluster::ClusterTls;
use plaza_backend::cluster::{ClusterBackend, ClusterOptions};
use plaza_backend::memory::{MemoryBackend, MemoryOptions};
use plaza_backend::nats::{NatsBackend, NatsOptions};
use plaza_edge::auth::{Capability, TokenSpec, mint};
use plaza_edge::config::{BackendKind, EXIT_BAD_CONFIG, EdgeConfig};
use plaza_process::shutdown_signal;

/// Plaza edge: WebSocket pub/sub with rooms, presence and recovery.
#[derive(Parser)]
#[command(name = "plaza-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// TOML config file.
    #[arg(long, env = "PLAZA_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Development mode: memory backend, demo page, `/dev/token` signed with a fresh dev-only
    /// key (a configured secret keeps verifying your app's tokens but never signs dev tokens).
    /// Only on a loopback address unless `--dev-public` is given. Command line only.
    #[arg(long)]
    dev: bool,
    /// Let `--dev` listen on a non-loopback address (e.g. `0.0.0.0` in a container). Anyone who
    /// can reach the port can then mint tokens for any user: never on a shared network.
    #[arg(long, requires = "dev")]
    dev_public: bool,
    /// Broker tier: memory, cluster or nats.
    #[arg(long)]
    backend: Option<String>,
    /// Broker QUIC addresses for `--backend cluster`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<String>,
    /// The cluster CA certificate (PEM) for `--backend cluster`.
    #[arg(long)]
    broker_tls_ca: Option<PathBuf>,
    /// This edge's certificate (PEM), signed by the cluster CA.
    #[arg(long)]
    broker_tls_cert: Option<PathBuf>,
    /// This edge's private key (PEM).
    #[arg(long)]
    broker_tls_key: Option<PathBuf>,
    /// NATS server URLs for `--backend nats`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    nats: Vec<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Load and validate the configuration (file, `PLAZA_*` variables, flags; with
    /// `--backend cluster` also the broker TLS files), print "config ok" and exit without
    /// starting anything. A bad configuration exits with code 64, as a normal start does.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint an HS256 connect token.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The shared secret (at least 32 bytes).
    #[arg(long, env = "PLAZA_AUTH__HMAC_SECRET", hide_env_values = true)]
    secret: String,
    /// The user id (`sub`).
    #[arg(long)]
    user: String,
    /// Room pattern, optionally with capabilities: `chat:*` (all) or `news=subscribe,presence`.
    /// Repeat for several.
    #[arg(long = "room")]
    rooms: Vec<String>,
    /// Lifetime, e.g. `1h`, or `none` for a token that does not expire (edges refuse those
    /// unless `auth.require_exp = false`).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Presence info as JSON, e.g. '{"name":"Ann"}'.
    #[arg(long)]
    info: Option<String>,
    /// Name of the capability claim.
    #[arg(long, default_value = "plaza")]
    claim: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Token(args)) = cli.command {
        return match token(args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.check_config {
        return check_config(&config);
    }
    // tungstenite logs whole frames (tokens included) at trace level: keep it at info
    // whatever the filter says.
    plaza_process::init_logs(config.log_format, "tungstenite=info,tokio_tungstenite=info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<EdgeConfig, plaza_edge::config::ConfigError> {
    let mut overrides = Vec::new();
    if let Some(l) = &cli.listen {
        overrides.push(("listen", format!("{l:?}")));
    }
    if let Some(b) = &cli.backend {
        overrides.push(("backend", format!("{b:?}")));
    }
    if let Some(f) = &cli.log_format {
        overrides.push(("log_format", format!("{f:?}")));
    }
    if !cli.nats.is_empty() {
        let list: Vec<String> = cli.nats.iter().map(|b| format!("{b:?}")).collect();
        overrides.push(("nats.servers", format!("[{}]", list.join(","))));
    }
    if !cli.brokers.is_empty() {
        let list: Vec<String> = cli.brokers.iter().map(|b| format!("{b:?}")).collect();
        overrides.push(("broker.brokers", format!("[{}]", list.join(","))));
    }
    for (key, path) in [
        ("broker.tls.ca", &cli.broker_tls_ca),
        ("broker.tls.cert", &cli.broker_tls_cert),
        ("broker.tls.key", &cli.broker_tls_key),
    ] {
        if let Some(path) = path {
            overrides.push((key, format!("{:?}", path.display().to_string())));
        }
    }
    let mut config =
        EdgeConfig::load_with_dev(cli.config.as_deref(), std::env::vars(), &overrides, cli.dev)?;
    if config.dev {
        if cli.listen.is_none() && config.listen == EdgeConfig::default().listen {
            config.listen = ([127, 0, 0, 1], 8080).into();
        }
        if !config.listen.ip().is_loopback() && !cli.dev_public {
            return Err(plaza_edge::config::ConfigError::new(
                "listen",
                format!(
                    "--dev serves tokens for any user to anyone who can reach it, so it listens \
                     on loopback only; {} is not (add --dev-public to allow it, e.g. inside a \
                     container whose port only your machine reaches)",
                    config.listen
                ),
            ));
        }
    }
    Ok(config)
}

/// `--check-config`: the loaded config is valid; with the cluster backend its TLS files must
/// also be readable PEM (a start would fail on them).
fn check_config(config: &EdgeConfig) -> ExitCode {
    if config.backend == BackendKind::Cluster
        && let Err(e) = cluster_backend_tls(config)
    {
        eprintln!("config error: broker.tls: {e:#}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    println!("config ok");
    ExitCode::SUCCESS
}

/// The edge's cluster identity from `[broker.tls]` (validated: all three files are set).
fn cluster_backend_tls(config: &EdgeConfig) -> anyhow::Result<ClusterTls> {
    let t = &config.broker.tls;
    let (Some(ca), Some(cert), Some(key)) = (&t.ca, &t.cert, &t.key) else {
        anyhow::bail!("ca, cert and key are required");
    };
    Ok(ClusterTls::load(ca, cert, key)?)
}

async fn run(config: EdgeConfig) -> anyhow::Result<()> {
    let dev = config.dev;
    // `--dev` signs its tokens with a key of its own, made here and gone with the process.
    let dev_key: Option<Vec<u8>> = dev.then(|| rand::random::<[u8; 32]>().to_vec());
    let backend = config.backend;
    if dev && !config.listen.ip().is_loopback() {
        let warning = format!(
            "--dev --dev-public: anyone who can reach {} can mint tokens for any user",
            config.listen
        );
        eprintln!("WARNING: {warning}");
        tracing::warn!("{warning}");
    }
    let edge = match config.backend {
        BackendKind::Memory => {
            let options = MemoryOptions {
                event_queue: config.broker.event_queue,
                ..Default::default()
            };
            let backend = MemoryBackend::with_options(config.rooms.clone(), options);
            plaza_edge::start(config, backend, dev_key.clone()).await?
        }
        BackendKind::Cluster => {
            let backend = cluster_backend(&config)?;
            plaza_edge::start(config, backend, dev_key.clone()).await?
        }
        BackendKind::Nats => {
            let backend = nats_backend(&config).await?;
            plaza_edge::start(config, backend, dev_key.clone()).await?
        }
    };
    if dev {
        print_dev_banner(backend, edge.local_addr());
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested; draining (signal again to exit at once)");
    edge.begin_shutdown();
    tokio::select! {
        _ = edge.wait() => Ok(()),
        _ = shutdown_signal() => {
            tracing::warn!("second signal: exiting without waiting for the drain");
            Ok(())
        }
    }
}

/// The cluster backend from `[broker]` (validated: brokers and TLS files are set).
fn cluster_backend(config: &EdgeConfig) -> anyhow::Result<ClusterBackend> {
    let b = &config.broker;
    let tls = cluster_backend_tls(config).context("broker.tls")?;
    let options = ClusterOptions {
        brokers: b.brokers.clone(),
        connect_timeout: b.connect_timeout,
        call_timeout: b.call_timeout,
        event_queue: b.event_queue,
        reroute_after: b.reroute_after,
        ..ClusterOptions::default()
    };
    Ok(ClusterBackend::new(&tls, options)?)
}

/// The NATS backend from `[nats]`: connects and creates or checks the streams and buckets.
async fn nats_backend(config: &EdgeConfig) -> anyhow::Result<NatsBackend> {
    let n = &config.nats;
    let options = NatsOptions {
        servers: n.servers.clone(),
        replicas: n.replicas,
        reap_every: n.reap_every,
        event_queue: config.broker.event_queue,
        user_password: n
            .user
            .clone()
            .map(|u| (u, n.password.clone().map(|p| p.0).unwrap_or_default())),
        ..NatsOptions::default()
    };
    Ok(NatsBackend::connect(&config.rooms, options).await?)
}

/// What `--dev` prints: where to go. No token (tokens do not belong in logs); the demo page
/// and `/dev/token?user=NAME` mint them. Write errors are ignored: a closed stdout (a
/// supervisor that stopped reading) must not take the edge down.
fn print_dev_banner(backend: BackendKind, addr: std::net::SocketAddr) {
    use std::io::Write;
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let title = match backend {
        BackendKind::Memory => "Plaza dev edge (memory backend; nothing is kept after exit)",
        BackendKind::Cluster => "Plaza dev edge (cluster backend)",
        BackendKind::Nats => "Plaza dev edge (NATS backend)",
    };
    let banner = format!(
        "{title}\n  demo page:  http://{host}/\n  websocket:  ws://{host}/v1/ws\n  \
         dev tokens: http://{host}/dev/token?user=NAME (all rooms, 24 h, this process only)\n"
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
}

fn token(args: TokenArgs) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.secret.len() >= 32,
        "--secret must be at least 32 bytes"
    );
    anyhow::ensure!(!args.user.is_empty(), "--user must not be empty");
    let mut rooms = Vec::new();
    for spec in &args.rooms {
        // Split at the last `=`: room patterns may contain `=` themselves.
        let (pattern, caps) = match spec.rsplit_once('=') {
            Some((p, caps)) => {
                let caps = caps
                    .split(',')
                    .map(|c| {
                        Capability::parse(c.trim())
                            .with_context(|| format!("unknown capability {c:?} in --room {spec:?}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                (p.to_owned(), caps)
            }
            None => (
                spec.clone(),
                vec![
                    Capability::Subscribe,
                    Capability::Publish,
                    Capability::Presence,
                ],
            ),
        };
        rooms.push((pattern, caps));
    }
    let ttl = match args.ttl.as_str() {
        "none" => None,
        t => Some(humantime::parse_duration(t).with_context(|| format!("--ttl {t:?}"))?),
    };
    let info = args
        .info
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--info is not JSON")?;
    let spec = TokenSpec {
        user: args.user,
        rooms,
        ttl: ttl.filter(|d| *d > Duration::ZERO),
        info,
    };
    Ok(mint(args.secret.as_bytes(), &args.claim, &spec)?)
}
