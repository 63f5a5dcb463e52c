//! permessage-deflate (RFC 7692) without per-connection state.
//!
//! The server always negotiates `server_no_context_takeover; client_no_context_takeover`, so
//! every message is its own deflate stream in both directions: a publication is compressed
//! once (by whichever thread prepares it) and the same frame bytes go to every subscriber, and
//! a client message is inflated by the thread's one inflater, reset per message. Inflated
//! output is bounded by the message limit, so a small bomb cannot make the edge allocate more.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::WsError;
use super::frame::{self, OpCode};

/// The empty stored block a sync flush ends with, removed on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Messages shorter than this are not compressed: with no context takeover, a short JSON
/// message barely shrinks, and the header bytes it could save do not pay for the deflate.
pub const MIN_BYTES: usize = 128;

thread_local! {
    static DEFLATER: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Raw-deflates `data` as one message (fresh window, sync flush, tail removed).
pub fn compress(data: &[u8]) -> Vec<u8> {
    DEFLATER.with_borrow_mut(|c| {
        c.reset();
        // Room for incompressible input (stored blocks), so one call normally completes.
        let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
        loop {
            let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
            let input = data.get(consumed..).unwrap_or_default();
            // Raw deflate into a Vec cannot fail: errors are for corrupt streams on inflate.
            if c.compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
            if consumed >= data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

/// The compressed frame (RSV1 set) for a message whose payload is `data`, or `None` when
/// compressing would not make it smaller (then the plain frame serves every client).
pub fn deflated_frame(opcode: OpCode, data: &[u8]) -> Option<Bytes> {
    let compressed = compress(data);
    if compressed.len() >= data.len() {
        return None;
    }
    Some(frame::encode(opcode, true, &compressed))
}

/// Inflates one client message (the tail re-appended), refusing output over `max` bytes.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(2).clamp(64, max + 1));
        'inputs: for input in [data, &TAIL[..]] {
            let start = d.total_in();
            loop {
                // Room to write into, never beyond `max + 1` bytes (one more proves "too large").
                if out.capacity() - out.len() < 1024 && out.capacity() <= max {
                    let grow = out.capacity().max(4096).min(max + 1 - out.len());
                    out.reserve_exact(grow);
                }
                let in_before = d.total_in();
                let out_before = out.len();
                let consumed = usize::try_from(in_before - start).unwrap_or(input.len());
                let rest = input.get(consumed..).unwrap_or_default();
                let status = d
                    .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                    .map_err(|_| WsError::Inflate)?;
                if out.len() > max {
                    return Err(WsError::TooLarge);
                }
                if status == Status::StreamEnd {
                    // A final block (BFINAL=1): the message ends here (RFC 7692 §7.2.3.4).
                    break 'inputs;
                }
                if d.total_in() != in_before || out.len() != out_before {
                    continue; // Progress: the inflater may hold more output or want more input.
                }
                let consumed = usize::try_from(d.total_in() - start).unwrap_or(input.len());
                if consumed >= input.len() {
                    break;
                }
                if out.len() == out.capacity() {
                    // Stuck for room at the cap: the output would exceed `max`.
                    return Err(WsError::TooLarge);
                }
                return Err(WsError::Inflate);
            }
        }
        Ok(out)
    })
}

/// A frame for a message, built once: the plain bytes for every client and, if it helps,
/// the compressed bytes for those that negotiated permessage-deflate.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The uncompressed frame.
    pub plain: Bytes,
    /// The compressed frame, when smaller.
    pub deflated: Option<Bytes>,
}

impl Prepared {
    /// Frames `data` as one `opcode` message; compresses it if `compress` and it is at least
    /// `min_bytes` long.
    pub fn new(opcode: OpCode, data: &[u8], compress: bool, min_bytes: usize) -> Self {
        let mut plain = BytesMut::with_capacity(data.len() + 10);
        frame::put_header(&mut plain, true, false, opcode, data.len());
        plain.extend_from_slice(data);
        let deflated = if compress && data.len() >= min_bytes {
            deflated_frame(opcode, data)
        } else {
            None
        };
        Self {
            plain: plain.freeze(),
            deflated,
        }
    }

    /// The frame for a client with (`true`) or without permessage-deflate.
    pub fn for_client(&self, deflate: bool) -> &Bytes {
        match (&self.deflated, deflate) {
            (Some(d), true) => d,
            _ => &self.plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7692_hello_example() {
        // §7.2.3.1: "Hello" compressed without context takeover.
        let c = compress(b"Hello");
        assert_eq!(inflate(&c, 100).unwrap(), b"Hello");
        assert_eq!(
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn round_trips_and_bounds_inflated_size() {
        let json = br#"{"push":{"pub":{"room":"chat:lobby","data":{"text":"hello hello hello"}}}}"#
            .repeat(20);
        let c = compress(&json);
        assert!(c.len() * 3 < json.len());
        assert_eq!(inflate(&c, json.len()).unwrap(), json);
        assert!(matches!(
            inflate(&c, json.len() - 1),
            Err(WsError::TooLarge)
        ));
        let bomb = compress(&vec![0u8; 1 << 20]);
        assert!(matches!(inflate(&bomb, 4096), Err(WsError::TooLarge)));
        // Large messages come out whole (the inflater may hold output between calls).
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        assert_eq!(inflate(&compress(&big), big.len()).unwrap(), big);
        assert!(matches!(
            inflate(&[0xFF, 0xFF, 0xFF], 4096),
            Err(WsError::Inflate)
        ));
    }

    #[test]
    fn prepared_frames_share_one_compression() {
        let data = br#"{"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let p = Prepared::new(OpCode::Text, data, true, 16);
        let d = p.deflated.clone().unwrap();
        assert_eq!(d[0], 0xC1);
        assert!(d.len() < p.plain.len());
        assert_eq!(p.plain[0], 0x81);
        assert_eq!(p.for_client(false), &p.plain);
        assert_eq!(Prepared::new(OpCode::Text, b"{}", true, 16).deflated, None);
    }
}
