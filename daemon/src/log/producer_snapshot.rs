//! Producer-state snapshots: `<offset:020>.snapshot` holds the producer
//! state of every batch below `offset`, so recovery replays only the batch
//! headers after the newest snapshot instead of the whole log. Written at
//! segment rolls and at a clean close; a snapshot that fails its CRC or
//! lies above the log end is dropped (recovery falls back to an older one
//! or to the log start, which is always correct, only slower).
//!
//! ```text
//! "SLPS"  version:u16  crc32c:u32 (over everything after it)  count:u32
//! count × { producer_id:i64 epoch:i16 last_timestamp:i64 batches:u8
//!           batches × { first_seq:i32 last_seq:i32 first_offset:i64
//!                       last_offset:i64 max_timestamp:i64 } }
//! ```
//! All integers big-endian.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::error::LogError;
use super::producer_state::{BATCHES_KEPT, BatchMeta, ProducerEntry, ProducerStateMap};
use super::segment;

pub(crate) const SNAPSHOT_SUFFIX: &str = ".snapshot";
const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
const PREAMBLE_BYTES: usize = 4 + 2 + 4;
const ENTRY_FIXED_BYTES: usize = 8 + 2 + 8 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// A snapshot larger than this is not one of ours (≈ 3 M producers).
const SNAPSHOT_BYTES_MAX: u64 = 512 * 1024 * 1024;

pub(crate) fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(segment::file_name(offset, SNAPSHOT_SUFFIX))
}

pub(crate) fn encode(state: &ProducerStateMap) -> Vec<u8> {
    let entries = state.entries();
    let mut body = Vec::with_capacity(4 + entries.len() * (ENTRY_FIXED_BYTES + BATCH_BYTES));
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (producer_id, entry) in entries {
        body.extend_from_slice(&producer_id.to_be_bytes());
        body.extend_from_slice(&entry.epoch.to_be_bytes());
        body.extend_from_slice(&entry.last_timestamp.to_be_bytes());
        assert!(entry.batches.len() <= BATCHES_KEPT);
        body.push(entry.batches.len() as u8);
        for batch in &entry.batches {
            body.extend_from_slice(&batch.first_seq.to_be_bytes());
            body.extend_from_slice(&batch.last_seq.to_be_bytes());
            body.extend_from_slice(&batch.first_offset.to_be_bytes());
            body.extend_from_slice(&batch.last_offset.to_be_bytes());
            body.extend_from_slice(&batch.max_timestamp.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(PREAMBLE_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads big-endian integers off a slice, failing on a short read.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        if self.rest.len() < N {
            return Err("snapshot is cut short");
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(head);
        Ok(bytes)
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        self.take::<1>().map(|b| b[0])
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<ProducerStateMap, &'static str> {
    if bytes.len() < PREAMBLE_BYTES || &bytes[..4] != MAGIC {
        return Err("not a producer snapshot");
    }
    if u16::from_be_bytes([bytes[4], bytes[5]]) != VERSION {
        return Err("unknown snapshot version");
    }
    let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[PREAMBLE_BYTES..];
    if crc32c::crc32c(body) != crc {
        return Err("snapshot CRC mismatch");
    }
    let mut reader = Reader { rest: body };
    let count = u32::from_be_bytes(reader.take::<4>()?);
    if count as usize > body.len() / ENTRY_FIXED_BYTES {
        return Err("snapshot entry count exceeds its size");
    }
    let mut producers = BTreeMap::new();
    for _ in 0..count {
        let producer_id = reader.i64()?;
        let epoch = reader.i16()?;
        let last_timestamp = reader.i64()?;
        let kept = reader.u8()? as usize;
        if kept > BATCHES_KEPT {
            return Err("snapshot entry keeps too many batches");
        }
        let mut batches = VecDeque::with_capacity(kept);
        for _ in 0..kept {
            batches.push_back(BatchMeta {
                first_seq: reader.i32()?,
                last_seq: reader.i32()?,
                first_offset: reader.i64()?,
                last_offset: reader.i64()?,
                max_timestamp: reader.i64()?,
            });
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_timestamp,
        };
        if producers.insert(producer_id, entry).is_some() {
            return Err("snapshot names a producer twice");
        }
    }
    if !reader.rest.is_empty() {
        return Err("bytes after the last snapshot entry");
    }
    Ok(ProducerStateMap::from_entries(producers))
}

/// Writes the snapshot for `offset` atomically, not synced: one lost in a
/// crash, or one past data that was lost, is dropped at open and recovery
/// replays from an older one.
pub(crate) fn write(dir: &Path, offset: i64, state: &ProducerStateMap) -> Result<(), LogError> {
    checkpoint::write_atomic_unsynced(&path(dir, offset), &encode(state))
}

/// Reads one snapshot; a corrupt one is an error the caller may skip.
pub(crate) fn read(path: &Path) -> Result<ProducerStateMap, LogError> {
    let corrupt = |reason: String| LogError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let len = fs::metadata(path)
        .map_err(LogError::io("stat", path))?
        .len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(corrupt(format!("{len} bytes is larger than any snapshot")));
    }
    let bytes = fs::read(path).map_err(LogError::io("read", path))?;
    decode(&bytes).map_err(|reason| corrupt(reason.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::producer_state::ProducerBatch;
    use proptest::prelude::*;

    fn sample() -> ProducerStateMap {
        let mut state = ProducerStateMap::new();
        for (i, pid) in [3i64, 1, 1000, 1].into_iter().enumerate() {
            let i = i as i64;
            state.apply(&ProducerBatch {
                producer_id: pid,
                epoch: 2,
                first_seq: (i * 10) as i32,
                last_seq: (i * 10 + 4) as i32,
                first_offset: i * 100,
                last_offset: i * 100 + 4,
                max_timestamp: 1_700_000_000_000 + i,
            });
        }
        state
    }

    #[test]
    fn round_trips() {
        let state = sample();
        assert_eq!(decode(&encode(&state)), Ok(state));
        assert_eq!(
            decode(&encode(&ProducerStateMap::new())),
            Ok(ProducerStateMap::new())
        );
    }

    #[test]
    fn any_flipped_or_cut_byte_is_refused() {
        let bytes = encode(&sample());
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut framed = encode(&ProducerStateMap::new())[..PREAMBLE_BYTES].to_vec();
            framed[6..10].copy_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed);
        }
    }
}
