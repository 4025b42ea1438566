//! Limits that keep one client from hurting the others: idle `timeout`, the output buffer
//! limit, `maxmemory` with -OOM, and a bounded load test with 5 000 concurrent connections and
//! slow readers on loopback (figures printed; see docs/BENCHMARKS.md "Many connections").

mod ops;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Raises the soft fd limit towards `wanted` (at most the hard limit); the limit reached.
fn raise_fd_limit(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        limit.rlim_cur
    }
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    let (mut config, dir) = ops::config();
    config.timeout_seconds = 1;
    let running = ops::start(config, dir);
    let mut stream = std::net::TcpStream::connect(running.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).unwrap(), 0, "closed by the server");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (_, metrics) = running.http_get("/metrics");
    assert!(
        metrics.contains("ringkv_idle_disconnects_total 1"),
        "{metrics}"
    );
}

#[test]
fn reply_over_the_output_limit_closes_the_client() {
    let (mut config, dir) = ops::config();
    config.output_buffer_bytes_max = 1 << 20;
    let running = ops::start(config, dir);
    let mut con = running.client();
    let big = vec![b'x'; 2 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big[..])
        .query(&mut con)
        .unwrap();
    let small: redis::RedisResult<Vec<u8>> = redis::cmd("GET").arg("big").query(&mut con);
    assert!(
        small.is_err(),
        "a 2 MiB reply over a 1 MiB limit closes the connection"
    );
    let mut other = running.client();
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
    let (_, metrics) = running.http_get("/metrics");
    assert!(
        metrics.contains("ringkv_output_limit_disconnects_total 1"),
        "{metrics}"
    );
}

#[test]
fn maxmemory_refuses_writes_with_oom_but_serves_reads() {
    let (mut config, dir) = ops::config();
    config.maxmemory = 64 * 1024;
    let running = ops::start(config, dir);
    let mut con = running.client();
    let value = vec![b'v'; 4096];
    let mut refused = None;
    for i in 0..1000 {
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value[..])
            .query(&mut con);
        if let Err(error) = result {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("writes refused once the memtable passes maxmemory");
    assert_eq!(error.code(), Some("OOM"), "{error}");
    let read: Vec<u8> = redis::cmd("GET").arg("k0").query(&mut con).unwrap();
    assert_eq!(read, value);
    // Deletes are not `denyoom`: they still go through and free space later.
    let _: i64 = redis::cmd("DEL").arg("k0").query(&mut con).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("ok")
        .query(&mut con)
        .unwrap();
    let engine = ops::info(&mut con, "engine");
    assert!(engine["oom_rejections"].parse::<u64>().unwrap() >= 1);
}

/// Idle connections held open by the load test.
const CONNECTIONS: usize = 5_000;
/// Clients that pipeline large replies and never read them.
const SLOW_READERS: usize = 4;
/// Clients measuring latency while the rest is going on.
const NORMAL_CLIENTS: usize = 8;
const NORMAL_REQUESTS: usize = 500;

#[test]
fn five_thousand_connections_and_slow_readers() {
    // Client and server sides live in this process: two descriptors per connection.
    let limit = raise_fd_limit(4 * CONNECTIONS as u64 + 1024);
    assert!(
        limit >= 2 * CONNECTIONS as u64 + 512,
        "fd limit {limit} too low for {CONNECTIONS} connections (raise ulimit -n)"
    );
    let (mut config, dir) = ops::config();
    config.maxclients = CONNECTIONS + 100;
    config.output_buffer_bytes_max = 1 << 20;
    let running = ops::start(config, dir);
    let addr = running.addr;
    let mut con = running.client();
    let big = vec![b'b'; 100 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big[..])
        .query(&mut con)
        .unwrap();
    let rss_start = rss_bytes();
    let test_started = Instant::now();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async move {
        // 1. Open CONNECTIONS connections, each proves it is served with a PING.
        let opened = Instant::now();
        let mut idle = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"PING\r\n").await.unwrap();
            idle.push(stream);
        }
        for stream in &mut idle {
            let mut buf = [0u8; 7];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"+PONG\r\n");
        }
        let open_seconds = opened.elapsed().as_secs_f64();
        let rss_connected = rss_bytes();

        // 2. Slow readers: pipeline 2 000 GETs of 100 KiB (200 MB of replies), read nothing.
        let mut slow = Vec::new();
        for _ in 0..SLOW_READERS {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2_000);
            // The server stops reading once its writes block, so this may not all go out.
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&request)).await;
            slow.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_slow = rss_bytes();

        // 3. Normal clients keep working; measure each request.
        let mut tasks = Vec::new();
        for c in 0..NORMAL_CLIENTS {
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut latencies = Vec::with_capacity(NORMAL_REQUESTS);
                let mut buf = [0u8; 64];
                for i in 0..NORMAL_REQUESTS {
                    let key = format!("c{c}:{i}");
                    let request =
                        format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len());
                    let started = Instant::now();
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let n = stream.read(&mut buf).await.unwrap();
                    assert_eq!(&buf[..n], b"+OK\r\n");
                    latencies.push(started.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        latencies.sort();
        let pick =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        // The idle connections are all still served.
        for stream in idle.iter_mut().step_by(50) {
            stream.write_all(b"PING\r\n").await.unwrap();
            let mut buf = [0u8; 7];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"+PONG\r\n");
        }
        let report = format!(
            "connections={CONNECTIONS} open_seconds={open_seconds:.2} slow_readers={SLOW_READERS} \
             normal_requests={} p50_us={} p99_us={} p999_us={} max_us={} \
             rss_start_mib={:.1} rss_connected_mib={:.1} rss_with_slow_readers_mib={:.1}",
            latencies.len(),
            pick(0.50).as_micros(),
            pick(0.99).as_micros(),
            pick(0.999).as_micros(),
            latencies.last().unwrap().as_micros(),
            rss_start as f64 / (1 << 20) as f64,
            rss_connected as f64 / (1 << 20) as f64,
            rss_slow as f64 / (1 << 20) as f64,
        );
        assert!(pick(0.99) < Duration::from_millis(100), "{report}");
        drop(slow);
        drop(idle);
        (report, rss_slow)
    });
    let (report, rss_slow) = report;
    println!(
        "many-connections: {report} total_seconds={:.1}",
        test_started.elapsed().as_secs_f64()
    );
    // Bounded: 5 000 connections and the slow readers' pending replies stay far below what
    // the replies they asked for would take (4 × 200 MB).
    assert!(rss_slow - rss_start < 400 << 20, "{report}");
    assert!(
        test_started.elapsed() < Duration::from_secs(120),
        "{report}"
    );
    let mut check = running.client();
    let clients = ops::info(&mut check, "clients");
    let connected: usize = clients["connected_clients"].parse().unwrap();
    assert!(
        connected < CONNECTIONS,
        "closed connections leave the table: {connected}"
    );
    let _ = std::io::stdout().flush();
}
