//! `ringkv backup` and `ringkv restore`: copy a consistent checkpoint of a
//! database out of a running server, and into a data directory for a new
//! one, checking every byte on the way.
//!
//! Backup asks the server for a checkpoint with `RINGKV.CHECKPOINT`, which
//! answers the checkpoint's path on the server's machine: the tool must run
//! on that machine (streaming over the wire comes with replication). Both
//! directions copy file by file with a progress bar, compare the CRC32C of
//! every copy with its source's, then read every table block and WAL record
//! of the result with [`ringkv_engine::verify_directory`]. A backup also
//! holds [`CHECKSUMS_FILE`], which restore checks before copying.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_engine::{StdStorage, Storage};

/// Name, size and CRC32C of every file of a backup, one per line
/// (`crc32c-hex size name`); not part of the database.
pub const CHECKSUMS_FILE: &str = "RINGKV-BACKUP-CHECKSUMS";

/// Read/write buffer of the copies.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Where the server is, for `ringkv backup`.
#[derive(Debug, Clone)]
pub struct ServerAddress {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// AUTH password, if the server wants one.
    pub password: Option<String>,
    /// ACL user name for AUTH (default user when `None`).
    pub user: Option<String>,
}

/// One copied file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileSum {
    name: String,
    bytes: u64,
    crc: u32,
}

/// Copies a fresh checkpoint of the server at `address` into `to` (which
/// must be absent or empty) and verifies it. Deletes the server-side
/// checkpoint afterwards unless `keep_checkpoint`.
pub fn backup(
    address: &ServerAddress,
    to: &Path,
    keep_checkpoint: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    ensure_empty(to, "backup target")?;
    let started = Instant::now();
    let (source, seq) = ask_checkpoint(address)?;
    if !source.join("CURRENT").is_file() {
        bail!(
            "the server wrote its checkpoint to {} on its own machine, and that path is not \
             readable here: run `ringkv backup` on the server's machine",
            source.display()
        );
    }
    eprintln!("checkpoint {} (sequence {seq})", source.display());
    let result = copy_and_verify(&source, to, quiet);
    if !keep_checkpoint {
        if let Err(error) = fs::remove_dir_all(&source) {
            eprintln!(
                "warning: could not delete the server's checkpoint {}: {error}",
                source.display()
            );
        }
    }
    let sums = result?;
    write_checksums(to, &sums)?;
    let bytes: u64 = sums.iter().map(|s| s.bytes).sum();
    println!(
        "backup of sequence {seq} written to {}: {} files, {} bytes, verified, in {:.1} s",
        to.display(),
        sums.len(),
        bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies the backup in `from` into the data directory `dir` (absent or
/// empty, and not in use), verifying the backup before and the copy after.
pub fn restore(from: &Path, dir: &Path, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    if !from.join("CURRENT").is_file() {
        bail!(
            "{} is not a ringkv backup (no CURRENT file)",
            from.display()
        );
    }
    ensure_empty(dir, "restore target")?;
    let expected = read_checksums(from)?;
    let sums = copy_and_verify(from, dir, quiet)?;
    if let Some(expected) = expected {
        let mut got = sums.clone();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = expected;
        want.sort_by(|a, b| a.name.cmp(&b.name));
        if got != want {
            let removed = match fs::remove_dir_all(dir) {
                Ok(()) => "restore target removed".to_string(),
                Err(error) => format!(
                    "removing the restore target {} failed too: {error}; delete it by hand",
                    dir.display()
                ),
            };
            bail!(
                "the backup in {} does not match its {CHECKSUMS_FILE}: a file changed or is \
                 missing since the backup was taken ({removed})",
                from.display()
            );
        }
    }
    let bytes: u64 = sums.iter().map(|s| s.bytes).sum();
    println!(
        "restored {} into {}: {} files, {} bytes, verified, in {:.1} s; start the server with --dir {}",
        from.display(),
        dir.display(),
        sums.len(),
        bytes,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// `RINGKV.CHECKPOINT` on the server: (path, sequence).
fn ask_checkpoint(address: &ServerAddress) -> anyhow::Result<(PathBuf, u64)> {
    let mut connection = connect(address)?;
    let (path, seq): (String, u64) = redis::cmd("RINGKV.CHECKPOINT")
        .query(&mut connection)
        .context("RINGKV.CHECKPOINT failed")?;
    Ok((PathBuf::from(path), seq))
}

/// A RESP connection to the server at `address`, authenticated if it says how.
pub fn connect(address: &ServerAddress) -> anyhow::Result<redis::Connection> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(address.host.clone(), address.port),
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: address.user.clone(),
            password: address.password.clone(),
            protocol: redis::ProtocolVersion::RESP2,
        },
    };
    let client = redis::Client::open(info).context("server address")?;
    client
        .get_connection()
        .with_context(|| format!("connecting to {}:{}", address.host, address.port))
}

/// Refuses a directory that exists and holds anything; creates it otherwise, its name made
/// durable (the parent directory's fsync is checked).
fn ensure_empty(dir: &Path, what: &str) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            fs::read_dir(dir).with_context(|| format!("reading {what} {}", dir.display()))?;
        if entries.next().is_some() {
            if dir.join("LOCK").exists() && is_locked(&dir.join("LOCK")) {
                bail!(
                    "{what} {} is in use by a running server (its LOCK is held)",
                    dir.display()
                );
            }
            bail!(
                "{what} {} is not empty; refusing to write into it",
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {what} {}", dir.display()))?;
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(parent) = absolute.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes the names in `dir` durable, through the engine's storage seam.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    StdStorage
        .sync_dir(dir)
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// True when another process holds the engine's `flock` on `lock`.
fn is_locked(lock: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(lock) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; a non-blocking attempt changes nothing if it fails,
    // and the lock we may get is released when `file` closes.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// The database files of `dir` (the engine's names only: CURRENT, MANIFEST-*,
/// *.sst, *.wal), sorted, with sizes.
fn database_files(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = name == "CURRENT"
            || name.starts_with("MANIFEST-")
            || name.ends_with(".sst")
            || name.ends_with(".wal");
        if wanted && entry.file_type()?.is_file() {
            files.push((name, entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the database files of `from` into `to` with a progress bar, checks
/// each copy's CRC32C against the source's, fsyncs, then verifies `to` with
/// the engine's reader. Returns what was copied.
fn copy_and_verify(from: &Path, to: &Path, quiet: bool) -> anyhow::Result<Vec<FileSum>> {
    let files = database_files(from)?;
    let total: u64 = files.iter().map(|(_, bytes)| bytes).sum();
    let bar = progress_bar(total, quiet, "copying");
    let mut sums = Vec::with_capacity(files.len());
    for (name, _) in &files {
        let source = from.join(name);
        let target = to.join(name);
        let (bytes, crc) = copy_file(&source, &target, &bar)?;
        let (reread_bytes, reread_crc) = crc_of(&target)?;
        if (reread_bytes, reread_crc) != (bytes, crc) {
            bail!(
                "copy of {} does not match its source: {reread_bytes} bytes crc32c {reread_crc:08x}, \
                 source {bytes} bytes crc32c {crc:08x}",
                target.display()
            );
        }
        sums.push(FileSum {
            name: name.clone(),
            bytes,
            crc,
        });
    }
    bar.finish_and_clear();
    sync_dir(to)?;
    let bar = progress_bar(total, quiet, "verifying");
    let report = ringkv_engine::verify_directory(to, |_, bytes| bar.inc(bytes))
        .with_context(|| format!("verifying {}", to.display()))?;
    bar.finish_and_clear();
    if report.wal_torn_bytes > 0 {
        bail!(
            "{} has a torn WAL tail of {} bytes; a checkpoint never has one",
            to.display(),
            report.wal_torn_bytes
        );
    }
    eprintln!(
        "verified {}: {} tables ({} entries, {} bytes), {} WAL segments",
        to.display(),
        report.tables,
        report.table_entries,
        report.table_bytes,
        report.wal_segments
    );
    Ok(sums)
}

fn progress_bar(total: u64, quiet: bool, what: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// Copies `from` to `to` (created, must not exist), fsyncs it; (bytes, crc32c of what was read).
fn copy_file(from: &Path, to: &Path, bar: &ProgressBar) -> anyhow::Result<(u64, u32)> {
    let mut input = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut output = File::options()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut crc = 0u32;
    let mut bytes = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buffer[..n]);
        output
            .write_all(&buffer[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        bytes += n as u64;
        bar.inc(n as u64);
    }
    output
        .sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    Ok((bytes, crc))
}

/// (bytes, crc32c) of a file's contents.
fn crc_of(path: &Path) -> anyhow::Result<(u64, u32)> {
    let mut input = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut crc = 0u32;
    let mut bytes = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((bytes, crc));
        }
        crc = crc32c::crc32c_append(crc, &buffer[..n]);
        bytes += n as u64;
    }
}

fn write_checksums(dir: &Path, sums: &[FileSum]) -> anyhow::Result<()> {
    let mut text = String::new();
    for sum in sums {
        text.push_str(&format!("{:08x} {} {}\n", sum.crc, sum.bytes, sum.name));
    }
    let path = dir.join(CHECKSUMS_FILE);
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// The checksums a backup recorded, or `None` for a directory without them
/// (a checkpoint copied by hand: restore still verifies every block).
fn read_checksums(dir: &Path) -> anyhow::Result<Option<Vec<FileSum>>> {
    let path = dir.join(CHECKSUMS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut sums = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(crc), Some(bytes), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{}: malformed line {line:?}", path.display());
        };
        sums.push(FileSum {
            name: name.to_string(),
            bytes: bytes
                .parse()
                .with_context(|| format!("{}: size in {line:?}", path.display()))?,
            crc: u32::from_str_radix(crc, 16)
                .with_context(|| format!("{}: crc in {line:?}", path.display()))?,
        });
    }
    Ok(Some(sums))
}

/// `ringkv backup …`, `ringkv restore …` and `ringkv cluster …` (instead of serving).
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Copy a consistent checkpoint of a running server (on this machine) into DIR, verified.
    Backup {
        /// Directory to write the backup to (absent or empty).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Server host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Server port.
        #[arg(long, default_value_t = 6379)]
        port: u16,
        /// AUTH password.
        #[arg(long, env = "RINGKV_PASSWORD")]
        password: Option<String>,
        /// ACL user for AUTH.
        #[arg(long)]
        user: Option<String>,
        /// Leave the server-side checkpoint in place after copying it.
        #[arg(long)]
        keep_checkpoint: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Copy a backup into a new data directory (the server must not be running on it).
    Restore {
        /// The backup directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Data directory to create (absent or empty).
        #[arg(long, value_name = "DATA")]
        dir: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Operator commands against a running cluster node (docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        action: crate::cluster_tool::Action,
    },
}

/// Runs a tool subcommand.
pub fn run(tool: Tool) -> anyhow::Result<()> {
    match tool {
        Tool::Backup {
            to,
            host,
            port,
            password,
            user,
            keep_checkpoint,
            quiet,
        } => backup(
            &ServerAddress {
                host,
                port,
                password,
                user,
            },
            &to,
            keep_checkpoint,
            quiet,
        ),
        Tool::Restore { from, dir, quiet } => restore(&from, &dir, quiet),
        Tool::Cluster { action } => crate::cluster_tool::run(action),
    }
}
