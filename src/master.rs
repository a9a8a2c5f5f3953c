//! The master: binds the listeners, then runs a single-threaded `poll(2)` loop that turns
//! signals, child exits and notify messages into [`Supervisor`] events, until the supervisor
//! says every worker is gone.
//!
//! The loop sleeps in `poll` with no timeout unless the supervisor has a deadline, so an
//! idle master uses no CPU. Children are reaped on SIGCHLD with `waitpid(-1, WNOHANG)`: every
//! child of the master is a worker (or, as a subreaper, an orphan to reap), and a pid is
//! never reused before we reap it, so signalling a live worker by pid is race-free.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::killpg;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;
use tracing::{debug, info, warn};

use crate::config::{Config, OnVersionChange};
use crate::error::{Error, Result};
use crate::notify::{self, Datagram, NotifySocket};
use crate::procfs;
use crate::readiness::ReadyMode;
use crate::readiness::listening::{self, ListenProbe};
use crate::signals::{Signal, SignalPipe};
use crate::socket::{self, Listener};
use crate::spawn::Spawner;
use crate::supervisor::{Os, Phase, Settings, Supervisor, Target};
use crate::worker::{ExitStatus, Pid, WorkerState};

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
    let mut signals = SignalPipe::install(&SIGNALS)
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
    let listeners = bind_all(&config)?;
    let notify = NotifySocket::bind()?;
    let notify_path = notify.path().to_string_lossy().into_owned();
    let os = RealOs::new(&config, listeners, notify_path)?;
    info!(
        pid = std::process::id(),
        workers = config.workers,
        ready = %config.ready,
        "master started: {}",
        os.spawner.program()
    );
    let mut sup = Supervisor::new(os, Settings::from(&config));
    sup.start(Instant::now());
    let mut versions = Versions {
        policy: config.on_version_change,
        exit_pending: false,
    };
    let code = event_loop(&mut sup, &mut signals, &notify, &mut versions)?;
    let RealOs { listeners, .. } = sup.into_os();
    drop(listeners); // removes our unix socket files
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

fn event_loop(
    sup: &mut Supervisor<RealOs>,
    signals: &mut SignalPipe,
    notify: &NotifySocket,
    versions: &mut Versions,
) -> Result<i32> {
    loop {
        if let Phase::Exited(code) = sup.phase() {
            return Ok(code);
        }
        // While a worker starts under `--ready listening`, wake up often to look at it.
        let probing = sup.os().probe.is_some() && !starting_pids(sup).is_empty();
        let probe_at = probing.then(|| Instant::now() + listening::PROBE_INTERVAL);
        let timeout = match sup.next_deadline().into_iter().chain(probe_at).min() {
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
        let (sig_ready, notify_ready) = wait(signals.fd(), notify.fd(), timeout)?;
        let now = Instant::now();
        if sig_ready {
            for signal in signals.drain() {
                match signal {
                    Signal::Child => reap(sup, now),
                    other => sup.on_signal(other, now),
                }
            }
        }
        if notify_ready {
            while let Some(datagram) = notify.recv() {
                on_notify(sup, datagram, versions, now);
            }
        }
        let starting = starting_pids(sup);
        if let Some(probe) = sup.os_mut().probe.as_mut().filter(|_| !starting.is_empty()) {
            for pid in probe.check(&starting, now) {
                debug!(pid, "seen serving the listening socket(s)");
                sup.on_ready(pid, now);
            }
        }
        sup.on_tick(now);
        if versions.exit_pending && sup.reload().is_none() && sup.phase() == Phase::Running {
            versions.exit_pending = false;
            info!("--on-version-change exit: the new workers are ready; exiting with code 1");
            sup.stop(1, now);
        }
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

/// The workers that are starting.
fn starting_pids(sup: &Supervisor<RealOs>) -> Vec<Pid> {
    sup.workers()
        .iter()
        .filter(|w| matches!(w.state, WorkerState::Starting { .. }))
        .map(|w| w.pid)
        .collect()
}

/// Waits until the signal pipe or the notify socket is readable, or the timeout passes.
fn wait(sig: BorrowedFd<'_>, notify: BorrowedFd<'_>, timeout: PollTimeout) -> Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(sig, PollFlags::POLLIN),
        PollFd::new(notify, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok((true, false)),
        Err(e) => return Err(Error::io("poll failed", e)),
    }
    let readable = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    Ok((readable(&fds[0]), readable(&fds[1])))
}

/// Reaps every child that has exited.
fn reap(sup: &mut Supervisor<RealOs>, now: Instant) {
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
        sup.on_exit(pid.as_raw() as Pid, status, now);
    }
}

/// Handles one notify datagram: attributes it to a worker, then acts on its fields.
fn on_notify(
    sup: &mut Supervisor<RealOs>,
    datagram: Datagram,
    versions: &mut Versions,
    now: Instant,
) {
    let Some(sender) = datagram.pid else {
        debug!("notify message without credentials ignored");
        return;
    };
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
                versions.reported(worker, generation.unwrap_or(0), value);
            }
            "STATUS" => debug!(pid = worker, "worker status: {value}"),
            _ => debug!(pid = worker, "notify {key}={value}"),
        }
    }
    // Dropping the datagram closes any fd that came with it (releases BARRIER=1 senders).
    drop(datagram);
}

/// The real OS: spawns with [`Spawner`], signals with kill(2), sees listening workers with
/// the `/proc` probe.
#[derive(Debug)]
struct RealOs {
    spawner: Spawner,
    listeners: Vec<Listener>,
    notify_path: String,
    /// With `--ready listening`.
    probe: Option<ListenProbe>,
}

impl RealOs {
    fn new(config: &Config, listeners: Vec<Listener>, notify_path: String) -> Result<RealOs> {
        let probe = match config.ready {
            ReadyMode::Listening(coverage) => Some(
                ListenProbe::new(listeners.iter().map(Listener::fd), coverage)
                    .map_err(|e| Error::io("cannot inspect the listening sockets", e))?,
            ),
            _ => None,
        };
        let spawner = Spawner::new(config.command.clone());
        Ok(RealOs {
            spawner,
            listeners,
            notify_path,
            probe,
        })
    }
}

impl Os for RealOs {
    fn spawn(&mut self, index: usize, generation: u64) -> std::result::Result<Pid, String> {
        let [fds, names] = socket::listen_env(&self.listeners);
        let env = [
            (crate::library::WORKER_ENV, "1".to_string()),
            ("PPID", std::process::id().to_string()),
            ("WORKER_INDEX", index.to_string()),
            ("RELOAD_INDEX", generation.to_string()),
            ("NOTIFY_SOCKET", self.notify_path.clone()),
            fds,
            names,
        ];
        self.spawner
            .spawn(self.listeners.iter().map(Listener::fd), &env)
            .map_err(|e| e.to_string())
    }

    fn signal(&mut self, target: Target, signal: Signal) {
        let sig = nix::sys::signal::Signal::try_from(signal.number()).ok();
        let result = match target {
            Target::Process(pid) => nix::sys::signal::kill(NixPid::from_raw(pid as i32), sig),
            Target::Group(pgid) => killpg(NixPid::from_raw(pgid as i32), sig),
        };
        match result {
            Ok(()) => debug!(?target, signal = signal.name(), "signal sent"),
            Err(Errno::ESRCH) => debug!(?target, signal = signal.name(), "signal: already gone"),
            Err(e) => warn!(?target, signal = signal.name(), "cannot send signal: {e}"),
        }
    }

    fn group_alive(&mut self, pgid: Pid) -> bool {
        !matches!(
            killpg(NixPid::from_raw(pgid as i32), None),
            Err(Errno::ESRCH)
        )
    }

    fn readiness_problem(&self, pid: Pid) -> Option<String> {
        self.probe.as_ref()?.problem(pid).map(str::to_string)
    }
}
