//! One worker process as the supervisor sees it: where it stands in its lifecycle, and
//! which part it plays in its slot.
//!
//! A *slot* is a worker index (`WORKER_INDEX`, 0..N). At any time a slot has at most one
//! [`Role::Serving`] worker, and during a reload one [`Role::Candidate`] waiting to take over.
//! Workers on their way out are [`Role::Retired`].

use std::fmt;
use std::time::Instant;

use crate::signals::signal_name;

/// A process id.
pub type Pid = u32;

/// A live worker process (spawned, not yet reaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Its pid, which is also its process group id.
    pub pid: Pid,
    /// Its slot: `WORKER_INDEX`.
    pub index: usize,
    /// The reload that started it: `RELOAD_INDEX`.
    pub generation: u64,
    /// The part it plays in its slot.
    pub role: Role,
    /// Where it stands in its lifecycle.
    pub state: WorkerState,
    /// When it was started.
    pub started: Instant,
}

/// The part a worker plays in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The slot's worker: restarted if it exits.
    Serving,
    /// Started by a reload; takes the slot over once ready. If it fails, the reload fails.
    Candidate,
    /// Started to replace the slot's serving worker alone (the resource monitor); takes the
    /// slot over once ready. If it fails, the old worker keeps serving.
    Replacement,
    /// On its way out (replaced, aborted, or the master is stopping); its exit is expected.
    Retired,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Serving,
        Role::Candidate,
        Role::Replacement,
        Role::Retired,
    ];

    /// Its name in status, logs and the upgrade handover.
    pub fn name(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Candidate => "new",
            Role::Replacement => "replacement",
            Role::Retired => "retiring",
        }
    }

    /// The role of this [`Role::name`].
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A worker's lifecycle.
///
/// ```text
/// Starting ──ready──▶ Ready ──SIGTERM──▶ Stopping ──MAX_KILL_TIMEOUT──▶ Killed
///     │                                     ▲                            │
///     └────────────────SIGTERM──────────────┘        (exit, any state: reaped and removed)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, not ready yet.
    Starting {
        /// Fails the worker if it is not ready by then (`--ready-timeout`).
        deadline: Instant,
        /// Ready at this time if still alive (`--ready delay:`).
        ready_at: Option<Instant>,
    },
    /// Ready: serving connections.
    Ready {
        /// When it became ready.
        since: Instant,
    },
    /// Sent SIGTERM; draining.
    Stopping {
        /// When its process group gets SIGKILL.
        kill_at: Instant,
    },
    /// Its process group was sent SIGKILL; waiting to be reaped.
    Killed,
}

impl WorkerState {
    /// A short name for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Starting { .. } => "starting",
            WorkerState::Ready { .. } => "ready",
            WorkerState::Stopping { .. } => "stopping",
            WorkerState::Killed => "killed",
        }
    }

    /// Whether the worker was asked to exit (SIGTERM or SIGKILL).
    pub fn is_stopping(&self) -> bool {
        matches!(self, WorkerState::Stopping { .. } | WorkerState::Killed)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
        }
    }
}
