//! Room commands of a session: subscribe (with the hub's recover handshake), unsubscribe,
//! publish, presence, history. Every broker call goes through the node (`node/calls.rs`).

use super::*;

impl<L: EdgeLink> Session<L> {
    pub(super) fn member(&self) -> Member {
        let conn = self.connected();
        Member {
            client: conn.client.clone(),
            user: conn.identity.user.clone(),
            info: conn.identity.info.clone(),
        }
    }

    pub(super) async fn subscribe(&mut self, id: u32, s: Subscribe) -> CommandResult {
        let room = s.room;
        self.check(&room, Capability::Subscribe)?;
        let ns = self.node.namespaces.of(&room).clone();
        if s.presence || s.presence_users {
            self.check(&room, Capability::Presence)?;
            if ns.presence != PresenceMode::Full || !ns.join_leave {
                return Err(ErrorCode::PresenceDisabled.with(format!(
                    "namespace {:?} has no join/leave events",
                    room.namespace()
                )));
            }
        }
        if self.subs.contains_key(&room) {
            return Err(ErrorCode::AlreadySubscribed.with(format!("already subscribed to {room}")));
        }
        let max = self.node.config.client.max_rooms;
        if self.subs.len() >= max {
            metrics::counter!(m::LIMIT_HITS, "limit" => "rooms_per_connection").increment(1);
            return Err(
                ErrorCode::LimitExceeded.with(format!("at most {max} rooms per connection"))
            );
        }
        let node = self.node.clone();
        let hub = &node.hub;
        let snapshot = hub.register(
            &room,
            self.id,
            self.outbox.clone(),
            s.presence,
            s.presence_users,
        );
        let mut joined = false;
        let outcome: Result<(SubscribeOk, Position), ErrorBody> = async {
            let at = node.subscribe_upstream(&room).await?;
            if ns.presence != PresenceMode::Off {
                node.join(room.clone(), self.member()).await?;
                joined = true;
            }
            if s.presence_users && hub.users_loading(&room) {
                let members = node.all_members(&room).await?;
                if !hub.load_users(&room, members) {
                    return Err(ErrorCode::BackendUnavailable
                        .with("the room's presence changed too fast to read; retry"));
                }
            }
            // The later of "last event dispatched before we registered" and "where the
            // upstream subscription began": events after it are all buffered for us, so the
            // reply's position never promises one we will not receive.
            let base = match snapshot {
                Some(seen) if seen.epoch != at.epoch || seen.offset > at.offset => seen,
                _ => at,
            };
            let Some(recover) = s.recover else {
                if ns.state.enabled {
                    return node.state_subscribe_reply(&room).await;
                }
                let ok = SubscribeOk {
                    epoch: base.epoch.clone(),
                    offset: base.offset,
                    recovered: false,
                    publications: Vec::new(),
                    state: None,
                };
                return Ok((ok, base));
            };
            let page = node.missed_since(room.clone(), recover.clone()).await?;
            let position = page.position;
            if !page.complete {
                if ns.state.enabled {
                    return node.state_subscribe_reply(&room).await;
                }
                let ok = SubscribeOk {
                    epoch: position.epoch.clone(),
                    offset: position.offset,
                    recovered: false,
                    publications: Vec::new(),
                    state: None,
                };
                return Ok((ok, position));
            }
            let last = page
                .publications
                .last()
                .map_or(recover.offset, |p| p.offset);
            let delivered = Position {
                epoch: position.epoch.clone(),
                offset: last.max(recover.offset),
            };
            let ok = SubscribeOk {
                epoch: position.epoch,
                offset: position.offset.max(last),
                recovered: true,
                publications: page.publications,
                state: None,
            };
            Ok((ok, delivered))
        }
        .await;
        match outcome {
            Ok((ok, delivered)) => {
                let reply = ServerFrame::Reply(Reply {
                    id,
                    result: Ok(ReplyOk::Subscribe(ok)),
                });
                hub.activate(&room, self.id, Utf8Bytes::from(reply.encode()), &delivered);
                self.subs.insert(
                    room,
                    Sub {
                        joined,
                        presence: s.presence,
                        tied: false,
                    },
                );
                Ok(None)
            }
            Err(e) => {
                node.unsubscribe_local(&room, self.id).await;
                if joined {
                    let client = self.connected().client.clone();
                    let _ = node.leave(room, client).await;
                }
                Err(e)
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, room: RoomName) -> Result<(), ErrorBody> {
        let Some(sub) = self.subs.remove(&room) else {
            return Err(ErrorCode::NotSubscribed.with(format!("not subscribed to {room}")));
        };
        self.drop_sub(room, sub).await;
        Ok(())
    }

    pub(super) async fn drop_sub(&self, room: RoomName, sub: Sub) {
        self.node.unsubscribe_local(&room, self.id).await;
        if sub.tied {
            self.release_tied(room.clone()).await;
        }
        if sub.joined {
            let client = self.connected().client.clone();
            if let Err(e) = self.node.leave(room.clone(), client).await {
                tracing::warn!(room = %room, error = %e.message, "leave failed; the backend link retries it");
            }
        }
    }

    pub(super) async fn publish(&mut self, p: Publish) -> Result<ReplyOk, ErrorBody> {
        let room = p.room.clone();
        if !self.subs.contains_key(&room) {
            return Err(ErrorCode::NotSubscribed
                .with(format!("subscribe to {room} before publishing to it")));
        }
        self.check(&room, Capability::Publish)?;
        let ns = self.node.namespaces.of(&room);
        if !ns.client_publish {
            return Err(ErrorCode::PublishDisabled.with(format!(
                "clients may not publish in namespace {:?}",
                room.namespace()
            )));
        }
        match ns.ephemeral.resolve(p.ephemeral) {
            None => {
                return Err(ErrorCode::PublishDisabled.with(format!(
                    "namespace {:?} has no ephemeral publications (its `ephemeral` is off)",
                    room.namespace()
                )));
            }
            Some(true) if p.idem.is_some() => {
                return Err(ErrorCode::BadRequest.with(format!(
                    "namespace {:?} publishes ephemerally by default, which `idem` cannot be \
                     combined with: send `ephemeral: false` for a durable publication",
                    room.namespace()
                )));
            }
            Some(true) => return self.publish_ephemeral(p).await,
            Some(false) => {}
        }
        let conn = self.connected();
        let bytes = p.data.len() + p.idem.as_ref().map_or(0, String::len);
        if let Err(wait) = self.node.publish_budget.charge(&conn.identity.user, bytes) {
            let limits = &self.node.config.limits;
            let retry = if wait == Duration::MAX {
                "it is larger than the budget's burst".to_owned()
            } else {
                format!("retry in {} ms", wait.as_millis().max(1))
            };
            return Err(ErrorCode::RateLimited.with(format!(
                "user's publish budget ({} bytes/s, burst {}) is spent; {retry}",
                limits.publish_bytes_per_second_per_user, limits.publish_burst_bytes_per_user
            )));
        }
        let from = Sender {
            user: conn.identity.user.clone(),
            client: conn.client.clone(),
        };
        let ack = self.node.publish(room, p.data, Some(from), p.idem).await?;
        metrics::counter!(m::PUBLICATIONS_IN).increment(1);
        Ok(ReplyOk::Publish(PublishOk {
            epoch: ack.position.epoch,
            offset: ack.position.offset,
        }))
    }

    pub(super) async fn presence(&self, q: PresenceQuery) -> Result<ReplyOk, ErrorBody> {
        self.check(&q.room, Capability::Presence)?;
        let max = self.node.config.client.max_presence_page;
        let limit = match q.limit {
            Some(0) => return Err(ErrorCode::BadRequest.with("`limit` must be at least 1")),
            limit => limit.unwrap_or(max).min(max),
        };
        if q.users {
            let after = q.after.map(|a| UserId::new(a.as_str()));
            let (users, next) = self.node.presence_users(&q.room, after, limit).await?;
            return Ok(ReplyOk::PresenceUsers(PresenceUsersOk { users, next }));
        }
        let page = self.node.presence(q.room, q.after, limit).await?;
        Ok(ReplyOk::Presence(PresenceOk {
            members: page.members,
            next: page.next,
        }))
    }

    pub(super) async fn presence_stats(&self, room: RoomName) -> Result<ReplyOk, ErrorBody> {
        self.check(&room, Capability::Presence)?;
        let s = self.node.presence_stats(room).await?;
        Ok(ReplyOk::PresenceStats(PresenceStatsOk {
            clients: s.clients,
            users: s.users,
        }))
    }

    pub(super) async fn history(&self, h: History) -> Result<HistoryOk, ErrorBody> {
        self.check(&h.room, Capability::Subscribe)?;
        let max = self.node.config.client.max_history_limit;
        let limit = h.limit.unwrap_or(max).min(max);
        let page = self.node.history(h.room, h.since, Some(limit)).await?;
        Ok(HistoryOk {
            epoch: page.position.epoch,
            offset: page.position.offset,
            publications: page.publications,
            complete: page.complete,
        })
    }
}
