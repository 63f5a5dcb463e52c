//! Room commands of a session: subscribe (with the hub's recover handshake), unsubscribe,
//! publish, presence, history — and the one mapping from broker errors to client codes.

use super::*;

impl<L: EdgeLink> Session<L> {
    /// Runs a broker call with the configured timeout, timing it.
    pub(super) async fn call<T>(
        &self,
        name: &'static str,
        f: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, ErrorBody> {
        let start = std::time::Instant::now();
        let limit = self.ctx.config.broker.call_timeout;
        let result = tokio::time::timeout(limit, f).await;
        metrics::histogram!(m::BROKER_CALL_SECONDS, "call" => name)
            .record(start.elapsed().as_secs_f64());
        match result {
            Ok(r) => r.map_err(broker_error),
            Err(_) => Err(ErrorCode::BackendUnavailable.with(format!(
                "broker call {name} timed out after {}",
                humantime::format_duration(limit)
            ))),
        }
    }

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
        let ns = self.ctx.namespaces.of(&room).clone();
        if s.presence {
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
        let max = self.ctx.config.client.max_rooms;
        if self.subs.len() >= max {
            metrics::counter!(m::LIMIT_HITS, "limit" => "rooms_per_connection").increment(1);
            return Err(
                ErrorCode::LimitExceeded.with(format!("at most {max} rooms per connection"))
            );
        }
        let hub = self.ctx.hub.clone();
        let snapshot = hub.register(&room, self.id, self.outbox.clone(), s.presence);
        let mut joined = false;
        let outcome: Result<(SubscribeOk, Position), ErrorBody> = async {
            let at = self.call("subscribe", hub.ensure_upstream(&room)).await?;
            if ns.presence != PresenceMode::Off {
                self.call("join", hub.link().join(room.clone(), self.member()))
                    .await?;
                joined = true;
            }
            // The later of "last event dispatched before we registered" and "where the
            // upstream subscription began": events after it are all buffered for us, so the
            // reply's position never promises one we will not receive.
            let base = match snapshot {
                Some(seen) if seen.epoch != at.epoch || seen.offset > at.offset => seen,
                _ => at,
            };
            let Some(recover) = s.recover else {
                let ok = SubscribeOk {
                    epoch: base.epoch.clone(),
                    offset: base.offset,
                    recovered: false,
                    publications: Vec::new(),
                };
                return Ok((ok, base));
            };
            let page = self
                .call(
                    "history",
                    hub.link()
                        .history(room.clone(), Some(recover.clone()), None),
                )
                .await?;
            let position = page.position;
            if !page.complete {
                let ok = SubscribeOk {
                    epoch: position.epoch.clone(),
                    offset: position.offset,
                    recovered: false,
                    publications: Vec::new(),
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
                    },
                );
                Ok(None)
            }
            Err(e) => {
                hub.remove(&room, self.id).await;
                if joined {
                    let client = self.connected().client.clone();
                    let _ = self.call("leave", hub.link().leave(room, client)).await;
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
        self.ctx.hub.remove(&room, self.id).await;
        if sub.joined {
            let client = self.connected().client.clone();
            if let Err(e) = self
                .call("leave", self.ctx.hub.link().leave(room.clone(), client))
                .await
            {
                tracing::warn!(room = %room, error = %e.message, "leave failed; the lease will remove the member");
            }
        }
    }

    pub(super) async fn publish(&mut self, p: Publish) -> Result<PublishOk, ErrorBody> {
        let room = p.room;
        if !self.subs.contains_key(&room) {
            return Err(ErrorCode::NotSubscribed
                .with(format!("subscribe to {room} before publishing to it")));
        }
        self.check(&room, Capability::Publish)?;
        let ns = self.ctx.namespaces.of(&room);
        if !ns.client_publish {
            return Err(ErrorCode::PublishDisabled.with(format!(
                "clients may not publish in namespace {:?}",
                room.namespace()
            )));
        }
        if p.data.len() > ns.max_message_bytes {
            metrics::counter!(m::LIMIT_HITS, "limit" => "message_bytes").increment(1);
            return Err(ErrorCode::MessageTooLarge.with(format!(
                "data is {} bytes; namespace {:?} allows {}",
                p.data.len(),
                room.namespace(),
                ns.max_message_bytes
            )));
        }
        let conn = self.connected();
        let from = Sender {
            user: conn.identity.user.clone(),
            client: conn.client.clone(),
        };
        let ack = self
            .call(
                "publish",
                self.ctx
                    .hub
                    .link()
                    .publish(room, p.data, Some(from), p.idem),
            )
            .await?;
        metrics::counter!(m::PUBLICATIONS_IN).increment(1);
        Ok(PublishOk {
            epoch: ack.position.epoch,
            offset: ack.position.offset,
        })
    }

    pub(super) async fn presence(&self, room: RoomName) -> Result<ReplyOk, ErrorBody> {
        self.check(&room, Capability::Presence)?;
        let members = self
            .call("presence", self.ctx.hub.link().presence(room))
            .await?;
        Ok(ReplyOk::Presence(PresenceOk { members }))
    }

    pub(super) async fn presence_stats(&self, room: RoomName) -> Result<ReplyOk, ErrorBody> {
        self.check(&room, Capability::Presence)?;
        let s = self
            .call("presence_stats", self.ctx.hub.link().presence_stats(room))
            .await?;
        Ok(ReplyOk::PresenceStats(PresenceStatsOk {
            clients: s.clients,
            users: s.users,
        }))
    }

    pub(super) async fn history(&self, h: History) -> Result<HistoryOk, ErrorBody> {
        self.check(&h.room, Capability::Subscribe)?;
        let max = self.ctx.config.client.max_history_limit;
        let limit = h.limit.unwrap_or(max).min(max);
        let page = self
            .call(
                "history",
                self.ctx.hub.link().history(h.room, h.since, Some(limit)),
            )
            .await?;
        Ok(HistoryOk {
            epoch: page.position.epoch,
            offset: page.position.offset,
            publications: page.publications,
            complete: page.complete,
        })
    }
}

/// The one mapping from broker errors to client error codes.
fn broker_error(e: BrokerError) -> ErrorBody {
    let code = match &e {
        BrokerError::Unavailable(_) | BrokerError::LeaseExpired(_) => ErrorCode::BackendUnavailable,
        BrokerError::PresenceDisabled { .. } => ErrorCode::PresenceDisabled,
        BrokerError::Invalid(_) => ErrorCode::BadRequest,
    };
    code.with(e.to_string())
}
