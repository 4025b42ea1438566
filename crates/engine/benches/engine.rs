//! Criterion micro-benchmarks of the engine's point operations: `Db::put`, `Db::get` (from the
//! memtable, from tables with and without the row cache, misses) and a 100-key range scan.
//!
//! Run with `cargo bench -p ringkv-engine` (add a filter, e.g. `-- get/`, to run a subset).
//! `cargo test --benches` runs each benchmark once as a smoke test (the setup still loads the
//! databases, a few seconds).
//!
//! Keys and values have db_bench's shape: 16-byte keys (a number as 8 big-endian bytes padded
//! with ASCII '0'), 100-byte values, `FsyncPolicy::No` (the WAL write reaches the OS, no fsync),
//! so the figures line up with `examples/db_bench.rs` and docs/BENCHMARKS.md.
//!
//! Each database is loaded before its benchmark starts; only the operation itself (plus making
//! a 16-byte key on the stack, a few ns) is inside the measured loop.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringkv_engine::{Db, FsyncPolicy, Options};
use tempfile::TempDir;

/// Keys loaded for the read benchmarks: ~12 MB of data, one memtable (64 MiB) or one table
/// after a flush, and every block fits the block cache, so reads measure CPU, not the disk.
const LOADED_KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 100;

fn key(n: u64) -> [u8; 16] {
    let mut key = [b'0'; 16];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key
}

/// splitmix64: a fast, dependency-free generator for key numbers. A few ns per call, the same
/// in every benchmark, so it does not skew comparisons between them.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 100 bytes that are not all one byte, so table blocks compress about as real data does.
fn value() -> Vec<u8> {
    let mut state = 7;
    (0..VALUE_BYTES)
        .map(|i| {
            if i % 2 == 0 {
                b'a' + (next_random(&mut state) % 26) as u8
            } else {
                b'x'
            }
        })
        .collect()
}

fn options(row_cache: bool) -> Options {
    let mut options = Options {
        fsync: FsyncPolicy::No,
        ..Options::default()
    };
    if !row_cache {
        options.row_cache_bytes = 0;
    }
    options
}

/// A database in a fresh temporary directory (removed when the `TempDir` drops, after the `Db`).
fn open(row_cache: bool) -> (Db, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options(row_cache)).expect("open");
    (db, dir)
}

/// Loads keys `0, 2, 4, …` (`LOADED_KEYS` of them): the odd numbers in between are absent
/// but inside the tables' key range, so a miss is not answered by a min/max key check.
/// `flush`: move everything into a level-0 table, leaving the memtable empty.
fn loaded(row_cache: bool, flush: bool) -> (Db, TempDir) {
    let (db, dir) = open(row_cache);
    let value = value();
    for n in 0..LOADED_KEYS {
        db.put(&key(2 * n), &value, None).expect("put");
    }
    if flush {
        db.flush().expect("flush");
    }
    (db, dir)
}

fn bench_put(c: &mut Criterion) {
    let mut group = c.benchmark_group("put");
    group.throughput(Throughput::Elements(1));
    let value = value();

    // Each put benchmark writes into a database that only grows (tens of thousands to about a
    // million puts, as criterion's warm-up estimate decides): memtable switches and flushes
    // happen in the background while it runs, as in a steady write load.
    let (db, _dir) = open(true);
    let mut n = 0u64;
    group.bench_function("sequential", |b| {
        b.iter(|| {
            n += 1;
            db.put(&key(n), &value, None).expect("put")
        })
    });
    drop(db);

    let (db, _dir) = open(true);
    let mut state = 1u64;
    group.bench_function("random", |b| {
        b.iter(|| {
            let n = next_random(&mut state);
            db.put(&key(n), &value, None).expect("put")
        })
    });
    drop(db);
    group.finish();
}

/// Point reads of present keys, in random order.
fn bench_hits(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    db: &Db,
) {
    let mut state = 2u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            let n = 2 * (next_random(&mut state) % LOADED_KEYS);
            let entry = db.get(&key(n)).expect("get");
            debug_assert!(entry.is_some());
            entry
        })
    });
}

fn bench_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));

    // Row cache off: with it on, every key would come from the row cache after the first
    // pass, and this would measure the same thing as `table_row_cache`.
    let (db, _dir) = loaded(false, false);
    bench_hits(&mut group, "memtable", &db);
    drop(db);

    // All 100 000 keys fit the row cache, so after warm-up every read is a row-cache hit.
    let (db, _dir) = loaded(true, true);
    bench_hits(&mut group, "table_row_cache", &db);
    drop(db);

    // Index and data block search, blocks from the block cache.
    let (db, _dir) = loaded(false, true);
    bench_hits(&mut group, "table_no_row_cache", &db);

    // Absent keys inside the table's key range, empty memtable, no row cache (which would
    // remember the absence): the Bloom filter answers ~99% of these.
    let mut state = 3u64;
    group.bench_function("miss_bloom", |b| {
        b.iter(|| {
            let n = 2 * (next_random(&mut state) % LOADED_KEYS) + 1;
            let entry = db.get(&key(n)).expect("get");
            debug_assert!(entry.is_none());
            entry
        })
    });
    drop(db);
    group.finish();
}

fn bench_scan(c: &mut Criterion) {
    const SCANNED: u64 = 100;
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(SCANNED));
    let (db, _dir) = loaded(false, true);
    let mut state = 4u64;
    group.bench_function("100_keys_table", |b| {
        b.iter(|| {
            let first = 2 * (next_random(&mut state) % (LOADED_KEYS - SCANNED));
            let (start, end) = (key(first), key(first + 2 * SCANNED));
            let mut count = 0u64;
            for entry in db.range(start.as_slice()..end.as_slice()) {
                black_box(entry.expect("scan"));
                count += 1;
            }
            debug_assert_eq!(count, SCANNED);
            count
        })
    });
    drop(db);
    group.finish();
}

/// Short runs: these are regression checks in review on a small shared machine. About 4 s
/// per benchmark plus loading (~1 s per database), about a minute in all.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_put, bench_get, bench_scan
}
criterion_main!(benches);
