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

use crate::config::{OnCrash, OnVersionChange, Options};
use crate::error::Result;
use crate::readiness::ReadyMode;

/// Set by the master in every worker's environment.
pub(crate) const WORKER_ENV: &str = "MASTER_PROCESS_WORKER";

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
/// a built binary as they did with the reference.
///
/// ```no_run
/// let worker = master_process::Builder::new()
///     .listen("web=8080")
///     .workers(4)
///     .kill_timeout(std::time::Duration::from_secs(10))
///     .init();
/// # let _ = worker;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "call .init() to start"]
pub struct Builder {
    options: Options,
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

    /// A socket to listen on (repeatable), as `--listen`: `8080`, `127.0.0.1:8080`,
    /// `[::1]:8080`, `/run/app.sock`, optionally named `web=8080`. Without any, `PORT` is used.
    ///
    /// ```no_run
    /// let mut worker = master_process::Builder::new().listen("web=8080").listen("admin=/run/admin.sock").init();
    /// let web = worker.tcp_listener("web").unwrap();
    /// # let _ = web;
    /// ```
    pub fn listen(mut self, spec: impl Into<String>) -> Builder {
        self.options.listen.push(spec.into());
        self
    }

    /// How many workers (`WORKERS`); 0 means one per core less one (`AUTO`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").workers(4).init();
    /// # let _ = worker;
    /// ```
    pub fn workers(mut self, n: usize) -> Builder {
        self.options.workers = Some(if n == 0 { "AUTO".into() } else { n.to_string() });
        self
    }

    /// How long a stopping worker may drain before SIGKILL (`MAX_KILL_TIMEOUT`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").kill_timeout(std::time::Duration::from_secs(30)).init();
    /// # let _ = worker;
    /// ```
    pub fn kill_timeout(mut self, d: Duration) -> Builder {
        self.options.kill_timeout = Some(millis(d));
        self
    }

    /// The least time between a worker's start and its restart after a crash
    /// (`WORKER_THROTTLE`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").throttle(std::time::Duration::from_secs(2)).init();
    /// # let _ = worker;
    /// ```
    pub fn throttle(mut self, d: Duration) -> Builder {
        self.options.throttle = Some(millis(d));
        self
    }

    /// How long a new worker may take to call [`Worker::ready`] before the reload fails.
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").ready_timeout(std::time::Duration::from_secs(20)).init();
    /// # let _ = worker;
    /// ```
    pub fn ready_timeout(mut self, d: Duration) -> Builder {
        self.options.ready_timeout = Some(millis(d));
        self
    }

    /// How a new worker is known to be ready. The default for library workers is
    /// [`ReadyMode::Notify`]: they call [`Worker::ready`].
    ///
    /// ```no_run
    /// use master_process::{Builder, Coverage, ReadyMode};
    /// let worker = Builder::new().listen("8080").ready(ReadyMode::Listening(Coverage::All)).init();
    /// # let _ = worker;
    /// ```
    pub fn ready(mut self, mode: ReadyMode) -> Builder {
        self.options.ready = Some(mode.to_string());
        self
    }

    /// What a worker crash does (`MASTER_PROCESS_ON_CRASH`).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("8080").on_crash(master_process::OnCrash::Exit).init();
    /// # let _ = worker;
    /// ```
    pub fn on_crash(mut self, action: OnCrash) -> Builder {
        self.options.on_crash = Some(action.to_string());
        self
    }

    /// What a reload to workers built with another master-process version does
    /// (`MASTER_PROCESS_ON_VERSION_CHANGE`).
    ///
    /// ```no_run
    /// use master_process::{Builder, OnVersionChange};
    /// let worker = Builder::new().listen("8080").on_version_change(OnVersionChange::Exit).init();
    /// # let _ = worker;
    /// ```
    pub fn on_version_change(mut self, action: OnVersionChange) -> Builder {
        self.options.on_version_change = Some(match action {
            OnVersionChange::Log => "log".into(),
            OnVersionChange::Exit => "exit".into(),
        });
        self
    }

    /// Permission bits of unix socket files (`MASTER_PROCESS_SOCKET_MODE`, default 0664).
    ///
    /// ```no_run
    /// let worker = master_process::Builder::new().listen("/run/app.sock").socket_mode(0o660).init();
    /// # let _ = worker;
    /// ```
    pub fn socket_mode(mut self, mode: u32) -> Builder {
        self.options.socket_mode = Some(format!("{mode:o}"));
        self
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
                eprintln!("master-process: error: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    eprintln!("  caused by: {cause}");
                    source = cause.source();
                }
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
        let options = self.options.overridden_by(Options::from_env());
        if std::env::var_os(WORKER_ENV).is_some() {
            return Worker::inherit();
        }
        if let Some(why) = standalone_reason() {
            return Worker::alone(why, &options.listeners()?);
        }
        crate::logging::init(false);
        warn_if_threads();
        let config = options.resolve(crate::spawn::own_command()?, ReadyMode::Notify)?;
        let code = crate::master::run(config)?;
        std::process::exit(code);
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
    match std::env::var("MASTER_PROCESS")
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

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}
