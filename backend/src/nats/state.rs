//! Live-state rooms on NATS (the "State rooms" contract of the crate docs).
//!
//! A state room's log is one subject per key in its namespace's stream,
//! `plaza.r.<ns>.<room>.s.<key>`, so the stream's last message per key subject *is* the map:
//! a change record `{"key","value"}` or a tombstone `{"key","deleted":true}`. Every change is
//! appended with the room's previous offset (`Plaza-Prev`) under
//! `Nats-Expected-Last-Subject-Sequence` filtered on the room's key subjects (`….s.*`), so the
//! changes of a room form one chain exactly like a plain room's publications (live delivery,
//! gap repair, `history` and `recover` are shared), and a write that read the map at offset
//! P is stored only if nothing changed since P: compare-and-set and the key limit are checks
//! against the map at P, made exact by that expectation (a conflict reads again and retries).
//!
//! ```text
//!   set/delete ─▶ read P (room) + key's last change ─▶ check expect / max_keys at P
//!              ─▶ append to ….s.<key> expecting P on ….s.* ─▶ offset = the key's version
//!   read       ─▶ last message per ….s.* subject (an ordered consumer until nothing is
//!                 pending): the map at the highest offset read
//! ```
//!
//! Keys leave without a client asking:
//! - **TTL**: the writing link deletes the key when its TTL runs out (a compare-and-delete on
//!   the version it wrote, so a newer set survives); a key whose writer is gone is deleted by
//!   the one **state keeper** (a role every link competes for, like the event deriver), which
//!   follows every state namespace's key subjects from their `Plaza-Expires` headers.
//! - **Tied keys** (`Plaza-Tied: <edge> <client>`): the link deletes them when the connection
//!   releases them or the link closes; an edge that vanished has its tied keys deleted by the
//!   edge that reaps its lease (`leases.rs`), which scans the key subjects for its name.
//!
//! Every such deletion is a compare-and-delete, so two deleters (the writer and the keeper)
//! never both record it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::PublishErrorKind;
use plaza_proto::cluster::BrokerError;
use plaza_proto::state::{StateAck, StateChange, StateEntry, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, Payload, Position, RoomName, Sender};

use super::Shared;
use super::events::now_ms;
use super::link::{FROM, MAX_PUBLISH_ATTEMPTS, PREV, last_sequence, unavailable};
use super::names::RoomSubjects;
use super::read::{Stored, read_all};
use super::room_log::while_stream_unknown;

/// Header: when the key's TTL runs out (Unix milliseconds, the writer's clock).
const EXPIRES: &str = "Plaza-Expires";
/// Header: the connection a key is tied to, `<edge token> <client>`.
const TIED: &str = "Plaza-Tied";
/// Header: the subject filter `Nats-Expected-Last-Subject-Sequence` applies to (NATS 2.11+).
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// One stored change of a key, with the headers that say how it may leave.
pub(super) struct KeyChange {
    pub version: u64,
    pub change: StateChange,
    pub expires: Option<u64>,
    pub tied: Option<String>,
}

impl KeyChange {
    fn of(sequence: u64, headers: Option<&HeaderMap>, payload: &[u8]) -> Option<Self> {
        let data = Payload::from_json(std::str::from_utf8(payload).ok()?).ok()?;
        let header = |name| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        Some(Self {
            version: sequence,
            change: StateChange::decode(&data)?,
            expires: header(EXPIRES).and_then(|v| v.parse().ok()),
            tied: header(TIED).map(str::to_owned),
        })
    }

    pub(super) fn of_stored(s: &Stored) -> Option<Self> {
        Self::of(s.sequence, s.headers.as_ref(), &s.payload)
    }

    /// The key's version if this change left it set (0: deleted).
    pub(super) fn current(&self) -> u64 {
        match self.change {
            StateChange::Set { .. } => self.version,
            StateChange::Deleted { .. } => 0,
        }
    }
}

/// The `Plaza-Tied` value of `client` on the edge with lease token `edge`.
fn tie(edge: &str, client: &ClientId) -> String {
    format!("{edge} {}", client.as_str())
}

/// A state room's stream, subjects and options, or `NotStateRoom`.
pub(super) fn state_room<'a>(
    shared: &'a Shared,
    room: &RoomName,
) -> Result<
    (
        &'a super::NsStream,
        RoomSubjects,
        &'a plaza_rooms::config::NamespaceOptions,
    ),
    BrokerError,
> {
    let (ns, subjects, options) = shared.room(room)?;
    if !options.state.enabled {
        return Err(BrokerError::NotStateRoom {
            namespace: room.namespace().to_owned(),
        });
    }
    Ok((ns, subjects, options))
}

/// The map of a state room's key subjects (`chain`) at the highest offset read.
async fn map_at(
    stream: &async_nats::jetstream::stream::Stream,
    chain: &str,
) -> Result<(u64, BTreeMap<String, (Payload, u64)>), BrokerError> {
    // The consumer starts with every subject's last message and goes on with newer ones in
    // order until nothing is pending: folded in order, that is the map at the last offset.
    let stored = read_all(stream, chain.to_owned(), DeliverPolicy::LastPerSubject).await?;
    let mut position = 0;
    let mut map = BTreeMap::new();
    for s in &stored {
        position = position.max(s.sequence);
        match KeyChange::of_stored(s).map(|c| c.change) {
            Some(StateChange::Set { key, value }) => {
                map.insert(key, (value, s.sequence));
            }
            Some(StateChange::Deleted { key }) => {
                map.remove(&key);
            }
            None => {}
        }
    }
    Ok((position, map))
}

/// Reads a state room's whole map with its position.
pub(super) async fn read(shared: &Shared, room: &RoomName) -> Result<StateSnapshot, BrokerError> {
    let (ns, subjects, _) = state_room(shared, room)?;
    let (offset, map) = map_at(&ns.stream, &subjects.chain).await?;
    Ok(StateSnapshot {
        position: Position {
            epoch: ns.epoch.clone(),
            offset,
        },
        entries: map
            .into_iter()
            .map(|(key, (value, version))| StateEntry {
                key,
                value,
                version,
            })
            .collect(),
    })
}

/// The last change of one key subject, if any is held.
async fn last_change(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<KeyChange>, BrokerError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match while_stream_unknown(|| stream.get_last_raw_message_by_subject(subject)).await {
        Ok(m) => Ok(KeyChange::of(m.sequence, Some(&m.headers), &m.payload)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

/// A compare-and-delete of `key` at `version` (a deletion the tier makes itself).
pub(super) fn compare_and_delete(key: String, version: u64) -> StateWrite {
    StateWrite::Delete {
        key,
        expect: Some(version),
        from: None,
    }
}

/// What a stored set leaves for its link to follow up: when the key expires, and whose
/// connection it is tied to.
pub(super) struct Written {
    pub room: RoomName,
    pub key: String,
    pub version: u64,
    pub expires: Option<u64>,
    pub tied: Option<ClientId>,
}

/// Checks a set's key, value and TTL against the namespace's limits.
fn check_set(
    options: &plaza_rooms::config::StateOptions,
    key: &str,
    value: &Payload,
    ttl_ms: Option<u64>,
) -> Result<(), BrokerError> {
    plaza_proto::state::check_state_key(key).map_err(BrokerError::StateLimit)?;
    if value.len() > options.max_value_bytes {
        return Err(BrokerError::StateLimit(format!(
            "value is {} bytes; at most {} are allowed",
            value.len(),
            options.max_value_bytes
        )));
    }
    let max_ttl = u64::try_from(options.max_ttl.as_millis()).unwrap_or(u64::MAX);
    if let Some(ttl) = ttl_ms
        && (ttl == 0 || ttl > max_ttl)
    {
        return Err(BrokerError::StateLimit(format!(
            "ttl must be 1..={max_ttl} ms, got {ttl}"
        )));
    }
    Ok(())
}

/// Carries out a set or delete in `room` for the edge with lease token `edge` (see the module
/// docs); `lock` serializes one link's writes to the room. Returns the room's position after
/// it (the key's new version) and, for a set, what the link follows up.
pub(super) async fn write(
    shared: &Shared,
    edge: &str,
    lock: Option<Arc<tokio::sync::Mutex<u64>>>,
    room: &RoomName,
    change: StateWrite,
) -> Result<(StateAck, Option<Written>), BrokerError> {
    let (ns, subjects, options) = state_room(shared, room)?;
    let limits = &options.state;
    let (key, expect, from) = match &change {
        StateWrite::Set {
            key, expect, from, ..
        }
        | StateWrite::Delete { key, expect, from } => (key.as_str(), *expect, from.as_ref()),
        // A connection's keys are known to its link only (`state_keys::release`).
        StateWrite::Release { .. } => {
            return Err(BrokerError::Invalid(
                "a release is carried out by the link that wrote the keys".into(),
            ));
        }
    };
    if let StateWrite::Set { value, ttl_ms, .. } = &change {
        check_set(limits, key, value, *ttl_ms)?;
    } else if plaza_proto::state::check_state_key(key).is_err() {
        // No such key can exist.
        return match expect {
            Some(expected) if expected != 0 => Err(BrokerError::StateConflict {
                key: key.to_owned(),
                expected,
                current: 0,
            }),
            _ => {
                let offset = last_sequence(&ns.stream, &subjects.chain).await?;
                Ok((ack(&ns.epoch, offset), None))
            }
        };
    }
    let subject = subjects.state_key(key);
    let _serialized = match &lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let mut unknown_retries = 30;
    for _ in 0..MAX_PUBLISH_ATTEMPTS {
        let known = last_sequence(&ns.stream, &subjects.chain).await?;
        let last = last_change(&ns.stream, &subject).await?;
        let current = last.as_ref().map_or(0, KeyChange::current);
        if last.as_ref().is_some_and(|c| c.version > known) {
            continue; // the key changed between the two reads
        }
        if let Some(expected) = expect
            && expected != current
        {
            return Err(BrokerError::StateConflict {
                key: key.to_owned(),
                expected,
                current,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(PREV, known.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            known.to_string().as_str(),
        );
        headers.insert(EXPECTED_SUBJECT, subjects.chain.as_str());
        add_from(&mut headers, from)?;
        let (record, written) = match &change {
            StateWrite::Set {
                value,
                ttl_ms,
                tied,
                ..
            } => {
                if current == 0 {
                    let (at, map) = map_at(&ns.stream, &subjects.chain).await?;
                    if at != known {
                        continue; // changed meanwhile: read again
                    }
                    if map.len() >= limits.max_keys {
                        return Err(BrokerError::StateLimit(format!(
                            "room {room} holds {} keys; at most {} are allowed",
                            map.len(),
                            limits.max_keys
                        )));
                    }
                }
                let expires = ttl_ms.map(|t| now_ms().saturating_add(t));
                if let Some(at) = expires {
                    headers.insert(EXPIRES, at.to_string().as_str());
                }
                if let Some(client) = tied {
                    headers.insert(TIED, tie(edge, client).as_str());
                }
                let record = StateChange::Set {
                    key: key.to_owned(),
                    value: value.clone(),
                };
                let written = Written {
                    room: room.clone(),
                    key: key.to_owned(),
                    version: 0,
                    expires,
                    tied: tied.clone(),
                };
                (record, Some(written))
            }
            _ => {
                if current == 0 {
                    return Ok((ack(&ns.epoch, known), None));
                }
                let record = StateChange::Deleted {
                    key: key.to_owned(),
                };
                (record, None)
            }
        };
        let sent = shared
            .setup()?
            .js
            .publish_with_headers(subject.clone(), headers, record.encode().bytes().clone())
            .await
            .map_err(unavailable)?;
        match sent.await {
            Ok(stored) => {
                let written = written.map(|w| Written {
                    version: stored.sequence,
                    ..w
                });
                return Ok((ack(&ns.epoch, stored.sequence), written));
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound && unknown_retries > 0 => {
                unknown_retries -= 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(BrokerError::Unavailable(format!(
                    "room {room}: NATS: {e}; the change may or may not be stored"
                )));
            }
        }
    }
    Err(BrokerError::Unavailable(format!(
        "room {room}: too many concurrent state writers; retry"
    )))
}

pub(super) fn ack(epoch: &str, offset: u64) -> StateAck {
    StateAck {
        position: Position {
            epoch: epoch.to_owned(),
            offset,
        },
    }
}

fn add_from(headers: &mut HeaderMap, from: Option<&Sender>) -> Result<(), BrokerError> {
    if let Some(from) = from {
        let json = serde_json::to_string(from).map_err(unavailable)?;
        headers.insert(FROM, json.as_str());
    }
    Ok(())
}
