//! In-process server for the operations tests (metrics, ACL, TLS, limits, protected mode):
//! starts `ringkv_server::bind` + `serve` on its own runtime thread with any [`Config`], so
//! tests can set fields the command line does not have (test seams) and read the bound
//! admin/TLS addresses.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringkv_server::{Config, ShutdownHandle};

/// A running in-process server; stops on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub shutdown: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// A config on free ports in a fresh temporary directory.
pub fn config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        port: 0,
        admin_port: Some(0),
        dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    (config, dir)
}

pub fn start(config: Config, dir: tempfile::TempDir) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let bound = ringkv_server::bind(config).await.expect("bind");
            tx.send((
                bound.local_addr().unwrap(),
                bound.admin_addr(),
                bound.tls_addr(),
                bound.shutdown_handle(),
            ))
            .unwrap();
            bound.serve().await.expect("serve");
        });
    });
    let (addr, admin, tls, shutdown) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Running {
        addr,
        admin,
        tls,
        shutdown,
        thread: Some(thread),
        dir,
    }
}

impl Running {
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.addr))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// GET `path` on the admin port: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("admin port"), path)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// GET `path` from `addr`: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `INFO section` parsed into field → value.
pub fn info(
    con: &mut redis::Connection,
    section: &str,
) -> std::collections::HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}
