//! The hybrid logical clock (HLC) that stamps every write, and the
//! deterministic last-writer-wins pick among siblings. docs/cluster.md,
//! "Versions".
//!
//! **Owns:** the 64-bit timestamp layout, the clock's rules for local events
//! and for timestamps received from other nodes (with a bound on how far
//! ahead a remote clock may be), and the total order plain `GET` uses to
//! answer one value out of several siblings. The physical time is an input:
//! the clock reads no system time itself, so simulations drive it.

use thiserror::Error;

use crate::NodeId;

/// Bits of a timestamp that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

/// Largest physical time a timestamp can hold (48 bits of milliseconds since
/// the Unix epoch: until the year 10889).
pub const MAX_PHYSICAL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// Default bound on how far ahead of our physical clock a remote timestamp
/// may be. One minute: far beyond NTP-synchronised skew, yet small enough
/// that one node with a wrong clock cannot drag every HLC in the cluster
/// hours into the future, after which no node's own writes would win a
/// last-writer-wins pick until real time caught up.
pub const DEFAULT_MAX_FORWARD_DRIFT_MS: u64 = 60_000;

/// A timestamp: physical milliseconds in the high 48 bits, a logical
/// counter in the low 16. Ordered as the `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Builds a timestamp; `physical_ms` is clamped to [`MAX_PHYSICAL_MS`].
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms.min(MAX_PHYSICAL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical part.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The next timestamp. When the logical counter is full it carries into
    /// the physical part (one millisecond ahead), which keeps monotonicity.
    fn next(self) -> Hlc {
        Hlc(self.0.saturating_add(1))
    }
}

/// A remote timestamp refused by [`Clock::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("remote timestamp {remote_ms} ms is {ahead_ms} ms ahead of local time (bound {max_ms} ms)")]
pub struct DriftError {
    /// The remote timestamp's physical part.
    pub remote_ms: u64,
    /// How far it is ahead of local physical time.
    pub ahead_ms: u64,
    /// The configured bound.
    pub max_ms: u64,
}

/// One node's hybrid logical clock.
///
/// Every timestamp it returns is strictly greater than every timestamp it
/// returned or accepted before.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    max_forward_drift_ms: u64,
}

impl Clock {
    /// A clock that refuses remote timestamps more than
    /// `max_forward_drift_ms` ahead of local physical time.
    pub fn new(max_forward_drift_ms: u64) -> Self {
        Self {
            last: Hlc::default(),
            max_forward_drift_ms,
        }
    }

    /// The last timestamp returned or accepted (for persisting a floor
    /// across restarts).
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Timestamps a local event (a write this node coordinates) at
    /// physical time `physical_ms`.
    pub fn now(&mut self, physical_ms: u64) -> Hlc {
        self.last = Hlc::new(physical_ms, 0).max(self.last.next());
        self.last
    }

    /// Takes in a timestamp received from another node and returns a
    /// timestamp for the receive event, after both.
    ///
    /// A remote timestamp whose physical part is more than the drift bound
    /// ahead of `physical_ms` is **refused** (the clock does not change):
    /// clamping it instead would produce a local timestamp that does not
    /// follow the remote event, silently breaking the order HLC exists to
    /// keep. The caller refuses the message and reports the peer's clock.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) -> Result<Hlc, DriftError> {
        let ahead_ms = remote.physical_ms().saturating_sub(physical_ms);
        if ahead_ms > self.max_forward_drift_ms {
            return Err(DriftError {
                remote_ms: remote.physical_ms(),
                ahead_ms,
                max_ms: self.max_forward_drift_ms,
            });
        }
        self.last = Hlc::new(physical_ms, 0)
            .max(self.last.next())
            .max(remote.next());
        Ok(self.last)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FORWARD_DRIFT_MS)
    }
}

/// What last-writer-wins orders siblings by: the HLC of the write, then the
/// coordinating node, then the value bytes. The derived order compares the
/// fields in that order, so the largest key wins and every node picks the
/// same winner from the same siblings whatever order they arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LwwKey<'a> {
    /// When the sibling was written.
    pub hlc: Hlc,
    /// The node that coordinated the write.
    pub node: NodeId,
    /// The value itself (the last tie-break: equal stamps from one node
    /// cannot carry different values unless a clock went wrong).
    pub value: &'a [u8],
}

/// The index of the last-writer-wins sibling, `None` when there are none.
pub fn lww_winner<'a>(siblings: impl IntoIterator<Item = LwwKey<'a>>) -> Option<usize> {
    siblings
        .into_iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.cmp(b))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_48_bits_physical_and_16_logical() {
        let hlc = Hlc::new(0x1234_5678_9abc, 0xdef0);
        assert_eq!(hlc.0, 0x1234_5678_9abc_def0);
        assert_eq!(hlc.physical_ms(), 0x1234_5678_9abc);
        assert_eq!(hlc.logical(), 0xdef0);
        assert_eq!(Hlc::new(u64::MAX, 0).physical_ms(), MAX_PHYSICAL_MS);
    }

    #[test]
    fn logical_counter_counts_within_a_millisecond_and_resets() {
        let mut clock = Clock::default();
        assert_eq!(clock.now(1000), Hlc::new(1000, 0));
        assert_eq!(clock.now(1000), Hlc::new(1000, 1));
        assert_eq!(clock.now(999), Hlc::new(1000, 2));
        assert_eq!(clock.now(1001), Hlc::new(1001, 0));
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let mut clock = Clock::default();
        clock.now(1000);
        for _ in 0..u16::MAX {
            clock.now(1000);
        }
        assert_eq!(clock.last(), Hlc::new(1000, u16::MAX));
        assert_eq!(clock.now(1000), Hlc::new(1001, 0));
        assert_eq!(
            clock.observe(Hlc::new(1001, u16::MAX), 1000),
            Ok(Hlc::new(1002, 0))
        );
    }

    #[test]
    fn observe_moves_past_remote_and_refuses_far_future() {
        let mut clock = Clock::new(500);
        assert_eq!(
            clock.observe(Hlc::new(1400, 3), 1000),
            Ok(Hlc::new(1400, 4))
        );
        assert_eq!(clock.now(1000), Hlc::new(1400, 5));
        let err = clock.observe(Hlc::new(1501, 0), 1000).unwrap_err();
        assert_eq!(err.ahead_ms, 501);
        assert_eq!(
            clock.last(),
            Hlc::new(1400, 5),
            "a refused timestamp changes nothing"
        );
    }

    #[test]
    fn lww_prefers_hlc_then_node_then_bytes() {
        let key = |hlc, node, value| LwwKey {
            hlc: Hlc(hlc),
            node,
            value,
        };
        assert_eq!(
            lww_winner([key(5, 1, b"a"), key(7, 0, b"a"), key(6, 9, b"z")]),
            Some(1)
        );
        assert_eq!(lww_winner([key(5, 2, b"a"), key(5, 3, b"a")]), Some(1));
        assert_eq!(lww_winner([key(5, 3, b"b"), key(5, 3, b"a")]), Some(0));
        assert_eq!(lww_winner(std::iter::empty()), None);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Now(u64),
        Observe {
            remote_ms: u64,
            logical: u16,
            local_ms: u64,
        },
    }

    fn event() -> impl Strategy<Value = Event> {
        let ms = 0..(1u64 << 40);
        prop_oneof![
            ms.clone().prop_map(Event::Now),
            (ms.clone(), any::<u16>(), ms).prop_map(|(remote_ms, logical, local_ms)| {
                Event::Observe {
                    remote_ms,
                    logical,
                    local_ms,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn monotonic_under_any_interleaving(
            events in proptest::collection::vec(event(), 1..60),
            drift in 0..(1u64 << 41),
        ) {
            let mut clock = Clock::new(drift);
            let mut previous = clock.last();
            for event in events {
                match event {
                    Event::Now(ms) => {
                        let t = clock.now(ms);
                        prop_assert!(t > previous);
                        prop_assert!(t.physical_ms() >= ms);
                        previous = t;
                    }
                    Event::Observe { remote_ms, logical, local_ms } => {
                        let remote = Hlc::new(remote_ms, logical);
                        match clock.observe(remote, local_ms) {
                            Ok(t) => {
                                prop_assert!(t > previous && t > remote);
                                previous = t;
                            }
                            Err(_) => {
                                prop_assert!(remote_ms > local_ms + drift);
                                prop_assert_eq!(clock.last(), previous);
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn lww_winner_does_not_depend_on_order(
            siblings in proptest::collection::vec((0..4u64, 0..3u64, proptest::collection::vec(any::<u8>(), 0..3)), 1..8),
            rotate in 0..8usize,
        ) {
            let keys: Vec<LwwKey<'_>> = siblings
                .iter()
                .map(|(hlc, node, value)| LwwKey { hlc: Hlc(*hlc), node: *node, value })
                .collect();
            let winner = keys[lww_winner(keys.iter().copied()).unwrap()];
            let mut rotated = keys.clone();
            rotated.rotate_left(rotate % keys.len());
            rotated.reverse();
            prop_assert_eq!(rotated[lww_winner(rotated.iter().copied()).unwrap()], winner);
            prop_assert!(keys.iter().all(|k| *k <= winner));
        }
    }
}
