//! The cluster map: who the members are, where each one listens, its zone and
//! state, every slot's replica list, and the epoch that rises with each change
//! (docs/cluster.md, "Control plane").
//!
//! The map is what the control plane commits: each change is computed by the
//! Raft leader from the previous map ([`ClusterMap::with_member`],
//! [`ClusterMap::without_member`]), committed as a whole, and applied the same
//! way on every node. The data plane reads it to route a key: slot, then the
//! slot's replicas, then their addresses. It is a plain value: no I/O.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::codec::{put_varint, Reader};
use crate::plan::{plan, Assignment, Member, PlanError};
use crate::{DecodeError, NodeId};

/// Format version byte leading an encoded [`ClusterMap`].
const FORMAT_VERSION: u8 = 1;

/// Longest address or zone name kept in a map.
pub const MAX_NAME_BYTES: usize = 255;

/// A member's state in the map. Only the control plane changes it; liveness
/// (up or down right now) is gossip's, not the map's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Holds slots and serves them.
    Up,
    /// Asked to leave: its slots are being handed to the others.
    Leaving,
}

impl MemberState {
    fn code(self) -> u8 {
        match self {
            MemberState::Up => 1,
            MemberState::Leaving => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(MemberState::Up),
            2 => Ok(MemberState::Leaving),
            _ => Err(DecodeError::Invalid("unknown member state")),
        }
    }

    /// The name CLUSTER NODES and `ringkv cluster status` print.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Leaving => "leaving",
        }
    }
}

/// One member as the map knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The node's id.
    pub node: NodeId,
    /// Where clients reach it: `host:port` of the RESP listener.
    pub client_addr: String,
    /// Where other nodes reach it: `host:port` of the internode listener.
    pub cluster_addr: String,
    /// Its failure domain.
    pub zone: String,
    /// Its state.
    pub state: MemberState,
}

/// Why a map change could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    /// The node is already a member.
    #[error("node {0:016x} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a member.
    #[error("node {0:016x} is not a member")]
    NotMember(NodeId),
    /// The last member cannot leave.
    #[error("the last member cannot leave the cluster")]
    LastMember,
    /// An address or zone is empty or too long.
    #[error("{0} must be 1 to 255 bytes")]
    BadName(&'static str),
    /// Slot planning refused the member set.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// The cluster map at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// Rises by one with every committed change; every internode request
    /// carries it.
    pub epoch: u64,
    /// N: copies of each slot wanted (fewer while there are fewer members).
    pub replication: usize,
    /// The members by id.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Every slot's replica list.
    pub assignment: Assignment,
}

impl ClusterMap {
    /// A one-node cluster: `founder` holds every slot, epoch 1.
    pub fn founded_by(founder: MemberInfo, replication: usize) -> Result<Self, MapError> {
        check_names(&founder)?;
        let assignment = plan(&[planner_member(&founder)], replication, None)?;
        Ok(Self {
            epoch: 1,
            replication,
            members: BTreeMap::from([(founder.node, founder)]),
            assignment,
        })
    }

    /// The map after `joining` joins: slots replanned with as few moves as
    /// balance needs, the epoch one higher.
    pub fn with_member(&self, joining: MemberInfo) -> Result<Self, MapError> {
        check_names(&joining)?;
        if self.members.contains_key(&joining.node) {
            return Err(MapError::AlreadyMember(joining.node));
        }
        let mut members = self.members.clone();
        members.insert(joining.node, joining);
        self.replanned(members)
    }

    /// The map after `node` left: its slots handed to the others, the epoch
    /// one higher.
    pub fn without_member(&self, node: NodeId) -> Result<Self, MapError> {
        if !self.members.contains_key(&node) {
            return Err(MapError::NotMember(node));
        }
        if self.members.len() == 1 {
            return Err(MapError::LastMember);
        }
        let mut members = self.members.clone();
        members.remove(&node);
        self.replanned(members)
    }

    fn replanned(&self, members: BTreeMap<NodeId, MemberInfo>) -> Result<Self, MapError> {
        let planned: Vec<Member> = members.values().map(planner_member).collect();
        let assignment = plan(&planned, self.replication, Some(&self.assignment))?;
        Ok(Self {
            epoch: self.epoch + 1,
            replication: self.replication,
            members,
            assignment,
        })
    }

    /// The replicas of `slot`, in preference order.
    pub fn replicas(&self, slot: u16) -> &[NodeId] {
        self.assignment.replicas(slot)
    }

    /// The member `node`, if it is one.
    pub fn member(&self, node: NodeId) -> Option<&MemberInfo> {
        self.members.get(&node)
    }

    /// Whether `node` holds a copy of `slot`.
    pub fn holds(&self, node: NodeId, slot: u16) -> bool {
        self.replicas(slot).contains(&node)
    }

    // Format: [u8 version=1][varint epoch][u8 replication][varint member count]
    //   {[varint node][str client][str cluster][str zone][u8 state]}* ascending by node
    //   [varint assignment length][assignment bytes]
    // where str is [varint length][bytes].
    /// Compact binary form, what the control plane commits and ships.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.epoch);
        out.push(self.replication as u8);
        put_varint(&mut out, self.members.len() as u64);
        for member in self.members.values() {
            put_varint(&mut out, member.node);
            for text in [&member.client_addr, &member.cluster_addr, &member.zone] {
                put_varint(&mut out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
            out.push(member.state.code());
        }
        let assignment = self.assignment.encode();
        put_varint(&mut out, assignment.len() as u64);
        out.extend_from_slice(&assignment);
        out
    }

    /// Decodes [`ClusterMap::encode`]'s output. Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(input);
        reader.version(FORMAT_VERSION)?;
        let epoch = reader.varint()?;
        let replication = reader.u8()? as usize;
        // A member takes at least 1 + 3 + 1 bytes.
        let count = reader.count(5)?;
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let node = reader.varint()?;
            let mut text = || -> Result<String, DecodeError> {
                let len = reader.varint()? as usize;
                if len > MAX_NAME_BYTES {
                    return Err(DecodeError::Invalid("name too long"));
                }
                String::from_utf8(reader.bytes(len)?.to_vec())
                    .map_err(|_| DecodeError::Invalid("name is not UTF-8"))
            };
            let client_addr = text()?;
            let cluster_addr = text()?;
            let zone = text()?;
            let state = MemberState::from_code(reader.u8()?)?;
            let member = MemberInfo {
                node,
                client_addr,
                cluster_addr,
                zone,
                state,
            };
            if members.insert(node, member).is_some() {
                return Err(DecodeError::Invalid("duplicate member"));
            }
        }
        let len = reader.varint()? as usize;
        let assignment = Assignment::decode(reader.bytes(len)?)?;
        reader.finish()?;
        if assignment.replication() != replication.min(members.len()) {
            return Err(DecodeError::Invalid("replication does not match the slots"));
        }
        for slot in 0..crate::SLOT_COUNT {
            if assignment
                .replicas(slot)
                .iter()
                .any(|node| !members.contains_key(node))
            {
                return Err(DecodeError::Invalid(
                    "a slot names a node that is no member",
                ));
            }
        }
        Ok(Self {
            epoch,
            replication,
            members,
            assignment,
        })
    }
}

fn planner_member(info: &MemberInfo) -> Member {
    Member {
        node: info.node,
        zone: info.zone.clone(),
    }
}

fn check_names(info: &MemberInfo) -> Result<(), MapError> {
    for (what, text) in [
        ("client address", &info.client_addr),
        ("cluster address", &info.cluster_addr),
        ("zone", &info.zone),
    ] {
        if text.is_empty() || text.len() > MAX_NAME_BYTES {
            return Err(MapError::BadName(what));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(node: NodeId) -> MemberInfo {
        MemberInfo {
            node,
            client_addr: format!("127.0.0.1:{}", 7000 + node),
            cluster_addr: format!("127.0.0.1:{}", 17000 + node),
            zone: format!("z{}", node % 3),
            state: MemberState::Up,
        }
    }

    #[test]
    fn grows_and_shrinks_one_epoch_per_change() {
        let one = ClusterMap::founded_by(member(1), 3).unwrap();
        assert_eq!(one.epoch, 1);
        assert_eq!(one.replicas(0), &[1]);
        let two = one.with_member(member(2)).unwrap();
        let three = two.with_member(member(3)).unwrap();
        assert_eq!(three.epoch, 3);
        for slot in [0, 5000, 16383] {
            let mut replicas = three.replicas(slot).to_vec();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3]);
        }
        assert_eq!(
            three.with_member(member(2)),
            Err(MapError::AlreadyMember(2))
        );
        let back = three.without_member(2).unwrap();
        assert_eq!(back.epoch, 4);
        assert!((0..crate::SLOT_COUNT).all(|slot| !back.holds(2, slot)));
        assert_eq!(
            one.without_member(1),
            Err(MapError::LastMember),
            "the last member stays"
        );
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let map = ClusterMap::founded_by(member(1), 3)
            .unwrap()
            .with_member(member(2))
            .unwrap();
        let bytes = map.encode();
        assert_eq!(ClusterMap::decode(&bytes).unwrap(), map);
        assert!(ClusterMap::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(ClusterMap::decode(&wrong).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClusterMap::decode(&bytes);
        }
    }
}
