//! What makes a connection's end unconditional: whatever a command handler or the cleanup does,
//! panics included, the connection is closed with a code, its gauges are released, and it is
//! taken out of the hub so no publication reaches a dead session.
//!
//! ```text
//!   run: read loop ─(panic caught)─▶ close 4003 ─▶ finish: leave rooms, presence, slot ─▶ guard
//!   guard (Drop): gauge −1 · if finish did not complete: close 4003, hub.forget, abort writer task
//! ```

use std::any::Any;

use plaza_proto::CloseCode;
use tokio::task::AbortHandle;

use crate::hub::{Hub, SessionId};
use crate::metrics as m;
use crate::outbox::Closer;

/// Releases a connection's edge-wide state when it is dropped; see the module docs.
pub(super) struct ConnectionGuard {
    hub: Hub,
    session: SessionId,
    closer: Closer,
    /// The writer task, where the connection has one (tungstenite).
    writer: Option<AbortHandle>,
    /// Set once `finish` has left every room and the writer has ended.
    finished: bool,
}

impl ConnectionGuard {
    /// Guards a connection that was just counted in `plaza_connections`.
    pub(super) fn new(
        hub: Hub,
        session: SessionId,
        closer: Closer,
        writer: Option<AbortHandle>,
    ) -> Self {
        metrics::gauge!(m::CONNECTIONS).increment(1);
        Self {
            hub,
            session,
            closer,
            writer,
            finished: false,
        }
    }

    /// A handler of this connection panicked in `stage`: closes it with 4003 (the client may
    /// reconnect) and counts it. The panic's message is not logged here (it may quote client
    /// input); the process's panic hook has already printed it.
    pub(super) fn panicked(&self, stage: &'static str, _payload: Box<dyn Any + Send>) {
        metrics::counter!(m::HANDLER_PANICS, "stage" => stage).increment(1);
        tracing::error!(
            session = self.session,
            stage,
            "a connection handler panicked; closing the connection"
        );
        self.closer.close(
            CloseCode::ServerError,
            "internal error; reconnect (the incident was logged)",
        );
    }

    /// The normal end ran to completion: nothing left to release but the gauge.
    pub(super) fn finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS).decrement(1);
        if self.finished {
            return;
        }
        // The cleanup did not complete (it panicked, or the task was dropped): stop the
        // writer, and take the connection out of every room so no publication is queued to
        // it. Presence it joined is left to the broker tier's lease of this edge only if the
        // edge itself goes away; `leave` needs an async call that cannot run here.
        self.closer
            .close(CloseCode::ServerError, "internal error; reconnect");
        if let Some(writer) = &self.writer {
            writer.abort();
        }
        let rooms = self.hub.forget_session(self.session);
        tracing::warn!(
            session = self.session,
            rooms,
            "connection ended without its cleanup; removed it from the hub"
        );
    }
}
