//! Where a follower's log diverges from its leader's (KIP-279). The
//! follower asks the leader where its own latest epoch ends there; the
//! leader answers with the largest epoch it knows at or below that one and
//! where that epoch ends in its log. When the leader names an older epoch,
//! the follower's records from the first local epoch after it onwards were
//! never written under the leader's history: the follower cuts at the
//! earlier of the two ends and asks again, until both name the same epoch.
//! Pure decisions here, so every epoch history can be tested without I/O.

use crate::storage::epochs::EpochHistory;

/// The follower's log as the divergence check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalLog<'a> {
    /// Its leader-epoch history.
    pub epochs: &'a EpochHistory,
    /// Its log start.
    pub log_start_offset: u64,
    /// Its log end.
    pub log_end_offset: u64,
}

/// The leader's answer to "where does `epoch` end?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderAnswer {
    /// The largest epoch at or below the one asked, if the leader has one.
    pub epoch: Option<u32>,
    /// Where that epoch ends in the leader's log (its log start when none).
    pub end_offset: u64,
    /// The leader's log start.
    pub log_start_offset: u64,
}

/// What the follower does with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The logs agree up to the follower's end: replicate from there.
    Agreed,
    /// Cut everything at or after this offset; when `ask_again`, the epochs
    /// did not agree yet and the follower asks again with its new latest.
    Truncate {
        /// New log end.
        to: u64,
        /// Whether another round is needed.
        ask_again: bool,
    },
    /// Nothing here survives: start the log over, empty, at this offset
    /// (the later of the leader's and the local log start).
    Reset(u64),
}

/// The leader named an epoch newer than the one asked: it is not following
/// the protocol, and nothing may be truncated on its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("asked where epoch {asked} ends, the leader answered with the newer epoch {answered}")]
pub struct NewerEpochAnswer {
    /// The epoch the follower asked about.
    pub asked: u32,
    /// The epoch the leader answered with.
    pub answered: u32,
}

/// Decide what to do with the leader's answer to `asked` (the follower's
/// latest epoch).
pub fn next_step(local: LocalLog<'_>, asked: u32, answer: LeaderAnswer) -> Result<Step, NewerEpochAnswer> {
    let (target, ask_again) = match answer.epoch {
        // The leader has nothing at or below our latest epoch: everything it
        // holds was written later, from its log start on, and what it held
        // below that start (where ours may differ: epoch 5's records there,
        // ours from epochs 1 and 2) is gone with its history. Nothing can
        // vouch for any of ours: keep none (Kafka cuts to the follower's
        // high watermark; the leader's retention removes them anyway).
        None => return Ok(Step::Reset(answer.log_start_offset.max(local.log_start_offset))),
        Some(epoch) if epoch == asked => (answer.end_offset, false),
        Some(epoch) if epoch < asked => {
            // Our records after the end of `epoch` here are from epochs the
            // leader never had: keep at most up to where `epoch` ends on
            // both sides, then check the epoch we are left with.
            let local_end = local.epochs.end_offset_for(epoch, local.log_end_offset).map_or(0, |(_, end)| end);
            (answer.end_offset.min(local_end), true)
        }
        Some(answered) => return Err(NewerEpochAnswer { asked, answered }),
    };
    if target >= local.log_end_offset {
        return Ok(Step::Agreed);
    }
    if target < local.log_start_offset {
        // Every local record diverges. Start over at the later of the two
        // log starts: never below our own (a log cannot restart behind its
        // start), and the leader has nothing below its own.
        return Ok(Step::Reset(answer.log_start_offset.max(local.log_start_offset)));
    }
    Ok(Step::Truncate { to: target, ask_again })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let mut history = EpochHistory::default();
        for &(epoch, start) in entries {
            assert!(history.assign(epoch, start));
        }
        history
    }

    /// Run the protocol against a leader's history until it settles; the
    /// follower's final (log start, log end).
    fn settle(follower: &[(u32, u64)], start: u64, end: u64, leader: &[(u32, u64)], leader_end: u64) -> (u64, u64) {
        let leader = history(leader);
        let leader_start = leader.entries().first().map_or(leader_end, |&(_, start)| start);
        let mut local = history(follower);
        let mut end = end;
        for _ in 0..100 {
            let Some(asked) = local.latest_epoch() else { return (start, end) };
            let found = leader.end_offset_for(asked, leader_end);
            let answer = LeaderAnswer {
                epoch: found.map(|(epoch, _)| epoch),
                end_offset: found.map_or(leader_start, |(_, end)| end),
                log_start_offset: leader_start,
            };
            let log = LocalLog { epochs: &local, log_start_offset: start, log_end_offset: end };
            match next_step(log, asked, answer).unwrap() {
                Step::Agreed => return (start, end),
                Step::Truncate { to, ask_again } => {
                    end = to;
                    local.truncate_from_end(to);
                    if !ask_again {
                        return (start, end);
                    }
                }
                Step::Reset(offset) => return (offset, offset),
            }
        }
        panic!("the divergence check did not settle");
    }

    #[test]
    fn a_suffix_from_an_epoch_the_leader_never_had_is_cut_where_the_shared_epoch_ends_here() {
        // Follower: epoch 1 [0,100), epoch 3 [100,150). Leader: epoch 1
        // [0,120), epoch 2 [120,200), epoch 4 [200,250). The leader answers
        // epoch 3 with (2, 200): keeping up to 200 (the old rule) would keep
        // 100..150 from epoch 3, which the leader never had.
        assert_eq!(settle(&[(1, 0), (3, 100)], 0, 150, &[(1, 0), (2, 120), (4, 200)], 250), (0, 100));
    }

    #[test]
    fn several_epochs_the_leader_never_had_are_cut_over_several_rounds() {
        // Follower wrote under 2 and 3 after the leader moved on from 1 at 80.
        assert_eq!(settle(&[(1, 0), (2, 90), (3, 110)], 0, 130, &[(1, 0), (4, 80)], 300), (0, 80));
    }

    #[test]
    fn a_shared_latest_epoch_keeps_the_shorter_end() {
        assert_eq!(settle(&[(1, 0), (2, 50)], 0, 90, &[(1, 0), (2, 50), (3, 70)], 120), (0, 70));
        assert_eq!(settle(&[(1, 0), (2, 50)], 0, 60, &[(1, 0), (2, 50), (3, 70)], 120), (0, 60), "a prefix: kept");
    }

    #[test]
    fn a_follower_whose_epochs_all_precede_the_leaders_history_keeps_none_of_its_records() {
        // The leader's history starts at epoch 5 (offset 40): the follower's
        // epoch-2 records from 40 on were never the leader's, and those
        // below 40 nothing vouches for (the leader's were epoch 5 from 30,
        // say, before its retention removed them): start over at 40.
        assert_eq!(settle(&[(2, 0)], 0, 60, &[(5, 40)], 100), (40, 40));
        assert_eq!(settle(&[(1, 0), (2, 35)], 0, 60, &[(5, 40)], 100), (40, 40), "epoch-1 and 2 records at 30..40");
        // Behind the leader's log start entirely: start over there.
        assert_eq!(settle(&[(2, 0)], 10, 30, &[(5, 40)], 100), (40, 40));
        // The leader's history starts at its log start 0: everything goes.
        assert_eq!(settle(&[(2, 0)], 0, 60, &[(5, 0)], 100), (0, 0));
    }

    #[test]
    fn a_cut_below_the_local_log_start_empties_the_log_at_the_later_log_start() {
        // Retention moved our start to 100, but the leader's epoch 1 ended at 80.
        let local = history(&[(1, 0), (3, 100)]);
        let log = LocalLog { epochs: &local, log_start_offset: 100, log_end_offset: 150 };
        let answer = LeaderAnswer { epoch: Some(1), end_offset: 80, log_start_offset: 60 };
        assert_eq!(next_step(log, 3, answer), Ok(Step::Reset(100)), "never behind our own start");
        let answer = LeaderAnswer { epoch: Some(1), end_offset: 80, log_start_offset: 120 };
        assert_eq!(next_step(log, 3, answer), Ok(Step::Reset(120)), "nor behind the leader's");
    }

    #[test]
    fn an_answer_with_a_newer_epoch_than_asked_is_refused() {
        let local = history(&[(1, 0)]);
        let log = LocalLog { epochs: &local, log_start_offset: 0, log_end_offset: 10 };
        let answer = LeaderAnswer { epoch: Some(2), end_offset: 5, log_start_offset: 0 };
        assert_eq!(next_step(log, 1, answer), Err(NewerEpochAnswer { asked: 1, answered: 2 }));
    }
}
