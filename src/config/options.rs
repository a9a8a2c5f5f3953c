//! Every option of the master, declared once: its flag, its environment twin(s), its value's
//! type and range, its default and its help. The command line ([`crate::cli`]), the
//! environment ([`Config::apply_env`](super::Config::apply_env)) and the library's
//! [`Builder`](crate::Builder) all read this table; adding an option is one entry here (and
//! its field in [`Config`]).
//!
//! A value is checked where it is parsed: [`Opt::parse`] for its syntax and [`Opt::check`]
//! for its range, so that nothing out of range ever reaches the master (a year of
//! `--ready-timeout` would overflow its clock).

use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    DAY, duration, duration_within, mode, number_within, percent, whole, word, workers,
};
use super::{Config, ControlSocket};
use crate::credentials::Credentials;
use crate::policy::{
    OnCrash, OnMasterChange, OnVersionChange, ReadyMode, Reload, Strategy, Toggle,
};
use crate::socket::ListenerSpec;

/// Help headings.
pub const SOCKETS: &str = "Sockets";
/// Help heading of the worker options.
pub const WORKERS: &str = "Workers";
/// Help heading of the reload options.
pub const RELOADS: &str = "Reloads";
/// Help heading of the control options.
pub const CONTROL: &str = "Control";
/// Help heading of the resource monitor's options.
pub const MONITOR: &str = "Resource monitor";
/// Help heading of the logging options.
pub const LOGGING: &str = "Logging";

/// What an option takes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// One value, named so in the help (`--workers N`).
    Value(&'static str),
    /// One or more values, repeatable or comma-separated (`--listen A,B`).
    List(&'static str),
    /// No value: the flag stands for this text (`--no-monitor` is `off`); the environment
    /// twin takes the text itself (`MASTER_PROCESS_MONITOR=off`).
    Switch(&'static str),
}

/// What every option has, whatever its type. (The library reads only the environment
/// twins; the rest is for the command line.)
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub struct Meta {
    /// The long flag, without `--`.
    pub long: &'static str,
    /// The short flag, if any.
    pub short: Option<char>,
    /// The environment variables that give it, the first set one winning.
    pub env: &'static [&'static str],
    /// What the flag takes.
    pub takes: Takes,
    /// The default, as text (parsed like any other value); `None`: unset by default.
    pub default: Option<&'static str>,
    /// Says what the default is when it is not a plain value (`the kernel's somaxconn`).
    pub default_help: Option<&'static str>,
    /// The help section.
    pub heading: &'static str,
    /// The help: its first sentence is the short help.
    pub help: &'static str,
}

impl Meta {
    /// A meta with nothing set, for `..Meta::NONE`.
    pub const NONE: Meta = Meta {
        long: "",
        short: None,
        env: &[],
        takes: Takes::Value("VALUE"),
        default: None,
        default_help: None,
        heading: WORKERS,
        help: "",
    };
}

/// One option with a value of type `T`.
pub struct Opt<T: 'static> {
    /// Its flag, variables, default and help.
    pub meta: Meta,
    /// Reads a value (syntax only).
    pub parse: fn(&str) -> Result<T, String>,
    /// Checks a value's range (for values from text and from the library alike).
    pub check: fn(&T) -> Result<(), String>,
    /// Stores a value in the configuration.
    pub set: fn(&mut Config, T),
}

/// An option, whatever the type of its value.
pub trait Declared: Sync {
    /// Its flag, variables, default and help.
    fn meta(&self) -> &Meta;
    /// Parses `text`, checks it and stores it in `config`; the error says why not.
    fn apply(&self, config: &mut Config, text: &str) -> Result<(), String>;
}

impl<T: 'static> Declared for Opt<T> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn apply(&self, config: &mut Config, text: &str) -> Result<(), String> {
        let value = (self.parse)(text)?;
        (self.check)(&value)?;
        (self.set)(config, value);
        Ok(())
    }
}

impl<T: 'static> Opt<T> {
    /// Checks a typed `value` (from the library) and stores it.
    pub fn apply_value(&self, config: &mut Config, value: T) -> Result<(), String> {
        (self.check)(&value)?;
        (self.set)(config, value);
        Ok(())
    }
}

fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

fn toggle(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => word::<Toggle>(s).map(|t| t == Toggle::On),
    }
}

/// `--listen`.
pub const LISTEN: Opt<Vec<ListenerSpec>> = Opt {
    meta: Meta {
        long: "listen",
        short: Some('l'),
        env: &["MASTER_PROCESS_LISTEN"],
        takes: Takes::List("SPEC"),
        default_help: Some("$PORT"),
        heading: SOCKETS,
        help: "Socket to listen on: PORT, ADDR:PORT, [V6ADDR]:PORT or a unix socket path, \
               optionally named NAME=SPEC; repeatable or comma-separated",
        ..Meta::NONE
    },
    parse: |s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    },
    check: any,
    set: |c, v| c.listen = v,
};

/// `--port` / `PORT`.
pub const PORT: Opt<ListenerSpec> = Opt {
    meta: Meta {
        long: "port",
        env: &["PORT"],
        takes: Takes::Value("PORT"),
        heading: SOCKETS,
        help: "The one listener when --listen is not given: a port, or a unix socket path \
               starting with / (the reference's PORT)",
        ..Meta::NONE
    },
    parse: ListenerSpec::from_port_env,
    check: any,
    set: |c, v| c.port = Some(v),
};

/// `--socket-mode`.
pub const SOCKET_MODE: Opt<u32> = Opt {
    meta: Meta {
        long: "socket-mode",
        env: &["MASTER_PROCESS_SOCKET_MODE"],
        takes: Takes::Value("MODE"),
        default: Some("0664"),
        heading: SOCKETS,
        help: "Permission bits of unix socket files, set when they are created",
        ..Meta::NONE
    },
    parse: mode,
    check: |m| number_within(m, 0, 0o777),
    set: |c, v| c.socket_mode = v,
};

/// `--backlog`.
pub const BACKLOG: Opt<u32> = Opt {
    meta: Meta {
        long: "backlog",
        env: &["MASTER_PROCESS_BACKLOG"],
        takes: Takes::Value("N"),
        default_help: Some("the kernel's net.core.somaxconn"),
        heading: SOCKETS,
        help: "Length of each listener's accept queue; no worker can make it shorter",
        ..Meta::NONE
    },
    parse: |s| whole(s, "connections"),
    check: |n| number_within(n, 1, 1 << 20),
    set: |c, v| c.backlog = Some(v),
};

/// `--adopt`.
pub const ADOPT: Opt<bool> = Opt {
    meta: Meta {
        long: "adopt",
        env: &["MASTER_PROCESS_ADOPT"],
        takes: Takes::Value("on|off"),
        default: Some("on"),
        heading: SOCKETS,
        help: "An app that binds its port itself gets the master's socket instead (seccomp \
               user notification; Linux 5.9): `on` where the kernel allows it, or `off`",
        ..Meta::NONE
    },
    parse: toggle,
    check: any,
    set: |c, v| c.adopt = v,
};

/// `--workers` / `WORKERS`.
pub const WORKER_COUNT: Opt<usize> = Opt {
    meta: Meta {
        long: "workers",
        short: Some('w'),
        env: &["WORKERS"],
        takes: Takes::Value("N"),
        default: Some("1"),
        heading: WORKERS,
        help: "Number of workers: a number, MAX (one per core) or AUTO (cores - 1, at least 1)",
        ..Meta::NONE
    },
    parse: workers,
    check: |n| number_within(n, 1, 1024),
    set: |c, v| c.supervisor.workers = v,
};

/// `--ready`.
pub const READY: Opt<ReadyMode> = Opt {
    meta: Meta {
        long: "ready",
        env: &["MASTER_PROCESS_READY"],
        takes: Takes::Value("MODE"),
        default: Some("listening"),
        heading: WORKERS,
        help: "How a new worker is known to be ready: `listening` (seen waiting on every \
               listening socket; `listening:any`: on one), `notify` (it sends READY=1 on \
               NOTIFY_SOCKET) or `delay:DUR` (it stayed alive that long)",
        ..Meta::NONE
    },
    parse: word,
    check: |m| match m.delay() {
        Some(d) => duration_within(&d, Duration::ZERO, ReadyMode::MAX_DELAY),
        None => Ok(()),
    },
    set: |c, v| c.supervisor.ready = v,
};

/// `--ready-timeout`.
pub const READY_TIMEOUT: Opt<Duration> = Opt {
    meta: Meta {
        long: "ready-timeout",
        env: &["MASTER_PROCESS_READY_TIMEOUT"],
        takes: Takes::Value("DUR"),
        default: Some("60s"),
        heading: WORKERS,
        help: "How long a new worker may take to become ready before the reload fails",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::from_millis(100), DAY),
    set: |c, v| c.supervisor.ready_timeout = v,
};

/// `--kill-timeout` / `MAX_KILL_TIMEOUT`.
pub const KILL_TIMEOUT: Opt<Duration> = Opt {
    meta: Meta {
        long: "kill-timeout",
        env: &["MAX_KILL_TIMEOUT"],
        takes: Takes::Value("DUR"),
        default: Some("5s"),
        heading: WORKERS,
        help: "How long a worker may drain after SIGTERM before its process group gets \
               SIGKILL (a bare number is milliseconds)",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::ZERO, DAY),
    set: |c, v| c.supervisor.kill_timeout = v,
};

/// `--throttle` / `WORKER_THROTTLE`.
pub const THROTTLE: Opt<Duration> = Opt {
    meta: Meta {
        long: "throttle",
        env: &["WORKER_THROTTLE"],
        takes: Takes::Value("DUR"),
        default: Some("1s"),
        heading: WORKERS,
        help: "A worker that crashes sooner than this after its start is restarted only once \
               this much time has passed since its start (a bare number is milliseconds)",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::ZERO, DAY),
    set: |c, v| c.supervisor.throttle = v,
};

/// `--max-backoff`.
pub const MAX_BACKOFF: Opt<Duration> = Opt {
    meta: Meta {
        long: "max-backoff",
        env: &["MASTER_PROCESS_MAX_BACKOFF"],
        takes: Takes::Value("DUR"),
        default: Some("30s"),
        heading: WORKERS,
        help: "The longest restart delay of a crash-looping worker: the delay doubles from \
               WORKER_THROTTLE at each crash in a row, up to this; a worker that stays up this \
               long resets the count",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::ZERO, DAY),
    set: |c, v| c.supervisor.max_backoff = v,
};

/// `--on-crash`.
pub const ON_CRASH: Opt<OnCrash> = Opt {
    meta: Meta {
        long: "on-crash",
        env: &["MASTER_PROCESS_ON_CRASH"],
        takes: Takes::Value("ACTION"),
        default: Some("restart"),
        heading: WORKERS,
        help: "What a worker crash does: `restart` it, or `exit` (stop the others and exit \
               with the worker's code, for a service manager that restarts)",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.supervisor.on_crash = v,
};

/// `--on-version-change`.
pub const ON_VERSION_CHANGE: Opt<OnVersionChange> = Opt {
    meta: Meta {
        long: "on-version-change",
        env: &["MASTER_PROCESS_ON_VERSION_CHANGE"],
        takes: Takes::Value("ACTION"),
        default: Some("log"),
        heading: WORKERS,
        help: "What a reload to workers built with another master-process version does: `log`, \
               or `exit` with code 1 once they are ready (for a service manager that restarts)",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.on_version_change = v,
};

/// `--user`.
pub const USER: Opt<Credentials> = Opt {
    meta: Meta {
        long: "user",
        short: Some('u'),
        env: &["MASTER_PROCESS_USER"],
        takes: Takes::Value("USER[:GROUP]"),
        heading: WORKERS,
        help: "Run the workers as this user (and group; default: the user's own), set by the \
               master between fork and exec so that they still die with it; needs root",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.user = Some(v),
};

/// `--node-drain`.
pub const NODE_DRAIN: Opt<bool> = Opt {
    meta: Meta {
        long: "node-drain",
        env: &["MASTER_PROCESS_NODE_DRAIN"],
        takes: Takes::Value("on|off"),
        default: Some("on"),
        heading: WORKERS,
        help: "In Node.js workers, an app with no SIGTERM handler of its own stops gracefully: \
               no new connections, in-flight requests finish, keep-alive ones close \
               (NODE_OPTIONS=--require of a preload)",
        ..Meta::NONE
    },
    parse: toggle,
    check: any,
    set: |c, v| c.node_drain = v,
};

/// `--no-subreaper`.
pub const SUBREAPER: Opt<bool> = Opt {
    meta: Meta {
        long: "no-subreaper",
        env: &["MASTER_PROCESS_SUBREAPER"],
        takes: Takes::Switch("off"),
        default: Some("on"),
        heading: WORKERS,
        help: "Do not adopt the orphaned descendants of workers (by default the master is \
               their subreaper: it reaps them, and stops them when it stops; always so as PID 1)",
        ..Meta::NONE
    },
    parse: toggle,
    check: any,
    set: |c, v| c.subreaper = v,
};

/// `--reload`.
pub const RELOAD: Opt<Reload> = Opt {
    meta: Meta {
        long: "reload",
        env: &["MASTER_PROCESS_RELOAD"],
        takes: Takes::Value("HOW"),
        default: Some("parallel"),
        heading: RELOADS,
        help: "How a reload replaces the workers: `parallel` (every slot at once, the \
               reference) or `rolling` (--max-surge at a time)",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.supervisor.strategy = Strategy::new(v, c.max_surge),
};

/// `--max-surge`.
pub const MAX_SURGE: Opt<usize> = Opt {
    meta: Meta {
        long: "max-surge",
        env: &["MASTER_PROCESS_MAX_SURGE"],
        takes: Takes::Value("N"),
        default: Some("1"),
        heading: RELOADS,
        help: "With --reload rolling: new workers, plus the old ones they replace while these \
               drain, at most at once",
        ..Meta::NONE
    },
    parse: |s| whole(s, "workers"),
    check: |n| number_within(n, 1, 1024),
    set: |c, v| {
        c.max_surge = v;
        c.supervisor.strategy = Strategy::new(c.supervisor.strategy.reload(), v);
    },
};

/// `--canary`.
pub const CANARY: Opt<Duration> = Opt {
    meta: Meta {
        long: "canary",
        env: &["MASTER_PROCESS_CANARY"],
        takes: Takes::Value("DUR"),
        heading: RELOADS,
        help: "The first new worker of a reload must stay ready this long, its old worker still \
               serving, before the others follow; if it fails, the reload stops there",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::ZERO, DAY),
    set: |c, v| c.supervisor.canary = Some(v).filter(|d| !d.is_zero()),
};

/// `--on-master-change`.
pub const ON_MASTER_CHANGE: Opt<OnMasterChange> = Opt {
    meta: Meta {
        long: "on-master-change",
        env: &["MASTER_PROCESS_ON_MASTER_CHANGE"],
        takes: Takes::Value("ACTION"),
        default: Some("log"),
        heading: RELOADS,
        help: "What a reload does when the master's own executable changed on disk: `log` it, \
               `upgrade` the master in place first, or `exit` with code 1 (the reference's \
               behaviour)",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.on_master_change = v,
};

/// `--control`.
pub const CONTROL_SOCKET: Opt<ControlSocket> = Opt {
    meta: Meta {
        long: "control",
        env: &["MASTER_PROCESS_CONTROL"],
        takes: Takes::Value("PATH"),
        default_help: Some(
            "NAME.sock in $XDG_RUNTIME_DIR/master-process, /run/master-process for root, \
                            or master-process-UID in the temp folder",
        ),
        heading: CONTROL,
        help: "The control socket (`master-process reload|status|stop|signal`), or `off`",
        ..Meta::NONE
    },
    parse: |s| match s.trim() {
        "" => Err("expected a socket path or `off`".into()),
        t if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") => {
            Ok(ControlSocket::Off)
        }
        t => Ok(ControlSocket::At(PathBuf::from(t))),
    },
    check: any,
    set: |c, v| c.control = v,
};

/// `--name`.
pub const NAME: Opt<String> = Opt {
    meta: Meta {
        long: "name",
        env: &["MASTER_PROCESS_NAME"],
        takes: Takes::Value("NAME"),
        default_help: Some("the command's file name"),
        heading: CONTROL,
        help: "This master's name: its control socket is NAME.sock, and control commands find \
               it by this name (letters, digits, `.`, `_`, `-`)",
        ..Meta::NONE
    },
    parse: |s| Ok(s.trim().to_string()),
    check: |n| super::check_name(n),
    set: |c, v| c.name = Some(v),
};

/// `--metrics`.
pub const METRICS: Opt<ListenerSpec> = Opt {
    meta: Meta {
        long: "metrics",
        env: &["MASTER_PROCESS_METRICS"],
        takes: Takes::Value("ADDR"),
        heading: CONTROL,
        help: "Serve Prometheus metrics at GET /metrics on this address: PORT, ADDR:PORT or a \
               unix socket path (e.g. 127.0.0.1:9100)",
        ..Meta::NONE
    },
    parse: str::parse,
    check: any,
    set: |c, v| c.metrics = Some(v),
};

/// `--max-memory` / `MAX_MEMORY_ALLOWED_MB`.
pub const MAX_MEMORY: Opt<u64> = Opt {
    meta: Meta {
        long: "max-memory",
        env: &["MAX_MEMORY_ALLOWED_MB"],
        takes: Takes::Value("MB"),
        default: Some("1200"),
        heading: MONITOR,
        help: "Replace a worker (with its descendants) using more resident memory than this \
               many MiB for --memory-failures samples in a row",
        ..Meta::NONE
    },
    parse: |s| whole(s, "MiB"),
    check: |n| number_within(n, 1, 1 << 24),
    set: |c, v| c.monitor.max_memory_mb = v,
};

/// `--max-cpu` / `MAX_CPU_ALLOWED`.
pub const MAX_CPU: Opt<f64> = Opt {
    meta: Meta {
        long: "max-cpu",
        env: &["MAX_CPU_ALLOWED"],
        takes: Takes::Value("PCT"),
        default: Some("95"),
        heading: MONITOR,
        help: "Replace a worker using more CPU than this percentage of one core for \
               --cpu-failures samples in a row",
        ..Meta::NONE
    },
    parse: percent,
    check: |p| number_within(p, 0.1, 100.0 * 4096.0),
    set: |c, v| c.monitor.max_cpu_pct = v,
};

/// `--memory-failures` / `MEM_MONITOR_FAILURES`.
pub const MEMORY_FAILURES: Opt<u32> = Opt {
    meta: Meta {
        long: "memory-failures",
        env: &["MEM_MONITOR_FAILURES"],
        takes: Takes::Value("N"),
        default: Some("10"),
        heading: MONITOR,
        help: "Samples over the memory limit in a row that replace a worker",
        ..Meta::NONE
    },
    parse: |s| whole(s, "samples"),
    check: |n| number_within(n, 1, 1_000_000),
    set: |c, v| c.monitor.memory_failures = v,
};

/// `--cpu-failures` / `CPU_MONITOR_FAILURES`.
pub const CPU_FAILURES: Opt<u32> = Opt {
    meta: Meta {
        long: "cpu-failures",
        env: &["CPU_MONITOR_FAILURES", "CPU_MONITOR_FAILURE"],
        takes: Takes::Value("N"),
        default: Some("10"),
        heading: MONITOR,
        help: "Samples over the CPU limit in a row that replace a worker",
        ..Meta::NONE
    },
    parse: |s| whole(s, "samples"),
    check: |n| number_within(n, 1, 1_000_000),
    set: |c, v| c.monitor.cpu_failures = v,
};

/// `--monitor-interval`.
pub const MONITOR_INTERVAL: Opt<Duration> = Opt {
    meta: Meta {
        long: "monitor-interval",
        env: &["MASTER_PROCESS_MONITOR_INTERVAL"],
        takes: Takes::Value("DUR"),
        default: Some("2s"),
        heading: MONITOR,
        help: "Time between two samples of each worker's memory and CPU",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::from_millis(10), DAY),
    set: |c, v| c.monitor.interval = v,
};

/// `--monitor-grace`.
pub const MONITOR_GRACE: Opt<Duration> = Opt {
    meta: Meta {
        long: "monitor-grace",
        env: &["MASTER_PROCESS_MONITOR_GRACE"],
        takes: Takes::Value("DUR"),
        default: Some("30s"),
        heading: MONITOR,
        help: "Time after a worker starts before it is sampled (JIT warm-up)",
        ..Meta::NONE
    },
    parse: duration,
    check: |d| duration_within(d, Duration::ZERO, DAY),
    set: |c, v| c.monitor.grace = v,
};

/// `--no-monitor`.
pub const MONITOR_SWITCH: Opt<bool> = Opt {
    meta: Meta {
        long: "no-monitor",
        env: &["MASTER_PROCESS_MONITOR"],
        takes: Takes::Switch("off"),
        default: Some("on"),
        heading: MONITOR,
        help: "No resource monitor",
        ..Meta::NONE
    },
    parse: toggle,
    check: any,
    set: |c, v| c.monitor_on = v,
};

/// `-v`, `--verbose`.
pub const VERBOSE: Opt<bool> = Opt {
    meta: Meta {
        long: "verbose",
        short: Some('v'),
        takes: Takes::Switch("on"),
        default: Some("off"),
        heading: LOGGING,
        help: "Debug lines on stderr (also DEBUG=master-process)",
        ..Meta::NONE
    },
    parse: toggle,
    check: any,
    set: |c, v| c.verbose = v,
};

/// `--log-format`.
pub const LOG_FORMAT: Opt<crate::policy::LogFormat> = Opt {
    meta: Meta {
        long: "log-format",
        env: &["MASTER_PROCESS_LOG_FORMAT"],
        takes: Takes::Value("FORMAT"),
        default: Some("text"),
        heading: LOGGING,
        help: "`text` for people, or `json`: one object per line with time, level, message and \
               every field",
        ..Meta::NONE
    },
    parse: word,
    check: any,
    set: |c, v| c.log_format = v,
};

/// Every option, in the order of `--help`.
pub static ALL: &[&dyn Declared] = &[
    &LISTEN,
    &PORT,
    &SOCKET_MODE,
    &BACKLOG,
    &ADOPT,
    &WORKER_COUNT,
    &READY,
    &READY_TIMEOUT,
    &KILL_TIMEOUT,
    &THROTTLE,
    &ON_CRASH,
    &ON_VERSION_CHANGE,
    &MAX_BACKOFF,
    &USER,
    &NODE_DRAIN,
    &SUBREAPER,
    &RELOAD,
    &MAX_SURGE,
    &CANARY,
    &ON_MASTER_CHANGE,
    &CONTROL_SOCKET,
    &NAME,
    &METRICS,
    &MAX_MEMORY,
    &MAX_CPU,
    &MEMORY_FAILURES,
    &CPU_FAILURES,
    &MONITOR_INTERVAL,
    &MONITOR_GRACE,
    &MONITOR_SWITCH,
    &VERBOSE,
    &LOG_FORMAT,
];
