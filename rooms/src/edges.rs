//! Edge leases: which edges are alive, until when, and which members each one owns.
//!
//! An edge's members live exactly as long as its lease. The member index per edge and the
//! expiry queue ordered by deadline mean expiring or detaching an edge touches only that
//! edge's members, never every room.

use std::collections::{BTreeMap, BTreeSet};

use plaza_proto::{ClientId, EdgeId, RoomName};
use serde::{Deserialize, Serialize};

/// One attached edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lease {
    /// Lease length granted at attach; every renewal extends the lease by this much.
    lease_ms: u64,
    /// The lease is over once the clock reaches this.
    expires: u64,
    /// The members this edge joined, ordered so leave events come out deterministically.
    members: BTreeSet<(RoomName, ClientId)>,
}

/// Every attached edge, with an expiry queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Edges {
    by_id: BTreeMap<EdgeId, Lease>,
    /// `(expires, edge)` for every entry of `by_id`, so `Tick` finds expired edges in order.
    expiry: BTreeSet<(u64, EdgeId)>,
}

impl Edges {
    /// Grants or refreshes `edge`'s lease; an already attached edge keeps its members.
    pub(super) fn attach(&mut self, edge: EdgeId, lease_ms: u64, now: u64) {
        let expires = now.saturating_add(lease_ms);
        match self.by_id.get_mut(&edge) {
            Some(lease) => {
                self.expiry.remove(&(lease.expires, edge.clone()));
                lease.lease_ms = lease_ms;
                lease.expires = expires;
            }
            None => {
                let lease = Lease {
                    lease_ms,
                    expires,
                    members: BTreeSet::new(),
                };
                self.by_id.insert(edge.clone(), lease);
            }
        }
        self.expiry.insert((expires, edge));
    }

    /// Extends a live lease by its length. Returns false (changing nothing) if `edge` is not
    /// attached or its lease already ran out: its members are gone or about to be, so a
    /// renewal must not resurrect them.
    pub(super) fn renew(&mut self, edge: &EdgeId, now: u64) -> bool {
        let Some(lease) = self.by_id.get_mut(edge) else {
            return false;
        };
        if now >= lease.expires {
            return false;
        }
        self.expiry.remove(&(lease.expires, edge.clone()));
        lease.expires = now.saturating_add(lease.lease_ms);
        self.expiry.insert((lease.expires, edge.clone()));
        true
    }

    /// Whether `edge` holds a lease that has not run out at `now`.
    pub(super) fn is_live(&self, edge: &EdgeId, now: u64) -> bool {
        self.by_id.get(edge).is_some_and(|l| now < l.expires)
    }

    /// When `edge`'s lease runs out, if it is attached.
    pub(super) fn expires(&self, edge: &EdgeId) -> Option<u64> {
        self.by_id.get(edge).map(|l| l.expires)
    }

    /// Records that `edge` owns `client` in `room`.
    pub(super) fn add_member(&mut self, edge: &EdgeId, room: &RoomName, client: &ClientId) {
        if let Some(lease) = self.by_id.get_mut(edge) {
            lease.members.insert((room.clone(), client.clone()));
        }
    }

    /// Forgets that `edge` owns `client` in `room`.
    pub(super) fn remove_member(&mut self, edge: &EdgeId, room: &RoomName, client: &ClientId) {
        if let Some(lease) = self.by_id.get_mut(edge) {
            lease.members.remove(&(room.clone(), client.clone()));
        }
    }

    /// Detaches `edge`; returns the members it owned (empty if it was not attached).
    pub(super) fn remove(&mut self, edge: &EdgeId) -> BTreeSet<(RoomName, ClientId)> {
        match self.by_id.remove(edge) {
            Some(lease) => {
                self.expiry.remove(&(lease.expires, edge.clone()));
                lease.members
            }
            None => BTreeSet::new(),
        }
    }

    /// The edge whose lease ran out first, if any ran out by `now`.
    pub(super) fn next_expired(&self, now: u64) -> Option<EdgeId> {
        self.expiry
            .first()
            .filter(|(expires, _)| *expires <= now)
            .map(|(_, e)| e.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_lease_outlives_its_first_deadline() {
        let mut edges = Edges::default();
        let e = EdgeId::new("e");
        edges.attach(e.clone(), 100, 0);
        assert!(edges.renew(&e, 90));
        assert!(edges.is_live(&e, 150));
        assert_eq!(edges.next_expired(150), None);
        assert_eq!(edges.next_expired(190), Some(e));
    }

    #[test]
    fn an_expired_lease_cannot_be_renewed() {
        let mut edges = Edges::default();
        let e = EdgeId::new("e");
        edges.attach(e.clone(), 100, 0);
        assert!(!edges.renew(&e, 100));
        assert!(!edges.is_live(&e, 100));
        assert!(!edges.renew(&EdgeId::new("unknown"), 0));
    }

    #[test]
    fn reattaching_keeps_members_and_removing_returns_them() {
        let mut edges = Edges::default();
        let (e, room, client) = (
            EdgeId::new("e"),
            RoomName::new("r").unwrap(),
            ClientId::new("c"),
        );
        edges.attach(e.clone(), 100, 0);
        edges.add_member(&e, &room, &client);
        edges.attach(e.clone(), 50, 10);
        assert_eq!(edges.expires(&e), Some(60));
        assert_eq!(
            edges.remove(&e).into_iter().collect::<Vec<_>>(),
            [(room, client)]
        );
        assert_eq!(edges.next_expired(u64::MAX), None);
        assert_eq!(edges.expires(&e), None);
    }
}
