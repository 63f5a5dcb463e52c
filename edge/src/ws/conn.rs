//! Reading and writing WebSocket frames on a socket, with no buffer held while idle.
//!
//! ```text
//!   read:  poll_read into the thread's scratch ─▶ Decoder.pending (only a frame in flight)
//!          ─▶ parse_header ─▶ unmask ─▶ reassemble fragments ─▶ inflate ─▶ UTF-8 ─▶ Event
//!   write: Outgoing frames (shared Bytes, never copied) ─▶ poll_write_vectored, many per call
//! ```
//!
//! [`Decoder`] and [`OutQueue`] are the two halves' state; the edge's session drives both on
//! one unsplit `TcpStream` from the connection's one task (`session::transport`). [`WsConn`]
//! does the same for a plain echo server (the Autobahn conformance runs) and answers pings and
//! close frames itself. Progress is kept in this state, never in a future, so every method is
//! cancel-safe.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::frame::{self, Header, OpCode};
use super::{WsError, deflate};

/// Most frames handed to one `writev`.
pub(crate) const MAX_IOV: usize = 64;
/// Size of each worker thread's read scratch buffer.
const SCRATCH_BYTES: usize = 16 * 1024;
/// Queue slots a drained [`OutQueue`] may keep.
const KEEP_SLOTS: usize = 8;

thread_local! {
    /// Where sockets are read into; only the bytes of an incomplete frame are kept.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload accepted.
    pub max_frame: usize,
    /// Largest message (after reassembly and inflation) accepted.
    pub max_message: usize,
}

/// A message or control frame received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping with its payload (to be answered with a pong carrying it).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client's close frame: code and reason, if any.
    Close(Option<(u16, String)>),
}

/// A message being reassembled from fragments.
#[derive(Debug)]
struct Assembly {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Length of the prefix of `data` known to be valid UTF-8 (uncompressed text only).
    utf8_checked: usize,
}

/// The read side's state: the bytes of a frame in flight and a message being reassembled.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    deflate: bool,
    /// Received bytes not yet parsed into a complete frame (no allocation when empty).
    pending: BytesMut,
    message: Option<Box<Assembly>>,
    close_received: bool,
}

impl Decoder {
    /// A decoder starting with `read_buf` (bytes read past the HTTP request);
    /// `deflate`: permessage-deflate was negotiated.
    pub fn new(limits: Limits, deflate: bool, read_buf: &[u8]) -> Self {
        Self {
            limits,
            deflate,
            pending: BytesMut::from(read_buf),
            message: None,
            close_received: false,
        }
    }

    /// Whether the client's close frame has arrived (nothing after it is read).
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// The next event from `io`; `Ok(None)` at the end of the stream or after a close frame.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Event>, WsError> {
        poll_fn(|cx| self.poll_event(io, cx)).await
    }

    /// Polls for the next event (see [`Decoder::read`]).
    pub fn poll_event<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Event>, WsError>> {
        loop {
            if let Some(event) = self.parse()? {
                return Poll::Ready(Ok(Some(event)));
            }
            if self.close_received {
                return Poll::Ready(Ok(None));
            }
            if ready!(self.poll_fill(io, cx))? == 0 {
                return Poll::Ready(Ok(None));
            }
        }
    }

    /// Reads what the socket has into the scratch buffer and keeps it in `pending`.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(io).poll_read(cx, &mut buf))?;
            self.pending.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
    }

    fn release_pending(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = BytesMut::new();
        }
    }

    /// Takes complete frames out of `pending` until one yields an event.
    fn parse(&mut self) -> Result<Option<Event>, WsError> {
        while !self.close_received {
            let Some(h) = frame::parse_header(&self.pending, self.limits.max_frame, self.deflate)?
            else {
                self.release_pending();
                return Ok(None);
            };
            if self.pending.len() < h.header_len + h.len {
                return Ok(None);
            }
            self.pending.advance(h.header_len);
            let mut payload = self.pending.split_to(h.len);
            self.release_pending();
            frame::apply_mask(&mut payload, h.mask, 0);
            if let Some(event) = self.on_frame(h, payload)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    fn on_frame(&mut self, h: Header, payload: BytesMut) -> Result<Option<Event>, WsError> {
        if h.opcode.is_control() && h.rsv1 {
            return Err(WsError::Protocol("compressed control frame"));
        }
        match h.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Event::Pong)),
            OpCode::Close => {
                let close = frame::parse_close(&payload)?.map(|(c, r)| (c, r.to_owned()));
                self.close_received = true;
                self.pending = BytesMut::new();
                self.message = None;
                Ok(Some(Event::Close(close)))
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(WsError::Protocol("new message before the last one ended"));
                }
                let text = h.opcode == OpCode::Text;
                if h.fin && !h.rsv1 {
                    // The common case: a whole message in one frame, no copy.
                    if text {
                        std::str::from_utf8(&payload).map_err(|_| WsError::Utf8)?;
                        return Ok(Some(Event::Text(payload.freeze())));
                    }
                    return Ok(Some(Event::Binary(payload.freeze())));
                }
                self.message = Some(Box::new(Assembly {
                    text,
                    compressed: h.rsv1,
                    data: Vec::new(),
                    utf8_checked: 0,
                }));
                self.append(h.fin, &payload)
            }
            OpCode::Continuation => {
                if h.rsv1 {
                    return Err(WsError::Protocol("RSV1 on a continuation frame"));
                }
                if self.message.is_none() {
                    return Err(WsError::Protocol("continuation without a message"));
                }
                self.append(h.fin, &payload)
            }
        }
    }

    fn append(&mut self, fin: bool, payload: &[u8]) -> Result<Option<Event>, WsError> {
        let Some(m) = self.message.as_mut() else {
            return Ok(None);
        };
        if m.data.len() + payload.len() > self.limits.max_message {
            return Err(WsError::TooLarge);
        }
        m.data.extend_from_slice(payload);
        if m.text && !m.compressed {
            // Fail fast on a fragment that cannot start valid UTF-8 (an incomplete character
            // at the end is fine until the last fragment).
            match std::str::from_utf8(&m.data[m.utf8_checked..]) {
                Ok(_) => m.utf8_checked = m.data.len(),
                Err(e) if e.error_len().is_some() => return Err(WsError::Utf8),
                Err(e) => m.utf8_checked += e.valid_up_to(),
            }
        }
        if !fin {
            return Ok(None);
        }
        let Some(m) = self.message.take() else {
            return Ok(None);
        };
        let data = if m.compressed {
            deflate::inflate(&m.data, self.limits.max_message)?
        } else {
            m.data
        };
        if m.text {
            std::str::from_utf8(&data).map_err(|_| WsError::Utf8)?;
            Ok(Some(Event::Text(Bytes::from(data))))
        } else {
            Ok(Some(Event::Binary(Bytes::from(data))))
        }
    }
}

/// The write side's state: encoded frames waiting for the socket, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// The front may be partly written.
    frames: VecDeque<Bytes>,
    close_sent: bool,
}

impl OutQueue {
    /// Queues an encoded frame (see [`frame::encode`]). Ignored once a close frame is queued:
    /// nothing may follow it.
    pub fn push(&mut self, frame: Bytes) {
        if !self.close_sent && !frame.is_empty() {
            self.frames.push_back(frame);
        }
    }

    /// Queues a close frame unless one was queued already.
    pub fn push_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            self.frames.push_back(frame::encode_close(code, reason));
            self.close_sent = true;
        }
    }

    /// Whether a close frame was queued.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether frames wait to be written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Gives back the queue's storage if nothing waits to be written.
    pub fn release(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    /// Writes queued frames, up to [`MAX_IOV`] per vectored write, until all are written.
    pub fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(front) = self.frames.front() {
            let mut written = if self.frames.len() == 1 {
                // One frame (most deliveries): a plain write — for a socket, `send` — is
                // cheaper for the kernel than a one-element `writev`.
                ready!(Pin::new(&mut *io).poll_write(cx, front))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                for (slot, f) in slices.iter_mut().zip(self.frames.iter()) {
                    *slot = IoSlice::new(f);
                    n += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let Some(front) = self.frames.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.frames.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        if self.frames.capacity() > KEEP_SLOTS {
            self.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// A socket shared by reference: the edge's lean connections keep theirs in the outbox, where
/// the connection's task reads and writes it and the hub's fan-out may write it directly
/// (`outbox::Flushes`). Who writes when is the outbox's business; this only adapts
/// `TcpStream`'s `&self` readiness calls to the async I/O traits.
#[derive(Debug, Clone, Copy)]
pub struct SharedTcp<'a>(pub &'a TcpStream);

impl AsyncRead for SharedTcp<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it, so the next poll registers.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // `try_write` is a `send`: cheaper for the kernel than a one-element `writev`.
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side down (a FIN after what was written).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// One client's WebSocket on an unsplit socket, driven by one task; answers pings and the
/// closing handshake itself.
#[derive(Debug)]
pub struct WsConn {
    io: TcpStream,
    decoder: Decoder,
    out: OutQueue,
    deflate: bool,
}

impl WsConn {
    /// Wraps an upgraded socket; `read_buf` holds bytes the HTTP layer read past the request.
    pub fn new(io: TcpStream, read_buf: &[u8], limits: Limits, deflate: bool) -> Self {
        Self {
            io,
            decoder: Decoder::new(limits, deflate, read_buf),
            out: OutQueue::default(),
            deflate,
        }
    }

    /// Whether permessage-deflate was negotiated (the client accepts RSV1 frames).
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// The next event; `Ok(None)` once the stream ended. A ping is answered (queued pong)
    /// and a close frame echoed before they are returned. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Event>, WsError> {
        let event = self.decoder.read(&mut self.io).await?;
        match &event {
            Some(Event::Ping(payload)) => {
                self.out.push(frame::encode(OpCode::Pong, false, payload))
            }
            Some(Event::Close(close)) => {
                self.out
                    .push_close(close.as_ref().map_or(1000, |(c, _)| *c), "");
            }
            _ => {}
        }
        Ok(event)
    }

    /// Queues an encoded frame; [`WsConn::flush`] writes it.
    pub fn queue(&mut self, frame: Bytes) {
        self.out.push(frame);
    }

    /// Writes what is queued. Cancel-safe.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.out.poll_flush(&mut self.io, cx)).await
    }

    /// Starts the closing handshake with `code` (unless it has started).
    pub fn start_close(&mut self, code: u16, reason: &str) {
        self.out.push_close(code, reason);
    }

    /// Flushes and shuts the write side down (the server closes the TCP connection first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [9, 8, 7, 6];
        assert!(payload.len() < 126);
        let mut out = vec![b0, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const LIMITS: Limits = Limits {
        max_frame: 1024,
        max_message: 1024,
    };

    #[tokio::test]
    async fn an_idle_decoder_holds_no_buffer_and_a_partial_frame_is_kept() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut d = Decoder::new(LIMITS, false, &[]);
        let frame = client_frame(0x81, b"hello");
        client.write_all(&frame[..3]).await.unwrap();
        client.write_all(&frame[3..]).await.unwrap();
        assert_eq!(
            d.read(&mut server).await.unwrap(),
            Some(Event::Text(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            d.pending.capacity(),
            0,
            "nothing is held once the frame is read"
        );
        client.write_all(&frame[..4]).await.unwrap();
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), d.read(&mut server)).await;
        assert!(pending.is_err(), "an incomplete frame yields nothing");
        assert_eq!(d.pending.len(), 4, "and its bytes are kept");
    }

    #[tokio::test]
    async fn fragments_reassemble_across_a_split_character_and_bad_utf8_fails_fast() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut d = Decoder::new(LIMITS, false, &[]);
        let e = "é".as_bytes();
        client
            .write_all(&client_frame(0x01, &[b'a', e[0]]))
            .await
            .unwrap();
        client.write_all(&client_frame(0x89, b"p")).await.unwrap();
        client
            .write_all(&client_frame(0x80, &[e[1], b'b']))
            .await
            .unwrap();
        assert_eq!(
            d.read(&mut server).await.unwrap(),
            Some(Event::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            d.read(&mut server).await.unwrap(),
            Some(Event::Text(Bytes::from("aéb".as_bytes().to_vec())))
        );
        client
            .write_all(&client_frame(0x01, &[0xFF]))
            .await
            .unwrap();
        assert!(matches!(d.read(&mut server).await, Err(WsError::Utf8)));
    }

    #[tokio::test]
    async fn messages_over_the_limit_are_refused_across_fragments() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let limits = Limits {
            max_frame: 100,
            max_message: 150,
        };
        let mut d = Decoder::new(limits, false, &[]);
        client
            .write_all(&client_frame(0x02, &[0; 100]))
            .await
            .unwrap();
        client
            .write_all(&client_frame(0x80, &[0; 60]))
            .await
            .unwrap();
        assert!(matches!(d.read(&mut server).await, Err(WsError::TooLarge)));
    }
}
