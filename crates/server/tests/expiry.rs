//! Expiry commands and the active sweep against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{err, q, Server};
use redis::Commands;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn ttl_family_and_persist() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(q::<i64>(&mut con, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut con, &["EXPIRETIME", "k"]), -1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "missing"]), -2);
    assert_eq!(q::<i64>(&mut con, &["PEXPIRETIME", "missing"]), -2);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "100"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "k"]), 100);
    let pttl: i64 = q(&mut con, &["PTTL", "k"]);
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let at: i64 = q(&mut con, &["PEXPIRETIME", "k"]);
    assert!((at - now_ms() - 100_000).abs() < 2000);
    assert_eq!(q::<i64>(&mut con, &["EXPIRETIME", "k"]), at / 1000);
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "k"]), 0);
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "missing"]), 0);
    assert_eq!(q::<i64>(&mut con, &["TTL", "k"]), -1);
    let target = now_ms() / 1000 + 500;
    assert_eq!(
        q::<i64>(&mut con, &["EXPIREAT", "k", &target.to_string()]),
        1
    );
    assert_eq!(q::<i64>(&mut con, &["EXPIRETIME", "k"]), target);
    assert_eq!(
        q::<i64>(
            &mut con,
            &["PEXPIREAT", "k", &(target * 1000 + 7).to_string()]
        ),
        1
    );
    assert_eq!(q::<i64>(&mut con, &["PEXPIRETIME", "k"]), target * 1000 + 7);
    assert_eq!(q::<i64>(&mut con, &["PEXPIRE", "k", "5000"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "k"]), 5);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "missing", "10"]), 0);
    // A time in the past deletes the key.
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "-1"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k"]), 0);
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(q::<i64>(&mut con, &["PEXPIREAT", "k", "1"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k"]), 0);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 0);
}

/// NX, XX, GT and LT on PEXPIRE, EXPIREAT and PEXPIREAT, the same scenario as EXPIRE's: each
/// option's condition decides, the reply says whether the expiry changed, and EXPIRETIME shows
/// the expiry that is in force.
#[test]
fn expire_conditions_on_pexpire_expireat_and_pexpireat() {
    let server = Server::start();
    let mut con = server.client();
    let now_s = now_ms() / 1000;
    // The argument meaning "`seconds` from now" for each command.
    type Arg = fn(i64, i64) -> String;
    let forms: [(&str, Arg); 3] = [
        ("PEXPIRE", |_, seconds| (seconds * 1000).to_string()),
        ("EXPIREAT", |now_s, seconds| (now_s + seconds).to_string()),
        ("PEXPIREAT", |now_s, seconds| {
            ((now_s + seconds) * 1000).to_string()
        }),
    ];
    for (command, arg) in forms {
        let key = format!("k-{command}");
        let _: () = con.set(&key, "v").unwrap();
        let run = |con: &mut redis::Connection, seconds: i64, options: &[&str]| -> i64 {
            let value = arg(now_s, seconds);
            let mut args = vec![command, key.as_str(), value.as_str()];
            args.extend_from_slice(options);
            q(con, &args)
        };
        // The expiry in force, as seconds from `now_s` (-1: none).
        let expiry = |con: &mut redis::Connection| -> i64 {
            match q::<i64>(con, &["EXPIRETIME", &key]) {
                -1 => -1,
                at => at - now_s,
            }
        };
        let near = |got: i64, want: i64| (got - want).abs() <= 2;
        assert_eq!(
            run(&mut con, 100, &["XX"]),
            0,
            "{command} XX needs an expiry"
        );
        assert_eq!(
            run(&mut con, 100, &["GT"]),
            0,
            "{command} GT: none is infinite"
        );
        assert_eq!(expiry(&mut con), -1, "{command}");
        assert_eq!(run(&mut con, 100, &["LT"]), 1, "{command} LT");
        assert!(near(expiry(&mut con), 100), "{command}");
        assert_eq!(run(&mut con, 200, &["NX"]), 0, "{command} NX");
        assert_eq!(run(&mut con, 200, &["xx"]), 1, "{command} xx");
        assert!(near(expiry(&mut con), 200), "{command}");
        assert_eq!(run(&mut con, 100, &["gt"]), 0, "{command} gt");
        assert_eq!(run(&mut con, 300, &["GT"]), 1, "{command} GT");
        assert_eq!(run(&mut con, 400, &["LT"]), 0, "{command} LT");
        assert!(near(expiry(&mut con), 300), "{command}");
        assert_eq!(run(&mut con, 50, &["LT", "XX"]), 1, "{command} LT XX");
        assert!(near(expiry(&mut con), 50), "{command}");
        assert_eq!(q::<i64>(&mut con, &["PERSIST", &key]), 1);
        assert_eq!(run(&mut con, 10, &["NX"]), 1, "{command} NX");
        assert!(near(expiry(&mut con), 10), "{command}");
        let value = arg(now_s, 10);
        assert_eq!(
            err(&mut con, &[command, &key, &value, "NX", "XX"]),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            err(&mut con, &[command, &key, &value, "GT", "LT"]),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            err(&mut con, &[command, &key, &value, "FOO"]),
            "ERR Unsupported option FOO"
        );
        // A condition that fails on a missing key still answers 0.
        let _: () = con.del(&key).unwrap();
        assert_eq!(run(&mut con, 10, &["XX"]), 0, "{command} on a missing key");
        assert_eq!(run(&mut con, 10, &[]), 0, "{command} on a missing key");
    }
}

#[test]
fn expire_conditions_nx_xx_gt_lt() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(
        q::<i64>(&mut con, &["EXPIRE", "k", "100", "XX"]),
        0,
        "XX needs an expiry"
    );
    assert_eq!(
        q::<i64>(&mut con, &["EXPIRE", "k", "100", "GT"]),
        0,
        "no expiry is infinite"
    );
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "100", "LT"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "200", "NX"]), 0);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "200", "xx"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "100", "gt"]), 0);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "300", "GT"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "400", "LT"]), 0);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "50", "LT", "XX"]), 1);
    assert_eq!(q::<i64>(&mut con, &["TTL", "k"]), 50);
    assert_eq!(q::<i64>(&mut con, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "10", "NX"]), 1);
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "10", "FOO"]),
        "ERR Unsupported option FOO"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "ten"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "1.5"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k"]),
        "ERR wrong number of arguments for 'expire' command"
    );
}

#[test]
fn huge_and_overflowing_expire_times() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "-9223372036854775808"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&mut con, &["PEXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        err(&mut con, &["EXPIREAT", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expireat' command"
    );
    assert_eq!(
        err(&mut con, &["EXPIRE", "k", "99999999999999999999"]),
        "ERR value is not an integer or out of range"
    );
    // Large but valid: far in the future.
    assert_eq!(
        q::<i64>(&mut con, &["PEXPIREAT", "k", "9223372036854775807"]),
        1
    );
    assert!(q::<i64>(&mut con, &["TTL", "k"]) > 1_000_000_000);
    assert_eq!(q::<i64>(&mut con, &["EXPIRE", "k", "-9223372036854775"]), 1);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k"]), 0);
}

/// Moves the server's manual clock (`--clock manual`) forward by `ms`.
fn advance_clock(con: &mut redis::Connection, ms: u64) {
    let _: i64 = q(con, &["DEBUG", "ADVANCE-CLOCK", &ms.to_string()]);
}

/// Waits (on the real clock) for the background sweep, which runs every 100 ms, to bring
/// DBSIZE to `size`.
fn wait_for_dbsize(con: &mut redis::Connection, size: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: i64 = q(con, &["DBSIZE"]);
        if now == size {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "DBSIZE still {now}, expected {size}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_thousand_short_ttls_vanish_from_dbsize_and_are_never_returned_late() {
    // A manual clock: expiry is checked at exact instants instead of racing real time.
    let server = Server::start_with(&["--clock", "manual"]);
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        // TTLs spread over 200..1200 ms.
        pipe.cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg(i)
            .arg("PX")
            .arg(200 + (i % 1000))
            .ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let _: () = con.set("persistent", "stays").unwrap();
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 10_001);
    // 700 ms later every key whose TTL was at most 700 ms is gone, and no other.
    advance_clock(&mut con, 700);
    let mut checker = server.client();
    for i in (0..10_000).step_by(7) {
        let value: Option<i64> = checker.get(format!("ttl:{i}")).unwrap();
        let due = 200 + (i % 1000) <= 700;
        assert_eq!(
            value.is_none(),
            due,
            "ttl:{i} (TTL {} ms) at +700 ms",
            200 + i % 1000
        );
    }
    // The sweep reclaims exactly the due keys: 10 of each of the 501 TTLs up to 700 ms.
    wait_for_dbsize(&mut con, 10_001 - 5_010);
    advance_clock(&mut con, 10_000);
    wait_for_dbsize(&mut con, 1);
    let keys: Vec<String> = q(&mut con, &["KEYS", "*"]);
    assert_eq!(keys, vec!["persistent".to_string()]);
    let (_, scanned): (String, Vec<String>) = q(&mut con, &["SCAN", "0", "COUNT", "100000"]);
    assert_eq!(scanned, vec!["persistent".to_string()]);
    let info: String = q(&mut con, &["INFO", "stats"]);
    let expired: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("expired_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(expired, 10_000);
}

#[test]
fn active_expire_can_be_turned_off_and_on() {
    let server = Server::start_with(&["--clock", "manual"]);
    let mut con = server.client();
    assert_eq!(
        q::<String>(&mut con, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]),
        "OK"
    );
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(1)
            .arg("PX")
            .arg(50)
            .query(&mut con)
            .unwrap();
    }
    advance_clock(&mut con, 400);
    // Invisible to reads at once, still counted until swept (as Redis' DBSIZE).
    assert_eq!(q::<Vec<String>>(&mut con, &["KEYS", "*"]).len(), 0);
    assert_eq!(q::<i64>(&mut con, &["EXISTS", "k1"]), 0);
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 100);
    // Rewriting an expired, unswept key keeps the count exact once swept.
    let _: () = con.set("k1", "new").unwrap();
    assert_eq!(
        q::<String>(&mut con, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]),
        "OK"
    );
    wait_for_dbsize(&mut con, 1);
    assert_eq!(q::<String>(&mut con, &["GET", "k1"]), "new");
}

#[test]
fn the_clock_moves_only_by_debug_advance_clock_in_manual_mode() {
    let server = Server::start_with(&["--clock", "manual"]);
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("PX")
        .arg(1_000)
        .query(&mut con)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        q::<i64>(&mut con, &["PTTL", "k"]),
        1_000,
        "real time does not count"
    );
    advance_clock(&mut con, 999);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "k"]), 1);
    advance_clock(&mut con, 1);
    assert_eq!(q::<i64>(&mut con, &["PTTL", "k"]), -2);
    // On the system clock the command refuses.
    let system = Server::start();
    let mut other = system.client();
    assert!(err(&mut other, &["DEBUG", "ADVANCE-CLOCK", "1"]).contains("clock = manual"));
}
