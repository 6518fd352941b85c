//! The durable Raft log: reopen, torn tails, corruption, snapshots and
//! compaction, and a crash after every single I/O operation of a scripted
//! run, reopened from what a power loss keeps.

use std::collections::BTreeMap;

use raft::Storage;

use super::super::image::MetadataImage;
use super::super::snapshot::encode_image;
use super::*;

const VOTERS: [u64; 3] = [1, 2, 3];

/// Small enough that a few dozen entries span several segments.
const SMALL: StoreLimits = StoreLimits {
    segment_bytes: 200,
    snapshot_entries: 8,
    snapshot_log_bytes: 1024 * 1024,
    tail_entries: 4,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: Bytes::from(format!("entry {index} of term {term}")),
        ..Entry::default()
    }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn open(dir: &Arc<MemDir>, limits: StoreLimits) -> Result<LogStore, LogStoreError> {
    LogStore::open(dir.clone(), &VOTERS, limits)
}

fn image_bytes() -> Bytes {
    Bytes::from(encode_image(&MetadataImage::default()).expect("encodes"))
}

/// Everything raft can read, for comparing two stores.
fn view(store: &LogStore) -> (HardState, Vec<u64>, u64, u64, u64, Vec<Entry>) {
    let first = store.first_index().expect("first");
    let last = store.last_index().expect("last");
    let state = store.initial_state().expect("state");
    (
        state.hard_state,
        state.conf_state.voters,
        store.snapshot_index(),
        store.term(first - 1).expect("term before the first entry"),
        first,
        store
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .expect("entries"),
    )
}

fn segment_offsets(store: &LogStore) -> Vec<(String, Vec<u64>)> {
    store
        .segments
        .iter()
        .map(|s| (s.name.clone(), s.offsets.clone()))
        .collect()
}

#[test]
fn reopen_after_a_clean_close_or_a_power_loss_keeps_everything() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 30, 1)).expect("append");
    store.append(&entries(31, 40, 2)).expect("append");
    store.set_hard_state(&hard_state(2, 3, 35));
    store.persist().expect("persist");
    assert!(
        store.segment_names().len() > 3,
        "rolled into several segments"
    );
    let before = view(&store);
    drop(store);
    let again = open(&dir, SMALL).expect("reopens");
    assert_eq!(view(&again), before);
    drop(again);
    dir.power_loss();
    let again = open(&dir, SMALL).expect("reopens after power loss");
    assert_eq!(view(&again), before);
    assert_eq!(again.term(40).expect("term"), 2);
    assert_eq!(again.term(30).expect("term"), 1);
}

#[test]
fn an_append_at_or_below_the_last_index_replaces_the_suffix() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 20, 1)).expect("append");
    store.persist().expect("persist");
    let segments_before = store.segment_names().len();
    // Reaches back across segment boundaries.
    store.append(&entries(6, 8, 2)).expect("append");
    store.persist().expect("persist");
    assert_eq!(store.last_index().expect("last"), 8);
    assert_eq!(store.term(5).expect("term"), 1);
    assert_eq!(store.term(6).expect("term"), 2);
    assert!(store.segment_names().len() < segments_before);
    let before = view(&store);
    drop(store);
    dir.power_loss();
    let mut again = open(&dir, SMALL).expect("reopens");
    assert_eq!(view(&again), before, "no stale entry came back");
    // Below the snapshot is refused; a gap is refused.
    assert!(matches!(
        again.append(&entries(10, 10, 2)),
        Err(LogStoreError::NotContiguous { .. })
    ));
}

#[test]
fn a_torn_or_flipped_tail_is_cut_back_to_the_last_good_frame() {
    for damage in ["cut mid-frame", "flip a byte", "zeroed tail"] {
        let dir = Arc::new(MemDir::new());
        let mut store = open(&dir, StoreLimits::default()).expect("creates");
        store.append(&entries(1, 5, 1)).expect("append");
        store.set_hard_state(&hard_state(1, 1, 3));
        store.persist().expect("persist");
        let (name, offsets) = segment_offsets(&store).remove(0);
        drop(store);
        let mut bytes = dir.contents(&name).expect("segment");
        let last_frame = offsets[4] as usize;
        match damage {
            "cut mid-frame" => bytes.truncate(last_frame + 11),
            "flip a byte" => *bytes.last_mut().expect("bytes") ^= 0x40,
            _ => bytes[last_frame..].fill(0),
        }
        dir.tamper(&name, bytes);
        let again = open(&dir, StoreLimits::default()).expect("reopens");
        assert_eq!(again.last_index().expect("last"), 4, "{damage}");
        assert_eq!(
            dir.contents(&name).expect("segment").len(),
            last_frame,
            "{damage}: the file is cut at the last good frame"
        );
        // The cut is for good: the next append lands where the frame was.
        drop(again);
        let mut again = open(&dir, StoreLimits::default()).expect("reopens");
        again.append(&entries(5, 6, 1)).expect("append");
        again.persist().expect("persist");
        drop(again);
        dir.power_loss();
        let again = open(&dir, StoreLimits::default()).expect("reopens");
        assert_eq!(again.last_index().expect("last"), 6, "{damage}");
    }
}

#[test]
fn a_bad_frame_below_the_commit_index_is_refused_not_cut() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, StoreLimits::default()).expect("creates");
    store.append(&entries(1, 5, 1)).expect("append");
    store.set_hard_state(&hard_state(1, 1, 4));
    store.persist().expect("persist");
    let (name, offsets) = segment_offsets(&store).remove(0);
    drop(store);
    let mut bytes = dir.contents(&name).expect("segment");
    bytes[offsets[2] as usize + 20] ^= 1;
    dir.tamper(&name, bytes.clone());
    match open(&dir, StoreLimits::default()) {
        Err(LogStoreError::Corrupt { path, offset, .. }) => {
            assert!(path.ends_with(&name), "{path:?}");
            assert_eq!(offset, offsets[2]);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(dir.contents(&name), Some(bytes), "nothing was cut");
}

#[test]
fn corruption_in_an_earlier_segment_names_the_file_and_offset() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 30, 1)).expect("append");
    store.persist().expect("persist");
    let segments = segment_offsets(&store);
    assert!(segments.len() >= 3);
    drop(store);
    for (damage, frame) in [("flip", 1), ("oversized length", 0)] {
        let dir = Arc::new(MemDir::new());
        let mut store = open(&dir, SMALL).expect("creates");
        store.append(&entries(1, 30, 1)).expect("append");
        store.persist().expect("persist");
        drop(store);
        let (name, offsets) = &segments[1];
        let mut bytes = dir.contents(name).expect("segment");
        let at = offsets[frame] as usize;
        match damage {
            "flip" => bytes[at + 30] ^= 0x01,
            _ => bytes[at..at + 4].copy_from_slice(&(FRAME_LEN_MAX as u32 + 1).to_be_bytes()),
        }
        dir.tamper(name, bytes);
        match open(&dir, SMALL) {
            Err(LogStoreError::Corrupt { path, offset, .. }) => {
                assert!(path.ends_with(name), "{damage}: {path:?}");
                assert_eq!(offset, offsets[frame], "{damage}");
            }
            other => panic!("{damage}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(dir.names().len(), segments.len() + 1, "nothing deleted");
    }
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 30, 1)).expect("append");
    store.persist().expect("persist");
    let names = store.segment_names();
    drop(store);
    dir.remove(&names[1]).expect("remove");
    match open(&dir, SMALL) {
        Err(LogStoreError::Corrupt {
            path, offset: 0, ..
        }) => {
            assert!(path.ends_with(&names[2]), "{path:?}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_snapshot_cuts_the_log_keeps_a_tail_and_survives_reopen() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 40, 1)).expect("append");
    store.set_hard_state(&hard_state(1, 1, 40));
    store.persist().expect("persist");
    let segments_before = store.segment_names();
    assert!(store.snapshot_due(8) && !store.snapshot_due(7));
    store.create_snapshot(30, image_bytes()).expect("snapshot");
    let first = store.first_index().expect("first");
    assert!(
        first > 1 && first <= 30 - SMALL.tail_entries + 1,
        "first index {first}"
    );
    assert_eq!(store.term(first - 1).expect("term before the first"), 1);
    assert!(matches!(
        store.entries(first - 1, first, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    let names = dir.names();
    for gone in segments_before
        .iter()
        .filter(|s| !store.segment_names().contains(s))
    {
        assert!(!names.contains(gone), "{gone} deleted");
    }
    assert!(names.contains(&snapshot_name(30, 1)));
    assert!(!store.snapshot_due(30));
    // A second snapshot replaces the first file.
    store.create_snapshot(38, image_bytes()).expect("snapshot");
    assert!(!dir.names().contains(&snapshot_name(30, 1)));
    let before = view(&store);
    let snapshot = store.snapshot(0, 2).expect("snapshot");
    assert_eq!(snapshot.get_metadata().index, 38);
    assert_eq!(snapshot.get_metadata().get_conf_state().voters, VOTERS);
    drop(store);
    dir.power_loss();
    let again = open(&dir, SMALL).expect("reopens");
    assert_eq!(view(&again), before);
    assert_eq!(again.snapshot(0, 2).expect("snapshot"), snapshot);
    assert_eq!(again.image().expect("decodes"), MetadataImage::default());
}

#[test]
fn an_installed_snapshot_replaces_the_log() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    store.append(&entries(1, 20, 1)).expect("append");
    store.set_hard_state(&hard_state(2, 0, 10));
    store.persist().expect("persist");
    let mut snapshot = Snapshot {
        data: image_bytes(),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = 50;
    snapshot.mut_metadata().term = 2;
    snapshot.mut_metadata().mut_conf_state().voters = VOTERS.to_vec();
    store.install_snapshot(&snapshot).expect("installs");
    assert_eq!(store.first_index().expect("first"), 51);
    assert_eq!(store.last_index().expect("last"), 50);
    assert_eq!(store.term(50).expect("term"), 2);
    assert_eq!(store.hard_state().commit, 50);
    store.append(&entries(51, 52, 2)).expect("append");
    store.persist().expect("persist");
    let before = view(&store);
    drop(store);
    dir.power_loss();
    let again = open(&dir, SMALL).expect("reopens");
    assert_eq!(view(&again), before);
    let segments: Vec<String> = dir
        .names()
        .into_iter()
        .filter(|n| n.ends_with(SEGMENT_SUFFIX))
        .collect();
    assert_eq!(
        segments,
        vec![segment_name(51)],
        "the old segments are gone"
    );
}

#[test]
fn oversized_entries_are_refused_before_anything_is_written() {
    let dir = Arc::new(MemDir::new());
    let mut store = open(&dir, SMALL).expect("creates");
    let mut big = entry(1, 1);
    big.data = Bytes::from(vec![0; ENTRY_DATA_BYTES_MAX + 1]);
    assert!(matches!(
        store.append(&[big]),
        Err(LogStoreError::EntryTooLarge { .. })
    ));
}

/// What a scripted run had made durable when it stopped.
#[derive(Debug, Default, Clone)]
struct Durable {
    term: u64,
    vote: u64,
    commit: u64,
    /// Every entry ever durably committed, by index.
    committed: BTreeMap<u64, (u64, Bytes)>,
}

impl Durable {
    /// Records the store's state after a step that made it durable.
    fn note(&mut self, store: &LogStore) {
        let hs = store.hard_state();
        (self.term, self.vote, self.commit) = (hs.term, hs.vote, hs.commit);
        let first = store
            .first_index()
            .expect("first")
            .max(store.snapshot_index() + 1);
        for index in first..=hs.commit {
            let got = &store
                .entries(index, index + 1, None, GetEntriesContext::empty(false))
                .expect("committed entry")[0];
            let earlier = self.committed.insert(index, (got.term, got.data.clone()));
            if let Some(earlier) = earlier {
                assert_eq!(
                    earlier,
                    (got.term, got.data.clone()),
                    "committed entry {index} changed"
                );
            }
        }
    }

    /// A store reopened after a crash lost nothing this run made durable.
    fn check(&self, store: &LogStore, k: u64) {
        let hs = store.hard_state();
        assert!(hs.term >= self.term, "crash at {k}: term went back");
        if hs.term == self.term && self.vote != 0 {
            assert_eq!(
                hs.vote, self.vote,
                "crash at {k}: vote changed within a term"
            );
        }
        assert!(hs.commit >= self.commit, "crash at {k}: commit went back");
        let last = store.last_index().expect("last");
        for (index, (term, data)) in &self.committed {
            if *index <= store.snapshot_index() {
                continue;
            }
            assert!(*index <= last, "crash at {k}: committed entry {index} lost");
            let got = &store
                .entries(*index, index + 1, None, GetEntriesContext::empty(false))
                .expect("entry")[0];
            assert_eq!(
                (got.term, &got.data),
                (*term, data),
                "crash at {k}: entry {index}"
            );
        }
    }
}

/// A run touching every kind of write: appends across segments, hard
/// states, suffix truncation (also across segments), snapshots with
/// compaction, an installed snapshot.
fn script(store: &mut LogStore, durable: &mut Durable) -> Result<(), LogStoreError> {
    let step = |store: &mut LogStore, durable: &mut Durable, hs: HardState, append: Vec<Entry>| {
        store.append(&append)?;
        store.set_hard_state(&hs);
        store.persist()?;
        durable.note(store);
        Ok::<(), LogStoreError>(())
    };
    step(store, durable, hard_state(1, 1, 0), entries(1, 10, 1))?;
    // Raft commits entries in the Ready that appends them (a follower's
    // MsgAppend carries the commit): the entries must be durable first.
    step(store, durable, hard_state(2, 2, 9), entries(8, 14, 2))?;
    store.create_snapshot(9, image_bytes())?;
    durable.note(store);
    step(store, durable, hard_state(2, 2, 20), entries(15, 30, 2))?;
    step(store, durable, hard_state(3, 3, 35), entries(25, 35, 3))?;
    store.create_snapshot(33, image_bytes())?;
    durable.note(store);
    step(store, durable, hard_state(3, 3, 37), entries(36, 37, 3))?;
    let mut snapshot = Snapshot {
        data: image_bytes(),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = 40;
    snapshot.mut_metadata().term = 4;
    snapshot.mut_metadata().mut_conf_state().voters = VOTERS.to_vec();
    store.set_hard_state(&hard_state(4, 0, 37));
    store.install_snapshot(&snapshot)?;
    durable.note(store);
    step(store, durable, hard_state(4, 1, 43), entries(41, 45, 4))?;
    Ok(())
}

#[test]
fn a_crash_after_any_operation_loses_nothing_durable() {
    let mut k = 1;
    loop {
        let dir = Arc::new(MemDir::new());
        dir.fail_from(k);
        let mut durable = Durable::default();
        let finished = match open(&dir, SMALL) {
            Ok(mut store) => script(&mut store, &mut durable).is_ok(),
            Err(_) => false,
        };
        if finished {
            assert!(k > 50, "the script did I/O ({k} operations)");
            break;
        }
        dir.power_loss();
        let store = open(&dir, SMALL)
            .unwrap_or_else(|e| panic!("crash at operation {k}: reopen failed: {e}"));
        durable.check(&store, k);
        // What reopened is sound: a second reopen reads the same.
        let before = view(&store);
        drop(store);
        dir.power_loss();
        let again = open(&dir, SMALL).expect("reopens twice");
        assert_eq!(view(&again), before, "crash at {k}: second reopen");
        k += 1;
    }
}
