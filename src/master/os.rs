//! The real [`Os`]: the master's listening sockets, how it starts workers, and how it sees
//! them serve. The supervisor reaches it only through the [`Os`] calls it is handed; the
//! loop owns it and reaches the listeners and the probe directly.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid as NixPid;
use tracing::{debug, warn};

use super::adoption::{Adoption, Event as AdoptionEvent, TreeId};
use crate::env;
use crate::readiness::listening::ListenProbe;
use crate::signals::Signal;
use crate::socket::ListenerSet;
use crate::spawn::Spawner;
use crate::supervisor::{Os, SpawnError, Target};
use crate::worker::Pid;

/// What the master does to the world: start workers that inherit its listeners, signal
/// them, look at them in `/proc`.
#[derive(Debug)]
pub struct RealOs {
    spawner: Spawner,
    listeners: ListenerSet,
    notify_path: String,
    /// What every worker gets besides the protocol's variables (`MAX_KILL_TIMEOUT`, the
    /// Node.js preload).
    worker_env: Vec<(&'static str, String)>,
    /// With `--ready listening`.
    probe: Option<ListenProbe>,
    /// With `--adopt on`, where the kernel allows it.
    adoption: Option<Adoption>,
    /// Why adoption is off, if it is.
    adoption_off: Option<String>,
}

impl RealOs {
    /// Workers started by `spawner` inherit `listeners` and notify on `notify_path`;
    /// `probe` sees them serve (`--ready listening`).
    pub fn new(
        spawner: Spawner,
        listeners: ListenerSet,
        notify_path: String,
        worker_env: Vec<(&'static str, String)>,
        probe: Option<ListenProbe>,
        adopt: bool,
    ) -> RealOs {
        let (adoption, adoption_off) = if adopt {
            match Adoption::new(&listeners) {
                Ok(a) => (Some(a), None),
                Err(why) => (None, Some(why)),
            }
        } else {
            (None, Some("--adopt off".to_string()))
        };
        RealOs {
            spawner,
            listeners,
            notify_path,
            worker_env,
            probe,
            adoption,
            adoption_off,
        }
    }

    /// Adoption of the apps' own binds, when on.
    pub fn adoption(&self) -> Option<&Adoption> {
        self.adoption.as_ref()
    }

    /// Adoption of the apps' own binds, when on.
    pub fn adoption_mut(&mut self) -> Option<&mut Adoption> {
        self.adoption.as_mut()
    }

    /// Handles what worker tree `tree` asks through its filter; returns the refusals (each
    /// as the worker and one line). A claimed `PORT` takes its listener's place here.
    pub fn on_adoption(&mut self, tree: TreeId) -> Vec<(Pid, String)> {
        let Some(adoption) = self.adoption.as_mut() else {
            return Vec::new();
        };
        let mut refused = Vec::new();
        for event in adoption.handle(tree) {
            match event {
                AdoptionEvent::Claimed { listener, fd, addr } => {
                    self.listeners.claimed(listener, fd, addr);
                    self.refresh_probe();
                }
                AdoptionEvent::Refused { worker, reason } => refused.push((worker, reason)),
            }
        }
        refused
    }

    fn refresh_probe(&mut self) {
        if let Some(probe) = self.probe.as_mut() {
            match ListenProbe::new(self.listeners.fds(), probe.coverage()) {
                Ok(new) => *probe = new,
                Err(e) => warn!("cannot watch the new listener for readiness: {e}"),
            }
        }
    }

    /// The listening sockets.
    pub fn listeners(&self) -> &ListenerSet {
        &self.listeners
    }

    /// The worker command's program, for messages.
    pub fn program(&self) -> String {
        self.spawner.program()
    }

    /// Whether readiness is seen in `/proc` (`--ready listening`).
    pub fn has_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The readiness probe, with `--ready listening`.
    pub fn probe_mut(&mut self) -> Option<&mut ListenProbe> {
        self.probe.as_mut()
    }

    /// When the readiness probe is next due to look at `starting` (pid, start time).
    pub fn probe_due(&self, starting: &[(Pid, std::time::Instant)]) -> Option<std::time::Instant> {
        self.probe.as_ref()?.next_due(starting)
    }

    /// Listener `i` stopped listening: binds it again if it is ours, and looks for
    /// readiness on the new socket.
    ///
    /// # Errors
    /// Why it cannot be bound again.
    pub fn rebind(&mut self, i: usize) -> Result<String, String> {
        let local = self.listeners.rebind(i)?.local().to_string();
        self.refresh_probe();
        if let Some(adoption) = self.adoption.as_mut() {
            if let Err(e) = adoption.hold(i, &self.listeners) {
                warn!("adoption: cannot hold {local} again: {e}");
            }
        }
        Ok(local)
    }
}

impl Os for RealOs {
    fn spawn(&mut self, index: usize, generation: u64) -> Result<Pid, SpawnError> {
        let [fds, names] = self.listeners.env();
        let mut vars = vec![
            (env::WORKER, "1".to_string()),
            (env::PPID, std::process::id().to_string()),
            (env::WORKER_INDEX, index.to_string()),
            (env::RELOAD_INDEX, generation.to_string()),
            (env::NOTIFY_SOCKET, self.notify_path.clone()),
            fds,
            names,
        ];
        vars.extend(self.worker_env.iter().cloned());
        let filter = match self.adoption.as_ref().map(Adoption::filter) {
            Some(Ok(filter)) => Some(filter),
            Some(Err(e)) => {
                warn!("adoption: cannot prepare the filter ({e}); this worker runs without");
                None
            }
            None => None,
        };
        let (filter, channel) = filter.unzip();
        let pid = self
            .spawner
            .spawn(self.listeners.fds(), &vars, filter)
            .map_err(spawn_error)?;
        if let (Some(adoption), Some(channel)) = (self.adoption.as_mut(), channel) {
            adoption.spawned(pid, channel);
        }
        Ok(pid)
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

    fn crash_hint(&self) -> Option<String> {
        let why = self.adoption_off.as_ref()?;
        let ports: Vec<&str> = self.listeners.iter().map(|l| l.local()).collect();
        Some(format!(
            "if the app binds {} itself, it fails with EADDRINUSE: the master holds it, and \
             adoption of the app's own bind is off ({why}); turn --adopt on, or make the app \
             take its socket from LISTEN_FDS (fd 3)",
            ports.join(", ")
        ))
    }
}

/// What a failed spawn means for the supervisor.
fn spawn_error(e: io::Error) -> SpawnError {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => {
            SpawnError::Exhausted(text)
        }
        Some(libc::ENOENT | libc::EACCES | libc::ENOEXEC | libc::ENOTDIR | libc::ELOOP) => {
            SpawnError::Command(text)
        }
        _ => SpawnError::Other(text),
    }
}
