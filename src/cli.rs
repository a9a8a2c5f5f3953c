//! The command line: `master-process [OPTIONS] -- <command> [args...]`, and the control
//! commands `master-process reload | status | stop | signal | upgrade | list`.
//!
//! The master's options are not written here: each is declared once in
//! `config::options`, and this module turns that table into clap arguments, with
//! each option's environment twins and default in its help. The environment applies first,
//! then the flags; the library reads the same table, so the CLI and `init()` accept exactly
//! the same things.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches, Subcommand};

use crate::config::options::{self, ALL, Declared, Meta, Takes};
use crate::config::values::{duration, duration_within};
use crate::config::{Config, ControlSocket};
use crate::error::{Error, Result};

/// The id of the trailing command argument.
const COMMAND: &str = "command";

/// The command-line interface, built from the option table.
pub fn command() -> Command {
    let mut cmd = Command::new("master-process")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Reload server applications with no downtime.")
        .long_about(
            "Reload server applications with no downtime.\n\n\
             The master binds the listening sockets and runs the command as worker processes \
             that get them: inherited (systemd's LISTEN_FDS protocol: fd 3, 4, ...), or, for an \
             app that binds its port itself, in place of its own socket (adoption). SIGHUP \
             starts new workers and retires each old one once its replacement is ready; a broken \
             release never replaces a working one. SIGTERM or SIGINT stops everything \
             gracefully.",
        )
        .max_term_width(100)
        .args_override_self(true)
        .args_conflicts_with_subcommands(true)
        .override_usage(
            "master-process [OPTIONS] -- <COMMAND>...\n       \
             master-process <reload|status|stop|signal|upgrade|events|list> [OPTIONS]\n       \
             master-process <completions SHELL|man>",
        )
        .after_help(
            "Exit codes: 0 clean stop, 1 fatal error, 2 usage error, the worker's code with \
             --on-crash exit.",
        );
    for opt in ALL {
        cmd = cmd.arg(arg(opt.meta()));
    }
    cmd = cmd.arg(
        Arg::new(COMMAND)
            .last(true)
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(OsString))
            .value_name("COMMAND")
            .help("The worker command and its arguments, after `--`"),
    );
    ControlCommand::augment_subcommands(cmd)
}

/// One option's clap argument, with its default and environment twins in the help.
fn arg(meta: &Meta) -> Arg {
    let mut help = meta.help.to_string();
    if let Some(d) = meta.default_help.or(meta.default) {
        help.push_str(&format!(" [default: {d}]"));
    }
    if !meta.env.is_empty() {
        help.push_str(&format!(" [env: {}]", meta.env.join(", ")));
    }
    let arg = Arg::new(meta.long)
        .long(meta.long)
        .help(help)
        .help_heading(meta.heading);
    let arg = match meta.short {
        Some(c) => arg.short(c),
        None => arg,
    };
    match meta.takes {
        Takes::Value(name) => arg.value_name(name).action(ArgAction::Set),
        Takes::List(name) => arg
            .value_name(name)
            .action(ArgAction::Append)
            .value_delimiter(','),
        Takes::Switch(_) => arg.action(ArgAction::SetTrue),
    }
}

/// The configuration the command line asks for: the defaults, the environment over them,
/// the flags over both.
///
/// # Errors
/// A value is invalid or out of range, or nothing to listen on, or no command.
pub fn config(matches: &ArgMatches) -> Result<Config> {
    let mut config = Config::defaults();
    config.apply_env()?;
    apply_flags(&mut config, matches, ALL)?;
    config.command = matches
        .get_many::<OsString>(COMMAND)
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    config.check()?;
    Ok(config)
}

/// Applies the flags of `opts` that were given on the command line.
fn apply_flags(config: &mut Config, matches: &ArgMatches, opts: &[&dyn Declared]) -> Result<()> {
    for opt in opts {
        let meta = opt.meta();
        let flag = format!("--{}", meta.long);
        match meta.takes {
            Takes::Switch(text) if matches.get_flag(meta.long) => {
                config.apply(*opt, &flag, text)?
            }
            Takes::Switch(_) => {}
            _ if matches.value_source(meta.long) != Some(ValueSource::CommandLine) => {}
            Takes::Value(_) => {
                if let Some(v) = matches.get_one::<String>(meta.long) {
                    config.apply(*opt, &flag, v)?;
                }
            }
            Takes::List(_) => {
                let all: Vec<&str> = matches
                    .get_many::<String>(meta.long)
                    .map(|v| v.map(String::as_str).collect())
                    .unwrap_or_default();
                config.apply(*opt, &flag, &all.join(","))?;
            }
        }
    }
    Ok(())
}

// `master-process reload | status | stop | signal | upgrade | events | list`: control a
// running master; `completions` and `man` describe the tool. (A plain comment: a doc comment
// here would become the tool's own description.)
#[derive(Debug, clap::Subcommand)]
enum ControlCommand {
    /// Reload: new workers, each old one retired once its replacement is ready
    Reload {
        /// Wait until the reload has ended; print its outcome (new pids, or why it failed
        /// and what still serves); exit 0 if it succeeded, 1 if not
        #[arg(long)]
        wait: bool,
        /// The outcome as one JSON object
        #[arg(long)]
        json: bool,
        /// Give up waiting after this long (exit 1)
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The master, its listeners, its last reload and each worker (pid, generation, state,
    /// uptime, restarts, RSS, CPU%)
    Status {
        /// Stable JSON for scripts
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// A live view, redrawn every second; q or Ctrl-C quits
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop the master gracefully (as SIGTERM)
    Stop {
        /// Wait until every worker is gone
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Upgrade the master in place: re-execute its binary as it now is on disk (same pid,
    /// same sockets, the workers adopted), then reload
    Upgrade {
        /// Wait until the reload after the upgrade has ended; print its outcome
        #[arg(long)]
        wait: bool,
        /// The outcome as one JSON object
        #[arg(long)]
        json: bool,
        /// Give up waiting after this long (exit 1)
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Send a signal to every worker (HUP, USR1, USR2, TERM...)
    Signal {
        /// The signal: a name (USR1, SIGUSR1) or a number
        signal: String,
        #[command(flatten)]
        target: Target,
    },
    /// Every event as it happens (reloads, workers started, ready, stopping, exited), one
    /// JSON object per line, until the master goes away
    Events {
        #[command(flatten)]
        target: Target,
    },
    /// The running masters of this user (root: of every user): name, pid, control socket
    List {
        /// Stable JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Shell completions on stdout, e.g. `master-process completions bash >
    /// /etc/bash_completion.d/master-process`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `master-process man | man -l -`
    Man,
}

/// Which master a control command is for.
#[derive(Debug, clap::Args)]
struct Target {
    /// The master's control socket [env: MASTER_PROCESS_CONTROL]
    #[arg(long, value_name = "PATH")]
    control: Option<String>,
    /// The master's name (--name when it was started) [env: MASTER_PROCESS_NAME]; not
    /// needed when only one master runs
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

impl Target {
    /// Where the master's control socket is, from the flags, else the environment.
    fn socket(&self) -> Result<std::path::PathBuf> {
        let mut config = Config::defaults();
        for (opt, flag, value) in [
            (
                &options::CONTROL_SOCKET as &dyn Declared,
                "--control",
                &self.control,
            ),
            (&options::NAME, "--name", &self.name),
        ] {
            let from_env = opt
                .meta()
                .env
                .iter()
                .find_map(|n| crate::env::var(n).map(|v| (*n, v)));
            match (value, from_env) {
                (Some(v), _) => config.apply(opt, flag, v)?,
                (None, Some((name, v))) => config.apply(opt, name, &v)?,
                (None, None) => {}
            }
        }
        let name = config.name.clone().or_else(crate::config::service_name);
        match config.control {
            ControlSocket::Off => Err(Error::invalid(
                "--control",
                "off",
                "a control command needs the master's control socket",
            )),
            ControlSocket::At(path) => Ok(path),
            ControlSocket::Default => crate::control::paths::find(name.as_deref()),
        }
    }
}

/// A `--timeout` of a control command: above 0, at most a day.
fn wait_timeout(value: Option<String>) -> Result<Option<Duration>> {
    value
        .map(|v| {
            duration(&v)
                .and_then(|d| {
                    duration_within(&d, Duration::from_millis(1), crate::config::values::DAY)
                        .map(|()| d)
                })
                .map_err(|why| Error::invalid("--timeout", v, why))
        })
        .transpose()
}

/// Runs a control command; returns the exit code.
fn control(subcommand: ControlCommand) -> Result<u8> {
    use crate::control::{Request, run_command};
    let answer = Some(Duration::from_secs(10));
    let (target, request, timeout, json) = match subcommand {
        ControlCommand::Reload {
            wait,
            json,
            timeout,
            target,
        } => (
            target,
            Request::Reload { wait },
            wait_timeout(timeout)?,
            json,
        ),
        ControlCommand::Upgrade {
            wait,
            json,
            timeout,
            target,
        } => (
            target,
            Request::Upgrade { wait },
            wait_timeout(timeout)?,
            json,
        ),
        ControlCommand::Events { target } => (target, Request::Events, None, true),
        ControlCommand::Status {
            watch: true,
            target,
            ..
        } => return Ok(crate::control::watch(&target.socket()?)),
        ControlCommand::Status { json, target, .. } => (target, Request::Status, answer, json),
        ControlCommand::Stop { wait, target } => (target, Request::Stop { wait }, None, false),
        ControlCommand::Signal { signal, target } => {
            let sig = signal
                .parse()
                .map_err(|why: String| Error::invalid("SIGNAL", &signal, why))?;
            (target, Request::Signal(sig), answer, false)
        }
        ControlCommand::List { json } => return Ok(crate::control::paths::print_list(json)),
        ControlCommand::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut command(), "master-process", &mut text);
            return print_bytes(&text, "the completions");
        }
        ControlCommand::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(command())
                .render(&mut text)
                .map_err(|e| Error::io("cannot write the manual page", e))?;
            return print_bytes(&text, "the manual page");
        }
    };
    Ok(run_command(&target.socket()?, request, timeout, json))
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8], what: &str) -> Result<u8> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::io(format!("cannot write {what}"), e)),
    }
}

/// The binary's `main`.
pub fn main() -> ExitCode {
    crate::spawn::exec_if_requested();
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first line says what is wrong; the rest is a usage dump.
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            let line = format!("{first} (see master-process --help)");
            crate::upgrade::abandon_if_resuming(&line);
            eprintln!("master-process: {line}");
            return ExitCode::from(2);
        }
    };
    if matches.subcommand_name().is_some() {
        let result = ControlCommand::from_arg_matches(&matches)
            .map_err(|e| Error::invalid("command", "", e.to_string()))
            .and_then(control);
        return match result {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                e.report();
                ExitCode::from(e.exit_code())
            }
        };
    }
    let config = config(&matches).inspect_err(|e| {
        // A new image that rejects its configuration goes back to the previous one.
        crate::upgrade::abandon_if_resuming(&e.to_string());
    });
    let result = config.and_then(|config| {
        crate::upgrade::preflight_if_requested(&config);
        crate::logging::init(config.verbose, config.log_format);
        crate::master::run(config)
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests;
