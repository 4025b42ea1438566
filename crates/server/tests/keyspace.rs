//! Generic keyspace commands against the real binary: every option and error path, 16
//! databases, SCAN's guarantees, RANGE.

mod common;

use std::collections::BTreeSet;

use common::{err, q, Server};
use redis::{Commands, Connection, Value};

fn set(con: &mut Connection, key: &str, value: &str) {
    let _: () = con.set(key, value).unwrap();
}

#[test]
fn del_unlink_exists_touch_type() {
    let server = Server::start();
    let mut con = server.client();
    set(&mut con, "a", "1");
    set(&mut con, "b", "2");
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "a", "a", "b", "zz"]), 3);
    assert_eq!(q::<i64>(&mut con, &["TOUCH", "a", "zz"]), 1);
    assert_eq!(q::<String>(&mut con, &["TYPE", "a"]), "string");
    assert_eq!(q::<String>(&mut con, &["TYPE", "zz"]), "none");
    assert_eq!(q::<i64>(&mut con, &["DEL", "a", "a", "zz"]), 1);
    assert_eq!(q::<i64>(&mut con, &["UNLINK", "b"]), 1);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
    assert_eq!(
        err(&mut con, &["DEL"]),
        "ERR wrong number of arguments for 'del' command"
    );
    assert_eq!(
        err(&mut con, &["EXISTS"]),
        "ERR wrong number of arguments for 'exists' command"
    );
    assert_eq!(
        err(&mut con, &["TYPE", "a", "b"]),
        "ERR wrong number of arguments for 'type' command"
    );
}

#[test]
fn rename_and_renamenx_keep_value_and_ttl() {
    let server = Server::start();
    let mut con = server.client();
    set(&mut con, "src", "v");
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "src", "100000"]), 1);
    assert_eq!(q::<String>(&mut con, &["RENAME", "src", "dst"]), "OK");
    assert_eq!(
        q::<Option<String>>(&mut con, &["GET", "dst"]),
        Some("v".into())
    );
    assert!(q::<i64>(&mut con, &["PTTL", "dst"]) > 90_000);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "src"]), 0);
    assert_eq!(err(&mut con, &["RENAME", "nosuch", "x"]), "ERR no such key");
    assert_eq!(
        err(&mut con, &["RENAMENX", "nosuch", "x"]),
        "ERR no such key"
    );
    assert_eq!(q::<String>(&mut con, &["RENAME", "dst", "dst"]), "OK");
    set(&mut con, "other", "o");
    assert_eq!(q::<i64>(&mut con, &["RENAMENX", "dst", "other"]), 0);
    assert_eq!(q::<i64>(&mut con, &["RENAMENX", "dst", "fresh"]), 1);
    assert_eq!(q::<String>(&mut con, &["RENAME", "fresh", "other"]), "OK");
    assert_eq!(
        q::<Option<String>>(&mut con, &["GET", "other"]),
        Some("v".into())
    );
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
    assert_eq!(
        err(&mut con, &["RENAME", "a"]),
        "ERR wrong number of arguments for 'rename' command"
    );
}

#[test]
fn copy_with_db_and_replace() {
    let server = Server::start();
    let mut con = server.client();
    set(&mut con, "a", "1");
    set(&mut con, "b", "2");
    assert_eq!(q::<i64>(&mut con, &["COPY", "a", "b"]), 0);
    assert_eq!(q::<i64>(&mut con, &["COPY", "a", "b", "REPLACE"]), 1);
    assert_eq!(q::<String>(&mut con, &["GET", "b"]), "1");
    assert_eq!(q::<i64>(&mut con, &["COPY", "nosuch", "c"]), 0);
    assert_eq!(q::<i64>(&mut con, &["COPY", "a", "a", "db", "5"]), 1);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 2);
    assert_eq!(
        err(&mut con, &["COPY", "a", "a"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut con, &["COPY", "a", "x", "DB", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut con, &["COPY", "a", "x", "DB", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut con, &["COPY", "a", "x", "BOGUS"]),
        "ERR syntax error"
    );
    assert_eq!(err(&mut con, &["COPY", "a", "x", "DB"]), "ERR syntax error");
    assert_eq!(q::<String>(&mut con, &["SELECT", "5"]), "OK");
    assert_eq!(q::<String>(&mut con, &["GET", "a"]), "1");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
}

#[test]
fn sixteen_databases_select_move_swapdb_flushdb() {
    let server = Server::start();
    let mut con = server.client();
    for db in 0..16 {
        assert_eq!(q::<String>(&mut con, &["SELECT", &db.to_string()]), "OK");
        for i in 0..=db {
            set(&mut con, &format!("k{i}"), &format!("db{db}"));
        }
    }
    for db in 0..16 {
        q::<String>(&mut con, &["SELECT", &db.to_string()]);
        assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), db + 1);
        assert_eq!(q::<String>(&mut con, &["GET", "k0"]), format!("db{db}"));
    }
    // MOVE
    q::<String>(&mut con, &["SELECT", "0"]);
    set(&mut con, "mover", "m");
    assert_eq!(q::<i64>(&mut con, &["MOVE", "mover", "1"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "mover"]), 0);
    assert_eq!(q::<i64>(&mut con, &["MOVE", "mover", "1"]), 0);
    assert_eq!(q::<i64>(&mut con, &["MOVE", "k0", "1"]), 0, "target exists");
    assert_eq!(
        err(&mut con, &["MOVE", "k0", "0"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        err(&mut con, &["MOVE", "k0", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut con, &["MOVE", "k0", "x"]),
        "ERR value is not an integer or out of range"
    );
    q::<String>(&mut con, &["SELECT", "1"]);
    assert_eq!(q::<String>(&mut con, &["GET", "mover"]), "m");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 3);
    // SWAPDB: another connection sitting on db 1 sees db 2's data at once.
    let mut watcher = server.client();
    q::<String>(&mut watcher, &["SELECT", "2"]);
    assert_eq!(q::<String>(&mut con, &["SWAPDB", "1", "2"]), "OK");
    assert_eq!(
        q::<i64>(&mut con, &["DBSIZE"]),
        3,
        "db 1 now holds old db 2 (3 keys)"
    );
    assert_eq!(q::<String>(&mut con, &["GET", "k0"]), "db2");
    assert_eq!(q::<String>(&mut watcher, &["GET", "mover"]), "m");
    assert_eq!(q::<String>(&mut con, &["SWAPDB", "3", "3"]), "OK");
    assert_eq!(
        err(&mut con, &["SWAPDB", "x", "1"]),
        "ERR invalid first DB index"
    );
    assert_eq!(
        err(&mut con, &["SWAPDB", "1", "x"]),
        "ERR invalid second DB index"
    );
    assert_eq!(
        err(&mut con, &["SWAPDB", "1", "16"]),
        "ERR DB index is out of range"
    );
    // FLUSHDB only empties the selected db.
    q::<String>(&mut con, &["SELECT", "5"]);
    assert_eq!(q::<String>(&mut con, &["FLUSHDB"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "k0"]), None);
    assert_eq!(q::<String>(&mut con, &["FLUSHDB", "ASYNC"]), "OK");
    assert_eq!(q::<String>(&mut con, &["FLUSHDB", "sync"]), "OK");
    assert_eq!(err(&mut con, &["FLUSHDB", "bogus"]), "ERR syntax error");
    set(&mut con, "after", "flush");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
    q::<String>(&mut con, &["SELECT", "6"]);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 7);
    assert_eq!(q::<String>(&mut con, &["FLUSHALL"]), "OK");
    for db in 0..16 {
        q::<String>(&mut con, &["SELECT", &db.to_string()]);
        assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
        assert_eq!(
            q::<Vec<String>>(&mut con, &["KEYS", "*"]),
            Vec::<String>::new()
        );
    }
    assert_eq!(err(&mut con, &["FLUSHALL", "x", "y"]), "ERR syntax error");
}

#[test]
fn flushed_databases_survive_restart_empty() {
    let mut server = Server::start_with(&["--appendfsync", "always"]);
    let mut con = server.client();
    q::<String>(&mut con, &["DEBUG", "POPULATE", "5000"]);
    q::<String>(&mut con, &["SELECT", "3"]);
    set(&mut con, "keep", "me");
    q::<String>(&mut con, &["SELECT", "0"]);
    q::<String>(&mut con, &["FLUSHDB"]);
    set(&mut con, "new", "key");
    q::<String>(&mut con, &["SWAPDB", "0", "3"]);
    drop(con);
    server.restart();
    let mut con = server.client();
    assert_eq!(
        q::<Vec<String>>(&mut con, &["KEYS", "*"]),
        vec!["keep".to_string()]
    );
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
    q::<String>(&mut con, &["SELECT", "3"]);
    assert_eq!(
        q::<Vec<String>>(&mut con, &["KEYS", "*"]),
        vec!["new".to_string()]
    );
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
}

#[test]
fn keys_with_glob_patterns() {
    let server = Server::start();
    let mut con = server.client();
    for key in [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "user:1", "user:2", "h*llo",
    ] {
        set(&mut con, key, "v");
    }
    let keys = |con: &mut Connection, pattern: &str| -> Vec<String> { q(con, &["KEYS", pattern]) };
    assert_eq!(
        keys(&mut con, "h?llo"),
        vec!["h*llo", "hallo", "hello", "hxllo"]
    );
    assert_eq!(
        keys(&mut con, "h*llo"),
        vec!["h*llo", "hallo", "heeeello", "hello", "hllo", "hxllo"]
    );
    assert_eq!(keys(&mut con, "h[ae]llo"), vec!["hallo", "hello"]);
    assert_eq!(keys(&mut con, "h[^e]llo"), vec!["h*llo", "hallo", "hxllo"]);
    assert_eq!(keys(&mut con, "h[a-b]llo"), vec!["hallo"]);
    assert_eq!(keys(&mut con, "h\\*llo"), vec!["h*llo"]);
    assert_eq!(keys(&mut con, "user:*"), vec!["user:1", "user:2"]);
    assert_eq!(keys(&mut con, "*").len(), 8);
    assert_eq!(keys(&mut con, "nomatch"), Vec::<String>::new());
}

#[test]
fn scan_walks_every_key_once_with_match_count_and_type() {
    let server = Server::start();
    let mut con = server.client();
    q::<String>(&mut con, &["DEBUG", "POPULATE", "1000"]);
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let (next, keys): (String, Vec<String>) = q(&mut con, &["SCAN", &cursor, "COUNT", "37"]);
        assert!(keys.len() <= 37);
        // Keys written during the scan do not disturb it.
        set(&mut con, &format!("zzz:{pages}"), "late");
        seen.extend(keys);
        pages += 1;
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    let originals: Vec<&String> = seen.iter().filter(|k| k.starts_with("key:")).collect();
    assert_eq!(originals.len(), 1000);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key returned twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "keys come in order");
    // MATCH filters visited keys; TYPE filters by type.
    let mut matched = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = q(
            &mut con,
            &[
                "scan", &cursor, "match", "key:99*", "count", "100", "type", "string",
            ],
        );
        matched.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(matched.len(), 11);
    let (cursor, keys): (String, Vec<String>) =
        q(&mut con, &["SCAN", "0", "TYPE", "list", "COUNT", "5000"]);
    assert_eq!((cursor.as_str(), keys.len()), ("0", 0));
    // The redis crate's own iterator.
    let all: Vec<String> = con.scan_match::<_, String>("key:1*").unwrap().collect();
    assert_eq!(all.len(), 111);
    // Errors and an unknown cursor.
    assert_eq!(err(&mut con, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(err(&mut con, &["SCAN", "-1"]), "ERR invalid cursor");
    assert_eq!(
        err(&mut con, &["SCAN", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut con, &["SCAN", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(err(&mut con, &["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(
        err(&mut con, &["SCAN", "0", "BOGUS", "1"]),
        "ERR syntax error"
    );
    // A cursor the server never handed out starts over (duplicates are allowed,
    // a missed key is not).
    let (cursor, keys): (String, Vec<String>) = q(&mut con, &["SCAN", "123456789"]);
    let (_, first): (String, Vec<String>) = q(&mut con, &["SCAN", "0"]);
    assert_ne!(cursor, "0");
    assert_eq!(keys, first);
}

#[test]
fn range_reads_keys_between_bounds() {
    let server = Server::start();
    let mut con = server.client();
    for key in ["a", "b", "c", "d", "e"] {
        set(&mut con, key, &key.to_uppercase());
    }
    let range = |con: &mut Connection, args: &[&str]| -> Vec<String> {
        let mut all = vec!["RANGE"];
        all.extend_from_slice(args);
        q(con, &all)
    };
    assert_eq!(range(&mut con, &["-", "+"]), vec!["a", "b", "c", "d", "e"]);
    assert_eq!(range(&mut con, &["b", "d"]), vec!["b", "c", "d"]);
    assert_eq!(range(&mut con, &["[b", "(d"]), vec!["b", "c"]);
    assert_eq!(range(&mut con, &["(b", "+", "LIMIT", "2"]), vec!["c", "d"]);
    assert_eq!(
        range(&mut con, &["-", "+", "limit", "0"]),
        Vec::<String>::new()
    );
    assert_eq!(range(&mut con, &["d", "b"]), Vec::<String>::new());
    assert_eq!(range(&mut con, &["c", "c", "WITHVALUES"]), vec!["c", "C"]);
    assert_eq!(
        range(&mut con, &["-", "b", "withvalues", "limit", "10"]),
        vec!["a", "A", "b", "B"]
    );
    assert_eq!(
        err(&mut con, &["RANGE", "-", "+", "LIMIT", "-1"]),
        "ERR LIMIT can't be negative"
    );
    assert_eq!(
        err(&mut con, &["RANGE", "-", "+", "LIMIT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut con, &["RANGE", "-", "+", "BOGUS"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut con, &["RANGE", "-"]),
        "ERR wrong number of arguments for 'range' command"
    );
    // Only the selected database.
    q::<String>(&mut con, &["SELECT", "1"]);
    assert_eq!(range(&mut con, &["-", "+"]), Vec::<String>::new());
}

#[test]
fn randomkey_object_memory() {
    let server = Server::start();
    let mut con = server.client();
    assert_eq!(q::<Value>(&mut con, &["RANDOMKEY"]), Value::Nil);
    set(&mut con, "int", "12345");
    set(&mut con, "short", "hello");
    set(&mut con, "long", &"x".repeat(100));
    let mut found = BTreeSet::new();
    for _ in 0..200 {
        found.insert(q::<String>(&mut con, &["RANDOMKEY"]));
    }
    assert!(found
        .iter()
        .all(|k| ["int", "short", "long"].contains(&k.as_str())));
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(q::<String>(&mut con, &["OBJECT", "ENCODING", "int"]), "int");
    assert_eq!(
        q::<String>(&mut con, &["OBJECT", "ENCODING", "short"]),
        "embstr"
    );
    assert_eq!(
        q::<String>(&mut con, &["OBJECT", "encoding", "long"]),
        "raw"
    );
    assert_eq!(
        q::<Value>(&mut con, &["OBJECT", "ENCODING", "missing"]),
        Value::Nil
    );
    assert_eq!(q::<i64>(&mut con, &["OBJECT", "REFCOUNT", "short"]), 1);
    assert_eq!(q::<i64>(&mut con, &["OBJECT", "IDLETIME", "short"]), 0);
    assert!(err(&mut con, &["OBJECT", "FREQ", "short"])
        .starts_with("ERR An LFU maxmemory policy is not selected"));
    assert_eq!(
        err(&mut con, &["OBJECT", "BOGUS", "x"]),
        "ERR unknown subcommand 'BOGUS'. Try OBJECT HELP."
    );
    assert_eq!(
        err(&mut con, &["OBJECT", "ENCODING"]),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert!(q::<Vec<String>>(&mut con, &["OBJECT", "HELP"]).len() > 5);
    let usage: i64 = q(&mut con, &["MEMORY", "USAGE", "long"]);
    assert!(usage >= 104, "{usage}");
    assert!(q::<i64>(&mut con, &["MEMORY", "USAGE", "long", "SAMPLES", "0"]) >= 104);
    assert_eq!(
        q::<Value>(&mut con, &["MEMORY", "USAGE", "missing"]),
        Value::Nil
    );
    assert_eq!(
        err(&mut con, &["MEMORY", "USAGE", "long", "BOGUS", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut con, &["MEMORY", "FOO"]),
        "ERR unknown subcommand 'FOO'. Try MEMORY HELP."
    );
}

#[test]
fn dbsize_is_exact_under_overwrites_and_deletes() {
    let server = Server::start();
    let mut con = server.client();
    for round in 0..3 {
        for i in 0..500 {
            set(&mut con, &format!("k{i}"), &round.to_string());
        }
    }
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 500);
    for i in 0..100 {
        q::<i64>(&mut con, &["EXPIRE", &format!("k{i}"), "1000"]);
    }
    for i in 50..150 {
        set(&mut con, &format!("k{i}"), "again");
    }
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 500);
    let keys: Vec<String> = (0..250).map(|i| format!("k{i}")).collect();
    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(k);
    }
    assert_eq!(del.query::<i64>(&mut con).unwrap(), 250);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 250);
    assert_eq!(q::<Vec<String>>(&mut con, &["KEYS", "*"]).len(), 250);
}

#[test]
fn flushed_keys_are_cleared_in_the_background() {
    let server = Server::start();
    let mut con = server.client();
    q::<String>(&mut con, &["DEBUG", "POPULATE", "50000", "big"]);
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("ttl{i}"))
            .arg(1)
            .arg("EX")
            .arg(1000)
            .query(&mut con)
            .unwrap();
    }
    let flushed = std::time::Instant::now();
    assert_eq!(q::<String>(&mut con, &["FLUSHALL"]), "OK");
    assert!(
        flushed.elapsed() < std::time::Duration::from_secs(2),
        "FLUSHALL returns at once"
    );
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut con, &["RANDOMKEY"]), Value::Nil);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let info: String = q(&mut con, &["INFO", "persistence"]);
        if info.contains("flushes_pending:0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "background clear did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The freed namespaces are reused and start empty.
    set(&mut con, "fresh", "1");
    assert_eq!(
        q::<Vec<String>>(&mut con, &["KEYS", "*"]),
        vec!["fresh".to_string()]
    );
    assert_eq!(q::<String>(&mut con, &["FLUSHDB"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
}

#[test]
fn scan_with_a_cursor_from_before_a_restart_starts_over_and_misses_nothing() {
    let mut server = Server::start_with(&["--appendfsync", "always"]);
    let mut con = server.client();
    q::<String>(&mut con, &["DEBUG", "POPULATE", "300"]);
    let (cursor, first_page): (String, Vec<String>) = q(&mut con, &["SCAN", "0", "COUNT", "100"]);
    assert_ne!(cursor, "0");
    assert_eq!(first_page.len(), 100);
    server.restart();
    let mut con = server.client();
    // The server forgot the cursor: it must not end the scan early.
    let mut seen: BTreeSet<String> = first_page.into_iter().collect();
    let mut cursor = cursor;
    loop {
        let (next, keys): (String, Vec<String>) = q(&mut con, &["SCAN", &cursor, "COUNT", "100"]);
        seen.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 300, "every key seen at least once");
}

/// Every key a full SCAN of db 0 returns, in page order (duplicates kept), and how many pages
/// it took. `between_pages` runs after each page.
fn scan_all(
    con: &mut Connection,
    count: usize,
    mut between_pages: impl FnMut(usize),
) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            q(con, &["SCAN", &cursor, "COUNT", &count.to_string()]);
        seen.extend(keys);
        pages += 1;
        between_pages(pages);
        if next == "0" {
            return (seen, pages);
        }
        cursor = next;
    }
}

#[test]
fn many_concurrent_scans_all_finish_seeing_every_key_once() {
    const KEYS: usize = 700;
    const FAST: usize = 16;
    // Each fast scan hands out KEYS - 1 cursors: more in all than the table's 10 000, so the
    // table really evicts while the slow scan waits.
    const _: () = assert!(FAST * (KEYS - 1) > 10_000);
    let server = Server::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.set(format!("key:{i:04}"), i).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    let expected: Vec<String> = (0..KEYS).map(|i| format!("key:{i:04}")).collect();
    // Sixteen clients page with COUNT 1, continuing from each cursor once. A slow client takes
    // one page, waits until all of them are done, then goes on: its cursor is still pending, so
    // it must outlive every spent one and the scan resume, not restart (a restart repeats keys).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow = {
        let url = server.url();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            scan_all(&mut con, 1, |page| {
                if page == 1 {
                    while done.load(std::sync::atomic::Ordering::Acquire) < FAST {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            })
        })
    };
    let fast: Vec<_> = (0..FAST)
        .map(|_| {
            let url = server.url();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let result = scan_all(&mut con, 1, |_| {});
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
                result
            })
        })
        .collect();
    for (client, handle) in fast.into_iter().enumerate() {
        let (seen, _) = handle.join().unwrap();
        assert_eq!(seen, expected, "fast client {client}");
    }
    let (seen, pages) = slow.join().unwrap();
    assert_eq!(pages, KEYS, "the slow scan restarted");
    assert_eq!(seen, expected);
}

/// One round of churn among the stable `k:i:a` keys: for every seventh `i` (another seventh
/// each pair of rounds), an even round deletes `k:i:b` and the `k:i:cR` keys the round before
/// made, and an odd round puts `k:i:b` back and makes new `k:i:cR` keys. So between two pages
/// the keys on both sides of the cursor either only disappear or only appear.
fn churn_round(con: &mut Connection, stable: usize, round: usize) {
    let seventh = |round: usize| ((round / 2) % 7..stable).step_by(7);
    let mut pipe = redis::pipe();
    if round.is_multiple_of(2) {
        for i in seventh(round) {
            pipe.del(format!("k:{i:05}:b")).ignore();
        }
        if round > 0 {
            for i in seventh(round - 1) {
                pipe.del(format!("k:{i:05}:c{}", round - 1)).ignore();
            }
        }
    } else {
        for i in seventh(round) {
            pipe.set(format!("k:{i:05}:b"), i).ignore();
            // New keys appear too; a scan may or may not return them.
            pipe.set(format!("k:{i:05}:c{round}"), 1).ignore();
        }
    }
    let () = pipe.query(con).unwrap();
}

#[test]
fn scan_returns_every_key_present_throughout_while_others_are_deleted() {
    const STABLE: usize = 1000;
    const COUNT: usize = 13;
    let server = Server::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..STABLE {
        // Interleaved in key order with keys that come and go, so deletions land on both sides
        // of every cursor position.
        pipe.set(format!("k:{i:05}:a"), i).ignore();
        pipe.set(format!("k:{i:05}:b"), i).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    // A churn round runs between every two pages, in lock step, so each page's cursor really
    // sees keys vanish (even rounds) or appear (odd rounds) before and after it. A churn
    // thread running freely could finish its work before the scan's first page or after its
    // last, and the test would pass whatever SCAN does with a changing keyspace.
    let mut churner = server.client();
    let mut rounds = 0;
    let (seen, pages) = scan_all(&mut con, COUNT, |_| {
        churn_round(&mut churner, STABLE, rounds);
        rounds += 1;
    });
    assert_eq!(rounds, pages);
    // Fewer pages than the stable keys alone need would mean pages larger than COUNT (fewer
    // churn rounds between them); more than twice the keyspace at its largest would mean the
    // scan restarted.
    assert!(
        (STABLE / COUNT..=4 * STABLE / COUNT + 2).contains(&pages),
        "{pages} pages of {COUNT}"
    );
    let seen: BTreeSet<String> = seen.into_iter().collect();
    let missing: Vec<String> = (0..STABLE)
        .map(|i| format!("k:{i:05}:a"))
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} keys missed of {STABLE} over {pages} pages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Nothing that never existed.
    let strange: Vec<&String> = seen
        .iter()
        .filter(|k| {
            let Some((i, tail)) = k.strip_prefix("k:").and_then(|k| k.split_once(':')) else {
                return true;
            };
            let known_tail = tail == "a"
                || tail == "b"
                || tail
                    .strip_prefix('c')
                    .and_then(|r| r.parse::<usize>().ok())
                    .is_some_and(|r| r < rounds && r % 2 == 1);
            !(i.len() == 5 && i.parse::<usize>().is_ok_and(|i| i < STABLE) && known_tail)
        })
        .collect();
    assert!(strange.is_empty(), "keys that never existed: {strange:?}");
}

#[test]
fn range_limit_defaults_to_1000() {
    let server = Server::start();
    let mut con = server.client();
    q::<String>(&mut con, &["DEBUG", "POPULATE", "1500"]);
    let mut all: Vec<String> = (0..1500).map(|i| format!("key:{i}")).collect();
    all.sort();
    let page: Vec<String> = q(&mut con, &["RANGE", "-", "+"]);
    assert_eq!(page, all[..1000]);
    let with_values: Vec<String> = q(&mut con, &["RANGE", "-", "+", "WITHVALUES"]);
    assert_eq!(with_values.len(), 2000);
    assert_eq!(with_values[..2], ["key:0", "value:0"]);
    // An explicit LIMIT goes past the default; the rest of the keys follow the last one.
    let bigger: Vec<String> = q(&mut con, &["RANGE", "-", "+", "LIMIT", "1200"]);
    assert_eq!(bigger, all[..1200]);
    let rest: Vec<String> = q(&mut con, &["RANGE", &format!("({}", all[999]), "+"]);
    assert_eq!(rest, all[1000..]);
}

/// Flushed namespaces still being cleared in the background (INFO persistence).
fn flushes_pending(con: &mut Connection) -> i64 {
    common::info_field(con, "persistence", "flushes_pending")
        .parse()
        .unwrap()
}

#[test]
fn flushall_and_flushdb_async_empty_at_once_and_stay_empty_after_a_crash() {
    // Enough keys that the background clear takes seconds on the debug build (about 2.8 s for
    // 3 × 50 000 here) while the checks below take milliseconds: they must run while it is
    // still pending, or they would pass whether or not the flush hid the keys at once and
    // made that durable. The test checks it did run them in time.
    const KEYS: i64 = 50_000;
    let mut server = Server::start_with(&["--appendfsync", "always"]);
    let mut con = server.client();
    for db in ["0", "3", "15"] {
        q::<String>(&mut con, &["SELECT", db]);
        q::<String>(
            &mut con,
            &["DEBUG", "POPULATE", &KEYS.to_string(), &format!("db{db}")],
        );
    }
    assert_eq!(
        err(&mut con, &["FLUSHALL", "ASYNC", "x"]),
        "ERR syntax error"
    );
    assert_eq!(err(&mut con, &["FLUSHALL", "LATER"]), "ERR syntax error");
    q::<String>(&mut con, &["SELECT", "15"]);
    assert_eq!(q::<String>(&mut con, &["FLUSHDB", "async"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
    q::<String>(&mut con, &["SELECT", "0"]);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), KEYS, "FLUSHDB is one db");
    assert_eq!(q::<String>(&mut con, &["FLUSHALL", "ASYNC"]), "OK");
    // Gone at once for every reader, before the background clear finishes.
    for db in ["0", "3", "15"] {
        q::<String>(&mut con, &["SELECT", db]);
        assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0, "db {db}");
        assert_eq!(
            q::<Value>(&mut con, &["GET", &format!("db{db}:7")]),
            Value::Nil
        );
        let (cursor, keys): (String, Vec<String>) = q(&mut con, &["SCAN", "0", "COUNT", "5000"]);
        assert_eq!((cursor.as_str(), keys.len()), ("0", 0), "db {db}");
    }
    assert!(
        flushes_pending(&mut con) > 0,
        "the background clear finished before the checks: they proved nothing"
    );
    q::<String>(&mut con, &["SELECT", "0"]);
    set(&mut con, "after", "1");
    // SIGKILL in the middle of the clear, restart: the flush was committed, so nothing flushed
    // comes back, although the old keys are still on disk.
    assert!(
        flushes_pending(&mut con) > 0,
        "the background clear finished before the crash: it proves nothing"
    );
    server.kill();
    server.restart();
    let mut con = server.client();
    let only_after = |con: &mut Connection, when: &str| {
        let keys: Vec<String> = q(con, &["KEYS", "*"]);
        assert!(
            keys == ["after"],
            "{when}: db 0 holds {} keys, e.g. {:?}",
            keys.len(),
            &keys[..keys.len().min(5)]
        );
    };
    only_after(&mut con, "after the restart");
    for db in ["3", "15"] {
        q::<String>(&mut con, &["SELECT", db]);
        assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0, "db {db} after restart");
    }
    // The restarted server finishes the interrupted clear, and still nothing comes back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while flushes_pending(&mut con) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the clear did not resume"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    q::<String>(&mut con, &["SELECT", "0"]);
    only_after(&mut con, "after the resumed clear");
    assert_eq!(q::<String>(&mut con, &["FLUSHALL", "SYNC"]), "OK");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
}
