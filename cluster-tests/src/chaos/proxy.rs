//! A fault-injecting UDP proxy in front of every broker, for network faults without root.
//!
//! ```text
//!   broker j (bound at R_j) ──dials P_k──▶ proxy_k (listens on P_k) ──flow socket──▶ R_k
//!   edges ──dial P_k──▶ proxy_k ──▶ R_k          (replies go back the same way)
//! ```
//!
//! Brokers advertise and dial the proxies' addresses (`P_k`), so all QUIC traffic to broker
//! `k` passes through `proxy_k`. A packet's sender is known by its source address: a broker
//! dials from its own endpoint (`R_j`), anything else is an edge. Every packet in either
//! direction is judged against the current [`Faults`]: dropped (partition, one-way partition,
//! loss) or delayed (latency) per link. The proxies run on their own thread and runtime, so
//! they work the same from tests and from the `plaza-chaos` binary.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// A broker, by id.
    Broker(u64),
    /// An edge (or any other client).
    Edge,
}

/// The network faults in force.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Directed links that drop everything: `(from, to)`.
    pub cut: HashSet<(Node, Node)>,
    /// Extra one-way delay on every packet.
    pub latency: Duration,
    /// Probability of dropping any packet (0.0–1.0).
    pub loss: f64,
}

impl Faults {
    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[Node], b: &[Node]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    fn verdict(&self, from: Node, to: Node) -> Option<Duration> {
        if self.cut.contains(&(from, to)) {
            return None;
        }
        if self.loss > 0.0 && rand::random::<f64>() < self.loss {
            return None;
        }
        Some(self.latency)
    }
}

/// The proxies of one cluster and the faults they apply. Dropping it stops them.
pub struct ProxyNet {
    faults: Arc<Mutex<Faults>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ProxyNet {
    /// Starts one proxy per `(broker id, public address, real address)`, on a thread of its
    /// own (so it can be started and dropped from sync or async code alike).
    pub fn start(brokers: &[(u64, SocketAddr, SocketAddr)]) -> std::io::Result<Self> {
        let faults = Arc::new(Mutex::new(Faults::default()));
        let known: Arc<HashMap<SocketAddr, u64>> =
            Arc::new(brokers.iter().map(|(id, _, real)| (*real, *id)).collect());
        let mut sockets = Vec::new();
        for (id, public, real) in brokers {
            let socket = std::net::UdpSocket::bind(public)?;
            socket.set_nonblocking(true)?;
            sockets.push((*id, *real, socket));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&faults);
        let thread = std::thread::Builder::new()
            .name("plaza-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (id, real, socket) in sockets {
                        let Ok(socket) = UdpSocket::from_std(socket) else {
                            continue;
                        };
                        tokio::spawn(serve(
                            Arc::new(socket),
                            id,
                            real,
                            Arc::clone(&known),
                            Arc::clone(&shared),
                        ));
                    }
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            faults,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Replaces the faults in force.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Changes the faults in force.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }
}

/// One proxy: packets from clients on `public` go to `real` through one flow socket per
/// client; the flow's replies go back from `public`.
async fn serve(
    public: Arc<UdpSocket>,
    me: u64,
    real: SocketAddr,
    known: Arc<HashMap<SocketAddr, u64>>,
    faults: Arc<Mutex<Faults>>,
) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = public.recv_from(&mut buf).await else {
            continue;
        };
        let sender = known.get(&from).map_or(Node::Edge, |id| Node::Broker(*id));
        let flow = match flows.get(&from) {
            Some(flow) => Arc::clone(flow),
            None => {
                let Ok(flow) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if flow.connect(real).await.is_err() {
                    continue;
                }
                let flow = Arc::new(flow);
                tokio::spawn(replies(
                    Arc::clone(&flow),
                    Arc::clone(&public),
                    from,
                    (Node::Broker(me), sender),
                    Arc::clone(&faults),
                ));
                flows.insert(from, Arc::clone(&flow));
                flow
            }
        };
        let verdict = faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .verdict(sender, Node::Broker(me));
        forward(verdict, buf[..len].to_vec(), move |packet| async move {
            let _ = flow.send(&packet).await;
        })
        .await;
    }
}

/// Carries the upstream's replies on one flow back to the client.
async fn replies(
    flow: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    (me, peer): (Node, Node),
    faults: Arc<Mutex<Faults>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(len) = flow.recv(&mut buf).await else {
            // The upstream is down (ICMP refused): keep the flow; it may come back.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let verdict = faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .verdict(me, peer);
        let public = Arc::clone(&public);
        forward(verdict, buf[..len].to_vec(), move |packet| async move {
            let _ = public.send_to(&packet, client).await;
        })
        .await;
    }
}

/// Sends `packet` now, later (without holding up the packets behind it), or never.
async fn forward<F, Fut>(verdict: Option<Duration>, packet: Vec<u8>, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match verdict {
        None => {}
        Some(delay) if delay.is_zero() => send(packet).await,
        Some(delay) => {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(packet).await;
            });
        }
    }
}
