//! What both Plaza binaries (`plaza-edge`, `plaza-broker`) share around their config and
//! lifecycle: setting TOML keys from flags and environment variables, and the shutdown signal.

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
