//! `redis-benchmark` (package redis-tools) runs to the end against ringkv with no error.
//! Timings are printed, never asserted.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn redis_benchmark_set_get_incr_mset_runs_without_errors() {
    let server = Server::start();
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &server.port.to_string(),
            "-t",
            "set,get,incr,mset",
            "-n",
            "200000",
            "-P",
            "16",
            "-q",
        ])
        .output()
        .expect("run redis-benchmark (install redis-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "redis-benchmark failed:\n{stdout}\n{stderr}"
    );
    let text = format!("{stdout}\n{stderr}");
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("err "),
            "error line from redis-benchmark: {line}"
        );
    }
    // Quiet mode prints one "NAME: N requests per second" line per test, at the end of each.
    for test in ["SET", "GET", "INCR", "MSET"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches('\r').contains(test)
                    && l.contains("requests per second")),
            "{test} did not finish:\n{text}"
        );
    }
    let mut con = server.client();
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(size >= 2, "benchmark keys are there: {size}");
}
