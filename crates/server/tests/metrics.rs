//! `/metrics` scraped and parsed with a Prometheus text parser: counters move with traffic and
//! agree with INFO; `/health` and `/ready` answer JSON, and `/ready` is 503 until recovery ends.

mod ops;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

fn scrape(running: &ops::Running) -> Scrape {
    let (status, body) = running.http_get("/metrics");
    assert_eq!(status, 200);
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `name` with `labels` (all must match).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

fn cmdstat(info: &HashMap<String, String>, command: &str) -> u64 {
    let line = &info[&format!("cmdstat_{command}")];
    line.split(',')
        .find_map(|f| f.strip_prefix("calls="))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_with_traffic_and_match_info() {
    let (config, dir) = ops::config();
    let running = ops::start(config, dir);
    let mut con = running.client();
    let before = scrape(&running);
    let sets_before =
        value(&before, "ringkv_command_calls_total", &[("cmd", "set")]).unwrap_or(0.0);
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut con)
            .unwrap();
    }
    for i in 0..50 {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("in3")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();

    let after = scrape(&running);
    let commandstats = ops::info(&mut con, "commandstats");
    let sets = value(&after, "ringkv_command_calls_total", &[("cmd", "set")]).unwrap();
    assert_eq!(sets - sets_before, 101.0);
    assert_eq!(sets as u64, cmdstat(&commandstats, "set"));
    assert_eq!(
        value(&after, "ringkv_command_calls_total", &[("cmd", "get")]).unwrap() as u64,
        cmdstat(&commandstats, "get")
    );
    // The latency histogram counts every call.
    let histogram = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "ringkv_command_duration_seconds" && s.labels.get("cmd") == Some("set")
        })
        .expect("set histogram");
    match &histogram.value {
        Value::Histogram(buckets) => {
            let inf = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(inf, sets);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(value(&after, "ringkv_keys", &[("db", "0")]), Some(100.0));
    assert_eq!(value(&after, "ringkv_keys", &[("db", "3")]), Some(1.0));
    let keyspace = ops::info(&mut con, "keyspace");
    assert!(keyspace["db0"].starts_with("keys=100,"));

    // Engine numbers: INFO engine and /metrics read the same counters.
    let engine = ops::info(&mut con, "engine");
    let wal = value(&after, "ringkv_wal_bytes_written_total", &[]).unwrap();
    assert!(wal > 0.0, "WAL bytes move with writes");
    assert_eq!(
        wal as u64,
        engine["wal_bytes_written"].parse::<u64>().unwrap()
    );
    let flushes = value(&after, "ringkv_flushes_total", &[]).unwrap();
    assert!(flushes >= 1.0, "SAVE flushed the memtable");
    assert_eq!(flushes as u64, engine["flushes"].parse::<u64>().unwrap());
    assert_eq!(
        value(&after, "ringkv_compactions_total", &[]).unwrap() as u64,
        engine["compactions"].parse::<u64>().unwrap()
    );
    for component in [
        "memtable",
        "block_cache",
        "index_filter",
        "frozen_memtables",
    ] {
        assert!(
            value(&after, "ringkv_memory_bytes", &[("component", component)]).is_some(),
            "memory component {component}"
        );
    }
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "ringkv_wal_fsync_seconds_count"
            || s.metric == "ringkv_wal_fsync_seconds"));
    let stats = ops::info(&mut con, "stats");
    let processed = value(&after, "ringkv_commands_processed_total", &[]).unwrap() as u64;
    // INFO itself ran between the scrape and INFO stats: at most those few commands apart.
    let info_processed: u64 = stats["total_commands_processed"].parse().unwrap();
    assert!(info_processed >= processed && info_processed <= processed + 4);
    assert_eq!(
        value(&after, "ringkv_connected_clients", &[]).unwrap() as u64,
        ops::info(&mut con, "clients")["connected_clients"]
            .parse::<u64>()
            .unwrap()
    );
    assert_eq!(
        value(&after, "ringkv_expired_keys_total", &[]).unwrap() as u64,
        stats["expired_keys"].parse::<u64>().unwrap()
    );
    assert!(value(&after, "ringkv_evicted_keys_total", &[]).is_some());
    assert!(value(&after, "ringkv_rejected_connections_total", &[]).is_some());

    // INFO latencystats has percentiles for the commands that ran.
    let latency = ops::info(&mut con, "latencystats");
    let set_line = &latency["latency_percentiles_usec_set"];
    assert!(set_line.starts_with("p50="), "{set_line}");
    assert!(set_line.contains(",p99=") && set_line.contains(",p99.9="));
}

#[test]
fn health_is_alive_and_ready_waits_for_recovery() {
    let (mut config, dir) = ops::config();
    // A fixed admin port: the address must be known before `bind` returns.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.admin_port = Some(port);
    let gate = Arc::new(tokio::sync::Notify::new());
    config.recovery_gate = Some(gate.clone());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let starter = std::thread::spawn(move || ops::start(config, dir));
    // Wait for the admin port while recovery is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(admin).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "admin port never opened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = ops::http_get(admin, "/health");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"alive\""), "{body}");
    let (status, body) = ops::http_get(admin, "/ready");
    assert_eq!(status, 503, "not ready before recovery: {body}");
    assert!(
        body.contains("\"ready\":false") && body.contains("recovering"),
        "{body}"
    );
    gate.notify_one();
    let running = starter.join().unwrap();
    let (status, body) = running.http_get("/ready");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");
    assert_eq!(running.http_get("/nope").0, 404);
}
