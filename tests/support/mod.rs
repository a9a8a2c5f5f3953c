//! The one harness for integration tests: start a real master over real workers, wait for
//! its log lines with deadlines (never sleep), and clean up every process it started.
//!
//! - [`Master::start`] runs the `master-process` binary in a fresh temp dir, with the
//!   `test-worker` fixture as the worker command by default.
//! - [`Master::expect`] waits for the next log line that contains a pattern; the master's
//!   stderr (and its workers', which they inherit) is read by a thread into [`Log`].
//! - On drop: SIGKILL to the master and to the process group of every worker it logged.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
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
    fn push(&self, line: String) {
        let mut g = self.lines.lock().unwrap();
        g.0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lines.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
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
        let reader = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("| {line}");
                reader.push(line);
            }
            reader.close();
        });
        Master {
            child,
            log,
            cursor: 0,
            dir: self.dir,
            reports,
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
    cursor: usize,
    dir: TempDir,
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

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Waits for the next line (after the previous match) containing `pattern`; returns it.
    pub fn expect(&mut self, pattern: &str) -> String {
        self.expect_within(pattern, DEADLINE)
    }

    /// [`Master::expect`] with another deadline.
    pub fn expect_within(&mut self, pattern: &str, within: Duration) -> String {
        match self.log.wait(self.cursor, Instant::now() + within, |l| {
            l.contains(pattern)
        }) {
            Some(i) => {
                self.cursor = i + 1;
                self.log.lines()[i].clone()
            }
            None => panic!(
                "no log line containing {pattern:?} within {within:?}; log since the last match:\n{}",
                self.log.lines()[self.cursor..].join("\n")
            ),
        }
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

    /// Waits `within` for a new line containing `pattern`; true if none came (a bounded wait
    /// on the log to show that something does NOT happen, e.g. while monitoring is paused).
    pub fn quiet(&self, pattern: &str, within: Duration) -> bool {
        let from = self.log.lines().len();
        self.log
            .wait(from, Instant::now() + within, |l| l.contains(pattern))
            .is_none()
    }

    /// Whether any line so far (from the start) contains `pattern`.
    pub fn logged(&self, pattern: &str) -> bool {
        self.log.lines().iter().any(|l| l.contains(pattern))
    }

    /// How many lines so far contain `pattern`.
    pub fn count(&self, pattern: &str) -> usize {
        self.log
            .lines()
            .iter()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// The address of the first TCP listener, from the "listening on" line.
    pub fn tcp_addr(&mut self) -> std::net::SocketAddr {
        let i = self
            .log
            .wait(0, Instant::now() + DEADLINE, |l| {
                l.contains("listening on ") && !l.contains("listening on unix:")
            })
            .expect("a TCP listener");
        let line = &self.log.lines()[i];
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        addr.parse().unwrap()
    }

    /// Waits until every slot has a ready worker (the first time); returns their pids.
    pub fn wait_ready(&mut self) -> Vec<u32> {
        self.expect("all workers ready");
        self.serving()
    }

    /// Pids of the workers started and not yet stopped, per the log, by slot.
    pub fn serving(&self) -> Vec<u32> {
        let mut by_slot: BTreeMap<u64, u32> = BTreeMap::new();
        for l in self.log.lines() {
            if l.contains("worker ready ") {
                by_slot.insert(num(&l, "index"), num(&l, "pid") as u32);
            }
        }
        by_slot.into_values().collect()
    }

    /// Every worker pid the master logged as started.
    pub fn started_pids(&self) -> Vec<u32> {
        self.log
            .lines()
            .iter()
            .filter(|l| l.contains("worker started "))
            .map(|l| num(l, "pid") as u32)
            .collect()
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill master: {}", std::io::Error::last_os_error());
    }

    /// SIGHUP, then waits for `reload done generation=N`; returns the new serving pids.
    pub fn reload(&mut self, generation: u64) -> Vec<u32> {
        self.signal(libc::SIGHUP);
        self.expect(&format!("reload done generation={generation} "));
        self.serving()
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
            for pid in self.started_pids() {
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
    let load = loadgen::start(cfg);
    assert!(
        load.wait_for_requests(200, DEADLINE),
        "{mode} load started: {}",
        load.snapshot()
    );
    load
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
    let folder = dir.join("master-process");
    let sockets: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    match sockets.as_slice() {
        [one] => one.clone(),
        _ => panic!(
            "expected one control socket in {}: {sockets:?}",
            folder.display()
        ),
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
    /// The master's control socket: the one socket in its control folder
    /// (`$XDG_RUNTIME_DIR/master-process/NAME.sock`).
    pub fn control_path(&self) -> PathBuf {
        control_socket_in(self.dir())
    }

    /// Runs `master-process <args>` (a control command) against this master, to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_bounded(control_command(self.dir(), args), DEADLINE)
    }

    /// The master's status, asked over the control socket directly (no client process: cheap
    /// enough to sample in a loop).
    pub fn status(&self) -> Vec<Record> {
        records(&control_exchange(
            &self.control_path(),
            b"MP/1 status\n",
            DEADLINE,
        ))
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
