//! The broker's side of membership on a virtual clock.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::config::HostPort;

const MS: Duration = Duration::from_millis(1);
const TIMINGS: Timings = Timings {
    heartbeat_interval: Duration::from_millis(250),
    session_timeout: Duration::from_millis(1500),
    request_timeout: Duration::from_millis(250),
};

fn lifecycle(broker_id: BrokerId, now: Instant) -> Lifecycle {
    let registration = BrokerRegistration {
        broker_id,
        incarnation_id: Uuid::from_u128(5),
        kafka: HostPort {
            host: "127.0.0.2".into(),
            port: 9092,
        },
        quic: "127.0.0.2:9093".parse().unwrap(),
        rack: None,
    };
    Lifecycle::new(registration, "aa".into(), vec![1, 2, 3], TIMINGS, now)
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
