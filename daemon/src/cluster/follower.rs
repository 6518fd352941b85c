//! A broker that does not vote follows the committed metadata log by
//! fetching it from a voter: entries after the last index it applied, or
//! the snapshot they were compacted into. It fetches at once when a
//! heartbeat answer says the controller committed more, and every poll
//! interval otherwise. Sans-IO; the membership task moves the bytes.

use std::time::{Duration, Instant};

use crate::controller::image::MetadataImage;
use crate::controller::records::{BrokerId, RecordBatch};
use crate::controller::rpc::{ClusterMessage, MetadataChunk, Outcome, Reply};
use crate::controller::{ApplyError, CodecError, SnapshotError, decode_image};

/// A committed entry that does not apply: this broker cannot follow the
/// cluster and must stop (fail-stop), as a voter would.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("metadata entry {index} does not decode: {error}")]
    Decode { index: u64, error: CodecError },
    #[error("metadata entry does not apply: {0}")]
    Apply(#[from] ApplyError),
    #[error("metadata snapshot at {index} does not decode: {error}")]
    Snapshot { index: u64, error: SnapshotError },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    request_id: u64,
    sent_at: Instant,
}

pub struct MetadataFollower {
    image: MetadataImage,
    /// The last raft index applied, no-ops included.
    last_index: u64,
    pending: Option<Pending>,
    next_fetch_at: Instant,
    next_request_id: u64,
    poll_interval: Duration,
    request_timeout: Duration,
}

impl MetadataFollower {
    pub fn new(poll_interval: Duration, request_timeout: Duration, now: Instant) -> Self {
        MetadataFollower {
            image: MetadataImage::default(),
            last_index: 0,
            pending: None,
            next_fetch_at: now,
            // Far from the lifecycle's ids, so a stray answer never matches.
            next_request_id: 1 << 62,
            poll_interval,
            request_timeout,
        }
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.pending {
            Some(pending) => pending.sent_at + self.request_timeout,
            None => self.next_fetch_at,
        }
    }

    /// The fetch to send to `voter` now, if any. `known_commit`: the
    /// highest commit index the controller has reported.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        known_commit: u64,
        voter: BrokerId,
    ) -> Option<(BrokerId, ClusterMessage)> {
        if let Some(pending) = self.pending {
            if now < pending.sent_at + self.request_timeout {
                return None;
            }
            self.pending = None;
        }
        if now < self.next_fetch_at && known_commit <= self.last_index {
            return None;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.pending = Some(Pending {
            request_id,
            sent_at: now,
        });
        self.next_fetch_at = now + self.poll_interval;
        Some((
            voter,
            ClusterMessage::MetadataFetch {
                request_id,
                after_index: self.last_index,
            },
        ))
    }

    /// Whether `reply` answers this follower's fetch.
    pub fn owns(&self, reply: &Reply) -> bool {
        self.pending
            .is_some_and(|p| p.request_id == reply.request_id)
    }

    /// Applies a fetch answer; true when the image changed.
    pub fn handle_reply(&mut self, now: Instant, reply: Reply) -> Result<bool, FollowError> {
        if !self.owns(&reply) {
            return Ok(false);
        }
        self.pending = None;
        let chunk = match reply.outcome {
            Outcome::Metadata(chunk) => chunk,
            other => {
                tracing::debug!(event = "metadata_fetch_refused", outcome = ?other);
                return Ok(false);
            }
        };
        match chunk {
            MetadataChunk::Snapshot { index, image } => {
                if index <= self.last_index {
                    return Ok(false);
                }
                let image =
                    decode_image(&image).map_err(|error| FollowError::Snapshot { index, error })?;
                self.image = image;
                self.last_index = index;
                self.next_fetch_at = now;
                Ok(true)
            }
            MetadataChunk::Entries(entries) => {
                let mut changed = false;
                let fetched_any = !entries.is_empty();
                for (index, data) in entries {
                    if index <= self.last_index {
                        continue;
                    }
                    assert_eq!(index, self.last_index + 1, "entries arrive in order");
                    if !data.is_empty() {
                        let batch = RecordBatch::decode(&data)
                            .map_err(|error| FollowError::Decode { index, error })?;
                        self.image.apply(index, &batch)?;
                        changed = true;
                    }
                    self.last_index = index;
                }
                if fetched_any {
                    // More may follow a full chunk: ask again at once.
                    self.next_fetch_at = now;
                }
                Ok(changed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::controller::records::Record;
    use crate::controller::tests::registration;

    const MS: Duration = Duration::from_millis(1);

    fn batch(broker: BrokerId) -> Bytes {
        RecordBatch::new(vec![Record::RegisterBroker(registration(broker, 1))])
            .encode()
            .unwrap()
            .into()
    }

    fn fetch_id(message: &ClusterMessage) -> (u64, u64) {
        match message {
            ClusterMessage::MetadataFetch {
                request_id,
                after_index,
            } => (*request_id, *after_index),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn follows_entries_and_snapshots_and_fetches_again_when_behind() {
        let t0 = Instant::now();
        let mut follower = MetadataFollower::new(250 * MS, 250 * MS, t0);
        let (to, first) = follower.poll_transmit(t0, 0, 2).unwrap();
        assert_eq!(to, 2);
        let (id, after) = fetch_id(&first);
        assert_eq!(after, 0);
        let entries = vec![(1, Bytes::new()), (2, batch(5)), (3, batch(6))];
        let reply = Reply {
            request_id: id,
            outcome: Outcome::Metadata(MetadataChunk::Entries(entries)),
        };
        assert!(follower.handle_reply(t0, reply).unwrap());
        assert_eq!(follower.last_index(), 3);
        assert!(follower.image().broker(5).is_some() && follower.image().broker(6).is_some());
        // A full answer: fetch again at once, after 3.
        let (_, next) = follower.poll_transmit(t0, 3, 2).unwrap();
        let (id, after) = fetch_id(&next);
        assert_eq!(after, 3);
        let empty = Reply {
            request_id: id,
            outcome: Outcome::Metadata(MetadataChunk::Entries(Vec::new())),
        };
        assert!(!follower.handle_reply(t0, empty).unwrap());
        assert!(
            follower.poll_transmit(t0 + MS, 3, 2).is_none(),
            "caught up: wait"
        );
        let (_, behind) = follower
            .poll_transmit(t0 + 2 * MS, 9, 2)
            .expect("the controller is ahead");
        let (id, _) = fetch_id(&behind);
        // Compacted away: a snapshot replaces the image.
        let mut image = MetadataImage::default();
        image
            .apply(12, &RecordBatch::decode(&batch(7)).unwrap())
            .unwrap();
        let snapshot = Reply {
            request_id: id,
            outcome: Outcome::Metadata(MetadataChunk::Snapshot {
                index: 12,
                image: crate::controller::encode_image(&image).unwrap().into(),
            }),
        };
        assert!(follower.handle_reply(t0 + 3 * MS, snapshot).unwrap());
        assert_eq!(follower.last_index(), 12);
        assert!(follower.image().broker(7).is_some() && follower.image().broker(5).is_none());
    }

    #[test]
    fn a_stale_answer_is_ignored_and_a_silent_voter_is_asked_again() {
        let t0 = Instant::now();
        let mut follower = MetadataFollower::new(250 * MS, 100 * MS, t0);
        let (_, first) = follower.poll_transmit(t0, 0, 1).unwrap();
        assert!(follower.poll_transmit(t0 + 99 * MS, 5, 1).is_none());
        let (_, second) = follower.poll_transmit(t0 + 100 * MS, 5, 3).unwrap();
        let (stale, _) = fetch_id(&first);
        let late = Reply {
            request_id: stale,
            outcome: Outcome::Metadata(MetadataChunk::Entries(vec![(1, batch(5))])),
        };
        assert!(!follower.handle_reply(t0 + 101 * MS, late).unwrap());
        assert_eq!(follower.last_index(), 0);
        assert!(follower.owns(&Reply {
            request_id: fetch_id(&second).0,
            outcome: Outcome::NotController { leader: None },
        }));
    }
}
