//! The engine on a bad day: damaged tables, torn WAL tails, a second
//! process, a disk that refuses writes. Each must give a clear error or a
//! clean recovery, never a panic, a wrong value or silent loss.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringkv_engine::{Db, Error, FsyncPolicy, Options};

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        compression: ringkv_engine::Compression::None,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-").repeat(8).into_bytes()
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// Writes keys 0..100 (one WAL record each) into `parent/live`, copies the
/// directory to `parent/crashed` as a crash would leave it (the WAL holds
/// every acknowledged write, nothing was flushed), closes the live one and
/// returns the copy.
fn crashed_after_100_puts(parent: &Path) -> PathBuf {
    let live = parent.join("live");
    let db = Db::open(&live, options()).unwrap();
    for i in 0..100 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    let crashed = parent.join("crashed");
    fs::create_dir(&crashed).unwrap();
    for entry in fs::read_dir(&live).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, crashed.join(path.file_name().unwrap())).unwrap();
    }
    db.close().unwrap();
    crashed
}

#[test]
fn corrupt_table_block_is_an_error_naming_the_file_never_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..2000 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    db.close().unwrap();
    let tables = files_with_suffix(dir.path(), ".sst");
    assert_eq!(tables.len(), 1, "close flushes the memtable into one table");
    let table = &tables[0];
    let mut bytes = fs::read(table).unwrap();
    // A byte inside the data blocks (they start at offset 0).
    bytes[5000] ^= 0x5a;
    fs::write(table, &bytes).unwrap();

    let db = Db::open(dir.path(), options()).unwrap();
    let mut errors = 0;
    for i in 0..2000 {
        match db.get(&key(i)) {
            Ok(Some(entry)) => assert_eq!(entry.value.as_ref(), value(i).as_slice()),
            Ok(None) => panic!("key {i} silently missing"),
            Err(Error::Corruption { path, .. }) => {
                assert_eq!(&path, table);
                errors += 1;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(errors > 0, "the damaged block must be reported");
    let scan: Result<Vec<_>, _> = db.iter().collect();
    match scan {
        Err(Error::Corruption { path, .. }) => assert_eq!(&path, table),
        other => panic!(
            "scan over a damaged block must fail, got {:?}",
            other.map(|v| v.len())
        ),
    }
    let message = db
        .get(&key(1000))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.is_empty() || message.contains(".sst"), "{message}");
}

#[test]
fn corrupt_table_footer_refuses_to_serve_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..100 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    db.close().unwrap();
    let table = files_with_suffix(dir.path(), ".sst").remove(0);
    let mut bytes = fs::read(&table).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xff;
    fs::write(&table, &bytes).unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    match db.get(&key(7)) {
        Err(error @ Error::Corruption { .. }) => {
            assert!(error.to_string().contains(&table.display().to_string()))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn torn_wal_tail_is_cut_off_and_the_prefix_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = crashed_after_100_puts(dir.path());
    let segment = files_with_suffix(&crashed, ".wal").pop().unwrap();
    let length = fs::metadata(&segment).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(length - 10).unwrap();
    drop(file);

    let db = Db::open(&crashed, options()).unwrap();
    let stats = db.stats();
    assert_eq!(
        stats.recovery.wal_ops, 99,
        "the torn last record is dropped"
    );
    assert!(stats.recovery.wal_bytes_dropped > 0);
    // A torn tail (nothing intact after it) is the ordinary case: no alarm, no copy kept.
    assert!(!stats.recovery.wal_damaged_mid_log);
    assert!(files_with_suffix(&crashed, ".damaged").is_empty());
    for i in 0..99 {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap().value.as_ref(),
            value(i).as_slice()
        );
    }
    assert!(db.get(&key(99)).unwrap().is_none());
    // New writes after recovery get fresh, higher versions.
    let seq = db.put(b"after", b"recovery", None).unwrap();
    assert!(seq > db.get(&key(98)).unwrap().unwrap().version);
    db.close().unwrap();
    let db = Db::open(&crashed, options()).unwrap();
    assert_eq!(db.iter().count(), 100);
    db.close().unwrap();
}

#[test]
fn a_second_opener_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    match Db::open(dir.path(), options()) {
        Err(error @ Error::Locked { .. }) => {
            assert!(
                error.to_string().contains("locked by another process"),
                "{error}"
            )
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    db.close().unwrap();
    // Released on close.
    Db::open(dir.path(), options()).unwrap().close().unwrap();
}

const FULL_DISK_CHILD: &str = "RINGKV_FULL_DISK_CHILD_DIR";

/// Child: the OS refuses to let any file grow past 1 MiB (RLIMIT_FSIZE,
/// writes fail with EFBIG as on a full disk). Writes until the engine
/// reports the error, checks reads still work and writes stay refused,
/// then gives the space back and checks writes resume by themselves.
#[test]
fn full_disk_child_entry() {
    let Ok(dir) = std::env::var(FULL_DISK_CHILD) else {
        return;
    };
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ turns
    // the over-limit write into an EFBIG error instead of killing us, and the
    // limit only affects this child process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let db = Db::open(&dir, options()).unwrap();
    let mut acked = 0u32;
    let error = loop {
        match db.put(&key(acked), &value(acked), None) {
            Ok(_) => acked += 1,
            Err(error) => break error,
        }
        assert!(acked < 1_000_000, "the file size limit never hit");
    };
    assert!(
        matches!(error, Error::DiskFull { .. }),
        "expected a disk-full error, got {error}"
    );
    assert!(
        error.to_string().contains("resume once space is freed"),
        "{error}"
    );
    // Further writes are refused, reads still served.
    for _ in 0..3 {
        assert!(matches!(
            db.put(b"more", b"data", None),
            Err(Error::DiskFull { .. })
        ));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(
        db.get(&key(0)).unwrap().unwrap().value.as_ref(),
        value(0).as_slice()
    );
    // Space comes back: the background retry writes what was held back and
    // writes resume without a restart.
    // SAFETY: as above; raising the soft limit up to the (infinite) hard one.
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let resumed = std::time::Instant::now();
    loop {
        match db.put(&key(acked), &value(acked), None) {
            Ok(_) => break,
            Err(Error::DiskFull { .. }) if resumed.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(other) => panic!("writes did not resume: {other}"),
        }
    }
    acked += 1;
    for _ in 0..100 {
        db.put(&key(acked), &value(acked), None).unwrap();
        acked += 1;
    }
    db.close().unwrap();
    println!("\nacked {acked}");
}

#[test]
fn full_disk_is_an_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "full_disk_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_DISK_CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked: u32 = stdout
        .lines()
        .find_map(|l| l.split("acked ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("child reports its acknowledged writes")
        .parse()
        .unwrap();
    assert!(acked > 1000);
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..acked {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap().value.as_ref(),
            value(i).as_slice(),
            "key {i}"
        );
    }
    db.close().unwrap();
}

#[test]
fn verify_directory_checks_every_block_and_names_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), options()).unwrap();
    for i in 0..3000 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    db.checkpoint(dir.path().join("backup")).unwrap();
    db.close().unwrap();
    let backup = dir.path().join("backup");
    let mut seen = 0;
    let report = ringkv_engine::verify_directory(&backup, |_, _| seen += 1).unwrap();
    assert_eq!(report.tables, 1);
    assert_eq!(report.table_entries, 3000);
    assert_eq!(seen, report.files.len());
    assert_eq!(report.wal_torn_bytes, 0);

    let table = files_with_suffix(&backup, ".sst").remove(0);
    let mut bytes = fs::read(&table).unwrap();
    bytes[20_000] ^= 0x01;
    fs::write(&table, &bytes).unwrap();
    match ringkv_engine::verify_directory(&backup, |_, _| {}) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, table),
        other => panic!("expected corruption in {}, got {other:?}", table.display()),
    }
    assert!(
        ringkv_engine::verify_directory(dir.path(), |_, _| {}).is_err(),
        "no database there"
    );
}

#[test]
fn a_manifest_that_lost_a_committed_flush_refuses_to_open_instead_of_dropping_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let db = Db::open(&live, options()).unwrap();
    for i in 0..100 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    // The flush commits a manifest edit naming the new table and retires
    // the WAL segment that held these writes.
    db.flush().unwrap();
    for i in 100..200 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    let damaged = dir.path().join("damaged");
    fs::create_dir(&damaged).unwrap();
    for entry in fs::read_dir(&live).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, damaged.join(path.file_name().unwrap())).unwrap();
    }
    db.close().unwrap();
    // Cut the manifest's last record (the flush's edit) off the copy.
    let manifest = files_with_suffix(&damaged, "")
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .unwrap();
    let bytes = fs::read(&manifest).unwrap();
    let first_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 8;
    assert!(bytes.len() > first_len, "the flush appended an edit");
    fs::write(&manifest, &bytes[..bytes.len() - 3]).unwrap();

    match Db::open(&damaged, options()) {
        Err(error @ Error::Corruption { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("lost a committed edit") && text.contains(".sst"),
                "{text}"
            );
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(db) => {
            let present = (0..200)
                .filter(|&i| db.get(&key(i)).unwrap().is_some())
                .count();
            panic!("opened with {present} of 200 keys: the flushed ones were dropped");
        }
    }
    // The table is still there for an operator to recover from.
    assert_eq!(files_with_suffix(&damaged, ".sst").len(), 1);
}

/// A failed WAL fsync is never retried as if nothing happened (the kernel may
/// already have dropped the dirty pages, so a second fsync could succeed over
/// lost data): the write that needed it fails, every later write is refused
/// with `Poisoned` naming the first failure, reads go on, and only a reopen,
/// which recovers from what is really on disk, accepts writes again.
#[test]
fn failed_fsync_poisons_writes_until_reopen_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let options = options();
    let faults = options.faults.clone();
    let db = Db::open(dir.path(), options).unwrap();
    for i in 0..50 {
        db.put(&key(i), &value(i), None).unwrap();
    }
    faults.fail_wal_fsyncs(1);
    let failed = db.put(&key(50), &value(50), None).unwrap_err();
    assert!(
        matches!(failed, Error::Io { .. }),
        "the write whose fsync failed reports the I/O error, got {failed:?}"
    );
    let text = failed.to_string();
    assert!(
        text.contains(".wal"),
        "the error names the log file: {text}"
    );
    assert_eq!(faults.wal_fsync_failures_armed(), 0);

    // The fault is gone, yet nothing is retried: writes stay refused.
    for attempt in [51, 52] {
        match db.put(&key(attempt), &value(attempt), None) {
            Err(Error::Poisoned { reason }) => {
                assert!(reason.contains(".wal"), "names the first failure: {reason}");
            }
            other => panic!("a write after a failed fsync must be refused, got {other:?}"),
        }
    }
    let mut batch = ringkv_engine::WriteBatch::new();
    batch.put(&b"batched"[..], &b"x"[..], None);
    assert!(matches!(db.write(batch), Err(Error::Poisoned { .. })));
    assert!(matches!(db.delete(&key(0)), Err(Error::Poisoned { .. })));
    // Reads still answer, from memory and tables.
    for i in 0..50 {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap().value.as_ref(),
            value(i).as_slice()
        );
    }
    // As a crash would: no clean close.
    drop(db);

    let db = Db::open(dir.path(), self::options()).unwrap();
    for i in 0..50 {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap().value.as_ref(),
            value(i).as_slice(),
            "acknowledged write {i} survives"
        );
    }
    for refused in [51, 52] {
        assert!(db.get(&key(refused)).unwrap().is_none());
    }
    // Key 50 was never acknowledged: either outcome is allowed, but it must be whole.
    if let Some(entry) = db.get(&key(50)).unwrap() {
        assert_eq!(entry.value.as_ref(), value(50).as_slice());
    }
    db.put(b"after", b"reopen", None).unwrap();
    db.close().unwrap();
}

/// A record damaged in the middle of the log (intact records follow it) is
/// not mistaken for a torn tail: recovery keeps the prefix before it (never a
/// later write without an earlier one), says so in `Recovery`, and keeps a
/// copy of the segment instead of letting it be retired and deleted.
#[test]
fn damaged_record_mid_log_recovers_the_prefix_and_keeps_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = crashed_after_100_puts(dir.path());
    let segment = files_with_suffix(&crashed, ".wal").pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&segment, &bytes).unwrap();

    let db = Db::open(&crashed, options()).unwrap();
    let recovery = db.stats().recovery;
    assert!(recovery.wal_damaged_mid_log, "{recovery:?}");
    assert!(
        recovery.wal_ops > 0 && recovery.wal_ops < 100,
        "{recovery:?}"
    );
    let kept: Vec<u32> = (0..100)
        .filter(|&i| db.get(&key(i)).unwrap().is_some())
        .collect();
    assert_eq!(
        kept,
        (0..recovery.wal_ops as u32).collect::<Vec<_>>(),
        "a prefix of the writes, nothing after the damage"
    );
    for &i in &kept {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap().value.as_ref(),
            value(i).as_slice()
        );
    }
    let mut damaged = segment.into_os_string();
    damaged.push(".damaged");
    assert_eq!(
        fs::read(&damaged).unwrap(),
        bytes,
        "the damaged segment is kept as it was"
    );
    db.close().unwrap();
}
