//! Record batch v2: header layout, validation and header patching. Pure.
//!
//! ```text
//! offset size field                 covered by CRC
//!  0      8   baseOffset            no   (patched by the leader)
//!  8      4   batchLength           no   (bytes after this field)
//! 12      4   partitionLeaderEpoch  no   (patched by the leader)
//! 16      1   magic (= 2)           no
//! 17      4   crc (CRC-32C)         no
//! 21      2   attributes            yes  (bits 0-2 codec, 3 timestamp type,
//!                                         4 transactional, 5 control)
//! 23      4   lastOffsetDelta       yes
//! 27      8   baseTimestamp         yes
//! 35      8   maxTimestamp          yes
//! 43      8   producerId            yes
//! 51      2   producerEpoch         yes
//! 53      4   baseSequence          yes
//! 57      4   recordCount           yes
//! 61      …   records               yes
//! ```

use super::error::LogError;

/// The `i`-th record of a plain (non-idempotent, non-transactional) producer
/// batch, for the codec's `RecordBatchEncoder`. The encoder starts a new
/// batch wherever offset − sequence changes, so the sequence runs `i − 1`:
/// the records stay in one batch whose baseSequence is −1 (no idempotence).
pub fn producer_record(
    i: usize,
    timestamp: i64,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: i as i64,
        sequence: i as i32 - 1,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Bytes of a v2 batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format we store.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal batchLength: a header with no records.
pub const BATCH_LENGTH_MIN: u32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as u32;
/// No batch is ever longer than this, whatever the config says (i32 length).
pub const BATCH_BYTES_MAX: u64 = i32::MAX as u64;

pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;

/// Attribute bit 3: timestamps are the broker's append time.
pub(crate) const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit 4: part of a transaction.
pub(crate) const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction marker).
pub(crate) const ATTRIBUTE_CONTROL: i16 = 1 << 5;
/// Attribute bits 0-2: compression codec; 0..=4 are defined.
const ATTRIBUTE_CODEC_MASK: i16 = 0x7;
const CODEC_MAX: i16 = 4;

const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);
const _: () = assert!(MAGIC_AT + 1 == CRC_AT);

/// The decoded 61-byte header of one batch, plus where it sat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Byte position of the batch within the buffer or segment it came from.
    pub position: u64,
    pub base_offset: i64,
    /// Whole batch size on disk: batchLength + 12.
    pub batch_bytes: u32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 unless the producer is idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
    /// The producer-state fields of this batch, if an idempotent producer wrote it.
    pub fn producer_batch(&self) -> Option<super::producer_state::ProducerBatch> {
        (self.producer_id != super::producer_state::NO_PRODUCER_ID).then(|| {
            super::producer_state::ProducerBatch {
                producer_id: self.producer_id,
                epoch: self.producer_epoch,
                first_seq: self.base_sequence,
                last_seq: super::producer_state::ProducerBatch::last_sequence(
                    self.base_sequence,
                    self.last_offset_delta,
                ),
                first_offset: self.base_offset,
                last_offset: self.last_offset(),
                max_timestamp: self.max_timestamp,
            }
        })
    }
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}
fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Parses and checks the header at the start of `buf` (no CRC: the body may
/// not be in `buf`). `position` only labels errors and the result.
pub fn parse_header(buf: &[u8], position: u64) -> Result<BatchHeader, LogError> {
    let corrupt = |reason| LogError::CorruptBatch { position, reason };
    // v0/v1 messages also keep their magic at byte 16 and may be shorter than
    // a v2 header: check the magic first so they get their own error.
    if buf.len() <= MAGIC_AT {
        return Err(corrupt("truncated batch header"));
    }
    let magic = buf[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(LogError::UnsupportedMagic { position, magic });
    }
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(corrupt("truncated batch header"));
    }
    let batch_length = be_i32(buf, BATCH_LENGTH_AT);
    if batch_length < 0 || (batch_length as u32) < BATCH_LENGTH_MIN {
        return Err(corrupt("batch length shorter than a header"));
    }
    let header = BatchHeader {
        position,
        base_offset: be_i64(buf, BASE_OFFSET_AT),
        batch_bytes: batch_length as u32 + LOG_OVERHEAD_BYTES as u32,
        partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
        crc: be_i32(buf, CRC_AT) as u32,
        attributes: be_i16(buf, ATTRIBUTES_AT),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
        producer_id: be_i64(buf, PRODUCER_ID_AT),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
        base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
        record_count: be_i32(buf, RECORD_COUNT_AT),
    };
    check_header_rules(&header)?;
    Ok(header)
}

/// Rules of the v2 format that need no body bytes.
fn check_header_rules(header: &BatchHeader) -> Result<(), LogError> {
    let invalid = |reason| LogError::InvalidBatch {
        position: header.position,
        reason,
    };
    if header.attributes & ATTRIBUTE_CODEC_MASK > CODEC_MAX {
        return Err(LogError::CorruptBatch {
            position: header.position,
            reason: "unknown compression codec",
        });
    }
    // Zero is legal: compaction leaves empty batches standing for offsets
    // whose records were all cleaned away (producers cannot send them:
    // `check_producer_counts` wants count = lastOffsetDelta + 1 ≥ 1).
    if header.record_count < 0 {
        return Err(invalid("negative record count"));
    }
    if header.last_offset_delta < 0 {
        return Err(invalid("negative last offset delta"));
    }
    // Compaction may leave fewer records than the delta spans, never more.
    if i64::from(header.record_count) > i64::from(header.last_offset_delta) + 1 {
        return Err(invalid("record count exceeds last offset delta + 1"));
    }
    Ok(())
}

/// CRC-32C over attributes..end of a whole batch.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// CRC-32C of a batch held as its header and, elsewhere, the bytes after it.
pub(crate) fn compute_crc_parts(head: &BatchHead, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_AT..]), body)
}

/// Checks that `batch` (exactly one whole batch) carries a correct CRC.
pub(crate) fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
    assert_eq!(batch.len(), header.batch_bytes as usize);
    if compute_crc(batch) != header.crc {
        return Err(LogError::CorruptBatch {
            position: header.position,
            reason: "CRC-32C mismatch",
        });
    }
    Ok(())
}

/// Splits `records` into whole batches and validates each one (header,
/// lengths, CRC). A trailing partial batch is an error. Nothing is modified.
pub fn validate_batches(
    records: &[u8],
    max_batch_bytes: u32,
) -> Result<Vec<BatchHeader>, LogError> {
    if records.is_empty() {
        return Err(LogError::InvalidBatch {
            position: 0,
            reason: "empty record set",
        });
    }
    let mut headers = Vec::with_capacity(records.len() / BATCH_HEADER_BYTES + 1);
    let mut position = 0usize;
    // Each pass consumes ≥ BATCH_HEADER_BYTES, so the loop is bounded by len / 61.
    while position < records.len() {
        let rest = &records[position..];
        let header = parse_header(rest, position as u64)?;
        if header.batch_bytes > max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                batch_bytes: u64::from(header.batch_bytes),
                max_bytes: max_batch_bytes,
            });
        }
        if header.batch_bytes as usize > rest.len() {
            return Err(LogError::CorruptBatch {
                position: position as u64,
                reason: "batch length runs past the end of the record set",
            });
        }
        verify_crc(&rest[..header.batch_bytes as usize], &header)?;
        headers.push(header);
        position += header.batch_bytes as usize;
    }
    assert_eq!(position, records.len());
    Ok(headers)
}

/// Leader-side rules: a producer's batch has exactly lastOffsetDelta + 1
/// records, and really holds `recordCount` records that fill it (or, when
/// compressed, its decompressed records) exactly. Without the second, a tiny
/// batch claiming 2^31 records would move the log end by 2^31 offsets.
pub(crate) fn check_producer_counts(header: &BatchHeader, batch: &[u8]) -> Result<(), LogError> {
    assert_eq!(batch.len(), header.batch_bytes as usize);
    let invalid = |reason| LogError::InvalidBatch {
        position: header.position,
        reason,
    };
    if i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(invalid("record count differs from last offset delta + 1"));
    }
    let codec = header.attributes & ATTRIBUTE_CODEC_MASK;
    if codec != 0 {
        let records = super::compressed::count_records(
            codec,
            &batch[BATCH_HEADER_BYTES..],
            super::compressed::DECOMPRESSED_BATCH_BYTES_MAX,
        )
        .map_err(invalid)?;
        if records != header.record_count as u64 {
            return Err(invalid(
                "compressed batch holds a different number of records than it counts",
            ));
        }
        return Ok(());
    }
    let mut rest = &batch[BATCH_HEADER_BYTES..];
    for _ in 0..header.record_count {
        let (length, used) =
            super::records::read_varint(rest).ok_or_else(|| invalid("truncated record length"))?;
        let length = usize::try_from(length).map_err(|_| invalid("negative record length"))?;
        let end = used.checked_add(length).filter(|end| *end <= rest.len());
        rest = &rest[end.ok_or_else(|| invalid("record runs past the end of the batch"))?..];
    }
    if !rest.is_empty() {
        return Err(invalid("bytes after the last record of the batch"));
    }
    Ok(())
}

/// A batch's header, copied out of the producer's bytes to be patched: the
/// leader writes it followed by the untouched records, so a produce's
/// records are never copied in user space.
pub(crate) type BatchHead = [u8; BATCH_HEADER_BYTES];

/// The header of the whole batch at the start of `batch`, as a copy.
pub(crate) fn copy_head(batch: &[u8]) -> BatchHead {
    let mut head = [0u8; BATCH_HEADER_BYTES];
    head.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
    head
}

/// Writes baseOffset and partitionLeaderEpoch; both lie outside the CRC.
pub(crate) fn patch_offset_and_epoch(head: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(head.len() >= BATCH_HEADER_BYTES);
    head[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    head[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Sets the timestamp type bit and (for LogAppendTime) maxTimestamp in
/// `head`, then recomputes the CRC over it and `body` (the batch's bytes
/// after the header). Returns whether anything changed.
pub(crate) fn set_timestamp_type(
    head: &mut BatchHead,
    body: &[u8],
    log_append_time_ms: Option<i64>,
) -> bool {
    let attributes = be_i16(head, ATTRIBUTES_AT);
    let new_attributes = match log_append_time_ms {
        Some(_) => attributes | ATTRIBUTE_LOG_APPEND_TIME,
        None => attributes & !ATTRIBUTE_LOG_APPEND_TIME,
    };
    if new_attributes == attributes && log_append_time_ms.is_none() {
        return false;
    }
    head[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&new_attributes.to_be_bytes());
    if let Some(now_ms) = log_append_time_ms {
        head[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    }
    let crc = compute_crc_parts(head, body);
    head[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    true
}

#[cfg(test)]
pub(crate) mod test_support {
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    /// What a leader stores for a producer's (CreateTime) `records` appended
    /// at `base_offset` in `leader_epoch`: each batch's offset and epoch set.
    pub fn as_stored_by_leader(records: &[u8], base_offset: i64, leader_epoch: i32) -> Vec<u8> {
        let mut stored = records.to_vec();
        let mut next_offset = base_offset;
        for header in super::validate_batches(records, u32::MAX).expect("valid batches") {
            let start = header.position as usize;
            super::patch_offset_and_epoch(&mut stored[start..], next_offset, leader_epoch);
            next_offset += i64::from(header.last_offset_delta) + 1;
        }
        stored
    }

    /// One v2 batch of `count` records, timestamps `timestamp_ms + i`, values
    /// of `value_bytes` bytes each, as a producer would send it (offset 0).
    pub fn encode_batch(
        count: u32,
        value_bytes: usize,
        timestamp_ms: i64,
        compression: Compression,
    ) -> Vec<u8> {
        let timestamps: Vec<i64> = (0..count).map(|i| timestamp_ms + i64::from(i)).collect();
        encode_batch_with_timestamps(&timestamps, value_bytes, compression)
    }

    /// One batch of an idempotent producer: `count` records from sequence
    /// `first_seq`, timestamps `timestamp_ms + i`.
    pub fn encode_idempotent_batch(
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        count: u32,
        timestamp_ms: i64,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                producer_id,
                producer_epoch: epoch,
                sequence: first_seq.wrapping_add(i as i32),
                ..super::producer_record(
                    i as usize,
                    timestamp_ms + i64::from(i),
                    Some(format!("k{i}").into_bytes().into()),
                    Some(vec![7u8; 16].into()),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("test batch encodes");
        buf.to_vec()
    }

    pub fn encode_batch_with_timestamps(
        timestamps: &[i64],
        value_bytes: usize,
        compression: Compression,
    ) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &timestamp)| {
                super::producer_record(
                    i,
                    timestamp,
                    None,
                    Some(vec![(i % 251) as u8; value_bytes].into()),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("test batch encodes");
        buf.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::encode_batch;
    use super::*;
    use kafka_protocol::records::Compression;

    #[test]
    fn valid_batches_parse() {
        let mut records = encode_batch(3, 10, 1000, Compression::None);
        records.extend(encode_batch(2, 5, 2000, Compression::Lz4));
        let headers = validate_batches(&records, u32::MAX).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].record_count, 3);
        assert_eq!(headers[0].last_offset_delta, 2);
        assert_eq!(headers[0].max_timestamp, 1002);
        assert_eq!(headers[1].position, u64::from(headers[0].batch_bytes));
    }

    #[test]
    fn bad_crc_is_corrupt() {
        let mut records = encode_batch(3, 10, 1000, Compression::None);
        let last = records.len() - 1;
        records[last] ^= 0x40;
        let err = validate_batches(&records, u32::MAX).unwrap_err();
        assert!(matches!(
            err,
            LogError::CorruptBatch {
                reason: "CRC-32C mismatch",
                ..
            }
        ));
    }

    #[test]
    fn old_magic_is_unsupported() {
        for magic in [0u8, 1] {
            let mut records = encode_batch(1, 10, 1000, Compression::None);
            records[MAGIC_AT] = magic;
            let err = validate_batches(&records, u32::MAX).unwrap_err();
            assert!(matches!(err, LogError::UnsupportedMagic { magic: m, .. } if m == magic as i8));
        }
        // A v0 message shorter than a v2 header still reports its magic.
        let mut short = vec![0u8; 26];
        short[MAGIC_AT] = 0;
        assert!(matches!(
            validate_batches(&short, u32::MAX),
            Err(LogError::UnsupportedMagic { magic: 0, .. })
        ));
    }

    #[test]
    fn truncated_header_and_trailing_partial_batch() {
        let records = encode_batch(2, 10, 1000, Compression::None);
        assert!(matches!(
            validate_batches(&records[..40], u32::MAX),
            Err(LogError::CorruptBatch { .. })
        ));
        let mut two = records.clone();
        two.extend_from_slice(&records[..records.len() - 3]);
        let err = validate_batches(&two, u32::MAX).unwrap_err();
        assert!(
            matches!(err, LogError::CorruptBatch { position, .. } if position == records.len() as u64)
        );
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let mut records = encode_batch(2, 10, 1000, Compression::None);
        records[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&records, u32::MAX),
            Err(LogError::CorruptBatch { .. })
        ));
        records[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&records, u32::MAX),
            Err(LogError::CorruptBatch { .. })
        ));
        let len = records.len() as i32;
        records[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(len * 2).to_be_bytes());
        assert!(matches!(
            validate_batches(&records, u32::MAX),
            Err(LogError::CorruptBatch { .. })
        ));
    }

    #[test]
    fn counts_must_agree_with_delta() {
        let mut records = encode_batch(2, 10, 1000, Compression::None);
        records[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = compute_crc(&records);
        records[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&records, u32::MAX),
            Err(LogError::InvalidBatch { .. })
        ));
        // An empty batch is stored (compaction leaves them), never produced.
        records[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&records);
        records[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let headers = validate_batches(&records, u32::MAX).unwrap();
        assert!(check_producer_counts(&headers[0], &records).is_err());
        records[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        let crc = compute_crc(&records);
        records[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let headers = validate_batches(&records, u32::MAX).unwrap();
        assert!(check_producer_counts(&headers[0], &records).is_err());
    }

    #[test]
    fn a_compressed_batch_must_hold_the_records_it_counts() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let honest = encode_batch(3, 10, 1000, compression);
            let headers = validate_batches(&honest, u32::MAX).unwrap();
            assert!(check_producer_counts(&headers[0], &honest).is_ok());
            // Claims four records (count and delta agree) but holds three.
            let mut lying = honest.clone();
            lying[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&4i32.to_be_bytes());
            lying[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                .copy_from_slice(&3i32.to_be_bytes());
            let crc = compute_crc(&lying);
            lying[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            let headers = validate_batches(&lying, u32::MAX).unwrap();
            assert!(
                matches!(
                    check_producer_counts(&headers[0], &lying),
                    Err(LogError::InvalidBatch {
                        reason: "compressed batch holds a different number of records than it counts",
                        ..
                    })
                ),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn an_uncompressed_batch_must_hold_the_records_it_counts() {
        let honest = encode_batch(3, 10, 1000, Compression::None);
        let headers = validate_batches(&honest, u32::MAX).unwrap();
        assert!(check_producer_counts(&headers[0], &honest).is_ok());
        // Claims 2^31 - 1 records (count and delta agree) but holds three.
        let mut lying = honest.clone();
        lying[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        lying[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = compute_crc(&lying);
        lying[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let headers = validate_batches(&lying, u32::MAX).unwrap();
        assert!(matches!(
            check_producer_counts(&headers[0], &lying),
            Err(LogError::InvalidBatch {
                reason: "record runs past the end of the batch" | "truncated record length",
                ..
            })
        ));
        // Claims fewer records than it holds.
        let mut short = honest.clone();
        short[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        short[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        let crc = compute_crc(&short);
        short[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let headers = validate_batches(&short, u32::MAX).unwrap();
        assert!(matches!(
            check_producer_counts(&headers[0], &short),
            Err(LogError::InvalidBatch {
                reason: "bytes after the last record of the batch",
                ..
            })
        ));
    }

    #[test]
    fn too_large_batch() {
        let records = encode_batch(2, 100, 1000, Compression::None);
        let err = validate_batches(&records, 100).unwrap_err();
        assert!(matches!(
            err,
            LogError::BatchTooLarge { max_bytes: 100, .. }
        ));
    }

    #[test]
    fn patching_a_copied_head_keeps_the_crc_valid_over_the_untouched_body() {
        let records = encode_batch(4, 10, 1000, Compression::None);
        let mut head = copy_head(&records);
        let body = &records[BATCH_HEADER_BYTES..];
        let whole = |head: &BatchHead| [head.as_slice(), body].concat();
        patch_offset_and_epoch(&mut head, 77, 9);
        let header = validate_batches(&whole(&head), u32::MAX).unwrap()[0];
        assert_eq!((header.base_offset, header.partition_leader_epoch), (77, 9));
        assert!(set_timestamp_type(&mut head, body, Some(5555)));
        let header = validate_batches(&whole(&head), u32::MAX).unwrap()[0];
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 5555);
        assert!(set_timestamp_type(&mut head, body, None));
        assert!(!validate_batches(&whole(&head), u32::MAX).unwrap()[0].is_log_append_time());
        assert!(!set_timestamp_type(&mut head, body, None));
        assert_eq!(compute_crc(&whole(&head)), compute_crc_parts(&head, body));
    }
}
