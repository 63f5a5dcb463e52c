//! The retained lifecycle events, stored compactly.
//!
//! The feed can hold `rooms.events.max_retained` events (100,000 by default) — four for every
//! connection that joins a room of its own — so an event is kept as 56 bytes: no position
//! (the sequence numbers are contiguous, so an event's is the first one's plus its index, and
//! the epoch is one for the whole feed) and the member's part boxed (only `member.*` events
//! have one). A [`LifecycleEvent`] is rebuilt when the feed is read.
//!
//! Snapshots store the feed as the sequence of whole [`LifecycleEvent`]s it always was, so
//! the compact form changes nothing on disk.

use std::collections::VecDeque;

use plaza_proto::events::{EventFilter, EventType, FeedPosition, LifecycleEvent};
use plaza_proto::{ClientId, Member, Payload, RoomName, UserId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Retained events, oldest first, with contiguous sequence numbers.
#[derive(Debug, Clone, Default)]
pub(super) struct Feed {
    /// The epoch of every event's position (set by the first event).
    epoch: String,
    /// Sequence number of the front event (meaningless while empty).
    first: u64,
    events: VecDeque<Stored>,
}

/// Two feeds are equal when their events and those events' positions are: an emptied feed
/// equals a new one (a snapshot of it restores as one).
impl PartialEq for Feed {
    fn eq(&self, other: &Self) -> bool {
        self.events == other.events
            && (self.events.is_empty() || (self.first == other.first && self.epoch == other.epoch))
    }
}

/// An event without its position.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    time_ms: u64,
    kind: EventType,
    room: Option<RoomName>,
    user: Option<UserId>,
    member: Option<Box<MemberPart>>,
}

/// The connection and info of a `member.*` event.
#[derive(Debug, Clone, PartialEq)]
struct MemberPart {
    client: ClientId,
    info: Option<Payload>,
}

/// What a new event says, besides its sequence number.
pub(super) struct NewEvent<'a> {
    pub(super) kind: EventType,
    pub(super) time_ms: u64,
    pub(super) room: Option<&'a RoomName>,
    pub(super) user: Option<&'a UserId>,
    /// The member, for `member.*` events; its info is kept for `member.joined` and
    /// `presence.updated` only.
    pub(super) member: Option<&'a Member>,
}

impl Feed {
    /// Appends event `seq` (the one after the last) of feed `epoch`.
    pub(super) fn push(&mut self, epoch: &str, seq: u64, event: NewEvent<'_>) {
        if self.events.is_empty() {
            self.first = seq;
        }
        debug_assert_eq!(seq, self.first + self.events.len() as u64);
        if self.epoch != epoch {
            self.epoch = epoch.to_owned();
        }
        let keep_info = matches!(
            event.kind,
            EventType::MemberJoined | EventType::PresenceUpdated
        );
        self.events.push_back(Stored {
            time_ms: event.time_ms,
            kind: event.kind,
            room: event.room.cloned(),
            user: event.user.cloned(),
            member: event.member.map(|m| {
                Box::new(MemberPart {
                    client: m.client.clone(),
                    info: m.info.clone().filter(|_| keep_info),
                })
            }),
        });
    }

    /// Drops the oldest event.
    pub(super) fn pop_front(&mut self) {
        if self.events.pop_front().is_some() {
            self.first += 1;
        }
    }

    /// When the oldest event happened.
    pub(super) fn front_time(&self) -> Option<u64> {
        self.events.front().map(|e| e.time_ms)
    }

    /// Sequence number of the oldest event.
    pub(super) fn first_seq(&self) -> Option<u64> {
        (!self.events.is_empty()).then_some(self.first)
    }

    /// Events retained.
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// The events from the `skip`-th on that `filter` passes, until `limit` of them: the
    /// events and the sequence number of the last one looked at (passed or not), if any.
    pub(super) fn read(
        &self,
        skip: usize,
        limit: usize,
        filter: &EventFilter,
    ) -> (Vec<LifecycleEvent>, Option<u64>) {
        let mut events = Vec::new();
        let mut last = None;
        for (i, stored) in self.events.iter().enumerate().skip(skip) {
            if events.len() >= limit {
                break;
            }
            last = Some(self.seq_of(i));
            if filter.accepts(stored.kind, stored.room.as_ref()) {
                events.push(self.event(i, stored));
            }
        }
        (events, last)
    }

    fn seq_of(&self, index: usize) -> u64 {
        self.first + index as u64
    }

    fn event(&self, index: usize, stored: &Stored) -> LifecycleEvent {
        LifecycleEvent {
            position: FeedPosition {
                epoch: self.epoch.clone(),
                seq: self.seq_of(index),
            },
            kind: stored.kind,
            time_ms: stored.time_ms,
            room: stored.room.clone(),
            user: stored.user.clone(),
            client: stored.member.as_ref().map(|m| m.client.clone()),
            info: stored.member.as_ref().and_then(|m| m.info.clone()),
        }
    }
}

/// A [`LifecycleEvent`] as borrowed parts, serialized exactly like one.
#[derive(Serialize)]
struct EventRef<'a> {
    position: PositionRef<'a>,
    kind: EventType,
    time_ms: u64,
    room: Option<&'a RoomName>,
    user: Option<&'a UserId>,
    client: Option<&'a ClientId>,
    info: Option<&'a Payload>,
}

/// A [`FeedPosition`] as borrowed parts, serialized exactly like one.
#[derive(Serialize)]
struct PositionRef<'a> {
    epoch: &'a str,
    seq: u64,
}

impl Serialize for Feed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.events.iter().enumerate().map(|(i, e)| EventRef {
            position: PositionRef {
                epoch: &self.epoch,
                seq: self.seq_of(i),
            },
            kind: e.kind,
            time_ms: e.time_ms,
            room: e.room.as_ref(),
            user: e.user.as_ref(),
            client: e.member.as_ref().map(|m| &m.client),
            info: e.member.as_ref().and_then(|m| m.info.as_ref()),
        }))
    }
}

impl<'de> Deserialize<'de> for Feed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let events = VecDeque::<LifecycleEvent>::deserialize(deserializer)?;
        let mut feed = Feed::default();
        if let Some(front) = events.front() {
            feed.epoch = front.position.epoch.clone();
            feed.first = front.position.seq;
        }
        for (i, e) in events.into_iter().enumerate() {
            if e.position.seq != feed.first + i as u64 {
                return Err(serde::de::Error::custom(
                    "lifecycle feed: sequence numbers are not contiguous",
                ));
            }
            feed.events.push_back(Stored {
                time_ms: e.time_ms,
                kind: e.kind,
                room: e.room,
                user: e.user,
                member: e.client.map(|client| {
                    Box::new(MemberPart {
                        client,
                        info: e.info,
                    })
                }),
            });
        }
        Ok(feed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, info: Option<&str>) -> Member {
        Member {
            user: UserId::new("u"),
            client: ClientId::new(client),
            info: info.map(|i| Payload::from_json(i).unwrap()),
        }
    }

    fn sample() -> Feed {
        let room = RoomName::new("chat:a").unwrap();
        let user = UserId::new("u");
        let joined = member("c1", Some(r#"{"n":1}"#));
        let mut feed = Feed::default();
        for (seq, kind, member) in [
            (7, EventType::RoomOccupied, None),
            (8, EventType::MemberJoined, Some(&joined)),
            (9, EventType::MemberLeft, Some(&joined)),
        ] {
            let event = NewEvent {
                kind,
                time_ms: seq * 10,
                room: Some(&room),
                user: member.map(|_| &user),
                member,
            };
            feed.push("ep", seq, event);
        }
        feed
    }

    #[test]
    fn a_snapshot_stores_the_feed_as_whole_events() {
        let feed = sample();
        let (whole, last) = feed.read(0, usize::MAX, &EventFilter::default());
        assert_eq!(last, Some(9));
        assert_eq!(whole[1].position.to_string(), "ep:8");
        assert!(whole[1].info.is_some(), "member.joined keeps the info");
        assert!(whole[2].info.is_none(), "member.left does not");
        assert_eq!(whole[2].client, Some(ClientId::new("c1")));
        let compact = postcard::to_stdvec(&feed).unwrap();
        let as_events = postcard::to_stdvec(&VecDeque::from(whole)).unwrap();
        assert_eq!(compact, as_events, "same bytes as the events themselves");
        let back: Feed = postcard::from_bytes(&compact).unwrap();
        assert_eq!(back, feed);
    }

    #[test]
    fn dropping_the_oldest_keeps_the_sequence_numbers() {
        let mut feed = sample();
        feed.pop_front();
        assert_eq!(feed.first_seq(), Some(8));
        assert_eq!(feed.front_time(), Some(80));
        let (events, last) = feed.read(1, 5, &EventFilter::default());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].position.seq, 9);
        assert_eq!(last, Some(9));
        feed.pop_front();
        feed.pop_front();
        assert_eq!(feed.first_seq(), None);
        let back: Feed = postcard::from_bytes(&postcard::to_stdvec(&feed).unwrap()).unwrap();
        assert_eq!(back.len(), 0);
    }

    #[test]
    fn a_stored_event_is_small() {
        assert!(std::mem::size_of::<Stored>() <= 56);
    }
}
