//! The broker's side of membership on a virtual clock.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::config::HostPort;
use crate::controller::quorum::{ELECTION_TICKS_MAX, ELECTION_TICKS_MIN, TICK};

const MS: Duration = Duration::from_millis(1);
const TIMINGS: Timings = Timings {
    heartbeat_interval: Duration::from_millis(250),
    session_timeout: Duration::from_millis(1500),
    request_timeout: Duration::from_millis(250),
};

fn registration(broker_id: BrokerId) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id: Uuid::from_u128(5),
        kafka: HostPort {
            host: "127.0.0.2".into(),
            port: 9092,
        },
        quic: "127.0.0.2:9093".parse().unwrap(),
        rack: None,
    }
}

fn lifecycle(broker_id: BrokerId, now: Instant) -> Lifecycle {
    Lifecycle::new(
        registration(broker_id),
        "aa".into(),
        vec![1, 2, 3],
        TIMINGS,
        now,
    )
}

fn reply(request_id: u64, outcome: Outcome) -> Reply {
    Reply {
        request_id,
        outcome,
    }
}

fn request_id(message: &ClusterMessage) -> u64 {
    match message {
        ClusterMessage::Register(r) => r.request_id,
        ClusterMessage::Heartbeat(h) => h.request_id,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn registers_with_itself_first_then_heartbeats_and_holds_a_lease_from_the_send_time() {
    let t0 = Instant::now();
    let mut broker = lifecycle(2, t0);
    let (to, register) = broker.poll_transmit(t0, 0).expect("registers at once");
    assert_eq!(to, 2, "a voter asks its own controller first");
    assert!(matches!(register, ClusterMessage::Register(_)));
    assert!(
        broker.poll_transmit(t0 + MS, 0).is_none(),
        "one request at a time"
    );
    broker.handle_reply(
        t0 + 5 * MS,
        2,
        reply(
            request_id(&register),
            Outcome::Registered { broker_epoch: 9 },
        ),
    );
    assert_eq!(
        broker.membership(),
        Membership::Registered {
            broker_epoch: 9,
            fenced: true
        }
    );
    assert!(!broker.lease_valid(t0 + 5 * MS), "fenced: no lease");
    let (_, heartbeat) = broker
        .poll_transmit(t0 + 5 * MS, 9)
        .expect("heartbeat at once");
    let ClusterMessage::Heartbeat(ref sent) = heartbeat else {
        panic!("{heartbeat:?}")
    };
    assert_eq!((sent.broker_epoch, sent.metadata_offset), (9, 9));
    broker.handle_reply(
        t0 + 40 * MS,
        2,
        reply(
            sent.request_id,
            Outcome::HeartbeatAck {
                fenced: false,
                metadata_commit: 9,
            },
        ),
    );
    assert!(broker.lease_valid(t0 + 1504 * MS));
    assert!(
        !broker.lease_valid(t0 + 1505 * MS),
        "the lease counts from the send time"
    );
    assert!(broker.poll_transmit(t0 + 100 * MS, 9).is_none());
    assert!(
        broker.poll_transmit(t0 + 255 * MS, 9).is_some(),
        "next heartbeat after the interval"
    );
}

#[test]
fn follows_the_named_controller_and_rotates_past_a_silent_one() {
    let t0 = Instant::now();
    let mut broker = lifecycle(7, t0);
    let (to, first) = broker.poll_transmit(t0, 0).unwrap();
    assert_eq!(to, 1);
    broker.handle_reply(
        t0,
        1,
        reply(
            request_id(&first),
            Outcome::NotController { leader: Some(3) },
        ),
    );
    let (to, second) = broker.poll_transmit(t0, 0).unwrap();
    assert_eq!(to, 3, "goes where it was sent");
    // 3 dies: after the request timeout the next voter in turn is asked.
    assert!(broker.poll_transmit(t0 + 249 * MS, 0).is_none());
    let (to, third) = broker.poll_transmit(t0 + 250 * MS, 0).unwrap();
    assert_eq!(to, 1);
    // The late answer to the timed-out request is ignored.
    broker.handle_reply(
        t0 + 260 * MS,
        3,
        reply(request_id(&second), Outcome::Registered { broker_epoch: 4 }),
    );
    assert_eq!(broker.membership(), Membership::Unregistered);
    broker.handle_reply(
        t0 + 270 * MS,
        1,
        reply(request_id(&third), Outcome::Registered { broker_epoch: 11 }),
    );
    assert_eq!(
        broker.membership(),
        Membership::Registered {
            broker_epoch: 11,
            fenced: true
        }
    );
}

#[test]
fn a_stale_epoch_registers_again_and_loses_the_lease() {
    let t0 = Instant::now();
    let mut broker = lifecycle(1, t0);
    let (_, register) = broker.poll_transmit(t0, 0).unwrap();
    broker.handle_reply(
        t0,
        1,
        reply(
            request_id(&register),
            Outcome::Registered { broker_epoch: 3 },
        ),
    );
    let (_, heartbeat) = broker.poll_transmit(t0, 3).unwrap();
    broker.handle_reply(
        t0,
        1,
        reply(
            request_id(&heartbeat),
            Outcome::HeartbeatAck {
                fenced: false,
                metadata_commit: 9,
            },
        ),
    );
    assert!(broker.lease_valid(t0));
    let (_, heartbeat) = broker.poll_transmit(t0 + 250 * MS, 3).unwrap();
    broker.handle_reply(
        t0 + 251 * MS,
        1,
        reply(
            request_id(&heartbeat),
            Outcome::Refused {
                code: 77,
                message: "stale".into(),
            },
        ),
    );
    assert!(!broker.lease_valid(t0 + 251 * MS));
    let (_, again) = broker.poll_transmit(t0 + 251 * MS, 3).unwrap();
    assert!(matches!(again, ClusterMessage::Register(_)));
}

/// The voters as a broker meets them while the active controller (1) dies:
/// before `death` 1 answers; until their election timeout the others still
/// name 1 (they cannot tell it is dead), name no one while they elect, then
/// name 2, which answers once it is active. Times in ms from the start.
struct Failover {
    death: u64,
    candidacy: u64,
    elected: u64,
    active: u64,
}

impl Failover {
    /// What `to` answers at `at` (ms), or `None`: it is dead.
    fn answer(&self, at: u64, to: BrokerId, message: &ClusterMessage) -> Option<Outcome> {
        let serves = match to {
            1 => at < self.death,
            2 => at >= self.active,
            _ => false,
        };
        if to == 1 && !serves {
            return None;
        }
        if serves {
            return Some(match message {
                ClusterMessage::Register(_) => Outcome::Registered { broker_epoch: 7 },
                _ => Outcome::HeartbeatAck {
                    fenced: false,
                    metadata_commit: 9,
                },
            });
        }
        let leader = match at {
            at if at < self.candidacy => Some(1),
            at if at < self.elected => None,
            _ => Some(2),
        };
        Some(Outcome::NotController { leader })
    }
}

/// The active controller dies; a new one starts every session afresh when
/// it becomes active. Every live broker (a voter or not, whatever the phase
/// of its heartbeats at the death) must reach the new controller before
/// that session ends, and keep reaching it: fenced otherwise, though alive;
/// and before its own lease runs out, so it never stops leading meanwhile.
#[test]
fn after_the_active_controller_dies_every_broker_reaches_the_new_one_within_its_session() {
    use crate::config::{DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS, DEFAULT_BROKER_SESSION_TIMEOUT_MS};
    let timings = Timings::from_spec(
        DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS,
        DEFAULT_BROKER_SESSION_TIMEOUT_MS,
    );
    let session = timings.session_timeout.as_millis() as u64;
    // One-way delay of every message, ms.
    const LATENCY: u64 = 1;
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    for broker_id in [2, 3, 4] {
        // The death at every phase of the broker's heartbeats; the
        // election timeout at both ends of its range (0.3–0.45 s), then a
        // vote round and the activation (an entry of the new term applied).
        let tick = TICK.as_millis() as u64;
        let elections = [
            ELECTION_TICKS_MIN as u64 * tick,
            ELECTION_TICKS_MAX as u64 * tick,
        ];
        for death in (1_000..1_000 + 2 * DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS).step_by(7) {
            for election in elections {
                let failover = Failover {
                    death,
                    candidacy: death + election,
                    elected: death + election + 20,
                    active: death + election + 40,
                };
                let mut broker = Lifecycle::new(
                    registration(broker_id),
                    "aa".into(),
                    vec![1, 2, 3],
                    timings,
                    at(0),
                );
                // Answers in flight: (arrival at the broker, from, reply).
                let mut in_flight: Vec<(u64, BrokerId, Reply)> = Vec::new();
                // When the new controller's session for this broker ends.
                let mut deadline = failover.active + session;
                let end = failover.active + 3 * session;
                let mut first_arrival = None;
                // How long the broker's lease was out (ms) after the death.
                let mut lapsed = 0;
                for now in 0..end {
                    if now >= death && !broker.lease_valid(at(now)) {
                        lapsed += 1;
                    }
                    in_flight.sort_by_key(|(when, _, _)| *when);
                    while in_flight.first().is_some_and(|(when, _, _)| *when <= now) {
                        let (_, from, reply) = in_flight.remove(0);
                        broker.handle_reply(at(now), from, reply);
                    }
                    while let Some((to, message)) = broker.poll_transmit(at(now), 9) {
                        let arrival = now + LATENCY;
                        if to == 2 && arrival >= failover.active {
                            assert!(
                                arrival < deadline,
                                "broker {broker_id} (death at {death} ms, election {election} ms): \
                                 reached the new controller at {arrival} ms, its session there \
                                 ended at {deadline} ms"
                            );
                            deadline = arrival + session;
                            first_arrival.get_or_insert(arrival);
                        }
                        if let Some(outcome) = failover.answer(arrival, to, &message) {
                            let reply = Reply {
                                request_id: request_id(&message),
                                outcome,
                            };
                            in_flight.push((arrival + LATENCY, to, reply));
                        }
                    }
                }
                assert!(end < deadline, "broker {broker_id}: silent at the end");
                let first = first_arrival.expect("reached the new controller") - failover.active;
                // At worst one request given up at the dead voter, then one
                // redirection: well inside half a session, so a lost
                // heartbeat or two after it does not cost the session.
                assert!(
                    first < session / 2,
                    "broker {broker_id} (death at {death} ms, election {election} ms) took \
                     {first} ms to reach the new controller"
                );
                // The lease counts from the send time of the last heartbeat
                // the old controller acknowledged: the new controller's
                // first acknowledgement must come before it runs out, or
                // every broker stops leading while the controller fails over.
                assert_eq!(
                    lapsed, 0,
                    "broker {broker_id} (death at {death} ms, election {election} ms) was \
                     without a lease for {lapsed} ms"
                );
                assert_eq!(broker.controller(), Some(2));
                assert!(
                    broker.lease_valid(at(end)),
                    "broker {broker_id} lost its lease"
                );
            }
        }
    }
}
