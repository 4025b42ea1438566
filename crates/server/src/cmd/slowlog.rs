//! SLOWLOG and LATENCY: the commands that read and reset the slow log and
//! the latency monitor (`crate::slowlog` keeps them).

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::keyspace::help_frame;
use super::{registry, reply, spec, CommandSpec, Ctx};
use crate::args;
use crate::errors::{self, CmdError, CmdResult};

/// SLOWLOG and LATENCY.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec(
        "slowlog",
        -2,
        &["admin", "loading", "stale"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "A container for slow log commands.",
        "2.2.12",
        slowlog,
    )
    .syntax("GET [count]|LEN|RESET|HELP"),
    spec(
        "latency",
        -2,
        &["admin", "noscript", "loading", "stale"],
        0,
        0,
        0,
        &["admin", "slow", "dangerous"],
        "A container for latency diagnostics commands.",
        "2.8.13",
        latency,
    )
    .syntax("LATEST|HISTORY event|RESET [event ...]|HISTOGRAM [command ...]|HELP"),
];

fn slowlog(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(slowlog_run(ctx, args))
}

fn slowlog_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let log = &ctx.server.slowlog;
    let sub = args::lower(&args[1]);
    match (sub.as_str(), args.len()) {
        ("len", 2) => Ok(Frame::Integer(log.len() as i64)),
        ("reset", 2) => {
            log.entries.lock().clear();
            Ok(Frame::ok())
        }
        ("get", 2 | 3) => {
            let count = match args.get(2) {
                None => 10,
                Some(arg) => match args::parse_i64(arg) {
                    Some(-1) => usize::MAX,
                    Some(n) if n >= 0 => n as usize,
                    _ => {
                        return Err(CmdError::msg(
                            "ERR count should be greater than or equal to -1",
                        ))
                    }
                },
            };
            let entries = log.entries.lock();
            let frames = entries
                .iter()
                .take(count)
                .map(|e| {
                    Frame::Array(vec![
                        Frame::Integer(e.id as i64),
                        Frame::Integer(e.unix_seconds as i64),
                        Frame::Integer(e.micros as i64),
                        Frame::Array(e.args.iter().cloned().map(Frame::Bulk).collect()),
                        Frame::bulk(e.peer.clone()),
                        Frame::Bulk(e.name.clone()),
                    ])
                })
                .collect();
            Ok(Frame::Array(frames))
        }
        ("help", 2) => Ok(help_frame(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(CmdError::msg(errors::unknown_subcommand(
            "slowlog", &args[1],
        ))),
    }
}

fn latency(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(latency_run(ctx, args))
}

fn latency_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let log = &ctx.server.slowlog;
    let sub = args::lower(&args[1]);
    match sub.as_str() {
        "latest" => {
            let events = log.events.lock();
            Ok(Frame::Array(
                events
                    .iter()
                    .filter_map(|(name, e)| {
                        let (ts, ms) = *e.samples.back()?;
                        Some(Frame::Array(vec![
                            Frame::bulk(*name),
                            Frame::Integer(ts as i64),
                            Frame::Integer(ms as i64),
                            Frame::Integer(e.max_ms as i64),
                        ]))
                    })
                    .collect(),
            ))
        }
        "history" if args.len() == 3 => {
            let wanted = args::lower(&args[2]);
            let events = log.events.lock();
            let samples = events
                .iter()
                .find(|(name, _)| *name == wanted)
                .map(|(_, e)| {
                    e.samples
                        .iter()
                        .map(|(ts, ms)| {
                            Frame::Array(vec![
                                Frame::Integer(*ts as i64),
                                Frame::Integer(*ms as i64),
                            ])
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Frame::Array(samples))
        }
        "reset" => {
            let mut events = log.events.lock();
            let before = events.len();
            if args.len() == 2 {
                events.clear();
            } else {
                let names: Vec<String> = args[2..].iter().map(|a| args::lower(a)).collect();
                events.retain(|(name, _)| !names.iter().any(|n| n == name));
            }
            Ok(Frame::Integer((before - events.len()) as i64))
        }
        "histogram" => {
            let mut pairs = Vec::new();
            for (index, spec) in registry().specs().iter().enumerate() {
                if args.len() > 2 && !args[2..].iter().any(|a| args::is(a, spec.name)) {
                    continue;
                }
                let histogram = &ctx.server.metrics.command_latency[index];
                if histogram.count() == 0 {
                    continue;
                }
                let buckets = histogram
                    .cumulative_micros()
                    .into_iter()
                    .map(|(bound, count)| {
                        (Frame::Integer(bound as i64), Frame::Integer(count as i64))
                    })
                    .collect();
                pairs.push((
                    Frame::bulk(spec.name),
                    Frame::Map(vec![
                        (
                            Frame::bulk("calls"),
                            Frame::Integer(histogram.count() as i64),
                        ),
                        (Frame::bulk("histogram_usec"), Frame::Map(buckets)),
                    ]),
                ));
            }
            Ok(Frame::Map(pairs))
        }
        "doctor" => {
            let text = if log.events.lock().is_empty() {
                "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep tonight.\n"
            } else {
                "Latency spikes were observed; see LATENCY LATEST, LATENCY HISTORY and SLOWLOG GET.\n"
            };
            Ok(Frame::bulk(text))
        }
        "help" => Ok(help_frame(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "HISTOGRAM [<command> ...]",
            "    Return a cumulative distribution of latencies per command.",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(CmdError::msg(errors::unknown_subcommand(
            "latency", &args[1],
        ))),
    }
}
