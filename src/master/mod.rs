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

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;
use tracing::{debug, info, warn};

use std::path::PathBuf;

use crate::config::{Config, OnMasterChange, OnVersionChange};
use crate::control::{self, ClientId, Record, Request, Wait};
use crate::error::{Error, Result};
use crate::monitor::{Monitor, Subject};
use crate::notify::{self, Datagram, NotifySocket};
use crate::procfs;
use crate::readiness::ReadyMode;
use crate::readiness::listening;
use crate::signals::{Signal, SignalPipe};
use crate::socket::{self, Listener};
use crate::supervisor::{Notice, Phase, Settings, Supervisor};
use crate::upgrade;
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

/// Runs a master for `config` until it stops; returns the exit code. A master upgraded in
/// place (its state in the environment) resumes instead of starting afresh.
pub fn run(config: Config) -> Result<i32> {
    // Handlers first: from here on no signal is lost, and no child can become a zombie.
    let signals = SignalPipe::install(&SIGNALS)
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    if let Ok(text) = std::env::var(upgrade::STATE_ENV) {
        return resume(config, signals, &text);
    }
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
    if config.subreaper || std::process::id() == 1 {
        become_subreaper()?;
    }
    if let Some(c) = &control {
        info!("control socket at {}", c.path().display());
    }
    let notify = NotifySocket::bind()?;
    let os = RealOs::new(
        &config,
        listeners,
        notify.path().to_string_lossy().into_owned(),
    )?;
    info!(pid = std::process::id(), workers = config.workers, ready = %config.ready, "master started: {}", os.spawner.program());
    let now = Instant::now();
    let sup = Supervisor::new(os, Settings::from(&config));
    let mut master = Master::new(&config, sup, signals, notify, control, now)?;
    master.sup.start(now);
    master.finish()
}

/// Resumes a master from the state its previous image handed over (see [`upgrade`]); if
/// that state cannot be used, goes back to the previous executable.
fn resume(config: Config, signals: SignalPipe, text: &str) -> Result<i32> {
    let handover = match upgrade::Handover::decode(text) {
        Ok(h) if h.fds().iter().all(|&fd| upgrade::is_open(fd)) => h,
        Ok(_) => return roll_back(text, "a handed-over descriptor is not open".into()),
        Err(why) => return roll_back(text, why),
    };
    if config.subreaper || std::process::id() == 1 {
        become_subreaper()?;
    }
    let mut fds = handover.take_fds();
    let listeners: Vec<Listener> = handover
        .listeners
        .iter()
        .zip(fds.listeners.drain(..))
        .map(|(l, fd)| match &l.file {
            Some((path, dev, ino)) => {
                Listener::adopt_with_file(l.name.clone(), fd, path.clone(), *dev, *ino)
            }
            None => Listener::adopt(l.name.clone(), fd),
        })
        .collect();
    let mut control = handover
        .control
        .as_ref()
        .zip(fds.control.take())
        .map(|((_, path, dev, ino), fd)| control::Server::adopt(fd, path.clone(), *dev, *ino));
    let (_, dir, path) = handover.notify.clone();
    let notify = NotifySocket::adopt(fds.notify, dir, path);
    drop(fds.old_exe); // not needed any more: this image resumed
    let os = RealOs::new(
        &config,
        listeners,
        notify.path().to_string_lossy().into_owned(),
    )?;
    let now = Instant::now();
    let adopted = handover.snapshot.workers.len();
    let sup = Supervisor::restore(os, Settings::from(&config), handover.snapshot, now);
    let client = fds.client.map(std::os::unix::net::UnixStream::from);
    // Signals that arrived during the exec were held: now they reach our handlers.
    upgrade::block_signals(false);
    info!(
        pid = std::process::id(),
        workers = adopted,
        version = env!("CARGO_PKG_VERSION"),
        rollback = handover.rollback,
        "master upgraded in place: workers adopted"
    );
    let mut master = Master::new(&config, sup, signals, notify, control.take(), now)?;
    master.reap(now);
    match master.sup.request_reload(now) {
        Ok(generation) => {
            if let (Some(stream), Some(server)) = (client, master.control.as_mut()) {
                server.adopt_client(stream, Wait::Reload(generation));
            }
        }
        Err(why) => warn!("no reload after the upgrade: {why}"),
    }
    master.finish()
}

/// The next image cannot resume from `text`: exec the previous executable with it, unless
/// this already is the way back.
fn roll_back(text: &str, why: String) -> Result<i32> {
    let from = std::env::var(upgrade::FROM_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    match from {
        Some(fd) if upgrade::is_open(fd) => {
            tracing::error!(
                "cannot resume after the upgrade ({why}); going back to the previous master"
            );
            let err = upgrade::exec_back(fd, text);
            Err(Error::io("cannot go back to the previous master", err))
        }
        _ => Err(Error::io(
            format!("cannot resume after the upgrade: {why}"),
            std::io::Error::other(why),
        )),
    }
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
    /// Our own executable as started (argv[0], not resolved through symlinks), its identity
    /// on disk then, and our arguments: what an upgrade execs.
    exe: PathBuf,
    exe_identity: Option<(u64, u64, u64, i64, i64)>,
    argv: Vec<std::ffi::OsString>,
    on_master_change: OnMasterChange,
    /// How to bind each listener again if it dies; `None` for sockets we did not bind
    /// (socket activation).
    specs: Option<Vec<crate::socket::ListenerSpec>>,
    socket_mode: u32,
    /// Listeners that died and could not be bound again.
    dead: Vec<usize>,
}

/// What `poll` found readable.
#[derive(Default)]
struct Ready {
    signals: bool,
    notify: bool,
    control: bool,
    clients: Vec<ClientId>,
    /// Listeners (by position) that hung up.
    dead_listeners: Vec<usize>,
}

impl Master {
    fn new(
        config: &Config,
        sup: Supervisor<RealOs>,
        signals: SignalPipe,
        notify: NotifySocket,
        control: Option<control::Server>,
        now: Instant,
    ) -> Result<Master> {
        let listeners = sup
            .os()
            .listeners
            .iter()
            .map(|l| (l.name().to_string(), l.local().to_string()))
            .collect();
        let argv = crate::spawn::own_command()?;
        let exe = PathBuf::from(&argv[0]);
        let sup_listeners_len = sup.os().listeners.len();
        let resolved_specs: Vec<_> = config
            .listeners
            .iter()
            .zip(&sup.os().listeners)
            .map(|(spec, l)| l.resolved(spec))
            .collect();
        Ok(Master {
            sup,
            signals,
            notify,
            control,
            manager: ServiceManager::from_env(now),
            monitor: config.monitor.map(|limits| Monitor::new(limits, now)),
            versions: Versions {
                policy: config.on_version_change,
                exit_pending: false,
            },
            listeners,
            started: now,
            exe_identity: upgrade::identity(&exe),
            exe,
            argv,
            on_master_change: config.on_master_change,
            specs: (config.listeners.len() == sup_listeners_len).then_some(resolved_specs),
            socket_mode: config.socket_mode,
            dead: Vec::new(),
        })
    }

    /// Runs the loop until every worker is gone, then cleans up; returns the exit code.
    fn finish(mut self) -> Result<i32> {
        let code = self.run()?;
        self.stop_orphans();
        let Master {
            sup, mut control, ..
        } = self;
        drop(sup.into_os().listeners); // removes our unix socket files
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
            let mut ready = self.wait()?;
            let now = Instant::now();
            if ready.signals {
                for signal in self.signals.drain() {
                    match signal {
                        Signal::Child => self.reap(now),
                        Signal::Hangup => self.reload_requested(None, now),
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
            for i in std::mem::take(&mut ready.dead_listeners) {
                self.listener_died(i, now);
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
            .map(|c| c.poll_fds(Instant::now()))
            .unwrap_or_default();
        let mut fds: Vec<PollFd<'_>> = [self.signals.fd(), self.notify.fd()]
            .into_iter()
            .chain(control_fds.iter().map(|(_, fd)| *fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        // The listeners, for no event but the ones poll always reports: a listener that
        // someone shut down hangs up (POLLHUP). Incoming connections do not wake us.
        let watched: Vec<usize> = (0..self.sup.os().listeners.len())
            .filter(|i| !self.dead.contains(i))
            .collect();
        fds.extend(
            watched
                .iter()
                .map(|&i| PollFd::new(self.sup.os().listeners[i].fd(), PollFlags::empty())),
        );
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
        let listener_fds = &fds[2 + control_fds.len()..];
        ready.dead_listeners = listener_fds
            .iter()
            .zip(&watched)
            .filter(|(p, _)| readable(p))
            .map(|(_, &i)| i)
            .collect();
        for (pfd, (client, _)) in fds[2..2 + control_fds.len()].iter().zip(&control_fds) {
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

    /// Listener `i` stopped listening (a process called `shutdown()` on the shared socket):
    /// bind it again and reload, so that every worker gets the new socket; if it cannot be
    /// bound again, stop loudly rather than serve a dead port.
    fn listener_died(&mut self, i: usize, now: Instant) {
        let local = self.sup.os().listeners[i].local().to_string();
        tracing::error!("listener {local} stopped listening (did a worker call shutdown() on it?)");
        let spec = self.specs.as_ref().and_then(|s| s.get(i)).cloned();
        let rebound = match spec {
            None => Err("it was passed by socket activation: it is not ours to bind".to_string()),
            Some(spec) => {
                // The dead socket no longer listens, so its address can be bound again
                // (SO_REUSEADDR) while old workers still hold it; a unix socket file is
                // found stale and replaced by the new bind.
                self.sup.os_mut().listeners[i].forget_file();
                Listener::bind(&spec, self.socket_mode).map_err(|e| e.to_string())
            }
        };
        match rebound {
            Ok(listener) => {
                info!(
                    "listener {} bound again; reloading so that every worker gets it",
                    listener.local()
                );
                self.sup.os_mut().listeners[i] = listener;
                if let Err(e) = self.sup.os_mut().refresh_probe() {
                    warn!("cannot watch the new listener for readiness: {e}");
                }
                self.reload_requested(None, now);
            }
            Err(why) => {
                tracing::error!(
                    "cannot bind {local} again ({why}); stopping rather than serve a dead port"
                );
                self.dead.push(i);
                self.sup.stop(1, now);
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
        let deadline = Instant::now() + self.sup.settings().kill_timeout;
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
            let ms = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
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
        let identity = upgrade::identity(&self.exe);
        if identity.is_some() && identity != self.exe_identity {
            warn!(exe = %self.exe.display(), "the master's own executable changed on disk");
            match self.on_master_change {
                OnMasterChange::Log => self.exe_identity = identity,
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
                    return self.sup.stop(1, now);
                }
            }
        }
        let result = self.sup.request_reload(now);
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

    /// Upgrades the master in place (see [`upgrade`]); returns only if it could not, after
    /// telling the client why. The client (if any) gets its answer from the next image.
    fn upgrade(&mut self, client: Option<(ClientId, bool)>, now: Instant) {
        match self.try_upgrade(client, now) {
            Ok(()) => {}
            Err(why) => {
                warn!("upgrade failed: {why}; this master carries on");
                if let (Some((id, _)), Some(server)) = (client, self.control.as_mut()) {
                    server.fail(id, &format!("upgrade failed: {why}"));
                }
            }
        }
    }

    fn try_upgrade(
        &mut self,
        client: Option<(ClientId, bool)>,
        now: Instant,
    ) -> std::result::Result<(), String> {
        let snapshot = self.sup.snapshot(now).map_err(str::to_string)?;
        let answer = upgrade::preflight(&self.exe)?;
        info!(exe = %self.exe.display(), "upgrading the master in place ({answer})");
        let listeners = self
            .sup
            .os()
            .listeners
            .iter()
            .map(|l| upgrade::ListenerFd {
                fd: l.fd().as_raw_fd(),
                name: l.name().to_string(),
                file: l.file().map(|(p, dev, ino)| (p.to_path_buf(), dev, ino)),
            })
            .collect();
        let control = self.control.as_ref().map(|c| {
            let (fd, path, dev, ino) = c.handover();
            (fd.as_raw_fd(), path.to_path_buf(), dev, ino)
        });
        // The client waiting for the outcome goes along; one not waiting is answered now.
        let mut stream = None;
        if let (Some((id, wait)), Some(server)) = (client, self.control.as_mut()) {
            if wait {
                stream = server.take_client(id);
            } else {
                server.respond(
                    id,
                    &[Record::new("reload")
                        .with("generation", self.sup.generation() + 1)
                        .with("state", "upgrading")],
                );
            }
        }
        let old_exe = upgrade::open_self();
        let handover = upgrade::Handover {
            listeners,
            control,
            notify: (
                self.notify.fd().as_raw_fd(),
                self.notify.dir().to_path_buf(),
                self.notify.path().to_path_buf(),
            ),
            client: stream.as_ref().map(|s| s.as_raw_fd()),
            old_exe: old_exe.as_ref().map(|f| f.as_raw_fd()),
            rollback: false,
            snapshot,
        };
        let fds = handover.fds();
        upgrade::set_cloexec(&fds, false)
            .map_err(|e| format!("cannot keep the descriptors open: {e}"))?;
        upgrade::block_signals(true);
        let err = upgrade::exec(&self.exe, &self.argv, &handover);
        // Still here: the exec failed. Undo, and carry on.
        upgrade::block_signals(false);
        let _ = upgrade::set_cloexec(&fds, true);
        if let (Some(stream), Some((_, wait)), Some(server)) =
            (stream, client, self.control.as_mut())
        {
            let id = server.adopt_client(stream, Wait::Reload(0));
            let _ = wait;
            server.fail(
                id,
                &format!("upgrade failed: cannot exec {}: {err}", self.exe.display()),
            );
        }
        Err(format!("cannot exec {}: {err}", self.exe.display()))
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
                "READY" if value == "1" => {
                    if !sup.on_ready_message(worker, now) {
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
            Request::Reload { wait } => self.reload_requested(Some((id, wait)), now),
            Request::Stop { wait } => {
                info!("stop requested by a control client");
                self.sup.stop(0, now);
                if wait {
                    server.wait(id, Wait::Stop);
                } else {
                    server.respond(id, &[Record::new("stop").with("state", "stopping")]);
                }
            }
            Request::Upgrade { wait } => self.upgrade(Some((id, wait)), now),
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
            Notice::Running | Notice::ReloadStarted(_) => {}
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
