//! pm2: its daemon, in a home of its own, and its `pm2 reload app` commands during a storm.
//!
//! The daemon detaches itself, so it is not our child: its process group is registered for
//! the cleanup on bench's death, its CPU counted as bench's own in the noise figures, and it
//! is stopped with `pm2 kill`, then SIGKILL if it outlives that.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{SETTLE_TIMEOUT, START_TIMEOUT};
use crate::process::{self, Proc, run_tool, wait_gone};
use crate::storm::{Cmd, EXIT_WAIT};
use crate::sys::procfs;
use crate::{noise, sys};

/// pm2's daemon, in its own PM2_HOME. Dropping it runs `pm2 kill`, then SIGKILLs whatever
/// is left of the daemon's process group.
#[derive(Debug)]
pub struct Pm2 {
    bin: PathBuf,
    home: PathBuf,
    /// The daemon's pid.
    pub daemon: i32,
    slot: Option<usize>,
    echo: bool,
    killed: bool,
}

/// Our own process group.
fn our_group() -> i32 {
    // SAFETY: getpgrp has no preconditions.
    unsafe { libc::getpgrp() }
}

impl Pm2 {
    /// `pm2 ARGS` for this home.
    fn command(bin: &Path, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("PM2_HOME", home)
            .env("PM2_DISABLE_VERSION_CHECK", "true")
            .env("FORCE_COLOR", "0");
        cmd
    }

    /// The daemon's pid from `PM2_HOME/pm2.pid`, if that process is alive and is pm2's
    /// daemon for this home.
    fn daemon_pid(home: &Path) -> Option<i32> {
        let pid: i32 = fs::read_to_string(home.join("pm2.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = sys::cmdline(pid);
        let ours = cmdline.contains("PM2") && cmdline.contains(&*home.to_string_lossy());
        (pid > 1 && sys::alive(pid) && ours).then_some(pid)
    }

    /// `pm2 kill`, then SIGKILL to the daemon's group if it is still there.
    fn kill_home(bin: &Path, home: &Path, echo: bool) -> String {
        let before = Pm2::daemon_pid(home);
        let mut said = String::new();
        if home.join("pm2.pid").exists() || before.is_some() {
            let cmd = Pm2::command(bin, home, &["kill"]);
            if let Err(e) = run_tool("pm2 kill", cmd, Duration::from_secs(30), echo) {
                said = format!("{e}; ");
            }
        }
        if let Some(pid) = before
            && !process::wait_exit(pid, Duration::from_secs(5))
            && Pm2::daemon_pid(home) == Some(pid)
        {
            let pgid = sys::stat(pid).map_or(pid, |s| s.pgrp as i32);
            // SAFETY: kill(2) on pm2's daemon (checked above by its command line and
            // home) and, when it leads a group of its own, on that group.
            unsafe {
                if pgid > 1 && pgid != our_group() {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
            said.push_str("the daemon outlived `pm2 kill`: SIGKILLed");
        }
        said
    }

    /// `pm2 start ECOSYSTEM` with PEERS_PORT=port and `env` in a fresh PM2_HOME.
    pub fn start(
        bin: &Path,
        home: &Path,
        ecosystem: &Path,
        port: u16,
        env: &[(&str, &str)],
        echo: bool,
    ) -> Result<Pm2, String> {
        // A daemon left by an earlier, killed run of ours in the same home.
        Pm2::kill_home(bin, home, echo);
        if home.exists() {
            fs::remove_dir_all(home)
                .map_err(|e| format!("cannot clear {}: {e}", home.display()))?;
        }
        fs::create_dir_all(home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
        // Marks pm2 as already set up: no banner and no version check on first use.
        fs::write(home.join("touch"), "0")
            .map_err(|e| format!("cannot write in {}: {e}", home.display()))?;
        let (bin, home) = (bin.to_owned(), home.to_owned());
        let mut pm2 = Pm2 {
            bin,
            home,
            daemon: 0,
            slot: None,
            echo,
            killed: false,
        };
        let mut cmd = Pm2::command(&pm2.bin, &pm2.home, &["start"]);
        cmd.arg(ecosystem).env("PEERS_PORT", port.to_string());
        cmd.envs(env.iter().copied());
        let started = run_tool("pm2 start", cmd, START_TIMEOUT, echo);
        if let Some(pid) = Pm2::daemon_pid(&pm2.home) {
            pm2.daemon = pid;
            noise::adopt(pid);
            if sys::stat(pid).is_ok_and(|s| s.pgrp == pid.unsigned_abs()) && pid != our_group() {
                pm2.slot = process::register(pid);
            }
        }
        started?;
        if pm2.daemon == 0 {
            let home = pm2.home.display();
            return Err(format!(
                "pm2 start succeeded but no live daemon in {home}/pm2.pid"
            ));
        }
        Ok(pm2)
    }

    /// `pm2 kill` (once); what happened, if anything went wrong.
    pub fn kill(&mut self) -> String {
        if self.killed {
            return String::new();
        }
        self.killed = true;
        let said = Pm2::kill_home(&self.bin, &self.home, self.echo);
        if self.daemon > 0 {
            noise::disown(self.daemon);
        }
        if let Some(slot) = self.slot.take() {
            process::unregister(slot);
        }
        said
    }

    /// A storm's `pm2 reload app` commands.
    pub fn reloads(&self) -> Reloads {
        Reloads {
            bin: self.bin.clone(),
            home: self.home.clone(),
            echo: self.echo,
            running: Vec::new(),
            done: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `pm2 reload app` still running.
struct Running {
    index: usize,
    proc: Proc,
    sent: Instant,
    waiter: JoinHandle<Option<Instant>>,
}

impl Running {
    /// Its outcome, once it has exited (or its wait was given up).
    fn finish(self) -> (usize, Cmd) {
        let exited = self.waiter.join().unwrap_or(None);
        let mut p = self.proc;
        let status = p.stop(Duration::ZERO);
        p.drain(Duration::from_secs(2));
        let said = p.last_lines(2);
        let refused = said.contains("already in progress");
        let took = exited.map(|t| t.saturating_duration_since(self.sent));
        (
            self.index,
            Cmd {
                took,
                code: status.code(),
                refused,
                said,
            },
        )
    }
}

/// The `pm2 reload app` commands of one storm: each spawned without waiting for the last.
pub struct Reloads {
    bin: PathBuf,
    home: PathBuf,
    echo: bool,
    running: Vec<Running>,
    done: Vec<(usize, Cmd)>,
    /// Gives up the waits for the commands still running.
    cancel: Arc<AtomicBool>,
}

impl Reloads {
    /// Spawns `pm2 reload app` for request `index`, sent at `sent`.
    pub fn start(&mut self, index: usize, sent: Instant) -> Result<(), String> {
        let cmd = Pm2::command(&self.bin, &self.home, &["reload", "app"]);
        let proc = Proc::spawn("pm2 reload", cmd, true, self.echo)?;
        let fd = procfs::pidfd_open(proc.pid().unsigned_abs());
        let fds = vec![fd.map_err(|e| format!("pidfd of pm2 reload: {e}"))?];
        let cancel = Arc::clone(&self.cancel);
        let deadline = sent + SETTLE_TIMEOUT + EXIT_WAIT;
        let waiter = thread::spawn(move || wait_gone(fds, deadline, &cancel));
        self.running.push(Running {
            index,
            proc,
            sent,
            waiter,
        });
        Ok(())
    }

    /// Whether an earlier command still runs (after [`Reloads::reap`]).
    pub fn in_flight(&self) -> bool {
        !self.running.is_empty()
    }

    /// Collects the commands that have exited.
    pub fn reap(&mut self) {
        let (finished, running) = self.running.drain(..).partition(|r| r.waiter.is_finished());
        self.running = running;
        self.done.extend(finished.into_iter().map(Running::finish));
    }

    /// Waits until every command has exited or `deadline` passes, then gives up the rest;
    /// whether all had exited.
    pub fn settle(&mut self, deadline: Instant) -> bool {
        while !self.running.is_empty() && Instant::now() < deadline {
            self.reap();
            thread::sleep(Duration::from_millis(20));
        }
        let all = self.running.is_empty();
        self.cancel.store(true, Ordering::Relaxed);
        self.done
            .extend(self.running.drain(..).map(Running::finish));
        all
    }

    /// Every command's outcome so far, by request index.
    pub fn take(&mut self) -> Vec<(usize, Cmd)> {
        std::mem::take(&mut self.done)
    }
}
