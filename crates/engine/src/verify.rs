//! Offline verification of a database directory (a backup, a checkpoint, or
//! a stopped server's data): every byte the engine would read is checked
//! against its checksum, without opening the database for writing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::table::{BlockCache, Table, TableIter};
use crate::version::Manifest;
use crate::wal;

/// What [`verify_directory`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Live table files named by the manifest, all read in full.
    pub tables: usize,
    /// Entries (all versions) in those tables.
    pub table_entries: u64,
    /// Bytes of table files read.
    pub table_bytes: u64,
    /// WAL segments read.
    pub wal_segments: usize,
    /// Intact WAL records.
    pub wal_records: u64,
    /// Bytes at the tail of the last WAL segment that a restart would cut
    /// off (a torn write); 0 for a clean directory.
    pub wal_torn_bytes: u64,
    /// Files checked, with their sizes (name, bytes).
    pub files: Vec<(String, u64)>,
}

/// Checks every table named by the manifest (footer, index, filter and
/// every data block against its checksum) and every WAL segment the
/// manifest still needs. `progress` is called with (file, bytes) as each
/// file is done. Corruption is an error naming the file and offset; a torn
/// WAL tail is reported, not an error (recovery cuts it off).
pub fn verify_directory(dir: &Path, mut progress: impl FnMut(&Path, u64)) -> Result<VerifyReport> {
    let fs = &crate::storage::StdStorage;
    let recovered = Manifest::recover(fs, dir)?.ok_or_else(|| {
        Error::InvalidArgument(format!("{} holds no database (no CURRENT)", dir.display()))
    })?;
    let mut report = VerifyReport::default();
    let cache = Arc::new(BlockCache::new(8 << 20));
    for (level, tables) in recovered.version.levels.iter().enumerate() {
        for file in tables {
            let table = Arc::new(Table::open(fs, &file.path, file.number, cache.clone())?);
            let mut iter = TableIter::with_cache_fill(table, false);
            iter.seek_to_first()?;
            let mut entries = 0u64;
            while iter.valid() {
                entries += 1;
                iter.next()?;
            }
            if entries != file.meta.entries {
                return Err(Error::corruption(
                    &file.path,
                    0,
                    format!(
                        "level {level} table holds {entries} entries, the manifest says {}",
                        file.meta.entries
                    ),
                ));
            }
            report.tables += 1;
            report.table_entries += entries;
            report.table_bytes += file.meta.file_size;
            report
                .files
                .push((file_name(&file.path), file.meta.file_size));
            progress(&file.path, file.meta.file_size);
        }
    }
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let number = path
                .file_name()?
                .to_str()?
                .strip_suffix(".wal")?
                .parse()
                .ok()?;
            (number >= recovered.log_number).then_some((number, path))
        })
        .collect();
    segments.sort();
    for (i, (_, path)) in segments.iter().enumerate() {
        let read = wal::read_segment(fs, path)?;
        if read.valid_bytes < read.file_bytes {
            if i + 1 != segments.len() {
                return Err(Error::corruption(
                    path,
                    read.valid_bytes,
                    "corrupt WAL record in a segment that is not the last",
                ));
            }
            report.wal_torn_bytes = read.file_bytes - read.valid_bytes;
        }
        report.wal_segments += 1;
        report.wal_records += read.payloads.len() as u64;
        report.files.push((file_name(path), read.file_bytes));
        progress(path, read.file_bytes);
    }
    Ok(report)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
