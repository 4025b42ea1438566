//! The bitmap command family: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO.
//!
//! Bitmaps are strings; bit 0 is the most significant bit of the first byte. Semantics and
//! error texts are Redis 7's (`bitops.c`); the arithmetic lives in [`super::bit_ops`] with its
//! unit tests. Writers hold the key lock from read to write and keep the key's expiry, except
//! BITOP, which replaces its destination (and so clears its expiry) as Redis' `setKey` does.

use bytes::{BufMut, Bytes};
use ringkv_protocol::Frame;

use super::bit_ops::{
    self, bitfield_apply, bitfield_get, parse_bit_offset, parse_bit_value, parse_bitfield, BitOp,
    BITFIELD_RO_ERROR, BITOP_NOT_ERROR, BITPOS_BIT_ERROR, BIT_OFFSET_ERROR, BIT_VALUE_ERROR,
};
use super::string::{encoded_with, old_string, read_string, update};
use super::string_ops::parse_i64;
use super::{reply, spec, CommandSpec, Ctx};
use crate::errors::{CmdError, CmdResult};

/// The bitmap commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec("setbit", 4, &["write", "denyoom"], 1, 1, 1, &["write", "bitmap", "slow"], "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.", "2.2.0", setbit).syntax("key offset value"),
    spec("getbit", 3, &["readonly", "fast"], 1, 1, 1, &["read", "bitmap", "fast"], "Returns a bit value by offset.", "2.2.0", getbit).syntax("key offset"),
    spec("bitcount", -2, &["readonly"], 1, 1, 1, &["read", "bitmap", "slow"], "Counts the number of set bits (population counting) in a string.", "2.6.0", bitcount).syntax("key [start end [BYTE|BIT]]"),
    spec("bitpos", -3, &["readonly"], 1, 1, 1, &["read", "bitmap", "slow"], "Finds the first set (1) or clear (0) bit in a string.", "2.8.7", bitpos).syntax("key bit [start [end [BYTE|BIT]]]"),
    spec("bitop", -4, &["write", "denyoom"], 2, -1, 1, &["write", "bitmap", "slow"], "Performs bitwise operations on multiple strings, and stores the result.", "2.6.0", bitop).syntax("AND|OR|XOR|NOT destkey key [key ...]"),
    spec("bitfield", -2, &["write", "denyoom"], 1, 1, 1, &["write", "bitmap", "slow"], "Performs arbitrary bitfield integer operations on strings.", "3.2.0", bitfield).syntax("key [GET encoding offset|[OVERFLOW WRAP|SAT|FAIL] SET encoding offset value|INCRBY encoding offset increment ...]"),
    spec("bitfield_ro", -2, &["readonly", "fast"], 1, 1, 1, &["read", "bitmap", "fast"], "Performs arbitrary read-only bitfield integer operations on strings.", "6.0.0", bitfield_ro).syntax("key [GET encoding offset ...]"),
];

fn bytes_max(ctx: &Ctx<'_>) -> u64 {
    ctx.string_bytes_max() as u64
}

fn setbit(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let offset = parse_bit_offset(&args[2], None, bytes_max(ctx))
            .ok_or(CmdError::msg(BIT_OFFSET_ERROR))?;
        let on = parse_bit_value(&args[3]).ok_or(CmdError::msg(BIT_VALUE_ERROR))?;
        update(ctx, &args[1], move |old| {
            let expires_at_ms = old.and_then(|o| o.expires_at_ms);
            let current = old_string(old)?.unwrap_or_default();
            let was = bit_ops::get_bit(&current, offset);
            // Written even when the bit does not change: Redis counts SETBIT as a modification
            // (WATCH sees it) and creates a missing key.
            let byte = (offset >> 3) as usize;
            let length = (byte + 1).max(current.len());
            let raw = encoded_with(length, |out| {
                let start = out.len();
                out.put_slice(&current);
                out.resize(start + length, 0);
                let mask = 1u8 << (7 - (offset & 7));
                if on {
                    out[start + byte] |= mask;
                } else {
                    out[start + byte] &= !mask;
                }
            });
            Ok((Some((raw, expires_at_ms)), Frame::Integer(i64::from(was))))
        })
    })())
}

fn getbit(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let offset = parse_bit_offset(&args[2], None, bytes_max(ctx))
            .ok_or(CmdError::msg(BIT_OFFSET_ERROR))?;
        read_string(ctx, &args[1], move |value| {
            Ok(Frame::Integer(i64::from(
                value.is_some_and(|v| bit_ops::get_bit(&v.data, offset)),
            )))
        })
    })())
}

/// `BYTE` or `BIT` (any case): true for BIT; anything else is a syntax error.
fn bit_mode(arg: &[u8]) -> CmdResult<bool> {
    if arg.eq_ignore_ascii_case(b"BIT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"BYTE") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

fn integer(arg: &[u8]) -> CmdResult<i64> {
    parse_i64(arg).ok_or(CmdError::NotInteger)
}

/// Redis 7.0 `bitcountCommand`: the key is looked up first (a missing key answers 0 before
/// the range is even parsed), then `start end [BYTE|BIT]`.
fn bitcount(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let args = args.to_vec();
    reply(read_string(ctx, &args[1].clone(), move |value| {
        let Some(value) = value else {
            return Ok(Frame::Integer(0));
        };
        let range = match args.len() {
            2 => None,
            4 | 5 => {
                let start = integer(&args[2])?;
                let end = integer(&args[3])?;
                if start < 0 && end < 0 && start > end {
                    // Redis 7.0 answers this empty range before it reads BYTE|BIT.
                    return Ok(Frame::Integer(0));
                }
                let bit = if args.len() == 5 {
                    bit_mode(&args[4])?
                } else {
                    false
                };
                Some((start, end, bit))
            }
            _ => return Err(CmdError::Syntax),
        };
        Ok(Frame::Integer(bit_ops::bitcount(&value.data, range)))
    }))
}

/// Redis 7.0 `bitposCommand`: the bit, then the key (missing: 0 for a clear bit, -1 for a
/// set one), then `[start [end [BYTE|BIT]]]`.
fn bitpos(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let bit = match integer(&args[2])? {
            0 => false,
            1 => true,
            _ => return Err(CmdError::msg(BITPOS_BIT_ERROR)),
        };
        let args = args.to_vec();
        read_string(ctx, &args[1].clone(), move |value| {
            let Some(value) = value else {
                return Ok(Frame::Integer(if bit { -1 } else { 0 }));
            };
            if args.len() > 6 {
                return Err(CmdError::Syntax);
            }
            let start = args.get(3).map(|arg| integer(arg)).transpose()?;
            let bit_mode = match args.get(5) {
                Some(arg) => bit_mode(arg)?,
                None => false,
            };
            let end = args.get(4).map(|arg| integer(arg)).transpose()?;
            Ok(Frame::Integer(bit_ops::bitpos(
                &value.data,
                bit,
                start,
                end,
                bit_mode,
            )))
        })
    })())
}

/// BITOP op destkey key [key …]: missing sources are empty strings; an empty result deletes
/// the destination; the reply is the result's length.
fn bitop(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply((|| {
        let op = BitOp::parse(&args[1]).ok_or(CmdError::Syntax)?;
        if op == BitOp::Not && args.len() != 4 {
            return Err(CmdError::msg(BITOP_NOT_ERROR));
        }
        let destination = &args[2];
        let keys: Vec<&[u8]> = args[2..].iter().map(|key| &key[..]).collect();
        let _guard = ctx.lock_keys(&keys);
        let mut sources = Vec::with_capacity(args.len() - 3);
        for key in &args[3..] {
            sources.push(
                ctx.get_string(key)?
                    .map(|value| value.data)
                    .unwrap_or_default(),
            );
        }
        let source_slices: Vec<&[u8]> = sources.iter().map(|source| &source[..]).collect();
        let result = bit_ops::bitop(op, &source_slices);
        if result.is_empty() {
            ctx.delete(destination)?;
        } else {
            ctx.set_string(destination, &result, None)?;
        }
        Ok(Frame::Integer(result.len() as i64))
    })())
}

fn bitfield(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(run_bitfield(ctx, args, false))
}

fn bitfield_ro(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(run_bitfield(ctx, args, true))
}

/// Redis' `bitfieldGeneric`: every operation is parsed (and any error answered) before any
/// runs; a read-only plan only reads; otherwise the value is grown to the highest bit written
/// (even if every write then FAILs, as in Redis) and the operations run in order.
fn run_bitfield(ctx: &mut Ctx<'_>, args: &[Bytes], read_only: bool) -> CmdResult<Frame> {
    let key = &args[1];
    let plan = parse_bitfield(&args[2..], bytes_max(ctx)).map_err(CmdError::msg)?;
    let Some(highest_bit) = plan.highest_write_bit else {
        return read_string(ctx, key, move |value| {
            let data = value.as_ref().map(|v| &v.data[..]);
            Ok(Frame::Array(
                plan.ops
                    .iter()
                    .map(|op| Frame::Integer(bitfield_get(data, op)))
                    .collect(),
            ))
        });
    };
    if read_only {
        return Err(CmdError::msg(BITFIELD_RO_ERROR));
    }
    update(ctx, key, move |old| {
        let expires_at_ms = old.and_then(|o| o.expires_at_ms);
        let current = old_string(old)?.unwrap_or_default();
        let length = ((highest_bit >> 3) as usize + 1).max(current.len());
        let mut replies = Vec::with_capacity(plan.ops.len());
        let raw = encoded_with(length, |out| {
            let start = out.len();
            out.put_slice(&current);
            out.resize(start + length, 0);
            let data = &mut out[start..];
            for op in &plan.ops {
                replies.push(bitfield_apply(data, op).map_or(Frame::Null, Frame::Integer));
            }
        });
        Ok((Some((raw, expires_at_ms)), Frame::Array(replies)))
    })
}
