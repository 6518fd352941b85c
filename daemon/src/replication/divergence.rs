//! Where a follower's log stops agreeing with its leader's, decided from
//! leader-epoch histories alone (KIP-101, KIP-279, and the diverging-epoch
//! fetch answers of KIP-595). Pure functions: the leader's check of a fetch
//! position, and the follower's truncation offset from the leader's answer.
//! A follower never truncates to its high watermark: only the suffix whose
//! epochs the leader does not share goes.

/// An epoch and the offset it ends at (the next epoch's start, or the log
/// end for the latest): OffsetForLeaderEpoch's answer, and a fetch
/// answer's `diverging_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

/// A fetch's "no epoch" (an empty follower log) and "no end offset".
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// What the leader makes of a follower's fetch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPosition {
    /// The follower's log agrees with ours up to `fetch_offset`: read from there.
    Read,
    /// The follower's last epoch ends earlier on our log, or we never had
    /// it: it must truncate (the answer carries this, not records).
    Diverging(EpochEnd),
    /// Below our log start or beyond our log end.
    OutOfRange,
}

/// The leader's check of a follower fetching at `fetch_offset` whose last
/// batch has epoch `last_fetched_epoch` (`UNDEFINED_EPOCH`: an empty log).
/// `our_end_for(epoch)` is our own OffsetForLeaderEpoch answer: the
/// largest epoch we have at or below `epoch` and where it ends; None if we
/// have no epoch at or below it.
pub fn check_fetch_position(
    fetch_offset: i64,
    last_fetched_epoch: i32,
    log_start_offset: i64,
    log_end_offset: i64,
    our_end_for: impl Fn(i32) -> Option<(i32, i64)>,
) -> FetchPosition {
    if last_fetched_epoch != UNDEFINED_EPOCH {
        match our_end_for(last_fetched_epoch) {
            None => {
                return FetchPosition::Diverging(EpochEnd {
                    epoch: UNDEFINED_EPOCH,
                    end_offset: UNDEFINED_OFFSET,
                });
            }
            Some((epoch, end_offset))
                if end_offset < fetch_offset || epoch < last_fetched_epoch =>
            {
                return FetchPosition::Diverging(EpochEnd { epoch, end_offset });
            }
            Some(_) => {}
        }
    }
    if fetch_offset < log_start_offset || fetch_offset > log_end_offset {
        return FetchPosition::OutOfRange;
    }
    FetchPosition::Read
}

/// What a follower does with its log after the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Drop every offset at or above this one, then fetch from the new end
    /// (with the epoch of the new last batch, so the leader checks again
    /// if this was only a step towards the common point).
    To(i64),
    /// Drop everything and start at the leader's log start (our fetch
    /// offset fell below it).
    StartAt(i64),
    /// The leader's answer does not say where the logs agree (it has no
    /// epoch history at or below ours): nothing is dropped; the follower
    /// logs it and asks again later.
    Unresolved,
}

/// A follower's truncation after a `diverging` answer. `our_end_for` is
/// the follower's own OffsetForLeaderEpoch lookup; `log_end` its log end.
pub fn truncation_for_diverging(
    diverging: EpochEnd,
    log_end: i64,
    our_end_for: impl Fn(i32) -> Option<(i32, i64)>,
) -> Truncation {
    if diverging.epoch == UNDEFINED_EPOCH || diverging.end_offset == UNDEFINED_OFFSET {
        return Truncation::Unresolved;
    }
    let offset = match our_end_for(diverging.epoch) {
        // We never had an epoch this low: what the leader has of it is
        // where we can agree at most.
        None => diverging.end_offset,
        // We have this epoch: the logs agree up to where both have it.
        Some((epoch, end)) if epoch == diverging.epoch => end.min(diverging.end_offset),
        // Our largest epoch below it ends at `end`, and the leader never
        // had ours: agree at most that far, then ask again with that epoch.
        Some((_, end)) => end,
    };
    Truncation::To(offset.min(log_end))
}

/// A follower's answer to OFFSET_OUT_OF_RANGE, knowing the leader's log
/// start. Below it: start over there. Above the leader's end can only
/// follow an unclean election the epochs did not reveal: unresolved.
pub fn truncation_for_out_of_range(fetch_offset: i64, leader_log_start: i64) -> Truncation {
    if fetch_offset < leader_log_start {
        Truncation::StartAt(leader_log_start)
    } else {
        Truncation::Unresolved
    }
}

#[cfg(test)]
#[path = "divergence_tests.rs"]
mod tests;
