//! The string command family: GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX MGET MSET MSETNX
//! INCR DECR INCRBY DECRBY INCRBYFLOAT APPEND STRLEN GETRANGE SUBSTR SETRANGE LCS.
//!
//! Semantics, reply shapes and error texts are Redis 7's (`t_string.c`), plus SET's `IFEQ`
//! (Valkey 8.1 / Redis 8.4). The rules that need no keyspace (option parsing, index math,
//! long-double arithmetic, LCS) live in [`super::string_ops`] with their unit tests; this file
//! reads and writes keys.
//!
//! Read-modify-write commands (INCR…, APPEND, SETRANGE, GETSET, SETNX, SET with
//! GET/NX/XX/IFEQ/KEEPTTL) go through [`update`]: one engine read and at most one write under
//! the key's stripe lock, so concurrent INCRs or APPENDs never lose an update; the rest that
//! read before writing (GETDEL, GETEX, MSETNX) hold [`Ctx::lock_keys`] across both. Commands
//! that change a value in place (INCR…, APPEND, SETRANGE) keep the key's expiry, as Redis
//! does; SET, GETSET and MSET clear it. Plain SET, GET, MGET and MSET take the shortest path:
//! one keyspace call each, GET replying with a slice of the stored value (no copy).

use bytes::{BufMut, Bytes, BytesMut};
use ringkv_protocol::Frame;

use super::string_ops::{
    self, apply_setrange, check_setrange_offset, check_string_length, getrange_bounds,
    increment_by_float, lcs, lcs_fits, parse_set_options, resolve_expiry, ExpireUnit, ExpiryError,
    FloatError, OptionsFor, RangeError, SetCondition,
};
use super::{reply, spec, CommandSpec, Ctx};
use crate::data::{self, Decision, Done, Op};
use crate::errors::{self, CmdError, CmdResult};
use ringkv_store::{encode_value, StoredValue, StrValue, ValueType};

/// The string commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec("get", 2, &["readonly", "fast"], 1, 1, 1, &["read", "string", "fast"], "Returns the string value of a key.", "1.0.0", get).syntax("key"),
    spec("set", -3, &["write", "denyoom"], 1, 1, 1, &["write", "string", "slow"], "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", "1.0.0", set).syntax("key value [NX|XX|IFEQ comparison-value] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"),
    spec("setnx", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Set the string value of a key only when the key doesn't exist.", "1.0.0", setnx).syntax("key value"),
    spec("setex", 4, &["write", "denyoom"], 1, 1, 1, &["write", "string", "slow"], "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", "2.0.0", setex).syntax("key seconds value"),
    spec("psetex", 4, &["write", "denyoom"], 1, 1, 1, &["write", "string", "slow"], "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", "2.6.0", psetex).syntax("key milliseconds value"),
    spec("getset", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Returns the previous string value of a key after setting it to a new value.", "1.0.0", getset).syntax("key value"),
    spec("getdel", 2, &["write", "fast"], 1, 1, 1, &["write", "string", "fast"], "Returns the string value of a key after deleting the key.", "6.2.0", getdel).syntax("key"),
    spec("getex", -2, &["write", "fast"], 1, 1, 1, &["write", "string", "fast"], "Returns the string value of a key after setting its expiration time.", "6.2.0", getex).syntax("key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]"),
    spec("mget", -2, &["readonly", "fast"], 1, -1, 1, &["read", "string", "fast"], "Atomically returns the string values of one or more keys.", "1.0.0", mget).syntax("key [key ...]"),
    spec("mset", -3, &["write", "denyoom"], 1, -1, 2, &["write", "string", "slow"], "Atomically creates or modifies the string values of one or more keys.", "1.0.1", mset).syntax("key value [key value ...]"),
    spec("msetnx", -3, &["write", "denyoom"], 1, -1, 2, &["write", "string", "slow"], "Atomically modifies the string values of one or more keys only when all keys don't exist.", "1.0.1", msetnx).syntax("key value [key value ...]"),
    spec("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "1.0.0", incr).syntax("key"),
    spec("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "1.0.0", decr).syntax("key"),
    spec("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "1.0.0", incrby).syntax("key increment"),
    spec("incrbyid", 4, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "INCRBY that counts once however often it is retried with the same request id (cluster mode).", "ringkv", incrbyid).syntax("key increment request-id"),
    spec("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", "1.0.0", decrby).syntax("key increment"),
    spec("incrbyfloat", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "2.6.0", incrbyfloat).syntax("key increment"),
    spec("append", 3, &["write", "denyoom", "fast"], 1, 1, 1, &["write", "string", "fast"], "Appends a string to the value of a key. Creates the key if it doesn't exist.", "2.0.0", append).syntax("key value"),
    spec("strlen", 2, &["readonly", "fast"], 1, 1, 1, &["read", "string", "fast"], "Returns the length of a string value.", "2.2.0", strlen).syntax("key"),
    spec("getrange", 4, &["readonly"], 1, 1, 1, &["read", "string", "slow"], "Returns a substring of the string stored at a key.", "2.4.0", getrange).syntax("key start end"),
    spec("substr", 4, &["readonly"], 1, 1, 1, &["read", "string", "slow"], "Returns a substring from a string value.", "1.0.0", getrange).syntax("key start end"),
    spec("setrange", 4, &["write", "denyoom"], 1, 1, 1, &["write", "string", "slow"], "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", "2.2.0", setrange).syntax("key offset value"),
    spec("lcs", -3, &["readonly"], 1, 2, 1, &["read", "string", "slow"], "Finds the longest common substring.", "7.0.0", lcs_command).syntax("key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]"),
];

/// "ERR offset is out of range" (SETRANGE with a negative offset).
const OFFSET_OUT_OF_RANGE: &str = "ERR offset is out of range";
/// "ERR increment would produce NaN or Infinity" (INCRBYFLOAT).
const NAN_OR_INFINITY: &str = "ERR increment would produce NaN or Infinity";
/// DECRBY with `i64::MIN`, whose negation overflows.
const DECREMENT_OVERFLOW: &str = "ERR decrement would overflow";
/// LCS on a key of another type.
const LCS_WRONG_TYPE: &str = "ERR The specified keys must contain string values";
/// LCS with both LEN and IDX.
const LCS_LEN_AND_IDX: &str = "ERR If you want both the length and indexes, please just use IDX.";
/// LCS whose table would exceed `proto-max-bulk-len`.
const LCS_TOO_BIG: &str =
    "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len";

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// [`Op::Update`] on the selected database: one read and at most one write, atomic for that
/// key; the decision's reply is the command's.
pub(super) fn update(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    decide: impl FnOnce(Option<&StoredValue>) -> CmdResult<Decision> + Send + 'static,
) -> CmdResult<Frame> {
    Ok(ctx.run(
        Op::Update(key.clone(), Box::new(decide)),
        |done| match done {
            Done::Reply(reply) => Ok(reply),
            _ => unreachable!("an update answers with its reply"),
        },
    ))
}

/// [`Op::Get`] of a string: `then` gets the value (a missing key: `None`); a key of another
/// type answers WRONGTYPE.
pub(super) fn read_string(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    then: impl FnOnce(Option<StrValue>) -> CmdResult<Frame> + Send + 'static,
) -> CmdResult<Frame> {
    Ok(ctx.run(Op::Get(key.clone()), |done| then(string_of(one(done))?)))
}

/// The value of an [`Op::Get`].
pub(super) fn one(done: Done) -> Option<StoredValue> {
    match done {
        Done::Value(value) => value,
        _ => unreachable!("a get answers with a value"),
    }
}

/// The values of an [`Op::GetMany`].
fn many(done: Done) -> Vec<Option<StoredValue>> {
    match done {
        Done::Values(values) => values,
        _ => unreachable!("a multi-get answers with values"),
    }
}

/// A string's view of a stored value, or WRONGTYPE.
pub(super) fn string_of(value: Option<StoredValue>) -> CmdResult<Option<StrValue>> {
    match value {
        None => Ok(None),
        Some(stored) if stored.value_type == ValueType::String => Ok(Some(StrValue {
            data: stored.payload(),
            expires_at_ms: stored.expires_at_ms,
            version: stored.version,
        })),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// `OK` for a written [`Op::Put`].
fn ok(_done: Done) -> CmdResult<Frame> {
    Ok(Frame::ok())
}

/// The string held by `old` (a missing key: `None`), or WRONGTYPE.
pub(super) fn old_string(old: Option<&StoredValue>) -> CmdResult<Option<Bytes>> {
    match old {
        None => Ok(None),
        Some(stored) if stored.value_type == ValueType::String => Ok(Some(stored.payload())),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// A string value encoded for storage.
pub(super) fn encoded(payload: &[u8]) -> Bytes {
    encode_value(ValueType::String, payload)
}

/// `[tag][payload built by fill]` with one copy of the payload (APPEND, SETRANGE and the bit
/// commands build the new value straight into the stored buffer).
pub(super) fn encoded_with(payload_bytes: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut raw = BytesMut::with_capacity(1 + payload_bytes);
    raw.put_u8(ValueType::String.tag());
    fill(&mut raw);
    debug_assert_eq!(raw.len(), 1 + payload_bytes);
    raw.freeze()
}

/// The reply for an expiry argument that failed [`resolve_expiry`].
fn expiry_error(error: ExpiryError, command: &str) -> CmdError {
    match error {
        ExpiryError::NotInteger => CmdError::NotInteger,
        ExpiryError::Invalid => CmdError::msg(errors::invalid_expire_time(command)),
    }
}

fn deadline(now_ms: u64, unit: ExpireUnit, text: &[u8], command: &str) -> CmdResult<u64> {
    let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let at = resolve_expiry(unit, text, now_ms).map_err(|error| expiry_error(error, command))?;
    Ok(u64::try_from(at).expect("resolve_expiry returns a positive deadline"))
}

fn bulk_or_null(value: Option<Bytes>) -> Frame {
    value.map_or(Frame::Null, Frame::Bulk)
}

/// Decimal text of `value` in a stack buffer (INCR's stored value, without an allocation).
fn i64_text(value: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut magnitude = value.unsigned_abs();
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        // i64::MIN has 19 digits, so there is room for the sign.
        start -= 1;
        buffer[start] = b'-';
    }
    &buffer[start..]
}

// ---------------------------------------------------------------------------------------------
// GET / SET family
// ---------------------------------------------------------------------------------------------

fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(read_string(ctx, &args[1], |value| {
        Ok(bulk_or_null(value.map(|v| v.data)))
    }))
}

fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(run_set(ctx, args))
}

fn run_set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let options = parse_set_options(&args[3..], OptionsFor::Set).map_err(|()| CmdError::Syntax)?;
    let expires_at_ms = match options.expire {
        Some((unit, text)) => Some(deadline(ctx.now_ms, unit, text, "set")?),
        None => None,
    };
    let (key, value) = (&args[1], args[2].clone());
    if options.condition == SetCondition::Always && !options.get && !options.keep_ttl {
        // The common case: one write, no read.
        return Ok(ctx.run(Op::Set(key.clone(), value, expires_at_ms), ok));
    }
    let (get, keep_ttl) = (options.get, options.keep_ttl);
    // Owned, for the decide function (it may run after the caller's arguments are gone).
    let expected = match options.condition {
        SetCondition::IfEqual(expected) => Some(Bytes::copy_from_slice(expected)),
        _ => None,
    };
    let condition: SetCondition<'static> = match options.condition {
        SetCondition::Always => SetCondition::Always,
        SetCondition::IfMissing => SetCondition::IfMissing,
        SetCondition::IfExists => SetCondition::IfExists,
        SetCondition::IfEqual(_) => SetCondition::IfEqual(&[]),
    };
    update(ctx, key, move |old| {
        let old_string = match old {
            Some(stored) if stored.value_type == ValueType::String => Some(stored.payload()),
            Some(_) if get || matches!(condition, SetCondition::IfEqual(_)) => {
                return Err(CmdError::WrongType);
            }
            _ => None,
        };
        let proceed = match condition {
            SetCondition::Always => true,
            SetCondition::IfMissing => old.is_none(),
            SetCondition::IfExists => old.is_some(),
            SetCondition::IfEqual(_) => old_string.as_deref() == expected.as_deref(),
        };
        let write = proceed.then(|| {
            let expires_at_ms = if keep_ttl {
                old.and_then(|o| o.expires_at_ms)
            } else {
                expires_at_ms
            };
            (encoded(&value), expires_at_ms)
        });
        let reply = if get {
            bulk_or_null(old_string)
        } else if proceed {
            Frame::ok()
        } else {
            Frame::Null
        };
        Ok((write, reply))
    })
}

fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let value = args[2].clone();
    reply(update(ctx, &args[1], move |old| {
        Ok(match old {
            Some(_) => (None, Frame::Integer(0)),
            None => (Some((encoded(&value), None)), Frame::Integer(1)),
        })
    }))
}

fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    set_with_expiry(ctx, args, ExpireUnit::Seconds, "setex")
}

fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    set_with_expiry(ctx, args, ExpireUnit::Milliseconds, "psetex")
}

/// SETEX / PSETEX `key amount value`.
fn set_with_expiry(ctx: &mut Ctx<'_>, args: &[Bytes], unit: ExpireUnit, command: &str) -> Frame {
    reply((|| {
        let at = deadline(ctx.now_ms, unit, &args[2], command)?;
        Ok(ctx.run(Op::Set(args[1].clone(), args[3].clone(), Some(at)), ok))
    })())
}

fn getset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let value = args[2].clone();
    reply(update(ctx, &args[1], move |old| {
        let old = old_string(old)?;
        Ok((Some((encoded(&value), None)), bulk_or_null(old)))
    }))
}

fn getdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(update(ctx, &args[1], |old| {
        let value = old_string(old)?;
        Ok((old.and_then(data::delete), bulk_or_null(value)))
    }))
}

fn getex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(run_getex(ctx, args))
}

/// GETEX, in Redis' order: options, then the key (missing: nil, whatever the expiry says),
/// then the expiry value, then the change.
fn run_getex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let options =
        parse_set_options(&args[2..], OptionsFor::Getex).map_err(|()| CmdError::Syntax)?;
    let expire = options
        .expire
        .map(|(unit, text)| (unit, Bytes::copy_from_slice(text)));
    let (persist, now_ms) = (options.persist, ctx.now_ms);
    update(ctx, &args[1], move |old| {
        let Some(value) = old_string(old)? else {
            return Ok((None, Frame::Null));
        };
        let old = old.expect("a string was read");
        let new_expiry = match expire {
            Some((unit, text)) => Some(Some(deadline(now_ms, unit, &text, "getex")?)),
            None if persist => Some(None),
            None => None,
        };
        let write = match new_expiry {
            Some(None) if old.expires_at_ms.is_none() => None, // PERSIST on a persistent key
            Some(expiry) => data::with_expiry(old, expiry),
            None => None,
        };
        Ok((write, Frame::Bulk(value)))
    })
}

fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let op = Op::GetMany {
        keys: args[1..].to_vec(),
        bytes_max: ctx.output_bytes_max(),
    };
    ctx.run(op, |done| {
        Ok(Frame::Array(
            many(done)
                .into_iter()
                // MGET answers nil for a key of another type.
                .map(|value| match value {
                    Some(v) if v.value_type == ValueType::String => Frame::Bulk(v.payload()),
                    _ => Frame::Null,
                })
                .collect(),
        ))
    })
}

/// MSET/MSETNX's pairs, or the arity error Redis gives for an odd count.
fn pairs(args: &[Bytes], command: &str) -> CmdResult<Vec<(Bytes, Bytes, Option<u64>)>> {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::msg(errors::wrong_arity(command)));
    }
    Ok(args[1..]
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone(), None))
        .collect())
}

fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let items = pairs(args, "mset")?;
        Ok(ctx.run(Op::Put(items), ok))
    })())
}

fn msetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let items = pairs(args, "msetnx")?;
        Ok(ctx.run(Op::PutIfAbsent(items), |done| match done {
            Done::Applied(applied) => Ok(Frame::Integer(i64::from(applied))),
            _ => unreachable!("a conditional put answers whether it applied"),
        }))
    })())
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

fn incr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(increment(ctx, &args[1], 1))
}

fn decr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(increment(ctx, &args[1], -1))
}

fn incrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(
        string_ops::parse_i64(&args[2])
            .ok_or(CmdError::NotInteger)
            .and_then(|by| increment(ctx, &args[1], by)),
    )
}

/// `INCRBYID key increment request-id`: the cluster's counter remembers the request ids it
/// applied (docs/cluster.md, "Retries count once"), so a client that retries after a timeout
/// counts once. A single node keeps no ids: refused there rather than counting twice.
fn incrbyid(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    if ctx.server.cluster.get().is_none() {
        return Frame::error("ERR INCRBYID needs cluster mode (docs/cluster.md)");
    }
    reply(
        string_ops::parse_i64(&args[2])
            .ok_or(CmdError::NotInteger)
            .and_then(|by| {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(&args[3]);
                let id = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
                increment_with(ctx, &args[1], by, Some(id))
            }),
    )
}

fn decrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let by = string_ops::parse_i64(&args[2]).ok_or(CmdError::NotInteger)?;
        let negated = by.checked_neg().ok_or(CmdError::msg(DECREMENT_OVERFLOW))?;
        increment(ctx, &args[1], negated)
    })())
}

/// Redis' `incrDecrCommand`: the value must be a `string2ll` integer; the sum must not
/// overflow; the key keeps its expiry.
fn increment(ctx: &mut Ctx<'_>, key: &Bytes, by: i64) -> CmdResult<Frame> {
    increment_with(ctx, key, by, None)
}

/// [`increment`] with the request id of a retried increment (`None`: a fresh one).
fn increment_with(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    by: i64,
    request_id: Option<u128>,
) -> CmdResult<Frame> {
    let decide = Box::new(move |old: Option<&StoredValue>| {
        let expires_at_ms = old.and_then(|o| o.expires_at_ms);
        let current = match old_string(old)? {
            Some(text) => string_ops::parse_i64(&text).ok_or(CmdError::NotInteger)?,
            None => 0,
        };
        let new = string_ops::checked_increment(current, by)
            .ok_or(CmdError::msg(errors::INCR_OVERFLOW))?;
        let mut buffer = [0u8; 20];
        Ok((
            Some((encoded(i64_text(new, &mut buffer)), expires_at_ms)),
            Frame::Integer(new),
        ))
    });
    let op = Op::Increment {
        key: key.clone(),
        by,
        request_id,
        decide,
    };
    Ok(ctx.run(op, |done| match done {
        Done::Reply(reply) => Ok(reply),
        _ => unreachable!("an increment answers with its reply"),
    }))
}

fn incrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let increment = args[2].clone();
    reply(update(ctx, &args[1], move |old| {
        let expires_at_ms = old.and_then(|o| o.expires_at_ms);
        let current = old_string(old)?;
        let current: &[u8] = current.as_deref().unwrap_or(b"0");
        let text = increment_by_float(current, &increment).map_err(|error| match error {
            FloatError::NotAFloat => CmdError::NotFloat,
            FloatError::NanOrInfinity => CmdError::msg(NAN_OR_INFINITY),
        })?;
        Ok((
            Some((encoded(&text), expires_at_ms)),
            Frame::Bulk(Bytes::from(text)),
        ))
    }))
}

// ---------------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------------

fn range_error(error: RangeError) -> CmdError {
    match error {
        RangeError::OffsetOutOfRange => CmdError::msg(OFFSET_OUT_OF_RANGE),
        RangeError::TooLong => CmdError::msg(errors::STRING_TOO_LONG),
    }
}

fn append(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let tail = args[2].clone();
    let bytes_max = ctx.string_bytes_max() as u64;
    reply(update(ctx, &args[1], move |old| {
        let expires_at_ms = old.and_then(|o| o.expires_at_ms);
        let Some(current) = old_string(old)? else {
            // A new key: Redis checks no length (the argument is within the limit already).
            return Ok((
                Some((encoded(&tail), None)),
                Frame::Integer(tail.len() as i64),
            ));
        };
        let length = check_string_length(current.len() as u64, tail.len() as u64, bytes_max)
            .map_err(range_error)?;
        let raw = encoded_with(length, |out| {
            out.put_slice(&current);
            out.put_slice(&tail);
        });
        Ok((Some((raw, expires_at_ms)), Frame::Integer(length as i64)))
    }))
}

fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(read_string(ctx, &args[1], |value| {
        Ok(Frame::Integer(value.map_or(0, |v| v.data.len() as i64)))
    }))
}

fn getrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let start = string_ops::parse_i64(&args[2]).ok_or(CmdError::NotInteger)?;
        let end = string_ops::parse_i64(&args[3]).ok_or(CmdError::NotInteger)?;
        read_string(ctx, &args[1], move |value| {
            let Some(value) = value else {
                return Ok(Frame::Bulk(Bytes::new()));
            };
            Ok(Frame::Bulk(
                match getrange_bounds(start, end, value.data.len()) {
                    Some(range) => value.data.slice(range),
                    None => Bytes::new(),
                },
            ))
        })
    })())
}

fn setrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let patch = args[3].clone();
        let offset = string_ops::parse_i64(&args[2]).ok_or(CmdError::NotInteger)?;
        let offset = check_setrange_offset(offset).map_err(range_error)?;
        let bytes_max = ctx.string_bytes_max() as u64;
        update(ctx, &args[1], move |old| {
            let expires_at_ms = old.and_then(|o| o.expires_at_ms);
            let current = old_string(old)?.unwrap_or_default();
            if patch.is_empty() {
                // Nothing to write: Redis answers the current length and creates nothing.
                return Ok((None, Frame::Integer(current.len() as i64)));
            }
            let end =
                check_string_length(offset, patch.len() as u64, bytes_max).map_err(range_error)?;
            let offset = offset as usize;
            let length = end.max(current.len());
            let raw = encoded_with(length, |out| {
                if current.len() >= end {
                    out.put_slice(&current[..offset]);
                    out.put_slice(&patch);
                    out.put_slice(&current[end..]);
                } else {
                    out.put_slice(&apply_setrange(&current, offset, &patch));
                }
            });
            Ok((Some((raw, expires_at_ms)), Frame::Integer(length as i64)))
        })
    })())
}

// ---------------------------------------------------------------------------------------------
// LCS
// ---------------------------------------------------------------------------------------------

fn lcs_command(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(run_lcs(ctx, args))
}

/// Redis 7 `lcsCommand`: keys first (another type is an error, a missing key is ""), then
/// options, then the reply — the subsequence, its LEN, or with IDX a map of the matches
/// (last first, each `[[a_start, a_end], [b_start, b_end]]` plus the length with
/// WITHMATCHLEN) and the length.
fn run_lcs(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    // Parsed first, answered after the keys are read: Redis reports a key of another type
    // before a bad option.
    let options = parse_lcs_options(&args[3..]);
    let bytes_max = ctx.string_bytes_max() as u64;
    let op = Op::GetMany {
        keys: vec![args[1].clone(), args[2].clone()],
        bytes_max: 0,
    };
    Ok(ctx.run(op, move |done| {
        let string_of = |value: Option<StoredValue>| -> CmdResult<Bytes> {
            match value {
                None => Ok(Bytes::new()),
                Some(stored) if stored.value_type == ValueType::String => Ok(stored.payload()),
                Some(_) => Err(CmdError::msg(LCS_WRONG_TYPE)),
            }
        };
        let mut values = many(done).into_iter();
        let a = string_of(values.next().flatten())?;
        let b = string_of(values.next().flatten())?;
        lcs_reply(&a, &b, options?, bytes_max)
    }))
}

/// LCS's options.
struct LcsOptions {
    want_index: bool,
    want_length: bool,
    with_match_length: bool,
    min_match_length: u64,
}

fn parse_lcs_options(args: &[Bytes]) -> CmdResult<LcsOptions> {
    let mut options = LcsOptions {
        want_index: false,
        want_length: false,
        with_match_length: false,
        min_match_length: 0,
    };
    let mut index = 0;
    while index < args.len() {
        let option = &args[index][..];
        if option.eq_ignore_ascii_case(b"IDX") {
            options.want_index = true;
        } else if option.eq_ignore_ascii_case(b"LEN") {
            options.want_length = true;
        } else if option.eq_ignore_ascii_case(b"WITHMATCHLEN") {
            options.with_match_length = true;
        } else if option.eq_ignore_ascii_case(b"MINMATCHLEN") && index + 1 < args.len() {
            let value = string_ops::parse_i64(&args[index + 1]).ok_or(CmdError::NotInteger)?;
            options.min_match_length = u64::try_from(value).unwrap_or(0);
            index += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        index += 1;
    }
    if options.want_index && options.want_length {
        return Err(CmdError::msg(LCS_LEN_AND_IDX));
    }
    Ok(options)
}

fn lcs_reply(a: &[u8], b: &[u8], options: LcsOptions, bytes_max: u64) -> CmdResult<Frame> {
    if !lcs_fits(a.len(), b.len(), bytes_max) {
        return Err(CmdError::msg(LCS_TOO_BIG));
    }
    let result = lcs(a, b, options.min_match_length);
    if options.want_length {
        return Ok(Frame::Integer(result.length as i64));
    }
    if !options.want_index {
        return Ok(Frame::Bulk(Bytes::from(result.text)));
    }
    let range = |(start, end): (usize, usize)| {
        Frame::Array(vec![
            Frame::Integer(start as i64),
            Frame::Integer(end as i64),
        ])
    };
    let matches = result
        .matches
        .iter()
        .map(|found| {
            let mut item = vec![range(found.a), range(found.b)];
            if options.with_match_length {
                item.push(Frame::Integer(found.length as i64));
            }
            Frame::Array(item)
        })
        .collect();
    Ok(Frame::Map(vec![
        (
            Frame::bulk(Bytes::from_static(b"matches")),
            Frame::Array(matches),
        ),
        (
            Frame::bulk(Bytes::from_static(b"len")),
            Frame::Integer(result.length as i64),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_text_is_decimal() {
        let mut buffer = [0u8; 20];
        assert_eq!(i64_text(0, &mut buffer), b"0");
        assert_eq!(i64_text(-42, &mut buffer), b"-42");
        assert_eq!(i64_text(i64::MAX, &mut buffer), b"9223372036854775807");
        assert_eq!(i64_text(i64::MIN, &mut buffer), b"-9223372036854775808");
    }

    #[test]
    fn command_names_are_unique() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }

    #[test]
    fn encoded_with_writes_what_encode_value_writes() {
        let built = encoded_with(2, |out| out.put_slice(b"ab"));
        assert_eq!(built, encoded(b"ab"));
        assert_eq!(
            &encode_value(ValueType::String, b"ab")[..],
            &[ValueType::String.tag(), b'a', b'b']
        );
    }
}
