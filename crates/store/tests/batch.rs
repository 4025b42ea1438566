//! `Keyspace::batch` (a server's write run, docs/server.md "Write runs"): steps on a few keys,
//! some of them on a key an earlier step of the same batch wrote, give what the same steps
//! give run one by one with `set_raw` and `update`: the same replies, values, expiries, DBSIZE,
//! and the same counts after the clock passes every expiry and the sweep runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_engine::{Db, Options};
use ringkv_store::{encode_value, Clock, Error, Keyspace, ManualClock, StoredValue, ValueType};

const START_MS: u64 = 1_700_000_000_000;

fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Keyspace {
    let options = Options {
        clock,
        ..Options::default()
    };
    Keyspace::open(Db::open(dir, options).expect("open engine"), false, None)
        .expect("open keyspace")
}

/// One command of a run.
#[derive(Debug, Clone)]
enum Step {
    /// SET key value, with an expiry `ms` from now (0: none; 1: already passed).
    Set { key: u8, value: u8, ms: u64 },
    /// INCR key: keeps the expiry; an error (no write) on a value that is not a number.
    Incr { key: u8 },
    /// GETDEL key: deletes through an expiry in the past.
    Delete { key: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0u8..4,
            any::<u8>(),
            prop_oneof![Just(0u64), Just(1), 1_000..5_000u64]
        )
            .prop_map(|(key, value, ms)| Step::Set { key, value, ms }),
        (0u8..4).prop_map(|key| Step::Incr { key }),
        (0u8..4).prop_map(|key| Step::Delete { key }),
    ]
}

fn key(index: u8) -> Bytes {
    Bytes::from(format!("k{index}"))
}

/// The value to set: a number most of the time (so INCR works), else text.
fn value(value: u8) -> Bytes {
    let text = if value.is_multiple_of(4) {
        format!("text{value}")
    } else {
        value.to_string()
    };
    encode_value(ValueType::String, text.as_bytes())
}

type Decision = (Option<(Bytes, Option<u64>)>, String);

/// What `step` decides given the key's live value; the reply as text.
fn decide(step: &Step, now_ms: u64, old: Option<&StoredValue>) -> Result<Decision, Error> {
    Ok(match step {
        Step::Set { value: v, ms, .. } => {
            let at = match ms {
                0 => None,
                1 => Some(now_ms - 1),
                ms => Some(now_ms + ms),
            };
            (Some((value(*v), at)), "OK".into())
        }
        Step::Incr { .. } => {
            let current = match old {
                None => 0,
                Some(old) => match std::str::from_utf8(&old.payload())
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                {
                    Some(n) => n,
                    None => return Ok((None, "ERR not an integer".into())),
                },
            };
            let new = current + 1;
            let raw = encode_value(ValueType::String, new.to_string().as_bytes());
            (
                Some((raw, old.and_then(|o| o.expires_at_ms))),
                new.to_string(),
            )
        }
        Step::Delete { .. } => match old {
            None => (None, "nil".into()),
            Some(old) => (Some((old.raw.clone(), Some(0))), "deleted".into()),
        },
    })
}

fn key_of(step: &Step) -> u8 {
    match step {
        Step::Set { key, .. } | Step::Incr { key } | Step::Delete { key } => *key,
    }
}

/// A key's value and expiry, if it is there.
type Held = Option<(Bytes, Option<u64>)>;

/// Every key's (value, expiry) and DBSIZE.
fn state(keyspace: &Keyspace) -> (Vec<Held>, i64) {
    let values = (0..4)
        .map(|i| {
            keyspace
                .get(0, &key(i))
                .unwrap()
                .map(|v| (v.payload(), v.expires_at_ms))
        })
        .collect();
    (values, keyspace.dbsize(0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_of_steps_is_the_steps_run_one_by_one(
        runs in prop::collection::vec(prop::collection::vec(step(), 1..12), 1..6),
    ) {
        let (dir_batch, dir_alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let clock = Arc::new(ManualClock::new(START_MS));
        let batched = open(dir_batch.path(), clock.clone());
        let alone = open(dir_alone.path(), clock.clone());
        for run in &runs {
            let now_ms = clock.now_ms();
            let keys: Vec<Bytes> = run.iter().map(|s| key(key_of(s))).collect();
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let (replies, committed) = batched.batch(0, &key_refs, |batch| {
                run.iter()
                    .zip(&keys)
                    .map(|(step, key)| match step {
                        Step::Set { .. } => {
                            let (write, reply) = decide(step, now_ms, None).unwrap();
                            let (raw, at) = write.unwrap();
                            batch.set(key, raw, at).unwrap();
                            reply
                        }
                        _ => batch
                            .update(key, |old| decide(step, now_ms, old))
                            .unwrap(),
                    })
                    .collect::<Vec<String>>()
            });
            committed.unwrap();
            let expected: Vec<String> = run
                .iter()
                .zip(&keys)
                .map(|(step, key)| match step {
                    Step::Set { .. } => {
                        let (write, reply) = decide(step, now_ms, None).unwrap();
                        let (raw, at) = write.unwrap();
                        alone.set_raw(0, key, raw, at).unwrap();
                        reply
                    }
                    _ => alone.update(0, key, |old| decide(step, now_ms, old)).unwrap().0,
                })
                .collect();
            prop_assert_eq!(&replies, &expected, "run {:?}", run);
            prop_assert_eq!(state(&batched), state(&alone), "after run {:?}", run);
            clock.advance(700);
        }
        // Past every expiry: the sweep leaves both with the same exact counts.
        clock.advance(10_000);
        for keyspace in [&batched, &alone] {
            keyspace.expire_cycle(Instant::now() + Duration::from_secs(5)).unwrap();
        }
        prop_assert_eq!(state(&batched), state(&alone));
        let live = state(&alone).0.iter().filter(|v| v.is_some()).count() as i64;
        prop_assert_eq!(batched.dbsize(0), live);
    }
}
