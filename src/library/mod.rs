//! The library face: [`init()`] at the top of `main`, as the reference is used.
//!
//! The first process becomes the master: it runs the supervisor with its own executable and
//! arguments as the worker command, and never returns. Each worker process runs the same
//! `main`, calls [`init()`] again, and gets a [`Worker`] handle: its listeners, `ready()`,
//! its indexes, and a way to learn that a graceful stop was asked.
//!
//! `init()` runs the app as one plain process instead, binding its listeners itself, when
//! the process runs under a debugger (`TracerPid` in `/proc/self/status`), when
//! `MASTER_PROCESS=off`, or in test mode (`MASTER_PROCESS=test`): the same code works in a
//! debugger, in tests and in production.

mod handle;
mod stop;

use std::time::Duration;

pub use handle::{Listener, ListenerKey, Worker};
pub use stop::Stop;

use crate::config::Config;
use crate::config::options::{self, Opt};
use crate::env;
use crate::error::{Error, Result};
use crate::policy::{OnCrash, OnVersionChange, ReadyMode};

/// Why `init()` runs the app as a single process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standalone {
    /// A debugger is attached (`TracerPid` is not 0).
    Debugger,
    /// `MASTER_PROCESS=off`.
    Off,
    /// `MASTER_PROCESS=test`: the documented test mode.
    Test,
}

/// Options for [`init()`]: the CLI's options, set from code.
///
/// Each setter gives a *default*: the environment variable of the same option (the CLI's
/// twin, e.g. `WORKERS`, `MAX_KILL_TIMEOUT`, `PORT`) wins over it, so that operators can tune
/// a built binary as they did with the reference. A value out of the option's range makes
/// [`Builder::try_init`] fail, as the same value would on the command line.
///
/// ```no_run
/// let worker = master_process::Builder::new()
///     .listen("web=8080")
///     .workers(4)
///     .kill_timeout(std::time::Duration::from_secs(10))
///     .init();
/// # let _ = worker;
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .init() to start"]
pub struct Builder {
    config: Config,
    /// The first setter that was given a value out of range: its name, the value, why.
    refused: Option<[String; 3]>,
}

impl Default for Builder {
    fn default() -> Self {
        let mut config = Config::defaults();
        // Library workers say when they are ready (`Worker::ready`), and take their sockets
        // with LISTEN_FDS: they need no adoption of their own bind.
        config.supervisor.ready = ReadyMode::Notify;
        config.adopt = false;
        config.node_drain = false;
        Builder {
            config,
            refused: None,
        }
    }
}

impl Builder {
    /// Options with every default; the environment is read by [`Builder::init`].
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").init();
    /// # let _ = worker;
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Sets option `opt` (named by its method, `name`) to `value` if it is in range.
    fn set<T>(mut self, opt: &Opt<T>, name: &str, value: T, shown: String) -> Builder {
        if let Err(why) = opt.apply_value(&mut self.config, value) {
            self.refuse(name, shown, why);
        }
        self
    }

    fn refuse(&mut self, name: &str, shown: String, why: String) {
        self.refused
            .get_or_insert([format!("Builder::{name}"), shown, why]);
    }

    /// A socket to listen on (repeatable), as `--listen`: `8080`, `127.0.0.1:8080`,
    /// `[::1]:8080`, `/run/app.sock`, optionally named `web=8080`. Without any, `PORT` is used.
    ///
    /// ```no_run
    /// let mut worker = master_process::Builder::new().listen("web=8080").listen("admin=/run/admin.sock").init();
    /// let web = worker.tcp_listener("web").unwrap();
    /// # let _ = web;
    /// ```
    pub fn listen(mut self, spec: impl Into<String>) -> Builder {
        let spec = spec.into();
        match spec.parse() {
            Ok(parsed) => {
                let mut all = self.config.listen.clone();
                all.push(parsed);
                self.set(&options::LISTEN, "listen", all, spec)
            }
            Err(why) => {
                self.refuse("listen", spec, why);
                self
            }
        }
    }

    /// How many workers (`WORKERS`); 0 means one per core less one (`AUTO`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").workers(4).init();
    /// # let _ = worker;
    /// ```
    pub fn workers(self, n: usize) -> Builder {
        let n = match n {
            0 => crate::config::values::workers("AUTO").unwrap_or(1),
            n => n,
        };
        self.set(&options::WORKER_COUNT, "workers", n, n.to_string())
    }

    /// How long a stopping worker may drain before SIGKILL (`MAX_KILL_TIMEOUT`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").kill_timeout(std::time::Duration::from_secs(30)).init();
    /// # let _ = worker;
    /// ```
    pub fn kill_timeout(self, d: Duration) -> Builder {
        self.set(&options::KILL_TIMEOUT, "kill_timeout", d, format!("{d:?}"))
    }

    /// The least time between a worker's start and its restart after a crash
    /// (`WORKER_THROTTLE`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").throttle(std::time::Duration::from_secs(2)).init();
    /// # let _ = worker;
    /// ```
    pub fn throttle(self, d: Duration) -> Builder {
        self.set(&options::THROTTLE, "throttle", d, format!("{d:?}"))
    }

    /// How long a new worker may take to call [`Worker::ready`] before the reload fails.
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").ready_timeout(std::time::Duration::from_secs(20)).init();
    /// # let _ = worker;
    /// ```
    pub fn ready_timeout(self, d: Duration) -> Builder {
        self.set(
            &options::READY_TIMEOUT,
            "ready_timeout",
            d,
            format!("{d:?}"),
        )
    }

    /// How a new worker is known to be ready. The default for library workers is
    /// [`ReadyMode::Notify`]: they call [`Worker::ready`].
    ///
    /// ```no_run
    /// use master_process::{Builder, Coverage, ReadyMode};
    /// let worker = Builder::new().listen("8080").ready(ReadyMode::Listening(Coverage::All)).init();
    /// # let _ = worker;
    /// ```
    pub fn ready(self, mode: ReadyMode) -> Builder {
        self.set(&options::READY, "ready", mode, mode.to_string())
    }

    /// What a worker crash does (`MASTER_PROCESS_ON_CRASH`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").on_crash(master_process::OnCrash::Exit).init();
    /// # let _ = worker;
    /// ```
    pub fn on_crash(self, action: OnCrash) -> Builder {
        self.set(&options::ON_CRASH, "on_crash", action, action.to_string())
    }

    /// What a reload to workers built with another master-process version does
    /// (`MASTER_PROCESS_ON_VERSION_CHANGE`).
    ///
    /// ```no_run
    /// use master_process::{Builder, OnVersionChange};
    /// let worker = Builder::new().listen("8080").on_version_change(OnVersionChange::Exit).init();
    /// # let _ = worker;
    /// ```
    pub fn on_version_change(self, action: OnVersionChange) -> Builder {
        let shown = action.to_string();
        self.set(
            &options::ON_VERSION_CHANGE,
            "on_version_change",
            action,
            shown,
        )
    }

    /// Permission bits of unix socket files (`MASTER_PROCESS_SOCKET_MODE`, default 0664).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("/run/app.sock").socket_mode(0o660).init();
    /// # let _ = worker;
    /// ```
    pub fn socket_mode(self, mode: u32) -> Builder {
        self.set(
            &options::SOCKET_MODE,
            "socket_mode",
            mode,
            format!("{mode:o}"),
        )
    }

    /// [`Builder::try_init`], printing the error and exiting (code 2 for a usage error, 1
    /// otherwise) if it fails.
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").init();
    /// # let _ = worker;
    /// ```
    pub fn init(self) -> Worker {
        match self.try_init() {
            Ok(worker) => worker,
            Err(e) => {
                e.report();
                std::process::exit(i32::from(e.exit_code()));
            }
        }
    }

    /// Becomes the master (never returns: the process exits with the master's code), or
    /// returns this worker's handle, or runs the app as one process (see [`Standalone`]).
    ///
    /// # Errors
    /// A bad option or environment value, sockets that cannot be bound, or in a worker, a
    /// `LISTEN_FDS` environment that does not belong to this process.
    ///
    /// ```no_run
    /// match master_process::Builder::new().listen("8080").try_init() {
    ///     Ok(worker) => { let _ = worker; }
    ///     Err(e) => eprintln!("cannot start: {e}"),
    /// }
    /// ```
    pub fn try_init(self) -> Result<Worker> {
        crate::spawn::exec_if_requested();
        if std::env::var_os(env::WORKER).is_some() {
            return Worker::inherit();
        }
        let resolved = self.resolve();
        if let Err(e) = &resolved {
            crate::upgrade::abandon_if_resuming(&e.to_string());
        }
        let config = resolved?;
        if let Some(why) = standalone_reason() {
            return Worker::alone(why, &config);
        }
        crate::upgrade::preflight_if_requested(&config);
        crate::logging::init(config.verbose, config.log_format);
        warn_if_threads();
        let code = crate::master::run(config)?;
        std::process::exit(code);
    }

    /// The configuration: these options, the environment over them, our own command.
    fn resolve(self) -> Result<Config> {
        if let Some([name, value, why]) = self.refused {
            return Err(Error::invalid(name, value, why));
        }
        let mut config = self.config;
        config.apply_env()?;
        config.command = crate::spawn::own_command()?;
        config.check()?;
        Ok(config)
    }
}

/// [`Builder::new`]`().`[`init`](Builder::init)`()`: call it first thing in `main`.
///
/// In the first process it becomes the master and never returns. In a worker it returns
/// the [`Worker`] handle. Under a debugger, with `MASTER_PROCESS=off` or in test mode
/// (`MASTER_PROCESS=test`) it returns a handle that binds the listeners itself.
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     let mut worker = master_process::init();
///     let listener = worker.tcp_listener(0)?;
///     worker.ready()?;
///     for stream in listener.incoming() {
///         // serve...
///         # let _ = stream;
///         # break;
///     }
///     Ok(())
/// }
/// ```
pub fn init() -> Worker {
    Builder::new().init()
}

/// Why this process should run the app by itself, if it should.
fn standalone_reason() -> Option<Standalone> {
    match std::env::var(env::STANDALONE)
        .ok()
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        Some("off") => return Some(Standalone::Off),
        Some("test") => return Some(Standalone::Test),
        _ => {}
    }
    traced().then_some(Standalone::Debugger)
}

/// Whether a debugger (any tracer) is attached.
fn traced() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .is_some_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .is_some_and(|v| v.trim() != "0")
        })
}

/// The master loop must be the only thread: warn if `init()` came late.
fn warn_if_threads() {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .unwrap_or(1);
    if threads > 1 {
        tracing::warn!(
            threads,
            "master_process::init() was called with other threads running: call it first in main, \
             before any runtime or thread starts"
        );
    }
}
