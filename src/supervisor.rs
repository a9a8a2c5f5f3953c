//! The supervisor: the master's decisions as an explicit state machine.
//!
//! It owns no file descriptor and reads no clock. Events come in ([`Supervisor::on_signal`],
//! [`Supervisor::on_exit`], [`Supervisor::on_ready`], [`Supervisor::on_tick`]) with the
//! current time; effects go out through the narrow [`Os`] trait (start a worker, send a
//! signal). The master loop ([`crate::master`]) feeds it real events; unit tests feed it a
//! fake clock and a recording fake `Os`.
//!
//! # Rules
//! - **Slots.** There are `workers` slots (`WORKER_INDEX`). After every event the supervisor
//!   *reconciles*: a slot with no serving worker and no candidate gets a restart, at the
//!   earliest `WORKER_THROTTLE` after the slot's last start (the reference's rule).
//! - **Reload** (SIGHUP): every slot gets a candidate with the next `RELOAD_INDEX`. When a
//!   candidate is ready it becomes the slot's serving worker and the old one is retired
//!   (SIGTERM, then SIGKILL after `MAX_KILL_TIMEOUT`). The first candidate that exits or
//!   misses the ready timeout fails the reload: the other candidates are stopped and every
//!   old worker keeps serving. A reload ends when its candidates are serving or gone and the
//!   workers it retired have exited; SIGHUPs meanwhile are coalesced into one more reload.
//! - **Crash**: a serving worker that exits unexpectedly is restarted (see Slots), or with
//!   `--on-crash exit` the master stops and exits with its code.
//! - **Stop** (SIGTERM, SIGINT): SIGTERM to every worker, SIGKILL after `MAX_KILL_TIMEOUT`;
//!   a second stop signal kills at once. The phase becomes [`Phase::Exited`] once every
//!   worker process group is gone.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::{Config, OnCrash};
use crate::readiness::ReadyMode;
use crate::signals::Signal;
use crate::worker::{ExitStatus, Pid, Role, Worker, WorkerState};

/// The effects the supervisor has on the world.
pub trait Os {
    /// Starts a worker for slot `index` with `RELOAD_INDEX` = `generation`; returns its pid.
    fn spawn(&mut self, index: usize, generation: u64) -> Result<Pid, String>;
    /// Sends `signal` to a process or a process group. Failures are logged, not returned:
    /// the target may have exited already, which the supervisor learns from its exit event.
    fn signal(&mut self, target: Target, signal: Signal);
    /// Whether any process is left in process group `pgid`.
    fn group_alive(&mut self, pgid: Pid) -> bool;
    /// Why readiness could not be seen for worker `pid`, if known (for the timeout message).
    fn readiness_problem(&self, _pid: Pid) -> Option<String> {
        None
    }
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
#[derive(Debug, Clone)]
pub struct Settings {
    /// Number of slots.
    pub workers: usize,
    /// `WORKER_THROTTLE`.
    pub throttle: Duration,
    /// `MAX_KILL_TIMEOUT`.
    pub kill_timeout: Duration,
    /// Readiness mode.
    pub ready: ReadyMode,
    /// `--ready-timeout`.
    pub ready_timeout: Duration,
    /// `--on-crash`.
    pub on_crash: OnCrash,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Settings {
            workers: c.workers,
            throttle: c.throttle,
            kill_timeout: c.kill_timeout,
            ready: c.ready,
            ready_timeout: c.ready_timeout,
            on_crash: c.on_crash,
        }
    }
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

/// A reload in flight.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The `RELOAD_INDEX` of its candidates.
    pub generation: u64,
    /// When it began.
    pub started: Instant,
    /// Why it failed, once it has.
    pub failure: Option<String>,
    /// Workers it asked to exit (replaced old workers, aborted candidates).
    pub retiring: Vec<Pid>,
}

/// A process group left behind by a worker that exited, SIGKILLed at `kill_at` if still there.
#[derive(Debug, Clone, Copy)]
struct Lingering {
    pgid: Pid,
    kill_at: Instant,
    check_at: Instant,
}

/// The least time between two attempts to start a worker after `fork` failed.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

/// How often a lingering process group is checked for emptiness.
const LINGER_CHECK: Duration = Duration::from_millis(100);

/// The state machine. See the [module documentation](self) for the rules.
#[derive(Debug)]
pub struct Supervisor<O> {
    os: O,
    settings: Settings,
    phase: Phase,
    /// The `RELOAD_INDEX` of workers started now.
    generation: u64,
    workers: Vec<Worker>,
    /// Per slot: when its last worker was started.
    last_start: Vec<Option<Instant>>,
    /// Per slot: when its pending restart is due.
    restart_at: Vec<Option<Instant>>,
    reload: Option<Reload>,
    reload_queued: bool,
    reloads_done: u64,
    lingering: Vec<Lingering>,
    /// When [`Supervisor::start`] ran: event times in logs are counted from it (`at_ms`).
    epoch: Option<Instant>,
}

impl<O: Os> Supervisor<O> {
    /// A supervisor that has started nothing yet.
    pub fn new(os: O, settings: Settings) -> Self {
        let n = settings.workers;
        Supervisor {
            os,
            settings,
            phase: Phase::Starting,
            generation: 0,
            workers: Vec::new(),
            last_start: vec![None; n],
            restart_at: vec![None; n],
            reload: None,
            reload_queued: false,
            reloads_done: 0,
            lingering: Vec::new(),
            epoch: None,
        }
    }

    /// Starts the first workers.
    pub fn start(&mut self, now: Instant) {
        self.epoch = Some(now);
        for index in 0..self.settings.workers {
            // A failed start leaves the slot empty: `settle` schedules its retry.
            let _ = self.spawn(index, Role::Serving, now);
        }
        self.settle(now);
    }

    /// The master's phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Every live worker process.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// The reload in flight, if any.
    pub fn reload(&self) -> Option<&Reload> {
        self.reload.as_ref()
    }

    /// The OS handle.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// The OS handle, mutably.
    pub fn os_mut(&mut self) -> &mut O {
        &mut self.os
    }

    /// Gives the OS handle back.
    pub fn into_os(self) -> O {
        self.os
    }

    /// The next time [`Supervisor::on_tick`] has work to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let workers = self.workers.iter().flat_map(|w| match w.state {
            WorkerState::Starting { deadline, ready_at } => [Some(deadline), ready_at],
            WorkerState::Stopping { kill_at } => [Some(kill_at), None],
            WorkerState::Ready { .. } | WorkerState::Killed => [None, None],
        });
        let restarts = self.restart_at.iter().copied();
        let lingering = self
            .lingering
            .iter()
            .map(|l| Some(l.check_at.min(l.kill_at)));
        workers.chain(restarts).chain(lingering).flatten().min()
    }

    /// A signal reached the master.
    pub fn on_signal(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::Hangup => self.request_reload(now),
            Signal::Terminate | Signal::Interrupt => {
                info!(signal = signal.name(), "stop requested");
                self.stop(0, now);
            }
            Signal::User2 => {
                for w in self
                    .workers
                    .iter()
                    .filter(|w| w.state != WorkerState::Killed)
                {
                    self.os.signal(Target::Process(w.pid), Signal::User2);
                }
                debug!(workers = self.workers.len(), "SIGUSR2 forwarded");
            }
            other => debug!(signal = other.name(), "signal ignored"),
        }
        self.settle(now);
    }

    /// A reload was asked for (SIGHUP): start it, or queue one more after the current one.
    pub fn request_reload(&mut self, now: Instant) {
        match self.phase {
            Phase::Stopping { .. } | Phase::Exited(_) => {
                info!("reload ignored: the master is stopping");
            }
            _ if self.reload.is_some() => {
                if !self.reload_queued {
                    info!("reload queued: it starts when the current one ends");
                }
                self.reload_queued = true;
            }
            _ => self.begin_reload(now),
        }
    }

    /// Worker `pid` was reaped with `status`.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        let Some(pos) = self.workers.iter().position(|w| w.pid == pid) else {
            debug!(pid, %status, "reaped a process that is not a worker");
            return;
        };
        let w = self.workers.remove(pos);
        let lived = now.saturating_duration_since(w.started);
        self.watch_group(&w, now);
        match (w.role, w.state) {
            (Role::Retired, _) | (_, WorkerState::Stopping { .. } | WorkerState::Killed) => {
                info!(pid, index = w.index, generation = w.generation, %status, "worker stopped");
            }
            (Role::Candidate, _) => {
                warn!(pid, index = w.index, generation = w.generation, %status,
                      "new worker exited before it was ready");
                self.fail_reload(
                    format!(
                        "worker {} (pid {pid}) {status} before it was ready",
                        w.index
                    ),
                    now,
                );
            }
            (Role::Serving, _) => {
                warn!(pid, index = w.index, generation = w.generation, %status,
                      lived_ms = lived.as_millis() as u64, "worker exited unexpectedly");
                if self.settings.on_crash == OnCrash::Exit {
                    info!(code = status.code(), "--on-crash exit: stopping");
                    self.stop(status.code(), now);
                }
            }
        }
        self.settle(now);
    }

    /// Worker `pid` is ready (it sent `READY=1`, or a probe saw it serve).
    pub fn on_ready(&mut self, pid: Pid, now: Instant) {
        if let Some(pos) = self.workers.iter().position(|w| w.pid == pid) {
            if matches!(self.workers[pos].state, WorkerState::Starting { .. }) {
                self.mark_ready(pos, now);
                self.settle(now);
            }
        }
    }

    /// Time passed: act on every deadline that is due.
    pub fn on_tick(&mut self, now: Instant) {
        for pos in 0..self.workers.len() {
            let w = &self.workers[pos];
            match w.state {
                WorkerState::Starting {
                    ready_at: Some(at), ..
                } if at <= now => {
                    self.mark_ready(pos, now);
                }
                WorkerState::Starting { deadline, .. } if deadline <= now => {
                    self.ready_timeout(pos, now);
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
                    self.os.signal(Target::Group(pid), Signal::Kill);
                    self.workers[pos].state = WorkerState::Killed;
                }
                _ => {}
            }
        }
        for index in 0..self.restart_at.len() {
            if self.restart_at[index].is_some_and(|at| at <= now) {
                self.restart_at[index] = None;
                if self.spawn(index, Role::Serving, now).is_err() {
                    self.restart_at[index] = Some(now + self.settings.throttle.max(SPAWN_RETRY));
                }
            }
        }
        self.check_lingering(now);
        self.settle(now);
    }

    fn begin_reload(&mut self, now: Instant) {
        self.generation += 1;
        let generation = self.generation;
        info!(
            generation,
            workers = self.settings.workers,
            "reload started"
        );
        self.reload = Some(Reload {
            generation,
            started: now,
            failure: None,
            retiring: Vec::new(),
        });
        for index in 0..self.settings.workers {
            // The candidate fills the slot; a restart waiting out its throttle is not needed.
            self.restart_at[index] = None;
            if let Err(e) = self.spawn(index, Role::Candidate, now) {
                self.fail_reload(format!("cannot start worker {index}: {e}"), now);
                break;
            }
        }
    }

    /// Fails the reload in flight (the first failure wins) and stops its other candidates.
    fn fail_reload(&mut self, reason: String, now: Instant) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        if reload.failure.is_some() {
            return;
        }
        warn!(
            generation = reload.generation,
            "reload failed: {reason}; the previous workers keep serving"
        );
        reload.failure = Some(reason);
        let generation = reload.generation;
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&p| {
                let w = &self.workers[p];
                w.role == Role::Candidate && w.generation == generation
            })
            .collect();
        for pos in candidates {
            self.retire(pos, now);
        }
    }

    fn mark_ready(&mut self, pos: usize, now: Instant) {
        let w = &mut self.workers[pos];
        w.state = WorkerState::Ready { since: now };
        let (pid, index, generation) = (w.pid, w.index, w.generation);
        info!(
            pid,
            index,
            generation,
            after_ms = now.saturating_duration_since(w.started).as_millis() as u64,
            "worker ready"
        );
        if w.role != Role::Candidate {
            return;
        }
        w.role = Role::Serving;
        let old: Vec<usize> = (0..self.workers.len())
            .filter(|&p| {
                let o = &self.workers[p];
                o.index == index && o.role == Role::Serving && o.pid != pid
            })
            .collect();
        for pos in old {
            self.retire(pos, now);
        }
    }

    fn ready_timeout(&mut self, pos: usize, now: Instant) {
        let w = &self.workers[pos];
        let (pid, index, role) = (w.pid, w.index, w.role);
        let timeout = humantime::format_duration(self.settings.ready_timeout);
        let hint = match self.os.readiness_problem(pid) {
            Some(problem) => format!(" ({}; {problem})", self.settings.ready.timeout_hint()),
            None => format!(" ({})", self.settings.ready.timeout_hint()),
        };
        match role {
            Role::Candidate => {
                self.fail_reload(
                    format!("worker {index} (pid {pid}) was not ready within {timeout}{hint}"),
                    now,
                );
            }
            _ => {
                warn!(
                    pid,
                    index,
                    generation = w.generation,
                    "worker was not ready within {timeout}{hint}; stopping it"
                );
                if self.settings.on_crash == OnCrash::Exit && self.phase == Phase::Starting {
                    self.stop(1, now);
                } else {
                    self.stop_worker(pos, now);
                }
            }
        }
    }

    /// Retires a worker: its exit is expected from now on, and a reload waits for it.
    fn retire(&mut self, pos: usize, now: Instant) {
        self.workers[pos].role = Role::Retired;
        if let Some(reload) = self.reload.as_mut() {
            reload.retiring.push(self.workers[pos].pid);
        }
        self.stop_worker(pos, now);
    }

    /// SIGTERM to the worker's process group; SIGKILL after `MAX_KILL_TIMEOUT`.
    fn stop_worker(&mut self, pos: usize, now: Instant) {
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
            kill_at: now + self.settings.kill_timeout,
        };
        self.os.signal(Target::Group(w.pid), Signal::Terminate);
    }

    /// Stops the master: SIGTERM to every worker, SIGKILL after `MAX_KILL_TIMEOUT`; the
    /// master then exits with `code`. A second call kills at once.
    pub fn stop(&mut self, code: i32, now: Instant) {
        if let Phase::Stopping { .. } = self.phase {
            warn!("second stop request: killing every worker now");
            for w in &mut self.workers {
                self.os.signal(Target::Group(w.pid), Signal::Kill);
                w.state = WorkerState::Killed;
            }
            for l in self.lingering.drain(..) {
                self.os.signal(Target::Group(l.pgid), Signal::Kill);
            }
            return;
        }
        self.phase = Phase::Stopping { code };
        if let Some(reload) = self.reload.take() {
            info!(
                generation = reload.generation,
                "reload abandoned: the master is stopping"
            );
        }
        self.reload_queued = false;
        self.restart_at.iter_mut().for_each(|r| *r = None);
        for pos in 0..self.workers.len() {
            self.workers[pos].role = Role::Retired;
            self.stop_worker(pos, now);
        }
    }

    fn spawn(&mut self, index: usize, role: Role, now: Instant) -> Result<Pid, String> {
        let generation = self.generation;
        self.last_start[index] = Some(now);
        match self.os.spawn(index, generation) {
            Ok(pid) => {
                let deadline = now + self.settings.ready_timeout;
                let ready_at = self.settings.ready.delay().map(|d| now + d);
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
    fn watch_group(&mut self, w: &Worker, now: Instant) {
        if !self.os.group_alive(w.pid) {
            return;
        }
        let kill_at = match w.state {
            WorkerState::Stopping { kill_at } => kill_at,
            _ => {
                // The leader died on its own: ask what it left behind to stop too.
                self.os.signal(Target::Group(w.pid), Signal::Terminate);
                now + self.settings.kill_timeout
            }
        };
        debug!(pgid = w.pid, "worker exited but its process group lives on");
        self.lingering.push(Lingering {
            pgid: w.pid,
            kill_at,
            check_at: now + LINGER_CHECK,
        });
    }

    fn check_lingering(&mut self, now: Instant) {
        let mut lingering = std::mem::take(&mut self.lingering);
        lingering.retain_mut(|l| {
            // A live worker with this pid means the group id was recycled: not ours anymore.
            if self.workers.iter().any(|w| w.pid == l.pgid) || !self.os.group_alive(l.pgid) {
                return false;
            }
            if l.kill_at <= now {
                warn!(
                    pgid = l.pgid,
                    "processes left by a worker outlived MAX_KILL_TIMEOUT; sending SIGKILL"
                );
                self.os.signal(Target::Group(l.pgid), Signal::Kill);
                return false;
            }
            if l.check_at <= now {
                l.check_at = now + LINGER_CHECK;
            }
            true
        });
        self.lingering = lingering;
    }

    /// Brings the slots, the reload and the phase up to date after an event.
    fn settle(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Starting | Phase::Running) {
            self.reconcile(now);
        }
        self.advance_reload(now);
        match self.phase {
            Phase::Starting if self.all_slots_ready() => {
                self.phase = Phase::Running;
                info!(workers = self.settings.workers, "all workers ready");
            }
            Phase::Stopping { code } if self.workers.is_empty() && self.lingering.is_empty() => {
                self.phase = Phase::Exited(code);
                info!(code, "all workers stopped");
            }
            _ => {}
        }
    }

    /// Schedules a restart for every slot that has neither a serving worker nor a candidate;
    /// one that is due now happens now.
    fn reconcile(&mut self, now: Instant) {
        for index in 0..self.settings.workers {
            let covered = self
                .workers
                .iter()
                .any(|w| w.index == index && matches!(w.role, Role::Serving | Role::Candidate));
            if covered || self.restart_at[index].is_some() {
                continue;
            }
            let earliest = self.last_start[index].map_or(now, |t| t + self.settings.throttle);
            let at = earliest.max(now);
            info!(
                index,
                delay_ms = (at - now).as_millis() as u64,
                "restarting worker"
            );
            if at > now {
                self.restart_at[index] = Some(at);
            } else if self.spawn(index, Role::Serving, now).is_err() {
                self.restart_at[index] = Some(now + self.settings.throttle.max(SPAWN_RETRY));
            }
        }
    }

    fn advance_reload(&mut self, now: Instant) {
        let Some(reload) = &self.reload else { return };
        let busy = self.workers.iter().any(|w| {
            (w.role == Role::Candidate && w.generation == reload.generation)
                || reload.retiring.contains(&w.pid)
        });
        if busy {
            return;
        }
        let took_ms = now.saturating_duration_since(reload.started).as_millis() as u64;
        match &reload.failure {
            None => {
                self.reloads_done += 1;
                info!(generation = reload.generation, took_ms, "reload done");
            }
            Some(reason) => {
                info!(
                    generation = reload.generation,
                    took_ms, "reload ended: failed ({reason})"
                );
            }
        }
        self.reload = None;
        if std::mem::take(&mut self.reload_queued) {
            self.begin_reload(now);
        }
    }

    /// `now` on the master's own clock (milliseconds since start), for log lines that tests
    /// compare: wall-clock log timestamps include the time spent logging and forking.
    fn at_ms(&self, now: Instant) -> u64 {
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

fn at_ms(epoch: Option<Instant>, now: Instant) -> u64 {
    epoch.map_or(0, |e| now.saturating_duration_since(e).as_millis() as u64)
}

#[cfg(test)]
mod tests;
