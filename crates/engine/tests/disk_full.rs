//! A real full disk: the database on a small tmpfs (mounted by the test;
//! root needed, as in CI) with small memtables, so the space runs out while
//! WAL segments, flushes, compactions and manifest edits are all being
//! written. Writes must be refused with a clear disk-full error, reads must
//! go on, and after space is freed and the process "restarts" every
//! acknowledged write must be there.
//!
//! Skipped, with a message, when the tmpfs cannot be mounted, unless
//! `RINGKV_MOUNT_TESTS=1` (then it fails loudly).

use ringkv_engine::{Compression, Db, FsyncPolicy, Options};

#[path = "support/tmpfs.rs"]
mod tmpfs;

use tmpfs::mount_tmpfs;

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        memtable_bytes_max: 256 << 10,
        table_target_bytes: 256 << 10,
        level_base_bytes: 1 << 20,
        compression: Compression::None,
        ..Options::default()
    }
}

fn value(i: u64) -> Vec<u8> {
    // Not compressible by accident: each value differs throughout.
    (0..1024u64)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) % 251) as u8)
        .collect()
}

#[test]
fn a_disk_that_fills_during_flushes_refuses_writes_keeps_reads_and_loses_nothing_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let mount_point = work.path().join("small");
    let Some(_mount) = mount_tmpfs(&mount_point, "8m") else {
        return;
    };
    // A filler leaves ~3 MiB: a few memtables' worth of WAL, tables and manifest.
    let filler = mount_point.join("filler");
    std::fs::write(&filler, vec![7u8; 5 << 20]).unwrap();
    let dir = mount_point.join("db");
    let db = Db::open(&dir, options()).unwrap();
    let mut acked = 0u64;
    let refusal = loop {
        let key = format!("key-{acked:08}");
        match db.put(key.as_bytes(), &value(acked), None) {
            Ok(_) => acked += 1,
            Err(error) => break error,
        }
        assert!(acked < 100_000, "the disk never filled");
    };
    assert!(refusal.is_disk_full(), "not a disk-full error: {refusal}");
    let stats = db.stats();
    let reason = stats.write_error.clone().unwrap_or_default();
    eprintln!(
        "{acked} writes acknowledged; refused with: {refusal}; write_error: {reason}; \
         flushes {}, compactions {}",
        stats.flushes, stats.compactions
    );
    assert!(stats.disk_full, "{stats:?}");
    assert!(stats.flushes > 0, "the disk filled before any flush");
    // Later writes are refused too, with the same clear error, while reads go on.
    let again = db.put(b"later", b"x", None).unwrap_err();
    assert!(again.is_disk_full(), "{again}");
    for i in (0..acked).step_by(97) {
        let entry = db.get(format!("key-{i:08}").as_bytes()).unwrap();
        assert_eq!(entry.map(|e| e.value.to_vec()), Some(value(i)), "key {i}");
    }
    // Space comes back; the process restarts (no clean close: the page cache survives a
    // process crash, so this is what a restart after a kill finds).
    std::fs::remove_file(&filler).unwrap();
    drop(db);
    // A background thread may still hold the dropped handle for a moment (a flush retrying
    // on the full disk), and with it the directory lock: the "restart" waits for it, as a
    // restarted process would wait for the old one to exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let db = loop {
        match Db::open(&dir, options()) {
            Err(ringkv_engine::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => break opened.unwrap(),
        }
    };
    for i in 0..acked {
        let entry = db.get(format!("key-{i:08}").as_bytes()).unwrap();
        assert_eq!(entry.map(|e| e.value.to_vec()), Some(value(i)), "key {i}");
    }
    db.put(b"after", b"restart", None).unwrap();
    db.close().unwrap();
}
