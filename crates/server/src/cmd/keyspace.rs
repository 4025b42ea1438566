//! Generic keyspace commands: DEL UNLINK EXISTS TOUCH TYPE RENAME RENAMENX
//! COPY MOVE SWAPDB KEYS SCAN RANGE DBSIZE FLUSHDB FLUSHALL RANDOMKEY OBJECT
//! MEMORY.

use std::ops::Bound;

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::connection::db_index;
use super::string::one;
use super::{reply, spec, CommandSpec, Ctx};
use crate::args::{self, is};
use crate::data::{blocking, key_count, Done, Op};
use crate::errors::{self, CmdError, CmdResult};
use crate::glob;
use crate::server::ScanPosition;
use ringkv_store::{RenameOutcome, ValueType, DATABASES};

/// Keys KEYS inspects between checks that it may go on blocking its thread.
const KEYS_BLOCK_IN_PLACE_AFTER: usize = 10_000;

/// Largest COUNT a SCAN page honours (bounds the work of one page; Redis has no limit but
/// its COUNT is a hint too).
const SCAN_COUNT_MAX: i64 = 100_000;

/// Default RANGE limit when none is given, and the largest accepted.
const RANGE_LIMIT_DEFAULT: i64 = 1000;

/// The keyspace commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec("del", -2, &["write"], 1, -1, 1, &["keyspace", "write", "slow"], "Deletes one or more keys.", "1.0.0", del).syntax("key [key ...]"),
    spec("unlink", -2, &["write", "fast"], 1, -1, 1, &["keyspace", "write", "fast"], "Asynchronously deletes one or more keys.", "4.0.0", del).syntax("key [key ...]"),
    spec("exists", -2, &["readonly", "fast"], 1, -1, 1, &["keyspace", "read", "fast"], "Determines whether one or more keys exist.", "1.0.0", exists).syntax("key [key ...]"),
    spec("touch", -2, &["readonly", "fast"], 1, -1, 1, &["keyspace", "read", "fast"], "Returns the number of existing keys out of those specified after updating the time they were last accessed.", "3.2.1", exists).syntax("key [key ...]"),
    spec("type", 2, &["readonly", "fast"], 1, 1, 1, &["keyspace", "read", "fast"], "Determines the type of value stored at a key.", "1.0.0", type_of).syntax("key"),
    spec("rename", 3, &["write"], 1, 2, 1, &["keyspace", "write", "slow"], "Renames a key and overwrites the destination.", "1.0.0", rename).syntax("key newkey"),
    spec("renamenx", 3, &["write", "fast"], 1, 2, 1, &["keyspace", "write", "fast"], "Renames a key only when the target key name doesn't exist.", "1.0.0", rename).syntax("key newkey"),
    spec("copy", -3, &["write", "denyoom"], 1, 2, 1, &["keyspace", "write", "slow"], "Copies the value of a key to a new key.", "6.2.0", copy).syntax("source destination [DB destination-db] [REPLACE]"),
    spec("move", 3, &["write", "fast"], 1, 1, 1, &["keyspace", "write", "fast"], "Moves a key to another database.", "1.0.0", move_key).syntax("key db"),
    spec("swapdb", 3, &["write", "fast"], 0, 0, 0, &["keyspace", "write", "fast", "dangerous"], "Swaps two Redis databases.", "4.0.0", swapdb).syntax("index1 index2"),
    spec("keys", 2, &["readonly"], 0, 0, 0, &["keyspace", "read", "slow", "dangerous"], "Returns all key names that match a pattern.", "1.0.0", keys).syntax("pattern"),
    spec("scan", -2, &["readonly"], 0, 0, 0, &["keyspace", "read", "slow"], "Iterates over the key names in the database.", "2.8.0", scan).syntax("cursor [MATCH pattern] [COUNT count] [TYPE type]"),
    spec("range", -3, &["readonly"], 0, 0, 0, &["keyspace", "read", "slow"], "Returns keys (optionally with values) between two bounds, in order (ringkv).", "ringkv-0.1.0", range).syntax("start end [LIMIT count] [WITHVALUES]"),
    spec("dbsize", 1, &["readonly", "fast"], 0, 0, 0, &["keyspace", "read", "fast"], "Returns the number of keys in the database.", "1.0.0", dbsize).syntax(""),
    spec("flushdb", -1, &["write"], 0, 0, 0, &["keyspace", "write", "slow", "dangerous"], "Removes all keys from the current database.", "1.0.0", flushdb).syntax("[ASYNC|SYNC]"),
    spec("flushall", -1, &["write"], 0, 0, 0, &["keyspace", "write", "slow", "dangerous"], "Removes all keys from all databases.", "1.0.0", flushall).syntax("[ASYNC|SYNC]"),
    spec("randomkey", 1, &["readonly"], 0, 0, 0, &["keyspace", "read", "slow"], "Returns a random key name from the database.", "1.0.0", randomkey).syntax(""),
    spec("object", -2, &["readonly"], 2, 2, 1, &["keyspace", "read", "slow"], "A container for object introspection commands.", "2.2.3", object).syntax("ENCODING|FREQ|IDLETIME|REFCOUNT|HELP key"),
    // The key of MEMORY USAGE key (Redis 7 names it in the subcommand's key spec); no other
    // subcommand has a third argument, so ACL checks it against the user's patterns.
    spec("memory", -2, &["readonly"], 2, 2, 1, &["slow"], "A container for memory diagnostics commands.", "4.0.0", memory).syntax("USAGE key [SAMPLES count]|HELP"),
];

fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    ctx.run(Op::Delete(args[1..].to_vec()), count)
}

fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    ctx.run(Op::Exists(args[1..].to_vec()), count)
}

/// The integer reply of [`Op::Delete`] and [`Op::Exists`].
fn count(done: Done) -> CmdResult<Frame> {
    match done {
        Done::Count(count) => Ok(Frame::Integer(count)),
        _ => unreachable!("a delete or exists answers with a count"),
    }
}

fn type_of(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    ctx.run(Op::Get(args[1].clone()), |done| {
        Ok(Frame::simple(
            one(done).map_or("none", |v| v.value_type.name()),
        ))
    })
}

fn rename(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let only_if_absent = is(&args[0], "renamenx");
    reply(
        ctx.keyspace
            .rename(ctx.db(), &args[1], &args[2], only_if_absent)
            .map_err(CmdError::from)
            .and_then(|outcome| match (outcome, only_if_absent) {
                (RenameOutcome::NoSuchKey, _) => Err(CmdError::msg(errors::NO_SUCH_KEY)),
                (RenameOutcome::Renamed, false) => Ok(Frame::ok()),
                (RenameOutcome::Renamed, true) => Ok(Frame::Integer(1)),
                (RenameOutcome::DestinationExists, _) => Ok(Frame::Integer(0)),
            }),
    )
}

fn copy(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let mut target_db = ctx.db();
        let mut replace = false;
        let mut at = 3;
        while at < args.len() {
            if is(&args[at], "replace") {
                replace = true;
                at += 1;
            } else if is(&args[at], "db") && at + 1 < args.len() {
                target_db = db_index(&args[at + 1])?;
                at += 2;
            } else {
                return Err(CmdError::Syntax);
            }
        }
        if target_db == ctx.db() && args[1] == args[2] {
            return Err(CmdError::msg(errors::SAME_OBJECT));
        }
        let copied = ctx
            .keyspace
            .copy(ctx.db(), &args[1], target_db, &args[2], replace)?;
        Ok(Frame::Integer(i64::from(copied)))
    })())
}

fn move_key(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let target = db_index(&args[2])?;
        if target == ctx.db() {
            return Err(CmdError::msg(errors::SAME_OBJECT));
        }
        let moved = ctx.keyspace.move_key(ctx.db(), target, &args[1])?;
        Ok(Frame::Integer(i64::from(moved)))
    })())
}

fn swapdb(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let a =
            args::parse_i64(&args[1]).ok_or_else(|| CmdError::msg("ERR invalid first DB index"))?;
        let b = args::parse_i64(&args[2])
            .ok_or_else(|| CmdError::msg("ERR invalid second DB index"))?;
        let range = 0..DATABASES as i64;
        if !range.contains(&a) || !range.contains(&b) {
            return Err(CmdError::msg(errors::DB_INDEX_OUT_OF_RANGE));
        }
        if a != b {
            ctx.keyspace.swap_db(a as usize, b as usize)?;
        }
        Ok(Frame::ok())
    })())
}

/// Keeps a reply built by walking many keys (KEYS, RANGE) in bounds: it stops when the
/// server is shutting down (so SIGTERM is not held up by a KEYS over millions of keys) and
/// when the reply passes `client-output-buffer-limit` (see `Ctx::reply_bytes`).
struct WalkBudget<'a> {
    server: &'a crate::server::Server,
    reply_bytes: usize,
    reply_bytes_max: usize,
    steps: usize,
}

/// Why a walk stopped early.
enum WalkStop {
    /// The server is shutting down.
    Shutdown,
    /// The reply passed the output limit.
    TooLarge,
}

/// Keys walked between two looks at the shutdown flag.
const WALK_CHECK_EVERY: usize = 4096;

impl<'a> WalkBudget<'a> {
    fn new(server: &'a crate::server::Server) -> WalkBudget<'a> {
        let reply_bytes_max = match server.config.read().output_buffer_bytes_max {
            0 => usize::MAX,
            limit => limit,
        };
        WalkBudget {
            server,
            reply_bytes: 0,
            reply_bytes_max,
            steps: 0,
        }
    }

    /// One key walked, adding `bytes` to the reply.
    fn step(&mut self, bytes: usize) -> Result<(), WalkStop> {
        self.reply_bytes += bytes;
        if self.reply_bytes > self.reply_bytes_max {
            return Err(WalkStop::TooLarge);
        }
        self.steps += 1;
        if self.steps.is_multiple_of(WALK_CHECK_EVERY) && *self.server.shutdown.borrow() {
            return Err(WalkStop::Shutdown);
        }
        Ok(())
    }
}

/// The reply for a walk: its frame, or the error of why it stopped.
fn walk_reply(ctx: &mut Ctx<'_>, walked: CmdResult<Result<Frame, WalkStop>>) -> CmdResult<Frame> {
    match walked? {
        Ok(frame) => Ok(frame),
        Err(WalkStop::Shutdown) => Err(CmdError::msg("ERR server is shutting down")),
        Err(WalkStop::TooLarge) => ctx.reply_bytes(usize::MAX).map(|()| Frame::Null),
    }
}

fn keys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let pattern = args[1].clone();
    let db = ctx.db();
    let keyspace = ctx.keyspace;
    let mut budget = WalkBudget::new(ctx.server);
    let mut collect = || -> CmdResult<Result<Frame, WalkStop>> {
        let mut out = Vec::new();
        let all = &pattern[..] == b"*";
        for item in keyspace.range(db, Bound::Unbounded, Bound::Unbounded) {
            let (key, _) = item?;
            let wanted = all || glob::matches(&pattern, &key, false);
            if let Err(stop) = budget.step(if wanted { key.len() + 16 } else { 0 }) {
                return Ok(Err(stop));
            }
            if wanted {
                out.push(Frame::Bulk(key));
            }
        }
        Ok(Ok(Frame::Array(out)))
    };
    let walked = if key_count(keyspace, db) as usize > KEYS_BLOCK_IN_PLACE_AFTER {
        blocking(collect)
    } else {
        collect()
    };
    reply(walk_reply(ctx, walked))
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(scan_run(ctx, args))
}

fn scan_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let cursor = args::parse_u64(&args[1]).ok_or_else(|| CmdError::msg(errors::INVALID_CURSOR))?;
    let mut pattern: Option<Bytes> = None;
    let mut count: i64 = 10;
    let mut type_filter: Option<Bytes> = None;
    let mut at = 2;
    while at < args.len() {
        let has_value = at + 1 < args.len();
        if is(&args[at], "count") && has_value {
            count = args::i64_arg(&args[at + 1])?;
            if count < 1 {
                return Err(CmdError::Syntax);
            }
        } else if is(&args[at], "match") && has_value {
            pattern = Some(args[at + 1].clone());
        } else if is(&args[at], "type") && has_value {
            type_filter = Some(args[at + 1].clone());
        } else {
            return Err(CmdError::Syntax);
        }
        at += 2;
    }
    let db = ctx.db();
    let start = if cursor == 0 {
        None
    } else {
        match ctx.server.scan_cursors.lock().get(cursor) {
            Some(position) if position.db == db => Some(position.last_key),
            // Unknown or forgotten cursor (from before a restart, evicted, or another db's):
            // start over. SCAN may return a key twice but must never miss one that existed
            // for the whole scan, so restarting is the only answer that keeps the guarantee;
            // see docs/server.md.
            _ => None,
        }
    };
    let count = count.min(SCAN_COUNT_MAX) as usize;
    let lower = match &start {
        Some(key) => Bound::Excluded(&key[..]),
        None => Bound::Unbounded,
    };
    let mut last: Option<Bytes> = None;
    let mut more = false;
    let mut out = Vec::new();
    for (visited, item) in ctx.keyspace.range(db, lower, Bound::Unbounded).enumerate() {
        let (key, entry) = item?;
        if visited == count {
            more = true;
            break;
        }
        let wanted = pattern
            .as_ref()
            .is_none_or(|p| glob::matches(p, &key, false))
            && type_filter.as_ref().is_none_or(|t| {
                let name = ringkv_store::value::decode_value(&entry.value)
                    .ok()
                    .map(|decoded| decoded.value_type.name());
                name.is_some_and(|n| t.eq_ignore_ascii_case(n.as_bytes()))
            });
        if wanted {
            out.push(Frame::Bulk(key.clone()));
        }
        last = Some(key);
    }
    let next = match (more, last) {
        (true, Some(last_key)) => ctx
            .server
            .scan_cursors
            .lock()
            .insert(ScanPosition { db, last_key }),
        _ => 0,
    };
    Ok(scan_reply(next, out))
}

fn scan_reply(cursor: u64, keys: Vec<Frame>) -> Frame {
    Frame::Array(vec![Frame::bulk(cursor.to_string()), Frame::Array(keys)])
}

/// A RANGE bound: `-`/`+` open, `(key` exclusive, `[key` or `key` inclusive.
fn range_bound(arg: &Bytes, is_start: bool) -> Bound<Bytes> {
    match arg.first() {
        Some(b'-') if arg.len() == 1 && is_start => Bound::Unbounded,
        Some(b'+') if arg.len() == 1 && !is_start => Bound::Unbounded,
        Some(b'(') => Bound::Excluded(arg.slice(1..)),
        Some(b'[') => Bound::Included(arg.slice(1..)),
        _ => Bound::Included(arg.clone()),
    }
}

/// RANGE start end [LIMIT n] [WITHVALUES]: keys (and values) of the selected db between two
/// bounds, in byte order.
fn range(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let start = range_bound(&args[1], true);
        let end = range_bound(&args[2], false);
        let mut limit = RANGE_LIMIT_DEFAULT;
        let mut with_values = false;
        let mut at = 3;
        while at < args.len() {
            if is(&args[at], "limit") && at + 1 < args.len() {
                limit = args::i64_arg(&args[at + 1])?;
                if limit < 0 {
                    return Err(CmdError::msg("ERR LIMIT can't be negative"));
                }
                at += 2;
            } else if is(&args[at], "withvalues") {
                with_values = true;
                at += 1;
            } else {
                return Err(CmdError::Syntax);
            }
        }
        let as_ref = |b: &Bound<Bytes>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (start, end) = (as_ref(&start), as_ref(&end));
        if bounds_empty(&start, &end) {
            return Ok(Frame::Array(Vec::new()));
        }
        // Keys the user's ACL patterns do not allow are left out, values and names alike
        // (docs/server.md): RANGE is a read of every key it returns.
        let keyspace = ctx.keyspace;
        let db = ctx.db();
        let acl = &ctx.server.acl;
        let session = &mut ctx.client.acl;
        let mut budget = WalkBudget::new(ctx.server);
        let mut collect = || -> CmdResult<Result<Frame, WalkStop>> {
            let mut out = Vec::new();
            let mut taken = 0;
            for item in keyspace.range(db, borrow(&start), borrow(&end)) {
                if taken == limit {
                    break;
                }
                let (key, entry) = item?;
                if !acl.key_allowed(session, &key) {
                    continue;
                }
                taken += 1;
                let value_bytes = if with_values { entry.value.len() } else { 0 };
                if let Err(stop) = budget.step(key.len() + 16 + value_bytes) {
                    return Ok(Err(stop));
                }
                out.push(Frame::Bulk(key));
                if with_values {
                    let decoded = ringkv_store::value::decode_value(&entry.value)?;
                    match decoded.value_type {
                        ValueType::String => {
                            out.push(Frame::Bulk(entry.value.slice(decoded.payload_at..)))
                        }
                        // A cluster record is read through the coordinator (docs/cluster.md),
                        // which resolves its siblings; a local range does not.
                        ValueType::Record => out.push(Frame::Null),
                    }
                }
            }
            Ok(Ok(Frame::Array(out)))
        };
        let walked = if limit as usize > KEYS_BLOCK_IN_PLACE_AFTER {
            blocking(collect)
        } else {
            collect()
        };
        walk_reply(ctx, walked)
    })())
}

/// True when no key can lie between the bounds (the engine wants start ≤ end).
fn borrow(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bounds_empty(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

fn dbsize(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    Frame::Integer(key_count(ctx.keyspace, ctx.db()))
}

fn flush_mode(args: &[Bytes]) -> CmdResult<()> {
    match args.len() {
        1 => Ok(()),
        2 if is(&args[1], "async") || is(&args[1], "sync") => Ok(()),
        _ => Err(CmdError::Syntax),
    }
}

fn flushdb(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(flush_mode(args).and_then(|()| {
        ctx.keyspace.flush_db(ctx.db())?;
        ctx.server.drop_wakeup.notify_one();
        Ok(Frame::ok())
    }))
}

fn flushall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(flush_mode(args).and_then(|()| {
        ctx.keyspace.flush_all()?;
        ctx.server.drop_wakeup.notify_one();
        Ok(Frame::ok())
    }))
}

/// Databases up to this many keys pick RANDOMKEY uniformly by walking to a random index.
const RANDOMKEY_WALK_KEYS_MAX: i64 = 10_000;

/// A random live key. Small databases: uniform, by walking to a random index. Large ones:
/// seeks to a random position in the key order (keys are sorted) between the first key's
/// first byte and `~`, wrapping to the first key: O(log n) but not uniform (keys after large
/// gaps come up more often), as Redis' is not for sparse tables either.
fn randomkey(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    use rand::Rng;
    reply((|| {
        let db = ctx.db();
        let Some((first, _)) = ctx
            .keyspace
            .range(db, Bound::Unbounded, Bound::Unbounded)
            .next()
            .transpose()?
        else {
            return Ok(Frame::Null);
        };
        let mut rng = rand::thread_rng();
        let size = key_count(ctx.keyspace, db);
        if size <= RANDOMKEY_WALK_KEYS_MAX {
            let skip = rng.gen_range(0..size.max(1)) as usize;
            let mut chosen = first;
            for item in ctx
                .keyspace
                .range(db, Bound::Unbounded, Bound::Unbounded)
                .take(skip + 1)
            {
                chosen = item?.0;
            }
            return Ok(Frame::Bulk(chosen));
        }
        let low = first.first().copied().unwrap_or(0);
        let high = low.max(b'~');
        let mut probe = vec![rng.gen_range(low..=high)];
        probe.extend((0..7).map(|_| rng.gen_range(b' '..=b'~')));
        let found = ctx
            .keyspace
            .range(db, Bound::Included(&probe[..]), Bound::Unbounded)
            .next()
            .transpose()?;
        Ok(Frame::Bulk(found.map_or(first, |(key, _)| key)))
    })())
}

/// Redis' encoding name for a string value.
fn string_encoding(data: &[u8]) -> &'static str {
    if data.len() <= 20 && args::parse_i64(data).is_some() {
        "int"
    } else if data.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

fn object(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let sub = args::lower(&args[1]);
        if sub == "help" {
            return Ok(help_frame(&[
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Return the access frequency index of the <key>. The returned integer is",
                "    proportional to the logarithm of the recent access frequency of the key.",
                "IDLETIME <key>",
                "    Return the idle time of the <key>, that is the approximated number of",
                "    seconds elapsed since the last access to the key.",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with the specified",
                "    <key>.",
                "HELP",
                "    Print this help.",
            ]));
        }
        if !matches!(sub.as_str(), "encoding" | "freq" | "idletime" | "refcount") {
            return Err(CmdError::msg(errors::unknown_subcommand(
                "object", &args[1],
            )));
        }
        if args.len() != 3 {
            return Err(CmdError::msg(errors::wrong_arity(&format!("object|{sub}"))));
        }
        let Some(value) = ctx.keyspace.get(ctx.db(), &args[2])? else {
            return Ok(Frame::Null);
        };
        Ok(match sub.as_str() {
            "encoding" => Frame::bulk(match value.value_type {
                ValueType::String => string_encoding(&value.payload()),
                ValueType::Record => "raw",
            }),
            "refcount" => Frame::Integer(1),
            // Access times are not tracked: every key reads as just used.
            "idletime" => Frame::Integer(0),
            _ => {
                return Err(CmdError::msg(
                    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
                ))
            }
        })
    })())
}

fn memory(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let sub = args::lower(&args[1]);
        match sub.as_str() {
            "usage" => {
                if args.len() != 3 && args.len() != 5 {
                    return Err(CmdError::Syntax);
                }
                if args.len() == 5 {
                    if !is(&args[3], "samples") {
                        return Err(CmdError::Syntax);
                    }
                    args::i64_arg(&args[4])?;
                }
                let Some(value) = ctx.keyspace.get(ctx.db(), &args[2])? else {
                    return Ok(Frame::Null);
                };
                // Key + value bytes as stored, plus the engine's per-entry overhead (internal
                // key trailer, skip-list node, expiry): an estimate, as Redis' is.
                let overhead = 56 + if value.expires_at_ms.is_some() { 24 } else { 0 };
                Ok(Frame::Integer(
                    (args[2].len() + value.raw.len() + overhead) as i64,
                ))
            }
            "help" => Ok(help_frame(&[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value. Nested values are",
                "    sampled up to <count> times (default: 5, 0 means sample all).",
                "HELP",
                "    Print this help.",
            ])),
            _ => Err(CmdError::msg(errors::unknown_subcommand(
                "memory", &args[1],
            ))),
        }
    })())
}

/// A HELP reply: one status line per entry.
pub(crate) fn help_frame(lines: &[&str]) -> Frame {
    Frame::Array(lines.iter().map(|l| Frame::simple(l.to_string())).collect())
}
