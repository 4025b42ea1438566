//! The control plane's durable state: the Raft vote, the Raft log, the
//! applied state machine (the cluster map) and the last snapshot, each one
//! small file under the control directory (docs/cluster.md, "Control
//! plane", durability).
//!
//! Every change rewrites its whole file atomically: a temporary file is
//! written and fsynced, renamed over the old one, and the directory is
//! fsynced. Each file carries a magic, its length and a CRC32C of its body,
//! so a torn or damaged file is a clear [`ControlError::Corrupt`], never a
//! panic. The control log holds a few entries per topology change, so
//! rewriting it whole is cheap and keeps the format trivially correct.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::{Applied, ControlError, ControlRequest, TypeConfig};
use crate::map::ClusterMap;
use crate::NodeId;

/// Leads every control file; the last byte is the format version.
const MAGIC: &[u8; 8] = b"RKVCTL\x00\x01";
/// Magic, CRC32C of the body, body length.
const HEADER_BYTES: usize = 8 + 4 + 4;

pub(super) const VOTE_FILE: &str = "vote";
pub(super) const LOG_FILE: &str = "log";
pub(super) const STATE_FILE: &str = "state";
pub(super) const SNAPSHOT_FILE: &str = "snapshot";
pub(super) const NODE_FILE: &str = "node";

// Format of every file: [8 bytes MAGIC][u32 LE crc32c(body)][u32 LE body length][body]
// where body is the JSON of the file's record below.

/// Writes `value` to `dir/name` atomically (temp file, fsync, rename, fsync dir).
pub(super) fn write_file<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("control file too large"))?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&body);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Reads `dir/name`: `None` if it does not exist, an error naming the file
/// if it is damaged.
pub(super) fn read_file<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, ControlError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ControlError::Io(e)),
    };
    let corrupt = |reason: String| ControlError::Corrupt {
        path: path.clone(),
        reason,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic or format version".into()));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let body = &bytes[HEADER_BYTES..];
    if body.len() != len {
        return Err(corrupt(format!(
            "body is {} bytes, the header says {len}",
            body.len()
        )));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(format!("undecodable: {e}")))
}

/// Records that `dir` holds `node`'s state, or refuses if it holds
/// another node's.
pub(super) fn claim_dir(dir: &Path, node: NodeId) -> Result<(), ControlError> {
    match read_file::<NodeId>(dir, NODE_FILE)? {
        Some(found) if found != node => Err(ControlError::WrongNode {
            found,
            expected: node,
        }),
        Some(_) => Ok(()),
        None => Ok(write_file(dir, NODE_FILE, &node)?),
    }
}

fn write_error(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

// ---------------------------------------------------------------------------
// The log and the vote.

#[derive(Debug, Default, Serialize, Deserialize)]
struct LogRecord {
    last_purged: Option<LogId<NodeId>>,
    entries: Vec<Entry<TypeConfig>>,
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    vote: Option<Vote<NodeId>>,
    log: LogRecord,
}

impl LogInner {
    fn persist_log(&self) -> io::Result<()> {
        write_file(&self.dir, LOG_FILE, &self.log)
    }
}

/// The Raft log and vote, in `vote` and `log` under the control directory.
#[derive(Debug, Clone)]
pub(super) struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    pub(super) fn open(dir: &Path) -> Result<Self, ControlError> {
        let vote = read_file(dir, VOTE_FILE)?;
        let log: LogRecord = read_file(dir, LOG_FILE)?.unwrap_or_default();
        for pair in log.entries.windows(2) {
            if pair[1].log_id.index != pair[0].log_id.index + 1 {
                return Err(ControlError::Corrupt {
                    path: dir.join(LOG_FILE),
                    reason: "log entries are not consecutive".into(),
                });
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_owned(),
                vote,
                log,
            })),
        })
    }

    /// Whether anything was ever stored (a vote or a log entry).
    pub(super) async fn has_state(&self) -> bool {
        let inner = self.inner.lock().await;
        inner.vote.is_some() || !inner.log.entries.is_empty() || inner.log.last_purged.is_some()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .log
            .entries
            .iter()
            .filter(|entry| range.contains(&entry.log_id.index))
            .cloned()
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last_purged_log_id = inner.log.last_purged;
        let last_log_id = inner
            .log
            .entries
            .last()
            .map(|entry| entry.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_file(&inner.dir, VOTE_FILE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        for entry in entries {
            // openraft truncates conflicting entries before appending, so
            // an entry always lands right after the last one.
            let index = entry.log_id.index;
            inner.log.entries.retain(|old| old.log_id.index < index);
            inner.log.entries.push(entry);
        }
        let result = write_file(&inner.dir, LOG_FILE, &inner.log);
        let error = result
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match error {
            Some(e) => Err(write_error(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner
            .log
            .entries
            .retain(|entry| entry.log_id.index < log_id.index);
        inner.persist_log().map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner
            .log
            .entries
            .retain(|entry| entry.log_id.index > log_id.index);
        inner.log.last_purged = Some(log_id);
        inner.persist_log().map_err(write_error)
    }
}

// ---------------------------------------------------------------------------
// The state machine: one cluster map.

/// What the `state` file holds: the applied map and where it was applied.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct StateRecord {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// `ClusterMap::encode` of the applied map; `None` before `Found`.
    map: Option<Vec<u8>>,
}

/// A snapshot's data: the whole map (membership and position are in its
/// meta).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    map: Option<Vec<u8>>,
}

/// What the `snapshot` file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct SmInner {
    dir: PathBuf,
    state: StateRecord,
    snapshot: Option<SnapshotRecord>,
    snapshot_seq: u64,
}

/// The Raft state machine: the applied cluster map, in `state` and
/// `snapshot` under the control directory, published on a watch channel.
#[derive(Clone)]
pub(super) struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    maps: Arc<watch::Sender<Option<Arc<ClusterMap>>>>,
}

fn decode_map(bytes: &[u8], path: &Path) -> Result<ClusterMap, ControlError> {
    ClusterMap::decode(bytes).map_err(|e| ControlError::Corrupt {
        path: path.to_owned(),
        reason: format!("bad cluster map: {e}"),
    })
}

impl StateMachine {
    pub(super) fn open(dir: &Path) -> Result<Self, ControlError> {
        let state: StateRecord = read_file(dir, STATE_FILE)?.unwrap_or_default();
        let snapshot: Option<SnapshotRecord> = read_file(dir, SNAPSHOT_FILE)?;
        let map = match &state.map {
            Some(bytes) => Some(Arc::new(decode_map(bytes, &dir.join(STATE_FILE))?)),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_owned(),
                state,
                snapshot,
                snapshot_seq: 0,
            })),
            maps: Arc::new(watch::Sender::new(map)),
        })
    }

    pub(super) fn maps(&self) -> Arc<watch::Sender<Option<Arc<ClusterMap>>>> {
        self.maps.clone()
    }
}

/// Applies one map change to `current`, deterministically: the same map
/// and entry give the same bytes on every node.
fn apply_request(
    current: Option<&ClusterMap>,
    request: &ControlRequest,
) -> Result<ClusterMap, String> {
    match (request, current) {
        (
            ControlRequest::Found {
                member,
                replication,
            },
            None,
        ) => ClusterMap::founded_by(member.to_info(), *replication).map_err(|e| e.to_string()),
        (ControlRequest::Found { .. }, Some(_)) => Err("the cluster is already founded".into()),
        (ControlRequest::AddMember(member), Some(map)) => {
            map.with_member(member.to_info()).map_err(|e| e.to_string())
        }
        (ControlRequest::RemoveMember(node), Some(map)) => {
            map.without_member(*node).map_err(|e| e.to_string())
        }
        (ControlRequest::Leave(node), Some(map)) => {
            map.with_leaving(*node).map_err(|e| e.to_string())
        }
        (ControlRequest::Ready { node, started }, Some(map)) => {
            map.with_ready(*node, *started).map_err(|e| e.to_string())
        }
        (_, None) => Err("the cluster is not founded yet".into()),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let data = serde_json::to_vec(&SnapshotBody {
            map: inner.state.map.clone(),
        })
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        inner.snapshot_seq += 1;
        let snapshot_id = match inner.state.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, inner.snapshot_seq),
            None => format!("--{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.state.last_applied,
            last_membership: inner.state.membership.clone(),
            snapshot_id,
        };
        let record = SnapshotRecord {
            meta: meta.clone(),
            data: data.clone(),
        };
        write_file(&inner.dir, SNAPSHOT_FILE, &record)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        inner.snapshot = Some(record);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(io::Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let inner = self.inner.lock().await;
        Ok((inner.state.last_applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut map = self.maps.borrow().clone();
        let mut replies = Vec::new();
        for entry in entries {
            inner.state.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Membership(membership) => {
                    inner.state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::Nothing
                }
                EntryPayload::Normal(request) => match apply_request(map.as_deref(), &request) {
                    Ok(next) => {
                        let bytes = next.encode();
                        inner.state.map = Some(bytes.clone());
                        map = Some(Arc::new(next));
                        Applied::Map(bytes)
                    }
                    Err(reason) => Applied::Refused(reason),
                },
            };
            replies.push(reply);
        }
        write_file(&inner.dir, STATE_FILE, &inner.state)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let changed = {
            let current = self.maps.borrow();
            match (&*current, &map) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, None) => false,
                _ => true,
            }
        };
        if changed {
            self.maps.send_replace(map);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<io::Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let read_error = |reason: String| -> StorageError<NodeId> {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(reason)).into()
        };
        let body: SnapshotBody =
            serde_json::from_slice(&data).map_err(|e| read_error(e.to_string()))?;
        let map = match &body.map {
            Some(bytes) => Some(Arc::new(
                ClusterMap::decode(bytes).map_err(|e| read_error(e.to_string()))?,
            )),
            None => None,
        };
        let mut inner = self.inner.lock().await;
        // The state first: a crash between the two writes leaves a state
        // newer than the stored snapshot, which is harmless; the other way
        // round would leave a snapshot ahead of the applied state.
        inner.state = StateRecord {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            map: body.map,
        };
        write_file(&inner.dir, STATE_FILE, &inner.state)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            data,
        };
        write_file(&inner.dir, SNAPSHOT_FILE, &record)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        inner.snapshot = Some(record);
        self.maps.send_replace(map);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|record| Snapshot {
            meta: record.meta.clone(),
            snapshot: Box::new(io::Cursor::new(record.data.clone())),
        }))
    }
}
