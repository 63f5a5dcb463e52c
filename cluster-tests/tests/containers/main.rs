//! Plaza's container deployment for real: the image built from `docker/Dockerfile`, run by
//! `docker/compose.cluster.yaml` (3 brokers + 2 edges) or `docker/compose.nats.yaml` (3 NATS
//! JetStream nodes + 2 edges) under Podman, with the compose files' nginx and Caddy both
//! terminating TLS in front. Real `wss://` clients go through the front ends while containers
//! are killed (`podman kill`) and stopped (`podman stop` = SIGTERM) under them.
//!
//! Not part of `cargo test` (`test = false` in Cargo.toml): these tests need the deployment
//! that `scripts/test-containers.sh` brings up, and that script runs them
//! (`cargo test --test containers`) and fails unless each one ran and passed. Run without it,
//! they fail. What it hands over, in the environment:
//!
//! - `PLAZA_CT_PROJECT`: the compose project (`plaza-cluster` or `plaza-nats`);
//! - `PLAZA_CT_FRONTENDS`: `name@ip:port@ca.pem` for each TLS front end, space-separated;
//! - `PLAZA_CT_SECRET_FILE`: a file holding the edges' HMAC secret (tokens are minted with
//!   `plaza-edge token`, as a backend would);
//! - `PLAZA_CT_BROKERS` (cluster): `id=ip:port` of each broker's status port, space-separated.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plaza_cluster_tests::ws::{self, Ended};
use plaza_cluster_tests::{http_get, token};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

mod client;
mod deployment;
mod follow;
mod scenarios;

use client::*;
use deployment::*;
use follow::*;
use scenarios::*;

fn for_variant(variant: &str) {
    let project = project();
    assert_eq!(
        project,
        format!("plaza-{variant}"),
        "this test is for the {variant} deployment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_chat_and_presence_through_nginx_and_caddy() {
    for_variant("cluster");
    for front in frontends() {
        chat_and_presence(&front).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_broker_leader_killed_while_publishing() {
    for_variant("cluster");
    let before = leader();
    let container = format!("{}_broker-{before}_1", project());
    assert!(containers(&format!("broker-{before}")).contains(&container));
    publish_through_fault("leader-kill", 300, 60, || {
        podman(&["kill", &container]);
        eprintln!("leader-kill: killed {container} (broker {before}, the leader)");
    })
    .await;
    let restarted = bring_back(&container);
    eprintln!(
        "leader-kill: {container} {}",
        if restarted {
            "restarted by its restart policy"
        } else {
            "started again by the test"
        }
    );
    // It rejoins from its volume and catches up with the new leader.
    let addr = brokers()[&before];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_leader = leader();
        let lead = broker_status(brokers()[&now_leader]);
        let mine = broker_status(addr);
        if let (Some(lead), Some(mine)) = (lead, mine)
            && mine["voters"].as_array().map(Vec::len) == Some(3)
            && mine["last_applied"].as_u64().is_some()
            && mine["last_applied"].as_u64() >= lead["commit_index"].as_u64()
        {
            eprintln!(
                "leader-kill: broker {before} back as {} at applied {} (leader {now_leader})",
                mine["state"], mine["last_applied"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {before} did not catch up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy(&container, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rolling_restart_of_the_edges() {
    for_variant("cluster");
    rolling_restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_chat_and_presence_through_nginx_and_caddy() {
    for_variant("nats");
    for front in frontends() {
        chat_and_presence(&front).await;
    }
}

/// The JetStream meta leader, as NATS's monitoring endpoint inside `container` reports it.
fn nats_meta_leader(container: &str) -> String {
    let text = podman(&[
        "exec",
        container,
        "wget",
        "-qO-",
        "http://127.0.0.1:8222/jsz",
    ]);
    let jsz: Value = serde_json::from_str(&text).expect("jsz JSON");
    jsz["meta_cluster"]["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta leader in {jsz}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_node_killed_while_publishing() {
    for_variant("nats");
    let any = containers("nats-1").remove(0);
    let leader = nats_meta_leader(&any);
    let container = format!("{}_{leader}_1", project());
    assert!(
        containers(&leader).contains(&container),
        "{leader} is a service"
    );
    publish_through_fault("nats-kill", 300, 60, || {
        podman(&["kill", &container]);
        eprintln!("nats-kill: killed {container} (the JetStream meta leader)");
    })
    .await;
    let restarted = bring_back(&container);
    eprintln!(
        "nats-kill: {container} {}",
        if restarted {
            "restarted by its restart policy"
        } else {
            "started again by the test"
        }
    );
    // Back with JetStream (the compose file's health check: /healthz?js-enabled-only=true).
    wait_healthy(&container, Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_rolling_restart_of_the_edges() {
    for_variant("nats");
    rolling_restart().await;
}
