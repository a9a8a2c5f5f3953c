//! The command line: `master-process [OPTIONS] -- <command> [args...]`.
//!
//! Every option has an environment twin; the reference's names (`WORKERS`,
//! `WORKER_THROTTLE`, `MAX_KILL_TIMEOUT`, `PORT`) work unchanged, ours start with
//! `MASTER_PROCESS_`. Values are checked by the same parsers the library uses
//! (`config::Options`), so the CLI and `init()` accept exactly the same things.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, Options};
use crate::error::{Error, Result};
use crate::readiness::ReadyMode;

const SOCKETS: &str = "Sockets";
const WORKERS: &str = "Workers";
const LOGGING: &str = "Logging";
const RELOADS: &str = "Reloads";
const CONTROL: &str = "Control";
const MONITOR: &str = "Resource monitor";

/// Reload server applications with no downtime.
///
/// The master binds the listening sockets and runs the command as worker processes that
/// inherit them (systemd's LISTEN_FDS protocol: fd 3, 4, ...). SIGHUP starts new workers and
/// retires each old one once its replacement is ready; a broken release never replaces a
/// working one. SIGTERM or SIGINT stops everything gracefully.
#[derive(Debug, Parser)]
#[command(
    name = "master-process",
    version,
    max_term_width = 100,
    args_override_self = true,
    args_conflicts_with_subcommands = true,
    override_usage = "master-process [OPTIONS] -- <COMMAND>...\n       master-process <reload|status|stop|signal> [OPTIONS]"
)]
#[command(
    after_help = "Exit codes: 0 clean stop, 1 fatal error, 2 usage error, \
                        the worker's code with --on-crash exit."
)]
pub struct Cli {
    /// Control a running master instead of starting one.
    #[command(subcommand)]
    control_command: Option<ControlCommand>,

    /// Socket to listen on: PORT, ADDR:PORT, [V6ADDR]:PORT or a unix socket path, optionally
    /// named NAME=SPEC; repeatable [default: $PORT]
    #[arg(long, short = 'l', value_name = "SPEC", env = "MASTER_PROCESS_LISTEN")]
    #[arg(value_delimiter = ',', help_heading = SOCKETS)]
    listen: Vec<String>,

    /// The one listener when --listen is not given: a port, or a unix socket path starting
    /// with / (the reference's PORT)
    #[arg(long, value_name = "PORT", env = "PORT", help_heading = SOCKETS)]
    port: Option<String>,

    /// Permission bits of unix socket files, set when they are created
    #[arg(
        long,
        value_name = "MODE",
        env = "MASTER_PROCESS_SOCKET_MODE",
        default_value = "0664"
    )]
    #[arg(help_heading = SOCKETS)]
    socket_mode: String,

    /// Number of workers: a number, MAX (one per core) or AUTO (cores - 1, at least 1)
    #[arg(
        long,
        short = 'w',
        value_name = "N",
        env = "WORKERS",
        default_value = "1"
    )]
    #[arg(help_heading = WORKERS)]
    workers: String,

    /// How a new worker is known to be ready: `listening` (seen waiting on every listening
    /// socket; `listening:any`: on one), `notify` (it sends READY=1 on NOTIFY_SOCKET) or
    /// `delay:DUR` (it stayed alive that long)
    #[arg(
        long,
        value_name = "MODE",
        env = "MASTER_PROCESS_READY",
        default_value = "listening"
    )]
    #[arg(help_heading = WORKERS)]
    ready: String,

    /// How long a new worker may take to become ready before the reload fails
    #[arg(
        long,
        value_name = "DUR",
        env = "MASTER_PROCESS_READY_TIMEOUT",
        default_value = "60s"
    )]
    #[arg(help_heading = WORKERS)]
    ready_timeout: String,

    /// How long a worker may drain after SIGTERM before its process group gets SIGKILL
    /// (a bare number is milliseconds)
    #[arg(
        long,
        value_name = "DUR",
        env = "MAX_KILL_TIMEOUT",
        default_value = "5s"
    )]
    #[arg(help_heading = WORKERS)]
    kill_timeout: String,

    /// A worker that crashes sooner than this after its start is restarted only once this
    /// much time has passed since its start (a bare number is milliseconds)
    #[arg(
        long,
        value_name = "DUR",
        env = "WORKER_THROTTLE",
        default_value = "1s"
    )]
    #[arg(help_heading = WORKERS)]
    throttle: String,

    /// What a worker crash does: `restart` it, or `exit` (stop the others and exit with the
    /// worker's code, for a service manager that restarts)
    #[arg(
        long,
        value_name = "ACTION",
        env = "MASTER_PROCESS_ON_CRASH",
        default_value = "restart"
    )]
    #[arg(help_heading = WORKERS)]
    on_crash: String,

    /// What a reload to workers built with another master-process version does: `log`, or
    /// `exit` with code 1 once they are ready (for a service manager that restarts)
    #[arg(
        long,
        value_name = "ACTION",
        env = "MASTER_PROCESS_ON_VERSION_CHANGE",
        default_value = "log"
    )]
    #[arg(help_heading = WORKERS)]
    on_version_change: String,

    /// The longest restart delay of a crash-looping worker: the delay doubles from
    /// WORKER_THROTTLE at each crash in a row, up to this; a worker that stays up this long
    /// resets the count
    #[arg(
        long,
        value_name = "DUR",
        env = "MASTER_PROCESS_MAX_BACKOFF",
        default_value = "30s"
    )]
    #[arg(help_heading = WORKERS)]
    max_backoff: String,

    /// How a reload replaces the workers: `parallel` (every slot at once, the reference) or
    /// `rolling` (--max-surge at a time)
    #[arg(
        long,
        value_name = "HOW",
        env = "MASTER_PROCESS_RELOAD",
        default_value = "parallel"
    )]
    #[arg(help_heading = RELOADS)]
    reload: String,

    /// With --reload rolling: new workers, plus the old ones they replace while these drain,
    /// at most at once
    #[arg(
        long,
        value_name = "N",
        env = "MASTER_PROCESS_MAX_SURGE",
        default_value = "1"
    )]
    #[arg(help_heading = RELOADS)]
    max_surge: String,

    /// The first new worker of a reload must stay ready this long, its old worker still
    /// serving, before the others follow; if it fails, the reload stops there
    #[arg(long, value_name = "DUR", env = "MASTER_PROCESS_CANARY")]
    #[arg(help_heading = RELOADS)]
    canary: Option<String>,

    /// The control socket (`master-process reload|status|stop|signal`), or `off`
    /// [default: $XDG_RUNTIME_DIR/master-process.sock, /run/master-process.sock for root]
    #[arg(long, value_name = "PATH", env = "MASTER_PROCESS_CONTROL")]
    #[arg(help_heading = CONTROL)]
    control: Option<String>,

    /// Replace a worker (with its descendants) using more resident memory than this many MiB
    /// for --memory-failures samples in a row [default: 1200]
    #[arg(long, value_name = "MB", env = "MAX_MEMORY_ALLOWED_MB", help_heading = MONITOR)]
    max_memory: Option<String>,

    /// Replace a worker using more CPU than this percentage of one core for --cpu-failures
    /// samples in a row [default: 95]
    #[arg(long, value_name = "PCT", env = "MAX_CPU_ALLOWED", help_heading = MONITOR)]
    max_cpu: Option<String>,

    /// Samples over the memory limit in a row that replace a worker [default: 10]
    #[arg(long, value_name = "N", env = "MEM_MONITOR_FAILURES", help_heading = MONITOR)]
    memory_failures: Option<String>,

    /// Samples over the CPU limit in a row that replace a worker (also CPU_MONITOR_FAILURE)
    /// [default: 10]
    #[arg(long, value_name = "N", env = "CPU_MONITOR_FAILURES", help_heading = MONITOR)]
    cpu_failures: Option<String>,

    /// Time between two samples of each worker's memory and CPU [default: 2s]
    #[arg(long, value_name = "DUR", env = "MASTER_PROCESS_MONITOR_INTERVAL", help_heading = MONITOR)]
    monitor_interval: Option<String>,

    /// Time after a worker starts before it is sampled (JIT warm-up) [default: 30s]
    #[arg(long, value_name = "DUR", env = "MASTER_PROCESS_MONITOR_GRACE", help_heading = MONITOR)]
    monitor_grace: Option<String>,

    /// No resource monitor (also MASTER_PROCESS_MONITOR=off)
    #[arg(long, help_heading = MONITOR)]
    no_monitor: bool,

    /// Do not adopt the orphaned descendants of workers (by default the master is their
    /// subreaper: it reaps them, and stops them when it stops; always so as PID 1)
    #[arg(long, help_heading = WORKERS)]
    no_subreaper: bool,

    /// What a reload does when the master's own executable changed on disk: `log` it,
    /// `upgrade` the master in place first, or `exit` with code 1 (the reference's behaviour)
    #[arg(
        long,
        value_name = "ACTION",
        env = "MASTER_PROCESS_ON_MASTER_CHANGE",
        default_value = "log"
    )]
    #[arg(help_heading = RELOADS)]
    on_master_change: String,

    /// Debug lines on stderr (also DEBUG=master-process)
    #[arg(long, short = 'v', help_heading = LOGGING)]
    verbose: bool,

    /// The worker command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

impl Cli {
    /// Checks every value and resolves the configuration.
    pub fn into_config(self) -> Result<Config> {
        let options = Options {
            listen: self.listen,
            port: self.port,
            socket_mode: Some(self.socket_mode),
            workers: Some(self.workers),
            ready: Some(self.ready),
            ready_timeout: Some(self.ready_timeout),
            kill_timeout: Some(self.kill_timeout),
            throttle: Some(self.throttle),
            on_crash: Some(self.on_crash),
            on_version_change: Some(self.on_version_change),
            max_backoff: Some(self.max_backoff),
            reload: Some(self.reload),
            max_surge: Some(self.max_surge),
            canary: self.canary,
            control: self.control,
            monitor: self.no_monitor.then(|| "off".to_string()),
            max_memory: self.max_memory,
            max_cpu: self.max_cpu,
            memory_failures: self.memory_failures,
            cpu_failures: self.cpu_failures,
            monitor_interval: self.monitor_interval,
            monitor_grace: self.monitor_grace,
            subreaper: self.no_subreaper.then(|| "off".to_string()),
            on_master_change: Some(self.on_master_change),
        };
        // Flags (and the environment twins clap reads) win; the environment gives the rest
        // (the variables without a flag: MASTER_PROCESS_MONITOR, MASTER_PROCESS_SUBREAPER,
        // the reference README's CPU_MONITOR_FAILURE).
        Options::from_env()
            .overridden_by(options)
            .resolve(self.command, ReadyMode::default())
    }
}

/// `master-process reload | status | stop | signal`: control a running master.
#[derive(Debug, clap::Subcommand)]
enum ControlCommand {
    /// Reload: new workers, each old one retired once its replacement is ready
    Reload {
        /// Wait until the reload has ended; print its outcome (new pids, or why it failed
        /// and what still serves); exit 0 if it succeeded, 1 if not
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 1)
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// The master, its listeners, its last reload and each worker (pid, generation, state,
    /// uptime, restarts, RSS, CPU%)
    Status {
        /// Stable JSON for scripts
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Stop the master gracefully (as SIGTERM)
    Stop {
        /// Wait until every worker is gone
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Upgrade the master in place: re-execute its binary as it now is on disk (same pid,
    /// same sockets, the workers adopted), then reload
    Upgrade {
        /// Wait until the reload after the upgrade has ended; print its outcome
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 1)
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Send a signal to every worker (HUP, USR1, USR2, TERM...)
    Signal {
        /// The signal: a name (USR1, SIGUSR1) or a number
        signal: String,
        #[command(flatten)]
        control: ControlSocket,
    },
}

/// Where the master's control socket is.
#[derive(Debug, clap::Args)]
struct ControlSocket {
    /// The master's control socket [default: $XDG_RUNTIME_DIR/master-process.sock,
    /// /run/master-process.sock for root]
    #[arg(long, value_name = "PATH", env = "MASTER_PROCESS_CONTROL")]
    control: Option<String>,
}

impl ControlSocket {
    fn path(&self) -> Result<std::path::PathBuf> {
        crate::config::control_path(self.control.as_deref())?.ok_or_else(|| {
            Error::invalid(
                "--control",
                "off",
                "a control command needs the master's control socket",
            )
        })
    }
}

/// Runs a control command; returns the exit code.
fn control(command: ControlCommand) -> Result<u8> {
    use crate::control::{Request, run_command};
    let wait_timeout = |t: Option<String>| {
        t.map(|t| crate::config::TimeSpan::parse("--timeout", &t))
            .transpose()
    };
    let (control, request, timeout, json) = match command {
        ControlCommand::Reload {
            wait,
            timeout,
            control,
        } => (
            control,
            Request::Reload { wait },
            wait_timeout(timeout)?,
            false,
        ),
        ControlCommand::Upgrade {
            wait,
            timeout,
            control,
        } => (
            control,
            Request::Upgrade { wait },
            wait_timeout(timeout)?,
            false,
        ),
        ControlCommand::Status { json, control } => (
            control,
            Request::Status,
            Some(std::time::Duration::from_secs(10)),
            json,
        ),
        ControlCommand::Stop { wait, control } => (control, Request::Stop { wait }, None, false),
        ControlCommand::Signal { signal, control } => {
            let sig = signal
                .parse()
                .map_err(|why: String| Error::invalid("SIGNAL", &signal, why))?;
            (
                control,
                Request::Signal(sig),
                Some(std::time::Duration::from_secs(10)),
                false,
            )
        }
    };
    Ok(run_command(&control.path()?, request, timeout, json))
}

/// The binary's `main`.
pub fn main() -> ExitCode {
    crate::spawn::exec_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
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
            eprintln!("master-process: {first} (see master-process --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = cli.control_command {
        return match control(command) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                report(&e);
                ExitCode::from(e.exit_code())
            }
        };
    }
    crate::logging::init(cli.verbose);
    let result = cli.into_config().and_then(crate::master::run);
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints an error and its causes, one line each.
fn report(e: &Error) {
    eprintln!("master-process: error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
