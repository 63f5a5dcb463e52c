//! The server HTTP API (`/v1/api/...`) against running edges: every endpoint's effect as seen
//! by WebSocket clients, user disconnects across two edges sharing one broker tier, and every
//! kind of bad request.
//!
//! - `endpoints.rs`: what each endpoint does, observed through WebSocket clients.
//! - `refusals.rs`: authentication, the disabled API, malformed requests, metrics, the OpenAPI
//!   document.
//! - `outage.rs`: a broker tier that fails or stalls (503 with `Retry-After`).
//! - `http.rs`: a minimal HTTP/1.1 client.

#[path = "../common/mod.rs"]
mod common;
mod endpoints;
mod ephemeral;
mod events;
mod http;
mod outage;
mod refusals;
mod state;

use common::{config, start};
use plaza_edge::RunningEdge;
use plaza_edge::config::{EdgeConfig, Secret};

/// The key most tests use.
const KEY: &str = "current-api-key-0123456789";
/// A second accepted key (the rotation case).
const OLD_KEY: &str = "previous-api-key-0123456789";

/// The test config with two API keys (the rotation case) and a small body limit.
fn api_config() -> EdgeConfig {
    let mut c = config();
    c.api.keys = vec![Secret(KEY.into()), Secret(OLD_KEY.into())];
    c.http.max_body_bytes = 4096;
    // The refusal tests make dozens of failed attempts from one address on purpose.
    c.api.max_failed_auth_per_ip = 10_000;
    c
}

async fn api_edge() -> RunningEdge {
    start(api_config()).await
}
