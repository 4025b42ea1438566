//! `Db::head` (a key's version and expiry without its value, issue 12's blind
//! writes) answers exactly what `Db::get` answers, wherever the key's newest
//! state lives: the row cache (hit, miss, evicted), the active or a frozen
//! memtable, level-0 or deeper tables, expired or deleted, across reopens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use ringkv_engine::{Clock, Db, Options, WriteBatch};

#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize, Option<u64>),
    Delete(u8),
    Batch(Vec<(u8, bool)>),
    /// Compares head and get of a key, head first (a head must not fill the cache wrongly).
    HeadThenGet(u8),
    /// The same, get first (a get fills the row cache; the head then hits it).
    GetThenHead(u8),
    Advance(u64),
    Flush,
    Compact,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    format!("key:{}", k % 30).into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (any::<u8>(), prop_oneof![4 => 0usize..40, 1 => 2000usize..3000], prop_oneof![3 => Just(None), 1 => (1u64..50).prop_map(Some)])
            .prop_map(|(k, len, ttl)| Op::Put(k, len, ttl)),
        5 => any::<u8>().prop_map(Op::Delete),
        3 => proptest::collection::vec((any::<u8>(), any::<bool>()), 1..6).prop_map(Op::Batch),
        10 => any::<u8>().prop_map(Op::HeadThenGet),
        10 => any::<u8>().prop_map(Op::GetThenHead),
        4 => (1u64..30).prop_map(Op::Advance),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn options(clock: Arc<ManualClock>) -> Options {
    Options {
        memtable_bytes_max: 4 << 10,
        block_bytes: 512,
        level_base_bytes: 32 << 10,
        level_multiplier: 4,
        table_target_bytes: 16 << 10,
        l0_compaction_trigger: 2,
        block_cache_bytes: 64 << 10,
        // A few entries per shard, so heads meet hits, misses and evictions.
        row_cache_bytes: 16 << 10,
        clock,
        ..Options::default()
    }
}

fn check(db: &Db, k: u8, head_first: bool) {
    let key = key(k);
    let (head, got) = if head_first {
        let head = db.head(&key).unwrap();
        (head, db.get(&key).unwrap())
    } else {
        let got = db.get(&key).unwrap();
        (db.head(&key).unwrap(), got)
    };
    let want = got.map(|e| (e.version, e.expires_at_ms));
    assert_eq!(
        head.map(|h| (h.version, h.expires_at_ms)),
        want,
        "head of {:?}",
        String::from_utf8_lossy(&key)
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000)));
    let mut db = Db::open(dir.path(), options(clock.clone())).unwrap();
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Put(k, len, ttl) => {
                db.put(&key(k), &vec![b'v'; len], ttl.map(|t| now + t))
                    .unwrap();
            }
            Op::Delete(k) => {
                db.delete(&key(k)).unwrap();
            }
            Op::Batch(items) => {
                let mut batch = WriteBatch::new();
                for (k, put) in items {
                    if put {
                        batch.put(key(k), b"batch".to_vec(), None);
                    } else {
                        batch.delete(key(k));
                    }
                }
                db.write(batch).unwrap();
            }
            Op::HeadThenGet(k) => check(&db, k, true),
            Op::GetThenHead(k) => check(&db, k, false),
            Op::Advance(ms) => {
                clock.0.fetch_add(ms, Ordering::SeqCst);
            }
            Op::Flush => {
                db.flush().unwrap();
            }
            Op::Compact => db.compact().unwrap(),
            Op::Reopen => {
                db.close().unwrap();
                db = Db::open(dir.path(), options(clock.clone())).unwrap();
            }
        }
    }
    for k in 0..30 {
        check(&db, k, k % 2 == 0);
    }
    db.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn head_answers_what_get_answers(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops);
    }
}
