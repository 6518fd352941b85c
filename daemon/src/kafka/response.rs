//! An encoded response as a list of chunks: bytes we encoded, and ranges of
//! segment files that go to the socket with `sendfile` (zero copy).

use std::io;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;

use super::frame::FRAME_SIZE_PREFIX_BYTES;
use crate::broker::FileSlice;

/// One piece of a response frame.
#[derive(Debug, Clone)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileSlice),
}

impl Chunk {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(f) => f.len as usize,
        }
    }
}

/// A complete response frame body (without the size prefix).
#[derive(Debug, Default, Clone)]
pub struct ResponseFrame {
    pub chunks: Vec<Chunk>,
}

impl ResponseFrame {
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self {
            chunks: vec![Chunk::Bytes(bytes)],
        }
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the size prefix and the body to `out` when every chunk is in
    /// memory and the body is at most `max_bytes`; otherwise leaves `out` as
    /// it was and says false.
    pub fn gather_into(&self, out: &mut BytesMut, max_bytes: usize) -> bool {
        let in_memory = self.chunks.iter().all(|c| matches!(c, Chunk::Bytes(_)));
        let total = self.len();
        let Ok(size) = i32::try_from(total) else {
            return false;
        };
        if !in_memory || total > max_bytes {
            return false;
        }
        out.reserve(FRAME_SIZE_PREFIX_BYTES + total);
        out.extend_from_slice(&size.to_be_bytes());
        for chunk in &self.chunks {
            if let Chunk::Bytes(b) = chunk {
                out.extend_from_slice(b);
            }
        }
        true
    }

    /// Materialises file chunks with ordinary reads: used where zero copy is
    /// not possible and by tests comparing against the codec's own encoding.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in &self.chunks {
            match chunk {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(f) => out.extend_from_slice(&f.read_to_vec()?),
            }
        }
        Ok(out)
    }
}

/// Writes the size prefix and every chunk; file chunks use `sendfile`.
pub async fn write_frame(stream: &mut OwnedWriteHalf, frame: &ResponseFrame) -> io::Result<()> {
    let total = frame.len();
    let size = i32::try_from(total)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response exceeds 2 GiB"))?;
    // Coalesce leading byte chunks with the prefix so small responses are one write.
    let mut pending = BytesMut::with_capacity(4 + 256);
    pending.extend_from_slice(&size.to_be_bytes());
    for chunk in &frame.chunks {
        match chunk {
            Chunk::Bytes(b) => pending.extend_from_slice(b),
            Chunk::File(f) => {
                if !pending.is_empty() {
                    stream.write_all(&pending).await?;
                    pending.clear();
                }
                send_file(stream, f).await?;
            }
        }
    }
    if !pending.is_empty() {
        stream.write_all(&pending).await?;
    }
    Ok(())
}

/// Copies `slice` from its file to the socket in the kernel.
async fn send_file(stream: &mut OwnedWriteHalf, slice: &FileSlice) -> io::Result<()> {
    let socket_fd = stream.as_ref().as_raw_fd();
    let file_fd = slice.file.as_raw_fd();
    let mut offset = libc::off_t::try_from(slice.position)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position too large"))?;
    let end = offset + libc::off_t::from(slice.len);
    while offset < end {
        stream.as_ref().writable().await?;
        let remaining = (end - offset) as usize;
        let sent = stream.as_ref().try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call
            // (we hold the socket and an Arc of the file) and `offset` is a
            // valid pointer to a local.
            let n = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, remaining) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            // The frame size is already on the wire: a short file cannot be papered over.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the range being sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
