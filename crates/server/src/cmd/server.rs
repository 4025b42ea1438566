//! Server commands: INFO CONFIG COMMAND TIME SAVE BGSAVE LASTSAVE SHUTDOWN DEBUG.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ringkv_protocol::{Frame, RespVersion};

use super::keyspace::help_frame;
use super::{registry, reply, spec, CommandSpec, Ctx};
use crate::args::{self, is};
use crate::errors::{self, CmdError, CmdResult};
use crate::glob;
use ringkv_store::DATABASES;

/// Most index entries INFO keyspace reads to count keys with an expiry per database.
const INFO_EXPIRES_SCAN_MAX: usize = 1_000_000;

/// The server commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec(
        "info",
        -1,
        &["loading", "stale", "sentinel"],
        0,
        0,
        0,
        &["slow", "dangerous"],
        "Returns information and statistics about the server.",
        "1.0.0",
        info,
    ).syntax("[section [section ...]]"),
    spec(
        "config",
        -2,
        &[],
        0,
        0,
        0,
        &["slow"],
        "A container for server configuration commands.",
        "2.0.0",
        config,
    ).syntax("GET parameter [parameter ...]|SET parameter value [parameter value ...]|RESETSTAT|REWRITE|HELP"),
    spec(
        "command",
        -1,
        &["loading", "stale", "sentinel"],
        0,
        0,
        0,
        &["slow", "connection"],
        "Returns detailed information about all commands.",
        "2.8.13",
        command,
    ).syntax("[COUNT|LIST|INFO [command-name ...]|DOCS [command-name ...]|GETKEYS command [arg ...]|HELP]"),
    spec(
        "time",
        1,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        &["fast"],
        "Returns the server time.",
        "2.6.0",
        time,
    ).syntax(""),
    spec(
        "save",
        1,
        &["admin", "noscript", "no_async_loading", "no_multi"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "Synchronously saves the database(s) to disk.",
        "1.0.0",
        save,
    ).syntax(""),
    spec(
        "bgsave",
        -1,
        &["admin", "noscript", "no_async_loading"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "Asynchronously saves the database(s) to disk.",
        "1.0.0",
        bgsave,
    ).syntax("[SCHEDULE]"),
    spec(
        "lastsave",
        1,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        &["admin", "fast", "dangerous"],
        "Returns the Unix timestamp of the last successful save to disk.",
        "1.0.0",
        lastsave,
    ).syntax(""),
    spec(
        "ringkv.checkpoint",
        1,
        &["admin", "noscript", "no_async_loading", "no_multi"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "Writes a consistent checkpoint for `ringkv backup`; returns its path and sequence.",
        "7.2.0",
        ringkv_checkpoint,
    ).syntax(""),
    spec(
        "shutdown",
        -1,
        &[
            "admin",
            "noscript",
            "loading",
            "stale",
            "no_multi",
            "sentinel",
            "allow_busy",
        ],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        "1.0.0",
        shutdown,
    ).syntax("[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]"),
    spec(
        "debug",
        -2,
        &["admin", "noscript", "loading", "stale", "protected"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "A container for debugging commands.",
        "1.0.0",
        debug,
    ).syntax("SLEEP seconds|SET-ACTIVE-EXPIRE 0|1|OBJECT key|POPULATE count [prefix] [size]|RELOAD|FAIL-FSYNC count|SLOW-FSYNC milliseconds [count]|COMPACTION PAUSE|RESUME|DATA-PATH LOCAL|DEFERRED|ADVANCE-CLOCK milliseconds|HELP"),
];

fn time(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    let _ = ctx;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Frame::Array(vec![
        Frame::bulk(now.as_secs().to_string()),
        Frame::bulk(now.subsec_micros().to_string()),
    ])
}

/// SAVE: writes a consistent checkpoint (hard-linked tables, see `crate::persistence`) and
/// answers once it is on disk.
fn save(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    let engine = ctx.keyspace.engine();
    let persistence = &ctx.server.persistence;
    let saved = crate::data::blocking(|| crate::persistence::save(persistence, &engine));
    reply(saved.map(|_| Frame::ok()).map_err(CmdError::from))
}

/// BGSAVE: the same checkpoint in a background thread; LASTSAVE changes when it succeeds.
fn bgsave(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if args.len() > 2 || (args.len() == 2 && !is(&args[1], "schedule")) {
        return Frame::error(errors::SYNTAX);
    }
    let persistence = &ctx.server.persistence;
    if persistence.bgsave_in_progress.swap(true, Ordering::AcqRel) {
        if args.len() == 2 {
            // Redis' BGSAVE SCHEDULE: one more save runs when the current one ends.
            persistence.bgsave_scheduled.store(true, Ordering::Release);
            return Frame::simple("Background saving scheduled");
        }
        return Frame::error("ERR Background save already in progress");
    }
    let engine = ctx.keyspace.engine();
    let background = persistence.clone();
    let started = std::thread::Builder::new()
        .name("ringkv-bgsave".into())
        .spawn(move || crate::persistence::background_saves(&background, &engine));
    if started.is_err() {
        persistence
            .bgsave_in_progress
            .store(false, Ordering::Release);
        return Frame::error("ERR could not start background save");
    }
    Frame::simple("Background saving started")
}

fn lastsave(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    Frame::Integer(
        ctx.server
            .persistence
            .last_save_unix
            .load(Ordering::Relaxed) as i64,
    )
}

/// RINGKV.CHECKPOINT: writes a checkpoint for `ringkv backup` and answers its path (on the
/// server's machine) and the sequence it holds everything up to.
fn ringkv_checkpoint(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    let engine = ctx.keyspace.engine();
    let persistence = &ctx.server.persistence;
    let made =
        crate::data::blocking(|| crate::persistence::backup_checkpoint(persistence, &engine));
    match made {
        Ok((path, seq)) => Frame::Array(vec![
            Frame::bulk(path.display().to_string()),
            Frame::Integer(seq as i64),
        ]),
        Err(error) => CmdError::from(error).into_frame(),
    }
}

fn shutdown(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let (mut abort, mut save, mut nosave, mut other) = (false, false, false, false);
    for arg in &args[1..] {
        if is(arg, "abort") {
            abort = true;
        } else if is(arg, "save") {
            save = true;
        } else if is(arg, "nosave") {
            nosave = true;
        } else if is(arg, "now") || is(arg, "force") {
            other = true;
        } else {
            return Frame::error(errors::SYNTAX);
        }
    }
    // Contradictory combinations are refused as Redis refuses them. SAVE and NOSAVE otherwise
    // change nothing: the engine's WAL is the data, and every shutdown closes it cleanly.
    if (save && nosave) || (abort && (save || nosave || other)) {
        return Frame::error(errors::SYNTAX);
    }
    if abort {
        return Frame::error("ERR No shutdown in progress.");
    }
    tracing::info!("User requested shutdown...");
    ctx.server.request_shutdown();
    ctx.client.close_after_reply = true;
    ctx.client.no_reply = true;
    Frame::ok()
}

/// Longest DEBUG SLEEP: an hour, far past any test's need.
const DEBUG_SLEEP_SECONDS_MAX: f64 = 3600.0;

/// Most keys one DEBUG POPULATE writes (it is for filling a test server).
const POPULATE_KEYS_MAX: i64 = 100_000_000;

/// Most keys DEBUG POPULATE writes per engine batch.
const POPULATE_BATCH_KEYS: i64 = 1024;

/// Most value bytes DEBUG POPULATE holds for one batch.
const POPULATE_BATCH_BYTES: i64 = 64 << 20;

/// Most bytes of values one DEBUG POPULATE writes.
const POPULATE_BYTES_MAX: u128 = 16 << 30;

/// Redis 7's refusal of DEBUG under `enable-debug-command`.
const DEBUG_NOT_ALLOWED: &str = "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.";

fn debug(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let allowed = match ctx.server.config.read().enable_debug_command {
        crate::DebugCommand::Yes => true,
        crate::DebugCommand::No => false,
        crate::DebugCommand::Local => ctx.client.handle.info.lock().addr.ip().is_loopback(),
    };
    if !allowed {
        return Frame::error(DEBUG_NOT_ALLOWED);
    }
    reply(debug_run(ctx, args))
}

fn debug_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let sub = args::lower(&args[1]);
    match sub.as_str() {
        "sleep" if args.len() == 3 => {
            let seconds = args::f64_arg(&args[2])?;
            if !(0.0..=DEBUG_SLEEP_SECONDS_MAX).contains(&seconds) {
                return Err(CmdError::msg(format!(
                    "ERR sleep time must be between 0 and {DEBUG_SLEEP_SECONDS_MAX} seconds"
                )));
            }
            let duration = Duration::from_secs_f64(seconds);
            if ctx.client.in_exec {
                // Inside MULTI nothing defers; the transaction sleeps, as in Redis, while
                // holding only its own keys, and wakes for a shutdown.
                let until = std::time::Instant::now() + duration;
                while std::time::Instant::now() < until && !*ctx.server.shutdown.borrow() {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
                return Ok(Frame::ok());
            }
            Ok(ctx.defer(async move {
                tokio::time::sleep(duration).await;
                Frame::ok()
            }))
        }
        "slow-fsync" if (3..=4).contains(&args.len()) => {
            // A drill of a slow disk: the next `count` WAL fsyncs each take `ms` longer.
            let ms = args::i64_arg(&args[2])?;
            let count = args
                .get(3)
                .map(|c| args::i64_arg(c))
                .transpose()?
                .unwrap_or(1);
            if !(0..=3_600_000).contains(&ms) || count < 0 {
                return Err(CmdError::msg(
                    "ERR milliseconds must be 0..3600000 and count non-negative",
                ));
            }
            let engine = ctx.keyspace.engine();
            engine
                .options()
                .faults
                .delay_wal_fsyncs(Duration::from_millis(ms as u64), count as u64);
            tracing::warn!(
                ms,
                count,
                "DEBUG SLOW-FSYNC: the next WAL fsyncs will be slow"
            );
            Ok(Frame::ok())
        }
        "data-path" if args.len() == 3 => {
            // A drill of the cluster's seam: `deferred` makes every data operation answer
            // later, from the blocking pool, as a remote coordinator will (`data::Spawned`).
            let deferred = match args::lower(&args[2]).as_str() {
                "deferred" => true,
                "local" => false,
                _ => return Err(CmdError::Syntax),
            };
            ctx.server
                .deferred_data_path
                .store(deferred, std::sync::atomic::Ordering::Relaxed);
            Ok(Frame::ok())
        }
        "cluster-pause-replication" if args.len() == 3 => {
            // A drill: this node's writes reach only their event replica (siblings on demand).
            let node = cluster_node(ctx)?;
            let paused = match args::lower(&args[2]).as_str() {
                "yes" => true,
                "no" => false,
                _ => return Err(CmdError::Syntax),
            };
            node.data.pause_replication(paused);
            tracing::warn!(paused, "DEBUG CLUSTER-PAUSE-REPLICATION");
            Ok(Frame::ok())
        }
        "cluster-partition" => {
            // A drill: this node refuses every internode request (data, gossip, Raft) from
            // the nodes named, by id; run it on both sides for a two-way partition. With no
            // ids the partition heals.
            let node = cluster_node(ctx)?;
            let mut ids = Vec::with_capacity(args.len() - 2);
            for arg in &args[2..] {
                let text = String::from_utf8_lossy(arg);
                let id = u64::from_str_radix(&text, 16)
                    .map_err(|_| CmdError::msg(format!("ERR not a node id: {text}")))?;
                ids.push(id);
            }
            tracing::warn!(?ids, "DEBUG CLUSTER-PARTITION");
            *node.cut_off.write() = ids;
            Ok(Frame::ok())
        }
        "cluster-record" if args.len() == 3 => {
            // A debug view: this node's own copy of a key as stored, every sibling with its
            // dot and stamp (what a quorum read merges), in the selected database.
            let node = cluster_node(ctx)?;
            let record = node
                .data
                .local_record(ctx.db(), &args[2])
                .map_err(|e| CmdError::msg(format!("ERR {e}")))?;
            Ok(Frame::Bulk(Bytes::from(format!("{record:?}"))))
        }
        "cluster-fence" if args.len() == 3 => {
            // A drill: this node refuses internode data requests from below this epoch, as if
            // its map were that new (the stale-epoch path end to end).
            let node = cluster_node(ctx)?;
            let epoch = args::parse_u64(&args[2]).ok_or(CmdError::NotInteger)?;
            node.fence
                .store(epoch, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(epoch, "DEBUG CLUSTER-FENCE");
            Ok(Frame::ok())
        }
        "compaction" if args.len() == 3 => {
            // Holds background compaction, so level 0 grows until writes stall (a drill).
            let hold = match args::lower(&args[2]).as_str() {
                "pause" => true,
                "resume" => false,
                _ => return Err(CmdError::Syntax),
            };
            ctx.keyspace
                .engine()
                .options()
                .faults
                .hold_compactions(hold);
            tracing::warn!(hold, "DEBUG COMPACTION");
            Ok(Frame::ok())
        }
        "advance-clock" if args.len() == 3 => {
            let Some(clock) = &ctx.server.manual_clock else {
                return Err(CmdError::msg(
                    "ERR the clock is the system's; start with clock = manual to move it",
                ));
            };
            let ms = args::i64_arg(&args[2])?;
            if ms < 0 {
                return Err(CmdError::msg("ERR the clock only moves forward"));
            }
            Ok(Frame::Integer(clock.advance(ms as u64) as i64))
        }
        "set-active-expire" if args.len() == 3 => {
            let on = args::i64_arg(&args[2])?;
            ctx.keyspace.set_active_expire(on != 0);
            Ok(Frame::ok())
        }
        "object" if args.len() == 3 => {
            ctx.check_key(&args[2])?;
            let Some(value) = ctx.keyspace.get(ctx.db(), &args[2])? else {
                return Err(CmdError::msg(errors::NO_SUCH_KEY));
            };
            Ok(Frame::simple(format!(
                "Value at:0x0 refcount:1 encoding:{} serializedlength:{} lru:0 lru_seconds_idle:0",
                match value.value_type {
                    ringkv_store::ValueType::String => {
                        let data = value.payload();
                        if data.len() <= 20 && args::parse_i64(&data).is_some() {
                            "int"
                        } else if data.len() <= 44 {
                            "embstr"
                        } else {
                            "raw"
                        }
                    }
                    ringkv_store::ValueType::Record => "raw",
                },
                value.payload_len()
            )))
        }
        "populate" if (3..=5).contains(&args.len()) => debug_populate(ctx, args),
        "fail-fsync" if args.len() == 3 => {
            // A drill of the failed-fsync path (docs/durability.md): the next `count` fsyncs of
            // the write-ahead log report EIO, as a disk whose write-back failed would.
            let count = args::i64_arg(&args[2])?;
            if count < 0 {
                return Err(CmdError::msg(
                    "ERR count must be greater than or equal to 0",
                ));
            }
            let engine = ctx.keyspace.engine();
            engine.options().faults.fail_wal_fsyncs(count as u64);
            tracing::warn!(count, "DEBUG FAIL-FSYNC: the next WAL fsyncs will fail");
            Ok(Frame::ok())
        }
        "reload" => {
            let engine = ctx.keyspace.engine();
            crate::data::blocking(move || engine.flush())?;
            Ok(Frame::ok())
        }
        "help" => Ok(help_frame(&[
            "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "FAIL-FSYNC <count>",
            "    Make the next <count> fsyncs of the write-ahead log fail with EIO (a drill:",
            "    writes are then refused until the server is restarted).",
            "ADVANCE-CLOCK <milliseconds>",
            "    Move the manual clock forward (only with clock = manual).",
            "DATA-PATH LOCAL|DEFERRED",
            "    Run data operations in place (the default), or answer them later from the",
            "    blocking pool, as a cluster coordinator does (a drill of that path).",
            "COMPACTION PAUSE|RESUME",
            "    Hold background compaction (level 0 then grows until writes stall), or let it go.",
            "OBJECT <key>",
            "    Show low level info about the key and associated value.",
            "POPULATE <count> [<prefix>] [<size>]",
            "    Create <count> string keys named key:<num>. If <prefix> is specified then",
            "    it is used instead of the 'key' prefix. These are not propagated to",
            "    replicas. Cluster slots are not respected so keys not belonging to the",
            "    current node can be created in cluster mode.",
            "RELOAD",
            "    Flush the engine to disk (ringkv has no RDB to reload).",
            "SLOW-FSYNC <milliseconds> [<count>]",
            "    Make the next <count> (default 1) fsyncs of the write-ahead log take",
            "    <milliseconds> longer (a drill of a slow disk).",
            "SET-ACTIVE-EXPIRE <0|1>",
            "    Setting it to 0 disables expiring keys in background when they are not",
            "    accessed (otherwise the Redis behavior). Setting it to 1 reenables back the",
            "    default.",
            "SLEEP <seconds>",
            "    Stop the server for <seconds>. Decimals allowed.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(CmdError::msg(errors::unknown_subcommand("debug", &args[1]))),
    }
}

/// DEBUG POPULATE count [prefix] [size]: bounded (a count or size past the limits is an
/// error, never an abort or an endless loop), and run off the async workers.
fn debug_populate(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let count = args::i64_arg(&args[2])?;
    if !(0..=POPULATE_KEYS_MAX).contains(&count) {
        return Err(CmdError::msg(format!(
            "ERR count must be between 0 and {POPULATE_KEYS_MAX}"
        )));
    }
    let prefix = args.get(3).map_or(&b"key"[..], |p| &p[..]);
    let size = match args.get(4) {
        Some(size) => {
            let size = args::i64_arg(size)?;
            let size_max = ctx.string_bytes_max() as i64;
            if !(0..=size_max).contains(&size) {
                return Err(CmdError::msg(format!(
                    "ERR size must be between 0 and {size_max} (proto-max-bulk-len)"
                )));
            }
            Some(size as usize)
        }
        None => None,
    };
    let value_bytes = size.unwrap_or(16).max(16) as u128;
    if count as u128 * value_bytes > POPULATE_BYTES_MAX {
        return Err(CmdError::msg(format!(
            "ERR count times size must be at most {POPULATE_BYTES_MAX} bytes"
        )));
    }
    let db = ctx.db();
    let keyspace = ctx.keyspace;
    let ctx_server = ctx.server;
    crate::data::blocking(|| -> CmdResult<()> {
        // Keys go in batches (POPULATE_BATCH_KEYS, POPULATE_BATCH_BYTES), each one engine write: under `always`
        // a write waits for its fsync, and one fsync per key made 100 000 keys take minutes.
        let key_value_bytes = size.unwrap_or(16).max(16) as i64;
        let batch_keys = (POPULATE_BATCH_BYTES / key_value_bytes).clamp(1, POPULATE_BATCH_KEYS);
        let mut start = 0;
        while start < count {
            if *ctx_server.shutdown.borrow() {
                return Err(CmdError::msg("ERR server is shutting down"));
            }
            let end = (start + batch_keys).min(count);
            let keys: Vec<Bytes> = (start..end)
                .map(|i| {
                    let mut key = prefix.to_vec();
                    key.extend_from_slice(format!(":{i}").as_bytes());
                    Bytes::from(key)
                })
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let _guard = keyspace.lock_keys(&refs);
            let mut items = Vec::with_capacity(keys.len());
            for (i, key) in (start..end).zip(keys) {
                if keyspace.exists(db, &key)? {
                    continue; // existing keys are left alone
                }
                let mut value = format!("value:{i}").into_bytes();
                if let Some(size) = size {
                    value.resize(size, 0);
                }
                items.push((key, Bytes::from(value), None));
            }
            if !items.is_empty() {
                keyspace.write_strings(db, &items)?;
            }
            start = end;
        }
        Ok(())
    })?;
    ctx.wrote(ctx.keyspace.last_written_sequence());
    Ok(Frame::ok())
}

// ---------------------------------------------------------------------------------------------
// CONFIG
//
// CONFIG GET/SET/REWRITE work from the settings table (`config.rs`); what is here is what
// only a running server knows: the bound port, the live replication link, and which running
// parts hold a copy of a setting that CONFIG SET must update (`apply_live`).

/// Redis configs that are not ringkv settings, answered so that clients and tools that read
/// or set them work: (name, value CONFIG GET shows, CONFIG SET accepts it).
const REDIS_ONLY: &[(&str, &str, bool)] = &[
    // ringkv persists through its WAL, not snapshots; always "appendonly".
    ("appendonly", "yes", false),
    ("databases", "16", false), // DATABASES, checked below
    ("save", "", true),
    // ringkv never evicts: writes over maxmemory are refused.
    ("maxmemory-policy", "noeviction", true),
    ("tcp-keepalive", "300", true),
    ("hz", "10", true),
];

const _: () = assert!(DATABASES == 16, "REDIS_ONLY's `databases` is DATABASES");

/// CONFIG GET's answer for `setting`.
fn config_value(ctx: &Ctx<'_>, setting: &crate::settings::Setting) -> String {
    let server = ctx.server;
    match setting.name {
        "port" => server.bound_port.load(Ordering::Relaxed).to_string(),
        "replicaof" => server
            .replication
            .link()
            .map(|link| format!("{} {}", link.host, link.port))
            .unwrap_or_default(),
        "dir" => {
            let dir = server.config.read().dir.clone();
            std::fs::canonicalize(&dir)
                .unwrap_or(dir)
                .display()
                .to_string()
        }
        _ => (setting.reply)(&server.config.read()),
    }
}

/// After CONFIG SET changed `name` in the config: updates the running parts that hold their
/// own copy of it. Settings read from the config at each use need nothing here.
fn apply_live(ctx: &Ctx<'_>, name: &str) -> Result<(), String> {
    let server = ctx.server;
    let config = server.config.read().clone();
    let replication = &server.replication;
    match name {
        "requirepass" => server
            .acl
            .set_default_password(config.requirepass.as_deref()),
        // Switching to `always` fsyncs what was written so far first (the engine does it).
        "appendfsync" => ctx
            .keyspace
            .engine()
            .set_fsync_policy(config.appendfsync)
            .map_err(|error| format!("cannot change the fsync policy: {error}"))?,
        "slowlog-log-slower-than" => server
            .slowlog
            .slower_than_micros
            .store(config.slowlog_log_slower_than, Ordering::Relaxed),
        "slowlog-max-len" => server
            .slowlog
            .len_max
            .store(config.slowlog_max_len, Ordering::Relaxed),
        "latency-monitor-threshold" => server
            .slowlog
            .latency_threshold_ms
            .store(config.latency_monitor_threshold, Ordering::Relaxed),
        "replica-read-only" => replication
            .read_only
            .store(config.replication.replica_read_only, Ordering::Relaxed),
        "repl-backlog-size" => ctx
            .keyspace
            .engine()
            .set_change_log_capacity(crate::replication::backlog_capacity(ctx.server)),
        "min-replicas-to-write" => replication
            .min_replicas_to_write
            .store(config.replication.min_replicas_to_write, Ordering::Relaxed),
        "min-replicas-max-lag" => replication.min_replicas_max_lag_seconds.store(
            config.replication.min_replicas_max_lag_seconds,
            Ordering::Relaxed,
        ),
        _ => {}
    }
    Ok(())
}

/// CONFIG SET of one setting; `Err` is the text after Redis' "CONFIG SET failed … - ".
fn set_setting(ctx: &Ctx<'_>, name: &str, value: &[u8]) -> CmdResult<()> {
    let failed = |why: &str| {
        CmdError::msg(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
        ))
    };
    let Some(setting) = crate::settings::find(name) else {
        return match REDIS_ONLY.iter().find(|(known, _, _)| *known == name) {
            Some((_, _, false)) => Err(failed("can't set immutable config")),
            // Accepted and ignored, checked where Redis checks them.
            Some(_) if matches!(name, "tcp-keepalive" | "hz") => {
                let text = String::from_utf8_lossy(value);
                crate::settings::parse_integer(&text).map_err(|why| failed(&why))?;
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(CmdError::msg(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                errors::printable(name.as_bytes(), 128)
            ))),
        };
    };
    if setting.mode != crate::settings::Mode::Live {
        return Err(failed("can't set immutable config"));
    }
    let text = String::from_utf8_lossy(value);
    let previous = {
        let mut config = ctx.server.config.write();
        let previous = (setting.get)(&config);
        setting.apply(&mut config, &text).map_err(|why| {
            if setting.choices.is_empty() {
                failed(&why)
            } else {
                failed(&format!(
                    "argument(s) must be one of the following: {}",
                    setting.choices.join(", ")
                ))
            }
        })?;
        previous
    };
    if let Err(why) = apply_live(ctx, setting.name) {
        let mut config = ctx.server.config.write();
        setting
            .apply(&mut config, previous.as_deref().unwrap_or_default())
            .expect("the previous value reads back");
        return Err(failed(&why));
    }
    Ok(())
}

/// This node in cluster mode, for the cluster drills of DEBUG.
fn cluster_node<'a>(
    ctx: &'a Ctx<'_>,
) -> CmdResult<&'a std::sync::Arc<crate::cluster::ClusterNode>> {
    ctx.server
        .cluster
        .get()
        .ok_or_else(|| CmdError::msg("ERR cluster mode is off"))
}

fn config(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(config_run(ctx, args))
}

fn config_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let sub = args::lower(&args[1]);
    let arity = || CmdError::msg(errors::wrong_arity(&format!("config|{sub}")));
    match sub.as_str() {
        "get" => {
            if args.len() < 3 {
                return Err(arity());
            }
            let matches = |name: &str| {
                args[2..]
                    .iter()
                    .any(|pattern| glob::matches(pattern, name.as_bytes(), true))
            };
            let mut pairs = Vec::new();
            for setting in crate::settings::all().filter(|s| matches(s.name)) {
                pairs.push((
                    Frame::bulk(setting.name),
                    Frame::bulk(config_value(ctx, setting)),
                ));
            }
            for (name, value, _) in REDIS_ONLY.iter().filter(|(name, _, _)| matches(name)) {
                pairs.push((Frame::bulk(*name), Frame::bulk(*value)));
            }
            Ok(Frame::Map(pairs))
        }
        "set" => {
            if args.len() < 4 || !args.len().is_multiple_of(2) {
                return Err(arity());
            }
            for pair in args[2..].chunks(2) {
                set_setting(ctx, &args::lower(&pair[0]), &pair[1])?;
            }
            Ok(Frame::ok())
        }
        "resetstat" => {
            if args.len() != 2 {
                return Err(arity());
            }
            for stats in &ctx.server.command_stats {
                stats.calls.store(0, Ordering::Relaxed);
                stats.usec.store(0, Ordering::Relaxed);
                stats.rejected_calls.store(0, Ordering::Relaxed);
                stats.failed_calls.store(0, Ordering::Relaxed);
            }
            let s = &ctx.server.stats;
            for counter in [
                &s.total_commands_processed,
                &s.total_connections_received,
                &s.rejected_connections,
                &s.total_error_replies,
                &s.total_net_input_bytes,
                &s.total_net_output_bytes,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
            ctx.keyspace.reset_stats();
            ctx.server.metrics.reset();
            Ok(Frame::ok())
        }
        "rewrite" => {
            let config = ctx.server.config.read().clone();
            let link = ctx
                .server
                .replication
                .link()
                .map(|link| (link.host.clone(), link.port));
            crate::config::rewrite(&config, link)
                .map_err(|why| CmdError::msg(format!("ERR {why}")))?;
            tracing::info!("CONFIG REWRITE wrote the config file");
            Ok(Frame::ok())
        }
        "help" => Ok(help_frame(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(CmdError::msg(errors::unknown_subcommand(
            "config", &args[1],
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// COMMAND

/// The Redis command group of a spec, for COMMAND DOCS.
fn group(spec: &CommandSpec) -> &'static str {
    for (category, group) in [
        ("string", "string"),
        ("bitmap", "bitmap"),
        ("transaction", "transactions"),
        ("connection", "connection"),
        ("keyspace", "generic"),
    ] {
        if spec.acl_categories.contains(&category) {
            return group;
        }
    }
    "server"
}

fn command_info(spec: &CommandSpec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(i64::from(spec.arity)),
        Frame::Set(spec.flags.iter().map(|f| Frame::simple(*f)).collect()),
        Frame::Integer(i64::from(spec.first_key)),
        Frame::Integer(i64::from(spec.last_key)),
        Frame::Integer(i64::from(spec.step)),
        Frame::Set(
            spec.acl_categories
                .iter()
                .map(|c| Frame::simple(format!("@{c}")))
                .collect(),
        ),
        Frame::Set(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

fn command_docs(spec: &CommandSpec) -> Frame {
    let mut fields = vec![
        (Frame::bulk("summary"), Frame::bulk(spec.summary)),
        (Frame::bulk("since"), Frame::bulk(spec.since)),
        (Frame::bulk("group"), Frame::bulk(group(spec))),
    ];
    if let Some(syntax) = super::docs::syntax(spec.name).filter(|s| !s.is_empty()) {
        fields.push((Frame::bulk("arguments"), super::docs::arguments(syntax)));
    }
    Frame::Map(fields)
}

fn command(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let _ = ctx;
    let registry = registry();
    if args.len() == 1 {
        return Frame::Array(registry.specs().iter().map(|s| command_info(s)).collect());
    }
    let sub = args::lower(&args[1]);
    match sub.as_str() {
        "count" if args.len() == 2 => Frame::Integer(registry.len() as i64),
        "info" => {
            if args.len() == 2 {
                return Frame::Array(registry.specs().iter().map(|s| command_info(s)).collect());
            }
            Frame::Array(
                args[2..]
                    .iter()
                    .map(|name| {
                        registry
                            .lookup(name)
                            .map_or(Frame::NullArray, |(_, s)| command_info(s))
                    })
                    .collect(),
            )
        }
        "docs" => {
            let specs: Vec<&CommandSpec> = if args.len() == 2 {
                registry.specs().to_vec()
            } else {
                args[2..]
                    .iter()
                    .filter_map(|name| registry.lookup(name).map(|(_, s)| s))
                    .collect()
            };
            Frame::Map(
                specs
                    .into_iter()
                    .map(|s| (Frame::bulk(s.name), command_docs(s)))
                    .collect(),
            )
        }
        "list" => Frame::Array(
            registry
                .specs()
                .iter()
                .map(|s| Frame::bulk(s.name))
                .collect(),
        ),
        "getkeys" if args.len() >= 3 => {
            let Some((_, spec)) = registry.lookup(&args[2]) else {
                return Frame::error("ERR Invalid command specified");
            };
            let command_args = &args[2..];
            if spec.first_key == 0 {
                return Frame::error("ERR The command has no key arguments");
            }
            let last = if spec.last_key < 0 {
                command_args.len() as i64 + i64::from(spec.last_key)
            } else {
                i64::from(spec.last_key)
            };
            let mut keys = Vec::new();
            let mut at = i64::from(spec.first_key);
            while at <= last && (at as usize) < command_args.len() {
                keys.push(Frame::Bulk(command_args[at as usize].clone()));
                at += i64::from(spec.step.max(1));
            }
            Frame::Array(keys)
        }
        "help" => help_frame(&[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "HELP",
            "    Print this help.",
        ]),
        "count" | "getkeys" => Frame::error(errors::wrong_arity(&format!("command|{sub}"))),
        _ => Frame::error(errors::unknown_subcommand("command", &args[1])),
    }
}

// ---------------------------------------------------------------------------------------------
// INFO

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "latencystats",
    "engine",
    "errorstats",
    "cluster",
    "keyspace",
];

fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let mut wanted: Vec<&str> = Vec::new();
    if args.len() == 1 {
        wanted.extend_from_slice(DEFAULT_SECTIONS);
    }
    let requested: Vec<String> = args[1..].iter().map(|a| args::lower(a)).collect();
    for name in &requested {
        match name.as_str() {
            "all" => wanted.extend(ALL_SECTIONS.iter().filter(|s| **s != "modules")),
            "everything" => wanted.extend_from_slice(ALL_SECTIONS),
            "default" => wanted.extend_from_slice(DEFAULT_SECTIONS),
            other => {
                if let Some(known) = ALL_SECTIONS.iter().find(|s| **s == other) {
                    wanted.push(known);
                }
            }
        }
    }
    let mut text = String::new();
    for section in ALL_SECTIONS {
        if !wanted.contains(section) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        section_text(ctx, section, &mut text);
    }
    let text = Bytes::from(text);
    if ctx.resp() == RespVersion::Resp3 {
        Frame::Verbatim {
            format: *b"txt",
            text,
        }
    } else {
        Frame::Bulk(text)
    }
}

/// (user, system) CPU seconds of the process, and of its threads together as children do not
/// exist here.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass and touches nothing else.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (0.0, 0.0);
        }
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }
}

fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    }
}

fn section_text(ctx: &Ctx<'_>, section: &str, out: &mut String) {
    let server = ctx.server;
    let stats = &server.stats;
    let uptime = server.started.elapsed().as_secs();
    match section {
        "server" => {
            let config = server.config.read();
            let _ = write!(
                out,
                "# Server\r\nredis_version:{}\r\nringkv_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\natomicvar_api:atomic-builtin\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nlru_clock:0\r\nexecutable:ringkv\r\nconfig_file:{}\r\nio_threads_active:0\r\n",
                crate::REDIS_VERSION,
                crate::RINGKV_VERSION,
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                server.run_id,
                server.bound_port.load(Ordering::Relaxed),
                ctx.now_ms * 1000,
                uptime,
                uptime / 86_400,
                config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            );
        }
        "clients" => {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:0\r\ntracking_clients:0\r\nclients_in_timeout_table:0\r\n",
                server.clients.lock().len(),
            );
        }
        "memory" => {
            let engine = ctx.keyspace.engine().stats();
            let rss = crate::metrics::resident_bytes();
            let used = rss.max((engine.memtable_bytes + engine.frozen_memtable_bytes) as u64);
            let _ = write!(
                out,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{used}\r\nused_memory_peak_human:{}\r\nused_memory_dataset:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:noeviction\r\nmem_fragmentation_ratio:1.00\r\nmem_allocator:{}\r\nmemtable_bytes:{}\r\nfrozen_memtable_bytes:{}\r\n",
                human_bytes(used),
                human_bytes(rss),
                human_bytes(used),
                engine.memtable_bytes + engine.frozen_memtable_bytes,
                human_bytes(server.config.read().maxmemory),
                crate::memory::allocator_name(),
                engine.memtable_bytes,
                engine.frozen_memtable_bytes,
            );
        }
        "persistence" => {
            let engine = ctx.keyspace.engine();
            crate::persistence::info_text(
                &server.persistence,
                &engine,
                ctx.keyspace.pending_drops(),
                out,
            );
        }
        "stats" => {
            let rejected: u64 = server
                .command_stats
                .iter()
                .map(|s| s.rejected_calls.load(Ordering::Relaxed))
                .sum();
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:0\r\npubsub_patterns:0\r\ntotal_error_replies:{}\r\nrejected_calls:{}\r\nactive_expire_enabled:{}\r\n",
                stats.total_connections_received.load(Ordering::Relaxed),
                stats.total_commands_processed.load(Ordering::Relaxed),
                stats.total_net_input_bytes.load(Ordering::Relaxed),
                stats.total_net_output_bytes.load(Ordering::Relaxed),
                stats.rejected_connections.load(Ordering::Relaxed),
                ctx.keyspace.expired_keys(),
                ctx.keyspace.hits_and_misses().0,
                ctx.keyspace.hits_and_misses().1,
                stats.total_error_replies.load(Ordering::Relaxed),
                rejected,
                u8::from(ctx.keyspace.active_expire()),
            );
        }
        "replication" => crate::replication::info_section(ctx.server, out),
        "cpu" => {
            let (user, system) = cpu_seconds();
            let _ = write!(
                out,
                "# CPU\r\nused_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:{system:.6}\r\nused_cpu_user_main_thread:{user:.6}\r\n"
            );
        }
        "modules" => out.push_str("# Modules\r\n"),
        "latencystats" => crate::metrics::info_latencystats(server, out),
        "engine" => crate::metrics::info_engine(server, out),
        "errorstats" => out.push_str("# Errorstats\r\n"),
        "cluster" => out.push_str(if server.cluster.get().is_some() {
            "# Cluster\r\ncluster_enabled:1\r\n"
        } else {
            "# Cluster\r\ncluster_enabled:0\r\n"
        }),
        "commandstats" => {
            out.push_str("# Commandstats\r\n");
            for (spec, stats) in registry().specs().iter().zip(&server.command_stats) {
                let calls = stats.calls.load(Ordering::Relaxed);
                let rejected = stats.rejected_calls.load(Ordering::Relaxed);
                if calls == 0 && rejected == 0 {
                    continue;
                }
                let usec = stats.usec.load(Ordering::Relaxed);
                let per_call = if calls == 0 {
                    0.0
                } else {
                    usec as f64 / calls as f64
                };
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={}\r\n",
                    spec.name,
                    stats.failed_calls.load(Ordering::Relaxed),
                );
            }
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            for db in 0..DATABASES {
                let keys = crate::data::key_count(ctx.keyspace, db);
                if keys == 0 {
                    continue;
                }
                let expires = ctx
                    .keyspace
                    .expiring_keys(db, INFO_EXPIRES_SCAN_MAX)
                    .unwrap_or(0);
                let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
        }
        _ => {}
    }
    // The settings the table puts in this section, after its own fields.
    let config = server.config.read();
    for setting in crate::settings::all().filter(|s| s.info == Some(section)) {
        let _ = write!(
            out,
            "{}:{}\r\n",
            setting.name.replace('-', "_"),
            (setting.reply)(&config)
        );
    }
}
