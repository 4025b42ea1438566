//! The coordinator's quorum rounds as I/O-free state machines: a write
//! round counts acknowledgements up to W, a read round gathers R copies of a
//! record, merges them and names the replicas whose copy is behind (the
//! targets of read repair). docs/cluster.md, "Coordinator".
//!
//! **Owns:** when a round has succeeded or can no longer succeed, and the
//! error that says how many replicas answered. **Must not touch:** sending,
//! timers, the slot map: the caller feeds replies, failures and the timeout
//! in, so a simulation drives the same code as the server.

use std::fmt;

use crate::record::Record;
use crate::NodeId;

/// Where a round stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not decided yet.
    Pending,
    /// Enough replicas answered.
    Succeeded,
    /// Enough replicas failed (or the time ran out) that it cannot succeed.
    Failed(QuorumError),
}

/// Too few replicas answered in time: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumError {
    /// Replicas that answered.
    pub answered: usize,
    /// Replicas that had to.
    pub needed: usize,
    /// Replicas asked.
    pub asked: usize,
    /// Whether the round ran out of time (else replicas refused or failed).
    pub timed_out: bool,
    /// The last refusal or failure a replica answered with, if any: what an operator needs
    /// to tell a down node from, say, a map that moved under the request.
    pub cause: Option<String>,
}

impl QuorumError {
    /// The error with `cause` (the last failure seen) attached.
    pub fn with_cause(mut self, cause: Option<String>) -> QuorumError {
        self.cause = cause;
        self
    }
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} replicas answered{}, {} needed",
            self.answered,
            self.asked,
            if self.timed_out { " in time" } else { "" },
            self.needed
        )?;
        match &self.cause {
            Some(cause) => write!(f, " (last failure: {cause})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for QuorumError {}

/// What both rounds share: who was asked, who answered, who failed.
#[derive(Debug, Clone)]
struct Tally {
    asked: Vec<NodeId>,
    needed: usize,
    answered: Vec<NodeId>,
    failed: Vec<NodeId>,
    decided: Option<Progress>,
}

impl Tally {
    fn new(asked: Vec<NodeId>, needed: usize) -> Tally {
        assert!(
            (1..=asked.len()).contains(&needed),
            "a quorum of {needed} out of {} replicas",
            asked.len()
        );
        Tally {
            asked,
            needed,
            answered: Vec::new(),
            failed: Vec::new(),
            decided: None,
        }
    }

    /// Counts a reply from `from`; false if it does not count (not asked, or
    /// already heard from, or the round is decided).
    fn answer(&mut self, from: NodeId) -> bool {
        if self.decided.is_some()
            || !self.asked.contains(&from)
            || self.answered.contains(&from)
            || self.failed.contains(&from)
        {
            return false;
        }
        self.answered.push(from);
        true
    }

    fn fail(&mut self, from: NodeId) {
        if self.decided.is_none()
            && self.asked.contains(&from)
            && !self.answered.contains(&from)
            && !self.failed.contains(&from)
        {
            self.failed.push(from);
        }
    }

    fn error(&self, timed_out: bool) -> QuorumError {
        QuorumError {
            answered: self.answered.len(),
            needed: self.needed,
            asked: self.asked.len(),
            timed_out,
            cause: None,
        }
    }

    fn progress(&mut self) -> Progress {
        if let Some(decided) = &self.decided {
            return decided.clone();
        }
        let progress = if self.answered.len() >= self.needed {
            Progress::Succeeded
        } else if self.asked.len() - self.failed.len() < self.needed {
            Progress::Failed(self.error(false))
        } else {
            return Progress::Pending;
        };
        self.decided = Some(progress.clone());
        progress
    }

    fn time_out(&mut self) -> Progress {
        if self.decided.is_none() {
            self.decided = Some(Progress::Failed(self.error(true)));
        }
        self.progress()
    }
}

/// A write sent to the replicas of a key; succeeds at W acknowledgements.
#[derive(Debug, Clone)]
pub struct WriteRound {
    tally: Tally,
}

impl WriteRound {
    /// A round over `replicas` needing `w` acknowledgements.
    ///
    /// # Panics
    ///
    /// When `w` is 0 or more than the replicas: the caller checks W against
    /// N when it is configured.
    pub fn new(replicas: Vec<NodeId>, w: usize) -> WriteRound {
        WriteRound {
            tally: Tally::new(replicas, w),
        }
    }

    /// `from` stored the write.
    pub fn on_ack(&mut self, from: NodeId) -> Progress {
        self.tally.answer(from);
        self.tally.progress()
    }

    /// `from` refused or failed, or its connection broke.
    pub fn on_failure(&mut self, from: NodeId) -> Progress {
        self.tally.fail(from);
        self.tally.progress()
    }

    /// The round's time is up.
    pub fn on_timeout(&mut self) -> Progress {
        self.tally.time_out()
    }

    /// Replicas that acknowledged, in order.
    pub fn acked(&self) -> &[NodeId] {
        &self.tally.answered
    }
}

/// A write's round: W acknowledgements among the slot's replicas and, while a membership
/// change moves the slot (docs/cluster.md, "Joins and leaves"), W (at most the set's size)
/// among the target's replicas too, so that whichever set reads after the change completes
/// holds the write.
#[derive(Debug, Clone)]
pub struct ChangeRound {
    current: WriteRound,
    target: Option<WriteRound>,
}

impl ChangeRound {
    /// A round over `current`, and `target` if a change moves the slot, each needing `w`
    /// (clamped to its size).
    pub fn new(current: Vec<NodeId>, target: Option<Vec<NodeId>>, w: usize) -> ChangeRound {
        let wc = w.clamp(1, current.len());
        ChangeRound {
            current: WriteRound::new(current, wc),
            target: target.map(|target| {
                let wt = w.clamp(1, target.len());
                WriteRound::new(target, wt)
            }),
        }
    }

    /// `from` stored the write (it counts in each set it is in).
    pub fn on_ack(&mut self, from: NodeId) -> Progress {
        let a = self.current.on_ack(from);
        let b = self.target.as_mut().map(|t| t.on_ack(from));
        both(a, b)
    }

    /// `from` refused or failed.
    pub fn on_failure(&mut self, from: NodeId) -> Progress {
        let a = self.current.on_failure(from);
        let b = self.target.as_mut().map(|t| t.on_failure(from));
        both(a, b)
    }

    /// The round's time is up.
    pub fn on_timeout(&mut self) -> Progress {
        let a = self.current.on_timeout();
        let b = self.target.as_mut().map(WriteRound::on_timeout);
        both(a, b)
    }

    /// Replicas that acknowledged, either set's, without repeats.
    pub fn acked(&self) -> usize {
        let mut acked = self.current.acked().len();
        if let Some(target) = &self.target {
            acked += target
                .acked()
                .iter()
                .filter(|node| !self.current.acked().contains(node))
                .count();
        }
        acked
    }
}

/// Two rounds that must both succeed: failed when either failed.
fn both(a: Progress, b: Option<Progress>) -> Progress {
    match (a, b) {
        (a, None) => a,
        (Progress::Failed(e), _) | (_, Some(Progress::Failed(e))) => Progress::Failed(e),
        (Progress::Succeeded, Some(Progress::Succeeded)) => Progress::Succeeded,
        _ => Progress::Pending,
    }
}

/// A read sent to the replicas of a key; succeeds at R copies.
#[derive(Debug, Clone)]
pub struct ReadRound {
    tally: Tally,
    copies: Vec<(NodeId, Record)>,
}

impl ReadRound {
    /// A round over `replicas` needing `r` copies.
    ///
    /// # Panics
    ///
    /// When `r` is 0 or more than the replicas.
    pub fn new(replicas: Vec<NodeId>, r: usize) -> ReadRound {
        ReadRound {
            tally: Tally::new(replicas, r),
            copies: Vec::new(),
        }
    }

    /// `from` sent its copy (empty when it has none).
    pub fn on_reply(&mut self, from: NodeId, copy: Record) -> Progress {
        if self.tally.answer(from) {
            self.copies.push((from, copy));
        }
        self.tally.progress()
    }

    /// `from` failed, or its connection broke.
    pub fn on_failure(&mut self, from: NodeId) -> Progress {
        self.tally.fail(from);
        self.tally.progress()
    }

    /// The round's time is up.
    pub fn on_timeout(&mut self) -> Progress {
        self.tally.time_out()
    }

    /// Every copy received, merged: what the read answers from.
    pub fn merged(&self) -> Record {
        self.copies
            .iter()
            .fold(Record::empty(), |acc, (_, copy)| acc.merge(copy))
    }

    /// Replicas that answered with a copy the merged record has moved past:
    /// read repair sends them the merged record.
    pub fn stale(&self) -> Vec<NodeId> {
        let merged = self.merged();
        self.copies
            .iter()
            .filter(|(_, copy)| !copy.descends(&merged))
            .map(|(node, _)| *node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hlc::Hlc;
    use crate::record::{Body, Resolved, Sibling};

    fn failed(answered: usize, timed_out: bool) -> Progress {
        Progress::Failed(QuorumError {
            answered,
            needed: 2,
            asked: 3,
            timed_out,
            cause: None,
        })
    }

    #[test]
    fn a_write_succeeds_at_w_acks_and_fails_once_w_is_out_of_reach() {
        let mut round = WriteRound::new(vec![1, 2, 3], 2);
        assert_eq!(round.on_ack(1), Progress::Pending);
        assert_eq!(
            round.on_ack(1),
            Progress::Pending,
            "a duplicate ack counts once"
        );
        assert_eq!(
            round.on_ack(9),
            Progress::Pending,
            "a stranger's ack does not count"
        );
        assert_eq!(round.on_ack(3), Progress::Succeeded);
        // Decided: later news changes nothing.
        assert_eq!(round.on_failure(2), Progress::Succeeded);
        assert_eq!(round.acked(), &[1, 3]);

        let mut round = WriteRound::new(vec![1, 2, 3], 2);
        assert_eq!(round.on_failure(2), Progress::Pending);
        assert_eq!(round.on_ack(1), Progress::Pending);
        assert_eq!(round.on_failure(3), failed(1, false));
        assert_eq!(round.on_ack(3), failed(1, false));
    }

    #[test]
    fn a_timeout_says_how_many_answered() {
        let mut round = WriteRound::new(vec![1, 2, 3], 2);
        round.on_ack(2);
        let Progress::Failed(error) = round.on_timeout() else {
            panic!("a timeout before W acks fails the round");
        };
        assert_eq!(
            error.to_string(),
            "1 of 3 replicas answered in time, 2 needed"
        );
        let mut done = WriteRound::new(vec![1, 2, 3], 1);
        done.on_ack(3);
        assert_eq!(done.on_timeout(), Progress::Succeeded);
    }

    #[test]
    fn a_read_merges_r_copies_and_names_the_stale_replicas() {
        let old = Record::empty().write(
            None,
            Sibling {
                hlc: Hlc::new(10, 0),
                node: 1,
                expires_at_ms: None,
                body: Body::Value(Bytes::from_static(b"old")),
            },
            1,
        );
        let new = old.write(
            None,
            Sibling {
                hlc: Hlc::new(20, 0),
                node: 1,
                expires_at_ms: None,
                body: Body::Value(Bytes::from_static(b"new")),
            },
            1,
        );
        let mut round = ReadRound::new(vec![1, 2, 3], 2);
        assert_eq!(round.on_reply(2, old.clone()), Progress::Pending);
        assert_eq!(round.on_reply(1, new.clone()), Progress::Succeeded);
        assert_eq!(
            round.merged().resolve(0).unwrap(),
            Resolved::Value {
                value: Bytes::from_static(b"new"),
                expires_at_ms: None
            }
        );
        assert_eq!(round.stale(), vec![2]);
        // A replica with nothing is stale too; one that is current is not.
        let mut round = ReadRound::new(vec![1, 2, 3], 3);
        round.on_reply(1, new.clone());
        round.on_reply(2, Record::empty());
        assert_eq!(round.on_reply(3, new), Progress::Succeeded);
        assert_eq!(round.stale(), vec![2]);
    }

    #[test]
    #[should_panic(expected = "a quorum of 4 out of 3 replicas")]
    fn a_quorum_larger_than_the_replicas_is_a_caller_bug() {
        let _ = ReadRound::new(vec![1, 2, 3], 4);
    }

    #[test]
    fn a_write_during_a_change_needs_w_in_both_sets() {
        // Slot on [1, 2, 3] moving to [1, 2, 4]; W = 2.
        let mut round = ChangeRound::new(vec![1, 2, 3], Some(vec![1, 2, 4]), 2);
        assert_eq!(round.on_ack(3), Progress::Pending);
        assert_eq!(round.on_ack(4), Progress::Pending);
        assert_eq!(round.on_ack(1), Progress::Succeeded, "1 counts in both");
        assert_eq!(round.acked(), 3);

        // Two acks of the current set alone are not enough.
        let mut round = ChangeRound::new(vec![1, 2, 3], Some(vec![1, 2, 4]), 2);
        assert_eq!(round.on_ack(3), Progress::Pending);
        assert_eq!(round.on_failure(4), Progress::Pending);
        assert_eq!(round.on_ack(1), Progress::Pending, "the target has only 1");
        assert!(matches!(round.on_timeout(), Progress::Failed(_)));

        // The target failing past its W fails the write at once.
        let mut round = ChangeRound::new(vec![1, 2, 3], Some(vec![2, 4, 5]), 2);
        assert_eq!(round.on_failure(4), Progress::Pending);
        assert!(matches!(round.on_failure(5), Progress::Failed(_)));

        // No change: a plain W of N.
        let mut round = ChangeRound::new(vec![1, 2, 3], None, 2);
        assert_eq!(round.on_ack(2), Progress::Pending);
        assert_eq!(round.on_ack(3), Progress::Succeeded);
    }
}
