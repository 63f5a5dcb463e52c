//! `plaza-broker`: runs one Raft broker node (`run`, the default) or writes a cluster CA and
//! node certificates (`cert`). See `docs/operations.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use plaza_broker::server::config::node_id_from_hostname;
use plaza_broker::server::{BrokerConfig, ConfigError, EXIT_BAD_CONFIG, LogFormat, RunError};
use plaza_net::tls;
use plaza_process::{init_logs, shutdown_signal, toml_string};

/// Plaza broker: one node of the Raft-replicated room state.
#[derive(Parser)]
#[command(name = "plaza-broker", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a broker node (the default).
    Run(RunArgs),
    /// Generate a cluster CA and one role certificate per broker and edge into a directory.
    Cert(CertArgs),
}

/// Flags of `run`; each overrides the config file's key of the same name.
#[derive(Args, Default)]
struct RunArgs {
    /// TOML config file.
    #[arg(long, env = "PLAZA_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// This node's Raft id (≥ 1).
    #[arg(long)]
    node_id: Option<u64>,
    /// Take the node id from the hostname's StatefulSet ordinal (`plaza-broker-2` → 3).
    #[arg(long, conflicts_with = "node_id")]
    node_id_from_hostname: bool,
    /// UDP address of the QUIC (Raft) endpoint.
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// TCP address of the status/metrics HTTP server.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Directory of the Raft log and snapshots.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk (tests only).
    #[arg(long)]
    in_memory: bool,
    /// Initial voters as `id=host:port`, comma-separated or repeated.
    #[arg(long = "peers", value_delimiter = ',')]
    peers: Vec<String>,
    /// Bearer token of `POST /admin/members` (prefer the environment variable: flags show
    /// up in `ps`).
    #[arg(long, env = "PLAZA_BROKER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Load and validate the configuration (file and flags) and the TLS files, print
    /// "config ok" and exit without starting anything. A bad configuration exits with code
    /// 64, as a normal start does.
    #[arg(long)]
    check_config: bool,
}

#[derive(Args)]
struct CertArgs {
    /// Directory to write `ca.pem`, `ca.key`, `node-<name>.pem` and `node-<name>.key` into.
    #[arg(long)]
    out: PathBuf,
    /// Broker certificates, comma-separated `ID=NAME` (or `NAME`: the id is its position,
    /// from 1). Each is bound to its Raft node id and valid for its name, `localhost`,
    /// `127.0.0.1` and every `--san`.
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<String>,
    /// Edge certificates, comma-separated names (letters, digits, `-`, `_`, `.`). An edge
    /// certificate is a client certificate only: it can attach edges whose id is the name or
    /// starts with `NAME/`, and nothing else.
    #[arg(long, value_delimiter = ',')]
    edges: Vec<String>,
    /// Replaced by `--brokers` and `--edges` (certificates now carry a role).
    #[arg(long, value_delimiter = ',', hide = true)]
    nodes: Vec<String>,
    /// An extra DNS name or IP on every broker certificate (repeatable), e.g. the pods'
    /// `*.plaza-broker.NAMESPACE.svc.cluster.local` names.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// The cluster's name, in the CA's common name.
    #[arg(long, default_value = "plaza")]
    cluster: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Cmd::Cert(args)) => return cert(&args),
        Some(Cmd::Run(args)) => args,
        None => cli.run,
    };
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        return check_config(&config);
    }
    init_logs(config.log_format, "");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let run = plaza_broker::server::run(config, shutdown_signal());
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => outcome,
            // Every listener sees every signal: the first one starts `run`'s shutdown and
            // the first wait here; a second one, during the shutdown, exits at once.
            () = async {
                shutdown_signal().await;
                shutdown_signal().await;
            } => {
                tracing::warn!("second signal: exiting without waiting for the shutdown");
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The TLS files named by the config are missing or unusable: a config error.
        Err(e @ RunError::Tls(_)) => {
            tracing::error!(error = %e, "bad TLS configuration");
            eprintln!("config error: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "broker failed");
            eprintln!("plaza-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the loaded config is valid and its TLS files are readable PEM, checked
/// the way `run` reads them (a failure is reported as `run` reports it: config error, 64).
fn check_config(config: &BrokerConfig) -> ExitCode {
    let (Some(ca), Some(cert), Some(key)) = (&config.tls.ca, &config.tls.cert, &config.tls.key)
    else {
        // `BrokerConfig::load` already requires all three.
        eprintln!("config error: tls.ca, tls.cert and tls.key are required");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let checked = tls::ClusterTls::load(ca, cert, key)
        .and_then(|identity| plaza_broker::server::check_own_role(&identity, config.id()));
    if let Err(e) = checked {
        eprintln!("config error: {}", RunError::Tls(e));
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    println!("config ok");
    ExitCode::SUCCESS
}

/// The config file overridden by the flags that were given.
fn load(args: &RunArgs) -> Result<BrokerConfig, ConfigError> {
    let path = |p: &PathBuf| toml_string(&p.display().to_string());
    let mut overrides: Vec<(&str, String)> = Vec::new();
    if args.node_id_from_hostname {
        let id = node_id_from_hostname(&hostname())?;
        overrides.push(("node_id", id.to_string()));
    }
    if let Some(id) = args.node_id {
        overrides.push(("node_id", id.to_string()));
    }
    if let Some(a) = args.raft_listen {
        overrides.push(("raft_listen", toml_string(&a.to_string())));
    }
    if let Some(a) = args.http_listen {
        overrides.push(("http_listen", toml_string(&a.to_string())));
    }
    if let Some(d) = &args.data_dir {
        overrides.push(("data_dir", path(d)));
    }
    if args.in_memory {
        overrides.push(("in_memory", "true".into()));
    }
    if !args.peers.is_empty() {
        let mut list = Vec::new();
        for (i, peer) in args.peers.iter().enumerate() {
            let parsed = peer
                .split_once('=')
                .and_then(|(id, addr)| Some((id.trim().parse::<u64>().ok()?, addr.trim())));
            let Some((id, addr)) = parsed else {
                return Err(ConfigError {
                    key: format!("peers[{i}]"),
                    message: format!("{peer:?} is not id=host:port"),
                });
            };
            list.push(format!("{{ id = {id}, addr = {} }}", toml_string(addr)));
        }
        overrides.push(("peers", format!("[{}]", list.join(", "))));
    }
    if let Some(t) = &args.admin_token {
        overrides.push(("admin_token", toml_string(t)));
    }
    for (key, value) in [
        ("tls.ca", &args.tls_ca),
        ("tls.cert", &args.tls_cert),
        ("tls.key", &args.tls_key),
    ] {
        if let Some(p) = value {
            overrides.push((key, path(p)));
        }
    }
    if let Some(f) = args.log_format {
        overrides.push(("log_format", f.name().into()));
    }
    BrokerConfig::load(args.config.as_deref(), &overrides)
}

/// `$HOSTNAME`, else the kernel's hostname.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default()
}

fn cert(args: &CertArgs) -> ExitCode {
    if !args.nodes.is_empty() {
        eprintln!(
            "plaza-broker cert: --nodes was replaced by --brokers and --edges: certificates now \
             name their role (e.g. --brokers broker-1,broker-2,broker-3 --edges edge-1)"
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let nodes = match cert_nodes(&args.brokers, &args.edges) {
        Ok(nodes) => nodes,
        Err(why) => {
            eprintln!("plaza-broker cert: {why}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let specs: Vec<(&str, tls::NodeRole)> = nodes.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    let sans: Vec<&str> = args.sans.iter().map(String::as_str).collect();
    let written = tls::generate(&args.cluster, &specs, &sans)
        .and_then(|generated| tls::write_dir(&generated, &args.out));
    match written {
        Ok(()) => {
            let listed: Vec<String> = nodes
                .iter()
                .map(|(name, role)| match role {
                    tls::NodeRole::Broker(id) => format!("{name} (broker {id})"),
                    tls::NodeRole::Edge => format!("{name} (edge)"),
                })
                .collect();
            println!(
                "wrote {} and {} certificates ({}) to {}; keep {} offline",
                tls::CA_CERT_FILE,
                nodes.len(),
                listed.join(", "),
                args.out.display(),
                tls::CA_KEY_FILE,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plaza-broker cert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The certificates `--brokers` and `--edges` ask for: `ID=NAME` or `NAME` (id = position).
fn cert_nodes(
    brokers: &[String],
    edges: &[String],
) -> Result<Vec<(String, tls::NodeRole)>, String> {
    if brokers.is_empty() && edges.is_empty() {
        return Err("name at least one certificate with --brokers or --edges".into());
    }
    let mut nodes = Vec::with_capacity(brokers.len() + edges.len());
    for (i, spec) in brokers.iter().enumerate() {
        let spec = spec.trim();
        let (id, name) = match spec.split_once('=') {
            Some((id, name)) => {
                let id = id
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("--brokers {spec:?}: the id must be a number"))?;
                (id, name.trim())
            }
            None => (i as u64 + 1, spec),
        };
        if name.is_empty() {
            return Err(format!("--brokers {spec:?} has an empty name"));
        }
        nodes.push((name.to_owned(), tls::NodeRole::Broker(id)));
    }
    for name in edges {
        nodes.push((name.trim().to_owned(), tls::NodeRole::Edge));
    }
    Ok(nodes)
}
