//! Model-based test: random sequences of writes, reads, scans, flushes,
//! compactions, clock moves and reopens against a `BTreeMap`, with the same
//! answers expected at every step.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use ringkv_engine::{Clock, Db, Error, Options, Snapshot, WriteBatch};

#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>, Option<u64>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    CompareAndSet(u8, bool),
    Get(u8),
    Scan(Option<u8>, Option<u8>),
    Advance(u64),
    HoldSnapshot,
    CheckSnapshot,
    Flush,
    Compact,
    Reopen,
}

/// Keys share prefixes ("k1", "k10", "k100") to exercise ordering.
fn key(k: u8) -> Vec<u8> {
    format!("k{}", k % 40).into_bytes()
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 1000..3000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u8>(), value(), prop_oneof![3 => Just(None), 1 => (1u64..50).prop_map(Some)])
            .prop_map(|(k, v, ttl)| Op::Put(k, v, ttl)),
        8 => any::<u8>().prop_map(Op::Delete),
        5 => proptest::collection::vec((any::<u8>(), proptest::option::of(value())), 1..8).prop_map(Op::Batch),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(k, right)| Op::CompareAndSet(k, right)),
        15 => any::<u8>().prop_map(Op::Get),
        5 => (proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>())).prop_map(|(a, b)| Op::Scan(a, b)),
        4 => (1u64..30).prop_map(Op::Advance),
        1 => Just(Op::HoldSnapshot),
        2 => Just(Op::CheckSnapshot),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// key → (value, absolute expiry, version)
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>, u64)>;

fn live(model: &Model, now: u64) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    model
        .iter()
        .filter(|(_, (_, at, _))| at.is_none_or(|at| at > now))
        .map(|(k, (v, _, version))| (k.clone(), v.clone(), *version))
        .collect()
}

fn options(clock: Arc<ManualClock>) -> Options {
    Options {
        memtable_bytes_max: 8 << 10,
        block_bytes: 512,
        level_base_bytes: 32 << 10,
        level_multiplier: 4,
        table_target_bytes: 16 << 10,
        l0_compaction_trigger: 2,
        block_cache_bytes: 64 << 10,
        // A few entries per shard: reads and writes keep evicting, so stale fills would show.
        row_cache_bytes: 16 << 10,
        clock,
        ..Options::default()
    }
}

fn scan(db_range: ringkv_engine::RangeIter) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    db_range
        .map(|e| {
            let e = e.expect("scan");
            (e.key.to_vec(), e.value.to_vec(), e.version)
        })
        .collect()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000)));
    let mut db = Db::open(dir.path(), options(clock.clone())).unwrap();
    let mut model = Model::new();
    let mut held: Option<(Snapshot, Model)> = None;
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Put(k, v, ttl) => {
                let at = ttl.map(|t| now + t);
                let seq = db.put(&key(k), &v, at).unwrap();
                model.insert(key(k), (v, at, seq));
            }
            Op::Delete(k) => {
                db.delete(&key(k)).unwrap();
                model.remove(&key(k));
            }
            Op::Batch(items) => {
                let mut batch = WriteBatch::new();
                for (k, v) in &items {
                    match v {
                        Some(v) => batch.put(key(*k), v.clone(), None),
                        None => batch.delete(key(*k)),
                    };
                }
                let last = db.write(batch).unwrap();
                let first = last + 1 - items.len() as u64;
                for (i, (k, v)) in items.into_iter().enumerate() {
                    match v {
                        Some(v) => model.insert(key(k), (v, None, first + i as u64)),
                        None => model.remove(&key(k)),
                    };
                }
            }
            Op::CompareAndSet(k, right) => {
                let current = model
                    .get(&key(k))
                    .filter(|(_, at, _)| at.is_none_or(|at| at > now))
                    .map(|(_, _, version)| *version);
                let expected = if right {
                    current
                } else {
                    Some(current.unwrap_or(0) + 1_000_000)
                };
                let mut batch = WriteBatch::new();
                batch
                    .expect_version(key(k), expected)
                    .put(key(k), b"cas".to_vec(), None);
                match db.write(batch) {
                    Ok(seq) => {
                        assert!(right, "a wrong expected version must not write");
                        model.insert(key(k), (b"cas".to_vec(), None, seq));
                    }
                    Err(Error::Conflict) => assert!(!right, "the right version must write"),
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            Op::Get(k) => {
                let got = db
                    .get(&key(k))
                    .unwrap()
                    .map(|e| (e.value.to_vec(), e.version));
                let want = model
                    .get(&key(k))
                    .filter(|(_, at, _)| at.is_none_or(|at| at > now))
                    .map(|(v, _, version)| (v.clone(), *version));
                assert_eq!(got, want, "get {:?}", String::from_utf8_lossy(&key(k)));
            }
            Op::Scan(a, b) => {
                let start = a.map_or(Bound::Unbounded, |a| Bound::Included(key(a)));
                let end = b.map_or(Bound::Unbounded, |b| Bound::Excluded(key(b)));
                let bounds: (Bound<&Vec<u8>>, Bound<&Vec<u8>>) = (start.as_ref(), end.as_ref());
                let got = scan(db.range::<Vec<u8>, _>(bounds));
                let want: Vec<_> = live(&model, now)
                    .into_iter()
                    .filter(|(k, _, _)| RangeBounds::<Vec<u8>>::contains(&bounds, k))
                    .collect();
                assert_eq!(got, want);
            }
            Op::Advance(ms) => {
                clock.0.fetch_add(ms, Ordering::SeqCst);
            }
            Op::HoldSnapshot => held = Some((db.snapshot(), model.clone())),
            Op::CheckSnapshot => {
                if let Some((snapshot, frozen_model)) = &held {
                    let got = scan(snapshot.iter());
                    // Expiry is judged at read time, also through a snapshot.
                    assert_eq!(got, live(frozen_model, now), "snapshot view changed");
                }
            }
            Op::Flush => {
                db.flush().unwrap();
            }
            Op::Compact => db.compact().unwrap(),
            Op::Reopen => {
                held = None;
                db.close().unwrap();
                db = Db::open(dir.path(), options(clock.clone())).unwrap();
            }
        }
    }
    // Everything written survives a final reopen.
    let now = clock.now_ms();
    held = None;
    drop(held);
    db.close().unwrap();
    let db = Db::open(dir.path(), options(clock)).unwrap();
    assert_eq!(scan(db.iter()), live(&model, now));
    db.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops);
    }
}
