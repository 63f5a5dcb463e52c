//! Fuzz target: what a peer's Raft RPC becomes on arrival — the `plaza-raft/1` stream framing
//! (`plaza_net::frame`: magic · version · length-prefixed postcard) around `RaftRpc`, and the
//! reply framing (`decode_reply`) around `RaftRpcReply`.
//!
//! `read_request` itself is async (it reads the QUIC stream); its pure part — the header check
//! and exactly one frame filling the rest — is replayed here on the same public pieces
//! (`MAGIC`, `PROTOCOL_VERSION`, `codec::read_frame`); replies go through the real
//! `decode_reply`.
//! Inputs: arbitrary bytes, and valid requests/replies of every variant (votes, append-entries
//! with blank, membership and batch entries, snapshot chunks, forwarded commands, broadcasts)
//! mutated: bytes flipped, inserted, removed, truncated, the length prefix replaced.
//! Properties: never panics; no allocation out of proportion to the input; valid frames
//! round-trip; whatever decodes re-encodes to bytes that decode to the same bytes again.

#[path = "../../proto/tests/support/fuzz.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use plaza_broker::raft::types::{Batch, BrokerNode, Request};
use plaza_broker::raft::{Committed, ProposeError, RaftRpc, RaftRpcReply};
use plaza_net::frame::{self, FrameError, MAGIC, PROTOCOL_VERSION, STATUS_OK};
use plaza_proto::cluster::LinkEvent;
use plaza_proto::codec::{self, MAX_FRAME};
use plaza_proto::{ClientId, EdgeId, Member, Payload, RoomName, UserId};
use plaza_rooms::Command;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde::Serialize;
use serde::de::DeserializeOwned;
use support::fuzz;

/// The pure part of `plaza_net::frame::read_request`: header, then exactly one frame.
fn parse_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, String> {
    let Some((header, rest)) = bytes.split_at_checked(MAGIC.len() + 2) else {
        return Err("no header".into());
    };
    if header[..MAGIC.len()] != MAGIC {
        return Err("bad magic".into());
    }
    if u16::from_be_bytes([header[4], header[5]]) != PROTOCOL_VERSION {
        return Ok(None);
    }
    match codec::read_frame::<T>(rest).map_err(|e| e.to_string())? {
        Some((value, used)) if used == rest.len() => Ok(Some(value)),
        Some(_) => Err("bytes after the frame".into()),
        None => Err("truncated".into()),
    }
}

/// Whatever decoded re-encodes to bytes that decode and re-encode to the same bytes.
fn stable<T: Serialize + DeserializeOwned>(value: &T) -> TestCaseResult {
    let once = codec::encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = codec::decode(&once).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let twice = codec::encode(&back).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(once, twice);
    Ok(())
}

fn check_request_bytes(bytes: &[u8]) -> TestCaseResult {
    if let Ok(Some(rpc)) = parse_request::<RaftRpc>(bytes) {
        stable(&rpc)?;
    }
    if let Ok(rpc) = codec::decode::<RaftRpc>(bytes) {
        stable(&rpc)?;
    }
    Ok(())
}

fn check_reply_bytes(bytes: &[u8]) -> TestCaseResult {
    match frame::decode_reply::<RaftRpcReply>(bytes) {
        Ok(reply) => stable(&reply)?,
        Err(
            FrameError::UnsupportedVersion { .. } | FrameError::Malformed(_) | FrameError::Codec(_),
        ) => {}
        Err(e) => prop_assert!(false, "decode_reply answered {e:?}"),
    }
    if let Ok(reply) = codec::decode::<RaftRpcReply>(bytes) {
        stable(&reply)?;
    }
    Ok(())
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn room(s: &str) -> RoomName {
    RoomName::new(s).expect("valid")
}

fn commands(n: u64) -> Vec<Command> {
    let member = Member {
        client: ClientId::new(format!("c{n}")),
        user: UserId::new("u"),
        info: Some(Payload::from_json(r#"{"n":[1,2]}"#).expect("json")),
    };
    vec![
        Command::Publish {
            room: room("chat:a"),
            data: Payload::from_json(r#"{"text":"hi"}"#).expect("json"),
            from: None,
            idem: Some(format!("k{n}")),
        },
        Command::Join {
            edge: EdgeId::new("e1"),
            room: room("chat:b"),
            member,
        },
        Command::Leave {
            room: room("chat:b"),
            client: ClientId::new("c1"),
        },
        Command::AttachEdge {
            edge: EdgeId::new("e2"),
            lease_ms: n,
        },
    ]
}

/// A valid request of each kind, varied by the numbers.
fn request(kind: u8, term: u64, node: u64, index: u64, data: Vec<u8>) -> RaftRpc {
    let vote = Vote::new(term, node);
    let id = log_id(term, node, index);
    let members = Membership::new(
        vec![BTreeSet::from([1, 2, node])],
        BTreeMap::from([
            (1, BrokerNode::new("a:1")),
            (2, BrokerNode::new("b:2")),
            (node, BrokerNode::new("c:3")),
        ]),
    );
    match kind % 6 {
        0 => RaftRpc::Vote(VoteRequest::new(vote, Some(id))),
        1 => RaftRpc::AppendEntries(AppendEntriesRequest {
            vote,
            prev_log_id: Some(id),
            entries: vec![
                Entry {
                    log_id: id,
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: id,
                    payload: EntryPayload::Membership(members),
                },
                Entry {
                    log_id: id,
                    payload: EntryPayload::Normal(Request::Genesis {
                        epoch: format!("{term:x}"),
                    }),
                },
                Entry {
                    log_id: id,
                    payload: EntryPayload::Normal(Request::Batch(Batch {
                        now_ms: index,
                        commands: commands(index),
                    })),
                },
            ],
            leader_commit: Some(id),
        }),
        2 => RaftRpc::InstallSnapshot(InstallSnapshotRequest {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(id),
                last_membership: StoredMembership::new(Some(id), members),
                snapshot_id: format!("{term}-{index}"),
            },
            offset: index,
            data,
            done: term.is_multiple_of(2),
        }),
        3 => RaftRpc::Forward(commands(index)),
        4 => RaftRpc::ReadIndex,
        _ => RaftRpc::Broadcast(LinkEvent::DisconnectUser {
            user: UserId::new("u"),
            reason: "bye".into(),
        }),
    }
}

fn reply(kind: u8, term: u64, node: u64, index: u64) -> RaftRpcReply {
    let vote = Vote::new(term, node);
    match kind % 9 {
        0 => RaftRpcReply::Vote(Ok(VoteResponse::new(
            vote,
            Some(log_id(term, node, index)),
            term.is_multiple_of(2),
        ))),
        1 => RaftRpcReply::AppendEntries(Ok(AppendEntriesResponse::Success)),
        2 => RaftRpcReply::AppendEntries(Ok(AppendEntriesResponse::Conflict)),
        3 => RaftRpcReply::InstallSnapshot(Ok(InstallSnapshotResponse { vote })),
        4 => RaftRpcReply::Forwarded(Ok(Committed {
            index,
            results: Vec::new(),
        })),
        5 => RaftRpcReply::Forwarded(Err(ProposeError::NotLeader {
            leader: Some(node),
            node: Some(BrokerNode::new("a:1")),
        })),
        6 => RaftRpcReply::ReadIndex(Ok(index)),
        7 => RaftRpcReply::Delivered(index as usize),
        _ => RaftRpcReply::Refused(format!("no {term}")),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    /// Replace the frame's length prefix (after the 6- or 5-byte header).
    Prefix(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..10)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (
            5usize..=6,
            prop_oneof![Just(u32::MAX), Just(MAX_FRAME as u32 + 1), any::<u32>()]
        )
            .prop_map(|(at, len)| Mutation::Prefix(at, len)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip(i, x) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= x;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Remove(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Mutation::Prefix(at, len) if bytes.len() >= at + 4 => {
                bytes[*at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

#[test]
fn raft_frames_survive_arbitrary_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        prop::collection::vec(0u8..8, 0..96),
        // Behind a valid request or reply header.
        (prop::bool::ANY, prop::collection::vec(any::<u8>(), 0..96)).prop_map(|(request, rest)| {
            let mut b = MAGIC.to_vec();
            if request {
                b.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            } else {
                b.push(STATUS_OK);
            }
            b.extend(rest);
            b
        }),
    ];
    fuzz("raft/arbitrary_bytes", file!(), 100_000, bytes, |bytes| {
        check_request_bytes(&bytes)?;
        check_reply_bytes(&bytes)
    });
}

#[test]
fn raft_requests_and_replies_round_trip_and_survive_mutation() {
    let input = (
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(mutation(), 1..4),
    );
    fuzz(
        "raft/mutated_frames",
        file!(),
        20_000,
        input,
        |(kind, term, node, index, data, mutations)| {
            let rpc = request(kind, term, node, index, data);
            let bytes = frame::encode_request(&rpc, PROTOCOL_VERSION)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = parse_request::<RaftRpc>(&bytes)
                .map_err(TestCaseError::fail)?
                .ok_or_else(|| TestCaseError::fail("our own version refused"))?;
            prop_assert_eq!(codec::encode(&back).ok(), codec::encode(&rpc).ok());
            check_request_bytes(&mutate(bytes, &mutations))?;

            let answer = reply(kind, term, node, index);
            let mut bytes = MAGIC.to_vec();
            bytes.push(STATUS_OK);
            codec::write_frame(&answer, &mut bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = frame::decode_reply::<RaftRpcReply>(&bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(codec::encode(&back).ok(), codec::encode(&answer).ok());
            check_reply_bytes(&mutate(bytes, &mutations))
        },
    );
}
