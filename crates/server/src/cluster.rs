//! Cluster mode in the server (docs/cluster.md): this node's identity, its internode
//! transport, the cluster map it routes by, and [`Coordinated`], the data path that sends
//! each operation to the key's replicas instead of the local store.
//!
//! **Owns:** starting a node (its id, ports, secret, TLS and settings, given to
//! `ringkv_cluster::node`, which runs it) and turning operations and records into replies.
//! **Must not touch:** the quorum rules, records and versions (`ringkv-cluster`), RESP
//! parsing and the command table (`cmd`): handlers build the same [`Op`]s in both modes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use ringkv_cluster::coordinator::{CoordError, Quorum, WriteEvent, MANY_KEYS_MAX};
use ringkv_cluster::frame::ClusterSecret;
use ringkv_cluster::gossip::GossipConfig;
use ringkv_cluster::hints::{HintLimits, Hints};
use ringkv_cluster::map::ClusterMap;
use ringkv_cluster::node::{LiveSettings, NodeConfig};
use ringkv_cluster::record::{Body, IncrementError, Record, Resolved};
use ringkv_cluster::transport::{BoxFuture, TransportConfig};
use ringkv_cluster::{key_slot, NodeId};
use ringkv_protocol::Frame;
use ringkv_store::{encode_value, StoredValue, ValueType};

pub(crate) use ringkv_cluster::node::ClusterNode;

use crate::client::Client;
use crate::data::{DataPath, Done, Op, Pending};
use crate::errors::{CmdError, CmdResult};
use crate::server::Server;

/// The secret used when `cluster-secret` is not set (docs/cluster.md, "Starting").
const DEFAULT_SECRET: &[u8] = b"ringkv-cluster-default-secret-change-me";

/// File in the data directory holding this node's id (16 hex digits).
const NODE_ID_FILE: &str = "cluster-node-id";

/// This node's id: read from the data directory, or drawn and written there the first time.
fn node_id(dir: &Path) -> std::io::Result<NodeId> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|_| {
            std::io::Error::other(format!("{} does not hold a node id", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id:016x}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(error) => Err(error),
    }
}

/// Starts cluster mode on a bound server: the node id, the internode listener, and the map
/// (a one-node cluster on a fresh node). Returns the node, installed in `server.cluster`.
pub(crate) async fn start(server: &Arc<Server>) -> std::io::Result<Arc<ClusterNode>> {
    let (dir, bind, client_port, settings) = {
        let config = server.config.read();
        (
            config.dir.clone(),
            config
                .bind
                .split_whitespace()
                .next()
                .unwrap_or("127.0.0.1")
                .to_string(),
            server.bound_port.load(Ordering::Relaxed) as u16,
            config.cluster.clone(),
        )
    };
    let id = node_id(&dir)?;
    let cluster_port = match settings.port {
        Some(port) => port,
        None if client_port == 0 => 0,
        None => client_port.checked_add(10_000).ok_or_else(|| {
            std::io::Error::other("client port + 10000 is past 65535: set cluster-port")
        })?,
    };
    let secret = match &settings.secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            tracing::warn!("cluster-secret is not set: any process that reaches the cluster port can join; set it");
            DEFAULT_SECRET.to_vec()
        }
    };
    let secret = ClusterSecret::new(&secret).map_err(std::io::Error::other)?;
    let bind_addr: SocketAddr = format!("{bind}:{cluster_port}")
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad cluster bind address {bind}")))?;
    let mut transport = TransportConfig::new(id, secret);
    if settings.tls {
        let config = server.config.read();
        let (Some(cert), Some(key), Some(ca)) = (
            &config.tls_cert_file,
            &config.tls_key_file,
            &config.tls_ca_cert_file,
        ) else {
            return Err(std::io::Error::other(
                "tls-cluster needs tls-cert-file, tls-key-file and tls-ca-cert-file",
            ));
        };
        let tls = crate::tls::ClusterTls::load(cert, key, ca).map_err(std::io::Error::other)?;
        transport.layer = Some(Arc::new(tls));
    }
    let hints = if settings.hinted_handoff {
        let limits = HintLimits {
            bytes_max: settings.hints_max_bytes,
            age_max_ms: settings.hint_max_age_s.saturating_mul(1000),
        };
        let fsync = server.keyspace.engine().fsync_policy();
        let hints =
            Hints::open(&dir.join(HINTS_DIR), limits, fsync).map_err(std::io::Error::other)?;
        Some(Arc::new(hints))
    } else {
        None
    };
    // Asked only on a first start (a member's data directory knows its cluster).
    let join = settings.join.clone().map(|seed| {
        Box::pin(async move {
            let seed_addr = seed_cluster_addr(&seed, JOIN_TIMEOUT).await?;
            tracing::info!(%seed, %seed_addr, "the seed's cluster address");
            Ok(seed_addr)
        }) as BoxFuture<'static, std::io::Result<SocketAddr>>
    });
    let live = {
        let server = Arc::downgrade(server);
        move || {
            let Some(server) = server.upgrade() else {
                return LiveSettings {
                    anti_entropy_interval: Duration::ZERO,
                    anti_entropy_keys: 0,
                    stream_rate: 0,
                    request_timeout: Duration::from_secs(2),
                };
            };
            let config = server.config.read();
            LiveSettings {
                anti_entropy_interval: Duration::from_secs(config.cluster.anti_entropy_interval_s),
                anti_entropy_keys: config.cluster.anti_entropy_keys_per_pass,
                stream_rate: config.cluster.stream_rate,
                request_timeout: Duration::from_millis(config.cluster.request_timeout_ms),
            }
        }
    };
    let config = NodeConfig {
        id,
        bind: bind_addr,
        client_addr: format!("{bind}:{client_port}"),
        zone: settings.zone.clone(),
        dir: dir.clone(),
        replication: settings.replicas,
        sibling_cap: settings.sibling_cap,
        tombstone_grace_ms: settings.tombstone_grace_s.saturating_mul(1000),
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        hints,
        join,
        join_timeout: JOIN_TIMEOUT,
        transport,
        gossip: GossipConfig::default(),
        hint_interval: HINT_DELIVERY_INTERVAL,
        live: Arc::new(live),
        simulation: None,
        extension: None,
    };
    let node = ClusterNode::start(config, server.keyspace.clone()).await?;
    let _ = server.cluster.set(node.clone());
    Ok(node)
}

/// Where a node keeps the hints it holds for others, under its data directory.
const HINTS_DIR: &str = "hints";
/// How often a node looks for hints to hand off.
const HINT_DELIVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a joining node waits for the cluster to take it in.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The quorum a connection's operations use: its own (CLUSTER QUORUM), else the settings'.
pub(crate) fn quorum_of(server: &Server, client: &Client) -> Quorum {
    let (r, w, pw) = client.cluster_quorum.unwrap_or_else(|| {
        let config = server.config.read();
        (
            config.cluster.read_quorum,
            config.cluster.write_quorum,
            config.cluster.write_strict_quorum,
        )
    });
    Quorum { r, w, pw }
}

/// Up to `limit` live keys of `db` in `slot` in this node's store (CLUSTER
/// COUNTKEYSINSLOT / GETKEYSINSLOT): a scan of the database. A record whose copy here reads
/// as nothing (a delete's tombstone kept for its grace period, expired siblings) is left out.
pub(crate) fn local_keys_in_slot(
    keyspace: &ringkv_store::Keyspace,
    db: usize,
    slot: u16,
    limit: usize,
) -> CmdResult<Vec<Bytes>> {
    let now = keyspace.now_ms();
    let mut keys = Vec::new();
    for item in keyspace.range(db, Bound::Unbounded, Bound::Unbounded) {
        let (key, entry) = item?;
        if keys.len() >= limit {
            break;
        }
        if ringkv_cluster::key_slot(&key) != slot {
            continue;
        }
        let decoded = ringkv_store::value::decode_value(&entry.value)?;
        if decoded.value_type == ValueType::Record {
            let live = Record::decode(&entry.value[decoded.payload_at..])
                .ok()
                .and_then(|record| record.resolve(now).ok())
                .is_some_and(|resolved| resolved != Resolved::Absent);
            if !live {
                continue;
            }
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The data path of cluster mode: every operation goes to its keys' replicas.
pub(crate) struct Coordinated {
    pub node: Arc<ClusterNode>,
    pub quorum: Quorum,
}

impl Coordinated {
    pub(crate) fn new(server: &Server, client: &Client, node: Arc<ClusterNode>) -> Self {
        Self {
            quorum: quorum_of(server, client),
            node,
        }
    }
}

fn coord_error(error: CoordError) -> CmdError {
    match error {
        CoordError::Quorum(error) => CmdError::Message(format!("NOQUORUM {error}").into()),
        CoordError::Increment(IncrementError::NotInteger) => CmdError::NotInteger,
        CoordError::Increment(error) => CmdError::Message(format!("ERR {error}").into()),
        CoordError::Event(message) if message.contains("not an integer") => CmdError::NotInteger,
        CoordError::Event(message) => CmdError::Message(format!("ERR cluster: {message}").into()),
        CoordError::NoMap => CmdError::msg("CLUSTERDOWN the cluster map is not known yet"),
        error @ CoordError::Strict { .. } => CmdError::Message(format!("NOQUORUM {error}").into()),
    }
}

/// What a record reads as, in the single node's terms: a string (a counter reads as its
/// decimal value, as INCR's result does in Redis).
fn stored(resolved: Resolved) -> Option<StoredValue> {
    let (payload, expires_at_ms) = match resolved {
        Resolved::Absent => return None,
        Resolved::Value {
            value,
            expires_at_ms,
        } => (value, expires_at_ms),
        Resolved::Counter {
            value,
            expires_at_ms,
        } => (Bytes::from(value.to_string()), expires_at_ms),
    };
    Some(StoredValue {
        value_type: ValueType::String,
        raw: encode_value(ValueType::String, &payload),
        payload_at: 1,
        expires_at_ms,
        version: 0,
    })
}

/// Everything an operation needs on another task.
#[derive(Clone)]
pub(crate) struct Run {
    node: Arc<ClusterNode>,
    quorum: Quorum,
    db: usize,
}

impl Run {
    /// An operation of `client` on `db` through `node`.
    pub(crate) fn new(server: &Server, client: &Client, node: Arc<ClusterNode>, db: usize) -> Self {
        Self {
            quorum: quorum_of(server, client),
            node,
            db,
        }
    }

    /// The merged record of `key` (VGET).
    pub(crate) async fn read_record(&self, key: &Bytes) -> CmdResult<Record> {
        self.read(key).await
    }

    /// A write event as given (VSET).
    pub(crate) async fn write_event(&self, event: WriteEvent) -> CmdResult<bool> {
        self.write(event.key, event.context, event.body, event.expires_at_ms)
            .await
    }

    fn map(&self) -> CmdResult<Arc<ClusterMap>> {
        self.node
            .map()
            .ok_or_else(|| coord_error(CoordError::NoMap))
    }

    pub(crate) fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    async fn read(&self, key: &Bytes) -> CmdResult<Record> {
        let map = self.map()?;
        self.node
            .data
            .read(&map, self.db, key, self.quorum)
            .await
            .map_err(coord_error)
    }

    async fn get(&self, key: &Bytes) -> CmdResult<Option<StoredValue>> {
        let record = self.read(key).await?;
        let resolved = record
            .resolve(self.now_ms())
            .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
        Ok(stored(resolved))
    }

    async fn write(
        &self,
        key: Bytes,
        context: Option<ringkv_cluster::dvv::VersionVector>,
        body: Body,
        expires_at_ms: Option<u64>,
    ) -> CmdResult<bool> {
        let map = self.map()?;
        let event = WriteEvent {
            db: self.db,
            key,
            context,
            body,
            expires_at_ms,
        };
        let written = self
            .node
            .data
            .write(&map, event, self.quorum)
            .await
            .map_err(coord_error)?;
        Ok(written.existed)
    }

    /// A decide function's write as a record write: an expiry not in the future deletes.
    async fn apply_decision(
        &self,
        key: Bytes,
        context: ringkv_cluster::dvv::VersionVector,
        write: Option<(Bytes, Option<u64>)>,
    ) -> CmdResult<()> {
        let Some((raw, expires_at_ms)) = write else {
            return Ok(());
        };
        if expires_at_ms.is_some_and(|at| at <= self.now_ms()) {
            self.write(key, Some(context), Body::Tombstone, None)
                .await?;
            return Ok(());
        }
        let decoded = ringkv_store::value::decode_value(&raw)?;
        let payload = raw.slice(decoded.payload_at..);
        self.write(key, Some(context), Body::Value(payload), expires_at_ms)
            .await?;
        Ok(())
    }

    async fn run(self, op: Op) -> CmdResult<Done> {
        self.node.coordinated.fetch_add(1, Ordering::Relaxed);
        Ok(match op {
            Op::Get(key) => Done::Value(self.get(&key).await?),
            Op::GetMany { keys, bytes_max } => {
                let reads = keys.iter().map(|key| self.get(key));
                let values = join_all(reads).await;
                let mut out = Vec::with_capacity(values.len());
                let mut bytes = 0usize;
                for value in values {
                    let value = value?;
                    bytes = bytes.saturating_add(value.as_ref().map_or(0, |v| v.payload_len()));
                    if bytes_max != 0 && bytes > bytes_max {
                        return Err(CmdError::OutputLimit);
                    }
                    out.push(value);
                }
                Done::Values(out)
            }
            Op::Update(key, decide) => {
                let record = self.read(&key).await?;
                let resolved = record
                    .resolve(self.now_ms())
                    .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
                let current = stored(resolved);
                let (write, reply) = decide(current.as_ref())?;
                self.apply_decision(key, record.context(), write).await?;
                Done::Reply(reply)
            }
            Op::Increment {
                key,
                by,
                request_id,
                ..
            } => {
                let map = self.map()?;
                let request_id: u128 = request_id.unwrap_or_else(rand::random);
                let value = self
                    .node
                    .data
                    .increment(&map, self.db, &key, by, request_id, self.quorum)
                    .await
                    .map_err(coord_error)?;
                Done::Reply(Frame::Integer(value))
            }
            Op::Set(key, value, expires_at_ms) => {
                self.write(key, None, Body::Value(value), expires_at_ms)
                    .await?;
                Done::Written
            }
            Op::Put(items) => {
                // MSET: the keys of one slot as one batch, all slots at once
                // (docs/cluster.md, "What is atomic").
                let map = self.map()?;
                let (data, quorum) = (&self.node.data, self.quorum);
                let writes = by_slot(self.db, items).into_iter().map(|events| {
                    let map = map.clone();
                    async move {
                        match <[WriteEvent; 1]>::try_from(events) {
                            Ok([event]) => data.write(&map, event, quorum).await,
                            Err(events) => data
                                .write_many(&map, events, quorum)
                                .await
                                .map(|mut done| done.pop().expect("a batch is not empty")),
                        }
                        .map_err(coord_error)
                    }
                });
                for result in join_all(writes).await {
                    result?;
                }
                Done::Written
            }
            Op::PutIfAbsent(items) => {
                let reads = items.iter().map(|(key, _, _)| self.read(key));
                let mut contexts = Vec::with_capacity(items.len());
                for record in join_all(reads).await {
                    let record = record?;
                    let live = record
                        .resolve(self.now_ms())
                        .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
                    if live != Resolved::Absent {
                        return Ok(Done::Applied(false));
                    }
                    contexts.push(record.context());
                }
                let writes = items.into_iter().zip(contexts).map(
                    |((key, value, expires_at_ms), context)| {
                        self.write(key, Some(context), Body::Value(value), expires_at_ms)
                    },
                );
                for result in join_all(writes).await {
                    result?;
                }
                Done::Applied(true)
            }
            Op::Delete(mut keys) => {
                keys.sort();
                keys.dedup();
                let map = self.map()?;
                let (data, db, quorum) = (&self.node.data, self.db, self.quorum);
                let deletes = keys.iter().map(|key| data.delete(&map, db, key, quorum));
                let mut count = 0;
                for deleted in join_all(deletes).await {
                    count += i64::from(deleted.map_err(coord_error)?);
                }
                Done::Count(count)
            }
            Op::Exists(keys) => {
                let mut count = 0;
                for value in join_all(keys.iter().map(|key| self.get(key))).await {
                    count += i64::from(value?.is_some());
                }
                Done::Count(count)
            }
        })
    }
}

/// MSET's items as blind write events grouped by slot, each group at most
/// `MANY_KEYS_MAX` keys; a key given twice takes its last value, as in Redis.
fn by_slot(db: usize, items: Vec<(Bytes, Bytes, Option<u64>)>) -> Vec<Vec<WriteEvent>> {
    let mut last = HashMap::with_capacity(items.len());
    for (i, (key, _, _)) in items.iter().enumerate() {
        last.insert(key.clone(), i);
    }
    let mut slots: BTreeMap<u16, Vec<WriteEvent>> = BTreeMap::new();
    for (i, (key, value, expires_at_ms)) in items.into_iter().enumerate() {
        if last[&key] != i {
            continue;
        }
        slots.entry(key_slot(&key)).or_default().push(WriteEvent {
            db,
            key,
            context: None,
            body: Body::Value(value),
            expires_at_ms,
        });
    }
    slots
        .into_values()
        .flat_map(|mut events| {
            let mut groups = Vec::new();
            while events.len() > MANY_KEYS_MAX {
                let rest = events.split_off(MANY_KEYS_MAX);
                groups.push(std::mem::replace(&mut events, rest));
            }
            groups.push(events);
            groups
        })
        .collect()
}

impl DataPath for Coordinated {
    fn run(&self, db: usize, op: Op) -> Pending {
        let run = Run {
            node: self.node.clone(),
            quorum: self.quorum,
            db,
        };
        Pending::Later(Box::pin(run.run(op)))
    }

    fn run_in_place(&self, _db: usize, _op: Op) -> CmdResult<Done> {
        Err(CmdError::msg(
            "ERR MULTI/EXEC is not supported in cluster mode yet (docs/cluster.md)",
        ))
    }
}

/// The cluster address of the member whose client port is `seed` (`cluster-join`): asks it
/// `CLUSTER NODES` over RESP and reads its own line's `@cport`.
async fn seed_cluster_addr(seed: &str, timeout: Duration) -> std::io::Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(seed).await?;
        stream
            .write_all(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nNODES\r\n")
            .await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..read]);
            if nodes_reply_complete(&reply) {
                break;
            }
            if reply.len() > 1 << 20 {
                return Err(std::io::Error::other("CLUSTER NODES reply too long"));
            }
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(timeout, ask).await.map_err(|_| {
        std::io::Error::other(format!("{seed} did not answer CLUSTER NODES in time"))
    })??;
    let text = String::from_utf8_lossy(&reply);
    if let Some(error) = text.strip_prefix('-') {
        return Err(std::io::Error::other(format!(
            "{seed} refused CLUSTER NODES: {}",
            error.trim()
        )));
    }
    let line = text
        .lines()
        .find(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|flags| flags.contains("myself"))
        })
        .ok_or_else(|| std::io::Error::other(format!("{seed} is not a cluster member")))?;
    let addr = line.split(' ').nth(1).unwrap_or_default();
    let (client, cport) = addr
        .split_once('@')
        .ok_or_else(|| std::io::Error::other(format!("no cluster port in {addr:?}")))?;
    let host = client.rsplit_once(':').map_or(client, |(host, _)| host);
    format!("{host}:{cport}")
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad cluster address {host}:{cport}")))
}

/// Whether `reply` holds a whole RESP bulk string (or an error line).
fn nodes_reply_complete(reply: &[u8]) -> bool {
    if reply.first() == Some(&b'-') {
        return reply.ends_with(b"\r\n");
    }
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let len: usize = std::str::from_utf8(&reply[1..end])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    reply.len() >= end + 2 + len + 2
}
