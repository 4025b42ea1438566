//! Protected mode: with no password and protected mode on, a client that is not on loopback
//! is refused with Redis' `-DENIED` text.
//!
//! A real non-loopback address of this machine may not be used by tests here, so the
//! integration test runs on 127.0.0.1 with the `protected_mode_loopback_is_remote` seam
//! (the decision itself, including real remote addresses, is unit-tested in `acl.rs`).

mod ops;

use std::io::{Read, Write};

fn first_reply(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"PING\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

#[test]
fn remote_client_without_password_is_denied() {
    let (mut config, dir) = ops::config();
    config.bind = "127.0.0.1".into();
    config.protected_mode_loopback_is_remote = true;
    let running = ops::start(config, dir);
    let reply = first_reply(running.addr);
    assert!(
        reply.starts_with("-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user."),
        "{reply}"
    );
    let (_, metrics) = running.http_get("/metrics");
    assert!(
        metrics.contains("ringkv_protected_mode_rejections_total 1"),
        "{metrics}"
    );
}

#[test]
fn password_or_protected_mode_off_lets_remote_clients_in() {
    for (password, protected) in [(Some("pw".to_string()), true), (None, false)] {
        let (mut config, dir) = ops::config();
        config.protected_mode_loopback_is_remote = true;
        config.requirepass = password.clone();
        config.protected_mode = protected;
        let running = ops::start(config, dir);
        let mut stream = std::net::TcpStream::connect(running.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        let expected = if password.is_some() {
            "-NOAUTH"
        } else {
            "+PONG"
        };
        assert!(reply.starts_with(expected), "{reply}");
    }
}
