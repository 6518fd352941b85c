//! Deadlines as data (quinn-style): every session and rebalance deadline
//! of every group lives in one table; the driver sleeps until the earliest.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Why a deadline exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    /// A member's session: no heartbeat, join or sync before it expires it.
    Session { group: String, member: String },
    /// A member id handed out with MEMBER_ID_REQUIRED that has not joined yet.
    PendingMember { group: String, member: String },
    /// The join barrier of a group in PreparingRebalance.
    Rebalance { group: String },
}

#[derive(Debug, Default)]
pub struct TimerTable {
    by_deadline: BTreeSet<(Instant, TimerKey)>,
    by_key: HashMap<TimerKey, Instant>,
}

impl TimerTable {
    /// Arms `key` at `at`, replacing any earlier setting.
    pub fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((at, key));
        assert_eq!(self.by_deadline.len(), self.by_key.len());
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        assert_eq!(self.by_deadline.len(), self.by_key.len());
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns up to `max` timers due at `now`, earliest first.
    pub fn pop_expired(&mut self, now: Instant, max: usize) -> Vec<TimerKey> {
        let mut expired = Vec::new();
        while expired.len() < max {
            match self.by_deadline.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let Some((_, key)) = self.by_deadline.pop_first() else {
                break;
            };
            self.by_key.remove(&key);
            expired.push(key);
        }
        expired
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_rearming_replaces() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        let a = TimerKey::Rebalance { group: "a".into() };
        let b = TimerKey::Rebalance { group: "b".into() };
        table.set(a.clone(), t0 + Duration::from_secs(5));
        table.set(b.clone(), t0 + Duration::from_secs(3));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(3)));
        table.set(b.clone(), t0 + Duration::from_secs(9));
        assert_eq!(table.len(), 2);
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(5)));
        assert!(
            table
                .pop_expired(t0 + Duration::from_secs(4), 10)
                .is_empty()
        );
        assert_eq!(
            table.pop_expired(t0 + Duration::from_secs(9), 10),
            vec![a, b.clone()]
        );
        assert!(table.is_empty());
        table.set(b.clone(), t0);
        table.cancel(&b);
        assert_eq!(table.next(), None);
    }
}
