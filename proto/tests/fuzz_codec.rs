//! Fuzz target: the edge↔broker frame codec (`plaza_proto::codec`: postcard behind a 4-byte
//! length prefix), decoding `EdgeRequest` (what a broker reads from any edge) and `BrokerEvent`
//! (what an edge reads from its broker).
//!
//! Inputs: arbitrary bytes, valid frames of every variant, and valid frames mutated (bytes
//! flipped, inserted, removed, truncated; the length prefix replaced by any value).
//! Properties: never panics; no allocation out of proportion to the input (a hostile length
//! prefix or element count must not be trusted); valid frames round-trip; whatever decodes
//! re-encodes to something that decodes to the same value, with payloads that are valid JSON
//! and room names that are valid.

#[path = "support/fuzz.rs"]
mod support;

use plaza_proto::cluster::{
    BrokerError, Call, CallOk, Ephemeral, HistoryPage, PresencePage, PresenceStats, PublishAck,
    RoomEvent, RoomEventKind, RoomInfo, RoomsPage,
};
use plaza_proto::codec::{self, CodecError, MAX_FRAME};
use plaza_proto::{
    BrokerEvent, ClientId, EdgeId, EdgeRequest, Member, Payload, Position, Publication, RoomName,
    Sender, UserId,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde::Serialize;
use serde::de::DeserializeOwned;
use support::fuzz;

fn room() -> impl Strategy<Value = RoomName> {
    "[a-zA-Z0-9_./@=+:-]{1,20}".prop_map(|s| RoomName::new(&s).expect("valid"))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "\\PC{0,12}", 1 => (0usize..400).prop_map(|n| "é".repeat(n))]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        text().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        (text(), any::<u32>()).prop_map(|(k, v)| format!(
            "{{{}: [{v}, true]}}",
            serde_json::to_string(&k).unwrap_or_default()
        )),
    ]
    .prop_map(|s| Payload::from_json(&s).expect("valid JSON"))
}

fn position() -> impl Strategy<Value = Position> {
    (text(), any::<u64>()).prop_map(|(epoch, offset)| Position { epoch, offset })
}

fn sender() -> impl Strategy<Value = Sender> {
    (text(), text()).prop_map(|(u, c)| Sender {
        user: UserId::new(u),
        client: ClientId::new(c),
    })
}

fn member() -> impl Strategy<Value = Member> {
    (text(), text(), prop::option::of(payload())).prop_map(|(c, u, info)| Member {
        client: ClientId::new(c),
        user: UserId::new(u),
        info,
    })
}

fn publication() -> impl Strategy<Value = Publication> {
    (any::<u64>(), payload(), prop::option::of(sender()))
        .prop_map(|(offset, data, from)| Publication { offset, data, from })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (
            room(),
            payload(),
            prop::option::of(sender()),
            prop::option::of(text())
        )
            .prop_map(|(room, data, from, idem)| Call::Publish {
                room,
                data,
                from,
                idem
            }),
        (room(), member()).prop_map(|(room, member)| Call::Join { room, member }),
        (room(), text()).prop_map(|(room, c)| Call::Leave {
            room,
            client: ClientId::new(c)
        }),
        (
            room(),
            proptest::option::of("[a-z0-9.]{1,12}"),
            any::<u32>()
        )
            .prop_map(|(room, after, limit)| Call::Presence {
                room,
                after: after.map(ClientId::new),
                limit,
            }),
        room().prop_map(|room| Call::PresenceStats { room }),
        (
            room(),
            prop::option::of(position()),
            prop::option::of(any::<u32>())
        )
            .prop_map(|(room, since, limit)| Call::History { room, since, limit }),
        room().prop_map(|room| Call::Subscribe { room }),
        room().prop_map(|room| Call::Unsubscribe { room }),
        (text(), text()).prop_map(|(u, reason)| Call::DisconnectUser {
            user: UserId::new(u),
            reason
        }),
        (prop::option::of(room()), any::<u32>())
            .prop_map(|(after, limit)| Call::Rooms { after, limit }),
        ephemeral().prop_map(Call::PublishEphemeral),
    ]
}

fn edge_request() -> impl Strategy<Value = EdgeRequest> {
    prop_oneof![
        (any::<u16>(), text(), any::<u64>()).prop_map(|(version, e, lease_ms)| {
            EdgeRequest::Hello {
                version,
                edge: EdgeId::new(e),
                lease_ms,
            }
        }),
        (any::<u64>(), call()).prop_map(|(req, call)| EdgeRequest::Call { req, call }),
        Just(EdgeRequest::KeepAlive),
        Just(EdgeRequest::Detach),
    ]
}

fn broker_error() -> impl Strategy<Value = BrokerError> {
    prop_oneof![
        text().prop_map(BrokerError::Unavailable),
        text().prop_map(|namespace| BrokerError::PresenceDisabled { namespace }),
        text().prop_map(|e| BrokerError::LeaseExpired(EdgeId::new(e))),
        text().prop_map(BrokerError::Invalid),
    ]
}

fn call_ok() -> impl Strategy<Value = CallOk> {
    prop_oneof![
        (position(), any::<bool>()).prop_map(|(position, duplicate)| CallOk::Published(
            PublishAck {
                position,
                duplicate
            }
        )),
        Just(CallOk::Done),
        (
            prop::collection::vec(member(), 0..4),
            proptest::option::of("[a-z0-9.]{1,12}")
        )
            .prop_map(|(members, next)| CallOk::Presence(PresencePage {
                members,
                next: next.map(ClientId::new),
            })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(clients, users)| CallOk::PresenceStats(PresenceStats { clients, users })),
        (
            position(),
            prop::collection::vec(publication(), 0..4),
            any::<bool>()
        )
            .prop_map(
                |(position, publications, complete)| CallOk::History(HistoryPage {
                    position,
                    publications,
                    complete
                })
            ),
        position().prop_map(CallOk::Subscribed),
        (
            prop::collection::vec(
                (room(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                    |(room, clients, users, offset)| RoomInfo {
                        room,
                        clients,
                        users,
                        offset
                    }
                ),
                0..4
            ),
            prop::option::of(room())
        )
            .prop_map(|(rooms, next)| CallOk::Rooms(RoomsPage { rooms, next })),
    ]
}

fn broker_event() -> impl Strategy<Value = BrokerEvent> {
    let kind = prop_oneof![
        publication().prop_map(RoomEventKind::Publication),
        member().prop_map(RoomEventKind::Join),
        member().prop_map(RoomEventKind::Leave),
    ];
    prop_oneof![
        any::<u16>().prop_map(|version| BrokerEvent::Welcome { version }),
        any::<u16>().prop_map(|supported| BrokerEvent::Incompatible { supported }),
        (
            any::<u64>(),
            prop_oneof![call_ok().prop_map(Ok), broker_error().prop_map(Err)]
        )
            .prop_map(|(req, result)| BrokerEvent::Result { req, result }),
        (room(), text(), kind).prop_map(|(room, epoch, kind)| BrokerEvent::Room(RoomEvent {
            room,
            epoch,
            kind
        })),
        (text(), text()).prop_map(|(u, reason)| BrokerEvent::DisconnectUser {
            user: UserId::new(u),
            reason
        }),
        ephemeral().prop_map(BrokerEvent::Ephemeral),
    ]
}

fn ephemeral() -> impl Strategy<Value = Ephemeral> {
    (room(), payload(), prop::option::of(sender())).prop_map(|(room, data, from)| Ephemeral {
        room,
        data,
        from,
    })
}

/// One way to damage an encoded frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    /// Replace the 4-byte length prefix (framed form only).
    Prefix(u32),
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
        prop_oneof![
            Just(u32::MAX),
            Just(MAX_FRAME as u32),
            Just(MAX_FRAME as u32 + 1),
            any::<u32>()
        ]
        .prop_map(Mutation::Prefix),
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
            Mutation::Prefix(len) if bytes.len() >= 4 => {
                bytes[..4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// The decoder's contract on one input, for one frame type.
fn check_bytes<T>(bytes: &[u8]) -> TestCaseResult
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = codec::decode::<T>(bytes) {
        check_decoded(&value)?;
    }
    match codec::read_frame::<T>(bytes) {
        Ok(Some((value, used))) => {
            prop_assert!(
                (4..=bytes.len()).contains(&used),
                "consumed {used} of {}",
                bytes.len()
            );
            check_decoded(&value)?;
        }
        Ok(None) => {
            let announced = bytes
                .get(..4)
                .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize);
            prop_assert!(
                announced.is_none_or(|len| bytes.len() < 4 + len),
                "a whole frame was reported incomplete"
            );
        }
        Err(CodecError::TooLarge(len)) => prop_assert!(len > MAX_FRAME),
        Err(CodecError::Postcard(_) | CodecError::Truncated) => {}
    }
    Ok(())
}

/// Whatever decodes is a value the rest of Plaza can trust: it re-encodes and decodes to
/// itself, and every payload in it is valid JSON (its JSON form, which re-parses each payload,
/// serializes).
fn check_decoded<T>(value: &T) -> TestCaseResult
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        codec::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{value:?}: {e}")))?;
    prop_assert_eq!(&back, value);
    prop_assert!(
        serde_json::to_string(value).is_ok(),
        "decoded a value with an invalid payload: {value:?}"
    );
    Ok(())
}

fn check_round_trip<T>(value: &T) -> TestCaseResult
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut framed = Vec::new();
    codec::write_frame(value, &mut framed).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match codec::read_frame::<T>(&framed) {
        Ok(Some((back, used))) => {
            prop_assert_eq!(&back, value);
            prop_assert_eq!(used, framed.len());
        }
        other => prop_assert!(
            false,
            "{value:?} framed as {framed:?} read back as {other:?}"
        ),
    }
    // Every proper prefix is an incomplete frame, not an error.
    for cut in [0, 3, 4, framed.len() - 1] {
        prop_assert!(matches!(codec::read_frame::<T>(&framed[..cut]), Ok(None)));
    }
    Ok(())
}

#[test]
fn edge_and_broker_frames_survive_arbitrary_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        // Small values, as postcard's tags and varints are.
        prop::collection::vec(0u8..8, 0..64),
        // A valid-looking prefix in front of anything.
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(len, rest)| {
            let mut b = (len % 128).to_be_bytes().to_vec();
            b.extend(rest);
            b
        }),
    ];
    fuzz("codec/arbitrary_bytes", file!(), 200_000, bytes, |bytes| {
        check_bytes::<EdgeRequest>(&bytes)?;
        check_bytes::<BrokerEvent>(&bytes)
    });
}

#[test]
fn edge_requests_round_trip_and_survive_mutation() {
    fuzz(
        "codec/edge_request_mutated",
        file!(),
        30_000,
        (edge_request(), prop::collection::vec(mutation(), 1..4)),
        |(request, mutations)| {
            check_round_trip(&request)?;
            let mut framed = Vec::new();
            codec::write_frame(&request, &mut framed)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let damaged = mutate(framed, &mutations);
            check_bytes::<EdgeRequest>(&damaged)?;
            check_bytes::<EdgeRequest>(damaged.get(4..).unwrap_or_default())
        },
    );
}

#[test]
fn broker_events_round_trip_and_survive_mutation() {
    fuzz(
        "codec/broker_event_mutated",
        file!(),
        30_000,
        (broker_event(), prop::collection::vec(mutation(), 1..4)),
        |(event, mutations)| {
            check_round_trip(&event)?;
            let mut framed = Vec::new();
            codec::write_frame(&event, &mut framed)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let damaged = mutate(framed, &mutations);
            check_bytes::<BrokerEvent>(&damaged)?;
            check_bytes::<BrokerEvent>(damaged.get(4..).unwrap_or_default())
        },
    );
}

/// A count prefix of 2³²−1 elements in a 10-byte frame must be refused without reserving
/// room for them (postcard reads the count as a varint; serde caps the preallocation).
#[test]
fn a_huge_element_count_in_a_tiny_frame_is_refused_cheaply() {
    // BrokerEvent::Result { req: 1, result: Ok(CallOk::Presence(PresencePage { members: vec![..; u32::MAX], .. })) }
    let body = [2u8, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    assert!(codec::decode::<BrokerEvent>(&body).is_err());
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    assert!(codec::read_frame::<BrokerEvent>(&framed).is_err());
}
