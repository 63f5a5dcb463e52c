//! The edge's node: the state every session and API request of one edge shares, and its link to
//! the broker tier.
//!
//! ```text
//!   session/ (WebSocket) ─┐                       ┌─▶ EdgeLink (plaza-backend) ═▶ broker tier
//!   api/ (HTTP)          ─┴─▶ Node::publish, … ───┤     (calls.rs: timeout, metrics, size check,
//!                                                 │      the one BrokerError → ErrorCode mapping)
//!   attach.rs: LinkEvents ─▶ Hub::dispatch ─▶ outboxes; link lost ─▶ close clients, re-attach
//! ```
//!
//! - `calls.rs`: every broker call either front end makes, each through one wrapper.
//! - `attach.rs`: feeding the link's events to the hub and re-attaching after a broker failure.
//!
//! The link is swapped under a `std::sync::RwLock` that is never held across an `.await`:
//! readers clone the current link (a cheap handle) and call it.

mod attach;
pub(crate) mod calls;
pub(crate) mod state;
mod users;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use metrics_exporter_prometheus::PrometheusHandle;
use plaza_backend::EdgeLink;
use plaza_rooms::config::Namespaces;
use tokio_util::task::TaskTracker;

pub(crate) use attach::supervise;

use crate::auth::Verifier;
use crate::config::EdgeConfig;
use crate::ephemeral::RoomEphemeralRate;
use crate::hub::Hub;
use crate::limits::{ConnectionRate, FailedAuth, OriginPolicy, PublishBudget};
use crate::users::Users;

/// What every request and session of one edge shares. Held in an `Arc`.
pub struct Node<L: EdgeLink> {
    /// The validated configuration.
    pub config: EdgeConfig,
    /// Resolved namespace options.
    pub namespaces: Namespaces,
    /// Token verifier.
    pub verifier: Verifier,
    /// Local fan-out of room events to this edge's subscribers.
    pub hub: Hub,
    /// Connections by user.
    pub users: Users,
    /// Browser origins allowed to connect.
    pub origins: OriginPolicy,
    /// New connections per client IP.
    pub connection_rate: ConnectionRate,
    /// Publication bytes per second per user.
    pub publish_budget: PublishBudget,
    /// Ephemeral publications per second per room.
    pub ephemeral_rooms: RoomEphemeralRate,
    /// Conflation of state rooms' changes (namespaces with `state.conflate_per_second`).
    pub(crate) conflator: crate::state::Conflator,
    /// Failed server API key attempts per client IP.
    pub failed_auth: FailedAuth,
    /// This edge's id (prefix of client ids).
    pub edge_id: String,
    /// Set when the edge starts draining: sessions disconnect over the drain window.
    pub drain: Drain,
    /// Wakes sessions when their deadlines are due.
    pub(crate) timers: crate::timers::Timers,
    /// Tracks session tasks so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The dev-mode token secret, only in `--dev`.
    pub dev_secret: Option<Vec<u8>>,
    /// The current broker link; replaced when the edge re-attaches after losing it.
    link: RwLock<L>,
    /// Whether the link is attached (false from losing it until re-attached).
    attached: AtomicBool,
}

impl<L: EdgeLink> Node<L> {
    /// A node on a freshly attached `link`.
    pub fn new(
        config: EdgeConfig,
        verifier: Verifier,
        link: L,
        edge_id: String,
        metrics: PrometheusHandle,
        dev_secret: Option<Vec<u8>>,
    ) -> Self {
        Self {
            namespaces: config.rooms.namespaces(),
            verifier,
            hub: Hub::with_user_debounce(config.client.user_presence_debounce),
            users: Default::default(),
            origins: OriginPolicy::new(&config.http.allowed_origins),
            connection_rate: ConnectionRate::new(&config.limits),
            publish_budget: PublishBudget::new(&config.limits),
            ephemeral_rooms: RoomEphemeralRate::new(&config.limits),
            conflator: Default::default(),
            failed_auth: FailedAuth::new(
                config.api.max_failed_auth_per_ip,
                config.api.failed_auth_window,
                config.limits.ipv6_prefix,
            ),
            edge_id,
            drain: Drain::default(),
            timers: crate::timers::Timers::default(),
            sessions: TaskTracker::new(),
            metrics,
            dev_secret,
            link: RwLock::new(link),
            attached: AtomicBool::new(true),
            config,
        }
    }

    /// The current broker link (a cheap clone).
    pub fn link(&self) -> L {
        // A panic while holding the lock cannot leave a half-written link (it is one
        // assignment), so a poisoned lock is safe to keep using.
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts draining (once; later calls change nothing): every session is woken to pick
    /// its moment in the drain window.
    pub fn start_drain(&self) {
        if !self
            .drain
            .started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.timers.wake_all();
        }
    }

    /// Whether the edge accepts new connections.
    pub fn ready(&self) -> bool {
        !self.drain.started() && self.backend_up()
    }

    /// Whether the broker tier is usable: attached, and the link itself ready.
    pub fn backend_up(&self) -> bool {
        self.attached.load(Ordering::Relaxed) && self.link().ready()
    }

    /// The link was lost: calls fail fast as unavailable until [`Node::reattached`].
    fn detached(&self) {
        self.attached.store(false, Ordering::Relaxed);
    }

    /// Re-attached on a fresh `link`: every subscribed connection is closed (reconnectable, so
    /// clients recover through another edge or after re-attach, since the old link's
    /// subscriptions are gone), the hub forgets its rooms, and calls go to `link`.
    fn reattached(&self, link: L) {
        self.hub.reset();
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link;
        self.attached.store(true, Ordering::Relaxed);
    }
}

/// The edge's drain signal: a flag every session reads when its task runs
/// ([`Node::start_drain`] wakes them all).
#[derive(Debug, Default)]
pub struct Drain {
    started: std::sync::atomic::AtomicBool,
}

impl Drain {
    /// Whether draining has started.
    pub fn started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
    }
}
