//! Protected mode on a real non-loopback address: the test makes a network namespace joined to
//! this one by a veth pair (10.213.x.1 here, 10.213.x.2 inside), starts the real binary bound
//! to 10.213.x.1 without a password, and connects from inside the namespace, a remote client
//! by every measure the server has. Needs root and iproute2 (scripts/test.sh installs it); if
//! the namespace cannot be made the test fails, it does not skip. The loopback variant with
//! the test seam stays in `protected.rs`.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::netns::Namespace;
use common::Server;

/// The start of Redis' protected-mode refusal.
const DENIED: &str = "DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user.";

/// The namespace for this test: unique per test process, so two runs at once do not collide.
fn namespace() -> Namespace {
    let id = std::process::id();
    Namespace::create(
        "protected-mode test",
        format!("rkv{id}"),
        format!("rkv{}h", id % 1_000_000),
        format!("rkv{}p", id % 1_000_000),
        format!("10.213.{}", id % 250),
    )
}

impl Namespace {
    /// Runs `redis-cli -h <host> -p port args…` inside the namespace; its stdout.
    fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "redis-cli", "-h", &self.host])
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli in the namespace");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The first reply to PING from this side, connecting to the server's non-loopback address
/// (the peer address is then 10.213.x.1 too: not loopback either).
fn first_reply(host: &str, port: u16) -> String {
    let mut stream = std::net::TcpStream::connect((host, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"PING\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

#[test]
fn remote_client_on_a_real_interface_is_denied_without_a_password() {
    let namespace = namespace();
    // The helper binds 127.0.0.1 first; the later --bind wins.
    let open = Server::start_with(&["--bind", &namespace.host]);
    let reply = namespace.redis_cli(open.port, &["PING"]);
    assert!(reply.starts_with(DENIED), "from the namespace: {reply:?}");
    let reply = first_reply(&namespace.host, open.port);
    assert!(
        reply.starts_with(&format!("-{DENIED}")) && reply.ends_with("\r\n"),
        "{reply:?}"
    );
    // The log is copied from the server's stderr by a thread: the second line may trail the
    // reply by a moment.
    let refusals = || {
        open.log()
            .matches("refused a remote client: protected mode")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusals() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refusals(), 2, "{}", open.log());

    // A password, or protected mode off, lets the same remote client in.
    let with_password = Server::start_with(&["--bind", &namespace.host, "--requirepass", "pw"]);
    let reply = namespace.redis_cli(
        with_password.port,
        &["--no-auth-warning", "-a", "pw", "PING"],
    );
    assert_eq!(reply.trim(), "PONG");
    let off = Server::start_with(&["--bind", &namespace.host, "--protected-mode", "no"]);
    assert_eq!(namespace.redis_cli(off.port, &["PING"]).trim(), "PONG");
}
