//! Following a database through its change log, as a replica does: start
//! from a checkpoint, apply every later batch with its original sequence,
//! end with the same keys, values and versions.

use std::time::Duration;

use ringkv_engine::{Db, LogRead, Options, WriteBatch};

fn options(change_log_bytes_max: usize) -> Options {
    Options {
        memtable_bytes_max: 128 << 10,
        change_log_bytes_max,
        ..Options::default()
    }
}

/// (key, value, version, expiry) of every live key.
type Dump = Vec<(Vec<u8>, Vec<u8>, u64, Option<u64>)>;

fn dump(db: &Db) -> Dump {
    db.iter()
        .map(|e| {
            let e = e.unwrap();
            (e.key.to_vec(), e.value.to_vec(), e.version, e.expires_at_ms)
        })
        .collect()
}

/// Applies everything the leader's log holds after the follower's last
/// sequence; false when the log no longer holds it.
fn catch_up(leader: &Db, follower: &Db) -> bool {
    loop {
        let from = follower.last_sequence() + 1;
        match leader.read_log(from, 64 << 10) {
            LogRead::Trimmed { .. } => return false,
            LogRead::Batches(batches) if batches.is_empty() => return true,
            LogRead::Batches(batches) => {
                for batch in batches {
                    let seq = follower.apply_log_batch(&batch.record).unwrap();
                    assert_eq!(seq, batch.last_seq);
                }
            }
        }
    }
}

#[test]
fn a_follower_from_a_checkpoint_converges_through_the_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Db::open(dir.path().join("leader"), options(8 << 20)).unwrap();
    for i in 0..5_000u32 {
        leader
            .put(format!("k{i:05}").as_bytes(), b"before", None)
            .unwrap();
    }
    leader.checkpoint(dir.path().join("follower")).unwrap();
    let follower = Db::open(dir.path().join("follower"), options(0)).unwrap();
    for i in 0..5_000u32 {
        let key = format!("k{i:05}");
        match i % 3 {
            0 => {
                leader.delete(key.as_bytes()).unwrap();
            }
            1 => {
                leader
                    .put(key.as_bytes(), b"after", Some(4_000_000_000_000))
                    .unwrap();
            }
            _ => {
                let mut batch = WriteBatch::new();
                batch
                    .put(key.clone(), "batched", None)
                    .put(format!("new{i}"), "x", None);
                leader.write(batch).unwrap();
            }
        }
    }
    assert!(catch_up(&leader, &follower));
    assert_eq!(follower.last_sequence(), leader.last_sequence());
    assert_eq!(dump(&follower), dump(&leader));

    // A batch out of order is refused, nothing applied.
    let LogRead::Batches(old) = leader.read_log(leader.last_sequence(), 1 << 20) else {
        panic!("the last batch is held");
    };
    assert!(follower.apply_log_batch(&old[0].record).is_err());
    let mut damaged = old[0].record.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(follower.apply_log_batch(&damaged).is_err());
    assert_eq!(dump(&follower), dump(&leader));

    // The follower survives a restart with the leader's versions.
    follower.close().unwrap();
    let follower = Db::open(dir.path().join("follower"), options(0)).unwrap();
    assert_eq!(dump(&follower), dump(&leader));
    follower.close().unwrap();
    leader.close().unwrap();
}

#[test]
fn a_reader_too_far_behind_is_told_to_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Db::open(dir.path(), options(4 << 10)).unwrap();
    for i in 0..1_000u32 {
        leader
            .put(format!("k{i}").as_bytes(), &[7u8; 100], None)
            .unwrap();
    }
    match leader.read_log(1, 1 << 20) {
        LogRead::Trimmed { oldest_held } => assert!(oldest_held > 1),
        other => panic!("expected Trimmed, got {other:?}"),
    }
    let (bytes, oldest) = leader.change_log_usage();
    assert!(bytes <= 4 << 10 && oldest.is_some());
    // A waiter wakes when the sequence it waits for commits.
    let next = leader.last_sequence() + 1;
    let waiter = {
        let leader = leader.clone();
        std::thread::spawn(move || leader.wait_for_sequence(next, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(50));
    leader.put(b"wake", b"up", None).unwrap();
    assert_eq!(waiter.join().unwrap(), next);
    leader.close().unwrap();
}
