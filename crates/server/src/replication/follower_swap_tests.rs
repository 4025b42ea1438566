//! The replica full-sync swap ([`super::swap_directories`]) and its recovery
//! ([`super::recover_swap`]) on the engine's simulated file system
//! (`ringkv_engine::sim_fs`): the replica's database and the leader's
//! checkpoint are built with the engine, then the power goes at each file
//! system call of the swap in turn (and at each call of the recovery that
//! follows), or an EIO or ENOSPC hits that call. After recovery, the data
//! directory must open as the complete old database or the complete new one,
//! never an empty or a mixed one (docs/durability.md, "Replica full-sync
//! swap").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv_engine::sim_fs::{FaultConfig, PowerCut, SimFs};
use ringkv_engine::{Db, Options, Storage};

use super::{incoming_path, recover_swap, retired_path, swap_directories};

/// Keys and values of a whole database.
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Calls a swap plus its recovery may make; a loop past it is a bug in the test.
const CALLS_MAX: u64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    Old,
    New,
}

fn dir() -> PathBuf {
    PathBuf::from("/srv/data")
}

fn options(fs: &SimFs) -> Options {
    Options {
        storage: Arc::new(fs.clone()),
        // Small: both databases hold tables and a WAL, not only a memtable.
        memtable_bytes_max: 4 << 10,
        ..Options::default()
    }
}

/// Keys `first..first + count`, values tagged with `tag`. Old and new share
/// half their keys with different values, so a mix of the two shows.
fn contents(tag: &str, first: u32, count: u32) -> Contents {
    (first..first + count)
        .map(|i| {
            (
                format!("key-{i:04}").into_bytes(),
                format!("{tag}-value-{i}-{}", "x".repeat(40)).into_bytes(),
            )
        })
        .collect()
}

/// A fresh file system holding what `swap_in` starts from: the replica's
/// database in `dir` (closed), the leader's checkpoint in `<dir>.sync-incoming`.
fn scene(seed: u64) -> (SimFs, Contents, Contents) {
    let fs = SimFs::new(seed);
    let old = contents("old", 0, 200);
    let new = contents("new", 100, 200);
    let replica = Db::open(dir(), options(&fs)).expect("open the replica's database");
    for (key, value) in &old {
        replica.put(key, value, None).expect("write old");
    }
    replica.close().expect("close old");
    let leader = Db::open("/leader", options(&fs)).expect("open the leader's database");
    for (key, value) in &new {
        leader.put(key, value, None).expect("write new");
    }
    leader
        .checkpoint(incoming_path(&dir()))
        .expect("checkpoint into incoming");
    leader.close().expect("close leader");
    (fs, old, new)
}

/// Everything the database in `dir` holds.
fn read_all(fs: &SimFs) -> Result<Contents, String> {
    let db = Db::open(dir(), options(fs)).map_err(|e| format!("open: {e}"))?;
    let mut out = Contents::new();
    for entry in db.iter() {
        let entry = entry.map_err(|e| format!("read: {e}"))?;
        out.insert(entry.key.to_vec(), entry.value.to_vec());
    }
    db.close().map_err(|e| format!("close: {e}"))?;
    Ok(out)
}

/// Recovers `fs` as the server start does, opens `dir`, and says which
/// database it holds; panics (naming `what`) on anything else.
fn recover_and_open(fs: &SimFs, old: &Contents, new: &Contents, what: &str) -> Opened {
    recover_swap(fs, &dir()).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let got = read_all(fs).unwrap_or_else(|e| panic!("{what}: {e}"));
    for leftover in [incoming_path(&dir()), retired_path(&dir())] {
        assert!(
            !fs.exists(&leftover).unwrap(),
            "{what}: {} left after recovery",
            leftover.display()
        );
    }
    if &got == old {
        Opened::Old
    } else if &got == new {
        Opened::New
    } else {
        let tags: BTreeMap<&[u8], usize> = got.values().fold(BTreeMap::new(), |mut m, v| {
            *m.entry(&v[..3]).or_default() += 1;
            m
        });
        panic!(
            "{what}: {} opened neither the old nor the new database: {} keys, values by tag {:?}",
            dir().display(),
            got.len(),
            tags.iter()
                .map(|(t, n)| (String::from_utf8_lossy(t).into_owned(), *n))
                .collect::<Vec<_>>()
        );
    }
}

fn swap(fs: &SimFs) -> std::io::Result<()> {
    swap_directories(fs, &dir(), &incoming_path(&dir()))
}

const CUTS: [PowerCut; 2] = [
    PowerCut {
        tear_writes: false,
        reorder_metadata: false,
    },
    PowerCut {
        tear_writes: true,
        reorder_metadata: true,
    },
];

#[test]
fn a_power_cut_at_any_call_of_the_swap_leaves_the_old_or_the_new_database() {
    for cut in CUTS {
        let mut seen = Vec::new();
        for call in 1..=CALLS_MAX {
            let (fs, old, new) = scene(call);
            fs.cut_power_at_call(call);
            let finished = swap(&fs).is_ok() && !fs.is_dead();
            let after = fs.power_cut(cut, call);
            let what = format!("power cut at call {call} of the swap ({cut:?})");
            let opened = recover_and_open(&after, &old, &new, &what);
            seen.push(opened);
            if finished {
                assert_eq!(opened, Opened::New, "{what}: the swap had returned Ok");
                break;
            }
            assert!(call < CALLS_MAX, "the swap never finished");
        }
        // Both sides of the commit point were reached: early cuts keep old, late ones new.
        assert_eq!(seen.first(), Some(&Opened::Old), "{seen:?}");
        assert!(seen.contains(&Opened::New), "{seen:?}");
    }
}

#[test]
fn a_power_cut_during_the_recovery_is_recovered_at_the_next_start() {
    let mut runs = 0;
    for swap_call in 1..=CALLS_MAX {
        let (fs, old, new) = scene(swap_call);
        fs.cut_power_at_call(swap_call);
        let finished = swap(&fs).is_ok() && !fs.is_dead();
        let first = fs.power_cut(CUTS[1], swap_call);
        for recover_call in 1..=CALLS_MAX {
            // The same disk each time: recovery on a copy that dies at `recover_call`.
            let attempt = first.power_cut(PowerCut::default(), 0);
            attempt.cut_power_at_call(recover_call);
            let recovered = recover_swap(&attempt, &dir()).is_ok() && !attempt.is_dead();
            let second = attempt.power_cut(CUTS[1], recover_call);
            let what = format!("power cut at call {swap_call} of the swap, then at call {recover_call} of the recovery");
            recover_and_open(&second, &old, &new, &what);
            runs += 1;
            if recovered {
                break;
            }
        }
        if finished {
            break;
        }
    }
    assert!(runs > 5, "only {runs} runs");
}

#[test]
fn an_io_error_or_a_full_disk_at_any_call_of_the_swap_leaves_the_old_or_the_new_database() {
    for (kind, eio, enospc) in [("EIO", 1.0, 0.0), ("ENOSPC", 0.0, 1.0)] {
        let mut failed = 0;
        for call in 1..=CALLS_MAX {
            let fault = FaultConfig {
                seed: call,
                eio,
                enospc,
                start_after_calls: call - 1,
                one_shot: true,
                ..FaultConfig::default()
            };
            // What the replica does next: recover on the live disk, reopen.
            let (fs, old, new) = scene(call);
            fs.set_faults(fault);
            let result = swap(&fs);
            let injected = fs.fault_counts().total();
            fs.set_faults(FaultConfig::default());
            if injected == 0 {
                result.expect("no fault injected");
                assert_eq!(recover_and_open(&fs, &old, &new, "no fault"), Opened::New);
                break;
            }
            let error = result.expect_err("a fault was injected: the swap must report it");
            let what = format!("{kind} at call {call} of the swap ({error})");
            recover_and_open(&fs, &old, &new, &what);
            // Or the power goes right after the failed call.
            let (fs, old, new) = scene(call);
            fs.set_faults(fault);
            let _ = swap(&fs);
            let after = fs.power_cut(CUTS[1], call);
            recover_and_open(&after, &old, &new, &format!("{what}, then a power cut"));
            failed += 1;
            assert!(call < CALLS_MAX, "the swap never finished");
        }
        assert!(failed >= 3, "{kind}: only {failed} calls failed");
    }
}

#[test]
fn recovery_with_nothing_to_do_changes_nothing() {
    let fs = SimFs::new(1);
    assert_eq!(
        recover_swap(&fs, Path::new("/nowhere/data")).unwrap(),
        Default::default()
    );
    let (fs, old, _) = scene(2);
    fs.remove_dir_all(&incoming_path(&dir())).unwrap();
    assert_eq!(recover_and_open(&fs, &old, &old, "untouched"), Opened::Old);
}
