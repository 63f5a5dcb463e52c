//! Fuzz target: loading the edge's configuration (`EdgeConfig::load`: TOML file → `PLAZA_*`
//! environment → flag overrides → typed → validated).
//!
//! Inputs: settings on the real key paths (learned by serializing `EdgeConfig::default()`),
//! with values of the right type at the edges of their range — durations from `0s` to beyond
//! any clock — or of any other type, spread over the three layers; documents cut short or
//! followed by garbage; made-up keys inside real sections.
//! Properties: never panics; an error names a key (a config path, an environment variable, a
//! flag or the file); a configuration that loads is a fixed point (saved and loaded again it is
//! the same) and works: its verifier accepts a token minted with its own secret.

#[path = "support/config_docs.rs"]
mod config_docs;
#[path = "../../proto/tests/support/fuzz.rs"]
mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use config_docs::{as_text, document, insert, key_paths, setting};
use plaza_edge::auth::{Capability, TokenSpec, Verifier, mint};
use plaza_edge::config::EdgeConfig;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use support::fuzz;

const SECRET_ENV: &str = "PLAZA_AUTH__HMAC_SECRET";

#[derive(Debug, Clone)]
struct Layers {
    file: Vec<(Vec<String>, toml::Value)>,
    env: Vec<(Vec<String>, toml::Value)>,
    flags: Vec<(Vec<String>, toml::Value)>,
    damage: Option<(prop::sample::Index, String)>,
}

fn layers() -> impl Strategy<Value = Layers> {
    let keys = key_paths(
        &EdgeConfig::default(),
        &[
            "auth.hmac_secret",
            "auth.issuer",
            "auth.token_cookie",
            "rooms.namespaces.chat.presence",
            "rooms.namespaces.chat.history_size",
            "rooms.namespaces.chat.history_ttl",
            "rooms.namespaces.chat.allow",
            "dev",
        ],
    );
    let one = setting(keys);
    (
        // Few settings per layer, so that many loads get past the first bad value to the
        // checks and the use of a loaded configuration.
        prop::collection::vec(one.clone(), 0..4),
        prop::collection::vec(one.clone(), 0..2),
        prop::collection::vec(one, 0..2),
        prop::option::weighted(0.1, (any::<prop::sample::Index>(), "\\PC{0,6}")),
    )
        .prop_map(|(file, env, flags, damage)| Layers {
            file,
            env,
            flags,
            damage,
        })
}

fn check(layers: &Layers, dir: &std::path::Path, loaded: &AtomicU64) -> TestCaseResult {
    let mut table = toml::Table::new();
    for (path, value) in &layers.file {
        insert(&mut table, path, value.clone());
    }
    let path = dir.join("edge.toml");
    let text = document(&table, layers.damage.clone());
    std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut env = vec![(SECRET_ENV.to_owned(), "s".repeat(32))];
    env.extend(
        layers
            .env
            .iter()
            .map(|(p, v)| (format!("PLAZA_{}", p.join("__").to_uppercase()), as_text(v))),
    );
    let flags: Vec<(String, String)> = layers
        .flags
        .iter()
        .map(|(p, v)| (p.join("."), as_text(v)))
        .collect();
    let flag_refs: Vec<(&str, String)> =
        flags.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();

    match EdgeConfig::load(Some(&path), env.clone(), &flag_refs) {
        Err(e) => {
            let sections = toml::Table::try_from(EdgeConfig::default()).unwrap_or_default();
            let first = e.key.split(['.', '[']).next().unwrap_or_default();
            prop_assert!(
                e.key == path.display().to_string()
                    || env.iter().any(|(name, _)| *name == e.key)
                    || flags.iter().any(|(key, _)| *key == e.key)
                    || sections.contains_key(first)
                    || ["config", "dev"].contains(&first)
                    // An unknown key the (damaged) file itself defines, named as it is there.
                    || (!first.is_empty() && text.contains(first)),
                "error names no key: {e}"
            );
            prop_assert!(!e.message.is_empty(), "{e}");
        }
        Ok(config) => {
            loaded.fetch_add(1, Ordering::Relaxed);
            // A loaded configuration saved and loaded again is the same configuration.
            let saved = dir.join("saved.toml");
            let text = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
            std::fs::write(&saved, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match EdgeConfig::load(Some(&saved), Vec::new(), &[]) {
                Ok(again) => prop_assert_eq!(&again, &config, "saved as:\n{}", text),
                Err(e) => prop_assert!(false, "the loaded config saved as\n{text}\nfails: {e}"),
            }
            works(&config)?;
        }
    }
    Ok(())
}

/// A loaded configuration's verifier accepts a token minted with its own secret (when the
/// configuration asks nothing of tokens that `mint` does not put in).
fn works(config: &EdgeConfig) -> TestCaseResult {
    let (Some(secret), None, None) = (
        &config.auth.hmac_secret,
        &config.auth.issuer,
        &config.auth.audience,
    ) else {
        return Ok(());
    };
    if !config.auth.jwks.is_empty() {
        return Ok(());
    }
    let verifier = Verifier::new(&config.auth).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let spec = TokenSpec {
        user: "ann".into(),
        rooms: vec![("chat:*".into(), vec![Capability::Subscribe])],
        ttl: Some(Duration::from_secs(3600)),
        info: None,
    };
    let token = mint(secret.0.as_bytes(), &config.auth.capability_claim, &spec)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if token.len() > config.auth.max_token_bytes {
        return Ok(());
    }
    let verified = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .block_on(verifier.verify(&token));
    prop_assert!(
        verified.is_ok(),
        "auth {:?} refuses its own token: {:?}",
        config.auth,
        verified
    );
    Ok(())
}

#[test]
fn edge_config_loading_survives_arbitrary_layers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = AtomicU64::new(0);
    fuzz("config/edge", file!(), 4_000, layers(), |layers| {
        check(&layers, dir.path(), &loaded)
    });
    let _ = writeln!(
        std::io::stderr(),
        "fuzz config/edge: {} of the generated configurations loaded",
        loaded.load(Ordering::Relaxed)
    );
}
