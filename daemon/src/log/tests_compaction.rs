//! `roll_now` and `delete_segments_below`, and what validation before the
//! partition lock must not let through on a compacted topic.

use kafka_protocol::records::Compression;

use super::batch::test_support::encode_batch;
use super::tests::{open, small_config};

#[test]
fn delete_segments_below_drops_only_whole_older_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    for i in 0..6 {
        let batch = encode_batch(4, 100, 10_000 + i, Compression::None);
        log.append_as_leader(&batch, 1, 2_000).unwrap();
    }
    assert!(log.segment_count() > 1, "small segments rolled");
    let snapshot_base = log.roll_now(3_000).unwrap();
    assert_eq!(snapshot_base, log.log_end_offset());
    assert_eq!(
        log.roll_now(3_000).unwrap(),
        snapshot_base,
        "empty active: no roll"
    );
    let batch = encode_batch(2, 10, 20_000, Compression::None);
    log.append_as_leader(&batch, 1, 3_000).unwrap();
    // An offset inside the old segments deletes nothing it still needs.
    assert_eq!(log.delete_segments_below(1).unwrap(), 0);
    let deleted = log.delete_segments_below(snapshot_base).unwrap();
    assert!(deleted >= 2);
    assert_eq!(log.log_start_offset(), snapshot_base);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.delete_segments_below(i64::MAX).unwrap(),
        0,
        "never the active segment"
    );
    let end = log.log_end_offset();
    log.close(4_000).unwrap();
    let (log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), snapshot_base);
    assert_eq!(log.log_end_offset(), end);
}

/// Validation runs before the partition lock, against the settings of that
/// moment; an append after the topic turned compacted validates again, so
/// a keyless record cannot slip in through the gap.
#[test]
fn an_append_validated_under_old_settings_is_validated_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let keyless = encode_batch(2, 10, 10_000, Compression::None);
    let validated = super::validate_produce(&keyless, log.produce_rules()).unwrap();
    let mut compacted = small_config();
    compacted.cleanup.compact = true;
    log.set_config(compacted);
    let refused = log
        .append_validated_as_leader(&keyless, validated, 1, 2_000)
        .unwrap_err();
    assert!(refused.to_string().contains("without a key"), "{refused}");
    assert_eq!(log.log_end_offset(), 0, "nothing appended");
    let validated = super::validate_produce(&keyless, log.produce_rules());
    assert!(validated.is_err(), "refused before any lock, too");
}
