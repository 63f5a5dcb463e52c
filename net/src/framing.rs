//! Framing of a long-lived stream (the edge protocol's one stream per attached edge): a sequence of length-prefixed
//! postcard frames each way on one bidirectional stream (`plaza_proto::codec` framing, no
//! per-frame header). The version handshake is the first frame each way
//! ([`plaza_proto::cluster::EdgeRequest::Hello`] → `Welcome`/`Incompatible`).

use bytes::Bytes;
use plaza_proto::codec::{self, CodecError};
use quinn::{RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::frame::FrameError;

/// Bytes asked of QUIC per read.
const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from a session stream, buffering partial ones.
pub struct FrameReader {
    recv: RecvStream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
}

impl FrameReader {
    /// Reads frames from `recv`.
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next frame, or `None` when the peer finished the stream cleanly between frames.
    /// A frame over the codec's size limit, bytes that do not decode, or a stream that ends
    /// inside a frame are [`FrameError::Codec`]/[`FrameError::Malformed`]; a reset or lost
    /// connection is [`FrameError::Stream`].
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            if let Some((value, used)) = codec::read_frame::<T>(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(Some(value));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(FrameError::Codec(CodecError::Truncated)),
                Err(e) => return Err(FrameError::Stream(e.to_string())),
            }
        }
    }
}

/// Appends `value` as a frame to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    Ok(codec::write_frame(value, out)?)
}

/// Writes one frame.
pub async fn write_one<T: Serialize>(send: &mut SendStream, value: &T) -> Result<(), FrameError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    send.write_all(&out)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))
}

/// Most bytes gathered into one write.
const MAX_WRITE: usize = 1024 * 1024;

/// Writes the frames queued on `rx` to `send` until the queue closes (then finishes the
/// stream) or a write fails, gathering whatever is queued into one write.
pub async fn write_frames<T: Serialize>(mut send: SendStream, mut rx: mpsc::Receiver<T>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(frame) = next {
            if let Err(e) = encode_into(&frame, &mut buf) {
                tracing::error!(error = %e, "cannot encode a session frame");
            }
            next = if buf.len() < MAX_WRITE {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Encodes `value` as one frame, ready to be queued to any number of streams.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Bytes, FrameError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(Bytes::from(out))
}

/// Writes already-encoded frames queued on `rx` to `send` until the queue closes (then
/// finishes the stream) or a write fails, gathering whatever is queued into one write.
pub async fn write_encoded(mut send: SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut chunks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut size = first.len();
        chunks.push(first);
        while size < MAX_WRITE {
            let Ok(frame) = rx.try_recv() else { break };
            size += frame.len();
            chunks.push(frame);
        }
        if send.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
        chunks.clear();
    }
    let _ = send.finish();
}
