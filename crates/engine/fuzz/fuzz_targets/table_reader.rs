//! Arbitrary bytes as a sorted table file: opened, scanned and point-read,
//! or rejected with an error; never a panic, a hang or an unbounded
//! allocation.
#![no_main]

use std::path::PathBuf;

thread_local! {
    static PATH: PathBuf = std::env::temp_dir().join(format!("ringkv-fuzz-{}.sst", std::process::id()));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    PATH.with(|path| {
        let _ = ringkv_engine::fuzzing::read_table(path, data);
    });
});
