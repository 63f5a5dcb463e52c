//! The random traffic of the property tests: which rooms and edges exist, and the operations
//! drawn over them, weighted so leases overlap, members move between edges and rooms are
//! collected and recreated within one run.

use proptest::prelude::*;

pub(super) const ROOMS: [&str; 8] = [
    "chat:a", "chat:b", "small:a", "small:b", "none:a", "counts:a", "off:a", "quiet:a",
];
pub(super) const EDGES: [&str; 3] = ["e0", "e1", "e2"];

/// One step of a run; rooms, edges, clients and users are indexes into small fixed sets.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Publish {
        room: usize,
        idem: Option<u8>,
    },
    Join {
        edge: usize,
        room: usize,
        client: u8,
        user: u8,
    },
    Leave {
        room: usize,
        client: u8,
    },
    Attach {
        edge: usize,
    },
    Renew {
        edge: usize,
    },
    Detach {
        edge: usize,
    },
    Tick,
    Advance(u64),
    Read {
        room: usize,
        since: Since,
        limit: Option<u32>,
    },
}

/// The `since` of a history read.
#[derive(Debug, Clone)]
pub(super) enum Since {
    Latest,
    /// One of the positions seen so far (acks and queries), by index modulo their number.
    Known(usize),
    Raw(u64),
    OtherEpoch(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    let edge = 0..EDGES.len();
    let since = prop_oneof![
        Just(Since::Latest),
        any::<usize>().prop_map(Since::Known),
        (0u64..40).prop_map(Since::Raw),
        (0u64..40).prop_map(Since::OtherEpoch),
    ];
    prop_oneof![
        5 => (room.clone(), proptest::option::weighted(0.4, 0u8..4))
            .prop_map(|(room, idem)| Op::Publish { room, idem }),
        4 => (edge.clone(), room.clone(), 0u8..3, 0u8..3)
            .prop_map(|(edge, room, client, user)| Op::Join { edge, room, client, user }),
        2 => (room.clone(), 0u8..3).prop_map(|(room, client)| Op::Leave { room, client }),
        3 => edge.clone().prop_map(|edge| Op::Attach { edge }),
        2 => edge.clone().prop_map(|edge| Op::Renew { edge }),
        1 => edge.prop_map(|edge| Op::Detach { edge }),
        3 => Just(Op::Tick),
        3 => prop_oneof![4 => 0u64..700, 1 => 1500u64..3000].prop_map(Op::Advance),
        4 => (room, since, proptest::option::of(0u32..4))
            .prop_map(|(room, since, limit)| Op::Read { room, since, limit }),
    ]
}

/// A run: up to 120 steps.
pub(super) fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..120)
}
