//! The gossip core driven on tokio: datagrams go out as transport calls of
//! kind [`GOSSIP_KIND`], come in through the node's `Handler`, and the
//! core's timers run on one driver task. docs/cluster.md, "Membership
//! (gossip, foca)".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::{Gossip, GossipConfig, GossipTimer, Health, Outbox, Peer};
use crate::transport::Transport;
use crate::NodeId;

/// The transport request kind that carries gossip datagrams. The receiver
/// hands the payload to [`GossipRuntime::handle`] and answers an empty
/// reply of the same kind; the kind must not be fenced by the epoch
/// (`Handler::fenced` returns false for it).
pub const GOSSIP_KIND: u8 = 64;

/// Gossip for one node on tokio. Cheap to clone.
#[derive(Clone)]
pub struct GossipRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    transport: Transport,
    config: GossipConfig,
    /// The core's time is the time since this instant.
    started: Instant,
    /// Woken when a timer is added, so the driver sleeps to the earliest.
    wake: Notify,
    view: watch::Sender<BTreeMap<NodeId, Health>>,
    shutdown: watch::Sender<bool>,
    /// Each task holds a clone; shutdown waits until all are dropped.
    alive: Mutex<Option<mpsc::Sender<()>>>,
    all_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

struct State {
    core: Gossip,
    /// `(deadline, sequence) → timer`, the earliest first.
    timers: BTreeMap<(Instant, u64), GossipTimer>,
    next_seq: u64,
}

impl GossipRuntime {
    /// Starts gossip for this node; `transport` sends datagrams (kind
    /// [`GOSSIP_KIND`]). The node's generation is the wall clock in
    /// milliseconds, so a restarted node is newer than its previous run.
    /// Must be called within a tokio runtime.
    ///
    /// # Panics
    ///
    /// If `config` is invalid ([`GossipConfig::validate`]).
    pub fn start(
        me: NodeId,
        my_cluster_addr: SocketAddr,
        transport: Transport,
        config: GossipConfig,
    ) -> GossipRuntime {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_millis() as u64);
        let seed = generation ^ me.rotate_left(32);
        Self::start_with(me, my_cluster_addr, transport, config, generation, seed)
    }

    /// [`GossipRuntime::start`] with the generation and the random seed given: a
    /// deterministic simulation passes its own clock's milliseconds and a seed of its run.
    ///
    /// # Panics
    ///
    /// If `config` is invalid ([`GossipConfig::validate`]).
    pub fn start_with(
        me: NodeId,
        my_cluster_addr: SocketAddr,
        transport: Transport,
        config: GossipConfig,
        generation: u64,
        seed: u64,
    ) -> GossipRuntime {
        let core = Gossip::new(me, my_cluster_addr, generation, seed, &config)
            .unwrap_or_else(|error| panic!("{error}"));
        let (alive, all_done) = mpsc::channel(1);
        let view = watch::Sender::new(core.health());
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                core,
                timers: BTreeMap::new(),
                next_seq: 0,
            }),
            transport,
            config,
            started: Instant::now(),
            wake: Notify::new(),
            view,
            shutdown: watch::Sender::new(false),
            alive: Mutex::new(Some(alive)),
            all_done: tokio::sync::Mutex::new(all_done),
        });
        inner.spawn(drive(inner.clone()));
        tracing::info!(node = me, addr = %my_cluster_addr, generation, "gossip started");
        GossipRuntime { inner }
    }

    /// Introduce a peer (from the cluster map: every member's cluster
    /// address); idempotent. This node announces itself to it now and
    /// again while it does not see it as active.
    pub fn add_peer(&self, addr: SocketAddr) {
        self.inner.with_core(|core, now| core.announce(addr, now));
    }

    /// Stop re-announcing to a peer that left the cluster map.
    pub fn remove_peer(&self, addr: SocketAddr) {
        self.inner.with_core(|core, _| {
            core.forget(addr);
            Outbox::default()
        });
    }

    /// The node's Handler forwards [`GOSSIP_KIND`] requests here (and
    /// answers an empty reply). `from` is the transport's authenticated
    /// peer; a datagram claiming another sender is dropped.
    pub fn handle(&self, from: NodeId, payload: Bytes) {
        self.inner
            .with_core(|core, now| core.on_datagram(from, &payload, now));
    }

    /// Sets this node's load value, carried to the others by gossip
    /// ([`Peer::load`]).
    pub fn set_load(&self, load: u64) {
        self.inner.with_core(|core, now| {
            core.set_load(load, now);
            Outbox::default()
        });
    }

    /// Current view: node → health (alive / suspect / down), this node
    /// included.
    pub fn health(&self) -> BTreeMap<NodeId, Health> {
        self.inner.view.borrow().clone()
    }

    /// The view, and a watch that changes with it.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<NodeId, Health>> {
        self.inner.view.subscribe()
    }

    /// Every known node with its address, generation, health and load.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.state.lock().core.members()
    }

    /// Stops the timers and sends and returns once every task has ended.
    /// Sends no leave message: to the others this node looks crashed and
    /// turns Down. Does not shut the transport down.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        drop(self.inner.alive.lock().take());
        let mut all_done = self.inner.all_done.lock().await;
        while all_done.recv().await.is_some() {}
        tracing::info!("gossip stopped");
    }
}

impl std::fmt::Debug for GossipRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipRuntime")
            .field("identity", &self.inner.state.lock().core.identity())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Runs `f` on the core with the current time and carries out its
    /// outbox. Does nothing after shutdown.
    fn with_core(&self, f: impl FnOnce(&mut Gossip, std::time::Duration) -> Outbox) {
        if *self.shutdown.borrow() {
            return;
        }
        let mut state = self.state.lock();
        let now = Instant::now();
        let outbox = f(&mut state.core, now - self.started);
        self.carry_out(&mut state, now, outbox);
    }

    fn carry_out(&self, state: &mut State, now: Instant, outbox: Outbox) {
        if !outbox.timers.is_empty() {
            for (after, timer) in outbox.timers {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.timers.insert((now + after, seq), timer);
            }
            self.wake.notify_one();
        }
        for (peer, datagram) in outbox.datagrams {
            let transport = self.transport.clone();
            let timeout = self.config.send_timeout;
            self.spawn(async move {
                if let Err(error) = transport.call(peer, GOSSIP_KIND, datagram, timeout).await {
                    tracing::trace!(%peer, %error, "gossip datagram not delivered");
                }
            });
        }
        let health = state.core.health();
        self.view.send_if_modified(|view| {
            let changed = *view != health;
            if changed {
                *view = health;
            }
            changed
        });
    }

    /// Spawns a task that ends at shutdown at the latest; nothing once
    /// shutdown has begun.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let Some(alive) = self.alive.lock().clone() else {
            return;
        };
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::select! {
                // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
                biased;
                () = task => {}
                _ = shutdown.wait_for(|&stop| stop) => {}
            }
        });
    }
}

/// Sleeps until the earliest timer, runs every timer that is due, repeats.
async fn drive(inner: Arc<Inner>) {
    loop {
        let next = inner
            .state
            .lock()
            .timers
            .first_key_value()
            .map(|(&(at, _), _)| at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = inner.wake.notified() => continue,
            () = sleep => {}
        }
        let mut state = inner.state.lock();
        let now = Instant::now();
        while let Some(entry) = state.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let outbox = state.core.on_timer(timer, now - inner.started);
            inner.carry_out(&mut state, now, outbox);
        }
    }
}
