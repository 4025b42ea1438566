//! `ringkv cluster …`: operator commands that ask a running cluster node over RESP
//! (docs/cluster.md, "Operating"). They change nothing on their own: the node answers from
//! its cluster map (committed by Raft) and its gossip view of liveness.

use anyhow::Context;

use crate::backup::{connect, ServerAddress};

/// A cluster subcommand.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Print the members, their state and liveness, the epoch and the slot counts, as the
    /// node at HOST:PORT sees them.
    Status {
        /// A member's host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// A member's client port.
        #[arg(long, default_value_t = 6379)]
        port: u16,
        /// AUTH password.
        #[arg(long, env = "RINGKV_PASSWORD")]
        password: Option<String>,
        /// ACL user for AUTH.
        #[arg(long)]
        user: Option<String>,
    },
}

/// Runs a cluster subcommand, printing its result on stdout.
pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Status {
            host,
            port,
            password,
            user,
        } => {
            let address = ServerAddress {
                host,
                port,
                password,
                user,
            };
            let mut connection = connect(&address)?;
            let text: String = redis::cmd("CLUSTER")
                .arg("STATUS")
                .query(&mut connection)
                .with_context(|| format!("CLUSTER STATUS on {}:{}", address.host, address.port))?;
            print!("{}", render_status(&text, &address)?);
            print!("{}", render_transfers(&text, &address));
            Ok(())
        }
    }
}

/// CLUSTER STATUS's `key:value` lines as a table: a summary line, then one row per member.
fn render_status(text: &str, address: &ServerAddress) -> anyhow::Result<String> {
    let mut lines = text.lines();
    let head = fields(lines.next().context("CLUSTER STATUS: empty reply")?);
    let get = |fields: &[(String, String)], key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "?".to_string())
    };
    let mut out = format!(
        "cluster at epoch {}: {} members, {} down, {} replicas of each of {} slots (asked {}:{})\n",
        get(&head, "epoch"),
        get(&head, "members"),
        get(&head, "down"),
        get(&head, "replicas"),
        get(&head, "slots"),
        address.host,
        address.port,
    );
    if let Some(control) = text.lines().find_map(|l| l.strip_prefix("control: ")) {
        let control = fields(control);
        out.push_str(&format!(
            "control plane: this node is {} at term {}, leader {}, {} voters and {} learners, log applied to {}\n",
            get(&control, "role"),
            get(&control, "term"),
            get(&control, "leader"),
            get(&control, "voters"),
            get(&control, "learners"),
            get(&control, "applied"),
        ));
    }
    if let Some(change) = text.lines().find_map(|l| l.strip_prefix("change: ")) {
        let change = fields(change);
        out.push_str(&format!(
            "a membership change started at epoch {} is in progress: {} of {} gaining nodes have their slots, {} replicas move\n",
            get(&change, "started"),
            get(&change, "ready"),
            get(&change, "gaining"),
            get(&change, "moves"),
        ));
    }
    let columns = [
        "client", "cluster", "zone", "state", "health", "slots", "first", "gaining", "ready",
    ];
    let mut rows = vec![std::iter::once("id".to_string())
        .chain(columns.iter().map(|c| c.to_string()))
        .collect::<Vec<_>>()];
    for line in lines.filter(|line| {
        !line.is_empty() && !line.starts_with("change: ") && !line.starts_with("control: ")
    }) {
        let (id, rest) = line
            .split_once(' ')
            .with_context(|| format!("CLUSTER STATUS: bad member line {line:?}"))?;
        let member = fields(rest);
        let mut row = vec![if rest.ends_with(" myself") {
            format!("{id}*")
        } else {
            id.to_string()
        }];
        row.extend(columns.iter().map(|c| match get(&member, c) {
            unknown if unknown == "?" && (*c == "gaining" || *c == "ready") => "-".to_string(),
            value => value,
        }));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("(* the node asked)\n");
    Ok(out)
}

/// For each member still streaming the slots it gains: a progress bar of its slots, from
/// its own CLUSTER INFO (asked at its client address with the same credentials).
fn render_transfers(text: &str, address: &ServerAddress) -> String {
    let mut out = String::new();
    for line in text.lines().skip(1) {
        let Some((id, rest)) = line.split_once(' ') else {
            continue;
        };
        let member = fields(rest);
        let value = |key: &str| {
            member
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if value("ready") != Some("0") {
            continue;
        }
        let Some((host, port)) = value("client").and_then(|a| a.rsplit_once(':')) else {
            continue;
        };
        let info = port.parse().ok().and_then(|port| {
            let mut connection = connect(&ServerAddress {
                host: host.to_string(),
                port,
                password: address.password.clone(),
                user: address.user.clone(),
            })
            .ok()?;
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut connection)
                .ok()
        });
        let short = &id[id.len().saturating_sub(8)..];
        match info {
            None => out.push_str(&format!("{short}  streaming: unreachable\n")),
            Some(info) => {
                let field = |key: &str| -> u64 {
                    info.lines()
                        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0)
                };
                out.push_str(&format!(
                    "{short}  {} slots, {} records, {} bytes received\n",
                    bar(
                        field("cluster_transfer_slots_done"),
                        field("cluster_transfer_slots_wanted")
                    ),
                    field("cluster_transfer_keys_received"),
                    field("cluster_transfer_bytes_received"),
                ));
            }
        }
    }
    out
}

/// `[#####-----]  50% 5/10`.
fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH) as usize;
    let percent = (done * 100).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}] {percent:>3}% {done}/{total}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled)
    )
}

/// `key:value` words of a line (addresses keep their own colons: split at the first).
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|word| word.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_one_row_per_member_with_the_asked_node_marked() {
        let text = "epoch:4 members:2 down:1 replicas:2 slots:16384 myself:aa\n\
                    control: role:leader term:2 leader:aa voters:2 learners:0 applied:9\n\
                    aa client:127.0.0.1:7001 cluster:127.0.0.1:17001 zone:- state:up health:alive slots:16384 first:8192 myself\n\
                    bb client:127.0.0.1:7002 cluster:127.0.0.1:17002 zone:b state:up health:down slots:16384 first:8192\n";
        let address = ServerAddress {
            host: "127.0.0.1".into(),
            port: 7001,
            password: None,
            user: None,
        };
        let out = render_status(text, &address).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("cluster at epoch 4: 2 members, 1 down, 2 replicas"),
            "{out}"
        );
        assert_eq!(
            lines[1],
            "control plane: this node is leader at term 2, leader aa, 2 voters and 0 learners, log applied to 9",
            "{out}"
        );
        assert!(lines[2].starts_with("id "), "{out}");
        assert!(
            lines[3].starts_with("aa* ") && lines[3].contains("127.0.0.1:17001"),
            "{out}"
        );
        assert!(
            lines[4].contains(" down ") && lines[4].contains(" b "),
            "{out}"
        );
        assert_eq!(lines.len(), 6, "{out}");
    }

    #[test]
    fn a_change_in_progress_shows_its_gaining_nodes_and_bars() {
        let text = "epoch:6 members:3 down:0 replicas:2 slots:16384 myself:aa\n\
                    change: started:5 gaining:1 ready:0 moves:5461 mine:0/0 slots streamed\n\
                    aa client:127.0.0.1:7001 cluster:127.0.0.1:17001 zone:- state:up health:alive slots:16384 first:8192 myself\n\
                    cc client:127.0.0.1:7003 cluster:127.0.0.1:17003 zone:- state:up health:alive slots:0 first:0 gaining:5461 ready:0\n";
        let address = ServerAddress {
            host: "127.0.0.1".into(),
            port: 7001,
            password: None,
            user: None,
        };
        let out = render_status(text, &address).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("started at epoch 5") && lines[1].contains("0 of 1 gaining"),
            "{out}"
        );
        assert!(
            lines[4].starts_with("cc ") && lines[4].contains(" 5461 "),
            "{out}"
        );
        assert_eq!(lines.len(), 6, "{out}");
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]  50% 5/10", "#".repeat(15), "-".repeat(15))
        );
        assert_eq!(bar(0, 0), format!("[{}]   0% 0/0", "-".repeat(30)));
    }
}
