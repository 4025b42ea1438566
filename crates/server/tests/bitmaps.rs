//! The bitmap command family against the real `ringkv` binary: SETBIT GETBIT BITCOUNT BITPOS
//! BITOP BITFIELD BITFIELD_RO, each option and each error path, compared with the exact
//! replies of Redis 7 (the tables below were checked against a Redis 7.0.15 server), through
//! raw RESP, the `redis` crate and `redis-cli`; plus concurrent SETBIT/BITFIELD INCRBY that
//! must not lose updates.

mod common;

use common::{render, Server};

const SYNTAX: &str = "-ERR syntax error";
const NOT_INTEGER: &str = "-ERR value is not an integer or out of range";
const BIT_OFFSET: &str = "-ERR bit offset is not an integer or out of range";
const BIT_VALUE: &str = "-ERR bit is not an integer or out of range";
const BITFIELD_TYPE: &str =
    "-ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

#[test]
fn setbit_and_getbit() {
    let server = Server::start();
    let mut s = server.raw();
    s.check(&[
        ("SETBIT b 7 1", ":0"),
        ("SETBIT b 7 1", ":1"),
        ("GET b", "\"\\x01\""),
        ("SETBIT b 16 1", ":0"),
        ("GET b", "\"\\x01\\x00\\x80\""),
        ("SETBIT b 7 0", ":1"),
        ("GETBIT b 16", ":1"),
        ("GETBIT b 15", ":0"),
        ("GETBIT b 100000", ":0"),
        ("GETBIT nokey 3", ":0"),
        ("SETBIT zero 10 0", ":0"),
        ("GET zero", "\"\\x00\\x00\""),
        ("SETBIT b 8388607 1", ":0"),
        ("STRLEN b", ":1048576"),
        ("GETBIT b 8388607", ":1"),
        ("SETBIT b 4294967296 1", BIT_OFFSET),
        ("SETBIT b -1 1", BIT_OFFSET),
        ("SETBIT b x 1", BIT_OFFSET),
        ("SETBIT b #1 1", BIT_OFFSET),
        ("SETBIT b 1 2", BIT_VALUE),
        ("SETBIT b 1 -1", BIT_VALUE),
        ("SETBIT b 1 x", BIT_VALUE),
        ("SETBIT b x x", BIT_OFFSET),
        ("GETBIT b -1", BIT_OFFSET),
        ("GETBIT b 4294967296", BIT_OFFSET),
        ("SET t a EX 100", "+OK"),
        ("SETBIT t 6 1", ":0"),
        ("GET t", "\"c\""),
        ("TTL t", ":100|:99"),
        (
            "SETBIT b 1",
            "-ERR wrong number of arguments for 'setbit' command",
        ),
        (
            "GETBIT b",
            "-ERR wrong number of arguments for 'getbit' command",
        ),
    ]);
}

#[test]
fn bitcount_byte_and_bit_ranges() {
    let server = Server::start();
    let mut s = server.raw();
    s.check(&[
        ("SET k foobar", "+OK"),
        ("BITCOUNT k", ":26"),
        ("BITCOUNT k 0 0", ":4"),
        ("BITCOUNT k 1 1", ":6"),
        ("BITCOUNT k 1 1 BYTE", ":6"),
        ("BITCOUNT k 5 30 BIT", ":17"),
        ("bitcount k 5 30 bit", ":17"),
        ("BITCOUNT k -1 -2", ":0"),
        ("BITCOUNT k -2 -1", ":7"),
        ("BITCOUNT k 0 1000", ":26"),
        ("BITCOUNT k -1000 1000", ":26"),
        ("BITCOUNT k 0 -1 BIT", ":26"),
        ("BITCOUNT k -3 -1 BIT", ":1"),
        ("BITCOUNT k 9223372036854775807 9223372036854775807", ":0"),
        (
            "BITCOUNT k -9223372036854775808 -9223372036854775808 BIT",
            ":0",
        ),
        ("BITCOUNT k 0", SYNTAX),
        ("BITCOUNT k 0 1 BITS", SYNTAX),
        ("BITCOUNT k 0 1 BIT extra", SYNTAX),
        // An empty negative range answers 0 before BYTE|BIT is read (Redis 7.0).
        ("BITCOUNT k -1 -2 x", ":0"),
        ("BITCOUNT k -2 -1 x", SYNTAX),
        ("BITCOUNT k a 1", NOT_INTEGER),
        ("BITCOUNT k 0 b", NOT_INTEGER),
        // Redis 7.0 looks the key up first: a missing key answers 0 before the range is read.
        ("BITCOUNT nokey", ":0"),
        ("BITCOUNT nokey 0", ":0"),
        ("BITCOUNT nokey a b", ":0"),
        (
            "BITCOUNT",
            "-ERR wrong number of arguments for 'bitcount' command",
        ),
    ]);
}

#[test]
fn bitpos_and_its_edge_cases() {
    let server = Server::start();
    let mut s = server.raw();
    assert_eq!(
        render(&s.call_args(&[b"SET", b"ones", b"\xff\xf0\x00"])),
        "+OK"
    );
    assert_eq!(
        render(&s.call_args(&[b"SET", b"m", b"\x00\xff\xf0"])),
        "+OK"
    );
    assert_eq!(
        render(&s.call_args(&[b"SET", b"full", b"\xff\xff\xff"])),
        "+OK"
    );
    assert_eq!(
        render(&s.call_args(&[b"SET", b"zeros", b"\x00\x00\x00"])),
        "+OK"
    );
    s.check(&[
        ("BITPOS ones 0", ":12"),
        ("BITPOS m 1 0", ":8"),
        ("BITPOS m 1 2", ":16"),
        ("BITPOS m 1 2 -1 BYTE", ":16"),
        ("BITPOS m 1 7 15 BIT", ":8"),
        ("bitpos m 1 7 -3 bit", ":8"),
        ("BITPOS m 0 8 -1 BIT", ":20"),
        ("BITPOS zeros 1", ":-1"),
        ("BITPOS zeros 0", ":0"),
        // No clear bit in the value: the first bit past the end, unless an end was given.
        ("BITPOS full 0", ":24"),
        ("BITPOS full 0 1", ":24"),
        ("BITPOS full 0 0 -1", ":-1"),
        ("BITPOS full 0 0 100", ":-1"),
        ("BITPOS full 0 0 -1 BIT", ":-1"),
        ("BITPOS full 1 -1", ":16"),
        ("BITPOS full 1 5 2", ":-1"),
        ("BITPOS full 1 100", ":-1"),
        ("BITPOS full 0 100", ":-1"),
        ("BITPOS nokey 1", ":-1"),
        ("BITPOS nokey 0", ":0"),
        ("BITPOS nokey 0 5 10 BIT", ":0"),
        ("BITPOS full 2", "-ERR The bit argument must be 1 or 0."),
        ("BITPOS full x", NOT_INTEGER),
        ("BITPOS full 0 x", NOT_INTEGER),
        ("BITPOS full 0 0 x", NOT_INTEGER),
        ("BITPOS full 0 0 1 BITS", SYNTAX),
        ("BITPOS full 0 0 x BITS", SYNTAX),
        ("BITPOS full 0 0 1 BIT extra", SYNTAX),
        (
            "BITPOS full",
            "-ERR wrong number of arguments for 'bitpos' command",
        ),
    ]);
}

#[test]
fn bitop_and_or_xor_not() {
    let server = Server::start();
    let mut s = server.raw();
    assert_eq!(render(&s.call_args(&[b"SET", b"a", b"\xff\x0f"])), "+OK");
    assert_eq!(render(&s.call_args(&[b"SET", b"b", b"\x0f"])), "+OK");
    s.check(&[
        ("BITOP AND d a b", ":2"),
        ("GET d", "\"\\x0f\\x00\""),
        ("BITOP or d a b", ":2"),
        ("GET d", "\"\\xff\\x0f\""),
        ("BITOP XOR d a b", ":2"),
        ("GET d", "\"\\xf0\\x0f\""),
        ("BITOP NOT d a", ":2"),
        ("GET d", "\"\\x00\\xf0\""),
        ("BITOP AND d a nokey", ":2"),
        ("GET d", "\"\\x00\\x00\""),
        ("BITOP OR d a", ":2"),
        ("GET d", "\"\\xff\\x0f\""),
        ("BITOP XOR d a a b", ":2"),
        ("GET d", "\"\\x0f\\x00\""),
        // An empty result deletes the destination.
        ("BITOP AND d nokey nokey2", ":0"),
        ("EXISTS d", ":0"),
        ("SET d x EX 100", "+OK"),
        ("BITOP OR d a", ":2"),
        ("TTL d", ":-1"),
        (
            "BITOP NOT d a b",
            "-ERR BITOP NOT must be called with a single source key.",
        ),
        ("BITOP NAND d a b", SYNTAX),
        (
            "BITOP AND d",
            "-ERR wrong number of arguments for 'bitop' command",
        ),
    ]);
}

#[test]
fn bitfield_get_set_incrby_and_overflow() {
    let server = Server::start();
    let mut s = server.raw();
    s.check(&[
        ("BITFIELD k INCRBY i5 100 1 GET u4 0", "[:1, :0]"),
        (
            "BITFIELD k SET i8 #1 -100 GET i8 #1 GET u8 8",
            "[:0, :-100, :156]",
        ),
        ("BITFIELD k SET u8 8 -1 GET u8 8", "[:156, :255]"),
        (
            "BITFIELD k OVERFLOW SAT SET i8 8 1000 GET i8 8",
            "[:-1, :127]",
        ),
        ("BITFIELD k OVERFLOW SAT INCRBY i8 8 -1000", "[:-128]"),
        ("BITFIELD k INCRBY i8 8 -1", "[:127]"),
        (
            "BITFIELD k OVERFLOW FAIL INCRBY i8 8 1 GET i8 8",
            "[nil, :127]",
        ),
        (
            "BITFIELD k overflow wrap incrby u2 102 1 overflow sat incrby u2 104 7",
            "[:1, :3]",
        ),
        (
            "BITFIELD c SET i64 0 9223372036854775807 INCRBY i64 0 1",
            "[:0, :-9223372036854775808]",
        ),
        (
            "BITFIELD c OVERFLOW SAT INCRBY i64 0 -1",
            "[:-9223372036854775808]",
        ),
        (
            "BITFIELD u SET u63 1 9223372036854775807 GET u63 1",
            "[:0, :9223372036854775807]",
        ),
        (
            "BITFIELD u OVERFLOW SAT INCRBY u63 1 5",
            "[:9223372036854775807]",
        ),
        ("BITFIELD u INCRBY u63 1 1", "[:0]"),
        ("BITFIELD nokey GET u8 0 GET i64 100", "[:0, :0]"),
        ("EXISTS nokey", ":0"),
        ("BITFIELD created OVERFLOW FAIL INCRBY u2 0 5", "[nil]"),
        ("GET created", "\"\\x00\""),
        ("BITFIELD k", "[]"),
        ("BITFIELD k GET u64 0", BITFIELD_TYPE),
        ("BITFIELD k GET i65 0", BITFIELD_TYPE),
        ("BITFIELD k GET i0 0", BITFIELD_TYPE),
        ("BITFIELD k GET x8 0", BITFIELD_TYPE),
        ("BITFIELD k GET u8 -1", BIT_OFFSET),
        ("BITFIELD k GET u8 #-1", BIT_OFFSET),
        ("BITFIELD k GET u8 4294967296", BIT_OFFSET),
        ("BITFIELD k GET u8 #9223372036854775807", BIT_OFFSET),
        ("BITFIELD k SET u8 0 x", NOT_INTEGER),
        ("BITFIELD k INCRBY u8 0 1.5", NOT_INTEGER),
        ("BITFIELD k GET u8", SYNTAX),
        ("BITFIELD k SET u8 0", SYNTAX),
        ("BITFIELD k FOO", SYNTAX),
        ("BITFIELD k OVERFLOW", SYNTAX),
        (
            "BITFIELD k OVERFLOW MAYBE GET u8 0",
            "-ERR Invalid OVERFLOW type specified",
        ),
        ("BITFIELD k GET u8 0 SET u64 0 1", BITFIELD_TYPE),
        ("SET t a EX 100", "+OK"),
        ("BITFIELD t SET u8 0 98", "[:97]"),
        ("GET t", "\"b\""),
        ("TTL t", ":100|:99"),
        // BITFIELD_RO reads only.
        ("BITFIELD_RO k GET u4 0 GET i8 #1", "[:0, :127]"),
        (
            "BITFIELD_RO k SET u8 0 1",
            "-ERR BITFIELD_RO only supports the GET subcommand",
        ),
        (
            "BITFIELD_RO k INCRBY u8 0 1",
            "-ERR BITFIELD_RO only supports the GET subcommand",
        ),
        ("BITFIELD_RO k GET u64 0", BITFIELD_TYPE),
        ("BITFIELD_RO nokey GET u8 0", "[:0]"),
        (
            "BITFIELD",
            "-ERR wrong number of arguments for 'bitfield' command",
        ),
    ]);
}

#[test]
fn redis_crate_and_redis_cli() {
    let server = Server::start();
    let mut con = server.client();
    let old: i64 = redis::cmd("SETBIT")
        .arg("bits")
        .arg(10)
        .arg(1)
        .query(&mut con)
        .expect("setbit");
    assert_eq!(old, 0);
    let count: i64 = redis::cmd("BITCOUNT")
        .arg("bits")
        .query(&mut con)
        .expect("bitcount");
    assert_eq!(count, 1);
    let fields: Vec<Option<i64>> = redis::cmd("BITFIELD")
        .arg("bits")
        .arg("GET")
        .arg("u16")
        .arg(0)
        .arg("OVERFLOW")
        .arg("FAIL")
        .arg("INCRBY")
        .arg("u2")
        .arg(0)
        .arg(9)
        .query(&mut con)
        .expect("bitfield");
    assert_eq!(fields, vec![Some(32), None]);
    let error = redis::cmd("GETBIT")
        .arg("bits")
        .arg(-1)
        .query::<i64>(&mut con)
        .expect_err("bad offset");
    assert_eq!(
        common::error_text(&error),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(server.cli(&["SETBIT", "c", "1", "1"]), "0\n");
    assert_eq!(server.cli(&["GETBIT", "c", "1"]), "1\n");
    assert_eq!(server.cli(&["BITPOS", "c", "1"]), "1\n");
    assert_eq!(server.cli(&["BITOP", "NOT", "d", "c"]), "1\n");
    assert_eq!(server.cli(&["BITCOUNT", "d"]), "7\n");
    assert_eq!(server.cli(&["BITFIELD", "d", "GET", "u8", "0"]), "191\n");
}

/// Concurrent writers to one bitmap: every bit set and every increment is kept.
#[test]
fn concurrent_bit_writers_lose_nothing() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 100;
    let server = Server::start();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let mut con = server.client();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let bit = (round * THREADS + thread) as i64;
                    let _: i64 = redis::cmd("SETBIT")
                        .arg("bits")
                        .arg(bit)
                        .arg(1)
                        .query(&mut con)
                        .expect("setbit");
                    let _: Vec<i64> = redis::cmd("BITFIELD")
                        .arg("bits")
                        .arg("INCRBY")
                        .arg("u32")
                        .arg(1024)
                        .arg(1)
                        .query(&mut con)
                        .expect("bitfield");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    let mut con = server.client();
    let total = (THREADS * ROUNDS) as i64;
    let count: i64 = redis::cmd("BITCOUNT")
        .arg("bits")
        .arg(0)
        .arg(total - 1)
        .arg("BIT")
        .query(&mut con)
        .expect("bitcount");
    assert_eq!(count, total);
    let counter: Vec<i64> = redis::cmd("BITFIELD_RO")
        .arg("bits")
        .arg("GET")
        .arg("u32")
        .arg(1024)
        .query(&mut con)
        .expect("get");
    assert_eq!(counter, vec![total]);
}
