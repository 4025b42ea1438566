//! The `ringkv` binary: command line and TOML configuration, logging, and
//! signal handling around [`ringkv_server::run`].
//!
//! With no arguments it serves 127.0.0.1:6379 with data in `./data`. The settings come from
//! the server's settings table (`ringkv_server::settings`): each is a TOML key of the file
//! (`--config FILE`), an environment variable and a flag, and a flag beats the file.

mod backup;
mod cluster_tool;

// The global allocator: jemalloc by default (`alloc-jemalloc`), mimalloc or the system's by
// feature (Cargo.toml says what was measured). glibc's malloc took about a quarter of the
// server's CPU on SET at pipeline 16 (malloc, free, malloc_consolidate); jemalloc and
// mimalloc each gave writes 1.1-1.7x, jemalloc with the smaller RSS (docs/BENCHMARKS.md,
// issue 12). jemalloc wins if both features are on.
#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};
use ringkv_server::settings::{self, Setting};
use ringkv_server::Config;

/// The command line besides the settings: the config file, `--no-admin`, and the
/// backup/restore tools. Every setting of the server's table is added to it as a flag with an
/// environment variable by [`command`]. Flags override the config file, which overrides the
/// defaults.
#[derive(Debug, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A Redis-compatible key-value database on an LSM engine",
    args_conflicts_with_subcommands = true,
    // A flag given twice takes the last value, as Redis does (test helpers add defaults first).
    args_override_self = true
)]
struct Cli {
    /// Instead of serving: back up a running server, restore a backup, or ask a cluster node.
    #[command(subcommand)]
    tool: Option<backup::Tool>,
    /// TOML config file (keys as the long flags, e.g. `port = 6380`, `appendfsync = "always"`).
    #[arg(long, value_name = "FILE", env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// No admin HTTP port (same as `--admin no`).
    #[arg(long, conflicts_with = "admin")]
    no_admin: bool,
}

/// A string clap keeps for the life of the process (its builder takes `&'static str`); the
/// command is built once.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// The command line: [`Cli`] plus `--<name>` / `RINGKV_<NAME>` for every setting. Values are
/// taken as text and parsed by the setting itself in [`load`], so a flag, a variable and the
/// file are read alike and refused with the same message.
fn command() -> clap::Command {
    let mut command = Cli::command();
    for setting in settings::all() {
        let mut help = setting.help();
        if let Some(default) = setting.default_text().filter(|_| !setting.secret) {
            help.push_str(&format!(" [default: {default}]"));
        }
        command = command.arg(
            Arg::new(setting.name)
                .long(setting.name)
                .env(leak(setting.env_var()))
                .value_name(leak(setting.name.to_uppercase().replace('-', "_")))
                .help(help)
                .hide_env_values(setting.secret)
                .allow_negative_numbers(true)
                .action(ArgAction::Set),
        );
    }
    command
}

/// Parses the config file, accepting `proto_max_bulk_len` as well as `proto-max-bulk-len`
/// (both spellings are documented); a key written both ways is an error, not a silent pick.
/// Returns the keys kebab-case.
fn parse_file(text: &str) -> anyhow::Result<toml::Table> {
    let table: toml::Table = text.parse()?;
    let mut kebab = toml::Table::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if kebab.insert(name.clone(), value).is_some() {
            anyhow::bail!("setting {name} is given twice (with '-' and with '_')");
        }
    }
    if let Some(unknown) = kebab.keys().find(|key| settings::find(key).is_none()) {
        anyhow::bail!("unknown setting `{unknown}`");
    }
    Ok(kebab)
}

/// The tracing filter for a `loglevel` value: Redis' names (`nothing` is off) or tracing's.
fn filter_for(level: &str) -> anyhow::Result<&'static str> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "nothing" | "off" => "off",
        "warning" | "warn" => "warn",
        // openraft narrates every vote and heartbeat at info: its warnings are what an
        // operator needs (membership changes are logged by ringkv itself).
        "notice" | "info" => "info,openraft=warn",
        "verbose" | "debug" => "debug,openraft=info",
        "error" => "error",
        "trace" => "trace",
        _ => anyhow::bail!(
            "invalid setting loglevel: '{level}' (debug, verbose, notice, warning, nothing, \
             or error, warn, info, trace)"
        ),
    })
}

/// The value of `setting` and where it came from: a flag, its variable (flags win, clap
/// decides), else the file.
fn value_of(
    setting: &Setting,
    matches: &ArgMatches,
    file: &mut toml::Table,
    path: Option<&Path>,
) -> anyhow::Result<Option<(String, String)>> {
    if let Some(text) = matches.get_one::<String>(setting.name) {
        let source = match matches.value_source(setting.name) {
            Some(ValueSource::EnvVariable) => {
                format!("{}, the variable of --{}", setting.env_var(), setting.name)
            }
            _ => format!("--{}", setting.name),
        };
        return Ok(Some((text.clone(), source)));
    }
    let Some(value) = file.remove(setting.name) else {
        return Ok(None);
    };
    let path = path.expect("a file was read").display();
    let text = setting
        .text_of_toml(&value)
        .map_err(|why| anyhow::anyhow!("invalid setting {}: {why} (in {path})", setting.name))?;
    Ok(Some((text, format!("the config file {path}"))))
}

/// The server's settings: defaults, then the file, then variables and flags.
fn load(matches: &ArgMatches, cli: &Cli) -> anyhow::Result<Config> {
    let mut file = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            parse_file(&text).with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut config = Config {
        config_file: cli.config.clone(),
        ..Config::default()
    };
    for setting in settings::all() {
        let Some((text, source)) = value_of(setting, matches, &mut file, cli.config.as_deref())?
        else {
            continue;
        };
        setting.apply(&mut config, &text).map_err(|why| {
            let shown = if setting.secret { "(redacted)" } else { &text };
            anyhow::anyhow!(
                "invalid setting {}: '{shown}': {why} (from {source})",
                setting.name
            )
        })?;
    }
    if cli.no_admin || !config.admin {
        config.admin = false;
        config.admin_port = None;
    }
    config.check().map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let matches = command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Some(tool) = cli.tool.take() {
        return backup::run(tool);
    }
    let config = load(&matches, &cli)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(filter_for(&config.loglevel).expect("checked by load"))
    });
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    tracing::info!(version = ringkv_server::RINGKV_VERSION, dir = %config.dir.display(), "starting ringkv");
    #[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
    ringkv_server::set_allocator("mimalloc", || {
        // SAFETY: mi_collect takes no pointers and touches only mimalloc's own state, which it
        // guards itself; mimalloc documents it as callable from any thread at any time (it
        // collects the calling thread's heap and, forced, purges free memory to the OS).
        // Exercised by tests/hostile.rs (RSS after large frees) on a mimalloc build.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
    #[cfg(feature = "alloc-jemalloc")]
    ringkv_server::set_allocator("jemalloc", || {
        // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena gives its unused dirty pages back.
        // jemalloc otherwise returns them only by decay, which advances on allocation
        // activity (no background threads here): an idle server kept 180 MiB of freed
        // values (tests/hostile.rs).
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: a NUL-terminated name, no old or new value (null pointers, length 0), as
        // jemalloc documents for this write-only control; callable from any thread.
        // Exercised by tests/hostile.rs (RSS after large frees) on a jemalloc build.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ringkv")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // The handlers go in before `bind`, which logs "Ready to accept connections": a
        // SIGTERM sent once that line is out must find them. They used to be installed by the
        // task below, on whichever worker ran it first, and a SIGTERM sent right after the
        // first reply (sigterm_shuts_down_cleanly) could beat it: the process then died of the
        // signal's default action or, inside tokio's own install window, the signal was taken
        // and dropped and the server ran on. A slower build (debug, an unoptimised allocator)
        // only widened the window. A signal during start-up (recovery) is now acted on once
        // the server is bound: it shuts down cleanly at once.
        let signals = Signals::install().context("installing the SIGTERM/SIGINT handlers")?;
        let bound = ringkv_server::bind(config).await?;
        let handle = bound.shutdown_handle();
        tokio::spawn(async move {
            signals.recv().await;
            tracing::info!("received a termination signal, shutting down");
            handle.shutdown();
        });
        bound.serve().await?;
        anyhow::Ok(())
    })
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment [`Signals::install`] returns: a signal
/// that comes before [`Signals::recv`] is waited on is kept, not lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the first termination signal.
    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
