//! A cluster member's share of partitions: sparse hosting, leadership at
//! the assigned epochs, and the refusals of a member.

use std::sync::Arc;

use kafka_protocol::records::Compression;
use uuid::Uuid;

use super::*;
use crate::log::test_support::encode_batch;

/// A member of etc/local-3.toml (three brokers, one replica each).
pub(crate) fn member(dir: &Path) -> Arc<Broker> {
    let text = include_str!("../../../etc/local-3.toml");
    let spec = crate::config::parse_spec(text, "local-3.toml").unwrap();
    Broker::open_member(spec, 1, dir.to_path_buf()).unwrap()
}

/// Topic `t` of three partitions: 0 led here at `epoch`, 2 hosted here but
/// led by broker 2 at epoch 1; 1 lives elsewhere.
pub(crate) fn assignment(epoch: i32) -> TopicAssignment {
    TopicAssignment {
        name: "t".into(),
        id: Uuid::from_u128(7),
        configs: vec![("retention.ms".into(), "3600000".into())],
        partition_count: 3,
        replication_factor: 1,
        hosted: vec![
            HostedPartition {
                index: 0,
                leadership: Leadership::Leader { epoch },
                replicas: vec![1],
                isr: vec![1],
                partition_epoch: 0,
                removing: Vec::new(),
            },
            HostedPartition {
                index: 2,
                leadership: Leadership::NotLeader {
                    leader: Some(2),
                    epoch: 1,
                },
                replicas: vec![1],
                isr: vec![1],
                partition_epoch: 0,
                removing: Vec::new(),
            },
        ],
    }
}

#[test]
fn a_member_hosts_only_its_partitions_and_refuses_the_others_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    assert!(
        broker.topics().is_empty(),
        "the spec's topics wait for the controller"
    );
    broker.apply_assignment(&assignment(3)).unwrap();
    let topic = broker.topic("t").unwrap();
    assert_eq!(topic.partition_count(), 3);
    assert_eq!(topic.hosted_count(), 2);
    assert_eq!(topic.id, Uuid::from_u128(7));
    assert_eq!(topic.config.retention_ms, Some(3_600_000));
    assert!(dir.path().join("t-0").is_dir() && dir.path().join("t-2").is_dir());
    assert!(!dir.path().join("t-1").exists(), "not placed here");

    let code = |r: Result<Arc<Partition>, PartitionError>| match r {
        Ok(_) => 0,
        Err(e) => crate::kafka::errors::partition_error_code(&e),
    };
    assert_eq!(code(broker.leader_partition("t", 0, NO_EPOCH_CHECK)), 0);
    assert_eq!(code(broker.leader_partition("t", 0, 3)), 0);
    assert_eq!(
        code(broker.leader_partition("t", 0, 2)),
        74,
        "older: fenced"
    );
    assert_eq!(
        code(broker.leader_partition("t", 0, 4)),
        75,
        "newer: unknown"
    );
    assert_eq!(
        code(broker.leader_partition("t", 1, NO_EPOCH_CHECK)),
        6,
        "not hosted"
    );
    assert_eq!(
        code(broker.leader_partition("t", 2, NO_EPOCH_CHECK)),
        6,
        "not led"
    );
    assert_eq!(code(broker.leader_partition("t", 3, NO_EPOCH_CHECK)), 3);
    assert_eq!(code(broker.leader_partition("u", 0, NO_EPOCH_CHECK)), 3);

    // The same assignment again changes nothing.
    let first = topic.partition(0).unwrap().clone();
    broker.apply_assignment(&assignment(3)).unwrap();
    assert!(Arc::ptr_eq(
        &first,
        broker.topic("t").unwrap().partition(0).unwrap()
    ));
    assert_eq!(broker.partition_count(), 2);
}

#[test]
fn a_restarted_member_starts_a_follower_at_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    broker.apply_assignment(&assignment(3)).unwrap();
    let partition = broker.topic("t").unwrap().partition(0).unwrap().clone();
    for _ in 0..3 {
        partition
            .append(&encode_batch(1, 10, now_ms(), Compression::None), now_ms())
            .unwrap();
    }
    partition.sync(now_ms()).unwrap();
    assert_eq!(partition.high_watermark(), 3);
    drop(partition);
    broker.close().unwrap();
    drop(broker);

    let broker = member(dir.path());
    let mut follows = assignment(3);
    follows.hosted[0].leadership = Leadership::NotLeader {
        leader: Some(2),
        epoch: 4,
    };
    broker.apply_assignment(&follows).unwrap();
    let partition = broker.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(partition.offsets().log_end_offset, 3);
    assert_eq!(
        partition.high_watermark(),
        3,
        "what was committed is readable before the leader says so again"
    );
}

#[test]
fn becoming_leader_at_a_higher_epoch_starts_it_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    broker.apply_assignment(&assignment(3)).unwrap();
    let partition = broker.topic("t").unwrap().partition(0).unwrap().clone();
    {
        let log = partition.lock_log();
        assert_eq!(
            log.leader_epoch_entries()
                .last()
                .map(|e| (e.epoch, e.start_offset)),
            Some((3, 0)),
            "recorded on becoming leader, before any append"
        );
    }
    for _ in 0..2 {
        let info = partition
            .append(&encode_batch(1, 10, now_ms(), Compression::None), now_ms())
            .unwrap();
        assert!(!info.duplicate);
    }
    broker.apply_assignment(&assignment(5)).unwrap();
    assert_eq!(partition.leadership(), Leadership::Leader { epoch: 5 });
    let log_end = partition.offsets().log_end_offset;
    assert_eq!(log_end, 2);
    {
        let log = partition.lock_log();
        let last = log.leader_epoch_entries().last().copied().unwrap();
        assert_eq!((last.epoch, last.start_offset), (5, log_end));
    }
    assert_eq!(partition.leader_epoch_end_offset(3), Some((3, 2)));
    assert_eq!(partition.leader_epoch_end_offset(5), Some((5, 2)));

    // Losing leadership at a later epoch: appends are refused, not stamped.
    let mut moved = assignment(5);
    moved.hosted[0].leadership = Leadership::NotLeader {
        leader: Some(3),
        epoch: 6,
    };
    broker.apply_assignment(&moved).unwrap();
    let refused = partition
        .append(&encode_batch(1, 10, now_ms(), Compression::None), now_ms())
        .unwrap_err();
    assert!(
        matches!(
            refused,
            PartitionError::NotLeader {
                leader: Some(3),
                epoch: 6,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(partition.offsets().log_end_offset, 2);
}

#[test]
#[should_panic(expected = "leader epoch would move back")]
fn an_epoch_moving_back_is_a_broken_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    broker.apply_assignment(&assignment(5)).unwrap();
    let _ = broker.apply_assignment(&assignment(4));
}

#[test]
fn assignments_are_checked_and_only_members_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    let mut beyond = assignment(1);
    beyond.hosted[1].index = 3;
    let error = broker.apply_assignment(&beyond).unwrap_err();
    assert!(matches!(error, AssignmentError::Invalid { .. }), "{error}");
    assert!(broker.topic("t").is_none(), "nothing opened");
    let mut bad_config = assignment(1);
    bad_config.configs = vec![("retention.ms".into(), "soon".into())];
    let error = broker.apply_assignment(&bad_config).unwrap_err();
    assert!(
        matches!(error, AssignmentError::InvalidConfig { .. }),
        "{error}"
    );
    broker.apply_assignment(&assignment(1)).unwrap();
    let mut other_id = assignment(1);
    other_id.id = Uuid::from_u128(8);
    let error = broker.apply_assignment(&other_id).unwrap_err();
    assert!(
        matches!(error, AssignmentError::IdChanged { .. }),
        "{error}"
    );

    let single = tempfile::tempdir().unwrap();
    let node = Broker::open(
        crate::config::default_spec(),
        1,
        single.path().to_path_buf(),
    )
    .unwrap();
    let error = node.apply_assignment(&assignment(1)).unwrap_err();
    assert!(matches!(error, AssignmentError::NotAMember), "{error}");
}

#[test]
fn a_member_creates_no_topic_itself() {
    let dir = tempfile::tempdir().unwrap();
    let broker = member(dir.path());
    let error = broker.create_topic("new", Some(1), &[], false).unwrap_err();
    assert!(
        matches!(error, CreateTopicError::ManagedByController(_)),
        "{error}"
    );
    assert!(error.to_string().contains("not built yet"), "{error}");
    assert!(broker.topic("new").is_none());
    assert!(!dir.path().join("new-0").exists());
}
