//! The storage seam: every file operation the engine does goes through
//! [`Storage`] (names: create, open, rename, link, remove, list, lock,
//! directory fsync) and [`StorageFile`] (one open file: append, write at,
//! read at, sync, length, truncate).
//!
//! The real implementation, [`StdStorage`], is a thin layer over `std::fs`
//! and is what [`crate::Options::default`] selects. Tests select
//! [`crate::sim_fs::SimFs`] instead, an in-memory file system that models
//! the page cache (what is not fsynced is lost in a simulated power cut)
//! and injects faults from a seed (redb's and RocksDB's fault-injection
//! backends, TigerBeetle's simulated storage).
//!
//! Cost: an open file is a `Box<dyn StorageFile>`, created once per file;
//! the hot paths make one dynamic call per block read (next to its
//! `pread`) and one per WAL buffer written out (next to its `write`), and
//! none allocates.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// One open file. Methods take `&self` so a file can be shared by readers
/// (positional reads need no lock) and written under the caller's own lock.
pub trait StorageFile: Send + Sync + Debug {
    /// Appends all of `bytes` at the end of the file. On error, any prefix
    /// of `bytes` may have been written (a short write).
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`; `UnexpectedEof` when the file is shorter.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Makes the file's data and size durable (`fdatasync`). An error means
    /// the kernel may have dropped dirty pages: what is on disk is unknown.
    fn sync(&self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// A held directory lock; dropping it releases the lock.
pub trait StorageLock: Send + Sync + Debug {}

/// The file system the engine runs on. Paths are absolute or relative to
/// the process's working directory, as `std::fs`'s. Creating, renaming,
/// linking and removing a name are durable only after [`Storage::sync_dir`]
/// of the directory holding it.
pub trait Storage: Send + Sync + Debug {
    /// Creates `path` for writing: fails with `AlreadyExists` when
    /// `exclusive` and the name exists, truncates it otherwise.
    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for reading (writes may fail).
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
        let mut data = vec![0; file.size()? as usize];
        file.read_at(&mut data, 0)?;
        Ok(data)
    }
    /// True when `path` names a file or directory.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes `dir` and everything under it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the names in `dir` (files created, renamed, linked or removed
    /// there) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes `to` a second name (hard link) of `from`.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the name `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Takes an exclusive lock on `path` (created if missing): `WouldBlock`
    /// when another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

/// An open `std::fs::File`. Writes are positional (`pwrite`), appends at
/// `end`, which the file tracks itself: `O_APPEND` would make `write_at`
/// append too on Linux, and a truncate after a failed append must move the
/// next append back with it.
#[derive(Debug)]
struct StdFile {
    file: File,
    end: AtomicU64,
}

impl StdFile {
    fn boxed(file: File, end: u64) -> Box<dyn StorageFile> {
        Box::new(StdFile {
            file,
            end: AtomicU64::new(end),
        })
    }
}

impl StorageFile for StdFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let end = self.end.load(Ordering::Acquire);
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write_at(&bytes[done..], end + done as u64) {
                Ok(0) => {
                    self.end.store(end + done as u64, Ordering::Release);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A short write: what did land stays, as with `O_APPEND`.
                    self.end.store(end + done as u64, Ordering::Release);
                    return Err(e);
                }
            }
        }
        self.end.store(end + done as u64, Ordering::Release);
        Ok(())
    }
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        self.end
            .fetch_max(offset + bytes.len() as u64, Ordering::AcqRel);
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.end.store(len, Ordering::Release);
        Ok(())
    }
}

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl StorageLock for StdLock {}

impl Storage for StdStorage {
    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        Ok(StdFile::boxed(options.open(path)?, 0))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = File::open(path)?;
        let end = file.metadata()?.len();
        Ok(StdFile::boxed(file, end))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        use fs4::fs_std::FileExt;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock_exclusive() {
            Ok(true) => Ok(Box::new(StdLock(file))),
            Ok(false) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e),
        }
    }
}
