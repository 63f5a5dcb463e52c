//! Fuzz target: loading the broker's configuration (`BrokerConfig::load`: TOML file → flag
//! overrides → typed → validated).
//!
//! Inputs: settings on the real key paths (learned by serializing `BrokerConfig::default()`)
//! with values at the edges of their range or of any other type, in the file and as
//! overrides, on top of a minimal valid node (id, in-memory, TLS paths) so that many loads get
//! to validation; documents cut short or followed by garbage.
//! Properties: never panics; an error names a key; a configuration that loads is a fixed point
//! (saved and loaded again it is the same) and gives openraft settings it accepts.

#[path = "../../edge/tests/support/config_docs.rs"]
mod config_docs;
#[path = "../../proto/tests/support/fuzz.rs"]
mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use config_docs::{as_text, document, insert, key_paths, setting};
use plaza_broker::server::BrokerConfig;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use support::fuzz;

/// A node that loads: what `BrokerConfig` requires without a default.
const BASE: [(&str, &str); 5] = [
    ("node_id", "1"),
    ("in_memory", "true"),
    ("tls.ca", "ca.pem"),
    ("tls.cert", "node.pem"),
    ("tls.key", "node.key"),
];

type Settings = Vec<(Vec<String>, toml::Value)>;

fn layers() -> impl Strategy<Value = (Settings, Settings, Option<(prop::sample::Index, String)>)> {
    let keys = key_paths(
        &BrokerConfig::default(),
        &[
            "node_id",
            "data_dir",
            "admin_token",
            "tls.ca",
            "tls.cert",
            "tls.key",
            "rooms.namespaces.chat.presence",
        ],
    );
    let one = setting(keys);
    (
        prop::collection::vec(one.clone(), 0..4),
        prop::collection::vec(one, 0..3),
        prop::option::weighted(0.1, (any::<prop::sample::Index>(), "\\PC{0,6}")),
    )
}

fn check(
    (file, flags, damage): &(Settings, Settings, Option<(prop::sample::Index, String)>),
    dir: &std::path::Path,
    loaded: &AtomicU64,
) -> TestCaseResult {
    let mut table = toml::Table::new();
    for (path, value) in file {
        insert(&mut table, path, value.clone());
    }
    let path = dir.join("broker.toml");
    let text = document(&table, damage.clone());
    std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut overrides: Vec<(String, String)> = BASE
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    overrides.extend(flags.iter().map(|(p, v)| (p.join("."), as_text(v))));
    let refs: Vec<(&str, String)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();

    match BrokerConfig::load(Some(&path), &refs) {
        Err(e) => {
            let sections = toml::Table::try_from(BrokerConfig::default()).unwrap_or_default();
            let first = e.key.split(['.', '[']).next().unwrap_or_default();
            prop_assert!(
                e.key == path.display().to_string()
                    || overrides.iter().any(|(key, _)| *key == e.key)
                    || sections.contains_key(first)
                    || ["config", "node_id", "data_dir", "admin_token", "peers"].contains(&first)
                    // An unknown key the (damaged) file itself defines, named as it is there.
                    || (!first.is_empty() && text.contains(first)),
                "error names no key: {e}"
            );
            prop_assert!(!e.message.is_empty(), "{e}");
        }
        Ok(config) => {
            loaded.fetch_add(1, Ordering::Relaxed);
            let saved = dir.join("saved.toml");
            let text = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
            std::fs::write(&saved, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match BrokerConfig::load(Some(&saved), &[]) {
                Ok(again) => prop_assert_eq!(&again, &config, "saved as:\n{}", text),
                Err(e) => prop_assert!(false, "the loaded config saved as\n{text}\nfails: {e}"),
            }
            let node = config.raft_node_config();
            let raft = node.raft.clone().validate();
            prop_assert!(
                raft.is_ok(),
                "openraft refuses {:?}: {:?}",
                config.raft,
                raft.err()
            );
        }
    }
    Ok(())
}

#[test]
fn broker_config_loading_survives_arbitrary_layers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = AtomicU64::new(0);
    fuzz("config/broker", file!(), 4_000, layers(), |layers| {
        check(&layers, dir.path(), &loaded)
    });
    let _ = writeln!(
        std::io::stderr(),
        "fuzz config/broker: {} of the generated configurations loaded",
        loaded.load(Ordering::Relaxed)
    );
}
