use super::*;
use crate::close::ErrorCode;
use crate::model::{ClientId, Member, Publication, Sender, UserId};

fn decode_err(text: &str) -> DecodeError {
    ClientFrame::decode(text).expect_err(text)
}

fn command_error(text: &str) -> (u32, ErrorCode, String) {
    match decode_err(text) {
        DecodeError::Command { id, error } => (id, error.code, error.message),
        other => panic!("{text}: expected a command error, got {other:?}"),
    }
}

fn malformed(text: &str) -> String {
    match decode_err(text) {
        DecodeError::Malformed(m) => m,
        other => panic!("{text}: expected malformed, got {other:?}"),
    }
}

#[test]
fn every_command_round_trips_through_json() {
    let room = RoomName::new("chat:lobby").unwrap();
    let pos = Position {
        epoch: "e1".into(),
        offset: 7,
    };
    let commands = vec![
        Command::Connect(Connect {
            token: Some("t".into()),
            name: Some("web".into()),
            version: None,
        }),
        Command::Connect(Connect::default()),
        Command::Subscribe(Subscribe {
            room: room.clone(),
            recover: Some(pos.clone()),
            presence: true,
            presence_users: false,
        }),
        Command::Subscribe(Subscribe {
            room: room.clone(),
            recover: None,
            presence: false,
            presence_users: false,
        }),
        Command::Unsubscribe(RoomRef { room: room.clone() }),
        Command::Publish(Publish {
            room: room.clone(),
            data: Payload::from_json(r#"{"text":"hi","n":[1,2.5,null]}"#).unwrap(),
            idem: Some("k1".into()),
            ephemeral: None,
        }),
        Command::Publish(Publish {
            room: room.clone(),
            data: Payload::from_json(r#"{"typing":true}"#).unwrap(),
            idem: None,
            ephemeral: Some(true),
        }),
        Command::Presence(PresenceQuery {
            room: room.clone(),
            after: None,
            limit: None,
            users: false,
        }),
        Command::PresenceStats(RoomRef { room: room.clone() }),
        Command::History(History {
            room: room.clone(),
            since: Some(pos),
            limit: Some(10),
        }),
        Command::History(History {
            room,
            since: None,
            limit: None,
        }),
        Command::Refresh(Refresh { token: "t2".into() }),
        Command::Ping,
    ];
    for (i, command) in commands.into_iter().enumerate() {
        let frame = ClientFrame {
            id: i as u32 + 1,
            command,
        };
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(ClientFrame::decode(&text).unwrap(), frame, "{text}");
    }
}

#[test]
fn golden_command_frames_decode_as_documented() {
    let f = ClientFrame::decode(
        r#"{"id":3,"op":"subscribe","room":"chat:lobby","recover":{"epoch":"a1","offset":41},"presence":true}"#,
    )
    .unwrap();
    assert_eq!(f.id, 3);
    let Command::Subscribe(s) = f.command else {
        panic!("not subscribe")
    };
    assert_eq!(s.room.as_str(), "chat:lobby");
    assert_eq!(
        s.recover,
        Some(Position {
            epoch: "a1".into(),
            offset: 41
        })
    );
    assert!(s.presence);

    let f =
        ClientFrame::decode(r#"{"op":"publish","id":9,"room":"r","data":{"x": 1 },"idem":"abc"}"#)
            .unwrap();
    let Command::Publish(p) = f.command else {
        panic!("not publish")
    };
    assert_eq!(
        p.data.as_str(),
        r#"{"x": 1 }"#,
        "data is kept byte for byte"
    );
    assert_eq!(p.idem.as_deref(), Some("abc"));

    assert_eq!(
        ClientFrame::decode(r#"{"id":1,"op":"ping"}"#)
            .unwrap()
            .command,
        Command::Ping
    );
    // null optional fields are absent; unknown fields are ignored for forward compatibility.
    let f = ClientFrame::decode(r#"{"id":1,"op":"history","room":"r","since":null,"future":1}"#)
        .unwrap();
    assert_eq!(
        f.command,
        Command::History(History {
            room: RoomName::new("r").unwrap(),
            since: None,
            limit: None
        })
    );
}

#[test]
fn frames_without_a_usable_id_are_malformed() {
    assert!(malformed("{not json").starts_with("malformed JSON"));
    assert_eq!(malformed("[1,2]"), "frame must be a JSON object");
    assert_eq!(malformed("\"hello\""), "frame must be a JSON object");
    assert_eq!(malformed("42"), "frame must be a JSON object");
    assert_eq!(malformed(r#"{"op":"ping"}"#), "missing field `id`");
    assert!(malformed(r#"{"id":"1","op":"ping"}"#).starts_with("`id` must be an integer"));
    assert!(malformed(r#"{"id":0,"op":"ping"}"#).starts_with("`id` must be an integer"));
    assert!(malformed(r#"{"id":-1,"op":"ping"}"#).starts_with("`id` must be an integer"));
    assert!(malformed(r#"{"id":4294967296,"op":"ping"}"#).starts_with("`id` must be an integer"));
    assert_eq!(
        malformed(r#"{"id":1,"id":2,"op":"ping"}"#),
        "duplicate field `id`"
    );
    assert!(malformed(r#"{"id":1,"op":"ping"} trailing"#).starts_with("malformed JSON"));
}

#[test]
fn bad_commands_with_an_id_get_error_replies() {
    assert_eq!(
        command_error(r#"{"id":5,"op":"dance"}"#).1,
        ErrorCode::UnknownOp
    );
    assert_eq!(
        command_error(r#"{"id":5}"#),
        (5, ErrorCode::BadRequest, "missing field `op`".into())
    );
    assert_eq!(command_error(r#"{"id":5,"op":7}"#).1, ErrorCode::BadRequest);
    assert_eq!(
        command_error(r#"{"id":5,"op":"subscribe"}"#).2,
        "missing field `room`"
    );
    let (_, code, msg) = command_error(r#"{"id":5,"op":"subscribe","room":"bad room"}"#);
    assert_eq!(code, ErrorCode::InvalidRoom);
    assert!(msg.contains("' '"), "{msg}");
    assert_eq!(
        command_error(r#"{"id":5,"op":"subscribe","room":""}"#).1,
        ErrorCode::InvalidRoom
    );
    assert_eq!(
        command_error(r#"{"id":5,"op":"subscribe","room":5}"#).1,
        ErrorCode::BadRequest
    );
    let (_, code, msg) = command_error(r#"{"id":5,"op":"subscribe","room":"r","presence":"yes"}"#);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.starts_with("field `presence`"), "{msg}");
    assert_eq!(
        command_error(r#"{"id":5,"op":"publish","room":"r"}"#).2,
        "missing field `data`"
    );
    assert_eq!(
        command_error(r#"{"id":5,"op":"publish","room":"r","data":1,"data":2}"#).2,
        "duplicate field `data`"
    );
    assert_eq!(
        command_error(r#"{"id":5,"op":"publish","room":"r","data":1,"idem":""}"#).1,
        ErrorCode::BadRequest
    );
    assert_eq!(
        command_error(r#"{"id":5,"op":"refresh"}"#).2,
        "missing field `token`"
    );
    assert_eq!(
        command_error(r#"{"id":5,"op":"history","room":"r","limit":-3}"#).1,
        ErrorCode::BadRequest
    );
}

#[test]
fn golden_server_frames_encode_as_documented() {
    let reply = ServerFrame::Reply(Reply {
        id: 2,
        result: Ok(ReplyOk::Publish(PublishOk {
            epoch: "e".into(),
            offset: 12,
        })),
    });
    assert_eq!(reply.encode(), r#"{"id":2,"ok":{"epoch":"e","offset":12}}"#);
    let empty = ServerFrame::Reply(Reply {
        id: 3,
        result: Ok(ReplyOk::Empty(Empty {})),
    });
    assert_eq!(empty.encode(), r#"{"id":3,"ok":{}}"#);
    let err = ServerFrame::Reply(Reply {
        id: 4,
        result: Err(ErrorCode::PermissionDenied.with("no publish on chat:x")),
    });
    assert_eq!(
        err.encode(),
        r#"{"id":4,"error":{"code":106,"message":"no publish on chat:x","temporary":false}}"#
    );
    let push = ServerFrame::Push(Push::Pub(PubPush {
        room: RoomName::new("chat:x").unwrap(),
        offset: 5,
        data: Payload::from_json(r#"{"t":"hi"}"#).unwrap(),
        from: Some(Sender {
            user: UserId::new("ann"),
            client: ClientId::new("c1"),
        }),
    }));
    assert_eq!(
        push.encode(),
        r#"{"push":"pub","room":"chat:x","offset":5,"data":{"t":"hi"},"from":{"user":"ann","client":"c1"}}"#
    );
    let bye = ServerFrame::Push(Push::Disconnect(DisconnectPush::new(
        CloseCode::SlowConsumer,
        "slow consumer",
    )));
    assert_eq!(
        bye.encode(),
        r#"{"push":"disconnect","code":4001,"reason":"slow consumer","reconnect":true}"#
    );
    let connected = ServerFrame::Reply(Reply {
        id: 1,
        result: Ok(ReplyOk::Connect(ConnectOk {
            client: ClientId::new("c1"),
            user: UserId::new("ann"),
            expires_in: None,
            ping_interval: 25,
        })),
    });
    assert_eq!(
        connected.encode(),
        r#"{"id":1,"ok":{"client":"c1","user":"ann","expires_in":null,"ping_interval":25}}"#
    );
}

#[test]
fn ephemeral_publish_decodes_and_refuses_an_idempotency_key() {
    let f = ClientFrame::decode(r#"{"op":"publish","id":4,"room":"r","data":1,"ephemeral":true}"#)
        .unwrap();
    let Command::Publish(p) = f.command else {
        panic!("not publish")
    };
    assert_eq!(p.ephemeral, Some(true));
    let err = ClientFrame::decode(
        r#"{"op":"publish","id":5,"room":"r","data":1,"ephemeral":true,"idem":"k"}"#,
    )
    .unwrap_err();
    let DecodeError::Command { id, error } = err else {
        panic!("not a command error: {err:?}")
    };
    assert_eq!(id, 5);
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("ephemeral"), "{}", error.message);
    let err =
        ClientFrame::decode(r#"{"op":"publish","id":6,"room":"r","data":1,"ephemeral":"yes"}"#)
            .unwrap_err();
    assert!(matches!(err, DecodeError::Command { id: 6, .. }), "{err:?}");
}

#[test]
fn server_frames_round_trip_through_the_client_decoder() {
    let member = Member {
        client: ClientId::new("c"),
        user: UserId::new("u"),
        info: Some(Payload::from_json(r#"{"n":"Ann"}"#).unwrap()),
    };
    let room = RoomName::new("r").unwrap();
    let pushes = vec![
        Push::Pub(PubPush {
            room: room.clone(),
            offset: 1,
            data: Payload::from_json("[1]").unwrap(),
            from: None,
        }),
        Push::Ephemeral(EphemeralPush {
            room: room.clone(),
            data: Payload::from_json(r#"{"typing":true}"#).unwrap(),
            from: Some(Sender {
                user: UserId::new("u"),
                client: ClientId::new("c"),
            }),
        }),
        Push::Join(MemberPush {
            room: room.clone(),
            member: member.clone(),
        }),
        Push::Leave(MemberPush {
            room: room.clone(),
            member: member.clone(),
        }),
        Push::Update(MemberPush {
            room: room.clone(),
            member: member.clone(),
        }),
        Push::PresenceResync(PresenceResyncPush {
            room: room.clone(),
            members: vec![member],
            next: Some(ClientId::new("c")),
        }),
        Push::Unsubscribed(UnsubscribedPush {
            room,
            code: ErrorCode::PermissionDenied,
            reason: "revoked".into(),
        }),
        Push::Refresh(RefreshPush { expires_in: 30 }),
        Push::Disconnect(DisconnectPush::new(CloseCode::Shutdown, "bye")),
    ];
    for push in pushes {
        let text = ServerFrame::Push(push.clone()).encode();
        match ServerFrame::decode(&text).unwrap() {
            ServerFrame::Push(p) => assert_eq!(p, push, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let ok = SubscribeOk {
        epoch: "e".into(),
        offset: 9,
        recovered: true,
        publications: vec![Publication {
            offset: 9,
            data: Payload::from_json("\"x\"").unwrap(),
            from: None,
        }],
        state: None,
    };
    let text = ServerFrame::Reply(Reply {
        id: 7,
        result: Ok(ReplyOk::Subscribe(ok.clone())),
    })
    .encode();
    let ServerFrame::Reply(reply) = ServerFrame::decode(&text).unwrap() else {
        panic!("{text}")
    };
    assert_eq!(reply.id, 7);
    assert_eq!(reply.ok_as::<SubscribeOk>().unwrap(), ok);
}

#[test]
fn tokens_never_appear_in_debug_output() {
    let c = Command::Connect(Connect {
        token: Some("secret.jwt.value".into()),
        ..Default::default()
    });
    let r = Command::Refresh(Refresh {
        token: "secret.jwt.value".into(),
    });
    assert!(!format!("{c:?}{r:?}").contains("secret"));
}

#[test]
fn set_and_delete_decode_with_their_options_and_refuse_bad_keys() {
    let frame = ClientFrame::decode(
        r#"{"id":1,"op":"set","room":"s:r","key":"k","value":{"x":1},"version":0,"ttl":5,"tied":true}"#,
    )
    .unwrap();
    match frame.command {
        Command::Set(s) => {
            assert_eq!(s.key, "k");
            assert_eq!(s.value.as_str(), r#"{"x":1}"#);
            assert_eq!((s.version, s.ttl, s.tied), (Some(0), Some(5), true));
        }
        other => panic!("{other:?}"),
    }
    let frame = ClientFrame::decode(r#"{"id":2,"op":"delete","room":"s:r","key":"k"}"#).unwrap();
    assert!(matches!(frame.command, Command::Delete(d) if d.version.is_none()));
    for bad in [
        r#"{"id":3,"op":"set","room":"s:r","key":"","value":1}"#,
        r#"{"id":3,"op":"set","room":"s:r","key":"k"}"#,
        r#"{"id":3,"op":"set","room":"s:r","key":"k","value":1,"ttl":-1}"#,
        r#"{"id":3,"op":"delete","room":"s:r"}"#,
    ] {
        match ClientFrame::decode(bad) {
            Err(DecodeError::Command { id: 3, error }) => {
                assert_eq!(error.code, ErrorCode::BadRequest, "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}
