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
}

#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    next: i64,
    /// Ids below this (and ≥ `next`) may be handed out without a write.
    block_end: i64,
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
        })
    }

    /// The next id; persists a new block end first when the block is used up.
    pub fn allocate(&mut self) -> Result<i64, ProducerIdError> {
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
