//! Broker sessions as data (quinn-style, like group/timer.rs): one deadline
//! per broker, `last heartbeat arrival + session timeout`. Only the active
//! controller keeps this table; a new one starts every session afresh at
//! activation (it cannot know when the old one last heard from a broker),
//! which is why fencing takes longer when the controller dies too.
//!
//! Times are arrival times stamped by the transport, passed in: the table
//! never reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::records::BrokerId;

/// One entry per registered broker at most: the service touches only
/// brokers the image holds, so the image's broker count bounds the table.
#[derive(Debug)]
pub struct SessionTable {
    timeout: Duration,
    by_deadline: BTreeSet<(Instant, BrokerId)>,
    by_broker: BTreeMap<BrokerId, Instant>,
}

impl SessionTable {
    pub fn new(timeout: Duration) -> Self {
        assert!(!timeout.is_zero());
        SessionTable {
            timeout,
            by_deadline: BTreeSet::new(),
            by_broker: BTreeMap::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A heartbeat (or registration) from `broker_id` arrived at `arrival`.
    /// A deadline never moves back: arrivals handled out of order keep the later one.
    pub fn touch(&mut self, broker_id: BrokerId, arrival: Instant) {
        let deadline = arrival + self.timeout;
        let deadline = match self.by_broker.get(&broker_id) {
            Some(old) if *old >= deadline => return,
            Some(old) => {
                self.by_deadline.remove(&(*old, broker_id));
                deadline
            }
            None => deadline,
        };
        self.by_broker.insert(broker_id, deadline);
        self.by_deadline.insert((deadline, broker_id));
        assert_eq!(self.by_deadline.len(), self.by_broker.len());
    }

    /// Forgets a broker (unregistered, or its expiry handled).
    pub fn remove(&mut self, broker_id: BrokerId) {
        if let Some(old) = self.by_broker.remove(&broker_id) {
            self.by_deadline.remove(&(old, broker_id));
        }
        assert_eq!(self.by_deadline.len(), self.by_broker.len());
    }

    /// Whether the broker has a session that has not expired at `now`.
    pub fn is_alive(&self, broker_id: BrokerId, now: Instant) -> bool {
        self.by_broker
            .get(&broker_id)
            .is_some_and(|deadline| *deadline > now)
    }

    /// The earliest deadline: when the driver must wake next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns the brokers whose session ended at or before `now`,
    /// earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<BrokerId> {
        let mut expired = Vec::new();
        while let Some(&(at, broker_id)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            self.by_broker.remove(&broker_id);
            expired.push(broker_id);
        }
        assert_eq!(self.by_deadline.len(), self.by_broker.len());
        expired
    }

    /// This node became the active controller at `now`: every registered
    /// broker gets a full session from now, and no one else has one.
    pub fn activate(&mut self, now: Instant, registered: impl IntoIterator<Item = BrokerId>) {
        self.by_deadline.clear();
        self.by_broker.clear();
        for broker_id in registered {
            self.touch(broker_id, now);
        }
    }

    pub fn len(&self) -> usize {
        self.by_broker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_broker.is_empty()
    }
}
