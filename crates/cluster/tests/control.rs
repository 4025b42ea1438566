//! The control plane over real transports on 127.0.0.1 (docs/cluster.md,
//! "Control plane (Raft, openraft)"): founding, joining, the voter cap, a
//! leader's loss, restarts, and damaged durable files. Every test stops
//! what it started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_cluster::control::{ControlConfig, ControlError, ControlPlane, CONTROL_KINDS};
use ringkv_cluster::frame::ClusterSecret;
use ringkv_cluster::map::{ClusterMap, MemberInfo, MemberState};
use ringkv_cluster::transport::{BoxFuture, Handler, HandlerError, Transport, TransportConfig};
use ringkv_cluster::{NodeId, SLOT_COUNT};

const SECRET: &[u8] = b"the cluster secret for the tests";
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(20);

/// The node's transport handler: control kinds go to the control plane
/// (set once it is open), which also gives the epoch.
#[derive(Default)]
struct NodeHandler {
    plane: OnceLock<ControlPlane>,
}

impl Handler for NodeHandler {
    fn handle(
        &self,
        from: NodeId,
        kind: u8,
        _epoch: u64,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(u8, Bytes), HandlerError>> {
        let plane = self.plane.get().cloned();
        Box::pin(async move {
            match plane {
                Some(plane) if CONTROL_KINDS.contains(&kind) => {
                    plane.handle(from, kind, payload).await
                }
                Some(_) => Err(HandlerError::new(format!("unknown kind {kind}"))),
                None => Err(HandlerError::new("the control plane is not open yet")),
            }
        })
    }

    fn epoch(&self) -> u64 {
        self.plane.get().map_or(0, ControlPlane::epoch)
    }

    fn fenced(&self, kind: u8) -> bool {
        !CONTROL_KINDS.contains(&kind)
    }
}

struct Node {
    id: NodeId,
    dir: PathBuf,
    transport: Transport,
    plane: ControlPlane,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    async fn stop(&self) {
        self.plane.shutdown().await;
        self.transport.shutdown().await;
    }
}

fn member(id: NodeId, cluster_addr: SocketAddr) -> MemberInfo {
    MemberInfo {
        node: id,
        client_addr: format!("127.0.0.1:{}", 7000 + id),
        cluster_addr: cluster_addr.to_string(),
        zone: format!("zone-{}", id % 3),
        state: MemberState::Up,
    }
}

/// Binds a transport on `addr` and opens the control plane in `dir`.
async fn try_start(id: NodeId, dir: &Path, addr: SocketAddr) -> Result<Node, ControlError> {
    let handler = Arc::new(NodeHandler::default());
    let mut config = TransportConfig::new(id, ClusterSecret::new(SECRET).unwrap());
    config.handshake_timeout = Duration::from_secs(2);
    let transport = Transport::bind(addr, config, handler.clone())
        .await
        .expect("bind the transport");
    let config = ControlConfig {
        me: member(id, transport.local_addr()),
        dir: dir.to_owned(),
        replication: 3,
        simulated: false,
    };
    match ControlPlane::open(config, transport.clone()).await {
        Ok(plane) => {
            handler.plane.set(plane.clone()).expect("set once");
            Ok(Node {
                id,
                dir: dir.to_owned(),
                transport,
                plane,
            })
        }
        Err(e) => {
            transport.shutdown().await;
            Err(e)
        }
    }
}

async fn start(id: NodeId, root: &Path) -> Node {
    let dir = root.join(format!("node-{id}"));
    try_start(id, &dir, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("open the control plane")
}

/// Polls `check` until it holds or `WAIT` passes.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has applied a map of `epoch`, and checks the
/// maps are byte-identical; returns it.
async fn converged(nodes: &[&Node], epoch: u64) -> Arc<ClusterMap> {
    wait_until(&format!("epoch {epoch} everywhere"), || {
        nodes.iter().all(|node| node.plane.epoch() == epoch)
    })
    .await;
    let first = nodes[0].plane.map().unwrap();
    for node in nodes {
        assert_eq!(
            node.plane.map().unwrap().encode(),
            first.encode(),
            "node {} applied a different map",
            node.id
        );
    }
    first
}

/// A founded node and `more` nodes joined through it, in order.
async fn cluster(root: &Path, size: u64) -> Vec<Node> {
    let first = start(1, root).await;
    first.plane.found().await.expect("found");
    let seed = first.addr();
    let mut nodes = vec![first];
    for id in 2..=size {
        let node = start(id, root).await;
        let map = node.plane.join_via(seed, JOIN_TIMEOUT).await.expect("join");
        assert_eq!(map.epoch, 2 * id - 2, "each join commits one epoch");
        assert!(map.member(id).is_some());
        let map = streamed(&node).await;
        assert_eq!(map.epoch, 2 * id - 1, "and its readiness one more");
        nodes.push(node);
    }
    nodes
}

/// The joined `node` says it has streamed its slots (a server does after streaming them):
/// the change completes. Returns the committed map.
async fn streamed(node: &Node) -> Arc<ClusterMap> {
    let map = node.plane.map().expect("a map");
    let change = map.change.as_ref().expect("a change in progress");
    assert_eq!(map.gainers(), [node.id].into(), "only the new node gains");
    for slot in map.gains(node.id) {
        assert!(!map.holds(node.id, slot), "reads stay on the old replicas");
        assert!(map.keeps(node.id, slot), "writes go to the new one too");
    }
    let map = node
        .plane
        .ready(node.id, change.started)
        .await
        .expect("ready");
    assert!(map.change.is_none());
    map
}

async fn stop_all(nodes: &[Node]) {
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_then_two_join_with_identical_maps() {
    let root = tempfile::tempdir().unwrap();
    let first = start(1, root.path()).await;
    assert!(first.plane.map().is_none());
    assert_eq!(first.plane.epoch(), 0);
    first.plane.found().await.unwrap();
    let map = first.plane.map().expect("founded");
    assert_eq!(map.epoch, 1);
    assert!((0..SLOT_COUNT).all(|slot| map.replicas(slot) == [1]));
    // Founding again is a no-op.
    first.plane.found().await.unwrap();
    assert_eq!(first.plane.epoch(), 1);

    let mut watch = first.plane.watch();
    let second = start(2, root.path()).await;
    let third = start(3, root.path()).await;
    let joined = second
        .plane
        .join_via(first.addr(), JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(joined.epoch, 2);
    assert_eq!(second.plane.epoch(), 2, "join returns once applied locally");
    watch
        .wait_for(|map| map.as_ref().is_some_and(|map| map.epoch == 2))
        .await
        .unwrap();
    assert_eq!(streamed(&second).await.epoch, 3);
    let joined = third
        .plane
        .join_via(first.addr(), JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(joined.epoch, 4);
    assert_eq!(streamed(&third).await.epoch, 5);

    let nodes = [&first, &second, &third];
    let map = converged(&nodes, 5).await;
    assert_eq!(map.members.len(), 3);
    for slot in 0..SLOT_COUNT {
        let mut replicas = map.replicas(slot).to_vec();
        replicas.sort_unstable();
        assert_eq!(replicas, [1, 2, 3], "slot {slot}");
    }
    // A repeated join is answered with the current map; a repeated add is
    // refused and changes nothing.
    let again = third
        .plane
        .join_via(first.addr(), JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(again.epoch, 5);
    let info = map.member(2).unwrap().clone();
    match second.plane.add_member(info).await {
        Err(ControlError::Refused(reason)) => assert!(reason.contains("already"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(first.plane.epoch(), 5);

    let status = first.plane.status();
    assert!(status
        .leader
        .is_some_and(|leader| (1..=3).contains(&leader)));
    assert_eq!(status.voters, [1, 2, 3]);
    assert!(status.learners.is_empty());
    assert_eq!(status.epoch, 5);
    stop_all(&[first, second, third]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_capped_at_five() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 6).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let map = converged(&all, 11).await;
    assert_eq!(map.members.len(), 6);
    for node in &nodes {
        wait_until("the membership everywhere", || {
            let status = node.plane.status();
            status.voters.len() == 5 && status.learners.len() == 1
        })
        .await;
    }
    let status = nodes[0].plane.status();
    assert_eq!(status.voters, [1, 2, 3, 4, 5]);
    assert_eq!(status.learners, [6]);
    assert_eq!(nodes[5].plane.status().role, "learner");

    // Removing a voter promotes the learner.
    let map = nodes[5].plane.remove_member(2).await.unwrap();
    assert_eq!(map.epoch, 12);
    assert!(map.member(2).is_none());
    wait_until("the learner promoted", || {
        let status = nodes[0].plane.status();
        status.voters == [1, 3, 4, 5, 6] && status.learners.is_empty()
    })
    .await;
    stop_all(&nodes).await;
}

/// The leader removed from the cluster hands its seat to the learner in the same
/// membership change, and the next changes commit through the next leader: a leader out of
/// the group refuses changes and the proposer asks again (docs/cluster.md, "Voters and
/// learners"). The race that made this matter (a change reaching the removed leader while
/// it still leads: openraft#923's assertion) is timing-bound and rare here; the
/// simulation found it (docs/testing.md, seeds 1000 and 100273) and replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_removed_hands_its_seat_to_a_learner_and_the_next_change_commits() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 6).await;
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, 11).await;
    wait_until("five voters and a learner", || {
        let status = nodes[1].plane.status();
        status.voters.len() == 5 && status.learners == [6]
    })
    .await;
    let leader = nodes[1].plane.status().leader.expect("a leader");
    let other = |not: &[NodeId]| {
        nodes
            .iter()
            .find(|n| !not.contains(&n.id) && n.id != leader)
            .unwrap()
    };
    let asker = other(&[6]);
    let map = asker.plane.remove_member(leader).await.unwrap();
    assert!(map.member(leader).is_none());
    wait_until("the learner in the removed leader's seat", || {
        let status = asker.plane.status();
        status.voters.len() == 5 && status.voters.contains(&6) && !status.voters.contains(&leader)
    })
    .await;
    // At once, while the removed leader may still lead: another removal.
    let second = other(&[6, asker.id]).id;
    let map = nodes[5].plane.remove_member(second).await.unwrap();
    assert!(map.member(second).is_none() && map.member(leader).is_none());
    let rest: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.id != leader && n.id != second)
        .collect();
    converged(&rest, map.epoch).await;
    wait_until(
        "the learner a voter, the two removed out of the group",
        || {
            rest.iter().all(|node| {
                let status = node.plane.status();
                status.learners.is_empty()
                    && status.voters.len() == 4
                    && status.voters.contains(&6)
                    && !status.voters.contains(&leader)
                    && !status.voters.contains(&second)
            })
        },
    )
    .await;
    // And the group still commits.
    let map = nodes[5].plane.remove_member(asker.id).await.unwrap();
    assert!(map.member(asker.id).is_none());
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_commits_after_the_leader_stops() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).await;
    converged(&nodes.iter().collect::<Vec<_>>(), 5).await;
    let leader = nodes[0].plane.status().leader.expect("a leader");
    let (dead, alive): (Vec<&Node>, Vec<&Node>) = nodes.iter().partition(|n| n.id == leader);
    dead[0].stop().await;

    wait_until("a new leader", || {
        alive.iter().all(|node| {
            let status = node.plane.status();
            status.leader.is_some_and(|new| new != leader)
        })
    })
    .await;
    let map = alive[1].plane.remove_member(leader).await.unwrap();
    assert_eq!(map.epoch, 6);
    assert_eq!(map.members.len(), 2);
    assert!(map.member(leader).is_none());
    let map = converged(&alive, 6).await;
    for slot in 0..SLOT_COUNT {
        assert_eq!(map.replicas(slot).len(), 2, "slot {slot}");
        assert!(!map.holds(leader, slot));
    }
    wait_until("the dead node out of the Raft group", || {
        alive
            .iter()
            .all(|node| node.plane.status().voters.len() == 2)
    })
    .await;
    for node in alive {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_map_and_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3).await;
    converged(&nodes.iter().collect::<Vec<_>>(), 5).await;
    let third = nodes.pop().unwrap();
    let before = third.plane.map().unwrap().encode();
    let (id, dir, addr) = (third.id, third.dir.clone(), third.addr());
    third.stop().await;

    // A change while it is down.
    let fourth = start(4, root.path()).await;
    let map = fourth
        .plane
        .join_via(nodes[0].addr(), JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(map.epoch, 6);
    assert_eq!(streamed(&fourth).await.epoch, 7);

    let third = try_start(id, &dir, addr).await.expect("reopen");
    assert_eq!(
        third
            .plane
            .map()
            .expect("the map survives a restart")
            .encode(),
        before
    );
    third
        .plane
        .found()
        .await
        .expect("found is a no-op on a restart");
    nodes.push(third);
    nodes.push(fourth);
    converged(&nodes.iter().collect::<Vec<_>>(), 7).await;

    // And a change after it is back.
    let map = nodes[0].plane.remove_member(4).await.unwrap();
    assert_eq!(map.epoch, 8);
    let fourth = nodes.pop().unwrap();
    converged(&nodes.iter().collect::<Vec<_>>(), 8).await;
    fourth.stop().await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let node = start(1, root.path()).await;
    node.plane.found().await.unwrap();
    // Refused changes commit as no-ops: the epoch stays.
    for (victim, expected) in [(1, "last member"), (99, "not a member")] {
        match node.plane.remove_member(victim).await {
            Err(ControlError::Refused(reason)) => assert!(reason.contains(expected), "{reason}"),
            other => panic!("removing {victim}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(node.plane.epoch(), 1);
    let encoded = node.plane.map().unwrap().encode();
    let dir = node.dir.clone();
    node.stop().await;

    // Another node's directory is refused.
    match try_start(2, &dir, "127.0.0.1:0".parse().unwrap()).await {
        Err(ControlError::WrongNode { found, expected }) => assert_eq!((found, expected), (1, 2)),
        Err(other) => panic!("expected WrongNode, got {other}"),
        Ok(node) => {
            node.stop().await;
            panic!("node 2 opened node 1's directory");
        }
    }

    // Intact: the same map comes back.
    let node = try_start(1, &dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(node.plane.map().unwrap().encode(), encoded);
    node.stop().await;

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in ["log", "node", "state", "vote"] {
        assert!(names.iter().any(|name| name == wanted), "{names:?}");
    }
    for file in &files {
        let good = std::fs::read(file).unwrap();
        let mut damages = Vec::new();
        // A flipped byte in the body, in the header, and a torn tail.
        let mut flipped = good.clone();
        let middle = 16 + (good.len() - 16) / 2;
        flipped[middle] ^= 0x01;
        damages.push(("a flipped body byte", flipped));
        let mut header = good.clone();
        header[13] ^= 0x40;
        damages.push(("a flipped length byte", header));
        // A digit changed: the JSON body still parses, only the checksum
        // can tell.
        let mut digit = good.clone();
        let at = 16 + good[16..].iter().position(u8::is_ascii_digit).unwrap();
        digit[at] = if digit[at] == b'9' {
            b'0'
        } else {
            digit[at] + 1
        };
        damages.push(("a changed digit", digit));
        damages.push(("a torn tail", good[..good.len() - 3].to_vec()));
        damages.push(("a torn header", good[..5].to_vec()));
        for (what, bytes) in damages {
            std::fs::write(file, &bytes).unwrap();
            match try_start(1, &dir, "127.0.0.1:0".parse().unwrap()).await {
                Err(ControlError::Corrupt { path, reason }) => {
                    assert_eq!(&path, file, "{what}: {reason}");
                }
                Err(other) => panic!("{what} in {}: {other}", file.display()),
                Ok(node) => {
                    node.stop().await;
                    panic!("{what} in {} went unnoticed", file.display());
                }
            }
        }
        std::fs::write(file, &good).unwrap();
    }
    let node = try_start(1, &dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(node.plane.map().unwrap().encode(), encoded);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_compaction_gets_the_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 2).await;
    converged(&nodes.iter().collect::<Vec<_>>(), 3).await;
    let leader = nodes[0].plane.status().leader.unwrap();
    let leader = nodes.iter().find(|node| node.id == leader).unwrap();
    leader.plane.compact().await.unwrap();
    assert!(leader.dir.join("snapshot").exists());

    // The log it would need is gone: the leader sends the snapshot.
    let third = start(3, root.path()).await;
    let map = third
        .plane
        .join_via(nodes[0].addr(), JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(map.epoch, 4);
    assert!(third.dir.join("snapshot").exists(), "no snapshot arrived");
    assert_eq!(streamed(&third).await.epoch, 5);
    nodes.push(third);
    converged(&nodes.iter().collect::<Vec<_>>(), 5).await;

    // And a compacted node restarts from its snapshot and log.
    let third = nodes.pop().unwrap();
    third.plane.compact().await.unwrap();
    let (dir, addr, before) = (third.dir.clone(), third.addr(), third.plane.map().unwrap());
    third.stop().await;
    let third = try_start(3, &dir, addr).await.unwrap();
    assert_eq!(third.plane.map().unwrap().encode(), before.encode());
    nodes.push(third);
    let map = nodes[0].plane.remove_member(2).await.unwrap();
    assert_eq!(map.epoch, 6);
    let second = nodes.remove(1);
    converged(&nodes.iter().collect::<Vec<_>>(), 6).await;
    second.stop().await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_each_commit_once() {
    let root = tempfile::tempdir().unwrap();
    let first = start(1, root.path()).await;
    first.plane.found().await.unwrap();
    let seed = first.addr();
    let mut joiners = Vec::new();
    for id in 2..=5 {
        joiners.push(start(id, root.path()).await);
    }
    // Started together, through the same seed: the leader takes them one
    // at a time.
    let joins: Vec<_> = joiners
        .iter()
        .map(|node| {
            let plane = node.plane.clone();
            tokio::spawn(async move { plane.join_via(seed, JOIN_TIMEOUT).await })
        })
        .collect();
    for (join, id) in joins.into_iter().zip(2..) {
        let map = join.await.unwrap().unwrap();
        assert!(
            map.member(id).is_some(),
            "node {id} missing at epoch {}",
            map.epoch
        );
        assert!((2..=5).contains(&map.epoch), "epoch {}", map.epoch);
    }
    let mut nodes = vec![first];
    nodes.extend(joiners);
    // One epoch per join, no more; each join retargets the change in progress.
    let map = converged(&nodes.iter().collect::<Vec<_>>(), 5).await;
    assert_eq!(map.members.len(), 5);
    let change = map.change.clone().expect("nobody streamed yet");
    assert_eq!(change.started, 5);
    for id in map.gainers() {
        nodes[0].plane.ready(id, change.started).await.unwrap();
    }
    let map = converged(
        &nodes.iter().collect::<Vec<_>>(),
        5 + map.gainers().len() as u64,
    )
    .await;
    assert!(map.change.is_none());
    assert!((0..SLOT_COUNT).all(|slot| map.replicas(slot).len() == 3));
    wait_until("five voters", || nodes[0].plane.status().voters.len() == 5).await;
    stop_all(&nodes).await;
}
