//! The conformance suite: the [`Backend`] contract as executable checks.
//!
//! Every backend (memory, Raft cluster, NATS) runs these against itself, so the guarantees of
//! DESIGN.md §2 are proven once per implementation rather than assumed. Each check is a public
//! async function over any `B: Backend`, uses fresh random room, edge and client names (so the
//! suite can share one long-lived server, such as a NATS cluster, between runs and with other
//! checks), and panics with a message naming the broken guarantee.
//!
//! A backend under test must be built with [`rooms_config`], and must be able to expire a lease
//! of [`LEASE`] within [`SLACK`] of its end. [`run`] runs everything in well under 15 s.
//!
//! - `order.rs`: offsets and epochs, fan-out once per edge and in order,
//!   subscription bookkeeping, presence events in order with publications, idempotency.
//! - `history.rs`: the no-gap merge of history and live events, the size and TTL
//!   windows, epochs, limits.
//! - `presence.rs`: members and counts, presence modes, and members leaving on
//!   `leave`, `close` and lease expiry.
//! - `events.rs`: lifecycle events and the event feed (debounce, pairing, positions); run
//!   by [`run_events`] on the backends that keep a feed.
//! - `ephemeral.rs`: ephemeral publications reach the subscribed edges once, in publisher
//!   order, are never stored, and keep out of the durable order.
//! - `state.rs`: live-state rooms: snapshot + changes = the tier's map, TTL expiry,
//!   compare-and-set conflicts, tied keys leaving with their connection, limits.
//! - `admin.rs`: what the server HTTP API needs: a user disconnect reaching every edge once,
//!   and the paginated listing of active rooms.

mod admin;
mod ephemeral;
mod events;
mod history;
mod order;
mod presence;
mod state;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Backend;
use plaza_proto::events::EventType;
use plaza_rooms::config::{NamespaceOverrides, PresenceMode, RoomsConfig, StateOptions};

pub use admin::{
    a_user_disconnect_reaches_every_attached_edge_once,
    rooms_are_listed_in_name_order_with_counts_and_paginated,
};
pub use ephemeral::{
    durable_and_ephemeral_publications_keep_their_own_orders,
    ephemeral_publications_reach_subscribers_in_order_and_are_never_stored,
};
pub use events::{
    a_presence_update_emits_presence_updated_with_the_new_info,
    a_reload_inside_the_debounce_emits_no_leave_or_offline,
    exactly_one_user_offline_after_the_last_tab_closes,
    occupied_and_vacated_pair_up_and_positions_strictly_increase,
    the_feed_refuses_future_positions_and_flags_other_epochs,
};
pub use history::{
    history_and_live_merge_without_gaps_or_duplicates, history_past_the_size_window_is_incomplete,
    history_since_an_expired_position_is_incomplete, history_since_another_epoch_is_incomplete,
    history_without_since_returns_the_newest_oldest_first,
};
pub use order::{
    an_edge_receives_each_event_once_however_often_it_subscribed,
    an_unsubscribed_edge_receives_no_more_events, idempotent_publish_is_stored_and_delivered_once,
    offsets_increase_within_one_epoch, presence_events_are_ordered_with_publications,
    publications_reach_every_subscribed_edge_once_in_order,
};
pub use presence::{
    a_dropped_link_loses_its_members_within_the_lease, closing_a_link_removes_its_members_at_once,
    counts_presence_counts_members_without_listing_them, leave_emits_a_leave_event_at_once,
    presence_lists_members_and_counts_users_across_edges, presence_off_refuses_joins,
    presence_pages_list_every_member_once_in_client_id_order,
    quiet_namespace_tracks_presence_without_events,
    rejoining_replaces_the_info_and_announces_only_a_change,
};
pub use state::{
    Map as StateMap, compare_and_set_conflicts_name_the_current_version,
    keys_expire_after_their_ttl, snapshot_plus_changes_equals_the_state,
    state_limits_and_non_state_rooms_are_refused, tied_keys_leave_with_their_connection,
};

/// The lease every edge of the suite attaches with: short, so lease expiry is testable.
pub const LEASE: Duration = Duration::from_secs(1);

/// How late a backend may apply a time-based effect (lease or history expiry): its tick plus
/// scheduling noise.
pub const SLACK: Duration = Duration::from_millis(700);

/// History TTL of the `ttl` namespace.
pub const SHORT_TTL: Duration = Duration::from_secs(1);

/// The lifecycle events' debounce in [`rooms_config`]: long enough that a leave and a join
/// made back to back always fall inside it, short enough for a quick suite.
pub const EVENT_DEBOUNCE: Duration = Duration::from_secs(2);

/// Keys per room of the `state` namespace.
pub const STATE_MAX_KEYS: usize = 5;

/// Largest value of the `state` namespace, in bytes.
pub const STATE_MAX_VALUE: usize = 64;

/// The TTL the state checks set (the `state` namespace allows up to 10 s).
pub const STATE_TTL: Duration = Duration::from_secs(1);

/// History size of the `conf` namespace.
pub const CONF_HISTORY: usize = 10;

/// The namespaces the suite uses; backends under test must be built with this.
///
/// - `conf`: [`CONF_HISTORY`] publications for 60 s, full presence with join/leave events.
/// - `log`: 1000 publications (room for concurrent publishers in the merge check).
/// - `ttl`: 10 publications for [`SHORT_TTL`].
/// - `upd`: like `conf`, emitting `member.joined` and `presence.updated` into the event feed.
/// - `counts`: presence counts only. `nopres`: presence off. `quiet`: no join/leave events.
/// - `state`: live-state rooms: [`STATE_MAX_KEYS`] keys of at most [`STATE_MAX_VALUE`] bytes,
///   TTLs up to 10 s, 1000 changes of history.
pub fn rooms_config() -> RoomsConfig {
    let history = |size, ttl| NamespaceOverrides {
        history_size: Some(size),
        history_ttl: Some(ttl),
        ..NamespaceOverrides::default()
    };
    let presence = |mode| NamespaceOverrides {
        presence: Some(mode),
        ..history(10, MINUTE)
    };
    let namespaces = BTreeMap::from([
        ("conf".to_owned(), history(CONF_HISTORY, MINUTE)),
        ("log".to_owned(), history(1000, MINUTE)),
        ("ttl".to_owned(), history(10, SHORT_TTL)),
        ("counts".to_owned(), presence(PresenceMode::Counts)),
        ("nopres".to_owned(), presence(PresenceMode::Off)),
        (
            "upd".to_owned(),
            NamespaceOverrides {
                events: Some(vec![EventType::MemberJoined, EventType::PresenceUpdated]),
                ..history(10, MINUTE)
            },
        ),
        (
            "quiet".to_owned(),
            NamespaceOverrides {
                join_leave: Some(false),
                ..history(10, MINUTE)
            },
        ),
    ]);
    let mut namespaces = namespaces;
    namespaces.insert(
        "state".to_owned(),
        NamespaceOverrides {
            state: Some(StateOptions {
                enabled: true,
                max_keys: STATE_MAX_KEYS,
                max_value_bytes: STATE_MAX_VALUE,
                max_ttl: Duration::from_secs(10),
                conflate_per_second: 0,
            }),
            ..history(1000, MINUTE)
        },
    );
    let mut config = RoomsConfig {
        namespaces,
        ..RoomsConfig::default()
    };
    config.events.debounce = EVENT_DEBOUNCE;
    config
}

const MINUTE: Duration = Duration::from_secs(60);

/// Runs every check in turn against `backend`.
pub async fn run<B: Backend>(backend: &B) {
    offsets_increase_within_one_epoch(backend).await;
    publications_reach_every_subscribed_edge_once_in_order(backend).await;
    an_edge_receives_each_event_once_however_often_it_subscribed(backend).await;
    an_unsubscribed_edge_receives_no_more_events(backend).await;
    presence_events_are_ordered_with_publications(backend).await;
    idempotent_publish_is_stored_and_delivered_once(backend).await;

    history_and_live_merge_without_gaps_or_duplicates(backend).await;
    history_past_the_size_window_is_incomplete(backend).await;
    history_since_another_epoch_is_incomplete(backend).await;
    history_since_an_expired_position_is_incomplete(backend).await;
    history_without_since_returns_the_newest_oldest_first(backend).await;

    presence_lists_members_and_counts_users_across_edges(backend).await;
    presence_pages_list_every_member_once_in_client_id_order(backend).await;
    rejoining_replaces_the_info_and_announces_only_a_change(backend).await;
    counts_presence_counts_members_without_listing_them(backend).await;
    presence_off_refuses_joins(backend).await;
    quiet_namespace_tracks_presence_without_events(backend).await;
    leave_emits_a_leave_event_at_once(backend).await;
    closing_a_link_removes_its_members_at_once(backend).await;
    a_dropped_link_loses_its_members_within_the_lease(backend).await;

    ephemeral_publications_reach_subscribers_in_order_and_are_never_stored(backend).await;
    durable_and_ephemeral_publications_keep_their_own_orders(backend).await;

    a_user_disconnect_reaches_every_attached_edge_once(backend).await;
    rooms_are_listed_in_name_order_with_counts_and_paginated(backend).await;
}

/// Runs the live-state room checks (a few seconds: they wait out a TTL and a lease) against a
/// backend that has state rooms.
pub async fn run_state<B: Backend>(backend: &B) {
    snapshot_plus_changes_equals_the_state(backend).await;
    compare_and_set_conflicts_name_the_current_version(backend).await;
    state_limits_and_non_state_rooms_are_refused(backend).await;
    keys_expire_after_their_ttl(backend).await;
    tied_keys_leave_with_their_connection(backend).await;
}

/// Runs the lifecycle event checks (about 15 s: they wait out debounces) against a backend
/// that keeps an event feed (memory, the Raft cluster).
pub async fn run_events<B: Backend>(backend: &B) {
    the_feed_refuses_future_positions_and_flags_other_epochs(backend).await;
    exactly_one_user_offline_after_the_last_tab_closes(backend).await;
    a_presence_update_emits_presence_updated_with_the_new_info(backend).await;
    a_reload_inside_the_debounce_emits_no_leave_or_offline(backend).await;
    occupied_and_vacated_pair_up_and_positions_strictly_increase(backend).await;
}
