//! The master: binds the listeners, then runs a single-threaded `poll(2)` loop that turns
//! signals, child exits, notify messages and control requests into [`Supervisor`] events,
//! until the supervisor says every worker is gone.
//!
//! The loop sleeps in `poll` with no timeout unless something is due (a supervisor deadline,
//! the readiness probe while a worker starts, a control client's time to send its request),
//! so an idle master uses no CPU. Children are reaped on SIGCHLD with `waitpid(-1, WNOHANG)`:
//! every child of the master is a worker (or, as a subreaper, an orphan to reap), and a pid
//! is never reused before we reap it, so signalling a live worker by pid is race-free.

mod manager;
mod os;

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;
use tracing::{debug, info, warn};

use crate::config::{Config, OnVersionChange};
use crate::control::{self, ClientId, Record, Request, Wait};
use crate::error::{Error, Result};
use crate::monitor::{Monitor, Subject};
use crate::notify::{self, Datagram, NotifySocket};
use crate::procfs;
use crate::readiness::ReadyMode;
use crate::readiness::listening;
use crate::signals::{Signal, SignalPipe};
use crate::socket::{self, Listener};
use crate::supervisor::{Notice, Phase, ReloadOutcome, Settings, Supervisor};
use crate::worker::{ExitStatus, Pid, Role, WorkerState};
use manager::ServiceManager;
use os::RealOs;

/// The signals the master handles.
const SIGNALS: [Signal; 5] = [
    Signal::Child,
    Signal::Terminate,
    Signal::Interrupt,
    Signal::Hangup,
    Signal::User2,
];

/// Runs a master for `config` until it stops; returns the exit code.
pub fn run(config: Config) -> Result<i32> {
    // Handlers first: from here on no signal is lost, and no child can become a zombie.
    let signals = SignalPipe::install(&SIGNALS)
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    if let ReadyMode::Listening(_) = config.ready {
        listening::check_access().map_err(|reason| {
            let fix = "use --ready notify or --ready delay:DURATION";
            Error::invalid(
                "--ready",
                config.ready.to_string(),
                format!("{reason}; {fix}"),
            )
        })?;
    }
    if config.subreaper || std::process::id() == 1 {
        become_subreaper()?;
    }
    let listeners = match socket::activation_listeners()? {
        Some(listeners) => {
            for l in &listeners {
                info!(
                    name = l.name(),
                    "listening on {} (socket activation)",
                    l.local()
                );
            }
            listeners
        }
        None => bind_all(&config)?,
    };
    let control = config
        .control
        .as_deref()
        .map(control::Server::bind)
        .transpose()?;
    if let Some(c) = &control {
        info!("control socket at {}", c.path().display());
    }
    let notify = NotifySocket::bind()?;
    let notify_path = notify.path().to_string_lossy().into_owned();
    let os = RealOs::new(&config, listeners, notify_path)?;
    info!(pid = std::process::id(), workers = config.workers, ready = %config.ready, "master started: {}", os.spawner.program());
    let listeners = os
        .listeners
        .iter()
        .map(|l| (l.name().to_string(), l.local().to_string()))
        .collect();
    let mut master = Master {
        sup: Supervisor::new(os, Settings::from(&config)),
        signals,
        notify,
        control,
        manager: ServiceManager::from_env(Instant::now()),
        monitor: config
            .monitor
            .map(|limits| Monitor::new(limits, Instant::now())),
        versions: Versions {
            policy: config.on_version_change,
            exit_pending: false,
        },
        listeners,
        started: Instant::now(),
    };
    master.sup.start(master.started);
    let code = master.run()?;
    let Master { sup, control, .. } = master;
    let os = sup.into_os();
    drop(os.listeners); // removes our unix socket files
    drop(control);
    info!(code, "master exiting");
    Ok(code)
}

fn bind_all(config: &Config) -> Result<Vec<Listener>> {
    config
        .listeners
        .iter()
        .map(|spec| {
            let l = Listener::bind(spec, config.socket_mode)?;
            info!(name = l.name(), "listening on {}", l.local());
            Ok(l)
        })
        .collect()
}

/// The running master: the supervisor and every source of events.
struct Master {
    sup: Supervisor<RealOs>,
    signals: SignalPipe,
    notify: NotifySocket,
    control: Option<control::Server>,
    monitor: Option<Monitor>,
    manager: Option<ServiceManager>,
    versions: Versions,
    /// (name, address) of each listener, for status.
    listeners: Vec<(String, String)>,
    started: Instant,
}

/// What `poll` found readable.
#[derive(Default)]
struct Ready {
    signals: bool,
    notify: bool,
    control: bool,
    clients: Vec<ClientId>,
}

impl Master {
    fn run(&mut self) -> Result<i32> {
        loop {
            if let Phase::Exited(code) = self.sup.phase() {
                self.answer_stop_waiters(code);
                return Ok(code);
            }
            let ready = self.wait()?;
            let now = Instant::now();
            if ready.signals {
                for signal in self.signals.drain() {
                    match signal {
                        Signal::Child => self.reap(now),
                        Signal::User2 => {
                            self.sup.on_signal(Signal::User2, now);
                            if let Some(m) = self.monitor.as_mut() {
                                m.toggle(now);
                            }
                        }
                        other => self.sup.on_signal(other, now),
                    }
                }
            }
            if ready.notify {
                while let Some(datagram) = self.notify.recv() {
                    self.on_notify(datagram, now);
                }
            }
            self.probe(now);
            self.sup.on_tick(now);
            self.sample(now);
            if let Some(manager) = self.manager.as_mut() {
                manager.tick(now);
            }
            self.on_control(ready, now);
            if self.versions.exit_pending
                && self.sup.reload().is_none()
                && self.sup.phase() == Phase::Running
            {
                self.versions.exit_pending = false;
                info!("--on-version-change exit: the new workers are ready; exiting with code 1");
                self.sup.stop(1, now);
            }
            for notice in self.sup.take_notices() {
                self.on_notice(notice);
            }
        }
    }

    /// Sleeps until something happens or is due.
    fn wait(&self) -> Result<Ready> {
        // While a worker starts under `--ready listening`, wake up often to look at it.
        let probing = self.sup.os().probe.is_some() && !self.starting().is_empty();
        let probe_at = probing.then(|| Instant::now() + listening::PROBE_INTERVAL);
        let client_at = self
            .control
            .as_ref()
            .and_then(control::Server::next_deadline);
        let sample_at = self.monitor.as_ref().and_then(Monitor::next_sample);
        let ping_at = self
            .manager
            .as_ref()
            .and_then(ServiceManager::next_deadline);
        let due = [
            self.sup.next_deadline(),
            probe_at,
            client_at,
            sample_at,
            ping_at,
        ];
        let timeout = match due.into_iter().flatten().min() {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up: waking a little early would only spin until the deadline.
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let control_fds: Vec<(Option<ClientId>, BorrowedFd<'_>)> = self
            .control
            .as_ref()
            .map(control::Server::poll_fds)
            .unwrap_or_default();
        let mut fds: Vec<PollFd<'_>> = [self.signals.fd(), self.notify.fd()]
            .into_iter()
            .chain(control_fds.iter().map(|(_, fd)| *fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => {
                return Ok(Ready {
                    signals: true,
                    ..Ready::default()
                });
            }
            Err(e) => return Err(Error::io("poll failed", e)),
        }
        let readable = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let mut ready = Ready {
            signals: readable(&fds[0]),
            notify: readable(&fds[1]),
            ..Ready::default()
        };
        for (pfd, (client, _)) in fds[2..].iter().zip(&control_fds) {
            match client {
                _ if !readable(pfd) => {}
                None => ready.control = true,
                Some(id) => ready.clients.push(*id),
            }
        }
        Ok(ready)
    }

    /// The workers that are starting.
    fn starting(&self) -> Vec<Pid> {
        self.sup
            .workers()
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Starting { .. }))
            .map(|w| w.pid)
            .collect()
    }

    /// Looks in /proc for starting workers that serve (`--ready listening`).
    fn probe(&mut self, now: Instant) {
        let starting = self.starting();
        if starting.is_empty() {
            return;
        }
        let Some(probe) = self.sup.os_mut().probe.as_mut() else {
            return;
        };
        for pid in probe.check(&starting, now) {
            debug!(pid, "seen serving the listening socket(s)");
            self.sup.on_ready(pid, now);
        }
    }

    /// Samples the serving workers' resources when due; replaces those over a limit.
    fn sample(&mut self, now: Instant) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        if monitor.next_sample().is_none_or(|at| at > now) {
            return;
        }
        let subjects: Vec<Subject> = self
            .sup
            .workers()
            .iter()
            .filter(|w| w.role == Role::Serving && matches!(w.state, WorkerState::Ready { .. }))
            .map(|w| Subject {
                pid: w.pid,
                started: w.started,
            })
            .collect();
        for verdict in monitor.sample(&subjects, now) {
            if let Err(why) = self.sup.replace(verdict.pid, &verdict.reason, now) {
                debug!(pid = verdict.pid, "no replacement now: {why}");
                monitor.replacement_refused(verdict.pid);
            }
        }
    }

    /// Reaps every child that has exited.
    fn reap(&mut self, now: Instant) {
        loop {
            let (pid, status) = match waitpid(None::<NixPid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(other) => {
                    debug!("child state change ignored: {other:?}");
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid failed: {e}");
                    return;
                }
            };
            self.sup.on_exit(pid.as_raw() as Pid, status, now);
        }
    }

    /// Handles one notify datagram: attributes it to a worker, then acts on its fields.
    fn on_notify(&mut self, datagram: Datagram, now: Instant) {
        let Some(sender) = datagram.pid else {
            debug!("notify message without credentials ignored");
            return;
        };
        let sup = &mut self.sup;
        let is_worker = |p: Pid| sup.workers().iter().any(|w| w.pid == p);
        let Some(worker) = procfs::owning_ancestor(sender, std::process::id(), is_worker) else {
            debug!(
                sender,
                "notify message from a process that is not one of our workers ignored"
            );
            return;
        };
        for (key, value) in notify::fields(&datagram.text) {
            match key {
                "READY" if value == "1" => sup.on_ready(worker, now),
                "MASTER_PROCESS_VERSION" => {
                    let generation = sup
                        .workers()
                        .iter()
                        .find(|w| w.pid == worker)
                        .map(|w| w.generation);
                    self.versions
                        .reported(worker, generation.unwrap_or(0), value);
                }
                "MONITOR" if value == "pause" || value == "resume" => {
                    if let Some(m) = self.monitor.as_mut() {
                        m.pause_worker(worker, value == "pause");
                    }
                }
                "STATUS" => debug!(pid = worker, "worker status: {value}"),
                _ => debug!(pid = worker, "notify {key}={value}"),
            }
        }
        // Dropping the datagram closes any fd that came with it (releases BARRIER=1 senders).
        drop(datagram);
    }

    /// Accepts control clients, reads their requests and acts on them.
    fn on_control(&mut self, ready: Ready, now: Instant) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        if ready.control {
            server.accept(now);
        }
        let requests: Vec<(ClientId, Request)> = ready
            .clients
            .into_iter()
            .filter_map(|id| server.read(id).map(|r| (id, r)))
            .collect();
        server.expire(now);
        for (id, request) in requests {
            self.on_request(id, request, now);
        }
    }

    fn on_request(&mut self, id: ClientId, request: Request, now: Instant) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        match request {
            Request::Status => {
                let monitor = self.monitor.as_ref();
                let records =
                    control::status_records(&self.sup, monitor, &self.listeners, self.started, now);
                server.respond(id, &records);
            }
            Request::Reload { wait } => match self.sup.request_reload(now) {
                Ok(generation) if wait => server.wait(id, Wait::Reload(generation)),
                Ok(generation) => {
                    let started = self
                        .sup
                        .reload()
                        .is_some_and(|r| r.generation == generation);
                    let state = if started { "started" } else { "queued" };
                    server.respond(
                        id,
                        &[Record::new("reload")
                            .with("generation", generation)
                            .with("state", state)],
                    );
                }
                Err(why) => server.fail(id, why),
            },
            Request::Stop { wait } => {
                info!("stop requested by a control client");
                self.sup.stop(0, now);
                if wait {
                    server.wait(id, Wait::Stop);
                } else {
                    server.respond(id, &[Record::new("stop").with("state", "stopping")]);
                }
            }
            Request::Signal(signal) => {
                let workers = self.sup.workers().len();
                self.sup.forward(signal);
                info!(
                    signal = signal.name(),
                    workers, "signal sent to the workers by a control client"
                );
                server.respond(
                    id,
                    &[Record::new("signal")
                        .with("name", signal.name())
                        .with("workers", workers)],
                );
            }
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        if let Some(manager) = self.manager.as_mut() {
            manager.on_notice(&notice, &summary(&self.sup, &notice));
        }
        let Some(server) = self.control.as_mut() else {
            return;
        };
        match notice {
            Notice::ReloadEnded(outcome) => {
                let record = reload_record(&outcome);
                for id in server.waiting(|w| w == Wait::Reload(outcome.generation)) {
                    server.respond(id, std::slice::from_ref(&record));
                }
            }
            Notice::Stopping => {
                for id in server.waiting(|w| matches!(w, Wait::Reload(_))) {
                    server.fail(id, "the master is stopping");
                }
            }
            Notice::Running | Notice::ReloadStarted(_) => {}
        }
    }

    fn answer_stop_waiters(&mut self, code: i32) {
        if let Some(server) = self.control.as_mut() {
            for id in server.waiting(|w| w == Wait::Stop) {
                server.respond(
                    id,
                    &[Record::new("stop")
                        .with("state", "stopped")
                        .with("code", code)],
                );
            }
        }
    }
}

/// Makes the master the reaper of every orphaned descendant (`PR_SET_CHILD_SUBREAPER`), as a
/// container's PID 1 must be; the loop reaps them like workers.
fn become_subreaper() -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        return Err(Error::io(
            "cannot become a child subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    info!("reaping orphaned descendants (child subreaper)");
    Ok(())
}

/// The one-line `STATUS=` for the service manager after `notice`.
fn summary(sup: &Supervisor<RealOs>, notice: &Notice) -> String {
    let ready = sup
        .workers()
        .iter()
        .filter(|w| w.role == Role::Serving && matches!(w.state, WorkerState::Ready { .. }))
        .count();
    match notice {
        Notice::Running => format!(
            "serving: {ready} workers ready, generation {}",
            sup.generation()
        ),
        Notice::ReloadStarted(g) => format!("reloading to generation {g}; {ready} workers serving"),
        Notice::ReloadEnded(o) => match &o.failure {
            None => format!(
                "serving: {ready} workers ready, generation {} (reloaded in {} ms)",
                o.generation,
                o.took.as_millis()
            ),
            Some(reason) => format!(
                "reload {} failed: {reason}; {ready} workers serving",
                o.generation
            ),
        },
        Notice::Stopping => "stopping".to_string(),
    }
}

/// A reload's outcome as a control record.
fn reload_record(outcome: &ReloadOutcome) -> Record {
    let serving: Vec<String> = outcome
        .serving
        .iter()
        .map(|(index, pid, generation)| format!("{index}:{pid}@{generation}"))
        .collect();
    let mut r = Record::new("reload")
        .with("generation", outcome.generation)
        .with(
            "outcome",
            if outcome.failure.is_some() {
                "failed"
            } else {
                "done"
            },
        )
        .with("took_ms", outcome.took.as_millis())
        .with("serving", serving.join(","));
    if let Some(reason) = &outcome.failure {
        r = r.with("reason", reason);
    }
    r
}

/// What the master knows of the master-process versions its workers were built with.
#[derive(Debug)]
struct Versions {
    policy: OnVersionChange,
    /// A reload brought another version and the policy is to exit once it is done.
    exit_pending: bool,
}

impl Versions {
    /// Worker `pid` of reload `generation` reports it was built with `version`.
    fn reported(&mut self, pid: Pid, generation: u64, version: &str) {
        let ours = env!("CARGO_PKG_VERSION");
        if version == ours {
            return;
        }
        warn!(
            pid,
            generation, "worker built with master-process {version}; this master is {ours}"
        );
        if generation > 0 && self.policy == OnVersionChange::Exit {
            self.exit_pending = true;
        }
    }
}
