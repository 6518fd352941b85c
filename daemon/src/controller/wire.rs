//! Our own byte format for the Raft messages voters exchange. raft 0.7 links
//! protobuf 2.28, whose parser overflows the stack on crafted unknown fields
//! (RUSTSEC-2024-0437), so bytes from the network never reach protobuf: this
//! codec reads only the fields raft-rs uses, checks every length against its
//! limit and against the bytes left before it allocates, and refuses trailing
//! bytes (plan §1.1).
//!
//! Layout (big-endian): `[u8 version][u8 msg_type][u64 to][u64 from][u64 term]
//! [u64 log_term][u64 index][u64 commit][u64 commit_term][u64 request_snapshot]
//! [u8 reject][u64 reject_hint][i64 priority][u16 len, context][u32 count,
//! entries][u8 has_snapshot, snapshot]`. An entry is `[u8 type][u64 term]
//! [u64 index][u32 len, data][u16 len, context]`; a snapshot is `[u64 index]
//! [u64 term][conf state: four u8-counted u64 lists, u8 auto_leave][u32 len,
//! data]`. Left out on purpose: `deprecated_priority` (raft reads it only
//! when `priority` is 0, and we set no priorities) and `Entry.sync_log`
//! (deprecated, unread).

use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use thiserror::Error;

/// Bumped when the layout changes; a reader refuses other versions.
pub const WIRE_VERSION: u8 = 1;
/// An entry holds one metadata batch; leave room above the batch limit.
pub const ENTRY_DATA_BYTES_MAX: usize = 1024 * 1024;
/// Contexts carry read-index tokens at most; we send none today.
pub const CONTEXT_BYTES_MAX: usize = 4096;
/// raft sends at most `max_size_per_msg` (1 MiB) of entries per message, but
/// always at least one entry; this bounds the count whatever the sizes.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 16 * 1024;
/// A snapshot is the encoded metadata image.
pub const SNAPSHOT_DATA_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Voters are 1, 3 or 5; learners are not used. Bounds each id list.
pub const CONF_IDS_MAX: usize = 16;
/// Nothing bigger is ever decoded: a snapshot plus its header.
pub const MESSAGE_BYTES_MAX: usize = SNAPSHOT_DATA_BYTES_MAX + 64 * 1024;

const MESSAGE_HEADER_BYTES: usize = 1 + 1 + 8 * 8 + 1 + 8 + 8;
/// The smallest encoded entry: type, term, index and two empty lengths.
const ENTRY_BYTES_MIN: usize = 1 + 8 + 8 + 4 + 2;

const _: () = assert!(ENTRY_DATA_BYTES_MAX >= super::records::BATCH_BYTES_MAX);
const _: () = assert!(CONTEXT_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(CONF_IDS_MAX <= u8::MAX as usize);
const _: () = assert!(ENTRIES_PER_MESSAGE_MAX * ENTRY_BYTES_MIN < MESSAGE_BYTES_MAX);

/// Message types in the order of their protobuf numbers (eraftpb.proto).
const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// Bytes that are not a Raft message of ours, or a message too big to send.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("raft message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    #[error("raft wire version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("unknown raft message type {0}")]
    UnknownMessageType(u8),
    #[error("unknown raft entry type {0}")]
    UnknownEntryType(u8),
    #[error("{what} is {value}, not a boolean")]
    NotBoolean { what: &'static str, value: u8 },
    #[error("{what} is cut short: needs {needed} bytes, {left} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("{what} is {len} long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} bytes follow the raft message")]
    TrailingBytes(usize),
}

/// The message's bytes; refuses what `decode` would refuse.
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    let entries = message.get_entries();
    check_len("entries", entries.len(), ENTRIES_PER_MESSAGE_MAX)?;
    let mut out = Vec::with_capacity(MESSAGE_HEADER_BYTES + 64);
    out.push(WIRE_VERSION);
    out.push(message.get_msg_type() as u8);
    for value in [
        message.to,
        message.from,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.commit_term,
        message.request_snapshot,
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.push(u8::from(message.reject));
    out.extend_from_slice(&message.reject_hint.to_be_bytes());
    out.extend_from_slice(&message.priority.to_be_bytes());
    put_bytes16(
        &mut out,
        "message context",
        &message.context,
        CONTEXT_BYTES_MAX,
    )?;
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        encode_entry(&mut out, entry)?;
    }
    if message.has_snapshot() {
        out.push(1);
        encode_snapshot(&mut out, message.get_snapshot())?;
    } else {
        out.push(0);
    }
    check_len("raft message", out.len(), MESSAGE_BYTES_MAX).map_err(|_| {
        WireError::MessageTooLarge {
            len: out.len(),
            max: MESSAGE_BYTES_MAX,
        }
    })?;
    Ok(out)
}

/// Reads a message written by `encode`. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(WireError::MessageTooLarge {
            len: bytes.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    let mut reader = Reader { bytes };
    let version = reader.u8("wire version")?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            found: version,
            supported: WIRE_VERSION,
        });
    }
    let kind = reader.u8("message type")?;
    let msg_type = *MESSAGE_TYPES
        .get(usize::from(kind))
        .ok_or(WireError::UnknownMessageType(kind))?;
    let mut message = Message::default();
    message.set_msg_type(msg_type);
    message.to = reader.u64("to")?;
    message.from = reader.u64("from")?;
    message.term = reader.u64("term")?;
    message.log_term = reader.u64("log term")?;
    message.index = reader.u64("index")?;
    message.commit = reader.u64("commit")?;
    message.commit_term = reader.u64("commit term")?;
    message.request_snapshot = reader.u64("request snapshot")?;
    message.reject = reader.bool("reject")?;
    message.reject_hint = reader.u64("reject hint")?;
    message.priority = reader.u64("priority")? as i64;
    message.context = reader.bytes16("message context", CONTEXT_BYTES_MAX)?.into();
    let count = reader.u32("entry count")? as usize;
    check_len("entries", count, ENTRIES_PER_MESSAGE_MAX)?;
    reader.need("entries", count * ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(decode_entry(&mut reader)?);
    }
    message.set_entries(entries.into());
    if reader.bool("has snapshot")? {
        message.set_snapshot(decode_snapshot(&mut reader)?);
    }
    if !reader.bytes.is_empty() {
        return Err(WireError::TrailingBytes(reader.bytes.len()));
    }
    Ok(message)
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry) -> Result<(), WireError> {
    out.push(entry.get_entry_type() as u8);
    out.extend_from_slice(&entry.term.to_be_bytes());
    out.extend_from_slice(&entry.index.to_be_bytes());
    put_bytes32(out, "entry data", &entry.data, ENTRY_DATA_BYTES_MAX)?;
    put_bytes16(out, "entry context", &entry.context, CONTEXT_BYTES_MAX)
}

fn decode_entry(reader: &mut Reader<'_>) -> Result<Entry, WireError> {
    let kind = reader.u8("entry type")?;
    let entry_type = *ENTRY_TYPES
        .get(usize::from(kind))
        .ok_or(WireError::UnknownEntryType(kind))?;
    let mut entry = Entry::default();
    entry.set_entry_type(entry_type);
    entry.term = reader.u64("entry term")?;
    entry.index = reader.u64("entry index")?;
    entry.data = reader.bytes32("entry data", ENTRY_DATA_BYTES_MAX)?.into();
    entry.context = reader.bytes16("entry context", CONTEXT_BYTES_MAX)?.into();
    Ok(entry)
}

fn encode_snapshot(out: &mut Vec<u8>, snapshot: &Snapshot) -> Result<(), WireError> {
    let metadata = snapshot.get_metadata();
    out.extend_from_slice(&metadata.index.to_be_bytes());
    out.extend_from_slice(&metadata.term.to_be_bytes());
    let conf = metadata.get_conf_state();
    for (what, ids) in [
        ("voters", conf.get_voters()),
        ("learners", conf.get_learners()),
        ("outgoing voters", conf.get_voters_outgoing()),
        ("next learners", conf.get_learners_next()),
    ] {
        check_len(what, ids.len(), CONF_IDS_MAX)?;
        out.push(ids.len() as u8);
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out.push(u8::from(conf.auto_leave));
    put_bytes32(
        out,
        "snapshot data",
        &snapshot.data,
        SNAPSHOT_DATA_BYTES_MAX,
    )
}

fn decode_snapshot(reader: &mut Reader<'_>) -> Result<Snapshot, WireError> {
    let mut snapshot = Snapshot::default();
    let metadata = snapshot.mut_metadata();
    metadata.index = reader.u64("snapshot index")?;
    metadata.term = reader.u64("snapshot term")?;
    let mut conf = ConfState::default();
    conf.set_voters(reader.ids("voters")?);
    conf.set_learners(reader.ids("learners")?);
    conf.set_voters_outgoing(reader.ids("outgoing voters")?);
    conf.set_learners_next(reader.ids("next learners")?);
    conf.auto_leave = reader.bool("auto leave")?;
    metadata.set_conf_state(conf);
    snapshot.data = reader
        .bytes32("snapshot data", SNAPSHOT_DATA_BYTES_MAX)?
        .into();
    Ok(snapshot)
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooLong { what, len, max });
    }
    Ok(())
}

fn put_bytes16(
    out: &mut Vec<u8>,
    what: &'static str,
    value: &[u8],
    max: usize,
) -> Result<(), WireError> {
    check_len(what, value.len(), max)?;
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn put_bytes32(
    out: &mut Vec<u8>,
    what: &'static str,
    value: &[u8],
    max: usize,
) -> Result<(), WireError> {
    check_len(what, value.len(), max)?;
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Takes fields off the front of the input, never past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn need(&self, what: &'static str, needed: usize) -> Result<(), WireError> {
        if needed > self.bytes.len() {
            return Err(WireError::Truncated {
                what,
                needed,
                left: self.bytes.len(),
            });
        }
        Ok(())
    }

    fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], WireError> {
        self.need(what, len)?;
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(what, 1)?[0])
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(WireError::NotBoolean { what, value }),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(self.take(what, 2)?);
        Ok(u16::from_be_bytes(raw))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(what, 4)?);
        Ok(u32::from_be_bytes(raw))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(what, 8)?);
        Ok(u64::from_be_bytes(raw))
    }

    fn bytes16(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        let len = usize::from(self.u16(what)?);
        check_len(what, len, max)?;
        Ok(self.take(what, len)?.to_vec())
    }

    fn bytes32(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        let len = self.u32(what)? as usize;
        check_len(what, len, max)?;
        Ok(self.take(what, len)?.to_vec())
    }

    fn ids(&mut self, what: &'static str) -> Result<Vec<u64>, WireError> {
        let count = usize::from(self.u8(what)?);
        check_len(what, count, CONF_IDS_MAX)?;
        self.need(what, count * 8)?;
        (0..count).map(|_| self.u64(what)).collect()
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
