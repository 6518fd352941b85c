#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets (no dependencies).

corpus/request/: Kafka request frames as `dispatch` takes them (header +
body, no 4-byte size prefix): ApiVersions v3, Metadata v12, CreateTopics v7,
Produce v9 (real v2 record batches, plain and gzip), Fetch v12, ListOffsets v7,
mostly against topic "fuzz" (which the `request` target creates, 2 partitions).
corpus/batch/: the record sets alone.

Usage: python3 gen_corpus.py [FUZZ_DIR]
"""

import gzip
import hashlib
import os
import struct
import sys

# --- CRC-32C (Castagnoli), reflected table ---------------------------------
_T = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --- primitives --------------------------------------------------------------
def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)
def boolean(v): return b"\x01" if v else b"\x00"


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v):  # zigzag
    return uvarint((v << 1) ^ (v >> 63))


def compact_str(s):
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def compact_bytes(b):
    if b is None:
        return uvarint(0)
    return uvarint(len(b) + 1) + b


def compact_array(items):
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(items)


TAGS = uvarint(0)


def header_v2(key, version, corr, client_id="fuzz-seed"):
    cid = client_id.encode()
    return i16(key) + i16(version) + i32(corr) + i16(len(cid)) + cid + TAGS


# --- record batch v2 ---------------------------------------------------------
def record(offset_delta, ts_delta, key, value, headers=()):
    body = i8(0) + varint(ts_delta) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hkb = hk.encode()
        body += varint(len(hkb)) + hkb
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + body


def record_batch(recs, base_ts=1_700_000_000_000, codec=0, attributes_extra=0,
                 producer_id=-1, producer_epoch=-1, base_sequence=-1):
    """recs: list of (key, value, headers). One record per offset delta."""
    encoded = b"".join(
        record(i, i * 7, k, v, h) for i, (k, v, h) in enumerate(recs))
    if codec == 1:
        encoded = gzip.compress(encoded, mtime=0)
    last_delta = len(recs) - 1
    attributes = codec | attributes_extra
    after_crc = (i16(attributes) + i32(last_delta) + i64(base_ts)
                 + i64(base_ts + last_delta * 7) + i64(producer_id)
                 + i16(producer_epoch) + i32(base_sequence) + i32(len(recs))
                 + encoded)
    crc = crc32c(after_crc)
    # batchLength counts from partitionLeaderEpoch on.
    rest = i32(-1) + i8(2) + struct.pack(">I", crc) + after_crc
    return i64(0) + i32(len(rest)) + rest


BATCHES = {
    "one": record_batch([(None, b"hello", ())]),
    "keyed3": record_batch([
        (b"k1", b"v1", ()),
        (b"k2", b"value two", (("h", b"x"),)),
        (b"k3", None, (("trace", b"abc"), ("n", None))),
    ]),
    "gzip": record_batch([(b"a", b"x" * 40, ()), (b"b", b"y" * 40, ())], codec=1),
    "idempotent": record_batch([(None, b"p0", ()), (None, b"p1", ())],
                               producer_id=1000, producer_epoch=0, base_sequence=0),
    "logappend": record_batch([(None, b"lat", ())], attributes_extra=1 << 3),
}
BATCHES["two_batches"] = BATCHES["one"] + BATCHES["keyed3"]


# --- requests ----------------------------------------------------------------
def api_versions_v3(corr):
    return header_v2(18, 3, corr) + compact_str("sluice-fuzz") + compact_str("1.0") + TAGS


def metadata_v12(corr, topics, auto_create=True):
    body = compact_array(None if topics is None else [
        bytes(16) + compact_str(t) + TAGS for t in topics])
    body += boolean(auto_create) + boolean(False) + TAGS
    return header_v2(3, 12, corr) + body


def create_topics_v7(corr, name, partitions=3, validate_only=False, configs=()):
    topic = (compact_str(name) + i32(partitions) + i16(1) + compact_array([])
             + compact_array([compact_str(k) + compact_str(v) + TAGS for k, v in configs])
             + TAGS)
    body = compact_array([topic]) + i32(30000) + boolean(validate_only) + TAGS
    return header_v2(19, 7, corr) + body


def produce_v9(corr, topic, parts, acks=1):
    """parts: list of (partition, record_set)."""
    pdata = [i32(p) + compact_bytes(rs) + TAGS for p, rs in parts]
    body = (compact_str(None) + i16(acks) + i32(30000)
            + compact_array([compact_str(topic) + compact_array(pdata) + TAGS]) + TAGS)
    return header_v2(0, 9, corr) + body


def fetch_v12(corr, topic, parts, max_wait_ms=0, isolation=0):
    """parts: list of (partition, fetch_offset)."""
    pdata = [i32(p) + i32(-1) + i64(off) + i32(-1) + i64(-1) + i32(1 << 20) + TAGS
             for p, off in parts]
    body = (i32(-1) + i32(max_wait_ms) + i32(1) + i32(50 << 20) + i8(isolation)
            + i32(0) + i32(-1)
            + compact_array([compact_str(topic) + compact_array(pdata) + TAGS])
            + compact_array([]) + compact_str("") + TAGS)
    return header_v2(1, 12, corr) + body


def list_offsets_v7(corr, topic, parts, isolation=0):
    """parts: list of (partition, timestamp); -1 latest, -2 earliest, -3 max ts."""
    pdata = [i32(p) + i32(-1) + i64(ts) + TAGS for p, ts in parts]
    body = (i32(-1) + i8(isolation)
            + compact_array([compact_str(topic) + compact_array(pdata) + TAGS]) + TAGS)
    return header_v2(2, 7, corr) + body


def requests():
    b = BATCHES
    return {
        "api_versions_v3": api_versions_v3(1),
        "metadata_v12_all": metadata_v12(2, None),
        "metadata_v12_fuzz": metadata_v12(3, ["fuzz"]),
        "metadata_v12_autocreate": metadata_v12(4, ["auto-new"], auto_create=True),
        "create_topics_v7": create_topics_v7(5, "created", partitions=3),
        "create_topics_v7_validate": create_topics_v7(
            6, "cfg", partitions=1, validate_only=True,
            configs=[("retention.ms", "60000"), ("message.timestamp.type", "LogAppendTime")]),
        "produce_v9_one": produce_v9(7, "fuzz", [(0, b["one"])]),
        "produce_v9_keyed": produce_v9(8, "fuzz", [(1, b["keyed3"])]),
        "produce_v9_gzip": produce_v9(9, "fuzz", [(0, b["gzip"])]),
        "produce_v9_two_parts": produce_v9(10, "fuzz", [(0, b["two_batches"]), (1, b["one"])]),
        "produce_v9_idempotent": produce_v9(11, "fuzz", [(0, b["idempotent"])], acks=-1),
        "produce_v9_acks0": produce_v9(12, "fuzz", [(1, b["one"])], acks=0),
        "fetch_v12_p0": fetch_v12(13, "fuzz", [(0, 0)]),
        "fetch_v12_both": fetch_v12(14, "fuzz", [(0, 1), (1, 0)], isolation=1),
        "fetch_v12_out_of_range": fetch_v12(15, "fuzz", [(0, 1 << 40)]),
        "list_offsets_v7": list_offsets_v7(16, "fuzz", [(0, -1), (1, -2)]),
        "list_offsets_v7_ts": list_offsets_v7(17, "fuzz", [(0, 1_700_000_000_003), (1, -3)]),
    }


def write_dir(path, items):
    os.makedirs(path, exist_ok=True)
    for name, data in items.items():
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(path, f"seed-{name}-{digest}"), "wb") as f:
            f.write(data)


def main():
    fuzz_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    write_dir(os.path.join(fuzz_dir, "corpus", "request"), requests())
    write_dir(os.path.join(fuzz_dir, "corpus", "batch"), BATCHES)


if __name__ == "__main__":
    main()
