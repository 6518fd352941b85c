//! Raw Kafka frames over a plain socket, for tests that need to control
//! exactly what goes on the wire (pipelining, bad input).

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

use super::Daemon;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(daemon.kafka).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A whole request frame: size prefix, header, body (the bench client's
/// encoder, which tests and `sluiced bench` share).
pub fn request_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Vec<u8> {
    sluice::client::encode_frame(key, version, correlation_id, body).expect("encoding a request")
}

/// One whole response frame's body (after the size prefix).
pub fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    body
}

pub fn read_correlation_id(stream: &mut TcpStream) -> i32 {
    let body = read_response(stream);
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}
