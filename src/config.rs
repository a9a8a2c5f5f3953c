//! What the master is asked to do, checked before anything starts.
//!
//! [`Config`] is the resolved, validated configuration shared by the CLI and the library.
//! Every value type here has a `FromStr` that accepts what the reference accepted (a bare
//! number of milliseconds for durations, `MAX`/`AUTO` for workers) and rejects everything
//! else with one line saying how to fix it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::readiness::ReadyMode;
use crate::socket::{self, ListenerSpec};
use crate::supervisor::Strategy;

/// Default `WORKER_THROTTLE`: a worker that lived less than this is restarted after the rest.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);
/// Default `MAX_KILL_TIMEOUT`: how long a stopping worker may drain before SIGKILL.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--ready-timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--max-backoff`: the longest restart delay of a crash-looping worker.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Default `--socket-mode` for unix socket files.
pub const DEFAULT_SOCKET_MODE: u32 = 0o664;

/// The validated configuration of a master.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sockets to listen on, in the order workers receive them (fd 3, 4, ...).
    pub listeners: Vec<ListenerSpec>,
    /// Permission bits of the unix socket files we create.
    pub socket_mode: u32,
    /// How many workers serve at once.
    pub workers: usize,
    /// `WORKER_THROTTLE`: minimum time between a worker's start and its restart after a crash.
    pub throttle: Duration,
    /// `MAX_KILL_TIMEOUT`: how long a worker may take to exit after SIGTERM.
    pub kill_timeout: Duration,
    /// How the master learns that a new worker serves.
    pub ready: ReadyMode,
    /// How long a new worker may take to become ready.
    pub ready_timeout: Duration,
    /// What an unexpected worker exit does.
    pub on_crash: OnCrash,
    /// What a reload to workers built with another master-process version does.
    pub on_version_change: OnVersionChange,
    /// `--max-backoff`.
    pub max_backoff: Duration,
    /// `--reload` and `--max-surge`.
    pub strategy: Strategy,
    /// `--canary`.
    pub canary: Option<Duration>,
    /// `--control`: the control socket, unless disabled.
    pub control: Option<PathBuf>,
    /// The resource monitor's limits, unless disabled (`--no-monitor`).
    pub monitor: Option<MonitorLimits>,
    /// Reap (and, at exit, stop) the orphaned descendants of workers: on unless
    /// `--no-subreaper`.
    pub subreaper: bool,
    /// `--on-master-change`.
    pub on_master_change: OnMasterChange,
    /// The worker command: program and arguments.
    pub command: Vec<OsString>,
}

/// Option values as given, before they are checked: from flags, the environment or the
/// library's builder. `None` means "not given": the default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--listen` / `MASTER_PROCESS_LISTEN` (comma-separated in the environment).
    pub listen: Vec<String>,
    /// `--port` / `PORT`: the one listener when `listen` is empty.
    pub port: Option<String>,
    /// `--socket-mode` / `MASTER_PROCESS_SOCKET_MODE`.
    pub socket_mode: Option<String>,
    /// `--workers` / `WORKERS`.
    pub workers: Option<String>,
    /// `--ready` / `MASTER_PROCESS_READY`.
    pub ready: Option<String>,
    /// `--ready-timeout` / `MASTER_PROCESS_READY_TIMEOUT`.
    pub ready_timeout: Option<String>,
    /// `--kill-timeout` / `MAX_KILL_TIMEOUT`.
    pub kill_timeout: Option<String>,
    /// `--throttle` / `WORKER_THROTTLE`.
    pub throttle: Option<String>,
    /// `--on-crash` / `MASTER_PROCESS_ON_CRASH`.
    pub on_crash: Option<String>,
    /// `--on-version-change` / `MASTER_PROCESS_ON_VERSION_CHANGE`.
    pub on_version_change: Option<String>,
    /// `--max-backoff` / `MASTER_PROCESS_MAX_BACKOFF`.
    pub max_backoff: Option<String>,
    /// `--reload` / `MASTER_PROCESS_RELOAD`: `parallel` or `rolling`.
    pub reload: Option<String>,
    /// `--max-surge` / `MASTER_PROCESS_MAX_SURGE`.
    pub max_surge: Option<String>,
    /// `--canary` / `MASTER_PROCESS_CANARY`.
    pub canary: Option<String>,
    /// `--control` / `MASTER_PROCESS_CONTROL`: a path, or `off`.
    pub control: Option<String>,
    /// `--no-monitor` / `MASTER_PROCESS_MONITOR=off`.
    pub monitor: Option<String>,
    /// `--max-memory` / `MAX_MEMORY_ALLOWED_MB`.
    pub max_memory: Option<String>,
    /// `--max-cpu` / `MAX_CPU_ALLOWED`.
    pub max_cpu: Option<String>,
    /// `--memory-failures` / `MEM_MONITOR_FAILURES`.
    pub memory_failures: Option<String>,
    /// `--cpu-failures` / `CPU_MONITOR_FAILURES` (or the reference README's
    /// `CPU_MONITOR_FAILURE`).
    pub cpu_failures: Option<String>,
    /// `--monitor-interval` / `MASTER_PROCESS_MONITOR_INTERVAL`.
    pub monitor_interval: Option<String>,
    /// `--monitor-grace` / `MASTER_PROCESS_MONITOR_GRACE`.
    pub monitor_grace: Option<String>,
    /// `--no-subreaper` / `MASTER_PROCESS_SUBREAPER=off`.
    pub subreaper: Option<String>,
    /// `--on-master-change` / `MASTER_PROCESS_ON_MASTER_CHANGE`.
    pub on_master_change: Option<String>,
}

impl Options {
    /// The options set in the environment (the CLI's environment twins).
    pub fn from_env() -> Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Options {
            listen: var("MASTER_PROCESS_LISTEN")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            port: var("PORT"),
            socket_mode: var("MASTER_PROCESS_SOCKET_MODE"),
            workers: var("WORKERS"),
            ready: var("MASTER_PROCESS_READY"),
            ready_timeout: var("MASTER_PROCESS_READY_TIMEOUT"),
            kill_timeout: var("MAX_KILL_TIMEOUT"),
            throttle: var("WORKER_THROTTLE"),
            on_crash: var("MASTER_PROCESS_ON_CRASH"),
            on_version_change: var("MASTER_PROCESS_ON_VERSION_CHANGE"),
            max_backoff: var("MASTER_PROCESS_MAX_BACKOFF"),
            reload: var("MASTER_PROCESS_RELOAD"),
            max_surge: var("MASTER_PROCESS_MAX_SURGE"),
            canary: var("MASTER_PROCESS_CANARY"),
            control: var("MASTER_PROCESS_CONTROL"),
            monitor: var("MASTER_PROCESS_MONITOR"),
            max_memory: var("MAX_MEMORY_ALLOWED_MB"),
            max_cpu: var("MAX_CPU_ALLOWED"),
            memory_failures: var("MEM_MONITOR_FAILURES"),
            cpu_failures: var("CPU_MONITOR_FAILURES").or_else(|| var("CPU_MONITOR_FAILURE")),
            monitor_interval: var("MASTER_PROCESS_MONITOR_INTERVAL"),
            monitor_grace: var("MASTER_PROCESS_MONITOR_GRACE"),
            subreaper: var("MASTER_PROCESS_SUBREAPER"),
            on_master_change: var("MASTER_PROCESS_ON_MASTER_CHANGE"),
        }
    }

    /// These options, with every value that `over` gives taking precedence.
    pub fn overridden_by(self, over: Options) -> Options {
        Options {
            listen: if over.listen.is_empty() {
                self.listen
            } else {
                over.listen
            },
            port: over.port.or(self.port),
            socket_mode: over.socket_mode.or(self.socket_mode),
            workers: over.workers.or(self.workers),
            ready: over.ready.or(self.ready),
            ready_timeout: over.ready_timeout.or(self.ready_timeout),
            kill_timeout: over.kill_timeout.or(self.kill_timeout),
            throttle: over.throttle.or(self.throttle),
            on_crash: over.on_crash.or(self.on_crash),
            on_version_change: over.on_version_change.or(self.on_version_change),
            max_backoff: over.max_backoff.or(self.max_backoff),
            reload: over.reload.or(self.reload),
            max_surge: over.max_surge.or(self.max_surge),
            canary: over.canary.or(self.canary),
            control: over.control.or(self.control),
            monitor: over.monitor.or(self.monitor),
            max_memory: over.max_memory.or(self.max_memory),
            max_cpu: over.max_cpu.or(self.max_cpu),
            memory_failures: over.memory_failures.or(self.memory_failures),
            cpu_failures: over.cpu_failures.or(self.cpu_failures),
            monitor_interval: over.monitor_interval.or(self.monitor_interval),
            monitor_grace: over.monitor_grace.or(self.monitor_grace),
            subreaper: over.subreaper.or(self.subreaper),
            on_master_change: over.on_master_change.or(self.on_master_change),
        }
    }

    /// The listeners: `listen`, or else `port`; none when the process was socket-activated
    /// (the master then uses the sockets it was passed, whatever `listen` says).
    pub fn listeners(&self) -> Result<Vec<ListenerSpec>> {
        if socket::activated() {
            return Ok(Vec::new());
        }
        if self.listen.is_empty() {
            let port = self.port.as_deref().ok_or(Error::NoListener)?;
            Ok(vec![socket::parse_port_env(port)?])
        } else {
            self.listen
                .iter()
                .map(|s| s.parse::<ListenerSpec>())
                .collect()
        }
    }

    /// Checks every value and resolves the configuration for running `command`;
    /// `default_ready` applies when no readiness mode was given.
    pub fn resolve(self, command: Vec<OsString>, default_ready: ReadyMode) -> Result<Config> {
        let listeners = self.listeners()?;
        let monitor = self.monitor_limits()?;
        let program = command.first().ok_or(Error::NoCommand)?;
        resolve_program(program)?;
        let duration = |name: &str, v: Option<String>, default: Duration| {
            v.map_or(Ok(default), |v| TimeSpan::parse(name, &v))
        };
        Ok(Config {
            listeners,
            socket_mode: self
                .socket_mode
                .map_or(Ok(DEFAULT_SOCKET_MODE), |m| parse_mode("--socket-mode", &m))?,
            workers: self
                .workers
                .map_or(Ok(1), |w| parse_workers("WORKERS", &w))?,
            throttle: duration("WORKER_THROTTLE", self.throttle, DEFAULT_THROTTLE)?,
            kill_timeout: duration("MAX_KILL_TIMEOUT", self.kill_timeout, DEFAULT_KILL_TIMEOUT)?,
            ready: self.ready.map_or(Ok(default_ready), |r| r.parse())?,
            ready_timeout: duration("--ready-timeout", self.ready_timeout, DEFAULT_READY_TIMEOUT)?,
            on_crash: self.on_crash.map_or(Ok(OnCrash::Restart), |c| c.parse())?,
            on_version_change: self
                .on_version_change
                .map_or(Ok(OnVersionChange::Log), |c| c.parse())?,
            max_backoff: duration("--max-backoff", self.max_backoff, DEFAULT_MAX_BACKOFF)?,
            strategy: parse_strategy(self.reload.as_deref(), self.max_surge.as_deref())?,
            canary: self
                .canary
                .map(|c| TimeSpan::parse("--canary", &c))
                .transpose()?
                .filter(|d| !d.is_zero()),
            control: control_path(self.control.as_deref())?,
            monitor,
            subreaper: match self
                .subreaper
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("on" | "1" | "true" | "yes") => true,
                Some("off" | "0" | "false" | "no") => false,
                Some(other) => {
                    return Err(Error::invalid(
                        "MASTER_PROCESS_SUBREAPER",
                        other,
                        "expected `on` or `off`",
                    ));
                }
            },
            on_master_change: self
                .on_master_change
                .as_deref()
                .map_or(Ok(OnMasterChange::Log), str::parse)?,
            command,
        })
    }
}

impl Options {
    fn monitor_limits(&self) -> Result<Option<MonitorLimits>> {
        match self
            .monitor
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("on") => {}
            Some("off") => return Ok(None),
            Some(other) => {
                return Err(Error::invalid(
                    "MASTER_PROCESS_MONITOR",
                    other,
                    "expected `on` or `off`",
                ));
            }
        }
        let count = |name: &str, v: &Option<String>, default: u32| -> Result<u32> {
            v.as_deref()
                .map_or(Ok(default), |v| match v.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err(Error::invalid(
                        name,
                        v,
                        "expected a number of samples, at least 1",
                    )),
                })
        };
        let max_memory_mb = match self.max_memory.as_deref() {
            None => DEFAULT_MAX_MEMORY_MB,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(Error::invalid(
                        "MAX_MEMORY_ALLOWED_MB",
                        v,
                        "expected a number of MiB, at least 1",
                    ));
                }
            },
        };
        let max_cpu_pct = match self.max_cpu.as_deref() {
            None => DEFAULT_MAX_CPU,
            Some(v) => match v.trim().trim_end_matches('%').parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 => p,
                _ => {
                    return Err(Error::invalid(
                        "MAX_CPU_ALLOWED",
                        v,
                        "expected a percentage of one core, above 0 (e.g. 95, or 180 for two cores)",
                    ));
                }
            },
        };
        let duration = |name: &str, v: &Option<String>, default: Duration| {
            v.as_deref()
                .map_or(Ok(default), |v| TimeSpan::parse(name, v))
        };
        let interval = duration(
            "--monitor-interval",
            &self.monitor_interval,
            DEFAULT_MONITOR_INTERVAL,
        )?;
        if interval.is_zero() {
            return Err(Error::invalid("--monitor-interval", "0", "must be above 0"));
        }
        Ok(Some(MonitorLimits {
            max_memory_mb,
            max_cpu_pct,
            memory_failures: count(
                "MEM_MONITOR_FAILURES",
                &self.memory_failures,
                DEFAULT_MONITOR_FAILURES,
            )?,
            cpu_failures: count(
                "CPU_MONITOR_FAILURES",
                &self.cpu_failures,
                DEFAULT_MONITOR_FAILURES,
            )?,
            interval,
            grace: duration(
                "--monitor-grace",
                &self.monitor_grace,
                DEFAULT_MONITOR_GRACE,
            )?,
        }))
    }
}

/// Default `MAX_MEMORY_ALLOWED_MB` (the reference's, on 64-bit).
pub const DEFAULT_MAX_MEMORY_MB: u64 = 1200;
/// Default `MAX_CPU_ALLOWED`, in percent of one core.
pub const DEFAULT_MAX_CPU: f64 = 95.0;
/// Default `MEM_MONITOR_FAILURES` and `CPU_MONITOR_FAILURES`.
pub const DEFAULT_MONITOR_FAILURES: u32 = 10;
/// Default `--monitor-interval`.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(2);
/// Default `--monitor-grace` (the reference's allowance for JIT warm-up).
pub const DEFAULT_MONITOR_GRACE: Duration = Duration::from_secs(30);

/// What the resource monitor allows a worker (with its descendants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorLimits {
    /// `MAX_MEMORY_ALLOWED_MB`, in MiB of resident memory.
    pub max_memory_mb: u64,
    /// `MAX_CPU_ALLOWED`, in percent of one core.
    pub max_cpu_pct: f64,
    /// `MEM_MONITOR_FAILURES`: samples over the memory limit in a row that replace a worker.
    pub memory_failures: u32,
    /// `CPU_MONITOR_FAILURES`: samples over the CPU limit in a row that replace a worker.
    pub cpu_failures: u32,
    /// Time between two samples.
    pub interval: Duration,
    /// Time after a worker's start before it is sampled.
    pub grace: Duration,
}

/// Parses `--reload` (`parallel` or `rolling`) with `--max-surge` (default 1).
pub fn parse_strategy(reload: Option<&str>, max_surge: Option<&str>) -> Result<Strategy> {
    let surge = match max_surge {
        None => 1,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Error::invalid(
                    "--max-surge",
                    v,
                    "expected a number of workers, at least 1",
                ));
            }
        },
    };
    match reload.map(str::to_ascii_lowercase).as_deref() {
        None | Some("parallel") => Ok(Strategy::Parallel),
        Some("rolling") => Ok(Strategy::Rolling { max_surge: surge }),
        Some(other) => Err(Error::invalid(
            "--reload",
            other,
            "expected `parallel` or `rolling`",
        )),
    }
}

/// The control socket path: `--control PATH`, none with `off`, or the default: under
/// `$XDG_RUNTIME_DIR`, else `/run` for root, else a private folder in the temp dir.
pub fn control_path(given: Option<&str>) -> Result<Option<PathBuf>> {
    match given {
        Some(v) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") => Ok(None),
        Some(v) if v.is_empty() => Err(Error::invalid(
            "--control",
            v,
            "expected a socket path or `off`",
        )),
        Some(v) => Ok(Some(PathBuf::from(v))),
        None => Ok(Some(default_control_path())),
    }
}

/// Where the master listens for control commands, and where clients look, by default.
pub fn default_control_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("master-process.sock");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/master-process.sock")
    } else {
        std::env::temp_dir()
            .join(format!("master-process-{uid}"))
            .join("master-process.sock")
    }
}

/// What a reload does when the master's own executable changed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMasterChange {
    /// Log it.
    #[default]
    Log,
    /// Upgrade the master in place first (same pid, same sockets), then reload.
    Upgrade,
    /// Stop and exit with code 1, for a service manager that restarts (the reference's
    /// behaviour; the port is closed until the restart).
    Exit,
}

impl FromStr for OnMasterChange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "log" => Ok(OnMasterChange::Log),
            "upgrade" => Ok(OnMasterChange::Upgrade),
            "exit" => Ok(OnMasterChange::Exit),
            _ => Err(Error::invalid(
                "--on-master-change",
                s,
                "expected `log`, `upgrade` or `exit`",
            )),
        }
    }
}

/// What the master does when a reload brings workers built with another version of
/// master-process than its own (they report it with `READY=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnVersionChange {
    /// Log it and keep going.
    #[default]
    Log,
    /// Exit with code 1 once the new workers are ready, for a service manager that restarts
    /// (the reference's behaviour).
    Exit,
}

impl FromStr for OnVersionChange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "log" => Ok(OnVersionChange::Log),
            "exit" => Ok(OnVersionChange::Exit),
            _ => Err(Error::invalid(
                "--on-version-change",
                s,
                "expected `log` or `exit`",
            )),
        }
    }
}

/// What the master does when a serving worker exits unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCrash {
    /// Restart it, waiting the rest of `WORKER_THROTTLE` if it lived less than that.
    #[default]
    Restart,
    /// Stop the other workers and exit with the crashed worker's code, for a service
    /// manager that restarts (the reference README's original mode).
    Exit,
}

impl FromStr for OnCrash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "restart" => Ok(OnCrash::Restart),
            "exit" => Ok(OnCrash::Exit),
            _ => Err(Error::invalid(
                "--on-crash",
                s,
                "expected `restart` or `exit`",
            )),
        }
    }
}

impl fmt::Display for OnCrash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnCrash::Restart => "restart",
            OnCrash::Exit => "exit",
        })
    }
}

/// A duration that also accepts a bare number of milliseconds, as the reference did
/// (`MAX_KILL_TIMEOUT=5000`), besides `5s`, `1m30s`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan(pub Duration);

impl TimeSpan {
    /// Parses `s` as a [`TimeSpan`], naming `what` (a flag or variable) in the error.
    pub fn parse(what: &str, s: &str) -> Result<Duration> {
        let t = s.trim();
        let bad = |reason: &str| Error::invalid(what, s, reason);
        if t.is_empty() {
            return Err(bad(
                "expected a duration like 5s, 250ms or a number of milliseconds",
            ));
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| bad("number too large"));
        }
        if t.starts_with('-') {
            return Err(bad("must not be negative"));
        }
        humantime::parse_duration(t).map_err(|_| {
            bad("expected a duration like 5s, 250ms, 1m30s or a number of milliseconds")
        })
    }
}

impl FromStr for TimeSpan {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TimeSpan::parse("duration", s).map(TimeSpan)
    }
}

/// Parses `WORKERS`: a number, `MAX` (one per core) or `AUTO` (cores - 1, at least 1).
pub fn parse_workers(what: &str, s: &str) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = s.trim();
    match t.to_ascii_uppercase().as_str() {
        "MAX" => Ok(cores),
        "AUTO" => Ok(cores.saturating_sub(1).max(1)),
        _ => match t.parse::<usize>() {
            Ok(0) => Err(Error::invalid(what, s, "must be at least 1")),
            Ok(n) if n > 1024 => Err(Error::invalid(what, s, "at most 1024 workers")),
            Ok(n) => Ok(n),
            Err(_) => Err(Error::invalid(
                what,
                s,
                "expected a number of workers, MAX (one per core) or AUTO (cores - 1)",
            )),
        },
    }
}

/// Parses an octal file mode such as `0664` or `660`.
pub fn parse_mode(what: &str, s: &str) -> Result<u32> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err(Error::invalid(
            what,
            s,
            "expected octal permission bits such as 0664 or 0660",
        )),
    }
}

/// Finds `program` the way `execvp` would and checks that it can be executed.
///
/// Returns the path that will be run. A name without `/` is searched in `PATH`.
pub fn resolve_program(program: &OsString) -> Result<PathBuf> {
    let shown = program.to_string_lossy().into_owned();
    let not_found = |reason: &str| Error::CommandNotFound {
        program: shown.clone(),
        reason: reason.to_string(),
    };
    let path = Path::new(program);
    if program.is_empty() {
        return Err(Error::NoCommand);
    }
    if path.as_os_str().as_encoded_bytes().contains(&b'/') {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else if path.exists() {
            Err(not_found("is not an executable file"))
        } else {
            Err(not_found("does not exist"))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| not_found("was not found in PATH"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_milliseconds_and_units() {
        assert_eq!(
            TimeSpan::parse("X", "5000").unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(TimeSpan::parse("X", "5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            TimeSpan::parse("X", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            TimeSpan::parse("X", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(TimeSpan::parse("X", "0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn durations_reject_negative_and_garbage_with_the_name() {
        let e = TimeSpan::parse("MAX_KILL_TIMEOUT", "-1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MAX_KILL_TIMEOUT") && e.contains("negative"),
            "{e}"
        );
        assert!(TimeSpan::parse("X", "soon").is_err());
        assert!(TimeSpan::parse("X", "").is_err());
        assert!(TimeSpan::parse("X", "99999999999999999999999").is_err());
    }

    #[test]
    fn workers_accept_numbers_max_and_auto() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse_workers("W", "3").unwrap(), 3);
        assert_eq!(parse_workers("W", "max").unwrap(), cores);
        assert_eq!(parse_workers("W", "AUTO").unwrap(), (cores - 1).max(1));
        assert!(
            parse_workers("WORKERS", "abc")
                .unwrap_err()
                .to_string()
                .contains("WORKERS")
        );
        assert!(parse_workers("W", "0").is_err());
        assert!(parse_workers("W", "-2").is_err());
    }

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!(parse_mode("M", "0664").unwrap(), 0o664);
        assert_eq!(parse_mode("M", "600").unwrap(), 0o600);
        assert!(parse_mode("M", "999").is_err());
        assert!(parse_mode("M", "1777").is_err());
        assert!(parse_mode("M", "").is_err());
    }

    #[test]
    fn options_resolve_with_defaults_and_precedence() {
        let base = Options {
            workers: Some("3".into()),
            port: Some("8080".into()),
            ..Options::default()
        };
        let over = Options {
            workers: Some("2".into()),
            ..Options::default()
        };
        let merged = base.overridden_by(over);
        assert_eq!(merged.workers.as_deref(), Some("2"));
        assert_eq!(merged.port.as_deref(), Some("8080"));
        let c = merged
            .resolve(vec!["sh".into()], ReadyMode::Notify)
            .unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.ready, ReadyMode::Notify);
        assert_eq!(c.kill_timeout, DEFAULT_KILL_TIMEOUT);
        assert_eq!(c.throttle, DEFAULT_THROTTLE);
        assert_eq!(c.socket_mode, DEFAULT_SOCKET_MODE);
        assert_eq!(c.on_version_change, OnVersionChange::Log);
        let none = Options::default()
            .resolve(vec!["sh".into()], ReadyMode::Notify)
            .unwrap_err();
        assert!(matches!(none, Error::NoListener));
    }

    #[test]
    fn programs_are_resolved_like_execvp() {
        assert!(resolve_program(&"sh".into()).unwrap().is_absolute());
        let e = resolve_program(&"no-such-program-xyz".into()).unwrap_err();
        assert!(e.to_string().contains("not found in PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let e = resolve_program(&plain.clone().into_os_string()).unwrap_err();
        assert!(e.to_string().contains("not an executable"), "{e}");
        assert!(resolve_program(&"/no/such/file".into()).is_err());
    }
}
