//! The PN-counter behind INCR, DECR and INCRBY in cluster mode, with
//! request-id dedupe so a retried increment counts once. docs/cluster.md,
//! "Counters".
//!
//! **Owns:** the counter state one key holds on each replica, how two
//! replicas' states merge, the value clients see, and its compact encoding.
//! It does not decide which replicas to ask or when a retry happens (that is
//! the coordinator's).
//!
//! Each node that coordinated an increment has an entry: `p` (sum of
//! positive deltas), `n` (sum of negative deltas), `applied` (increments it
//! applied) and `recent` (the request ids of its last
//! [`RECENT_REQUESTS_PER_NODE`] increments, newest first). Merge takes the
//! pointwise maximum of `p`, `n` and `applied`, and the `recent` list of the
//! entry with the higher `(applied, recent)`; every component is a
//! semilattice, so merge is commutative, associative and idempotent.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

use crate::codec::{put_varint, DecodeError, Reader};
use crate::NodeId;

/// A client-chosen id naming one logical increment; a retry reuses it.
/// 128 bits so random ids do not collide (a client may also pack its own id
/// in the high 64 bits and a sequence number in the low 64).
pub type RequestId = u128;

/// How many request ids each node's entry remembers. A retry is recognised
/// while its first attempt is among the last this-many increments
/// coordinated by the node that applied it; 64 covers a client's retries
/// after a timeout under normal load and keeps a key's counter state small
/// (about 1 KiB per node that coordinated increments).
pub const RECENT_REQUESTS_PER_NODE: usize = 64;

/// Format version byte leading an encoded [`PnCounter`].
const FORMAT_VERSION: u8 = 1;

/// Why an increment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CounterError {
    /// The result would leave the range of a signed 64-bit integer, the
    /// error Redis gives ("increment or decrement would overflow"). Also
    /// returned when one node's lifetime sum of positive or negative deltas
    /// would pass `u64::MAX`.
    #[error("increment or decrement would overflow")]
    Overflow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeCounts {
    p: u64,
    n: u64,
    applied: u64,
    recent: Vec<RequestId>,
}

/// A PN-counter whose increments carry request ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnCounter {
    nodes: BTreeMap<NodeId, NodeCounts>,
}

impl PnCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `delta` as an increment coordinated by `node`. Returns
    /// `Ok(false)` without changing anything when `request_id` was already
    /// applied (on any node whose state this one has merged), `Ok(true)`
    /// when applied, and an error, changing nothing, on overflow.
    pub fn apply(
        &mut self,
        node: NodeId,
        delta: i64,
        request_id: RequestId,
    ) -> Result<bool, CounterError> {
        if self.contains(request_id) {
            return Ok(false);
        }
        let total = i128::from(self.value()?) + i128::from(delta);
        if i64::try_from(total).is_err() {
            return Err(CounterError::Overflow);
        }
        let mut counts = self.nodes.get(&node).cloned().unwrap_or_default();
        let side = if delta >= 0 {
            &mut counts.p
        } else {
            &mut counts.n
        };
        *side = side
            .checked_add(delta.unsigned_abs())
            .ok_or(CounterError::Overflow)?;
        counts.applied = counts.applied.saturating_add(1);
        counts.recent.insert(0, request_id);
        counts.recent.truncate(RECENT_REQUESTS_PER_NODE);
        self.nodes.insert(node, counts);
        Ok(true)
    }

    /// True when an increment with `request_id` is remembered as applied.
    pub fn contains(&self, request_id: RequestId) -> bool {
        self.nodes.values().any(|c| c.recent.contains(&request_id))
    }

    /// The counter's value: all positive deltas minus all negative ones.
    /// Concurrent increments through different nodes, each checked alone,
    /// can together pass the i64 range; that reads as
    /// [`CounterError::Overflow`].
    pub fn value(&self) -> Result<i64, CounterError> {
        let mut total: i128 = 0;
        for counts in self.nodes.values() {
            total = total
                .checked_add(i128::from(counts.p))
                .and_then(|t| t.checked_sub(i128::from(counts.n)))
                .ok_or(CounterError::Overflow)?;
        }
        i64::try_from(total).map_err(|_| CounterError::Overflow)
    }

    /// Merges another replica's state into this one.
    pub fn merge(&mut self, other: &PnCounter) {
        for (&node, theirs) in &other.nodes {
            let ours = self.nodes.entry(node).or_default();
            let recent = match (ours.applied, &ours.recent).cmp(&(theirs.applied, &theirs.recent)) {
                Ordering::Less => theirs.recent.clone(),
                _ => std::mem::take(&mut ours.recent),
            };
            *ours = NodeCounts {
                p: ours.p.max(theirs.p),
                n: ours.n.max(theirs.n),
                applied: ours.applied.max(theirs.applied),
                recent,
            };
        }
    }

    // Format: [u8 version=1][varint node count]
    //   {[varint node][varint p][varint n][varint applied]
    //    [varint recent count]{[u128 little-endian request id]}*}*
    // nodes strictly ascending; recent count ≤ RECENT_REQUESTS_PER_NODE and
    // ≤ applied.
    /// Compact binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.nodes.len() as u64);
        for (&node, counts) in &self.nodes {
            put_varint(&mut out, node);
            put_varint(&mut out, counts.p);
            put_varint(&mut out, counts.n);
            put_varint(&mut out, counts.applied);
            put_varint(&mut out, counts.recent.len() as u64);
            for id in &counts.recent {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// Decodes [`PnCounter::encode`]'s output. Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(input);
        reader.version(FORMAT_VERSION)?;
        let node_count = reader.count(5)?;
        let mut nodes = BTreeMap::new();
        let mut previous: Option<NodeId> = None;
        for _ in 0..node_count {
            let node = reader.varint()?;
            if previous.is_some_and(|p| p >= node) {
                return Err(DecodeError::Invalid("counter nodes not in ascending order"));
            }
            previous = Some(node);
            let p = reader.varint()?;
            let n = reader.varint()?;
            let applied = reader.varint()?;
            let recent_count = reader.count(16)?;
            if recent_count > RECENT_REQUESTS_PER_NODE || recent_count as u64 > applied {
                return Err(DecodeError::Invalid("too many recent request ids"));
            }
            let mut recent = Vec::with_capacity(recent_count);
            for _ in 0..recent_count {
                recent.push(reader.u128_le()?);
            }
            nodes.insert(
                node,
                NodeCounts {
                    p,
                    n,
                    applied,
                    recent,
                },
            );
        }
        reader.finish()?;
        Ok(Self { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let mut counter = PnCounter::new();
        assert_eq!(counter.apply(1, i64::MAX, 1), Ok(true));
        let before = counter.clone();
        assert_eq!(counter.apply(2, 1, 2), Err(CounterError::Overflow));
        assert_eq!(counter, before);
        assert_eq!(counter.apply(2, i64::MIN, 3), Ok(true));
        assert_eq!(counter.value(), Ok(-1));
        assert_eq!(counter.apply(2, i64::MIN, 4), Err(CounterError::Overflow));
    }

    #[test]
    fn concurrent_increments_past_range_read_as_overflow() {
        let mut left = PnCounter::new();
        let mut right = PnCounter::new();
        left.apply(1, i64::MAX, 1).unwrap();
        right.apply(2, 1, 2).unwrap();
        left.merge(&right);
        assert_eq!(left.value(), Err(CounterError::Overflow));
        assert_eq!(left.apply(3, -1, 3), Err(CounterError::Overflow));
    }

    #[test]
    fn request_ids_past_the_window_are_forgotten() {
        let mut counter = PnCounter::new();
        counter.apply(1, 1, 0).unwrap();
        for id in 1..=RECENT_REQUESTS_PER_NODE as u128 {
            counter.apply(1, 1, id).unwrap();
        }
        assert!(!counter.contains(0));
        assert!(counter.contains(RECENT_REQUESTS_PER_NODE as u128));
    }

    #[test]
    fn decode_refuses_bad_input() {
        let mut counter = PnCounter::new();
        counter.apply(3, -5, 77).unwrap();
        let bytes = counter.encode();
        assert_eq!(PnCounter::decode(&bytes).unwrap(), counter);
        for len in 0..bytes.len() {
            assert!(PnCounter::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        // [v1][1 node][node 1][p 0][n 0][applied 0][1 recent id ...]
        let mut more_ids_than_applied = vec![1, 1, 1, 0, 0, 0, 1];
        more_ids_than_applied.extend_from_slice(&[0; 16]);
        assert!(PnCounter::decode(&more_ids_than_applied).is_err());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Apply { node: usize, delta: i64, id: u128 },
        Merge { from: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, -100..100i64, 0..12u128).prop_map(|(node, delta, id)| Step::Apply {
                node,
                delta,
                id
            }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Merge { from, to }),
        ]
    }

    fn states() -> impl Strategy<Value = (Vec<PnCounter>, usize, usize, usize)> {
        proptest::collection::vec(step(), 0..30).prop_flat_map(|steps| {
            let mut replicas = vec![PnCounter::new(); 3];
            let mut seen = vec![PnCounter::new()];
            for step in steps {
                match step {
                    Step::Apply { node, delta, id } => {
                        replicas[node].apply(node as NodeId, delta, id).unwrap();
                    }
                    Step::Merge { from, to } => {
                        let from_state = replicas[from].clone();
                        replicas[to].merge(&from_state);
                    }
                }
                seen.extend(replicas.iter().cloned());
            }
            let n = seen.len();
            (Just(seen), 0..n, 0..n, 0..n)
        })
    }

    fn merged(a: &PnCounter, b: &PnCounter) -> PnCounter {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent((s, i, j, k) in states()) {
            let (a, b, c) = (&s[i], &s[j], &s[k]);
            prop_assert_eq!(merged(a, b), merged(b, a));
            prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
            prop_assert_eq!(merged(a, a), a.clone());
            prop_assert_eq!(PnCounter::decode(&a.encode()).unwrap(), a.clone());
        }

        #[test]
        fn concurrent_increments_sum_exactly_in_any_merge_order(
            deltas in proptest::collection::vec(proptest::collection::vec(-1000..1000i64, 0..20), 1..6),
            order in Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
        ) {
            let mut replicas = Vec::new();
            let mut oracle_total = crdts::PNCounter::<u64>::new();
            let mut id = 0u128;
            for (node, node_deltas) in deltas.iter().enumerate() {
                let mut counter = PnCounter::new();
                for &delta in node_deltas {
                    id += 1;
                    prop_assert!(counter.apply(node as NodeId, delta, id).unwrap());
                    let op = if delta >= 0 {
                        oracle_total.inc_many(node as u64, delta.unsigned_abs())
                    } else {
                        oracle_total.dec_many(node as u64, delta.unsigned_abs())
                    };
                    crdts::CmRDT::apply(&mut oracle_total, op);
                }
                replicas.push(counter);
            }
            // Merge in an order derived from the seed.
            let mut indexes: Vec<usize> = (0..replicas.len()).collect();
            indexes.sort_by_key(|&i| (order.rotate_left(i as u32 * 7)) ^ i as u64);
            let mut total = PnCounter::new();
            for i in indexes {
                total.merge(&replicas[i]);
                total.merge(&replicas[i]);
            }
            let expected: i64 = deltas.iter().flatten().sum();
            prop_assert_eq!(total.value(), Ok(expected));
            prop_assert_eq!(oracle_total.read().to_string(), expected.to_string());
        }

        #[test]
        fn a_retried_request_counts_once(
            delta in -1000..1000i64,
            retry_on_other_node in any::<bool>(),
            noise in proptest::collection::vec(-5..5i64, 0..10),
        ) {
            let mut first = PnCounter::new();
            prop_assert!(first.apply(1, delta, 42).unwrap());
            for (i, &d) in noise.iter().enumerate() {
                first.apply(1, d, 1000 + i as u128).unwrap();
            }
            let expected = first.value().unwrap();
            let mut retry = if retry_on_other_node {
                let mut other = PnCounter::new();
                other.apply(2, 0, 7).unwrap();
                other.merge(&first);
                other
            } else {
                first.clone()
            };
            prop_assert!(!retry.apply(2, delta, 42).unwrap());
            prop_assert_eq!(retry.value().unwrap(), expected);
            // And once more after merging back.
            first.merge(&retry);
            prop_assert!(!first.apply(1, delta, 42).unwrap());
            prop_assert_eq!(first.value().unwrap(), expected);
        }

        #[test]
        fn decode_of_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut versioned = vec![FORMAT_VERSION];
            versioned.extend_from_slice(&bytes);
            for input in [&bytes[..], &versioned[..]] {
                if let Ok(counter) = PnCounter::decode(input) {
                    prop_assert_eq!(PnCounter::decode(&counter.encode()).unwrap(), counter.clone());
                    let _ = counter.value();
                }
            }
        }
    }
}
