//! Reading a stream back: an ephemeral ordered consumer from a start position until nothing
//! is pending (or enough was read), the messages with their sequences, headers and times.

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use plaza_proto::cluster::BrokerError;

/// A stored message as Plaza reads it back.
pub(crate) struct Stored {
    pub subject: String,
    pub sequence: u64,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: bytes::Bytes,
    /// When the server stored it.
    pub time: time::OffsetDateTime,
}

/// Reads the messages of `stream` matching `filter` with `policy`, in stream order, until
/// none are pending (an ephemeral ordered consumer; nothing to clean up).
pub(crate) async fn read_all(
    stream: &stream::Stream,
    filter: String,
    policy: jetstream::consumer::DeliverPolicy,
) -> Result<Vec<Stored>, BrokerError> {
    read_some(stream, filter, policy, usize::MAX).await
}

/// [`read_all`], stopping after `max` messages.
pub(crate) async fn read_some(
    stream: &stream::Stream,
    filter: String,
    policy: jetstream::consumer::DeliverPolicy,
    max: usize,
) -> Result<Vec<Stored>, BrokerError> {
    let unavailable = |e: &dyn std::fmt::Display| BrokerError::Unavailable(format!("NATS: {e}"));
    let config = jetstream::consumer::pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy: policy,
        ..Default::default()
    };
    let mut consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| unavailable(&e))?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| unavailable(&e))?
        .num_pending;
    let mut out = Vec::new();
    if pending == 0 || max == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(&e))?;
        let info = message.info().map_err(|e| unavailable(&e))?;
        let (sequence, left, time) = (info.stream_sequence, info.pending, info.published);
        out.push(Stored {
            subject: message.subject.to_string(),
            sequence,
            headers: message.headers.clone(),
            payload: message.payload.clone(),
            time,
        });
        if left == 0 || out.len() >= max {
            break;
        }
    }
    Ok(out)
}
