//! Replication commands: REPLICAOF / SLAVEOF, ROLE, WAIT, and the two a replica
//! sends its leader, REPLCONF and PSYNC (see `crate::replication`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::{spec, CommandSpec, Ctx};
use crate::args::{self, is};
use crate::errors;
use crate::replication::{self, leader};

/// The replication commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec("replicaof", 3, &["admin", "noscript", "stale", "no_async_loading"], 0, 0, 0, &["admin", "slow", "dangerous"], "Configures a server as replica of another, or promotes it to a master.", "5.0.0", replicaof).syntax("host port"),
    spec("slaveof", 3, &["admin", "noscript", "stale", "no_async_loading"], 0, 0, 0, &["admin", "slow", "dangerous"], "Sets a Redis server as a replica of another, or promotes it to being a master.", "1.0.0", replicaof).syntax("host port"),
    spec("role", 1, &["noscript", "loading", "stale", "fast"], 0, 0, 0, &["admin", "fast", "dangerous"], "Returns the replication role.", "2.8.12", role).syntax(""),
    spec("wait", 3, &["noscript"], 0, 0, 0, &["slow", "connection"], "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.", "3.0.0", wait).syntax("numreplicas timeout"),
    spec("replconf", -1, &["admin", "noscript", "loading", "stale", "allow_busy"], 0, 0, 0, &["admin", "slow", "dangerous"], "An internal command for configuring the replication stream.", "3.0.0", replconf).syntax("option value [option value ...]"),
    spec("psync", -3, &["admin", "noscript", "no_async_loading", "no_multi"], 0, 0, 0, &["admin", "slow", "dangerous"], "An internal command used in replication.", "2.8.0", psync).syntax("replicationid offset"),
];

fn replicaof(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if is(&args[1], "no") && is(&args[2], "one") {
        if ctx.server.replication.link().is_some() {
            replication::promote(ctx.server);
        }
        return Frame::ok();
    }
    let Some(port) = args::parse_u64(&args[2]).filter(|&p| p > 0 && p <= 65535) else {
        return Frame::error("ERR Invalid master port");
    };
    let host = String::from_utf8_lossy(&args[1]).into_owned();
    if let Some(link) = ctx.server.replication.link() {
        if link.host == host && u64::from(link.port) == port {
            return Frame::simple("OK Already connected to specified master");
        }
    }
    if !replication::follow_from_command(ctx.server, host.clone(), port as u16) {
        return Frame::error("ERR server is shutting down");
    }
    tracing::info!(%host, port, "REPLICAOF: following a new leader");
    Frame::ok()
}

fn role(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    let last_seq = ctx.keyspace.engine().last_sequence() as i64;
    match ctx.server.replication.link() {
        Some(link) => {
            let state = if link.sync_in_progress.load(Ordering::Acquire) {
                "sync"
            } else if link.up.load(Ordering::Acquire) {
                "connected"
            } else {
                "connect"
            };
            Frame::Array(vec![
                Frame::bulk("slave"),
                Frame::bulk(link.host.clone()),
                Frame::Integer(i64::from(link.port)),
                Frame::bulk(state),
                Frame::Integer(last_seq),
            ])
        }
        None => {
            let replicas = ctx.server.replication.replicas.lock().clone();
            Frame::Array(vec![
                Frame::bulk("master"),
                Frame::Integer(last_seq),
                Frame::Array(
                    replicas
                        .values()
                        .map(|r| {
                            Frame::Array(vec![
                                Frame::bulk(r.ip.to_string()),
                                Frame::bulk(r.port.to_string()),
                                Frame::bulk(r.ack_seq.to_string()),
                            ])
                        })
                        .collect(),
                ),
            ])
        }
    }
}

fn wait(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if ctx.server.replication.link().is_some() {
        return Frame::error("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
    }
    let (Some(wanted), Some(timeout_ms)) = (args::parse_i64(&args[1]), args::parse_i64(&args[2]))
    else {
        return Frame::error("ERR value is not an integer or out of range");
    };
    if timeout_ms < 0 {
        return Frame::error("ERR timeout is negative");
    }
    // Everything committed so far, this connection's writes included (under `always`, those
    // still waiting for their fsync too).
    let seq = ctx.keyspace.last_written_sequence();
    let wanted = wanted.max(0) as usize;
    let deadline =
        (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
    let acked = ctx.server.replication.acked_count(seq);
    // Inside MULTI nothing blocks: the count so far, at once, as Redis answers.
    if acked >= wanted || ctx.client.in_exec {
        return Frame::Integer(acked as i64);
    }
    let server = ctx.server.clone();
    ctx.defer(async move {
        let acked = server.replication.wait_acks(seq, wanted, deadline).await;
        Frame::Integer(acked as i64)
    })
}

fn replconf(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if args.len().is_multiple_of(2) {
        return Frame::error(errors::wrong_arity("replconf"));
    }
    for pair in args[1..].chunks(2) {
        if is(&pair[0], "listening-port") {
            let Some(port) = args::parse_u64(&pair[1]).filter(|&p| p <= 65535) else {
                return Frame::error("ERR value is not an integer or out of range");
            };
            ctx.server
                .replication
                .announced_ports
                .lock()
                .insert(ctx.client.id(), port as u16);
        } else if is(&pair[0], "ack") || is(&pair[0], "getack") {
            // Acknowledgements arrive on a replica's link (after PSYNC, read by the leader's
            // link task), never as a client's command.
            return Frame::error(
                "ERR REPLCONF ACK and GETACK are only accepted on a replica's link",
            );
        }
        // ip-address, capa, rdb-only …: accepted and ignored.
    }
    Frame::ok()
}

fn psync(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let replid = String::from_utf8_lossy(&args[1]).into_owned();
    let seq = args::parse_i64(&args[2]).and_then(|s| u64::try_from(s).ok());
    let start = leader::decide(ctx.server, &replid, seq);
    let port = ctx
        .server
        .replication
        .announced_ports
        .lock()
        .remove(&ctx.client.id())
        .unwrap_or(0);
    let ip = ctx.client.handle.info.lock().addr.ip();
    let ids = ctx.server.replication.ids.lock().clone();
    ctx.client.handoff = Some(leader::Handoff { start, ip, port });
    match start {
        leader::Start::Continue(_) => {
            ctx.server
                .replication
                .sync_partial_ok
                .fetch_add(1, Ordering::Relaxed);
            Frame::simple(format!("CONTINUE {}", ids.replid))
        }
        leader::Start::Full => {
            if seq.is_some() {
                ctx.server
                    .replication
                    .sync_partial_err
                    .fetch_add(1, Ordering::Relaxed);
            }
            Frame::simple(format!(
                "FULLRESYNC {} {}",
                ids.replid,
                ctx.keyspace.engine().last_sequence()
            ))
        }
    }
}
