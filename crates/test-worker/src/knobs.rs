//! The `TW_*` environment knobs, parsed once at start.
//!
//! A knob with a value that cannot be parsed is a usage error: the worker exits 2 and says
//! which knob is wrong, so a typo in a test never silently turns a knob off.

use std::env;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the worker tells its manager it is ready (`TW_READY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// `none` or unset: send nothing.
    None,
    /// `notify`: `READY=1` through the `sd-notify` crate.
    Notify,
    /// `systemd-notify`: run `systemd-notify --ready` and wait for it.
    SystemdNotify,
    /// `raw`: our own datagram to `$NOTIFY_SOCKET`.
    Raw,
}

impl Ready {
    /// The knob value, as printed in `ready sent (<how>)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ready::None => "none",
            Ready::Notify => "notify",
            Ready::SystemdNotify => "systemd-notify",
            Ready::Raw => "raw",
        }
    }
}

/// Whether to leave a child process behind (`TW_FORK_CHILD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkChild {
    /// Unset or `0`.
    No,
    /// `1`: `sleep 1000` in our process group.
    Plain,
    /// `daemon`: `setsid sleep 1000`, in a session of its own.
    Daemon,
}

/// Every knob, with its default applied.
#[derive(Debug)]
pub struct Knobs {
    /// `TW_EXIT_AT_START`: exit with this code before doing anything.
    pub exit_at_start: Option<i32>,
    /// `TW_CRASH_AFTER_MS`: exit with `exit_code` this long after start.
    pub crash_after: Option<Duration>,
    /// `TW_EXIT_CODE` (default 1): the code for `crash_after`.
    pub exit_code: i32,
    /// `TW_LISTEN_DELAY_MS`: "work" between taking the fds and the first poll.
    pub listen_delay: Option<Duration>,
    /// `TW_READY`.
    pub ready: Ready,
    /// `TW_NEVER_READY=1`: never serve, never send READY.
    pub never_ready: bool,
    /// `TW_READY_EARLY=1`: send the `TW_READY` message at start, before serving (or
    /// crashing, or never serving), as a server whose supervisor process says READY=1 before
    /// its workers have loaded the app.
    pub ready_early: bool,
    /// `TW_IGNORE_SIGTERM=1`.
    pub ignore_sigterm: bool,
    /// `TW_MEMORY_MB`: MiB allocated and touched at start.
    pub memory_mb: u64,
    /// `TW_MEMORY_GROW_MB_PER_S`: MiB added every second.
    pub memory_grow_mb_per_s: u64,
    /// `TW_SPIN=1`: a thread burning one CPU.
    pub spin: bool,
    /// `TW_THREADS`: this many extra threads, idle (parked) for ever, started before serving.
    pub threads: u64,
    /// `TW_REPORT`: directory for `<pid>.env`.
    pub report_dir: Option<PathBuf>,
    /// `TW_FORK_CHILD`.
    pub fork_child: ForkChild,
    /// `TW_DRAIN_IDLE_MS` (default 500): idle connections are closed this long after SIGTERM.
    pub drain_idle: Duration,
    /// `TW_DRAIN_TIMEOUT_MS` (default 10000): exit at the latest this long after SIGTERM.
    pub drain_timeout: Duration,
    /// `TW_BIND_LOOP`: before serving, this many cycles of socket, bind, listen and close on
    /// `bind_loop_addr`, each call timed (the benchmark's cost of an adopted bind).
    pub bind_loop: u64,
    /// `TW_BIND_LOOP_ADDR`: the address of those binds (default: the first TCP listener's).
    pub bind_loop_addr: Option<SocketAddr>,
    /// `TW_SYSCALL_LOOP`: before serving, this many `getppid` calls per round, 21 rounds,
    /// timed (the benchmark's cost of the adoption filter per system call).
    pub syscall_loop: u64,
    /// `TW_SYSCALLS_PER_REQUEST`: this many `getppid` calls before each answer (a
    /// syscall-heavy app, for the benchmark).
    pub syscalls_per_request: u64,
}

impl Knobs {
    /// Reads every knob; the error names the bad knob and its value.
    pub fn from_env() -> Result<Knobs, String> {
        Ok(Knobs {
            exit_at_start: opt("TW_EXIT_AT_START", exit_code)?,
            crash_after: opt("TW_CRASH_AFTER_MS", millis)?,
            exit_code: opt("TW_EXIT_CODE", exit_code)?.unwrap_or(1),
            listen_delay: opt("TW_LISTEN_DELAY_MS", millis)?,
            ready: opt("TW_READY", ready)?.unwrap_or(Ready::None),
            never_ready: opt("TW_NEVER_READY", flag)?.unwrap_or(false),
            ready_early: opt("TW_READY_EARLY", flag)?.unwrap_or(false),
            ignore_sigterm: opt("TW_IGNORE_SIGTERM", flag)?.unwrap_or(false),
            memory_mb: opt("TW_MEMORY_MB", number)?.unwrap_or(0),
            memory_grow_mb_per_s: opt("TW_MEMORY_GROW_MB_PER_S", number)?.unwrap_or(0),
            spin: opt("TW_SPIN", flag)?.unwrap_or(false),
            threads: opt("TW_THREADS", number)?.unwrap_or(0),
            report_dir: env::var_os("TW_REPORT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            fork_child: opt("TW_FORK_CHILD", fork_child)?.unwrap_or(ForkChild::No),
            drain_idle: opt("TW_DRAIN_IDLE_MS", millis)?.unwrap_or(Duration::from_millis(500)),
            drain_timeout: opt("TW_DRAIN_TIMEOUT_MS", millis)?
                .unwrap_or(Duration::from_millis(10_000)),
            bind_loop: opt("TW_BIND_LOOP", number)?.unwrap_or(0),
            bind_loop_addr: opt("TW_BIND_LOOP_ADDR", |s| s.parse().ok())?,
            syscall_loop: opt("TW_SYSCALL_LOOP", number)?.unwrap_or(0),
            syscalls_per_request: opt("TW_SYSCALLS_PER_REQUEST", number)?.unwrap_or(0),
        })
    }
}

/// Parses knob `name` with `parse`; unset or empty means "not given".
fn opt<T>(name: &str, parse: fn(&str) -> Option<T>) -> Result<Option<T>, String> {
    let Some(raw) = env::var_os(name) else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let text = raw.to_str().ok_or_else(|| bad(name, &raw))?;
    parse(text.trim()).map(Some).ok_or_else(|| bad(name, &raw))
}

fn bad(name: &str, raw: &OsString) -> String {
    format!("invalid {name}={}", raw.to_string_lossy())
}

fn number(s: &str) -> Option<u64> {
    s.parse().ok()
}

fn millis(s: &str) -> Option<Duration> {
    number(s).map(Duration::from_millis)
}

/// A process exit code, 0 to 255.
fn exit_code(s: &str) -> Option<i32> {
    s.parse::<u8>().ok().map(i32::from)
}

fn flag(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn ready(s: &str) -> Option<Ready> {
    match s {
        "none" => Some(Ready::None),
        "notify" => Some(Ready::Notify),
        "systemd-notify" => Some(Ready::SystemdNotify),
        "raw" => Some(Ready::Raw),
        _ => None,
    }
}

fn fork_child(s: &str) -> Option<ForkChild> {
    match s {
        "daemon" => Some(ForkChild::Daemon),
        other => flag(other).map(|on| if on { ForkChild::Plain } else { ForkChild::No }),
    }
}
