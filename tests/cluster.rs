//! Three `sluiced` processes on 127.0.0.1–3 form one cluster over QUIC with
//! mutual TLS: a static controller quorum, brokers registered and fenced by
//! their sessions. Failover is measured against the budget (2 s for
//! a new active controller or a dead broker's fencing, 3 s for both at
//! once); the assertions use generous bounds and the figures are printed
//! for docs/PERFORMANCE.md. Tests run one at a time: each starts three
//! daemons, and timings on two cores mean little when they share them.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, NODES};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous next to the budgets: a loaded CI machine must not fail them,
/// a broken failover (no election, no fencing) still does.
const NEW_CONTROLLER_BOUND: Duration = Duration::from_secs(5);
const FENCE_BOUND: Duration = Duration::from_secs(5);
const BOTH_BOUND: Duration = Duration::from_secs(7);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn fenced_count(cluster: &Cluster, active: i32) -> Option<f64> {
    cluster.gauge(active, "sluice_cluster_brokers{state=\"fenced\"}")
}

#[test]
fn three_processes_form_a_cluster_with_one_active_controller_and_every_broker_in() {
    let _serial = serial();
    let cluster = Cluster::start("");
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    // Every voter is in the same term, knows the active controller and
    // applies the same metadata log.
    let agreed = common::wait_until(Duration::from_secs(10), || {
        let term = |id| cluster.gauge(id, "sluice_controller_term");
        let applied = |id| cluster.gauge(id, "sluice_metadata_applied_index");
        NODES.iter().all(|id| {
            term(*id) == term(active)
                && applied(*id) == applied(active)
                && cluster.gauge(*id, "sluice_controller_leader") == Some(f64::from(active))
        })
    });
    assert!(agreed, "voters disagree:\n{}", cluster.logs());
    // Each broker's epoch is the index of the entry holding its registration.
    for id in NODES {
        let epoch = cluster.gauge(id, "sluice_broker_epoch").unwrap();
        let applied = cluster.gauge(id, "sluice_metadata_applied_index").unwrap();
        assert!(
            epoch > 0.0 && epoch <= applied,
            "node {id}: epoch {epoch}, applied {applied}"
        );
    }
}

#[test]
fn sigkill_of_a_broker_fences_it_within_its_session_and_it_rejoins_at_a_new_epoch() {
    let _serial = serial();
    let mut cluster = Cluster::start("");
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    let victim = NODES.into_iter().find(|id| *id != active).unwrap();
    let epoch_before = cluster.gauge(victim, "sluice_broker_epoch").unwrap();
    let killed = Instant::now();
    cluster.kill(victim);
    let fenced = cluster.time_until(killed, Duration::from_secs(20), |c| {
        fenced_count(c, active) == Some(1.0)
    });
    let fenced =
        fenced.unwrap_or_else(|| panic!("broker {victim} never fenced:\n{}", cluster.logs()));
    println!(
        "figure: broker {victim} fenced {:.3} s after SIGKILL (controller {active} alive)",
        fenced.as_secs_f64()
    );
    assert!(fenced <= FENCE_BOUND, "fenced after {fenced:?}");
    assert_eq!(
        cluster.active_controller(),
        Some(active),
        "the controller stayed"
    );

    cluster.spawn(victim);
    cluster.wait_formed(3, FORM_TIMEOUT);
    let epoch_after = cluster.gauge(victim, "sluice_broker_epoch").unwrap();
    assert!(
        epoch_after > epoch_before,
        "{epoch_after} after {epoch_before}"
    );
}

#[test]
fn sigkill_of_the_active_controller_elects_another_and_fences_its_broker() {
    let _serial = serial();
    let mut cluster = Cluster::start("");
    let first = cluster.wait_formed(3, FORM_TIMEOUT);
    let term_before = cluster.gauge(first, "sluice_controller_term").unwrap();
    let applied_before = cluster
        .gauge(first, "sluice_metadata_applied_index")
        .unwrap();
    let killed = Instant::now();
    cluster.kill(first);
    let elected = cluster.time_until(killed, Duration::from_secs(20), |c| {
        c.active_controller().is_some()
    });
    let elected = elected.unwrap_or_else(|| panic!("no new controller:\n{}", cluster.logs()));
    let second = cluster.active_controller().unwrap();
    let fenced = cluster.time_until(killed, Duration::from_secs(20), |c| {
        fenced_count(c, second) == Some(1.0)
    });
    let fenced =
        fenced.unwrap_or_else(|| panic!("broker {first} never fenced:\n{}", cluster.logs()));
    println!(
        "figure: SIGKILL of the active controller {first}: node {second} active after {:.3} s, \
         broker {first} fenced after {:.3} s",
        elected.as_secs_f64(),
        fenced.as_secs_f64()
    );
    assert_ne!(second, first);
    assert!(
        elected <= NEW_CONTROLLER_BOUND,
        "new controller after {elected:?}"
    );
    assert!(fenced <= BOTH_BOUND, "fenced after {fenced:?}");
    assert!(cluster.gauge(second, "sluice_controller_term").unwrap() > term_before);
    // Nothing committed is lost: the new controller's log reaches past
    // everything the old one had applied.
    assert!(
        cluster
            .gauge(second, "sluice_metadata_applied_index")
            .unwrap()
            > applied_before
    );

    cluster.spawn(first);
    cluster.wait_formed(3, FORM_TIMEOUT);
    assert_eq!(
        cluster.active_controller(),
        Some(second),
        "the returning voter took nothing over"
    );
}
