//! Dotted version vector sets (DVVSet): the causal history of one key and
//! the concurrent values (siblings) it holds. docs/cluster.md, "Versions".
//!
//! **Owns:** the clock algebra — `sync` (merge two replicas' copies of a
//! key), `update` (a coordinator's write), the context a client gets back
//! (`join`), comparison, and discarding siblings a context covers — plus
//! the compact binary form stored in the value envelope's causal-context
//! field. The algorithm is the one of Riak's `dvvset` (Almeida, Baquero,
//! Gonçalves, Preguiça, Fonte), written again here.
//!
//! An entry `(node, counter, values)` says: this key has seen events
//! `1..=counter` coordinated by `node`, and the newest `values.len()` of
//! them are still live, newest first. Values written without a dot
//! (`anonymous`) come from a client's `new` before a coordinator's
//! `update`; stored clocks normally have none.

use std::cmp::Ordering;

use bytes::Bytes;

use crate::codec::{put_varint, DecodeError, Reader};
use crate::NodeId;

/// The default cap on siblings per key, as Riak's `max_siblings` (100):
/// past it a write is refused with a clear error instead of growing the
/// value without bound (the "too many siblings" failure of plain vector
/// clocks). Callers compare [`DvvSet::len`] against their configured cap.
pub const DEFAULT_SIBLING_CAP: usize = 100;

/// Format version byte leading every encoded [`DvvSet`] and
/// [`VersionVector`].
const FORMAT_VERSION: u8 = 1;

/// A version vector: for each node, how many events it coordinated that
/// are known. It is the opaque causal context handed to clients by a
/// versioned read and taken back by a versioned write.
///
/// Kept canonical: sorted by node, no zero counters, so `==` is causal
/// equality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: Vec<(NodeId, u64)>,
}

impl VersionVector {
    /// The empty vector (knows nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from `(node, counter)` pairs in any order; a node
    /// named twice keeps its highest counter, zero counters are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (NodeId, u64)>) -> Self {
        let mut entries: Vec<(NodeId, u64)> = pairs.into_iter().filter(|p| p.1 > 0).collect();
        entries.sort_unstable();
        // Sorted ascending by (node, counter): keep the last of each node.
        let mut canonical: Vec<(NodeId, u64)> = Vec::with_capacity(entries.len());
        for (node, counter) in entries {
            match canonical.last_mut() {
                Some(last) if last.0 == node => last.1 = counter,
                _ => canonical.push((node, counter)),
            }
        }
        Self { entries: canonical }
    }

    /// The counter known for `node` (0 if none).
    pub fn get(&self, node: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(index) => self.entries[index].1,
            Err(_) => 0,
        }
    }

    /// `(node, counter)` pairs in node order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of nodes with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the vector knows no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pointwise maximum with `other` (the least upper bound).
    pub fn merge(&mut self, other: &VersionVector) {
        *self = Self::from_pairs(self.iter().chain(other.iter()));
    }

    /// True when `self` has seen every event `other` has (`self ≥ other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .iter()
            .all(|(node, counter)| self.get(node) >= counter)
    }

    /// True when `self < other`: `other` has seen all of `self` and more.
    pub fn less(&self, other: &VersionVector) -> bool {
        other.descends(self) && self != other
    }

    /// The causal order of the two vectors, `None` when concurrent.
    pub fn partial_cmp_causal(&self, other: &VersionVector) -> Option<Ordering> {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    // Format: [u8 version=1][varint count]{[varint node][varint counter]}*
    // nodes strictly ascending, counters ≥ 1.
    /// Compact binary form (the context given to clients).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.entries.len() as u64);
        for &(node, counter) in &self.entries {
            put_varint(&mut out, node);
            put_varint(&mut out, counter);
        }
        out
    }

    /// Decodes [`VersionVector::encode`]'s output; refuses non-canonical
    /// input (unsorted nodes, zero counters, trailing bytes).
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(input);
        check_version(&mut reader)?;
        let count = reader.count(2)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let node = reader.varint()?;
            let counter = reader.varint()?;
            check_entry_order(entries.last().map(|e: &(NodeId, u64)| e.0), node, counter)?;
            entries.push((node, counter));
        }
        reader.finish()?;
        Ok(Self { entries })
    }
}

/// One node's entry: events `1..=counter` seen, the newest `values.len()`
/// of them still live (newest first). Invariant: `values.len() ≤ counter`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<V> {
    node: NodeId,
    counter: u64,
    values: Vec<V>,
}

/// A dotted version vector set: the versions of one key.
///
/// Invariants: entries sorted by node with counters ≥ 1 and at most
/// `counter` values each; anonymous values sorted and distinct (so that
/// `sync` is exactly commutative and idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvvSet<V> {
    entries: Vec<Entry<V>>,
    anonymous: Vec<V>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            anonymous: Vec::new(),
        }
    }
}

impl<V: Clone + Ord> DvvSet<V> {
    /// A value written with no context (a blind write), before the
    /// coordinator gives it a dot with [`DvvSet::update`].
    pub fn new(value: V) -> Self {
        Self {
            entries: Vec::new(),
            anonymous: vec![value],
        }
    }

    /// A value written with the context of an earlier read: it will
    /// supersede every version that context covers.
    pub fn new_with_context(context: &VersionVector, value: V) -> Self {
        Self {
            entries: context
                .iter()
                .map(|(node, counter)| Entry {
                    node,
                    counter,
                    values: Vec::new(),
                })
                .collect(),
            anonymous: vec![value],
        }
    }

    /// Merges two replicas' copies of the key: the causal history of both,
    /// keeping every value neither side has seen superseded.
    pub fn sync(&self, other: &Self) -> Self {
        let anonymous = if self.less(other) {
            other.anonymous.clone()
        } else if other.less(self) {
            self.anonymous.clone()
        } else {
            let mut union: Vec<V> = self
                .anonymous
                .iter()
                .chain(&other.anonymous)
                .cloned()
                .collect();
            union.sort();
            union.dedup();
            union
        };
        Self {
            entries: sync_entries(&self.entries, &other.entries),
            anonymous,
        }
    }

    /// A coordinator's write: `self` comes from [`DvvSet::new`] or
    /// [`DvvSet::new_with_context`], `server` is the coordinator's current
    /// copy, `node` the coordinator. The result holds the new value under a
    /// fresh dot of `node`, plus every server value the context did not
    /// cover (those become siblings).
    ///
    /// Each anonymous value of `self` gets its own dot (normally there is
    /// exactly one).
    pub fn update(self, server: &Self, node: NodeId) -> Self {
        let context_only = Self {
            entries: self
                .entries
                .into_iter()
                .map(|entry| Entry {
                    values: Vec::new(),
                    ..entry
                })
                .collect(),
            anonymous: Vec::new(),
        };
        let mut result = context_only.sync(server);
        for value in self.anonymous {
            result.event(node, value);
        }
        result
    }

    /// Drops the values `context` covers and raises the clock to include
    /// it: what resolving siblings without writing a new value does.
    pub fn discard(&self, context: &VersionVector) -> Self {
        let anonymous = if context.descends(&self.join()) {
            Vec::new()
        } else {
            self.anonymous.clone()
        };
        let context_clock = Self {
            entries: context
                .iter()
                .map(|(node, counter)| Entry {
                    node,
                    counter,
                    values: Vec::new(),
                })
                .collect(),
            anonymous: Vec::new(),
        };
        let without_anonymous = Self {
            entries: self.entries.clone(),
            anonymous: Vec::new(),
        };
        Self {
            entries: without_anonymous.sync(&context_clock).entries,
            anonymous,
        }
    }

    /// Adds a new event of `node` carrying `value`.
    fn event(&mut self, node: NodeId, value: V) {
        match self.entries.binary_search_by_key(&node, |e| e.node) {
            Ok(index) => {
                let entry = &mut self.entries[index];
                // A counter at u64::MAX cannot come from real events (one per
                // write); saturating keeps a corrupt clock from panicking.
                entry.counter = entry.counter.saturating_add(1);
                entry.values.insert(0, value);
                entry.values.truncate(clamp_len(entry.counter));
            }
            Err(index) => self.entries.insert(
                index,
                Entry {
                    node,
                    counter: 1,
                    values: vec![value],
                },
            ),
        }
    }
}

impl<V> DvvSet<V> {
    /// The causal context of this key: what a versioned read returns.
    pub fn join(&self) -> VersionVector {
        VersionVector {
            entries: self.entries.iter().map(|e| (e.node, e.counter)).collect(),
        }
    }

    /// All live values (siblings): anonymous ones first, then by node,
    /// newest first within a node.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.anonymous
            .iter()
            .chain(self.entries.iter().flat_map(|e| e.values.iter()))
    }

    /// Live values with the node whose dot they carry (`None` for
    /// anonymous values): the node id last-writer-wins breaks ties with.
    pub fn values_with_node(&self) -> impl Iterator<Item = (Option<NodeId>, &V)> + '_ {
        self.anonymous.iter().map(|v| (None, v)).chain(
            self.entries
                .iter()
                .flat_map(|e| e.values.iter().map(move |v| (Some(e.node), v))),
        )
    }

    /// Number of live values (siblings). Compare with the configured cap
    /// (see [`DEFAULT_SIBLING_CAP`]) before storing a write.
    pub fn len(&self) -> usize {
        self.anonymous.len() + self.entries.iter().map(|e| e.values.len()).sum::<usize>()
    }

    /// True when no value is live (for example after a discard of all).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `self`'s causal history is strictly older than `other`'s.
    pub fn less(&self, other: &Self) -> bool {
        self.join().less(&other.join())
    }

    /// True when `self` has seen every event `other` has.
    pub fn descends(&self, other: &Self) -> bool {
        self.join().descends(&other.join())
    }

    /// The same clock with every value transformed (for example values
    /// replaced by indexes into a separately stored list).
    pub fn map<U>(&self, mut f: impl FnMut(&V) -> U) -> DvvSet<U> {
        DvvSet {
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    node: e.node,
                    counter: e.counter,
                    values: e.values.iter().map(&mut f).collect(),
                })
                .collect(),
            anonymous: self.anonymous.iter().map(f).collect(),
        }
    }

    // Format: [u8 version=1][varint entry count]
    //   {[varint node][varint counter][varint value count]{value}*}*
    //   [varint anonymous count]{value}*
    // nodes strictly ascending, counter ≥ 1, value count ≤ counter; each
    // value as `encode_value` writes it (at least one byte).
    /// Encodes the clock, writing each value with `encode_value`, which
    /// must write at least one byte per value.
    pub fn encode_with(&self, out: &mut Vec<u8>, mut encode_value: impl FnMut(&V, &mut Vec<u8>)) {
        out.push(FORMAT_VERSION);
        put_varint(out, self.entries.len() as u64);
        for entry in &self.entries {
            put_varint(out, entry.node);
            put_varint(out, entry.counter);
            put_varint(out, entry.values.len() as u64);
            for value in &entry.values {
                encode_value(value, out);
            }
        }
        put_varint(out, self.anonymous.len() as u64);
        for value in &self.anonymous {
            encode_value(value, out);
        }
    }
}

impl<V: Ord> DvvSet<V> {
    /// Decodes [`DvvSet::encode_with`]'s output, reading each value with
    /// `decode_value`. Never panics; refuses non-canonical clocks.
    pub fn decode_with(
        input: &[u8],
        mut decode_value: impl FnMut(&mut ValueReader<'_, '_>) -> Result<V, DecodeError>,
    ) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(input);
        check_version(&mut reader)?;
        let entry_count = reader.count(3)?;
        let mut entries: Vec<Entry<V>> = Vec::with_capacity(entry_count);
        for _ in 0..entry_count {
            let node = reader.varint()?;
            let counter = reader.varint()?;
            check_entry_order(entries.last().map(|e| e.node), node, counter)?;
            let value_count = reader.count(1)?;
            if value_count as u64 > counter {
                return Err(DecodeError::Invalid("more values than events in an entry"));
            }
            let mut values = Vec::with_capacity(value_count);
            for _ in 0..value_count {
                values.push(decode_value(&mut ValueReader(&mut reader))?);
            }
            entries.push(Entry {
                node,
                counter,
                values,
            });
        }
        let anonymous_count = reader.count(1)?;
        let mut anonymous = Vec::with_capacity(anonymous_count);
        for _ in 0..anonymous_count {
            anonymous.push(decode_value(&mut ValueReader(&mut reader))?);
        }
        if anonymous.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(DecodeError::Invalid(
                "anonymous values not sorted and distinct",
            ));
        }
        reader.finish()?;
        Ok(Self { entries, anonymous })
    }
}

impl DvvSet<Bytes> {
    /// Compact binary form with each value as `[varint length][bytes]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_with(&mut out, |value, out| {
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value);
        });
        out
    }

    /// Decodes [`DvvSet::encode`]'s output.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(input, |reader| {
            let len = reader.varint()?;
            let len = usize::try_from(len).map_err(|_| DecodeError::Invalid("value length"))?;
            Ok(Bytes::copy_from_slice(reader.bytes(len)?))
        })
    }
}

/// The bounds-checked reader a value decoder gets from
/// [`DvvSet::decode_with`].
pub struct ValueReader<'r, 'a>(&'r mut Reader<'a>);

impl ValueReader<'_, '_> {
    /// Reads an unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        self.0.varint()
    }

    /// Reads exactly `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Result<&[u8], DecodeError> {
        self.0.bytes(len)
    }
}

fn check_version(reader: &mut Reader<'_>) -> Result<(), DecodeError> {
    reader.version(FORMAT_VERSION)
}

fn check_entry_order(
    previous: Option<NodeId>,
    node: NodeId,
    counter: u64,
) -> Result<(), DecodeError> {
    if previous.is_some_and(|previous| previous >= node) {
        return Err(DecodeError::Invalid(
            "clock entries not in ascending node order",
        ));
    }
    if counter == 0 {
        return Err(DecodeError::Invalid("clock entry with a zero counter"));
    }
    Ok(())
}

/// A counter as a length bound (a counter past `usize::MAX` bounds nothing).
fn clamp_len(counter: u64) -> usize {
    usize::try_from(counter).unwrap_or(usize::MAX)
}

/// Merges two node-sorted entry lists (dvvset's `sync2`).
fn sync_entries<V: Clone>(left: &[Entry<V>], right: &[Entry<V>]) -> Vec<Entry<V>> {
    let mut out = Vec::with_capacity(left.len().max(right.len()));
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        match left[i].node.cmp(&right[j].node) {
            Ordering::Less => {
                out.push(left[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(right[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                out.push(merge_entry(&left[i], &right[j]));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&left[i..]);
    out.extend_from_slice(&right[j..]);
    out
}

/// Two replicas' entries for one node: the higher counter wins, and of its
/// values only those the other side has not already dropped survive. A value
/// is dropped once superseded, so the side whose oldest live event is newer
/// (`counter - len` larger) knows more.
fn merge_entry<V: Clone>(left: &Entry<V>, right: &Entry<V>) -> Entry<V> {
    let (high, low) = if left.counter >= right.counter {
        (left, right)
    } else {
        (right, left)
    };
    // `len ≤ counter` is an invariant (checked by decode); saturating keeps
    // a broken one from panicking.
    let high_oldest = high.counter.saturating_sub(high.values.len() as u64);
    let low_oldest = low.counter.saturating_sub(low.values.len() as u64);
    let keep = if high_oldest >= low_oldest {
        high.values.len()
    } else {
        // Keep only `high`'s values newer than `low`'s oldest live event.
        clamp_len(high.counter - low_oldest)
    };
    Entry {
        node: high.node,
        counter: high.counter,
        values: high.values.iter().take(keep).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(pairs: &[(NodeId, u64)]) -> VersionVector {
        VersionVector::from_pairs(pairs.iter().copied())
    }

    fn sorted_values<V: Clone + Ord>(set: &DvvSet<V>) -> Vec<V> {
        let mut values: Vec<V> = set.values().cloned().collect();
        values.sort();
        values
    }

    // Worked examples of update (docs/cluster.md, "Versions"), nodes a=1, b=2, c=3.
    #[test]
    fn update_follows_dvvset_examples() {
        let a0 = DvvSet::new("v1").update(&DvvSet::default(), 1);
        let a1 = DvvSet::new_with_context(&a0.join(), "v2").update(&a0, 1);
        let a2 = DvvSet::new_with_context(&a1.join(), "v3").update(&a1, 2);
        let a3 = DvvSet::new_with_context(&a0.join(), "v4").update(&a1, 2);
        let a4 = DvvSet::new_with_context(&a0.join(), "v5").update(&a1, 1);
        assert_eq!(a0.join(), vv(&[(1, 1)]));
        assert_eq!(sorted_values(&a1), vec!["v2"]);
        assert_eq!(a2.join(), vv(&[(1, 2), (2, 1)]));
        assert_eq!(sorted_values(&a2), vec!["v3"]);
        assert_eq!(sorted_values(&a3), vec!["v2", "v4"]);
        assert_eq!(a4.join(), vv(&[(1, 3)]));
        assert_eq!(a4.values().copied().collect::<Vec<_>>(), vec!["v5", "v2"]);
    }

    #[test]
    fn blind_write_keeps_what_it_did_not_see() {
        // Mary writes v1 blind; Peter reads v1; Mary writes v2 blind; Peter
        // writes v3 with v1's context: v1 goes, v2 and v3 stay as siblings.
        let a0 = DvvSet::new("v1").update(&DvvSet::default(), 1);
        let peter_context = a0.join();
        let a1 = DvvSet::new("v2").update(&a0, 1);
        assert_eq!(a1.values().copied().collect::<Vec<_>>(), vec!["v2", "v1"]);
        let a2 = DvvSet::new_with_context(&peter_context, "v3").update(&a1, 1);
        assert_eq!(a2.values().copied().collect::<Vec<_>>(), vec!["v3", "v2"]);
        assert_eq!(a2.len(), 2);
    }

    #[test]
    fn sync_keeps_concurrent_and_drops_superseded() {
        let w: DvvSet<&str> = DvvSet::new_with_context(&vv(&[(1, 1)]), "x").update_clock_only();
        let z = DvvSet::new("v1").update(&DvvSet::default(), 1);
        let z = DvvSet::new("v2").update(&z, 1);
        // w has seen a:1 (and dropped v1); z holds v2, v1.
        let synced = w.sync(&z);
        assert_eq!(synced.values().copied().collect::<Vec<_>>(), vec!["v2"]);
        assert_eq!(synced, z.sync(&w));
    }

    #[test]
    fn discard_resolves_covered_siblings_only() {
        let base = DvvSet::new("v1").update(&DvvSet::default(), 1);
        let left = DvvSet::new_with_context(&base.join(), "left").update(&base, 1);
        let right = DvvSet::new_with_context(&base.join(), "right").update(&base, 2);
        let both = left.sync(&right);
        assert_eq!(sorted_values(&both), vec!["left", "right"]);
        let later = DvvSet::new("late").update(&both, 2);
        let resolved = later.discard(&both.join());
        assert_eq!(sorted_values(&resolved), vec!["late"]);
        assert!(resolved.descends(&later));
    }

    #[test]
    fn decode_refuses_non_canonical_clocks() {
        let set = DvvSet::new(Bytes::from_static(b"v")).update(&DvvSet::default(), 7);
        let mut bytes = set.encode();
        assert_eq!(DvvSet::decode(&bytes).unwrap(), set);
        bytes.push(0);
        assert!(matches!(
            DvvSet::decode(&bytes),
            Err(DecodeError::TrailingBytes { count: 1 })
        ));
        // [v1][1 entry][node 1][counter 0][0 values][0 anonymous]
        assert!(DvvSet::decode(&[1, 1, 1, 0, 0, 0]).is_err());
        // [v1][1 entry][node 1][counter 1][2 values ...]: more values than events
        assert!(DvvSet::decode(&[1, 1, 1, 1, 2, 1, b'a', 1, b'b', 0]).is_err());
        // [v1][2 entries] nodes 5 then 3: not ascending
        assert!(DvvSet::decode(&[1, 2, 5, 1, 0, 3, 1, 0, 0]).is_err());
        assert!(matches!(
            DvvSet::decode(&[9]),
            Err(DecodeError::BadVersion { found: 9, .. })
        ));
    }

    impl<V: Clone + Ord> DvvSet<V> {
        /// Test helper: the clock of `self` with its anonymous values dropped.
        fn update_clock_only(self) -> Self {
            Self {
                entries: self.entries,
                anonymous: Vec::new(),
            }
        }
    }

    /// One step of a simulated cluster of three replicas (node ids 1..=3).
    #[derive(Debug, Clone)]
    enum Step {
        /// A client reads `read_from` (or writes blind) and writes through
        /// coordinator `via`.
        Write {
            via: usize,
            read_from: Option<usize>,
        },
        /// Replica `to` receives `from`'s copy.
        Sync { from: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, proptest::option::of(0..3usize))
                .prop_map(|(via, read_from)| Step::Write { via, read_from }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    /// Runs a history and returns every state any replica went through:
    /// states of one consistent history, the only ones sync is defined on.
    fn run(steps: &[Step]) -> Vec<DvvSet<u32>> {
        let mut replicas: Vec<DvvSet<u32>> = vec![DvvSet::default(); 3];
        let mut seen = vec![DvvSet::default()];
        for (value, step) in steps.iter().enumerate() {
            match *step {
                Step::Write { via, read_from } => {
                    let new = match read_from {
                        Some(r) => DvvSet::new_with_context(&replicas[r].join(), value as u32),
                        None => DvvSet::new(value as u32),
                    };
                    replicas[via] = new.update(&replicas[via], via as NodeId + 1);
                }
                Step::Sync { from, to } => replicas[to] = replicas[to].sync(&replicas[from]),
            }
            seen.extend(replicas.iter().cloned());
        }
        seen
    }

    fn history() -> impl Strategy<Value = (Vec<DvvSet<u32>>, usize, usize, usize)> {
        proptest::collection::vec(step(), 0..24).prop_flat_map(|steps| {
            let states = run(&steps);
            let n = states.len();
            (Just(states), 0..n, 0..n, 0..n)
        })
    }

    fn arb_vector() -> impl Strategy<Value = Vec<(u8, u8)>> {
        proptest::collection::vec((0..6u8, 0..5u8), 0..6)
    }

    fn oracle(pairs: &[(u8, u8)]) -> crdts::VClock<u64> {
        use crdts::CmRDT;
        let mut clock = crdts::VClock::new();
        for &(node, counter) in pairs {
            clock.apply(crdts::Dot::new(u64::from(node), u64::from(counter)));
        }
        clock
    }

    proptest! {
        #[test]
        fn sync_is_commutative_associative_idempotent((states, i, j, k) in history()) {
            let (a, b, c) = (&states[i], &states[j], &states[k]);
            prop_assert_eq!(a.sync(b), b.sync(a));
            prop_assert_eq!(a.sync(b).sync(c), a.sync(&b.sync(c)));
            prop_assert_eq!(a.sync(a), a.clone());
            // The merged clock is the least upper bound of both clocks.
            let mut joined = a.join();
            joined.merge(&b.join());
            prop_assert_eq!(a.sync(b).join(), joined);
        }

        #[test]
        fn descends_agrees_with_join((states, i, j, _k) in history()) {
            let (a, b) = (&states[i], &states[j]);
            prop_assert_eq!(a.descends(b), a.join().descends(&b.join()));
            prop_assert_eq!(a.less(b), b.descends(a) && a.join() != b.join());
            prop_assert!(a.sync(b).descends(a) && a.sync(b).descends(b));
        }

        #[test]
        fn write_with_read_context_supersedes_what_it_read((states, i, _j, _k) in history()) {
            let server = &states[i];
            let written = DvvSet::new_with_context(&server.join(), u32::MAX).update(server, 9);
            prop_assert_eq!(written.values().copied().collect::<Vec<_>>(), vec![u32::MAX]);
            prop_assert!(server.less(&written));
        }

        #[test]
        fn concurrent_writes_through_two_coordinators_are_siblings(
            (states, i, _j, _k) in history(),
        ) {
            let base = &states[i];
            let context = base.join();
            let left = DvvSet::new_with_context(&context, 1_000_001).update(base, 1);
            let right = DvvSet::new_with_context(&context, 1_000_002).update(base, 2);
            let merged = left.sync(&right);
            prop_assert_eq!(sorted_values(&merged), vec![1_000_001, 1_000_002]);
            // A write with the merged context resolves both.
            let resolved = DvvSet::new_with_context(&merged.join(), 7).update(&merged, 3);
            prop_assert_eq!(sorted_values(&resolved), vec![7]);
        }

        #[test]
        fn encode_round_trips((states, i, _j, _k) in history()) {
            let set = states[i].map(|v| Bytes::from(v.to_be_bytes().to_vec()));
            prop_assert_eq!(DvvSet::decode(&set.encode()).unwrap(), set.clone());
            let context = set.join();
            prop_assert_eq!(VersionVector::decode(&context.encode()).unwrap(), context);
        }

        #[test]
        fn decode_of_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DvvSet::decode(&bytes);
            let _ = VersionVector::decode(&bytes);
            // Also garbage after a valid version byte, to reach the body.
            let mut versioned = vec![FORMAT_VERSION];
            versioned.extend_from_slice(&bytes);
            if let Ok(set) = DvvSet::decode(&versioned) {
                prop_assert_eq!(DvvSet::decode(&set.encode()).unwrap(), set);
            }
            let _ = VersionVector::decode(&versioned);
        }

        #[test]
        fn version_vector_matches_crdts_vclock(a in arb_vector(), b in arb_vector()) {
            let ours_a = VersionVector::from_pairs(a.iter().map(|&(n, c)| (u64::from(n), u64::from(c))));
            let ours_b = VersionVector::from_pairs(b.iter().map(|&(n, c)| (u64::from(n), u64::from(c))));
            let (theirs_a, theirs_b) = (oracle(&a), oracle(&b));
            prop_assert_eq!(ours_a.partial_cmp_causal(&ours_b), theirs_a.partial_cmp(&theirs_b));
            let mut merged = ours_a.clone();
            merged.merge(&ours_b);
            let mut theirs = theirs_a.clone();
            crdts::CvRDT::merge(&mut theirs, theirs_b);
            let theirs_pairs: Vec<(u64, u64)> = theirs.iter().map(|dot| (*dot.actor, dot.counter)).collect();
            prop_assert_eq!(merged.iter().collect::<Vec<_>>(), theirs_pairs);
        }
    }
}
