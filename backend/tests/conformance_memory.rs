//! The conformance suite against [`MemoryBackend`], one test per guarantee, plus behaviour
//! specific to the in-process backend (queue overflow, link replacement, the ticker's life).

use std::time::Duration;

use plaza_backend::conformance::{self, LEASE};
use plaza_backend::memory::{MemoryBackend, MemoryOptions};
use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_proto::cluster::{BrokerError, LinkEvent, RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Payload, RoomName, UserId};

fn backend() -> MemoryBackend {
    MemoryBackend::new(conformance::rooms_config())
}

macro_rules! conformance_tests {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        $(#[$attr])*
        async fn $name() {
            conformance::$name(&backend()).await;
        }
    )*};
}

conformance_tests!(
    #[tokio::test]
    snapshot_plus_changes_equals_the_state,
    #[tokio::test]
    keys_expire_after_their_ttl,
    #[tokio::test]
    compare_and_set_conflicts_name_the_current_version,
    #[tokio::test]
    tied_keys_leave_with_their_connection,
    #[tokio::test]
    state_limits_and_non_state_rooms_are_refused,
    #[tokio::test]
    exactly_one_user_offline_after_the_last_tab_closes,
    #[tokio::test]
    a_presence_update_emits_presence_updated_with_the_new_info,
    #[tokio::test]
    a_reload_inside_the_debounce_emits_no_leave_or_offline,
    #[tokio::test]
    occupied_and_vacated_pair_up_and_positions_strictly_increase,
    #[tokio::test]
    the_feed_refuses_future_positions_and_flags_other_epochs,
    #[tokio::test]
    offsets_increase_within_one_epoch,
    #[tokio::test]
    publications_reach_every_subscribed_edge_once_in_order,
    #[tokio::test]
    an_edge_receives_each_event_once_however_often_it_subscribed,
    #[tokio::test]
    an_unsubscribed_edge_receives_no_more_events,
    #[tokio::test]
    presence_events_are_ordered_with_publications,
    #[tokio::test]
    idempotent_publish_is_stored_and_delivered_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    history_and_live_merge_without_gaps_or_duplicates,
    #[tokio::test]
    history_past_the_size_window_is_incomplete,
    #[tokio::test]
    history_since_another_epoch_is_incomplete,
    #[tokio::test]
    history_since_an_expired_position_is_incomplete,
    #[tokio::test]
    history_without_since_returns_the_newest_oldest_first,
    #[tokio::test]
    presence_lists_members_and_counts_users_across_edges,
    #[tokio::test]
    presence_pages_list_every_member_once_in_client_id_order,
    #[tokio::test]
    rejoining_replaces_the_info_and_announces_only_a_change,
    #[tokio::test]
    counts_presence_counts_members_without_listing_them,
    #[tokio::test]
    presence_off_refuses_joins,
    #[tokio::test]
    quiet_namespace_tracks_presence_without_events,
    #[tokio::test]
    leave_emits_a_leave_event_at_once,
    #[tokio::test]
    closing_a_link_removes_its_members_at_once,
    #[tokio::test]
    a_dropped_link_loses_its_members_within_the_lease,
    #[tokio::test]
    a_user_disconnect_reaches_every_attached_edge_once,
    #[tokio::test]
    rooms_are_listed_in_name_order_with_counts_and_paginated,
    #[tokio::test]
    ephemeral_publications_reach_subscribers_in_order_and_are_never_stored,
    #[tokio::test]
    durable_and_ephemeral_publications_keep_their_own_orders,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_one_shared_backend() {
    conformance::run(&backend()).await;
}

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

fn member(client: &str) -> Member {
    Member {
        client: ClientId::new(client),
        user: UserId::new("u"),
        info: None,
    }
}

fn data() -> Payload {
    Payload::from_json("1").unwrap()
}

fn edge(id: &str) -> AttachOptions {
    AttachOptions {
        edge: EdgeId::new(id),
        lease: LEASE,
    }
}

#[tokio::test]
async fn a_link_whose_queue_overflows_has_its_stream_end_and_its_members_leave() {
    let options = MemoryOptions {
        event_queue: 4,
        ..MemoryOptions::default()
    };
    let backend = MemoryBackend::with_options(conformance::rooms_config(), options);
    let (slow, mut slow_events) = backend.attach(edge("slow")).await.unwrap();
    let (watcher, mut watcher_events) = backend.attach(edge("watcher")).await.unwrap();
    let chat = room("conf:overflow");
    slow.subscribe(chat.clone()).await.unwrap();
    slow.join(chat.clone(), member("slow-client"))
        .await
        .unwrap();
    watcher.subscribe(chat.clone()).await.unwrap();
    let mut left = false;
    for _ in 0..10 {
        watcher
            .publish(chat.clone(), data(), None, None)
            .await
            .unwrap();
        // The memory backend routes before `publish` returns; drain so the watcher keeps up.
        while let Ok(event) = watcher_events.try_recv() {
            left |= matches!(
                event,
                LinkEvent::Room(RoomEvent { kind: RoomEventKind::Leave(m), .. })
                    if m.client.as_str() == "slow-client"
            );
        }
    }
    let mut received = 0;
    while slow_events.recv().await.is_some() {
        received += 1;
    }
    assert_eq!(
        received, 4,
        "the queued events are delivered, then the stream ends"
    );
    let unavailable = slow.publish(chat.clone(), data(), None, None).await;
    assert!(
        matches!(unavailable, Err(BrokerError::Unavailable(_))),
        "{unavailable:?}"
    );
    assert!(
        left,
        "the overflowed edge was detached: its member left at once"
    );
    assert!(
        watcher
            .presence(chat, None, u32::MAX)
            .await
            .map(|p| p.members)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn attaching_an_edge_id_again_ends_the_old_stream_and_keeps_its_members() {
    let backend = backend();
    let (old, mut old_events) = backend.attach(edge("e")).await.unwrap();
    let chat = room("conf:reattach");
    old.subscribe(chat.clone()).await.unwrap();
    old.join(chat.clone(), member("c")).await.unwrap();
    assert!(old_events.recv().await.is_some(), "the join event");
    let (new, mut new_events) = backend.attach(edge("e")).await.unwrap();
    assert!(
        old_events.recv().await.is_none(),
        "the replaced link's stream ends"
    );
    let closed = old
        .presence(chat.clone(), None, u32::MAX)
        .await
        .map(|p| p.members);
    assert_eq!(closed, Err(BrokerError::Unavailable("link closed".into())));
    assert_eq!(
        new.presence(chat.clone(), None, u32::MAX)
            .await
            .map(|p| p.members)
            .unwrap(),
        [member("c")]
    );
    new.publish(chat.clone(), data(), None, None).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(100), new_events.recv()).await;
    assert!(
        quiet.is_err(),
        "subscriptions belong to the link, not the edge id"
    );
}

#[tokio::test]
async fn a_link_whose_receiver_is_dropped_still_answers_calls() {
    let backend = backend();
    let (link, events) = backend.attach(edge("e")).await.unwrap();
    let chat = room("conf:deaf");
    link.subscribe(chat.clone()).await.unwrap();
    drop(events);
    link.publish(chat.clone(), data(), None, None)
        .await
        .unwrap();
    let page = link.history(chat, None, None).await.unwrap();
    assert_eq!(page.publications.len(), 1);
}

#[tokio::test]
async fn every_backend_instance_has_its_own_epoch() {
    let (a, _a_events) = backend().attach(edge("e")).await.unwrap();
    let (b, _b_events) = backend().attach(edge("e")).await.unwrap();
    let chat = room("conf:epoch");
    let pa = a
        .publish(chat.clone(), data(), None, None)
        .await
        .unwrap()
        .position;
    let pb = b.publish(chat, data(), None, None).await.unwrap().position;
    assert_ne!(
        pa.epoch, pb.epoch,
        "a restarted dev server must not claim the old history"
    );
}

#[tokio::test]
async fn the_ticker_stops_when_the_backend_and_its_links_are_dropped() {
    let tick = Duration::from_millis(10);
    let options = MemoryOptions {
        tick,
        ..MemoryOptions::default()
    };
    let backend = MemoryBackend::with_options(conformance::rooms_config(), options);
    let metrics = tokio::runtime::Handle::current().metrics();
    let (link, events) = backend.attach(edge("e")).await.unwrap();
    assert_eq!(metrics.num_alive_tasks(), 1, "the ticker runs");
    drop(backend);
    tokio::time::sleep(tick * 5).await;
    assert_eq!(
        metrics.num_alive_tasks(),
        1,
        "a live link keeps the ticker running"
    );
    drop((link, events));
    tokio::time::sleep(tick * 5).await;
    assert_eq!(
        metrics.num_alive_tasks(),
        0,
        "nothing holds the backend any more"
    );
}

#[tokio::test]
async fn a_disconnect_request_to_a_full_link_cuts_it_off_and_reaches_the_others() {
    let options = MemoryOptions {
        event_queue: 1,
        ..MemoryOptions::default()
    };
    let backend = MemoryBackend::with_options(conformance::rooms_config(), options);
    let (full, mut full_events) = backend.attach(edge("full")).await.unwrap();
    let (caller, mut caller_events) = backend.attach(edge("caller")).await.unwrap();
    let chat = room("conf:full");
    full.subscribe(chat.clone()).await.unwrap();
    full.join(chat.clone(), member("stuck")).await.unwrap();
    caller
        .disconnect_user(UserId::new("ann"), "bye".into())
        .await
        .unwrap();
    let disconnect = LinkEvent::DisconnectUser {
        user: UserId::new("ann"),
        reason: "bye".into(),
    };
    assert_eq!(caller_events.recv().await, Some(disconnect));
    assert!(
        matches!(full_events.recv().await, Some(LinkEvent::Room(_))),
        "the join event filled the queue"
    );
    assert_eq!(
        full_events.recv().await,
        None,
        "a link with no room for the request is cut off, as for a room event"
    );
    assert!(
        caller
            .presence(chat, None, u32::MAX)
            .await
            .map(|p| p.members)
            .unwrap()
            .is_empty()
    );
}
