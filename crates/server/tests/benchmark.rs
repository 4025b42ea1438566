//! `redis-benchmark` (package redis-tools) runs to the end against ringkv with no error.
//! Timings are printed, never asserted.

mod common;

use std::process::Command;

use common::{info_field, q, Server};

/// Requests per test; without `-r` every request of a test hits the same key.
const REQUESTS: i64 = 200_000;

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
            &REQUESTS.to_string(),
            "-P",
            "16",
            "-q",
            // Before Redis 6.2 redis-benchmark counts an error reply as an answer and says
            // nothing unless -e is given; from 6.2 on it prints the error and exits 1, and -e
            // only prints a warning that it has no effect.
            "-e",
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
        if line.contains("-e option has no effect") {
            continue;
        }
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
    // Whatever redis-benchmark's version shows or hides, the server counts every error reply
    // it sent, and every command must have done its work.
    let mut con = server.client();
    assert_eq!(
        info_field(&mut con, "stats", "total_error_replies"),
        "0",
        "the server answered errors; INFO errorstats:\n{}",
        q::<String>(&mut con, &["INFO", "errorstats"])
    );
    assert_eq!(
        q::<i64>(&mut con, &["GET", "counter:__rand_int__"]),
        REQUESTS,
        "INCR ran {REQUESTS} times on one counter"
    );
    // SET and MSET write redis-benchmark's default 3-byte value ("VXK" in 7.0) to one key.
    assert_eq!(q::<i64>(&mut con, &["STRLEN", "key:__rand_int__"]), 3);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 2);
}
