//! The tungstenite connection's writer task: drains the outbox into the split socket's sink,
//! then runs the closing handshake.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::SinkExt;
use plaza_proto::client::DisconnectPush;
use plaza_proto::{CloseCode, Push, ServerFrame};

use super::{CLOSE_TIMEOUT, MAX_BATCH, Outbox, Outgoing, Written, truncate_reason};
use crate::ws::compat::Writer;

/// Drains the outbox into a tungstenite socket until the connection closes (its writer task).
/// On close with a reason, flushes what is queued (unless the client is a slow consumer), then
/// sends the `disconnect` push and the close frame with the same code.
#[allow(clippy::manual_async_fn)] // deliberate, see the comment in the body
pub(crate) fn write_loop(
    mut sink: Writer,
    outbox: Arc<Outbox>,
) -> impl Future<Output = ()> + Send + 'static {
    // An `async move` block: its captures are used in place (an async fn would also keep a
    // copy of its arguments in every connection's writer task).
    async move {
        loop {
            if outbox.is_closed() {
                break;
            }
            let Some(first) = outbox.pop() else {
                // A push or the close in between leaves a permit: nothing is missed.
                match &outbox.ready {
                    Some(ready) => ready.notified().await,
                    None => break, // Not a tungstenite outbox: nobody would wake this loop.
                }
                continue;
            };
            // `closed` may take a push's permit meanwhile; its frame is still queued, and
            // the next round looks at the queue before it waits.
            let written = tokio::select! {
                biased;
                _ = outbox.closed() => break,
                r = write_batch(&mut sink, first, &outbox) => r,
            };
            match written {
                Ok(bytes) => outbox.settle(bytes),
                Err(()) => {
                    outbox.close_quietly();
                    break;
                }
            }
        }
        // Boxed: the closing handshake (and its timer) only exists once, at the end.
        let finish = finish(&mut sink, &outbox, outbox.reason());
        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, finish)).await;
    }
}

/// Writes `first` and what else is queued (up to [`MAX_BATCH`] frames), then flushes once.
/// Returns the bytes the written frames held, by account.
async fn write_batch(sink: &mut Writer, first: Outgoing, outbox: &Outbox) -> Result<Written, ()> {
    let mut bytes = first.budget();
    feed(sink, first).await?;
    let mut drained = false;
    for _ in 1..MAX_BATCH {
        let Some(next) = outbox.pop() else {
            drained = true;
            break;
        };
        bytes += next.budget();
        feed(sink, next).await?;
    }
    sink.flush().await.map_err(|_| ())?;
    if !drained {
        // The batch was full: come back for the rest without waiting for a push.
        if let Some(ready) = &outbox.ready {
            ready.notify_one();
        }
    }
    Ok(bytes)
}

/// Feeds one queued item to tungstenite.
async fn feed(sink: &mut Writer, item: Outgoing) -> Result<(), ()> {
    match item.into_message() {
        Some(message) => sink.feed(message).await.map_err(|_| ()),
        None => Ok(()),
    }
}

async fn finish(sink: &mut Writer, outbox: &Outbox, reason: Option<(CloseCode, String)>) {
    let Some((code, reason)) = reason else {
        let _ = sink.close().await;
        return;
    };
    if code != CloseCode::SlowConsumer {
        // Deliver what was queued before the close, e.g. the error reply that caused it.
        while let Some(next) = outbox.pop() {
            if feed(sink, next).await.is_err() {
                return;
            }
        }
    }
    let push = ServerFrame::Push(Push::Disconnect(DisconnectPush::new(code, reason.clone())));
    let _ = sink
        .feed(Message::Text(Utf8Bytes::from(push.encode())))
        .await;
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(truncate_reason(reason)),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
