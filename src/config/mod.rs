//! What the master is asked to do, checked before anything starts.
//!
//! Every option is declared once in [`options`] (flag, environment twins, type, range,
//! default, help). A [`Config`] starts from the declared defaults ([`Config::defaults`]);
//! the library's [`Builder`](crate::Builder) sets typed values over them, then the
//! environment ([`Config::apply_env`]) and, for the command line, the flags win. Each value
//! is checked where it is parsed; a refused one is one [`Error::InvalidValue`] line naming
//! the flag or variable it came from.

pub mod options;
pub mod values;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::policy::{OnMasterChange, OnVersionChange};
use crate::socket::{self, ListenerSpec};
use crate::supervisor::Settings;
use options::Declared;

/// The validated configuration of a master.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `--listen`: the sockets to listen on, in the order workers receive them.
    pub listen: Vec<ListenerSpec>,
    /// `--port` / `PORT`: the one listener when `listen` is empty.
    pub port: Option<ListenerSpec>,
    /// `--socket-mode`: permission bits of the unix socket files we create.
    pub socket_mode: u32,
    /// `--backlog`: each listener's accept queue; `None`: the kernel's `somaxconn`.
    pub backlog: Option<u32>,
    /// `--adopt`: an app's own `bind()` of a held address gets the master's socket.
    pub adopt: bool,
    /// `--node-drain`: preload the drain in Node.js workers.
    pub node_drain: bool,
    /// What the supervisor decides with: workers, timeouts, readiness, reloads.
    pub supervisor: Settings,
    /// `--max-surge`, kept for `--reload` (the strategy holds it once rolling).
    pub max_surge: usize,
    /// `--user`: who workers run as.
    pub user: Option<crate::credentials::Credentials>,
    /// `--no-subreaper`: reap (and, at exit, stop) the orphaned descendants of workers.
    pub subreaper: bool,
    /// `--on-version-change`.
    pub on_version_change: OnVersionChange,
    /// `--on-master-change`.
    pub on_master_change: OnMasterChange,
    /// `--control`.
    pub control: ControlSocket,
    /// `--name`.
    pub name: Option<String>,
    /// `--metrics`: where to serve Prometheus metrics.
    pub metrics: Option<ListenerSpec>,
    /// The resource monitor's limits.
    pub monitor: MonitorLimits,
    /// `--no-monitor`: whether the resource monitor runs.
    pub monitor_on: bool,
    /// `-v`: debug lines.
    pub verbose: bool,
    /// `--log-format`.
    pub log_format: crate::policy::LogFormat,
    /// The worker command: program and arguments.
    pub command: Vec<OsString>,
}

/// Where the control socket is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ControlSocket {
    /// `NAME.sock` in the default folder (see [`crate::control::paths`]).
    #[default]
    Default,
    /// No control socket.
    Off,
    /// At this path.
    At(PathBuf),
}

/// What the resource monitor allows a worker (with its descendants).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
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

impl Config {
    /// Every option at its declared default.
    pub fn defaults() -> Config {
        let mut config = Config::default();
        for opt in options::ALL {
            if let Some(text) = opt.meta().default {
                // The declared defaults are constants, checked by a unit test.
                let _ = opt.apply(&mut config, text);
            }
        }
        config
    }

    /// Applies `text`, given as `source` (a flag or a variable), to option `opt`.
    ///
    /// # Errors
    /// The value is invalid or out of range: one line naming `source`.
    pub fn apply(&mut self, opt: &dyn Declared, source: &str, text: &str) -> Result<()> {
        opt.apply(self, text)
            .map_err(|why| Error::invalid(source, text, why))
    }

    /// Applies the environment: for each option, the first of its variables that is set
    /// and not empty.
    ///
    /// # Errors
    /// A variable's value is invalid or out of range.
    pub fn apply_env(&mut self) -> Result<()> {
        for opt in options::ALL {
            let set = opt
                .meta()
                .env
                .iter()
                .find_map(|name| crate::env::var(name).map(|value| (*name, value)));
            if let Some((name, value)) = set {
                self.apply(*opt, name, &value)?;
            }
        }
        Ok(())
    }

    /// Whether the one listener is `PORT` alone (no `--listen`), a TCP port: the master does
    /// not know which address the app binds.
    pub fn port_alone(&self) -> bool {
        self.listen.is_empty()
            && self
                .port
                .as_ref()
                .is_some_and(|p| matches!(p.addr, crate::socket::ListenAddr::Port(_)))
    }

    /// The listeners: `--listen`, or else `PORT`.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if self.listen.is_empty() {
            self.port.iter().cloned().collect()
        } else {
            self.listen.clone()
        }
    }

    /// The resource monitor's limits, unless it is off.
    pub fn monitor(&self) -> Option<MonitorLimits> {
        self.monitor_on.then_some(self.monitor)
    }

    /// This master's name: `--name`, else the name of systemd's runtime directory for the
    /// service (`$RUNTIME_DIRECTORY`), else the command's file name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .or_else(service_name)
            .unwrap_or_else(|| name_from(self.command.first().map(Path::new)))
    }

    /// Checks what only makes sense as a whole: something to listen on (unless the
    /// process was socket-activated), and a command.
    ///
    /// # Errors
    /// [`Error::NoListener`], [`Error::NoCommand`].
    pub fn check(&self) -> Result<()> {
        if self.listeners().is_empty()
            && !socket::activated()
            && !crate::upgrade::preflight_activated()
        {
            return Err(Error::NoListener);
        }
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::NoCommand);
        }
        Ok(())
    }
}

/// The master's name under systemd: the file name of `$RUNTIME_DIRECTORY` (its first
/// folder), which `RuntimeDirectory=` makes the service's own.
pub fn service_name() -> Option<String> {
    let dirs = crate::env::var("RUNTIME_DIRECTORY")?;
    let first = dirs.split(':').next()?;
    let name = Path::new(first).file_name()?.to_str()?.to_string();
    check_name(&name).is_ok().then_some(name)
}

/// A master name made of a program path: its file name, with any character a name may not
/// hold replaced by `-`.
pub fn name_from(program: Option<&Path>) -> String {
    let base = program
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| if name_char(c) { c } else { '-' })
        .take(64)
        .collect();
    let name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        "master-process".into()
    } else {
        name
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a master name: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.`.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(name_char) {
        return Err(
            "a name has 1 to 64 letters, digits, `.`, `_` or `-`, and does not start \
                    with `.`"
                .into(),
        );
    }
    Ok(())
}

/// Finds `program` the way `execvp` would and checks that it can be executed.
///
/// Returns the path that will be run. A name without `/` is searched in `PATH`.
///
/// # Errors
/// [`Error::CommandNotFound`] saying why.
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
mod tests;
