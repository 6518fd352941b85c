//! Kafka's framing: a 4-byte big-endian size, then the request. We only ever
//! decode a frame once it is wholly buffered, and its size is checked first.

use thiserror::Error;

/// Bytes of the size prefix.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;
/// A request header is at least api key, api version and correlation id.
pub const REQUEST_HEADER_BYTES_MIN: usize = 8;

/// Why a frame cannot be taken; each closes the connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error(
        "frame size {size_bytes} is negative or below the {REQUEST_HEADER_BYTES_MIN}-byte header"
    )]
    TooSmall { size_bytes: i32 },
    #[error("frame size {size_bytes} exceeds socket_request_max_bytes {max_bytes}")]
    TooLarge { size_bytes: i32, max_bytes: u32 },
}

/// Reads the size prefix at the front of `buffered`: `Ok(None)` while fewer
/// than four bytes are buffered, else the payload length once it is valid.
pub fn frame_length(buffered: &[u8], max_bytes: u32) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buffered.get(..FRAME_SIZE_PREFIX_BYTES) else {
        return Ok(None);
    };
    let size_bytes = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size_bytes < REQUEST_HEADER_BYTES_MIN as i32 {
        return Err(FrameError::TooSmall { size_bytes });
    }
    if size_bytes as u32 > max_bytes {
        return Err(FrameError::TooLarge {
            size_bytes,
            max_bytes,
        });
    }
    Ok(Some(size_bytes as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_prefix_waits() {
        assert_eq!(frame_length(&[0, 0], 100), Ok(None));
    }

    #[test]
    fn absurd_sizes_are_refused() {
        assert_eq!(
            frame_length(&(-1i32).to_be_bytes(), 100),
            Err(FrameError::TooSmall { size_bytes: -1 })
        );
        assert_eq!(
            frame_length(&i32::MAX.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                size_bytes: i32::MAX,
                max_bytes: 100
            })
        );
        assert_eq!(frame_length(&20i32.to_be_bytes(), 100), Ok(Some(20)));
    }
}
