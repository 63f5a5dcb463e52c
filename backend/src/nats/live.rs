//! Live delivery: one task per subscribed room follows its republished subject, checks the
//! publication chain, and catches up from the stream when a message was missed; plus the
//! user-disconnect subject every edge listens to.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use plaza_proto::cluster::{LinkEvent, RoomEvent, RoomEventKind};
use plaza_proto::{RoomName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::link::*;
use super::presence::{PresenceEvent, presence_page};
use plaza_rooms::config::PresenceMode;

/// When a room task re-checks the stream after subscribing (interest may still be on its way
/// to the server that republishes, in a cluster).
pub(super) const SETTLE_CHECKS: [Duration; 2] =
    [Duration::from_millis(250), Duration::from_secs(1)];

/// A user-disconnect request.
#[derive(Serialize, Deserialize)]
pub(super) struct Disconnect {
    pub user: UserId,
    pub reason: String,
}

/// Follows one room: delivers its live events in order, catching up from the stream whenever
/// one was missed.
pub(super) async fn follow(
    link: Weak<LinkInner>,
    room: RoomName,
    epoch: String,
    mut last: u64,
    mut subscriber: async_nats::Subscriber,
    mut reconnected: broadcast::Receiver<()>,
) {
    let mut checks = SETTLE_CHECKS.iter();
    let mut next_check = checks.next().map(|d| tokio::time::Instant::now() + *d);
    // A presence resync that failed (the stream unreachable): retried with the checks.
    let mut resync_due = false;
    loop {
        let check = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = subscriber.next() => {
                let Some(message) = message else { return };
                let Some(inner) = link.upgrade() else { return };
                if message.subject.ends_with(".e") {
                    // Ephemeral: outside the room's offsets; never waits for a catch-up.
                    if let Some(e) = super::ephemeral::decode(&room, &message) {
                        inner.send_ephemeral(LinkEvent::Ephemeral(e));
                    }
                    continue;
                }
                let sequence = header_u64(message.headers.as_ref(), SEQUENCE).unwrap_or(0);
                if message.subject.ends_with(".p") {
                    if let Ok(event) = serde_json::from_slice::<PresenceEvent>(&message.payload) {
                        let kind = if event.update {
                            RoomEventKind::PresenceUpdate(event.member)
                        } else if event.join {
                            RoomEventKind::Join(event.member)
                        } else {
                            RoomEventKind::Leave(event.member)
                        };
                        inner.send(LinkEvent::Room(RoomEvent { room: room.clone(), epoch: epoch.clone(), kind }));
                    }
                    continue;
                }
                let Some((prev, publication)) =
                    publication(sequence, message.headers.as_ref(), &message.payload)
                else {
                    continue;
                };
                if sequence <= last {
                    continue; // delivered already (by a catch-up)
                }
                if prev != last {
                    match catch_up(&inner, &room, &epoch, &mut last).await {
                        CatchUp::Done => {}
                        CatchUp::Ended => return,
                        CatchUp::Failed => {
                            // The stream is unreachable now: deliver nothing past the gap; it
                            // is all in the stream, read by the retry (or the next mismatch).
                            next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                            continue;
                        }
                    }
                }
                if sequence > last && prev == last {
                    last = sequence;
                    inner.send(LinkEvent::Room(RoomEvent {
                        room: room.clone(),
                        epoch: epoch.clone(),
                        kind: RoomEventKind::Publication(publication),
                    }));
                }
            }
            _ = reconnected.recv() => {
                let Some(inner) = link.upgrade() else { return };
                // Join/leave events published while disconnected are gone (they are not in
                // the publication chain): send the members now instead. Events received
                // after it apply on top (a join of a listed member or a leave of an absent
                // one changes nothing), so a list built from both ends exact.
                resync_due = !resync_presence(&inner, &room, &epoch).await;
                if resync_due {
                    next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                }
                match catch_up(&inner, &room, &epoch, &mut last).await {
                    CatchUp::Done => {}
                    CatchUp::Ended => return,
                    CatchUp::Failed => {
                        next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                    }
                }
            }
            () = check => {
                next_check = checks.next().map(|d| tokio::time::Instant::now() + *d);
                let Some(inner) = link.upgrade() else { return };
                if resync_due {
                    resync_due = !resync_presence(&inner, &room, &epoch).await;
                    if resync_due {
                        next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                    }
                }
                match catch_up(&inner, &room, &epoch, &mut last).await {
                    CatchUp::Done => {}
                    CatchUp::Ended => return,
                    CatchUp::Failed => {
                        next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                    }
                }
            }
        }
    }
}

/// Sends `room`'s members as a presence resync if its namespace announces join/leave;
/// false if they could not be read now (retry later).
async fn resync_presence(inner: &LinkInner, room: &RoomName, epoch: &str) -> bool {
    let ns = inner.shared.namespaces.of(room);
    if !(ns.presence == PresenceMode::Full && ns.join_leave) {
        return true;
    }
    match presence_page(&inner.shared, room, None, crate::PRESENCE_RESYNC_PAGE).await {
        Ok(page) => {
            inner.send(LinkEvent::Room(RoomEvent {
                room: room.clone(),
                epoch: epoch.to_owned(),
                kind: RoomEventKind::PresenceResync(page),
            }));
            true
        }
        Err(e) => {
            tracing::debug!(room = %room, error = %e, "presence resync failed; retrying");
            false
        }
    }
}

/// How soon a catch-up that could not reach the stream is tried again.
pub(super) const CATCH_UP_RETRY: Duration = Duration::from_millis(300);

/// How a catch-up went.
pub(super) enum CatchUp {
    /// Everything after `last` that the stream holds was delivered.
    Done,
    /// The stream could not be read now; nothing was skipped, try again later.
    Failed,
    /// The missed publications were pruned before they could be read: the link ended.
    Ended,
}

/// Delivers the publications after `last` from the stream, in order. When they can no longer
/// all be read (pruned meanwhile) the link ends, so the edge's clients recover themselves
/// rather than miss them silently.
pub(super) async fn catch_up(
    inner: &LinkInner,
    room: &RoomName,
    epoch: &str,
    last: &mut u64,
) -> CatchUp {
    match publications_after(inner, room, *last).await {
        Ok((publications, complete, _)) => {
            if !publications.is_empty() && !complete {
                inner.end(&format!(
                    "room {room}: publications after offset {last} were pruned before this edge \
                     could read them"
                ));
                return CatchUp::Ended;
            }
            for publication in publications {
                *last = publication.offset;
                inner.send(LinkEvent::Room(RoomEvent {
                    room: room.clone(),
                    epoch: epoch.to_owned(),
                    kind: RoomEventKind::Publication(publication),
                }));
            }
            CatchUp::Done
        }
        Err(e) => {
            tracing::debug!(room = %room, error = %e, "catch-up failed; retrying");
            CatchUp::Failed
        }
    }
}

pub(super) async fn forward_disconnects(
    link: Weak<LinkInner>,
    mut subscriber: async_nats::Subscriber,
) {
    while let Some(message) = subscriber.next().await {
        let Some(inner) = link.upgrade() else { return };
        if let Ok(d) = serde_json::from_slice::<Disconnect>(&message.payload) {
            inner.send(LinkEvent::DisconnectUser {
                user: d.user,
                reason: d.reason,
            });
        }
    }
}
