//! Idempotent producers' state for one partition (KIP-98 idempotence,
//! KIP-360). Pure: derived only from the producer fields of batch headers,
//! so a leader validating produces, a follower appending fetched batches and
//! recovery replaying the log all build the same state from the same bytes.
//! The log owns it; snapshots (`snapshot.rs`) bound how much recovery replays.

use std::collections::{BTreeMap, VecDeque};

/// Batches remembered per producer for duplicate detection: the most a
/// client keeps in flight per connection with idempotence on.
pub const BATCHES_KEPT: usize = 5;
/// `producerId` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Most producers one partition keeps state for (about 250 bytes each).
/// Applications that start a new producer per message would otherwise grow
/// it for a whole `producer.id.expiration.ms`. A new producer beyond it
/// evicts the one idle longest, which loses only that producer's duplicate
/// detection: its next batch is accepted at any sequence (KIP-360).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 20_000;

/// The producer fields of one batch whose offsets are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// The last sequence of a batch whose first is `base_sequence` and which
    /// spans `last_offset_delta + 1` offsets; sequences wrap at i32::MAX.
    pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
        if base_sequence > i32::MAX - last_offset_delta {
            last_offset_delta - (i32::MAX - base_sequence) - 1
        } else {
            base_sequence + last_offset_delta
        }
    }
}

/// What is kept of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// One producer id's state in this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most `BATCHES_KEPT`, all of `epoch`.
    pub batches: VecDeque<BatchMeta>,
    /// Max timestamp of the last batch: what expiry measures from.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    /// Where this producer last wrote: the log's own order, which no client
    /// sets (unlike timestamps), so the longest idle is the lowest.
    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |batch| batch.last_offset)
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_seq)
    }

    fn duplicate_of(&self, batch: &ProducerBatch) -> Option<BatchMeta> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|kept| kept.first_seq == batch.first_seq && kept.last_seq == batch.last_seq)
            .copied()
    }

    fn add(&mut self, batch: &ProducerBatch) {
        if batch.epoch != self.epoch {
            self.epoch = batch.epoch;
            self.batches.clear();
        }
        self.batches.push_back(BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            max_timestamp: batch.max_timestamp,
        });
        while self.batches.len() > BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.last_timestamp = batch.max_timestamp;
    }
}

/// Why a leader refuses a producer's batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch does not follow the producer's last one (a gap, or a
    /// non-zero first sequence for a new epoch).
    #[error(
        "out of order sequence for producer {producer_id} epoch {epoch}: batch starts at {first_seq}, expected {expected}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
    /// A producer writing with an epoch older than one already seen.
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current_epoch}")]
    FencedEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
}

/// What a leader should do with a request's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Append them.
    Append,
    /// A retry of a batch already in the log: answer with its offsets and
    /// append nothing.
    Duplicate(BatchMeta),
}

/// Every producer id with state in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateMap {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot's producers; one from a build without the cap keeps
    /// only the `PRODUCERS_PER_PARTITION_MAX` that wrote last.
    pub fn from_entries(mut producers: BTreeMap<i64, ProducerEntry>) -> Self {
        if producers.len() > PRODUCERS_PER_PARTITION_MAX {
            let mut by_age: Vec<(i64, i64)> = producers
                .iter()
                .map(|(id, entry)| (entry.last_offset(), *id))
                .collect();
            by_age.sort_unstable();
            let excess = producers.len() - PRODUCERS_PER_PARTITION_MAX;
            for (_, id) in &by_age[..excess] {
                producers.remove(id);
            }
        }
        Self { producers }
    }

    pub fn entries(&self) -> &BTreeMap<i64, ProducerEntry> {
        &self.producers
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The leader's check of a request's producer batches, in order, before
    /// anything is written (`first_offset`/`last_offset` are ignored). A
    /// duplicate answers for the whole request, as in Kafka; later batches
    /// of the same producer are checked against the earlier ones.
    pub fn check(&self, batches: &[ProducerBatch]) -> Result<ProducerCheck, ProducerError> {
        let mut pending: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for batch in batches {
            debug_assert!(batch.producer_id != NO_PRODUCER_ID);
            let current = pending
                .get(&batch.producer_id)
                .or_else(|| self.producers.get(&batch.producer_id));
            let Some(current) = current else {
                // No state (new id, or expired, or deleted with the log):
                // any sequence is accepted (KIP-360).
                pending.insert(batch.producer_id, entry_for(batch));
                continue;
            };
            if let Some(original) = current.duplicate_of(batch) {
                return Ok(ProducerCheck::Duplicate(original));
            }
            check_epoch_and_sequence(batch.producer_id, current, batch)?;
            let mut updated = current.clone();
            updated.add(batch);
            pending.insert(batch.producer_id, updated);
        }
        Ok(ProducerCheck::Append)
    }

    /// Records an appended batch (leader after its check, follower, or
    /// replay): no validation, the log is the truth. A new producer beyond
    /// `PRODUCERS_PER_PARTITION_MAX` evicts the one idle longest (whose last
    /// batch is lowest in the log), the same choice on every replica.
    pub fn apply(&mut self, batch: &ProducerBatch) {
        debug_assert!(batch.producer_id != NO_PRODUCER_ID);
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) => entry.add(batch),
            None => {
                if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX {
                    self.evict_idlest();
                }
                self.producers.insert(batch.producer_id, entry_for(batch));
            }
        }
        debug_assert!(self.producers.len() <= PRODUCERS_PER_PARTITION_MAX);
    }

    fn evict_idlest(&mut self) {
        let idlest = self
            .producers
            .iter()
            .min_by_key(|(id, entry)| (entry.last_offset(), **id))
            .map(|(id, _)| *id);
        if let Some(id) = idlest {
            self.producers.remove(&id);
        }
    }

    /// Drops producers whose last batch is `expiration_ms` or more older
    /// than `now_ms` (`producer.id.expiration.ms`); returns how many went.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

fn entry_for(batch: &ProducerBatch) -> ProducerEntry {
    let mut entry = ProducerEntry {
        epoch: batch.epoch,
        batches: VecDeque::with_capacity(BATCHES_KEPT),
        last_timestamp: batch.max_timestamp,
    };
    entry.add(batch);
    entry
}

/// Kafka's `checkProducerEpoch` and `checkSequence` for a producer with state.
fn check_epoch_and_sequence(
    producer_id: i64,
    current: &ProducerEntry,
    batch: &ProducerBatch,
) -> Result<(), ProducerError> {
    if batch.epoch < current.epoch {
        return Err(ProducerError::FencedEpoch {
            producer_id,
            epoch: batch.epoch,
            current_epoch: current.epoch,
        });
    }
    if batch.epoch != current.epoch {
        // A bumped epoch restarts its sequence at 0.
        if batch.first_seq != 0 {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id,
                epoch: batch.epoch,
                first_seq: batch.first_seq,
                expected: 0,
            });
        }
        return Ok(());
    }
    let expected = match current.last_seq() {
        Some(i32::MAX) => 0,
        Some(last) => last + 1,
        None => 0,
    };
    if batch.first_seq != expected {
        return Err(ProducerError::OutOfOrderSequence {
            producer_id,
            epoch: batch.epoch,
            first_seq: batch.first_seq,
            expected,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(
        pid: i64,
        epoch: i16,
        first_seq: i32,
        records: i32,
        first_offset: i64,
    ) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq,
            last_seq: ProducerBatch::last_sequence(first_seq, records - 1),
            first_offset,
            last_offset: first_offset + i64::from(records) - 1,
            max_timestamp: 1_000 + first_offset,
        }
    }

    #[test]
    fn a_partition_keeps_at_most_its_limit_of_producers_evicting_the_idlest() {
        let mut state = ProducerStateMap::new();
        let limit = PRODUCERS_PER_PARTITION_MAX as i64;
        for pid in 0..limit {
            // Producer 0 is the idlest: the others write later in the log,
            // whatever timestamp its client put on its batch.
            let mut b = batch(pid, 0, 0, 1, pid);
            if pid == 0 {
                b.max_timestamp = i64::MAX / 2;
            }
            state.apply(&b);
        }
        assert_eq!(state.len(), PRODUCERS_PER_PARTITION_MAX);
        let newcomer = batch(limit, 0, 0, 1, limit);
        state.apply(&newcomer);
        assert_eq!(state.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(state.get(0).is_none(), "the idlest producer went");
        assert!(state.get(1).is_some());
        // The newcomer's retry is still recognised.
        assert!(matches!(
            state.check(&[newcomer]).unwrap(),
            ProducerCheck::Duplicate(meta) if meta.first_offset == limit
        ));
        // The evicted producer is accepted at any sequence, as an unknown one.
        assert_eq!(
            state.check(&[batch(0, 0, 57, 1, limit + 1)]).unwrap(),
            ProducerCheck::Append
        );
    }

    #[test]
    fn a_snapshot_beyond_the_limit_keeps_the_producers_that_wrote_last() {
        let mut state = ProducerStateMap::new();
        for pid in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            state.apply(&batch(pid, 0, 0, 1, pid));
        }
        let mut entries = state.entries().clone();
        let extra = batch(-5, 0, 0, 1, 10_000_000);
        entries.insert(-5, entry_for(&extra));
        let loaded = ProducerStateMap::from_entries(entries);
        assert_eq!(loaded.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(loaded.get(0).is_none() && loaded.get(-5).is_some());
    }

    /// Checks then applies, as the leader does.
    fn append(
        state: &mut ProducerStateMap,
        b: ProducerBatch,
    ) -> Result<ProducerCheck, ProducerError> {
        let check = state.check(&[b])?;
        if check == ProducerCheck::Append {
            state.apply(&b);
        }
        Ok(check)
    }

    #[test]
    fn in_order_batches_are_appended() {
        let mut state = ProducerStateMap::new();
        assert_eq!(
            append(&mut state, batch(7, 0, 0, 3, 0)),
            Ok(ProducerCheck::Append)
        );
        assert_eq!(
            append(&mut state, batch(7, 0, 3, 2, 3)),
            Ok(ProducerCheck::Append)
        );
        let entry = state.get(7).unwrap();
        assert_eq!(entry.batches.len(), 2);
        assert_eq!(entry.batches.back().unwrap().last_seq, 4);
    }

    #[test]
    fn a_retried_batch_is_a_duplicate_with_its_original_offsets() {
        let mut state = ProducerStateMap::new();
        append(&mut state, batch(7, 0, 0, 3, 10)).unwrap();
        append(&mut state, batch(7, 0, 3, 3, 20)).unwrap();
        // The retry arrives when the log end is elsewhere: offsets are the original's.
        let retry = batch(7, 0, 0, 3, 99);
        match append(&mut state, retry) {
            Ok(ProducerCheck::Duplicate(original)) => {
                assert_eq!((original.first_offset, original.last_offset), (10, 12));
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(state.get(7).unwrap().batches.len(), 2, "nothing applied");
    }

    #[test]
    fn only_the_last_five_batches_are_recognised() {
        let mut state = ProducerStateMap::new();
        for i in 0..6 {
            append(&mut state, batch(7, 0, i, 1, i64::from(i))).unwrap();
        }
        assert!(matches!(
            append(&mut state, batch(7, 0, 1, 1, 50)),
            Ok(ProducerCheck::Duplicate(_))
        ));
        // Sequence 0 fell out of the window: it is now out of order.
        assert!(matches!(
            append(&mut state, batch(7, 0, 0, 1, 50)),
            Err(ProducerError::OutOfOrderSequence { expected: 6, .. })
        ));
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut state = ProducerStateMap::new();
        append(&mut state, batch(7, 0, 0, 3, 0)).unwrap();
        assert_eq!(
            append(&mut state, batch(7, 0, 4, 1, 3)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 7,
                epoch: 0,
                first_seq: 4,
                expected: 3
            })
        );
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero() {
        let mut state = ProducerStateMap::new();
        append(&mut state, batch(7, 2, 0, 3, 0)).unwrap();
        assert!(matches!(
            append(&mut state, batch(7, 1, 3, 1, 3)),
            Err(ProducerError::FencedEpoch {
                current_epoch: 2,
                ..
            })
        ));
        assert!(matches!(
            append(&mut state, batch(7, 3, 5, 1, 3)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        // The bump (KIP-360 recovery): sequence 0 of epoch 3 is accepted,
        // and the old epoch's batches are forgotten.
        assert_eq!(
            append(&mut state, batch(7, 3, 0, 1, 3)),
            Ok(ProducerCheck::Append)
        );
        let entry = state.get(7).unwrap();
        assert_eq!((entry.epoch, entry.batches.len()), (3, 1));
    }

    #[test]
    fn an_unknown_producer_is_accepted_at_any_sequence() {
        let mut state = ProducerStateMap::new();
        assert_eq!(
            append(&mut state, batch(9, 4, 1234, 2, 0)),
            Ok(ProducerCheck::Append)
        );
        assert!(matches!(
            append(&mut state, batch(9, 4, 1237, 1, 2)),
            Err(ProducerError::OutOfOrderSequence { expected: 1236, .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(ProducerBatch::last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(ProducerBatch::last_sequence(i32::MAX, 1), 0);
        assert_eq!(ProducerBatch::last_sequence(i32::MAX - 1, 3), 1);
        let mut state = ProducerStateMap::new();
        append(&mut state, batch(7, 0, i32::MAX - 1, 2, 0)).unwrap();
        assert_eq!(
            append(&mut state, batch(7, 0, 0, 1, 2)),
            Ok(ProducerCheck::Append)
        );
    }

    #[test]
    fn batches_of_one_request_are_checked_against_each_other() {
        let state = ProducerStateMap::new();
        let first = batch(7, 0, 0, 2, 0);
        assert_eq!(
            state.check(&[first, batch(7, 0, 2, 1, 2)]),
            Ok(ProducerCheck::Append)
        );
        assert!(state.check(&[first, batch(7, 0, 5, 1, 2)]).is_err());
        assert!(matches!(
            state.check(&[first, first]),
            Ok(ProducerCheck::Duplicate(_))
        ));
    }

    #[test]
    fn replay_builds_what_the_leader_built() {
        let batches = [
            batch(1, 0, 0, 2, 0),
            batch(2, 0, 0, 1, 2),
            batch(1, 0, 2, 5, 3),
            batch(1, 1, 0, 1, 8),
        ];
        let mut leader = ProducerStateMap::new();
        for b in batches {
            append(&mut leader, b).unwrap();
        }
        let mut follower = ProducerStateMap::new();
        for b in &batches {
            follower.apply(b);
        }
        assert_eq!(leader, follower);
    }

    #[test]
    fn expiry_drops_idle_producers() {
        let mut state = ProducerStateMap::new();
        state.apply(&ProducerBatch {
            max_timestamp: 1_000,
            ..batch(1, 0, 0, 1, 0)
        });
        state.apply(&ProducerBatch {
            max_timestamp: 5_000,
            ..batch(2, 0, 0, 1, 1)
        });
        assert_eq!(state.expire(6_000, 5_000), 1);
        assert!(state.get(1).is_none() && state.get(2).is_some());
        // An expired producer is unknown again: any sequence is accepted.
        assert_eq!(
            state.check(&[batch(1, 0, 77, 1, 2)]),
            Ok(ProducerCheck::Append)
        );
    }
}
