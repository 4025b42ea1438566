//! Arbitrary bytes as a WAL segment and as a manifest: decoded or rejected,
//! never a panic, a hang or an unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringkv_engine::fuzzing::read_wal_and_manifest(data);
});
