//! The programs under test: the bare test-worker, and master-process running test-workers
//! (or any command: the peers section runs Node.js and gunicorn under it).
//!
//! The master puts each worker in a group of its own and gives it `PR_SET_PDEATHSIG` too, so
//! SIGKILLing the master's group takes its workers along; [`Master`] also sweeps any worker
//! pid it saw in the log that is still alive after the master is gone.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::Ctx;
use crate::lines::{Harvest, listening_addr, parsed};
use crate::process::{Proc, exit_text, sweep};

/// How long a started process may take to say it listens, or that its workers are ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The bare test-worker, binding a free port itself.
#[derive(Debug)]
pub struct Bare {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Bare {
    /// Starts `worker` with `TW_BIND=127.0.0.1:0` and waits for its `listening on` line.
    pub fn start(worker: &Path, echo: bool) -> Result<Bare, String> {
        let mut cmd = Command::new(worker);
        cmd.env("TW_BIND", "127.0.0.1:0");
        let mut proc = Proc::spawn("test-worker (bare)", cmd, false, echo)?;
        let addr = wait_listening(&mut proc, START_TIMEOUT)?;
        Ok(Bare { proc, addr })
    }
}

/// Waits for a `listening on ADDR` line; the address.
fn wait_listening(proc: &mut Proc, timeout: Duration) -> Result<SocketAddr, String> {
    let line = proc.wait_line("listening on", timeout, |l| l.contains("listening on "))?;
    listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))
}

/// How the master learns that a new worker is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `--ready notify`; the test-worker sends `READY=1` (`TW_READY=notify`).
    Notify,
    /// No `--ready` flag: the default, `listening` (the master sees, in /proc, the worker
    /// wait on the listening socket); the test-worker sends nothing.
    Listening,
}

/// What [`Master::start`] adds to the usual command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// Master flags, placed before `--` (e.g. `--no-monitor`).
    pub args: &'a [&'a str],
    /// Environment variables for the master, and so for its workers (e.g. `TW_FORK_CHILD`).
    pub env: &'a [(&'a str, &'a str)],
}

/// `--no-monitor`: for the sections whose idle figures are about the master's loop alone
/// (the monitor's timer would wake it every 2 s); the `monitor` section measures the monitor.
pub const NO_MONITOR: Extra<'static> = Extra {
    args: &["--no-monitor"],
    env: &[],
};

/// `master -l 127.0.0.1:0 --control off -w N`; the caller adds its flags and `-- COMMAND`.
/// No control socket: the benchmark must not clash with a master running on the machine.
pub fn command(master: &Path, workers: usize) -> Command {
    let mut cmd = Command::new(master);
    cmd.args(["-l", "127.0.0.1:0", "--control", "off", "-w"])
        .arg(workers.to_string());
    cmd
}

/// Starts a master `cmd` and waits for `listening on` and `all workers ready`.
pub fn start(cmd: Command, echo: bool, timeout: Duration) -> Result<(Proc, SocketAddr), String> {
    let mut proc = Proc::spawn("master-process", cmd, false, echo)?;
    let addr = wait_listening(&mut proc, timeout)?;
    proc.wait_line("all workers ready", timeout, |l| {
        l.contains("all workers ready")
    })?;
    Ok((proc, addr))
}

/// The master running test-workers on a free port.
#[derive(Debug)]
pub struct Master {
    /// The master process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Master {
    /// Starts `master -l 127.0.0.1:0 -w N [--ready notify] EXTRA... -- test-worker`, with the
    /// extra environment, and waits for `listening on` and `all workers ready`.
    pub fn start(
        ctx: &Ctx,
        workers: usize,
        ready: Ready,
        extra: &Extra<'_>,
    ) -> Result<Master, String> {
        Master::start_within(ctx, workers, ready, extra, START_TIMEOUT)
    }

    /// [`Master::start`], its workers given `timeout` to be ready.
    pub fn start_within(
        ctx: &Ctx,
        workers: usize,
        ready: Ready,
        extra: &Extra<'_>,
        timeout: Duration,
    ) -> Result<Master, String> {
        let mut cmd = command(&ctx.bins.master, workers);
        if ready == Ready::Notify {
            cmd.args(["--ready", "notify"]).env("TW_READY", "notify");
        }
        cmd.args(extra.args).arg("--").arg(&ctx.bins.worker);
        cmd.envs(extra.env.iter().copied());
        let (proc, addr) = start(cmd, ctx.opts.verbose, timeout)?;
        Ok(Master { proc, addr })
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Every worker pid the log has mentioned as started.
    pub fn workers_seen(&self) -> BTreeSet<i32> {
        let lines = self.proc.log().lines();
        let started = lines.iter().filter(|l| l.contains("worker started"));
        started.filter_map(|l| parsed(l, "pid")).collect()
    }

    /// Stops the master (SIGTERM: it stops its workers gracefully), then SIGKILLs any worker
    /// it left behind. Idempotent.
    pub fn stop(&mut self) -> ExitStatus {
        let seen = self.workers_seen();
        let status = self.proc.stop(Duration::from_secs(15));
        sweep(seen, "test-worker", "worker");
        status
    }

    /// Its log, harvested, then [`Master::stop`]: how it exited.
    pub fn finish(&mut self) -> (Harvest, String) {
        let harvest = Harvest::of(self.proc.log().lines());
        (harvest, exit_text(self.stop()))
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}
