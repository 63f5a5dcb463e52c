use super::*;
use crate::cluster::*;
use crate::model::*;

fn sample_requests() -> Vec<EdgeRequest> {
    let room = RoomName::new("chat:a").unwrap();
    let member = Member {
        client: ClientId::new("c1"),
        user: UserId::new("u1"),
        info: Some(Payload::from_json(r#"{"n":1}"#).unwrap()),
    };
    vec![
        EdgeRequest::Hello {
            version: PROTOCOL_VERSION,
            edge: EdgeId::new("e1"),
            lease_ms: 10_000,
        },
        EdgeRequest::Call {
            req: 1,
            call: Call::Publish {
                room: room.clone(),
                data: Payload::from_json(r#"{"text":"hi"}"#).unwrap(),
                from: Some(Sender {
                    user: UserId::new("u1"),
                    client: ClientId::new("c1"),
                }),
                idem: Some("k".into()),
            },
        },
        EdgeRequest::Call {
            req: 2,
            call: Call::Join {
                room: room.clone(),
                member,
            },
        },
        EdgeRequest::Call {
            req: 3,
            call: Call::History {
                room: room.clone(),
                since: Some(Position {
                    epoch: "e".into(),
                    offset: 4,
                }),
                limit: None,
            },
        },
        EdgeRequest::Call {
            req: u64::MAX,
            call: Call::Subscribe { room: room.clone() },
        },
        EdgeRequest::Call {
            req: 4,
            call: Call::DisconnectUser {
                user: UserId::new("u1"),
                reason: "banned".into(),
            },
        },
        EdgeRequest::Call {
            req: 5,
            call: Call::Rooms {
                after: Some(room),
                limit: 100,
            },
        },
        EdgeRequest::Call {
            req: 6,
            call: Call::Rooms {
                after: None,
                limit: 0,
            },
        },
        EdgeRequest::KeepAlive,
        EdgeRequest::Detach,
    ]
}

#[test]
fn edge_requests_and_broker_events_round_trip_through_postcard() {
    for r in sample_requests() {
        assert_eq!(decode::<EdgeRequest>(&encode(&r).unwrap()).unwrap(), r);
    }
    let room = RoomName::new("r").unwrap();
    let events = vec![
        BrokerEvent::Welcome {
            version: PROTOCOL_VERSION,
        },
        BrokerEvent::Incompatible {
            supported: PROTOCOL_VERSION,
        },
        BrokerEvent::Result {
            req: 9,
            result: Err(BrokerError::Unavailable("no quorum".into())),
        },
        BrokerEvent::Result {
            req: 10,
            result: Ok(CallOk::History(HistoryPage {
                position: Position {
                    epoch: "e".into(),
                    offset: 3,
                },
                publications: vec![Publication {
                    offset: 3,
                    data: Payload::from_json("1").unwrap(),
                    from: None,
                }],
                complete: true,
            })),
        },
        BrokerEvent::Result {
            req: 11,
            result: Ok(CallOk::Rooms(RoomsPage {
                rooms: vec![RoomInfo {
                    room: room.clone(),
                    clients: 3,
                    users: 2,
                    offset: 7,
                }],
                next: Some(room.clone()),
            })),
        },
        BrokerEvent::Result {
            req: 12,
            result: Ok(CallOk::Rooms(RoomsPage::default())),
        },
        BrokerEvent::DisconnectUser {
            user: UserId::new("u"),
            reason: "kicked by an admin".into(),
        },
        BrokerEvent::Room(RoomEvent {
            room,
            epoch: "e".into(),
            kind: RoomEventKind::Leave(Member {
                client: ClientId::new("c"),
                user: UserId::new("u"),
                info: None,
            }),
        }),
    ];
    for e in events {
        assert_eq!(decode::<BrokerEvent>(&encode(&e).unwrap()).unwrap(), e);
    }
}

#[test]
fn link_events_round_trip_and_map_onto_broker_events() {
    let room_event = RoomEvent {
        room: RoomName::new("chat:a").unwrap(),
        epoch: "e".into(),
        kind: RoomEventKind::Publication(Publication {
            offset: 1,
            data: Payload::from_json(r#"{"a":1}"#).unwrap(),
            from: None,
        }),
    };
    let disconnect = LinkEvent::DisconnectUser {
        user: UserId::new("u"),
        reason: "bye".into(),
    };
    for e in [LinkEvent::Room(room_event.clone()), disconnect.clone()] {
        assert_eq!(decode::<LinkEvent>(&encode(&e).unwrap()).unwrap(), e);
    }
    assert_eq!(
        BrokerEvent::from(LinkEvent::Room(room_event.clone())),
        BrokerEvent::Room(room_event)
    );
    assert_eq!(
        BrokerEvent::from(disconnect),
        BrokerEvent::DisconnectUser {
            user: UserId::new("u"),
            reason: "bye".into(),
        }
    );
}

#[test]
fn golden_hello_frame_bytes_are_stable() {
    // The handshake must stay decodable by every later version: pin its bytes.
    let hello = EdgeRequest::Hello {
        version: 1,
        edge: EdgeId::new("e1"),
        lease_ms: 10_000,
    };
    assert_eq!(
        encode(&hello).unwrap(),
        vec![0, 1, 2, b'e', b'1', 0x90, 0x4e]
    );
    let welcome = BrokerEvent::Welcome { version: 1 };
    assert_eq!(encode(&welcome).unwrap(), vec![0, 1]);
    // Variants are appended, never inserted: `DisconnectUser` comes after `Room` (index 3).
    let disconnect = BrokerEvent::DisconnectUser {
        user: UserId::new("u"),
        reason: "bye".into(),
    };
    assert_eq!(
        encode(&disconnect).unwrap(),
        vec![4, 1, b'u', 3, b'b', b'y', b'e']
    );
}

#[test]
fn frames_are_length_prefixed_and_read_back_incrementally() {
    let mut buf = Vec::new();
    for r in sample_requests() {
        write_frame(&r, &mut buf).unwrap();
    }
    let mut got = Vec::new();
    let mut at = 0;
    while let Some((r, used)) = read_frame::<EdgeRequest>(&buf[at..]).unwrap() {
        got.push(r);
        at += used;
    }
    assert_eq!(got, sample_requests());
    assert!(
        read_frame::<EdgeRequest>(&buf[..3]).unwrap().is_none(),
        "partial header"
    );
    assert!(
        read_frame::<EdgeRequest>(&buf[..6]).unwrap().is_none(),
        "partial body"
    );
}

#[test]
fn oversize_and_garbage_frames_are_rejected() {
    let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
    assert!(matches!(
        read_frame::<EdgeRequest>(&huge),
        Err(CodecError::TooLarge(_))
    ));
    assert!(decode::<EdgeRequest>(&[0xff, 0xff, 0xff]).is_err());
    let mut ok = encode(&EdgeRequest::KeepAlive).unwrap();
    ok.push(0);
    assert!(
        decode::<EdgeRequest>(&ok).is_err(),
        "trailing bytes are an error"
    );
}

#[test]
fn the_handshake_welcomes_the_same_version_and_refuses_others() {
    assert_eq!(
        answer_hello(PROTOCOL_VERSION),
        BrokerEvent::Welcome {
            version: PROTOCOL_VERSION
        }
    );
    assert_eq!(
        answer_hello(PROTOCOL_VERSION + 1),
        BrokerEvent::Incompatible {
            supported: PROTOCOL_VERSION
        }
    );
}
