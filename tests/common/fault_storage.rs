//! A storage backend that fails on command and remembers what a power loss
//! would take. Writes and syncs reach the real files, as they would the page
//! cache, and each is recorded in a journal file, which outlives the process
//! (as the page cache outlives a crashed broker). On command the next write
//! or fdatasync of a segment file fails, as Linux fails one after a writeback
//! error: the bytes still read back, yet the kernel has marked the pages
//! clean and will never write them. `power_loss` replays the journal once no
//! process uses the files and zeroes every byte that never reached the disk:
//! written and never synced, or written before a sync that failed and not
//! written again since.
//!
//! Commands come in-process (`fail_next_sync`, `fail_next_write`) or from
//! another process, as files in the command directory (`fail-sync`,
//! `fail-write`): each is used up by the fault it causes.
//!
//! Limitation: files are tracked by path; a test must not recreate a file at
//! the path of a deleted one (no compaction swaps, no truncation to a new
//! first segment).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice::log::{OsStorage, Storage};

/// Command file: the next fdatasync of a segment log fails.
pub const FAIL_SYNC_COMMAND: &str = "fail-sync";
/// Command file: the next write to a segment log fails.
pub const FAIL_WRITE_COMMAND: &str = "fail-write";

pub struct FaultStorage {
    journal: Mutex<File>,
    commands: PathBuf,
    fail_sync: AtomicBool,
    fail_write: AtomicBool,
    faults: AtomicU64,
}

impl fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStorage")
            .field("commands", &self.commands)
            .finish()
    }
}

impl FaultStorage {
    /// Appends to the journal at `journal` (created if absent); takes
    /// commands from files in `commands`.
    pub fn new(journal: &Path, commands: &Path) -> FaultStorage {
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal)
            .expect("opening the fault journal");
        FaultStorage {
            journal: Mutex::new(journal),
            commands: commands.to_path_buf(),
            fail_sync: AtomicBool::new(false),
            fail_write: AtomicBool::new(false),
            faults: AtomicU64::new(0),
        }
    }

    pub fn fail_next_sync(&self) {
        self.fail_sync.store(true, Ordering::SeqCst);
    }

    pub fn fail_next_write(&self) {
        self.fail_write.store(true, Ordering::SeqCst);
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    fn record(&self, line: String) {
        // One write per line on an O_APPEND file, unbuffered: the process
        // may exit at any moment after (that is the point).
        let mut journal = self.journal.lock().expect("journal lock");
        journal
            .write_all(line.as_bytes())
            .expect("writing the fault journal");
    }

    /// Uses up an armed fault for `path` (segment logs only).
    fn take_fault(&self, flag: &AtomicBool, command: &str, path: &Path) -> bool {
        if path.extension().is_none_or(|e| e != "log") {
            return false;
        }
        let armed = flag.swap(false, Ordering::SeqCst)
            || std::fs::remove_file(self.commands.join(command)).is_ok();
        if armed {
            self.faults.fetch_add(1, Ordering::SeqCst);
        }
        armed
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (fault storage)"))
}

impl Storage for FaultStorage {
    fn write_at(
        &self,
        file: &File,
        path: &Path,
        pieces: &[IoSlice<'_>],
        offset: u64,
    ) -> io::Result<()> {
        if self.take_fault(&self.fail_write, FAIL_WRITE_COMMAND, path) {
            return Err(injected("write"));
        }
        OsStorage.write_at(file, path, pieces, offset)?;
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        self.record(format!("W\t{offset}\t{len}\t{}\n", path.display()));
        Ok(())
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        OsStorage.set_len(file, path, len)?;
        self.record(format!("T\t{len}\t{}\n", path.display()));
        Ok(())
    }

    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        if self.take_fault(&self.fail_sync, FAIL_SYNC_COMMAND, path) {
            // Linux: the dirty pages are now clean, unwritten, and the error
            // is reported once.
            self.record(format!("F\t{}\n", path.display()));
            return Err(injected("fdatasync"));
        }
        OsStorage.sync_data(file, path)?;
        self.record(format!("S\t{}\n", path.display()));
        Ok(())
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        OsStorage.sync_filesystem(path)?;
        self.record(format!("FS\t{}\n", path.display()));
        Ok(())
    }
}

/// What happened to each byte of a file, as far as the journal tells.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Byte {
    /// On disk (synced, or never written through the journal).
    Durable,
    /// Written since the file's last sync.
    Dirty,
    /// Written before a sync that failed: the kernel will never write it.
    Lost,
}

/// Simulates a power loss over the files the journal names (no process may
/// be using them): zeroes each byte that is dirty or lost. Returns the bytes
/// zeroed.
pub fn power_loss(journal: &Path) -> u64 {
    let text = std::fs::read_to_string(journal).expect("reading the fault journal");
    let mut files: BTreeMap<PathBuf, Vec<Byte>> = BTreeMap::new();
    let settle = |bytes: &mut Vec<Byte>, to: Byte| {
        for byte in bytes.iter_mut().filter(|b| **b == Byte::Dirty) {
            *byte = to;
        }
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["W", offset, len, path] => {
                let (offset, len): (usize, usize) = (offset.parse().unwrap(), len.parse().unwrap());
                let bytes = files.entry(PathBuf::from(path)).or_default();
                if bytes.len() < offset + len {
                    bytes.resize(offset + len, Byte::Durable);
                }
                bytes[offset..offset + len].fill(Byte::Dirty);
            }
            ["T", len, path] => {
                let bytes = files.entry(PathBuf::from(path)).or_default();
                bytes.resize(len.parse().unwrap(), Byte::Dirty);
            }
            ["S", path] => settle(files.entry(PathBuf::from(path)).or_default(), Byte::Durable),
            ["F", path] => settle(files.entry(PathBuf::from(path)).or_default(), Byte::Lost),
            ["FS", dir] => {
                for (_, bytes) in files.iter_mut().filter(|(p, _)| p.starts_with(dir)) {
                    settle(bytes, Byte::Durable);
                }
            }
            _ => panic!("bad journal line {line:?}"),
        }
    }
    let mut zeroed = 0;
    for (path, bytes) in files {
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            continue; // deleted since
        };
        let size = file.metadata().expect("stat").len() as usize;
        let mut start = 0;
        while start < bytes.len().min(size) {
            if bytes[start] == Byte::Durable {
                start += 1;
                continue;
            }
            let mut end = start;
            while end < bytes.len().min(size) && bytes[end] != Byte::Durable {
                end += 1;
            }
            file.write_all_at(&vec![0u8; end - start], start as u64)
                .expect("zeroing lost bytes");
            zeroed += (end - start) as u64;
            start = end;
        }
    }
    zeroed
}
