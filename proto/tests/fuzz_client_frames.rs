//! Fuzz target: the client frame decoder (`ClientFrame::decode`, what every WebSocket text
//! frame from an unauthenticated client goes through) and the client side's
//! `ServerFrame::decode`.
//!
//! Inputs: arbitrary text, and JSON objects built from the protocol's own ops and field names
//! with values of every type (and duplicates, escaped keys, deep nesting, truncation), so the
//! generator reaches each op's field checks rather than stopping at "not JSON".
//! Properties: never panics; a frame that decodes re-encodes to text that decodes to the same
//! frame; every error message fits `MAX_MESSAGE_BYTES`; server frames re-encode stably and
//! round-trip.

#[path = "support/fuzz.rs"]
mod support;

use plaza_proto::client::{
    ConnectOk, DecodeError, DisconnectPush, EphemeralPush, MemberPush, PresenceStatsOk, PubPush,
    PublishOk, RefreshPush, UnsubscribedPush, check_idem,
};
use plaza_proto::close::MAX_MESSAGE_BYTES;
use plaza_proto::{
    ClientFrame, ClientId, CloseCode, Command, ErrorCode, Member, Payload, Push, Reply, ReplyOk,
    RoomName, Sender, ServerFrame, UserId,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::value::RawValue;
use support::fuzz;

const OPS: [&str; 9] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "refresh",
    "ping",
];

const FIELDS: [&str; 13] = [
    "id", "op", "room", "token", "data", "idem", "since", "limit", "recover", "presence", "name",
    "version", "epoch",
];

/// The decoder's contract on one input.
fn check_client(text: &str) -> TestCaseResult {
    match ClientFrame::decode(text) {
        Ok(frame) => {
            prop_assert!(frame.id > 0);
            if let Command::Publish(p) = &frame.command
                && let Some(idem) = &p.idem
            {
                prop_assert!(check_idem(idem).is_ok(), "accepted idem {idem:?}");
            }
            let again = serde_json::to_string(&frame)
                .map_err(|e| TestCaseError::fail(format!("re-encoding {frame:?}: {e}")))?;
            match ClientFrame::decode(&again) {
                Ok(back) => prop_assert_eq!(back, frame, "re-encoded as {}", again),
                Err(e) => prop_assert!(false, "{frame:?} re-encoded as {again} fails: {e:?}"),
            }
        }
        Err(DecodeError::Command { id, error }) => {
            prop_assert!(id > 0);
            prop_assert!(
                error.message.len() <= MAX_MESSAGE_BYTES,
                "{} bytes: {:?}",
                error.message.len(),
                error.message
            );
            prop_assert_eq!(error.temporary, error.code.temporary());
        }
        Err(DecodeError::Malformed(message)) => {
            prop_assert!(
                message.len() <= MAX_MESSAGE_BYTES,
                "{} bytes: {:?}",
                message.len(),
                message
            );
        }
    }
    Ok(())
}

/// A JSON string literal for `s`.
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// JSON text of a scalar of any type, biased to the edges of each field's range.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            Just(u64::MAX),
            any::<u64>()
        ]
        .prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![
            Just("-0".to_owned()),
            Just("1.5".to_owned()),
            Just("1e400".to_owned()),
            Just("-1e-400".to_owned()),
            Just("18446744073709551616".to_owned()),
            any::<f64>().prop_map(|f| if f.is_finite() {
                f.to_string()
            } else {
                "0".into()
            }),
        ],
        prop::sample::select(OPS.to_vec()).prop_map(lit),
        "[a-z]{0,8}(:[a-zA-Z0-9_./@=+-]{0,12})?".prop_map(|s| lit(&s)),
        "\\PC{0,24}".prop_map(|s| lit(&s)),
        "[\\x00-\\x1f\\x7f\u{85}a]{1,4}".prop_map(|s| lit(&s)),
        (1usize..2000, "\\PC").prop_map(|(n, c)| lit(&c.repeat(n))),
        // A string with escapes the decoder must unescape (and must not borrow).
        Just("\"chat\\u003alobby\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
    ]
}

/// JSON text of any value: scalars, arrays and objects (protocol-shaped ones included), and
/// nesting beyond serde_json's recursion limit.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => scalar(),
        1 => ("\\PC{0,8}", any::<u64>())
            .prop_map(|(e, o)| format!("{{\"epoch\":{},\"offset\":{o}}}", lit(&e))),
        1 => (0usize..300).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        1 => (0usize..300).prop_map(|d| "{\"a\":".repeat(d) + "1" + &"}".repeat(d)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                let members: Vec<String> =
                    kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A key as JSON text: the protocol's field names (sometimes spelled with escapes) or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(FIELDS.to_vec()).prop_map(lit),
        1 => Just("\"\\u0069d\"".to_owned()),
        1 => Just("\"o\\u0070\"".to_owned()),
        1 => "\\PC{0,8}".prop_map(|s| lit(&s)),
    ]
}

/// A frame-shaped object: usually a valid id and a known op, then any of the fields.
fn frame_text() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        8 => (1u32..=u32::MAX).prop_map(|n| n.to_string()),
        1 => scalar(),
    ];
    let op = prop_oneof![
        8 => prop::sample::select(OPS.to_vec()).prop_map(lit),
        1 => scalar(),
    ];
    let room = prop_oneof![
        4 => "[a-z]{1,6}(:[a-zA-Z0-9_./@=+-]{1,12})?".prop_map(|s| lit(&s)),
        1 => scalar(),
    ];
    (
        prop::option::weighted(0.95, id),
        prop::option::weighted(0.95, op),
        prop::option::weighted(0.8, room),
        prop::collection::vec((key(), value()), 0..5),
        prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\t "]), 4),
        any::<prop::sample::Index>(),
        prop_oneof![8 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)],
    )
        .prop_map(|(id, op, room, extra, ws, order, cut)| {
            let mut members: Vec<String> = Vec::new();
            for (k, v) in [("id", id), ("op", op), ("room", room)] {
                if let Some(v) = v {
                    members.push(format!("{}{}:{}{}", ws[0], lit(k), ws[1], v));
                }
            }
            for (k, v) in extra {
                members.push(format!("{k}:{}{v}", ws[2]));
            }
            if !members.is_empty() {
                let n = members.len();
                members.rotate_left(order.index(n));
            }
            let text = format!("{{{}{}}}", members.join(","), ws[3]);
            match cut {
                // A truncated frame, cut on a character boundary.
                Some(at) => {
                    let mut i = at.index(text.len() + 1);
                    while !text.is_char_boundary(i) {
                        i -= 1;
                    }
                    text[..i].to_owned()
                }
                None => text,
            }
        })
}

#[test]
fn client_frame_decoder_survives_arbitrary_text() {
    fuzz(
        "client_frame/arbitrary_text",
        file!(),
        50_000,
        prop_oneof![
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..256)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[{}\\[\\]\":,0-9a-z \\\\]{0,64}",
        ],
        |text| check_client(&text),
    );
}

#[test]
fn client_frame_decoder_survives_protocol_shaped_frames() {
    fuzz(
        "client_frame/protocol_shaped",
        file!(),
        10_000,
        frame_text(),
        |text| check_client(&text),
    );
}

// --- ServerFrame (the client side's decoder) ---

fn room_name() -> impl Strategy<Value = RoomName> {
    "[a-z]{1,6}(:[a-zA-Z0-9_./@=+-]{1,12})?".prop_map(|s| RoomName::new(&s).expect("valid"))
}

fn payload() -> impl Strategy<Value = Payload> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| Payload::encode(&v).expect("serializable"))
}

fn member() -> impl Strategy<Value = Member> {
    // `info: null` and no info are one thing in JSON (both decode to `None`).
    let info = payload().prop_filter("null info is no info", |p| p.as_str() != "null");
    ("\\PC{0,12}", "\\PC{0,12}", prop::option::of(info)).prop_map(|(c, u, info)| Member {
        client: ClientId::new(c),
        user: UserId::new(u),
        info,
    })
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (
            room_name(),
            any::<u64>(),
            payload(),
            prop::option::of(("\\PC{0,8}", "\\PC{0,8}"))
        )
            .prop_map(|(room, offset, data, from)| Push::Pub(PubPush {
                room,
                offset,
                data,
                from: from.map(|(u, c)| Sender {
                    user: UserId::new(u),
                    client: ClientId::new(c),
                }),
            })),
        (room_name(), member()).prop_map(|(room, member)| Push::Join(MemberPush { room, member })),
        (room_name(), member()).prop_map(|(room, member)| Push::Leave(MemberPush { room, member })),
        (
            room_name(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            "\\PC{0,32}"
        )
            .prop_map(|(room, code, reason)| Push::Unsubscribed(UnsubscribedPush {
                room,
                code,
                reason
            })),
        any::<u64>().prop_map(|expires_in| Push::Refresh(RefreshPush { expires_in })),
        (
            room_name(),
            payload(),
            prop::option::of(("\\PC{0,8}", "\\PC{0,8}"))
        )
            .prop_map(|(room, data, from)| Push::Ephemeral(EphemeralPush {
                room,
                data,
                from: from.map(|(u, c)| Sender {
                    user: UserId::new(u),
                    client: ClientId::new(c),
                }),
            })),
        (prop::sample::select(CloseCode::ALL.to_vec()), "\\PC{0,300}")
            .prop_map(|(code, reason)| Push::Disconnect(DisconnectPush::new(code, reason))),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let ok = prop_oneof![
        (
            "\\PC{0,8}",
            "\\PC{0,8}",
            prop::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(
                |(c, u, expires_in, ping_interval)| ReplyOk::Connect(ConnectOk {
                    client: ClientId::new(c),
                    user: UserId::new(u),
                    expires_in,
                    ping_interval,
                })
            ),
        ("\\PC{0,8}", any::<u64>())
            .prop_map(|(epoch, offset)| ReplyOk::Publish(PublishOk { epoch, offset })),
        (any::<u64>(), any::<u64>()).prop_map(|(clients, users)| ReplyOk::PresenceStats(
            PresenceStatsOk { clients, users }
        )),
        Just(ReplyOk::Empty(Default::default())),
    ];
    let error = (prop::sample::select(ErrorCode::ALL.to_vec()), "\\PC{0,300}")
        .prop_map(|(code, message)| code.with(message));
    (1u32.., prop_oneof![ok.prop_map(Ok), error.prop_map(Err)])
        .prop_map(|(id, result)| Reply { id, result })
}

/// The client decoder's contract on one input: a decoded frame re-encodes stably.
fn check_server(text: &str) -> TestCaseResult {
    if let Ok(frame) = ServerFrame::<Box<RawValue>>::decode(text) {
        let once = serde_json::to_string(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = ServerFrame::<Box<RawValue>>::decode(&once)
            .map_err(|e| TestCaseError::fail(format!("{once}: {e}")))?;
        let twice = serde_json::to_string(&back).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(once, twice);
    }
    Ok(())
}

#[test]
fn server_frame_decoder_survives_arbitrary_and_mutated_text() {
    let valid = prop_oneof![
        push().prop_map(ServerFrame::Push),
        reply().prop_map(ServerFrame::Reply)
    ]
    .prop_map(|f| f.encode());
    fuzz(
        "server_frame/arbitrary_and_mutated",
        file!(),
        10_000,
        prop_oneof![
            any::<String>(),
            frame_text(),
            (valid, any::<prop::sample::Index>(), "\\PC{0,3}").prop_map(|(text, at, insert)| {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                format!("{}{insert}{}", &text[..i], &text[i..])
            }),
        ],
        |text| check_server(&text),
    );
}

#[test]
fn server_frames_round_trip() {
    let frame = prop_oneof![
        push().prop_map(ServerFrame::Push),
        reply().prop_map(ServerFrame::Reply)
    ];
    fuzz("server_frame/round_trip", file!(), 5_000, frame, |frame| {
        let text = frame.encode();
        let decoded = ServerFrame::<Box<RawValue>>::decode(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        match (&frame, decoded) {
            (ServerFrame::Push(sent), ServerFrame::Push(got)) => prop_assert_eq!(sent, &got),
            (ServerFrame::Reply(sent), ServerFrame::Reply(got)) => {
                prop_assert_eq!(sent.id, got.id);
                match (&sent.result, &got.result) {
                    (Ok(ok), Ok(raw)) => prop_assert_eq!(
                        serde_json::to_value(ok).ok(),
                        serde_json::from_str::<serde_json::Value>(raw.get()).ok()
                    ),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "sent {a:?}, got {b:?}"),
                }
            }
            (sent, got) => prop_assert!(false, "sent {sent:?}, got {got:?}"),
        }
        check_server(&text)
    });
}
