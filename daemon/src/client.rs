//! A lean pipelined Kafka client for the daemon's own tools (`sluiced
//! groups`, the benchmarks): it pre-encodes requests and keeps several in
//! flight, so a benchmark measures the broker rather than a client library.
//! It depends on nothing else in the crate, so any subsystem may use it.

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest response the bench accepts.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

pub struct RequestWriter {
    writer: BufWriter<OwnedWriteHalf>,
    next_correlation_id: i32,
}

pub struct ResponseReader {
    reader: OwnedReadHalf,
    /// Reused between responses: a fresh multi-MiB buffer per fetch would
    /// cost page faults and zeroing that the broker is not responsible for.
    buffer: BytesMut,
}

pub async fn connect(
    address: std::net::SocketAddr,
) -> anyhow::Result<(RequestWriter, ResponseReader)> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    Ok((
        RequestWriter {
            writer: BufWriter::with_capacity(1 << 20, writer),
            next_correlation_id: 1,
        },
        ResponseReader {
            reader,
            buffer: BytesMut::new(),
        },
    ))
}

/// Where the correlation id sits in a frame: after the size, key and version.
const CORRELATION_ID_AT: usize = 8;

/// A whole request frame (size prefix included); `send_encoded` gives a
/// copy its own correlation id.
pub fn encode_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> anyhow::Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluiced-bench")));
    let mut frame = BytesMut::with_capacity(body.compute_size(version)? + 64);
    frame.put_i32(0);
    header.encode(&mut frame, key.request_header_version(version))?;
    body.encode(&mut frame, version)?;
    let size = i32::try_from(frame.len() - 4)?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.to_vec())
}

impl RequestWriter {
    /// Encodes and queues one request; `flush` sends what is queued.
    pub async fn send<R: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &R,
    ) -> anyhow::Result<i32> {
        let mut frame = encode_frame(key, version, 0, body)?;
        self.send_encoded(&mut frame).await
    }

    /// Queues a frame from `encode_frame` with a fresh correlation id, so a
    /// benchmark loop costs the client one copy per request.
    pub async fn send_encoded(&mut self, frame: &mut [u8]) -> anyhow::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        frame[CORRELATION_ID_AT..CORRELATION_ID_AT + 4]
            .copy_from_slice(&correlation_id.to_be_bytes());
        self.writer.write_all(frame).await?;
        Ok(correlation_id)
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.flush().await?;
        Ok(())
    }
}

impl ResponseReader {
    /// Reads the next response and decodes it as `T`.
    pub async fn receive<T: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
    ) -> anyhow::Result<(i32, T)> {
        let size = self.reader.read_i32().await?;
        anyhow::ensure!(
            size >= 4 && (size as usize) <= RESPONSE_BYTES_MAX,
            "response size {size}"
        );
        let size = size as usize;
        self.buffer.clear();
        self.buffer.reserve(size);
        while self.buffer.len() < size {
            let remaining = (size - self.buffer.len()) as u64;
            let n = (&mut self.reader)
                .take(remaining)
                .read_buf(&mut self.buffer)
                .await?;
            anyhow::ensure!(n > 0, "connection closed inside a response");
        }
        let mut frame = self.buffer.split().freeze();
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        let body = T::decode(&mut frame, version)?;
        anyhow::ensure!(
            !frame.has_remaining(),
            "{} trailing bytes in response",
            frame.remaining()
        );
        Ok((header.correlation_id, body))
    }
}

/// One request at a time on one connection: what the daemon's own tools
/// (`sluiced groups`, `sluiced status --bootstrap`) need.
pub struct Connection {
    writer: RequestWriter,
    reader: ResponseReader,
}

impl Connection {
    /// Resolves `bootstrap` (`host:port`) and connects to its first address.
    pub async fn open(bootstrap: &str) -> anyhow::Result<Connection> {
        use anyhow::Context;
        let address = tokio::net::lookup_host(bootstrap)
            .await
            .with_context(|| format!("resolving {bootstrap}"))?
            .next()
            .with_context(|| format!("{bootstrap} resolves to nothing"))?;
        let (writer, reader) = connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        Ok(Connection { writer, reader })
    }

    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Q,
    ) -> anyhow::Result<R> {
        self.writer.send(key, version, body).await?;
        self.writer.flush().await?;
        let (_, response) = self.reader.receive(key, version).await?;
        Ok(response)
    }
}
