//! Counting a compressed batch's records without trusting its header, as
//! Kafka's log validator does before it appends. The records are
//! decompressed as a stream under a byte budget (a small batch may claim to
//! expand without limit) and walked record by record; they are never held
//! whole, except snappy's blocks, whose decompressed length is checked
//! against the budget before anything is allocated.

use std::io::{self, BufRead, BufReader, Read};

/// Most bytes a producer's batch may decompress to. Producers cap their
/// batches by uncompressed size (`batch.size`, 1 MB by default), so this is
/// far above any honest batch and far below what a decompression bomb asks.
pub(crate) const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Codec numbers of the batch attributes' low bits.
const CODEC_GZIP: i16 = 1;
const CODEC_SNAPPY: i16 = 2;
const CODEC_LZ4: i16 = 3;
const CODEC_ZSTD: i16 = 4;

/// snappy-java's stream framing, which Kafka's Java clients write: this
/// magic, two i32 versions, then blocks of (u32 length, raw snappy block).
/// Without it the whole payload is one raw snappy block (librdkafka).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

const READ_BUFFER_BYTES: usize = 64 * 1024;

const UNREADABLE: &str = "compressed records do not decompress";
const TOO_LARGE: &str = "compressed records decompress to more than the limit";

/// Number of records in `compressed` (a batch's records section) under
/// `codec`, reading at most `budget` decompressed bytes.
pub(crate) fn count_records(
    codec: i16,
    compressed: &[u8],
    budget: u64,
) -> Result<u64, &'static str> {
    match codec {
        CODEC_GZIP => count_stream(
            BufReader::with_capacity(
                READ_BUFFER_BYTES,
                flate2::read::MultiGzDecoder::new(compressed),
            ),
            budget,
        ),
        CODEC_SNAPPY => count_snappy(compressed, budget),
        CODEC_LZ4 => {
            let decoder = lz4::Decoder::new(compressed).map_err(|_| UNREADABLE)?;
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, decoder);
            let records = count_stream(&mut reader, budget)?;
            // The decoder ends a cut frame quietly; only `finish` tells.
            reader
                .into_inner()
                .finish()
                .1
                .map_err(|_| "lz4 frame ends before its end mark")?;
            Ok(records)
        }
        CODEC_ZSTD => count_stream(
            BufReader::with_capacity(
                READ_BUFFER_BYTES,
                zstd::stream::read::Decoder::with_buffer(compressed).map_err(|_| UNREADABLE)?,
            ),
            budget,
        ),
        _ => Err("unknown compression codec"),
    }
}

/// Walks length-prefixed records to the end of the decompressed stream.
fn count_stream(records: impl BufRead, budget: u64) -> Result<u64, &'static str> {
    // One byte past the budget tells "exactly the budget" from "more".
    let mut reader = records.take(budget + 1);
    let (mut records, mut consumed) = (0u64, 0u64);
    // Each pass consumes at least one byte, and at most budget + 1 are read.
    loop {
        if reader.fill_buf().map_err(|_| UNREADABLE)?.is_empty() {
            break;
        }
        let (length, used) = read_varint(&mut reader)?;
        let length = u64::try_from(length).map_err(|_| "negative record length")?;
        let skipped =
            io::copy(&mut (&mut reader).take(length), &mut io::sink()).map_err(|_| UNREADABLE)?;
        consumed += used + skipped;
        if consumed > budget {
            return Err(TOO_LARGE);
        }
        if skipped < length {
            return Err("record runs past the end of the decompressed records");
        }
        records += 1;
    }
    Ok(records)
}

/// A zigzag varint from a stream: value and bytes used.
fn read_varint(reader: &mut impl BufRead) -> Result<(i64, u64), &'static str> {
    let mut raw: u64 = 0;
    for i in 0..10u64 {
        let mut byte = [0u8; 1];
        reader
            .read_exact(&mut byte)
            .map_err(|_| "truncated record length")?;
        raw |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    Err("record length varint is too long")
}

fn count_snappy(compressed: &[u8], budget: u64) -> Result<u64, &'static str> {
    let mut records = Vec::new();
    if compressed.len() >= XERIAL_HEADER_BYTES && compressed.starts_with(XERIAL_MAGIC) {
        let mut rest = &compressed[XERIAL_HEADER_BYTES..];
        while !rest.is_empty() {
            let length = rest
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("truncated snappy block length")?;
            let block = rest
                .get(4..4 + length)
                .ok_or("snappy block runs past the end of the batch")?;
            decompress_snappy_block(block, &mut records, budget)?;
            rest = &rest[4 + length..];
        }
    } else {
        decompress_snappy_block(compressed, &mut records, budget)?;
    }
    count_stream(records.as_slice(), budget)
}

fn decompress_snappy_block(
    block: &[u8],
    out: &mut Vec<u8>,
    budget: u64,
) -> Result<(), &'static str> {
    let length = snap::raw::decompress_len(block).map_err(|_| UNREADABLE)?;
    if (out.len() + length) as u64 > budget {
        return Err(TOO_LARGE);
    }
    let start = out.len();
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| UNREADABLE)?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::BATCH_HEADER_BYTES;
    use crate::log::batch::test_support::encode_batch;
    use kafka_protocol::records::Compression;

    const CODECS: [(Compression, i16); 4] = [
        (Compression::Gzip, CODEC_GZIP),
        (Compression::Snappy, CODEC_SNAPPY),
        (Compression::Lz4, CODEC_LZ4),
        (Compression::Zstd, CODEC_ZSTD),
    ];

    #[test]
    fn every_codec_counts_what_it_holds() {
        for (compression, codec) in CODECS {
            let batch = encode_batch(7, 300, 1000, compression);
            let records = &batch[BATCH_HEADER_BYTES..];
            assert_eq!(
                count_records(codec, records, DECOMPRESSED_BATCH_BYTES_MAX),
                Ok(7),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn the_budget_bounds_what_is_decompressed() {
        for (compression, codec) in CODECS {
            // Seven records of ~300 bytes: over 2,000 bytes decompressed.
            let batch = encode_batch(7, 300, 1000, compression);
            let records = &batch[BATCH_HEADER_BYTES..];
            assert_eq!(
                count_records(codec, records, 1024),
                Err("compressed records decompress to more than the limit"),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn garbage_and_cut_payloads_are_refused() {
        for (compression, codec) in CODECS {
            let batch = encode_batch(7, 300, 1000, compression);
            let records = &batch[BATCH_HEADER_BYTES..];
            let cut = &records[..records.len() / 2];
            let counted = count_records(codec, cut, DECOMPRESSED_BATCH_BYTES_MAX);
            assert!(counted.is_err(), "{compression:?} cut in half: {counted:?}");
            let garbage = vec![0xA7u8; 200];
            assert!(
                count_records(codec, &garbage, DECOMPRESSED_BATCH_BYTES_MAX).is_err(),
                "{compression:?} garbage"
            );
        }
    }

    #[test]
    fn a_record_cut_short_inside_the_stream_is_refused() {
        // Raw snappy of: a record length of 10, then three bytes.
        let mut body = Vec::new();
        body.push(20u8); // zigzag 10
        body.extend_from_slice(b"abc");
        let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        assert_eq!(
            count_records(CODEC_SNAPPY, &compressed, DECOMPRESSED_BATCH_BYTES_MAX),
            Err("record runs past the end of the decompressed records")
        );
    }
}
