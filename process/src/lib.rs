//! `plaza-process`: what the `main` of both Plaza binaries (`plaza-edge`, `plaza-broker`)
//! shares, written once.
//!
//! ```text
//!   file (TOML) ─▶ Layers (env vars, flags: key path = value) ─▶ load() ─▶ T ─▶ validate
//!                                         │ error naming the key ─▶ exit EXIT_BAD_CONFIG (64)
//!   init_logs(format) · shutdown_signal() (SIGTERM / ctrl-c) · install_metrics(builder)
//! ```
#![deny(missing_docs)]

use std::path::Path;

use serde::de::DeserializeOwned;

/// Exit code for a bad configuration (`EX_CONFIG` is 78, but 64 `EX_USAGE` is what operators
/// and the deployment docs expect from both binaries).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Log output format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The config-file spelling (`log_format = "json"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Reads the TOML file (if any) into a table: the first layer of a configuration.
pub fn read_file(file: Option<&Path>) -> Result<toml::Table, ConfigError> {
    let Some(path) = file else {
        return Ok(toml::Table::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string().trim().to_owned()))
}

/// Sets every `(dotted key, value)` override (flags) on `table`, each value read with
/// [`parse_value`]; an override whose path crosses a non-table names its key in the error.
pub fn apply_overrides(
    table: &mut toml::Table,
    overrides: &[(&str, String)],
) -> Result<(), ConfigError> {
    for (key, value) in overrides {
        let path: Vec<&str> = key.split('.').collect();
        set_path(table, &path, parse_value(value)).map_err(|m| ConfigError::new(*key, m))?;
    }
    Ok(())
}

/// The tail every configuration load ends with: deserializes the layered `table` into `T`,
/// naming the key path of the first bad value (`raft.heartbeat_interval`, `client.max_rooms`;
/// `config` for the whole document).
pub fn deserialize<T: DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "config".to_owned() } else { key };
        ConfigError::new(key, e.into_inner().message().to_owned())
    })
}

/// `s` as a TOML string literal, for overrides built from flags (so a value is never re-read
/// as a number or an array).
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Installs the global log subscriber writing to stderr: the filter comes from `PLAZA_LOG`
/// (default `info`), and `pinned` directives are appended after it so that they win (the edge
/// pins `tungstenite=info`, which would otherwise log whole frames, tokens included, at trace).
pub fn init_logs(format: LogFormat, pinned: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let wanted = std::env::var("PLAZA_LOG").unwrap_or_else(|_| "info".into());
    let join = |base: &str| {
        if pinned.is_empty() {
            base.to_owned()
        } else {
            format!("{base},{pinned}")
        }
    };
    let filter = EnvFilter::try_new(join(&wanted)).unwrap_or_else(|_| EnvFilter::new(join("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How often [`install_metrics`] drains histogram samples into their summaries.
pub const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs `builder`'s Prometheus recorder as the process-wide one and returns its handle;
/// `on_install` runs once, right after (descriptions, series registered at zero). Only the
/// first call in a process installs (later ones, e.g. several nodes in one test process, get
/// the first handle).
///
/// A histogram keeps every sample it records until the samples are drained into its summary,
/// which rendering `/metrics` does — so on a node nobody scrapes, each recorded duration (one
/// per broker call, per webhook POST, ...) would stay in memory for good. A thread named
/// `metrics-upkeep` drains them every [`METRICS_UPKEEP`] instead, whether or not anyone scrapes.
pub fn install_metrics(
    builder: metrics_exporter_prometheus::PrometheusBuilder,
    on_install: impl FnOnce(),
) -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::PrometheusHandle;
    use std::sync::OnceLock;
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then renders nothing,
            // and nothing breaks.
            if metrics::set_global_recorder(recorder).is_ok() {
                on_install();
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms drain only when /metrics is read");
            }
            handle
        })
        .clone()
}

/// Reads an override value: TOML syntax if it parses (numbers, booleans, arrays), else a string.
pub fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets the key at `path` (e.g. `["client", "ping_interval"]`), creating parent tables.
pub fn set_path<S: AsRef<str>>(
    table: &mut toml::Table,
    path: &[S],
    value: toml::Value,
) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut at = table;
    for p in parents {
        let p = p.as_ref();
        let entry = at
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    at.insert(last.as_ref().to_owned(), value);
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_toml_or_fall_back_to_text_and_nest_by_path() {
        let mut t = toml::Table::new();
        set_path(&mut t, &["a", "b"], parse_value("42")).unwrap();
        set_path(&mut t, &["a", "c"], parse_value("not toml")).unwrap();
        assert_eq!(t["a"]["b"].as_integer(), Some(42));
        assert_eq!(t["a"]["c"].as_str(), Some("not toml"));
        assert!(set_path(&mut t, &["a", "b", "x"], parse_value("1")).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        section: Section,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn overrides_layer_onto_the_file_and_errors_name_the_key() {
        let mut t: toml::Table = "[section]\ncount = 1".parse().unwrap();
        apply_overrides(&mut t, &[("section.count", "2".into())]).unwrap();
        assert_eq!(t["section"]["count"].as_integer(), Some(2));
        apply_overrides(&mut t, &[("section.count", "many".into())]).unwrap();
        let e = deserialize::<Sample>(t).unwrap_err();
        assert_eq!(e.key, "section.count");
        let mut t: toml::Table = "[section]\ncount = 1".parse().unwrap();
        let e = apply_overrides(&mut t, &[("section.count.x", "1".into())]).unwrap_err();
        assert_eq!(e.key, "section.count.x");
        let e = read_file(Some(Path::new("/nonexistent/plaza.toml"))).unwrap_err();
        assert_eq!(e.key, "/nonexistent/plaza.toml");
    }
}

/// A configuration error of either binary, naming the key (e.g. `raft.heartbeat_interval`,
/// `client.ping_interval`, or the config file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    /// The key path, or the file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
