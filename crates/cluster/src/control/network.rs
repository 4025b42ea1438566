//! openraft's network over the internode transport: each Raft RPC is one
//! transport request of its own kind, its payload the JSON of openraft's
//! request, the reply the JSON of openraft's result (docs/cluster.md,
//! "Control plane").

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{TypeConfig, KIND_APPEND, KIND_SNAPSHOT, KIND_VOTE};
use crate::transport::{CallError, Transport};
use crate::NodeId;

/// Makes one [`Connection`] per Raft peer; all share the node's transport
/// (and so its connection pool).
#[derive(Clone)]
pub(super) struct Network {
    pub(super) transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
            addr: node.addr.parse().map_err(|_| node.addr.clone()),
        }
    }
}

/// The way to one Raft peer.
pub(super) struct Connection {
    transport: Transport,
    target: NodeId,
    /// The peer's cluster address, or the text that did not parse as one.
    addr: Result<SocketAddr, String>,
}

/// A transport failure as openraft's network error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

impl Connection {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: u8,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = match &self.addr {
            Ok(addr) => *addr,
            Err(text) => {
                let e = WireError(format!("bad cluster address {text:?}"));
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        };
        let payload =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // At least a second: openraft's TTLs follow the heartbeat, and a
        // loaded machine must not turn every slow reply into an error.
        let timeout = timeout.max(Duration::from_secs(1));
        let reply = self
            .transport
            .call(addr, kind, Bytes::from(payload), timeout)
            .await;
        let (_, body) = match reply {
            Ok(reply) => reply,
            // Unreachable: openraft backs off (500 ms) before trying again; a network
            // error would be retried at once, a busy loop of connects to a dead peer
            // (the simulation ran out of ports).
            Err(e @ (CallError::ConnectFailed(_) | CallError::ShutDown)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(KIND_APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(KIND_SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(KIND_VOTE, &rpc, option.hard_ttl()).await
    }
}
