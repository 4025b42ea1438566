//! Frames of the replication stream, leader → replica, after the reply to PSYNC.
//!
//! ```text
//! Format: one frame = tag u8, then by tag (integers little-endian):
//!   'F' file:      name_len u16 | name | size u64 | size bytes | crc32c u32 (of the bytes)
//!   'E' end:       seq u64          the checkpoint holds every write up to seq
//!   'B' batch:     len u32 | record the engine's change-log record (own crc inside)
//!   'H' heartbeat: seq u64          the leader's last sequence, sent when idle
//! ```
//! The replica answers with RESP `REPLCONF ACK <seq>` (its last applied and synced sequence).

/// Tag of a checkpoint file frame.
pub(crate) const TAG_FILE: u8 = b'F';
/// Tag of the end-of-checkpoint frame.
pub(crate) const TAG_END: u8 = b'E';
/// Tag of a change-log batch frame.
pub(crate) const TAG_BATCH: u8 = b'B';
/// Tag of a heartbeat frame.
pub(crate) const TAG_HEARTBEAT: u8 = b'H';

/// Longest file name accepted in a file frame.
pub(crate) const FILE_NAME_BYTES_MAX: usize = 255;

/// Largest batch record accepted (the engine bounds a record at 1 GiB).
pub(crate) const BATCH_BYTES_MAX: usize = 1 << 30;

/// `REPLCONF ACK <seq>` as RESP.
pub(crate) fn ack(seq: u64) -> Vec<u8> {
    let seq = seq.to_string();
    format!(
        "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n${}\r\n{seq}\r\n",
        seq.len()
    )
    .into_bytes()
}

/// True for a name a checkpoint file may have: no path separators, not `.`/`..`.
pub(crate) fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}
