//! Authentication commands of a session: `connect` and `refresh`, and the permission check
//! every other command uses.

use super::*;

impl<L: EdgeLink> Session<L> {
    pub(super) fn connected(&self) -> &Connected {
        // `handle` checks the stage before dispatching any command but `connect`.
        match &self.stage {
            Stage::Connected(conn) => conn,
            Stage::Opening { .. } => unreachable_connect(),
        }
    }

    pub(super) fn check(&self, room: &RoomName, cap: Capability) -> Result<(), ErrorBody> {
        if self
            .connected()
            .identity
            .grants
            .allows(room, cap, &self.node.namespaces)
        {
            Ok(())
        } else {
            let cap = serde_json::to_string(&cap).unwrap_or_default();
            Err(ErrorCode::PermissionDenied
                .with(format!("token does not allow {cap} on room {room}")))
        }
    }

    pub(super) async fn connect(&mut self, c: Connect) -> Result<ReplyOk, ErrorBody> {
        let handshake_token = match &mut self.stage {
            Stage::Opening { token, .. } => token.take(),
            Stage::Connected(_) => {
                return Err(
                    ErrorCode::AlreadyConnected.with("this connection is already connected")
                );
            }
        };
        let token = c.token.map(String::into_boxed_str).or(handshake_token);
        let verified = match token {
            Some(t) => self.node.verifier.verify(&t).await,
            None => Err(AuthError::Missing),
        };
        let identity = match verified {
            Ok(identity) => identity,
            Err(e) => {
                metrics::counter!(m::AUTH_FAILURES, "reason" => e.label()).increment(1);
                let code = match e {
                    AuthError::Expired => CloseCode::TokenExpired,
                    AuthError::Unavailable(_) => CloseCode::BackendUnavailable,
                    AuthError::Missing | AuthError::Invalid(_) => CloseCode::InvalidToken,
                };
                Rare::of(&mut self.rare).close_after = Some((code, e.to_string()));
                return Err(e.code().with(e.to_string()));
            }
        };
        let max = self.node.config.limits.connections_per_user;
        let outbox = self.outbox.clone();
        if !self
            .node
            .users
            .admit(&identity.user, self.id, outbox, max as usize)
        {
            metrics::counter!(m::LIMIT_HITS, "limit" => "connections_per_user").increment(1);
            let reason = format!("user has {max} connections on this edge");
            Rare::of(&mut self.rare).close_after =
                Some((CloseCode::TooManyConnections, reason.clone()));
            return Err(ErrorCode::LimitExceeded.with(reason));
        };
        // Unguessable: a client id names a connection in presence and in `from`, and a
        // sequential one would tell anyone how many connections an edge has served.
        let client = ClientId::new(format!(
            "{}-{:016x}",
            self.node.edge_id,
            rand::random::<u64>()
        ));
        tracing::debug!(client = %client, user = %identity.user, name = ?c.name, version = ?c.version, "connected");
        let ok = ConnectOk {
            client: client.clone(),
            user: identity.user.clone(),
            expires_in: identity.expires_in(unix_now()),
            ping_interval: self.node.config.client.ping_interval.as_secs().max(1),
        };
        let (refresh_at, expire_at) = self.deadlines(&identity);
        self.stage = Stage::Connected(Connected {
            client,
            refresh_at,
            expire_at,
            identity,
        });
        Ok(ReplyOk::Connect(ok))
    }

    /// When to push `refresh` and when to close, for a connection with `identity`'s token.
    fn deadlines(&self, identity: &Identity) -> (Option<Tick>, Option<Tick>) {
        let now = Instant::now();
        let c = &self.node.config;
        // An `exp` centuries away is legal; cap it so deadline arithmetic cannot overflow
        // (a connection outliving the cap simply has no deadline).
        const FAR: u64 = 100 * 365 * 24 * 3600;
        let expires_in = identity
            .expires_in(unix_now())
            .filter(|s| *s < FAR)
            .map(Duration::from_secs);
        let tick = |at: Option<Instant>| at.map(|at| self.node.timers.tick(at));
        (
            tick(
                expires_in.and_then(|e| now.checked_add(e.saturating_sub(c.client.refresh_ahead))),
            ),
            tick(expires_in.and_then(|e| now.checked_add(e + c.auth.leeway))),
        )
    }

    pub(super) async fn refresh(&mut self, token: &str) -> Result<RefreshOk, ErrorBody> {
        let identity = self.node.verifier.verify(token).await.map_err(|e| {
            metrics::counter!(m::AUTH_FAILURES, "reason" => e.label()).increment(1);
            e.code().with(e.to_string())
        })?;
        let conn = self.connected();
        if identity.user != conn.identity.user {
            return Err(ErrorCode::WrongUser.with(format!(
                "token is for user {:?}, connection is {:?}",
                identity.user.as_str(),
                conn.identity.user.as_str()
            )));
        }
        let expires_in = identity.expires_in(unix_now());
        let (refresh_at, expire_at) = self.deadlines(&identity);
        if let Stage::Connected(conn) = &mut self.stage {
            conn.refresh_at = refresh_at;
            conn.expire_at = expire_at;
            conn.identity = identity;
        }
        // Capabilities may have shrunk: end subscriptions the new token no longer allows.
        let revoked: Vec<RoomName> = self
            .subs
            .iter()
            .filter(|(room, sub)| {
                self.check(room, Capability::Subscribe).is_err()
                    || (sub.presence && self.check(room, Capability::Presence).is_err())
            })
            .map(|(room, _)| room.clone())
            .collect();
        for room in revoked {
            if let Some(sub) = self.subs.remove(&room) {
                self.drop_sub(room.clone(), sub).await;
                self.outbox
                    .push_frame(&ServerFrame::Push(Push::Unsubscribed(UnsubscribedPush {
                        room,
                        code: ErrorCode::PermissionDenied,
                        reason: "the refreshed token no longer allows this subscription".into(),
                    })));
            }
        }
        Ok(RefreshOk { expires_in })
    }
}
