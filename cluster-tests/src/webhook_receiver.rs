//! A real webhook receiver for the cluster tests and benchmarks: a minimal HTTP/1.1 server on a
//! loopback port that answers every POST with 204 and records its events with their arrival
//! time, plus the checks the webhook guarantees call for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One event as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the POST carrying it was read completely.
    pub at: Instant,
    /// The event's JSON.
    pub event: Value,
}

impl Received {
    /// The event's id.
    pub fn id(&self) -> &str {
        self.event["id"].as_str().unwrap_or("")
    }

    /// The event's feed sequence.
    pub fn seq(&self) -> u64 {
        self.event["seq"].as_u64().unwrap_or(0)
    }
}

/// The receiver. Cheap to clone; clones share what was received.
#[derive(Clone)]
pub struct Receiver {
    /// The URL to configure as the endpoint.
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts listening on a free loopback port; runs until the runtime ends.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&shared)));
            }
        });
        Self {
            url: format!("http://{addr}/hook"),
            got,
        }
    }

    /// Every event received so far, in arrival order (repeats included).
    pub fn received(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The distinct events received, by id (the first arrival of each).
    pub fn distinct(&self) -> BTreeMap<String, Received> {
        let mut out = BTreeMap::new();
        for r in self.received() {
            out.entry(r.id().to_owned()).or_insert(r);
        }
        out
    }
}

/// Serves one keep-alive connection: request head, `Content-Length` body, 204.
async fn serve(socket: tokio::net::TcpStream, got: Arc<Mutex<Vec<Received>>>) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let at = Instant::now();
        if let Ok(batch) = serde_json::from_slice::<Value>(&body) {
            let events = batch["events"].as_array().cloned().unwrap_or_default();
            let mut got = got.lock().unwrap_or_else(PoisonError::into_inner);
            got.extend(events.into_iter().map(|event| Received { at, event }));
        }
        let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        if reader.get_mut().write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Checks the webhook invariants (`chaos::invariants::webhooks`) of `received` (arrival
/// order, repeats included) against the feed (`feed`, every event read back from
/// `GET /v1/api/events`, in feed order). Returns a summary, or the first violation.
pub fn check(received: &[Received], feed: &[Value]) -> Result<String, String> {
    for (_, result) in crate::chaos::invariants::webhooks::check_all(received, feed) {
        if let Err(v) = result {
            return Err(format!("{}: {}", v.invariant, v.example));
        }
    }
    let repeats = received.len().saturating_sub(feed.len());
    Ok(format!(
        "{} events delivered at least once ({repeats} repeats), in order, equal to the feed",
        feed.len()
    ))
}
