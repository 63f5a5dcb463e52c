//! Injecting a scenario's faults into the running system (kills, pauses, partitions through the
//! proxies, NATS server kills), healing them, and watching who leads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::history::Event;
use super::proxy::{Faults, Node};
use super::runner::*;
use crate::{BrokerCluster, EdgeProcess};

/// Injects one fault of the scenario (and undoes the previous one first).
pub(super) async fn inject(
    options: &Options,
    system: &mut System,
    edges: &mut Vec<EdgeProcess>,
    urls: &Arc<Mutex<Vec<String>>>,
    rng: &mut StdRng,
) -> String {
    heal(system).await;
    match (system, options.scenario) {
        (system, Scenario::EdgeKill) => {
            let victim = rng.random_range(0..edges.len());
            edges[victim].process.kill();
            let old = edges[victim].ws_url();
            urls.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|u| *u != old);
            edges.remove(victim);
            // A replacement comes up (new process, new address), as an orchestrator would.
            let n = rng.random_range(1..=crate::EDGE_CERTS);
            let fresh = match system {
                System::Raft { cluster } => {
                    let ids: Vec<u64> = cluster.slots.iter().map(|s| s.id).collect();
                    let extra = edge_extra(options);
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    EdgeProcess::start(cluster, n, &ids, SECRET, options.lease, &extra)
                }
                System::Nats { nats } => {
                    let replicas = if nats.nodes.len() >= 3 { 3 } else { 1 };
                    nats_edge(nats, n, replicas, options)
                }
            };
            let url = fresh.ws_url();
            urls.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(url.clone());
            edges.push(fresh);
            format!("kill -9 edge {old}; started {url}")
        }
        (System::Nats { nats }, _) => {
            let victim = rng.random_range(0..nats.nodes.len());
            nats.kill(victim);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            nats.start_node(victim);
            format!("killed NATS server {victim}, restarted it 1.5 s later")
        }
        (System::Raft { cluster }, scenario) => {
            let ids: Vec<u64> = cluster.slots.iter().map(|s| s.id).collect();
            let leader = current_leader(cluster);
            let random = ids[rng.random_range(0..ids.len())];
            match scenario {
                Scenario::LeaderChurn | Scenario::BrokerKill => {
                    let victim = if scenario == Scenario::LeaderChurn {
                        leader.unwrap_or(random)
                    } else {
                        random
                    };
                    cluster.kill(victim);
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    cluster.start_node(victim);
                    format!("kill -9 broker {victim} (leader {leader:?}), restarted 1 s later")
                }
                Scenario::LeaderPartition | Scenario::MinorityPartition => {
                    let victim = if scenario == Scenario::LeaderPartition {
                        leader.unwrap_or(random)
                    } else {
                        random
                    };
                    let others: Vec<Node> = ids
                        .iter()
                        .filter(|id| **id != victim)
                        .map(|id| Node::Broker(*id))
                        .collect();
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| f.partition(&[Node::Broker(victim)], &others));
                    }
                    format!("partitioned broker {victim} (leader {leader:?}) from the others")
                }
                Scenario::MajorityPartition => {
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| {
                            for a in &ids {
                                for b in &ids {
                                    if a != b {
                                        f.cut.insert((Node::Broker(*a), Node::Broker(*b)));
                                    }
                                }
                            }
                        });
                    }
                    "partitioned every broker from every other (no majority)".into()
                }
                Scenario::OneWayPartition => {
                    let victim = leader.unwrap_or(random);
                    if let Some(p) = &cluster.proxies {
                        p.update(|f| {
                            for other in ids.iter().filter(|id| **id != victim) {
                                f.cut.insert((Node::Broker(victim), Node::Broker(*other)));
                            }
                        });
                    }
                    format!(
                        "cut broker {victim}'s (leader {leader:?}) traffic to the others, one way"
                    )
                }
                Scenario::SlowNetwork => {
                    if let Some(p) = &cluster.proxies {
                        p.set(Faults {
                            latency: Duration::from_millis(40),
                            loss: 0.05,
                            ..Faults::default()
                        });
                    }
                    "40 ms latency and 5 % loss on every link".into()
                }
                Scenario::Pause => {
                    cluster.pause(random);
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    cluster.resume(random);
                    format!("SIGSTOP broker {random} (leader {leader:?}) for 1.5 s")
                }
                Scenario::NatsKill | Scenario::EdgeKill => "nothing (not a Raft scenario)".into(),
            }
        }
    }
}

/// Undoes network faults and restarts anything stopped.
pub(super) async fn heal(system: &mut System) {
    match system {
        System::Raft { cluster } => {
            if let Some(p) = &cluster.proxies {
                p.heal();
            }
            for id in 1..=cluster.slots.len() as u64 {
                cluster.resume(id);
                if !cluster.running(id) {
                    cluster.start_node(id);
                }
            }
        }
        System::Nats { .. } => {}
    }
}

pub(super) fn current_leader(cluster: &BrokerCluster) -> Option<u64> {
    cluster.slots.iter().find_map(|s| {
        let status = cluster.status(s.id)?;
        (status.get("state")?.as_str()? == "Leader").then_some(s.id)
    })
}

/// Records which broker says it leads in which term, every 100 ms.
pub(super) async fn watch_leaders(
    brokers: Vec<(u64, std::net::SocketAddr)>,
    recorder: Recorder,
    stopping: Arc<AtomicBool>,
) {
    let mut seen: HashMap<(u64, u64), ()> = HashMap::new();
    while !stopping.load(Ordering::Relaxed) {
        for (id, http) in &brokers {
            let http = *http;
            let status = tokio::task::spawn_blocking(move || crate::http_get(http, "/status"))
                .await
                .ok()
                .flatten();
            let Some((200, body)) = status else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&body) else {
                continue;
            };
            if v["state"] == "Leader"
                && let Some(term) = v["term"].as_u64()
                && seen.insert((*id, term), ()).is_none()
            {
                recorder.record(Event::LeaderObserved {
                    node: *id,
                    term,
                    at: recorder.now(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
