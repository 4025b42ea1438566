//! db_bench-like benchmark of ringkv-engine, so its figures can be set side
//! by side with RocksDB's `db_bench` (see `bench/engine_vs_rocksdb.sh` and
//! `docs/BENCHMARKS.md`).
//!
//! Flags, workloads, key and value generation and the report line follow
//! RocksDB 7.8's `tools/db_bench_tool.cc`, so the same command line means the
//! same work on both sides:
//!
//! ```text
//! cargo run --release -p ringkv-engine --example db_bench -- \
//!     --benchmarks=fillrandom,readrandom --num=1000000 --sync=0 --db=/tmp/ringkv-bench
//! ```
//!
//! * Keys (`--key_size`, 16 by default) are db_bench's: the key number as 8
//!   big-endian bytes, padded with ASCII `'0'` to the key size, so they sort
//!   as the numbers do. `fill*`/`overwrite`/`readrandom` draw numbers
//!   uniformly from `[0, num)` with replacement, exactly like db_bench, so a
//!   fillrandom writes about 63% distinct keys and readrandom finds about 63%.
//! * Values come from db_bench's generator: a 1 MiB buffer of 100-byte
//!   pieces, each `compression_ratio * 100` random printable bytes repeated,
//!   read off in `value_size` slices.
//! * Each write is one `Db::put` (db_bench's default `--batch_size=1`), so
//!   each write is one WAL record, fsynced when `--sync=1`.
//! * `fillseq` and `fillrandom` start from an empty database (the directory is
//!   removed first); the others use whatever the earlier benchmarks, or
//!   `--use_existing_db=1`, left. Nothing waits for background work between
//!   benchmarks, as in db_bench.
//!
//! Report lines use db_bench's format:
//! `fillrandom   :       4.321 micros/op 231428 ops/sec 4.321 seconds 1000000 operations;   25.6 MB/s`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ringkv_engine::{Compression, Db, FsyncPolicy, Options};

/// Size of the value generator's buffer, as db_bench's `RandomGenerator`.
const VALUE_BUFFER_BYTES: usize = 1 << 20;
/// Length of one compressible piece of the value buffer, as db_bench.
const VALUE_PIECE_BYTES: usize = 100;
/// Seed of the value generator (db_bench uses `Random rnd(301)`).
const VALUE_SEED: u64 = 301;
/// Operations between progress reports on stderr (a power of two).
const PROGRESS_EVERY_OPS: u64 = 1 << 20;

/// Command-line settings, named as db_bench's flags.
#[derive(Debug, Clone)]
struct Flags {
    benchmarks: Vec<String>,
    num: u64,
    reads: Option<u64>,
    key_size: usize,
    value_size: usize,
    threads: usize,
    sync: bool,
    db: PathBuf,
    use_existing_db: bool,
    cache_size: usize,
    row_cache_size: usize,
    compression: Compression,
    compression_ratio: f64,
    bloom_bits: usize,
    write_buffer_size: usize,
    max_write_buffer_number: usize,
    block_size: usize,
    block_restart_interval: usize,
    level0_file_num_compaction_trigger: usize,
    level0_slowdown_writes_trigger: usize,
    level0_stop_writes_trigger: usize,
    max_bytes_for_level_base: u64,
    max_bytes_for_level_multiplier: u64,
    target_file_size_base: u64,
    open_files: usize,
    seed: u64,
    stats: bool,
}

impl Default for Flags {
    fn default() -> Flags {
        let engine = Options::default();
        Flags {
            benchmarks: [
                "fillseq",
                "fillrandom",
                "readrandom",
                "readseq",
                "overwrite",
            ]
            .map(String::from)
            .to_vec(),
            num: 1_000_000,
            reads: None,
            key_size: 16,
            value_size: 100,
            threads: 1,
            sync: false,
            db: std::env::temp_dir().join("ringkv-db_bench"),
            use_existing_db: false,
            cache_size: engine.block_cache_bytes,
            row_cache_size: engine.row_cache_bytes,
            compression: engine.compression,
            compression_ratio: 0.5,
            bloom_bits: engine.bloom_bits_per_key,
            write_buffer_size: engine.memtable_bytes_max,
            // RocksDB counts the active memtable; ringkv counts frozen ones.
            max_write_buffer_number: engine.frozen_memtables_max + 1,
            block_size: engine.block_bytes,
            block_restart_interval: engine.block_restart_interval,
            level0_file_num_compaction_trigger: engine.l0_compaction_trigger,
            level0_slowdown_writes_trigger: engine.l0_slowdown_trigger,
            level0_stop_writes_trigger: engine.l0_stop_trigger,
            max_bytes_for_level_base: engine.level_base_bytes,
            max_bytes_for_level_multiplier: engine.level_multiplier,
            target_file_size_base: engine.table_target_bytes,
            open_files: engine.open_files_max,
            seed: 0,
            stats: false,
        }
    }
}

const USAGE: &str = "\
usage: db_bench [--flag=value ...]   (flags as RocksDB's db_bench)
  --benchmarks=fillseq,fillrandom,readrandom,readseq,overwrite[,compact,flush,stats]
  --num=1000000 --reads=<num> --key_size=16 --value_size=100 --threads=1
  --sync=0|1 (1: fsync every write) --disable_wal=0 (1 is not supported)
  --db=DIR --use_existing_db=0|1
  --cache_size=BYTES --row_cache_size=BYTES --compression_type=none|lz4 --compression_ratio=0.5
  --bloom_bits=10 --write_buffer_size=BYTES --max_write_buffer_number=3
  --block_size=4096 --block_restart_interval=16
  --level0_file_num_compaction_trigger=4 --level0_slowdown_writes_trigger=12
  --level0_stop_writes_trigger=20 --max_bytes_for_level_base=BYTES
  --max_bytes_for_level_multiplier=10 --target_file_size_base=BYTES
  --open_files=1000 --seed=0 (0: from the clock) --stats=0|1";

fn parse_flags(args: impl Iterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    for arg in args {
        if arg == "--help" || arg == "-h" {
            return Err(USAGE.to_string());
        }
        let body = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .ok_or_else(|| format!("unexpected argument '{arg}'\n{USAGE}"))?;
        let (name, value) = body
            .split_once('=')
            .ok_or_else(|| format!("flag '{arg}' needs a value: --name=value"))?;
        apply_flag(&mut flags, name, value)
            .map_err(|e| format!("bad value for --{name}: '{value}': {e}"))?;
    }
    if flags.key_size == 0 || flags.num == 0 || flags.threads == 0 {
        return Err("--key_size, --num and --threads must be positive".into());
    }
    if !(0.0..=1.0).contains(&flags.compression_ratio) {
        return Err("--compression_ratio must be within 0..=1".into());
    }
    if flags.max_write_buffer_number < 2 {
        return Err("--max_write_buffer_number must be at least 2".into());
    }
    Ok(flags)
}

fn apply_flag(flags: &mut Flags, name: &str, value: &str) -> Result<(), String> {
    fn num<T: std::str::FromStr>(value: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        value.parse::<T>().map_err(|e| e.to_string())
    }
    fn boolean(value: &str) -> Result<bool, String> {
        match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err("expected 0 or 1".into()),
        }
    }
    match name {
        "benchmarks" => {
            flags.benchmarks = value
                .split(',')
                .filter(|b| !b.is_empty())
                .map(String::from)
                .collect()
        }
        "num" => flags.num = num(value)?,
        "reads" => {
            let reads: i64 = num(value)?;
            flags.reads = u64::try_from(reads).ok();
        }
        "key_size" => flags.key_size = num(value)?,
        "value_size" => flags.value_size = num(value)?,
        "threads" => flags.threads = num(value)?,
        "sync" => flags.sync = boolean(value)?,
        "disable_wal" => {
            if boolean(value)? {
                return Err("ringkv always writes its WAL".into());
            }
        }
        "db" => flags.db = PathBuf::from(value),
        "use_existing_db" => flags.use_existing_db = boolean(value)?,
        "cache_size" => flags.cache_size = num(value)?,
        "row_cache_size" => flags.row_cache_size = num(value)?,
        "compression_type" => {
            flags.compression = match value {
                "none" => Compression::None,
                "lz4" => Compression::Lz4,
                _ => return Err("ringkv supports none and lz4".into()),
            }
        }
        "compression_ratio" => flags.compression_ratio = num(value)?,
        "bloom_bits" => flags.bloom_bits = num(value)?,
        "write_buffer_size" => flags.write_buffer_size = num(value)?,
        "max_write_buffer_number" => flags.max_write_buffer_number = num(value)?,
        "block_size" => flags.block_size = num(value)?,
        "block_restart_interval" => flags.block_restart_interval = num(value)?,
        "level0_file_num_compaction_trigger" => {
            flags.level0_file_num_compaction_trigger = num(value)?
        }
        "level0_slowdown_writes_trigger" => flags.level0_slowdown_writes_trigger = num(value)?,
        "level0_stop_writes_trigger" => flags.level0_stop_writes_trigger = num(value)?,
        "max_bytes_for_level_base" => flags.max_bytes_for_level_base = num(value)?,
        "max_bytes_for_level_multiplier" => flags.max_bytes_for_level_multiplier = num(value)?,
        "target_file_size_base" => flags.target_file_size_base = num(value)?,
        "open_files" => flags.open_files = num(value)?,
        "seed" => flags.seed = num(value)?,
        "stats" => flags.stats = boolean(value)?,
        _ => return Err(format!("unknown flag\n{USAGE}")),
    }
    Ok(())
}

impl Flags {
    fn engine_options(&self) -> Options {
        Options {
            fsync: if self.sync {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::No
            },
            memtable_bytes_max: self.write_buffer_size,
            frozen_memtables_max: self.max_write_buffer_number - 1,
            block_cache_bytes: self.cache_size,
            row_cache_bytes: self.row_cache_size,
            open_files_max: self.open_files,
            block_bytes: self.block_size,
            block_restart_interval: self.block_restart_interval,
            bloom_bits_per_key: self.bloom_bits,
            compression: self.compression,
            // RocksDB's --compression_type is every level's, level 0 included.
            level0_compression: self.compression,
            l0_compaction_trigger: self.level0_file_num_compaction_trigger,
            l0_slowdown_trigger: self.level0_slowdown_writes_trigger,
            l0_stop_trigger: self.level0_stop_writes_trigger,
            level_base_bytes: self.max_bytes_for_level_base,
            level_multiplier: self.max_bytes_for_level_multiplier,
            table_target_bytes: self.target_file_size_base,
            ..Options::default()
        }
    }

    fn reads(&self) -> u64 {
        self.reads.unwrap_or(self.num)
    }
}

/// SplitMix64: a small, fast generator; the key stream only needs to be
/// uniform, not identical to RocksDB's `Random64`.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound)` (the modulo bias is below 2^-40 for any
    /// benchmark size, as in db_bench which also takes `Next() % num`).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// db_bench's value generator: compressible to `compression_ratio`.
struct ValueGenerator {
    data: Vec<u8>,
    position: usize,
}

impl ValueGenerator {
    fn new(compression_ratio: f64, value_size: usize) -> ValueGenerator {
        let mut rng = Rng(VALUE_SEED);
        let raw_bytes = ((VALUE_PIECE_BYTES as f64 * compression_ratio) as usize).max(1);
        let target = VALUE_BUFFER_BYTES.max(value_size);
        let mut data = Vec::with_capacity(target + VALUE_PIECE_BYTES);
        while data.len() < target {
            let raw: Vec<u8> = (0..raw_bytes).map(|_| b' ' + rng.below(95) as u8).collect();
            data.extend(raw.iter().cycle().take(VALUE_PIECE_BYTES));
        }
        ValueGenerator { data, position: 0 }
    }

    fn generate(&mut self, len: usize) -> &[u8] {
        if self.position + len > self.data.len() {
            self.position = 0;
        }
        self.position += len;
        &self.data[self.position - len..self.position]
    }
}

/// Writes key number `n` as db_bench does: up to 8 big-endian bytes of `n`,
/// then ASCII '0' up to the key size.
fn encode_key(n: u64, key: &mut [u8]) {
    let bytes_to_fill = key.len().min(8);
    for (i, byte) in key[..bytes_to_fill].iter_mut().enumerate() {
        *byte = (n >> ((bytes_to_fill - i - 1) * 8)) as u8;
    }
    key[bytes_to_fill..].fill(b'0');
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOrder {
    Sequential,
    Random,
}

/// What one thread did in one benchmark.
#[derive(Debug, Default, Clone, Copy)]
struct ThreadResult {
    ops: u64,
    bytes: u64,
    found: u64,
}

type Work = dyn Fn(&Db, usize, &Flags) -> Result<ThreadResult, String> + Sync;

fn write_work(order: WriteOrder) -> Box<Work> {
    Box::new(move |db, thread, flags| {
        let mut rng = Rng(thread_seed(flags, thread));
        let mut values = ValueGenerator::new(flags.compression_ratio, flags.value_size);
        let mut key = vec![0u8; flags.key_size];
        let mut result = ThreadResult::default();
        for i in 0..flags.num {
            let n = match order {
                WriteOrder::Sequential => i,
                WriteOrder::Random => rng.below(flags.num),
            };
            encode_key(n, &mut key);
            let value = values.generate(flags.value_size);
            db.put(&key, value, None).map_err(|e| format!("put: {e}"))?;
            result.ops += 1;
            result.bytes += (flags.key_size + flags.value_size) as u64;
            progress(thread, result.ops);
        }
        Ok(result)
    })
}

fn read_random_work() -> Box<Work> {
    Box::new(|db, thread, flags| {
        let mut rng = Rng(thread_seed(flags, thread) ^ 0x5eed_5eed);
        let mut key = vec![0u8; flags.key_size];
        let mut result = ThreadResult::default();
        for _ in 0..flags.reads() {
            encode_key(rng.below(flags.num), &mut key);
            if let Some(entry) = db.get(&key).map_err(|e| format!("get: {e}"))? {
                result.found += 1;
                result.bytes += (key.len() + entry.value.len()) as u64;
            }
            result.ops += 1;
            progress(thread, result.ops);
        }
        Ok(result)
    })
}

fn read_seq_work() -> Box<Work> {
    Box::new(|db, thread, flags| {
        let mut result = ThreadResult::default();
        // Borrowed key and value, as RocksDB's db_bench reads them (`iter->key()`).
        let mut iter = db.iter();
        while result.ops < flags.reads() && iter.advance().map_err(|e| format!("iterate: {e}"))? {
            result.bytes += (iter.key().len() + iter.value().len()) as u64;
            result.ops += 1;
            progress(thread, result.ops);
        }
        Ok(result)
    })
}

fn thread_seed(flags: &Flags, thread: usize) -> u64 {
    flags.seed.wrapping_add(1000 + thread as u64)
}

fn progress(thread: usize, ops: u64) {
    if thread == 0 && ops & (PROGRESS_EVERY_OPS - 1) == 0 {
        eprint!("... finished {ops} ops\r");
    }
}

/// Runs `work` on `flags.threads` threads and prints db_bench's report line.
fn run(name: &str, db: &Db, flags: &Flags, work: &Work) -> Result<(), String> {
    let started = Instant::now();
    let results: Vec<Result<ThreadResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..flags.threads)
            .map(|thread| scope.spawn(move || work(db, thread, flags)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut total = ThreadResult::default();
    for result in results {
        let result = result?;
        total.ops += result.ops;
        total.bytes += result.bytes;
        total.found += result.found;
    }
    let ops = total.ops.max(1);
    let mut extra = String::new();
    if total.bytes > 0 {
        extra = format!("{:6.1} MB/s", total.bytes as f64 / 1_048_576.0 / seconds);
    }
    if name == "readrandom" {
        extra.push_str(&format!(" ({} of {} found)", total.found, total.ops));
    }
    println!(
        "{:<12} : {:11.3} micros/op {} ops/sec {:.3} seconds {} operations;{}{}",
        name,
        seconds * 1e6 * flags.threads as f64 / ops as f64,
        (total.ops as f64 / seconds) as u64,
        seconds,
        total.ops,
        if extra.is_empty() { "" } else { " " },
        extra,
    );
    Ok(())
}

fn open_fresh(flags: &Flags) -> Result<Db, String> {
    match std::fs::remove_dir_all(&flags.db) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove {}: {e}", flags.db.display())),
    }
    open(flags)
}

fn open(flags: &Flags) -> Result<Db, String> {
    Db::open(&flags.db, flags.engine_options())
        .map_err(|e| format!("open {}: {e}", flags.db.display()))
}

fn print_header(flags: &Flags) {
    let compressed = (flags.value_size as f64 * flags.compression_ratio + 0.5) as usize;
    println!("ringkv-engine db_bench");
    println!("Keys:       {} bytes each", flags.key_size);
    println!(
        "Values:     {} bytes each ({} bytes after compression)",
        flags.value_size, compressed
    );
    println!("Entries:    {}", flags.num);
    println!(
        "Compression: {}",
        match flags.compression {
            Compression::Lz4 => "LZ4",
            Compression::None => "NoCompression",
        }
    );
    println!(
        "Sync:       {} (fsync {})",
        flags.sync as u8,
        flags.engine_options().fsync
    );
    println!("DB path:    [{}]", flags.db.display());
    println!("------------------------------------------------");
}

fn print_stats(db: &Db) {
    let stats = db.stats();
    println!(
        "ringkv stats: level tables {:?}, level MiB {:?}, flushes {}, compactions {} \
         (read {} MiB, written {} MiB), stalled {:.3} s, slowdowns {}, \
         block cache hits {} misses {}",
        stats.level_tables,
        stats
            .level_bytes
            .iter()
            .map(|b| b >> 20)
            .collect::<Vec<_>>(),
        stats.flushes,
        stats.compactions,
        stats.compaction_bytes_read >> 20,
        stats.compaction_bytes_written >> 20,
        stats.stall_micros as f64 / 1e6,
        stats.slowdowns,
        stats.block_cache_hits,
        stats.block_cache_misses,
    );
}

fn main_with(flags: Flags) -> Result<(), String> {
    let flags = Arc::new(flags);
    print_header(&flags);
    let mut db = if flags.use_existing_db {
        Some(open(&flags)?)
    } else {
        None
    };
    for name in &flags.benchmarks {
        let fresh = matches!(name.as_str(), "fillseq" | "fillrandom");
        if fresh {
            if flags.use_existing_db {
                return Err(format!(
                    "{name} needs a fresh database; drop --use_existing_db"
                ));
            }
            if let Some(old) = db.take() {
                old.close().map_err(|e| format!("close: {e}"))?;
            }
            db = Some(open_fresh(&flags)?);
        }
        let handle = match &db {
            Some(handle) => handle.clone(),
            None => {
                let handle = open_fresh(&flags)?;
                db = Some(handle.clone());
                handle
            }
        };
        match name.as_str() {
            "fillseq" => run(name, &handle, &flags, &*write_work(WriteOrder::Sequential))?,
            "fillrandom" | "overwrite" => {
                run(name, &handle, &flags, &*write_work(WriteOrder::Random))?
            }
            "readrandom" => run(name, &handle, &flags, &*read_random_work())?,
            "readseq" => run(name, &handle, &flags, &*read_seq_work())?,
            "flush" => {
                let started = Instant::now();
                handle.flush().map_err(|e| format!("flush: {e}"))?;
                println!(
                    "{:<12} : {:.3} seconds",
                    name,
                    started.elapsed().as_secs_f64()
                );
            }
            "compact" => {
                let started = Instant::now();
                handle.compact().map_err(|e| format!("compact: {e}"))?;
                println!(
                    "{:<12} : {:.3} seconds",
                    name,
                    started.elapsed().as_secs_f64()
                );
            }
            "stats" => print_stats(&handle),
            other => return Err(format!("unknown benchmark '{other}'\n{USAGE}")),
        }
    }
    if let Some(db) = db {
        if flags.stats {
            print_stats(&db);
        }
        db.close().map_err(|e| format!("close: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut flags = flags;
    if flags.seed == 0 {
        flags.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    match main_with(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("db_bench: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_big_endian_numbers_padded_with_ascii_zeros() {
        let mut key = [0u8; 16];
        encode_key(0x0102, &mut key);
        assert_eq!(&key, b"\0\0\0\0\0\0\x01\x0200000000");
        let mut short = [0u8; 4];
        encode_key(0x0102_0304_0506, &mut short);
        assert_eq!(short, [3, 4, 5, 6]);
    }

    #[test]
    fn values_compress_to_the_requested_ratio() {
        let mut values = ValueGenerator::new(0.5, 100);
        let value = values.generate(100).to_vec();
        assert_eq!(value[..50], value[50..]);
        assert!(value.iter().all(|b| (b' '..=b'~').contains(b)));
    }

    #[test]
    fn flags_parse_like_db_bench() {
        let flags = parse_flags(
            [
                "--benchmarks=fillrandom,readrandom",
                "--num=10",
                "--sync=1",
                "--reads=-1",
            ]
            .map(String::from)
            .into_iter(),
        )
        .unwrap();
        assert_eq!(flags.benchmarks, ["fillrandom", "readrandom"]);
        assert_eq!(flags.reads(), 10);
        assert_eq!(flags.engine_options().fsync, FsyncPolicy::Always);
        assert!(parse_flags(["--disable_wal=1".to_string()].into_iter()).is_err());
        assert!(parse_flags(["--nonsense=1".to_string()].into_iter()).is_err());
    }
}
