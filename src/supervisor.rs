//! The supervisor: the master's decisions as an explicit state machine.
//!
//! It owns no file descriptor and reads no clock. Events come in ([`Supervisor::on_signal`],
//! [`Supervisor::on_exit`], [`Supervisor::on_ready`], [`Supervisor::on_tick`],
//! [`Supervisor::request_reload`], [`Supervisor::stop`]) with the current time; effects go
//! out through the narrow [`Os`] trait (start a worker, send a signal), and what the outside
//! world may want to hear about (a reload ended) as [`Notice`]s. The master loop
//! ([`crate::master`]) feeds it real events; unit tests feed it a fake clock and a recording
//! fake `Os`.
//!
//! # Rules
//! - **Slots.** There are `workers` slots (`WORKER_INDEX`). After every event the supervisor
//!   *reconciles*: a slot with no serving worker and no candidate gets a restart, at the
//!   earliest one *backoff* after the slot's last start. The first crash waits
//!   `WORKER_THROTTLE` (the reference's rule); each further crash in a row doubles it, up to
//!   `--max-backoff`; a worker that stays up that long resets the count.
//! - **Reload** (SIGHUP, or `master-process reload`): each slot gets a candidate with the
//!   next `RELOAD_INDEX`; all at once ([`Strategy::Parallel`]), or a few at a time
//!   ([`Strategy::Rolling`]: candidates plus the workers they replace, still draining, never
//!   exceed `--max-surge`). An optional canary goes first, alone, and must stay ready for the
//!   canary time (its old worker still serving) before the rest follow. When a candidate is
//!   ready it becomes the slot's serving worker and the old one is retired (SIGTERM, then
//!   SIGKILL after `MAX_KILL_TIMEOUT`). The first candidate that exits or misses the ready
//!   timeout fails the reload: no further old worker is retired, the other candidates are
//!   stopped, and the old workers keep serving. A reload ends when its candidates are
//!   serving or gone and the workers it retired have exited; reload requests meanwhile are
//!   coalesced into one more reload.
//! - **Crash**: a serving worker that exits unexpectedly is restarted (see Slots), or with
//!   `--on-crash exit` the master stops and exits with its code.
//! - **Stop** (SIGTERM, SIGINT): SIGTERM to every worker, SIGKILL after `MAX_KILL_TIMEOUT`;
//!   a second stop kills at once. The phase becomes [`Phase::Exited`] once every worker
//!   process group is gone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::policy::{OnCrash, ReadyMode, Strategy};
use crate::signals::Signal;
use crate::worker::{ExitStatus, Pid, Role, Worker, WorkerState};

/// The effects the supervisor has on the world.
pub trait Os {
    /// Starts a worker for slot `index` with `RELOAD_INDEX` = `generation`; returns its pid.
    fn spawn(&mut self, index: usize, generation: u64) -> Result<Pid, SpawnError>;
    /// Sends `signal` to a process or a process group. Failures are logged, not returned:
    /// the target may have exited already, which the supervisor learns from its exit event.
    fn signal(&mut self, target: Target, signal: Signal);
    /// Whether any process is left in process group `pgid`.
    fn group_alive(&mut self, pgid: Pid) -> bool;
    /// Why readiness could not be seen for worker `pid`, if known (for the timeout message).
    fn readiness_problem(&self, _pid: Pid) -> Option<String> {
        None
    }
    /// What may make workers crash in a loop, if the OS side knows a likely cause (said once
    /// per crash loop).
    fn crash_hint(&self) -> Option<String> {
        None
    }
}

/// Why a worker could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// Out of processes, memory or descriptors (`EAGAIN`, `ENOMEM`, `EMFILE`): it may work
    /// later.
    #[error("out of resources: {0}")]
    Exhausted(String),
    /// The command cannot be run (`ENOENT`, `EACCES`, `ENOEXEC`): it was removed or broken.
    #[error("cannot run the command: {0}")]
    Command(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Who a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One process.
    Process(Pid),
    /// Every process in a worker's process group.
    Group(Pid),
}

/// The settings the supervisor decides with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Number of slots.
    pub workers: usize,
    /// `WORKER_THROTTLE`: the first crash's restart delay, the base of the backoff.
    pub throttle: Duration,
    /// `--max-backoff`: the longest restart delay, and how long a worker must stay up to
    /// reset its slot's crash count.
    pub max_backoff: Duration,
    /// `MAX_KILL_TIMEOUT`.
    pub kill_timeout: Duration,
    /// Readiness mode.
    pub ready: ReadyMode,
    /// `--ready-timeout`.
    pub ready_timeout: Duration,
    /// `--on-crash`.
    pub on_crash: OnCrash,
    /// `--reload` and `--max-surge`.
    pub strategy: Strategy,
    /// `--canary`: how long the first new worker must stay ready before the rest follow.
    pub canary: Option<Duration>,
}

/// The master's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first workers are starting.
    Starting,
    /// Every slot has had a ready worker; serving.
    Running,
    /// Stopping: every worker was sent SIGTERM. The master then exits with `code`.
    Stopping {
        /// The exit code once every worker is gone.
        code: i32,
    },
    /// Every worker is gone; the master exits with this code.
    Exited(i32),
}

impl Phase {
    /// A short name for status.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Exited(_) => "exited",
        }
    }
}

/// A reload in flight.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The `RELOAD_INDEX` of its candidates.
    pub generation: u64,
    /// When it began.
    pub started: Instant,
    /// Why it failed, once it has.
    pub failure: Option<Failure>,
    /// Workers it asked to exit (replaced old workers, aborted candidates).
    pub retiring: Vec<Pid>,
    /// Slots whose candidate has not been started yet.
    pub pending: VecDeque<usize>,
    /// Where the canary stands.
    pub canary: Canary,
}

/// The canary of a reload: its first new worker, alone until it has stayed ready a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canary {
    /// No canary for this reload, or it passed: the rest follow.
    Off,
    /// The canary is starting; it must then stay ready this long.
    Starting(Duration),
    /// The canary `pid` is ready; its old worker still serves until `until`.
    Watching {
        /// The canary.
        pid: Pid,
        /// When it has proven itself.
        until: Instant,
    },
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Its `RELOAD_INDEX`.
    pub generation: u64,
    /// `None` if it succeeded, else why it failed.
    pub failure: Option<Failure>,
    /// How long it took.
    pub took: Duration,
    /// Who serves now, by slot.
    pub serving: Vec<Serving>,
}

/// Something the outside world may want to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Every slot had a ready worker for the first time.
    Running,
    /// A reload began.
    ReloadStarted(u64),
    /// A reload ended.
    ReloadEnded(ReloadOutcome),
    /// The master began to stop.
    Stopping,
    /// Something happened to a worker (for metrics and the event stream).
    Worker(WorkerEvent),
}

/// Something that happened to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEvent {
    /// The worker.
    pub pid: Pid,
    /// Its slot.
    pub index: usize,
    /// Its `RELOAD_INDEX`.
    pub generation: u64,
    /// Its role when it happened.
    pub role: Role,
    /// What happened.
    pub kind: WorkerEventKind,
}

impl WorkerEvent {
    /// That `kind` happened to `w`, as it is now.
    fn of(w: &Worker, kind: WorkerEventKind) -> WorkerEvent {
        WorkerEvent {
            pid: w.pid,
            index: w.index,
            generation: w.generation,
            role: w.role,
            kind,
        }
    }
}

/// What happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEventKind {
    /// It was started.
    Started,
    /// It became ready, this long after it started.
    Ready(Duration),
    /// It was asked to stop (SIGTERM).
    Stopping,
    /// It outlived `MAX_KILL_TIMEOUT`: SIGKILL to its group.
    Killed,
    /// It was reaped; `expected` unless it crashed (a serving worker that was not asked to
    /// stop, or a new worker before it was ready).
    Exited {
        /// How.
        status: ExitStatus,
        /// Whether it was asked to stop (or was on its way out).
        expected: bool,
    },
}

impl WorkerEventKind {
    /// Its name in the event stream.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerEventKind::Started => "worker_started",
            WorkerEventKind::Ready(_) => "worker_ready",
            WorkerEventKind::Stopping => "worker_stopping",
            WorkerEventKind::Killed => "worker_killed",
            WorkerEventKind::Exited { .. } => "worker_exited",
        }
    }
}

/// What the supervisor keeps per slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    /// When its last worker was started.
    pub last_start: Option<Instant>,
    /// When its pending restart is due.
    pub restart_at: Option<Instant>,
    /// Crashes in a row (reset once a worker stays up `--max-backoff`).
    pub crashes: u32,
    /// Restarts after a crash, in all.
    pub restarts: u32,
}

/// Why a reload failed: its kind (for counting) and the line that says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// One line for people.
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The kinds of reload failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// A new worker exited before it was ready.
    Exited,
    /// A new worker was not ready within `--ready-timeout`.
    NotReady,
    /// The canary exited during its canary time.
    Canary,
    /// A new worker could not be started.
    Spawn,
    /// A new worker's bind of a held address was refused.
    Refused,
    /// The master began to stop.
    Abandoned,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Exited,
        FailureKind::NotReady,
        FailureKind::Canary,
        FailureKind::Spawn,
        FailureKind::Refused,
        FailureKind::Abandoned,
    ];

    /// Its name in metrics, status and the handover.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Exited => "exited",
            FailureKind::NotReady => "not_ready",
            FailureKind::Canary => "canary",
            FailureKind::Spawn => "spawn",
            FailureKind::Refused => "refused",
            FailureKind::Abandoned => "abandoned",
        }
    }

    /// The kind of this [`FailureKind::name`].
    pub fn from_name(name: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A slot's serving worker, in a [`ReloadOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Serving {
    /// The slot.
    pub index: usize,
    /// The worker.
    pub pid: Pid,
    /// Its `RELOAD_INDEX`.
    pub generation: u64,
}

/// Reloads that ended, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReloadCounts {
    /// Succeeded.
    pub done: u64,
    /// Failed (or abandoned).
    pub failed: u64,
}

/// The supervisor's state, for a master upgraded in place: times are relative to the moment
/// the snapshot was taken (ages in the past, delays to the future).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The newest `RELOAD_INDEX`.
    pub generation: u64,
    /// Reloads done and failed.
    pub reloads: ReloadCounts,
    /// How the last reload ended.
    pub last_reload: Option<ReloadOutcome>,
    /// Every worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Every slot, by index.
    pub slots: Vec<SlotSnapshot>,
}

/// A worker in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Its pid.
    pub pid: Pid,
    /// Its slot.
    pub index: usize,
    /// Its `RELOAD_INDEX`.
    pub generation: u64,
    /// Its role.
    pub role: Role,
    /// How long ago it started.
    pub age: Duration,
    /// Where it stands.
    pub state: StateSnapshot,
}

/// A [`WorkerState`] with its deadlines as delays from the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSnapshot {
    /// Starting: not ready within `deadline_in`, it fails; with `--ready delay:`, ready in
    /// `ready_in` if still alive.
    Starting {
        /// Time left to be ready.
        deadline_in: Duration,
        /// Time left until the delay makes it ready.
        ready_in: Option<Duration>,
    },
    /// Ready.
    Ready,
    /// Stopping: SIGKILL in `kill_in`.
    Stopping {
        /// Time left before SIGKILL.
        kill_in: Duration,
    },
    /// SIGKILLed, not reaped yet.
    Killed,
}

/// A [`Slot`] in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotSnapshot {
    /// Crashes in a row.
    pub crashes: u32,
    /// Restarts after a crash, in all.
    pub restarts: u32,
    /// How long ago its last worker started.
    pub last_start_ago: Option<Duration>,
    /// Time left until its pending restart.
    pub restart_in: Option<Duration>,
}

/// How many of the last reloads [`Supervisor::recent_reloads`] keeps.
pub const RECENT_RELOADS: usize = 10;

/// Crashes in a row from which a slot is said to be crash-looping.
pub const CRASH_LOOP: u32 = 3;

/// The least time between two attempts to start a worker after `fork` failed, and the
/// least base of the crash backoff, so that a crash loop never spins even with
/// `WORKER_THROTTLE=0`.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// How often a lingering process group is checked for emptiness.
const LINGER_CHECK: Duration = Duration::from_millis(100);

/// A process group left behind by a worker that exited, SIGKILLed at `kill_at` if still there.
#[derive(Debug, Clone, Copy)]
struct Lingering {
    pgid: Pid,
    kill_at: Instant,
    check_at: Instant,
}

/// The state machine. See the [module documentation](self) for the rules.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    phase: Phase,
    /// The `RELOAD_INDEX` of workers started now.
    generation: u64,
    workers: Vec<Worker>,
    slots: Vec<Slot>,
    reload: Option<Reload>,
    reload_queued: bool,
    reloads: ReloadCounts,
    /// The last [`RECENT_RELOADS`] reloads that ended, newest last.
    recent: VecDeque<ReloadOutcome>,
    lingering: Vec<Lingering>,
    notices: Vec<Notice>,
    /// When [`Supervisor::start`] ran: event times in logs are counted from it (`at_ms`).
    epoch: Option<Instant>,
}

impl Supervisor {
    /// A supervisor that has started nothing yet.
    pub fn new(settings: Settings) -> Self {
        let n = settings.workers;
        Supervisor {
            settings,
            phase: Phase::Starting,
            generation: 0,
            workers: Vec::new(),
            slots: vec![Slot::default(); n],
            reload: None,
            reload_queued: false,
            reloads: ReloadCounts::default(),
            recent: VecDeque::new(),
            lingering: Vec::new(),
            notices: Vec::new(),
            epoch: None,
        }
    }

    /// Starts the first workers.
    pub fn start(&mut self, os: &mut dyn Os, now: Instant) {
        self.epoch = Some(now);
        for index in 0..self.settings.workers {
            // A failed start leaves the slot empty: `settle` schedules its retry.
            let _ = self.spawn(os, index, Role::Serving, now);
        }
        self.settle(os, now);
    }

    /// The master's phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Every live worker process.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// The slots, by index.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The reload in flight, if any.
    pub fn reload(&self) -> Option<&Reload> {
        self.reload.as_ref()
    }

    /// Whether one more reload will start when the current one ends.
    pub fn reload_queued(&self) -> bool {
        self.reload_queued
    }

    /// How the last reload that ended, ended.
    pub fn last_reload(&self) -> Option<&ReloadOutcome> {
        self.recent.back()
    }

    /// The last reloads that ended (at most [`RECENT_RELOADS`]), newest first.
    pub fn recent_reloads(&self) -> impl Iterator<Item = &ReloadOutcome> {
        self.recent.iter().rev()
    }

    /// Reloads that succeeded and that failed, so far.
    pub fn reload_counts(&self) -> ReloadCounts {
        self.reloads
    }

    /// The `RELOAD_INDEX` of the newest generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What happened since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The next time [`Supervisor::on_tick`] has work to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let stable_at = |w: &Worker| {
            let slot = &self.slots[w.index];
            (w.role == Role::Serving && slot.crashes > 0)
                .then(|| later(w.started, self.settings.max_backoff))
        };
        let workers = self.workers.iter().flat_map(|w| match w.state {
            WorkerState::Starting { deadline, ready_at } => [Some(deadline), ready_at],
            WorkerState::Stopping { kill_at } => [Some(kill_at), None],
            WorkerState::Ready { .. } => [stable_at(w), None],
            WorkerState::Killed => [None, None],
        });
        let restarts = self.slots.iter().map(|s| s.restart_at);
        let lingering = self
            .lingering
            .iter()
            .map(|l| Some(l.check_at.min(l.kill_at)));
        let canary = self.reload.iter().map(|r| match r.canary {
            Canary::Watching { until, .. } => Some(until),
            _ => None,
        });
        workers
            .chain(restarts)
            .chain(lingering)
            .chain(canary)
            .flatten()
            .min()
    }

    /// The state to hand to the master's next image, or why it cannot be handed now.
    ///
    /// # Errors
    /// A reload is in flight, or the master is stopping.
    pub fn snapshot(&self, now: Instant) -> Result<Snapshot, &'static str> {
        if self.reload.is_some() {
            return Err("a reload is in flight; try again once it has ended");
        }
        if !matches!(self.phase, Phase::Running | Phase::Starting) {
            return Err("the master is stopping");
        }
        let ago = |t: Instant| now.saturating_duration_since(t);
        let until = |t: Instant| t.saturating_duration_since(now);
        let workers = self
            .workers
            .iter()
            .map(|w| WorkerSnapshot {
                pid: w.pid,
                index: w.index,
                generation: w.generation,
                role: w.role,
                age: ago(w.started),
                state: match w.state {
                    WorkerState::Starting { deadline, ready_at } => StateSnapshot::Starting {
                        deadline_in: until(deadline),
                        ready_in: ready_at.map(until),
                    },
                    WorkerState::Ready { .. } => StateSnapshot::Ready,
                    WorkerState::Stopping { kill_at } => StateSnapshot::Stopping {
                        kill_in: until(kill_at),
                    },
                    WorkerState::Killed => StateSnapshot::Killed,
                },
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .map(|s| SlotSnapshot {
                crashes: s.crashes,
                restarts: s.restarts,
                last_start_ago: s.last_start.map(ago),
                restart_in: s.restart_at.map(until),
            })
            .collect();
        Ok(Snapshot {
            generation: self.generation,
            reloads: self.reloads,
            last_reload: self.recent.back().cloned(),
            workers,
            slots,
        })
    }

    /// A supervisor that takes over from a [`Snapshot`] (a master upgraded in place): the
    /// workers it lists are adopted as they are, not restarted.
    pub fn restore(os: &mut dyn Os, settings: Settings, snap: Snapshot, now: Instant) -> Self {
        let mut sup = Supervisor::new(settings);
        sup.epoch = Some(now);
        sup.generation = snap.generation;
        sup.reloads = snap.reloads;
        sup.recent.extend(snap.last_reload);
        let back = |d: Duration| now.checked_sub(d).unwrap_or(now);
        for w in snap.workers {
            if w.index >= sup.slots.len() {
                // Fewer slots now: the extra worker is retired.
                warn!(
                    pid = w.pid,
                    index = w.index,
                    "adopted worker has no slot any more; stopping it"
                );
            }
            let state = match w.state {
                StateSnapshot::Starting {
                    deadline_in,
                    ready_in,
                } => WorkerState::Starting {
                    deadline: later(now, deadline_in),
                    ready_at: ready_in.map(|d| later(now, d)),
                },
                StateSnapshot::Ready => WorkerState::Ready { since: now },
                StateSnapshot::Stopping { kill_in } => WorkerState::Stopping {
                    kill_at: later(now, kill_in),
                },
                StateSnapshot::Killed => WorkerState::Killed,
            };
            let role = if w.index >= sup.slots.len() {
                Role::Retired
            } else {
                w.role
            };
            sup.workers.push(Worker {
                pid: w.pid,
                index: w.index,
                generation: w.generation,
                role,
                state,
                started: back(w.age),
            });
        }
        for (slot, snap) in sup.slots.iter_mut().zip(snap.slots) {
            slot.crashes = snap.crashes;
            slot.restarts = snap.restarts;
            slot.last_start = snap.last_start_ago.map(back);
            slot.restart_at = snap.restart_in.map(|d| later(now, d));
        }
        sup.phase = if sup.all_slots_ready() {
            Phase::Running
        } else {
            Phase::Starting
        };
        let retired: Vec<usize> = (0..sup.workers.len())
            .filter(|&p| {
                sup.workers[p].role == Role::Retired && !sup.workers[p].state.is_stopping()
            })
            .collect();
        for pos in retired {
            sup.stop_worker(os, pos, now);
        }
        sup.settle(os, now);
        sup
    }

    /// A signal reached the master.
    pub fn on_signal(&mut self, os: &mut dyn Os, signal: Signal, now: Instant) {
        match signal {
            Signal::Hangup => {
                let _ = self.request_reload(os, now);
            }
            Signal::Terminate | Signal::Interrupt => {
                info!(signal = signal.name(), "stop requested");
                self.stop(os, 0, now);
            }
            Signal::User2 => self.forward(os, Signal::User2),
            other => debug!(signal = other.name(), "signal ignored"),
        }
        self.settle(os, now);
    }

    /// Sends `signal` to every worker process (not yet killed).
    pub fn forward(&mut self, os: &mut dyn Os, signal: Signal) {
        for w in self
            .workers
            .iter()
            .filter(|w| w.state != WorkerState::Killed)
        {
            os.signal(Target::Process(w.pid), signal);
        }
        debug!(
            workers = self.workers.len(),
            signal = signal.name(),
            "signal forwarded"
        );
    }

    /// Replaces worker `pid` alone, gracefully: a new worker for its slot; once that one is
    /// ready, `pid` is stopped as in a reload. For the resource monitor.
    ///
    /// # Errors
    /// `pid` is not a ready serving worker, a reload is in flight (it replaces the worker
    /// anyway), or the slot is already being replaced.
    pub fn replace(
        &mut self,
        os: &mut dyn Os,
        pid: Pid,
        reason: &str,
        now: Instant,
    ) -> Result<Pid, String> {
        if !matches!(self.phase, Phase::Running | Phase::Starting) {
            return Err("the master is stopping".into());
        }
        if self.reload.is_some() {
            return Err("a reload is in flight".into());
        }
        let w = self
            .workers
            .iter()
            .find(|w| {
                w.pid == pid
                    && w.role == Role::Serving
                    && matches!(w.state, WorkerState::Ready { .. })
            })
            .ok_or_else(|| format!("worker {pid} is not a ready serving worker"))?;
        let index = w.index;
        if self
            .workers
            .iter()
            .any(|w| w.index == index && w.role == Role::Replacement)
        {
            return Err(format!("worker {index} is already being replaced"));
        }
        warn!(pid, index, "replacing worker: {reason}");
        self.spawn(os, index, Role::Replacement, now)
            .map_err(|e| e.to_string())
    }

    /// A reload was asked for: start it, or queue one more after the current one. Returns
    /// the `RELOAD_INDEX` of the reload that carries this request.
    ///
    /// # Errors
    /// The master is stopping.
    pub fn request_reload(&mut self, os: &mut dyn Os, now: Instant) -> Result<u64, &'static str> {
        let generation = match self.phase {
            Phase::Stopping { .. } | Phase::Exited(_) => {
                info!("reload ignored: the master is stopping");
                return Err("the master is stopping");
            }
            _ if self.reload.is_some() => {
                if !self.reload_queued {
                    info!("reload queued: it starts when the current one ends");
                }
                self.reload_queued = true;
                self.generation + 1
            }
            _ => {
                self.begin_reload(os, now);
                self.generation
            }
        };
        self.settle(os, now);
        Ok(generation)
    }

    /// Worker `pid` was reaped with `status`.
    pub fn on_exit(&mut self, os: &mut dyn Os, pid: Pid, status: ExitStatus, now: Instant) {
        let Some(pos) = self.workers.iter().position(|w| w.pid == pid) else {
            debug!(pid, %status, "reaped a process that is not a worker");
            return;
        };
        let w = self.workers.remove(pos);
        let expected = w.role == Role::Retired
            || w.role == Role::Replacement && w.state.is_stopping()
            || w.role == Role::Serving && w.state.is_stopping();
        let event = WorkerEvent::of(&w, WorkerEventKind::Exited { status, expected });
        self.notices.push(Notice::Worker(event));
        let lived = now.saturating_duration_since(w.started);
        self.watch_group(os, &w, now);
        match (w.role, w.state) {
            (Role::Retired, _) => {
                info!(pid, index = w.index, generation = w.generation, %status, "worker stopped");
            }
            (Role::Replacement, _) => {
                warn!(pid, index = w.index, generation = w.generation, %status,
                      "replacement worker exited before it was ready; the old one keeps serving");
            }
            (Role::Candidate, _) => {
                warn!(pid, index = w.index, generation = w.generation, %status,
                      "new worker exited before it had proven ready");
                let failure = if self.is_watched_canary(pid) {
                    Failure {
                        kind: FailureKind::Canary,
                        reason: format!(
                            "the canary, worker {} (pid {pid}), {status} during its canary time",
                            w.index
                        ),
                    }
                } else {
                    Failure {
                        kind: FailureKind::Exited,
                        reason: format!(
                            "worker {} (pid {pid}) {status} before it was ready",
                            w.index
                        ),
                    }
                };
                self.fail_reload(os, failure, now);
            }
            (Role::Serving, state) => {
                let slot = &mut self.slots[w.index];
                if lived >= self.settings.max_backoff {
                    slot.crashes = 0;
                }
                slot.crashes += 1;
                if state.is_stopping() {
                    info!(pid, index = w.index, generation = w.generation, %status, "worker stopped");
                } else {
                    warn!(pid, index = w.index, generation = w.generation, %status,
                          lived_ms = lived.as_millis() as u64, crashes = slot.crashes,
                          "worker exited unexpectedly");
                }
                if self.settings.on_crash == OnCrash::Exit && !state.is_stopping() {
                    info!(code = status.code(), "--on-crash exit: stopping");
                    self.stop(os, status.code(), now);
                }
            }
        }
        self.settle(os, now);
    }

    /// Worker `pid` sent `READY=1`. Only `--ready notify` takes it; under the other modes the
    /// mode decides. Some servers say `READY=1` before they can serve (gunicorn's arbiter does,
    /// before its workers have loaded the app): believing them would retire the old workers
    /// for a release that may never serve. Returns whether the message counted.
    pub fn on_ready_message(&mut self, os: &mut dyn Os, pid: Pid, now: Instant) -> bool {
        if self.settings.ready != ReadyMode::Notify {
            return false;
        }
        self.on_ready(os, pid, now);
        true
    }

    /// Worker `pid` is ready by the source of the configured mode: its `READY=1` under
    /// `--ready notify` ([`Supervisor::on_ready_message`]), the `/proc` probe under
    /// `--ready listening`.
    pub fn on_ready(&mut self, os: &mut dyn Os, pid: Pid, now: Instant) {
        if let Some(pos) = self.workers.iter().position(|w| w.pid == pid) {
            if matches!(self.workers[pos].state, WorkerState::Starting { .. }) {
                self.mark_ready(os, pos, now);
                self.settle(os, now);
            }
        }
    }

    /// Worker `pid` (or a process of its tree) asked for a listening address in a way the
    /// master refuses to serve (`reason`, one line). A new worker of a reload fails it: the
    /// old workers keep serving; a replacement is dropped. A serving worker is left to what
    /// its app does with the error (most exit, and are restarted with the backoff).
    pub fn refuse(&mut self, os: &mut dyn Os, pid: Pid, reason: &str, now: Instant) {
        let Some(pos) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let w = &self.workers[pos];
        match w.role {
            Role::Candidate => {
                let why = format!(
                    "worker {} (pid {pid}) cannot be given its socket: {reason}",
                    w.index
                );
                let failure = Failure {
                    kind: FailureKind::Refused,
                    reason: why,
                };
                self.fail_reload(os, failure, now);
            }
            Role::Replacement => self.retire(os, pos, now),
            Role::Serving | Role::Retired => {}
        }
        self.settle(os, now);
    }

    /// Time passed: act on every deadline that is due.
    pub fn on_tick(&mut self, os: &mut dyn Os, now: Instant) {
        for pos in 0..self.workers.len() {
            let w = &self.workers[pos];
            match w.state {
                WorkerState::Starting {
                    ready_at: Some(at), ..
                } if at <= now => {
                    self.mark_ready(os, pos, now);
                }
                WorkerState::Starting { deadline, .. } if deadline <= now => {
                    self.ready_timeout(os, pos, now);
                }
                WorkerState::Stopping { kill_at } if kill_at <= now => {
                    let pid = w.pid;
                    warn!(
                        pid,
                        index = w.index,
                        generation = w.generation,
                        timeout_ms = self.settings.kill_timeout.as_millis() as u64,
                        at_ms = at_ms(self.epoch, now),
                        "worker still alive after MAX_KILL_TIMEOUT; sending SIGKILL to its process group"
                    );
                    os.signal(Target::Group(pid), Signal::Kill);
                    self.workers[pos].state = WorkerState::Killed;
                    self.notice(pos, WorkerEventKind::Killed);
                }
                WorkerState::Ready { .. }
                    if w.role == Role::Serving
                        && self.slots[w.index].crashes > 0
                        && now >= later(w.started, self.settings.max_backoff) =>
                {
                    info!(
                        index = w.index,
                        pid = w.pid,
                        "worker stable again: crash count reset"
                    );
                    self.slots[w.index].crashes = 0;
                }
                _ => {}
            }
        }
        self.check_canary(os, now);
        for index in 0..self.slots.len() {
            if self.slots[index].restart_at.is_some_and(|at| at <= now) {
                self.slots[index].restart_at = None;
                self.restart(os, index, now);
            }
        }
        self.check_lingering(os, now);
        self.settle(os, now);
    }

    fn begin_reload(&mut self, os: &mut dyn Os, now: Instant) {
        // The reload replaces every worker anyway: a replacement in progress is not needed.
        let replacing: Vec<usize> = (0..self.workers.len())
            .filter(|&p| self.workers[p].role == Role::Replacement)
            .collect();
        for pos in replacing {
            self.retire(os, pos, now);
        }
        self.generation += 1;
        let generation = self.generation;
        info!(
            generation,
            workers = self.settings.workers,
            "reload started"
        );
        self.notices.push(Notice::ReloadStarted(generation));
        let canary = match self.settings.canary {
            Some(d) => Canary::Starting(d),
            None => Canary::Off,
        };
        self.reload = Some(Reload {
            generation,
            started: now,
            failure: None,
            retiring: Vec::new(),
            pending: (0..self.settings.workers).collect(),
            canary,
        });
        self.advance_rollout(os, now);
    }

    /// Starts the candidates the strategy allows now.
    fn advance_rollout(&mut self, os: &mut dyn Os, now: Instant) {
        loop {
            let Some(reload) = &self.reload else { return };
            if reload.failure.is_some() || reload.pending.is_empty() {
                return;
            }
            let generation = reload.generation;
            let in_flight = self
                .workers
                .iter()
                .filter(|w| {
                    (w.role == Role::Candidate && w.generation == generation)
                        || reload.retiring.contains(&w.pid)
                })
                .count();
            let allowed = match (reload.canary, self.settings.strategy) {
                (Canary::Starting(_), _) => {
                    in_flight == 0 && reload.pending.len() == self.settings.workers
                }
                (Canary::Watching { .. }, _) => false,
                (Canary::Off, Strategy::Parallel) => true,
                (Canary::Off, Strategy::Rolling { max_surge }) => in_flight < max_surge.max(1),
            };
            if !allowed {
                return;
            }
            let Some(index) = self.reload.as_mut().and_then(|r| r.pending.pop_front()) else {
                return;
            };
            // The candidate fills the slot; a restart waiting out its backoff is not needed.
            self.slots[index].restart_at = None;
            if let Err(e) = self.spawn(os, index, Role::Candidate, now) {
                let failure = Failure {
                    kind: FailureKind::Spawn,
                    reason: format!("cannot start worker {index}: {e}"),
                };
                self.fail_reload(os, failure, now);
                return;
            }
        }
    }

    /// Fails the reload in flight (the first failure wins) and stops its other candidates.
    fn fail_reload(&mut self, os: &mut dyn Os, failure: Failure, now: Instant) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        if reload.failure.is_some() {
            return;
        }
        warn!(
            generation = reload.generation,
            reason = failure.kind.name(),
            "reload failed: {failure}; the previous workers keep serving"
        );
        reload.failure = Some(failure);
        reload.pending.clear();
        let generation = reload.generation;
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&p| {
                let w = &self.workers[p];
                w.role == Role::Candidate && w.generation == generation
            })
            .collect();
        for pos in candidates {
            self.retire(os, pos, now);
        }
    }

    fn mark_ready(&mut self, os: &mut dyn Os, pos: usize, now: Instant) {
        let w = &mut self.workers[pos];
        w.state = WorkerState::Ready { since: now };
        let after = now.saturating_duration_since(w.started);
        let event = WorkerEvent::of(w, WorkerEventKind::Ready(after));
        self.notices.push(Notice::Worker(event));
        let (pid, index, generation) = (w.pid, w.index, w.generation);
        info!(
            pid,
            index,
            generation,
            after_ms = now.saturating_duration_since(w.started).as_millis() as u64,
            "worker ready"
        );
        match w.role {
            Role::Replacement => return self.promote(os, pos, now),
            Role::Candidate => {}
            Role::Serving | Role::Retired => return,
        }
        if let Some(reload) = self.reload.as_mut() {
            if let Canary::Starting(d) = reload.canary {
                info!(
                    pid,
                    index,
                    canary_ms = d.as_millis() as u64,
                    "canary ready: watching it before the rest follow"
                );
                reload.canary = Canary::Watching {
                    pid,
                    until: later(now, d),
                };
                return;
            }
        }
        self.promote(os, pos, now);
    }

    /// A ready candidate takes its slot over; the slot's previous worker is retired.
    fn promote(&mut self, os: &mut dyn Os, pos: usize, now: Instant) {
        let w = &mut self.workers[pos];
        w.role = Role::Serving;
        let (pid, index) = (w.pid, w.index);
        let old: Vec<usize> = (0..self.workers.len())
            .filter(|&p| {
                let o = &self.workers[p];
                o.index == index && o.role == Role::Serving && o.pid != pid
            })
            .collect();
        for pos in old {
            self.retire(os, pos, now);
        }
    }

    fn is_watched_canary(&self, pid: Pid) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|r| matches!(r.canary, Canary::Watching { pid: p, .. } if p == pid))
    }

    /// Promotes a canary that stayed ready long enough.
    fn check_canary(&mut self, os: &mut dyn Os, now: Instant) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        let Canary::Watching { pid, until } = reload.canary else {
            return;
        };
        if until > now {
            return;
        }
        reload.canary = Canary::Off;
        if let Some(pos) = self
            .workers
            .iter()
            .position(|w| w.pid == pid && w.role == Role::Candidate)
        {
            info!(pid, "canary passed: the rest follow");
            self.promote(os, pos, now);
        }
    }

    fn ready_timeout(&mut self, os: &mut dyn Os, pos: usize, now: Instant) {
        let w = &self.workers[pos];
        let (pid, index, role) = (w.pid, w.index, w.role);
        let timeout = humantime::format_duration(self.settings.ready_timeout);
        let hint = match os.readiness_problem(pid) {
            Some(problem) => format!(" ({}; {problem})", self.settings.ready.timeout_hint()),
            None => format!(" ({})", self.settings.ready.timeout_hint()),
        };
        match role {
            Role::Candidate => {
                let failure = Failure {
                    kind: FailureKind::NotReady,
                    reason: format!(
                        "worker {index} (pid {pid}) was not ready within {timeout}{hint}"
                    ),
                };
                self.fail_reload(os, failure, now);
            }
            _ => {
                warn!(
                    pid,
                    index,
                    generation = w.generation,
                    "worker was not ready within {timeout}{hint}; stopping it"
                );
                if self.settings.on_crash == OnCrash::Exit && self.phase == Phase::Starting {
                    self.stop(os, 1, now);
                } else {
                    self.stop_worker(os, pos, now);
                }
            }
        }
    }

    /// Retires a worker: its exit is expected from now on, and a reload waits for it.
    fn retire(&mut self, os: &mut dyn Os, pos: usize, now: Instant) {
        self.workers[pos].role = Role::Retired;
        if let Some(reload) = self.reload.as_mut() {
            reload.retiring.push(self.workers[pos].pid);
        }
        self.stop_worker(os, pos, now);
    }

    /// SIGTERM to the worker's process group; SIGKILL after `MAX_KILL_TIMEOUT`.
    fn stop_worker(&mut self, os: &mut dyn Os, pos: usize, now: Instant) {
        let w = &mut self.workers[pos];
        if w.state.is_stopping() {
            return;
        }
        info!(
            pid = w.pid,
            index = w.index,
            generation = w.generation,
            at_ms = at_ms(self.epoch, now),
            "stopping worker"
        );
        w.state = WorkerState::Stopping {
            kill_at: later(now, self.settings.kill_timeout),
        };
        os.signal(Target::Group(w.pid), Signal::Terminate);
        self.notice(pos, WorkerEventKind::Stopping);
    }

    /// Tells the outside world that `kind` happened to the worker at `pos`.
    fn notice(&mut self, pos: usize, kind: WorkerEventKind) {
        let event = WorkerEvent::of(&self.workers[pos], kind);
        self.notices.push(Notice::Worker(event));
    }

    /// Stops the master: SIGTERM to every worker, SIGKILL after `MAX_KILL_TIMEOUT`; the
    /// master then exits with `code`. A second call kills at once.
    pub fn stop(&mut self, os: &mut dyn Os, code: i32, now: Instant) {
        if let Phase::Stopping { .. } = self.phase {
            warn!("second stop request: killing every worker now");
            for w in &mut self.workers {
                os.signal(Target::Group(w.pid), Signal::Kill);
                if w.state != WorkerState::Killed {
                    w.state = WorkerState::Killed;
                    let event = WorkerEvent::of(w, WorkerEventKind::Killed);
                    self.notices.push(Notice::Worker(event));
                }
            }
            for l in self.lingering.drain(..) {
                os.signal(Target::Group(l.pgid), Signal::Kill);
            }
            return;
        }
        if let Phase::Exited(_) = self.phase {
            return;
        }
        self.phase = Phase::Stopping { code };
        self.notices.push(Notice::Stopping);
        if let Some(reload) = self.reload.take() {
            info!(
                generation = reload.generation,
                "reload abandoned: the master is stopping"
            );
            let failure = Failure {
                kind: FailureKind::Abandoned,
                reason: "abandoned: the master is stopping".into(),
            };
            self.end_reload(reload, Some(failure), now);
        }
        self.reload_queued = false;
        self.slots.iter_mut().for_each(|s| s.restart_at = None);
        for pos in 0..self.workers.len() {
            self.workers[pos].role = Role::Retired;
            self.stop_worker(os, pos, now);
        }
        self.settle(os, now);
    }

    /// Restarts a slot's worker after a crash (or a failed start).
    fn restart(&mut self, os: &mut dyn Os, index: usize, now: Instant) {
        self.slots[index].restarts += 1;
        if self.spawn(os, index, Role::Serving, now).is_err() {
            let slot = &mut self.slots[index];
            slot.crashes += 1;
            slot.restart_at = Some(later(now, self.settings.throttle.max(MIN_RETRY)));
        }
    }

    fn spawn(
        &mut self,
        os: &mut dyn Os,
        index: usize,
        role: Role,
        now: Instant,
    ) -> Result<Pid, SpawnError> {
        let generation = self.generation;
        self.slots[index].last_start = Some(now);
        match os.spawn(index, generation) {
            Ok(pid) => {
                let deadline = later(now, self.settings.ready_timeout);
                let ready_at = self.settings.ready.delay().map(|d| later(now, d));
                self.workers.push(Worker {
                    pid,
                    index,
                    generation,
                    role,
                    state: WorkerState::Starting { deadline, ready_at },
                    started: now,
                });
                info!(
                    pid,
                    index,
                    generation,
                    at_ms = self.at_ms(now),
                    "worker started"
                );
                self.notice(self.workers.len() - 1, WorkerEventKind::Started);
                Ok(pid)
            }
            Err(e) => {
                warn!(index, generation, "cannot start worker: {e}");
                Err(e)
            }
        }
    }

    /// After a worker's leader exits, its process group may still hold processes (a shell
    /// that did not exec, a helper): watch it and SIGKILL it at the drain deadline.
    fn watch_group(&mut self, os: &mut dyn Os, w: &Worker, now: Instant) {
        if !os.group_alive(w.pid) {
            return;
        }
        let kill_at = match w.state {
            WorkerState::Stopping { kill_at } => kill_at,
            _ => {
                // The leader died on its own: ask what it left behind to stop too.
                os.signal(Target::Group(w.pid), Signal::Terminate);
                later(now, self.settings.kill_timeout)
            }
        };
        debug!(pgid = w.pid, "worker exited but its process group lives on");
        self.lingering.push(Lingering {
            pgid: w.pid,
            kill_at,
            check_at: later(now, LINGER_CHECK),
        });
    }

    fn check_lingering(&mut self, os: &mut dyn Os, now: Instant) {
        let mut lingering = std::mem::take(&mut self.lingering);
        lingering.retain_mut(|l| {
            // A live worker with this pid means the group id was recycled: not ours anymore.
            if self.workers.iter().any(|w| w.pid == l.pgid) || !os.group_alive(l.pgid) {
                return false;
            }
            if l.kill_at <= now {
                warn!(
                    pgid = l.pgid,
                    "processes left by a worker outlived MAX_KILL_TIMEOUT; sending SIGKILL"
                );
                os.signal(Target::Group(l.pgid), Signal::Kill);
                return false;
            }
            if l.check_at <= now {
                l.check_at = later(now, LINGER_CHECK);
            }
            true
        });
        self.lingering = lingering;
    }

    /// Brings the slots, the reload and the phase up to date after an event.
    fn settle(&mut self, os: &mut dyn Os, now: Instant) {
        if matches!(self.phase, Phase::Starting | Phase::Running) {
            self.reconcile(os, now);
        }
        self.advance_rollout(os, now);
        self.advance_reload(os, now);
        match self.phase {
            Phase::Starting if self.all_slots_ready() => {
                self.phase = Phase::Running;
                self.notices.push(Notice::Running);
                info!(workers = self.settings.workers, "all workers ready");
            }
            Phase::Stopping { code } if self.workers.is_empty() && self.lingering.is_empty() => {
                self.phase = Phase::Exited(code);
                info!(code, "all workers stopped");
            }
            _ => {}
        }
    }

    /// The delay before restarting a slot that crashed `crashes` times in a row, counted
    /// from its last start.
    fn backoff(&self, crashes: u32) -> Duration {
        let throttle = self.settings.throttle;
        if crashes <= 1 {
            return throttle;
        }
        let base = throttle.max(MIN_RETRY);
        let factor = 1u32.checked_shl(crashes - 1).unwrap_or(u32::MAX);
        base.saturating_mul(factor)
            .min(self.settings.max_backoff.max(base))
    }

    /// Schedules a restart for every slot that has neither a serving worker nor a candidate;
    /// one that is due now happens now.
    fn reconcile(&mut self, os: &mut dyn Os, now: Instant) {
        for index in 0..self.settings.workers {
            let covered = self.workers.iter().any(|w| {
                w.index == index
                    && matches!(w.role, Role::Serving | Role::Candidate | Role::Replacement)
            });
            let slot = self.slots[index];
            if covered || slot.restart_at.is_some() {
                continue;
            }
            let backoff = self.backoff(slot.crashes);
            let at = slot.last_start.map_or(now, |t| later(t, backoff)).max(now);
            let delay_ms = (at - now).as_millis() as u64;
            if slot.crashes >= CRASH_LOOP {
                warn!(
                    index,
                    crashes = slot.crashes,
                    delay_ms,
                    "worker is crash-looping; restarting it with a backoff"
                );
                let others_looping = (self.slots.iter().enumerate())
                    .any(|(i, s)| i != index && s.crashes >= CRASH_LOOP);
                if slot.crashes == CRASH_LOOP && !others_looping {
                    if let Some(hint) = os.crash_hint() {
                        warn!(index, "worker is crash-looping: {hint}");
                    }
                }
            } else {
                info!(index, delay_ms, "restarting worker");
            }
            if at > now {
                self.slots[index].restart_at = Some(at);
            } else {
                self.restart(os, index, now);
            }
        }
    }

    fn advance_reload(&mut self, os: &mut dyn Os, now: Instant) {
        let Some(reload) = &self.reload else { return };
        let busy = !reload.pending.is_empty()
            || self.workers.iter().any(|w| {
                (w.role == Role::Candidate && w.generation == reload.generation)
                    || reload.retiring.contains(&w.pid)
            });
        if busy {
            return;
        }
        let Some(reload) = self.reload.take() else {
            return;
        };
        let failure = reload.failure.clone();
        self.end_reload(reload, failure, now);
        if std::mem::take(&mut self.reload_queued) {
            self.begin_reload(os, now);
        }
    }

    fn end_reload(&mut self, reload: Reload, failure: Option<Failure>, now: Instant) {
        let took = now.saturating_duration_since(reload.started);
        let took_ms = took.as_millis() as u64;
        match &failure {
            None => {
                self.reloads.done += 1;
                info!(generation = reload.generation, took_ms, "reload done");
            }
            Some(reason) => {
                self.reloads.failed += 1;
                info!(
                    generation = reload.generation,
                    took_ms, "reload ended: failed ({reason})"
                );
            }
        }
        let mut serving: Vec<Serving> = self
            .workers
            .iter()
            .filter(|w| w.role == Role::Serving)
            .map(|w| Serving {
                index: w.index,
                pid: w.pid,
                generation: w.generation,
            })
            .collect();
        serving.sort_unstable();
        let outcome = ReloadOutcome {
            generation: reload.generation,
            failure,
            took,
            serving,
        };
        if self.recent.len() == RECENT_RELOADS {
            self.recent.pop_front();
        }
        self.recent.push_back(outcome.clone());
        self.notices.push(Notice::ReloadEnded(outcome));
    }

    /// `now` on the master's own clock (milliseconds since start), for log lines that tests
    /// compare (wall-clock log timestamps include the time spent logging and forking) and
    /// for events.
    pub fn at_ms(&self, now: Instant) -> u64 {
        at_ms(self.epoch, now)
    }

    fn all_slots_ready(&self) -> bool {
        (0..self.settings.workers).all(|index| {
            self.workers.iter().any(|w| {
                w.index == index
                    && w.role == Role::Serving
                    && matches!(w.state, WorkerState::Ready { .. })
            })
        })
    }
}

/// `now + d`, or as far as the clock goes: time arithmetic in the master never panics.
pub fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

fn at_ms(epoch: Option<Instant>, now: Instant) -> u64 {
    epoch.map_or(0, |e| now.saturating_duration_since(e).as_millis() as u64)
}

#[cfg(test)]
mod tests;
