//! Leveled compaction, in two halves: [`pick`] only decides (a pure
//! function of a version, returning a [`Compaction`] tests can inspect), and
//! [`run`] carries a decision out, writing the merged tables.
//!
//! Rules of the merge, for each user key (versions newest first):
//! - every version newer than the oldest live snapshot is kept, and so is
//!   the newest version at or below it: some snapshot may read each of them;
//! - older versions are dropped;
//! - when that newest-visible version is a delete, or a put that has
//!   expired, it is dropped entirely if no deeper level can hold the key
//!   (nothing older could resurface); otherwise it is kept as a delete.

use std::sync::Arc;

use crate::error::Result;
use crate::format::{self, Kind};
use crate::iter::{MergingIter, Source};
use crate::options::Options;
use crate::table::{TableBuilder, TableIter, TableMeta, TableOptions};
use crate::version::{table_path, TableCache, TableFile, Version, VersionEdit, LEVELS};

/// A decision: merge `inputs` (from `level`) with `overlaps` (from
/// `output_level`) into new tables at `output_level`.
#[derive(Debug, Clone)]
pub(crate) struct Compaction {
    pub level: usize,
    pub output_level: usize,
    pub inputs: Vec<Arc<TableFile>>,
    pub overlaps: Vec<Arc<TableFile>>,
    pub reason: &'static str,
}

impl Compaction {
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .chain(&self.overlaps)
            .map(|t| t.meta.file_size)
            .sum()
    }
}

/// Target size of `level` (≥ 1).
pub(crate) fn level_target_bytes(options: &Options, level: usize) -> u64 {
    debug_assert!(level >= 1);
    let mut target = options.level_base_bytes;
    for _ in 1..level {
        target = target.saturating_mul(options.level_multiplier);
    }
    target
}

/// User-key range covered by `tables`.
fn key_range(tables: &[Arc<TableFile>]) -> (Vec<u8>, Vec<u8>) {
    let start = tables
        .iter()
        .map(|t| t.smallest_user_key())
        .min()
        .unwrap_or_default()
        .to_vec();
    let end = tables
        .iter()
        .map(|t| t.largest_user_key())
        .max()
        .unwrap_or_default()
        .to_vec();
    (start, end)
}

/// Chooses the most urgent compaction, if any is due. `cursors[level]` is
/// the largest key of the last table compacted out of that level, so levels
/// are compacted round-robin across their key range.
pub(crate) fn pick(
    version: &Version,
    options: &Options,
    cursors: &[Vec<u8>],
    now_ms: u64,
) -> Option<Compaction> {
    // Score every level; the highest score ≥ 1 wins.
    let mut best: Option<(f64, usize)> = None;
    // Level 0 is compacted at the latest when writers start to slow down: a compaction
    // trigger above the slowdown (or stop) trigger would otherwise stall writers for good,
    // with nothing ever due.
    let l0_trigger = options
        .l0_compaction_trigger
        .min(options.l0_slowdown_trigger)
        .min(options.l0_stop_trigger)
        .max(1);
    let l0_score = version.levels[0].len() as f64 / l0_trigger as f64;
    if l0_score >= 1.0 {
        best = Some((l0_score, 0));
    }
    for level in 1..LEVELS - 1 {
        let score = version.level_bytes(level) as f64 / level_target_bytes(options, level) as f64;
        if score >= 1.0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, level));
        }
    }
    if let Some((_, level)) = best {
        return Some(if level == 0 {
            let inputs = version.levels[0].clone();
            let (start, end) = key_range(&inputs);
            Compaction {
                level: 0,
                output_level: 1,
                overlaps: version.overlapping(1, &start, &end),
                inputs,
                reason: "level-0 table count",
            }
        } else {
            let tables = &version.levels[level];
            let cursor = &cursors[level];
            let table = tables
                .iter()
                .find(|t| t.smallest_user_key() > cursor.as_slice())
                .unwrap_or(&tables[0])
                .clone();
            let (start, end) = key_range(std::slice::from_ref(&table));
            Compaction {
                level,
                output_level: level + 1,
                overlaps: version.overlapping(level + 1, &start, &end),
                inputs: vec![table],
                reason: "level size",
            }
        });
    }
    // Nothing is over its size: reclaim space held by expired entries.
    for level in 1..LEVELS {
        for table in &version.levels[level] {
            let meta = &table.meta;
            let mostly_expiring = meta.expiring * 2 >= meta.entries.max(1);
            if mostly_expiring && meta.expires_at_min_ms.is_some_and(|at| at <= now_ms) {
                let output_level = (level + 1).min(LEVELS - 1);
                let (start, end) = key_range(std::slice::from_ref(table));
                let overlaps = if output_level == level {
                    Vec::new()
                } else {
                    version.overlapping(output_level, &start, &end)
                };
                return Some(Compaction {
                    level,
                    output_level,
                    inputs: vec![table.clone()],
                    overlaps,
                    reason: "expired entries",
                });
            }
        }
    }
    None
}

/// A table cursor as a merge source.
struct TableSource(TableIter);

impl Source for TableSource {
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.0.seek(target)
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.0.seek_to_first()
    }
    fn valid(&self) -> bool {
        self.0.valid()
    }
    fn key(&self) -> &[u8] {
        self.0.key()
    }
    fn value(&self) -> bytes::Bytes {
        self.0.value()
    }
    fn value_ref(&self) -> &[u8] {
        self.0.value_ref()
    }
    fn next(&mut self) -> Result<()> {
        self.0.next()
    }
}

/// Everything [`run`] needs besides the decision.
pub(crate) struct RunContext<'a> {
    pub options: &'a Options,
    pub dir: &'a std::path::Path,
    pub tables: &'a TableCache,
    /// The version the decision was made on (for the bottommost check).
    pub version: &'a Version,
    /// Oldest sequence a live snapshot (or the present) reads at.
    pub oldest_snapshot: u64,
    pub now_ms: u64,
    pub next_file_number: &'a dyn Fn() -> u64,
}

/// Statistics of one compaction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RunStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub entries_dropped: u64,
}

/// Carries out `compaction`; returns the edit that installs its output.
pub(crate) fn run(
    context: &RunContext<'_>,
    compaction: &Compaction,
) -> Result<(VersionEdit, RunStats)> {
    let mut outputs = Vec::new();
    let result = merge_into_tables(context, compaction, &mut outputs);
    if result.is_err() {
        // Nothing names the partial outputs yet: remove them.
        for number in outputs {
            let _ = context
                .options
                .storage
                .remove(&table_path(context.dir, number));
        }
    } else {
        crate::wal::sync_dir(&*context.options.storage, context.dir)?;
    }
    result
}

fn merge_into_tables(
    context: &RunContext<'_>,
    compaction: &Compaction,
    outputs: &mut Vec<u64>,
) -> Result<(VersionEdit, RunStats)> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for file in compaction.inputs.iter().chain(&compaction.overlaps) {
        let table = context.tables.get(file)?;
        // One-off reads: keep them out of the block cache's hot set.
        sources.push(Box::new(TableSource(TableIter::with_cache_fill(
            table, false,
        ))));
    }
    let mut merge = MergingIter::new(sources);
    merge.seek_to_first()?;
    let table_options = TableOptions::from_options(context.options);
    let mut edit = VersionEdit::default();
    let mut stats = RunStats {
        bytes_read: compaction.input_bytes(),
        ..RunStats::default()
    };
    let mut builder: Option<(u64, TableBuilder)> = None;
    let mut current_key: Vec<u8> = Vec::new();
    let mut seen_visible = false;
    let mut rewritten: Vec<u8> = Vec::new();

    while merge.valid() {
        let internal_key = merge.key();
        let user_key = format::user_key(internal_key);
        let seq = format::key_seq(internal_key);
        let new_key = user_key != current_key.as_slice();
        if new_key {
            // Cut tables only between user keys, so a key's versions stay in
            // one table and deeper levels never overlap.
            if let Some((_, b)) = &builder {
                if b.estimated_bytes() >= context.options.table_target_bytes {
                    let (number, b) = builder.take().expect("builder");
                    finish_table(context, compaction, &mut edit, &mut stats, number, b)?;
                }
            }
            current_key.clear();
            current_key.extend_from_slice(user_key);
            seen_visible = false;
        }
        let keep = if seq > context.oldest_snapshot {
            Keep::AsIs
        } else if seen_visible {
            Keep::Drop
        } else {
            seen_visible = true;
            let kind = Kind::from_u8(format::key_kind_byte(internal_key));
            let value = merge.value();
            let dead = match kind {
                Some(Kind::Delete) => true,
                Some(Kind::PutExpiring) => format::decode_value(Kind::PutExpiring, &value)
                    .and_then(|(_, at)| at)
                    .is_some_and(|at| at <= context.now_ms),
                _ => false,
            };
            if !dead {
                Keep::AsIs
            } else if is_bottommost(context.version, compaction.output_level, user_key) {
                Keep::Drop
            } else if kind == Some(Kind::Delete) {
                Keep::AsIs
            } else {
                Keep::AsDelete
            }
        };
        match keep {
            Keep::Drop => stats.entries_dropped += 1,
            Keep::AsIs | Keep::AsDelete => {
                if builder.is_none() {
                    let number = (context.next_file_number)();
                    outputs.push(number);
                    let path = table_path(context.dir, number);
                    builder = Some((
                        number,
                        TableBuilder::create(&*context.options.storage, &path, &table_options)?,
                    ));
                }
                let (_, b) = builder.as_mut().expect("builder");
                if matches!(keep, Keep::AsDelete) {
                    rewritten.clear();
                    format::push_internal_key(&mut rewritten, user_key, seq, Kind::Delete);
                    b.add(&rewritten, &[])?;
                } else {
                    b.add(internal_key, &merge.value())?;
                }
            }
        }
        merge.next()?;
    }
    if let Some((number, b)) = builder.take() {
        finish_table(context, compaction, &mut edit, &mut stats, number, b)?;
    }
    for file in &compaction.inputs {
        edit.deleted.push((compaction.level, file.number));
    }
    for file in &compaction.overlaps {
        edit.deleted.push((compaction.output_level, file.number));
    }
    Ok((edit, stats))
}

enum Keep {
    AsIs,
    AsDelete,
    Drop,
}

fn finish_table(
    context: &RunContext<'_>,
    compaction: &Compaction,
    edit: &mut VersionEdit,
    stats: &mut RunStats,
    number: u64,
    builder: TableBuilder,
) -> Result<()> {
    let meta: TableMeta = builder.finish()?;
    stats.bytes_written += meta.file_size;
    edit.added.push((
        compaction.output_level,
        Arc::new(TableFile::new(context.dir, number, meta)),
    ));
    Ok(())
}

/// True when no level below `output_level` may hold `user_key`.
fn is_bottommost(version: &Version, output_level: usize, user_key: &[u8]) -> bool {
    (output_level + 1..LEVELS).all(|level| version.find_in_level(level, user_key).is_none())
}
