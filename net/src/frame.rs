//! The wire format of one RPC on one bidirectional QUIC stream, and the version handshake.
//!
//! ```text
//!   request  = MAGIC (4) · version u16 BE · frame          then FIN
//!   reply    = MAGIC (4) · status u8 · body                then FIN
//!     status OK (0)                   body = frame
//!     status UNSUPPORTED_VERSION (1)  body = supported version u16 BE · UTF-8 message
//!   frame    = length u32 BE · postcard   (plaza_proto::codec, at most MAX_FRAME bytes)
//! ```
//!
//! The handshake rides on every stream rather than once per connection: a stream is
//! self-describing, so nothing needs per-connection state, and a peer from another release
//! learns the supported version from the first RPC it makes. The reply header and the
//! `UNSUPPORTED_VERSION` body are fixed forever so that any version can read them; everything
//! after the header may change with [`PROTOCOL_VERSION`].
//!
//! Input a server cannot parse (wrong magic, short header, bad or oversized frame) is not
//! answered: the stream is reset with [`ERR_BAD_REQUEST`] and the connection keeps serving its
//! other streams. The functions here are generic over the message types so the edge↔broker
//! protocol can reuse them under its own ALPN.

use plaza_proto::codec::{self, CodecError, MAX_FRAME};
use quinn::{RecvStream, SendStream, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first bytes of every request and reply: "PLZ" and a format byte.
pub const MAGIC: [u8; 4] = *b"PLZ\x01";
/// The request format this build speaks (bumped on incompatible changes to the frames).
pub const PROTOCOL_VERSION: u16 = 1;

/// Reply status: the body is the handler's reply frame.
pub const STATUS_OK: u8 = 0;
/// Reply status: the request's version is not spoken here; the body names the one that is.
pub const STATUS_UNSUPPORTED_VERSION: u8 = 1;

/// Stream reset code: the request could not be parsed.
pub const ERR_BAD_REQUEST: VarInt = VarInt::from_u32(1);
/// Stream reset code: the server is shutting down or timed out reading the request.
pub const ERR_UNAVAILABLE: VarInt = VarInt::from_u32(2);
/// Connection close code: the peer negotiated an application protocol this server does not
/// serve.
pub const ERR_WRONG_ALPN: VarInt = VarInt::from_u32(3);
/// Connection close code: the peer's certificate does not grant what it tried (an edge
/// certificate on `plaza-raft/1`, a broker certificate attaching as an edge, an edge attaching
/// with another edge's id, a certificate without a Plaza role); the reason says which.
pub const ERR_WRONG_ROLE: VarInt = VarInt::from_u32(4);
/// Connection close code: the endpoint is shutting down.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);

const HEADER: usize = MAGIC.len() + 2;

/// Why an exchange on a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream or its connection failed (reset, closed, lost).
    #[error("stream: {0}")]
    Stream(String),
    /// The bytes are not a valid request or reply.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The frame could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer does not speak our version.
    #[error("peer speaks protocol version {supported}, this node {ours}: {message}")]
    UnsupportedVersion {
        /// The version the peer supports.
        supported: u16,
        /// Ours.
        ours: u16,
        /// The peer's explanation.
        message: String,
    },
}

fn stream_error(e: impl std::fmt::Display) -> FrameError {
    FrameError::Stream(e.to_string())
}

/// Encodes a request for `version` (tests pass other versions to play an old or new peer).
pub fn encode_request<T: Serialize>(request: &T, version: u16) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    codec::write_frame(request, &mut out)?;
    Ok(out)
}

/// The client half: sends `request` on a fresh stream, finishes it and reads the reply.
pub async fn exchange<Req: Serialize, Rep: DeserializeOwned>(
    mut send: SendStream,
    mut recv: RecvStream,
    request: &Req,
) -> Result<Rep, FrameError> {
    let bytes = encode_request(request, PROTOCOL_VERSION)?;
    send.write_all(&bytes).await.map_err(stream_error)?;
    send.finish().map_err(stream_error)?;
    let reply = recv
        .read_to_end(MAGIC.len() + 1 + 4 + MAX_FRAME)
        .await
        .map_err(stream_error)?;
    decode_reply(&reply)
}

/// Parses a whole reply stream.
pub fn decode_reply<Rep: DeserializeOwned>(reply: &[u8]) -> Result<Rep, FrameError> {
    let Some((status, body)) = reply
        .strip_prefix(&MAGIC)
        .and_then(|rest| rest.split_first())
    else {
        return Err(FrameError::Malformed("reply header".into()));
    };
    match *status {
        STATUS_OK => whole_frame(body),
        STATUS_UNSUPPORTED_VERSION => {
            let (version, message) = body
                .split_at_checked(2)
                .ok_or_else(|| FrameError::Malformed("short version error".into()))?;
            Err(FrameError::UnsupportedVersion {
                supported: u16::from_be_bytes([version[0], version[1]]),
                ours: PROTOCOL_VERSION,
                message: String::from_utf8_lossy(message).into_owned(),
            })
        }
        other => Err(FrameError::Malformed(format!("reply status {other}"))),
    }
}

/// Decodes exactly one frame that fills `bytes`.
fn whole_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    match codec::read_frame(bytes)? {
        Some((value, used)) if used == bytes.len() => Ok(value),
        Some(_) => Err(FrameError::Malformed("bytes after the frame".into())),
        None => Err(CodecError::Truncated.into()),
    }
}

/// What the server read from a request stream.
pub enum Incoming<Req> {
    /// A well-formed request in our version.
    Request(Req),
    /// A well-formed header in another version (already answered with
    /// [`STATUS_UNSUPPORTED_VERSION`]).
    OtherVersion(u16),
}

/// The server half, first step: reads and validates the request. On a version mismatch it
/// answers and finishes the stream itself; on malformed input it returns the error and the
/// caller resets the stream (see [`refuse`]).
pub async fn read_request<Req: DeserializeOwned>(
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<Incoming<Req>, FrameError> {
    let bytes = recv
        .read_to_end(HEADER + 4 + MAX_FRAME)
        .await
        .map_err(stream_error)?;
    let (header, frame) = bytes
        .split_at_checked(HEADER)
        .ok_or_else(|| FrameError::Malformed(format!("{} bytes, no header", bytes.len())))?;
    if header[..MAGIC.len()] != MAGIC {
        return Err(FrameError::Malformed("bad magic".into()));
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        let mut reply = Vec::with_capacity(64);
        reply.extend_from_slice(&MAGIC);
        reply.push(STATUS_UNSUPPORTED_VERSION);
        reply.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        reply.extend_from_slice(
            format!("unsupported protocol version {version}; this node speaks {PROTOCOL_VERSION}")
                .as_bytes(),
        );
        send.write_all(&reply).await.map_err(stream_error)?;
        send.finish().map_err(stream_error)?;
        return Ok(Incoming::OtherVersion(version));
    }
    Ok(Incoming::Request(whole_frame(frame)?))
}

/// The server half, last step: writes the reply and finishes the stream.
/// (Takes the reply by value: it is encoded before the first `.await`, so it need not be `Sync`.)
pub async fn write_reply<Rep: Serialize>(
    send: &mut SendStream,
    reply: Rep,
) -> Result<(), FrameError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(STATUS_OK);
    codec::write_frame(&reply, &mut out)?;
    drop(reply);
    send.write_all(&out).await.map_err(stream_error)?;
    send.finish().map_err(stream_error)
}

/// Abandons a stream in both directions with `code` (the peer sees a reset, not a reply).
pub fn refuse(send: &mut SendStream, recv: &mut RecvStream, code: VarInt) {
    // Either half may already be closed by the peer; nothing is left to do then.
    let _ = send.reset(code);
    let _ = recv.stop(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_starts_with_magic_and_version_then_one_frame() {
        let bytes = encode_request(&"hello".to_string(), 7).unwrap();
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(&bytes[4..6], &7u16.to_be_bytes());
        let (value, used) = codec::read_frame::<String>(&bytes[6..]).unwrap().unwrap();
        assert_eq!((value.as_str(), used), ("hello", bytes.len() - 6));
    }

    #[test]
    fn an_ok_reply_decodes_and_trailing_bytes_are_refused() {
        let mut reply = MAGIC.to_vec();
        reply.push(STATUS_OK);
        codec::write_frame(&42u32, &mut reply).unwrap();
        assert_eq!(decode_reply::<u32>(&reply).unwrap(), 42);
        reply.push(0);
        assert!(matches!(
            decode_reply::<u32>(&reply),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_version_error_reply_names_the_supported_version() {
        let mut reply = MAGIC.to_vec();
        reply.push(STATUS_UNSUPPORTED_VERSION);
        reply.extend_from_slice(&3u16.to_be_bytes());
        reply.extend_from_slice(b"speak 3");
        match decode_reply::<u32>(&reply) {
            Err(FrameError::UnsupportedVersion {
                supported, message, ..
            }) => assert_eq!((supported, message.as_str()), (3, "speak 3")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn replies_with_a_bad_header_or_status_are_malformed() {
        for bad in [&b""[..], b"PLZ", b"XXXX\x00", b"PLZ\x01\x09"] {
            assert!(
                matches!(decode_reply::<u32>(bad), Err(FrameError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut truncated = MAGIC.to_vec();
        truncated.push(STATUS_OK);
        truncated.extend_from_slice(&[0, 0, 0, 9, 1]);
        assert!(matches!(
            decode_reply::<u32>(&truncated),
            Err(FrameError::Codec(CodecError::Truncated))
        ));
    }
}
