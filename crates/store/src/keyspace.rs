//! The Redis data model on the engine: 16 logical databases, typed values,
//! expiry bookkeeping and exact key counts.
//!
//! Every write goes through this module, under the stripe lock of each key it
//! touches, so it knows whether a key existed before and can keep
//! [`Keyspace::dbsize`] exact. The invariant, per namespace:
//!
//! ```text
//! count = (live keys without an expiry) + (entries of the expiry index)
//! ```
//!
//! A key with an expiry has exactly one index entry while it lives; a key that
//! expired keeps its index entry (and so its unit of count) until the active
//! sweep removes both, as Redis counts not-yet-reclaimed expired keys in DBSIZE.
//! A writer that overwrites a live key with an expiry deletes the old index
//! entry in the same batch; one that finds the key absent (maybe expired) does
//! not know the old entry, which stays and is counted until swept. See
//! docs/server.md for the layout and the restart rules.
//!
//! What a stored value looks like is `value.rs`'s; where keys go is
//! `layout.rs`'s. This module only combines them.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, ReentrantMutex, ReentrantMutexGuard, RwLock};
use ringkv_engine::{Clock, Db, Entry, EntryHead, WriteBatch};

use crate::error::{Error, Result};
use crate::layout::{self as keys, EngineKey, Layout, Namespace};
use crate::value::{encode_value, StoredValue, StrValue, ValueType};

/// Logical databases, as Redis' default `databases 16`.
pub const DATABASES: usize = 16;

/// Stripes of the key lock table. Contention between unrelated keys is
/// 1/STRIPES per pair; 4096 mutexes cost a few tens of KiB.
const LOCK_STRIPES: usize = 4096;

/// Namespace ids are u16: 65536 possible namespaces.
const NAMESPACES: usize = 1 << 16;

/// Keys deleted per engine batch when a flushed namespace is cleared.
const DROP_BATCH_KEYS: usize = 1024;

/// How often the expiry sweep starts again from the first index entry.
const SWEEP_RESTART_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Index entries read per step of the expiry sweep.
const SWEEP_BATCH_KEYS: usize = 128;

thread_local! {
    /// Engine-key buffer reused by [`Keyspace::read`] on this thread.
    static DATA_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Locks held on keys; dropping it releases them.
pub enum KeyGuard<'a> {
    /// One stripe: the common single-key command, without an allocation.
    One(#[allow(dead_code)] ReentrantMutexGuard<'a, ()>),
    /// Several stripes, taken in ascending order.
    Many(#[allow(dead_code)] Vec<ReentrantMutexGuard<'a, ()>>),
}

/// Outcome of RENAME / RENAMENX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameOutcome {
    /// The key was renamed.
    Renamed,
    /// The source does not exist.
    NoSuchKey,
    /// RENAMENX: the destination exists.
    DestinationExists,
}

/// What a write needs to know of the live entry it replaces or removes: that there is one
/// (the count) and its expiry (the index entry that goes with it). A write that does not
/// look at the old value reads only this ([`Keyspace::head`]).
#[derive(Debug, Clone, Copy)]
struct Prior {
    expires_at_ms: Option<u64>,
}

impl From<&Entry> for Prior {
    fn from(entry: &Entry) -> Prior {
        Prior {
            expires_at_ms: entry.expires_at_ms,
        }
    }
}

impl From<&StoredValue> for Prior {
    fn from(value: &StoredValue) -> Prior {
        Prior {
            expires_at_ms: value.expires_at_ms,
        }
    }
}

impl From<EntryHead> for Prior {
    fn from(head: EntryHead) -> Prior {
        Prior {
            expires_at_ms: head.expires_at_ms,
        }
    }
}

/// A write being assembled: the engine batch plus the count changes it makes.
struct Change {
    layout: Layout,
    batch: WriteBatch,
    /// Count change per namespace; almost every write touches one namespace, so it is merged in
    /// place and a list is only made for the rest.
    deltas: SmallList<(Namespace, i64)>,
    /// Epoch slots of the (namespace, key) pairs written, which the commit bumps.
    stripes: SmallList<usize>,
}

/// A list whose first element lives inline: most writes change one key, and this keeps their
/// bookkeeping off the heap.
#[derive(Default)]
struct SmallList<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> SmallList<T> {
    fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push(item);
        }
    }

    fn into_iter(self) -> impl Iterator<Item = T> {
        self.first.into_iter().chain(self.rest)
    }
}

impl Change {
    fn new(layout: Layout) -> Change {
        Change {
            layout,
            batch: WriteBatch::new(),
            deltas: SmallList::default(),
            stripes: SmallList::default(),
        }
    }

    fn delta(&mut self, ns: Namespace, delta: i64) {
        if delta == 0 {
            return;
        }
        match &mut self.deltas.first {
            Some((first_ns, sum)) if *first_ns == ns => *sum += delta,
            _ => self.deltas.push((ns, delta)),
        }
    }

    /// Removes the key whose live entry is `old`.
    fn remove(&mut self, ns: Namespace, key: &[u8], old: Prior) {
        self.stripes.push(Keyspace::epoch_slot(ns, key));
        self.batch.delete(self.layout.data_key(ns, key));
        if let Some(at) = old.expires_at_ms {
            self.batch.delete(keys::expiry_key(at, ns, key));
        }
        self.delta(ns, -1);
    }

    /// Sets the key (live entry `old`, if any) to `raw` expiring at `expires_at_ms`.
    fn put(
        &mut self,
        ns: Namespace,
        key: &[u8],
        old: Option<Prior>,
        raw: Bytes,
        expires_at_ms: Option<u64>,
    ) {
        self.stripes.push(Keyspace::epoch_slot(ns, key));
        if let Some(old) = old {
            if let Some(at) = old.expires_at_ms {
                if Some(at) != expires_at_ms {
                    self.batch.delete(keys::expiry_key(at, ns, key));
                }
            }
            self.delta(ns, -1);
        }
        self.batch
            .put(self.layout.data_key(ns, key), raw, expires_at_ms);
        if let Some(at) = expires_at_ms {
            if old.and_then(|o| o.expires_at_ms) != Some(at) {
                self.batch
                    .put(keys::expiry_key(at, ns, key), Bytes::new(), None);
            }
        }
        self.delta(ns, 1);
    }
}

/// A rebuild of the key counts after a crash, running in the background so start-up does not
/// grow with the data (15 s at 50M keys when it ran in the foreground). It counts a snapshot
/// taken before the first client write; every write after it adds its own delta to the same
/// counters as usual, so snapshot count + deltas is exact once the scan has added its part.
/// Until then counts are partial, and what reports them ([`Keyspace::dbsize`]) waits.
#[derive(Default)]
struct Recount {
    running: Mutex<bool>,
    done: Condvar,
}

impl Recount {
    fn wait(&self) {
        let mut running = self.running.lock();
        while *running {
            self.done.wait(&mut running);
        }
    }

    fn finish(&self) {
        *self.running.lock() = false;
        self.done.notify_all();
    }
}

/// Background-work bookkeeping: namespace allocation and pending drops.
struct Admin {
    next_namespace: Namespace,
    dropping: Vec<Namespace>,
}

/// The keyspace: see the module doc.
pub struct Keyspace {
    /// Behind a lock only so a replica's full sync can swap in the database it received
    /// ([`Keyspace::install_engine`]); every other access clones the handle (an `Arc`).
    engine: RwLock<Db>,
    /// A replica writes nothing of its own (no db map on a fresh open, no counts record at
    /// close): its sequence numbers must stay exactly the leader's.
    replica: AtomicBool,
    map: [AtomicU16; DATABASES],
    /// Key count per namespace. Shared with a background recount (see [`Recount`]).
    counts: Arc<[AtomicI64]>,
    /// Set while key counts are being rebuilt after a crash; DBSIZE waits for it.
    recount: Arc<Recount>,
    /// Test seam (`Config::recount_gate`): the first rebuild waits here before scanning.
    recount_gate: Mutex<Option<Arc<std::sync::Barrier>>>,
    stripes: Box<[ReentrantMutex<()>]>,
    /// Per slot of (namespace, key) hashes, the number of writes committed to its keys: lets
    /// WATCH notice a key that was absent, got created and deleted again (its version reads
    /// `None` both times).
    write_epochs: Box<[AtomicU64]>,
    admin: Mutex<Admin>,
    /// Held shared by every write from its namespace lookup to its commit, exclusive by
    /// FLUSHDB, FLUSHALL and SWAPDB while they remap databases: a write never lands in a
    /// namespace that was let go (its keys would be dropped, or come back when the namespace
    /// is reused). Held for microseconds, never across a wait of the caller's.
    remap: RwLock<()>,
    /// Serialises the expiry sweep and namespace drops (both delete in bulk).
    maintenance: Mutex<()>,
    active_expire: AtomicBool,
    expired_keys: AtomicU64,
    /// Reads through [`Keyspace::get`] that found / did not find the key (INFO keyspace_hits).
    hits: AtomicU64,
    misses: AtomicU64,
    /// The engine's clock (`Options::clock`): expiry decisions here match what the engine
    /// returns.
    clock: Arc<dyn Clock>,
    /// How keys are laid out in the engine (plain for a single node).
    layout: Layout,
    /// Where the sweep resumes: the last index key it processed, and when it last started from
    /// the beginning. Deleted index entries stay as tombstones until compaction, so starting
    /// every batch from the family's first key would step over all of them again (quadratic).
    sweep_position: Mutex<(Option<Bytes>, Instant)>,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace").finish_non_exhaustive()
    }
}

impl Keyspace {
    /// Loads (or initialises) the database map and the key counts.
    pub fn open(
        engine: Db,
        replica: bool,
        recount_gate: Option<Arc<std::sync::Barrier>>,
    ) -> Result<Keyspace, ringkv_engine::Error> {
        let clock = engine.options().clock.clone();
        let keyspace = Keyspace {
            engine: RwLock::new(engine),
            replica: AtomicBool::new(replica),
            map: std::array::from_fn(|i| AtomicU16::new(i as u16)),
            counts: (0..NAMESPACES).map(|_| AtomicI64::new(0)).collect(),
            recount: Arc::new(Recount::default()),
            recount_gate: Mutex::new(recount_gate),
            stripes: (0..LOCK_STRIPES).map(|_| ReentrantMutex::new(())).collect(),
            write_epochs: (0..LOCK_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            admin: Mutex::new(Admin {
                next_namespace: DATABASES as Namespace,
                dropping: Vec::new(),
            }),
            remap: RwLock::new(()),
            maintenance: Mutex::new(()),
            active_expire: AtomicBool::new(true),
            expired_keys: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            clock,
            layout: Layout::Plain,
            sweep_position: Mutex::new((None, Instant::now())),
        };
        keyspace.load_meta()?;
        Ok(keyspace)
    }

    fn load_meta(&self) -> Result<(), ringkv_engine::Error> {
        let engine = &self.engine();
        let mut fresh = WriteBatch::new();
        for logical in 0..DATABASES {
            let mapped = engine.get(&keys::meta_db_map(logical as u8))?;
            match mapped.and_then(|entry| keys::decode_namespace(&entry.value)) {
                Some(ns) => self.map[logical].store(ns, Ordering::Release),
                None => {
                    fresh.put(
                        keys::meta_db_map(logical as u8),
                        keys::encode_namespace(logical as Namespace),
                        None,
                    );
                }
            }
        }
        let mut admin = self.admin.lock();
        if let Some(entry) = engine.get(&keys::meta_next_namespace())? {
            if let Some(ns) = keys::decode_namespace(&entry.value) {
                admin.next_namespace = ns;
            }
        }
        let (drop_start, drop_end) = keys::drop_marker_span();
        for entry in engine.range::<[u8], _>(span(&drop_start, &drop_end)) {
            if let EngineKey::DropMarker(ns) = self.layout.decode(&entry?.key) {
                admin.dropping.push(ns);
            }
        }
        drop(admin);
        if !fresh.is_empty() && !self.is_replica() {
            engine.write(fresh)?;
        }
        let saved = engine.get(&keys::meta_counts())?;
        let clean = matches!(&saved, Some(entry) if entry.version == engine.last_sequence());
        if clean {
            let value = saved.expect("checked").value;
            let mut at = 0;
            while at + 10 <= value.len() {
                let ns = u16::from_be_bytes([value[at], value[at + 1]]);
                let count = i64::from_be_bytes(value[at + 2..at + 10].try_into().expect("8 bytes"));
                self.counts[usize::from(ns)].store(count, Ordering::Relaxed);
                at += 10;
            }
            tracing::info!("key counts loaded from the clean-shutdown record");
        } else {
            self.start_recount(engine.snapshot());
        }
        Ok(())
    }

    /// Rebuilds every namespace's count from `snapshot` on a background thread (start-up after
    /// a crash): O(keys). See [`Recount`] for why writes may go on meanwhile.
    fn start_recount(&self, snapshot: ringkv_engine::Snapshot) {
        *self.recount.running.lock() = true;
        let counts = self.counts.clone();
        let recount = self.recount.clone();
        let layout = self.layout;
        let gate = self.recount_gate.lock().take();
        tracing::info!("rebuilding key counts in the background (no clean-shutdown record)");
        let spawned = std::thread::Builder::new()
            .name("ringkv-recount".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    gate.wait();
                }
                let started = Instant::now();
                match count_snapshot(layout, &snapshot) {
                    Ok(found) => {
                        for (ns, n) in found.iter().enumerate().filter(|(_, n)| **n != 0) {
                            counts[ns].fetch_add(*n, Ordering::Relaxed);
                        }
                        tracing::info!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            keys = found.iter().sum::<i64>(),
                            "key counts rebuilt by a full scan"
                        );
                    }
                    // Counts stay partial (DBSIZE low); the data itself is untouched and the
                    // error names the damaged file.
                    Err(error) => tracing::error!(%error, "key count rebuild failed"),
                }
                drop(snapshot);
                recount.finish();
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start the key count rebuild");
            self.recount.finish();
        }
    }

    /// True once key counts are exact (false while a rebuild after a crash runs).
    pub fn counts_ready(&self) -> bool {
        !*self.recount.running.lock()
    }

    /// Waits until key counts are exact. Blocking (seconds after a crash with many keys): an
    /// async caller checks [`Keyspace::counts_ready`] first and waits off its runtime.
    pub fn wait_for_counts(&self) {
        self.recount.wait();
    }

    /// Saves the counts of mapped namespaces with the engine sequence they match, then closes
    /// the engine. Called once at clean shutdown, after connections and background tasks stop.
    pub fn close(&self) -> Result<(), ringkv_engine::Error> {
        // The record must hold exact counts.
        self.recount.wait();
        let _maintenance = self.maintenance.lock();
        if self.is_replica() {
            // No counts record: it would take a sequence the leader did not write.
            return self.engine().close();
        }
        let mut value = Vec::with_capacity(DATABASES * 10);
        for logical in 0..DATABASES {
            let ns = self.namespace(logical);
            value.extend_from_slice(&ns.to_be_bytes());
            value.extend_from_slice(
                &self.counts[usize::from(ns)]
                    .load(Ordering::Relaxed)
                    .to_be_bytes(),
            );
        }
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(keys::meta_counts(), value, None);
        self.engine().write(batch)?;
        self.engine().close()
    }

    /// The engine (a handle: cheap to clone).
    pub fn engine(&self) -> Db {
        self.engine.read().clone()
    }

    /// Stalled writes give up (the engine's `interrupt_stalls`): the first step of a shutdown.
    pub fn interrupt_stalls(&self) {
        self.engine.read().interrupt_stalls();
    }

    /// True when a write now may wait long (the engine slows or stalls writers): see
    /// [`Db::write_may_wait`]. Async callers run such writes off their runtime.
    pub fn write_may_wait(&self) -> bool {
        self.engine.read().write_may_wait()
    }

    /// The engine's last committed sequence, without cloning the handle (every write command
    /// asks for it).
    pub fn last_sequence(&self) -> u64 {
        self.engine.read().last_sequence()
    }

    /// The last sequence written, visible or (under `always`) waiting for its fsync
    /// (`Db::last_written_sequence`): what a writer syncs to before it answers.
    pub fn last_written_sequence(&self) -> u64 {
        self.engine.read().last_written_sequence()
    }

    /// Current Unix time in ms, from the same clock the engine expires with.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The namespace logical database `db` maps to.
    pub fn namespace(&self, db: usize) -> Namespace {
        assert!(db < DATABASES, "logical db {db} out of range");
        self.map[db].load(Ordering::Acquire)
    }

    fn stripe(key: &[u8]) -> usize {
        // FNV-1a: fast, and good enough to spread keys over stripes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in key {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % LOCK_STRIPES as u64) as usize
    }

    /// Locks `keys` (in any database) until the guard drops. Read-modify-write commands hold it
    /// across their read and their write so concurrent clients never lose an update. Stripes
    /// are taken in ascending order (no deadlock between multi-key commands) and are
    /// reentrant, so the keyspace's own write functions can lock again on the same thread.
    pub fn lock_keys(&self, keys: &[&[u8]]) -> KeyGuard<'_> {
        if let [key] = keys {
            return KeyGuard::One(self.stripes[Self::stripe(key)].lock());
        }
        let mut stripes: Vec<usize> = keys.iter().map(|k| Self::stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        KeyGuard::Many(
            stripes
                .into_iter()
                .map(|s| self.stripes[s].lock())
                .collect(),
        )
    }

    fn read(&self, ns: Namespace, key: &[u8]) -> Result<Option<Entry>> {
        // The hot path of every command: build the engine key in a reused buffer and read through
        // the lock guard, so a read allocates nothing and bumps no shared reference count.
        DATA_KEY.with(|buffer| {
            let mut data_key = buffer.borrow_mut();
            self.layout.write_data_key(&mut data_key, ns, key);
            Ok(self.engine.read().get(&data_key)?)
        })
    }

    /// The version and expiry of `key` if it is live, without its value (`Db::head`): what a
    /// write that does not look at the old value needs (SET, MSET, DEL), and EXISTS and WATCH.
    fn head(&self, ns: Namespace, key: &[u8]) -> Result<Option<EntryHead>> {
        DATA_KEY.with(|buffer| {
            let mut data_key = buffer.borrow_mut();
            self.layout.write_data_key(&mut data_key, ns, key);
            Ok(self.engine.read().head(&data_key)?)
        })
    }

    fn commit(&self, change: Change) -> Result<u64> {
        if change.batch.is_empty() {
            return Ok(0);
        }
        let seq = self.engine.read().write_deferred(change.batch)?;
        for (ns, delta) in change.deltas.into_iter() {
            self.counts[usize::from(ns)].fetch_add(delta, Ordering::Relaxed);
        }
        for stripe in change.stripes.into_iter() {
            self.write_epochs[stripe].fetch_add(1, Ordering::Release);
        }
        Ok(seq)
    }

    /// The live value of `key` in `db`, any type.
    pub fn get(&self, db: usize, key: &[u8]) -> Result<Option<StoredValue>> {
        match self.read(self.namespace(db), key)? {
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Some(entry) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                StoredValue::from_entry(entry).map(Some)
            }
        }
    }

    /// Zeroes hits, misses and expired keys (CONFIG RESETSTAT).
    pub fn reset_stats(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        self.expired_keys.store(0, Ordering::Relaxed);
    }

    /// (hits, misses) of [`Keyspace::get`] since start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The live string at `key`; [`Error::WrongType`] if it holds another type.
    pub fn get_string(&self, db: usize, key: &[u8]) -> Result<Option<StrValue>> {
        match self.get(db, key)? {
            None => Ok(None),
            Some(value) if value.value_type == ValueType::String => Ok(Some(StrValue {
                data: value.payload(),
                expires_at_ms: value.expires_at_ms,
                version: value.version,
            })),
            Some(_) => Err(Error::WrongType),
        }
    }

    /// Sets `key` to the string `data` (whatever it held before), expiring at
    /// `expires_at_ms`. An expiry not in the future deletes the key, as Redis does. Returns the
    /// write's sequence (0 when nothing was written).
    pub fn set_string(
        &self,
        db: usize,
        key: &[u8],
        data: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<u64> {
        self.set_raw(
            db,
            key,
            encode_value(ValueType::String, data),
            expires_at_ms,
        )
    }

    /// Sets `key` to an encoded value (`[tag][payload]`).
    pub fn set_raw(
        &self,
        db: usize,
        key: &[u8],
        raw: Bytes,
        expires_at_ms: Option<u64>,
    ) -> Result<u64> {
        let _guard = self.lock_keys(&[key]);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let old = self.head(ns, key)?.map(Prior::from);
        let mut change = Change::new(self.layout);
        self.put_or_expire(&mut change, ns, key, old, raw, expires_at_ms);
        self.commit(change)
    }

    /// Puts `raw`, or removes the key when the expiry is not in the future. True if it put.
    fn put_or_expire(
        &self,
        change: &mut Change,
        ns: Namespace,
        key: &[u8],
        old: Option<Prior>,
        raw: Bytes,
        expires_at_ms: Option<u64>,
    ) -> bool {
        match expires_at_ms {
            Some(at) if at <= self.now_ms() => {
                if let Some(old) = old {
                    change.remove(ns, key, old);
                }
                false
            }
            _ => {
                change.put(ns, key, old, raw, expires_at_ms);
                true
            }
        }
    }

    /// Sets several strings at once, all or nothing (MSET): one engine batch. A key given twice
    /// takes its last value.
    pub fn write_strings(&self, db: usize, items: &[(Bytes, Bytes, Option<u64>)]) -> Result<u64> {
        let key_refs: Vec<&[u8]> = items.iter().map(|(k, _, _)| &k[..]).collect();
        let _guard = self.lock_keys(&key_refs);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let mut last: std::collections::HashMap<&[u8], usize> =
            std::collections::HashMap::with_capacity(items.len());
        for (i, (key, _, _)) in items.iter().enumerate() {
            last.insert(&key[..], i);
        }
        let mut change = Change::new(self.layout);
        for (i, (key, data, expires_at_ms)) in items.iter().enumerate() {
            if last[&key[..]] != i {
                continue;
            }
            let old = self.head(ns, key)?.map(Prior::from);
            self.put_or_expire(
                &mut change,
                ns,
                key,
                old,
                encode_value(ValueType::String, data),
                *expires_at_ms,
            );
        }
        self.commit(change)
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, db: usize, key: &[u8]) -> Result<bool> {
        Ok(self.delete_many(db, &[key])? == 1)
    }

    /// Deletes `keys` in one batch; the number that existed (a key named twice counts once).
    pub fn delete_many(&self, db: usize, keys_to_delete: &[&[u8]]) -> Result<i64> {
        let _guard = self.lock_keys(keys_to_delete);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let mut change = Change::new(self.layout);
        let mut seen = std::collections::HashSet::with_capacity(keys_to_delete.len());
        let mut deleted = 0;
        for &key in keys_to_delete {
            if !seen.insert(key) {
                continue;
            }
            if let Some(old) = self.head(ns, key)? {
                change.remove(ns, key, old.into());
                deleted += 1;
            }
        }
        self.commit(change)?;
        Ok(deleted)
    }

    /// True if `key` holds a live value.
    pub fn exists(&self, db: usize, key: &[u8]) -> Result<bool> {
        Ok(self.head(self.namespace(db), key)?.is_some())
    }

    fn epoch_slot(ns: Namespace, key: &[u8]) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in ns.to_be_bytes().iter().chain(key) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % LOCK_STRIPES as u64) as usize
    }

    /// The write epoch of `key` in `db`: changes whenever a key hashing to the same slot is
    /// written. Read it before [`Keyspace::version`] when watching.
    pub fn write_epoch(&self, db: usize, key: &[u8]) -> u64 {
        self.write_epochs[Self::epoch_slot(self.namespace(db), key)].load(Ordering::Acquire)
    }

    /// The engine version of `key` (None when absent or expired): what WATCH remembers.
    pub fn version(&self, db: usize, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.head(self.namespace(db), key)?.map(|e| e.version))
    }

    /// Changes the expiry of a live key (None = persist). An expiry not in the future deletes
    /// it. False when the key does not exist. `decide` sees the current expiry and says whether
    /// to go on (EXPIRE's NX/XX/GT/LT), all under the key's lock.
    pub fn update_expiry(
        &self,
        db: usize,
        key: &[u8],
        decide: impl FnOnce(Option<u64>) -> Option<Option<u64>>,
    ) -> Result<bool> {
        let _guard = self.lock_keys(&[key]);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let Some(old) = self.read(ns, key)? else {
            return Ok(false);
        };
        let Some(expires_at_ms) = decide(old.expires_at_ms) else {
            return Ok(false);
        };
        let mut change = Change::new(self.layout);
        self.put_or_expire(
            &mut change,
            ns,
            key,
            Some(Prior::from(&old)),
            old.value.clone(),
            expires_at_ms,
        );
        self.commit(change)?;
        Ok(true)
    }

    /// RENAME / RENAMENX (`only_if_absent`): moves the value and its expiry in one batch.
    pub fn rename(
        &self,
        db: usize,
        from: &[u8],
        to: &[u8],
        only_if_absent: bool,
    ) -> Result<RenameOutcome> {
        let _guard = self.lock_keys(&[from, to]);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let Some(source) = self.read(ns, from)? else {
            return Ok(RenameOutcome::NoSuchKey);
        };
        if from == to {
            return Ok(if only_if_absent {
                RenameOutcome::DestinationExists
            } else {
                RenameOutcome::Renamed
            });
        }
        let target = self.read(ns, to)?;
        if only_if_absent && target.is_some() {
            return Ok(RenameOutcome::DestinationExists);
        }
        let mut change = Change::new(self.layout);
        change.remove(ns, from, Prior::from(&source));
        change.put(
            ns,
            to,
            target.as_ref().map(Prior::from),
            source.value.clone(),
            source.expires_at_ms,
        );
        self.commit(change)?;
        Ok(RenameOutcome::Renamed)
    }

    /// COPY: true if copied. Same key in the same db is the caller's error to report.
    pub fn copy(
        &self,
        from_db: usize,
        from: &[u8],
        to_db: usize,
        to: &[u8],
        replace: bool,
    ) -> Result<bool> {
        let _guard = self.lock_keys(&[from, to]);
        let _mapped = self.remap.read();
        let from_ns = self.namespace(from_db);
        let to_ns = self.namespace(to_db);
        let Some(source) = self.read(from_ns, from)? else {
            return Ok(false);
        };
        let target = self.read(to_ns, to)?;
        if target.is_some() && !replace {
            return Ok(false);
        }
        let mut change = Change::new(self.layout);
        change.put(
            to_ns,
            to,
            target.as_ref().map(Prior::from),
            source.value.clone(),
            source.expires_at_ms,
        );
        self.commit(change)?;
        Ok(true)
    }

    /// MOVE: true if `key` moved from `from_db` to `to_db` (absent in the source or present in
    /// the target: false).
    pub fn move_key(&self, from_db: usize, to_db: usize, key: &[u8]) -> Result<bool> {
        let _guard = self.lock_keys(&[key]);
        let _mapped = self.remap.read();
        let from_ns = self.namespace(from_db);
        let to_ns = self.namespace(to_db);
        let Some(source) = self.read(from_ns, key)? else {
            return Ok(false);
        };
        if self.read(to_ns, key)?.is_some() {
            return Ok(false);
        }
        let mut change = Change::new(self.layout);
        change.remove(from_ns, key, Prior::from(&source));
        change.put(to_ns, key, None, source.value.clone(), source.expires_at_ms);
        self.commit(change)?;
        Ok(true)
    }

    /// Keys in `db` (expired ones not yet swept included, as Redis' DBSIZE).
    pub fn dbsize(&self, db: usize) -> i64 {
        self.wait_for_counts();
        self.counts[usize::from(self.namespace(db))]
            .load(Ordering::Relaxed)
            .max(0)
    }

    /// Keys with an expiry in `db`, for INFO keyspace: not tracked per namespace, so this is
    /// only computed on demand by scanning the index (bounded by `limit`).
    pub fn expiring_keys(&self, db: usize, limit: usize) -> Result<u64> {
        let ns = self.namespace(db);
        let (start, end) = keys::family_span(keys::FAMILY_EXPIRY);
        let mut count = 0;
        for entry in self
            .engine()
            .range::<[u8], _>(span(&start, &end))
            .take(limit)
        {
            let entry = entry?;
            if matches!(self.layout.decode(&entry.key), EngineKey::Expiry { ns: n, .. } if n == ns)
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Live entries of `db` between two user-key bounds, in order, at a snapshot taken now.
    /// Items are (user key, entry).
    pub fn range(
        &self,
        db: usize,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> impl Iterator<Item = Result<(Bytes, Entry)>> {
        let ns = self.namespace(db);
        let layout = self.layout;
        let (start_key, end_key) = layout.data_bounds(ns, start, end);
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) =
            (as_ref_bound(&start_key), as_ref_bound(&end_key));
        self.engine()
            .range::<[u8], _>(bounds)
            .map(move |item| match item {
                Ok(entry) => Ok((layout.user_key_of_data(&entry.key), entry)),
                Err(error) => Err(Error::Engine(error)),
            })
    }

    /// Every live entry of the hash slots `wanted` accepts, in every logical database, at a
    /// snapshot per database taken now: `each(slot, database, user key, stored value)`. In
    /// the plain layout this reads every key (anti-entropy batches the slots it asks for,
    /// so an exchange costs one pass); the slot-first layout reads only the slots' ranges.
    pub fn for_each_in_slots(
        &self,
        wanted: &dyn Fn(u16) -> bool,
        each: &mut dyn FnMut(u16, usize, Bytes, StoredValue),
    ) -> Result<()> {
        self.for_each_in_slots_from(wanted, None, usize::MAX, &mut |slot, db, key, value| {
            each(slot, db, key, value);
            true
        })?;
        Ok(())
    }

    /// [`Keyspace::for_each_in_slots`] in chunks: starts after the position `after`
    /// (database, user key), and stops once `each` returns false or `budget` keys were read
    /// (those of other slots count: they cost the same). Returns where it stopped, to pass
    /// as `after` next time, or `None` once every database was read to its end. Positions
    /// are the same on every node, so a pass may go on against another node's store.
    pub fn for_each_in_slots_from(
        &self,
        wanted: &dyn Fn(u16) -> bool,
        after: Option<(usize, &[u8])>,
        budget: usize,
        each: &mut dyn FnMut(u16, usize, Bytes, StoredValue) -> bool,
    ) -> Result<Option<(usize, Bytes)>> {
        let mut read = 0usize;
        let first_db = after.map_or(0, |(db, _)| db);
        for db in first_db..DATABASES {
            let ns = self.namespace(db);
            let resume = match after {
                Some((after_db, key)) if after_db == db => Some(self.layout.data_key(ns, key)),
                _ => None,
            };
            for (start, end) in self.layout.namespace_spans(ns) {
                let lower = match &resume {
                    Some(resume) if resume[..] >= end[..] => continue,
                    Some(resume) if resume[..] >= start[..] => Bound::Excluded(&resume[..]),
                    _ => Bound::Included(&start[..]),
                };
                for item in self
                    .engine()
                    .range::<[u8], _>((lower, Bound::Excluded(&end[..])))
                {
                    let entry = item.map_err(Error::Engine)?;
                    let Some((_, key)) = self.layout.decode_data_key(&entry.key) else {
                        continue;
                    };
                    read += 1;
                    let slot = keys::key_slot(key);
                    let key = Bytes::copy_from_slice(key);
                    if wanted(slot) && !each(slot, db, key.clone(), StoredValue::from_entry(entry)?)
                    {
                        return Ok(Some((db, key)));
                    }
                    if read >= budget {
                        return Ok(Some((db, key)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// FLUSHDB: points `db` at a fresh namespace at once; the old one's keys are deleted by
    /// [`Keyspace::drop_pending`] in the background. Returns the dropped namespace.
    pub fn flush_db(&self, db: usize) -> Result<()> {
        self.flush(&[db])
    }

    /// FLUSHALL: [`Keyspace::flush_db`] for every database in one batch.
    pub fn flush_all(&self) -> Result<()> {
        let all: Vec<usize> = (0..DATABASES).collect();
        self.flush(&all)
    }

    fn flush(&self, dbs: &[usize]) -> Result<()> {
        let _remapping = self.remap.write();
        let mut admin = self.admin.lock();
        let mut batch = WriteBatch::new();
        let mut remap = Vec::with_capacity(dbs.len());
        let mut taken: Vec<Namespace> = (0..DATABASES).map(|d| self.namespace(d)).collect();
        taken.extend_from_slice(&admin.dropping);
        for &db in dbs {
            let old = self.namespace(db);
            if self.counts[usize::from(old)].load(Ordering::Relaxed) == 0
                && self.is_namespace_empty(old)?
            {
                continue; // nothing to drop: keep the namespace
            }
            let mut candidate = admin.next_namespace;
            let mut tries = 0;
            while taken.contains(&candidate) {
                candidate = candidate.wrapping_add(1);
                tries += 1;
                if tries > NAMESPACES {
                    return Err(Error::NamespacesExhausted);
                }
            }
            taken.push(candidate);
            admin.next_namespace = candidate.wrapping_add(1);
            batch.put(
                keys::meta_db_map(db as u8),
                keys::encode_namespace(candidate),
                None,
            );
            batch.put(keys::meta_drop(old), Bytes::new(), None);
            remap.push((db, old, candidate));
        }
        if remap.is_empty() {
            return Ok(());
        }
        batch.put(
            keys::meta_next_namespace(),
            keys::encode_namespace(admin.next_namespace),
            None,
        );
        self.engine().write(batch)?;
        for (db, old, new) in remap {
            self.counts[usize::from(new)].store(0, Ordering::Relaxed);
            self.map[db].store(new, Ordering::Release);
            admin.dropping.push(old);
        }
        Ok(())
    }

    fn is_namespace_empty(&self, ns: Namespace) -> Result<bool> {
        let engine = self.engine();
        for (start, end) in self.layout.namespace_spans(ns) {
            if engine
                .range::<[u8], _>(span(&start, &end))
                .next()
                .transpose()?
                .is_some()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// SWAPDB: exchanges two map entries in one batch.
    pub fn swap_db(&self, a: usize, b: usize) -> Result<()> {
        let _remapping = self.remap.write();
        let _admin = self.admin.lock();
        let ns_a = self.namespace(a);
        let ns_b = self.namespace(b);
        let mut batch = WriteBatch::new();
        batch.put(
            keys::meta_db_map(a as u8),
            keys::encode_namespace(ns_b),
            None,
        );
        batch.put(
            keys::meta_db_map(b as u8),
            keys::encode_namespace(ns_a),
            None,
        );
        self.engine().write(batch)?;
        self.map[a].store(ns_b, Ordering::Release);
        self.map[b].store(ns_a, Ordering::Release);
        Ok(())
    }

    /// True while flushed namespaces wait to be cleared.
    pub fn has_pending_drops(&self) -> bool {
        self.pending_drops() > 0
    }

    /// Flushed namespaces still being cleared (INFO `flushes_pending`).
    pub fn pending_drops(&self) -> usize {
        self.admin.lock().dropping.len()
    }

    /// Deletes every key of the namespaces FLUSHDB/FLUSHALL let go, then frees them for reuse.
    /// Blocking; run it off the async runtime. Between batches it asks `keep_going` and stops
    /// early when told (a shutdown): the drop markers stay, so the next run resumes.
    pub fn drop_pending(&self, keep_going: &dyn Fn() -> bool) -> Result<()> {
        let _maintenance = self.maintenance.lock();
        let dropping = self.admin.lock().dropping.clone();
        if dropping.is_empty() {
            return Ok(());
        }
        let spans: Vec<_> = dropping
            .iter()
            .flat_map(|&ns| self.layout.namespace_spans(ns))
            .collect();
        for (start, end) in spans {
            // Resume after the last deleted key: starting over would walk the tombstones of
            // every earlier batch again (quadratic in the namespace's size).
            let mut last: Option<Bytes> = None;
            loop {
                let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match &last {
                    Some(key) => (Bound::Excluded(&key[..]), Bound::Excluded(&end[..])),
                    None => span(&start, &end),
                };
                let mut batch = WriteBatch::with_capacity(DROP_BATCH_KEYS);
                for entry in self.engine().range::<[u8], _>(bounds).take(DROP_BATCH_KEYS) {
                    let key = entry?.key;
                    last = Some(key.clone());
                    batch.delete(key);
                }
                if batch.is_empty() {
                    break;
                }
                self.engine().write_deferred(batch)?;
                if !keep_going() {
                    return Ok(());
                }
            }
        }
        let (index_start, index_end) = keys::family_span(keys::FAMILY_EXPIRY);
        let mut batch = WriteBatch::with_capacity(DROP_BATCH_KEYS);
        for entry in self
            .engine()
            .range::<[u8], _>(span(&index_start, &index_end))
        {
            let entry = entry?;
            if matches!(self.layout.decode(&entry.key), EngineKey::Expiry { ns, .. } if dropping.contains(&ns))
            {
                batch.delete(entry.key);
                if batch.len() >= DROP_BATCH_KEYS {
                    self.engine().write_deferred(std::mem::take(&mut batch))?;
                }
            }
        }
        for &ns in &dropping {
            batch.delete(keys::meta_drop(ns));
        }
        self.engine().write(batch)?;
        let mut admin = self.admin.lock();
        admin.dropping.retain(|ns| !dropping.contains(ns));
        for &ns in &dropping {
            self.counts[usize::from(ns)].store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the active expiry sweep runs (`DEBUG SET-ACTIVE-EXPIRE`).
    pub fn active_expire(&self) -> bool {
        self.active_expire.load(Ordering::Relaxed)
    }

    /// Turns the active expiry sweep on or off.
    pub fn set_active_expire(&self, on: bool) {
        self.active_expire.store(on, Ordering::Relaxed);
    }

    /// Keys the sweep found expired and deleted since start (INFO `expired_keys`).
    pub fn expired_keys(&self) -> u64 {
        self.expired_keys.load(Ordering::Relaxed)
    }

    /// One active-expiry cycle: removes index entries due by now, and the keys they expired,
    /// until none is due or `deadline` passes. Returns (entries removed, highest sequence
    /// written); the caller syncs that sequence. Blocking.
    pub fn expire_cycle(&self, deadline: Instant) -> Result<(u64, u64)> {
        let _maintenance = self.maintenance.lock();
        let mut removed = 0;
        let mut last_seq = 0;
        let (family_start, _) = keys::family_span(keys::FAMILY_EXPIRY);
        let mut position = self.sweep_position.lock();
        if position.1.elapsed() >= SWEEP_RESTART_PERIOD {
            // Now and then start over, for entries the resume point skipped (a clock that went
            // back, an entry the engine did not yet see as expired).
            *position = (None, Instant::now());
        }
        loop {
            let now = self.now_ms();
            let end = keys::expiry_bound(now.saturating_add(1));
            let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match &position.0 {
                Some(last) if last[..] < end[..] => {
                    (Bound::Excluded(&last[..]), Bound::Excluded(&end[..]))
                }
                Some(_) => return Ok((removed, last_seq)),
                None => span(&family_start, &end),
            };
            let due: Vec<Bytes> = self
                .engine()
                .range::<[u8], _>(bounds)
                .take(SWEEP_BATCH_KEYS)
                .map(|e| e.map(|e| e.key))
                .collect::<Result<_, _>>()?;
            let full = due.len() == SWEEP_BATCH_KEYS;
            if let Some(last) = due.last() {
                position.0 = Some(last.clone());
            }
            for index_key in due {
                let Some((at, ns, key)) = keys::decode_expiry_key(&index_key) else {
                    continue;
                };
                let _guard = self.lock_keys(&[&key]);
                let current = self.read(ns, &key)?;
                let mut change = Change::new(self.layout);
                match current {
                    Some(entry) if entry.expires_at_ms == Some(at) => continue, // clocks disagree: later
                    Some(_) => {
                        // Rewritten since: only the stale index entry (and its unit) goes.
                        change.batch.delete(index_key);
                    }
                    None => {
                        change.batch.delete(index_key);
                        change.batch.delete(self.layout.data_key(ns, &key));
                        self.expired_keys.fetch_add(1, Ordering::Relaxed);
                    }
                }
                change.delta(ns, -1);
                last_seq = last_seq.max(self.commit(change)?);
                removed += 1;
            }
            if !full || Instant::now() >= deadline {
                return Ok((removed, last_seq));
            }
        }
    }
}

// Read-modify-write in one engine read (added for the string and bitmap commands).
impl Keyspace {
    /// Read-modify-write of one key with a single engine read: under the key's lock, reads the
    /// live value (any type) and hands it to `decide`, which returns what to store — an encoded
    /// value (`[tag][payload]`, see [`encode_value`]) and its expiry, or `None` to write
    /// nothing — and a result for the caller. An expiry not in the future deletes the key, as
    /// in [`Keyspace::set_raw`]. Returns the result and the sequence written (0 if none).
    ///
    /// INCR, APPEND, SETRANGE, SETBIT, BITFIELD, GETSET and SET with GET/NX/XX/IFEQ/KEEPTTL use
    /// it so they read the key once instead of twice (`get_string` and then `set_string`'s own
    /// read of the old entry).
    pub fn update<R, E: From<Error>>(
        &self,
        db: usize,
        key: &[u8],
        decide: impl FnOnce(Option<&StoredValue>) -> Result<(Option<(Bytes, Option<u64>)>, R), E>,
    ) -> Result<(R, u64), E> {
        let _guard = self.lock_keys(&[key]);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let old_entry = self.read(ns, key).map_err(E::from)?;
        let old = old_entry
            .clone()
            .map(StoredValue::from_entry)
            .transpose()
            .map_err(E::from)?;
        let (write, result) = decide(old.as_ref())?;
        let Some((raw, expires_at_ms)) = write else {
            return Ok((result, 0));
        };
        let mut change = Change::new(self.layout);
        self.put_or_expire(
            &mut change,
            ns,
            key,
            old_entry.as_ref().map(Prior::from),
            raw,
            expires_at_ms,
        );
        Ok((result, self.commit(change).map_err(E::from)?))
    }

    /// [`Keyspace::update`] of several distinct keys as one change: every key is locked,
    /// each is read and decided in turn, and all the writes commit in one engine batch, so a
    /// reader (and a restart) sees all of them or none. An error from any decision writes
    /// nothing. Returns the decisions' results in order and the batch's sequence (0 if
    /// nothing was written).
    ///
    /// # Panics
    ///
    /// If a key is given twice (the caller merges such writes first).
    pub fn update_many<R, E: From<Error>>(
        &self,
        db: usize,
        keys: &[&[u8]],
        mut decide: impl FnMut(
            usize,
            Option<&StoredValue>,
        ) -> Result<(Option<(Bytes, Option<u64>)>, R), E>,
    ) -> Result<(Vec<R>, u64), E> {
        let distinct: std::collections::HashSet<&[u8]> = keys.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "update_many takes distinct keys"
        );
        let _guard = self.lock_keys(keys);
        let _mapped = self.remap.read();
        let ns = self.namespace(db);
        let mut change = Change::new(self.layout);
        let mut results = Vec::with_capacity(keys.len());
        for (i, &key) in keys.iter().enumerate() {
            let old_entry = self.read(ns, key).map_err(E::from)?;
            let old = old_entry
                .clone()
                .map(StoredValue::from_entry)
                .transpose()
                .map_err(E::from)?;
            let (write, result) = decide(i, old.as_ref())?;
            results.push(result);
            if let Some((raw, expires_at_ms)) = write {
                self.put_or_expire(
                    &mut change,
                    ns,
                    key,
                    old_entry.as_ref().map(Prior::from),
                    raw,
                    expires_at_ms,
                );
            }
        }
        Ok((results, self.commit(change).map_err(E::from)?))
    }
}

/// Writes of several commands on one database that commit as one engine batch
/// ([`Keyspace::batch`]): a write run of one connection's pipeline (issue 12). Each step reads
/// the key as the steps before it left it, so the steps behave as if each had committed alone;
/// counts and the expiry index change as they would have, step by step.
pub struct Batch<'a> {
    keyspace: &'a Keyspace,
    ns: Namespace,
    change: Change,
    /// What the steps wrote so far, per key (`None`: removed), read by later steps instead of
    /// the engine. A value here has version 0: sequences are given when the batch commits.
    written: std::collections::HashMap<Bytes, Option<StoredValue>>,
}

impl Keyspace {
    /// Runs `steps` on database `db` with `keys` locked, then commits what they wrote as one
    /// engine batch. Every key a step touches must be among `keys`. Returns what `steps`
    /// returned and the commit's result (the batch's sequence, 0 if nothing was written); a
    /// commit that fails wrote none of the steps.
    pub fn batch<T>(
        &self,
        db: usize,
        keys: &[&[u8]],
        steps: impl FnOnce(&mut Batch<'_>) -> T,
    ) -> (T, Result<u64>) {
        let _guard = self.lock_keys(keys);
        let _mapped = self.remap.read();
        let mut batch = Batch {
            keyspace: self,
            ns: self.namespace(db),
            change: Change::new(self.layout),
            written: std::collections::HashMap::new(),
        };
        let result = steps(&mut batch);
        (result, self.commit(batch.change))
    }
}

impl Batch<'_> {
    /// What an earlier step left at `key`: `Some(None)` when it removed it or the value it
    /// wrote has expired since, `None` when no step wrote it.
    fn written(&self, key: &[u8]) -> Option<Option<&StoredValue>> {
        let value = self.written.get(key)?;
        let now_ms = self.keyspace.now_ms();
        Some(
            value
                .as_ref()
                .filter(|v| v.expires_at_ms.is_none_or(|at| at > now_ms)),
        )
    }

    /// [`Keyspace::set_raw`] as a step: sets `key` to `raw` whatever it held.
    pub fn set(&mut self, key: &Bytes, raw: Bytes, expires_at_ms: Option<u64>) -> Result<()> {
        let old = match self.written(key) {
            Some(value) => value.map(Prior::from),
            None => self.keyspace.head(self.ns, key)?.map(Prior::from),
        };
        self.write(key, old, raw, expires_at_ms)
    }

    /// [`Keyspace::update`] as a step: `decide` sees the key as the earlier steps left it.
    pub fn update<R, E: From<Error>>(
        &mut self,
        key: &Bytes,
        decide: impl FnOnce(
            Option<&StoredValue>,
        ) -> std::result::Result<(Option<(Bytes, Option<u64>)>, R), E>,
    ) -> std::result::Result<R, E> {
        let old = match self.written(key) {
            Some(value) => value.cloned(),
            None => self
                .keyspace
                .read(self.ns, key)?
                .map(StoredValue::from_entry)
                .transpose()?,
        };
        let (write, result) = decide(old.as_ref())?;
        if let Some((raw, expires_at_ms)) = write {
            self.write(key, old.as_ref().map(Prior::from), raw, expires_at_ms)?;
        }
        Ok(result)
    }

    fn write(
        &mut self,
        key: &Bytes,
        old: Option<Prior>,
        raw: Bytes,
        expires_at_ms: Option<u64>,
    ) -> Result<()> {
        let put = self.keyspace.put_or_expire(
            &mut self.change,
            self.ns,
            key,
            old,
            raw.clone(),
            expires_at_ms,
        );
        let value = if put {
            let decoded = crate::value::decode_value(&raw)?;
            Some(StoredValue {
                value_type: decoded.value_type,
                raw,
                payload_at: decoded.payload_at,
                expires_at_ms,
                version: 0,
            })
        } else {
            None
        };
        self.written.insert(key.clone(), value);
        Ok(())
    }
}

// A replica's side of replication: batches and whole databases from the leader.
impl Keyspace {
    /// True while this server follows a leader (see `replica` field).
    pub fn is_replica(&self) -> bool {
        self.replica.load(Ordering::Acquire)
    }

    /// Switches replica mode (REPLICAOF host port / REPLICAOF NO ONE).
    pub fn set_replica(&self, replica: bool) {
        self.replica.store(replica, Ordering::Release);
    }

    /// Replaces the engine by `engine` (a database a full sync received) and rebuilds the
    /// database map, the pending drops and every key count from it. The caller holds the
    /// exec lock exclusive and has closed the old engine. Writes nothing.
    pub fn install_engine(&self, engine: Db) -> Result<(), ringkv_engine::Error> {
        // A rebuild of the old engine's counts must not add into the new ones.
        self.recount.wait();
        let _maintenance = self.maintenance.lock();
        *self.engine.write() = engine;
        for (logical, slot) in self.map.iter().enumerate() {
            slot.store(logical as Namespace, Ordering::Release);
        }
        for count in self.counts.iter() {
            count.store(0, Ordering::Relaxed);
        }
        {
            let mut admin = self.admin.lock();
            admin.next_namespace = DATABASES as Namespace;
            admin.dropping.clear();
        }
        *self.sweep_position.lock() = (None, Instant::now());
        let replica = self.replica.swap(true, Ordering::AcqRel);
        let loaded = self.load_meta();
        self.replica.store(replica, Ordering::Release);
        loaded
    }

    /// Applies one change-log batch of the leader (`Db::apply_log_batch`) and keeps the key
    /// counts, the database map and the pending drops right. Only the replication link calls
    /// it, one batch at a time, while no client can write. Returns the batch's last sequence.
    pub fn apply_replicated(&self, record: &[u8]) -> Result<u64> {
        let ops = ringkv_engine::decode_log_batch(record)
            .ok_or(Error::Corrupt("replicated batch does not decode"))?;
        let engine = self.engine();
        // Count rule (module doc): a data key counts while it lives without an expiry, an
        // expiry-index entry counts while it exists. Compare before and after each op; `after`
        // remembers keys this batch already touched.
        let mut after: std::collections::HashMap<&[u8], bool> = std::collections::HashMap::new();
        let mut deltas: Vec<(Namespace, i64)> = Vec::new();
        let mut stripes = Vec::new();
        for op in &ops {
            let key = &op.key[..];
            let (ns, counted_now, index_entry) = match self.layout.decode(key) {
                EngineKey::Data { ns, key: user_key } => {
                    stripes.push(Self::epoch_slot(ns, user_key));
                    (ns, !op.is_delete && op.expires_at_ms.is_none(), false)
                }
                EngineKey::Expiry { ns, .. } => (ns, !op.is_delete, true),
                _ => continue,
            };
            let counted_before = match after.get(key) {
                Some(&counted) => counted,
                None => match engine.get(key)? {
                    Some(entry) => index_entry || entry.expires_at_ms.is_none(),
                    None => false,
                },
            };
            after.insert(key, counted_now);
            deltas.push((ns, i64::from(counted_now) - i64::from(counted_before)));
        }
        let seq = engine.apply_log_batch(record)?;
        for (ns, delta) in deltas {
            if delta != 0 {
                self.counts[usize::from(ns)].fetch_add(delta, Ordering::Relaxed);
            }
        }
        for stripe in stripes {
            self.write_epochs[stripe].fetch_add(1, Ordering::Release);
        }
        for op in &ops {
            self.follow_meta(&op.key, op.is_delete, &engine)?;
        }
        Ok(seq)
    }

    /// Mirrors a replicated metadata write (FLUSHDB/SWAPDB's map, drop markers) in memory.
    fn follow_meta(&self, key: &[u8], is_delete: bool, engine: &Db) -> Result<()> {
        match self.layout.decode(key) {
            EngineKey::DropMarker(ns) => {
                let mut admin = self.admin.lock();
                if is_delete {
                    admin.dropping.retain(|&d| d != ns);
                    self.counts[usize::from(ns)].store(0, Ordering::Relaxed);
                } else if !admin.dropping.contains(&ns) {
                    admin.dropping.push(ns);
                }
            }
            EngineKey::DbMap(logical) if usize::from(logical) < DATABASES => {
                let mapped = engine.get(key)?;
                if let Some(ns) = mapped.and_then(|entry| keys::decode_namespace(&entry.value)) {
                    self.map[usize::from(logical)].store(ns, Ordering::Release);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Key count per namespace in `snapshot`, by the module doc's rule: data keys without an
/// expiry plus expiry-index entries.
fn count_snapshot(
    layout: Layout,
    snapshot: &ringkv_engine::Snapshot,
) -> Result<Vec<i64>, ringkv_engine::Error> {
    let mut counts = vec![0i64; NAMESPACES];
    let (data_start, data_end) = keys::family_span(keys::FAMILY_DATA);
    for entry in snapshot.range::<[u8], _>(span(&data_start, &data_end)) {
        let entry = entry?;
        if entry.expires_at_ms.is_some() {
            continue;
        }
        if let EngineKey::Data { ns, .. } = layout.decode(&entry.key) {
            counts[usize::from(ns)] += 1;
        }
    }
    let (index_start, index_end) = keys::family_span(keys::FAMILY_EXPIRY);
    for entry in snapshot.range::<[u8], _>(span(&index_start, &index_end)) {
        let entry = entry?;
        if let EngineKey::Expiry { ns, .. } = layout.decode(&entry.key) {
            counts[usize::from(ns)] += 1;
        }
    }
    Ok(counts)
}

/// `[start, end)` as engine range bounds.
fn span<'k>(start: &'k [u8], end: &'k [u8]) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    (Bound::Included(start), Bound::Excluded(end))
}

fn as_ref_bound(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
