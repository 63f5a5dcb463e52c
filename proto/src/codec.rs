//! postcard encoding of edge↔broker frames, with length-prefixed framing for byte streams.
//!
//! A frame on a stream is a 4-byte big-endian length followed by that many bytes of postcard.
//! [`MAX_FRAME`] bounds the length so a corrupt or hostile peer cannot make the reader allocate
//! without limit.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded frame accepted, in bytes.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// postcard rejected the bytes or the value.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The buffer ends inside a frame.
    #[error("truncated frame")]
    Truncated,
}

/// Encodes `value` as postcard.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes postcard bytes; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CodecError::Postcard(
            postcard::Error::DeserializeBadEncoding,
        ))
    }
}

/// Appends `value` as one length-prefixed frame to `out`.
pub fn write_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let body = encode(value)?;
    if body.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(body.len()));
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Reads one length-prefixed frame from the front of `buf`: the value and the bytes consumed,
/// or `Ok(None)` if `buf` does not yet hold a whole frame.
pub fn read_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, CodecError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode(body)?, 4 + len)))
}

#[cfg(test)]
mod tests;
