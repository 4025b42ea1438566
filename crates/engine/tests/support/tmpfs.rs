//! A size-limited tmpfs for the disk-full tests (root needed, as in CI),
//! shared by `crates/engine/tests/disk_full.rs` and
//! `crates/server/tests/disk_full_server.rs` (included with `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts the tmpfs however the test ends.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

pub fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(at).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .expect("run mount");
    if mounted.status.success() {
        return Some(Mount(at.to_path_buf()));
    }
    let why = String::from_utf8_lossy(&mounted.stderr).into_owned();
    assert!(
        std::env::var("RINGKV_MOUNT_TESTS").as_deref() != Ok("1"),
        "this test needs to mount a tmpfs (run as root): {why}"
    );
    eprintln!("skipped: cannot mount a tmpfs ({why})");
    None
}
