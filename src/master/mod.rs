//! The master: binds the listeners, then runs a single-threaded `poll(2)` loop that turns
//! signals, child exits, notify messages and control requests into [`Supervisor`] events,
//! until the supervisor says every worker is gone.
//!
//! The loop owns every resource: the listeners, the spawner and the readiness probe (in
//! [`RealOs`], handed to the supervisor for each event), the notify and control sockets,
//! the monitor. It sleeps in `poll` on the sources of [`sources::Source`] with no timeout
//! unless something is due (a supervisor deadline, the readiness probe while a worker
//! starts, a control client's time to send its request, a monitor sample, a watchdog
//! ping), so an idle master with `--no-monitor` uses no CPU. Children are reaped on SIGCHLD
//! with `waitpid(-1, WNOHANG)`: every child of the master is a worker (or, as a subreaper,
//! an orphan to reap), and a pid is never reused before we reap it, so signalling a live
//! worker by pid is race-free.

mod adoption;
mod handover;
mod manager;
mod os;
mod sources;

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;
use tracing::{debug, info, warn};

use crate::config::{Config, ControlSocket};
use crate::control::{self, ClientId, Record, Request, Wait};
use crate::error::{Error, Result};
use crate::metrics;
use crate::monitor::{Monitor, Subject};
use crate::notify::{self, Datagram, NotifySocket};
use crate::policy::{OnMasterChange, OnVersionChange, ReadyMode};
use crate::procfs;
use crate::readiness::listening::{self, ListenProbe};
use crate::signals::{MASTER_SIGNALS, Signal, SignalPipe};
use crate::socket::{ListenerSet, somaxconn};
use crate::spawn::Spawner;
use crate::supervisor::{Notice, Phase, Supervisor};
use crate::upgrade::ExeIdentity;
use crate::worker::{ExitStatus, Pid, Role, WorkerState};
use adoption::{Adoption, TreeId};
use manager::ServiceManager;
use os::RealOs;
use sources::{PollSet, Source};

/// Notify datagrams handled per wake at most: a chatty worker cannot starve signals and
/// deadlines (the rest wait for the next turn of the loop).
const NOTIFY_BURST: usize = 64;

/// Runs a master for `config` until it stops; returns the exit code. A master upgraded in
/// place (its state in the environment) resumes instead of starting afresh.
///
/// # Errors
/// Anything that stops the master from starting: sockets that cannot be bound, a command
/// that cannot run, a readiness mode the kernel forbids.
pub fn run(config: Config) -> Result<i32> {
    // A master resuming after an upgrade that cannot run goes back to the previous image,
    // whichever face (the CLI, `init()`) started it.
    run_master(config).inspect_err(|e| crate::upgrade::abandon_if_resuming(&e.to_string()))
}

fn run_master(config: Config) -> Result<i32> {
    // Handlers first: from here on no signal is lost, and no child can become a zombie.
    let signals = SignalPipe::install(&MASTER_SIGNALS)
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    die_with_parent()?;
    blocking_stdio();
    if crate::upgrade::resuming() {
        return handover::resume(config, signals);
    }
    crate::config::resolve_program(&config.command[0])?;
    if let Some(user) = config.user.as_ref().filter(|u| !u.can_switch()) {
        return Err(Error::invalid(
            "--user",
            user.name.clone(),
            "starting workers as another user needs root (or CAP_SETUID and CAP_SETGID)",
        ));
    }
    if let ReadyMode::Listening(_) = config.supervisor.ready {
        listening::check_access().map_err(|reason| {
            let fix = "use --ready notify or --ready delay:DURATION";
            Error::invalid(
                "--ready",
                config.supervisor.ready.to_string(),
                format!("{reason}; {fix}"),
            )
        })?;
    }
    // The control socket first: an unsafe folder or a master of the same name stops us
    // before anything is bound.
    let control = bind_control(&config)?;
    let backlog = config.backlog.unwrap_or_else(somaxconn);
    let listeners = match ListenerSet::from_activation(backlog, config.socket_mode)? {
        Some(set) => {
            for l in set.iter() {
                info!(
                    name = l.name(),
                    "listening on {} (socket activation)",
                    l.local()
                );
            }
            set
        }
        None => {
            let mut set = ListenerSet::bind(&config.listeners(), config.socket_mode, backlog)?;
            if config.port_alone() && config.adopt {
                set.mark_port(0);
            }
            for l in set.iter() {
                info!(name = l.name(), backlog, "listening on {}", l.local());
            }
            set
        }
    };
    if let Some(path) = control.as_ref().and_then(control::Server::path) {
        info!("control socket at {}", path.display());
    }
    if config.subreaper || std::process::id() == 1 {
        become_subreaper()?;
    }
    let notify = NotifySocket::bind(config.user.as_ref().map(|u| (u.uid, u.gid)))?;
    let own = Own::get(&config, signals)?;
    let probe = listen_probe(&config, &listeners)?;
    let os = real_os(&config, listeners, &notify, probe);
    info!(pid = std::process::id(), workers = config.supervisor.workers, ready = %config.supervisor.ready,
          "master started: {}", os.program());
    if let Some(user) = &config.user {
        info!("workers run as {user}");
    }
    let now = Instant::now();
    let sup = Supervisor::new(config.supervisor.clone());
    let mut master = Master::new(&config, sup, os, own, notify, control, now);
    master.sup.start(&mut master.os, now);
    master.finish()
}

/// Makes stdin, stdout and stderr blocking: a parent (Node.js, after `process.execve`) may
/// leave them non-blocking, and workers inherit them (many programs fail on `EAGAIN` there).
fn blocking_stdio() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    for fd in [
        std::io::stdin().as_fd(),
        std::io::stdout().as_fd(),
        std::io::stderr().as_fd(),
    ] {
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags);
            if flags.contains(OFlag::O_NONBLOCK) {
                let _ = fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK));
            }
        }
    }
}

/// The control socket `config` asks for, bound.
fn bind_control(config: &Config) -> Result<Option<control::Server>> {
    let path = match &config.control {
        ControlSocket::Off => return Ok(None),
        ControlSocket::At(path) => path.clone(),
        ControlSocket::Default => {
            control::paths::ensure_folder(&control::paths::folder())?;
            control::paths::default_path(&config.name())
        }
    };
    control::Server::bind(&path).map(Some)
}

/// The `/proc` probe that sees workers serving `listeners`, if the readiness mode asks.
fn listen_probe(config: &Config, listeners: &ListenerSet) -> Result<Option<ListenProbe>> {
    match config.supervisor.ready {
        ReadyMode::Listening(coverage) => ListenProbe::new(listeners.fds(), coverage)
            .map(Some)
            .map_err(|e| Error::io("cannot inspect the listening sockets", e)),
        _ => Ok(None),
    }
}

/// The OS the supervisor acts through: `listeners` inherited by workers of `config`'s
/// command, which notify on `notify`, seen serving by `probe`.
fn real_os(
    config: &Config,
    listeners: ListenerSet,
    notify: &NotifySocket,
    probe: Option<ListenProbe>,
) -> RealOs {
    RealOs::new(
        Spawner::new(config.command.clone(), config.user.clone()),
        listeners,
        notify.path().to_string_lossy().into_owned(),
        worker_env(config, notify),
        probe,
        config.adopt,
    )
}

/// What every worker gets besides the protocol's variables: the drain timeout the reference
/// called `MAX_KILL_TIMEOUT` (however it was given), the Node.js drain preload, and whether
/// the drain is on (however it was given: the npm package's own preload reads it).
fn worker_env(config: &Config, notify: &NotifySocket) -> Vec<(&'static str, String)> {
    let drain = if config.node_drain { "on" } else { "off" };
    let mut vars = vec![
        (
            "MAX_KILL_TIMEOUT",
            config.supervisor.kill_timeout.as_millis().to_string(),
        ),
        (
            crate::config::options::NODE_DRAIN.meta.env[0],
            drain.to_string(),
        ),
    ];
    if config.node_drain {
        match crate::node::install_preload(notify.dir()) {
            Ok(preload) => {
                let existing = std::env::var("NODE_OPTIONS").ok();
                vars.push((
                    "NODE_OPTIONS",
                    crate::node::node_options(existing.as_deref(), &preload),
                ));
            }
            Err(e) => warn!(
                "cannot write the Node.js drain preload in {}: {e}; Node.js workers without a \
                 SIGTERM handler will not drain",
                notify.dir().display()
            ),
        }
    }
    vars
}

/// With `MASTER_PROCESS_PARENT_PID` (the npm package on Node.js versions that cannot
/// replace their process), the master stops gracefully (SIGTERM) when that parent dies.
fn die_with_parent() -> Result<()> {
    let Some(value) = crate::env::var(crate::env::PARENT_PID) else {
        return Ok(());
    };
    let parent: u32 = value
        .parse()
        .map_err(|_| Error::invalid(crate::env::PARENT_PID, &value, "expected the parent's pid"))?;
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) } != 0 {
        return Err(Error::io(
            "cannot ask to die with the parent",
            std::io::Error::last_os_error(),
        ));
    }
    // If the parent died before prctl, we were already reparented: stop now.
    if std::os::unix::process::parent_id() != parent {
        warn!("the process that started the master ({parent}) is gone; stopping");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
    }
    Ok(())
}

/// The master's own executable: what an upgrade runs, and how a change on disk is noticed.
#[derive(Debug)]
struct Executable {
    /// `argv[0]` as started (not resolved through symlinks, so that a reload runs what the
    /// path points to now).
    path: PathBuf,
    /// Its identity on disk when last looked at.
    identity: Option<ExeIdentity>,
    /// Our arguments, `argv[0]` first.
    argv: Vec<OsString>,
}

/// The running master: the supervisor and every source of events.
struct Master {
    sup: Supervisor,
    os: RealOs,
    signals: SignalPipe,
    notify: NotifySocket,
    control: Option<control::Server>,
    monitor: Option<Monitor>,
    manager: Option<ServiceManager>,
    versions: Versions,
    /// `--metrics`.
    metrics: Option<metrics::Server>,
    /// What metrics count as the loop goes.
    counters: metrics::Counters,
    started: Instant,
    exe: Executable,
    on_master_change: OnMasterChange,
}

/// What the master has of its own, apart from its sockets and workers: everything about it
/// that can fail to be had. A resuming image gets it before it takes over a single
/// descriptor, so that one that cannot still has all of them to go back with.
struct Own {
    signals: SignalPipe,
    exe: Executable,
    metrics: Option<metrics::Server>,
}

impl Own {
    fn get(config: &Config, signals: SignalPipe) -> Result<Own> {
        let argv = crate::spawn::own_command()?;
        let path = PathBuf::from(&argv[0]);
        let metrics = config
            .metrics
            .as_ref()
            .map(metrics::Server::bind)
            .transpose()?;
        if let Some(m) = &metrics {
            info!("metrics at http://{}/metrics", m.local());
        }
        Ok(Own {
            signals,
            exe: Executable {
                identity: ExeIdentity::of(&path),
                path,
                argv,
            },
            metrics,
        })
    }
}

impl Master {
    fn new(
        config: &Config,
        sup: Supervisor,
        os: RealOs,
        own: Own,
        notify: NotifySocket,
        control: Option<control::Server>,
        now: Instant,
    ) -> Master {
        Master {
            metrics: own.metrics,
            counters: metrics::Counters::default(),
            sup,
            os,
            signals: own.signals,
            notify,
            control,
            manager: ServiceManager::from_env(now),
            monitor: config.monitor().map(|limits| Monitor::new(limits, now)),
            versions: Versions {
                policy: config.on_version_change,
                exit_pending: false,
            },
            started: now,
            exe: own.exe,
            on_master_change: config.on_master_change,
        }
    }

    /// Runs the loop until every worker is gone, then cleans up; returns the exit code.
    fn finish(mut self) -> Result<i32> {
        let code = self.run()?;
        self.stop_orphans();
        let Master {
            os, mut control, ..
        } = self;
        drop(os); // closes the listeners, removes our unix socket files
        info!(code, "master exiting");
        if let Some(server) = control.as_mut() {
            answer_stop_waiters(server, code);
        }
        drop(control);
        Ok(code)
    }

    fn run(&mut self) -> Result<i32> {
        loop {
            if let Phase::Exited(code) = self.sup.phase() {
                return Ok(code);
            }
            let ready = self.wait()?;
            let now = Instant::now();
            let starting = self.any_starting();
            let mut clients = Vec::new();
            let mut control = false;
            for source in ready {
                match source {
                    Source::Signals => self.on_signals(),
                    Source::Notify => self.on_notify_ready(now),
                    Source::Listener(i) => self.listener_died(i, now),
                    Source::Control => control = true,
                    Source::Client(id) => clients.push(id),
                    Source::Adoption(tree) => self.on_adoption(tree, now),
                    Source::Metrics | Source::MetricsClient(_) => self.on_metrics(source, now),
                }
            }
            if let Some(m) = self.metrics.as_mut() {
                m.expire(now);
            }
            // Handling the events took time (a reap may block): what is due is due now.
            let now = Instant::now();
            self.probe(now);
            if starting {
                // A new worker may have called listen() on the shared socket, shrinking
                // its queue for everyone (Node.js asks for 511): ask for ours again.
                self.os.listeners().assert_backlog();
            }
            self.sup.on_tick(&mut self.os, now);
            self.settle_port();
            self.sample(now);
            if let Some(manager) = self.manager.as_mut() {
                manager.tick(now);
            }
            self.on_control(control, clients, now);
            if self.versions.exit_pending
                && self.sup.reload().is_none()
                && self.sup.phase() == Phase::Running
            {
                self.versions.exit_pending = false;
                info!("--on-version-change exit: the new workers are ready; exiting with code 1");
                self.sup.stop(&mut self.os, 1, now);
            }
            for notice in self.sup.take_notices() {
                self.on_notice(notice, now);
            }
        }
    }

    /// Sleeps until something happens or is due; returns what happened.
    fn wait(&self) -> Result<Vec<Source>> {
        // While a worker starts under `--ready listening`, wake up to look at it.
        let probe_at = if self.os.has_probe() {
            self.os.probe_due(&self.starting())
        } else {
            None
        };
        let due = [
            self.sup.next_deadline(),
            probe_at,
            self.control
                .as_ref()
                .and_then(control::Server::next_deadline),
            self.monitor.as_ref().and_then(Monitor::next_sample),
            self.metrics
                .as_ref()
                .and_then(metrics::Server::next_deadline),
            self.manager
                .as_ref()
                .and_then(ServiceManager::next_deadline),
        ];
        let mut set = PollSet::default();
        set.add(Source::Signals, self.signals.fd());
        set.add(Source::Notify, self.notify.fd());
        if let Some(server) = &self.control {
            for (client, fd, write) in server.poll_fds(Instant::now()) {
                let source = client.map_or(Source::Control, Source::Client);
                let events = if write {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                };
                set.add_for(source, fd, events);
            }
        }
        for (i, l) in self.os.listeners().iter().enumerate() {
            if l.alive() {
                set.add_for(Source::Listener(i), l.fd(), PollFlags::empty());
            }
        }
        for (tree, fd) in self.os.adoption().into_iter().flat_map(|a| a.fds()) {
            set.add(Source::Adoption(tree), fd);
        }
        if let Some(m) = &self.metrics {
            set.add(Source::Metrics, m.fd());
            for (id, fd, interest) in m.client_fds() {
                let events = match interest {
                    metrics::server::Interest::Read => PollFlags::POLLIN,
                    metrics::server::Interest::Write => PollFlags::POLLOUT,
                };
                set.add_for(Source::MetricsClient(id), fd, events);
            }
        }
        set.wait(due.into_iter().flatten().min())
            .map_err(|e| Error::io("poll failed", e))
    }

    fn on_signals(&mut self) {
        for signal in self.signals.drain() {
            let now = Instant::now();
            match signal {
                Signal::Child => self.reap(),
                Signal::Hangup => self.reload_requested(None, now),
                Signal::User2 => {
                    self.sup.on_signal(&mut self.os, Signal::User2, now);
                    if let Some(m) = self.monitor.as_mut() {
                        m.toggle(now);
                    }
                }
                other => self.sup.on_signal(&mut self.os, other, now),
            }
        }
    }

    /// Handles the waiting notify datagrams, at most [`NOTIFY_BURST`] per wake.
    fn on_notify_ready(&mut self, now: Instant) {
        for _ in 0..NOTIFY_BURST {
            match self.notify.recv() {
                Some(datagram) => self.on_notify(datagram, now),
                None => return,
            }
        }
        debug!("notify: more datagrams waiting; handling them on the next turn");
    }

    /// Handles the calls worker tree `worker` made through its adoption filter. A refused
    /// bind fails the worker if it is new (its reload fails, saying why).
    fn on_adoption(&mut self, tree: TreeId, now: Instant) {
        for (pid, reason) in self.os.on_adoption(tree) {
            self.sup.refuse(&mut self.os, pid, &reason, now);
        }
    }

    /// Accepts metrics clients, reads their requests, answers them.
    fn on_metrics(&mut self, source: Source, now: Instant) {
        use metrics::server::Asked;
        let Some(server) = self.metrics.as_mut() else {
            return;
        };
        let id = match source {
            Source::Metrics => return server.accept(now),
            Source::MetricsClient(id) => id,
            _ => return,
        };
        let Some(asked) = server.read(id) else {
            return server.write(id);
        };
        let (status, body, head_only) = match asked {
            Asked::Metrics { head_only } => {
                let facts = metrics::Facts {
                    sup: &self.sup,
                    listeners: self.os.listeners(),
                    adopted: self.os.adoption().map(Adoption::adopted),
                    counters: &self.counters,
                    monitor_paused: self.monitor.as_ref().map(Monitor::paused),
                    started: self.started,
                    now,
                };
                ("200 OK", metrics::render(&facts), head_only)
            }
            Asked::NotFound => (
                "404 Not Found",
                "only /metrics is served here\n".into(),
                false,
            ),
            Asked::NotAllowed => (
                "405 Method Not Allowed",
                "GET /metrics only\n".into(),
                false,
            ),
            Asked::Bad => ("400 Bad Request", "not an HTTP/1 request\n".into(), false),
        };
        if let Some(server) = self.metrics.as_mut() {
            server.answer(id, status, &body, head_only);
        }
    }

    /// Once a worker served, the address of `PORT` is settled: later binds of another one
    /// are refused rather than claimed.
    fn settle_port(&mut self) {
        let sup = &self.sup;
        if let Some(adoption) = self.os.adoption_mut().filter(|a| a.unsettled()) {
            if sup
                .workers()
                .iter()
                .any(|w| matches!(w.state, WorkerState::Ready { .. }))
            {
                adoption.settle();
            }
        }
    }

    /// Whether some worker is starting.
    fn any_starting(&self) -> bool {
        self.sup
            .workers()
            .iter()
            .any(|w| matches!(w.state, WorkerState::Starting { .. }))
    }

    /// The workers that are starting, with their start times.
    fn starting(&self) -> Vec<(Pid, Instant)> {
        self.sup
            .workers()
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Starting { .. }))
            .map(|w| (w.pid, w.started))
            .collect()
    }

    /// Looks in /proc for starting workers that serve (`--ready listening`).
    fn probe(&mut self, now: Instant) {
        if !self.os.has_probe() {
            return;
        }
        let starting = self.starting();
        if starting.is_empty() {
            return;
        }
        let Some(probe) = self.os.probe_mut() else {
            return;
        };
        for pid in probe.check(&starting, now) {
            debug!(pid, "seen serving the listening socket(s)");
            self.sup.on_ready(&mut self.os, pid, now);
        }
    }

    /// Listener `i` stopped listening (a process called `shutdown()` on the shared socket):
    /// bind it again and reload, so that every worker gets the new socket; if it cannot be
    /// bound again, stop loudly rather than serve a dead port.
    fn listener_died(&mut self, i: usize, now: Instant) {
        let Some(local) = self.os.listeners().get(i).map(|l| l.local().to_string()) else {
            return;
        };
        tracing::error!("listener {local} stopped listening (did a worker call shutdown() on it?)");
        match self.os.rebind(i) {
            Ok(local) => {
                info!("listener {local} bound again; reloading so that every worker gets it");
                self.reload_requested(None, now);
            }
            Err(why) => {
                tracing::error!(
                    "cannot bind {local} again ({why}); stopping rather than serve a dead port"
                );
                self.sup.stop(&mut self.os, 1, now);
            }
        }
    }

    /// Stops what workers left behind: as their subreaper, the master adopted their orphans;
    /// none may outlive it. SIGTERM, then SIGKILL after `MAX_KILL_TIMEOUT`; all reaped.
    fn stop_orphans(&mut self) {
        let me = std::process::id();
        let orphans = procfs::children(me);
        if orphans.is_empty() {
            return;
        }
        warn!(
            count = orphans.len(),
            "stopping processes left behind by workers: {orphans:?}"
        );
        let signal = |pids: &[Pid], sig| {
            for &p in pids {
                let _ = nix::sys::signal::kill(NixPid::from_raw(p as i32), sig);
            }
        };
        signal(&orphans, nix::sys::signal::Signal::SIGTERM);
        let deadline = crate::supervisor::later(Instant::now(), self.sup.settings().kill_timeout);
        loop {
            while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                waitpid(None::<NixPid>, Some(WaitPidFlag::WNOHANG))
            {}
            let left = procfs::children(me);
            if left.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                warn!("processes left behind outlived MAX_KILL_TIMEOUT; sending SIGKILL: {left:?}");
                signal(&left, nix::sys::signal::Signal::SIGKILL);
                for p in left {
                    let _ = waitpid(NixPid::from_raw(p as i32), None);
                }
                return;
            }
            // Sleep until a child exits (SIGCHLD on the signal pipe) or the deadline.
            let ms = (deadline - now).as_millis();
            let mut fds = [PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            self.signals.drain();
        }
    }

    /// A reload was asked (SIGHUP, or a control client). If our own executable changed on
    /// disk, `--on-master-change` decides first.
    fn reload_requested(&mut self, client: Option<(ClientId, bool)>, now: Instant) {
        let identity = ExeIdentity::of(&self.exe.path);
        if identity.is_some() && identity != self.exe.identity {
            warn!(exe = %self.exe.path.display(), "the master's own executable changed on disk");
            match self.on_master_change {
                OnMasterChange::Log => self.exe.identity = identity,
                OnMasterChange::Upgrade => return self.upgrade(client, now),
                OnMasterChange::Exit => {
                    info!(
                        "--on-master-change exit: stopping with code 1 for the service manager to restart us"
                    );
                    if let (Some((id, _)), Some(server)) = (client, self.control.as_mut()) {
                        server.fail(
                            id,
                            "the master's executable changed: exiting (--on-master-change exit)",
                        );
                    }
                    return self.sup.stop(&mut self.os, 1, now);
                }
            }
        }
        let result = self.sup.request_reload(&mut self.os, now);
        let Some((id, wait)) = client else { return };
        let Some(server) = self.control.as_mut() else {
            return;
        };
        match result {
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
            match self
                .sup
                .replace(&mut self.os, verdict.pid, &verdict.reason, now)
            {
                Ok(_) => self.counters.replaced(verdict.resource),
                Err(why) => {
                    debug!(pid = verdict.pid, "no replacement now: {why}");
                    monitor.replacement_refused(verdict.pid);
                }
            }
        }
    }

    /// Reaps every child that has exited. Each exit is timed when it is reaped: `wait4` may
    /// block a while (the kernel drops the worker's `/proc` entries then), and a restart
    /// decided on an older time would count the worker's next life from too early.
    fn reap(&mut self) {
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
            let now = Instant::now();
            let pid = pid.as_raw() as Pid;
            if let Some(adoption) = self.os.adoption_mut() {
                adoption.exited(pid);
            }
            self.sup.on_exit(&mut self.os, pid, status, now);
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
                "READY" if value == "1" => {
                    if !sup.on_ready_message(&mut self.os, worker, now) {
                        debug!(
                            pid = worker,
                            "READY=1 ignored: --ready {} decides",
                            sup.settings().ready
                        );
                    }
                }
                "MASTER_PROCESS_VERSION" if value.is_empty() => {
                    debug!(pid = worker, "empty MASTER_PROCESS_VERSION ignored");
                }
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
    fn on_control(&mut self, accept: bool, clients: Vec<ClientId>, now: Instant) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        if accept {
            server.accept(now);
        }
        let requests: Vec<(ClientId, Request)> = clients
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
                let extras = control::Extras {
                    monitor: self.monitor.as_ref(),
                    adopted: self.os.adoption().map(Adoption::adopted),
                    metrics: self.metrics.as_ref().map(metrics::Server::local),
                };
                let records = control::status_records(
                    &self.sup,
                    self.os.listeners(),
                    &extras,
                    self.started,
                    now,
                );
                server.respond(id, &records);
            }
            Request::Reload { wait } => self.reload_requested(Some((id, wait)), now),
            Request::Stop { wait } => {
                info!("stop requested by a control client");
                self.sup.stop(&mut self.os, 0, now);
                if wait {
                    server.wait(id, Wait::Stop);
                } else {
                    server.respond(id, &[Record::new("stop").with("state", "stopping")]);
                }
            }
            Request::Upgrade { wait } => self.upgrade(Some((id, wait)), now),
            Request::Events => {
                // First the state it starts from, then every event.
                server.wait(id, Wait::Events);
                let hello = control::event("subscribed", self.sup.at_ms(now))
                    .with("generation", self.sup.generation())
                    .with("phase", self.sup.phase().name());
                server.send(id, &hello);
            }
            Request::Signal(signal) => {
                let workers = self.sup.workers().len();
                self.sup.forward(&mut self.os, signal);
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

    fn on_notice(&mut self, notice: Notice, now: Instant) {
        self.counters.on_notice(&notice);
        if let Some(server) = self.control.as_mut().filter(|s| s.has_subscribers()) {
            server.publish(&control::event_record(&notice, self.sup.at_ms(now)));
        }
        if let Some(manager) = self.manager.as_mut() {
            manager.on_notice(&notice, &summary(&self.sup, &notice));
        }
        let Some(server) = self.control.as_mut() else {
            return;
        };
        match notice {
            Notice::ReloadEnded(outcome) => {
                let record = control::outcome_record("reload", &outcome);
                for id in server.waiting(|w| w == Wait::Reload(outcome.generation)) {
                    server.respond(id, std::slice::from_ref(&record));
                }
            }
            Notice::Stopping => {
                for id in server.waiting(|w| matches!(w, Wait::Reload(_))) {
                    server.fail(id, "the master is stopping");
                }
            }
            Notice::Running | Notice::ReloadStarted(_) | Notice::Worker(_) => {}
        }
    }
}

/// Answers the clients waiting for the master's exit (`stop --wait`); their connections
/// close when the process does.
fn answer_stop_waiters(server: &mut control::Server, code: i32) {
    for id in server.waiting(|w| w == Wait::Stop) {
        server.respond_at_exit(
            id,
            &[Record::new("stop")
                .with("state", "stopped")
                .with("code", code)],
        );
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
fn summary(sup: &Supervisor, notice: &Notice) -> String {
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
        Notice::Worker(_) => String::new(),
    }
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
