//! What makes a connection's end unconditional: whatever a command handler or the cleanup does,
//! panics included, the connection is closed with a code, its gauges are released, and it is
//! taken out of the hub so no publication reaches a dead session.
//!
//! ```text
//!   run: read loop ─(panic caught)─▶ close 4003 ─▶ finish: leave rooms, presence, slot ─▶ finished
//!   Session (Drop): gauge −1 · user slot freed · unless finished: close 4003, hub.forget, abort writer task
//! ```
//!
//! The session itself is the guard (it has the hub, its id and its outbox already), so a
//! connection keeps no second copy of them.

use std::any::Any;

use super::*;

impl<L: EdgeLink> Session<L> {
    /// The normal end ran to completion: dropping the session releases nothing but the gauge.
    pub(super) fn finished(&mut self) {
        self.finished = true;
    }

    /// A handler of this connection panicked in `stage`: closes it with 4003 (the client may
    /// reconnect) and counts it. The panic's message is not logged here (it may quote client
    /// input); the process's panic hook has already printed it.
    pub(super) fn panicked(&self, stage: &'static str, _payload: Box<dyn Any + Send>) {
        metrics::counter!(m::HANDLER_PANICS, "stage" => stage).increment(1);
        tracing::error!(
            session = self.id,
            stage,
            "a connection handler panicked; closing the connection"
        );
        self.close(
            CloseCode::ServerError,
            "internal error; reconnect (the incident was logged)",
        );
    }
}

impl<L: EdgeLink> Drop for Session<L> {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS).decrement(1);
        if let Stage::Connected(conn) = &self.stage {
            self.node.users.release(&conn.identity.user, self.id);
        }
        if self.finished {
            return;
        }
        // The cleanup did not complete (it panicked, or the task was dropped): stop the
        // writer, and take the connection out of every room so no publication is queued to
        // it. Presence it joined is left to the broker tier's lease of this edge only if the
        // edge itself goes away; `leave` needs an async call that cannot run here.
        self.close(CloseCode::ServerError, "internal error; reconnect");
        if let Some(writer) = self.rare.as_ref().and_then(|r| r.writer.as_ref()) {
            writer.abort();
        }
        let rooms = self.node.hub.forget_session(self.id);
        tracing::warn!(
            session = self.id,
            rooms,
            "connection ended without its cleanup; removed it from the hub"
        );
    }
}
