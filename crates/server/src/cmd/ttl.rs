//! Expiry commands: EXPIRE PEXPIRE EXPIREAT PEXPIREAT (with NX XX GT LT), TTL
//! PTTL EXPIRETIME PEXPIRETIME PERSIST.

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::string::{one, update};
use super::{reply, spec, CommandSpec, Ctx};
use crate::args::{self, is};
use crate::data::{self, Op};
use crate::errors::{self, CmdError, CmdResult};

/// The expiry commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec(
        "expire",
        -3,
        &["write", "fast"],
        1,
        1,
        1,
        &["keyspace", "write", "fast"],
        "Sets the expiration time of a key in seconds.",
        "1.0.0",
        expire,
    )
    .syntax("key seconds [NX|XX|GT|LT]"),
    spec(
        "pexpire",
        -3,
        &["write", "fast"],
        1,
        1,
        1,
        &["keyspace", "write", "fast"],
        "Sets the expiration time of a key in milliseconds.",
        "2.6.0",
        expire,
    )
    .syntax("key milliseconds [NX|XX|GT|LT]"),
    spec(
        "expireat",
        -3,
        &["write", "fast"],
        1,
        1,
        1,
        &["keyspace", "write", "fast"],
        "Sets the expiration time of a key to a Unix timestamp.",
        "1.2.0",
        expire,
    )
    .syntax("key unix-time-seconds [NX|XX|GT|LT]"),
    spec(
        "pexpireat",
        -3,
        &["write", "fast"],
        1,
        1,
        1,
        &["keyspace", "write", "fast"],
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        "2.6.0",
        expire,
    )
    .syntax("key unix-time-milliseconds [NX|XX|GT|LT]"),
    spec(
        "ttl",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        &["keyspace", "read", "fast"],
        "Returns the expiration time in seconds of a key.",
        "1.0.0",
        ttl,
    )
    .syntax("key"),
    spec(
        "pttl",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        &["keyspace", "read", "fast"],
        "Returns the expiration time in milliseconds of a key.",
        "2.6.0",
        ttl,
    )
    .syntax("key"),
    spec(
        "expiretime",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        &["keyspace", "read", "fast"],
        "Returns the expiration time of a key as a Unix timestamp.",
        "7.0.0",
        ttl,
    )
    .syntax("key"),
    spec(
        "pexpiretime",
        2,
        &["readonly", "fast"],
        1,
        1,
        1,
        &["keyspace", "read", "fast"],
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        "7.0.0",
        ttl,
    )
    .syntax("key"),
    spec(
        "persist",
        2,
        &["write", "fast"],
        1,
        1,
        1,
        &["keyspace", "write", "fast"],
        "Removes the expiration time of a key.",
        "2.2.0",
        persist,
    )
    .syntax("key"),
];

/// EXPIRE's NX / XX / GT / LT.
#[derive(Debug, Default, Clone, Copy)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_conditions(args: &[Bytes]) -> CmdResult<Conditions> {
    let mut c = Conditions::default();
    for arg in args {
        if is(arg, "nx") {
            c.nx = true;
        } else if is(arg, "xx") {
            c.xx = true;
        } else if is(arg, "gt") {
            c.gt = true;
        } else if is(arg, "lt") {
            c.lt = true;
        } else {
            return Err(CmdError::msg(format!(
                "ERR Unsupported option {}",
                errors::printable(arg, 128)
            )));
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(CmdError::msg(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(CmdError::msg(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

impl Conditions {
    /// Redis' `expireGenericCommand` checks; a key without expiry has an infinite TTL.
    fn allow(self, current: Option<u64>, when: i64) -> bool {
        let current = current.map(|c| c as i64);
        if self.nx && current.is_some() {
            return false;
        }
        if self.xx && current.is_none() {
            return false;
        }
        if self.gt && current.is_none_or(|c| when <= c) {
            return false;
        }
        if self.lt && current.is_some_and(|c| when >= c) {
            return false;
        }
        true
    }
}

fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(expire_run(ctx, args))
}

fn expire_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let name = args::lower(&args[0]);
    let conditions = parse_conditions(&args[3..])?;
    let mut when = args::i64_arg(&args[2])?;
    let seconds = name == "expire" || name == "expireat";
    let base = if name == "expire" || name == "pexpire" {
        ctx.now_ms as i64
    } else {
        0
    };
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(CmdError::msg(errors::invalid_expire_time(&name)));
        }
        when *= 1000;
    }
    if when > i64::MAX - base {
        return Err(CmdError::msg(errors::invalid_expire_time(&name)));
    }
    when += base;
    // A time at or before now deletes the key (the keyspace does it when the expiry is past).
    let expires_at = if when <= 0 { 0 } else { when as u64 };
    update(ctx, &args[1], move |old| {
        let allowed = old.filter(|old| conditions.allow(old.expires_at_ms, when));
        Ok((
            allowed.and_then(|old| data::with_expiry(old, Some(expires_at))),
            Frame::Integer(i64::from(allowed.is_some())),
        ))
    })
}

fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let name = args::lower(&args[0]);
    let now_ms = ctx.now_ms;
    ctx.run(Op::Get(args[1].clone()), move |done| {
        let Some(value) = one(done) else {
            return Ok(Frame::Integer(-2));
        };
        let Some(at) = value.expires_at_ms else {
            return Ok(Frame::Integer(-1));
        };
        let remaining = (at as i64 - now_ms as i64).max(0);
        Ok(Frame::Integer(match name.as_str() {
            "ttl" => (remaining + 500) / 1000,
            "pttl" => remaining,
            "expiretime" => at as i64 / 1000,
            _ => at as i64,
        }))
    })
}

fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(update(ctx, &args[1], |old| {
        let expiring = old.filter(|old| old.expires_at_ms.is_some());
        Ok((
            expiring.and_then(|old| data::with_expiry(old, None)),
            Frame::Integer(i64::from(expiring.is_some())),
        ))
    }))
}
