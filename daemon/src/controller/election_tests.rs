//! Elections as fencing, unfencing and ISR changes make them: from the ISR
//! only unless the topic allows an unclean election, a leader that stays
//! eligible keeps its place, and `unclean_elections` counts exactly the
//! leaders taken from outside the ISR.

use std::collections::BTreeMap;
use std::time::Instant;

use uuid::Uuid;

use super::alter_partition::{AlterPartitionRequest, decide_alter_partition};
use super::tests::{declared, registration};
use super::*;

/// Brokers 1, 2 and 3, registered and unfenced; the image built through
/// the codec, its rules checked after every batch.
struct Cluster {
    image: MetadataImage,
    next_topic: u128,
}

impl Cluster {
    fn new() -> Cluster {
        let mut cluster = Cluster {
            image: MetadataImage::default(),
            next_topic: 1,
        };
        let sessions = SessionTable::new(std::time::Duration::from_secs(1));
        for id in 1..=3 {
            let batch = on_register(
                &cluster.image,
                &sessions,
                Instant::now(),
                &registration(id, 1),
            )
            .expect("registers");
            cluster.commit(batch);
            assert!(cluster.unfence(id).is_empty());
        }
        cluster
    }

    /// Commits `batch`; the unclean elections it held.
    fn commit(&mut self, batch: RecordBatch) -> Vec<UncleanElection> {
        let elections = unclean_elections(&self.image, &batch);
        let bytes = batch.encode().expect("encodes");
        let index = self.image.applied_index() + 1;
        self.image
            .apply(index, &RecordBatch::decode(&bytes).expect("decodes"))
            .expect("applies");
        self.image.check_invariants();
        elections
    }

    /// A topic of one partition on replicas [1, 2, 3], with
    /// `unclean.leader.election.enable` set to `unclean` if given.
    fn topic(&mut self, unclean: Option<&str>) -> Uuid {
        let topic_id = Uuid::from_u128(self.next_topic);
        self.next_topic += 1;
        let settings: BTreeMap<String, String> = unclean
            .map(|value| (UNCLEAN_ELECTION_KEY.to_string(), value.to_string()))
            .into_iter()
            .collect();
        let topic = NewTopic {
            topic_id,
            name: format!("t{topic_id}"),
            declared: true,
            settings,
            partitions: 1,
            replication_factor: 3,
            replicas: Some(vec![vec![1, 2, 3]]),
        };
        let brokers = declared(&[(1, None), (2, None), (3, None)]);
        let batch = create_topic(&self.image, &topic, &brokers).expect("creates");
        self.commit(batch);
        topic_id
    }

    fn state(&self, topic: Uuid) -> PartitionState {
        self.image.partition(&topic, 0).expect("partition").clone()
    }

    fn fence(&mut self, broker: BrokerId) -> Vec<UncleanElection> {
        let batch = on_session_expired(&self.image, broker).expect("unfenced before");
        self.commit(batch)
    }

    fn unfence(&mut self, broker: BrokerId) -> Vec<UncleanElection> {
        let heartbeat = Heartbeat {
            broker_id: broker,
            broker_epoch: self.image.broker(broker).expect("registered").broker_epoch,
            current_metadata_offset: self.image.applied_index() as i64,
            want_fence: false,
        };
        let decision = on_heartbeat(&self.image, &heartbeat).expect("current epoch");
        assert!(!decision.fenced);
        self.commit(decision.records.expect("fenced before"))
    }

    /// The leader sets the ISR of `topic` to `isr`.
    fn alter(&mut self, topic: Uuid, isr: &[BrokerId]) {
        let state = self.state(topic);
        let request = AlterPartitionRequest {
            broker_id: state.leader,
            broker_epoch: self
                .image
                .broker(state.leader)
                .expect("leader")
                .broker_epoch,
            topic_id: topic,
            partition: 0,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr: isr.to_vec(),
        };
        let decision = decide_alter_partition(&self.image, &request).expect("accepted");
        assert!(self.commit(decision.records.expect("a change")).is_empty());
        assert_eq!(self.state(topic), decision.state);
    }
}

/// (leader, ISR, leader epoch)
fn led(state: &PartitionState) -> (BrokerId, Vec<BrokerId>, i32) {
    (state.leader, state.isr.clone(), state.leader_epoch)
}

#[test]
fn the_last_isr_member_fenced_leaves_the_partition_offline_unless_the_topic_allows_unclean() {
    let mut cluster = Cluster::new();
    let default = cluster.topic(None);
    let off = cluster.topic(Some("false"));
    let on = cluster.topic(Some("true"));
    let on_upper = cluster.topic(Some("TRUE"));
    let topics = [default, off, on, on_upper];
    for topic in topics {
        assert_eq!(led(&cluster.state(topic)), (1, vec![1, 2, 3], 0));
        cluster.alter(topic, &[1]);
    }
    let epoch = cluster.state(default).leader_epoch;

    // The only in-sync replica dies: an unclean election where allowed.
    let elections = cluster.fence(1);
    for topic in [default, off] {
        assert_eq!(led(&cluster.state(topic)), (NO_LEADER, vec![1], epoch + 1));
    }
    for topic in [on, on_upper] {
        assert_eq!(led(&cluster.state(topic)), (2, vec![2], epoch + 1));
    }
    let elected: Vec<(Uuid, BrokerId, i32)> = elections
        .iter()
        .map(|e| (e.topic_id, e.leader, e.leader_epoch))
        .collect();
    assert_eq!(elected, vec![(on, 2, epoch + 1), (on_upper, 2, epoch + 1)]);

    // Its unclean successor dies too: the next unfenced replica.
    let elections = cluster.fence(2);
    assert_eq!(led(&cluster.state(on)), (3, vec![3], epoch + 2));
    assert_eq!(elections.len(), 2);
    assert_eq!(
        led(&cluster.state(default)),
        (NO_LEADER, vec![1], epoch + 1)
    );

    // Nobody left: offline everywhere, and nothing counted.
    assert!(cluster.fence(3).is_empty());
    assert_eq!(led(&cluster.state(on)), (NO_LEADER, vec![3], epoch + 3));

    // A replica outside the ISR returns: it leads only where allowed.
    let elections = cluster.unfence(2);
    assert_eq!(led(&cluster.state(on)), (2, vec![2], epoch + 4));
    assert_eq!(elections.len(), 2);
    for topic in [default, off] {
        assert_eq!(led(&cluster.state(topic)), (NO_LEADER, vec![1], epoch + 1));
    }

    // The last in-sync replica returns: a clean election, not counted.
    assert!(cluster.unfence(1).is_empty());
    for topic in [default, off] {
        assert_eq!(led(&cluster.state(topic)), (1, vec![1], epoch + 2));
    }
    assert_eq!(
        led(&cluster.state(on)),
        (2, vec![2], epoch + 4),
        "led already"
    );
}

#[test]
fn an_unclean_topic_prefers_an_eligible_isr_member() {
    let mut cluster = Cluster::new();
    let on = cluster.topic(Some("true"));
    // Broker 1 (leader) leaves; 2 and 3 are in the ISR: a clean election.
    assert!(cluster.fence(1).is_empty());
    assert_eq!(led(&cluster.state(on)), (2, vec![2, 3], 1));
    // Broker 1 returns outside the ISR: the partition has a leader.
    assert!(cluster.unfence(1).is_empty());
    assert_eq!(led(&cluster.state(on)), (2, vec![2, 3], 1));
}

#[test]
fn a_preferred_replica_leads_again_once_back_in_the_isr_and_keeps_its_place() {
    let mut cluster = Cluster::new();
    let topic = cluster.topic(None);
    cluster.fence(1);
    assert_eq!(led(&cluster.state(topic)), (2, vec![2, 3], 1));
    cluster.unfence(1);
    assert_eq!(
        led(&cluster.state(topic)),
        (2, vec![2, 3], 1),
        "1 is out of the ISR: 2 keeps leading"
    );
    // 1 catches up and the leader takes it back into the ISR: being the
    // preferred replica, it leads again (not an unclean election).
    cluster.alter(topic, &[2, 3, 1]);
    let before = cluster.state(topic);
    assert_eq!(led(&before), (1, vec![2, 3, 1], 2));
    // 3 dies: 1 keeps leading.
    cluster.fence(3);
    let after = cluster.state(topic);
    assert_eq!(led(&after), (1, vec![2, 1], 2));
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
}

#[test]
fn unclean_elections_are_leaders_from_outside_the_isr_just_before() {
    let mut cluster = Cluster::new();
    let topic = cluster.topic(None);
    let state = |isr: &[BrokerId], leader: BrokerId, leader_epoch: i32, partition_epoch: i32| {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch,
            partition_epoch,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    };
    let change = |state: PartitionState| Record::PartitionChange {
        topic_id: topic,
        partition: 0,
        state,
    };
    // Within one batch, each change counts against the one before it.
    let batch = RecordBatch::new(vec![
        change(state(&[1], 1, 0, 1)),
        change(state(&[1], NO_LEADER, 1, 2)),
        change(state(&[3], 3, 2, 3)),
        change(state(&[3, 2], 3, 2, 4)),
    ]);
    let elections = unclean_elections(&cluster.image, &batch);
    assert_eq!(
        elections,
        vec![UncleanElection {
            topic_id: topic,
            partition: 0,
            leader: 3,
            leader_epoch: 2,
        }]
    );
    assert_eq!(cluster.commit(batch).len(), 1);
    // A new partition led by its first replica is no election at all.
    let created = RecordBatch::new(vec![Record::CreatePartition {
        topic_id: topic,
        partition: 1,
        state: state(&[1, 2, 3], 1, 0, 0),
    }]);
    assert!(unclean_elections(&cluster.image, &created).is_empty());
}
