//! The versioned record of one key on a replica: its siblings under a
//! dotted version vector set, and what a read makes of them.
//! docs/cluster.md, "Records".
//!
//! **Owns:** the sibling format (value, tombstone, counter; HLC, coordinating
//! node, expiry), the replica-side events (a write, an increment), merging
//! two replicas' copies, and the deterministic resolution every node applies
//! on a read (last writer wins by HLC; counters merge). All pure functions.
//! **Must not touch:** where records are stored (the store), how they travel
//! (the transport), which replicas hold them (the slot map).
//!
//! The event of a write happens on one replica, the *event replica*, under
//! its key lock and with its own node id as the dot, against its local copy,
//! which holds every dot it ever issued for the key: so no dot is ever issued
//! twice, which [`DvvSet::sync`] relies on. The coordinator then sends the
//! resulting record to the other replicas, which [`Record::merge`] it into
//! theirs.

use bytes::Bytes;

use crate::codec::{put_varint, DecodeError};
use crate::counter::{CounterError, PnCounter, RequestId};
use crate::dvv::{DvvSet, ValueReader, VersionVector};
use crate::hlc::Hlc;
use crate::NodeId;

/// What one sibling holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body {
    /// The key was deleted (kept so the delete wins over older copies that
    /// read repair or anti-entropy would otherwise bring back).
    Tombstone,
    /// A string value.
    Value(Bytes),
    /// A PN-counter state ([`PnCounter::encode`]): INCR, DECR, INCRBY.
    Counter(Bytes),
}

/// One version of the key, written by one event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sibling {
    /// When it was written (the last-writer-wins order).
    pub hlc: Hlc,
    /// The node whose event wrote it (the tie-break after the HLC).
    pub node: NodeId,
    /// Absolute expiry, Unix ms: part of the version, so every replica
    /// agrees on when the key is gone.
    pub expires_at_ms: Option<u64>,
    /// The value.
    pub body: Body,
}

/// What a read of a record answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// No live value: never written, deleted, or expired.
    Absent,
    /// A string.
    Value {
        value: Bytes,
        expires_at_ms: Option<u64>,
    },
    /// A counter, with its merged value.
    Counter {
        value: i64,
        expires_at_ms: Option<u64>,
    },
}

/// Why an increment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncrementError {
    /// The live value is a string that is not an integer.
    #[error("value is not an integer or out of range")]
    NotInteger,
    /// The sum leaves the range of a signed 64-bit integer.
    #[error(transparent)]
    Counter(#[from] CounterError),
    /// A stored counter state does not decode (a damaged record).
    #[error("damaged counter state: {0}")]
    Damaged(DecodeError),
}

/// The outcome of [`Record::increment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremented {
    /// The record to store and send to the other replicas.
    pub record: Record,
    /// The counter's value after the increment, as this replica sees it.
    pub value: i64,
    /// False when the request id had been applied already (a retry): the
    /// record is unchanged and `value` is the current one.
    pub applied: bool,
}

/// A counter sibling's value (VGET shows each sibling); `None` for other bodies or a
/// damaged state.
pub fn counter_value(body: &Body) -> Option<i64> {
    match body {
        Body::Counter(state) => PnCounter::decode(state).ok()?.value().ok(),
        _ => None,
    }
}

/// The siblings of one key and their causal history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record(DvvSet<Sibling>);

impl Record {
    /// A key never written.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The causal context of everything this copy has seen: what a
    /// versioned read hands the client, and what a blind write supersedes.
    pub fn context(&self) -> VersionVector {
        self.0.join()
    }

    /// The siblings, in the clock's order.
    pub fn siblings(&self) -> impl Iterator<Item = &Sibling> + '_ {
        self.0.values()
    }

    /// Number of siblings (what the sibling cap bounds).
    pub fn sibling_count(&self) -> usize {
        self.0.len()
    }

    /// Merges another replica's copy into this one.
    pub fn merge(&self, other: &Record) -> Record {
        Record(self.0.sync(&other.0))
    }

    /// True when this copy has seen everything `other` has (a replica whose
    /// copy does not descend the merged one needs read repair).
    pub fn descends(&self, other: &Record) -> bool {
        self.0.descends(&other.0)
    }

    /// A write event on the event replica `me`, against its local copy
    /// `self`. `context` is the client's (a versioned write): siblings it
    /// does not cover stay. `None` is a blind write (a RESP client's SET),
    /// written with this copy's whole context, so it supersedes every
    /// version the replica has seen; versions it has not seen yet become
    /// siblings when they meet.
    pub fn write(&self, context: Option<&VersionVector>, sibling: Sibling, me: NodeId) -> Record {
        let context = context.cloned().unwrap_or_else(|| self.context());
        Record(DvvSet::new_with_context(&context, sibling).update(&self.0, me))
    }

    /// An increment event on the event replica `me`: the live counter (or
    /// the live integer string, converted) plus `delta`, as one new sibling
    /// that supersedes this copy. A request id already applied changes
    /// nothing. The key keeps its expiry, as INCR does in Redis.
    pub fn increment(
        &self,
        delta: i64,
        request_id: RequestId,
        hlc: Hlc,
        me: NodeId,
    ) -> Result<Incremented, IncrementError> {
        let (mut counter, expires_at_ms) = self.live_counter(hlc)?;
        let applied = counter.apply(me, delta, request_id)?;
        let value = counter.value()?;
        if !applied {
            return Ok(Incremented {
                record: self.clone(),
                value,
                applied,
            });
        }
        let sibling = Sibling {
            hlc,
            node: me,
            expires_at_ms,
            body: Body::Counter(Bytes::from(counter.encode())),
        };
        Ok(Incremented {
            record: self.write(None, sibling, me),
            value,
            applied,
        })
    }

    /// What a read at `now_ms` answers: the counter if increments came after
    /// every other write, else the last writer's value (by HLC, then node,
    /// then body: the same on every node); nothing if that is a tombstone
    /// or has expired.
    pub fn resolve(&self, now_ms: u64) -> Result<Resolved, IncrementError> {
        let latest_plain = self.latest_plain();
        let counters = self.counters_after(latest_plain.map(|s| s.hlc));
        if let Some((counter, expires_at_ms)) = counters? {
            if expires_at_ms.is_some_and(|at| at <= now_ms) {
                return Ok(Resolved::Absent);
            }
            return Ok(Resolved::Counter {
                value: counter.value()?,
                expires_at_ms,
            });
        }
        Ok(match latest_plain {
            Some(sibling) if sibling.expires_at_ms.is_some_and(|at| at <= now_ms) => {
                Resolved::Absent
            }
            Some(Sibling {
                body: Body::Value(value),
                expires_at_ms,
                ..
            }) => Resolved::Value {
                value: value.clone(),
                expires_at_ms: *expires_at_ms,
            },
            _ => Resolved::Absent,
        })
    }

    /// When the store may drop this copy on its own: once every sibling has
    /// expired, or `tombstone_grace_ms` after a delete that left only
    /// tombstones (long enough for every replica to have learnt of it).
    /// `None`: keep it.
    pub fn storage_expiry(&self, now_ms: u64, tombstone_grace_ms: u64) -> Option<u64> {
        let mut latest: Option<u64> = None;
        for sibling in self.siblings() {
            let until = match (&sibling.body, sibling.expires_at_ms) {
                (Body::Tombstone, _) => sibling
                    .hlc
                    .physical_ms()
                    .max(now_ms)
                    .saturating_add(tombstone_grace_ms),
                (_, Some(at)) => at,
                (_, None) => return None,
            };
            latest = Some(latest.map_or(until, |l| l.max(until)));
        }
        latest
    }

    /// The newest value or tombstone by the last-writer-wins order.
    fn latest_plain(&self) -> Option<&Sibling> {
        self.siblings()
            .filter(|s| !matches!(s.body, Body::Counter(_)))
            .max_by(|a, b| (a.hlc, a.node, &a.body).cmp(&(b.hlc, b.node, &b.body)))
    }

    /// The merge of the counter siblings written after `after` (all of them
    /// when `None`), with the expiry of the newest; `None` when there are
    /// none.
    fn counters_after(
        &self,
        after: Option<Hlc>,
    ) -> Result<Option<(PnCounter, Option<u64>)>, IncrementError> {
        let mut merged: Option<(PnCounter, (Hlc, NodeId), Option<u64>)> = None;
        for sibling in self.siblings() {
            let Body::Counter(state) = &sibling.body else {
                continue;
            };
            if after.is_some_and(|hlc| sibling.hlc <= hlc) {
                continue;
            }
            let counter = PnCounter::decode(state).map_err(IncrementError::Damaged)?;
            merged = Some(match merged {
                None => (counter, (sibling.hlc, sibling.node), sibling.expires_at_ms),
                Some((mut acc, newest, expiry)) => {
                    acc.merge(&counter);
                    if (sibling.hlc, sibling.node) > newest {
                        (acc, (sibling.hlc, sibling.node), sibling.expires_at_ms)
                    } else {
                        (acc, newest, expiry)
                    }
                }
            });
        }
        Ok(merged.map(|(counter, _, expiry)| (counter, expiry)))
    }

    /// The counter an increment at `hlc` starts from: the live counter, or
    /// the live integer string as a counter (converted the same way on every
    /// replica: one increment of its value under its writer's node and a
    /// request id made from its stamp, so two conversions merge as one), or
    /// zero.
    fn live_counter(&self, hlc: Hlc) -> Result<(PnCounter, Option<u64>), IncrementError> {
        let now_ms = hlc.physical_ms();
        if let Some(found) = self.counters_after(self.latest_plain().map(|s| s.hlc))? {
            if found.1.is_none_or(|at| at > now_ms) {
                return Ok(found);
            }
            return Ok((PnCounter::new(), None));
        }
        match self.latest_plain() {
            Some(sibling) if sibling.expires_at_ms.is_none_or(|at| at > now_ms) => {
                let Body::Value(text) = &sibling.body else {
                    return Ok((PnCounter::new(), None));
                };
                let start = std::str::from_utf8(text)
                    .ok()
                    .filter(|t| !t.is_empty() && !t.starts_with('+') && t.trim() == *t)
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or(IncrementError::NotInteger)?;
                let mut counter = PnCounter::new();
                let conversion = (u128::from(sibling.hlc.0) << 64) | u128::from(sibling.node);
                counter.apply(sibling.node, start, conversion)?;
                Ok((counter, sibling.expires_at_ms))
            }
            _ => Ok((PnCounter::new(), None)),
        }
    }

    // Format: the DvvSet encoding (dvv.rs) with each sibling as
    //   [varint hlc][varint node][u8 kind: 0 tombstone, 1 value, 2 counter; +4 if expiry]
    //   [varint expiry, if flagged][varint length][bytes]   (no length/bytes for a tombstone)
    /// The record's bytes, as the store keeps them and the transport sends them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.0.encode_with(&mut out, |sibling, out| {
            put_varint(out, sibling.hlc.0);
            put_varint(out, sibling.node);
            let (kind, bytes) = match &sibling.body {
                Body::Tombstone => (0u8, None),
                Body::Value(value) => (1, Some(value)),
                Body::Counter(state) => (2, Some(state)),
            };
            let flag = if sibling.expires_at_ms.is_some() {
                4
            } else {
                0
            };
            out.push(kind | flag);
            if let Some(at) = sibling.expires_at_ms {
                put_varint(out, at);
            }
            if let Some(bytes) = bytes {
                put_varint(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        });
        out
    }

    /// Decodes [`Record::encode`]'s output; never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        DvvSet::decode_with(input, decode_sibling).map(Record)
    }
}

fn decode_sibling(reader: &mut ValueReader<'_, '_>) -> Result<Sibling, DecodeError> {
    let hlc = Hlc(reader.varint()?);
    let node = reader.varint()?;
    let flags = reader.bytes(1)?[0];
    if flags & !0x07 != 0 {
        return Err(DecodeError::Invalid("unknown sibling flags"));
    }
    let expires_at_ms = if flags & 4 != 0 {
        Some(reader.varint()?)
    } else {
        None
    };
    let mut bytes = || -> Result<Bytes, DecodeError> {
        let len = usize::try_from(reader.varint()?)
            .map_err(|_| DecodeError::Invalid("sibling length"))?;
        Ok(Bytes::copy_from_slice(reader.bytes(len)?))
    };
    let body = match flags & 3 {
        0 => Body::Tombstone,
        1 => Body::Value(bytes()?),
        2 => Body::Counter(bytes()?),
        _ => return Err(DecodeError::Invalid("unknown sibling kind")),
    };
    Ok(Sibling {
        hlc,
        node,
        expires_at_ms,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: NodeId = 1;
    const B: NodeId = 2;
    const C: NodeId = 3;

    fn value(text: &str, ms: u64, node: NodeId) -> Sibling {
        Sibling {
            hlc: Hlc::new(ms, 0),
            node,
            expires_at_ms: None,
            body: Body::Value(Bytes::from(text.to_string())),
        }
    }

    fn read(record: &Record) -> Resolved {
        record.resolve(1_000_000).unwrap()
    }

    fn string(text: &str) -> Resolved {
        Resolved::Value {
            value: Bytes::from(text.to_string()),
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_blind_write_supersedes_what_the_replica_has_seen() {
        let first = Record::empty().write(None, value("1", 10, A), A);
        let second = first.write(None, value("2", 20, A), A);
        assert_eq!(second.sibling_count(), 1);
        assert_eq!(read(&second), string("2"));
        // On another replica that had the first: the second supersedes it there too.
        let elsewhere = first.merge(&second);
        assert_eq!(elsewhere.sibling_count(), 1);
        assert_eq!(read(&elsewhere), string("2"));
    }

    #[test]
    fn concurrent_writes_through_two_replicas_become_siblings_and_a_context_resolves_them() {
        let base = Record::empty().write(None, value("base", 10, A), A);
        // Both replicas have `base`; each takes a blind write the other has not seen.
        let at_a = base.write(None, value("from-a", 20, A), A);
        let at_b = base.write(None, value("from-b", 21, B), B);
        let merged = at_a.merge(&at_b);
        assert_eq!(merged.sibling_count(), 2, "{merged:?}");
        // Every node picks the same winner, whatever the merge order.
        assert_eq!(read(&merged), string("from-b"));
        assert_eq!(read(&at_b.merge(&at_a)), string("from-b"));
        // A versioned write with the context of the merged read resolves them.
        let context = merged.context();
        let resolved = merged.write(Some(&context), value("both", 30, C), C);
        assert_eq!(resolved.sibling_count(), 1);
        assert_eq!(read(&resolved), string("both"));
        // ... also where it lands on a replica that only had one side.
        assert_eq!(at_a.merge(&resolved).sibling_count(), 1);
    }

    #[test]
    fn a_write_with_an_old_context_keeps_what_the_context_did_not_see() {
        let first = Record::empty().write(None, value("1", 10, A), A);
        let old_context = first.context();
        let second = first.write(None, value("2", 20, A), A);
        let late = second.write(Some(&old_context), value("late", 30, B), B);
        assert_eq!(late.sibling_count(), 2);
    }

    #[test]
    fn a_tombstone_hides_the_value_and_an_expired_value_is_absent() {
        let written = Record::empty().write(None, value("v", 10, A), A);
        let deleted = written.write(
            None,
            Sibling {
                body: Body::Tombstone,
                ..value("", 20, A)
            },
            A,
        );
        assert_eq!(read(&deleted), Resolved::Absent);
        // An older copy merged in (read repair) does not bring it back.
        assert_eq!(read(&deleted.merge(&written)), Resolved::Absent);
        let expiring = Record::empty().write(
            None,
            Sibling {
                expires_at_ms: Some(500),
                ..value("v", 10, A)
            },
            A,
        );
        assert_eq!(
            expiring.resolve(499).unwrap(),
            Resolved::Value {
                value: Bytes::from_static(b"v"),
                expires_at_ms: Some(500)
            }
        );
        assert_eq!(expiring.resolve(500).unwrap(), Resolved::Absent);
        assert_eq!(expiring.storage_expiry(0, 1000), Some(500));
        assert_eq!(deleted.storage_expiry(0, 1000), Some(1020));
        assert_eq!(written.storage_expiry(0, 1000), None);
    }

    #[test]
    fn incr_converts_an_integer_string_and_refuses_other_strings() {
        let five = Record::empty().write(None, value("5", 10, A), A);
        let six = five.increment(1, 1, Hlc::new(20, 0), B).unwrap();
        assert_eq!((six.value, six.applied), (6, true));
        assert_eq!(
            read(&six.record),
            Resolved::Counter {
                value: 6,
                expires_at_ms: None
            }
        );
        for bad in ["x", "", " 5", "+5", "5.0", "99999999999999999999"] {
            let record = Record::empty().write(None, value(bad, 10, A), A);
            assert_eq!(
                record.increment(1, 1, Hlc::new(20, 0), A),
                Err(IncrementError::NotInteger),
                "{bad:?}"
            );
        }
        let max = Record::empty().write(None, value(&i64::MAX.to_string(), 10, A), A);
        assert!(matches!(
            max.increment(1, 1, Hlc::new(20, 0), A),
            Err(IncrementError::Counter(CounterError::Overflow))
        ));
        // A SET after increments wins over them; a DEL resets the counter.
        let set_again = six.record.write(None, value("100", 30, A), A);
        assert_eq!(read(&set_again), string("100"));
        let deleted = six.record.write(
            None,
            Sibling {
                body: Body::Tombstone,
                ..value("", 40, A)
            },
            A,
        );
        let after = deleted.increment(1, 2, Hlc::new(50, 0), A).unwrap();
        assert_eq!(after.value, 1);
    }

    #[test]
    fn a_retried_increment_counts_once_even_through_another_replica() {
        let first = Record::empty()
            .increment(1, 77, Hlc::new(10, 0), A)
            .unwrap();
        // The retry reaches the same replica ...
        let again = first.record.increment(1, 77, Hlc::new(11, 0), A).unwrap();
        assert_eq!((again.value, again.applied), (1, false));
        // ... or another replica that has merged the first.
        let b_copy = Record::empty().merge(&first.record);
        let retried = b_copy.increment(1, 77, Hlc::new(12, 0), B).unwrap();
        assert_eq!((retried.value, retried.applied), (1, false));
    }

    #[test]
    fn two_replicas_converting_the_same_string_do_not_double_count() {
        let five = Record::empty().write(None, value("5", 10, A), A);
        let at_a = five.increment(1, 1, Hlc::new(20, 0), A).unwrap().record;
        let at_b = five.increment(1, 2, Hlc::new(21, 0), B).unwrap().record;
        assert_eq!(
            read(&at_a.merge(&at_b)),
            Resolved::Counter {
                value: 7,
                expires_at_ms: None
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Increment { replica: usize, delta: i8 },
        Sync { from: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, any::<i8>())
                .prop_map(|(replica, delta)| Step::Increment { replica, delta }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    proptest! {
        /// Increments on three replicas, with syncs between them in any order, sum exactly
        /// once everything is merged: concurrent increments are never lost.
        #[test]
        fn concurrent_increments_sum_exactly(steps in prop::collection::vec(step(), 1..80)) {
            let mut replicas = vec![Record::empty(); 3];
            let mut expected = 0i64;
            let mut id: RequestId = 0;
            for (ms, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Increment { replica, delta } => {
                        id += 1;
                        let hlc = Hlc::new(ms as u64 + 1, replica as u16);
                        let done = replicas[replica]
                            .increment(i64::from(delta), id, hlc, replica as NodeId + 1)
                            .unwrap();
                        prop_assert!(done.applied);
                        replicas[replica] = done.record;
                        expected += i64::from(delta);
                    }
                    Step::Sync { from, to } => {
                        replicas[to] = replicas[to].merge(&replicas[from]);
                    }
                }
            }
            let all = replicas[0].merge(&replicas[1]).merge(&replicas[2]);
            let total = match all.resolve(0).unwrap() {
                Resolved::Counter { value, .. } => value,
                Resolved::Absent => 0,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(total, expected);
            // The same from every merge order.
            let other_order = replicas[2].merge(&replicas[0]).merge(&replicas[1]);
            prop_assert_eq!(other_order.resolve(0).unwrap(), all.resolve(0).unwrap());
        }

        #[test]
        fn encoding_round_trips(texts in prop::collection::vec("[a-z0-9]{0,8}", 1..6)) {
            let mut record = Record::empty();
            for (i, text) in texts.iter().enumerate() {
                let node = (i % 3) as NodeId + 1;
                let sibling = Sibling {
                    expires_at_ms: (i % 2 == 0).then_some(1_000 + i as u64),
                    ..value(text, 10 + i as u64, node)
                };
                let branch = Record::empty().write(None, sibling, node);
                record = record.merge(&branch);
            }
            let counted = record.increment(3, 9, Hlc::new(99, 0), 2);
            if let Ok(done) = counted {
                record = done.record;
            }
            let decoded = Record::decode(&record.encode()).unwrap();
            prop_assert_eq!(decoded, record);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
        }
    }
}
