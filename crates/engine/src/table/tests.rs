//! Tests of whole tables on real files: round trips against a model,
//! the Bloom filter's rates, damaged files and the block cache's bound.

use super::*;
use crate::error::Result;
use crate::format::{internal_key, Kind};
use bytes::Bytes;
use proptest::prelude::*;
use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::Arc;

/// An entry as given to the builder: (internal key, stored value).
type Entry = (Vec<u8>, Vec<u8>);

/// Small blocks so that even small tables have many of them.
fn small_block_options(compression: Compression) -> TableOptions {
    TableOptions {
        block_bytes: 512,
        restart_interval: 4,
        bloom_bits_per_key: 10,
        compression,
    }
}

/// Sorts entries by internal key and drops duplicate keys.
fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| format::compare_internal(&a.0, &b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    entries
}

/// Writes `entries` (already sorted) to a new table at `path`.
fn write_table(path: &Path, entries: &[Entry], options: &TableOptions) -> TableMeta {
    let mut builder = TableBuilder::create(&crate::storage::StdStorage, path, options).unwrap();
    assert!(builder.is_empty());
    for (key, value) in entries {
        builder.add(key, value).unwrap();
    }
    assert_eq!(builder.is_empty(), entries.is_empty());
    builder.finish().unwrap()
}

/// Opens a table with a fresh cache.
fn open(path: &Path) -> Result<Arc<Table>> {
    Table::open(
        &crate::storage::StdStorage,
        path,
        7,
        Arc::new(BlockCache::new(1 << 20)),
    )
    .map(Arc::new)
}

/// Every entry of a table, in order.
fn scan(table: &Arc<Table>) -> Result<Vec<Entry>> {
    let mut iter = TableIter::new(table.clone());
    iter.seek_to_first()?;
    let mut out = Vec::new();
    while iter.valid() {
        out.push((iter.key().to_vec(), iter.value().to_vec()));
        iter.next()?;
    }
    Ok(out)
}

/// The model's answer to `get`: the newest entry of `user_key` with
/// sequence <= `seq` (a linear scan, independent of the seek logic).
fn model_get<'a>(entries: &'a [Entry], user_key: &[u8], seq: u64) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|(key, _)| format::user_key(key) == user_key && format::key_seq(key) <= seq)
}

/// The model's answer to `seek`: the first entry >= `target`.
fn model_seek<'a>(entries: &'a [Entry], target: &[u8]) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|(key, _)| format::compare_internal(key, target) != Ordering::Less)
}

/// `table.get` as owned bytes.
fn get(table: &Table, user_key: &[u8], seq: u64) -> Option<Entry> {
    table
        .get(user_key, seq)
        .unwrap()
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
}

/// `seek` as owned bytes.
fn seek(table: &Arc<Table>, target: &[u8]) -> Option<Entry> {
    let mut iter = TableIter::new(table.clone());
    iter.seek(target).unwrap();
    iter.valid()
        .then(|| (iter.key().to_vec(), iter.value().to_vec()))
}

/// A stored PutExpiring value.
fn expiring(value: &[u8], at_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    assert_eq!(
        format::encode_value(&mut out, value, Some(at_ms)),
        Kind::PutExpiring
    );
    out
}

/// A table's worth of awkward entries: several versions per key, deletes,
/// expiring values, keys that are prefixes of others, the empty key, empty
/// values and one 100 KiB value.
fn mixed_entries() -> Vec<Entry> {
    let mut entries = vec![
        (internal_key(b"", 3, Kind::Put), b"empty key".to_vec()),
        (internal_key(b"", 1, Kind::Put), Vec::new()),
        (internal_key(b"a", 9, Kind::Delete), Vec::new()),
        (internal_key(b"a", 5, Kind::Put), b"a5".to_vec()),
        (internal_key(b"ab", 4, Kind::Put), b"ab4".to_vec()),
        (
            internal_key(b"abc", 8, Kind::PutExpiring),
            expiring(b"abc8", 5_000),
        ),
        (internal_key(b"abc", 2, Kind::Put), b"abc2".to_vec()),
        (internal_key(b"big", 6, Kind::Put), vec![b'x'; 100 * 1024]),
        (internal_key(b"\xff\xff", 10, Kind::Put), b"last".to_vec()),
    ];
    for i in 0..3000u64 {
        let user = format!("key{:05}", i * 3);
        let seq = 100 + i;
        match i % 5 {
            0 => entries.push((internal_key(user.as_bytes(), seq, Kind::Delete), Vec::new())),
            1 => entries.push((
                internal_key(user.as_bytes(), seq, Kind::PutExpiring),
                expiring(format!("value {i} expiring").as_bytes(), 1_000_000 + i),
            )),
            _ => entries.push((
                internal_key(user.as_bytes(), seq, Kind::Put),
                format!("value {i} {}", "pad".repeat((i % 7) as usize)).into_bytes(),
            )),
        }
        if i % 3 == 0 {
            // An older version below the newest one.
            entries.push((
                internal_key(user.as_bytes(), seq - 50, Kind::Put),
                format!("old {i}").into_bytes(),
            ));
        }
    }
    sorted(entries)
}

/// Versions, deletes, expiring values, prefix keys, the empty key and a
/// large value read back exactly through get, scan and seek.
#[test]
fn mixed_entries_round_trip_with_and_without_compression() {
    let dir = tempfile::tempdir().unwrap();
    let entries = mixed_entries();
    let mut sizes = Vec::new();
    for compression in [Compression::None, Compression::Lz4] {
        let path = dir.path().join(format!("{compression:?}.sst"));
        let meta = write_table(&path, &entries, &small_block_options(compression));
        let table = open(&path).unwrap();
        assert_eq!(table.meta(), &meta);
        assert_eq!(meta.file_size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(meta.entries, entries.len() as u64);
        assert_eq!(meta.deletes, 1 + 600);
        assert_eq!(meta.expiring, 1 + 600);
        assert_eq!(meta.smallest, internal_key(b"", 3, Kind::Put));
        assert_eq!(meta.largest, internal_key(b"\xff\xff", 10, Kind::Put));
        assert_eq!((meta.seq_min, meta.seq_max), (1, 3099));
        assert_eq!(meta.expires_at_min_ms, Some(5_000));
        assert_eq!(table.path(), path.as_path());
        assert!(table.resident_bytes() > 0);
        sizes.push(meta.file_size);

        assert_eq!(scan(&table).unwrap(), entries);

        // Every user key at several sequences, plus absent keys.
        let mut user_keys: Vec<&[u8]> = entries.iter().map(|(k, _)| format::user_key(k)).collect();
        user_keys.dedup();
        // All special keys (they sort first and last), then a sample: the
        // model is a linear scan.
        let sample = user_keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 12 || i % 5 == 0 || *i + 2 >= user_keys.len());
        for (_, &user_key) in sample {
            for seq in [
                0,
                1,
                2,
                4,
                5,
                8,
                9,
                60,
                100,
                1000,
                2000,
                3099,
                format::SEQ_MAX,
                u64::MAX,
            ] {
                assert_eq!(
                    get(&table, user_key, seq).as_ref(),
                    model_get(&entries, user_key, seq),
                    "get({user_key:?}, {seq})"
                );
            }
            assert!(table.may_contain(user_key));
        }
        for absent in [&b"aa"[..], b"key00001", b"key99999", b"\xff\xff\xff", b"b"] {
            assert_eq!(get(&table, absent, u64::MAX), None);
        }

        // Seeks at every key and between keys.
        for (key, _) in entries.iter().step_by(7) {
            assert_eq!(seek(&table, key).as_ref(), model_seek(&entries, key));
            let user = format::user_key(key);
            for target in [
                format::seek_key(user, 0),
                format::seek_key(user, format::SEQ_MAX),
                internal_key(&[user, b"\0"].concat(), 0, Kind::Put),
            ] {
                assert_eq!(
                    seek(&table, &target).as_ref(),
                    model_seek(&entries, &target)
                );
            }
        }
        assert_eq!(seek(&table, &format::seek_key(b"\xff\xff\xff", 0)), None);
    }
    assert!(
        sizes[1] < sizes[0],
        "lz4 table {} not smaller than plain {}",
        sizes[1],
        sizes[0]
    );
}

/// A table with no entries is valid and answers nothing.
#[test]
fn empty_table_opens_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.sst");
    let meta = write_table(&path, &[], &TableOptions::default());
    assert_eq!(meta.entries, 0);
    assert!(meta.smallest.is_empty() && meta.largest.is_empty());
    let table = open(&path).unwrap();
    assert_eq!(scan(&table).unwrap(), Vec::<Entry>::new());
    assert_eq!(get(&table, b"", u64::MAX), None);
    assert_eq!(seek(&table, &format::seek_key(b"", format::SEQ_MAX)), None);
}

/// `create` never overwrites a file.
#[test]
fn create_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    std::fs::write(&path, b"x").unwrap();
    let error = TableBuilder::create(&crate::storage::StdStorage, &path, &TableOptions::default())
        .unwrap_err();
    assert!(matches!(error, Error::Io { path: p, .. } if p == path));
}

/// Keys out of order would make a table answer wrongly: the builder panics.
#[test]
#[should_panic(expected = "table keys out of order")]
fn out_of_order_keys_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = TableBuilder::create(
        &crate::storage::StdStorage,
        &dir.path().join("t.sst"),
        &TableOptions::default(),
    )
    .unwrap();
    builder.add(&internal_key(b"b", 1, Kind::Put), b"").unwrap();
    builder.add(&internal_key(b"a", 1, Kind::Put), b"").unwrap();
}

/// Versions of one key must come newest first.
#[test]
#[should_panic(expected = "table keys out of order")]
fn older_version_before_newer_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = TableBuilder::create(
        &crate::storage::StdStorage,
        &dir.path().join("t.sst"),
        &TableOptions::default(),
    )
    .unwrap();
    builder.add(&internal_key(b"a", 1, Kind::Put), b"").unwrap();
    builder.add(&internal_key(b"a", 2, Kind::Put), b"").unwrap();
}

/// The size estimate is within 10% of the finished file.
#[test]
fn estimated_bytes_tracks_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let options = TableOptions {
        compression: Compression::None,
        ..TableOptions::default()
    };
    let mut builder = TableBuilder::create(&crate::storage::StdStorage, &path, &options).unwrap();
    for i in 0..10_000u32 {
        let key = internal_key(format!("key{i:08}").as_bytes(), 1, Kind::Put);
        builder.add(&key, &[b'v'; 100]).unwrap();
    }
    let estimate = builder.estimated_bytes();
    let meta = builder.finish().unwrap();
    let (low, high) = (meta.file_size * 9 / 10, meta.file_size * 11 / 10);
    assert!(
        (low..=high).contains(&estimate),
        "estimate {estimate}, actual {}",
        meta.file_size
    );
}

/// 10 bits per key: every present key passes, under 2% of absent keys do.
#[test]
fn bloom_filter_has_no_false_negatives_and_under_two_percent_false_positives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bloom.sst");
    let entries: Vec<Entry> = sorted(
        (0..10_000u32)
            .map(|i| {
                (
                    internal_key(format!("user:{i}").as_bytes(), 1, Kind::Put),
                    Vec::new(),
                )
            })
            .collect(),
    );
    write_table(&path, &entries, &TableOptions::default());
    let table = open(&path).unwrap();
    for (key, _) in &entries {
        assert!(table.may_contain(format::user_key(key)));
    }
    let false_positives = (0..10_000u32)
        .filter(|i| table.may_contain(format!("absent:{i}").as_bytes()))
        .count();
    assert!(
        false_positives < 200,
        "{false_positives} false positives in 10000"
    );
}

/// The cache never holds more than its capacity and counts hits and misses.
#[test]
fn block_cache_stays_within_capacity() {
    let capacity = 64 * 1024;
    let cache = Arc::new(BlockCache::new(capacity));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries: Vec<Entry> = (0..20_000u32)
        .map(|i| {
            (
                internal_key(format!("key{i:08}").as_bytes(), 1, Kind::Put),
                vec![b'v'; 100],
            )
        })
        .collect();
    let options = TableOptions {
        compression: Compression::None,
        ..TableOptions::default()
    };
    let meta = write_table(&path, &entries, &options);
    assert!(meta.file_size > 20 * capacity as u64);
    let table =
        Arc::new(Table::open(&crate::storage::StdStorage, &path, 1, cache.clone()).unwrap());
    let blocks = table.data_block_handles().len() as u64;
    assert_eq!(scan(&table).unwrap().len(), entries.len());
    assert!(
        cache.used_bytes() <= capacity,
        "{} > {capacity}",
        cache.used_bytes()
    );
    assert!(
        cache.used_bytes() > capacity / 2,
        "cache barely used: {}",
        cache.used_bytes()
    );
    assert_eq!(cache.misses(), blocks);
    assert_eq!(cache.hits(), 0);

    // Reading one key twice: the second read is a hit.
    let key = format::user_key(&entries[12_345].0);
    assert!(get(&table, key, 1).is_some());
    let hits = cache.hits();
    assert!(get(&table, key, 1).is_some());
    assert_eq!(cache.hits(), hits + 1);

    // Blocks from many tables, inserted directly.
    for i in 0..10_000u64 {
        // Format: entries area, restart 0, restart count 1.
        let mut data = vec![0u8; 1000 + (i as usize % 3000) * 4];
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        let block = block::Block::parse(Bytes::from(data)).unwrap();
        cache.insert(i, 0, block);
        assert!(cache.used_bytes() <= capacity);
    }
}

/// Tables, iterators and the cache can be shared across threads.
#[test]
fn tables_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Table>();
    assert_send_sync::<BlockCache>();
    assert_send_sync::<TableIter>();
    assert_send_sync::<TableBuilder>();
}

/// Threads reading one table at once (positional reads, no lock) all see
/// the right values.
#[test]
fn concurrent_readers_see_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries = mixed_entries();
    write_table(&path, &entries, &small_block_options(Compression::Lz4));
    let table = Arc::new(
        Table::open(
            &crate::storage::StdStorage,
            &path,
            3,
            Arc::new(BlockCache::new(16 * 1024)),
        )
        .unwrap(),
    );
    std::thread::scope(|scope| {
        for thread in 0..4usize {
            let (table, entries) = (&table, &entries);
            scope.spawn(move || {
                for (key, value) in entries.iter().skip(thread).step_by(3) {
                    let found = get(table, format::user_key(key), format::key_seq(key));
                    assert_eq!(found, Some((key.clone(), value.clone())));
                }
            });
        }
    });
}

/// A cursor that does not fill the cache (compaction) leaves it untouched
/// but still reads every entry.
#[test]
fn iteration_without_cache_fill_leaves_the_cache_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries = mixed_entries();
    write_table(&path, &entries, &small_block_options(Compression::None));
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table =
        Arc::new(Table::open(&crate::storage::StdStorage, &path, 3, cache.clone()).unwrap());
    let mut iter = TableIter::with_cache_fill(table, false);
    iter.seek_to_first().unwrap();
    let mut count = 0;
    while iter.valid() {
        assert_eq!(iter.key(), &entries[count].0[..]);
        count += 1;
        iter.next().unwrap();
    }
    assert_eq!(count, entries.len());
    assert_eq!(cache.used_bytes(), 0);
}

/// Flips one bit of the byte at `offset` of the file at `path`.
fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Asserts `result` is a corruption error on `path` at `offset`.
fn assert_corruption<T: std::fmt::Debug>(result: Result<T>, path: &Path, offset: u64) {
    match result {
        Err(Error::Corruption {
            path: error_path,
            offset: error_offset,
            what,
        }) => {
            assert_eq!(error_path, path);
            assert_eq!(
                error_offset, offset,
                "corruption at the wrong offset: {what}"
            );
        }
        other => panic!("expected corruption at {offset}, got {other:?}"),
    }
}

/// Writes a fresh copy of the mixed table and returns its path and entries.
fn fresh_table(dir: &Path, name: &str, compression: Compression) -> (PathBuf, Vec<Entry>) {
    let path = dir.join(name);
    let entries: Vec<Entry> = mixed_entries().into_iter().take(600).collect();
    write_table(&path, &entries, &small_block_options(compression));
    (path, entries)
}

/// The footer of a (healthy) table file.
fn read_footer(path: &Path) -> (Footer, u64) {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - FOOTER_LEN;
    let footer = Footer::decode(bytes[at..].try_into().unwrap(), at as u64).unwrap();
    (footer, at as u64)
}

/// A table whose footer names another format version (here version 1, whose
/// filter block is laid out differently) is refused at open with a
/// corruption error at the footer that names the version problem, even
/// though its checksum is right.
#[test]
fn other_format_versions_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fresh_table(dir.path(), "old.sst", Compression::Lz4);
    let (_, footer_offset) = read_footer(&path);
    for version in [1u32, TABLE_FORMAT_VERSION + 1] {
        let mut bytes = std::fs::read(&path).unwrap();
        let footer = &mut bytes[footer_offset as usize..];
        footer[48..52].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&footer[..52]);
        footer[52..56].copy_from_slice(&crc.to_le_bytes());
        let old_path = dir.path().join(format!("v{version}.sst"));
        std::fs::write(&old_path, &bytes).unwrap();
        match open(&old_path) {
            Err(Error::Corruption { offset, what, .. }) => {
                assert_eq!(offset, footer_offset);
                assert!(what.contains("format version"), "{what}");
            }
            other => panic!("version {version} table opened: {other:?}"),
        }
    }
}

/// A flipped byte in a data block: open succeeds (data is read lazily),
/// reads of that block fail naming its offset, other blocks still read.
#[test]
fn damaged_data_block_is_reported_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [Compression::None, Compression::Lz4] {
        let (path, entries) = fresh_table(dir.path(), &format!("{compression:?}.sst"), compression);
        let handles = open(&path).unwrap().data_block_handles();
        assert!(handles.len() > 5);
        let damaged = handles[3];
        flip_byte(&path, damaged.offset + damaged.size / 2);

        let table = open(&path).unwrap();
        assert_corruption(scan(&table), &path, damaged.offset);
        // Keys in other blocks still read correctly; keys in the damaged
        // block give the error, never a wrong value.
        let mut errors = 0;
        for (key, value) in &entries {
            let user_key = format::user_key(key);
            match table.get(user_key, format::key_seq(key)) {
                Ok(found) => assert_eq!(
                    found.map(|(k, v)| (k.to_vec(), v.to_vec())),
                    Some((key.clone(), value.clone()))
                ),
                Err(error) => {
                    errors += 1;
                    assert_corruption::<()>(Err(error), &path, damaged.offset);
                }
            }
        }
        assert!(errors > 0);
        // A seek into the damaged block reports it too.
        let mut iter = TableIter::new(table.clone());
        let first_in_damaged = entries
            .iter()
            .position(|(key, _)| {
                table
                    .get(format::user_key(key), format::key_seq(key))
                    .is_err()
            })
            .unwrap();
        assert_corruption(
            iter.seek(&entries[first_in_damaged].0),
            &path,
            damaged.offset,
        );
        assert!(!iter.valid());
    }
}

/// Damage to anything read at open fails the open, naming the damaged block.
#[test]
fn damaged_index_filter_properties_or_footer_fail_open_at_their_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fresh_table(dir.path(), "t.sst", Compression::Lz4);
    let (footer, footer_offset) = read_footer(&path);
    assert_eq!(open(&path).unwrap().index_offset(), footer.index.offset);
    let clean = std::fs::read(&path).unwrap();
    let targets = [
        (
            footer.index.offset + footer.index.size / 2,
            footer.index.offset,
        ),
        (footer.filter.offset + 1, footer.filter.offset),
        (footer.properties.offset, footer.properties.offset),
        (
            footer.index.offset + footer.index.size + 2,
            footer.index.offset,
        ), // in the trailer's crc
        (footer_offset + 3, footer_offset),
        (footer_offset + 50, footer_offset),
        (footer_offset + 60, footer_offset),
    ];
    for (damage_at, reported_at) in targets {
        std::fs::write(&path, &clean).unwrap();
        flip_byte(&path, damage_at);
        assert_corruption(open(&path), &path, reported_at);
    }
    // A footer with a valid checksum whose handles overlap or leave gaps.
    for shift in [1u64, u64::MAX] {
        let mut bad = footer;
        bad.index.size = bad.index.size.wrapping_add(shift);
        let mut bytes = clean.clone();
        bytes[footer_offset as usize..].copy_from_slice(&bad.encode());
        std::fs::write(&path, &bytes).unwrap();
        assert_corruption(open(&path), &path, footer_offset);
    }
}

/// A truncated table is corruption, at an offset inside the file.
#[test]
fn truncated_file_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fresh_table(dir.path(), "t.sst", Compression::Lz4);
    let clean = std::fs::read(&path).unwrap();
    for len in [
        0,
        1,
        63,
        64,
        65,
        clean.len() / 2,
        clean.len() - 64,
        clean.len() - 1,
    ] {
        std::fs::write(&path, &clean[..len]).unwrap();
        match open(&path) {
            Err(Error::Corruption {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert!(offset <= len as u64);
            }
            other => panic!("truncated to {len}: expected corruption, got {other:?}"),
        }
    }
}

/// Every byte of a table is covered by a checksum: flipping any one of
/// them makes open or a full scan fail with the damaged region's offset,
/// and `get` never returns a wrong value.
#[test]
fn every_single_byte_flip_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [Compression::None, Compression::Lz4] {
        let path = dir.path().join(format!("{compression:?}.sst"));
        let entries: Vec<Entry> = mixed_entries()
            .into_iter()
            .filter(|(key, _)| format::user_key(key) != b"big")
            .take(80)
            .collect();
        write_table(&path, &entries, &small_block_options(compression));
        let clean = std::fs::read(&path).unwrap();
        let (footer, footer_offset) = read_footer(&path);
        let mut regions: Vec<u64> = open(&path)
            .unwrap()
            .data_block_handles()
            .iter()
            .map(|h| h.offset)
            .collect();
        regions.extend([
            footer.filter.offset,
            footer.properties.offset,
            footer.index.offset,
            footer_offset,
        ]);
        for at in 0..clean.len() as u64 {
            std::fs::write(&path, &clean).unwrap();
            flip_byte(&path, at);
            let region = *regions.iter().rev().find(|&&start| start <= at).unwrap();
            let table = match open(&path) {
                Err(error) => {
                    assert_corruption::<()>(Err(error), &path, region);
                    continue;
                }
                Ok(table) => table,
            };
            assert!(
                region < footer.filter.offset,
                "damage at {at} not seen at open"
            );
            assert_corruption(scan(&table), &path, region);
            for (key, value) in &entries {
                if let Ok(found) = table.get(format::user_key(key), format::key_seq(key)) {
                    assert_eq!(
                        found.map(|(k, v)| (k.to_vec(), v.to_vec())),
                        Some((key.clone(), value.clone()))
                    );
                }
            }
        }
    }
}

/// One generated entry: user key from a small alphabet (so keys share
/// prefixes and collide), sequence, kind, value.
fn entry_strategy() -> impl Strategy<Value = Entry> {
    (
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xffu8)],
            0..6,
        ),
        0u64..40,
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(user, seq, kind, value)| {
            let kind = Kind::from_u8(kind).unwrap();
            let stored = match kind {
                Kind::Delete => Vec::new(),
                Kind::Put => value,
                Kind::PutExpiring => expiring(&value, seq * 1000),
            };
            (internal_key(&user, seq, kind), stored)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A table answers like a sorted model: iteration, seek and get.
    #[test]
    fn table_matches_a_sorted_model(
        entries in proptest::collection::vec(entry_strategy(), 0..300),
        targets in proptest::collection::vec(entry_strategy(), 0..40),
        block_bytes in 32usize..1024,
        restart_interval in 1usize..6,
        lz4 in any::<bool>(),
    ) {
        let entries = sorted(entries);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.sst");
        let options = TableOptions {
            block_bytes,
            restart_interval,
            bloom_bits_per_key: 10,
            compression: if lz4 { Compression::Lz4 } else { Compression::None },
        };
        let meta = write_table(&path, &entries, &options);
        let table = open(&path).unwrap();
        prop_assert_eq!(table.meta(), &meta);
        prop_assert_eq!(meta.entries, entries.len() as u64);
        prop_assert_eq!(scan(&table).unwrap(), entries.clone());
        for (target, _) in targets.iter().chain(entries.iter().take(20)) {
            let found = seek(&table, target);
            prop_assert_eq!(found.as_ref(), model_seek(&entries, target));
            let user_key = format::user_key(target);
            for seq in [format::key_seq(target), 0, 20, u64::MAX] {
                let found = get(&table, user_key, seq);
                prop_assert_eq!(found.as_ref(), model_get(&entries, user_key, seq));
            }
        }
    }
}

proptest! {
    /// Decoders of the footer, properties and index values never panic on
    /// arbitrary bytes (as if a checksum had been bypassed).
    #[test]
    fn metadata_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), footer_offset in any::<u64>()) {
        let _ = TableMeta::decode(&bytes, 0);
        let _ = BlockHandle::decode_varints(&bytes);
        let _ = filter::Filter::parse(Bytes::from(bytes.clone()));
        let _ = decode_stored_block(&bytes);
        if let Ok(footer) = <[u8; FOOTER_LEN]>::try_from(&bytes[..bytes.len().min(FOOTER_LEN)]) {
            let _ = Footer::decode(&footer, footer_offset);
        }
    }

    /// A stored LZ4 block whose checksum is right but whose stated length is
    /// absurd is rejected without allocating that length.
    #[test]
    fn absurd_lz4_length_is_rejected(length in 1_000_000u32.., body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut stored = length.to_le_bytes().to_vec();
        stored.extend_from_slice(&body);
        stored.push(COMPRESSION_LZ4);
        let crc = crc32c::crc32c(&stored);
        stored.extend_from_slice(&crc.to_le_bytes());
        prop_assert!(decode_stored_block(&stored).is_err());
    }
}
