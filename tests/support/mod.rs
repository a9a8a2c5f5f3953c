//! The one harness for integration tests: start a real master over real workers, wait for
//! what it does with deadlines (never sleep), and clean up every process it started.
//!
//! - [`MasterCmd::start`] runs the `master-process` binary in a fresh temp dir, with the
//!   `test-worker` fixture as the worker command by default.
//! - What the master did (ready workers, which pids serve, how a reload ended, a crash loop,
//!   its phase) is read from its `status` over the control socket: [`Master::status`],
//!   [`Master::wait_status`] (asked again at each line the master logs, within a deadline).
//! - What status, a snapshot, cannot show (the order and timing of events: starts, stops,
//!   SIGKILLs, restart plans, samples) is read from the log's structured fields through
//!   [`Ev`], which recognises each event in one place: no test spells a log message.
//! - [`Master::expect`] waits for a line containing a pattern: for what the log itself must
//!   say (why a reload failed, debug lines with `-v`) and for the workers' own lines. The
//!   master's stderr (and its workers', which they inherit) is read by a thread into [`Log`].
//! - On drop: SIGKILL to the master and to the process group of every worker it logged.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The default deadline for anything a test waits for. Generous: tests run on a loaded
/// 2-core machine; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The master binary under test.
pub fn master_bin() -> &'static str {
    env!("CARGO_BIN_EXE_master-process")
}

/// An example of this crate (built by `cargo test`), e.g. `hello`.
pub fn example(name: &str) -> PathBuf {
    let path = Path::new(master_bin())
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace --all-features`",
        path.display()
    );
    path
}

/// The `test-worker` fixture binary (built with the workspace).
pub fn test_worker() -> PathBuf {
    let path = Path::new(master_bin()).with_file_name("test-worker");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace` (or `cargo build --workspace` first)",
        path.display()
    );
    path
}

/// Lines read from a child's stderr, shared with the reader thread.
#[derive(Default)]
pub struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Log {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().0.len()
    }

    /// Waits until a line at or after `from` satisfies `pred`; returns its position.
    pub fn wait(
        &self,
        from: usize,
        deadline: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Option<usize> {
        let mut g = self.lines.lock().unwrap();
        loop {
            if let Some(i) = g.0.iter().skip(from).position(|l| pred(l)) {
                return Some(from + i);
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                return None;
            }
            g = self.changed.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Whether the writers closed the stream (the master and every worker are gone).
    pub fn closed(&self) -> bool {
        self.lines.lock().unwrap().1
    }

    /// Reads `stderr` into the log until every writer has closed it. Each chunk is read and
    /// its lines pushed under the log's lock, so that [`Log::sync`] can tell when everything
    /// written to the pipe so far is in the log.
    fn read_from(&self, stderr: std::process::ChildStderr) {
        use std::os::fd::AsRawFd;
        let fd = stderr.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, -1) } < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
            let mut g = self.lines.lock().unwrap();
            let first = g.0.len();
            let eof = loop {
                // SAFETY: `buf` is valid for `buf.len()` bytes.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    pending.extend_from_slice(&buf[..n as usize]);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let bytes: Vec<u8> = pending.drain(..=end).collect();
                        g.0.push(String::from_utf8_lossy(&bytes[..end]).into_owned());
                    }
                    continue;
                }
                if n == 0 {
                    break true;
                }
                match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::WouldBlock => break false,
                    std::io::ErrorKind::Interrupted => {}
                    _ => break true,
                }
            };
            if eof && !pending.is_empty() {
                g.0.push(String::from_utf8_lossy(&pending).into_owned());
            }
            // Echoed for the test's output, out of the lock (that output may be slow).
            let new: Vec<String> = g.0[first..].to_vec();
            if eof {
                // Closed under the lock, before the descriptor is (when `stderr` drops).
                g.1 = true;
            }
            drop(g);
            self.changed.notify_all();
            for line in new {
                eprintln!("| {line}");
            }
            if eof {
                return;
            }
        }
        self.lines.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// Waits until every byte written to the stream so far (by the time of this call) is in
    /// the log: the pipe `fd` (the read end of the stream, kept open by the reader until it
    /// marks the log closed) is empty while the reader holds no chunk. A log line is written
    /// with one write(2), so no line is half-read then.
    fn sync(&self, fd: i32) {
        let deadline = Instant::now() + DEADLINE;
        let mut g = self.lines.lock().unwrap();
        loop {
            if g.1 {
                return;
            }
            let mut unread: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int; `fd` is open while the log is not closed.
            let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
            if r != 0 || unread == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the log reader did not catch up within {DEADLINE:?}"
            );
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(5))
                .unwrap()
                .0;
        }
    }
}

/// The value of `key=` in a log line (`pid=123` gives `123`).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The numeric value of `key=` in a log line.
pub fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

/// How to start a master.
pub struct MasterCmd {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    command: Option<Vec<OsString>>,
    dir: TempDir,
    hostile_parent: bool,
    program: Option<PathBuf>,
}

impl MasterCmd {
    /// Starts the master the way a careless parent would: SIGUSR1 blocked, SIGQUIT and
    /// SIGUSR2 ignored. Workers must not inherit any of it.
    pub fn hostile_parent(mut self) -> Self {
        self.hostile_parent = true;
        self
    }

    /// Master options (before `--`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the master (and so for its workers).
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The worker command (default: the test-worker).
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// Workers read extra `TW_*` knobs from `knobs.env` in the temp dir at each start, so a
    /// test can change what the next generation does (a "deploy"). See [`Master::set_knobs`].
    pub fn with_knobs(self, knobs: &[(&str, &str)]) -> Self {
        let path = self.dir.path().join("knobs.env");
        write_knobs(&path, knobs);
        let script = r#"set -a; . "$0"; exec "$@""#;
        let tw = test_worker();
        self.command([
            "sh".into(),
            "-c".into(),
            script.into(),
            path.into_os_string(),
            tw.into_os_string(),
        ])
    }

    /// Like [`MasterCmd::with_knobs`], for any worker command: it starts with the variables
    /// in `knobs.env` (see [`Master::set_knobs`]).
    pub fn with_knobs_command(self, command: &[&str], knobs: &[(&str, &str)]) -> Self {
        let path = self.dir.path().join("knobs.env");
        write_knobs(&path, knobs);
        let script = r#"set -a; . "$0"; exec "$@""#;
        let mut argv: Vec<OsString> = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            path.into_os_string(),
        ];
        argv.extend(command.iter().map(OsString::from));
        self.command(argv)
    }

    /// The temp dir the master runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `program` (an app built on `master_process::init()`, which becomes its own
    /// master) instead of the `master-process` binary; `args` go to it, no `--` command.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Starts the master.
    pub fn start(self) -> Master {
        let reports = self.dir.path().join("reports");
        std::fs::create_dir_all(&reports).unwrap();
        let mut cmd = Command::new(self.program.as_deref().unwrap_or(Path::new(master_bin())));
        cmd.current_dir(self.dir.path())
            .env_remove("DEBUG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("WORKERS")
            .env_remove("PORT")
            .env("TW_REPORT", &reports)
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if self.hostile_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: sigprocmask and signal are async-signal-safe; no allocation.
            unsafe {
                cmd.pre_exec(|| {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGUSR1);
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                    libc::signal(libc::SIGUSR2, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        if self.program.is_none() {
            cmd.arg("--");
            match &self.command {
                Some(c) => cmd.args(c),
                None => cmd.arg(test_worker()),
            };
        }
        let mut child = cmd.spawn().expect("start master-process");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let stderr_fd = {
            use std::os::fd::AsRawFd;
            stderr.as_raw_fd()
        };
        let reader = Arc::clone(&log);
        std::thread::spawn(move || reader.read_from(stderr));
        let control = self.control_at();
        // The master is the child itself unless another program starts it (or is it).
        let master_pid = self.program.is_none().then(|| child.id());
        let runtime = self
            .env_value("XDG_RUNTIME_DIR")
            .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from);
        Master {
            child,
            log,
            stderr_fd,
            cursor: 0,
            dir: self.dir,
            runtime,
            control,
            master_pid,
            reports,
        }
    }

    /// The last value given to environment variable `key`, if any.
    fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Where the master will have its control socket, by its options.
    fn control_at(&self) -> ControlAt {
        let mut control = self.env_value("MASTER_PROCESS_CONTROL").map(str::to_string);
        let mut name = self.env_value("MASTER_PROCESS_NAME").map(str::to_string);
        let mut args = self.args.iter().map(|a| a.to_string_lossy());
        while let Some(a) = args.next() {
            for (flag, value) in [("--control", &mut control), ("--name", &mut name)] {
                if a == flag {
                    *value = args.next().map(|v| v.into_owned());
                    break;
                } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                    *value = Some(v.to_string());
                }
            }
        }
        match control.as_deref() {
            Some("off") => ControlAt::Off,
            Some(path) => ControlAt::Path(self.dir.path().join(path)),
            None => {
                let folder = self
                    .env_value("XDG_RUNTIME_DIR")
                    .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from)
                    .join("master-process");
                match name {
                    Some(name) => ControlAt::Path(folder.join(format!("{name}.sock"))),
                    None => ControlAt::Folder(folder),
                }
            }
        }
    }
}

/// Where a master's control socket is.
#[derive(Debug, Clone)]
enum ControlAt {
    /// The one socket in this folder (`$XDG_RUNTIME_DIR/master-process/NAME.sock`).
    Folder(PathBuf),
    /// This path (`--control PATH`, or `NAME.sock` in the folder with `--name NAME`).
    Path(PathBuf),
    /// None (`--control off`).
    Off,
}

impl ControlAt {
    /// The socket, if it is there.
    fn find(&self) -> Option<PathBuf> {
        match self {
            ControlAt::Folder(folder) => find_control_socket(folder),
            ControlAt::Path(path) => path.exists().then(|| path.clone()),
            ControlAt::Off => None,
        }
    }
}

fn write_knobs(path: &Path, knobs: &[(&str, &str)]) {
    let text: String = knobs.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running master-process under test.
pub struct Master {
    child: Child,
    log: Arc<Log>,
    /// The read end of the master's stderr (owned by the reader thread; see [`Log::sync`]).
    stderr_fd: i32,
    cursor: usize,
    dir: TempDir,
    /// The `XDG_RUNTIME_DIR` the master was given (its temp dir unless the test set one).
    runtime: PathBuf,
    /// Where its control socket is.
    control: ControlAt,
    /// The master's pid, when the harness knows it (it started the master binary itself):
    /// a status answer from another master is not this one's.
    master_pid: Option<u32>,
    reports: PathBuf,
}

impl Master {
    /// A master with these options, serving the test-worker.
    pub fn cmd() -> MasterCmd {
        MasterCmd {
            args: Vec::new(),
            env: Vec::new(),
            command: None,
            dir: tempfile::tempdir().unwrap(),
            hostile_parent: false,
            program: None,
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir it runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every log line so far: all the master (and its workers) wrote before this call.
    pub fn lines(&self) -> Vec<String> {
        self.sync_log();
        self.log.lines()
    }

    /// Waits until all the master (and its workers) wrote to stderr before this call is in
    /// the log: what [`Master::logged`] and [`Master::lines`] see after a status answer
    /// includes every line the master wrote before it answered.
    pub fn sync_log(&self) {
        self.log.sync(self.stderr_fd);
    }

    /// Waits for the next line (after the previous match) containing `pattern`; returns it.
    /// For what the log itself must say, and for the workers' own lines: what the master
    /// did is read from [`Master::status`], and its events from [`Master::expect_ev`].
    pub fn expect(&mut self, pattern: &str) -> String {
        self.expect_within(pattern, DEADLINE)
    }

    /// [`Master::expect`] with another deadline.
    pub fn expect_within(&mut self, pattern: &str, within: Duration) -> String {
        self.expect_line(&format!("a line containing {pattern:?}"), within, |l| {
            l.contains(pattern)
        })
    }

    /// Moves the cursor of [`Master::expect`] past all the master wrote so far: what is
    /// expected next happens after this call (say, after the signal the test sends next).
    pub fn mark(&mut self) {
        self.sync_log();
        self.cursor = self.log.len();
    }

    /// Waits for the next event `want` of the master's log (after the previous match);
    /// returns its line.
    pub fn expect_ev(&mut self, want: impl Into<Want>) -> String {
        let want = want.into();
        self.expect_line(&format!("{want:?}"), DEADLINE, |l| want.matches(l))
    }

    /// Waits for the next line (after the previous match) that satisfies `pred`.
    fn expect_line(&mut self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.log.wait(self.cursor, Instant::now() + within, pred) {
            Some(i) => {
                self.cursor = i + 1;
                self.log.lines()[i].clone()
            }
            None => panic!(
                "no {what} in the log within {within:?}; log since the last match:\n{}",
                self.log.lines()[self.cursor..].join("\n")
            ),
        }
    }

    /// Every event `want` logged so far (from the start, the cursor does not move).
    pub fn events(&self, want: impl Into<Want>) -> Vec<String> {
        let want = want.into();
        self.lines()
            .into_iter()
            .filter(|l| want.matches(l))
            .collect()
    }

    /// Waits for a line containing each of `patterns`, in any order, anywhere in the log
    /// (for lines whose order against others is not defined, such as a worker's own).
    pub fn eventually(&self, patterns: &[String]) {
        for p in patterns {
            if self
                .log
                .wait(0, Instant::now() + DEADLINE, |l| l.contains(p.as_str()))
                .is_none()
            {
                panic!(
                    "no log line containing {p:?} within {DEADLINE:?}; log:\n{}",
                    self.log.lines().join("\n")
                );
            }
        }
    }

    /// Waits for a line containing each of `patterns`, in any order, after the previous
    /// match; the cursor moves past the last of them.
    pub fn expect_each(&mut self, patterns: &[String]) {
        let from = self.cursor;
        let mut last = from;
        for p in patterns {
            match self
                .log
                .wait(from, Instant::now() + DEADLINE, |l| l.contains(p.as_str()))
            {
                Some(i) => last = last.max(i + 1),
                None => panic!(
                    "no log line containing {p:?} within {DEADLINE:?}; log since the last match:\n{}",
                    self.log.lines()[from..].join("\n")
                ),
            }
        }
        self.cursor = last;
    }

    /// Waits `within` for a new line that satisfies `pred`; true if none came (a bounded
    /// wait on the log to show that something does NOT happen, e.g. while monitoring is
    /// paused).
    pub fn quiet(&self, within: Duration, pred: impl Fn(&str) -> bool) -> bool {
        self.sync_log();
        let from = self.log.len();
        self.log.wait(from, Instant::now() + within, pred).is_none()
    }

    /// Whether any line so far (from the start) contains `pattern`.
    pub fn logged(&self, pattern: &str) -> bool {
        self.lines().iter().any(|l| l.contains(pattern))
    }

    /// How many lines so far contain `pattern`.
    pub fn count(&self, pattern: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(pattern)).count()
    }

    /// The address of the first TCP listener, as status gives it. A program that is not
    /// known to be a master (see [`MasterCmd::program`]: an app run alone, say) may instead
    /// say it in a `listening on ADDR` line of its own.
    pub fn tcp_addr(&mut self) -> std::net::SocketAddr {
        let from_status = |s: &Status| {
            s.listeners()
                .find_map(|l| l.get("addr").parse::<std::net::SocketAddr>().ok())
        };
        if self.master_pid.is_some() {
            return from_status(&self.wait_status("a TCP listener", |s| from_status(s).is_some()))
                .unwrap();
        }
        let from_line = |l: &str| {
            l.split("listening on ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<std::net::SocketAddr>()
                .ok()
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(addr) = self.try_status().as_ref().and_then(from_status) {
                return addr;
            }
            let seen = self.log.len();
            if let Some(addr) = self.log.lines().iter().find_map(|l| from_line(l)) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no TCP listener within {DEADLINE:?}; log:\n{}",
                self.log.lines().join("\n")
            );
            self.log.wait(
                seen,
                (Instant::now() + Duration::from_millis(250)).min(deadline),
                |_| true,
            );
        }
    }

    /// Waits until every slot has had a ready worker (the master's phase is `running`);
    /// returns the pids that serve, by slot.
    pub fn wait_ready(&mut self) -> Vec<u32> {
        self.wait_status("every slot ready (phase running)", |s| {
            s.phase() == "running"
        })
        .serving()
    }

    /// The pids of the ready serving workers now, by slot, as the master says.
    pub fn serving(&self) -> Vec<u32> {
        self.status().serving()
    }

    /// Every worker pid the master logged (its lines about a worker carry `pid=` and
    /// `generation=`; the first is the worker's start), in order, each once.
    pub fn started_pids(&self) -> Vec<u32> {
        self.sync_log();
        self.logged_pids()
    }

    /// [`Master::started_pids`] among the lines read so far.
    fn logged_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        for l in self.log.lines() {
            if !l.contains(MASTER_TARGET) || field(&l, "generation").is_none() {
                continue;
            }
            if let Some(pid) = field(&l, "pid").and_then(|p| p.parse().ok()) {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill master: {}", std::io::Error::last_os_error());
    }

    /// SIGHUP, then waits until the master says reload `generation` is done; returns the
    /// pids that serve now, by slot, every one of that generation. See
    /// [`Master::reload_done`].
    pub fn reload(&mut self, generation: u64) -> Vec<u32> {
        self.signal(libc::SIGHUP);
        self.reload_done(generation)
    }

    /// Waits until the master logs the end of reload `generation` (no canary), and asserts
    /// that it is done: every slot has a worker of that generation found ready. Returns
    /// their pids, by slot.
    ///
    /// Read from the log's structured fields, not from status: a status request reads the
    /// /proc tree of every worker, and reaping a worker whose tree was read while it served
    /// a load stalls the master in the kernel (up to a second), which would slow every
    /// reload of a loop under load. [`Master::reload_ended`] asks status.
    pub fn reload_done(&self, generation: u64) -> Vec<u32> {
        let end = Ev::ReloadEnded.generation(generation);
        let Some(at) = self
            .log
            .wait(0, Instant::now() + DEADLINE, |l| end.matches(l))
        else {
            panic!(
                "reload {generation} did not end within {DEADLINE:?}; log:\n{}",
                self.log.lines().join("\n")
            );
        };
        let lines = self.log.lines();
        let (mut slots, mut ready) = (BTreeSet::new(), BTreeMap::new());
        for l in lines[..at].iter().filter(|l| Ev::Ready.matches(l)) {
            let index = num(l, "index");
            match num(l, "generation") {
                g if g < generation => {
                    slots.insert(index);
                }
                g if g == generation => {
                    ready.insert(index, num(l, "pid") as u32);
                }
                _ => {}
            }
        }
        assert!(
            ready.keys().eq(slots.iter()),
            "reload {generation} failed: ready {ready:?} of slots {slots:?}; its lines:\n{}",
            lines
                .iter()
                .filter(|l| field(l, "generation") == Some(&generation.to_string()))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        ready.into_values().collect()
    }

    /// Waits until reload `generation` has ended (status: `last_reload`, or one of the
    /// `recent_reload`s), and asserts that its outcome is `outcome` (`done` or `failed`);
    /// returns the status that says so.
    pub fn reload_ended(&self, generation: u64, outcome: &str) -> Status {
        let s = self.wait_status_when(
            &format!("reload {generation} ended"),
            |l| Ev::ReloadEnded.generation(generation).matches(l),
            |s| s.reload(generation).is_some(),
        );
        let ended = s.reload(generation).unwrap();
        assert_eq!(ended.get("outcome"), outcome, "reload {generation}: {s}");
        s
    }

    /// Waits for the master to exit; returns its exit code (or 128 + signal).
    pub fn wait_exit(&mut self) -> i32 {
        assert!(
            wait_gone(self.pid(), DEADLINE),
            "master did not exit within {DEADLINE:?}"
        );
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }

    /// The report a test-worker wrote at start (`TW_REPORT`), as key/value pairs. Call it
    /// once the worker is ready by `notify` (it writes the report before it sends READY=1).
    pub fn report(&self, pid: u32) -> BTreeMap<String, String> {
        let path = self.reports.join(format!("{pid}.env"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no report from worker {pid} at {}: {e}", path.display()));
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Changes the knobs the next workers start with (see [`MasterCmd::with_knobs`]).
    pub fn set_knobs(&self, knobs: &[(&str, &str)]) {
        write_knobs(&self.dir.path().join("knobs.env"), knobs);
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects; stale pids at worst get ESRCH.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
            for pid in self.logged_pids() {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Waits until process `pid` is gone, with a pidfd (an event, not polling /proc).
/// Returns false if it is still alive at the deadline.
pub fn wait_gone(pid: u32, within: Duration) -> bool {
    // SAFETY: pidfd_open returns a new fd or -1; we own the fd if it succeeds.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let fd = fd as i32;
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + within;
    let gone = loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left) };
        if r > 0 {
            // Readable when the process has exited. If it is our zombie it is "gone" too.
            break true;
        }
        if r == 0 || Instant::now() >= deadline {
            break false;
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    gone
}

/// The parent of process `pid`, if it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// How long a request of a test load may take before it counts as lost: far above any
/// answer a worker gives (milliseconds), yet what a request may wait on a 2-core machine
/// that runs other suites at once (seconds, when the load average passes 20).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A load of `mode` on `connections` connections to `target`, once it has answered 200
/// requests (so that what follows happens under load, not before it).
pub fn start_load(
    target: loadgen::Target,
    mode: loadgen::Mode,
    connections: usize,
) -> loadgen::Load {
    let mut cfg = loadgen::Config::new(target);
    cfg.connections = connections;
    cfg.mode = mode;
    cfg.request_timeout = REQUEST_TIMEOUT;
    let load = loadgen::start(cfg);
    assert!(
        load.wait_for_requests(200, DEADLINE),
        "{mode} load started: {}",
        load.snapshot()
    );
    load
}

/// A TCP port free on every address (IPv4 and IPv6), and for UDP, outside the kernel's
/// ephemeral range: no client connection of a parallel test takes it as its local port
/// between now and the bind of the master (or app) it is for.
pub fn free_port() -> u16 {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
    let seed = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32768)
        .clamp(12000, 32768);
    for i in 0..10_000u64 {
        let port = (10_000
            + (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % (low - 10_000))
            as u16;
        let tcp = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).is_ok()
            && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        if tcp && udp {
            return port;
        }
    }
    panic!("no free port");
}

/// The kernel's cap on a listen queue (`net.core.somaxconn`): the master's default backlog.
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A TCP socket listening, as `ss -Hltne` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// Its local address, as `ss` writes it (`127.0.0.1:8080`, `*:8080`, `[::1]:8080`).
    pub local: String,
    /// The length of its accept queue (Send-Q, for a listening socket).
    pub backlog: u32,
    /// Its inode (`ino:`): a descriptor open on it links to `socket:[INODE]` in /proc.
    pub inode: u64,
}

/// The TCP sockets listening on `port`, as `ss -Hltne` shows them.
pub fn listening_on(port: u16) -> Vec<Listening> {
    let out = Command::new("ss")
        .args(["-Hltne", "sport", "=", &format!(":{port}")])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            // State, Recv-Q, Send-Q, local, peer, then the -e details (`ino:N` among them).
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode = f[5..]
                .iter()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("no inode in {l:?}"));
            Listening {
                local: f[3].to_string(),
                backlog: f[2].parse().unwrap_or_else(|_| panic!("Send-Q of {l:?}")),
                inode,
            }
        })
        .collect()
}

/// One HTTP GET over a fresh TCP connection; returns the body.
pub fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    get_over(s, path)
}

/// GET `target` on a fresh connection `s` (`Connection: close`); the body of a 200 answer.
fn get_over(mut s: impl std::io::Read + std::io::Write, target: &str) -> std::io::Result<String> {
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!("bad response: {out:?}"))),
    }
}

/// The pid that answered a GET.
pub fn get_pid(addr: std::net::SocketAddr) -> u32 {
    get(addr, "/")
        .expect("GET /")
        .trim()
        .parse()
        .expect("pid body")
}

/// Runs the master binary to completion (one-shot CLI checks); returns (code, stderr).
pub fn run_once(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(master_bin());
    cmd.args(args)
        .env_remove("WORKERS")
        .env_remove("PORT")
        .env_remove("DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a one-shot command printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    /// Its exit code (or 128 + signal).
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `cmd` to completion with stdout and stderr captured, within `within`: a command that
/// is still running then is killed and the test fails.
pub fn run_bounded(mut cmd: Command, within: Duration) -> Output {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    if !wait_gone(child.id(), within) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {within:?}");
    }
    let status = child.wait().unwrap();
    Output {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The control socket of the one master whose `XDG_RUNTIME_DIR` is `dir`.
pub fn control_socket_in(dir: &Path) -> PathBuf {
    find_control_socket(&dir.join("master-process")).unwrap_or_else(|| {
        panic!(
            "expected one control socket in {}",
            dir.join("master-process").display()
        )
    })
}

/// The one socket in control folder `folder` (`$XDG_RUNTIME_DIR/master-process`), if there
/// is exactly one.
fn find_control_socket(folder: &Path) -> Option<PathBuf> {
    let sockets: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    match <[PathBuf; 1]>::try_from(sockets) {
        Ok([one]) => Some(one),
        Err(_) => None,
    }
}

/// A `master-process <reload|status|stop|signal> ...` command aimed at the master whose temp
/// dir is `dir` (its control socket is in `<dir>/master-process/`).
pub fn control_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(master_bin());
    cmd.args(args)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("MASTER_PROCESS_CONTROL")
        .env_remove("DEBUG");
    cmd
}

/// One record of a control answer: its kind and its fields, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `master`, `worker`, `slot`, `error`...
    pub kind: String,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

impl Record {
    /// Decodes one answer line (`kind k=v ...`, values percent-encoded).
    pub fn decode(line: &str) -> Record {
        let unescape = |s: &str| {
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 3 <= bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        };
        let mut words = line.split(' ');
        let kind = unescape(words.next().unwrap());
        let fields = words
            .map(|w| {
                let (k, v) = w
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad field {w:?} in {line:?}"));
                (unescape(k), unescape(v))
            })
            .collect();
        Record { kind, fields }
    }

    /// The value of field `key`; the test fails if it is missing.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    /// The numeric value of field `key`; the test fails if it is missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number in {self:?}"))
    }
}

/// Sends `request` (bytes, as they are) on a fresh connection to the control socket at
/// `path`, closes the sending side, and returns everything the master answered until it
/// closed the connection. Fails the test if the master neither answers nor closes within
/// `within`. Errors from a master that closed first (it refused an oversized request) are
/// not failures: what it answered before is returned.
pub fn control_exchange(path: &Path, request: &[u8], within: Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(within)).unwrap();
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the master neither answered nor closed within {within:?}; so far: {:?}",
                    String::from_utf8_lossy(&answer)
                )
            }
            // ECONNRESET: the master closed with our bytes unread.
            Err(_) => break,
        }
    }
    answer
}

/// The records of an answer, up to (without) its final `end` line; the test fails if the
/// answer is not a complete, successful one.
pub fn records(answer: &[u8]) -> Vec<Record> {
    let text = std::str::from_utf8(answer).expect("a UTF-8 answer");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        text.ends_with("end\n") && lines.last() == Some(&"end"),
        "not a complete successful answer: {text:?}"
    );
    lines[..lines.len() - 1]
        .iter()
        .map(|l| Record::decode(l))
        .collect()
}

impl Master {
    /// The master's control socket: by default the one socket in its control folder
    /// (`$XDG_RUNTIME_DIR/master-process/NAME.sock`), else its `--control` path.
    pub fn control_path(&self) -> PathBuf {
        self.control
            .find()
            .unwrap_or_else(|| panic!("no control socket at {:?}", self.control))
    }

    /// Runs `master-process <args>` (a control command) against this master, to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_bounded(control_command(&self.runtime, args), DEADLINE)
    }

    /// The master's status, asked over the control socket directly (no client process: cheap
    /// enough to sample in a loop).
    pub fn status(&self) -> Status {
        Status(records(&control_exchange(
            &self.control_path(),
            b"MP/1 status\n",
            DEADLINE,
        )))
    }

    /// The master's status, or `None` if it does not answer (no control socket yet, or not
    /// any more).
    fn try_status(&self) -> Option<Status> {
        use std::io::{Read, Write};
        let path = self.control.find()?;
        let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(DEADLINE)).ok()?;
        s.write_all(b"MP/1 status\n").ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).ok()?;
        let status = Status(records(answer.ends_with(b"\nend\n").then_some(&answer)?));
        match self.master_pid {
            Some(pid) if status.master().num("pid") != u64::from(pid) => None,
            _ => Some(status),
        }
    }

    /// Waits until the master's status satisfies `pred`, within [`DEADLINE`]; returns it.
    /// `what` says what is awaited, for the failure message. Status is asked at once, then
    /// again each time the master logs a line (each of its events is logged), and every
    /// 250 ms anyway.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        // The control server's own lines (with -v) are not events: they would make every
        // request wake the next one.
        self.poll_status(what, true, |l| !l.contains("master_process::control"), pred)
    }

    /// [`Master::wait_status`], asking only when a line satisfies `wake` (and every 250 ms
    /// anyway), not at once: a status request reads the /proc tree of every worker, and
    /// under load the fewer the better.
    pub fn wait_status_when(
        &self,
        what: &str,
        wake: impl Fn(&str) -> bool,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        self.poll_status(what, false, wake, pred)
    }

    fn poll_status(
        &self,
        what: &str,
        mut ask: bool,
        wake: impl Fn(&str) -> bool,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        const TICK: Duration = Duration::from_millis(250);
        let deadline = Instant::now() + DEADLINE;
        let mut last: Option<Status> = None;
        let mut seen = self.log.len();
        loop {
            if ask {
                seen = self.log.len();
                match self.try_status() {
                    Some(s) if pred(&s) => return s,
                    Some(s) => last = Some(s),
                    None if self.log.closed() => panic!(
                        "waiting for {what}: the master is gone; log:\n{}",
                        self.log.lines().join("\n")
                    ),
                    None => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let lines = self.log.lines();
                panic!(
                    "no {what} within {DEADLINE:?}; last status:\n{}\nlog (last 40 lines):\n{}",
                    last.map_or("none".to_string(), |s| s.to_string()),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            // The next line that wakes us, or the tick.
            if let Some(i) = self.log.wait(seen, (now + TICK).min(deadline), &wake) {
                seen = i + 1;
            }
            ask = true;
        }
    }
}

impl Master {
    /// `master-process status --json`, run as a user would, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        json_of(&self.ctl(&["status", "--json"]))
    }
}

/// What a command printed with `--json` (one JSON document), parsed: the test fails, with
/// the output, if the command did not exit 0 or printed anything else.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out:?}"))
}

/// Reading a JSON answer ([`serde_json::Value`]): the test fails, with the value, where a
/// field is missing or of another type.
pub trait Json {
    /// Field `key` of an object.
    fn at(&self, key: &str) -> &serde_json::Value;
    /// A string.
    fn str(&self) -> &str;
    /// A number.
    fn num(&self) -> f64;
    /// A whole number, not negative.
    fn int(&self) -> u64;
    /// A boolean.
    fn bool(&self) -> bool;
    /// An array.
    fn arr(&self) -> &[serde_json::Value];
}

impl Json for serde_json::Value {
    fn at(&self, key: &str) -> &serde_json::Value {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {self}"))
    }

    fn str(&self) -> &str {
        self.as_str()
            .unwrap_or_else(|| panic!("not a string: {self}"))
    }

    fn num(&self) -> f64 {
        self.as_f64()
            .unwrap_or_else(|| panic!("not a number: {self}"))
    }

    fn int(&self) -> u64 {
        self.as_u64()
            .unwrap_or_else(|| panic!("not a whole number: {self}"))
    }

    fn bool(&self) -> bool {
        self.as_bool()
            .unwrap_or_else(|| panic!("not a boolean: {self}"))
    }

    fn arr(&self) -> &[serde_json::Value] {
        self.as_array()
            .unwrap_or_else(|| panic!("not an array: {self}"))
    }
}

/// The master's `status` answer: its records in order (`master`, `listener`s, `last_reload`,
/// `worker`s, `slot`s), as `records` (`status[0]`, `status.iter()`) and by name.
#[derive(Debug, Clone)]
pub struct Status(pub Vec<Record>);

impl std::ops::Deref for Status {
    type Target = [Record];
    fn deref(&self) -> &[Record] {
        &self.0
    }
}

impl IntoIterator for Status {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.0 {
            write!(f, "{}", r.kind)?;
            for (k, v) in &r.fields {
                write!(f, " {k}={v}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl Status {
    /// The `master` record.
    pub fn master(&self) -> &Record {
        self.0
            .iter()
            .find(|r| r.kind == "master")
            .unwrap_or_else(|| panic!("no master record in {self}"))
    }

    /// The master's phase: `starting`, `running`, `stopping`...
    pub fn phase(&self) -> &str {
        self.master().get("phase")
    }

    /// The `RELOAD_INDEX` of the latest reload (0 before the first).
    pub fn generation(&self) -> u64 {
        self.master().num("generation")
    }

    /// The reload in flight, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.master()
            .fields
            .get("reload_in_flight")
            .map(|g| g.parse().unwrap())
    }

    /// The `listener` records.
    pub fn listeners(&self) -> impl Iterator<Item = &Record> {
        self.0.iter().filter(|r| r.kind == "listener")
    }

    /// The `last_reload` record, once a reload has ended.
    pub fn last_reload(&self) -> Option<&Record> {
        self.0.iter().find(|r| r.kind == "last_reload")
    }

    /// The outcome of reload `generation`, if it has ended and status still shows it (the
    /// last reload, and a few before).
    pub fn reload(&self, generation: u64) -> Option<&Record> {
        self.0.iter().find(|r| {
            (r.kind == "last_reload" || r.kind == "recent_reload")
                && r.num("generation") == generation
        })
    }

    /// The `worker` records.
    pub fn workers(&self) -> impl Iterator<Item = &Record> {
        self.0.iter().filter(|r| r.kind == "worker")
    }

    /// The `worker` record of `pid`, if the master has such a worker.
    pub fn worker(&self, pid: u32) -> Option<&Record> {
        self.workers().find(|w| w.num("pid") == u64::from(pid))
    }

    /// The pids of the ready serving workers, by slot.
    pub fn serving(&self) -> Vec<u32> {
        let mut serving: Vec<(u64, u32)> = self
            .workers()
            .filter(|w| w.get("role") == "serving" && w.get("state") == "ready")
            .map(|w| (w.num("index"), w.num("pid") as u32))
            .collect();
        serving.sort_unstable();
        serving.into_iter().map(|(_, pid)| pid).collect()
    }

    /// The `slot` record of slot `index`.
    pub fn slot(&self, index: usize) -> &Record {
        self.0
            .iter()
            .find(|r| r.kind == "slot" && r.num("index") == index as u64)
            .unwrap_or_else(|| panic!("no slot {index} in {self}"))
    }
}

/// The target prefix of the master's own log lines (the workers' lines share the stream).
pub const MASTER_TARGET: &str = " master_process::";

/// The events of the master's log that tests order or time: history, which status (a
/// snapshot) cannot show. Each is recognised here and only here: by a structured field
/// that only its line carries where there is one, else by its message, so that a reworded
/// message is fixed in this one place and in no test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    /// A worker was started: `pid`, `index`, `generation`, `at_ms` (the master's clock).
    Started,
    /// A worker was found ready: `pid`, `index`, `generation`, `after_ms` since its start.
    Ready,
    /// A worker was asked to stop (SIGTERM): `pid`, `index`, `generation`, `at_ms`.
    Stopping,
    /// A stopping worker outlived MAX_KILL_TIMEOUT; SIGKILL to its group: `pid`, `index`,
    /// `generation`, `timeout_ms`, `at_ms`.
    Killed,
    /// A worker that was asked to stop exited: `pid`, `index`, `generation`, `status`.
    Stopped,
    /// A serving worker exited on its own: `pid`, `index`, `generation`, `status`,
    /// `lived_ms`, `crashes` (in a row).
    Crashed,
    /// A slot's restart was planned: `index`, `delay_ms`, and `crashes` when it is
    /// crash-looping.
    Restart,
    /// A reload began: `generation`, `workers`.
    ReloadStarted,
    /// A reload ended, done or failed: `generation`, `took_ms`.
    ReloadEnded,
    /// A reload's canary is ready; the master watches it: `pid`, `index`, `canary_ms`.
    CanaryWatched,
    /// The canary stayed ready its canary time; the rest follow: `pid`.
    CanaryPassed,
    /// The resource monitor sampled a worker (a debug line): `pid`, `memory_over` and
    /// `cpu_over` (samples over the limit in a row), `rss_mb`, `cpu_pct`.
    Sample,
    /// The resource monitor has a worker replaced: `pid`, `index`.
    Replacing,
    /// A worker's memory went above 80% of the limit: `pid`, `rss_mb`, `limit_mb`.
    MemoryHigh,
    /// A worker exited, whatever the reason: `pid`, `index`, `generation`, `status`.
    Exited,
    /// The master reaped a process that is not a worker (an orphan it adopted; a debug
    /// line): `pid`, `status`.
    Reaped,
    /// Before it exits, the master stops what workers left behind: `count`, and the pids in
    /// its message (`[1, 2]`).
    OrphansStopping,
    /// A reload was asked during another: one more is queued. No field.
    ReloadQueued,
    /// The master was upgraded in place and adopted its workers: `pid`, `workers`,
    /// `version`.
    Upgraded,
    /// A worker stayed up --max-backoff: its slot's crash count is reset. `index`, `pid`.
    Stable,
}

impl Ev {
    /// Whether `line` is this event.
    pub fn matches(self, line: &str) -> bool {
        let has = |key| field(line, key).is_some();
        line.contains(MASTER_TARGET)
            && match self {
                // Same fields as `Stopping`: told apart by the message.
                Ev::Started => line.contains("worker started "),
                Ev::Stopping => line.contains("stopping worker "),
                // Same fields as other exits of a worker.
                Ev::Stopped => line.contains("worker stopped "),
                // Same fields as the `reload failed` warning.
                Ev::ReloadStarted => line.contains("reload started "),
                // Its only field is `pid`.
                Ev::CanaryPassed => line.contains("canary passed"),
                // Its fields are `pid` and `index`.
                Ev::Replacing => line.contains("replacing worker"),
                Ev::ReloadQueued => line.contains("reload queued"),
                // Its fields are `index` and `pid`.
                Ev::Stable => line.contains("crash count reset"),
                Ev::Ready => has("after_ms"),
                Ev::Killed => has("timeout_ms"),
                Ev::Crashed => has("lived_ms"),
                Ev::Restart => has("delay_ms"),
                Ev::ReloadEnded => has("took_ms"),
                Ev::CanaryWatched => has("canary_ms"),
                Ev::Sample => has("memory_over"),
                Ev::MemoryHigh => has("limit_mb"),
                Ev::Exited => has("status") && has("generation"),
                Ev::Reaped => has("status") && !has("generation"),
                Ev::OrphansStopping => has("count"),
                Ev::Upgraded => has("version") && has("workers"),
            }
    }

    /// This event, of worker `pid`.
    pub fn pid(self, pid: impl std::fmt::Display) -> Want {
        Want::from(self).pid(pid)
    }

    /// This event, of generation `generation`.
    pub fn generation(self, generation: impl std::fmt::Display) -> Want {
        Want::from(self).generation(generation)
    }

    /// This event, of slot `index`.
    pub fn index(self, index: impl std::fmt::Display) -> Want {
        Want::from(self).index(index)
    }

    /// This event, with `value` in field `key`.
    pub fn field(self, key: &'static str, value: impl std::fmt::Display) -> Want {
        Want::from(self).field(key, value)
    }
}

/// An [`Ev`] whose fields must have given values.
#[derive(Debug, Clone)]
pub struct Want {
    ev: Ev,
    fields: Vec<(&'static str, String)>,
}

impl From<Ev> for Want {
    fn from(ev: Ev) -> Want {
        Want {
            ev,
            fields: Vec::new(),
        }
    }
}

impl Want {
    /// Of worker `pid`.
    pub fn pid(mut self, pid: impl std::fmt::Display) -> Want {
        self.fields.push(("pid", pid.to_string()));
        self
    }

    /// Of generation `generation`.
    pub fn generation(mut self, generation: impl std::fmt::Display) -> Want {
        self.fields.push(("generation", generation.to_string()));
        self
    }

    /// Of slot `index`.
    pub fn index(mut self, index: impl std::fmt::Display) -> Want {
        self.fields.push(("index", index.to_string()));
        self
    }

    /// With `value` in field `key`.
    pub fn field(mut self, key: &'static str, value: impl std::fmt::Display) -> Want {
        self.fields.push((key, value.to_string()));
        self
    }

    /// Whether `line` is this event with these fields.
    pub fn matches(&self, line: &str) -> bool {
        self.ev.matches(line)
            && self
                .fields
                .iter()
                .all(|(k, v)| field(line, k) == Some(v.as_str()))
    }
}

/// Every child process of `pid` (of each of its threads), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The CPU time process `pid` has used so far (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

// Helpers for tests/faults.rs and tests/soak.rs: what /proc says about a process, HTTP over
// a unix socket, and processes that escape the harness (daemons) killed on drop.

/// The numbers of the descriptors process `pid` has open, sorted (from /proc/PID/fd).
pub fn open_fds(pid: u32) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// The value of `key:` in /proc/PID/status (`VmRSS`, `Threads`, `State`...), trimmed.
pub fn proc_status(pid: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// The fields of /proc/PID/stat after the command (field 3, the state, comes first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The state letter of process `pid` (`R`, `S`, `Z`...), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// When process `pid` started (clock ticks after boot, /proc/PID/stat field 22): with the
/// pid, it names one process, whatever pid reuse happens later.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether the very process `pid` that started at `started` (see [`start_time`]) still
/// exists and is not a zombie: a reused pid is another process.
pub fn same_process_alive(pid: u32, started: u64) -> bool {
    alive(pid) && start_time(pid) == Some(started)
}

/// What /proc says about a process at one instant at which it was asleep: read while its
/// scheduler count did not move, so no transient descriptor of its own work is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    /// Its open descriptors, sorted.
    pub fds: Vec<u32>,
    /// VmRSS, in kB.
    pub rss_kb: u64,
    /// Threads.
    pub threads: u64,
    /// Its children, with their state letters.
    pub children: Vec<(u32, char)>,
}

/// How many times process `pid` has been scheduled (/proc/PID/schedstat, third field);
/// `None` if it is gone.
fn timeslices(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// A [`Quiet`] snapshot of process `pid` (single-threaded, e.g. the master): taken while
/// it sleeps, and taken again if it ran meanwhile. `None` if it is gone, or if it never
/// slept through a whole reading within `within`.
pub fn quiet_snapshot(pid: u32, within: Duration) -> Option<Quiet> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let before = timeslices(pid)?;
        if proc_status(pid, "State")?.starts_with('S') {
            let fds = open_fds(pid);
            let kb = |key| {
                proc_status(pid, key)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            };
            let rss_kb = kb("VmRSS")?;
            let threads = kb("Threads")?;
            let children = children(pid)
                .into_iter()
                .map(|c| (c, proc_state(c).unwrap_or('?')))
                .collect();
            if timeslices(pid)? == before && proc_status(pid, "State")?.starts_with('S') {
                return Some(Quiet {
                    fds,
                    rss_kb,
                    threads,
                    children,
                });
            }
        }
        std::thread::yield_now();
    }
    None
}

/// One HTTP GET over a fresh connection to the unix socket at `socket`; returns the body.
pub fn get_unix(socket: &Path, target: &str) -> std::io::Result<String> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    get_over(s, target)
}

/// Processes the harness does not know (daemons that left their worker's process group),
/// SIGKILLed on drop if they still run: a failing test leaves nothing behind.
#[derive(Debug, Default)]
pub struct KillOnDrop(Vec<(u32, u64)>);

impl KillOnDrop {
    /// Kills `pid` on drop, if the same process (by its start time) still runs then.
    pub fn add(&mut self, pid: u32) {
        if let Some(started) = start_time(pid) {
            self.0.push((pid, started));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, started) in &self.0 {
            if same_process_alive(pid, started) {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Master {
    /// Waits until a line anywhere in the log (from its start) satisfies `pred`, within
    /// `within`; returns it, or `None` at the deadline (a bounded wait that can also prove
    /// an absence). The cursor of [`Master::expect`] does not move.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let i = self.log.wait(0, Instant::now() + within, pred)?;
        Some(self.log.lines()[i].clone())
    }
}
