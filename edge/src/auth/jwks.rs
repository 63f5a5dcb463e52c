//! One identity provider's key set, cached: looked up without locks on every token, replaced
//! atomically when a fetch succeeds, and kept as it is when one fails.
//!
//! ```text
//!  token (kid) ──▶ keys.load() ── found ──▶ verify
//!                      │ unknown kid / nothing loaded yet
//!                      ▼
//!                  refetch(): one fetch at a time (gate); a caller that queued behind a fetch
//!                  shares its result; at most one fetch per min_refetch_interval
//!                      │ ok: keys.store(new set)      error: keep the last good set, warn
//!  refresh task ──────▶┘ (every refresh_interval; every min_refetch_interval while failing)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::source::{FetchError, Key, Keys, Source};
use super::{AuthError, AuthSetupError};
use crate::config::JwksConfig;
use crate::metrics as m;

/// The cached key set of one issuer. Shared (`Arc`) by the verifier and its refresh task.
pub(super) struct KeySet {
    issuer: String,
    source: Source,
    /// The last good set; `None` until the first load succeeds. Read lock-free per token.
    keys: ArcSwapOption<Keys>,
    /// Why the last attempt failed; `None` once one succeeds. For error messages and for the
    /// refresh task's retry pace.
    last_error: ArcSwapOption<FetchError>,
    /// Held for the whole of a fetch (by the spawned fetch task, see [`KeySet::refetch`]),
    /// so fetches never overlap; holds when the last one started, for the rate limit.
    gate: Arc<Mutex<Gate>>,
    /// Completed fetch attempts. A caller that saw this change while it queued on `gate`
    /// knows a fetch just finished and uses its result instead of starting another.
    attempts: AtomicU64,
    min_refetch_interval: Duration,
    refresh_interval: Duration,
    fetch_timeout: Duration,
}

#[derive(Default)]
struct Gate {
    last_attempt: Option<Instant>,
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A token names a `kid` we do not have (or nothing is loaded yet).
    UnknownKid,
    /// The periodic refresh.
    Refresh,
}

impl KeySet {
    /// Builds the key set of `config`. A `file` source is read now, so a missing or malformed
    /// file fails startup; a `url` source is fetched later (by the refresh task or the first
    /// token), so startup never waits on the network.
    pub(super) fn new(config: &JwksConfig) -> Result<Arc<Self>, AuthSetupError> {
        let source = Source::new(config)?;
        let set = Arc::new(Self {
            issuer: config.issuer.clone(),
            keys: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            gate: Arc::default(),
            attempts: AtomicU64::new(0),
            min_refetch_interval: config.min_refetch_interval,
            refresh_interval: config.refresh_interval,
            fetch_timeout: config.fetch_timeout,
            source,
        });
        if let Some(loaded) = set.source.load_file_now() {
            let keys = loaded.map_err(|e| AuthSetupError::Jwks {
                issuer: config.issuer.clone(),
                message: e.to_string(),
            })?;
            set.record(Ok(keys));
        }
        Ok(set)
    }

    /// The key named `kid`. An unknown `kid` may mean the provider rotated its keys, so it
    /// triggers one refetch (shared with concurrent callers, rate-limited) and waits for it.
    /// That fetch is itself cut off at `fetch_timeout`, so the wait is at most about that
    /// long; the outer timeout is only a safety net. Never echoes the token's `kid`: it is
    /// attacker-controlled.
    pub(super) async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<Key>, AuthError> {
        if let Some(key) = self.find(kid) {
            return Ok(key);
        }
        let wait = self.fetch_timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, self.refetch(Why::UnknownKid)).await;
        if let Some(key) = self.find(kid) {
            return Ok(key);
        }
        Err(match (&*self.keys.load(), &*self.last_error.load()) {
            (Some(_), _) => AuthError::Invalid(format!(
                "unknown signing key (kid) for issuer {}",
                self.issuer
            )),
            (None, Some(e)) => AuthError::Unavailable(format!(
                "signing keys of issuer {} are unavailable (last fetch: {e})",
                self.issuer
            )),
            (None, None) => AuthError::Unavailable(format!(
                "signing keys of issuer {} are still loading",
                self.issuer
            )),
        })
    }

    fn find(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys.load().as_ref().and_then(|keys| keys.get(kid))
    }

    /// Fetches the set unless a fetch just finished or one started less than
    /// `min_refetch_interval` ago. Returns once this call's fetch (or the one it queued
    /// behind) is done, or at once if rate-limited.
    ///
    /// Cancel-safe: the fetch runs in its own task, which holds the gate, so a caller that
    /// gives up (timeout, client gone) neither aborts it nor lets a second fetch start.
    async fn refetch(self: &Arc<Self>, why: Why) {
        let seen = self.attempts.load(Ordering::Acquire);
        let gate = self.gate.clone().lock_owned().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return; // A fetch finished while we queued: share its result.
        }
        if gate
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.min_refetch_interval)
        {
            if why == Why::UnknownKid {
                metrics::counter!(m::JWKS_REFETCHES_SKIPPED, "issuer" => self.issuer.clone())
                    .increment(1);
            }
            return;
        }
        let this = self.clone();
        let fetch = tokio::spawn(async move {
            let mut gate = gate;
            gate.last_attempt = Some(Instant::now());
            let loaded = this.source.load(this.fetch_timeout).await;
            this.record(loaded);
            this.attempts.fetch_add(1, Ordering::Release);
            // `gate` unlocks here, after `attempts` moved, so queued callers share the result.
        });
        let _ = fetch.await;
    }

    /// Installs a good set, or keeps the last one and remembers why this attempt failed.
    fn record(&self, loaded: Result<Keys, FetchError>) {
        let issuer = self.issuer.clone();
        match loaded {
            Ok(keys) => {
                metrics::counter!(m::JWKS_FETCHES, "issuer" => issuer.clone(), "result" => "ok")
                    .increment(1);
                metrics::gauge!(m::JWKS_KEYS, "issuer" => issuer).set(keys.len() as f64);
                if self.keys.load().is_none() || self.last_error.load().is_some() {
                    tracing::info!(issuer = %self.issuer, keys = keys.len(), "JWKS loaded");
                } else {
                    tracing::debug!(issuer = %self.issuer, keys = keys.len(), "JWKS refreshed");
                }
                self.keys.store(Some(Arc::new(keys)));
                self.last_error.store(None);
            }
            Err(e) => {
                metrics::counter!(m::JWKS_FETCHES, "issuer" => issuer, "result" => e.label())
                    .increment(1);
                let kept = self.keys.load().is_some();
                tracing::warn!(
                    issuer = %self.issuer,
                    error = %e,
                    keeping_last_good_set = kept,
                    "JWKS fetch failed"
                );
                self.last_error.store(Some(Arc::new(e)));
            }
        }
    }

    /// Refreshes the set forever: every `refresh_interval` while fetches succeed, every
    /// `min_refetch_interval` while they fail (or nothing is loaded yet), so a provider that
    /// was down at startup is picked up soon after it recovers. Runs until dropped; the
    /// [`super::Verifier`] that spawned it stops it when dropped.
    pub(super) async fn refresh_forever(self: Arc<Self>) {
        if self.keys.load().is_some() {
            tokio::time::sleep(self.refresh_interval).await;
        }
        loop {
            self.refetch(Why::Refresh).await;
            let healthy = self.keys.load().is_some() && self.last_error.load().is_none();
            let pause = if healthy {
                self.refresh_interval
            } else {
                self.min_refetch_interval
            };
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_config(path: &std::path::Path) -> JwksConfig {
        JwksConfig {
            issuer: "https://idp.example".into(),
            file: Some(path.to_owned()),
            min_refetch_interval: Duration::from_secs(3600),
            refresh_interval: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    fn write_set(path: &std::path::Path, kids: &[&str]) {
        let keys: Vec<_> = kids
            .iter()
            .map(|k| {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": k,
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
            })
            .collect();
        std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_refetches_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        write_set(&path, &["a"]);
        let set = KeySet::new(&file_config(&path)).unwrap();
        assert_eq!(
            set.attempts.load(Ordering::Relaxed),
            0,
            "the startup read is no refetch"
        );
        // The file now holds `b`. Fifty lookups of made-up kids at once: the first refetches
        // (the startup read is not rate-limited against), the others share that one fetch.
        write_set(&path, &["b"]);
        let lookups = (0..50).map(|i| {
            let set = set.clone();
            async move { set.key(&format!("made-up-{i}")).await }
        });
        for r in futures_util::future::join_all(lookups).await {
            assert!(matches!(r, Err(AuthError::Invalid(m)) if m.contains("unknown signing key")));
        }
        assert_eq!(set.attempts.load(Ordering::Relaxed), 1);
        assert!(
            set.key("b").await.is_ok(),
            "the one refetch loaded the new set"
        );
        write_set(&path, &["c"]);
        assert!(
            set.key("c").await.is_err(),
            "within min_refetch_interval: no refetch"
        );
        assert_eq!(set.attempts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        write_set(&path, &["a"]);
        let mut config = file_config(&path);
        config.min_refetch_interval = Duration::from_millis(1);
        let set = KeySet::new(&config).unwrap();
        std::fs::write(&path, "{ not json").unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(set.key("unknown").await.is_err());
        assert_eq!(set.attempts.load(Ordering::Relaxed), 1);
        assert!(set.last_error.load().is_some());
        assert!(
            set.key("a").await.is_ok(),
            "the last good set is still in use"
        );
    }

    #[test]
    fn a_missing_or_malformed_file_fails_startup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        assert!(matches!(
            KeySet::new(&file_config(&path)),
            Err(AuthSetupError::Jwks { .. })
        ));
        std::fs::write(&path, "[]").unwrap();
        assert!(KeySet::new(&file_config(&path)).is_err());
    }
}
