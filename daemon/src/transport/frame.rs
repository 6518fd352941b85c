//! Frames on node-to-node QUIC streams: `[u32 length][u8 kind][payload]`,
//! big-endian. The length is checked against the kind's limit before
//! anything is allocated, so a peer cannot make a node reserve more than
//! that limit per stream.

use bytes::{BufMut, Bytes, BytesMut};

/// Length and kind.
pub const FRAME_HEADER_BYTES: usize = 5;
/// The largest message payload (see `FrameKind::max_payload`).
pub const MESSAGE_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The first frame a dialling node sends: who it says it is.
    Hello,
    /// A message of the layer above (controller, replication).
    Message,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Hello => 1,
            FrameKind::Message => 2,
        }
    }

    fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::Message),
            _ => None,
        }
    }

    /// The largest payload of this kind. A message may carry a metadata
    /// snapshot (a Raft `MsgSnapshot`, or a chunk a broker fetches), so it
    /// is bounded at 16 MiB; only admitted peers can send one.
    pub fn max_payload(self) -> u32 {
        match self {
            FrameKind::Hello => 4 * 1024,
            FrameKind::Message => MESSAGE_BYTES_MAX,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{kind:?} frame of {len} bytes exceeds its limit of {max}")]
    TooLarge { kind: FrameKind, len: u32, max: u32 },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("reading the stream: {0}")]
    Read(String),
    #[error("writing the stream: {0}")]
    Write(String),
    #[error("bad hello: {0}")]
    BadHello(&'static str),
}

/// Checks a frame header; returns the kind and payload length.
pub fn parse_header(header: [u8; FRAME_HEADER_BYTES]) -> Result<(FrameKind, u32), FrameError> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = FrameKind::from_code(header[4]).ok_or(FrameError::UnknownKind(header[4]))?;
    if len > kind.max_payload() {
        return Err(FrameError::TooLarge {
            kind,
            len,
            max: kind.max_payload(),
        });
    }
    Ok((kind, len))
}

/// A frame's bytes, header first.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Bytes {
    assert!(
        payload.len() <= kind.max_payload() as usize,
        "frame within its limit"
    );
    let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_u8(kind.code());
    out.put_slice(payload);
    out.freeze()
}

/// Reads one frame; `None` when the stream ended cleanly before it.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(FrameKind, Bytes)>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(FrameError::Read(e.to_string())),
    }
    let (kind, len) = parse_header(header)?;
    let mut payload = vec![0u8; len as usize];
    recv.read_exact(&mut payload).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Read(e.to_string()),
    })?;
    Ok(Some((kind, payload.into())))
}

pub async fn write_frame(
    send: &mut quinn::SendStream,
    kind: FrameKind,
    payload: &[u8],
) -> Result<(), FrameError> {
    send.write_all(&encode(kind, payload))
        .await
        .map_err(|e| FrameError::Write(e.to_string()))
}

/// What a dialling node claims: its cluster and its node id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub cluster: String,
    pub node_id: i32,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.cluster.len());
        out.extend_from_slice(&(self.cluster.len() as u16).to_be_bytes());
        out.extend_from_slice(self.cluster.as_bytes());
        out.extend_from_slice(&self.node_id.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Hello, FrameError> {
        let (len, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(FrameError::BadHello("shorter than its length field"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() != len + 4 {
            return Err(FrameError::BadHello("length does not match"));
        }
        let (name, id) = rest.split_at(len);
        let cluster = std::str::from_utf8(name)
            .map_err(|_| FrameError::BadHello("cluster name is not UTF-8"))?
            .to_string();
        let node_id = i32::from_be_bytes(id.try_into().expect("4 bytes checked above"));
        Ok(Hello { cluster, node_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_before_anything_is_allocated() {
        let frame = encode(FrameKind::Message, b"abc");
        let header: [u8; 5] = frame[..5].try_into().unwrap();
        assert_eq!(parse_header(header), Ok((FrameKind::Message, 3)));
        assert_eq!(
            parse_header([0, 0, 0x10, 1, 1]),
            Err(FrameError::TooLarge {
                kind: FrameKind::Hello,
                len: 0x1001,
                max: 4096
            })
        );
        assert_eq!(
            parse_header([0xff, 0xff, 0xff, 0xff, 2])
                .unwrap_err()
                .to_string(),
            "Message frame of 4294967295 bytes exceeds its limit of 16777216"
        );
        assert_eq!(
            parse_header([0, 0, 0, 0, 9]),
            Err(FrameError::UnknownKind(9))
        );
    }

    #[test]
    fn hellos_round_trip_and_bad_ones_are_refused() {
        let hello = Hello {
            cluster: "sluice-3".into(),
            node_id: 2,
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello.clone()));
        let bytes = hello.encode();
        for cut in 0..bytes.len() {
            assert!(Hello::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Hello::decode(&longer).is_err());
    }
}
