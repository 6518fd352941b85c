//! The controller's durable Raft log (plan §1.4 "Durable log", "Snapshots
//! bound the log", "Restart"): raft-rs reads it through `raft::Storage` from
//! an in-memory copy, and `Quorum::ready` writes it through the methods here
//! before any message that depends on it leaves. All file I/O goes through
//! [`MetaDir`], so a test can fail any write or sync and then keep only what
//! a power loss would.
//!
//! ```text
//! hard-state            := "SLHS" version:u8 crc32c:u32 body
//!   body                := term:u64 vote:u64 commit:u64 voter_count:u8 voter:u64 × count
//! <first:020>.raft      := header frame*
//!   header              := "SLRL" version:u8 first_index:u64 prev_term:u64 crc32c:u32
//!   frame               := len:u32 crc32c:u32 term:u64 index:u64 type:u8
//!                          context_len:u16 context data
//! <index:020>-<term:020>.snapshot := "SLRS" version:u8 crc32c:u32 body
//!   body                := index:u64 term:u64 voter_count:u8 voter:u64 × count
//!                          image_len:u32 image (snapshot::encode_image, own CRC)
//! ```
//! Big-endian. A frame's `len` counts the bytes after its CRC, and the CRC
//! covers them; the header's CRC covers the 21 bytes before it; the other
//! files' CRC covers their body. `prev_term` is the term of the entry before
//! the segment's first, so `term(first_index - 1)` survives compaction.
//! `hard-state` and snapshots are replaced whole (tmp, fsync, rename, fsync
//! of the directory); segments are appended to and fsynced.
//!
//! Crash cases. Entries are fsynced before the hard state that commits them
//! is written, so on disk `commit <= last index` always; open checks it. A
//! torn or CRC-bad tail of the last segment (a write the crash interrupted)
//! is cut off, unless that would cut a committed entry; anything wrong
//! anywhere else stops the open with the file and byte named. A snapshot is
//! durable before the segments it replaces are deleted, so open may find
//! segments the snapshot supersedes: if they do not hold the snapshot's
//! (index, term), an install was interrupted and they are discarded. Before
//! it returns, open fsyncs what it keeps: bytes that a crashed process left
//! in the page cache are not durable until then, and raft must not vouch for
//! them.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use thiserror::Error;

use super::error::SnapshotError;
use super::image::MetadataImage;
use super::snapshot::{SNAPSHOT_BYTES_MAX, decode_image};
use super::wire::{CONTEXT_BYTES_MAX, ENTRY_DATA_BYTES_MAX};

pub const HARD_STATE_FILE: &str = "hard-state";
const SEGMENT_SUFFIX: &str = ".raft";
const SNAPSHOT_SUFFIX: &str = ".snapshot";
const TMP_SUFFIX: &str = ".tmp";

const HARD_STATE_MAGIC: &[u8; 4] = b"SLHS";
const SEGMENT_MAGIC: &[u8; 4] = b"SLRL";
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLRS";
const FORMAT_VERSION: u8 = 1;
/// magic, version, CRC.
const FILE_HEADER_BYTES: usize = 4 + 1 + 4;
/// magic, version, first index, previous term, CRC.
pub const SEGMENT_HEADER_BYTES: usize = 4 + 1 + 8 + 8 + 4;
/// len, CRC.
const FRAME_PREFIX_BYTES: usize = 4 + 4;
/// term, index, type, context length: what `len` counts besides the bytes.
const FRAME_FIXED_BYTES: usize = 8 + 8 + 1 + 2;
/// The largest frame's `len`: anything above is corruption, not an entry.
pub const FRAME_LEN_MAX: usize = FRAME_FIXED_BYTES + CONTEXT_BYTES_MAX + ENTRY_DATA_BYTES_MAX;
/// The spec allows 1 to 7 voters; a conf state is stored with a u8 count.
const VOTERS_MAX: usize = 16;

const _: () = assert!(FRAME_LEN_MAX <= u32::MAX as usize);
const _: () = assert!(CONTEXT_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(SNAPSHOT_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(super::quorum::VOTERS_MAX <= VOTERS_MAX);

/// Raft entry types by their stored byte, as wire.rs numbers them.
const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// The few operations the store needs from its directory, by file name.
/// Not `log::Storage`: that one works on open `File`s, while the
/// simulation needs a whole directory in memory (it runs hundreds of
/// seeds, each fsyncing on every Ready), and the store also renames,
/// removes and syncs the directory. Every error is final: the store returns
/// it and the caller stops the process (fail-stop, DESIGN §2); nothing here
/// or above retries, least of all an fsync.
pub trait MetaDir: Send + Sync + fmt::Debug {
    /// The directory, for error messages.
    fn path(&self) -> &Path;
    /// The names of the files in it.
    fn list(&self) -> io::Result<Vec<String>>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Writes all of `bytes` at `offset`, creating the file if absent.
    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()>;
    fn set_len(&self, name: &str, len: u64) -> io::Result<()>;
    /// fdatasync: the file's bytes and length are durable when Ok.
    fn sync(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// fsync of the directory: creations, renames and removals are durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// The real directory. Files stay open once written so that a writeback
/// error is reported to the descriptor that wrote the pages.
#[derive(Debug)]
pub struct OsDir {
    path: PathBuf,
    open: Mutex<HashMap<String, File>>,
}

impl OsDir {
    /// Creates the directory if absent (and makes its entry durable).
    pub fn create(path: &Path) -> io::Result<OsDir> {
        std::fs::create_dir_all(path)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(OsDir {
            path: path.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn with_file<T>(&self, name: &str, f: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !open.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.path.join(name))?;
            open.insert(name.to_string(), file);
        }
        match open.get(name) {
            Some(file) => f(file),
            None => Err(io::Error::other("file handle vanished")),
        }
    }

    fn forget(&self, name: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

impl MetaDir for OsDir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path.join(name))
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.with_file(name, |file| file.write_all_at(bytes, offset))
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.with_file(name, |file| file.set_len(len))
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.with_file(name, |file| file.sync_data())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))?;
        self.forget(to);
        // The handle follows the inode to its new name.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = open.remove(from) {
            open.insert(to.to_string(), file);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.forget(name);
        std::fs::remove_file(self.path.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// When to snapshot and how the log is cut (plan §1.4); the simulation
/// shrinks them so that snapshots and compaction happen in a short run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// A segment at least this long takes no more entries.
    pub segment_bytes: u64,
    /// Snapshot once this many entries were applied since the last one...
    pub snapshot_entries: u64,
    /// ...or this many bytes of log were written since.
    pub snapshot_log_bytes: u64,
    /// Entries kept below a snapshot for followers a little behind.
    pub tail_entries: u64,
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits {
            segment_bytes: 8 * 1024 * 1024,
            snapshot_entries: 8192,
            snapshot_log_bytes: 8 * 1024 * 1024,
            tail_entries: 1024,
        }
    }
}

/// Whether a snapshot at `applied` is due (plan §1.4).
pub fn snapshot_due(
    limits: &StoreLimits,
    applied: u64,
    snapshot_index: u64,
    log_bytes_since: u64,
) -> bool {
    applied > snapshot_index
        && (applied - snapshot_index >= limits.snapshot_entries
            || log_bytes_since >= limits.snapshot_log_bytes)
}

/// A store error. Every one that comes from a write or sync means the disk
/// may now hold less than memory claims: the caller ends the process
/// (`failstop::storage_failure`) and restarts from what is really there.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogStoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: commit index {commit} but the log ends at {last}")]
    CommitBeyondLog {
        path: PathBuf,
        commit: u64,
        last: u64,
    },
    #[error("{path}: Raft files present but no hard-state file")]
    MissingHardState { path: PathBuf },
    #[error("entry {index}: {what} of {len} bytes, at most {max}")]
    EntryTooLarge {
        index: u64,
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("entries from {first} appended to a log holding [{first_index}, {last_index}]")]
    NotContiguous {
        first: u64,
        first_index: u64,
        last_index: u64,
    },
    #[error("snapshot at index {index}: {reason}")]
    BadSnapshot { index: u64, reason: String },
    #[error("snapshot image: {0}")]
    Image(#[from] SnapshotError),
}

/// One segment file as loaded: where each of its frames starts.
#[derive(Debug, Clone)]
struct Segment {
    first_index: u64,
    name: String,
    len: u64,
    /// Byte offset of the frame of entry `first_index + i`.
    offsets: Vec<u64>,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first_index + self.offsets.len() as u64 - 1)
    }
}

/// The durable Raft log of one controller voter; see the module docs. Any
/// error from a mutating method is fail-stop (see [`LogStoreError`]): the
/// in-memory copy may be ahead of the disk, so the store must not be used
/// again.
pub struct LogStore {
    dir: Arc<dyn MetaDir>,
    limits: StoreLimits,
    hard_state: HardState,
    /// What `hard-state` holds on disk.
    persisted_hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot (metadata and image bytes); index 0 if none.
    snapshot: Snapshot,
    /// Index of `entries[0]`, or of the next entry when there are none.
    first_index: u64,
    /// Term of entry `first_index - 1`.
    prev_term: u64,
    entries: Vec<Entry>,
    segments: Vec<Segment>,
    /// The last segment has writes not yet fsynced.
    segment_dirty: bool,
    /// A segment was created since the directory's last fsync.
    dir_dirty: bool,
    log_bytes_since_snapshot: u64,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir.path())
            .field("hard_state", &self.hard_state)
            .field("snapshot_index", &self.snapshot_index())
            .field("first_index", &self.first_index)
            .field("last_index", &self.last_index_inner())
            .finish()
    }
}

fn io_error(
    dir: &dyn MetaDir,
    op: &'static str,
    name: &str,
) -> impl FnOnce(io::Error) -> LogStoreError {
    let path = dir.path().join(name);
    move |source| LogStoreError::Io { op, path, source }
}

fn corrupt(dir: &dyn MetaDir, name: &str, offset: u64, reason: impl Into<String>) -> LogStoreError {
    LogStoreError::Corrupt {
        path: dir.path().join(name),
        offset,
        reason: reason.into(),
    }
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

fn snapshot_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:020}{SNAPSHOT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20).then_some(())?;
    digits.parse().ok()
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    (index.len() == 20 && term.len() == 20).then_some(())?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// Big-endian reads over a file's bytes that say where they failed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut array = [0; 8];
        array.copy_from_slice(b);
        Some(u64::from_be_bytes(array))
    }
}

fn encode_voters(out: &mut Vec<u8>, voters: &[u64]) {
    assert!(voters.len() <= VOTERS_MAX, "voters are checked by Quorum");
    out.push(voters.len() as u8);
    for voter in voters {
        out.extend_from_slice(&voter.to_be_bytes());
    }
}

fn decode_voters(cursor: &mut Cursor<'_>) -> Option<Vec<u64>> {
    let count = usize::from(cursor.u8()?);
    if count > VOTERS_MAX {
        return None;
    }
    (0..count).map(|_| cursor.u64()).collect()
}

/// `magic version crc body`, the CRC patched over the body.
fn seal(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_BYTES + body.len());
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a sealed file, or why it is not one.
fn unseal<'a>(magic: &[u8; 4], bytes: &'a [u8]) -> Result<&'a [u8], &'static str> {
    if bytes.len() < FILE_HEADER_BYTES || &bytes[..4] != magic {
        return Err("bad magic or short file");
    }
    if bytes[4] != FORMAT_VERSION {
        return Err("unsupported format version");
    }
    let stored = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let body = &bytes[FILE_HEADER_BYTES..];
    match crc32c::crc32c(body) == stored {
        true => Ok(body),
        false => Err("CRC-32C mismatch"),
    }
}

fn encode_hard_state(hard_state: &HardState, voters: &[u64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 * 3 + 1 + 8 * voters.len());
    body.extend_from_slice(&hard_state.term.to_be_bytes());
    body.extend_from_slice(&hard_state.vote.to_be_bytes());
    body.extend_from_slice(&hard_state.commit.to_be_bytes());
    encode_voters(&mut body, voters);
    seal(HARD_STATE_MAGIC, &body)
}

fn decode_hard_state(bytes: &[u8]) -> Result<(HardState, Vec<u64>), &'static str> {
    let body = unseal(HARD_STATE_MAGIC, bytes)?;
    let mut cursor = Cursor { bytes: body, at: 0 };
    let parsed = (|| {
        let hard_state = HardState {
            term: cursor.u64()?,
            vote: cursor.u64()?,
            commit: cursor.u64()?,
            ..HardState::default()
        };
        let voters = decode_voters(&mut cursor)?;
        Some((hard_state, voters))
    })();
    match parsed {
        Some(parsed) if cursor.at == body.len() => Ok(parsed),
        _ => Err("bad hard-state body"),
    }
}

fn encode_snapshot_file(snapshot: &Snapshot) -> Vec<u8> {
    let metadata = snapshot.get_metadata();
    let mut body = Vec::with_capacity(64 + snapshot.data.len());
    body.extend_from_slice(&metadata.index.to_be_bytes());
    body.extend_from_slice(&metadata.term.to_be_bytes());
    encode_voters(&mut body, &metadata.get_conf_state().voters);
    body.extend_from_slice(&(snapshot.data.len() as u32).to_be_bytes());
    body.extend_from_slice(&snapshot.data);
    seal(SNAPSHOT_MAGIC, &body)
}

fn decode_snapshot_file(bytes: &[u8]) -> Result<Snapshot, &'static str> {
    let body = unseal(SNAPSHOT_MAGIC, bytes)?;
    let mut cursor = Cursor { bytes: body, at: 0 };
    let parsed = (|| {
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = cursor.u64()?;
        metadata.term = cursor.u64()?;
        metadata.mut_conf_state().voters = decode_voters(&mut cursor)?;
        let len = cursor.u32()? as usize;
        if len > SNAPSHOT_BYTES_MAX {
            return None;
        }
        snapshot.data = Bytes::copy_from_slice(cursor.take(len)?);
        Some(snapshot)
    })();
    match parsed {
        Some(snapshot) if cursor.at == body.len() => Ok(snapshot),
        _ => Err("bad snapshot body"),
    }
}

fn encode_segment_header(first_index: u64, prev_term: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&first_index.to_be_bytes());
    out.extend_from_slice(&prev_term.to_be_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(out.len(), SEGMENT_HEADER_BYTES);
    out
}

/// (first index, previous term) from a segment's header.
fn decode_segment_header(bytes: &[u8]) -> Option<(u64, u64)> {
    let header = bytes.get(..SEGMENT_HEADER_BYTES)?;
    let body = &header[..SEGMENT_HEADER_BYTES - 4];
    let mut cursor = Cursor {
        bytes: header,
        at: 0,
    };
    if cursor.take(4)? != SEGMENT_MAGIC || cursor.u8()? != FORMAT_VERSION {
        return None;
    }
    let first_index = cursor.u64()?;
    let prev_term = cursor.u64()?;
    (cursor.u32()? == crc32c::crc32c(body)).then_some((first_index, prev_term))
}

/// Appends the frame of `entry` to `out`.
fn encode_frame(out: &mut Vec<u8>, entry: &Entry) -> Result<(), LogStoreError> {
    let too_large = |what, len, max| LogStoreError::EntryTooLarge {
        index: entry.index,
        what,
        len,
        max,
    };
    if entry.data.len() > ENTRY_DATA_BYTES_MAX {
        return Err(too_large("data", entry.data.len(), ENTRY_DATA_BYTES_MAX));
    }
    if entry.context.len() > CONTEXT_BYTES_MAX {
        return Err(too_large("context", entry.context.len(), CONTEXT_BYTES_MAX));
    }
    let len = FRAME_FIXED_BYTES + entry.context.len() + entry.data.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&entry.term.to_be_bytes());
    out.extend_from_slice(&entry.index.to_be_bytes());
    out.push(entry.get_entry_type() as u8);
    out.extend_from_slice(&(entry.context.len() as u16).to_be_bytes());
    out.extend_from_slice(&entry.context);
    out.extend_from_slice(&entry.data);
    let crc = crc32c::crc32c(&out[start + FRAME_PREFIX_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(out.len() - start, FRAME_PREFIX_BYTES + len);
    Ok(())
}

fn frame_bytes(entry: &Entry) -> u64 {
    (FRAME_PREFIX_BYTES + FRAME_FIXED_BYTES + entry.context.len() + entry.data.len()) as u64
}

/// The entry framed at the start of `bytes` and the frame's length, or why
/// there is none (a torn tail looks exactly like this).
fn decode_frame(bytes: &[u8]) -> Result<(Entry, usize), &'static str> {
    let mut cursor = Cursor { bytes, at: 0 };
    let len = cursor.u32().ok_or("truncated frame length")? as usize;
    let stored = cursor.u32().ok_or("truncated frame CRC")?;
    if !(FRAME_FIXED_BYTES..=FRAME_LEN_MAX).contains(&len) {
        return Err("frame length out of bounds");
    }
    let body = cursor.take(len).ok_or("truncated frame")?;
    if crc32c::crc32c(body) != stored {
        return Err("frame CRC-32C mismatch");
    }
    let mut cursor = Cursor { bytes: body, at: 0 };
    let mut entry = Entry {
        term: cursor.u64().ok_or("frame term")?,
        index: cursor.u64().ok_or("frame index")?,
        ..Entry::default()
    };
    let kind = cursor.u8().ok_or("frame type")?;
    let entry_type = *ENTRY_TYPES
        .get(usize::from(kind))
        .ok_or("unknown entry type")?;
    entry.set_entry_type(entry_type);
    let context_len = usize::from(cursor.u16().ok_or("frame context length")?);
    if context_len > CONTEXT_BYTES_MAX {
        return Err("context too large");
    }
    entry.context = Bytes::copy_from_slice(cursor.take(context_len).ok_or("frame context")?);
    let data = &body[cursor.at..];
    if data.len() > ENTRY_DATA_BYTES_MAX {
        return Err("data too large");
    }
    entry.data = Bytes::copy_from_slice(data);
    Ok((entry, FRAME_PREFIX_BYTES + len))
}

/// A segment read from disk: its entries, where they sit, and whether (and
/// where and why) its frames stopped before the end of the file.
struct LoadedSegment {
    segment: Segment,
    prev_term: u64,
    entries: Vec<Entry>,
    bad_tail: Option<(u64, &'static str)>,
}

/// Reads one segment. A bad header is reported as a bad tail at byte 0.
fn load_segment(name: &str, first_index: u64, bytes: &[u8]) -> LoadedSegment {
    let mut loaded = LoadedSegment {
        segment: Segment {
            first_index,
            name: name.to_string(),
            len: 0,
            offsets: Vec::new(),
        },
        prev_term: 0,
        entries: Vec::new(),
        bad_tail: None,
    };
    match decode_segment_header(bytes) {
        Some((first, prev_term)) if first == first_index => loaded.prev_term = prev_term,
        _ => {
            loaded.bad_tail = Some((0, "bad segment header"));
            return loaded;
        }
    }
    let mut at = SEGMENT_HEADER_BYTES;
    let mut last_term = loaded.prev_term;
    while at < bytes.len() {
        let expected = first_index + loaded.entries.len() as u64;
        let problem = match decode_frame(&bytes[at..]) {
            Ok((entry, _)) if entry.index != expected => "entry index out of sequence",
            Ok((entry, _)) if entry.term < last_term => "entry term went back",
            Ok((entry, len)) => {
                last_term = entry.term;
                loaded.segment.offsets.push(at as u64);
                loaded.entries.push(entry);
                at += len;
                continue;
            }
            Err(reason) => reason,
        };
        loaded.bad_tail = Some((at as u64, problem));
        break;
    }
    loaded.segment.len = at as u64;
    loaded
}

/// A bad tail open found in the last segment.
struct TailCut {
    name: String,
    offset: u64,
    file_len: u64,
    reason: &'static str,
}

/// What open found on disk, before it is checked against the snapshot.
struct Found {
    hard_state: Option<(HardState, Vec<u64>)>,
    snapshot: Option<(String, Snapshot)>,
    segments: Vec<(u64, String)>,
    stale: Vec<String>,
}

impl LogStore {
    /// Opens the store in `dir`, creating it with `voters` (sorted raft ids)
    /// on first start. On a restart the stored voters win; `Quorum::new`
    /// refuses a spec that differs. See the module docs for what is
    /// repaired and what is refused.
    pub fn open(
        dir: Arc<dyn MetaDir>,
        voters: &[u64],
        limits: StoreLimits,
    ) -> Result<LogStore, LogStoreError> {
        let found = Self::scan(&*dir)?;
        for name in &found.stale {
            dir.remove(name)
                .map_err(io_error(&*dir, "removing", name))?;
        }
        let (hard_state, stored_voters) = match found.hard_state {
            Some(stored) => stored,
            None if found.snapshot.is_none() && found.segments.is_empty() => {
                let fresh = (HardState::default(), voters.to_vec());
                write_atomically(&*dir, HARD_STATE_FILE, &encode_hard_state(&fresh.0, voters))?;
                fresh
            }
            None => {
                return Err(LogStoreError::MissingHardState {
                    path: dir.path().to_path_buf(),
                });
            }
        };
        let mut store = LogStore {
            dir,
            limits,
            persisted_hard_state: hard_state.clone(),
            hard_state,
            conf_state: ConfState::from((stored_voters, Vec::new())),
            snapshot: Snapshot::default(),
            first_index: 1,
            prev_term: 0,
            entries: Vec::new(),
            segments: Vec::new(),
            segment_dirty: false,
            dir_dirty: false,
            log_bytes_since_snapshot: 0,
        };
        if let Some((_, snapshot)) = found.snapshot {
            store.first_index = snapshot.get_metadata().index + 1;
            store.prev_term = snapshot.get_metadata().term;
            store.snapshot = snapshot;
        }
        let cut = store.load_segments(&found.segments)?;
        store.finish_open(cut)?;
        Ok(store)
    }

    /// Lists the directory and reads the hard state and newest snapshot;
    /// older snapshots and leftover temporary files are stale.
    fn scan(dir: &dyn MetaDir) -> Result<Found, LogStoreError> {
        let names = dir.list().map_err(io_error(dir, "listing", ""))?;
        let mut found = Found {
            hard_state: None,
            snapshot: None,
            segments: Vec::new(),
            stale: Vec::new(),
        };
        let mut snapshots = Vec::new();
        for name in names {
            if name == HARD_STATE_FILE {
                let bytes = dir.read(&name).map_err(io_error(dir, "reading", &name))?;
                let stored =
                    decode_hard_state(&bytes).map_err(|reason| corrupt(dir, &name, 0, reason))?;
                found.hard_state = Some(stored);
            } else if let Some(first) = parse_segment_name(&name) {
                found.segments.push((first, name));
            } else if let Some((index, term)) = parse_snapshot_name(&name) {
                snapshots.push((index, term, name));
            } else if name.ends_with(TMP_SUFFIX) {
                found.stale.push(name);
            }
        }
        found.segments.sort_unstable();
        snapshots.sort_unstable();
        if let Some((index, term, name)) = snapshots.pop() {
            let bytes = dir.read(&name).map_err(io_error(dir, "reading", &name))?;
            let snapshot =
                decode_snapshot_file(&bytes).map_err(|reason| corrupt(dir, &name, 0, reason))?;
            let metadata = snapshot.get_metadata();
            if (metadata.index, metadata.term) != (index, term) {
                return Err(corrupt(
                    dir,
                    &name,
                    0,
                    "index or term differs from the name",
                ));
            }
            found.snapshot = Some((name, snapshot));
        }
        found
            .stale
            .extend(snapshots.into_iter().map(|(_, _, name)| name));
        Ok(found)
    }

    /// Loads the segments in order. Only the last may end in a bad tail; it
    /// is cut off only once open knows the cut keeps every committed entry.
    fn load_segments(&mut self, names: &[(u64, String)]) -> Result<Option<TailCut>, LogStoreError> {
        let mut loaded_all: Vec<LoadedSegment> = Vec::with_capacity(names.len());
        let mut cut = None;
        for (position, (first_index, name)) in names.iter().enumerate() {
            if *first_index == 0 {
                return Err(corrupt(&*self.dir, name, 0, "segment named for index 0"));
            }
            let bytes = self
                .dir
                .read(name)
                .map_err(io_error(&*self.dir, "reading", name))?;
            let loaded = load_segment(name, *first_index, &bytes);
            if let Some((offset, reason)) = loaded.bad_tail {
                if position + 1 != names.len() {
                    return Err(corrupt(&*self.dir, name, offset, reason));
                }
                cut = Some(TailCut {
                    name: name.clone(),
                    offset,
                    file_len: bytes.len() as u64,
                    reason,
                });
                if offset == 0 {
                    break;
                }
            }
            if let Some(previous) = loaded_all.last() {
                let last_term = previous
                    .entries
                    .last()
                    .map_or(previous.prev_term, |e| e.term);
                let last_index = previous.segment.first_index + previous.entries.len() as u64 - 1;
                if loaded.segment.first_index != last_index + 1 || loaded.prev_term != last_term {
                    return Err(corrupt(
                        &*self.dir,
                        name,
                        0,
                        format!(
                            "does not continue the previous segment (last entry {last_index}, term {last_term})"
                        ),
                    ));
                }
            }
            loaded_all.push(loaded);
        }
        let kept = self.adopt_segments(loaded_all)?;
        Ok(cut.filter(|_| kept))
    }

    /// Cuts a torn tail off the last segment, or removes the segment if
    /// even its header is bad; refuses if that would lose a committed
    /// entry.
    fn cut_tail(&self, cut: &TailCut) -> Result<(), LogStoreError> {
        let last = self.last_index_inner();
        if self.hard_state.commit > last {
            return Err(corrupt(
                &*self.dir,
                &cut.name,
                cut.offset,
                format!(
                    "{} below the commit index {} (the log would end at {last})",
                    cut.reason, self.hard_state.commit
                ),
            ));
        }
        let path = self.dir.path().join(&cut.name);
        tracing::warn!(
            event = "raft_log_tail_truncated",
            file = %path.display(),
            offset = cut.offset,
            bytes_dropped = cut.file_len - cut.offset,
            reason = cut.reason,
            "cutting the torn tail of the metadata log"
        );
        if cut.offset == 0 {
            return self
                .dir
                .remove(&cut.name)
                .map_err(io_error(&*self.dir, "removing", &cut.name));
        }
        self.dir.set_len(&cut.name, cut.offset).map_err(io_error(
            &*self.dir,
            "truncating",
            &cut.name,
        ))
    }

    /// Takes the loaded segments as the log, unless they do not hold the
    /// snapshot's (index, term): then an install was interrupted and they
    /// are discarded. Returns whether they were kept.
    fn adopt_segments(&mut self, loaded: Vec<LoadedSegment>) -> Result<bool, LogStoreError> {
        let Some(first) = loaded.first() else {
            return Ok(true);
        };
        let snapshot_index = self.snapshot_index();
        let snapshot_term = self.snapshot.get_metadata().term;
        let log_first = first.segment.first_index;
        let log_prev_term = first.prev_term;
        let entries: Vec<Entry> = loaded.iter().flat_map(|l| l.entries.clone()).collect();
        let log_last = log_first + entries.len() as u64 - 1;
        if log_first > snapshot_index + 1 {
            return Err(corrupt(
                &*self.dir,
                &first.segment.name,
                0,
                format!(
                    "the log starts after the snapshot at {snapshot_index}: entries are missing"
                ),
            ));
        }
        let term_at_snapshot = match snapshot_index.checked_sub(log_first) {
            None => Some(log_prev_term),
            Some(offset) => entries.get(offset as usize).map(|e| e.term),
        };
        if snapshot_index > log_last || term_at_snapshot != Some(snapshot_term) {
            tracing::info!(
                event = "raft_log_discarded",
                snapshot_index,
                snapshot_term,
                log_first,
                log_last,
                "the segments do not match the snapshot: finishing an interrupted install"
            );
            for l in &loaded {
                let name = &l.segment.name;
                self.dir
                    .remove(name)
                    .map_err(io_error(&*self.dir, "removing", name))?;
            }
            return Ok(false);
        }
        self.first_index = log_first;
        self.prev_term = log_prev_term;
        self.log_bytes_since_snapshot = entries
            .iter()
            .filter(|e| e.index > snapshot_index)
            .map(frame_bytes)
            .sum();
        self.entries = entries;
        self.segments = loaded.into_iter().map(|l| l.segment).collect();
        Ok(true)
    }

    /// Checks the commit index against the log and makes everything kept
    /// durable (see the module docs).
    fn finish_open(&mut self, cut: Option<TailCut>) -> Result<(), LogStoreError> {
        let snapshot_index = self.snapshot_index();
        if self.hard_state.commit < snapshot_index {
            // The snapshot was taken at an applied, hence committed, index.
            self.hard_state.commit = snapshot_index;
        }
        if let Some(cut) = cut {
            self.cut_tail(&cut)?;
        }
        let last = self.last_index_inner();
        if self.hard_state.commit > last {
            return Err(LogStoreError::CommitBeyondLog {
                path: self.dir.path().to_path_buf(),
                commit: self.hard_state.commit,
                last,
            });
        }
        for segment in &self.segments {
            self.dir.sync(&segment.name).map_err(io_error(
                &*self.dir,
                "fsyncing",
                &segment.name,
            ))?;
        }
        self.dir
            .sync_dir()
            .map_err(io_error(&*self.dir, "fsyncing the directory", ""))?;
        self.persist_hard_state()
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    /// The newest snapshot's image, or an empty image without one: what a
    /// restarted node applies the committed entries after
    /// `snapshot_index()` to.
    pub fn image(&self) -> Result<MetadataImage, LogStoreError> {
        if self.snapshot_index() == 0 {
            return Ok(MetadataImage::default());
        }
        Ok(decode_image(&self.snapshot.data)?)
    }

    /// The newest snapshot, image bytes included (index 0: none).
    pub fn newest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The names of the segment files, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }

    fn last_index_inner(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }

    fn term_inner(&self, index: u64) -> raft::Result<u64> {
        if index + 1 == self.first_index {
            return Ok(self.prev_term);
        }
        if index == self.snapshot_index() {
            return Ok(self.snapshot_term());
        }
        if index < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - self.first_index) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    /// Committed entries after `index`, at most `max_bytes` of data (but
    /// at least one), or `None` when they are compacted away: the reader
    /// then needs the snapshot.
    pub fn committed_after(&self, index: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        if index + 1 < self.first_index {
            return None;
        }
        let commit = self.hard_state.commit.min(self.last_index_inner());
        let mut out = Vec::new();
        let mut bytes = 0;
        for next in index + 1..=commit {
            let entry = &self.entries[(next - self.first_index) as usize];
            bytes += frame_bytes(entry);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Writes `entries` after the log, first cutting the suffix they
    /// replace (as `MemStorage::append`). Not durable until `persist`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogStoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.last_index_inner();
        if first.index < self.first_index.max(self.snapshot_index() + 1) || first.index > last + 1 {
            return Err(LogStoreError::NotContiguous {
                first: first.index,
                first_index: self.first_index,
                last_index: last,
            });
        }
        for (k, entry) in entries.iter().enumerate() {
            assert_eq!(entry.index, first.index + k as u64, "raft appends in order");
        }
        if first.index <= last {
            self.truncate_from(first.index)?;
        }
        let mut buffer = Vec::new();
        for entry in entries {
            if self.needs_roll(buffer.len() as u64) {
                self.flush_buffer(&mut buffer)?;
                self.roll(entry.index)?;
            }
            let at = self.segment_end(&buffer);
            encode_frame(&mut buffer, entry)?;
            let segment = self.segments.last_mut().expect("rolled above");
            segment.offsets.push(at);
            self.log_bytes_since_snapshot += frame_bytes(entry);
            self.entries.push(entry.clone());
        }
        self.flush_buffer(&mut buffer)?;
        assert_eq!(self.last_index_inner(), entries[entries.len() - 1].index);
        Ok(())
    }

    /// Whether the next frame goes to a new segment, `buffered` bytes
    /// being on their way to the last one.
    fn needs_roll(&self, buffered: u64) -> bool {
        match self.segments.last() {
            None => true,
            Some(segment) => {
                !segment.offsets.is_empty() && segment.len + buffered >= self.limits.segment_bytes
            }
        }
    }

    /// Where the next frame lands in the last segment, `buffer` included.
    fn segment_end(&self, buffer: &[u8]) -> u64 {
        self.segments.last().map_or(0, |s| s.len) + buffer.len() as u64
    }

    fn flush_buffer(&mut self, buffer: &mut Vec<u8>) -> Result<(), LogStoreError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let segment = self.segments.last_mut().expect("a buffer has a segment");
        self.dir
            .write_at(&segment.name, segment.len, buffer)
            .map_err(io_error(&*self.dir, "writing", &segment.name))?;
        segment.len += buffer.len() as u64;
        self.segment_dirty = true;
        buffer.clear();
        Ok(())
    }

    /// Starts a new segment for entry `first_index` on, after making the
    /// previous one durable (only the last segment is ever dirty).
    fn roll(&mut self, first_index: u64) -> Result<(), LogStoreError> {
        self.sync_log()?;
        let prev_term = match self.term_inner(first_index - 1) {
            Ok(term) => term,
            Err(_) => unreachable!("the entry before an append is known"),
        };
        let name = segment_name(first_index);
        let header = encode_segment_header(first_index, prev_term);
        self.dir
            .write_at(&name, 0, &header)
            .map_err(io_error(&*self.dir, "writing", &name))?;
        self.segments.push(Segment {
            first_index,
            name,
            len: header.len() as u64,
            offsets: Vec::new(),
        });
        self.segment_dirty = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Drops entries from `index` on. Later segments are removed, and the
    /// removal made durable, before the cut segment is written again: a
    /// crash must never leave new entries followed by stale ones.
    fn truncate_from(&mut self, index: u64) -> Result<(), LogStoreError> {
        assert!(index >= self.first_index && index <= self.last_index_inner());
        let mut removed = false;
        while let Some(segment) = self.segments.last()
            && segment.first_index > index
        {
            let name = segment.name.clone();
            self.dir
                .remove(&name)
                .map_err(io_error(&*self.dir, "removing", &name))?;
            self.segments.pop();
            removed = true;
        }
        if removed {
            self.segment_dirty = false;
            self.dir
                .sync_dir()
                .map_err(io_error(&*self.dir, "fsyncing the directory", ""))?;
        }
        let segment = self
            .segments
            .last_mut()
            .expect("the first segment starts at or below first_index");
        let keep = (index - segment.first_index) as usize;
        let cut_at = segment.offsets[keep];
        self.dir.set_len(&segment.name, cut_at).map_err(io_error(
            &*self.dir,
            "truncating",
            &segment.name,
        ))?;
        segment.offsets.truncate(keep);
        segment.len = cut_at;
        self.segment_dirty = true;
        let dropped = self.entries.split_off((index - self.first_index) as usize);
        let dropped_bytes: u64 = dropped.iter().map(frame_bytes).sum();
        self.log_bytes_since_snapshot = self.log_bytes_since_snapshot.saturating_sub(dropped_bytes);
        Ok(())
    }

    /// Sets the hard state raft reported; durable at the next `persist`.
    pub fn set_hard_state(&mut self, hard_state: &HardState) {
        assert!(
            hard_state.term >= self.hard_state.term,
            "terms never go back"
        );
        self.hard_state = hard_state.clone();
    }

    /// Raises the commit index (raft's `LightReady::commit_index`).
    pub fn set_commit(&mut self, commit: u64) {
        assert!(commit >= self.hard_state.commit, "commit never goes back");
        self.hard_state.commit = commit;
    }

    /// Makes every write so far durable: the log first, then the hard
    /// state that may commit it.
    pub fn persist(&mut self) -> Result<(), LogStoreError> {
        self.sync_log()?;
        self.persist_hard_state()
    }

    fn sync_log(&mut self) -> Result<(), LogStoreError> {
        if self.segment_dirty
            && let Some(segment) = self.segments.last()
        {
            self.dir.sync(&segment.name).map_err(io_error(
                &*self.dir,
                "fsyncing",
                &segment.name,
            ))?;
        }
        self.segment_dirty = false;
        if self.dir_dirty {
            self.dir
                .sync_dir()
                .map_err(io_error(&*self.dir, "fsyncing the directory", ""))?;
        }
        self.dir_dirty = false;
        Ok(())
    }

    fn persist_hard_state(&mut self) -> Result<(), LogStoreError> {
        if self.hard_state == self.persisted_hard_state {
            return Ok(());
        }
        let bytes = encode_hard_state(&self.hard_state, &self.conf_state.voters);
        write_atomically(&*self.dir, HARD_STATE_FILE, &bytes)?;
        self.persisted_hard_state = self.hard_state.clone();
        Ok(())
    }

    /// Whether a snapshot at `applied` is due under the store's limits.
    pub fn snapshot_due(&self, applied: u64) -> bool {
        snapshot_due(
            &self.limits,
            applied,
            self.snapshot_index(),
            self.log_bytes_since_snapshot,
        )
    }

    /// Writes a snapshot of the image at `applied` (`image` is its
    /// `encode_image` bytes), then deletes segments wholly below `applied -
    /// tail_entries` and older snapshots.
    pub fn create_snapshot(&mut self, applied: u64, image: Bytes) -> Result<(), LogStoreError> {
        let bad = |reason: &str| LogStoreError::BadSnapshot {
            index: applied,
            reason: reason.to_string(),
        };
        if applied <= self.snapshot_index() {
            return Err(bad("not after the newest snapshot"));
        }
        if applied > self.hard_state.commit.min(self.last_index_inner()) {
            return Err(bad("beyond the commit index"));
        }
        let term = self
            .term_inner(applied)
            .map_err(|_| bad("no term for the index"))?;
        let mut snapshot = Snapshot {
            data: image,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = term;
        metadata.set_conf_state(self.conf_state.clone());
        self.write_snapshot(snapshot)?;
        self.log_bytes_since_snapshot = self
            .entries
            .iter()
            .filter(|e| e.index > applied)
            .map(frame_bytes)
            .sum();
        self.compact(applied.saturating_sub(self.limits.tail_entries))?;
        // Removals durable too, so a reopen sees the log this one does.
        self.dir
            .sync_dir()
            .map_err(io_error(&*self.dir, "fsyncing the directory", ""))
    }

    /// Makes `snapshot` durable under its name and the newest in memory;
    /// removes the older snapshot file.
    fn write_snapshot(&mut self, snapshot: Snapshot) -> Result<(), LogStoreError> {
        let metadata = snapshot.get_metadata();
        let name = snapshot_name(metadata.index, metadata.term);
        write_atomically(&*self.dir, &name, &encode_snapshot_file(&snapshot))?;
        let old = std::mem::replace(&mut self.snapshot, snapshot);
        if old.get_metadata().index > 0 {
            let old_name = snapshot_name(old.get_metadata().index, old.get_metadata().term);
            self.dir
                .remove(&old_name)
                .map_err(io_error(&*self.dir, "removing", &old_name))?;
        }
        Ok(())
    }

    /// Deletes the segments whose every entry is below `below` (never the
    /// last one) and forgets their entries.
    fn compact(&mut self, below: u64) -> Result<(), LogStoreError> {
        while self.segments.len() > 1 {
            let segment = &self.segments[0];
            let last = segment
                .last_index()
                .expect("only the last segment may be empty");
            if last >= below {
                break;
            }
            let name = segment.name.clone();
            let dropped = (last + 1 - self.first_index) as usize;
            self.prev_term = self.entries[dropped - 1].term;
            self.entries.drain(..dropped);
            self.first_index = last + 1;
            self.segments.remove(0);
            self.dir
                .remove(&name)
                .map_err(io_error(&*self.dir, "removing", &name))?;
        }
        assert!(self.first_index <= self.snapshot_index() + 1);
        Ok(())
    }

    /// Installs a snapshot received from the leader in place of the whole
    /// log (as `MemStorage::apply_snapshot`): the snapshot is durable
    /// before the segments go (see the module docs).
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), LogStoreError> {
        let metadata = snapshot.get_metadata();
        let index = metadata.index;
        if index <= self.snapshot_index() || index < self.hard_state.commit {
            return Err(LogStoreError::BadSnapshot {
                index,
                reason: format!(
                    "older than the newest snapshot ({}) or the commit index ({})",
                    self.snapshot_index(),
                    self.hard_state.commit
                ),
            });
        }
        self.sync_log()?;
        self.write_snapshot(snapshot.clone())?;
        self.conf_state = metadata.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = index;
        self.persist_hard_state()?;
        for segment in std::mem::take(&mut self.segments) {
            self.dir.remove(&segment.name).map_err(io_error(
                &*self.dir,
                "removing",
                &segment.name,
            ))?;
        }
        self.dir
            .sync_dir()
            .map_err(io_error(&*self.dir, "fsyncing the directory", ""))?;
        self.entries.clear();
        self.first_index = index + 1;
        self.prev_term = metadata.term;
        self.log_bytes_since_snapshot = 0;
        Ok(())
    }
}

/// Replaces `name` whole: tmp, fsync, rename, fsync of the directory.
fn write_atomically(dir: &dyn MetaDir, name: &str, bytes: &[u8]) -> Result<(), LogStoreError> {
    let tmp = format!("{name}{TMP_SUFFIX}");
    dir.set_len(&tmp, 0)
        .map_err(io_error(dir, "truncating", &tmp))?;
    dir.write_at(&tmp, 0, bytes)
        .map_err(io_error(dir, "writing", &tmp))?;
    dir.sync(&tmp).map_err(io_error(dir, "fsyncing", &tmp))?;
    dir.rename(&tmp, name)
        .map_err(io_error(dir, "renaming to", name))?;
    dir.sync_dir()
        .map_err(io_error(dir, "fsyncing the directory", ""))
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_inner() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first_index) as usize;
        let to = (high - self.first_index) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_inner(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
pub use mem_dir::MemDir;

#[cfg(test)]
#[path = "log_store_mem.rs"]
mod mem_dir;

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
