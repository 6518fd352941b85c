//! Property test: random appends, rolls, retention, truncation, flushes and
//! reopens (clean, and "crash" = drop without close) must agree with a
//! simple in-memory model of the log.

use std::path::Path;

use kafka_protocol::records::Compression;
use proptest::prelude::*;

use super::batch::test_support::{as_stored_by_leader, encode_batch_with_timestamps};
use super::*;

const NOW_START_MS: i64 = 1_000_000;
const SEGMENT_MS: u64 = 500_000;

#[derive(Clone, Debug)]
struct BatchSpec {
    timestamps: Vec<i64>,
    value_bytes: usize,
    compressed: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<BatchSpec>),
    BumpEpoch,
    AgeRoll,
    Retention {
        retention_bytes: u64,
    },
    TruncateTo {
        fraction: u16,
    },
    Flush,
    ReopenClean,
    ReopenCrash,
    /// Power loss: the unsynced tail of the active segment is cut at
    /// `fraction`/1000 of its length, optionally followed by garbage.
    PowerLoss {
        fraction: u16,
        garbage_bytes: u16,
    },
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        prop::collection::vec(0i64..3_000, 1..6),
        0usize..120,
        any::<bool>(),
    )
        .prop_map(|(timestamps, value_bytes, compressed)| BatchSpec {
            timestamps,
            value_bytes,
            compressed,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(batch_spec(), 1..4).prop_map(Op::Append),
        1 => Just(Op::BumpEpoch),
        1 => Just(Op::AgeRoll),
        1 => (0u64..3_000).prop_map(|retention_bytes| Op::Retention { retention_bytes }),
        1 => (0u16..=1000).prop_map(|fraction| Op::TruncateTo { fraction }),
        1 => Just(Op::Flush),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenCrash),
        1 => (0u16..=1000, prop::sample::select(vec![0u16, 1, 60, 500])).prop_map(|(fraction, garbage_bytes)| Op::PowerLoss { fraction, garbage_bytes }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop::sample::select(vec![400u64, 700, 1_500]),
        prop::sample::select(vec![0u32, 64, 200]),
        prop::sample::select(vec![24u32, 64, 4_096]),
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, segment_index_bytes)| LogConfig {
                segment_bytes,
                segment_ms: SEGMENT_MS,
                segment_index_bytes,
                index_interval_bytes,
                retention_ms: None,
                ..LogConfig::default()
            },
        )
}

#[derive(Clone, Debug)]
struct ModelBatch {
    base_offset: i64,
    timestamps: Vec<i64>,
    bytes: Vec<u8>,
}

impl ModelBatch {
    fn last_offset(&self) -> i64 {
        self.base_offset + self.timestamps.len() as i64 - 1
    }
}

/// What the log must contain: batches, log start/end, and the epoch cache.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    log_start_offset: i64,
    log_end_offset: i64,
    epochs: Vec<(i32, i64)>,
    /// Offsets below this were fsynced (flush, clean close, or open).
    durable_offset: i64,
}

impl Model {
    fn append(&mut self, batch: ModelBatch, epoch: i32) {
        assert_eq!(batch.base_offset, self.log_end_offset);
        if self.epochs.last().is_none_or(|&(latest, _)| epoch > latest) {
            let start = batch.base_offset;
            self.epochs.retain(|&(_, s)| s < start);
            self.epochs.push((epoch, start));
        }
        self.log_end_offset = batch.last_offset() + 1;
        self.batches.push(batch);
    }

    fn start_at(&mut self, log_start_offset: i64) {
        self.batches
            .retain(|batch| batch.base_offset >= log_start_offset);
        self.log_start_offset = log_start_offset;
        if let Some(keep) = self
            .epochs
            .iter()
            .rposition(|&(_, s)| s <= log_start_offset)
        {
            self.epochs.drain(..keep);
            self.epochs[0].1 = log_start_offset;
        }
    }

    /// Epochs that begin at the log end hold nothing: a truncation (even
    /// to the end) and a reopen forget them, as Kafka's cache does.
    fn forget_epochs_at_the_end(&mut self) {
        let end = self.log_end_offset;
        self.epochs.retain(|&(_, start)| start < end);
    }

    fn truncate_to(&mut self, offset: i64) {
        self.durable_offset = self.durable_offset.min(offset);
        if offset >= self.log_end_offset {
            self.forget_epochs_at_the_end();
            return;
        }
        if offset <= self.log_start_offset {
            self.batches.clear();
            self.log_end_offset = offset;
            self.epochs.retain(|&(_, s)| s < offset);
            self.start_at(offset);
            return;
        }
        self.batches.retain(|batch| batch.last_offset() < offset);
        self.log_end_offset = self
            .batches
            .last()
            .map_or(self.log_start_offset, |batch| batch.last_offset() + 1);
        let end = self.log_end_offset;
        self.epochs.retain(|&(_, s)| s < end);
    }

    /// First record (offset order) with timestamp ≥ target.
    fn offset_for_timestamp(&self, target: i64) -> Option<(i64, i64)> {
        self.records().find(|&(_, timestamp)| timestamp >= target)
    }

    fn max_timestamp(&self) -> Option<(i64, i64)> {
        let max = self.records().map(|(_, timestamp)| timestamp).max()?;
        self.records()
            .find(|&(_, timestamp)| timestamp == max)
            .map(|(offset, timestamp)| (timestamp, offset))
    }

    fn records(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.batches.iter().flat_map(|batch| {
            batch
                .timestamps
                .iter()
                .enumerate()
                .map(move |(i, &timestamp)| (batch.base_offset + i as i64, timestamp))
        })
    }
}

fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.log_start_offset);
    prop_assert_eq!(log.log_end_offset(), model.log_end_offset);
    let total: u64 = model
        .batches
        .iter()
        .map(|batch| batch.bytes.len() as u64)
        .sum();
    prop_assert_eq!(log.size_bytes(), total);
    for batch in &model.batches {
        // From the base and from inside the batch: the whole batch, alone.
        for start in [batch.base_offset, batch.last_offset()] {
            let slice = log
                .read(start, 1, i64::MAX, true)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bytes = slice
                .file
                .map(|file| file.read_to_vec().unwrap_or_default())
                .unwrap_or_default();
            prop_assert_eq!(&bytes, &batch.bytes, "read at {}", start);
        }
    }
    let mut targets: Vec<i64> = model
        .records()
        .flat_map(|(_, t)| [t, t + 1])
        .step_by(3)
        .collect();
    targets.extend([-1, 0, 3_000]);
    for target in targets {
        let found = log
            .offset_for_timestamp(target)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            found,
            model.offset_for_timestamp(target),
            "timestamp {}",
            target
        );
    }
    prop_assert_eq!(log.max_timestamp(), model.max_timestamp());
    let epochs: Vec<(i32, i64)> = log
        .leader_epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    prop_assert_eq!(&epochs, &model.epochs);
    if let Some(&(latest, _)) = model.epochs.last() {
        prop_assert_eq!(
            log.leader_epoch_end_offset(latest),
            Some((latest, model.log_end_offset))
        );
    }
    Ok(())
}

struct Run {
    log: Option<PartitionLog>,
    model: Model,
    config: LogConfig,
    now_ms: i64,
    epoch: i32,
}

impl Run {
    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("log is open between operations")
    }

    fn apply(&mut self, dir: &Path, op: &Op) -> Result<(), TestCaseError> {
        self.now_ms += 1;
        let now_ms = self.now_ms;
        let fail = |e: LogError| TestCaseError::fail(e.to_string());
        match op {
            Op::Append(specs) => self.append(specs)?,
            Op::BumpEpoch => self.epoch += 1,
            Op::AgeRoll => {
                self.now_ms += SEGMENT_MS as i64 + 1;
                let now_ms = self.now_ms;
                self.log().roll_if_due(now_ms).map_err(fail)?;
            }
            Op::Retention { retention_bytes } => {
                let config = LogConfig {
                    retention_bytes: Some(*retention_bytes),
                    ..self.config.clone()
                };
                self.log().set_config(config);
                let outcome = self.log().apply_retention(now_ms).map_err(fail)?;
                let config = self.config.clone();
                self.log().set_config(config);
                let start = outcome.log_start_offset;
                let on_boundary = start == self.model.log_end_offset
                    || self.model.batches.iter().any(|b| b.base_offset == start);
                prop_assert!(on_boundary, "retention removes whole batches");
                prop_assert!(start >= self.model.log_start_offset);
                self.model.start_at(start);
                self.model.durable_offset = self.model.durable_offset.max(start);
            }
            Op::TruncateTo { fraction } => {
                let low = (self.model.log_start_offset - 2).max(0);
                let span = self.model.log_end_offset + 1 - low;
                let offset = low + span * i64::from(*fraction) / 1000;
                self.log().truncate_to(offset).map_err(fail)?;
                self.model.truncate_to(offset);
            }
            Op::PowerLoss {
                fraction,
                garbage_bytes,
            } => self.power_loss(dir, *fraction, *garbage_bytes)?,
            Op::Flush => {
                self.log().flush(now_ms).map_err(fail)?;
                self.model.durable_offset = self.model.log_end_offset;
                prop_assert_eq!(self.log().recovery_point(), self.model.log_end_offset);
            }
            Op::ReopenClean | Op::ReopenCrash => {
                let log = self.log.take().expect("open");
                if matches!(op, Op::ReopenClean) {
                    log.close(now_ms).map_err(fail)?;
                } else {
                    drop(log);
                }
                let (log, report) =
                    PartitionLog::open(dir, self.config.clone(), now_ms).map_err(fail)?;
                prop_assert_eq!(report.clean_shutdown, matches!(op, Op::ReopenClean));
                prop_assert_eq!(report.truncated_bytes, 0, "nothing acknowledged is lost");
                self.log = Some(log);
                self.model.durable_offset = self.model.log_end_offset;
                self.model.forget_epochs_at_the_end();
            }
        }
        Ok(())
    }

    fn power_loss(
        &mut self,
        dir: &Path,
        fraction: u16,
        garbage_bytes: u16,
    ) -> Result<(), TestCaseError> {
        let fail = |e: LogError| TestCaseError::fail(e.to_string());
        let log = self.log.take().expect("open");
        let active_base = log.segment_base_offsets().last().copied().unwrap_or(0);
        drop(log);
        let path = dir.join(format!("{active_base:020}.log"));
        let in_active: Vec<&ModelBatch> = self
            .model
            .batches
            .iter()
            .filter(|b| b.base_offset >= active_base)
            .collect();
        let current: u64 = in_active.iter().map(|b| b.bytes.len() as u64).sum();
        let synced: u64 = in_active
            .iter()
            .filter(|b| b.last_offset() < self.model.durable_offset)
            .map(|b| b.bytes.len() as u64)
            .sum();
        let cut = synced + (current - synced) * u64::from(fraction) / 1000;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        file.set_len(cut)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::os::unix::fs::FileExt::write_all_at(
            &file,
            &vec![0x5A; usize::from(garbage_bytes)],
            cut,
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(file);
        // Batches wholly before the cut survive; the first one cut and all after go.
        let mut end = 0u64;
        let mut first_lost = None;
        for batch in &in_active {
            end += batch.bytes.len() as u64;
            if end > cut {
                first_lost = Some((batch.base_offset, end - batch.bytes.len() as u64));
                break;
            }
        }
        let (log, report) =
            PartitionLog::open(dir, self.config.clone(), self.now_ms).map_err(fail)?;
        prop_assert!(!report.clean_shutdown);
        let kept_end = first_lost.map_or(cut, |(_, start)| start);
        prop_assert_eq!(
            report.truncated_bytes,
            cut - kept_end + u64::from(garbage_bytes)
        );
        if let Some((offset, _)) = first_lost {
            self.model.truncate_to(offset);
        }
        self.model.durable_offset = self.model.log_end_offset;
        self.log = Some(log);
        Ok(())
    }

    fn append(&mut self, specs: &[BatchSpec]) -> Result<(), TestCaseError> {
        let mut records = Vec::new();
        let mut lengths = Vec::new();
        for spec in specs {
            let codec = if spec.compressed {
                Compression::Lz4
            } else {
                Compression::None
            };
            let encoded = encode_batch_with_timestamps(&spec.timestamps, spec.value_bytes, codec);
            lengths.push(encoded.len());
            records.extend(encoded);
        }
        let (epoch, now_ms) = (self.epoch, self.now_ms);
        if records.len() as u64 > self.config.segment_bytes {
            let refused = self.log().append_as_leader(&records, epoch, now_ms);
            let too_large = matches!(refused, Err(LogError::RecordSetTooLarge { .. }));
            prop_assert!(too_large, "refused: {:?}", refused);
            return Ok(());
        }
        let info = self
            .log()
            .append_as_leader(&records, epoch, now_ms)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(info.base_offset, self.model.log_end_offset);
        let records = as_stored_by_leader(&records, info.base_offset, epoch);
        let mut position = 0;
        for (spec, len) in specs.iter().zip(lengths) {
            let base_offset = self.model.log_end_offset;
            let bytes = records[position..position + len].to_vec();
            position += len;
            self.model.append(
                ModelBatch {
                    base_offset,
                    timestamps: spec.timestamps.clone(),
                    bytes,
                },
                epoch,
            );
        }
        prop_assert_eq!(info.last_offset + 1, self.model.log_end_offset);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(config in config(), ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (log, _) = PartitionLog::open(dir.path(), config.clone(), NOW_START_MS)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut run = Run { log: Some(log), model: Model::default(), config, now_ms: NOW_START_MS, epoch: 0 };
        for op in &ops {
            run.apply(dir.path(), op)?;
            let log = run.log.as_ref().expect("open");
            check(log, &run.model)?;
        }
    }
}
