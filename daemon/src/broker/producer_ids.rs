//! Producer ids for InitProducerId. An id is never handed out twice, also
//! across restarts and crashes: ids come from blocks, and the end of the
//! current block is made durable before its first id is given out. A crash
//! skips the rest of the block, which is harmless. (The cluster issue moves
//! the allocator to the controller, which hands out blocks the same way.)

use std::path::{Path, PathBuf};

use crate::log::{LogError, write_file_atomic};

/// Ids per persisted block.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
const FILE: &str = "producer-id-block";

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("reading {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] LogError),
    #[error("producer ids are exhausted")]
    Exhausted,
    /// A cluster member could not get a block from the controller (yet);
    /// the client retries.
    #[error("no producer ids from the controller: {0}")]
    Unavailable(String),
}

/// Where a cluster member gets its producer-id blocks: the active
/// controller, which records each block in the metadata log, so no two
/// brokers and no two lives of one broker hand out the same id.
pub trait ProducerIdSource: Send + Sync {
    /// Ids `first .. end`, never handed to anyone before. Blocks the
    /// calling (storage) thread for at most a few seconds.
    fn next_block(&self) -> Result<(i64, i64), String>;
}

pub struct ProducerIdAllocator {
    path: PathBuf,
    next: i64,
    /// Ids below this (and ≥ `next`) may be handed out without a write.
    block_end: i64,
    /// Set on a cluster member: blocks come from it, not from the file.
    source: Option<std::sync::Arc<dyn ProducerIdSource>>,
}

impl std::fmt::Debug for ProducerIdAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIdAllocator")
            .field("path", &self.path)
            .field("next", &self.next)
            .field("block_end", &self.block_end)
            .field("from_controller", &self.source.is_some())
            .finish()
    }
}

impl ProducerIdAllocator {
    /// Reads `<meta_dir>/producer-id-block`: every id below the number it
    /// holds may have been handed out already.
    pub fn open(meta_dir: &Path) -> Result<Self, ProducerIdError> {
        let path = meta_dir.join(FILE);
        let first_unused = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ProducerIdError::Corrupt {
                    path: path.clone(),
                    reason: format!("expected one non-negative number, found {:?}", text.trim()),
                })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => {
                return Err(LogError::Io {
                    operation: "read",
                    path,
                    source: error,
                }
                .into());
            }
        };
        Ok(Self {
            path,
            next: first_unused,
            block_end: first_unused,
            source: None,
        })
    }

    /// A cluster member's allocator: every block from `source`; nothing
    /// is written locally (the metadata log holds the blocks).
    pub fn from_source(source: std::sync::Arc<dyn ProducerIdSource>) -> Self {
        Self {
            path: PathBuf::new(),
            next: 0,
            block_end: 0,
            source: Some(source),
        }
    }

    /// Every id below this may have been handed out (the block file's).
    pub fn block_end(&self) -> i64 {
        self.block_end
    }

    /// The next id; persists a new block end first when the block is used up.
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    pub fn allocate(&mut self) -> Result<i64, ProducerIdError> {
        if self.next >= self.block_end
            && let Some(source) = &self.source
        {
            let (first, end) = source.next_block().map_err(ProducerIdError::Unavailable)?;
            assert!(first >= 0 && end > first, "a block of ids: {first}..{end}");
            self.next = first;
            self.block_end = end;
        }
        if self.next >= self.block_end {
            let end = self
                .next
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or(ProducerIdError::Exhausted)?;
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(LogError::io("create dir", dir))?;
            }
            write_file_atomic(&self.path, format!("{end}\n").as_bytes())?;
            self.block_end = end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            // Each reopen is a restart (or a crash: nothing is closed).
            let mut allocator = ProducerIdAllocator::open(dir.path()).unwrap();
            for _ in 0..1_500 {
                assert!(seen.insert(allocator.allocate().unwrap()));
            }
        }
        assert_eq!(seen.len(), 4_500);
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "banana").unwrap();
        assert!(matches!(
            ProducerIdAllocator::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
