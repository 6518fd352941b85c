//! Any bytes as a Kafka request frame, through the real dispatcher and
//! handlers of a broker on a scratch directory: nothing may panic.

#![no_main]

/// The daemon's allocator: a lying array count must not abort (see alloc_guard).
#[global_allocator]
static ALLOCATOR: sluice::alloc_guard::GuardedAllocator = sluice::alloc_guard::GuardedAllocator;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::broker::Broker;
use sluice::kafka::dispatch::dispatch;
use sluice::kafka::frame::{REQUEST_HEADER_BYTES_MIN, frame_length};
use sluice::kafka::listener::ListenerLimits;

fn broker() -> &'static Arc<Broker> {
    static BROKER: OnceLock<(tempfile::TempDir, Arc<Broker>)> = OnceLock::new();
    &BROKER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("scratch dir");
            let spec = sluice::config::parse_spec(sluice::config::DEFAULT_SPEC_TOML, "<default>")
                .expect("default spec");
            let broker = Broker::open(spec, 1, dir.path().to_path_buf()).expect("broker");
            broker
                .create_topic("fuzz", Some(2), &[], false)
                .expect("topic");
            (dir, broker)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let _ = frame_length(data, 1 << 20);
    if data.len() < REQUEST_HEADER_BYTES_MIN {
        return;
    }
    // Replies that would wait (acks, long poll) are dropped unpolled.
    let _ = dispatch(
        broker(),
        &ListenerLimits::default(),
        Bytes::copy_from_slice(data),
    );
});
