//! Unit tests of the state machine, one behaviour each. Shared helpers live in `support`.

use plaza_proto::cluster::{BrokerError, PresenceStats, RoomEvent, RoomEventKind};
use plaza_proto::{EdgeId, Position};

use super::support::*;
use super::*;

#[test]
fn offsets_come_from_one_sequence_shared_by_all_rooms() {
    let mut s = Sim::new();
    assert_eq!(s.publish("chat:a").offset, 1);
    assert_eq!(s.publish("chat:b").offset, 2);
    assert_eq!(s.publish("chat:a").offset, 3);
    assert_eq!(s.rooms.position(&room("chat:a")), pos(3));
    assert_eq!(s.rooms.position(&room("chat:b")), pos(2));
}

#[test]
fn a_publication_emits_one_event_with_the_instance_as_epoch() {
    let mut s = Sim::new();
    let (ack, events) = s.publish_with(room("chat:a"), Some("k"));
    assert_eq!(
        ack,
        PublishAck {
            position: pos(1),
            duplicate: false
        }
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].epoch, INSTANCE);
    assert!(matches!(&events[0].kind, RoomEventKind::Publication(p) if p.offset == 1));
}

#[test]
fn a_missing_room_is_at_the_global_sequence_and_a_new_room_at_its_creation_point() {
    let mut s = Sim::new();
    s.publish("chat:a");
    s.publish("chat:a");
    assert_eq!(s.rooms.position(&room("chat:new")), pos(2));
    s.attach("e");
    s.join("e", "chat:new", "c", "u").unwrap();
    s.publish("chat:a");
    assert_eq!(s.rooms.position(&room("chat:new")), pos(2));
}

#[test]
fn history_is_bounded_by_size_and_reports_what_it_dropped() {
    let mut s = Sim::new();
    for _ in 0..3 {
        s.publish("small:a");
    }
    let page = s.history("small:a", None, None);
    assert_eq!(offsets(&page.publications), [2, 3]);
    assert!(!s.history("small:a", Some(pos(0)), None).complete);
    let page = s.history("small:a", Some(pos(1)), None);
    assert!(page.complete);
    assert_eq!(offsets(&page.publications), [2, 3]);
}

#[test]
fn a_namespace_without_history_keeps_nothing_but_still_vouches_for_the_latest_position() {
    let mut s = Sim::new();
    s.publish("none:a");
    s.publish("none:a");
    assert!(s.history("none:a", None, None).publications.is_empty());
    assert!(!s.history("none:a", Some(pos(1)), None).complete);
    assert!(s.history("none:a", Some(pos(2)), None).complete);
}

#[test]
fn expired_history_is_hidden_at_once_and_dropped_on_tick() {
    let mut s = Sim::new();
    s.publish("small:a");
    s.advance(600);
    s.publish("small:a");
    s.advance(400);
    let page = s.history("small:a", None, None);
    assert_eq!(offsets(&page.publications), [2], "the first is 1s old");
    assert!(!s.history("small:a", Some(pos(0)), None).complete);
    assert!(s.history("small:a", Some(pos(1)), None).complete);
    s.tick();
    assert!(!s.history("small:a", Some(pos(0)), None).complete);
    s.advance(600);
    s.tick();
    assert!(s.history("small:a", None, None).publications.is_empty());
    assert!(!s.history("small:a", Some(pos(1)), None).complete);
    assert!(s.history("small:a", Some(pos(2)), None).complete);
}

#[test]
fn history_since_another_epoch_or_a_future_offset_is_incomplete() {
    let mut s = Sim::new();
    s.publish("chat:a");
    let other = Position {
        epoch: "other".into(),
        offset: 0,
    };
    assert!(!s.history("chat:a", Some(other), None).complete);
    assert!(!s.history("chat:a", Some(pos(2)), None).complete);
    assert!(s.history("chat:a", Some(pos(1)), None).complete);
}

#[test]
fn history_limits_return_the_newest_without_since_and_the_oldest_after_since() {
    let mut s = Sim::new();
    for _ in 0..5 {
        s.publish("chat:a");
    }
    assert_eq!(
        offsets(&s.history("chat:a", None, Some(2)).publications),
        [4, 5]
    );
    assert_eq!(
        offsets(&s.history("chat:a", Some(pos(1)), Some(2)).publications),
        [2, 3]
    );
    assert!(s.history("chat:a", None, Some(0)).publications.is_empty());
}

#[test]
fn a_repeated_idem_key_returns_the_original_position_and_stores_nothing() {
    let mut s = Sim::new();
    let (first, _) = s.publish_with(room("chat:a"), Some("k"));
    let (again, events) = s.publish_with(room("chat:a"), Some("k"));
    assert_eq!(
        again,
        PublishAck {
            position: first.position.clone(),
            duplicate: true
        }
    );
    assert!(events.is_empty());
    assert_eq!(s.history("chat:a", None, None).publications.len(), 1);
    let (elsewhere, _) = s.publish_with(room("chat:b"), Some("k"));
    assert!(!elsewhere.duplicate, "keys are per room");
}

#[test]
fn an_idem_key_is_forgotten_after_the_window_with_or_without_a_tick() {
    let mut s = Sim::new();
    s.publish_with(room("chat:a"), Some("k"));
    s.advance(999);
    assert!(s.publish_with(room("chat:a"), Some("k")).0.duplicate);
    s.advance(1);
    assert!(
        !s.publish_with(room("chat:a"), Some("k")).0.duplicate,
        "expired, not yet ticked"
    );
    s.advance(1000);
    s.tick();
    assert!(!s.publish_with(room("chat:a"), Some("k")).0.duplicate);
}

#[test]
fn an_oversize_idem_key_is_refused() {
    let mut s = Sim::new();
    let key = "k".repeat(MAX_IDEM_LEN + 1);
    let cmd = Command::Publish {
        room: room("chat:a"),
        data: data(),
        from: None,
        idem: Some(key),
    };
    let err = s.apply(cmd).unwrap_err();
    assert!(
        matches!(err, RoomsError::IdemTooLong { len, .. } if len == MAX_IDEM_LEN + 1),
        "{err}"
    );
    assert!(matches!(BrokerError::from(err), BrokerError::Invalid(_)));
    assert_eq!(s.rooms.position(&room("chat:a")), pos(0));
}

#[test]
fn joins_and_leaves_are_announced_in_full_presence() {
    let mut s = Sim::new();
    s.attach("e");
    let events = s.join("e", "chat:a", "c1", "u").unwrap();
    assert!(
        matches!(&events[..], [RoomEvent { kind: RoomEventKind::Join(m), .. }] if m.client.as_str() == "c1")
    );
    assert_eq!(
        s.rooms
            .presence(&room("chat:a"), None, u32::MAX)
            .unwrap()
            .members,
        [member("c1", "u")]
    );
    let events = s.leave("chat:a", "c1");
    assert!(
        matches!(&events[..], [RoomEvent { kind: RoomEventKind::Leave(m), .. }] if m.user.as_str() == "u")
    );
    assert!(
        s.rooms
            .presence(&room("chat:a"), None, u32::MAX)
            .unwrap()
            .members
            .is_empty()
    );
}

#[test]
fn rejoining_announces_only_new_info_and_leaving_twice_is_a_no_op() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    // The same member again (a link's resume): silent.
    assert!(s.join("e", "chat:a", "c1", "u").unwrap().is_empty());
    let mut updated = member("c1", "u");
    updated.info = Some(Payload::from_json(r#"{"n":2}"#).unwrap());
    let cmd = Command::Join {
        edge: EdgeId::new("e"),
        room: room("chat:a"),
        member: updated.clone(),
    };
    let events = s.apply(cmd.clone()).unwrap().1;
    assert!(
        matches!(&events[..], [RoomEvent { kind: RoomEventKind::PresenceUpdate(m), .. }] if *m == updated),
        "{events:?}"
    );
    assert!(s.apply(cmd).unwrap().1.is_empty(), "no change, no update");
    assert_eq!(
        s.rooms
            .presence(&room("chat:a"), None, u32::MAX)
            .unwrap()
            .members,
        [updated]
    );
    assert_eq!(s.leave("chat:a", "c1").len(), 1);
    assert!(s.leave("chat:a", "c1").is_empty());
    assert!(s.leave("chat:missing", "c1").is_empty());
}

#[test]
fn counts_presence_tracks_members_without_listing_or_announcing_them() {
    let mut s = Sim::new();
    s.attach("e");
    assert!(s.join("e", "counts:a", "c1", "u").unwrap().is_empty());
    s.join("e", "counts:a", "c2", "u").unwrap();
    let stats = s.rooms.presence_stats(&room("counts:a")).unwrap();
    assert_eq!(
        stats,
        PresenceStats {
            clients: 2,
            users: 1
        }
    );
    let err = s
        .rooms
        .presence(&room("counts:a"), None, u32::MAX)
        .unwrap_err();
    assert!(matches!(
        err,
        RoomsError::PresenceDisabled {
            mode: PresenceMode::Counts,
            ..
        }
    ));
    assert!(s.leave("counts:a", "c1").is_empty());
}

#[test]
fn presence_off_refuses_joins_and_queries() {
    let mut s = Sim::new();
    s.attach("e");
    let err = s.join("e", "off:a", "c1", "u").unwrap_err();
    assert_eq!(
        BrokerError::from(err),
        BrokerError::PresenceDisabled {
            namespace: "off".into()
        }
    );
    assert!(s.rooms.presence(&room("off:a"), None, u32::MAX).is_err());
    assert!(s.rooms.presence_stats(&room("off:a")).is_err());
}

#[test]
fn a_quiet_namespace_tracks_presence_without_events() {
    let mut s = Sim::new();
    s.attach("e");
    assert!(s.join("e", "quiet:a", "c1", "u").unwrap().is_empty());
    assert_eq!(
        s.rooms
            .presence(&room("quiet:a"), None, u32::MAX)
            .unwrap()
            .members,
        [member("c1", "u")]
    );
    assert!(s.leave("quiet:a", "c1").is_empty());
}

#[test]
fn joining_needs_a_live_lease() {
    let mut s = Sim::new();
    let err = s.join("e", "chat:a", "c1", "u").unwrap_err();
    assert_eq!(
        err,
        RoomsError::LeaseExpired {
            edge: EdgeId::new("e")
        }
    );
    s.attach("e");
    s.advance(LEASE_MS);
    assert!(
        s.join("e", "chat:a", "c1", "u").is_err(),
        "expired even before a tick"
    );
    assert!(
        s.apply(Command::RenewEdge {
            edge: EdgeId::new("e")
        })
        .is_err()
    );
}

#[test]
fn detaching_an_edge_removes_only_its_members_at_once_in_order() {
    let mut s = Sim::new();
    s.attach("a");
    s.attach("b");
    s.join("a", "chat:y", "c2", "u").unwrap();
    s.join("a", "chat:x", "c1", "u").unwrap();
    s.join("b", "chat:x", "c3", "v").unwrap();
    let (_, events) = s
        .apply(Command::DetachEdge {
            edge: EdgeId::new("a"),
        })
        .unwrap();
    assert_eq!(left(&events), [("chat:x", "c1"), ("chat:y", "c2")]);
    assert_eq!(
        s.rooms
            .presence(&room("chat:x"), None, u32::MAX)
            .unwrap()
            .members,
        [member("c3", "v")]
    );
    assert!(
        s.apply(Command::DetachEdge {
            edge: EdgeId::new("a")
        })
        .unwrap()
        .1
        .is_empty()
    );
}

#[test]
fn an_edge_whose_lease_runs_out_loses_its_members_on_tick() {
    let mut s = Sim::new();
    s.attach("a");
    s.attach("b");
    s.join("a", "chat:x", "c1", "u").unwrap();
    s.join("b", "chat:x", "c2", "v").unwrap();
    s.advance(LEASE_MS / 2);
    s.apply(Command::RenewEdge {
        edge: EdgeId::new("b"),
    })
    .unwrap();
    s.advance(LEASE_MS / 2 - 1);
    assert!(s.tick().is_empty());
    s.advance(1);
    assert_eq!(left(&s.tick()), [("chat:x", "c1")]);
    assert_eq!(s.rooms.lease_expiry(&EdgeId::new("a")), None);
    assert_eq!(
        s.rooms
            .presence(&room("chat:x"), None, u32::MAX)
            .unwrap()
            .members,
        [member("c2", "v")]
    );
}

#[test]
fn a_member_rejoined_through_another_edge_survives_its_first_edge() {
    let mut s = Sim::new();
    s.attach("a");
    s.attach("b");
    s.join("a", "chat:x", "c1", "u").unwrap();
    s.join("b", "chat:x", "c1", "u").unwrap();
    assert!(
        s.apply(Command::DetachEdge {
            edge: EdgeId::new("a")
        })
        .unwrap()
        .1
        .is_empty()
    );
    assert_eq!(
        left(
            &s.apply(Command::DetachEdge {
                edge: EdgeId::new("b")
            })
            .unwrap()
            .1
        )
        .len(),
        1
    );
}

#[test]
fn an_idle_room_is_collected_and_its_old_positions_no_longer_recover() {
    let mut s = Sim::new();
    s.publish("small:a");
    let old = s.rooms.position(&room("small:a"));
    assert!(s.history("small:a", Some(old.clone()), None).complete);
    s.advance(IDLE_MS);
    s.tick();
    assert!(
        !s.rooms.state().rooms.contains_key(&room("small:a")),
        "collected"
    );
    assert!(!s.history("small:a", Some(pos(0)), None).complete);
    assert!(
        s.history("small:a", Some(old.clone()), None).complete,
        "nothing after it, ever"
    );
    s.publish("chat:other");
    let after_gc = s.rooms.position(&room("small:a"));
    s.publish("small:a");
    assert!(s.history("small:a", Some(after_gc), None).complete);
    assert_eq!(
        s.rooms.state().rooms[&room("small:a")].pruned_through,
        old.offset
    );
}

#[test]
fn members_idem_keys_and_history_keep_a_room_from_being_collected() {
    let mut s = Sim::new();
    s.attach_for("e", 2 * IDLE_MS);
    s.join("e", "chat:m", "c", "u").unwrap();
    s.publish_with(room("none:i"), Some("k"));
    s.publish("small:h");
    s.advance(IDLE_MS);
    s.tick();
    let alive = |s: &Sim, r: &str| s.rooms.state().rooms.contains_key(&room(r));
    assert!(alive(&s, "chat:m"));
    assert!(!alive(&s, "none:i"), "its key expired long before");
    assert!(!alive(&s, "small:h"), "its history expired long before");
    s.leave("chat:m", "c");
    s.advance(IDLE_MS);
    s.tick();
    assert!(!alive(&s, "chat:m"));
}

#[test]
fn a_clock_that_steps_back_is_clamped() {
    let mut s = Sim::new();
    s.publish("small:a");
    s.advance(2000);
    s.tick();
    s.now = 0;
    assert!(s.history("small:a", None, None).publications.is_empty());
    let (ack, _) = s.publish_with(room("small:a"), None);
    assert_eq!(
        s.history("small:a", Some(pos(1)), None).publications.len(),
        1
    );
    assert_eq!(ack.position, pos(2));
}

#[test]
fn a_restored_snapshot_behaves_exactly_like_the_original() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.publish_with(room("chat:a"), Some("k"));
    s.publish("small:b");
    let bytes = postcard::to_stdvec(s.rooms.state()).unwrap();
    let state: RoomsState = postcard::from_bytes(&bytes).unwrap();
    let mut restored = Sim {
        rooms: Rooms::from_state(&config(), state),
        now: s.now,
    };
    assert_eq!(restored.rooms.state(), s.rooms.state());
    for sim in [&mut s, &mut restored] {
        sim.advance(20_000);
    }
    assert_eq!(s.tick(), restored.tick());
    assert_eq!(
        s.publish_with(room("chat:a"), Some("k")),
        restored.publish_with(room("chat:a"), Some("k"))
    );
    assert_eq!(restored.rooms.state(), s.rooms.state());
}

#[test]
fn rooms_errors_map_onto_broker_errors() {
    let e = RoomsError::LeaseExpired {
        edge: EdgeId::new("e"),
    };
    assert_eq!(
        BrokerError::from(e),
        BrokerError::LeaseExpired(EdgeId::new("e"))
    );
}

#[test]
fn presence_pages_follow_client_id_order_and_end_with_no_next() {
    let mut s = Sim::new();
    s.attach("e");
    for c in ["c3", "c1", "c5", "c2", "c4"] {
        s.join("e", "chat:p", c, "u").unwrap();
    }
    let first = s.rooms.presence(&room("chat:p"), None, 2).unwrap();
    let ids = |p: &plaza_proto::cluster::PresencePage| {
        p.members
            .iter()
            .map(|m| m.client.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ["c1", "c2"]);
    let second = s
        .rooms
        .presence(&room("chat:p"), first.next.as_ref(), 2)
        .unwrap();
    assert_eq!(ids(&second), ["c3", "c4"]);
    let last = s
        .rooms
        .presence(&room("chat:p"), second.next.as_ref(), 2)
        .unwrap();
    assert_eq!(ids(&last), ["c5"]);
    assert_eq!(last.next, None);
    let exact = s.rooms.presence(&room("chat:p"), None, 5).unwrap();
    assert_eq!(exact.members.len(), 5);
    assert_eq!(
        exact.next, None,
        "a page that ends exactly at the last member has no next"
    );
}
