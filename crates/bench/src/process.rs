//! Starting, watching and stopping the processes a benchmark runs, with cleanup on every path.
//!
//! Every process is started in a process group of its own, with `PR_SET_PDEATHSIG` = SIGKILL
//! (so it dies with bench even if bench is SIGKILLed; the "parent" of that rule is the thread
//! that forked, so processes are started from the main thread only). Its process group is
//! registered in a fixed table that a panic hook and a SIGINT/SIGTERM/SIGHUP/SIGQUIT handler
//! SIGKILL; the release profile aborts on panic, so `Drop` alone would not be enough.
//! [`Proc`]'s `Drop` stops it gracefully (SIGTERM, a grace period), then SIGKILLs its group.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::lines::{Log, read_lines};
use crate::sys::{self, procfs};

/// Process groups to SIGKILL if bench dies (0: free slot).
static GROUPS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// Registers a process group to SIGKILL if bench dies: one of our children, or the group of
/// a daemon of ours that detached itself (pm2's). Returns the slot to give back with
/// [`unregister`] once that group is gone or stopped.
pub fn register(pgid: i32) -> Option<usize> {
    let take = |slot: &AtomicI32| {
        slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    };
    (pgid > 1).then(|| GROUPS.iter().position(take)).flatten()
}

/// Gives back a slot from [`register`].
pub fn unregister(slot: usize) {
    GROUPS[slot].store(0, Ordering::SeqCst);
}

/// SIGKILLs every registered process group. Async-signal-safe.
fn kill_registered() {
    for slot in &GROUPS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) is async-signal-safe; a registered group is one of our children
            // that has not been reaped, so its id cannot have been reused (or a detached
            // daemon of ours, unregistered once it is gone).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    kill_registered();
    // SAFETY: signal(2) and raise(3) are async-signal-safe; we die of the same signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the panic hook and the signal handlers that kill every started process group.
pub fn install_cleanup() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_registered();
        default(info);
    }));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: a zeroed sigaction is valid; the handler only makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Removes the variables of bench's own environment that would change how a child behaves,
/// except those `cmd` sets itself.
fn scrub_env(cmd: &mut Command) {
    const EXACT: [&str; 15] = [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "WORKERS",
        "WORKER_THROTTLE",
        "MAX_KILL_TIMEOUT",
        "PORT",
        "DEBUG",
        "JOURNAL_STREAM",
        "__MASTER_PROCESS_EXEC",
        // The resource monitor's limits.
        "MAX_MEMORY_ALLOWED_MB",
        "MAX_CPU_ALLOWED",
        "MEM_MONITOR_FAILURES",
        "CPU_MONITOR_FAILURES",
        "CPU_MONITOR_FAILURE",
    ];
    const PREFIXES: [&str; 3] = ["TW_", "LISTEN_", "MASTER_PROCESS_"];
    let own: Vec<std::ffi::OsString> = cmd
        .get_envs()
        .filter(|(_, value)| value.is_some())
        .map(|(key, _)| key.to_owned())
        .collect();
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let scrubbed = EXACT.contains(&k.as_ref()) || PREFIXES.iter().any(|p| k.starts_with(p));
        if scrubbed && !own.contains(&key) {
            cmd.env_remove(&key);
        }
    }
}

/// A started process: its own process group, stderr (and optionally stdout) read line by
/// line into a [`Log`]. Dropping it stops it.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    slot: Option<usize>,
    err: Arc<Log>,
    out: Option<Arc<Log>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (stdin from /dev/null); `echo` copies its lines to our stderr.
    pub fn spawn(name: &str, mut cmd: Command, stdout: bool, echo: bool) -> Result<Proc, String> {
        scrub_env(&mut cmd);
        let out = if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(out)
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe and the closure does not allocate
        // on its success path.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let slot = register(child.id() as i32);
        let reader = |stream: Box<dyn io::Read + Send>, which: &str| {
            let log = Arc::new(Log::default());
            let echo = echo.then(|| format!("{name} {which}"));
            let reader_log = Arc::clone(&log);
            thread::spawn(move || read_lines(stream, reader_log, echo));
            log
        };
        let err = match child.stderr.take() {
            Some(stderr) => reader(Box::new(stderr), "stderr"),
            None => Arc::default(),
        };
        let out = child
            .stdout
            .take()
            .map(|stdout| reader(Box::new(stdout), "stdout"));
        let name = name.to_owned();
        Ok(Proc {
            name,
            child,
            slot,
            err,
            out,
            status: None,
        })
    }

    /// Its pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its stderr lines.
    pub fn log(&self) -> &Arc<Log> {
        &self.err
    }

    /// Its stdout lines (when captured).
    pub fn out(&self) -> Option<&Arc<Log>> {
        self.out.as_ref()
    }

    /// Whether it is still running (not exited, or exited but stopped by us already).
    pub fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// What became of it, for error messages.
    fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status})"),
            _ => "it is still running".to_owned(),
        }
    }

    /// An error if it is no longer running: its name and last lines.
    pub fn check_alive(&mut self, name: &str) -> Result<(), String> {
        match self.running() {
            true => Ok(()),
            false => Err(format!("{name} exited:{}", self.err.tail(10))),
        }
    }

    /// Sends `sig` to the process itself.
    pub fn signal(&self, sig: libc::c_int) -> Result<(), String> {
        if self.status.is_some() {
            return Err(format!("{} has already exited", self.name));
        }
        // SAFETY: kill(2) on our own unreaped child.
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            let e = io::Error::last_os_error();
            return Err(format!("cannot signal {}: {e}", self.name));
        }
        Ok(())
    }

    /// Waits for the first stderr line satisfying `pred`; the error says what was awaited,
    /// whether the process is still alive, and its last lines.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        if let Some((_, line)) = self.err.wait_from(0, timeout, pred) {
            return Ok(line);
        }
        let state = self.state();
        let (name, tail) = (&self.name, self.err.tail(10));
        Err(format!(
            "{name}: no `{what}` line within {timeout:?}; {state}; last lines:{tail}"
        ))
    }

    /// Waits up to `timeout` for the process to exit on its own; on timeout it is killed and
    /// this fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let exited = wait_exit(self.pid(), timeout);
        let status = self.stop(Duration::ZERO);
        match exited {
            true => Ok(status),
            false => Err(format!(
                "{} still running after {timeout:?}; killed",
                self.name
            )),
        }
    }

    /// Stops it: SIGTERM, up to `grace` to exit, then SIGKILL to its whole process group, and
    /// reaps it. Idempotent; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let pid = self.pid();
        if matches!(self.child.try_wait(), Ok(None)) && !grace.is_zero() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            wait_exit(pid, grace);
        }
        // Whatever is left in its group. The leader is not reaped yet, so the group id is
        // still ours.
        // SAFETY: kill(2) on the group of our own unreaped child.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        if let Some(slot) = self.slot.take() {
            unregister(slot);
        }
        let status = self
            .child
            .wait()
            .unwrap_or(ExitStatus::from_raw(libc::SIGKILL));
        self.status = Some(status);
        status
    }

    /// Waits up to `timeout` for each of its captured streams to end.
    pub fn drain(&self, timeout: Duration) {
        for log in self.out.iter().chain([&self.err]) {
            log.wait_closed(timeout);
        }
    }

    /// The last `n` non-empty lines of its stdout and stderr, ANSI colours and table borders
    /// removed, joined by ` / `.
    pub fn last_lines(&self, n: usize) -> String {
        let mut lines = self.out.as_ref().map(|o| o.lines()).unwrap_or_default();
        lines.extend(self.err.lines());
        let border = |l: &str| l.chars().all(|c| "─│┌┐└┘├┤┬┴┼".contains(c) || c == ' ');
        let lines: Vec<String> = lines
            .iter()
            .map(|l| strip_ansi(l).trim().to_owned())
            .filter(|l| !l.is_empty() && !border(l))
            .collect();
        lines[lines.len().saturating_sub(n)..].join(" / ")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Runs a tool to its end; its output goes into the error when it fails.
pub fn run_tool(name: &str, cmd: Command, timeout: Duration, echo: bool) -> Result<(), String> {
    let mut p = Proc::spawn(name, cmd, true, echo)?;
    let status = p.wait_exit(timeout)?;
    p.drain(Duration::from_secs(5));
    match status.success() {
        true => Ok(()),
        false => Err(format!("{name} failed ({status}): {}", p.last_lines(6))),
    }
}

/// Removes ANSI colour sequences (pm2 colours its output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
        } else if chars.next_if_eq(&'[').is_some() {
            chars.by_ref().find(char::is_ascii_alphabetic);
        }
    }
    out
}

/// How a process ended, for the report: `exit code N`, or the signal.
pub fn exit_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    }
}

/// A pidfd for each of `pids` that still exists, with its pid. From here on those pids
/// cannot be reused under us.
pub fn pidfds(pids: impl IntoIterator<Item = i32>) -> Vec<(i32, OwnedFd)> {
    let open = |p: i32| procfs::pidfd_open(p.unsigned_abs()).ok().map(|fd| (p, fd));
    pids.into_iter().filter_map(open).collect()
}

/// Waits until every process behind `fds` has exited; returns when the last one did, or
/// `None` if there is none, at `deadline`, or once `cancel` is set (checked every 100 ms).
pub fn wait_gone(fds: Vec<OwnedFd>, deadline: Instant, cancel: &AtomicBool) -> Option<Instant> {
    if fds.is_empty() {
        return None;
    }
    let mut pending = fds;
    let mut last = Instant::now();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || cancel.load(Ordering::Relaxed) {
            return None;
        }
        let poll = |fd: &OwnedFd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut polled: Vec<libc::pollfd> = pending.iter().map(poll).collect();
        let wait = left.min(Duration::from_millis(100)).as_millis().max(1) as libc::c_int;
        // SAFETY: `polled` is a valid array of `polled.len()` pollfd structures.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait) };
        if n > 0 {
            last = Instant::now();
            let mut exited = polled.iter().map(|p| p.revents != 0);
            pending.retain(|_| !exited.next().unwrap_or(false));
        }
    }
    Some(last)
}

/// Waits up to `timeout` for `pid` to exit; true if it did (or was already gone).
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let fds: Vec<OwnedFd> = pidfds([pid]).into_iter().map(|(_, fd)| fd).collect();
    fds.is_empty() || wait_gone(fds, Instant::now() + timeout, &AtomicBool::new(false)).is_some()
}

/// SIGKILLs each of `pids` still alive whose command line contains `marker` (a worker that
/// outlived its manager), and the process group it leads if it leads one; returns those.
pub fn sweep(pids: impl IntoIterator<Item = i32>, marker: &str, whose: &str) -> Vec<i32> {
    let outlived = |&pid: &i32| sys::alive(pid) && sys::cmdline(pid).contains(marker);
    let killed: Vec<i32> = pids.into_iter().filter(outlived).collect();
    for &pid in &killed {
        eprintln!("bench: {whose} {pid} outlived its manager; killing it");
        // SAFETY: kill(2) on a live process of ours (started under one of our managers, still
        // running our program, as checked above) and on the group it leads, if it leads one.
        unsafe {
            if sys::stat(pid).is_ok_and(|s| s.pgrp == pid.unsigned_abs()) {
                libc::kill(-pid, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_tool_and_strips_colours() {
        assert_eq!(strip_ansi("\u{1b}[32m[PM2] \u{1b}[39mok"), "[PM2] ok");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo '\u{1b}[1merr\u{1b}[0m' >&2; exit 3"]);
        let e = run_tool("sh", cmd, Duration::from_secs(10), false).expect_err("exit 3");
        assert!(
            e.starts_with("sh failed (exit status: 3): out / err"),
            "{e}"
        );
        let mut cmd = Command::new("sleep");
        cmd.arg("10");
        let mut p = Proc::spawn("sleep", cmd, false, false).expect("spawn");
        assert!(p.running() && !wait_exit(p.pid(), Duration::from_millis(50)));
        assert_eq!(
            exit_text(p.stop(Duration::from_secs(5))),
            "signal: 15 (SIGTERM)"
        );
    }
}
