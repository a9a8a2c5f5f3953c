//! Starting and stopping the processes a benchmark runs, with cleanup on every path.
//!
//! Every process is started in a process group of its own, with `PR_SET_PDEATHSIG` = SIGKILL
//! (so it dies with bench even if bench is SIGKILLed; the "parent" of that rule is the thread
//! that forked, so processes are started from the main thread only). Its process group is
//! registered in a fixed table that a panic hook and a SIGINT/SIGTERM/SIGHUP/SIGQUIT handler
//! SIGKILL; the release profile aborts on panic, so `Drop` alone would not be enough.
//! [`Proc`]'s `Drop` stops it gracefully (SIGTERM, a grace period), then SIGKILLs its group.
//!
//! The master puts each worker in a group of its own and gives it `PR_SET_PDEATHSIG` too, so
//! SIGKILLing the master's group takes its workers along; [`Master`] also sweeps any worker
//! pid it saw in the log that is still alive after the master is gone.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::proc;

/// Process groups to SIGKILL if bench dies (0: free slot).
static GROUPS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

fn register(pgid: i32) -> Option<usize> {
    GROUPS.iter().position(|slot| {
        slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

fn unregister(slot: usize) {
    GROUPS[slot].store(0, Ordering::SeqCst);
}

/// Registers the process group of a process that is not our child (pm2's daemon, which
/// detaches itself), so that it is SIGKILLed too if bench dies. Returns the slot to give back
/// with [`unregister_group`] once that group is gone or stopped.
pub fn register_group(pgid: i32) -> Option<usize> {
    (pgid > 1).then(|| register(pgid)).flatten()
}

/// Gives back a slot from [`register_group`].
pub fn unregister_group(slot: usize) {
    unregister(slot);
}

/// SIGKILLs every registered process group. Async-signal-safe.
fn kill_registered() {
    for slot in &GROUPS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) is async-signal-safe; a registered group is one of our children
            // that has not been reaped, so its id cannot have been reused (or, for
            // `register_group`, a detached daemon of ours, unregistered once it is gone).
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lines a process wrote on one stream, as they arrive.
#[derive(Debug, Default)]
pub struct Log {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

impl Log {
    fn push(&self, line: String) {
        lock(&self.state).lines.push(line);
        self.grew.notify_all();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.grew.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        lock(&self.state).lines.len()
    }

    /// Waits until `cond` holds for the lines so far; false if `timeout` passes first.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        loop {
            if cond(&state.lines) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.closed {
                return false;
            }
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The first line that satisfies `pred`, waiting for it up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let found = self.wait_until(timeout, |lines| lines.iter().any(|l| pred(l)));
        found.then(|| {
            lock(&self.state)
                .lines
                .iter()
                .find(|l| pred(l))
                .cloned()
                .unwrap_or_default()
        })
    }

    /// Waits for the end of the stream; false if `timeout` passes first.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The last `n` lines, indented, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let state = lock(&self.state);
        let start = state.lines.len().saturating_sub(n);
        state.lines[start..]
            .iter()
            .map(|l| format!("\n    {l}"))
            .collect()
    }
}

fn read_lines(stream: impl Read, log: Arc<Log>, echo: Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                if let Some(name) = &echo {
                    eprintln!("  [{name}] {line}");
                }
                log.push(line);
            }
        }
    }
    log.close();
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
        if own.contains(&key) {
            continue;
        }
        let k = key.to_string_lossy();
        if EXACT.contains(&k.as_ref()) || PREFIXES.iter().any(|p| k.starts_with(p)) {
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
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        capture_stdout: bool,
        echo: bool,
    ) -> Result<Proc, String> {
        scrub_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
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
        let err = Arc::new(Log::default());
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&err);
            let echo = echo.then(|| format!("{name} stderr"));
            thread::spawn(move || read_lines(stderr, log, echo));
        }
        let out = child.stdout.take().map(|stdout| {
            let log = Arc::new(Log::default());
            let reader_log = Arc::clone(&log);
            let echo = echo.then(|| format!("{name} stdout"));
            thread::spawn(move || read_lines(stdout, reader_log, echo));
            log
        });
        Ok(Proc {
            name: name.to_owned(),
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

    /// Sends `sig` to the process itself.
    pub fn signal(&self, sig: libc::c_int) -> Result<(), String> {
        if self.status.is_some() {
            return Err(format!("{} has already exited", self.name));
        }
        // SAFETY: kill(2) on our own unreaped child.
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            return Err(format!(
                "cannot signal {}: {}",
                self.name,
                io::Error::last_os_error()
            ));
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
        if let Some(line) = self.err.wait_for(timeout, pred) {
            return Ok(line);
        }
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status})"),
            _ => "it is still running".to_owned(),
        };
        Err(format!(
            "{}: no `{what}` line within {timeout:?}; {state}; last lines:{}",
            self.name,
            self.err.tail(10)
        ))
    }

    /// Waits up to `timeout` for the process to exit on its own; on timeout it is killed and
    /// this fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if !wait_exit(self.pid(), timeout) {
            self.stop(Duration::ZERO);
            return Err(format!(
                "{} still running after {timeout:?}; killed",
                self.name
            ));
        }
        Ok(self.stop(Duration::ZERO))
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
        let status = match self.child.wait() {
            Ok(status) => status,
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(libc::SIGKILL)
            }
        };
        self.status = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits (works for any
/// process, not only children).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until every process behind `fds` has exited; returns when the last one did, or
/// `None` if `deadline` passes first.
pub fn wait_all_exit(fds: &[OwnedFd], deadline: Instant) -> Option<Instant> {
    let mut pending: Vec<libc::c_int> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut last = Instant::now();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut polled: Vec<libc::pollfd> = pending
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: `polled` is a valid array of `polled.len()` pollfd structures.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if n > 0 {
            last = Instant::now();
            pending = polled
                .iter()
                .filter(|p| p.revents == 0)
                .map(|p| p.fd)
                .collect();
        }
    }
    Some(last)
}

/// Waits up to `timeout` for `pid` to exit; true if it did (or was already gone).
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    match pidfd_open(pid) {
        Ok(fd) => wait_all_exit(&[fd], Instant::now() + timeout).is_some(),
        Err(_) => true,
    }
}

/// The value of `key=` in a tracing log line (quotes removed).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap_or(quoted.len())]
    } else {
        &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())]
    };
    Some(value)
}

/// The address after `listening on ` in a line (the master's `listening on ADDR`, or the bare
/// test-worker's `listening on 1 fd(s) bare (fd 3 ADDR)`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")?..];
    rest.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .find_map(|token| token.parse().ok())
}

/// How long a started process may take to say it listens, or that its workers are ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
        let line = proc.wait_line("listening on", START_TIMEOUT, |l| {
            l.contains("listening on ")
        })?;
        let addr = listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))?;
        Ok(Bare { proc, addr })
    }
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

/// What [`Master::launch`] adds to the usual command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// Master flags, placed before `--` (e.g. `--no-monitor`).
    pub args: &'a [&'a str],
    /// Environment variables for the master, and so for its workers (e.g. `TW_FORK_CHILD`).
    pub env: &'a [(&'a str, &'a str)],
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
    /// Starts `master -l 127.0.0.1:0 -w N --ready notify -- worker` and waits for
    /// `listening on` and `all workers ready`.
    pub fn start(
        master: &Path,
        worker: &Path,
        workers: usize,
        echo: bool,
    ) -> Result<Master, String> {
        Master::launch(
            master,
            worker,
            workers,
            Ready::Notify,
            &Extra::default(),
            echo,
        )
    }

    /// Starts `master -l 127.0.0.1:0 -w N [--ready notify] EXTRA... -- worker`, with the extra
    /// environment, and waits for `listening on` and `all workers ready`.
    pub fn launch(
        master: &Path,
        worker: &Path,
        workers: usize,
        ready: Ready,
        extra: &Extra<'_>,
        echo: bool,
    ) -> Result<Master, String> {
        let mut cmd = Command::new(master);
        // No control socket: the benchmark must not clash with a master running on the machine.
        cmd.args(["-l", "127.0.0.1:0", "--control", "off", "-w"])
            .arg(workers.to_string());
        if ready == Ready::Notify {
            cmd.args(["--ready", "notify"]).env("TW_READY", "notify");
        }
        cmd.args(extra.args);
        cmd.arg("--").arg(worker);
        for (key, value) in extra.env {
            cmd.env(key, value);
        }
        let mut proc = Proc::spawn("master-process", cmd, false, echo)?;
        let line = proc.wait_line("listening on", START_TIMEOUT, |l| {
            l.contains("listening on ")
        })?;
        let addr = listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))?;
        proc.wait_line("all workers ready", START_TIMEOUT, |l| {
            l.contains("all workers ready")
        })?;
        Ok(Master { proc, addr })
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Every worker pid the log has mentioned as started.
    pub fn workers_seen(&self) -> BTreeSet<i32> {
        self.proc
            .log()
            .lines()
            .iter()
            .filter(|l| l.contains("worker started"))
            .filter_map(|l| field(l, "pid")?.parse().ok())
            .collect()
    }

    /// Stops the master (SIGTERM: it stops its workers gracefully), then SIGKILLs any worker
    /// it left behind. Idempotent.
    pub fn stop(&mut self) -> ExitStatus {
        let seen = self.workers_seen();
        let status = self.proc.stop(Duration::from_secs(15));
        for pid in seen {
            if proc::alive(pid) && proc::cmdline(pid).contains("test-worker") {
                eprintln!("bench: worker {pid} outlived its master; killing its process group");
                // SAFETY: kill(2); the pid is alive and runs test-worker, as checked above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        status
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_addresses() {
        let line = "2026-11-25T16:14:43.525809Z  INFO master_process::supervisor: reload done generation=1 took_ms=107";
        assert_eq!(field(line, "took_ms"), Some("107"));
        assert_eq!(field(line, "generation"), Some("1"));
        assert_eq!(field(line, "pid"), None);
        let line = "2026-11-25T16:14:42.415410Z  INFO master_process::master: listening on 127.0.0.1:33471 name=\"unknown\"";
        assert_eq!(field(line, "name"), Some("unknown"));
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:33471".parse().expect("addr"))
        );
        let bare = "test-worker[26282]: listening on 1 fd(s) bare (fd 3 127.0.0.1:45767)";
        assert_eq!(
            listening_addr(bare),
            Some("127.0.0.1:45767".parse().expect("addr"))
        );
    }
}
