//! Durability you can operate (issue 4), against the real binary: live
//! `CONFIG SET appendfsync`, SAVE/BGSAVE/LASTSAVE checkpoints, INFO
//! persistence, `ringkv backup` / `ringkv restore` on a live server under
//! writes, and a full disk (a tmpfs) that suspends writes and resumes them.

mod common;
mod ops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config_get, err, error_text, q, Server};

/// One field of `INFO persistence`.
fn info_field(con: &mut redis::Connection, field: &str) -> String {
    common::info_field(con, "persistence", field)
}

/// Every key and value of db 0, in order.
fn all_pairs(con: &mut redis::Connection) -> BTreeMap<String, String> {
    let flat: Vec<String> = redis::cmd("RANGE")
        .arg("-")
        .arg("+")
        .arg("LIMIT")
        .arg(10_000_000)
        .arg("WITHVALUES")
        .query(con)
        .unwrap();
    flat.chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()
}

#[test]
fn config_set_appendfsync_changes_the_policy_live() {
    let server = Server::start();
    let mut con = server.client();
    assert_eq!(config_get(&mut con, "appendfsync"), "everysec");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query(&mut con)
        .unwrap();
    assert_eq!(config_get(&mut con, "appendfsync"), "always");
    assert_eq!(info_field(&mut con, "appendfsync"), "always");
    // Under `always` a reply means fsynced: the WAL's synced sequence covers the write.
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let last: u64 = info_field(&mut con, "engine_last_sequence")
            .parse()
            .unwrap();
        let synced: u64 = info_field(&mut con, "wal_synced_seq").parse().unwrap();
        assert!(
            synced >= last,
            "write {i} acknowledged before fsync: {synced} < {last}"
        );
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("no")
        .query(&mut con)
        .unwrap();
    assert_eq!(config_get(&mut con, "appendfsync"), "no");
    let error = err(&mut con, &["CONFIG", "SET", "appendfsync", "sometimes"]);
    assert!(error.contains("always, everysec, no"), "{error}");
    assert_eq!(config_get(&mut con, "appendfsync"), "no");
}

#[test]
fn save_bgsave_and_lastsave_write_consistent_checkpoints() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    let before: u64 = redis::cmd("TIME").query::<Vec<String>>(&mut con).unwrap()[0]
        .parse()
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let lastsave: u64 = redis::cmd("LASTSAVE").query(&mut con).unwrap();
    assert!(lastsave >= before);
    let root = PathBuf::from(format!("{}-checkpoints", server.data_dir().display()));
    let saved = PathBuf::from(info_field(&mut con, "last_checkpoint_dir"));
    assert!(
        saved.starts_with(&root),
        "{} not under {}",
        saved.display(),
        root.display()
    );
    assert!(saved.join("CURRENT").is_file());
    assert_eq!(info_field(&mut con, "rdb_last_bgsave_status"), "ok");
    assert_eq!(info_field(&mut con, "aof_enabled"), "1");
    assert_eq!(info_field(&mut con, "aof_last_write_status"), "ok");

    // More writes, then BGSAVE: the new checkpoint holds them; only two saves are kept.
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("save")
        .query(&mut con)
        .unwrap();
    let reply: String = redis::cmd("BGSAVE").query(&mut con).unwrap();
    assert_eq!(reply, "Background saving started");
    let deadline = Instant::now() + Duration::from_secs(20);
    while info_field(&mut con, "rdb_bgsave_in_progress") != "0"
        || Path::new(&info_field(&mut con, "last_checkpoint_dir")) == saved
    {
        assert!(Instant::now() < deadline, "BGSAVE did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(info_field(&mut con, "rdb_last_bgsave_status"), "ok");
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let newest = PathBuf::from(info_field(&mut con, "last_checkpoint_dir"));
    let kept = std::fs::read_dir(&root).unwrap().count();
    assert_eq!(kept, 2, "SAVE keeps the two newest checkpoints");
    assert!(!saved.exists(), "the oldest checkpoint was deleted");

    // A checkpoint opens as an ordinary database with everything up to it.
    let copy = tempfile::tempdir().unwrap();
    let data = copy.path().join("data");
    copy_dir(&newest, &data);
    let restored = Server::start_in(&data, &[]);
    let mut restored_con = restored.client();
    let size: u64 = redis::cmd("DBSIZE").query(&mut restored_con).unwrap();
    assert_eq!(size, 1001);
    let value: String = redis::cmd("GET")
        .arg("key:999")
        .query(&mut restored_con)
        .unwrap();
    assert_eq!(value, "value:999");
    let value: String = redis::cmd("GET")
        .arg("after")
        .query(&mut restored_con)
        .unwrap();
    assert_eq!(value, "save");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn info_persistence_reports_recovery_after_a_kill() {
    let mut server = Server::start();
    let mut con = server.client();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    server.kill();
    server.restart();
    let mut con = server.client();
    // 100 SETs plus the server's own metadata writes (db map, namespaces).
    let replayed: u64 = info_field(&mut con, "recovery_wal_ops").parse().unwrap();
    assert!(replayed >= 100, "{replayed} operations replayed");
    assert!(
        info_field(&mut con, "recovery_wal_bytes")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(info_field(&mut con, "recovery_wal_bytes_dropped"), "0");
    info_field(&mut con, "recovery_ms").parse::<u64>().unwrap();
    assert_eq!(info_field(&mut con, "disk_full"), "0");
    assert_eq!(info_field(&mut con, "write_error"), "");
    assert!(
        server
            .log()
            .contains(&format!("replayed {replayed} WAL operations")),
        "start-up logs what it recovered:\n{}",
        server.log()
    );
}

/// Runs the `ringkv` binary with `args`; (success, stdout + stderr).
fn ringkv(args: &[&str]) -> (bool, String) {
    let output = Command::new(common::binary())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ringkv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Writers `w` each MSET the pair `a:{w}:{n}` and `b:{w}:{n}` = n for n = 0, 1, 2… in order, one
/// atomic batch per n, while `ringkv backup` copies the live server. The restored server holds,
/// per writer, both keys of n = 0..k and nothing after (a prefix, no torn batch), every value
/// equal to the source's, and its sequence is the checkpoint's.
#[test]
fn backup_and_restore_round_trip_a_live_server_under_writes() {
    const WRITERS: usize = 4;
    let source = Server::start();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut con = source.client();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _: () = redis::cmd("MSET")
                        .arg(format!("a:{w}:{n:08}"))
                        .arg(n)
                        .arg(format!("b:{w}:{n:08}"))
                        .arg(n)
                        .query(&mut con)
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let work = tempfile::tempdir().unwrap();
    let backup_dir = work.path().join("backup");
    let port = source.port.to_string();
    let (ok, output) = ringkv(&[
        "backup",
        "--to",
        backup_dir.to_str().unwrap(),
        "--port",
        &port,
        "--quiet",
    ]);
    assert!(ok, "backup failed:\n{output}");
    let seq: u64 = output
        .split("backup of sequence ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in:\n{output}"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // The server deleted nothing of its own and the backup tool removed its checkpoint.
    let root = PathBuf::from(format!("{}-checkpoints", source.data_dir().display()));
    assert_eq!(std::fs::read_dir(&root).map(|d| d.count()).unwrap_or(0), 0);

    // Restore refuses a directory in use or not empty.
    let (ok, output) = ringkv(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--dir",
        source.data_dir().to_str().unwrap(),
    ]);
    assert!(
        !ok && output.contains("in use by a running server"),
        "{output}"
    );
    let not_empty = work.path().join("not-empty");
    std::fs::create_dir_all(&not_empty).unwrap();
    std::fs::write(not_empty.join("x"), b"x").unwrap();
    let (ok, output) = ringkv(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--dir",
        not_empty.to_str().unwrap(),
    ]);
    assert!(!ok && output.contains("not empty"), "{output}");

    let data = work.path().join("restored");
    let (ok, output) = ringkv(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "restore failed:\n{output}");
    let restored = Server::start_in(&data, &[]);
    let mut restored_con = restored.client();
    let mut source_con = source.client();
    let got = all_pairs(&mut restored_con);
    let want = all_pairs(&mut source_con);
    assert_eq!(
        info_field(&mut restored_con, "engine_last_sequence"),
        seq.to_string(),
        "the restored database ends at the checkpoint's sequence"
    );
    let mut per_writer = [0u64; WRITERS];
    for (key, value) in &got {
        assert_eq!(
            want.get(key),
            Some(value),
            "restored {key} differs from the source"
        );
        let mut parts = key.split(':');
        let (family, w, n) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<usize>().unwrap(),
            parts.next().unwrap().parse::<u64>().unwrap(),
        );
        assert_eq!(value, &n.to_string());
        if family == "a" {
            per_writer[w] += 1;
        }
    }
    for w in 0..WRITERS {
        let k = per_writer[w];
        assert!(k > 0, "writer {w}: nothing in the backup");
        assert!(
            k <= acked[w],
            "writer {w}: {k} restored of {} written",
            acked[w]
        );
        for n in 0..k {
            for family in ["a", "b"] {
                assert!(
                    got.contains_key(&format!("{family}:{w}:{n:08}")),
                    "writer {w}: {family} {n} missing below {k}: not a prefix, or a torn batch"
                );
            }
        }
    }
    assert_eq!(got.len() as u64, 2 * per_writer.iter().sum::<u64>());
    let size: u64 = redis::cmd("DBSIZE").query(&mut restored_con).unwrap();
    assert_eq!(size, got.len() as u64);
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The data directory on an 8 MiB tmpfs: writes fill it, get a clear `-MISCONF` naming the full
/// disk, reads go on, INFO says so; deleting a filler file brings writes back by themselves, and
/// nothing acknowledged is lost (also across a SIGKILL and restart).
#[test]
fn full_disk_suspends_writes_with_misconf_and_they_resume_when_space_returns() {
    let work = tempfile::tempdir().unwrap();
    let mount_point = work.path().join("small");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount_point)
        .output()
        .expect("run mount");
    assert!(
        mounted.status.success(),
        "this test needs to mount a tmpfs (run as root, as CI does): {}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let _mount = Mount(mount_point.clone());
    // A filler of 4 MiB leaves ~4 MiB for the WAL; deleting it brings space back.
    let filler = mount_point.join("filler");
    std::fs::write(&filler, vec![7u8; 4 << 20]).unwrap();
    let data = mount_point.join("data");
    let mut server = Server::start_in(&data, &["--appendfsync", "everysec"]);
    let value = "v".repeat(4096);
    let mut acked: Vec<String> = Vec::new();
    let mut con = server.client();
    let misconf = loop {
        let key = format!("k{:06}", acked.len());
        match redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query::<()>(&mut con)
        {
            Ok(()) => acked.push(key),
            Err(error) => break error_text(&error),
        }
        assert!(acked.len() < 10_000, "8 MiB never filled up");
    };
    assert!(
        misconf.starts_with("MISCONF") && misconf.contains("disk is full"),
        "{misconf}"
    );
    assert!(misconf.contains("resume"), "{misconf}");
    // The connection that saw the failed sync was closed; a new one reads and is refused writes.
    let mut con = server.client();
    let read: String = redis::cmd("GET").arg(&acked[0]).query(&mut con).unwrap();
    assert_eq!(read, value);
    let last: String = redis::cmd("GET")
        .arg(acked.last().unwrap())
        .query(&mut con)
        .unwrap();
    assert_eq!(last, value);
    let refused = err(&mut con, &["SET", "more", "x"]);
    assert!(
        refused.starts_with("MISCONF") && refused.contains("disk is full"),
        "{refused}"
    );
    let mut con = server.client();
    assert_eq!(info_field(&mut con, "disk_full"), "1");
    assert_eq!(info_field(&mut con, "aof_last_write_status"), "err");
    assert_eq!(info_field(&mut con, "writes_refused_until_restart"), "0");
    assert!(info_field(&mut con, "write_error").contains("No space left"));

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut con = server.client();
        match redis::cmd("SET")
            .arg("after")
            .arg("space")
            .query::<()>(&mut con)
        {
            Ok(()) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "writes did not resume: {}",
                    error_text(&error)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let mut con = server.client();
    assert_eq!(info_field(&mut con, "disk_full"), "0");
    assert_eq!(info_field(&mut con, "aof_last_write_status"), "ok");
    let check = |con: &mut redis::Connection| {
        for key in &acked {
            let got: Option<String> = redis::cmd("GET").arg(key).query(con).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "acknowledged {key} lost"
            );
        }
        let after: String = redis::cmd("GET").arg("after").query(con).unwrap();
        assert_eq!(after, "space");
    };
    check(&mut con);
    server.kill();
    server.restart();
    let mut con = server.client();
    check(&mut con);
}

/// A failed fsync of the log (injected with `DEBUG FAIL-FSYNC`, as a disk whose write-back
/// failed would report it): the write waiting on it is answered with `-MISCONF`, never `+OK`;
/// the server then refuses every write with a text that says a restart is needed, keeps serving
/// reads, says so in INFO and in its log, and is not fooled by the next fsync succeeding.
/// After a SIGKILL and restart every acknowledged write is there and writes work again.
#[test]
fn failed_fsync_refuses_writes_until_restart_and_loses_nothing_acknowledged() {
    let mut server = Server::start_with(&["--appendfsync", "always"]);
    let mut con = server.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i:03}"))
            .arg(format!("v{i}"))
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("DEBUG")
        .arg("FAIL-FSYNC")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let failed = err(&mut con, &["SET", "unacked", "x"]);
    assert!(failed.starts_with("MISCONF"), "{failed}");
    assert!(failed.contains(".wal"), "names the log file: {failed}");

    // The injected fault is spent; a retry that succeeded would hide lost pages. It must not.
    let mut con = server.client();
    for key in ["after1", "after2"] {
        let refused = err(&mut con, &["SET", key, "x"]);
        assert!(
            refused.starts_with("MISCONF") && refused.contains("restarted"),
            "{refused}"
        );
    }
    let refused = err(&mut con, &["DEL", "k000"]);
    assert!(refused.starts_with("MISCONF"), "{refused}");
    let read: String = redis::cmd("GET").arg("k199").query(&mut con).unwrap();
    assert_eq!(read, "v199");
    assert_eq!(info_field(&mut con, "writes_refused_until_restart"), "1");
    assert_eq!(info_field(&mut con, "aof_last_write_status"), "err");
    assert!(
        info_field(&mut con, "write_error").contains("Input/output error"),
        "{}",
        info_field(&mut con, "write_error")
    );
    // The log is written by its own thread: the line may trail the reply a moment (it had
    // not reached the file once in CI).
    let logged = (0..100).any(|_| {
        let found = server
            .log()
            .contains("write-ahead log failed; refusing writes until restart");
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        found
    });
    assert!(logged, "the log says so:\n{}", server.log());

    server.kill();
    server.restart();
    let mut con = server.client();
    for i in 0..200 {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("k{i:03}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(got, Some(format!("v{i}")), "acknowledged k{i:03}");
    }
    for key in ["after1", "after2"] {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert_eq!(got, None, "{key} was refused, it must not appear");
    }
    assert_eq!(info_field(&mut con, "writes_refused_until_restart"), "0");
    let _: () = redis::cmd("SET")
        .arg("after-restart")
        .arg("ok")
        .query(&mut con)
        .unwrap();
}

/// After a kill there is no clean-shutdown record, so key counts are rebuilt by a scan, in the
/// background so start-up does not grow with the data. Writes that land while the scan runs
/// (creates, overwrites, deletes, expiries) must still leave DBSIZE exact in every database.
/// The rebuild is held at its test seam (after its snapshot, before its scan) until the writes
/// are done, so they really happen during it.
#[test]
fn key_counts_rebuilt_after_a_kill_stay_exact_under_writes_during_the_rebuild() {
    let mut killed = Server::start_with(&["--appendfsync", "always"]);
    let mut con = killed.client();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(100_000)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1000)
        .arg("three")
        .query(&mut con)
        .unwrap();
    killed.kill();

    let gate = Arc::new(std::sync::Barrier::new(2));
    let (mut config, spare) = ops::config();
    config.dir = killed.data_dir();
    config.recount_gate = Some(gate.clone());
    let running = ops::start(config, spare);
    let mut con = running.client();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("new:{i}")).arg(i).ignore();
    }
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("key:{i}"))
            .arg("overwritten")
            .ignore();
        pipe.cmd("DEL").arg(format!("key:{}", 50_000 + i)).ignore();
        pipe.cmd("PEXPIRE")
            .arg(format!("key:{}", 60_000 + i))
            .arg(600_000)
            .ignore();
    }
    pipe.cmd("SELECT").arg(3).ignore();
    pipe.cmd("DEL").arg("three:7").ignore();
    let () = pipe.query(&mut con).unwrap();
    // Only now may the rebuild scan its snapshot (and it must have reached its seam).
    let (reached, waited) = std::sync::mpsc::channel();
    let seam = gate.clone();
    std::thread::spawn(move || {
        seam.wait();
        let _ = reached.send(());
    });
    waited
        .recv_timeout(Duration::from_secs(30))
        .expect("the key-count rebuild never reached its seam");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 999);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 100_000 + 2000 - 500);
    drop(con);
    // A clean shutdown after the rebuild saves the counts; the next start loads them.
    drop(running);
    killed.restart();
    let mut con = killed.client();
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 100_000 + 2000 - 500);
    assert!(
        killed
            .log()
            .contains("key counts loaded from the clean-shutdown record"),
        "{}",
        killed.log()
    );
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 999);
}

/// Under `always`, writes on the workers wait for their group's fsync without a thread
/// (docs/durability.md, "Group commit without a thread per writer"): a key written and not
/// yet fsynced must still be read right by an INCR on another connection (no lost update)
/// and by the writer's own next commands in the same pipeline (a GET of the key, a KEYS over
/// the database), and every acknowledged write must survive a SIGKILL.
#[test]
fn increments_and_reads_under_always_from_many_connections_lose_nothing() {
    let mut server = Server::start_with(&["--appendfsync", "always"]);
    let connections = 8;
    let rounds = 150;
    let counters = 3;
    let threads: Vec<_> = (0..connections)
        .map(|t| {
            let mut con = server.client();
            std::thread::spawn(move || {
                let mut last = vec![0i64; counters];
                for i in 0..rounds {
                    let mut pipe = redis::pipe();
                    for c in 0..counters {
                        pipe.cmd("INCR").arg(format!("counter:{c}"));
                    }
                    pipe.cmd("SET").arg(format!("own:{t}")).arg(i);
                    pipe.cmd("GET").arg(format!("own:{t}"));
                    pipe.cmd("INCR").arg(format!("own-counter:{t}"));
                    // A new key, then a scan of the database for it: KEYS reads the published
                    // view, so it runs once this connection's writes are fsynced.
                    // (Deleted again, so the database stays small for KEYS.)
                    pipe.cmd("SET").arg(format!("fresh:{t}")).arg(i);
                    pipe.cmd("KEYS").arg(format!("fresh:{t}"));
                    pipe.cmd("DEL").arg(format!("fresh:{t}"));
                    #[allow(clippy::type_complexity)]
                    let (a, b, c, set, got, own, _, listed, deleted): (
                        i64,
                        i64,
                        i64,
                        String,
                        i64,
                        i64,
                        String,
                        Vec<String>,
                        i64,
                    ) = pipe.query(&mut con).unwrap();
                    assert_eq!(listed, vec![format!("fresh:{t}")], "KEYS after SET");
                    assert_eq!(deleted, 1);
                    for (slot, seen) in [a, b, c].into_iter().enumerate() {
                        assert!(seen > last[slot], "counter:{slot} went back to {seen}");
                        last[slot] = seen;
                    }
                    assert_eq!(set, "OK");
                    assert_eq!(got, i, "own:{t} read back in its own pipeline");
                    assert_eq!(own, i + 1, "own-counter:{t}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let expected = connections * rounds;
    let check = |con: &mut redis::Connection| {
        for c in 0..counters {
            let total: i64 = redis::cmd("GET")
                .arg(format!("counter:{c}"))
                .query(con)
                .unwrap();
            assert_eq!(total, expected, "counter:{c}");
        }
        for t in 0..connections {
            let own: i64 = redis::cmd("GET")
                .arg(format!("own-counter:{t}"))
                .query(con)
                .unwrap();
            assert_eq!(own, rounds, "own-counter:{t}");
        }
    };
    let mut con = server.client();
    check(&mut con);
    assert_eq!(
        info_field(&mut con, "wal_synced_seq"),
        info_field(&mut con, "engine_last_sequence"),
        "every acknowledged write is fsynced"
    );
    server.kill();
    server.restart();
    check(&mut server.client());
}
