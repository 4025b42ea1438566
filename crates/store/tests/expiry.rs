//! Expiry on a manual clock: keys vanish exactly when their time comes, the
//! active sweep reclaims them and keeps DBSIZE exact, with no sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_engine::{Db, Options};
use ringkv_store::{Clock, Keyspace, ManualClock};

const START_MS: u64 = 1_700_000_000_000;

fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Keyspace {
    let options = Options {
        clock,
        ..Options::default()
    };
    let engine = Db::open(dir, options).expect("open engine");
    Keyspace::open(engine, false, None).expect("open keyspace")
}

fn sweep(keyspace: &Keyspace) -> u64 {
    let (removed, _) = keyspace
        .expire_cycle(Instant::now() + Duration::from_secs(5))
        .expect("sweep");
    removed
}

#[test]
fn keys_vanish_at_their_deadline_and_the_sweep_keeps_counts_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let keyspace = open(dir.path(), clock.clone());
    for i in 0..1_000u64 {
        let key = format!("ttl:{i}");
        // Deadlines spread over 200..1200 ms from now.
        let at = START_MS + 200 + i % 1_000;
        keyspace
            .set_string(0, key.as_bytes(), b"v", Some(at))
            .unwrap();
    }
    keyspace
        .set_string(0, b"persistent", b"stays", None)
        .unwrap();
    assert_eq!(keyspace.dbsize(0), 1_001);

    clock.advance(700);
    for i in 0..1_000u64 {
        let key = format!("ttl:{i}");
        let due = START_MS + 200 + i % 1_000 <= clock.now_ms();
        let found = keyspace.get_string(0, key.as_bytes()).unwrap();
        assert_eq!(found.is_none(), due, "ttl:{i} at {}", clock.now_ms());
    }
    // Expired but not yet swept: still counted, as Redis' DBSIZE.
    assert_eq!(keyspace.dbsize(0), 1_001);
    assert_eq!(sweep(&keyspace), 501);
    assert_eq!(keyspace.dbsize(0), 500);
    assert_eq!(sweep(&keyspace), 0, "nothing else is due yet");

    clock.advance(10_000);
    assert_eq!(sweep(&keyspace), 499);
    assert_eq!(keyspace.dbsize(0), 1);
    assert_eq!(keyspace.expired_keys(), 1_000);
    let left: Vec<_> = keyspace
        .range(0, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
        .map(|item| item.unwrap().0)
        .collect();
    assert_eq!(left, vec![bytes::Bytes::from_static(b"persistent")]);
}

#[test]
fn rewriting_an_expired_unswept_key_keeps_the_count_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let keyspace = open(dir.path(), clock.clone());
    for i in 0..100 {
        keyspace
            .set_string(0, format!("k{i}").as_bytes(), b"1", Some(START_MS + 50))
            .unwrap();
    }
    clock.advance(400);
    assert!(!keyspace.exists(0, b"k1").unwrap());
    assert_eq!(keyspace.dbsize(0), 100);
    keyspace.set_string(0, b"k1", b"new", None).unwrap();
    sweep(&keyspace);
    assert_eq!(keyspace.dbsize(0), 1);
    assert_eq!(
        &keyspace.get_string(0, b"k1").unwrap().unwrap().data[..],
        b"new"
    );
}

#[test]
fn an_expiry_not_in_the_future_deletes_and_a_clock_going_back_revives_nothing_swept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let keyspace = open(dir.path(), clock.clone());
    keyspace.set_string(0, b"a", b"1", None).unwrap();
    keyspace.set_string(0, b"a", b"2", Some(START_MS)).unwrap();
    assert!(!keyspace.exists(0, b"a").unwrap());
    assert_eq!(keyspace.dbsize(0), 0);

    keyspace
        .set_string(0, b"b", b"1", Some(START_MS + 10))
        .unwrap();
    clock.advance(20);
    assert_eq!(sweep(&keyspace), 1);
    clock.set(START_MS);
    assert!(!keyspace.exists(0, b"b").unwrap(), "a swept key stays gone");
    assert_eq!(keyspace.dbsize(0), 0);
}
