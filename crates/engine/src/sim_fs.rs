//! A simulated file system for tests: an in-memory [`Storage`] that models
//! the page cache, so a test can cut the power and see exactly what a real
//! disk would have kept, and that injects faults from a seed.
//!
//! What survives a power cut ([`SimFs::power_cut`]):
//! - a file's bytes as of its last successful [`StorageFile::sync`];
//! - a name (create, rename, link, unlink) as of the last
//!   [`Storage::sync_dir`] of its directory.
//!
//! Everything else is volatile. A [`PowerCut`] says what the "disk" did
//! with it: drop it all (the default), or write back a random prefix of a
//! file's unsynced writes with the last one torn at a sector boundary, or
//! apply a random subset of the unsynced name changes in any order (ext4
//! commits a rename without the create before it, or the reverse).
//!
//! A failed fsync behaves as Linux's since 4.13: the error is reported once,
//! the dirty pages are marked clean, and the bytes stay readable from the
//! cache but never reach the disk ("fsyncgate"), which is why the engine
//! must poison itself rather than retry.
//!
//! Faults ([`FaultConfig`]) are drawn from a seeded generator: EIO or ENOSPC
//! on any call, a failed fsync, a short write (a prefix lands, then an
//! error), a bit flip in what a read returns. Runs are deterministic as far
//! as the calls come in the same order; the engine's background threads can
//! reorder them a little, so a seed replays the same workload, power-cut
//! point and fault rates, not necessarily the exact same interleaving.
//!
//! Simplifications: directories are durable as soon as they are created,
//! and renaming or removing a whole directory is applied at once to both the
//! volatile and the durable state (only checkpoints do either).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{Storage, StorageFile, StorageLock};

/// Bytes of a disk sector: a torn write keeps a whole number of them.
pub const SECTOR_BYTES: u64 = 512;

/// What the disk does with volatile state when the power goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCut {
    /// Write back a random prefix of each file's unsynced writes, the last
    /// of them torn at a sector boundary (false: drop them all).
    pub tear_writes: bool,
    /// Apply a random subset of the unsynced name changes, in their order
    /// but with gaps (false: drop them all).
    pub reorder_metadata: bool,
}

/// Fault rates, each the probability that one eligible call fails that way.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultConfig {
    /// Seed of the generator that decides every fault.
    pub seed: u64,
    /// Any call fails with EIO.
    pub eio: f64,
    /// A call that allocates space (write, create, rename, link) fails with ENOSPC.
    pub enospc: f64,
    /// An fsync (file or directory) fails with EIO and drops the dirty data.
    pub fsync: f64,
    /// A write lands partly, then fails with ENOSPC.
    pub short_write: f64,
    /// A read returns one bit flipped (the stored bytes stay intact).
    pub bit_flip: f64,
    /// Calls that pass before any fault may happen.
    pub start_after_calls: u64,
    /// Stop injecting after the first fault.
    pub one_shot: bool,
}

/// A file system operation, for [`SimFs::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOp {
    /// `Storage::create`.
    Create,
    /// `Storage::open`.
    Open,
    /// `StorageFile::append` or `write_at`.
    Write,
    /// `StorageFile::read_at` (and `Storage::read`).
    Read,
    /// `StorageFile::sync`.
    Sync,
    /// `Storage::sync_dir`.
    SyncDir,
    /// `Storage::rename`.
    Rename,
    /// `Storage::remove`.
    Remove,
    /// `Storage::list`.
    List,
}

/// A fault aimed at one operation on paths containing some text.
#[derive(Debug, Clone)]
struct Targeted {
    op: SimOp,
    path_contains: String,
    remaining: u64,
}

/// Faults injected so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// EIO on a call.
    pub eio: u64,
    /// ENOSPC on a call.
    pub enospc: u64,
    /// Failed fsyncs.
    pub fsync: u64,
    /// Short writes.
    pub short_write: u64,
    /// Bit flips on read.
    pub bit_flip: u64,
    /// Calls made (all kinds).
    pub calls: u64,
}

impl FaultCounts {
    /// All faults injected.
    pub fn total(&self) -> u64 {
        self.eio + self.enospc + self.fsync + self.short_write + self.bit_flip
    }
}

/// A small, fast, seedable generator (SplitMix64): the simulation must not
/// depend on a crate's generator changing between versions.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// One unsynced change to a file's bytes.
#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What the disk holds.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    unsynced: Vec<Change>,
}

/// One unsynced name change.
#[derive(Debug, Clone)]
enum NameChange {
    Link {
        path: PathBuf,
        inode: u64,
    },
    Unlink {
        path: PathBuf,
        inode: u64,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        inode: u64,
    },
}

impl NameChange {
    fn touches(&self, dir: &Path) -> bool {
        let parent = |p: &Path| p.parent() == Some(dir);
        match self {
            NameChange::Link { path, .. } | NameChange::Unlink { path, .. } => parent(path),
            NameChange::Rename { from, to, .. } => parent(from) || parent(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NameChange::Link { path, inode } => {
                names.insert(path.clone(), *inode);
            }
            NameChange::Unlink { path, inode } => {
                if names.get(path) == Some(inode) {
                    names.remove(path);
                }
            }
            NameChange::Rename { from, to, inode } => {
                if names.get(from) == Some(inode) {
                    names.remove(from);
                }
                names.insert(to.clone(), *inode);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
    Sync,
    /// A name change that may need space (create, rename, link).
    Allocate,
    /// Anything else (remove, list, exists, lock).
    Other,
}

#[derive(Debug)]
struct State {
    /// False once the power was cut: the old "process" sees EIO for ever.
    alive: bool,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    unsynced_names: Vec<NameChange>,
    locks: BTreeSet<PathBuf>,
    rng: SimRng,
    faults: FaultConfig,
    counts: FaultCounts,
    /// A fault was injected since the last `set_faults` (for `one_shot`).
    fired: bool,
    /// `counts.calls` when the faults were set.
    calls_at_config: u64,
    /// The call at which the power goes (it and every later call fail).
    die_at_call: Option<u64>,
    /// Faults aimed at named operations ([`SimFs::fail_next`]).
    targeted: Vec<Targeted>,
}

/// What a call is to do: go on, or fail (after `partial` bytes for a write).
enum Verdict {
    Proceed,
    Fail(io::Error),
    Short(io::Error),
    FlipBit,
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

impl State {
    fn new(seed: u64) -> State {
        State {
            alive: true,
            inodes: HashMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            unsynced_names: Vec::new(),
            locks: BTreeSet::new(),
            rng: SimRng::new(seed),
            faults: FaultConfig::default(),
            counts: FaultCounts::default(),
            fired: false,
            calls_at_config: 0,
            die_at_call: None,
            targeted: Vec::new(),
        }
    }

    /// Counts a call and decides whether a fault hits it.
    fn judge(&mut self, call: Call) -> Verdict {
        if !self.alive {
            return Verdict::Fail(io::Error::from_raw_os_error(EIO));
        }
        self.counts.calls += 1;
        if self.die_at_call == Some(self.counts.calls) {
            self.alive = false;
            return Verdict::Fail(io::Error::from_raw_os_error(EIO));
        }
        let f = self.faults;
        if self.counts.calls - self.calls_at_config <= f.start_after_calls
            || (f.one_shot && self.fired)
        {
            return Verdict::Proceed;
        }
        let verdict = self.draw(call);
        if !matches!(verdict, Verdict::Proceed) {
            self.fired = true;
        }
        verdict
    }

    fn draw(&mut self, call: Call) -> Verdict {
        let f = self.faults;
        if self.rng.chance(f.eio) {
            self.counts.eio += 1;
            return Verdict::Fail(io::Error::from_raw_os_error(EIO));
        }
        match call {
            Call::Write if self.rng.chance(f.short_write) => {
                self.counts.short_write += 1;
                Verdict::Short(io::Error::from_raw_os_error(ENOSPC))
            }
            Call::Write | Call::Allocate if self.rng.chance(f.enospc) => {
                self.counts.enospc += 1;
                Verdict::Fail(io::Error::from_raw_os_error(ENOSPC))
            }
            Call::Sync if self.rng.chance(f.fsync) => {
                self.counts.fsync += 1;
                Verdict::Fail(io::Error::from_raw_os_error(EIO))
            }
            Call::Read if self.rng.chance(f.bit_flip) => {
                self.counts.bit_flip += 1;
                Verdict::FlipBit
            }
            _ => Verdict::Proceed,
        }
    }

    /// Fails with EIO when a [`SimFs::fail_next`] aims at `op` on `path`.
    fn aimed(&mut self, op: SimOp, path: &Path) -> io::Result<()> {
        let path = path.to_string_lossy();
        let hit = self
            .targeted
            .iter_mut()
            .find(|t| t.op == op && t.remaining > 0 && path.contains(&t.path_contains));
        match hit {
            Some(target) => {
                target.remaining -= 1;
                self.counts.eio += 1;
                Err(io::Error::from_raw_os_error(EIO))
            }
            None => Ok(()),
        }
    }

    fn check(&mut self, call: Call) -> io::Result<()> {
        match self.judge(call) {
            Verdict::Fail(e) | Verdict::Short(e) => Err(e),
            Verdict::Proceed | Verdict::FlipBit => Ok(()),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.dirs.contains(dir) => Ok(()),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn rename_change(&mut self, change: NameChange) {
        change.apply(&mut self.names);
        self.unsynced_names.push(change);
    }
}

/// The simulated file system. Clones share one state.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new(0)
    }
}

impl SimFs {
    /// An empty file system whose random choices come from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State::new(seed))),
        }
    }

    /// Sets the fault rates (and reseeds the fault generator).
    pub fn set_faults(&self, faults: FaultConfig) {
        let mut state = self.state.lock();
        state.rng = SimRng::new(faults.seed);
        state.faults = faults;
        state.fired = false;
        state.calls_at_config = state.counts.calls;
    }

    /// Makes the power go at call `call` from now (counting from 1): that
    /// call and every later one fail with EIO and change nothing, so a
    /// [`SimFs::power_cut`] afterwards sees the disk as it was at that
    /// instant, possibly in the middle of a flush or a manifest write.
    pub fn cut_power_at_call(&self, call: u64) {
        let mut state = self.state.lock();
        state.die_at_call = Some(state.counts.calls + call.max(1));
    }

    /// Makes the next `count` calls of `op` on a path containing
    /// `path_contains` fail with EIO (counted as EIO faults), whatever the
    /// fault rates: a test aims at one step of a flush or a manifest write.
    pub fn fail_next(&self, op: SimOp, path_contains: &str, count: u64) {
        self.state.lock().targeted.push(Targeted {
            op,
            path_contains: path_contains.to_string(),
            remaining: count,
        });
    }

    /// True once the power is gone (by [`SimFs::cut_power_at_call`] or
    /// [`SimFs::power_cut`]).
    pub fn is_dead(&self) -> bool {
        !self.state.lock().alive
    }

    /// Faults injected so far, and calls made.
    pub fn fault_counts(&self) -> FaultCounts {
        self.state.lock().counts
    }

    /// Cuts the power: this file system (and every file open on it) fails
    /// every call from now on with EIO, as the process that used it is
    /// gone. Returns the file system as the disk holds it after `cut`, with
    /// faults off and the call counter at zero.
    pub fn power_cut(&self, cut: PowerCut, seed: u64) -> SimFs {
        let mut old = self.state.lock();
        old.alive = false;
        let mut rng = SimRng::new(seed);
        let mut names = old.durable_names.clone();
        for change in &old.unsynced_names {
            if cut.reorder_metadata && rng.chance(0.5) {
                change.apply(&mut names);
            }
        }
        let mut next = State::new(seed);
        next.dirs = old.dirs.clone();
        next.next_inode = old.next_inode;
        for &inode in names.values() {
            if next.inodes.contains_key(&inode) {
                continue;
            }
            let file = &old.inodes[&inode];
            let mut disk = file.durable.clone();
            if cut.tear_writes && !file.unsynced.is_empty() {
                let kept = rng.below(file.unsynced.len() as u64 + 1) as usize;
                for (i, change) in file.unsynced.iter().enumerate().take(kept + 1) {
                    let torn = i == kept;
                    apply_change(&mut disk, change, torn.then_some(&mut rng));
                }
            }
            next.inodes.insert(
                inode,
                Inode {
                    data: disk.clone(),
                    durable: disk,
                    unsynced: Vec::new(),
                },
            );
        }
        next.names = names.clone();
        next.durable_names = names;
        SimFs {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// The names a power cut would keep for certain, and their bytes (for
    /// tests that look at the disk directly).
    pub fn durable_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let state = self.state.lock();
        state
            .durable_names
            .iter()
            .map(|(path, inode)| (path.clone(), state.inodes[inode].durable.clone()))
            .collect()
    }

    /// Overwrites the durable and cached bytes of `path` (tests that damage
    /// a file on purpose).
    pub fn corrupt(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut state = self.state.lock();
        let inode = state.inode_of(path)?;
        let file = state.inodes.get_mut(&inode).expect("named inode exists");
        edit(&mut file.data);
        file.durable = file.data.clone();
        file.unsynced.clear();
        Ok(())
    }
}

/// Applies one change to `bytes`; with `tear`, only a random whole number
/// of sectors of a write lands (counted from the file's start).
fn apply_change(bytes: &mut Vec<u8>, change: &Change, tear: Option<&mut SimRng>) {
    match change {
        Change::Truncate(len) => {
            if tear.is_none() {
                bytes.resize(*len as usize, 0);
            }
        }
        Change::Write { offset, bytes: new } => {
            let end = offset + new.len() as u64;
            let keep_end = match tear {
                None => end,
                Some(rng) => {
                    let first_boundary = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
                    let boundaries = end.saturating_sub(first_boundary) / SECTOR_BYTES;
                    // Zero sectors, or up to the last boundary inside the write.
                    match rng.below(boundaries + 2) {
                        0 => *offset,
                        n => (first_boundary + (n - 1) * SECTOR_BYTES).min(end),
                    }
                }
            };
            let kept = (keep_end - offset) as usize;
            write_into(bytes, *offset, &new[..kept]);
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// An open simulated file.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    writable: bool,
    /// The name it was opened by (for aimed faults).
    path: PathBuf,
}

impl SimFile {
    fn write(&self, bytes: &[u8], offset: Option<u64>) -> io::Result<()> {
        let mut state = self.state.lock();
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9)); // EBADF
        }
        state.aimed(SimOp::Write, &self.path)?;
        let (landed, result) = match state.judge(Call::Write) {
            Verdict::Proceed | Verdict::FlipBit => (bytes.len(), Ok(())),
            Verdict::Fail(e) => (0, Err(e)),
            Verdict::Short(e) => {
                // At least one byte and never all: a short write, not a failed one.
                let landed = match bytes.len() {
                    0 | 1 => 0,
                    n => 1 + state.rng.below(n as u64 - 1) as usize,
                };
                (landed, Err(e))
            }
        };
        let file = state.inodes.get_mut(&self.inode).expect("open inode");
        let offset = offset.unwrap_or(file.data.len() as u64);
        if landed > 0 {
            write_into(&mut file.data, offset, &bytes[..landed]);
            file.unsynced.push(Change::Write {
                offset,
                bytes: bytes[..landed].to_vec(),
            });
        }
        result
    }
}

impl StorageFile for SimFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes, None)
    }
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.write(bytes, Some(offset))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.aimed(SimOp::Read, &self.path)?;
        let verdict = state.judge(Call::Read);
        if let Verdict::Fail(e) | Verdict::Short(e) = verdict {
            return Err(e);
        }
        let flip = matches!(verdict, Verdict::FlipBit).then(|| state.rng.next_u64());
        let data = &state.inodes[&self.inode].data;
        let start = offset as usize;
        let Some(source) = data.get(start..start.saturating_add(buf.len())) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(source);
        if let (Some(bits), false) = (flip, buf.is_empty()) {
            let bit = bits % (buf.len() as u64 * 8);
            buf[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let mut state = self.state.lock();
        state.check(Call::Other)?;
        Ok(state.inodes[&self.inode].data.len() as u64)
    }
    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        let result = state
            .aimed(SimOp::Sync, &self.path)
            .and_then(|()| state.check(Call::Sync));
        let file = state.inodes.get_mut(&self.inode).expect("open inode");
        // On failure Linux marks the pages clean: they never reach the disk, reads still see
        // them, and a later fsync has nothing to write.
        let changes = std::mem::take(&mut file.unsynced);
        if result.is_ok() {
            for change in &changes {
                apply_change(&mut file.durable, change, None);
            }
        }
        result
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        state.check(Call::Other)?;
        let file = state.inodes.get_mut(&self.inode).expect("open inode");
        file.data.resize(len as usize, 0);
        file.unsynced.push(Change::Truncate(len));
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl StorageLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

impl Storage for SimFs {
    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.state.lock();
        state.aimed(SimOp::Create, path)?;
        state.check(Call::Allocate)?;
        state.parent_exists(path)?;
        if let Some(&inode) = state.names.get(path) {
            if exclusive {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            let file = state.inodes.get_mut(&inode).expect("named inode");
            file.data.clear();
            file.unsynced.push(Change::Truncate(0));
            return Ok(Box::new(SimFile {
                state: self.state.clone(),
                inode,
                writable: true,
                path: path.to_path_buf(),
            }));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.rename_change(NameChange::Link {
            path: path.to_path_buf(),
            inode,
        });
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode,
            writable: true,
            path: path.to_path_buf(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.state.lock();
        state.aimed(SimOp::Open, path)?;
        state.check(Call::Other)?;
        let inode = state.inode_of(path)?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode,
            writable: false,
            path: path.to_path_buf(),
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let mut state = self.state.lock();
        state.check(Call::Other)?;
        Ok(state.names.contains_key(path) || state.dirs.contains(path))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check(Call::Other)?;
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                state.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check(Call::Other)?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        state.dirs.retain(|d| !d.starts_with(dir));
        state.names.retain(|p, _| !p.starts_with(dir));
        state.durable_names.retain(|p, _| !p.starts_with(dir));
        state.unsynced_names.retain(|c| match c {
            NameChange::Link { path, .. } | NameChange::Unlink { path, .. } => {
                !path.starts_with(dir)
            }
            NameChange::Rename { from, to, .. } => !from.starts_with(dir) && !to.starts_with(dir),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.aimed(SimOp::SyncDir, dir)?;
        state.check(Call::Sync)?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let changes = std::mem::take(&mut state.unsynced_names);
        let (now, later): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.touches(dir));
        for change in &now {
            change.apply(&mut state.durable_names);
        }
        state.unsynced_names = later;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.aimed(SimOp::Rename, from)?;
        state.check(Call::Allocate)?;
        if state.dirs.contains(from) {
            // A whole directory (checkpoints): moved at once, durably.
            state.parent_exists(to)?;
            let moved = |p: &Path| to.join(p.strip_prefix(from).expect("prefix"));
            let dirs: Vec<_> = state
                .dirs
                .iter()
                .filter(|d| d.starts_with(from))
                .cloned()
                .collect();
            for d in dirs {
                state.dirs.remove(&d);
                state.dirs.insert(moved(&d));
            }
            let State {
                names,
                durable_names,
                ..
            } = &mut *state;
            for names in [names, durable_names] {
                let inside: Vec<_> = names
                    .keys()
                    .filter(|p| p.starts_with(from))
                    .cloned()
                    .collect();
                for p in inside {
                    let inode = names.remove(&p).expect("listed");
                    names.insert(moved(&p), inode);
                }
            }
            return Ok(());
        }
        state.parent_exists(to)?;
        let inode = state.inode_of(from)?;
        state.rename_change(NameChange::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check(Call::Allocate)?;
        state.parent_exists(to)?;
        let inode = state.inode_of(from)?;
        if state.names.contains_key(to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.rename_change(NameChange::Link {
            path: to.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.aimed(SimOp::Remove, path)?;
        state.check(Call::Other)?;
        let inode = state.inode_of(path)?;
        state.rename_change(NameChange::Unlink {
            path: path.to_path_buf(),
            inode,
        });
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state.lock();
        state.aimed(SimOp::List, dir)?;
        state.check(Call::Other)?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = state.names.keys().map(PathBuf::as_path);
        let dirs = state.dirs.iter().map(PathBuf::as_path);
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        let mut state = self.state.lock();
        state.check(Call::Other)?;
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if !state.names.contains_key(path) {
            let inode = state.next_inode;
            state.next_inode += 1;
            state.inodes.insert(inode, Inode::default());
            state.rename_change(NameChange::Link {
                path: path.to_path_buf(),
                inode,
            });
        }
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/db")
    }

    #[test]
    fn unsynced_bytes_and_names_are_lost_in_a_power_cut() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let a = fs.create(&dir().join("a"), true).unwrap();
        a.append(b"hello").unwrap();
        a.sync().unwrap();
        // The name was never made durable: the file is gone.
        let after = fs.power_cut(PowerCut::default(), 1);
        assert!(!after.exists(&dir().join("a")).unwrap());

        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let a = fs.create(&dir().join("a"), true).unwrap();
        a.append(b"hello").unwrap();
        a.sync().unwrap();
        fs.sync_dir(&dir()).unwrap();
        a.append(b" world").unwrap();
        assert_eq!(fs.read(&dir().join("a")).unwrap(), b"hello world");
        let after = fs.power_cut(PowerCut::default(), 1);
        assert_eq!(after.read(&dir().join("a")).unwrap(), b"hello");
        // The old file system is dead, as the process that used it.
        assert!(a.append(b"!").is_err());
        assert!(fs.list(&dir()).is_err());
    }

    #[test]
    fn an_unsynced_rename_is_undone_by_a_power_cut() {
        let fs = SimFs::new(2);
        fs.create_dir_all(&dir()).unwrap();
        for (name, body) in [("old", b"1"), ("new", b"2")] {
            let f = fs.create(&dir().join(name), true).unwrap();
            f.append(body).unwrap();
            f.sync().unwrap();
        }
        fs.sync_dir(&dir()).unwrap();
        fs.rename(&dir().join("new"), &dir().join("old")).unwrap();
        assert_eq!(fs.read(&dir().join("old")).unwrap(), b"2");
        let after = fs.power_cut(PowerCut::default(), 2);
        assert_eq!(after.read(&dir().join("old")).unwrap(), b"1");
        assert_eq!(after.read(&dir().join("new")).unwrap(), b"2");
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors() {
        for seed in 0..50 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create(&dir().join("f"), true).unwrap();
            fs.sync_dir(&dir()).unwrap();
            f.append(&[7u8; 100]).unwrap();
            f.sync().unwrap();
            f.append(&[9u8; 3000]).unwrap();
            let cut = PowerCut {
                tear_writes: true,
                reorder_metadata: false,
            };
            let data = fs.power_cut(cut, seed).read(&dir().join("f")).unwrap();
            assert!(
                data.len() == 100
                    || data.len().is_multiple_of(SECTOR_BYTES as usize)
                    || data.len() == 3100
            );
            assert!(data[..100].iter().all(|&b| b == 7));
            assert!(data[100..].iter().all(|&b| b == 9));
        }
    }

    #[test]
    fn a_failed_fsync_drops_the_dirty_data_for_good() {
        let fs = SimFs::new(3);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create(&dir().join("f"), true).unwrap();
        fs.sync_dir(&dir()).unwrap();
        f.append(b"lost").unwrap();
        fs.set_faults(FaultConfig {
            seed: 3,
            fsync: 1.0,
            one_shot: true,
            ..FaultConfig::default()
        });
        assert!(f.sync().is_err());
        // The retry "succeeds", but the pages were marked clean: nothing reaches the disk.
        f.sync().unwrap();
        assert_eq!(fs.read(&dir().join("f")).unwrap(), b"lost");
        let after = fs.power_cut(PowerCut::default(), 3);
        assert_eq!(after.read(&dir().join("f")).unwrap(), b"");
        assert_eq!(fs.fault_counts().fsync, 1);
    }

    #[test]
    fn short_writes_and_bit_flips_are_injected() {
        let fs = SimFs::new(4);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create(&dir().join("f"), true).unwrap();
        fs.set_faults(FaultConfig {
            seed: 4,
            short_write: 1.0,
            one_shot: true,
            ..FaultConfig::default()
        });
        let error = f.append(&[1u8; 1000]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
        assert!(f.size().unwrap() < 1000);
        f.append(&[0u8; 64]).unwrap();
        let len = f.size().unwrap() as usize;
        let mut clean = vec![0u8; len];
        f.read_at(&mut clean, 0).unwrap();
        fs.set_faults(FaultConfig {
            seed: 5,
            bit_flip: 1.0,
            one_shot: true,
            ..FaultConfig::default()
        });
        let mut flipped = vec![0u8; len];
        f.read_at(&mut flipped, 0).unwrap();
        let differing: u32 = clean
            .iter()
            .zip(&flipped)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(differing, 1);
        assert_eq!(fs.fault_counts().bit_flip, 1);
    }
}
