//! SAVE, BGSAVE, LASTSAVE and `RINGKV.CHECKPOINT`: consistent checkpoints of
//! the engine (hard-linked tables, see `docs/durability.md`), where they go,
//! how many are kept, and the state `INFO persistence` reports.
//!
//! Checkpoints of SAVE/BGSAVE go to `<dir>/../<dirname>-checkpoints/<unix
//! time>` (a suffix `-N` when two land in the same second); the newest
//! [`SAVE_CHECKPOINTS_KEPT`] are kept, older ones deleted. `RINGKV.CHECKPOINT`
//! (what `ringkv backup` calls) writes `backup-<unix time>-<N>` in the same
//! directory and never deletes it: the backup tool removes it once copied.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use ringkv_engine::Storage;

use crate::server::unix_seconds;

/// SAVE/BGSAVE checkpoints kept; older ones are deleted after a new one is
/// written. Two: the newest, and the one before in case the newest is being
/// copied somewhere when the next save runs.
pub(crate) const SAVE_CHECKPOINTS_KEPT: usize = 2;

/// Prefix of the checkpoints `RINGKV.CHECKPOINT` writes for backups.
const BACKUP_PREFIX: &str = "backup-";

/// What INFO persistence shows about saves.
#[derive(Debug)]
pub(crate) struct Persistence {
    /// A BGSAVE is running.
    pub bgsave_in_progress: AtomicBool,
    /// `BGSAVE SCHEDULE` came while one ran: save once more when it ends.
    pub bgsave_scheduled: AtomicBool,
    /// The last save (SAVE or BGSAVE) succeeded.
    pub last_save_ok: AtomicBool,
    /// Duration of the last save, seconds (-1: none yet).
    pub last_save_duration_ms: AtomicU64,
    /// Unix time of the last successful save (the start time of the server before any).
    pub last_save_unix: AtomicU64,
    /// Saves one at a time: two checkpoints in parallel only cost twice.
    save_lock: Mutex<()>,
    /// Path and sequence of the newest checkpoint.
    pub last_checkpoint: Mutex<Option<(PathBuf, u64)>>,
}

impl Persistence {
    pub(crate) fn new() -> Persistence {
        Persistence {
            bgsave_in_progress: AtomicBool::new(false),
            bgsave_scheduled: AtomicBool::new(false),
            last_save_ok: AtomicBool::new(true),
            last_save_duration_ms: AtomicU64::new(u64::MAX),
            last_save_unix: AtomicU64::new(unix_seconds()),
            save_lock: Mutex::new(()),
            last_checkpoint: Mutex::new(None),
        }
    }
}

/// Where checkpoints of the database in `data_dir` go: a sibling directory
/// `<dirname>-checkpoints`, so they share the filesystem (hard links work) and
/// never sit inside the engine's directory.
pub(crate) fn checkpoint_root(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    parent.join(format!("{name}-checkpoints"))
}

/// A fresh name `<prefix><unix time>` (or `-N` suffixed) under `root`.
fn fresh_target(fs: &dyn Storage, root: &Path, prefix: &str) -> ringkv_engine::Result<PathBuf> {
    let now = unix_seconds();
    let mut target = root.join(format!("{prefix}{now}"));
    let mut n = 1;
    let taken = |path: &Path| {
        fs.exists(path)
            .map_err(|e| ringkv_engine::Error::io(path, e))
    };
    while taken(&target)? || taken(&target.with_extension("checkpoint-tmp"))? {
        target = root.join(format!("{prefix}{now}-{n}"));
        n += 1;
    }
    Ok(target)
}

/// Creates the checkpoints directory if missing and makes its name durable (the fsync of its
/// parent is checked: a checkpoint in a directory a power cut can take away is no checkpoint).
fn ensure_root(fs: &dyn Storage, root: &Path) -> ringkv_engine::Result<()> {
    let io = |e| ringkv_engine::Error::io(root, e);
    if fs.exists(root).map_err(io)? {
        return Ok(());
    }
    fs.create_dir_all(root).map_err(io)?;
    let parent = root.parent().unwrap_or(Path::new("/"));
    fs.sync_dir(parent)
        .map_err(|e| ringkv_engine::Error::io(parent, e))
}

/// Writes a checkpoint of `engine` for SAVE/BGSAVE, records the outcome and
/// prunes old ones. Returns the checkpoint's path and sequence.
pub(crate) fn save(
    persistence: &Persistence,
    engine: &ringkv_engine::Db,
) -> ringkv_engine::Result<(PathBuf, u64)> {
    let _one = persistence.save_lock.lock();
    let started = std::time::Instant::now();
    let root = checkpoint_root(engine.path());
    let fs: &dyn Storage = &*engine.options().storage;
    let result = ensure_root(fs, &root).and_then(|()| {
        let target = fresh_target(fs, &root, "")?;
        engine.checkpoint(&target).map(|seq| (target, seq))
    });
    persistence
        .last_save_duration_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    match &result {
        Ok((path, seq)) => {
            persistence.last_save_ok.store(true, Ordering::Relaxed);
            persistence
                .last_save_unix
                .store(unix_seconds(), Ordering::Relaxed);
            *persistence.last_checkpoint.lock() = Some((path.clone(), *seq));
            tracing::info!(path = %path.display(), seq, millis = started.elapsed().as_millis() as u64, "DB saved on disk (checkpoint)");
            if let Err(error) = prune(fs, &root, SAVE_CHECKPOINTS_KEPT) {
                tracing::warn!(%error, "could not delete old checkpoints");
            }
        }
        Err(error) => {
            persistence.last_save_ok.store(false, Ordering::Relaxed);
            tracing::error!(%error, "checkpoint failed");
        }
    }
    result
}

/// The BGSAVE thread (started with `bgsave_in_progress` set): saves, then
/// again while `BGSAVE SCHEDULE` asked for one meanwhile, then clears the
/// flag.
pub(crate) fn background_saves(persistence: &Persistence, engine: &ringkv_engine::Db) {
    loop {
        let _ = save(persistence, engine);
        if persistence.bgsave_scheduled.swap(false, Ordering::AcqRel) {
            continue;
        }
        persistence
            .bgsave_in_progress
            .store(false, Ordering::Release);
        // A SCHEDULE that saw the flag still set just before it was cleared: take it over,
        // unless a new BGSAVE already started its own thread.
        if !persistence.bgsave_scheduled.swap(false, Ordering::AcqRel)
            || persistence.bgsave_in_progress.swap(true, Ordering::AcqRel)
        {
            return;
        }
    }
}

/// Writes a checkpoint for `ringkv backup` (never pruned by the server).
pub(crate) fn backup_checkpoint(
    persistence: &Persistence,
    engine: &ringkv_engine::Db,
) -> ringkv_engine::Result<(PathBuf, u64)> {
    let _one = persistence.save_lock.lock();
    let root = checkpoint_root(engine.path());
    let fs: &dyn Storage = &*engine.options().storage;
    ensure_root(fs, &root)?;
    let target = fresh_target(fs, &root, BACKUP_PREFIX)?;
    let seq = engine.checkpoint(&target)?;
    tracing::info!(path = %target.display(), seq, "checkpoint for a backup written");
    Ok((target, seq))
}

/// Deletes all but the newest `keep` SAVE/BGSAVE checkpoints under `root`
/// (names that are a unix time, optionally `-N`); backups and anything else
/// there are left alone. The removals are made durable (a checkpoint that comes back after a
/// power cut is only space, but the directory fsync's result is not dropped either); the first
/// failure is returned after trying every removal.
fn prune(fs: &dyn Storage, root: &Path, keep: usize) -> ringkv_engine::Result<()> {
    let names = fs
        .list(root)
        .map_err(|e| ringkv_engine::Error::io(root, e))?;
    let mut saves: Vec<((u64, u64), PathBuf)> = names
        .into_iter()
        .filter_map(|name| {
            let (time, n) = match name.split_once('-') {
                Some((time, n)) => (time.parse().ok()?, n.parse().ok()?),
                None => (name.parse().ok()?, 0),
            };
            Some(((time, n), root.join(name)))
        })
        .collect();
    saves.sort();
    let excess = saves.len().saturating_sub(keep);
    let mut first_error = None;
    for (_, path) in saves.into_iter().take(excess) {
        if let Err(error) = fs.remove_dir_all(&path) {
            first_error.get_or_insert(ringkv_engine::Error::io(&path, error));
        }
    }
    if excess > 0 {
        if let Err(error) = fs.sync_dir(root) {
            first_error.get_or_insert(ringkv_engine::Error::io(root, error));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The `# Persistence` section of INFO.
pub(crate) fn info_text(
    persistence: &Persistence,
    engine: &ringkv_engine::Db,
    flushes_pending: usize,
    out: &mut String,
) {
    let stats = engine.stats();
    let write_ok = stats.write_error.is_none();
    let save_ok = persistence.last_save_ok.load(Ordering::Relaxed);
    let duration_ms = persistence.last_save_duration_ms.load(Ordering::Relaxed);
    let last_checkpoint = persistence.last_checkpoint.lock().clone();
    let _ = write!(
        out,
        "# Persistence\r\nloading:0\r\nasync_loading:0\r\ncurrent_cow_peak:0\r\n\
rdb_changes_since_last_save:{changes}\r\nrdb_bgsave_in_progress:{bgsave}\r\n\
rdb_last_save_time:{last_save}\r\nrdb_last_bgsave_status:{save_status}\r\n\
rdb_last_bgsave_time_sec:{save_secs}\r\nrdb_current_bgsave_time_sec:-1\r\n\
aof_enabled:1\r\naof_rewrite_in_progress:0\r\naof_rewrite_scheduled:0\r\n\
aof_last_rewrite_time_sec:-1\r\naof_current_rewrite_time_sec:-1\r\n\
aof_last_bgrewrite_status:ok\r\naof_rewrites:0\r\naof_last_write_status:{write_status}\r\n\
aof_last_cow_size:0\r\nappendfsync:{fsync}\r\nengine_last_sequence:{seq}\r\n\
wal_written_seq:{written}\r\nwal_synced_seq:{synced}\r\nwal_syncs:{syncs}\r\n\
write_error:{write_error}\r\ndisk_full:{disk_full}\r\nwrites_refused_until_restart:{refused}\r\n\
recovery_wal_ops:{r_ops}\r\nrecovery_wal_bytes:{r_bytes}\r\n\
recovery_wal_bytes_dropped:{r_dropped}\r\nrecovery_wal_damaged_mid_log:{r_damaged}\r\nrecovery_ms:{r_ms}\r\n\
last_checkpoint_dir:{ck_dir}\r\nlast_checkpoint_seq:{ck_seq}\r\nflushes_pending:{flushes_pending}\r\n",
        changes = stats
            .last_sequence
            .saturating_sub(last_checkpoint.as_ref().map_or(0, |(_, seq)| *seq)),
        bgsave = u8::from(persistence.bgsave_in_progress.load(Ordering::Relaxed)),
        last_save = persistence.last_save_unix.load(Ordering::Relaxed),
        save_status = if save_ok { "ok" } else { "err" },
        save_secs = if duration_ms == u64::MAX {
            -1
        } else {
            (duration_ms / 1000) as i64
        },
        write_status = if write_ok { "ok" } else { "err" },
        fsync = engine.fsync_policy(),
        seq = stats.last_sequence,
        written = stats.wal.written_seq,
        synced = stats.wal.synced_seq,
        syncs = stats.wal.syncs,
        // One line: INFO fields end at CR LF.
        write_error = stats
            .write_error
            .as_deref()
            .unwrap_or("")
            .replace(['\r', '\n'], " "),
        disk_full = u8::from(stats.disk_full),
        refused = u8::from(stats.write_error.is_some() && !stats.disk_full),
        r_ops = stats.recovery.wal_ops,
        r_bytes = stats.recovery.wal_bytes,
        r_dropped = stats.recovery.wal_bytes_dropped,
        r_damaged = u8::from(stats.recovery.wal_damaged_mid_log),
        r_ms = stats.recovery.duration_ms,
        ck_dir = last_checkpoint
            .as_ref()
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_default(),
        ck_seq = last_checkpoint.as_ref().map_or(0, |(_, seq)| *seq),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_root_is_a_sibling_of_the_data_dir() {
        assert_eq!(
            checkpoint_root(Path::new("/srv/ringkv/data")),
            PathBuf::from("/srv/ringkv/data-checkpoints")
        );
    }

    #[test]
    fn prune_keeps_the_newest_saves_and_every_backup() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["100", "100-1", "101", "99", "backup-50", "other"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        prune(&ringkv_engine::StdStorage, dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["100-1", "101", "backup-50", "other"]);
    }

    /// The first save creates the checkpoints directory; the fsync that makes its name durable
    /// fails: the save fails and says so, instead of reporting a checkpoint a power cut can
    /// take away.
    #[test]
    fn a_failed_fsync_of_the_new_checkpoints_directory_fails_the_save() {
        use ringkv_engine::sim_fs::{PowerCut, SimFs, SimOp};
        let fs = SimFs::new(11);
        let options = ringkv_engine::Options {
            storage: std::sync::Arc::new(fs.clone()),
            ..ringkv_engine::Options::default()
        };
        let engine = ringkv_engine::Db::open("/srv/data", options).unwrap();
        engine.put(b"k", b"v", None).unwrap();
        let persistence = Persistence::new();
        // The directory fsync of `/srv`, parent of the new `/srv/data-checkpoints`.
        fs.fail_next(SimOp::SyncDir, "/srv", 1);
        let error = save(&persistence, &engine).unwrap_err();
        assert!(error.to_string().contains("/srv"), "{error}");
        assert!(!persistence.last_save_ok.load(Ordering::Relaxed));
        // The next save finds the directory and writes a checkpoint that opens after a cut.
        let (path, seq) = save(&persistence, &engine).unwrap();
        assert!(persistence.last_save_ok.load(Ordering::Relaxed));
        drop(engine);
        let after = fs.power_cut(PowerCut::default(), 11);
        let options = ringkv_engine::Options {
            storage: std::sync::Arc::new(after),
            ..ringkv_engine::Options::default()
        };
        let copy = ringkv_engine::Db::open(&path, options).unwrap();
        assert_eq!(copy.last_sequence(), seq);
        assert_eq!(&copy.get(b"k").unwrap().unwrap().value[..], b"v");
    }
}
