//! Cluster commands (docs/cluster.md, "Commands"): CLUSTER INFO, MYID, KEYSLOT, NODES,
//! SLOTS, SHARDS, COUNTKEYSINSLOT, GETKEYSINSLOT as Redis Cluster answers them (so
//! cluster-aware clients route), and ringkv's own: CLUSTER QUORUM (R and W of this
//! connection), CLUSTER HOLDS (what this node's store holds), VGET and VSET (versioned read
//! and write: every sibling, and the context that resolves them).
//!
//! Every node serves every key (it coordinates what it does not hold), so no reply here is
//! ever MOVED or ASK: the slot table tells clients a good node, not the only one.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_cluster::coordinator::WriteEvent;
use ringkv_cluster::dvv::VersionVector;
use ringkv_cluster::gossip::Health;
use ringkv_cluster::map::ClusterMap;
use ringkv_cluster::record::Body;
use ringkv_cluster::{key_slot, NodeId, SLOT_COUNT};
use ringkv_protocol::Frame;

use super::{spec, CommandSpec, Ctx};
use crate::args;
use crate::cluster::ClusterNode;
use crate::errors::{self, CmdError, CmdResult};

/// The cluster commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec("cluster", -2, &[], 0, 0, 0, &["slow"], "A container for Redis Cluster commands.", "3.0.0", cluster)
        .syntax("INFO|MYID|KEYSLOT key|NODES|SLOTS|SHARDS|COUNTKEYSINSLOT slot|GETKEYSINSLOT slot count|QUORUM [r w [pw]]|FORGET node-id|LEAVE [node-id]|HOLDS key [key ...]|HELP"),
    spec("vget", 2, &["readonly"], 1, 1, 1, &["read", "string", "slow"], "Returns every sibling of a key and the context that resolves them (cluster mode).", "ringkv", vget)
        .syntax("key"),
    spec("vset", 4, &["write", "denyoom"], 1, 1, 1, &["write", "string", "slow"], "Writes a value that supersedes the siblings a VGET context covers (cluster mode).", "ringkv", vset)
        .syntax("key value context"),
];

const DISABLED: &str = "ERR This instance has cluster support disabled";

fn node_of(ctx: &Ctx<'_>) -> CmdResult<Arc<ClusterNode>> {
    ctx.server
        .cluster
        .get()
        .cloned()
        .ok_or_else(|| CmdError::msg(DISABLED))
}

fn map_of(node: &ClusterNode) -> CmdResult<Arc<ClusterMap>> {
    node.map()
        .ok_or_else(|| CmdError::msg("CLUSTERDOWN the cluster map is not known yet"))
}

/// A node id as Redis Cluster spells one: 40 hex digits.
pub(crate) fn node_name(node: NodeId) -> String {
    format!("{node:040x}")
}

/// `host:port` split, for replies that give them apart.
fn host_port(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

/// Runs of consecutive slots with the same replica list: (first, last, replicas).
fn slot_runs(map: &ClusterMap) -> Vec<(u16, u16, Vec<NodeId>)> {
    let mut runs: Vec<(u16, u16, Vec<NodeId>)> = Vec::new();
    for slot in 0..SLOT_COUNT {
        let replicas = map.replicas(slot);
        match runs.last_mut() {
            Some((_, last, list)) if list.as_slice() == replicas => *last = slot,
            _ => runs.push((slot, slot, replicas.to_vec())),
        }
    }
    runs
}

/// Slot ranges whose first replica is `node` (the node cluster clients send them to).
fn primary_ranges(map: &ClusterMap, node: NodeId) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for slot in 0..SLOT_COUNT {
        if map.replicas(slot).first() != Some(&node) {
            continue;
        }
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == slot => *last = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    ranges
}

fn cluster(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    match cluster_run(ctx, args) {
        Ok(frame) => frame,
        Err(error) => error.into_frame(),
    }
}

fn cluster_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let sub = args::lower(&args[1]);
    let arity = || CmdError::msg(errors::wrong_arity(&format!("cluster|{sub}")));
    match sub.as_str() {
        "keyslot" => {
            if args.len() != 3 {
                return Err(arity());
            }
            Ok(Frame::Integer(i64::from(key_slot(&args[2]))))
        }
        "help" => Ok(Frame::Array(
            [
                "CLUSTER INFO: state, members, epoch, quorum defaults.",
                "CLUSTER MYID: this node's id.",
                "CLUSTER KEYSLOT <key>: the key's hash slot.",
                "CLUSTER NODES / SLOTS / SHARDS: the slot table, as Redis Cluster gives it.",
                "CLUSTER COUNTKEYSINSLOT <slot> / GETKEYSINSLOT <slot> <count>: keys this node holds in a slot.",
                "CLUSTER FORGET <node-id>: remove a (dead) member from the cluster; its slots go to the others.",
                "CLUSTER LEAVE [<node-id>]: this member (or the one named) leaves the cluster: its slots are streamed to the others first, then it leaves the map.",
                "CLUSTER QUORUM [<r> <w> [<pw>]]: this connection's read and write quorums, and how many of W must be the slot's own replicas (not hints).",
                "CLUSTER HOLDS <key> [<key> ...]: 1 for each key this node's store holds a copy of.",
                "CLUSTER STATUS: members, their state and liveness, the epoch and slot counts (`ringkv cluster status`).",
            ]
            .into_iter()
            .map(Frame::simple)
            .collect(),
        )),
        "info" => {
            let Some(node) = ctx.server.cluster.get().cloned() else {
                return Ok(Frame::bulk(
                    "cluster_state:fail\r\ncluster_enabled:0\r\ncluster_known_nodes:1\r\n",
                ));
            };
            let map = map_of(&node)?;
            let quorum = crate::cluster::quorum_of(ctx.server, ctx.client);
            let hints = node.data.hints().map(|h| h.stats()).unwrap_or_default();
            let transfer = node.data.transfer_stats();
            use std::sync::atomic::Ordering::Relaxed;
            let text = format!(
                "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:{SLOT_COUNT}\r\ncluster_slots_ok:{SLOT_COUNT}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_replicas:{}\r\ncluster_read_quorum:{}\r\ncluster_write_quorum:{}\r\ncluster_write_strict_quorum:{}\r\ncluster_my_id:{}\r\ncluster_hints_pending:{}\r\ncluster_hints_delivered:{}\r\ncluster_hints_sent:{}\r\ncluster_stale_events_refused:{}\r\ncluster_aae_ready:{}\r\ncluster_aae_exchanges:{}\r\ncluster_aae_keys_repaired:{}\r\ncluster_change_in_progress:{}\r\ncluster_change_started:{}\r\ncluster_transfer_slots_wanted:{}\r\ncluster_transfer_slots_done:{}\r\ncluster_transfer_keys_received:{}\r\ncluster_transfer_bytes_received:{}\r\ncluster_transfer_bytes_sent:{}\r\ncluster_transfer_keys_dropped:{}\r\n",
                map.members.len(),
                map.members.len(),
                map.epoch,
                map.epoch,
                map.assignment.replication(),
                quorum.r,
                quorum.w,
                quorum.pw,
                node_name(node.id),
                hints.pending,
                hints.delivered,
                node.data
                    .sloppy_stats()
                    .hints_sent
                    .load(std::sync::atomic::Ordering::Relaxed),
                node.data.sloppy_stats().stale_events.load(Relaxed),
                u8::from(node.data.trees().is_ready()),
                node.data
                    .trees()
                    .stats()
                    .exchanges
                    .load(std::sync::atomic::Ordering::Relaxed),
                node.data
                    .trees()
                    .stats()
                    .keys_repaired
                    .load(std::sync::atomic::Ordering::Relaxed),
                u8::from(map.change.is_some()),
                map.change.as_ref().map_or(0, |c| c.started),
                transfer.slots_wanted.load(Relaxed),
                transfer.slots_done.load(Relaxed),
                transfer.keys_received.load(Relaxed),
                transfer.bytes_received.load(Relaxed),
                transfer.bytes_sent.load(Relaxed),
                transfer.keys_dropped.load(Relaxed),
            );
            Ok(Frame::bulk(text))
        }
        "status" => {
            if args.len() != 2 {
                return Err(arity());
            }
            let node = node_of(ctx)?;
            let map = map_of(&node)?;
            Ok(Frame::bulk(status_text(&node, &map)))
        }
        "myid" => Ok(Frame::bulk(node_name(node_of(ctx)?.id))),
        "nodes" => {
            let node = node_of(ctx)?;
            let map = map_of(&node)?;
            let mut text = String::new();
            for member in map.members.values() {
                let (host, port) = host_port(&member.client_addr);
                let (_, cport) = host_port(&member.cluster_addr);
                let (flags, link) = match node.health(member.node) {
                    _ if member.node == node.id => ("myself,master", "connected"),
                    Health::Alive => ("master", "connected"),
                    Health::Suspect => ("master,fail?", "connected"),
                    Health::Down => ("master,fail", "disconnected"),
                };
                text.push_str(&format!(
                    "{} {host}:{port}@{cport} {flags} - 0 0 {} {link}",
                    node_name(member.node),
                    map.epoch
                ));
                for (first, last) in primary_ranges(&map, member.node) {
                    if first == last {
                        text.push_str(&format!(" {first}"));
                    } else {
                        text.push_str(&format!(" {first}-{last}"));
                    }
                }
                text.push('\n');
            }
            Ok(Frame::bulk(text))
        }
        "slots" => {
            let node = node_of(ctx)?;
            let map = map_of(&node)?;
            let entry = |id: NodeId| {
                let member = map.member(id);
                let (host, port) = member.map_or((String::new(), 0), |m| host_port(&m.client_addr));
                Frame::Array(vec![
                    Frame::bulk(host),
                    Frame::Integer(port),
                    Frame::bulk(node_name(id)),
                ])
            };
            let ranges = slot_runs(&map)
                .into_iter()
                .map(|(first, last, replicas)| {
                    let mut out = vec![
                        Frame::Integer(i64::from(first)),
                        Frame::Integer(i64::from(last)),
                    ];
                    out.extend(replicas.into_iter().map(entry));
                    Frame::Array(out)
                })
                .collect();
            Ok(Frame::Array(ranges))
        }
        "shards" => {
            let node = node_of(ctx)?;
            let map = map_of(&node)?;
            let shards = map
                .members
                .values()
                .map(|member| {
                    let (host, port) = host_port(&member.client_addr);
                    let slots = primary_ranges(&map, member.node)
                        .into_iter()
                        .flat_map(|(a, b)| [Frame::Integer(i64::from(a)), Frame::Integer(i64::from(b))])
                        .collect();
                    Frame::Map(vec![
                        (Frame::bulk("slots"), Frame::Array(slots)),
                        (
                            Frame::bulk("nodes"),
                            Frame::Array(vec![Frame::Map(vec![
                                (Frame::bulk("id"), Frame::bulk(node_name(member.node))),
                                (Frame::bulk("port"), Frame::Integer(port)),
                                (Frame::bulk("ip"), Frame::bulk(host.clone())),
                                (Frame::bulk("endpoint"), Frame::bulk(host)),
                                (Frame::bulk("role"), Frame::bulk("master")),
                                (Frame::bulk("replication-offset"), Frame::Integer(0)),
                                (Frame::bulk("health"), Frame::bulk("online")),
                            ])]),
                        ),
                    ])
                })
                .collect();
            Ok(Frame::Array(shards))
        }
        "countkeysinslot" | "getkeysinslot" => {
            node_of(ctx)?;
            let want = if sub == "countkeysinslot" { 3 } else { 4 };
            if args.len() != want {
                return Err(arity());
            }
            let slot = args::parse_u64(&args[2])
                .filter(|&slot| slot < u64::from(SLOT_COUNT))
                .ok_or_else(|| CmdError::msg("ERR Invalid slot"))? as u16;
            let limit = if sub == "getkeysinslot" {
                args::parse_u64(&args[3])
                    .ok_or_else(|| CmdError::msg("ERR Invalid number of keys"))?
                    as usize
            } else {
                usize::MAX
            };
            let keys = crate::cluster::local_keys_in_slot(ctx.keyspace, ctx.db(), slot, limit)?;
            if sub == "countkeysinslot" {
                Ok(Frame::Integer(keys.len() as i64))
            } else {
                Ok(Frame::Array(keys.into_iter().map(Frame::Bulk).collect()))
            }
        }
        "quorum" => {
            let node = node_of(ctx)?;
            match args.len() {
                2 => {}
                4 | 5 => {
                    let parse = |arg: &Bytes, min: u64| {
                        args::parse_u64(arg)
                            .filter(|&n| (min..=16).contains(&n))
                            .map(|n| n as usize)
                            .ok_or_else(|| {
                                CmdError::msg(format!("ERR quorum must be {min} to 16"))
                            })
                    };
                    let pw = match args.get(4) {
                        Some(arg) => parse(arg, 0)?,
                        None => 0,
                    };
                    ctx.client.cluster_quorum = Some((parse(&args[2], 1)?, parse(&args[3], 1)?, pw));
                }
                _ => return Err(arity()),
            }
            let _ = node;
            let quorum = crate::cluster::quorum_of(ctx.server, ctx.client);
            Ok(Frame::Array(vec![
                Frame::Integer(quorum.r as i64),
                Frame::Integer(quorum.w as i64),
                Frame::Integer(quorum.pw as i64),
            ]))
        }
        "forget" => {
            // Removes a member from the cluster, committed through Raft (unlike Redis
            // Cluster's, which only edits this node's table): its slots are planned anew over
            // the others, and anti-entropy fills the replicas that gain slots
            // (docs/cluster.md, "Replacing a dead node").
            if args.len() != 3 {
                return Err(arity());
            }
            let node = node_of(ctx)?;
            let text = String::from_utf8_lossy(&args[2]).into_owned();
            let id = u64::from_str_radix(&text, 16)
                .map_err(|_| CmdError::msg(format!("ERR Unknown node {text}")))?;
            if id == node.id {
                return Err(CmdError::msg("ERR I tried hard but I can't forget myself..."));
            }
            if !map_of(&node)?.members.contains_key(&id) {
                return Err(CmdError::msg(format!("ERR Unknown node {text}")));
            }
            let control = node.control.clone();
            tracing::warn!(node = %text, "CLUSTER FORGET: removing a member");
            Ok(ctx.defer(async move {
                match control.remove_member(id).await {
                    Ok(map) => {
                        tracing::info!(epoch = map.epoch, members = map.members.len(), "member removed");
                        Frame::ok()
                    }
                    Err(error) => Frame::error(format!("ERR {error}")),
                }
            }))
        }
        "leave" => {
            // A planned leave (docs/cluster.md, "Joins and leaves"): committed through Raft;
            // the slots are streamed to their new replicas in the background, and the
            // member leaves the map when they all have them.
            if args.len() > 3 {
                return Err(arity());
            }
            let node = node_of(ctx)?;
            let id = match args.get(2) {
                None => node.id,
                Some(arg) => {
                    let text = String::from_utf8_lossy(arg).into_owned();
                    u64::from_str_radix(&text, 16)
                        .map_err(|_| CmdError::msg(format!("ERR Unknown node {text}")))?
                }
            };
            if !map_of(&node)?.members.contains_key(&id) {
                return Err(CmdError::msg(format!("ERR Unknown node {}", node_name(id))));
            }
            let control = node.control.clone();
            tracing::warn!(node = %node_name(id), "CLUSTER LEAVE: a member leaves");
            Ok(ctx.defer(async move {
                match control.leave(id).await {
                    Ok(map) => {
                        tracing::info!(epoch = map.epoch, "leave committed: streaming its slots");
                        Frame::ok()
                    }
                    Err(error) => Frame::error(format!("ERR {error}")),
                }
            }))
        }
        "holds" => {
            node_of(ctx)?;
            if args.len() < 3 {
                return Err(arity());
            }
            let mut out = Vec::with_capacity(args.len() - 2);
            for key in &args[2..] {
                out.push(Frame::Integer(i64::from(
                    ctx.keyspace.get(ctx.db(), key)?.is_some(),
                )));
            }
            Ok(Frame::Array(out))
        }
        _ => Err(CmdError::msg(format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(&args[1])
        ))),
    }
}

/// CLUSTER STATUS (and `ringkv cluster status`): the map as an operator reads it, one
/// `key:value` line for the cluster, then one line per member: its id, addresses, zone,
/// state in the map (up, leaving), liveness by gossip (alive, suspect, down), and how many
/// slots it holds a copy of and is first replica of.
fn status_text(node: &ClusterNode, map: &ClusterMap) -> String {
    let copies = map.assignment.replica_counts();
    let firsts = map.assignment.primary_counts();
    let down = map
        .members
        .keys()
        .filter(|&&id| id != node.id && node.health(id) == Health::Down)
        .count();
    let mut text = format!(
        "epoch:{} members:{} down:{} replicas:{} slots:{SLOT_COUNT} myself:{}\n",
        map.epoch,
        map.members.len(),
        down,
        map.assignment.replication(),
        node_name(node.id),
    );
    // The control plane as this node sees it: which member leads the Raft group that commits
    // every map (docs/cluster.md, "Control plane"), and this node's part in it.
    let control = node.control.status();
    text.push_str(&format!(
        "control: role:{} term:{} leader:{} voters:{} learners:{} applied:{}\n",
        control.role,
        control.term,
        control.leader.map_or_else(|| "-".to_string(), node_name),
        control.voters.len(),
        control.learners.len(),
        control
            .last_applied
            .map_or_else(|| "-".to_string(), |i| i.to_string()),
    ));
    if let Some(change) = &map.change {
        let gainers = map.gainers();
        let transfer = node.data.transfer_stats();
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str(&format!(
            "change: started:{} gaining:{} ready:{} moves:{} mine:{}/{} slots streamed\n",
            change.started,
            gainers.len(),
            gainers.iter().filter(|n| change.ready.contains(n)).count(),
            change.target.moves_from(&map.assignment),
            transfer.slots_done.load(Relaxed),
            transfer.slots_wanted.load(Relaxed),
        ));
    }
    for member in map.members.values() {
        let health = match node.health(member.node) {
            _ if member.node == node.id => "alive",
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Down => "down",
        };
        let zone = if member.zone.is_empty() {
            "-"
        } else {
            &member.zone
        };
        text.push_str(&format!(
            "{} client:{} cluster:{} zone:{zone} state:{} health:{health} slots:{} first:{}{}{}\n",
            node_name(member.node),
            member.client_addr,
            member.cluster_addr,
            member.state.name(),
            copies.get(&member.node).copied().unwrap_or(0),
            firsts.get(&member.node).copied().unwrap_or(0),
            if member.node == node.id {
                " myself"
            } else {
                ""
            },
            match map.gains(member.node).len() {
                0 => String::new(),
                gaining => format!(
                    " gaining:{gaining} ready:{}",
                    u8::from(map.is_ready(member.node))
                ),
            },
        ));
    }
    text
}

/// `VGET key`: `[context, [sibling, ...]]`; a sibling is its value (a bulk string, an integer
/// for a counter), deleted and expired ones left out. The context is opaque: give it to VSET.
fn vget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let node = match node_of(ctx) {
        Ok(node) => node,
        Err(error) => return error.into_frame(),
    };
    let run = crate::cluster::Run::new(ctx.server, ctx.client, node, ctx.db());
    let key = args[1].clone();
    ctx.defer(async move {
        match run.read_record(&key).await {
            Ok(record) => {
                let now = run.now_ms();
                let siblings = record
                    .siblings()
                    .filter(|s| s.expires_at_ms.is_none_or(|at| at > now))
                    .filter_map(|s| match &s.body {
                        Body::Value(value) => Some(Frame::Bulk(value.clone())),
                        Body::Counter(_) => {
                            ringkv_cluster::record::counter_value(&s.body).map(Frame::Integer)
                        }
                        Body::Tombstone => None,
                    })
                    .collect();
                Frame::Array(vec![
                    Frame::Bulk(Bytes::from(hex(&record.context().encode()))),
                    Frame::Array(siblings),
                ])
            }
            Err(error) => error.into_frame(),
        }
    })
}

/// `VSET key value context`: the value supersedes what the context (from VGET) covers.
fn vset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let node = match node_of(ctx) {
        Ok(node) => node,
        Err(error) => return error.into_frame(),
    };
    let Some(context) = unhex(&args[3]).and_then(|bytes| VersionVector::decode(&bytes).ok()) else {
        return Frame::error("ERR invalid context: pass the one VGET returned");
    };
    let run = crate::cluster::Run::new(ctx.server, ctx.client, node, ctx.db());
    let event = WriteEvent {
        db: ctx.db(),
        key: args[1].clone(),
        context: Some(context),
        body: Body::Value(args[2].clone()),
        expires_at_ms: None,
    };
    ctx.defer(async move {
        match run.write_event(event).await {
            Ok(_) => Frame::ok(),
            Err(error) => error.into_frame(),
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
