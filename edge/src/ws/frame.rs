//! RFC 6455 frame headers: parsing what a client sends (masked, bounded) and encoding what the
//! server sends (unmasked, so one encoded frame can be shared by every recipient).

use bytes::{BufMut, Bytes, BytesMut};

use super::WsError;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// The closing handshake.
    Close,
    /// A ping (the peer answers with a pong carrying the same payload).
    Ping,
    /// A pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<Self, WsError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return Err(WsError::Protocol("reserved opcode")),
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate, first frame only).
    pub rsv1: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key (always present on a valid client frame).
    pub mask: [u8; 4],
    /// Payload length in bytes (bounded by the caller's `max_frame`).
    pub len: usize,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

/// Parses a client frame header at the start of `buf`. `Ok(None)`: more bytes are needed.
///
/// Rejects what RFC 6455 forbids of a client frame (RSV2/RSV3, reserved opcodes, unmasked
/// frames, fragmented or oversized control frames, non-minimal 64-bit lengths with the top bit
/// set) and payloads over `max_frame` bytes, before any payload byte is buffered.
/// `rsv1_allowed`: whether permessage-deflate was negotiated.
pub fn parse_header(
    buf: &[u8],
    max_frame: usize,
    rsv1_allowed: bool,
) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 {
        return Err(WsError::Protocol("reserved bits RSV2/RSV3 set"));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    if rsv1 && !rsv1_allowed {
        return Err(WsError::Protocol("RSV1 set without permessage-deflate"));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let (len, mut header_len) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("64-bit length with the top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(WsError::Protocol("control frame payload over 125 bytes"));
        }
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= max_frame => len,
        _ => return Err(WsError::TooLarge),
    };
    let Some(mask) = buf.get(header_len..header_len + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    header_len += 4;
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask,
        len,
        header_len,
    }))
}

/// Unmasks (or masks) `data` in place; `offset` is the position of `data[0]` in the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Appends an unmasked server frame header for a `len`-byte payload.
pub fn put_header(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, len: usize) {
    let mut b0 = opcode.bits();
    if fin {
        b0 |= 0x80;
    }
    if rsv1 {
        b0 |= 0x40;
    }
    out.put_u8(b0);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// A complete, unfragmented server frame: header and payload in one shared buffer.
pub fn encode(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut out, true, rsv1, opcode, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (cut to 123 bytes at a character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Close, false, &payload)
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4, IANA registry).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code and reason of a client close frame's payload, validated.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_allowed(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::Utf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask, 0);
        out.extend_from_slice(&p);
        out
    }

    #[test]
    fn parses_every_length_encoding_and_waits_for_more_bytes() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let f = client_frame(0x81, &vec![b'a'; n]);
            let h = parse_header(&f, 1 << 20, false).unwrap().unwrap();
            assert_eq!((h.len, h.opcode, h.fin), (n, OpCode::Text, true));
            assert_eq!(h.header_len + n, f.len());
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&f[..cut], 1 << 20, false).unwrap(), None);
            }
        }
    }

    #[test]
    fn rejects_what_a_client_must_not_send() {
        let too_big = client_frame(0x81, &[0; 200]);
        assert!(matches!(
            parse_header(&too_big, 100, false),
            Err(WsError::TooLarge)
        ));
        let unmasked = [0x81, 0x00];
        assert!(parse_header(&unmasked, 100, false).is_err());
        for b0 in [0xA1, 0x91, 0x83, 0x0B, 0x09, 0xC1] {
            assert!(
                parse_header(&client_frame(b0, b"x"), 100, false).is_err(),
                "{b0:#x}"
            );
        }
        assert!(parse_header(&client_frame(0xC1, b"x"), 100, true).is_ok());
        assert!(parse_header(&client_frame(0x89, &[0; 126]), 1000, false).is_err());
    }

    #[test]
    fn server_frames_are_unmasked_with_minimal_lengths() {
        assert_eq!(
            &encode(OpCode::Text, false, b"hi")[..],
            &[0x81, 2, b'h', b'i']
        );
        assert_eq!(
            &encode(OpCode::Text, true, &[0; 126])[..4],
            &[0xC1, 126, 0, 126]
        );
        assert_eq!(
            &encode(OpCode::Binary, false, &[0; 65536])[..2],
            &[0x82, 127]
        );
        let close = encode_close(1000, &"é".repeat(100));
        assert_eq!(close.len(), 2 + 2 + 122);
    }

    #[test]
    fn close_payloads_are_validated() {
        assert_eq!(parse_close(&[]).unwrap(), None);
        assert!(parse_close(&[3]).is_err());
        assert_eq!(
            parse_close(&[3, 232, b'o', b'k']).unwrap(),
            Some((1000, "ok"))
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000] {
            assert!(parse_close(&code.to_be_bytes()).is_err(), "{code}");
        }
        assert!(parse_close(&[3, 232, 0xFF]).is_err());
    }
}
