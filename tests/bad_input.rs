//! Bad input on the Kafka port: random bytes, absurd or negative sizes,
//! truncated frames, unknown API keys and unsupported versions close the
//! offending connection, while the daemon and other clients carry on.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::Daemon;
use common::wire::{IO_TIMEOUT, connect, read_correlation_id, request_frame};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;

/// Sends ApiVersions v3 and checks a well-formed answer comes back.
fn api_versions_round_trip(stream: &mut TcpStream, correlation_id: i32) {
    stream
        .write_all(&request_frame(
            ApiKey::ApiVersions,
            3,
            correlation_id,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header =
        ResponseHeader::decode(&mut body, ApiKey::ApiVersions.response_header_version(3)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let response = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(response.error_code, 0);
    assert!(!response.api_keys.is_empty());
}

/// The server closes the connection: a read sees EOF or a reset, not a timeout.
fn assert_closed_by_server(mut stream: TcpStream, case: &str) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // an error response before the close is fine
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(e) => panic!("{case}: connection not closed by the server: {e}"),
        }
    }
}

/// A complete frame of random bytes whose API key is one no Kafka version
/// defines, so the server must close; a random size prefix could instead
/// announce a frame longer than what is sent, and the server rightly waits.
fn random_frame(seed: u64, len: usize) -> Vec<u8> {
    let mut frame = ((len - 4) as i32).to_be_bytes().to_vec();
    frame.extend(random_bytes(seed, len - 4));
    frame[4] |= 0x40; // api key ≥ 16384
    frame
}

/// xorshift64*: reproducible random bytes from a printed seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let mut daemon = Daemon::start("[topics.t]\npartitions = 1\n");
    let mut bystander = connect(&daemon);
    api_versions_round_trip(&mut bystander, 1);

    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("random-bytes seed: {seed} (rerun with SLUICE_TEST_SEED={seed})");
    let mut unknown_key = request_frame(ApiKey::ApiVersions, 3, 9, &ApiVersionsRequest::default());
    unknown_key[4..6].copy_from_slice(&999i16.to_be_bytes());
    let mut unsupported_version =
        request_frame(ApiKey::Metadata, 12, 9, &MetadataRequest::default());
    unsupported_version[6..8].copy_from_slice(&99i16.to_be_bytes());
    // A topic array claiming 2^31 - 1 entries in a 20-byte body.
    let mut lying_body = request_frame(
        ApiKey::Metadata,
        4,
        9,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let at = lying_body.len() - 5;
    lying_body[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes in a whole frame",
            random_frame(seed, 64 * 1024),
        ),
        ("absurd size", i32::MAX.to_be_bytes().to_vec()),
        ("negative size", (-5i32).to_be_bytes().to_vec()),
        (
            "size below a header",
            3i32.to_be_bytes()
                .iter()
                .chain(&[1, 2, 3])
                .copied()
                .collect(),
        ),
        ("unknown api key", unknown_key),
        ("unsupported version", unsupported_version),
        ("array length past the body", lying_body),
    ];
    for (case, bytes) in cases {
        let mut stream = connect(&daemon);
        // The server may close before reading everything: a failed write is fine.
        let _ = stream.write_all(&bytes);
        assert_closed_by_server(stream, case);
        assert!(
            daemon.running(),
            "the daemon died on {case}:\n{}",
            daemon.log()
        );
        api_versions_round_trip(&mut bystander, 2);
    }

    // A frame cut short by the client: the server drops it and carries on.
    let mut truncated = connect(&daemon);
    truncated.write_all(&100i32.to_be_bytes()).unwrap();
    truncated.write_all(&[0u8; 10]).unwrap();
    truncated.shutdown(Shutdown::Write).unwrap();
    assert_closed_by_server(truncated, "truncated frame");

    // Pipelined requests after all that are answered in order.
    let mut fresh = connect(&daemon);
    let mut pipelined = Vec::new();
    for correlation_id in 10..20 {
        pipelined.extend(request_frame(
            ApiKey::ApiVersions,
            3,
            correlation_id,
            &ApiVersionsRequest::default(),
        ));
    }
    fresh.write_all(&pipelined).unwrap();
    for correlation_id in 10..20 {
        assert_eq!(
            read_correlation_id(&mut fresh),
            correlation_id,
            "responses out of order"
        );
    }
    api_versions_round_trip(&mut bystander, 3);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Many clients at once are all served; past `max_connections` a client
/// waits until a slot frees rather than starving the others.
#[test]
fn many_connections_are_served_and_the_limit_holds() {
    let daemon =
        Daemon::start_with_limits("[topics.t]\npartitions = 1\n", "max_connections = 64\n");
    let mut clients: Vec<TcpStream> = (0..64).map(|_| connect(&daemon)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let request = request_frame(
            ApiKey::ApiVersions,
            3,
            i as i32,
            &ApiVersionsRequest::default(),
        );
        client.write_all(&request).unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_correlation_id(client), i as i32);
    }
    // The 65th is accepted by the kernel but not served while 64 are open.
    let mut waiting = connect(&daemon);
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    waiting
        .write_all(&request_frame(
            ApiKey::ApiVersions,
            3,
            99,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        waiting.read(&mut byte).is_err(),
        "served beyond max_connections"
    );
    drop(clients.pop());
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut rest = [0u8; 7];
    waiting.read_exact(&mut rest).unwrap();
}

/// Past `max_connections_per_ip` a new connection from that address is
/// closed at once; others from it keep working.
#[test]
fn connections_per_ip_are_limited() {
    let daemon = Daemon::start_with_limits("", "max_connections_per_ip = 3\n");
    // The harness's readiness probes may hold a slot for a moment.
    let admitted = |daemon: &Daemon| {
        let mut stream = None;
        let ok = common::wait_until(Duration::from_secs(10), || {
            let mut candidate = connect(daemon);
            let answered = candidate
                .write_all(&request_frame(
                    ApiKey::ApiVersions,
                    3,
                    5,
                    &ApiVersionsRequest::default(),
                ))
                .is_ok()
                && read_correlation_id_opt(&mut candidate) == Some(5);
            stream = answered.then_some(candidate);
            answered
        });
        assert!(ok, "no slot for a connection");
        stream.unwrap()
    };
    let mut open: Vec<TcpStream> = (0..3).map(|_| admitted(&daemon)).collect();
    let extra = connect(&daemon);
    assert_closed_by_server(extra, "fourth connection from one address");
    api_versions_round_trip(&mut open[0], 10);
    drop(open.pop());
    let mut replacement = connect(&daemon);
    let admitted = common::wait_until(Duration::from_secs(10), || {
        replacement = connect(&daemon);
        replacement
            .write_all(&request_frame(
                ApiKey::ApiVersions,
                3,
                5,
                &ApiVersionsRequest::default(),
            ))
            .is_ok()
            && read_correlation_id_opt(&mut replacement) == Some(5)
    });
    assert!(admitted, "a freed slot is reusable");
}

fn read_correlation_id_opt(stream: &mut TcpStream) -> Option<i32> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}
