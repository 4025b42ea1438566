//! Connection commands: PING ECHO QUIT SELECT AUTH HELLO RESET CLIENT.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_protocol::{Frame, RespVersion};

use super::{reply, spec, CommandSpec, Ctx};
use crate::args::{self, is};
use crate::errors::{self, CmdError, CmdResult};
use ringkv_store::DATABASES;

/// The connection commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[
    spec(
        "ping",
        -1,
        &["fast", "sentinel"],
        0,
        0,
        0,
        &["fast", "connection"],
        "Returns the server's liveliness response.",
        "1.0.0",
        ping,
    ).syntax("[message]"),
    spec(
        "echo",
        2,
        &["fast"],
        0,
        0,
        0,
        &["fast", "connection"],
        "Returns the given string.",
        "1.0.0",
        echo,
    ).syntax("message"),
    spec(
        "quit",
        -1,
        &[
            "allow_busy",
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
        ],
        0,
        0,
        0,
        &["fast", "connection"],
        "Closes the connection.",
        "1.0.0",
        quit,
    ).syntax(""),
    spec(
        "select",
        2,
        &["loading", "stale", "fast"],
        0,
        0,
        0,
        &["fast", "connection"],
        "Changes the selected database.",
        "1.0.0",
        select,
    ).syntax("index"),
    spec(
        "auth",
        -2,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        0,
        0,
        0,
        &["fast", "connection"],
        "Authenticates the connection.",
        "1.0.0",
        auth,
    ).syntax("[username] password"),
    spec(
        "hello",
        -1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        0,
        0,
        0,
        &["fast", "connection"],
        "Handshakes with the Redis server.",
        "6.0.0",
        hello,
    ).syntax("[protover [AUTH username password] [SETNAME clientname]]"),
    spec(
        "reset",
        1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        0,
        0,
        0,
        &["fast", "connection"],
        "Resets the connection.",
        "6.2.0",
        reset,
    ).syntax(""),
    spec(
        "client",
        -2,
        &["sentinel"],
        0,
        0,
        0,
        &["slow", "connection"],
        "A container for client connection commands.",
        "2.4.0",
        client,
    ).syntax("ID|GETNAME|SETNAME name|SETINFO LIB-NAME|LIB-VER value|LIST [TYPE type] [ID id ...]|INFO|KILL [ID id] [TYPE type] [USER username] [ADDR ip:port] [LADDR ip:port] [SKIPME YES|NO] [MAXAGE seconds]|HELP"),
];

fn ping(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    match args.len() {
        1 => Frame::simple("PONG"),
        2 => {
            let _ = ctx;
            Frame::Bulk(args[1].clone())
        }
        _ => Frame::error(errors::wrong_arity("ping")),
    }
}

fn echo(_ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    Frame::Bulk(args[1].clone())
}

fn quit(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    ctx.client.close_after_reply = true;
    Frame::ok()
}

/// Parses a logical database index as SELECT/MOVE/COPY do.
pub(crate) fn db_index(arg: &[u8]) -> CmdResult<usize> {
    let index = args::i64_arg(arg)?;
    if !(0..DATABASES as i64).contains(&index) {
        return Err(CmdError::msg(errors::DB_INDEX_OUT_OF_RANGE));
    }
    Ok(index as usize)
}

fn select(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(db_index(&args[1]).map(|db| {
        ctx.client.set_db(db);
        Frame::ok()
    }))
}

/// AUTH / HELLO AUTH through the ACL users (`default` holds `requirepass`). Passwords are
/// compared in constant time there and never logged.
fn check_password(ctx: &mut Ctx<'_>, username: Option<&[u8]>, password: &[u8]) -> CmdResult<()> {
    let acl = &ctx.server.acl;
    if username.is_none() && acl.default_is_open() {
        return Err(CmdError::msg(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    let user = String::from_utf8_lossy(username.unwrap_or(crate::acl::DEFAULT_USER.as_bytes()))
        .into_owned();
    if acl.authenticate(&mut ctx.client.acl, &user, password) {
        ctx.client.authenticated = true;
        ctx.client.handle.info.lock().user = user;
        return Ok(());
    }
    ctx.server
        .metrics
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let addr = ctx.client.handle.info.lock().addr;
    tracing::warn!(user = %errors::printable(user.as_bytes(), 64), client = %addr, "AUTH failed");
    Err(CmdError::msg(errors::WRONGPASS))
}

fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let result = match args.len() {
        2 => check_password(ctx, None, &args[1]),
        3 => check_password(ctx, Some(&args[1]), &args[2]),
        _ => Err(CmdError::Syntax),
    };
    reply(result.map(|()| Frame::ok()))
}

fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(hello_run(ctx, args))
}

fn hello_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let mut resp = ctx.resp();
    let mut at = 1;
    if args.len() >= 2 {
        let version = args::parse_i64(&args[1]).ok_or_else(|| {
            CmdError::msg("ERR Protocol version is not an integer or out of range")
        })?;
        resp = match version {
            2 => RespVersion::Resp2,
            3 => RespVersion::Resp3,
            _ => return Err(CmdError::msg("NOPROTO unsupported protocol version")),
        };
        at = 2;
    }
    let mut name = None;
    while at < args.len() {
        let more = args.len() - at - 1;
        if is(&args[at], "auth") && more >= 2 {
            check_password(ctx, Some(&args[at + 1]), &args[at + 2])?;
            at += 3;
        } else if is(&args[at], "setname") && more >= 1 {
            validate_client_name(&args[at + 1])?;
            name = Some(args[at + 1].clone());
            at += 2;
        } else {
            return Err(CmdError::msg(format!(
                "ERR Syntax error in HELLO option '{}'",
                errors::printable(&args[at], 128)
            )));
        }
    }
    if !ctx.client.authenticated {
        return Err(CmdError::msg(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        ctx.client.handle.info.lock().name = name;
    }
    ctx.client.set_resp(resp);
    let proto = if resp == RespVersion::Resp3 { 3 } else { 2 };
    Ok(Frame::Map(vec![
        (Frame::bulk("server"), Frame::bulk("redis")),
        (Frame::bulk("version"), Frame::bulk(crate::REDIS_VERSION)),
        (Frame::bulk("proto"), Frame::Integer(proto)),
        (Frame::bulk("id"), Frame::Integer(ctx.client.id() as i64)),
        (Frame::bulk("mode"), Frame::bulk("standalone")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(vec![])),
    ]))
}

fn reset(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Frame {
    ctx.client.end_transaction();
    ctx.client.set_db(0);
    ctx.client.set_resp(RespVersion::Resp2);
    ctx.client.handle.info.lock().name = Bytes::new();
    ctx.client.acl = crate::acl::Session::new();
    ctx.client.handle.info.lock().user = crate::acl::DEFAULT_USER.to_string();
    ctx.client.authenticated = ctx.server.acl.default_is_open();
    Frame::simple("RESET")
}

fn validate_client_name(name: &[u8]) -> CmdResult<()> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CmdError::msg(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(client_run(ctx, args))
}

fn client_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let sub = args::lower(&args[1]);
    let arity_error = || CmdError::msg(errors::wrong_arity(&format!("client|{sub}")));
    match sub.as_str() {
        "id" => {
            if args.len() != 2 {
                return Err(arity_error());
            }
            Ok(Frame::Integer(ctx.client.id() as i64))
        }
        "setname" => {
            if args.len() != 3 {
                return Err(arity_error());
            }
            validate_client_name(&args[2])?;
            ctx.client.handle.info.lock().name = args[2].clone();
            Ok(Frame::ok())
        }
        "getname" => {
            if args.len() != 2 {
                return Err(arity_error());
            }
            let name = ctx.client.handle.info.lock().name.clone();
            Ok(if name.is_empty() { Frame::Null } else { Frame::Bulk(name) })
        }
        "setinfo" => {
            if args.len() != 4 {
                return Err(arity_error());
            }
            let value = args[3].clone();
            if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return Err(CmdError::msg(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    if is(&args[2], "lib-name") { "lib-name" } else { "lib-ver" }
                )));
            }
            let mut info = ctx.client.handle.info.lock();
            if is(&args[2], "lib-name") {
                info.lib_name = value;
            } else if is(&args[2], "lib-ver") {
                info.lib_ver = value;
            } else {
                return Err(CmdError::msg(format!(
                    "ERR Unrecognized option '{}'",
                    errors::printable(&args[2], 128)
                )));
            }
            Ok(Frame::ok())
        }
        "list" => client_list(ctx, args),
        "info" => {
            if args.len() != 2 {
                return Err(arity_error());
            }
            let line = client_line(ctx, &ctx.client.handle.clone());
            Ok(verbatim(ctx, format!("{line}\n")))
        }
        "kill" => client_kill(ctx, args),
        "help" => Ok(Frame::Array(
            [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "KILL <ip:port>",
                "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO).",
                "LIST [TYPE normal] [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "    Set client library name or version.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|line| Frame::simple(*line))
            .collect(),
        )),
        "no-evict" | "no-touch" => {
            if args.len() != 3 {
                return Err(arity_error());
            }
            if is(&args[2], "on") || is(&args[2], "off") {
                Ok(Frame::ok())
            } else {
                Err(CmdError::Syntax)
            }
        }
        _ => Err(CmdError::msg(errors::unknown_subcommand("client", &args[1]))),
    }
}

fn verbatim(ctx: &Ctx<'_>, text: String) -> Frame {
    let _ = ctx;
    Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(text),
    }
}

fn client_line(ctx: &Ctx<'_>, handle: &crate::server::ClientHandle) -> String {
    let info = handle.info.lock().clone();
    let now = std::time::Instant::now();
    format!(
        "id={} addr={} laddr={} fd=8 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
        handle.id,
        info.addr,
        info.laddr,
        String::from_utf8_lossy(&info.name),
        now.duration_since(info.created).as_secs(),
        now.duration_since(info.last_command).as_secs(),
        // S marks a replica's link, as in Redis.
        if connection_type(ctx, handle.id) == ClientType::Replica { "S" } else { "N" },
        info.db,
        info.multi,
        if info.last_command_name.is_empty() { "NULL" } else { &info.last_command_name },
        info.user,
        if info.resp == RespVersion::Resp3 { 3 } else { 2 },
        String::from_utf8_lossy(&info.lib_name),
        String::from_utf8_lossy(&info.lib_ver),
    )
}

fn client_list(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind = None;
    let mut at = 2;
    while at < args.len() {
        if is(&args[at], "type") && at + 1 < args.len() {
            kind = Some(client_type(&args[at + 1])?);
            at += 2;
        } else if is(&args[at], "id") && at + 1 < args.len() {
            let mut list = Vec::new();
            for arg in &args[at + 1..] {
                match args::parse_i64(arg) {
                    Some(id) if id > 0 => list.push(id as u64),
                    _ => return Err(CmdError::msg("ERR Invalid client ID")),
                }
            }
            ids = Some(list);
            at = args.len();
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let handles: Vec<_> = ctx.server.clients.lock().values().cloned().collect();
    let mut text = String::new();
    for handle in handles {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&handle.id))
            || kind.is_some_and(|kind| kind != connection_type(ctx, handle.id))
        {
            continue;
        }
        text.push_str(&client_line(ctx, &handle));
        text.push('\n');
    }
    Ok(verbatim(ctx, text))
}

/// Client classes of `CLIENT KILL/LIST TYPE`. ringkv has no pub/sub and a replica's link to its
/// leader is not a client connection, so only `Normal` and `Replica` ever match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientType {
    Normal,
    Master,
    Replica,
    PubSub,
}

/// The class of connection `id`: a replica once PSYNC handed it to the replication stream.
fn connection_type(ctx: &Ctx<'_>, id: u64) -> ClientType {
    if ctx.server.replication.replicas.lock().contains_key(&id) {
        ClientType::Replica
    } else {
        ClientType::Normal
    }
}

fn client_type(arg: &[u8]) -> CmdResult<ClientType> {
    match args::lower(arg).as_str() {
        "normal" => Ok(ClientType::Normal),
        "master" => Ok(ClientType::Master),
        "replica" | "slave" => Ok(ClientType::Replica),
        "pubsub" => Ok(ClientType::PubSub),
        _ => Err(CmdError::msg(format!(
            "ERR Unknown client type '{}'",
            errors::printable(arg, 128)
        ))),
    }
}

/// What `CLIENT KILL <filter> <value> …` selects; every given filter must match (logical AND).
#[derive(Debug)]
struct KillFilter {
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    kind: Option<ClientType>,
    user: Option<String>,
    /// Only connections at least this many seconds old (MAXAGE, Redis 7.4).
    max_age: Option<i64>,
    skip_me: bool,
}

impl KillFilter {
    /// Parses the filter pairs as Redis does: an unknown filter, a missing value or a bad
    /// SKIPME value is a syntax error; a bad ID, TYPE, USER or MAXAGE has its own error.
    fn parse(ctx: &Ctx<'_>, pairs: &[Bytes]) -> CmdResult<KillFilter> {
        let mut filter = KillFilter {
            id: None,
            addr: None,
            laddr: None,
            kind: None,
            user: None,
            max_age: None,
            skip_me: true,
        };
        let mut at = 0;
        while at < pairs.len() {
            let Some(value) = pairs.get(at + 1) else {
                return Err(CmdError::Syntax);
            };
            let name = &pairs[at];
            if is(name, "id") {
                match args::parse_i64(value) {
                    Some(v) if v > 0 => filter.id = Some(v as u64),
                    _ => return Err(CmdError::msg("ERR client-id should be greater than 0")),
                }
            } else if is(name, "addr") {
                filter.addr = Some(String::from_utf8_lossy(value).into_owned());
            } else if is(name, "laddr") {
                filter.laddr = Some(String::from_utf8_lossy(value).into_owned());
            } else if is(name, "type") {
                filter.kind = Some(client_type(value)?);
            } else if is(name, "user") {
                let user = String::from_utf8_lossy(value).into_owned();
                if !ctx.server.acl.has_user(&user) {
                    return Err(CmdError::msg(format!(
                        "ERR No such user '{}'",
                        errors::printable(value, 128)
                    )));
                }
                filter.user = Some(user);
            } else if is(name, "maxage") {
                // Any integer; 0 or less selects every age, as Redis' `age >= maxage` test does.
                filter.max_age = Some(args::i64_arg(value)?);
            } else if is(name, "skipme") {
                filter.skip_me = if is(value, "yes") {
                    true
                } else if is(value, "no") {
                    false
                } else {
                    return Err(CmdError::Syntax);
                };
            } else {
                return Err(CmdError::Syntax);
            }
            at += 2;
        }
        Ok(filter)
    }

    fn matches(
        &self,
        ctx: &Ctx<'_>,
        handle: &crate::server::ClientHandle,
        now: std::time::Instant,
    ) -> bool {
        if self.skip_me && handle.id == ctx.client.id() {
            return false;
        }
        if self.id.is_some_and(|id| id != handle.id) {
            return false;
        }
        let info = handle.info.lock().clone();
        if self
            .addr
            .as_ref()
            .is_some_and(|a| *a != info.addr.to_string())
            || self
                .laddr
                .as_ref()
                .is_some_and(|a| *a != info.laddr.to_string())
            || self.user.as_ref().is_some_and(|u| *u != info.user)
        {
            return false;
        }
        if let Some(max_age) = self.max_age {
            let age = now.duration_since(info.created).as_secs() as i64;
            if age < max_age {
                return false;
            }
        }
        self.kind
            .is_none_or(|kind| kind == connection_type(ctx, handle.id))
    }
}

fn client_kill(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    if args.len() < 3 {
        // An empty filter would match every client: refuse it as Redis does.
        return Err(CmdError::msg(errors::wrong_arity("client|kill")));
    }
    let handles: Vec<_> = ctx.server.clients.lock().values().cloned().collect();
    if args.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let addr = String::from_utf8_lossy(&args[2]).to_string();
        for handle in &handles {
            if handle.info.lock().addr.to_string() == addr {
                kill(ctx, handle);
                return Ok(Frame::ok());
            }
        }
        return Err(CmdError::msg("ERR No such client"));
    }
    let filter = KillFilter::parse(ctx, &args[2..])?;
    let now = std::time::Instant::now();
    let mut killed = 0;
    for handle in &handles {
        if filter.matches(ctx, handle, now) {
            kill(ctx, handle);
            killed += 1;
        }
    }
    Ok(Frame::Integer(killed))
}

/// Closes `handle`'s connection and takes it out of the client table at once: its task may
/// still be writing or shutting its socket down, but once CLIENT KILL has answered, the client is
/// gone from CLIENT LIST, INFO clients and later kills (the task's own removal is then a no-op).
fn kill(ctx: &mut Ctx<'_>, handle: &crate::server::ClientHandle) {
    if handle.id == ctx.client.id() {
        ctx.client.close_after_reply = true;
    } else {
        handle.kill();
    }
    ctx.server.clients.lock().remove(&handle.id);
    let _ = ctx
        .server
        .stats
        .total_connections_received
        .load(Ordering::Relaxed);
}
