//! Events and pushes encoded once for every local subscriber, in each form a connection may
//! take them (text for tungstenite, a complete frame for the lean layer, compressed once for
//! permessage-deflate).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use plaza_proto::client::{MemberPush, PresenceResyncPush, PubPush, UserMember, UserPush};
use plaza_proto::cluster::{RoomEvent, RoomEventKind};
use plaza_proto::{Push, RoomName, ServerFrame};

use super::At;
use crate::outbox::{Flushes, Outbox};
use crate::user_presence::UserChange;

/// Which subscribers an event without offset goes to.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Audience {
    /// Publications (with an offset): everyone.
    All,
    /// Connection-level presence: subscribers with `presence: true`.
    Clients,
    /// User-level presence: subscribers with `presence: "users"`.
    Users,
}

/// A push encoded once for every subscriber, in each form a connection may take it.
pub(super) struct SharedPush {
    /// The JSON text, which tungstenite frames per connection.
    text: Utf8Bytes,
    /// The complete WebSocket frame for lean connections, made when the first one is reached.
    framed: std::sync::OnceLock<bytes::Bytes>,
    /// The frame compressed once (permessage-deflate), made when the first subscriber that
    /// negotiated it is reached; `None` inside when compression would not make it smaller.
    deflated: std::sync::OnceLock<Option<bytes::Bytes>>,
}

impl SharedPush {
    pub(super) fn new(text: Utf8Bytes) -> Self {
        Self {
            text,
            framed: std::sync::OnceLock::new(),
            deflated: std::sync::OnceLock::new(),
        }
    }

    /// Queues the push in `outbox`: for a lean connection the shared complete frame
    /// (compressed if the client negotiated permessage-deflate and compression helps, and
    /// written directly by [`Flushes::run`] if its task has nothing in flight), else the
    /// shared text.
    pub(super) fn push_to(&self, outbox: &Arc<Outbox>, flushes: &mut Flushes) -> bool {
        use crate::ws::{deflate, frame};
        if !outbox.frames() {
            return outbox.push(self.text.clone());
        }
        if outbox.deflate() {
            let deflated = self.deflated.get_or_init(|| {
                (self.text.len() >= deflate::MIN_BYTES)
                    .then(|| deflate::deflated_frame(frame::OpCode::Text, self.text.as_bytes()))
                    .flatten()
            });
            if let Some(frame) = deflated {
                return outbox.push_shared(frame.clone(), flushes);
            }
        }
        let framed = self
            .framed
            .get_or_init(|| frame::encode(frame::OpCode::Text, false, self.text.as_bytes()));
        outbox.push_shared(framed.clone(), flushes)
    }
}

/// An event encoded once for every subscriber.
pub(super) struct Encoded {
    pub(super) frame: SharedPush,
    /// The publication's position (its epoch the hub's shared copy); `None` for presence.
    pub(super) at: Option<At>,
    pub(super) audience: Audience,
}

impl Encoded {
    /// `event` encoded; `share` turns a publication's epoch into the hub's shared copy.
    pub(super) fn new(event: RoomEvent, share: impl FnOnce(&str) -> Arc<str>) -> Self {
        let RoomEvent { room, epoch, kind } = event;
        let (at, push) = match kind {
            RoomEventKind::Publication(p) => (
                Some(At {
                    epoch: share(&epoch),
                    offset: p.offset,
                }),
                Push::Pub(PubPush {
                    room,
                    offset: p.offset,
                    data: p.data,
                    from: p.from,
                }),
            ),
            RoomEventKind::Join(member) => (None, Push::Join(MemberPush { room, member })),
            RoomEventKind::Leave(member) => (None, Push::Leave(MemberPush { room, member })),
            RoomEventKind::PresenceUpdate(member) => {
                (None, Push::Update(MemberPush { room, member }))
            }
            RoomEventKind::PresenceResync(page) => (
                None,
                Push::PresenceResync(PresenceResyncPush {
                    room,
                    members: page.members,
                    next: page.next,
                }),
            ),
        };
        let audience = if at.is_some() {
            Audience::All
        } else {
            Audience::Clients
        };
        Self::of(push, at, audience)
    }

    fn of(push: Push, at: Option<At>, audience: Audience) -> Self {
        Self {
            frame: SharedPush::new(Utf8Bytes::from(ServerFrame::Push(push).encode())),
            at,
            audience,
        }
    }

    /// A user-level push.
    pub(super) fn user(room: &RoomName, change: UserChange) -> Self {
        let (push, user): (fn(UserPush) -> Push, UserMember) = match change {
            UserChange::Join(u) => (Push::UserJoin, u),
            UserChange::Update(u) => (Push::UserUpdate, u),
            UserChange::Leave(u) => (Push::UserLeave, u),
        };
        let push = push(UserPush {
            room: room.clone(),
            user,
        });
        Self::of(push, None, Audience::Users)
    }

    /// Queues the event in `outbox` (see [`SharedPush::push_to`]).
    pub(super) fn push_to(&self, outbox: &Arc<Outbox>, flushes: &mut Flushes) -> bool {
        self.frame.push_to(outbox, flushes)
    }
}
