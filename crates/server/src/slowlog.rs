//! SLOWLOG and LATENCY: a bounded log of commands that ran longer than
//! `slowlog-log-slower-than`, and per-event latency spikes above
//! `latency-monitor-threshold`, as Redis keeps them.
//!
//! The thresholds sit in atomics here (not behind the config lock) because
//! every command reads them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::args;
use crate::errors;
use crate::server::unix_seconds;

/// Redis' default `slowlog-log-slower-than`: 10 ms.
pub const SLOWLOG_SLOWER_THAN_MICROS_DEFAULT: i64 = 10_000;
/// Redis' default `slowlog-max-len`.
pub const SLOWLOG_LEN_MAX_DEFAULT: usize = 128;
/// Arguments kept per slow-log entry (Redis: `SLOWLOG_ENTRY_MAX_ARGC`).
const ENTRY_ARGS_MAX: usize = 32;
/// Bytes kept per argument (Redis: `SLOWLOG_ENTRY_MAX_STRING`).
const ENTRY_ARG_BYTES_MAX: usize = 128;
/// Samples kept per latency event (Redis: `LATENCY_TS_LEN`).
const LATENCY_HISTORY_LEN: usize = 160;

/// One slow command.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) unix_seconds: u64,
    pub(crate) micros: u64,
    pub(crate) args: Vec<Bytes>,
    pub(crate) peer: String,
    pub(crate) name: Bytes,
}

/// Latency samples of one event (e.g. "command").
#[derive(Debug, Default)]
pub(crate) struct Event {
    pub(crate) samples: VecDeque<(u64, u64)>,
    pub(crate) max_ms: u64,
}

/// The slow log and the latency monitor.
#[derive(Debug)]
pub(crate) struct SlowLog {
    pub(crate) entries: Mutex<VecDeque<Entry>>,
    pub(crate) next_id: AtomicU64,
    /// Microseconds; negative disables, 0 logs every command.
    pub slower_than_micros: AtomicI64,
    pub len_max: AtomicUsize,
    /// Milliseconds; 0 disables the latency monitor.
    pub latency_threshold_ms: AtomicU64,
    pub(crate) events: Mutex<Vec<(&'static str, Event)>>,
}

impl SlowLog {
    pub(crate) fn new(slower_than_micros: i64, len_max: usize, latency_threshold_ms: u64) -> Self {
        SlowLog {
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            slower_than_micros: AtomicI64::new(slower_than_micros),
            len_max: AtomicUsize::new(len_max),
            latency_threshold_ms: AtomicU64::new(latency_threshold_ms),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Notes a command that took `elapsed`; cheap when it was fast.
    pub(crate) fn observe(
        &self,
        elapsed: Duration,
        args: &[Bytes],
        peer: impl FnOnce() -> (String, Bytes),
    ) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let threshold = self.slower_than_micros.load(Ordering::Relaxed);
        // AUTH is never logged (its arguments are all secret), as in Redis.
        let logged = threshold >= 0 && micros >= threshold as u64 && !args::is(&args[0], "auth");
        if logged {
            let (peer, name) = peer();
            tracing::info!(
                command = %errors::printable(&args[0], 32),
                micros,
                client = %peer,
                "slow command"
            );
            self.push(micros, args, peer, name);
        }
        let latency_ms = self.latency_threshold_ms.load(Ordering::Relaxed);
        let ms = micros / 1000;
        if latency_ms > 0 && ms >= latency_ms {
            self.add_sample("command", ms);
        }
    }

    pub(crate) fn push(&self, micros: u64, args: &[Bytes], peer: String, name: Bytes) {
        let mut kept: Vec<Bytes> = Vec::with_capacity(args.len().min(ENTRY_ARGS_MAX));
        for (i, arg) in args.iter().enumerate() {
            if i + 1 == ENTRY_ARGS_MAX && args.len() > ENTRY_ARGS_MAX {
                kept.push(Bytes::from(format!(
                    "... ({} more arguments)",
                    args.len() - i
                )));
                break;
            }
            if arg.len() > ENTRY_ARG_BYTES_MAX {
                let mut text = arg[..ENTRY_ARG_BYTES_MAX].to_vec();
                text.extend_from_slice(
                    format!("... ({} more bytes)", arg.len() - ENTRY_ARG_BYTES_MAX).as_bytes(),
                );
                kept.push(Bytes::from(text));
            } else {
                // A copy, not a slice: a slice would keep the connection's whole input buffer
                // (a 50 MiB SET's) alive for as long as the entry.
                kept.push(Bytes::copy_from_slice(arg));
            }
        }
        // On the kept (already cut) arguments: a long slow command is not copied whole.
        redact(&mut kept);
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_seconds: unix_seconds(),
            micros,
            args: kept,
            peer,
            name,
        };
        let len_max = self.len_max.load(Ordering::Relaxed);
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(len_max);
    }

    pub(crate) fn add_sample(&self, event: &'static str, ms: u64) {
        let mut events = self.events.lock();
        let index = match events.iter().position(|(name, _)| *name == event) {
            Some(i) => i,
            None => {
                events.push((event, Event::default()));
                events.len() - 1
            }
        };
        let e = &mut events[index].1;
        e.samples.push_back((unix_seconds(), ms));
        if e.samples.len() > LATENCY_HISTORY_LEN {
            e.samples.pop_front();
        }
        e.max_ms = e.max_ms.max(ms);
    }
}

/// What the slow log keeps of a command's arguments: passwords replaced by `(redacted)` as
/// Redis does (`redactClientCommandArgument`): both arguments after HELLO's AUTH, every argument
/// of ACL SETUSER (its rules hold `>password`), and the value of CONFIG SET of a secret
/// setting (requirepass, masterauth).
fn redact(kept: &mut [Bytes]) {
    const REDACTED: Bytes = Bytes::from_static(b"(redacted)");
    let is = |kept: &[Bytes], i: usize, name: &str| kept.get(i).is_some_and(|a| args::is(a, name));
    if is(kept, 0, "hello") {
        let mut i = 1;
        while i < kept.len() {
            if args::is(&kept[i], "auth") {
                for arg in kept.iter_mut().skip(i + 1).take(2) {
                    *arg = REDACTED;
                }
                i += 3;
            } else {
                i += 1;
            }
        }
    } else if is(kept, 0, "acl") && is(kept, 1, "setuser") {
        for arg in kept.iter_mut().skip(2) {
            *arg = REDACTED;
        }
    } else if is(kept, 0, "config") && is(kept, 1, "set") {
        for pair in kept[2..].chunks_mut(2) {
            if let [name, value] = pair {
                if crate::settings::is_secret(name) {
                    *value = REDACTED;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn keeps_the_newest_entries_and_truncates_arguments() {
        let log = SlowLog::new(0, 2, 0);
        let long = Bytes::from(vec![b'x'; 200]);
        for _ in 0..3 {
            log.observe(
                Duration::from_micros(5),
                &[Bytes::from_static(b"set"), long.clone()],
                || ("127.0.0.1:1".into(), Bytes::new()),
            );
        }
        let entries = log.entries.lock();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, 2);
        assert!(entries[0].args[1].ends_with(b"... (72 more bytes)"));
    }

    #[test]
    pub(crate) fn secrets_are_redacted_and_auth_is_not_kept() {
        let log = SlowLog::new(0, 10, 0);
        let command = |line: &str| -> Vec<Bytes> {
            line.split(' ')
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect()
        };
        for line in [
            "AUTH user pw1",
            "HELLO 3 AUTH user pw2 SETNAME x",
            "acl SETUSER u on >pw3",
            "CONFIG SET maxclients 10 requirepass pw4 masterauth pw5",
        ] {
            log.observe(Duration::from_micros(5), &command(line), || {
                ("127.0.0.1:1".into(), Bytes::new())
            });
        }
        let entries = log.entries.lock();
        let rendered: Vec<String> = entries
            .iter()
            .rev()
            .map(|e| {
                let words: Vec<_> = e.args.iter().map(|a| String::from_utf8_lossy(a)).collect();
                words.join(" ")
            })
            .collect();
        assert_eq!(
            rendered,
            [
                "HELLO 3 AUTH (redacted) (redacted) SETNAME x",
                "acl SETUSER (redacted) (redacted) (redacted)",
                "CONFIG SET maxclients 10 requirepass (redacted) masterauth (redacted)",
            ]
        );
    }

    #[test]
    pub(crate) fn negative_threshold_disables() {
        let log = SlowLog::new(-1, 10, 0);
        log.observe(
            Duration::from_secs(1),
            &[Bytes::from_static(b"get")],
            || unreachable!("not logged"),
        );
        assert_eq!(log.len(), 0);
    }
}
