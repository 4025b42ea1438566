//! Users, passwords and permissions: Redis' ACL model, reduced to what
//! operators use — users that are on or off, passwords (stored as SHA-256,
//! compared in constant time), command permissions by category (`+@read`,
//! `-@dangerous`, `+@all`) or by name (`+get`, `-flushall`), and key patterns
//! (`~app:*`, `allkeys`).
//!
//! The `default` user stands for `requirepass`: without a password it is
//! `nopass` and every connection starts authenticated as it.
//!
//! Permissions are compiled into one flag per command of the registry when a
//! user changes, so the per-command check is an index and a few glob matches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::args;
use crate::catalog::commands;
use crate::glob;

/// The user `AUTH <password>` and unauthenticated defaults refer to.
pub(crate) const DEFAULT_USER: &str = "default";

/// Most users; ACL SETUSER refuses more (a limit on everything).
pub(crate) const USERS_MAX: usize = 10_000;

/// Categories ACL CAT lists; every `acl_categories` entry of a spec is one of these.
pub(crate) const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "string",
    "bitmap",
    "admin",
    "fast",
    "slow",
    "dangerous",
    "connection",
    "transaction",
];

/// One user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    /// SHA-256 of each password.
    pub password_hashes: Vec<[u8; 32]>,
    /// The command rules as given (`+@read`, `-flushall`, …), for GETUSER / LIST.
    pub command_rules: Vec<String>,
    /// One flag per registry index: may run it.
    pub allowed: Vec<bool>,
    pub all_keys: bool,
    pub key_patterns: Vec<Bytes>,
}

impl User {
    /// A new user as ACL SETUSER creates it: off, no password, no commands, no keys.
    pub(crate) fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            password_hashes: Vec::new(),
            command_rules: Vec::new(),
            allowed: vec![false; commands().len()],
            all_keys: false,
            key_patterns: Vec::new(),
        }
    }

    /// `default` as Redis starts it: on, all commands and keys, `requirepass` or nopass.
    pub(crate) fn default_user(requirepass: Option<&str>) -> User {
        let mut user = User::new(DEFAULT_USER);
        for rule in ["on", "~*", "+@all"] {
            user.apply(rule.as_bytes()).expect("built-in rule");
        }
        user.set_only_password(requirepass);
        user
    }

    pub(crate) fn set_only_password(&mut self, password: Option<&str>) {
        self.password_hashes.clear();
        match password {
            Some(p) => {
                self.nopass = false;
                self.password_hashes.push(hash(p.as_bytes()));
            }
            None => self.nopass = true,
        }
    }

    /// Applies one ACL SETUSER rule.
    pub(crate) fn apply(&mut self, rule: &[u8]) -> Result<(), &'static str> {
        let text = String::from_utf8_lossy(rule);
        let lower = text.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.password_hashes.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.password_hashes.clear();
            }
            "allkeys" => {
                self.all_keys = true;
                self.key_patterns.clear();
            }
            "resetkeys" => {
                self.all_keys = false;
                self.key_patterns.clear();
            }
            "allcommands" => self.command_rule("+@all")?,
            "nocommands" => self.command_rule("-@all")?,
            "reset" => {
                *self = User::new(&self.name);
                self.apply(b"resetpass")?;
            }
            _ => match rule.first() {
                Some(b'>') => {
                    let digest = hash(&rule[1..]);
                    if !self.password_hashes.contains(&digest) {
                        self.password_hashes.push(digest);
                    }
                    self.nopass = false;
                }
                Some(b'<') => {
                    let digest = hash(&rule[1..]);
                    let before = self.password_hashes.len();
                    self.password_hashes.retain(|h| *h != digest);
                    if before == self.password_hashes.len() {
                        return Err("no such password");
                    }
                }
                Some(b'~') => {
                    if rule == b"~*" {
                        self.all_keys = true;
                        self.key_patterns.clear();
                    } else if !self.all_keys {
                        self.key_patterns.push(Bytes::copy_from_slice(&rule[1..]));
                    }
                }
                Some(b'+' | b'-') => self.command_rule(&lower)?,
                _ => return Err("Syntax error"),
            },
        }
        Ok(())
    }

    /// `+@cat`, `-@cat`, `+cmd`, `-cmd`: updates the compiled flags and remembers the rule.
    pub(crate) fn command_rule(&mut self, rule: &str) -> Result<(), &'static str> {
        let allow = rule.starts_with('+');
        let target = &rule[1..];
        if let Some(category) = target.strip_prefix('@') {
            if category != "all" && !CATEGORIES.contains(&category) {
                return Err("Unknown command or category name in ACL");
            }
            let catalog = commands();
            for (index, flag) in self.allowed.iter_mut().enumerate() {
                if category == "all" || catalog.categories(index).contains(&category) {
                    *flag = allow;
                }
            }
        } else {
            let Some(index) = commands().index_of(target.as_bytes()) else {
                return Err("Unknown command or category name in ACL");
            };
            self.allowed[index] = allow;
        }
        if rule == "+@all" || rule == "-@all" {
            self.command_rules.clear();
        }
        self.command_rules.push(rule.to_string());
        Ok(())
    }

    /// True if `password` is one of the user's (constant time per stored hash).
    pub(crate) fn password_matches(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let digest = hash(password);
        let mut matched = subtle::Choice::from(0);
        for stored in &self.password_hashes {
            matched |= stored.ct_eq(&digest);
        }
        matched.into()
    }

    pub(crate) fn key_allowed(&self, key: &[u8]) -> bool {
        self.all_keys
            || self
                .key_patterns
                .iter()
                .any(|p| glob::matches(p, key, false))
    }

    /// The rules that rebuild this user, as ACL LIST prints them.
    pub(crate) fn describe(&self) -> String {
        let mut parts = vec![
            format!("user {}", self.name),
            if self.enabled { "on" } else { "off" }.to_string(),
        ];
        if self.nopass {
            parts.push("nopass".into());
        }
        for h in &self.password_hashes {
            parts.push(format!("#{}", hex(h)));
        }
        if self.all_keys {
            parts.push("~*".into());
        } else {
            parts.extend(
                self.key_patterns
                    .iter()
                    .map(|p| format!("~{}", String::from_utf8_lossy(p))),
            );
        }
        parts.push("&*".into());
        if self.command_rules.is_empty() {
            parts.push("-@all".into());
        } else {
            parts.extend(self.command_rules.iter().cloned());
        }
        parts.join(" ")
    }
}

pub(crate) fn hash(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which user a connection acts as, with the compiled user cached until any user changes.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user: String,
    pub(crate) cached: Option<(u64, Arc<User>)>,
}

impl Session {
    /// Acting as `default`.
    pub(crate) fn new() -> Session {
        Session::as_user(DEFAULT_USER)
    }

    pub(crate) fn as_user(name: &str) -> Session {
        Session {
            user: name.to_string(),
            cached: None,
        }
    }
}

/// Why a command is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    Command,
    Key,
    /// The user was deleted or disabled since the connection authenticated.
    User,
}

/// Every user.
#[derive(Debug)]
pub(crate) struct Acl {
    pub(crate) users: RwLock<BTreeMap<String, Arc<User>>>,
    /// Bumped on every change; sessions re-read their user when it moved.
    pub(crate) generation: AtomicU64,
}

impl Acl {
    /// Only `default`, guarded by `requirepass`.
    pub(crate) fn new(requirepass: Option<&str>) -> Acl {
        let mut users = BTreeMap::new();
        users.insert(
            DEFAULT_USER.to_string(),
            Arc::new(User::default_user(requirepass)),
        );
        Acl {
            users: RwLock::new(users),
            generation: AtomicU64::new(1),
        }
    }

    /// True if a new connection is authenticated as `default` without AUTH.
    pub(crate) fn default_is_open(&self) -> bool {
        self.users
            .read()
            .get(DEFAULT_USER)
            .is_some_and(|u| u.enabled && u.nopass)
    }

    /// CONFIG SET requirepass.
    pub(crate) fn set_default_password(&self, password: Option<&str>) {
        let mut users = self.users.write();
        let mut user = users
            .get(DEFAULT_USER)
            .map(|u| (**u).clone())
            .unwrap_or_else(|| User::default_user(None));
        user.set_only_password(password);
        users.insert(DEFAULT_USER.to_string(), Arc::new(user));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// True if a user called `name` exists (CLIENT KILL USER refuses unknown names).
    pub(crate) fn has_user(&self, name: &str) -> bool {
        self.users.read().contains_key(name)
    }

    /// Checks `password` for `user`; on success the session acts as that user.
    pub(crate) fn authenticate(&self, session: &mut Session, user: &str, password: &[u8]) -> bool {
        let users = self.users.read();
        let ok = users
            .get(user)
            .is_some_and(|u| u.enabled && u.password_matches(password));
        if ok {
            *session = Session::as_user(user);
        }
        ok
    }

    /// May the session's user run command `index` (`args`) on `keys`, the keys its spec
    /// names?
    pub(crate) fn check<'k>(
        &self,
        session: &mut Session,
        index: usize,
        args: &[Bytes],
        keys: impl Iterator<Item = &'k Bytes>,
    ) -> Result<(), Denied> {
        let Some(user) = self.session_user(session) else {
            return Err(Denied::User);
        };
        if !user.enabled {
            return Err(Denied::User);
        }
        let harmless = commands().name(index) == "acl" && harmless_acl_subcommand(args);
        if !user.allowed[index] && !harmless {
            return Err(Denied::Command);
        }
        if user.all_keys {
            return Ok(());
        }
        for key in keys {
            if !user.key_allowed(key) {
                return Err(Denied::Key);
            }
        }
        Ok(())
    }
}

impl Acl {
    /// The user a session acts as, from its cache while no ACL change happened since.
    pub(crate) fn session_user(&self, session: &mut Session) -> Option<Arc<User>> {
        let generation = self.generation.load(Ordering::Acquire);
        match &session.cached {
            Some((seen, user)) if *seen == generation => Some(user.clone()),
            _ => {
                let user = self.users.read().get(&session.user).cloned()?;
                session.cached = Some((generation, user.clone()));
                Some(user)
            }
        }
    }

    /// True if the session's user may access `key` (its `~pattern`s): for keys a command
    /// reaches that its spec does not name, such as RANGE's results.
    pub(crate) fn key_allowed(&self, session: &mut Session, key: &[u8]) -> bool {
        self.session_user(session)
            .is_some_and(|user| user.enabled && (user.all_keys || user.key_allowed(key)))
    }
}

/// The error text for a refused command (Redis 7's wording).
pub(crate) fn denied_text(denied: Denied, user: &str, command: &str) -> String {
    match denied {
        Denied::Command => {
            format!("NOPERM User {user} has no permissions to run the '{command}' command")
        }
        Denied::Key => "NOPERM No permissions to access a key".to_string(),
        Denied::User => format!("NOPERM User {user} is disabled or was deleted; AUTH again"),
    }
}

/// Redis' refusal for a remote client in protected mode, word for word (clients and operators
/// search for this text).
pub(crate) const PROTECTED_MODE_DENIED: &str = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// Protected mode's decision for one new connection: refuse it if protected mode is on, the
/// `default` user needs no password, and the peer is not on the loopback interface (as Redis
/// 7: with a loopback-only `bind` no remote peer gets this far anyway).
/// `loopback_is_remote` is the test seam of `Config::protected_mode_loopback_is_remote`.
pub(crate) fn protected_mode_refuses(
    protected_mode: bool,
    default_is_open: bool,
    peer: std::net::IpAddr,
    loopback_is_remote: bool,
) -> bool {
    let loopback = match peer {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    protected_mode && default_is_open && (!loopback || loopback_is_remote)
}

/// ACL subcommands any authenticated user may run (ACL itself is @admin for the rest).
pub(crate) fn harmless_acl_subcommand(args: &[Bytes]) -> bool {
    args.len() >= 2
        && ["whoami", "cat", "help"]
            .iter()
            .any(|s| args::is(&args[1], s))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn user(rules: &[&str]) -> User {
        crate::cmd::install_catalog();
        let mut u = User::new("u");
        for r in rules {
            u.apply(r.as_bytes()).unwrap();
        }
        u
    }

    pub(crate) fn allowed(u: &User, name: &str) -> bool {
        u.allowed[commands().index_of(name.as_bytes()).unwrap()]
    }

    #[test]
    pub(crate) fn categories_compile_in_order() {
        let u = user(&["on", "+@all", "-@dangerous"]);
        assert!(allowed(&u, "get"));
        assert!(!allowed(&u, "flushall"));
        let u = user(&["on", "+@read"]);
        assert!(allowed(&u, "get"));
        assert!(!allowed(&u, "set"));
        let u = user(&["+@read", "+set"]);
        assert!(allowed(&u, "set"));
        assert!(!allowed(&u, "del"));
    }

    #[test]
    pub(crate) fn passwords_are_hashed_and_checked() {
        let u = user(&["on", ">secret"]);
        assert!(u.password_matches(b"secret"));
        assert!(!u.password_matches(b"secreT"));
        assert!(!u.describe().contains("secret"));
    }

    #[test]
    pub(crate) fn key_patterns_cover_every_key_argument() {
        let u = user(&["on", "+@all", "~app:*"]);
        assert!(u.key_allowed(b"app:1"));
        assert!(!u.key_allowed(b"other:1"));
        let (_, mset) = crate::cmd::registry().lookup(b"mset").unwrap();
        let args: Vec<Bytes> = ["mset", "app:1", "v", "other:1", "v"]
            .iter()
            .map(|s| Bytes::from(s.to_string()))
            .collect();
        let keys: Vec<&[u8]> = mset.keys(&args).map(|k| &k[..]).collect();
        assert_eq!(keys, vec![&b"app:1"[..], &b"other:1"[..]]);
    }

    #[test]
    pub(crate) fn protected_mode_refuses_only_remote_peers_without_password() {
        let remote: std::net::IpAddr = "10.200.0.2".parse().unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(protected_mode_refuses(true, true, remote, false));
        assert!(!protected_mode_refuses(true, true, local, false));
        assert!(!protected_mode_refuses(true, true, mapped, false));
        assert!(
            !protected_mode_refuses(true, false, remote, false),
            "password set"
        );
        assert!(
            !protected_mode_refuses(false, true, remote, false),
            "protected mode off"
        );
        assert!(protected_mode_refuses(true, true, local, true), "test seam");
    }

    #[test]
    pub(crate) fn unknown_rule_is_refused() {
        crate::cmd::install_catalog();
        let mut u = User::new("u");
        assert!(u.apply(b"+@nosuch").is_err());
        assert!(u.apply(b"bogus").is_err());
    }
}
