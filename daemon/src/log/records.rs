//! The records inside a v2 batch, walked without copying: each record's
//! raw bytes, offset delta, timestamp delta, key, and whether its value is
//! null (a tombstone). The cleaner keeps records by copying their raw bytes
//! into a batch with the same base offset, so offset deltas stay valid; and
//! produce to a compacted topic checks that every record has a key. Pure,
//! apart from the codecs.

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

/// One record of a batch, borrowed from its (decompressed) records bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordView<'a> {
    /// The whole record: length varint and body.
    pub(crate) raw: &'a [u8],
    pub(crate) offset_delta: i64,
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value_is_null: bool,
}

/// Reads a zigzag varint; returns it and the bytes it took.
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Writes a zigzag varint.
#[cfg(test)]
fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// A cursor over one record's body.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<i64, &'static str> {
        let (value, used) = read_varint(self.rest).ok_or("truncated varint in a record")?;
        self.rest = &self.rest[used..];
        Ok(value)
    }

    fn bytes(&mut self, len: i64) -> Result<Option<&'a [u8]>, &'static str> {
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "record field too long")?;
        if len > self.rest.len() {
            return Err("record field runs past the record");
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(Some(head))
    }
}

/// Walks the records in `records` (a batch body, decompressed). An error
/// means the bytes are not `count` well-formed records.
pub(crate) fn walk(records: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, &'static str> {
    let mut views = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
    let mut rest = records;
    for _ in 0..count {
        let (length, used) = read_varint(rest).ok_or("truncated record length")?;
        let length = usize::try_from(length).map_err(|_| "negative record length")?;
        let end = used
            .checked_add(length)
            .filter(|end| *end <= rest.len())
            .ok_or("record runs past the end of the batch")?;
        let (raw, tail) = rest.split_at(end);
        let mut body = Cursor { rest: &raw[used..] };
        body.bytes(1)?; // attributes
        let timestamp_delta = body.varint()?;
        let offset_delta = body.varint()?;
        let key_length = body.varint()?;
        let key = body.bytes(key_length)?;
        let value_length = body.varint()?;
        body.bytes(value_length)?;
        views.push(RecordView {
            raw,
            offset_delta,
            timestamp_delta,
            key,
            value_is_null: value_length < 0,
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return Err("bytes after the last record of the batch");
    }
    Ok(views)
}

/// Decompresses a stored batch body with its codec (0 = none).
pub(crate) fn decompress(codec: i16, body: &[u8]) -> Result<Bytes, &'static str> {
    let mut input = Bytes::copy_from_slice(body);
    let take = |buf: &mut Bytes| Ok(buf.clone());
    let result = match codec {
        0 => return Ok(input),
        1 => Gzip::decompress(&mut input, take),
        2 => Snappy::decompress(&mut input, take),
        3 => Lz4::decompress(&mut input, take),
        4 => Zstd::decompress(&mut input, take),
        _ => return Err("unknown compression codec"),
    };
    result.map_err(|_| "stored batch does not decompress")
}

/// Compresses a records body with `codec` (0 = none), in Kafka's framing.
pub(crate) fn compress(codec: i16, records: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = BytesMut::new();
    let fill = |buf: &mut BytesMut| {
        buf.extend_from_slice(records);
        Ok(())
    };
    let result = match codec {
        0 => return Ok(records.to_vec()),
        1 => Gzip::compress(&mut out, fill),
        2 => Snappy::compress(&mut out, fill),
        3 => Lz4::compress(&mut out, fill),
        4 => Zstd::compress(&mut out, fill),
        _ => return Err("unknown compression codec"),
    };
    result.map_err(|_| "records do not compress")?;
    Ok(out.to_vec())
}

/// Encodes one record (for tests and the offsets log's own records).
#[cfg(test)]
pub(crate) fn encode_record(
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = vec![0u8];
    write_varint(&mut body, 0);
    write_varint(&mut body, offset_delta);
    for field in [key, value] {
        match field {
            Some(bytes) => {
                write_varint(&mut body, bytes.len() as i64);
                body.extend_from_slice(bytes);
            }
            None => write_varint(&mut body, -1),
        }
    }
    write_varint(&mut body, 0); // no headers
    let mut record = Vec::with_capacity(body.len() + 5);
    write_varint(&mut record, body.len() as i64);
    record.extend_from_slice(&body);
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::test_support::encode_batch;
    use crate::log::batch::{BATCH_HEADER_BYTES, parse_header};
    use kafka_protocol::records::Compression;

    #[test]
    fn walks_what_the_codec_encodes_for_every_compression() {
        for (codec, compression) in [
            (0, Compression::None),
            (1, Compression::Gzip),
            (2, Compression::Snappy),
            (3, Compression::Lz4),
            (4, Compression::Zstd),
        ] {
            let batch = encode_batch(5, 10, 1_000, compression);
            let header = parse_header(&batch, 0).unwrap();
            let body = decompress(codec, &batch[BATCH_HEADER_BYTES..]).unwrap();
            let records = walk(&body, header.record_count).unwrap();
            assert_eq!(records.len(), 5);
            let deltas: Vec<i64> = records.iter().map(|r| r.offset_delta).collect();
            assert_eq!(deltas, vec![0, 1, 2, 3, 4]);
            assert!(records.iter().all(|r| r.key.is_none() && !r.value_is_null));
            let again = compress(codec, &body).unwrap();
            assert_eq!(decompress(codec, &again).unwrap(), body, "codec {codec}");
        }
    }

    #[test]
    fn keys_tombstones_and_bad_bytes() {
        let mut body = encode_record(0, Some(b"k1"), Some(b"v"));
        body.extend(encode_record(3, Some(b"k2"), None));
        let records = walk(&body, 2).unwrap();
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert!(records[1].value_is_null && records[1].offset_delta == 3);
        assert!(walk(&body, 3).is_err(), "fewer records than counted");
        assert!(walk(&body, 1).is_err(), "bytes left over");
        assert!(walk(&body[..body.len() - 1], 2).is_err(), "cut short");
        let mut varint = Vec::new();
        for value in [0i64, -1, 1, 63, -64, 64, i64::MAX, i64::MIN] {
            varint.clear();
            write_varint(&mut varint, value);
            assert_eq!(read_varint(&varint), Some((value, varint.len())));
        }
    }
}
