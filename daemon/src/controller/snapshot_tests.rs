//! Snapshots of the metadata image: what decide and apply build survives its
//! bytes and replays the same afterwards; garbage, cut or flipped bytes are
//! refused without a panic; and well-formed bytes holding an image that
//! breaks a rule are refused with the rule named.

use std::collections::BTreeMap;

use proptest::prelude::*;
use uuid::Uuid;

use super::snapshot::{SNAPSHOT_BYTES_MAX, SNAPSHOT_PARTITIONS_PER_TOPIC_MAX, encode_parts};
use super::tests::registration;
use super::tests_props::{Action, Run, arb_action, arb_record};
use super::*;

/// The image after decide and commit have run `actions`.
fn run_after(actions: &[Action]) -> Run {
    let mut run = Run::new();
    for action in actions {
        for batch in run.decide(action) {
            run.commit(batch);
        }
    }
    run
}

/// Re-stamps the CRC so a test reaches the checks behind it.
fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 9 {
        let crc = crc32c::crc32c(&bytes[9..]);
        bytes[5..9].copy_from_slice(&crc.to_be_bytes());
    }
    bytes
}

fn broker(broker_id: BrokerId, broker_epoch: i64, fenced: bool) -> BrokerEntry {
    BrokerEntry {
        registration: registration(broker_id, 1),
        broker_epoch,
        fenced,
    }
}

fn topic(id: u128, name: &str, partitions: Vec<PartitionState>) -> TopicEntry {
    TopicEntry {
        topic_id: Uuid::from_u128(id),
        name: name.to_string(),
        declared: true,
        settings: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        partitions,
    }
}

fn led_by(leader: BrokerId, replicas: &[BrokerId], isr: &[BrokerId]) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

fn spec() -> AppliedSpec {
    AppliedSpec {
        hash: "0123456789abcdef".to_string(),
        text: "nodes: []\n".to_string(),
    }
}

/// Snapshot bytes of loose parts, the image's rules unchecked.
fn snapshot_of(
    applied_index: u64,
    next_producer_id: i64,
    brokers: &[BrokerEntry],
    topics: &[TopicEntry],
    applied_spec: Option<&AppliedSpec>,
) -> Vec<u8> {
    let brokers: Vec<&BrokerEntry> = brokers.iter().collect();
    let topics: Vec<&TopicEntry> = topics.iter().collect();
    encode_parts(
        applied_index,
        next_producer_id,
        &brokers,
        &topics,
        applied_spec,
    )
    .expect("within limits")
}

fn broken(bytes: &[u8]) -> InvariantError {
    match decode_image(bytes) {
        Err(SnapshotError::Invariant(broken)) => broken,
        other => panic!("expected a broken rule, got {other:?}"),
    }
}

#[test]
fn a_valid_hand_made_snapshot_decodes() {
    let brokers = [broker(0, 1, false), broker(1, 2, true)];
    let topics = [
        topic(1, "a", vec![led_by(0, &[0, 1], &[0, 1])]),
        topic(2, "b", vec![led_by(NO_LEADER, &[1], &[1])]),
    ];
    let bytes = snapshot_of(3, 2000, &brokers, &topics, Some(&spec()));
    let image = decode_image(&bytes).expect("a valid image");
    image.check_invariants();
    assert_eq!(image.applied_index(), 3);
    assert_eq!(image.next_producer_id(), 2000);
    assert!(image.is_unfenced(0) && !image.is_unfenced(1));
    assert_eq!(
        image.topic_by_name("b").map(|t| t.topic_id),
        Some(Uuid::from_u128(2))
    );
    assert_eq!(image.applied_spec(), Some(&spec()));
    assert_eq!(encode_image(&image), Ok(bytes));

    let empty = MetadataImage::default();
    let bytes = encode_image(&empty).expect("encodes");
    assert_eq!(decode_image(&bytes), Ok(empty));
}

#[test]
fn snapshots_that_break_a_rule_are_refused_with_the_rule_named() {
    let brokers = [broker(0, 1, false), broker(1, 2, true)];
    let good = |leader, replicas: &[BrokerId], isr: &[BrokerId]| {
        vec![topic(1, "a", vec![led_by(leader, replicas, isr)])]
    };

    let not_in_isr = snapshot_of(3, 0, &brokers, &good(0, &[0, 1], &[1]), None);
    assert_eq!(
        broken(&not_in_isr),
        InvariantError::InvalidPartition {
            topic: "a".to_string(),
            partition: 0,
            why: "the leader must be in the ISR",
        }
    );

    let fenced_leader = snapshot_of(3, 0, &brokers, &good(1, &[0, 1], &[0, 1]), None);
    assert_eq!(
        broken(&fenced_leader),
        InvariantError::LeaderNotEligible {
            topic: "a".to_string(),
            partition: 0,
            leader: 1,
        }
    );
    let unknown_leader = snapshot_of(3, 0, &brokers, &good(7, &[7], &[7]), None);
    assert!(matches!(
        broken(&unknown_leader),
        InvariantError::LeaderNotEligible { leader: 7, .. }
    ));

    let same_name = [topic(1, "a", vec![]), topic(2, "a", vec![])];
    assert_eq!(
        broken(&snapshot_of(3, 0, &brokers, &same_name, None)),
        InvariantError::DuplicateTopicName("a".to_string())
    );
    let same_id = [topic(1, "a", vec![]), topic(1, "b", vec![])];
    assert_eq!(
        broken(&snapshot_of(3, 0, &brokers, &same_id, None)),
        InvariantError::DuplicateTopicId(Uuid::from_u128(1))
    );
    let twice = [broker(0, 1, false), broker(0, 2, true)];
    assert_eq!(
        broken(&snapshot_of(3, 0, &twice, &[], None)),
        InvariantError::DuplicateBroker(0)
    );

    let future_epoch = [broker(0, 4, false)];
    assert_eq!(
        broken(&snapshot_of(3, 0, &future_epoch, &[], None)),
        InvariantError::BrokerEpochOutOfRange {
            broker_id: 0,
            broker_epoch: 4,
            applied_index: 3,
        }
    );
    let negative_id = [broker(-2, 1, true)];
    assert_eq!(
        broken(&snapshot_of(3, 0, &negative_id, &[], None)),
        InvariantError::InvalidBrokerId(-2)
    );
    assert_eq!(
        broken(&snapshot_of(u64::MAX, 0, &[], &[], None)),
        InvariantError::AppliedIndexTooLarge(u64::MAX)
    );
    assert_eq!(
        broken(&snapshot_of(3, -1, &[], &[], None)),
        InvariantError::NegativeProducerId(-1)
    );

    let bad_name = [topic(1, "a/b", vec![])];
    assert!(matches!(
        broken(&snapshot_of(3, 0, &[], &bad_name, None)),
        InvariantError::InvalidTopicName { .. }
    ));
    let nil = [topic(0, "a", vec![])];
    assert_eq!(
        broken(&snapshot_of(3, 0, &[], &nil, None)),
        InvariantError::NilTopicId("a".to_string())
    );
    let mut unknown_key = topic(1, "a", vec![]);
    unknown_key
        .settings
        .insert("colour".to_string(), "red".to_string());
    assert_eq!(
        broken(&snapshot_of(3, 0, &[], &[unknown_key], None)),
        InvariantError::UnknownConfigKey {
            topic: "a".to_string(),
            key: "colour".to_string(),
        }
    );
    let bad_hash = AppliedSpec {
        hash: "0123456789ABCDEF".to_string(),
        ..spec()
    };
    assert_eq!(
        broken(&snapshot_of(3, 0, &[], &[], Some(&bad_hash))),
        InvariantError::InvalidSpecHash(bad_hash.hash.clone())
    );
}

#[test]
fn malformed_snapshots_name_what_is_wrong() {
    let bytes = snapshot_of(
        3,
        0,
        &[broker(0, 1, false)],
        &[topic(1, "a", vec![led_by(0, &[0], &[0])])],
        Some(&spec()),
    );
    assert!(decode_image(&bytes).is_ok());

    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        decode_image(&magic),
        Err(SnapshotError::BadMagic { .. })
    ));
    let mut batch = bytes.clone();
    batch[..4].copy_from_slice(b"SLMB");
    assert!(matches!(
        decode_image(&batch),
        Err(SnapshotError::BadMagic { .. })
    ));
    let mut version = bytes.clone();
    version[4] = 3;
    assert_eq!(
        decode_image(&version),
        Err(SnapshotError::UnsupportedFormat {
            found: 3,
            supported: 2
        })
    );
    let mut flipped = bytes.clone();
    *flipped.last_mut().expect("not empty") ^= 1;
    assert!(matches!(
        decode_image(&flipped),
        Err(SnapshotError::CrcMismatch { .. })
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode_image(&with_crc(longer)),
        Err(SnapshotError::Codec(CodecError::TrailingBytes { .. }))
    ));
    assert!(matches!(
        decode_image(&bytes[..5]),
        Err(SnapshotError::Codec(CodecError::Truncated { .. }))
    ));

    // A topic count far beyond the bytes left is refused before allocating.
    let mut lying = snapshot_of(3, 0, &[], &[], None);
    let count_at = 9 + 8 + 8 + 4;
    lying[count_at..count_at + 4].copy_from_slice(&900_000u32.to_be_bytes());
    assert!(matches!(
        decode_image(&with_crc(lying.clone())),
        Err(SnapshotError::Codec(CodecError::Truncated { .. }))
    ));
    lying[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_image(&with_crc(lying)),
        Err(SnapshotError::Codec(CodecError::TooLong { .. }))
    ));

    assert!(matches!(
        decode_image(&vec![0; SNAPSHOT_BYTES_MAX + 1]),
        Err(SnapshotError::TooLarge { .. })
    ));
}

#[test]
fn encoding_refuses_more_than_the_limit() {
    let widest: Vec<BrokerId> = (0..32).collect();
    let state = led_by(NO_LEADER, &widest, &widest);
    let big = topic(1, "a", vec![state; SNAPSHOT_PARTITIONS_PER_TOPIC_MAX]);
    let topics = [&big, &big, &big];
    assert!(matches!(
        encode_parts(1, 0, &[], &topics, None),
        Err(CodecError::SnapshotTooLarge { .. })
    ));
    drop(big);
    let small = led_by(NO_LEADER, &[0], &[0]);
    let too_many = topic(1, "a", vec![small; SNAPSHOT_PARTITIONS_PER_TOPIC_MAX + 1]);
    assert!(matches!(
        encode_parts(1, 0, &[], &[&too_many], None),
        Err(CodecError::TooLong { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// An image from any decide history decodes to itself, encodes to the
    /// same bytes again, and replays the rest of the log to the same image.
    #[test]
    fn decided_images_round_trip_and_replay_the_same(
        before in proptest::collection::vec(arb_action(), 0..50),
        after in proptest::collection::vec(arb_action(), 0..30),
    ) {
        let mut run = run_after(&before);
        let bytes = encode_image(&run.image).expect("decided images encode");
        let decoded = decode_image(&bytes).expect("decided images decode");
        prop_assert_eq!(&decoded, &run.image);
        let again = encode_image(&decoded);
        prop_assert_eq!(again.as_ref(), Ok(&bytes));

        let installed_at = run.log.len();
        let mut installed = decoded;
        for action in &after {
            for batch in run.decide(action) {
                run.commit(batch);
            }
        }
        for (offset, batch) in run.log[installed_at..].iter().enumerate() {
            let index = (installed_at + offset + 1) as u64;
            installed.apply(index, batch).expect("the original applied it");
        }
        prop_assert_eq!(&installed, &run.image);
    }

    /// Arbitrary records, refused or not, land the same on a decoded image
    /// as on the original, and what they leave still round-trips.
    #[test]
    fn arbitrary_records_land_the_same_on_a_decoded_image(
        setup in proptest::collection::vec(arb_action(), 0..30),
        batches in proptest::collection::vec(proptest::collection::vec(arb_record(), 1..4), 1..20),
    ) {
        let mut original = run_after(&setup).image;
        let mut decoded = decode_image(&encode_image(&original).expect("encodes"))
            .expect("decodes");
        for records in batches {
            let batch = RecordBatch::new(records);
            let index = original.applied_index() + 1;
            let applied = original.apply(index, &batch);
            prop_assert_eq!(decoded.apply(index, &batch), applied);
            prop_assert_eq!(&decoded, &original);
        }
        let bytes = encode_image(&original).expect("applied images encode");
        prop_assert_eq!(decode_image(&bytes), Ok(original));
    }

    /// Random bytes, random bytes behind a valid header and CRC, and cut,
    /// flipped or mutated snapshots: decode answers, never panics, and
    /// refuses every cut and every flip the CRC sees.
    #[test]
    fn decoding_garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        actions in proptest::collection::vec(arb_action(), 0..25),
        cut in any::<prop::sample::Index>(),
        flip in (any::<prop::sample::Index>(), 0u32..8),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        prop_assert!(decode_image(&bytes).is_err());
        let mut framed = b"SLMS\x01\0\0\0\0".to_vec();
        framed.extend_from_slice(&bytes);
        if let Ok(image) = decode_image(&with_crc(framed)) {
            prop_assert_eq!(image.validate(), Ok(()));
        }

        let valid = encode_image(&run_after(&actions).image).expect("encodes");
        let at = cut.index(valid.len());
        prop_assert!(decode_image(&valid[..at]).is_err());

        let mut flipped = valid.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= 1 << flip.1;
        prop_assert!(
            matches!(
                decode_image(&flipped),
                Err(SnapshotError::CrcMismatch { .. }
                    | SnapshotError::BadMagic { .. }
                    | SnapshotError::UnsupportedFormat { .. })
            ),
            "flip at {}", at
        );

        let mut mutated = valid;
        for (index, byte) in mutations {
            let at = index.index(mutated.len());
            mutated[at] = byte;
        }
        if let Ok(image) = decode_image(&with_crc(mutated)) {
            // Whatever decodes is a valid image that round-trips.
            prop_assert_eq!(image.validate(), Ok(()));
            let again = encode_image(&image).expect("decoded images encode");
            prop_assert_eq!(decode_image(&again), Ok(image));
        }
    }
}

/// Format 1 had no reassignment lists: such a snapshot still reads, with no
/// reassignment under way; format 2 keeps the lists.
#[test]
fn a_format_1_snapshot_reads_as_no_reassignment_and_format_2_keeps_one() {
    let mut moving = led_by(0, &[1, 0], &[0]);
    moving.adding = vec![1];
    let bytes = snapshot_of(
        3,
        0,
        &[broker(0, 1, false), broker(1, 2, false)],
        &[topic(1, "a", vec![moving.clone()])],
        None,
    );
    let image = decode_image(&bytes).expect("format 2");
    assert_eq!(image.topic_by_name("a").unwrap().partitions, vec![moving]);

    let plain = led_by(0, &[0], &[0]);
    let bytes = snapshot_of(
        3,
        0,
        &[broker(0, 1, false)],
        &[topic(1, "a", vec![plain.clone()])],
        None,
    );
    // The lists (two empty ones, 2 bytes each) sit before the spec flag.
    let end = bytes.len();
    let mut old = [&bytes[..end - 5], &bytes[end - 1..]].concat();
    old[4] = 1;
    let image = decode_image(&with_crc(old)).expect("format 1");
    assert_eq!(image.topic_by_name("a").unwrap().partitions, vec![plain]);
}
