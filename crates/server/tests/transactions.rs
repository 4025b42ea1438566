//! MULTI / EXEC / DISCARD / WATCH / UNWATCH against the real binary.

mod common;

use common::{q, resp, Server};
use redis::Commands;

#[test]
fn multi_exec_discard_replies() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(&resp(&[b"EXEC"]), "-ERR EXEC without MULTI\r\n");
    raw.expect(&resp(&[b"DISCARD"]), "-ERR DISCARD without MULTI\r\n");
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"MULTI"]), "-ERR MULTI calls can not be nested\r\n");
    raw.expect(
        &resp(&[b"WATCH", b"x"]),
        "-ERR WATCH inside MULTI is not allowed\r\n",
    );
    raw.expect(&resp(&[b"SET", b"a", b"1"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"INCR", b"a"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"GET", b"a"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"EXPIRE", b"a", b"x"]), "+QUEUED\r\n");
    raw.expect(
        &resp(&[b"EXEC"]),
        "*4\r\n+OK\r\n:2\r\n$1\r\n2\r\n-ERR value is not an integer or out of range\r\n",
    );
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"SET", b"a", b"100"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"DISCARD"]), "+OK\r\n");
    raw.expect(&resp(&[b"GET", b"a"]), "$1\r\n2\r\n");
    // A refused command while queuing aborts the whole transaction.
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"SET", b"a", b"3"]), "+QUEUED\r\n");
    raw.expect(
        &resp(&[b"NOSUCH"]),
        "-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    );
    raw.expect(
        &resp(&[b"GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n",
    );
    raw.expect(
        &resp(&[b"EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    raw.expect(&resp(&[b"GET", b"a"]), "$1\r\n2\r\n");
    // Empty transaction.
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*0\r\n");
}

#[test]
fn watch_aborts_exec_when_a_watched_key_changes() {
    let server = Server::start_with(&["--clock", "manual"]);
    let mut con = server.client();
    let mut other = server.client();
    let _: () = con.set("w", "1").unwrap();
    // Unchanged: EXEC runs.
    assert_eq!(q::<String>(&mut con, &["WATCH", "w", "absent"]), "OK");
    let result: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("w")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(result, Some(("OK".to_string(),)));
    // Changed by another client: EXEC answers a null array and nothing runs.
    let mut raw = server.raw();
    raw.expect(&resp(&[b"WATCH", b"w"]), "+OK\r\n");
    let _: () = other.set("w", "other").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"SET", b"w", b"mine"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    assert_eq!(other.get::<_, String>("w").unwrap(), "other");
    // A key created while watched counts as changed; so does a deleted one.
    raw.expect(&resp(&[b"WATCH", b"new"]), "+OK\r\n");
    let _: () = other.set("new", "x").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    raw.expect(&resp(&[b"WATCH", b"new"]), "+OK\r\n");
    let _: i64 = other.del("new").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    // Absent, created and deleted again before EXEC: changed.
    raw.expect(&resp(&[b"WATCH", b"ghost"]), "+OK\r\n");
    let _: () = other.set("ghost", "x").unwrap();
    let _: i64 = other.del("ghost").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    // EXPIRE touches the key too.
    raw.expect(&resp(&[b"WATCH", b"w"]), "+OK\r\n");
    let _: i64 = other.expire("w", 100).unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    // A key that expires in between counts as changed (Redis 7).
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut other)
        .unwrap();
    raw.expect(&resp(&[b"WATCH", b"short"]), "+OK\r\n");
    let _: i64 = redis::cmd("DEBUG")
        .arg("ADVANCE-CLOCK")
        .arg(300)
        .query(&mut other)
        .unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*-1\r\n");
    // UNWATCH forgets; EXEC and DISCARD forget too.
    raw.expect(&resp(&[b"WATCH", b"w"]), "+OK\r\n");
    raw.expect(&resp(&[b"UNWATCH"]), "+OK\r\n");
    let _: () = other.set("w", "again").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"GET", b"w"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*1\r\n$5\r\nagain\r\n");
    // WATCH in another db watches that db's key.
    raw.expect(&resp(&[b"SELECT", b"2"]), "+OK\r\n");
    raw.expect(&resp(&[b"WATCH", b"w"]), "+OK\r\n");
    let _: () = other.set("w", "db0 change").unwrap();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"EXEC"]), "*0\r\n");
}

#[test]
fn concurrent_watch_transactions_never_lose_an_increment() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = con.set("counter", 0).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut done = 0;
                while done < 50 {
                    let _: () = redis::cmd("WATCH").arg("counter").query(&mut con).unwrap();
                    let value: i64 = con.get("counter").unwrap();
                    let result: Option<(String,)> = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg("counter")
                        .arg(value + 1)
                        .query(&mut con)
                        .unwrap();
                    if result.is_some() {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(con.get::<_, i64>("counter").unwrap(), 200);
}

#[test]
fn a_multi_queue_past_the_query_buffer_limit_is_refused_and_exec_aborts() {
    // client-query-buffer-limit bounds what one MULTI may park in memory too.
    let server = Server::start_with(&["--client-query-buffer-limit", "1mb"]);
    let mut raw = server.raw();
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    let value = vec![b'v'; 100 * 1024];
    let mut refused = false;
    for i in 0..20 {
        let key = format!("k{i}");
        raw.send(&resp(&[b"SET", key.as_bytes(), &value]));
        match raw.read_frame() {
            ringkv_protocol::Frame::Error(text) if text.starts_with(b"ERR MULTI queue is full") => {
                refused = true;
                break;
            }
            ringkv_protocol::Frame::Simple(text) => assert_eq!(&text[..], b"QUEUED", "command {i}"),
            other => panic!("command {i}: {other:?}"),
        }
    }
    assert!(refused, "a queue of 2 MB of arguments was accepted");
    raw.expect(
        &resp(&[b"EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    let mut con = server.client();
    assert_eq!(
        q::<i64>(&mut con, &["EXISTS", "k0"]),
        0,
        "nothing of it ran"
    );
}

/// With every data operation answering later (`DEBUG DATA-PATH deferred`, the shape of the
/// cluster coordinator), EXEC still runs its queue as one unit with replies in order, and a
/// pipeline's replies keep their order.
#[test]
fn exec_and_pipelines_through_the_deferred_data_path() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(&resp(&[b"DEBUG", b"DATA-PATH", b"deferred"]), "+OK\r\n");
    raw.expect(&resp(&[b"MULTI"]), "+OK\r\n");
    raw.expect(&resp(&[b"SET", b"a", b"1"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"INCRBY", b"a", b"41"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"MGET", b"a", b"b"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"DEL", b"b", b"a"]), "+QUEUED\r\n");
    raw.expect(&resp(&[b"EXISTS", b"a"]), "+QUEUED\r\n");
    raw.expect(
        &resp(&[b"EXEC"]),
        "*5\r\n+OK\r\n:42\r\n*2\r\n$2\r\n42\r\n$-1\r\n:1\r\n:0\r\n",
    );
    // A pipeline of 200 dependent commands: each reply reflects every write before it.
    let mut pipeline = Vec::new();
    let mut expected = String::new();
    for i in 1..=100 {
        pipeline.extend_from_slice(&resp(&[b"INCR", b"n"]));
        pipeline.extend_from_slice(&resp(&[b"GET", b"n"]));
        expected.push_str(&format!(":{i}\r\n${}\r\n{i}\r\n", i.to_string().len()));
    }
    raw.expect(&pipeline, &expected);
    // And back to the local path, with the same data.
    raw.expect(&resp(&[b"DEBUG", b"DATA-PATH", b"local"]), "+OK\r\n");
    raw.expect(&resp(&[b"GET", b"n"]), "$3\r\n100\r\n");
}
