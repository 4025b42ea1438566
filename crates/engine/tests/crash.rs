//! Crash test: a child process writes under `fsync = always` and reports
//! every acknowledged write on stdout; the parent kills it with SIGKILL at a
//! random moment, reopens the database and checks that every acknowledged
//! write is there, that nothing unacknowledged is wrong, and that each
//! writer's keys form a prefix (the WAL keeps order; batches are atomic).
//! Repeated `RINGKV_CRASH_CYCLES` times (default 25).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use ringkv_engine::{Db, FsyncPolicy, Options, WriteBatch};

const WRITERS: usize = 4;
const CHILD_ENV: &str = "RINGKV_CRASH_CHILD_DIR";

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        // Small memtables so kills also land during flushes and compactions.
        memtable_bytes_max: 64 << 10,
        table_target_bytes: 64 << 10,
        level_base_bytes: 256 << 10,
        l0_compaction_trigger: 2,
        ..Options::default()
    }
}

fn key(writer: usize, i: u64) -> Vec<u8> {
    format!("w{writer}-{i:08}").into_bytes()
}

fn value(writer: usize, i: u64) -> Vec<u8> {
    format!("value-{writer}-{i}-")
        .repeat(1 + (i % 7) as usize)
        .into_bytes()
}

/// Highest i such that keys 0..=i of `writer` are all present with the
/// right values; panics on a wrong value or a gap followed by a present key.
fn verify_writer(db: &Db, writer: usize, acked: Option<u64>) -> Option<u64> {
    let prefix = format!("w{writer}-").into_bytes();
    let mut end = prefix.clone();
    *end.last_mut().unwrap() += 1;
    let mut expected = 0u64;
    for entry in db.range(prefix.as_slice()..end.as_slice()) {
        let entry = entry.expect("scan after crash");
        assert_eq!(
            entry.key.as_ref(),
            key(writer, expected).as_slice(),
            "writer {writer}: gap before key"
        );
        assert_eq!(
            entry.value.as_ref(),
            value(writer, expected).as_slice(),
            "writer {writer}: wrong value"
        );
        expected += 1;
    }
    let present = expected.checked_sub(1);
    if let Some(acked) = acked {
        assert!(
            present.is_some_and(|p| p >= acked),
            "writer {writer}: acknowledged write {acked} lost (present up to {present:?})"
        );
    }
    present
}

/// The child: writers append keys in order; every 4th step is a 3-key batch.
fn child(dir: &Path) {
    let db = Db::open(dir, options()).expect("child open");
    let starts: Vec<u64> = (0..WRITERS)
        .map(|w| verify_writer(&db, w, None).map_or(0, |p| p + 1))
        .collect();
    std::thread::scope(|scope| {
        for (writer, start) in starts.into_iter().enumerate() {
            let db = db.clone();
            scope.spawn(move || {
                let mut i = start;
                loop {
                    let last = if i % 4 == 3 {
                        let mut batch = WriteBatch::new();
                        for j in i..i + 3 {
                            batch.put(key(writer, j), value(writer, j), None);
                        }
                        db.write(batch).expect("batch");
                        i + 2
                    } else {
                        db.put(&key(writer, i), &value(writer, i), None)
                            .expect("put");
                        i
                    };
                    println!("ack {writer} {last}");
                    i = last + 1;
                }
            });
        }
    });
}

#[test]
fn crash_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles: usize = std::env::var("RINGKV_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut total_acked = 0u64;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(rng.gen_range(50..400));
        let (sender, receiver) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut acked: [Option<u64>; WRITERS] = [None; WRITERS];
        let mut record = |line: String, acked: &mut [Option<u64>; WRITERS]| {
            let mut parts = line.split_whitespace();
            if parts.next() == Some("ack") {
                let writer: usize = parts.next().unwrap().parse().unwrap();
                let i: u64 = parts.next().unwrap().parse().unwrap();
                acked[writer] = Some(i);
                total_acked += 1;
            }
        };
        while started.elapsed() < kill_after {
            if let Ok(line) = receiver.recv_timeout(Duration::from_millis(5)) {
                record(line, &mut acked);
            }
        }
        // SIGKILL: no destructor, no flush, nothing.
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Acks printed before the kill count too.
        while let Ok(line) = receiver.try_recv() {
            record(line, &mut acked);
        }
        let db = Db::open(dir.path(), options()).expect("reopen after kill");
        for (writer, acked) in acked.iter().enumerate() {
            verify_writer(&db, writer, *acked);
        }
        db.close().unwrap();
        eprintln!("cycle {cycle}: killed after {kill_after:?}, acked {acked:?}");
    }
    assert!(total_acked > 0, "the child never acknowledged a write");
}
