//! The gossip core driven by hand: nodes pass datagrams through a queue
//! with a fake clock, no tokio, every run the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use foca_rand::{RngExt, SeedableRng};

use super::*;

const LATENCY: Duration = Duration::from_millis(1);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

struct SimNode {
    node: NodeId,
    addr: SocketAddr,
    gossip: Gossip,
    /// Bumped when the node restarts: timers of an earlier run are dropped.
    run: u64,
}

/// A deterministic network of gossip cores with a fake clock.
struct Sim {
    now: Duration,
    nodes: Vec<SimNode>,
    /// `(when, seq) → (node index, run, timer)`.
    timers: BTreeMap<(Duration, u64), (usize, u64, GossipTimer)>,
    /// `(when, seq) → (sender index, destination, datagram)`.
    network: BTreeMap<(Duration, u64), (usize, SocketAddr, Bytes)>,
    seq: u64,
    /// Nodes whose datagrams, both ways, are dropped.
    cut: BTreeSet<usize>,
    delivered: usize,
    /// Every datagram sent, for the hostile tests.
    sent: Vec<Bytes>,
    config: GossipConfig,
}

impl Sim {
    fn new(n: usize) -> Sim {
        let config = GossipConfig::default();
        let nodes = (0..n)
            .map(|i| SimNode {
                node: i as NodeId + 1,
                addr: addr(i),
                gossip: Gossip::new(i as NodeId + 1, addr(i), 1, i as u64, &config).unwrap(),
                run: 0,
            })
            .collect();
        Sim {
            now: Duration::ZERO,
            nodes,
            timers: BTreeMap::new(),
            network: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            delivered: 0,
            sent: Vec::new(),
            config,
        }
    }

    /// Every node announces itself to every other.
    fn introduce_all(&mut self) {
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                let peer = self.nodes[j].addr;
                let out = self.nodes[i].gossip.announce(peer, self.now);
                self.enqueue(i, out);
            }
        }
    }

    fn enqueue(&mut self, from: usize, out: Outbox) {
        for (after, timer) in out.timers {
            self.seq += 1;
            let run = self.nodes[from].run;
            self.timers
                .insert((self.now + after, self.seq), (from, run, timer));
        }
        for (to, datagram) in out.datagrams {
            self.seq += 1;
            self.sent.push(datagram.clone());
            self.network
                .insert((self.now + LATENCY, self.seq), (from, to, datagram));
        }
    }

    /// Runs every event up to `until`, calling `watch` after each.
    fn run_until(&mut self, until: Duration, mut watch: impl FnMut(&Sim)) {
        loop {
            let timer = self.timers.keys().next().copied();
            let packet = self.network.keys().next().copied();
            let next = match (timer, packet) {
                (Some(t), Some(p)) => t.min(p),
                (Some(t), None) => t,
                (None, Some(p)) => p,
                (None, None) => break,
            };
            if next.0 > until {
                break;
            }
            self.now = next.0;
            if let Some((i, run, timer)) = self.timers.remove(&next) {
                if run == self.nodes[i].run {
                    let out = self.nodes[i].gossip.on_timer(timer, self.now);
                    self.enqueue(i, out);
                }
            } else if let Some((from, to, datagram)) = self.network.remove(&next) {
                let Some(j) = self.nodes.iter().position(|n| n.addr == to) else {
                    continue;
                };
                if self.cut.contains(&from) || self.cut.contains(&j) {
                    continue;
                }
                self.delivered += 1;
                let sender = self.nodes[from].node;
                let out = self.nodes[j]
                    .gossip
                    .on_datagram(sender, &datagram, self.now);
                self.enqueue(j, out);
            }
            watch(self);
        }
        self.now = until;
    }

    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        self.run_until(until, |_| {});
    }

    /// What `observer` believes of `node`.
    fn health(&self, observer: usize, node: usize) -> Option<Health> {
        self.nodes[observer]
            .gossip
            .health()
            .get(&self.nodes[node].node)
            .copied()
    }

    fn all_alive(&self, among: &[usize]) -> bool {
        among.iter().all(|&o| {
            among
                .iter()
                .all(|&n| self.health(o, n) == Some(Health::Alive))
        })
    }

    /// Runs until every node in `among` sees every other Alive; the time
    /// it took.
    fn converge(&mut self, among: &[usize], within: Duration) -> Duration {
        let start = self.now;
        let step = Duration::from_millis(50);
        while !self.all_alive(among) {
            assert!(
                self.now - start <= within,
                "not all Alive after {:?}: {:?}",
                within,
                among
                    .iter()
                    .map(|&o| self.nodes[o].gossip.health())
                    .collect::<Vec<_>>()
            );
            self.run_for(step);
        }
        self.now - start
    }

    /// The detection bound of docs/cluster.md: each member is probed at
    /// least once every two rounds of `members − 1` probes, a failed probe
    /// ends its period as Suspect, and Suspect turns Down after the
    /// suspicion timeout.
    fn detection_bound(&self) -> Duration {
        let others = self.nodes.len() as u32 - 1;
        self.config.probe_period * (2 * others) + self.config.suspect_to_down_after
    }
}

#[test]
fn three_nodes_converge_to_all_alive() {
    let mut sim = Sim::new(3);
    sim.introduce_all();
    let took = sim.converge(&[0, 1, 2], Duration::from_secs(2));
    assert!(took < Duration::from_millis(100), "took {took:?}");
    // And stay so: probes keep being answered.
    sim.run_for(Duration::from_secs(20));
    assert!(sim.all_alive(&[0, 1, 2]));
    for i in 0..3 {
        let members = sim.nodes[i].gossip.members();
        assert_eq!(
            members.iter().map(|p| p.node).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(members.iter().all(|p| p.health == Health::Alive));
    }
}

#[test]
fn one_announce_is_enough_to_learn_everyone() {
    let mut sim = Sim::new(3);
    // 2 and 3 only know 1.
    for i in 1..3 {
        let out = sim.nodes[i].gossip.announce(addr(0), sim.now);
        sim.enqueue(i, out);
    }
    sim.converge(&[0, 1, 2], Duration::from_secs(3));
}

#[test]
fn a_silent_node_turns_suspect_then_down_then_alive_when_it_answers_again() {
    let mut sim = Sim::new(3);
    sim.introduce_all();
    sim.converge(&[0, 1, 2], Duration::from_secs(1));
    sim.run_for(Duration::from_secs(3));

    sim.cut.insert(2);
    let cut_at = sim.now;
    // When each of 0 and 1 first saw 2 Suspect and Down.
    let mut suspect = [None; 2];
    let mut down = [None; 2];
    let until = sim.now + Duration::from_secs(10);
    sim.run_until(until, |sim| {
        for o in 0..2 {
            match sim.health(o, 2) {
                Some(Health::Suspect) if suspect[o].is_none() => suspect[o] = Some(sim.now),
                Some(Health::Down) if down[o].is_none() => down[o] = Some(sim.now),
                _ => {}
            }
        }
    });
    let bound = sim.detection_bound();
    for o in 0..2 {
        let suspect = suspect[o].expect("seen Suspect") - cut_at;
        let down = down[o].expect("seen Down") - cut_at;
        assert!(
            suspect < down,
            "observer {o}: suspect {suspect:?}, down {down:?}"
        );
        assert!(
            down <= bound,
            "observer {o}: down after {down:?}, bound {bound:?}"
        );
        assert_eq!(sim.health(o, 2), Some(Health::Down));
    }
    // 0 and 1 still see each other.
    assert!(sim.all_alive(&[0, 1]));

    // Heal: 2 answers again (it renews its generation, as the others
    // declared its run Down) and everyone is Alive again.
    let generation = sim.nodes[2].gossip.identity().generation;
    sim.cut.clear();
    let took = sim.converge(&[0, 1, 2], Duration::from_secs(5));
    assert!(took <= sim.config.reannounce_period * 3, "took {took:?}");
    assert!(sim.nodes[2].gossip.identity().generation > generation);
    sim.run_for(Duration::from_secs(10));
    assert!(sim.all_alive(&[0, 1, 2]));
}

#[test]
fn a_restarted_node_with_a_new_generation_is_alive_again() {
    let mut sim = Sim::new(3);
    sim.introduce_all();
    sim.converge(&[0, 1, 2], Duration::from_secs(1));

    // Node 3 crashes …
    sim.cut.insert(2);
    sim.run_for(sim.detection_bound() + Duration::from_secs(1));
    assert_eq!(sim.health(0, 2), Some(Health::Down));
    assert_eq!(sim.health(1, 2), Some(Health::Down));

    // … and restarts at the same address, knowing nothing, generation 2.
    sim.cut.clear();
    sim.nodes[2].run += 1;
    sim.nodes[2].gossip = Gossip::new(3, addr(2), 2, 99, &sim.config).unwrap();
    for j in 0..2 {
        let out = sim.nodes[2].gossip.announce(addr(j), sim.now);
        sim.enqueue(2, out);
    }
    sim.converge(&[0, 1, 2], Duration::from_secs(2));
    for o in 0..2 {
        let peer = sim.nodes[o]
            .gossip
            .members()
            .into_iter()
            .find(|p| p.node == 3)
            .unwrap();
        assert_eq!(peer.generation, 2);
        assert_eq!(peer.addr, addr(2));
    }

    // Restart at another address (a new port) with a newer generation.
    sim.nodes[2].run += 1;
    sim.nodes[2].addr = addr(9);
    sim.nodes[2].gossip = Gossip::new(3, addr(9), 3, 7, &sim.config).unwrap();
    for j in 0..2 {
        let out = sim.nodes[2].gossip.announce(addr(j), sim.now);
        sim.enqueue(2, out);
    }
    sim.converge(&[0, 1, 2], Duration::from_secs(2));
    sim.run_for(Duration::from_secs(10));
    assert!(sim.all_alive(&[0, 1, 2]));
    for o in 0..2 {
        let peer = sim.nodes[o]
            .gossip
            .members()
            .into_iter()
            .find(|p| p.node == 3)
            .unwrap();
        assert_eq!((peer.generation, peer.addr), (3, addr(9)));
    }
}

#[test]
fn load_values_reach_every_node() {
    let mut sim = Sim::new(3);
    sim.introduce_all();
    sim.converge(&[0, 1, 2], Duration::from_secs(1));
    for i in 0..3 {
        sim.nodes[i].gossip.set_load(1000 * (i as u64 + 1), sim.now);
    }
    sim.run_for(Duration::from_secs(3));
    for o in 0..3 {
        let loads: Vec<Option<u64>> = sim.nodes[o]
            .gossip
            .members()
            .iter()
            .map(|p| p.load)
            .collect();
        assert_eq!(
            loads,
            vec![Some(1000), Some(2000), Some(3000)],
            "observer {o}"
        );
    }
    // A newer value replaces the old one.
    sim.nodes[0].gossip.set_load(5, sim.now);
    sim.run_for(Duration::from_secs(3));
    for o in 1..3 {
        assert_eq!(sim.nodes[o].gossip.members()[0].load, Some(5));
    }
}

#[test]
fn a_datagram_claiming_another_sender_is_dropped() {
    let config = GossipConfig::default();
    let mut a = Gossip::new(1, addr(0), 1, 1, &config).unwrap();
    let mut b = Gossip::new(2, addr(1), 1, 2, &config).unwrap();
    let out = b.announce(addr(0), Duration::ZERO);
    let (to, announce) = out.datagrams[0].clone();
    assert_eq!(to, addr(0));
    // Authenticated as node 7, claims to be node 2.
    let reply = a.on_datagram(7, &announce, Duration::ZERO);
    assert!(reply.datagrams.is_empty());
    assert_eq!(a.health().len(), 1);
    // From node 2 itself it is accepted and answered.
    let reply = a.on_datagram(2, &announce, Duration::ZERO);
    assert_eq!(reply.datagrams.len(), 1);
    assert_eq!(a.health().get(&2), Some(&Health::Alive));
}

#[test]
fn garbage_and_mangled_datagrams_are_dropped_without_panic() {
    let everyone = [0, 1, 2, 3, 4];
    let mut sim = Sim::new(5);
    sim.introduce_all();
    sim.converge(&everyone, Duration::from_secs(1));
    for i in everyone {
        sim.nodes[i].gossip.set_load(i as u64, sim.now);
    }
    sim.run_for(Duration::from_secs(3));
    let genuine = sim.sent.clone();
    assert!(genuine.len() > 100, "{}", genuine.len());

    // Node 1 receives it all, and what it sends in reaction goes out.
    let mut rng = foca_rand::rngs::Xoshiro256PlusPlus::seed_from_u64(5);
    let feed = |sim: &mut Sim, from: NodeId, data: &[u8]| {
        let out = sim.nodes[0].gossip.on_datagram(from, data, sim.now);
        sim.enqueue(0, out);
    };
    // Random bytes of every small length, and some large ones.
    for len in (0..300).chain([8191, 8192, 8193, 70_000]) {
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        for from in [2, 3, 99] {
            feed(&mut sim, from, &data);
        }
    }
    // Real datagrams cut short or with bytes after them.
    for datagram in &genuine {
        for cut in 0..datagram.len() {
            feed(&mut sim, 2, &datagram[..cut]);
        }
        let mut longer = datagram.to_vec();
        longer.extend_from_slice(&[0xff; 3]);
        feed(&mut sim, 2, &longer);
    }
    // None of it changed anything: all Alive, no node that does not exist.
    sim.run_for(Duration::from_secs(5));
    assert!(sim.all_alive(&everyone));
    let known: Vec<NodeId> = sim.nodes[0].gossip.health().into_keys().collect();
    assert_eq!(known, vec![1, 2, 3, 4, 5]);

    // Real datagrams with bytes changed, as if from each node (one of them
    // the real sender). What still decodes is believed, as gossip relayed
    // by an authenticated peer always is (docs/cluster.md, "Membership"):
    // this part checks only that nothing panics, reacting included.
    for (n, datagram) in genuine.iter().enumerate() {
        for _ in 0..20 {
            let mut mangled = datagram.to_vec();
            for _ in 0..1 + n % 3 {
                let at = rng.random_range(0..mangled.len());
                mangled[at] = rng.random();
            }
            for from in 2..=5 {
                feed(&mut sim, from, &mangled);
            }
        }
    }
    sim.run_for(Duration::from_secs(10));
    // Load broadcasts that are not 33 bytes of version 1 are refused.
    assert!(decode_load(&[1; 32]).is_err());
    assert!(decode_load(&[2; 33]).is_err());
    assert_eq!(
        decode_load(&encode_load(
            7,
            LoadEntry {
                generation: 1,
                seq: 2,
                load: 3
            }
        ))
        .unwrap(),
        (
            7,
            LoadEntry {
                generation: 1,
                seq: 2,
                load: 3
            }
        )
    );
}

#[test]
fn invalid_configs_are_refused() {
    let good = GossipConfig::default();
    good.validate().unwrap();
    let cases: Vec<GossipConfig> = vec![
        GossipConfig {
            probe_rtt: good.probe_period,
            ..good.clone()
        },
        GossipConfig {
            suspect_to_down_after: Duration::ZERO,
            ..good.clone()
        },
        GossipConfig {
            gossip_fanout: 0,
            ..good.clone()
        },
        GossipConfig {
            max_datagram_bytes: 100_000,
            ..good.clone()
        },
    ];
    for config in cases {
        assert!(Gossip::new(1, addr(0), 1, 1, &config).is_err());
    }
}
