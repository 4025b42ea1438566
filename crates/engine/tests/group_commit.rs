//! Group commit under `always` without a thread per writer (docs/durability.md, "Group
//! commit without a thread per writer"): a write made inside `without_waiting` returns before
//! its fsync, stays invisible until then, and its writer awaits `Db::synced`, which one
//! engine thread answers for every waiter at once; a read of such a key there reads it as
//! written and says so (`take_unsynced_read`), so its reply waits for that fsync too.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use ringkv_engine::{without_waiting, Db, FsyncPolicy, Options, WriteBatch};

/// Runs a future to completion on this thread (the engine has no runtime of its own).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn open_always(dir: &std::path::Path) -> (Db, Arc<ringkv_engine::Faults>) {
    let options = Options {
        fsync: FsyncPolicy::Always,
        ..Options::default()
    };
    let faults = options.faults.clone();
    (Db::open(dir, options).unwrap(), faults)
}

fn put(key: &str, value: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(key.as_bytes().to_vec(), value.as_bytes().to_vec(), None);
    batch
}

fn value(db: &Db, key: &str) -> Option<String> {
    db.get(key.as_bytes())
        .unwrap()
        .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
}

#[test]
fn a_write_without_waiting_is_invisible_until_its_group_fsync_and_then_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _faults) = open_always(dir.path());
    let (seq, refused) = without_waiting(|| db.write_deferred(put("a", "1")));
    let seq = seq.unwrap();
    assert!(!refused);
    assert_eq!(db.last_written_sequence(), seq);
    // Nobody asked for the fsync yet: the write is in the WAL buffer, invisible.
    assert!(db.last_sequence() < seq);
    let unseen = db.snapshot();
    assert!(unseen.get(b"a").unwrap().is_none());
    block_on(db.synced(seq)).unwrap();
    assert!(db.is_synced(seq));
    assert_eq!(db.last_sequence(), seq);
    assert_eq!(value(&db, "a").as_deref(), Some("1"));
    assert_eq!(db.stats().wal.syncs, 1);
}

#[test]
fn a_read_of_a_key_waiting_for_its_fsync_reads_it_as_written_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _faults) = open_always(dir.path());
    db.put(b"n", b"1", None).unwrap();
    let seq = without_waiting(|| db.write_deferred(put("n", "2")))
        .0
        .unwrap();
    assert_eq!(
        ringkv_engine::take_unsynced_read(),
        0,
        "a write alone reads nothing"
    );
    // A read-modify-write elsewhere builds on the write before it (no lost update), and is
    // told to answer only once that write is fsynced.
    let (read, refused) = without_waiting(|| db.get(b"n").unwrap().map(|e| e.value));
    assert!(!refused);
    assert_eq!(read.as_deref(), Some(&b"2"[..]));
    assert_eq!(ringkv_engine::take_unsynced_read(), seq);
    assert_eq!(ringkv_engine::take_unsynced_read(), 0, "taken once");
    let (head, _) = without_waiting(|| db.head(b"n").unwrap().map(|h| h.version));
    assert_eq!(head, Some(seq));
    assert_eq!(ringkv_engine::take_unsynced_read(), seq);
    // A key nobody is writing is read from what is published, and says nothing.
    let (fresh, _) = without_waiting(|| db.get(b"untouched").unwrap().is_none());
    assert!(fresh);
    assert_eq!(ringkv_engine::take_unsynced_read(), 0);
    // Outside `without_waiting` only what is fsynced is ever read: a snapshot does not see
    // the write, a read of its key waits for the fsync and then does.
    assert!(db.snapshot().get(b"n").unwrap().unwrap().value == b"1"[..]);
    assert_eq!(value(&db, "n").as_deref(), Some("2"));
    assert!(db.is_synced(seq));
    assert_eq!(db.last_sequence(), seq);
}

#[test]
fn a_group_whose_fsync_fails_fails_every_waiter_and_its_writes_are_never_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (db, faults) = open_always(dir.path());
    db.put(b"before", b"1", None).unwrap();
    faults.fail_wal_fsyncs(1);
    let seqs: Vec<u64> = (0..3)
        .map(|i| {
            without_waiting(|| db.write_deferred(put(&format!("k{i}"), "v")))
                .0
                .unwrap()
        })
        .collect();
    for seq in seqs {
        assert!(block_on(db.synced(seq)).is_err());
    }
    for i in 0..3 {
        assert_eq!(value(&db, &format!("k{i}")), None);
    }
    assert_eq!(value(&db, "before").as_deref(), Some("1"));
    assert!(db.iter().all(|e| e.unwrap().key != b"k0"[..]));
}

#[test]
fn many_writers_share_fsyncs_and_every_acknowledged_write_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let writers = 16;
    let writes = 200;
    {
        let (db, _faults) = open_always(dir.path());
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..writes {
                        let key = format!("w{w}:{i}");
                        let seq = without_waiting(|| db.write_deferred(put(&key, &key)))
                            .0
                            .unwrap();
                        block_on(db.synced(seq)).unwrap();
                        assert_eq!(value(&db, &key).as_deref(), Some(&key[..]));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let syncs = db.stats().wal.syncs;
        assert!(
            syncs < (writers * writes) as u64,
            "no fsync was shared: {syncs}"
        );
        drop(db); // a crash: no flush at close
    }
    let (db, _faults) = open_always(dir.path());
    for w in 0..writers {
        for i in 0..writes {
            let key = format!("w{w}:{i}");
            assert_eq!(value(&db, &key).as_deref(), Some(&key[..]), "{key} lost");
        }
    }
}
