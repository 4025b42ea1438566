//! Connection commands (PING ECHO SELECT AUTH HELLO RESET CLIENT QUIT) and RESP3, against the
//! real binary, comparing exact replies.

mod common;

use common::{resp, Server};
use ringkv_protocol::Frame;

#[test]
fn ping_echo_and_unknown_command() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(b"PING\r\n", "+PONG\r\n");
    raw.expect(&resp(&[b"ping", b"hi"]), "$2\r\nhi\r\n");
    raw.expect(
        &resp(&[b"PING", b"a", b"b"]),
        "-ERR wrong number of arguments for 'ping' command\r\n",
    );
    raw.expect(&resp(&[b"ECHO", b"x y"]), "$3\r\nx y\r\n");
    raw.expect(
        &resp(&[b"nosuch", b"a", b"b"]),
        "-ERR unknown command 'nosuch', with args beginning with: 'a' 'b' \r\n",
    );
    raw.expect(
        &resp(&[b"nosuch"]),
        "-ERR unknown command 'nosuch', with args beginning with: \r\n",
    );
    raw.expect(
        &resp(&[b"echo"]),
        "-ERR wrong number of arguments for 'echo' command\r\n",
    );
    // Inline commands, as telnet sends them; an empty line is ignored.
    raw.expect(b"\r\nECHO \"a b\"\r\n", "$3\r\na b\r\n");
}

#[test]
fn select_checks_range_and_integers() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(&resp(&[b"SELECT", b"15"]), "+OK\r\n");
    raw.expect(
        &resp(&[b"SELECT", b"16"]),
        "-ERR DB index is out of range\r\n",
    );
    raw.expect(
        &resp(&[b"SELECT", b"-1"]),
        "-ERR DB index is out of range\r\n",
    );
    raw.expect(
        &resp(&[b"SELECT", b"x"]),
        "-ERR value is not an integer or out of range\r\n",
    );
    raw.expect(
        &resp(&[b"SELECT"]),
        "-ERR wrong number of arguments for 'select' command\r\n",
    );
}

#[test]
fn auth_without_password_configured() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(
        &resp(&[b"AUTH", b"pw"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    );
    raw.expect(&resp(&[b"AUTH", b"a", b"b", b"c"]), "-ERR syntax error\r\n");
}

#[test]
fn requirepass_gates_commands_until_auth() {
    let server = Server::start_with(&["--requirepass", "s3cret"]);
    let mut raw = server.raw();
    raw.expect(&resp(&[b"PING"]), "-NOAUTH Authentication required.\r\n");
    raw.expect(
        &resp(&[b"AUTH", b"wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    raw.expect(
        &resp(&[b"AUTH", b"nobody", b"s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    raw.expect(&resp(&[b"AUTH", b"s3cret"]), "+OK\r\n");
    raw.expect(&resp(&[b"PING"]), "+PONG\r\n");
    // HELLO with AUTH authenticates too.
    let mut other = server.raw();
    other.expect(
        &resp(&[b"HELLO", b"3"]),
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
    );
    let reply = other.call(&resp(&[b"HELLO", b"2", b"AUTH", b"default", b"s3cret"]));
    assert!(matches!(reply, Frame::Array(items) if items.len() == 14));
    let mut with_cli = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &server.port.to_string(),
            "-a",
            "s3cret",
            "--no-auth-warning",
            "PING",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&std::mem::take(&mut with_cli.stdout)),
        "PONG\n"
    );
}

#[test]
fn hello_switches_to_resp3_and_back() {
    let server = Server::start();
    let mut raw = server.raw();
    let Frame::Map(pairs) = raw.call(&resp(&[b"HELLO", b"3", b"SETNAME", b"conn1"])) else {
        panic!("HELLO 3 answers a map")
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == Frame::bulk(name.to_string()))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("proto"), Some(Frame::Integer(3)));
    assert_eq!(field("version"), Some(Frame::bulk("7.2.0")));
    assert_eq!(field("server"), Some(Frame::bulk("redis")));
    assert_eq!(pairs.len(), 7);
    // RESP3 types: null, map (CONFIG GET), verbatim (CLIENT INFO), set (COMMAND INFO flags).
    raw.expect(&resp(&[b"CLIENT", b"GETNAME"]), "$5\r\nconn1\r\n");
    raw.expect(&resp(&[b"OBJECT", b"ENCODING", b"missing"]), "_\r\n");
    raw.expect(
        &resp(&[b"CONFIG", b"GET", b"databases"]),
        "%1\r\n$9\r\ndatabases\r\n$2\r\n16\r\n",
    );
    match raw.call(&resp(&[b"CLIENT", b"INFO"])) {
        Frame::Verbatim { format, text } => {
            assert_eq!(&format, b"txt");
            assert!(String::from_utf8_lossy(&text).contains(" name=conn1 "));
            assert!(String::from_utf8_lossy(&text).contains(" resp=3 "));
        }
        other => panic!("CLIENT INFO in RESP3: {other:?}"),
    }
    match raw.call(&resp(&[b"COMMAND", b"INFO", b"get"])) {
        Frame::Array(items) => {
            assert!(matches!(&items[0], Frame::Array(info) if matches!(info[2], Frame::Set(_))))
        }
        other => panic!("COMMAND INFO: {other:?}"),
    }
    assert!(matches!(raw.call(&resp(&[b"TIME"])), Frame::Array(items) if items.len() == 2));
    let mut check = server.raw();
    check.expect(
        &resp(&[b"HELLO", b"4"]),
        "-NOPROTO unsupported protocol version\r\n",
    );
    check.expect(
        &resp(&[b"HELLO", b"x"]),
        "-ERR Protocol version is not an integer or out of range\r\n",
    );
    check.expect(
        &resp(&[b"HELLO", b"3", b"BOGUS"]),
        "-ERR Syntax error in HELLO option 'BOGUS'\r\n",
    );
    assert!(matches!(
        check.call(&resp(&[b"HELLO", b"3"])),
        Frame::Map(_)
    ));
    assert!(
        matches!(check.call(&resp(&[b"HELLO", b"2"])), Frame::Array(items) if items.len() == 14)
    );
    check.expect(
        &resp(&[b"CONFIG", b"GET", b"databases"]),
        "*2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n",
    );
}

#[test]
fn reset_restores_connection_defaults() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(&resp(&[b"SELECT", b"3"]), "+OK\r\n");
    raw.expect(&resp(&[b"CLIENT", b"SETNAME", b"x"]), "+OK\r\n");
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"RESET"]), "+RESET\r\n");
    raw.expect(&resp(&[b"CLIENT", b"GETNAME"]), "$-1\r\n");
    raw.expect(&resp(&[b"EXEC"]), "-ERR EXEC without MULTI\r\n");
    let Frame::Bulk(text) = raw.call(&resp(&[b"CLIENT", b"INFO"])) else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&text).contains(" db=0 "));
}

#[test]
fn client_subcommands() {
    let server = Server::start();
    let mut a = server.raw();
    let mut b = server.raw();
    a.expect(&resp(&[b"CLIENT", b"SETNAME", b"alpha"]), "+OK\r\n");
    a.expect(
        &resp(&[b"CLIENT", b"SETNAME", b"has space"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    );
    a.expect(&resp(&[b"CLIENT", b"GETNAME"]), "$5\r\nalpha\r\n");
    a.expect(
        &resp(&[b"CLIENT", b"SETINFO", b"lib-name", b"mylib"]),
        "+OK\r\n",
    );
    a.expect(
        &resp(&[b"CLIENT", b"SETINFO", b"bogus", b"x"]),
        "-ERR Unrecognized option 'bogus'\r\n",
    );
    a.expect(
        &resp(&[b"CLIENT", b"GETNAME", b"x"]),
        "-ERR wrong number of arguments for 'client|getname' command\r\n",
    );
    a.expect(
        &resp(&[b"CLIENT", b"FOO"]),
        "-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n",
    );
    let mut con = server.client();
    let Frame::Integer(id_a) = a.call(&resp(&[b"CLIENT", b"ID"])) else {
        panic!()
    };
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.contains(&format!("id={id_a} "))
            && list.contains("name=alpha")
            && list.contains("lib-name=mylib"),
        "{list}"
    );
    let only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id_a)
        .query(&mut con)
        .unwrap();
    assert_eq!(only.lines().count(), 1);
    assert_eq!(
        common::err(&mut con, &["CLIENT", "LIST", "ID", "x"]),
        "ERR Invalid client ID"
    );
    assert_eq!(
        common::err(&mut con, &["CLIENT", "KILL", "1.2.3.4:5"]),
        "ERR No such client"
    );
    // Kill by id: the victim's connection closes, others keep working.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id_a)
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    let (_, closed) = a.read_to_close();
    assert!(closed);
    b.expect(&resp(&[b"PING"]), "+PONG\r\n");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(999_999)
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 0);
}

#[test]
fn quit_replies_ok_then_closes() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.send(&resp(&[b"QUIT"]));
    let (text, closed) = raw.read_to_close();
    assert_eq!(text, "+OK\r\n");
    assert!(closed);
    assert_eq!(server.cli(&["PING"]), "PONG\n");
}

/// The id of a raw connection.
fn client_id(raw: &mut common::Raw) -> i64 {
    match raw.call(&resp(&[b"CLIENT", b"ID"])) {
        Frame::Integer(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    }
}

/// True if the server closed `raw` (a killed client), false if it still answers PING.
fn closed(raw: &mut common::Raw) -> bool {
    use std::io::{Read, Write};
    // A write to a closed connection may fail (reset) or succeed; the read tells.
    if raw.stream.write_all(&resp(&[b"PING"])).is_err() {
        return true;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 7 {
        match raw.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("reading PING reply: {e}"),
        }
    }
    assert_eq!(got, b"+PONG\r\n");
    false
}

#[test]
fn client_kill_user_filter_kills_only_that_users_connections() {
    let server = Server::start();
    let mut admin = server.client();
    common::q::<()>(
        &mut admin,
        &["ACL", "SETUSER", "bob", "on", ">pw", "~*", "+@all"],
    );
    let mut bob = server.raw();
    bob.expect(&resp(&[b"AUTH", b"bob", b"pw"]), "+OK\r\n");
    let mut bob_reset = server.raw();
    bob_reset.expect(&resp(&[b"AUTH", b"bob", b"pw"]), "+OK\r\n");
    // RESET makes the connection the default user again, so USER bob must pass it over.
    bob_reset.expect(&resp(&[b"RESET"]), "+RESET\r\n");
    let mut plain = server.raw();
    let list: String = common::q(&mut admin, &["CLIENT", "LIST"]);
    assert_eq!(list.matches(" user=bob ").count(), 1, "{list}");
    assert_eq!(
        common::err(&mut admin, &["CLIENT", "KILL", "USER", "nosuch"]),
        "ERR No such user 'nosuch'"
    );
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "USER", "bob"]),
        1
    );
    assert!(closed(&mut bob));
    assert!(!closed(&mut bob_reset));
    assert!(!closed(&mut plain));
    // Nobody is bob any more; the others are default and survive a second round.
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "USER", "bob"]),
        0
    );
    assert!(!closed(&mut plain));
}

/// The race behind a flaky `client_kill_user_filter_kills_only_that_users_connections`: a killed
/// connection's task leaves the client table only when it ends, after its socket is shut, so a
/// client that saw the close could still find the killed one in CLIENT LIST and kill it again.
/// Here the killed connection cannot end on its own: it asked for replies it never reads, so its
/// task is stuck writing to a full socket. The kill must take it out of the table regardless.
#[test]
fn killed_client_is_gone_from_list_info_and_later_kills_once_kill_answers() {
    let server = Server::start();
    let mut admin = server.client();
    common::q::<()>(
        &mut admin,
        &["ACL", "SETUSER", "bob", "on", ">pw", "~*", "+@all"],
    );
    let big = vec![b'x'; 8 << 20];
    common::q::<()>(
        &mut admin,
        &["SET", "big", std::str::from_utf8(&big).unwrap()],
    );
    let mut bob = server.raw();
    bob.expect(&resp(&[b"AUTH", b"bob", b"pw"]), "+OK\r\n");
    let bob_id = match bob.call(&resp(&[b"CLIENT", b"ID"])) {
        Frame::Integer(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    };
    // 64 MiB of replies that bob never reads: far more than the socket buffers hold.
    let mut request = Vec::new();
    for _ in 0..8 {
        request.extend_from_slice(&resp(&[b"GET", b"big"]));
    }
    bob.send(&request);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let list: String = common::q(&mut admin, &["CLIENT", "LIST", "ID", &bob_id.to_string()]);
        if list.contains(" cmd=get ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's GET never ran: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        common::info_field(&mut admin, "clients", "connected_clients"),
        "2"
    );
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "USER", "bob"]),
        1
    );
    // No waiting: the answer to the kill is the point from which bob is gone.
    let list: String = common::q(&mut admin, &["CLIENT", "LIST"]);
    assert!(
        !list.contains(" user=bob "),
        "killed client still listed:\n{list}"
    );
    assert_eq!(
        common::info_field(&mut admin, "clients", "connected_clients"),
        "1"
    );
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "USER", "bob"]),
        0,
        "a second kill counted the killed client"
    );
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "ID", &bob_id.to_string()]),
        0
    );
    assert_eq!(
        common::err(&mut admin, &["CLIENT", "KILL", &list_addr_of(&bob)]),
        "ERR No such client"
    );
    drop(bob);
}

/// `ip:port` of a raw client as the server sees it (CLIENT KILL's old form).
fn list_addr_of(raw: &common::Raw) -> String {
    raw.stream.local_addr().unwrap().to_string()
}

#[test]
fn client_kill_type_filter() {
    let server = Server::start();
    let mut admin = server.client();
    let mut others = [server.raw(), server.raw()];
    assert_eq!(
        common::err(&mut admin, &["CLIENT", "KILL", "TYPE", "bogus"]),
        "ERR Unknown client type 'bogus'"
    );
    // No replicas, no pub/sub, no leader link: these select nobody.
    for kind in ["pubsub", "master", "replica", "slave", "REPLICA"] {
        assert_eq!(
            common::q::<i64>(&mut admin, &["CLIENT", "KILL", "TYPE", kind]),
            0,
            "TYPE {kind}"
        );
    }
    for raw in &mut others {
        assert!(!closed(raw));
    }
    // normal: every other ordinary connection, not the caller (SKIPME defaults to yes).
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "TYPE", "normal"]),
        2
    );
    for raw in &mut others {
        assert!(closed(raw));
    }
    assert_eq!(common::q::<String>(&mut admin, &["PING"]), "PONG");
}

#[test]
fn client_kill_type_replica_closes_the_replication_link_only() {
    let leader = Server::start();
    let target = format!("127.0.0.1 {}", leader.port);
    let _replica = Server::start_with(&["--replicaof", &target]);
    let mut admin = leader.client();
    let mut plain = leader.raw();
    // The replica's link as the leader lists it (flags=S), once it has connected.
    let replica_link = |admin: &mut redis::Connection| -> Option<String> {
        let list: String = common::q(admin, &["CLIENT", "LIST", "TYPE", "replica"]);
        let line = list.lines().next()?.to_string();
        assert!(line.contains(" flags=S "), "{line}");
        line.split(' ')
            .find_map(|f| f.strip_prefix("id="))
            .map(str::to_string)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let first = loop {
        if let Some(id) = replica_link(&mut admin) {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let normal: String = common::q(&mut admin, &["CLIENT", "LIST", "TYPE", "normal"]);
    assert!(!normal.contains(&format!("id={first} ")), "{normal}");
    assert_eq!(
        common::q::<i64>(&mut admin, &["CLIENT", "KILL", "TYPE", "replica"]),
        1
    );
    assert!(!closed(&mut plain));
    // The link really closed: the replica reconnects under a new client id.
    loop {
        match replica_link(&mut admin) {
            Some(id) if id != first => break,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica link {first} was not closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn client_kill_maxage_skipme_and_combined_filters() {
    let server = Server::start();
    let mut old = server.raw();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let mut young = server.raw();
    let mut caller = server.raw();
    // A bare CLIENT KILL has no filter: an arity error (as Redis), not "kill everyone".
    caller.expect(
        &resp(&[b"CLIENT", b"KILL"]),
        "-ERR wrong number of arguments for 'client|kill' command\r\n",
    );
    old.expect(&resp(&[b"PING"]), "+PONG\r\n");
    young.expect(&resp(&[b"PING"]), "+PONG\r\n");
    caller.expect(
        &resp(&[b"CLIENT", b"KILL", b"MAXAGE", b"x"]),
        "-ERR value is not an integer or out of range\r\n",
    );
    caller.expect(
        &resp(&[b"CLIENT", b"KILL", b"SKIPME", b"maybe"]),
        "-ERR syntax error\r\n",
    );
    caller.expect(
        &resp(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME"]),
        "-ERR syntax error\r\n",
    );
    caller.expect(
        &resp(&[b"CLIENT", b"KILL", b"BOGUS", b"x"]),
        "-ERR syntax error\r\n",
    );
    // Filters are ANDed: the old connection's id with an age it has not reached yet is nobody.
    let old_id = client_id(&mut old).to_string();
    caller.expect(
        &resp(&[
            b"CLIENT",
            b"KILL",
            b"ID",
            old_id.as_bytes(),
            b"MAXAGE",
            b"3600",
        ]),
        ":0\r\n",
    );
    caller.expect(
        &resp(&[
            b"CLIENT",
            b"KILL",
            b"ID",
            old_id.as_bytes(),
            b"TYPE",
            b"replica",
        ]),
        ":0\r\n",
    );
    assert!(!closed(&mut old));
    // MAXAGE 2: only connections at least 2 seconds old.
    caller.expect(
        &resp(&[b"CLIENT", b"KILL", b"MAXAGE", b"2", b"USER", b"default"]),
        ":1\r\n",
    );
    assert!(closed(&mut old));
    assert!(!closed(&mut young));
    // SKIPME no includes the caller: it gets the count, then its connection closes.
    caller.send(&resp(&[
        b"CLIENT", b"KILL", b"USER", b"default", b"SKIPME", b"no",
    ]));
    let (text, closed_caller) = caller.read_to_close();
    assert_eq!(text, ":2\r\n");
    assert!(closed_caller);
    assert!(closed(&mut young));
}

/// RESP3 through real clients: the `redis` crate on a RESP3 connection (it sends HELLO 3 and
/// parses the RESP3 types) and `redis-cli -3`, whose rendering of maps and nulls is compared
/// with what it prints for Redis 7.0 itself.
#[test]
fn resp3_replies_through_the_redis_crate_and_redis_cli() {
    use redis::Value;
    let server = Server::start();
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = common::q(&mut con, &["SET", "a", "ohmytext"]);
    let _: () = common::q(&mut con, &["SET", "b", "mynewtext"]);
    let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
    assert_eq!(
        common::run(&mut con, &["CONFIG", "GET", "databases"]).unwrap(),
        Value::Map(vec![(bulk("databases"), bulk("16"))])
    );
    assert_eq!(
        common::run(&mut con, &["GET", "missing"]).unwrap(),
        Value::Nil
    );
    match common::run(&mut con, &["LCS", "a", "b", "IDX"]).unwrap() {
        Value::Map(pairs) => {
            assert_eq!(pairs.len(), 2);
            assert_eq!(pairs[0].0, bulk("matches"));
            assert_eq!(pairs[1], (bulk("len"), Value::Int(6)));
        }
        other => panic!("LCS IDX in RESP3 is a map: {other:?}"),
    }
    match common::run(&mut con, &["CLIENT", "INFO"]).unwrap() {
        Value::VerbatimString { format, text } => {
            assert_eq!(format, redis::VerbatimFormat::Text);
            assert!(text.contains(" resp=3 "), "{text}");
        }
        other => panic!("CLIENT INFO in RESP3 is verbatim text: {other:?}"),
    }
    match common::run(&mut con, &["COMMAND", "INFO", "get"]).unwrap() {
        Value::Array(commands) => match &commands[0] {
            Value::Array(info) => assert!(
                matches!(&info[2], Value::Set(flags) if flags.contains(&Value::SimpleString("readonly".into()))),
                "{info:?}"
            ),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // A pipeline of mixed RESP3 replies parses reply by reply.
    let replies: Vec<Value> = redis::pipe()
        .cmd("HELLO")
        .arg(3)
        .cmd("EXISTS")
        .arg("a")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("missing")
        .cmd("INCRBYFLOAT")
        .arg("n")
        .arg("1.5")
        .query(&mut con)
        .unwrap();
    assert!(
        matches!(&replies[0], Value::Map(fields) if fields.contains(&(bulk("proto"), Value::Int(3)))),
        "{:?}",
        replies[0]
    );
    assert_eq!(replies[1..], [Value::Int(1), Value::Nil, bulk("1.5")]);

    // redis-cli -3 --no-raw prints these exactly so for Redis 7.0.
    let cli = |args: &[&str]| {
        let port = server.port.to_string();
        let mut all = vec!["-3", "--no-raw", "-p", &port];
        all.extend_from_slice(args);
        let output = std::process::Command::new("redis-cli")
            .args(&all)
            .output()
            .expect("run redis-cli (install redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(
        cli(&["CONFIG", "GET", "databases"]),
        "1# \"databases\" => \"16\"\n"
    );
    assert_eq!(cli(&["GET", "missing"]), "(nil)\n");
    assert_eq!(
        cli(&["LCS", "a", "b", "IDX"]),
        "1# \"matches\" => \n   1) 1) 1) (integer) 4\n         2) (integer) 7\n      2) 1) (integer) 5\n         2) (integer) 8\n   2) 1) 1) (integer) 2\n         2) (integer) 3\n      2) 1) (integer) 0\n         2) (integer) 1\n2# \"len\" => (integer) 6\n"
    );
    let hello = cli(&["HELLO", "3"]);
    assert!(
        hello.starts_with("1# \"server\" => \"redis\"\n2# \"version\" => ")
            && hello.contains("3# \"proto\" => (integer) 3\n")
            && hello.ends_with("7# \"modules\" => (empty array)\n"),
        "{hello}"
    );
}
