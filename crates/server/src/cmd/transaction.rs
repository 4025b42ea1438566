//! Transactions: MULTI EXEC DISCARD WATCH UNWATCH.
//!
//! MULTI queues commands (`cmd::admit` does it, bounded); EXEC locks every
//! key the queue names and every WATCHed key at once (store stripes, taken in
//! ascending order, so two EXECs never deadlock), then checks that every
//! WATCHed key still has the engine version it had when watched (a key that
//! expired or was deleted counts as changed), then runs the queue under those
//! locks: no other client's command on those keys runs in between. A queue
//! that touches whole databases (FLUSHALL, SWAPDB, KEYS …) runs with the
//! executor's gate exclusive instead (`exec.rs`). A key absent both times
//! aborts if any key of its epoch slot was written in between (it may have
//! been created and deleted again): rarely a spurious abort, never a missed
//! change. Inside EXEC nothing waits: WAIT answers at once, as in Redis.

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::{spec, CommandSpec, Ctx};
use crate::client::Watched;
use crate::errors::{self, CmdError};

/// The transaction commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec(
        "multi",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        0,
        0,
        0,
        &["fast", "transaction"],
        "Starts a transaction.",
        "1.2.0",
        multi,
    )
    .syntax(""),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        0,
        0,
        0,
        &["slow", "transaction"],
        "Executes all commands in a transaction.",
        "1.2.0",
        exec,
    )
    .syntax(""),
    spec(
        "discard",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        0,
        0,
        0,
        &["fast", "transaction"],
        "Discards a transaction.",
        "2.0.0",
        discard,
    )
    .syntax(""),
    spec(
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        1,
        -1,
        1,
        &["fast", "transaction"],
        "Monitors changes to keys to determine the execution of a transaction.",
        "2.2.0",
        watch,
    )
    .syntax("key [key ...]"),
    spec(
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        0,
        0,
        0,
        &["fast", "transaction"],
        "Forgets about watched keys of a transaction.",
        "2.2.0",
        unwatch,
    )
    .syntax(""),
];

fn multi(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    if ctx.client.multi.is_some() {
        return Frame::error("ERR MULTI calls can not be nested");
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_failed = false;
    ctx.client.handle.info.lock().multi = 0;
    Frame::ok()
}

fn discard(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    if ctx.client.multi.is_none() {
        return Frame::error("ERR DISCARD without MULTI");
    }
    ctx.client.end_transaction();
    Frame::ok()
}

fn watch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if ctx.client.multi.is_some() {
        return Frame::error("ERR WATCH inside MULTI is not allowed");
    }
    let db = ctx.db();
    for key in &args[1..] {
        if ctx
            .client
            .watched
            .iter()
            .any(|w| w.db == db && w.key == *key)
        {
            continue;
        }
        let epoch = ctx.keyspace.write_epoch(db, key);
        match ctx.keyspace.version(db, key) {
            Ok(version) => ctx.client.watched.push(Watched {
                db,
                // Copied: a slice would pin the request's input buffer until EXEC.
                key: Bytes::copy_from_slice(key),
                version,
                epoch,
            }),
            Err(error) => return CmdError::from(error).into_frame(),
        }
    }
    Frame::ok()
}

fn unwatch(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    ctx.client.watched.clear();
    Frame::ok()
}

/// Runs the queue under the locks of every key it names (see the module doc).
fn exec(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    let Some(queue) = ctx.client.multi.take() else {
        return Frame::error("ERR EXEC without MULTI");
    };
    let failed = ctx.client.multi_failed;
    let watched = std::mem::take(&mut ctx.client.watched);
    ctx.client.end_transaction();
    if failed {
        return Frame::error(errors::EXECABORT);
    }
    let mut keys: Vec<&[u8]> = watched.iter().map(|w| &w.key[..]).collect();
    for args in &queue {
        if let Some((_, spec)) = super::registry().lookup(&args[0]) {
            keys.extend(spec.keys(args).map(|k| &k[..]));
        }
    }
    let _locked = ctx.keyspace.lock_keys(&keys);
    for w in &watched {
        match ctx.keyspace.version(w.db, &w.key) {
            // Absent then and now: it may have been created and deleted in between; any
            // write to its stripe counts as a change (rarely a false alarm, never a miss).
            Ok(None)
                if w.version.is_none() && ctx.keyspace.write_epoch(w.db, &w.key) != w.epoch =>
            {
                return Frame::NullArray
            }
            Ok(version) if version == w.version => {}
            Ok(_) => return Frame::NullArray,
            Err(error) => return CmdError::from(error).into_frame(),
        }
    }
    let mut replies = Vec::with_capacity(queue.len());
    ctx.client.in_exec = true;
    for args in &queue {
        let reply = super::invoke_queued(ctx.server, ctx.client, args);
        replies.push(reply);
    }
    ctx.client.in_exec = false;
    ctx.wrote(ctx.client.pending_sync_seq);
    Frame::Array(replies)
}
