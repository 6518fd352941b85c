//! One quorum node on its own: configuration checks, ticks from time, and a
//! single voter that leads and commits without any peer.

use std::sync::Arc;
use std::time::Instant;

use raft::eraftpb::{Message, MessageType};

use super::super::log_store::MemDir;
use super::*;

fn spec(self_id: BrokerId, voters: &[BrokerId]) -> QuorumSpec {
    QuorumSpec {
        self_id,
        voters: voters.to_vec(),
        election_seed: Some(7),
    }
}

fn open(spec: &QuorumSpec, dir: &Arc<MemDir>) -> Result<LogStore, QuorumError> {
    Quorum::open_store(spec, dir.clone(), StoreLimits::default())
}

fn start(spec: &QuorumSpec, now: Instant) -> Quorum {
    let store = open(spec, &Arc::new(MemDir::new())).expect("valid voters");
    Quorum::new(spec, store, now).expect("starts")
}

#[test]
fn a_single_voter_leads_after_one_ready_and_commits_a_proposal() {
    let now = Instant::now();
    let single = spec(0, &[0]);
    let mut quorum = start(&single, now);
    let effects = quorum.ready().expect("ready");
    assert!(effects.messages.is_empty(), "nobody to talk to");
    assert_eq!(quorum.role(), Role::Leader);
    assert_eq!(quorum.leader(), Some(0));
    assert_eq!(quorum.term(), 1);
    // The new leader's no-op commits in the same cycle.
    assert_eq!(effects.committed.len(), 1);
    assert!(effects.committed[0].data.is_empty());
    quorum.propose(b"batch".to_vec()).expect("leader accepts");
    let effects = quorum.ready().expect("ready");
    assert_eq!(effects.committed.len(), 1);
    assert_eq!(effects.committed[0].index, 2);
    assert_eq!(&effects.committed[0].data[..], b"batch");
    assert_eq!(quorum.commit_index(), 2);
}

#[test]
fn a_restarted_single_voter_replays_its_log_and_leads_again() {
    let now = Instant::now();
    let single = spec(4, &[4]);
    let dir = Arc::new(MemDir::new());
    let mut quorum =
        Quorum::new(&single, open(&single, &dir).expect("opens"), now).expect("starts");
    quorum.ready().expect("ready");
    quorum.propose(b"one".to_vec()).expect("accepted");
    quorum.ready().expect("ready");
    drop(quorum);
    // Only what `ready` made durable survives.
    dir.power_loss();
    let store = open(&single, &dir).expect("reopens");
    let mut again = Quorum::new(&single, store, now).expect("restarts");
    let effects = again.ready().expect("ready");
    let indexes: Vec<u64> = effects.committed.iter().map(|c| c.index).collect();
    assert_eq!(
        indexes,
        vec![1, 2, 3],
        "old log replayed, then the new no-op"
    );
    assert_eq!(again.term(), 2);
    assert_eq!(again.role(), Role::Leader);
}

#[test]
fn bad_or_changed_voters_are_refused() {
    let dir = Arc::new(MemDir::new());
    assert!(open(&spec(1, &[]), &dir).is_err());
    assert!(open(&spec(1, &[0, 2]), &dir).is_err(), "self not a voter");
    assert!(open(&spec(1, &[1, 1]), &dir).is_err(), "duplicate");
    assert!(open(&spec(-1, &[-1]), &dir).is_err());
    assert!(dir.names().is_empty(), "nothing written for a bad spec");
    open(&spec(1, &[0, 1, 2]), &dir).expect("valid");
    // The voters are on disk: a restart with other voters is refused.
    let store = open(&spec(1, &[1, 2, 3]), &dir).expect("reopens");
    match Quorum::new(&spec(1, &[1, 2, 3]), store, Instant::now()) {
        Err(QuorumError::VotersChanged { stored, spec }) => {
            assert_eq!(stored, vec![1, 2, 3]);
            assert_eq!(spec, vec![2, 3, 4]);
        }
        other => panic!("expected VotersChanged, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn time_becomes_ticks_and_a_long_stall_is_capped() {
    let start_at = Instant::now();
    let three = spec(0, &[0, 1, 2]);
    let mut quorum = start(&three, start_at);
    assert_eq!(quorum.handle_tick(start_at), 0);
    assert_eq!(quorum.handle_tick(start_at + TICK), 1);
    assert_eq!(quorum.handle_tick(start_at + TICK * 3 + TICK / 2), 2);
    assert_eq!(quorum.poll_timeout(), start_at + TICK * 4);
    let late = start_at + TICK * 1000;
    assert_eq!(quorum.handle_tick(late), TICKS_PER_CALL_MAX);
    assert_eq!(quorum.poll_timeout(), late + TICK);
    // Forty ticks without a leader: the follower asked both peers for
    // pre-votes once per election timeout.
    let effects = quorum.ready().expect("ready");
    assert!(
        effects
            .messages
            .iter()
            .all(|m| m.get_msg_type() == MessageType::MsgRequestPreVote)
    );
    assert!(effects.messages.len() >= 2 && effects.messages.len().is_multiple_of(2));
    assert_eq!(quorum.term(), 0, "pre-vote does not raise the term");
}

#[test]
fn misrouted_and_foreign_messages_are_refused() {
    let three = spec(0, &[0, 1, 2]);
    let mut quorum = start(&three, Instant::now());
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.to = 2;
    message.from = 2;
    message.term = 5;
    assert!(matches!(
        quorum.handle_message(message.clone()),
        Err(QuorumError::Misrouted { .. })
    ));
    message.to = 1;
    message.from = 9;
    assert!(matches!(
        quorum.handle_message(message.clone()),
        Err(QuorumError::NotAVoter(9))
    ));
    message.from = 2;
    message.set_msg_type(MessageType::MsgHup);
    assert!(
        quorum.handle_message(message).is_err(),
        "local message type"
    );
    assert_eq!(quorum.term(), 0, "nothing refused changed the state");
    assert!(matches!(
        quorum.propose(Vec::new()),
        Err(QuorumError::ProposalSize { .. })
    ));
}
