//! The `ringkv` binary's command line and TOML config file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts the binary with `args`, waits for "Ready to accept connections", returns the child and
/// the port it listens on.
fn start(args: &[&str]) -> (std::process::Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ringkv");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Ready to accept connections") {
                let port = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ready")
        .expect("port");
    (child, port)
}

#[test]
fn config_file_sets_options_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringkv.toml");
    let from_file = dir.path().join("from-file");
    let from_flag = dir.path().join("from-flag");
    std::fs::write(
        &config,
        format!(
            "port = 0\nbind = \"127.0.0.1\"\ndir = \"{}\"\nappendfsync = \"always\"\nrequirepass = \"pw\"\n",
            from_file.display()
        ),
    )
    .unwrap();
    let (mut child, port) = start(&["--config", config.to_str().unwrap()]);
    let mut con = redis::Client::open(format!("redis://:pw@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut con)
        .unwrap();
    assert_eq!(fsync, vec!["appendfsync", "always"]);
    assert!(from_file.exists());
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, port) = start(&[
        "--config",
        config.to_str().unwrap(),
        "--dir",
        from_flag.to_str().unwrap(),
        "--appendfsync",
        "no",
    ]);
    let mut con = redis::Client::open(format!("redis://:pw@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut con)
        .unwrap();
    assert_eq!(fsync, vec!["appendfsync", "no"]);
    assert!(from_flag.exists());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "prot = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("parsing config file") && stderr.contains("prot"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--appendfsync", "sometimes"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid fsync policy"));
}

#[test]
fn help_lists_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--port",
        "--bind",
        "--dir",
        "--config",
        "--appendfsync",
        "--loglevel",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
