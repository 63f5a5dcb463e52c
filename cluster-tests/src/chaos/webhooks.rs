//! Webhooks in a chaos run (Raft and NATS backends): every workload edge gets `[webhooks]` pointing at a
//! real receiver (and the state namespace of `state_watch.rs`); after healing, the event feed is read back from a live edge and the
//! receiver's deliveries are checked against it (`invariants::webhooks`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::history::Violation;
use super::invariants::webhooks as rules;
use crate::EdgeProcess;
use crate::webhook_receiver::Receiver;

const API_KEY: &str = "plaza-chaos-api-key-0123456789";

/// The receiver and the edges' config file.
pub(super) struct Webhooks {
    receiver: Receiver,
    /// `--config` of every workload edge.
    pub(super) edge_config: PathBuf,
    _dir: TempDir,
}

impl Webhooks {
    /// Starts the receiver and writes the edge config.
    pub(super) async fn start() -> Self {
        let receiver = Receiver::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let edge_config = dir.path().join("edge-webhooks.toml");
        let text = format!(
            "[api]\nkeys = [\"{API_KEY}\"]\n\n[webhooks]\nsecret = \"plaza-chaos-webhook-secret\"\n\
             lease = \"2s\"\npoll_interval = \"100ms\"\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n\n\
             [[webhooks.endpoints]]\nname = \"chaos\"\nurl = \"{}\"\n\n\
             [rooms.namespaces.{}.state]\nenabled = true\nmax_keys = 100\nmax_ttl = \"10s\"\n",
            receiver.url,
            super::state_watch::STATE_NAMESPACE,
        );
        std::fs::write(&edge_config, text).expect("write the edge config");
        Self {
            receiver,
            edge_config,
            _dir: dir,
        }
    }

    /// Reads the feed from a live edge, waits (up to 30 s) for the receiver to have all of it,
    /// and checks every webhook invariant.
    pub(super) async fn check(
        &self,
        edges: &[EdgeProcess],
    ) -> Vec<(&'static str, Result<(), Violation>)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let feed = match read_feed(edges).await {
                Ok(feed) => feed,
                Err(why) => {
                    let v = Err(Violation {
                        invariant: rules::REPLAY_EQUALS,
                        example: format!("could not read the feed back: {why}"),
                    });
                    return vec![(rules::REPLAY_EQUALS, v)];
                }
            };
            if feed.is_empty() {
                let v = Err(Violation {
                    invariant: rules::AT_LEAST_ONCE,
                    example: "the feed is empty: the workload produced no lifecycle events".into(),
                });
                return vec![(rules::AT_LEAST_ONCE, v)];
            }
            let results = rules::check_all(&self.receiver.received(), &feed);
            if results.iter().all(|(_, r)| r.is_ok()) || Instant::now() > deadline {
                return results;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The whole feed, paged, from the first edge that answers.
async fn read_feed(edges: &[EdgeProcess]) -> Result<Vec<Value>, String> {
    let mut last_error = String::from("no edge");
    for edge in edges {
        let mut since = String::new();
        let mut events = Vec::new();
        let outcome: Result<(), String> = async {
            loop {
                let path = format!("/v1/api/events?limit=500&since={since}");
                let body = get(edge.addr, &path).await?;
                let page: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                events.extend(page["events"].as_array().cloned().unwrap_or_default());
                since = page["next"].as_str().unwrap_or("").to_owned();
                if page["next"] == page["latest"] {
                    return Ok(());
                }
            }
        }
        .await;
        match outcome {
            Ok(()) => return Ok(events),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// `GET path` with the API key; the body of a 200.
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    Ok(body.to_owned())
}
