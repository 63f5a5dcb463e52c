//! A 3-node Raft cluster in one process, over the in-process transport.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plaza_broker::raft::{
    BrokerNode, InProcessNetwork, NodeId, ProposeError, RaftNode, RaftNodeConfig, Storage,
};
use plaza_proto::cluster::PublishAck;
use plaza_proto::{Payload, RoomName};
use plaza_rooms::config::NamespaceOptions;
use plaza_rooms::config::RoomsConfig;
use plaza_rooms::{Applied, Command, RoomsState};

/// Fast timers and a history big enough to hold every publication a test makes.
pub(crate) fn config() -> RaftNodeConfig {
    let defaults = RaftNodeConfig::default();
    RaftNodeConfig {
        // No background ticks: states compared across nodes must not move on their own.
        tick: None,
        raft: openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..defaults.raft.clone()
        },
        rooms: RoomsConfig {
            defaults: NamespaceOptions {
                history_size: 100_000,
                ..NamespaceOptions::default()
            },
            ..RoomsConfig::default()
        },
        ..defaults
    }
}

pub(crate) fn members(ids: &[NodeId]) -> BTreeMap<NodeId, BrokerNode> {
    ids.iter()
        .map(|id| (*id, BrokerNode::new(format!("node-{id}"))))
        .collect()
}

pub(crate) fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

pub(crate) fn publish(room_name: &str, data: &str, idem: Option<String>) -> Command {
    Command::Publish {
        room: room(room_name),
        data: Payload::from_json(data).unwrap(),
        from: None,
        idem,
    }
}

pub(crate) struct Cluster {
    pub net: InProcessNetwork,
    pub nodes: BTreeMap<NodeId, RaftNode>,
    pub config: RaftNodeConfig,
    /// One data dir per node when on disk; kept alive with the cluster.
    pub dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts nodes `1..=n` and initializes them as one cluster; returns once a leader exists.
    pub(crate) async fn start(n: u64, config: RaftNodeConfig, on_disk: bool) -> Self {
        let mut cluster = Self {
            net: InProcessNetwork::new(),
            nodes: BTreeMap::new(),
            config,
            dir: on_disk.then(|| tempfile::tempdir().unwrap()),
        };
        let ids: Vec<NodeId> = (1..=n).collect();
        for id in &ids {
            cluster.start_node(*id).await;
        }
        cluster.nodes[&1].initialize(members(&ids)).await.unwrap();
        cluster.leader(Duration::from_secs(10)).await;
        cluster
    }

    pub(crate) fn data_dir(&self, id: NodeId) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.path().join(format!("node-{id}")))
    }

    /// Starts (or restarts, from its data dir) node `id` and connects it.
    pub(crate) async fn start_node(&mut self, id: NodeId) -> RaftNode {
        let node = self.start_unconnected(id).await;
        self.connect(node.clone());
        node
    }

    /// Starts node `id` without making it reachable yet (see [`Self::connect`]).
    pub(crate) async fn start_unconnected(&self, id: NodeId) -> RaftNode {
        let storage = match self.data_dir(id) {
            Some(dir) => Storage::Dir(dir),
            None => Storage::Memory,
        };
        RaftNode::start(id, self.config.clone(), storage, self.net.transport(id))
            .await
            .unwrap()
    }

    /// Makes a started node reachable and part of the cluster's live nodes.
    pub(crate) fn connect(&mut self, node: RaftNode) {
        self.net.register(node.id(), node.raft().clone());
        self.nodes.insert(node.id(), node);
    }

    /// Stops node `id` as if its process died.
    pub(crate) async fn kill(&mut self, id: NodeId) {
        self.net.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The id of the node every live node agrees leads, waiting up to `timeout`.
    pub(crate) async fn leader(&self, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            for (id, node) in &self.nodes {
                if node.is_leader() {
                    return *id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn leader_node(&self) -> Option<&RaftNode> {
        self.nodes.values().find(|n| n.is_leader())
    }

    /// Proposes on whichever node leads, retrying across elections until `timeout`.
    pub(crate) async fn propose_one(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Applied, ProposeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let outcome = match self.leader_node() {
                Some(node) => node.propose_one(command.clone()).await,
                None => Err(ProposeError::Unavailable("no leader".into())),
            };
            match outcome {
                Ok(result) => return Ok(result.expect("command refused")),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub(crate) async fn publish(
        &self,
        room_name: &str,
        data: &str,
        idem: Option<String>,
    ) -> PublishAck {
        match self
            .propose_one(publish(room_name, data, idem), Duration::from_secs(10))
            .await
            .unwrap()
        {
            Applied::Published(ack) => ack,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Waits until every live node has applied everything the leader has.
    pub(crate) async fn converge(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let target = self
                .nodes
                .values()
                .map(|n| n.applied_index())
                .max()
                .unwrap_or(0);
            let done = self.nodes.values().all(|n| n.applied_index() >= target)
                && self
                    .nodes
                    .values()
                    .all(|n| n.raft().metrics().borrow().last_log_index.unwrap_or(0) <= target);
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge: {:?}",
                self.nodes
                    .iter()
                    .map(|(id, n)| (*id, n.applied_index()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every live node's applied state.
    pub(crate) fn states(&self) -> BTreeMap<NodeId, RoomsState> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.read(|r| r.state().clone()).unwrap()))
            .collect()
    }

    pub(crate) async fn shutdown(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

/// Asserts every live node holds the same state and returns it.
pub(crate) fn assert_same_state(cluster: &Cluster) -> RoomsState {
    let states = cluster.states();
    let mut iter = states.iter();
    let (first_id, first) = iter.next().unwrap();
    for (id, state) in iter {
        assert_eq!(state, first, "node {id} differs from node {first_id}");
    }
    first.clone()
}
