//! ACL: the commands that manage users and permissions (`crate::acl` keeps
//! them and checks every command against them).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_protocol::Frame;

use super::keyspace::help_frame;
use super::{registry, reply, spec, CommandSpec, Ctx};
use crate::acl::*;
use crate::args;
use crate::errors::{self, CmdError, CmdResult};

/// ACL.
pub(crate) const COMMANDS: &[CommandSpec] = &[spec(
    "acl",
    -2,
    &["loading", "stale", "sentinel"],
    0,
    0,
    0,
    &["admin", "slow", "dangerous"],
    "A container for Access List Control commands.",
    "6.0.0",
    acl,
).syntax("SETUSER username [rule ...]|GETUSER username|DELUSER username [username ...]|LIST|USERS|WHOAMI|CAT [category]|HELP")];

fn acl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    reply(acl_run(ctx, args))
}

fn acl_run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> CmdResult<Frame> {
    let sub = args::lower(&args[1]);
    let acl = &ctx.server.acl;
    match sub.as_str() {
        "whoami" if args.len() == 2 => Ok(Frame::bulk(ctx.client.acl.user.clone())),
        "setuser" if args.len() >= 3 => {
            let name = String::from_utf8_lossy(&args[2]).into_owned();
            let mut users = acl.users.write();
            if !users.contains_key(&name) && users.len() >= USERS_MAX {
                return Err(CmdError::msg("ERR too many ACL users"));
            }
            let mut user = users
                .get(&name)
                .map(|u| (**u).clone())
                .unwrap_or_else(|| User::new(&name));
            for rule in &args[3..] {
                user.apply(rule).map_err(|why| {
                    // The rule may be a password: never echo `>…` back or into logs.
                    let shown = if rule.first() == Some(&b'>') || rule.first() == Some(&b'<') {
                        "<password>".to_string()
                    } else {
                        errors::printable(rule, 128)
                    };
                    CmdError::msg(format!(
                        "ERR Error in ACL SETUSER modifier '{shown}': {why}"
                    ))
                })?;
            }
            users.insert(name.clone(), Arc::new(user));
            acl.generation.fetch_add(1, Ordering::Release);
            tracing::info!(user = %name, "ACL user changed");
            Ok(Frame::ok())
        }
        "getuser" if args.len() == 3 => {
            let name = String::from_utf8_lossy(&args[2]);
            let users = acl.users.read();
            let Some(user) = users.get(name.as_ref()) else {
                return Ok(Frame::Null);
            };
            let mut flags = vec![Frame::bulk(if user.enabled { "on" } else { "off" })];
            if user.nopass {
                flags.push(Frame::bulk("nopass"));
            }
            let keys = if user.all_keys {
                "~*".to_string()
            } else {
                user.key_patterns
                    .iter()
                    .map(|p| format!("~{}", String::from_utf8_lossy(p)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            Ok(Frame::Map(vec![
                (Frame::bulk("flags"), Frame::Array(flags)),
                (
                    Frame::bulk("passwords"),
                    Frame::Array(
                        user.password_hashes
                            .iter()
                            .map(|h| Frame::bulk(hex(h)))
                            .collect(),
                    ),
                ),
                (
                    Frame::bulk("commands"),
                    Frame::bulk(if user.command_rules.is_empty() {
                        "-@all".to_string()
                    } else {
                        user.command_rules.join(" ")
                    }),
                ),
                (Frame::bulk("keys"), Frame::bulk(keys)),
                (Frame::bulk("channels"), Frame::bulk("&*")),
                (Frame::bulk("selectors"), Frame::Array(vec![])),
            ]))
        }
        "deluser" if args.len() >= 3 => {
            let mut users = acl.users.write();
            let mut removed = 0;
            for name in &args[2..] {
                let name = String::from_utf8_lossy(name);
                if name == DEFAULT_USER {
                    return Err(CmdError::msg("ERR The 'default' user cannot be removed"));
                }
                if users.remove(name.as_ref()).is_some() {
                    removed += 1;
                }
            }
            acl.generation.fetch_add(1, Ordering::Release);
            Ok(Frame::Integer(removed))
        }
        "list" if args.len() == 2 => Ok(Frame::Array(
            acl.users
                .read()
                .values()
                .map(|u| Frame::bulk(u.describe()))
                .collect(),
        )),
        "users" if args.len() == 2 => Ok(Frame::Array(
            acl.users
                .read()
                .keys()
                .map(|n| Frame::bulk(n.clone()))
                .collect(),
        )),
        "cat" if args.len() == 2 => Ok(Frame::Array(
            CATEGORIES.iter().map(|c| Frame::bulk(*c)).collect(),
        )),
        "cat" if args.len() == 3 => {
            let category = args::lower(&args[2]);
            if !CATEGORIES.contains(&category.as_str()) {
                return Err(CmdError::msg(format!(
                    "ERR Unknown category '{}'",
                    errors::printable(&args[2], 64)
                )));
            }
            Ok(Frame::Array(
                registry()
                    .specs()
                    .iter()
                    .filter(|s| s.acl_categories.contains(&category.as_str()))
                    .map(|s| Frame::bulk(s.name))
                    .collect(),
            ))
        }
        "help" if args.len() == 2 => Ok(help_frame(&[
            "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CAT [<category>]",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "GETUSER <username>",
            "DELUSER <username> [<username> ...]",
            "LIST",
            "USERS",
            "WHOAMI",
            "HELP",
        ])),
        "whoami" | "setuser" | "getuser" | "deluser" | "list" | "users" | "cat" | "help" => {
            Err(CmdError::msg(errors::wrong_arity(&format!("acl|{sub}"))))
        }
        _ => Err(CmdError::msg(errors::unknown_subcommand("acl", &args[1]))),
    }
}
