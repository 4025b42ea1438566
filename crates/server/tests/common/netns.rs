//! A network namespace joined to this one by a veth pair, for tests that need a real
//! non-loopback client (`protected_netns.rs`, `hostile.rs`): the server binds the address on
//! this side, clients connect from inside. Needs root and iproute2; if the namespace cannot be
//! made the test fails, it does not skip. Removed on drop.

use std::process::Command;

/// A network namespace with a veth link to this one; removed on drop.
pub struct Namespace {
    pub name: String,
    pub host_link: String,
    /// Address on this side (the server binds it).
    pub host: String,
}

/// Runs `ip args…`; a failure names `purpose` (the test that needs it).
pub fn ip(purpose: &str, args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("{purpose} needs iproute2 (`ip`, apt-get install iproute2): {e}")
    });
    assert!(
        output.status.success(),
        "{purpose} needs root and network namespaces; `ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Namespace {
    /// Makes namespace `name` with the veth pair `host_link` (here, `{subnet}.1/30`) and
    /// `peer_link` (inside, `{subnet}.2/30`); `purpose` names the test in failures.
    pub fn create(
        purpose: &str,
        name: String,
        host_link: String,
        peer_link: String,
        subnet: String,
    ) -> Namespace {
        let ip = |args: &[&str]| ip(purpose, args);
        let namespace = Namespace {
            name: name.clone(),
            host_link: host_link.clone(),
            host: format!("{subnet}.1"),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &peer_link,
        ]);
        ip(&["link", "set", &peer_link, "netns", &name]);
        ip(&["addr", "add", &format!("{subnet}.1/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{subnet}.2/30"), "dev", &peer_link]);
        inside(&["link", "set", &peer_link, "up"]);
        inside(&["link", "set", "lo", "up"]);
        namespace
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
