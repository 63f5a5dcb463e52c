//! The link's driver: reads the current broker connection's frames, keeps it alive, and when it
//! is lost dials another broker and resumes every subscribed room gap-free.
//!
//! ```text
//!   drive ─▶ read_frames (events, results) + keep_alive + retry_leaves ─▶ lost ─▶ dial
//!         ─▶ resume ─▶ drive …
//!   resume: finish failed leaves ─▶ re-join members ─▶ resume_room × N (≤ RESUME_CONCURRENCY)
//!   resume_room: subscribe ─▶ presence snapshot ─▶ missed publications ─▶ presence resync ─▶ held
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use plaza_proto::cluster::{
    BrokerError, Call, CallOk, EdgeRequest, LinkEvent, RoomEvent, RoomEventKind,
};
use plaza_proto::{ClientId, Member, Position, RoomName};

use plaza_net::framing::FrameReader;
use plaza_proto::cluster::BrokerEvent;

use super::conn::{BrokerConn, DialError};
use super::link::{LinkInner, Track};
use super::{AVOID_LOST_FOR, RECONNECT_PAUSE};

/// The link's driver: reads the session's frames, keeps it alive, and replaces it when lost.
pub(super) async fn drive(
    link: std::sync::Weak<LinkInner>,
    mut session: BrokerConn,
    mut reader: FrameReader,
) {
    let mut resumed = true; // the first session has nothing to resume
    loop {
        let Some(inner) = link.upgrade() else { return };
        inner.current.send_replace(Some(session.clone()));
        let keepalive = tokio::spawn(keep_alive(session.clone(), inner.lease));
        let leaves = tokio::spawn(retry_leaves(link.clone(), session.clone()));
        let watchdog = tokio::spawn(watchdog(
            session.clone(),
            inner.backend.inner.options.reroute_after,
        ));
        let resume = (!resumed).then(|| tokio::spawn(resume(Arc::clone(&inner), session.clone())));
        drop(inner);
        read_frames(&link, &session, &mut reader).await;
        keepalive.abort();
        leaves.abort();
        watchdog.abort();
        if let Some(resume) = resume {
            resume.abort();
        }
        session.close("session lost");
        let Some(inner) = link.upgrade() else { return };
        if inner.ended() {
            return;
        }
        inner.current.send_replace(None);
        let lost_at = Instant::now();
        tracing::warn!(broker = session.broker(), "lost the broker; reconnecting");
        let give_up = Instant::now() + inner.backend.inner.options.give_up_after;
        let dialled = loop {
            let avoid = (lost_at.elapsed() < AVOID_LOST_FOR).then(|| session.broker());
            match inner.backend.dial_any(&inner.hello, avoid).await {
                Ok(dialled) => break Some(dialled),
                Err(DialError::Incompatible(why)) => {
                    inner.end(&why);
                    break None;
                }
                Err(DialError::Unavailable(why)) if Instant::now() >= give_up => {
                    inner.end(&format!("no broker reachable: {why}"));
                    break None;
                }
                Err(DialError::Unavailable(_)) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
            if inner.ended() {
                break None;
            }
        };
        let Some((next, next_reader)) = dialled else {
            return;
        };
        tracing::info!(
            broker = next.broker(),
            from = session.broker(),
            reattach_ms = lost_at.elapsed().as_millis() as u64,
            "failover: edge re-route — re-attached to the broker tier; resuming"
        );
        (session, reader) = (next, next_reader);
        resumed = false;
    }
}

/// Handles the session's frames until it ends.
pub(super) async fn read_frames(
    link: &std::sync::Weak<LinkInner>,
    session: &BrokerConn,
    reader: &mut FrameReader,
) {
    loop {
        let frame = match reader.next::<BrokerEvent>().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "broker session ended");
                return;
            }
        };
        let Some(inner) = link.upgrade() else { return };
        match frame {
            BrokerEvent::Result { req, result } => {
                session.note_result(&result);
                if let Some(pending) = session.take_pending(req) {
                    // A subscription is tracked before the next frame (possibly the room's
                    // first event) is read.
                    if let (Some(room), Ok(CallOk::Subscribed(position))) =
                        (pending.subscribe, &result)
                    {
                        inner.state().rooms.entry(room).or_insert_with(|| Track {
                            last: position.clone(),
                            resuming: None,
                        });
                    }
                    let _ = pending.reply.send(result);
                }
            }
            BrokerEvent::Room(event) => inner.state().deliver(event),
            BrokerEvent::Ephemeral(e) => inner.state().deliver_ephemeral(e),
            BrokerEvent::DisconnectUser { user, reason } => inner
                .state()
                .send(LinkEvent::DisconnectUser { user, reason }),
            BrokerEvent::Welcome { .. } | BrokerEvent::Incompatible { .. } => {
                tracing::warn!("unexpected handshake frame from the broker");
                return;
            }
        }
    }
}

/// How often a live session retries leaves whose call failed.
const LEAVE_RETRY_EVERY: Duration = Duration::from_millis(250);

/// Retries, on the live session, leaves whose call failed. `resume` sends the ones that failed
/// before a switch; a leave can also fail *after* it ran (its call was in flight on the lost
/// session, or no broker answered in time), and without this it would wait for the next broker
/// switch — a member whose client is gone, kept for as long as the edge lives. A member that
/// joined again meanwhile is not left (its join superseded the failed leave).
pub(super) async fn retry_leaves(link: std::sync::Weak<LinkInner>, session: BrokerConn) {
    let mut interval = tokio::time::interval(LEAVE_RETRY_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = link.upgrade() else { return };
        let pending: Vec<(RoomName, ClientId)> = {
            let mut state = inner.state();
            if state.unfinished_leaves.is_empty() {
                continue;
            }
            let taken: Vec<(RoomName, ClientId)> = state.unfinished_leaves.drain().collect();
            taken
                .into_iter()
                .filter(|key| !state.members.contains_key(key))
                .collect()
        };
        for chunk in pending.chunks(RESUME_CONCURRENCY) {
            let calls = chunk.iter().map(|(room, client)| {
                session.call(Call::Leave {
                    room: room.clone(),
                    client: client.clone(),
                })
            });
            let results = futures_util::future::join_all(calls).await;
            let mut state = inner.state();
            for (key, result) in chunk.iter().zip(results) {
                if !matches!(result, Ok(Ok(_))) && !state.members.contains_key(key) {
                    state.unfinished_leaves.insert(key.clone());
                }
            }
        }
    }
}

/// Sends keep-alives often enough that the broker renews the lease.
pub(super) async fn keep_alive(session: BrokerConn, lease: Duration) {
    let period = (lease / 4).max(Duration::from_millis(50));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !session.notify(EdgeRequest::KeepAlive).await {
            return;
        }
    }
}

/// Closes the session once its broker has failed to serve for `reroute_after` — calls
/// unanswered (a silent broker) or answered "unavailable" only (a broker that cannot reach the
/// leader, or a leader without a majority) — so the driver re-attaches to another broker. Its
/// calls are retried there when repeating them is harmless (`link.rs`), and the resume keeps
/// the event stream gap-free.
pub(super) async fn watchdog(session: BrokerConn, reroute_after: Duration) {
    let period = (reroute_after / 4).max(Duration::from_millis(10));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let stuck = session.stuck_for();
        if stuck >= reroute_after {
            tracing::warn!(
                broker = session.broker(),
                stuck_ms = stuck.as_millis() as u64,
                "failover: edge re-route — the broker has not served for too long; moving"
            );
            session.close("the broker cannot commit; re-routing");
            return;
        }
        if !session.alive() {
            return;
        }
    }
}

/// Most resume calls in flight at once.
const RESUME_CONCURRENCY: usize = 64;

/// Brings a new session up to date: finishes leaves that failed, re-joins the link's members,
/// then resumes every subscribed room from its last delivered offset. If the session fails
/// meanwhile it is closed, and the driver starts over on the next one.
pub(super) async fn resume(link: Arc<LinkInner>, session: BrokerConn) {
    let started = Instant::now();
    let leaves: Vec<(RoomName, ClientId)> = link.state().unfinished_leaves.drain().collect();
    for chunk in leaves.chunks(RESUME_CONCURRENCY) {
        let calls = chunk.iter().map(|(room, client)| {
            session.call(Call::Leave {
                room: room.clone(),
                client: client.clone(),
            })
        });
        let results = futures_util::future::join_all(calls).await;
        if results.iter().any(|r| !matches!(r, Ok(Ok(_)))) {
            // Keep them for the next session.
            link.state().unfinished_leaves.extend(chunk.iter().cloned());
        }
    }
    let (rooms, members) = {
        let mut state = link.state();
        for track in state.rooms.values_mut() {
            track.resuming = Some(Vec::new());
        }
        let rooms: Vec<(RoomName, Position)> = state
            .rooms
            .iter()
            .map(|(room, track)| (room.clone(), track.last.clone()))
            .collect();
        let members: Vec<(RoomName, Member)> = state
            .members
            .iter()
            .map(|((room, _), member)| (room.clone(), member.clone()))
            .collect();
        (rooms, members)
    };
    for chunk in members.chunks(RESUME_CONCURRENCY) {
        let joins = chunk.iter().map(|(room, member)| {
            session.call(Call::Join {
                room: room.clone(),
                member: member.clone(),
            })
        });
        for joined in futures_util::future::join_all(joins).await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "re-joining a member failed"),
                Err(_) => return, // session lost: the driver starts over
            }
        }
    }
    for chunk in rooms.chunks(RESUME_CONCURRENCY) {
        let resumes = chunk
            .iter()
            .map(|(room, last)| resume_room(&link, &session, room, last));
        for resumed in futures_util::future::join_all(resumes).await {
            if let Err(why) = resumed {
                tracing::warn!(why, "resume failed; trying another session");
                session.close("resume failed");
                return;
            }
        }
    }
    tracing::info!(
        rooms = rooms.len(),
        members = members.len(),
        took = ?started.elapsed(),
        "resumed on the new broker"
    );
}

/// Resumes one room: subscribe, read its members and what was missed since `last`, deliver
/// the missed publications, a presence resync (join/leave events during the switch are not
/// replayed; the edge pushes the members to its presence subscribers instead), then the events
/// held back meanwhile.
pub(super) async fn resume_room(
    link: &LinkInner,
    session: &BrokerConn,
    room: &RoomName,
    last: &Position,
) -> Result<(), String> {
    let lost = |_| "session lost".to_string();
    match session
        .call(Call::Subscribe { room: room.clone() })
        .await
        .map_err(lost)?
    {
        Ok(_) => {}
        Err(e) => return Err(format!("subscribe {room}: {e}")),
    }
    // Read after the subscription: every join/leave after this snapshot is held back below
    // and delivered after it, so a list built from the resync and then the events is exact.
    let members = match session
        .call(Call::Presence {
            room: room.clone(),
            after: None,
            limit: crate::PRESENCE_RESYNC_PAGE,
        })
        .await
        .map_err(lost)?
    {
        Ok(CallOk::Presence(page)) => Some(page),
        Ok(_) => return Err(format!("presence {room}: unexpected answer")),
        Err(BrokerError::PresenceDisabled { .. }) => None,
        Err(e) => return Err(format!("presence {room}: {e}")),
    };
    let page = match session
        .call(Call::History {
            room: room.clone(),
            since: Some(last.clone()),
            limit: None,
        })
        .await
        .map_err(lost)?
    {
        Ok(CallOk::History(page)) => page,
        Ok(_) => return Err(format!("history {room}: unexpected answer")),
        Err(e) => return Err(format!("history {room}: {e}")),
    };
    if !page.complete {
        link.end(&format!(
            "room {room}: the history no longer reaches back to offset {} of epoch {}; \
             clients must recover themselves",
            last.offset, last.epoch
        ));
        return Ok(());
    }
    let mut state = link.state();
    let Some(track) = state.rooms.get_mut(room) else {
        return Ok(()); // unsubscribed meanwhile
    };
    let held = track.resuming.take().unwrap_or_default();
    let epoch = page.position.epoch;
    for publication in page.publications {
        state.deliver(RoomEvent {
            room: room.clone(),
            epoch: epoch.clone(),
            kind: RoomEventKind::Publication(publication),
        });
    }
    if let Some(members) = members {
        state.deliver(RoomEvent {
            room: room.clone(),
            epoch: epoch.clone(),
            kind: RoomEventKind::PresenceResync(members),
        });
    }
    for event in held {
        state.deliver(event);
    }
    Ok(())
}
