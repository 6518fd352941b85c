//! Offsets checkpointed per data directory, as Kafka keeps them: one
//! `recovery-point-offset-checkpoint`, one `log-start-offset-checkpoint` and
//! one `cleaner-offset-checkpoint` for every partition under the directory
//! (lines `topic partition offset`), instead of three files in each
//! partition; a cluster member adds `replication-offset-checkpoint`, the
//! high watermarks its replicas learned, so after a restart consumers read
//! what was committed without waiting for the leader to tell them again. An unclean restart of thousands of partitions reads three
//! files, and a busy broker rewrites three files a second, not thousands.
//!
//! Partition logs report their offsets here as they change (in memory); the
//! files are written by `write` (the broker's housekeeping, every
//! [`RECOVERY_POINT_CHECKPOINT_INTERVAL_MS`], and at close) and at once,
//! durably, when a lower offset must not be forgotten: after a truncation
//! (the recovery point went down) and after DeleteRecords (the log start
//! went up). Recovery points and cleaner offsets are hints, written
//! atomically but not synced: a stale one is lower, which only means more to
//! recover or clean. The log start offsets are synced whenever they change.
//!
//! A log opened on its own (tests, tools) keeps the same files inside its
//! own directory, with lines of just `offset`: the layout every partition
//! had before the files moved up a level, which is still read when the data
//! directory has no entry for a partition, and removed once it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::checkpoint;
use super::error::LogError;

pub const RECOVERY_POINT_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Kafka's name: the high watermark of every replica (hints: a stale one is
/// lower, and a lower high watermark only hides what is committed a while).
pub const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
/// Spacing of the periodic write: the most recovery a crash can add.
pub const RECOVERY_POINT_CHECKPOINT_INTERVAL_MS: i64 = 1_000;

/// One partition's checkpointed offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub cleaner_offset: i64,
    /// Reported by the broker once it knows one (a cluster member's
    /// replica); never above the log end.
    pub high_watermark: Option<i64>,
}

/// What the files said about one partition at open; `None` where they are
/// silent (then recovery starts at 0, the log at its first segment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartingOffsets {
    pub recovery_point: Option<i64>,
    pub log_start_offset: Option<i64>,
    pub cleaner_offset: Option<i64>,
    pub high_watermark: Option<i64>,
}

/// The three files' contents, keyed by partition directory name ("" for
/// the one-offset lines of a partition's own files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Files {
    recovery_points: BTreeMap<String, i64>,
    log_start_offsets: BTreeMap<String, i64>,
    cleaner_offsets: BTreeMap<String, i64>,
    high_watermarks: BTreeMap<String, i64>,
}

impl Files {
    /// Reads the files under `dir`; a missing or unreadable file is empty
    /// (a corrupt one is logged): every entry may be lost without harm
    /// except a log start offset, and that file is only written synced.
    fn read(dir: &Path) -> Result<Files, LogError> {
        Ok(Files {
            recovery_points: read_file(&dir.join(RECOVERY_POINT_CHECKPOINT_FILE))?,
            log_start_offsets: read_file(&dir.join(LOG_START_OFFSET_CHECKPOINT_FILE))?,
            cleaner_offsets: read_file(&dir.join(CLEANER_CHECKPOINT_FILE))?,
            high_watermarks: read_file(&dir.join(HIGH_WATERMARK_CHECKPOINT_FILE))?,
        })
    }

    fn starting_offsets(&self, key: &str) -> StartingOffsets {
        StartingOffsets {
            recovery_point: self.recovery_points.get(key).copied(),
            log_start_offset: self.log_start_offsets.get(key).copied(),
            cleaner_offset: self.cleaner_offsets.get(key).copied(),
            high_watermark: self.high_watermarks.get(key).copied(),
        }
    }

    fn from_offsets(partitions: &BTreeMap<String, PartitionOffsets>) -> Files {
        let pick = |f: fn(&PartitionOffsets) -> i64| {
            partitions
                .iter()
                .map(|(key, offsets)| (key.clone(), f(offsets)))
                .collect()
        };
        Files {
            recovery_points: pick(|o| o.recovery_point),
            log_start_offsets: pick(|o| o.log_start_offset),
            cleaner_offsets: pick(|o| o.cleaner_offset),
            high_watermarks: partitions
                .iter()
                .filter_map(|(key, offsets)| Some((key.clone(), offsets.high_watermark?)))
                .collect(),
        }
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, i64>, LogError> {
    let Some(text) = checkpoint::read(path)? else {
        return Ok(BTreeMap::new());
    };
    match checkpoint::parse_lines(path, &text, parse_line) {
        Ok(entries) => Ok(entries.into_iter().collect()),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring corrupt checkpoint");
            Ok(BTreeMap::new())
        }
    }
}

/// `topic partition offset` (key `topic-partition`), or `offset` (key "").
fn parse_line(line: &str) -> Option<(String, i64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (key, offset) = match fields.as_slice() {
        [offset] => (String::new(), offset),
        [topic, partition, offset] => {
            let partition: i32 = partition.parse().ok().filter(|p| *p >= 0)?;
            (format!("{topic}-{partition}"), offset)
        }
        _ => return None,
    };
    let offset: i64 = offset.parse().ok().filter(|o| *o >= 0)?;
    Some((key, offset))
}

fn format_entries(entries: &BTreeMap<String, i64>) -> String {
    let lines: Vec<String> = entries
        .iter()
        .map(|(key, offset)| match key.rsplit_once('-') {
            Some((topic, partition)) if !key.is_empty() => {
                format!("{topic} {partition} {offset}")
            }
            _ => offset.to_string(),
        })
        .collect();
    checkpoint::format_lines(&lines)
}

/// What has been reported and what has been written.
#[derive(Debug, Default)]
struct State {
    partitions: BTreeMap<String, PartitionOffsets>,
    /// Reported since the last write.
    changed: bool,
    last_write_ms: Option<i64>,
    /// Partition directories whose own (old-layout) files were read at open:
    /// removed once the directory's files hold their entries.
    adopted: Vec<PathBuf>,
}

/// The checkpoints of one data directory (or of one log opened on its own).
#[derive(Debug)]
pub struct DirCheckpoints {
    root: PathBuf,
    standalone: bool,
    /// What the files held at open, less the partitions forgotten since.
    loaded: Mutex<Files>,
    state: Mutex<State>,
    /// Held across file I/O (reports only take `state`): one writer at a
    /// time, so an older snapshot never replaces a newer one.
    writer: Mutex<Files>,
}

impl DirCheckpoints {
    /// The checkpoints of the data directory `root`, read from its files.
    pub fn open(root: &Path) -> Result<DirCheckpoints, LogError> {
        Self::open_at(root, false)
    }

    /// The checkpoints of one log kept in its own directory (tests, tools):
    /// the log writes them itself when it syncs and closes.
    pub fn standalone(partition_dir: &Path) -> Result<DirCheckpoints, LogError> {
        Self::open_at(partition_dir, true)
    }

    fn open_at(root: &Path, standalone: bool) -> Result<DirCheckpoints, LogError> {
        let loaded = Files::read(root)?;
        Ok(DirCheckpoints {
            root: root.to_path_buf(),
            standalone,
            writer: Mutex::new(loaded.clone()),
            loaded: Mutex::new(loaded),
            state: Mutex::new(State::default()),
        })
    }

    pub fn is_standalone(&self) -> bool {
        self.standalone
    }

    /// The key of the partition in `dir`: its directory name, or "" for a
    /// log kept in the root itself.
    pub fn key_of(&self, dir: &Path) -> String {
        if dir == self.root {
            return String::new();
        }
        dir.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// What the files said about the partition in `dir` at open; a
    /// partition the data directory's files do not name yet falls back to
    /// its own files (the layout before checkpoints moved up a level).
    pub fn starting_offsets(&self, dir: &Path) -> Result<StartingOffsets, LogError> {
        let key = self.key_of(dir);
        let found = self
            .loaded
            .lock()
            .expect("checkpoint files lock poisoned")
            .starting_offsets(&key);
        // The old layout had no high watermarks: an entry of those alone
        // does not mean the partition's own files were adopted.
        let legacy = |o: &StartingOffsets| {
            o.recovery_point.is_some() || o.log_start_offset.is_some() || o.cleaner_offset.is_some()
        };
        if self.standalone || legacy(&found) {
            return Ok(found);
        }
        let own = Files::read(dir)?.starting_offsets("");
        if legacy(&own) {
            self.lock_state().adopted.push(dir.to_path_buf());
        }
        Ok(StartingOffsets {
            high_watermark: found.high_watermark,
            ..own
        })
    }

    /// Records a partition's current offsets (memory only).
    pub fn report(&self, dir: &Path, offsets: PartitionOffsets) {
        let key = self.key_of(dir);
        let mut state = self.lock_state();
        if state.partitions.get(&key) != Some(&offsets) {
            state.partitions.insert(key, offsets);
            state.changed = true;
        }
    }

    /// Forgets a deleted partition (written with the next `write`).
    pub fn forget(&self, dir: &Path) {
        let key = self.key_of(dir);
        {
            // A partition created later under this name starts from nothing.
            let mut loaded = self.loaded.lock().expect("checkpoint files lock poisoned");
            loaded.recovery_points.remove(&key);
            loaded.log_start_offsets.remove(&key);
            loaded.cleaner_offsets.remove(&key);
            loaded.high_watermarks.remove(&key);
        }
        let mut state = self.lock_state();
        if state.partitions.remove(&key).is_some() {
            state.changed = true;
        }
    }

    /// Whether a periodic write is due at `now_ms`.
    pub fn write_due(&self, now_ms: i64) -> bool {
        let state = self.lock_state();
        state.changed
            && state.last_write_ms.is_none_or(|last| {
                now_ms.saturating_sub(last) >= RECOVERY_POINT_CHECKPOINT_INTERVAL_MS
            })
    }

    /// Writes the files from the offsets reported so far: each file only if
    /// its contents changed; recovery points and cleaner offsets atomically
    /// but unsynced (hints), log start offsets synced. With `durable`, the
    /// recovery points are synced too (after a truncation lowered one).
    pub fn write(&self, now_ms: i64, durable: bool) -> Result<(), LogError> {
        let mut written = self.writer.lock().expect("checkpoint writer lock poisoned");
        let (files, adopted) = {
            let mut state = self.lock_state();
            state.changed = false;
            state.last_write_ms = Some(now_ms);
            let mut files = Files::from_offsets(&state.partitions);
            // A partition on disk not opened yet (a cluster member opens
            // what the controller assigns it, later) keeps what the files
            // said: rewriting them must not drop its log start offset.
            let loaded = self.loaded.lock().expect("checkpoint files lock poisoned");
            for (ours, theirs) in [
                (&mut files.recovery_points, &loaded.recovery_points),
                (&mut files.log_start_offsets, &loaded.log_start_offsets),
                (&mut files.cleaner_offsets, &loaded.cleaner_offsets),
                (&mut files.high_watermarks, &loaded.high_watermarks),
            ] {
                for (key, offset) in theirs {
                    if !state.partitions.contains_key(key) {
                        ours.insert(key.clone(), *offset);
                    }
                }
            }
            (files, std::mem::take(&mut state.adopted))
        };
        let result = self.write_files(&written, &files, durable);
        if let Err(error) = result {
            let mut state = self.lock_state();
            state.changed = true;
            state.adopted.extend(adopted);
            return Err(error);
        }
        *written = files;
        for dir in adopted {
            for name in [
                RECOVERY_POINT_CHECKPOINT_FILE,
                LOG_START_OFFSET_CHECKPOINT_FILE,
                CLEANER_CHECKPOINT_FILE,
                HIGH_WATERMARK_CHECKPOINT_FILE,
            ] {
                checkpoint::remove_if_exists(&dir.join(name))?;
            }
        }
        Ok(())
    }

    fn write_files(&self, old: &Files, new: &Files, durable: bool) -> Result<(), LogError> {
        let files = [
            (
                RECOVERY_POINT_CHECKPOINT_FILE,
                &old.recovery_points,
                &new.recovery_points,
                durable,
            ),
            (
                LOG_START_OFFSET_CHECKPOINT_FILE,
                &old.log_start_offsets,
                &new.log_start_offsets,
                true,
            ),
            (
                CLEANER_CHECKPOINT_FILE,
                &old.cleaner_offsets,
                &new.cleaner_offsets,
                false,
            ),
            (
                HIGH_WATERMARK_CHECKPOINT_FILE,
                &old.high_watermarks,
                &new.high_watermarks,
                false,
            ),
        ];
        for (name, old, new, synced) in files {
            if old == new && !(synced && durable) {
                continue;
            }
            let path = self.root.join(name);
            let text = format_entries(new);
            if synced {
                checkpoint::write_atomic(&path, text.as_bytes())?;
            } else {
                checkpoint::write_atomic_unsynced(&path, text.as_bytes())?;
            }
        }
        Ok(())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("checkpoint state lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(
        recovery_point: i64,
        log_start_offset: i64,
        cleaner_offset: i64,
    ) -> PartitionOffsets {
        PartitionOffsets {
            recovery_point,
            log_start_offset,
            cleaner_offset,
            high_watermark: None,
        }
    }

    #[test]
    fn a_data_directory_keeps_every_partition_in_three_files() {
        let root = tempfile::tempdir().unwrap();
        let checkpoints = DirCheckpoints::open(root.path()).unwrap();
        let (a, b) = (
            root.path().join("orders-0"),
            root.path().join("my-topic-12"),
        );
        checkpoints.report(&a, offsets(10, 2, 5));
        checkpoints.report(&b, offsets(7, 0, 0));
        assert!(checkpoints.write_due(0));
        checkpoints.write(0, false).unwrap();
        assert!(!checkpoints.write_due(5_000), "nothing changed");
        let text =
            std::fs::read_to_string(root.path().join(RECOVERY_POINT_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n2\nmy-topic 12 7\norders 0 10\n");

        let reopened = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            reopened.starting_offsets(&a).unwrap(),
            StartingOffsets {
                recovery_point: Some(10),
                log_start_offset: Some(2),
                cleaner_offset: Some(5),
                high_watermark: None,
            }
        );
        assert_eq!(
            reopened
                .starting_offsets(&root.path().join("new-0"))
                .unwrap(),
            StartingOffsets::default()
        );
    }

    #[test]
    fn a_partition_not_opened_yet_keeps_its_entries_when_the_files_are_rewritten() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("t-0"), root.path().join("t-1"));
        let offsets = |start: i64| PartitionOffsets {
            recovery_point: 50,
            log_start_offset: start,
            cleaner_offset: 0,
            high_watermark: Some(start + 5),
        };
        let first = DirCheckpoints::open(root.path()).unwrap();
        first.report(&a, offsets(10));
        first.report(&b, offsets(20));
        first.write(0, true).unwrap();
        // Next life: only t-0 is opened before the files are written again.
        let second = DirCheckpoints::open(root.path()).unwrap();
        second.report(&a, offsets(11));
        second.write(0, true).unwrap();
        let third = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            third.starting_offsets(&a).unwrap().log_start_offset,
            Some(11)
        );
        assert_eq!(
            third.starting_offsets(&b).unwrap().log_start_offset,
            Some(20)
        );
        assert_eq!(third.starting_offsets(&b).unwrap().high_watermark, Some(25));
        assert_eq!(third.starting_offsets(&a).unwrap().high_watermark, Some(16));
        let text =
            std::fs::read_to_string(root.path().join(HIGH_WATERMARK_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n2\nt 0 16\nt 1 25\n");
        // Forgotten (deleted) partitions are not carried.
        third.forget(&b);
        third.write(0, true).unwrap();
        let fourth = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            fourth.starting_offsets(&b).unwrap(),
            StartingOffsets::default()
        );
    }

    #[test]
    fn writes_are_spaced_and_a_forgotten_partition_goes() {
        let root = tempfile::tempdir().unwrap();
        let checkpoints = DirCheckpoints::open(root.path()).unwrap();
        let a = root.path().join("a-0");
        checkpoints.report(&a, offsets(1, 0, 0));
        checkpoints.write(1_000, false).unwrap();
        checkpoints.report(&a, offsets(2, 0, 0));
        assert!(!checkpoints.write_due(1_500));
        assert!(checkpoints.write_due(2_000));
        checkpoints.forget(&a);
        checkpoints.write(2_000, false).unwrap();
        let reopened = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            reopened.starting_offsets(&a).unwrap(),
            StartingOffsets::default()
        );
    }

    #[test]
    fn a_forgotten_partition_starts_from_nothing_when_created_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("gone-0");
        let checkpoints = DirCheckpoints::open(root.path()).unwrap();
        checkpoints.report(&dir, offsets(70, 5, 60));
        checkpoints.write(0, false).unwrap();
        let reopened = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            reopened.starting_offsets(&dir).unwrap().cleaner_offset,
            Some(60)
        );
        reopened.forget(&dir);
        assert_eq!(
            reopened.starting_offsets(&dir).unwrap(),
            StartingOffsets::default(),
            "not what the files said at open"
        );
    }

    #[test]
    fn a_partitions_own_files_are_adopted_then_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("old-3");
        std::fs::create_dir(&dir).unwrap();
        for (name, offset) in [
            (RECOVERY_POINT_CHECKPOINT_FILE, 40),
            (LOG_START_OFFSET_CHECKPOINT_FILE, 4),
        ] {
            checkpoint::write_atomic(&dir.join(name), format!("0\n1\n{offset}\n").as_bytes())
                .unwrap();
        }
        let checkpoints = DirCheckpoints::open(root.path()).unwrap();
        let found = checkpoints.starting_offsets(&dir).unwrap();
        assert_eq!(found.recovery_point, Some(40));
        assert_eq!(found.log_start_offset, Some(4));
        assert_eq!(found.cleaner_offset, None);
        checkpoints.report(&dir, offsets(40, 4, 0));
        checkpoints.write(0, false).unwrap();
        assert!(!dir.join(RECOVERY_POINT_CHECKPOINT_FILE).exists());
        assert!(!dir.join(LOG_START_OFFSET_CHECKPOINT_FILE).exists());
        let reopened = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            reopened.starting_offsets(&dir).unwrap().log_start_offset,
            Some(4)
        );
    }

    #[test]
    fn a_log_on_its_own_keeps_one_offset_lines_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = DirCheckpoints::standalone(dir.path()).unwrap();
        checkpoints.report(dir.path(), offsets(9, 3, 1));
        checkpoints.write(0, false).unwrap();
        let text =
            std::fs::read_to_string(dir.path().join(LOG_START_OFFSET_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n1\n3\n");
        let reopened = DirCheckpoints::standalone(dir.path()).unwrap();
        assert_eq!(
            reopened
                .starting_offsets(dir.path())
                .unwrap()
                .recovery_point,
            Some(9)
        );
    }

    #[test]
    fn bad_lines_make_the_file_count_as_absent() {
        assert_eq!(parse_line("orders 0 12"), Some(("orders-0".into(), 12)));
        assert_eq!(parse_line("12"), Some((String::new(), 12)));
        assert_eq!(parse_line("orders x 12"), None);
        assert_eq!(parse_line("orders 0 -1"), None);
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join(RECOVERY_POINT_CHECKPOINT_FILE),
            "0\n2\norders 0 12\n",
        )
        .unwrap();
        let checkpoints = DirCheckpoints::open(root.path()).unwrap();
        assert_eq!(
            checkpoints
                .starting_offsets(&root.path().join("orders-0"))
                .unwrap(),
            StartingOffsets::default()
        );
    }
}
