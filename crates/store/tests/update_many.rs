//! `Keyspace::update_many`: several keys decided under their locks and committed as one
//! batch (a cluster replica's MSET within a slot, docs/cluster.md "What is atomic").

use std::sync::Arc;

use bytes::Bytes;
use ringkv_engine::{Db, Options};
use ringkv_store::{encode_value, Keyspace, ManualClock, ValueType};

const START_MS: u64 = 1_700_000_000_000;

fn open(dir: &std::path::Path) -> Keyspace {
    let options = Options {
        clock: Arc::new(ManualClock::new(START_MS)),
        ..Options::default()
    };
    Keyspace::open(Db::open(dir, options).expect("open engine"), false, None)
        .expect("open keyspace")
}

fn string(text: &str) -> Bytes {
    encode_value(ValueType::String, text.as_bytes())
}

#[test]
fn every_key_is_written_or_none_and_counts_follow() {
    let dir = tempfile::tempdir().unwrap();
    let keyspace = open(dir.path());
    keyspace.set_string(0, b"b", b"old", None).unwrap();
    let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
    // Each decision sees its own key's value; the results come back in order.
    let (seen, seq) = keyspace
        .update_many(0, &keys, |i, old| {
            let seen = old.map(|v| v.payload());
            Ok::<_, ringkv_store::Error>((Some((string(&format!("v{i}")), None)), seen))
        })
        .unwrap();
    assert!(seq > 0);
    assert_eq!(seen, vec![None, Some(Bytes::from_static(b"old")), None]);
    for (i, key) in keys.iter().enumerate() {
        let value = keyspace.get_string(0, key).unwrap().expect("written");
        assert_eq!(&value.data[..], format!("v{i}").as_bytes());
    }
    assert_eq!(keyspace.dbsize(0), 3, "b was replaced, a and c are new");

    // A decision that fails writes nothing, not even the keys decided before it.
    let refused = keyspace.update_many(0, &keys, |i, _| {
        if i == 2 {
            return Err(ringkv_store::Error::WrongType);
        }
        Ok((Some((string("lost"), None)), ()))
    });
    assert!(matches!(refused, Err(ringkv_store::Error::WrongType)));
    for (i, key) in keys.iter().enumerate() {
        let value = keyspace.get_string(0, key).unwrap().expect("kept");
        assert_eq!(
            &value.data[..],
            format!("v{i}").as_bytes(),
            "key {i} unchanged"
        );
    }

    // Nothing to write is no batch; the batch survives a reopen.
    let (_, seq) = keyspace
        .update_many(0, &keys, |_, _| Ok::<_, ringkv_store::Error>((None, ())))
        .unwrap();
    assert_eq!(seq, 0);
    keyspace.engine().sync_all().unwrap();
    drop(keyspace);
    let keyspace = open(dir.path());
    assert_eq!(keyspace.dbsize(0), 3);
    assert_eq!(
        &keyspace.get_string(0, b"c").unwrap().unwrap().data[..],
        b"v2"
    );
}

#[test]
#[should_panic(expected = "distinct keys")]
fn a_key_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyspace = open(dir.path());
    let keys: [&[u8]; 2] = [b"a", b"a"];
    let _ = keyspace.update_many(0, &keys, |_, _| {
        Ok::<_, ringkv_store::Error>((Some((string("x"), None)), ()))
    });
}
