//! Raft nodes over real QUIC sockets on 127.0.0.1: each node has its own endpoint (port 0) and
//! its own certificate from one generated cluster CA.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plaza_broker::raft::{
    BrokerNode, NodeId, ProposeError, QuicTransport, RaftNode, RaftNodeConfig, RaftRpc,
    RaftRpcReply, Storage,
};
use plaza_net::frame::CLOSE_SHUTDOWN;
use plaza_net::tls::{self, ClusterTls, GeneratedCluster};
use plaza_net::{QuicOptions, RpcHandler, RpcService, endpoint, serve_connections};
use plaza_proto::links::ALPN_RAFT;
use plaza_rooms::{Applied, Command};
use quinn::Endpoint;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) fn node_name(id: NodeId) -> String {
    format!("broker-{id}")
}

/// A CA and certificates for nodes `1..=n` (and a spare, `n + 1`, for test clients).
pub(crate) fn generate_tls(n: u64) -> GeneratedCluster {
    let names: Vec<(String, NodeId)> = (1..=n + 1).map(|id| (node_name(id), id)).collect();
    let nodes: Vec<(&str, tls::NodeRole)> = names
        .iter()
        .map(|(name, id)| (name.as_str(), tls::NodeRole::Broker(*id)))
        .collect();
    tls::generate("test", &nodes, &[]).unwrap()
}

/// Serves a node's peer RPCs — Raft's and forwarded writes/read indexes — as a broker's
/// `PeerHandler` does (which also delivers event broadcasts to edges; these tests have none).
#[derive(Clone)]
pub(crate) struct RaftHandler {
    node: RaftNode,
}

impl RpcHandler for RaftHandler {
    type Request = RaftRpc;
    type Reply = RaftRpcReply;

    async fn handle(&self, request: RaftRpc) -> RaftRpcReply {
        self.node.serve(request).await
    }
}

/// Opens a node's endpoint on loopback, serving Raft.
pub(crate) fn raft_endpoint(tls: &ClusterTls, options: &QuicOptions) -> Endpoint {
    endpoint(tls, "127.0.0.1:0".parse().unwrap(), options, &[ALPN_RAFT]).unwrap()
}

/// One broker: its Raft node, its endpoint and the task serving Raft on it.
pub(crate) struct QuicNode {
    pub node: RaftNode,
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    cancel: CancellationToken,
    server: JoinHandle<()>,
}

impl QuicNode {
    pub(crate) async fn start(id: NodeId, tls: &ClusterTls, config: RaftNodeConfig) -> Self {
        let options = QuicOptions::default();
        let endpoint = raft_endpoint(tls, &options);
        let addr = endpoint.local_addr().unwrap();
        let transport = QuicTransport::new(endpoint.clone(), tls, options.clone()).unwrap();
        let node = RaftNode::start(id, config, Storage::Memory, transport)
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let handler = RaftHandler { node: node.clone() };
        let server = tokio::spawn(serve_connections(
            endpoint.clone(),
            RpcService::new(ALPN_RAFT, handler, options),
            cancel.clone(),
        ));
        Self {
            node,
            endpoint,
            addr,
            cancel,
            server,
        }
    }

    /// Stops serving, closes the endpoint (peers see their connections closed) and stops Raft,
    /// as a broker process that dies would.
    pub(crate) async fn kill(self) {
        self.cancel.cancel();
        self.endpoint.close(CLOSE_SHUTDOWN, b"killed");
        self.node.shutdown().await;
        tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("server task did not stop")
            .unwrap();
    }
}

pub(crate) struct QuicCluster {
    pub tls: GeneratedCluster,
    pub nodes: BTreeMap<NodeId, QuicNode>,
}

impl QuicCluster {
    /// Starts nodes `1..=n` on their own endpoints and initializes them as one cluster.
    pub(crate) async fn start(n: u64, config: RaftNodeConfig) -> Self {
        let tls = generate_tls(n);
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let identity = tls.identity(&node_name(id)).unwrap();
            nodes.insert(id, QuicNode::start(id, &identity, config.clone()).await);
        }
        let members: BTreeMap<NodeId, BrokerNode> = nodes
            .iter()
            .map(|(id, n)| (*id, BrokerNode::new(n.addr.to_string())))
            .collect();
        nodes[&1].node.initialize(members).await.unwrap();
        let cluster = Self { tls, nodes };
        cluster.leader(Duration::from_secs(10)).await;
        cluster
    }

    pub(crate) async fn leader(&self, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(node) = self.leader_node() {
                return node.id();
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn leader_node(&self) -> Option<&RaftNode> {
        self.nodes.values().map(|n| &n.node).find(|n| n.is_leader())
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

    /// Waits until every live node has applied everything any of them has.
    pub(crate) async fn converge(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let applied: Vec<(NodeId, u64)> = self
                .nodes
                .iter()
                .map(|(id, n)| (*id, n.node.applied_index()))
                .collect();
            let target = applied.iter().map(|a| a.1).max().unwrap_or(0);
            let done = applied.iter().all(|a| a.1 >= target)
                && self.nodes.values().all(|n| {
                    n.node.raft().metrics().borrow().last_log_index.unwrap_or(0) <= target
                });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.kill().await;
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}
