//! The raft wire codec: round trips, limits, and bytes that must be refused
//! without a panic.

use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

use super::*;

fn entry(entry_type: EntryType, term: u64, index: u64, data: Vec<u8>) -> Entry {
    let mut entry = Entry::default();
    entry.set_entry_type(entry_type);
    entry.term = term;
    entry.index = index;
    entry.data = data.into();
    entry
}

fn append(entries: Vec<Entry>) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgAppend);
    message.to = 2;
    message.from = 1;
    message.term = 7;
    message.log_term = 6;
    message.index = 41;
    message.commit = 40;
    message.set_entries(entries.into());
    message
}

#[test]
fn an_append_with_entries_round_trips() {
    let message = append(vec![
        entry(EntryType::EntryNormal, 7, 42, b"batch".to_vec()),
        entry(EntryType::EntryNormal, 7, 43, Vec::new()),
    ]);
    let bytes = encode(&message).expect("encodes");
    assert_eq!(decode(&bytes).expect("decodes"), message);
}

#[test]
fn a_snapshot_message_round_trips() {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.to = 3;
    message.from = 1;
    message.term = 4;
    let mut snapshot = Snapshot {
        data: b"image".to_vec().into(),
        ..Default::default()
    };
    snapshot.mut_metadata().index = 100;
    snapshot.mut_metadata().term = 3;
    snapshot
        .mut_metadata()
        .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    message.set_snapshot(snapshot);
    let bytes = encode(&message).expect("encodes");
    assert_eq!(decode(&bytes).expect("decodes"), message);
}

#[test]
fn every_message_type_round_trips_and_unknown_ones_are_refused() {
    for (number, msg_type) in MESSAGE_TYPES.iter().enumerate() {
        assert_eq!(*msg_type as usize, number, "table follows eraftpb.proto");
        let mut message = Message::default();
        message.set_msg_type(*msg_type);
        message.reject = true;
        message.reject_hint = 9;
        message.priority = -3;
        let bytes = encode(&message).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), message);
    }
    let mut bytes = encode(&Message::default()).expect("encodes");
    bytes[1] = MESSAGE_TYPES.len() as u8;
    assert_eq!(
        decode(&bytes),
        Err(WireError::UnknownMessageType(MESSAGE_TYPES.len() as u8))
    );
}

#[test]
fn oversized_fields_are_refused_on_both_sides() {
    let big = append(vec![entry(
        EntryType::EntryNormal,
        1,
        1,
        vec![0; ENTRY_DATA_BYTES_MAX + 1],
    )]);
    assert!(matches!(encode(&big), Err(WireError::TooLong { .. })));
    // A count that claims more entries than the bytes can hold is refused
    // before anything is allocated.
    let mut bytes = encode(&append(Vec::new())).expect("encodes");
    let count_at = bytes.len() - 5;
    bytes[count_at..count_at + 4].copy_from_slice(&(ENTRIES_PER_MESSAGE_MAX as u32).to_be_bytes());
    assert!(matches!(decode(&bytes), Err(WireError::Truncated { .. })));
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&bytes), Err(WireError::TooLong { .. })));
}

#[test]
fn trailing_bytes_bad_booleans_and_other_versions_are_refused() {
    let mut bytes = encode(&append(Vec::new())).expect("encodes");
    bytes.push(0);
    assert_eq!(decode(&bytes), Err(WireError::TrailingBytes(1)));
    bytes.pop();
    let last = bytes.len() - 1;
    bytes[last] = 2;
    assert!(matches!(decode(&bytes), Err(WireError::NotBoolean { .. })));
    bytes[0] = WIRE_VERSION + 1;
    assert!(matches!(
        decode(&bytes),
        Err(WireError::UnsupportedVersion { .. })
    ));
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        0usize..3,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(kind, term, index, data, context)| {
            let mut entry = entry(ENTRY_TYPES[kind], term, index, data);
            entry.context = context.into();
            entry
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        (0usize..MESSAGE_TYPES.len(), any::<[u64; 8]>()),
        (any::<bool>(), any::<u64>(), any::<i64>()),
        proptest::collection::vec(arb_entry(), 0..6),
        proptest::option::of((
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u64>(), 0..6),
            proptest::collection::vec(any::<u8>(), 0..32),
        )),
    )
        .prop_map(
            |((kind, numbers), (reject, hint, priority), entries, snapshot)| {
                let mut message = Message::default();
                message.set_msg_type(MESSAGE_TYPES[kind]);
                [
                    message.to,
                    message.from,
                    message.term,
                    message.log_term,
                    message.index,
                    message.commit,
                    message.commit_term,
                    message.request_snapshot,
                ] = numbers;
                message.reject = reject;
                message.reject_hint = hint;
                message.priority = priority;
                message.set_entries(entries.into());
                if let Some((index, term, voters, data)) = snapshot {
                    let mut snap = Snapshot::default();
                    snap.mut_metadata().index = index;
                    snap.mut_metadata().term = term;
                    snap.mut_metadata()
                        .set_conf_state(ConfState::from((voters, vec![])));
                    snap.data = data.into();
                    message.set_snapshot(snap);
                }
                message
            },
        )
}

proptest! {
    #[test]
    fn any_message_round_trips(message in arb_message()) {
        let bytes = encode(&message).expect("encodes");
        prop_assert_eq!(decode(&bytes).expect("decodes"), message);
    }

    #[test]
    fn every_truncation_is_refused(message in arb_message()) {
        let bytes = encode(&message).expect("encodes");
        for len in 0..bytes.len() {
            prop_assert!(decode(&bytes[..len]).is_err(), "prefix of {} bytes accepted", len);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(message in arb_message(), at in any::<prop::sample::Index>(), value in any::<u8>()) {
        let mut bytes = encode(&message).expect("encodes");
        let at = at.index(bytes.len());
        bytes[at] = value;
        if let Ok(decoded) = decode(&bytes) {
            prop_assert_eq!(encode(&decoded).expect("re-encodes"), bytes);
        }
    }
}
