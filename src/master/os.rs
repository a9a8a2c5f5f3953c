//! The real [`Os`]: spawns with [`Spawner`], signals with kill(2) and killpg(2), and sees
//! listening workers with the `/proc` probe.

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid as NixPid;
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::readiness::ReadyMode;
use crate::readiness::listening::ListenProbe;
use crate::signals::Signal;
use crate::socket::{self, Listener};
use crate::spawn::Spawner;
use crate::supervisor::{Os, Target};
use crate::worker::Pid;

/// The real OS: spawns with [`Spawner`], signals with kill(2), sees listening workers with
/// the `/proc` probe.
#[derive(Debug)]
pub struct RealOs {
    /// Starts workers.
    pub spawner: Spawner,
    /// The listening sockets, inherited by every worker.
    pub listeners: Vec<Listener>,
    notify_path: String,
    /// With `--ready listening`.
    pub probe: Option<ListenProbe>,
}

impl RealOs {
    /// The OS for workers of `config`, inheriting `listeners`, notifying on `notify_path`.
    pub fn new(config: &Config, listeners: Vec<Listener>, notify_path: String) -> Result<RealOs> {
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

impl RealOs {
    /// Rebuilds the readiness probe after a listener changed.
    pub fn refresh_probe(&mut self) -> std::io::Result<()> {
        if let Some(probe) = self.probe.as_mut() {
            *probe = ListenProbe::new(self.listeners.iter().map(Listener::fd), probe.coverage())?;
        }
        Ok(())
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
