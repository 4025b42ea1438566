//! The cluster map: who the members are, where each one listens, its zone and
//! state, every slot's replica list, the change in progress (the replica lists
//! the slots move to, and which new replicas have their data), and the epoch
//! that rises with each change (docs/cluster.md, "Control plane", "Joins and
//! leaves").
//!
//! The map is what the control plane commits: each change is computed by the
//! Raft leader from the previous map ([`ClusterMap::with_member`],
//! [`ClusterMap::without_member`]), committed as a whole, and applied the same
//! way on every node. The data plane reads it to route a key: slot, then the
//! slot's replicas, then their addresses. It is a plain value: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::codec::{put_varint, Reader};
use crate::plan::{plan, Assignment, Member, PlanError};
use crate::{DecodeError, NodeId};

/// Format version byte leading an encoded [`ClusterMap`]: 2 adds the change in progress.
const FORMAT_VERSION: u8 = 2;
/// The format before changes were staged (read, never written).
const FORMAT_VERSION_1: u8 = 1;

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
    /// A readiness names a change that is no longer the one in progress.
    #[error("no change started at epoch {0} is in progress")]
    NoSuchChange(u64),
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
    /// Every slot's replica list: where reads go, and the first set a write
    /// needs W acknowledgements in.
    pub assignment: Assignment,
    /// The change in progress (a join or a leave), if any.
    pub change: Option<Change>,
}

/// A membership change in progress (docs/cluster.md, "Joins and leaves"). Until it
/// completes, a write goes to the replicas of both assignments and needs W acknowledgements
/// in each; reads stay on the current one. Each node that gains a slot streams it from a
/// current replica and then says so ([`ClusterMap::with_ready`]); when every such node has,
/// the target becomes the assignment in one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The epoch the change (as it stands) was made at: a readiness names it, so that a
    /// node that streamed for an earlier target does not count for a later one.
    pub started: u64,
    /// Every slot's replica list once the change completes.
    pub target: Assignment,
    /// The nodes that have streamed every slot they gain.
    pub ready: BTreeSet<NodeId>,
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
            change: None,
        })
    }

    /// The map after `joining` joins: the slots it is to hold (as few moves as balance
    /// needs) become the change's target; the current lists stay until the new replicas
    /// have streamed their data. The epoch one higher.
    pub fn with_member(&self, joining: MemberInfo) -> Result<Self, MapError> {
        check_names(&joining)?;
        if self.members.contains_key(&joining.node) {
            return Err(MapError::AlreadyMember(joining.node));
        }
        let mut next = self.clone();
        next.members.insert(joining.node, joining);
        next.retarget()?;
        Ok(next)
    }

    /// The map after `node` asked to leave: it is marked leaving and the target hands its
    /// slots to the others; it stays a replica of its slots (reads, and the current set of
    /// writes) until they have streamed them, and leaves the map when the change completes.
    pub fn with_leaving(&self, node: NodeId) -> Result<Self, MapError> {
        let member = self.members.get(&node).ok_or(MapError::NotMember(node))?;
        if member.state == MemberState::Leaving {
            return Ok(self.clone());
        }
        let staying = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Up)
            .count();
        if staying <= 1 {
            return Err(MapError::LastMember);
        }
        let mut next = self.clone();
        if let Some(member) = next.members.get_mut(&node) {
            member.state = MemberState::Leaving;
        }
        next.retarget()?;
        Ok(next)
    }

    /// The map after `node` is removed at once (a dead node, `CLUSTER FORGET`): its slots
    /// are handed to the others in the current lists and the target alike, without
    /// streaming (anti-entropy refills the new replicas). The epoch one higher.
    pub fn without_member(&self, node: NodeId) -> Result<Self, MapError> {
        if !self.members.contains_key(&node) {
            return Err(MapError::NotMember(node));
        }
        if self.members.len() == 1 {
            return Err(MapError::LastMember);
        }
        let mut next = self.clone();
        next.members.remove(&node);
        let all: Vec<Member> = next.members.values().map(planner_member).collect();
        next.assignment = plan(&all, self.replication, Some(&self.assignment))?;
        if next.change.is_some() {
            next.retarget()?;
        } else {
            next.epoch += 1;
        }
        Ok(next)
    }

    /// The map after `node` has streamed every slot it gains in the change started at
    /// `started`: when it is the last such node, the change completes (the target becomes
    /// the assignment, and members that left are dropped). Repeating it changes nothing.
    pub fn with_ready(&self, node: NodeId, started: u64) -> Result<Self, MapError> {
        let Some(change) = &self.change else {
            return Err(MapError::NoSuchChange(started));
        };
        if change.started != started {
            return Err(MapError::NoSuchChange(started));
        }
        if change.ready.contains(&node) {
            return Ok(self.clone());
        }
        let mut next = self.clone();
        next.epoch += 1;
        if let Some(change) = &mut next.change {
            change.ready.insert(node);
        }
        if next.gainers().iter().all(|n| next.is_ready(*n)) {
            next.complete();
        }
        Ok(next)
    }

    /// Sets the change's target from the members (leaving ones hold nothing in it), and
    /// raises the epoch. A change already in progress is replaced by one towards the new
    /// target (its readiness starts again); a target equal to the assignment is no change.
    fn retarget(&mut self) -> Result<(), MapError> {
        let staying: Vec<Member> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Up)
            .map(planner_member)
            .collect();
        let previous = self.change.as_ref().map_or(&self.assignment, |c| &c.target);
        let target = plan(&staying, self.replication, Some(previous))?;
        self.epoch += 1;
        self.change = Some(Change {
            started: self.epoch,
            target,
            ready: BTreeSet::new(),
        });
        if self.gainers().is_empty() {
            self.complete();
        }
        Ok(())
    }

    /// The change's target becomes the assignment; leaving members go.
    fn complete(&mut self) {
        if let Some(change) = self.change.take() {
            self.assignment = change.target;
        }
        self.members.retain(|_, m| m.state == MemberState::Up);
    }

    /// The nodes that gain a slot in the change in progress (each must stream it first).
    pub fn gainers(&self) -> BTreeSet<NodeId> {
        let Some(change) = &self.change else {
            return BTreeSet::new();
        };
        let mut gainers = BTreeSet::new();
        for slot in 0..crate::SLOT_COUNT {
            let current = self.assignment.replicas(slot);
            for node in change.target.replicas(slot) {
                if !current.contains(node) {
                    gainers.insert(*node);
                }
            }
        }
        gainers
    }

    /// The slots `node` gains in the change in progress, each with its current replicas
    /// (where to stream it from).
    pub fn gains(&self, node: NodeId) -> Vec<u16> {
        let Some(change) = &self.change else {
            return Vec::new();
        };
        (0..crate::SLOT_COUNT)
            .filter(|&slot| {
                change.target.replicas(slot).contains(&node)
                    && !self.assignment.replicas(slot).contains(&node)
            })
            .collect()
    }

    /// Whether `node` has said it streamed what it gains in the change in progress.
    pub fn is_ready(&self, node: NodeId) -> bool {
        self.change
            .as_ref()
            .is_some_and(|change| change.ready.contains(&node))
    }

    /// The replicas a change adds to `slot`'s writes: in the target, not in the current
    /// list (empty when there is no change, or it leaves `slot` as it is).
    pub fn pending(&self, slot: u16) -> Vec<NodeId> {
        match &self.change {
            None => Vec::new(),
            Some(change) => {
                let current = self.assignment.replicas(slot);
                change
                    .target
                    .replicas(slot)
                    .iter()
                    .copied()
                    .filter(|node| !current.contains(node))
                    .collect()
            }
        }
    }

    /// `slot`'s replicas in the change's target, if a change moves it.
    pub fn target_replicas(&self, slot: u16) -> Option<&[NodeId]> {
        let change = self.change.as_ref()?;
        let target = change.target.replicas(slot);
        (target != self.assignment.replicas(slot)).then_some(target)
    }

    /// Whether `node` keeps data of `slot`: a current replica, or one the change adds.
    pub fn keeps(&self, node: NodeId, slot: u16) -> bool {
        self.holds(node, slot)
            || self
                .change
                .as_ref()
                .is_some_and(|change| change.target.replicas(slot).contains(&node))
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

    // Format: [u8 version=2][varint epoch][u8 replication][varint member count]
    //   {[varint node][str client][str cluster][str zone][u8 state]}* ascending by node
    //   [varint assignment length][assignment bytes]
    //   [u8 0 | 1 [varint started][varint ready count]{[varint node]}*
    //            [varint target length][target bytes]]
    // where str is [varint length][bytes]. Version 1 ends after the assignment.
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
        match &self.change {
            None => out.push(0),
            Some(change) => {
                out.push(1);
                put_varint(&mut out, change.started);
                put_varint(&mut out, change.ready.len() as u64);
                for node in &change.ready {
                    put_varint(&mut out, *node);
                }
                let target = change.target.encode();
                put_varint(&mut out, target.len() as u64);
                out.extend_from_slice(&target);
            }
        }
        out
    }

    /// Decodes [`ClusterMap::encode`]'s output. Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let version = input.first().copied();
        let mut reader = Reader::new(input);
        if version == Some(FORMAT_VERSION_1) {
            reader.version(FORMAT_VERSION_1)?;
        } else {
            reader.version(FORMAT_VERSION)?;
        }
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
        let change = if version == Some(FORMAT_VERSION_1) || reader.u8()? == 0 {
            None
        } else {
            let started = reader.varint()?;
            let count = reader.count(1)?;
            let mut ready = BTreeSet::new();
            for _ in 0..count {
                ready.insert(reader.varint()?);
            }
            let len = reader.varint()? as usize;
            let target = Assignment::decode(reader.bytes(len)?)?;
            Some(Change {
                started,
                target,
                ready,
            })
        };
        reader.finish()?;
        let assignments = std::iter::once(&assignment).chain(change.as_ref().map(|c| &c.target));
        for assignment in assignments {
            if assignment.replication() > replication.min(members.len()) {
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
        }
        Ok(Self {
            epoch,
            replication,
            members,
            assignment,
            change,
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

    /// Every gainer of the change in progress says it streamed its slots.
    fn settled(mut map: ClusterMap) -> ClusterMap {
        if let Some(started) = map.change.as_ref().map(|c| c.started) {
            for node in map.gainers() {
                map = map.with_ready(node, started).unwrap();
            }
        }
        assert!(
            map.change.is_none(),
            "the change completes with its last gainer"
        );
        map
    }

    #[test]
    fn grows_and_shrinks_through_staged_changes() {
        let one = ClusterMap::founded_by(member(1), 3).unwrap();
        assert_eq!(one.epoch, 1);
        assert_eq!(one.replicas(0), &[1]);
        let two = settled(one.with_member(member(2)).unwrap());
        let three = settled(two.with_member(member(3)).unwrap());
        assert_eq!(three.epoch, 5, "a join and a readiness each");
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
        assert_eq!(back.epoch, 6, "a removal is at once");
        assert!(back.change.is_none());
        assert!((0..crate::SLOT_COUNT).all(|slot| !back.holds(2, slot)));
        assert_eq!(
            one.without_member(1),
            Err(MapError::LastMember),
            "the last member stays"
        );
        assert_eq!(one.with_leaving(1), Err(MapError::LastMember));
    }

    #[test]
    fn a_join_adds_its_replicas_to_writes_first_and_to_reads_when_they_are_ready() {
        let three = settled(
            settled(
                ClusterMap::founded_by(member(1), 3)
                    .unwrap()
                    .with_member(member(2))
                    .unwrap(),
            )
            .with_member(member(3))
            .unwrap(),
        );
        let joining = three.with_member(member(4)).unwrap();
        let change = joining.change.clone().expect("a change in progress");
        assert_eq!(change.started, joining.epoch);
        assert_eq!(joining.gainers(), BTreeSet::from([4]));
        let gains = joining.gains(4);
        assert!(!gains.is_empty() && gains.len() < usize::from(crate::SLOT_COUNT));
        for &slot in &gains {
            assert_eq!(joining.replicas(slot), three.replicas(slot), "reads stay");
            assert_eq!(joining.pending(slot), vec![4]);
            assert!(joining.keeps(4, slot) && !joining.holds(4, slot));
            assert!(joining.target_replicas(slot).unwrap().contains(&4));
        }
        // A slot the join leaves alone has no target of its own.
        let still = (0..crate::SLOT_COUNT)
            .find(|s| !gains.contains(s) && change.target.replicas(*s) == three.replicas(*s))
            .unwrap();
        assert!(joining.target_replicas(still).is_none());
        // A readiness for another change is refused; a repeated one changes nothing.
        assert_eq!(
            joining.with_ready(4, change.started - 1),
            Err(MapError::NoSuchChange(change.started - 1))
        );
        let done = joining.with_ready(4, change.started).unwrap();
        assert!(done.change.is_none());
        assert_eq!(done.epoch, joining.epoch + 1);
        for &slot in &gains {
            assert!(done.holds(4, slot));
            assert_eq!(done.replicas(slot).len(), 3);
        }
        // Only the new node's share moved.
        assert_eq!(done.assignment.moves_from(&three.assignment), gains.len());
    }

    #[test]
    fn a_leave_keeps_the_member_until_its_slots_are_streamed() {
        let mut map = ClusterMap::founded_by(member(1), 2).unwrap();
        for node in 2..=4 {
            map = settled(map.with_member(member(node)).unwrap());
        }
        let before = map.clone();
        let leaving = map.with_leaving(3).unwrap();
        assert_eq!(leaving.member(3).unwrap().state, MemberState::Leaving);
        assert_eq!(
            leaving.with_leaving(3).unwrap(),
            leaving,
            "asked twice: the same"
        );
        let held: Vec<u16> = (0..crate::SLOT_COUNT)
            .filter(|&s| before.holds(3, s))
            .collect();
        for &slot in &held {
            assert!(leaving.holds(3, slot), "it still serves its slots");
            assert!(!leaving.target_replicas(slot).unwrap().contains(&3));
        }
        assert!(!leaving.gainers().contains(&3));
        // A node that joins meanwhile retargets the change: readiness starts again.
        let started = leaving.change.as_ref().unwrap().started;
        let first = *leaving.gainers().iter().next().unwrap();
        let partly = leaving.with_ready(first, started).unwrap();
        if partly.change.is_some() {
            let retargeted = partly.with_member(member(5)).unwrap();
            let change = retargeted.change.as_ref().unwrap();
            assert_eq!(change.started, retargeted.epoch);
            assert!(change.ready.is_empty(), "readiness starts again");
            assert_eq!(
                retargeted.with_ready(first, started),
                Err(MapError::NoSuchChange(started))
            );
            let done = settled(retargeted);
            assert!(done.member(3).is_none() && done.member(5).is_some());
        }
        let done = settled(leaving);
        assert!(
            done.member(3).is_none(),
            "it leaves the map when the change completes"
        );
        assert!((0..crate::SLOT_COUNT).all(|s| !done.holds(3, s) && done.replicas(s).len() == 2));
        // Every slot it held moved to exactly one new node.
        assert_eq!(done.assignment.moves_from(&before.assignment), held.len());
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let map = ClusterMap::founded_by(member(1), 3)
            .unwrap()
            .with_member(member(2))
            .unwrap();
        assert!(map.change.is_some());
        let bytes = map.encode();
        assert_eq!(ClusterMap::decode(&bytes).unwrap(), map);
        let settled = settled(map.clone());
        assert_eq!(ClusterMap::decode(&settled.encode()).unwrap(), settled);
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
