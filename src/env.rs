//! The environment variables that carry master-process's protocols: what the master tells
//! its workers, its next image (an upgrade in place) and itself across the spawn shim, and
//! what the service manager tells the master. One definition each.
//!
//! The *options* (`WORKERS`, `MAX_KILL_TIMEOUT`, ...) are declared with their flags in
//! [`crate::config`]; this module holds the variables that are not options.

/// systemd's socket activation: how many sockets, from fd 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// systemd's socket activation: the pid the sockets are for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// systemd's socket activation: the sockets' names, `:`-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Where to send `READY=1`: the master's socket in a worker, the service manager's in the
/// master.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The service manager's watchdog period, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid the watchdog period is for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Set in every worker: what tells `init()` it runs in a worker.
pub const WORKER: &str = "MASTER_PROCESS_WORKER";
/// A worker's master (the reference's name).
pub const PPID: &str = "PPID";
/// A worker's slot, 0..N (the reference's name).
pub const WORKER_INDEX: &str = "WORKER_INDEX";
/// A worker's generation: 0, then +1 per reload (the reference's name).
pub const RELOAD_INDEX: &str = "RELOAD_INDEX";

/// `off` or `test`: `init()` runs the app as one process.
pub const STANDALONE: &str = "MASTER_PROCESS";
/// The pid of the process that started the master and that it must die with (the npm
/// package, on Node.js versions that cannot replace their process).
pub const PARENT_PID: &str = "MASTER_PROCESS_PARENT_PID";

/// Set in the intermediate process of a spawn, which sets `LISTEN_PID` and execs the
/// worker command (see [`crate::spawn`]).
pub const EXEC: &str = "__MASTER_PROCESS_EXEC";
/// The state handed to the master's next image (see [`crate::upgrade`]).
pub const UPGRADE_STATE: &str = "__MASTER_PROCESS_UPGRADE";
/// The descriptor of the previous executable, for the way back.
pub const UPGRADE_FROM: &str = "__MASTER_PROCESS_UPGRADE_FROM";
/// The previous image's own arguments, percent-encoded and space-separated: what the way
/// back runs it with (the new image may have been started with others).
pub const UPGRADE_ARGV: &str = "__MASTER_PROCESS_UPGRADE_ARGV";
/// Set when the image resuming from [`UPGRADE_STATE`] is the previous one, back after a
/// failed upgrade: why the upgrade failed.
pub const UPGRADE_ROLLBACK: &str = "__MASTER_PROCESS_ROLLBACK";
/// Set when the master runs a new executable to check that it would start.
pub const PREFLIGHT: &str = "__MASTER_PROCESS_PREFLIGHT";

/// Variables of the master's own environment that must not reach workers: the master's
/// socket activation, service manager and upgrade settings are its own.
pub const MASTER_ONLY: [&str; 12] = [
    UPGRADE_STATE,
    UPGRADE_FROM,
    UPGRADE_ARGV,
    UPGRADE_ROLLBACK,
    PREFLIGHT,
    PARENT_PID,
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    WATCHDOG_PID,
];

/// The value of `name`, if set and not empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
