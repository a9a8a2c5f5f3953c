//! Upgrading the master in place: the same pid, the same listening sockets, the running
//! workers adopted (not restarted), then a normal reload.
//!
//! 1. **Preflight.** The new executable runs once, in its own process group, with the
//!    master's real arguments and environment and [`env::PREFLIGHT`] set: it must accept
//!    them (parse every option as it would on resuming), answer `ok` on stdout and exit 0
//!    within [`PREFLIGHT_TIMEOUT`]. If it does not, the upgrade fails with its first error
//!    line and the old master carries on.
//! 2. **Handover.** The master writes a [`Handover`] (the supervisor's [`Snapshot`], and
//!    which descriptor is which: listeners, control socket, notify socket, the client
//!    waiting for the upgrade, and the old executable) into [`env::UPGRADE_STATE`], clears
//!    close-on-exec on those descriptors, blocks its signals (pending ones wait for the new
//!    image), and execs the new executable with its own arguments. If `exec` fails, it
//!    restores everything and carries on.
//! 3. **Resume.** The new image sees [`env::UPGRADE_STATE`], adopts every descriptor and
//!    worker (they are still its children: `exec` keeps the pid), unblocks the signals and
//!    starts a reload.
//! 4. **Or roll back.** Whatever stops the new image before its loop runs (an argument it
//!    rejects, a handover it cannot read, a descriptor missing), it execs the old executable
//!    (kept open as a descriptor) with the same handover and [`env::UPGRADE_ROLLBACK`] saying
//!    why: the old master resumes with the same pid, sockets and workers, and tells the
//!    waiting client that the upgrade failed, and why.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::Record;
use crate::env;
use crate::signals::MASTER_SIGNALS;
use crate::socket::file::{Identity, SocketFile};
use crate::socket::{Listener, ListenerSpec, Origin, is_open};
use crate::supervisor::{
    Failure, FailureKind, ReloadCounts, ReloadOutcome, Serving, SlotSnapshot, Snapshot,
    StateSnapshot, WorkerSnapshot,
};
use crate::worker::{Pid, Role};

/// How long the new executable may take to answer the preflight.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// The version of the handover format.
const FORMAT: u32 = 2;
/// The most a preflight may print that we keep.
const PREFLIGHT_OUTPUT: usize = 16 * 1024;

/// A listening socket handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedListener {
    /// The descriptor.
    pub fd: RawFd,
    /// Its name, if one was given.
    pub name: Option<String>,
    /// Where it came from (whether it can be bound again).
    pub origin: Origin,
    /// The unix socket file we created for it.
    pub file: Option<Identity>,
    /// The `O_NONBLOCK` mode its adopters fixed, if any.
    pub nonblock: Option<bool>,
}

/// The adoption filter's notify fd of a worker tree, handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedNotifier {
    /// The worker heading the tree, unless it is gone (what it left behind lives on).
    pub worker: Option<Pid>,
    /// The descriptor.
    pub fd: RawFd,
}

/// The control socket handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedControl {
    /// The descriptor.
    pub fd: RawFd,
    /// Its socket file.
    pub file: Identity,
}

/// The notify socket handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedNotify {
    /// The descriptor.
    pub fd: RawFd,
    /// Its private folder.
    pub dir: PathBuf,
    /// Its path.
    pub path: PathBuf,
}

/// Everything a master hands to its next image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The listening sockets, in order.
    pub listeners: Vec<HandedListener>,
    /// The control socket.
    pub control: Option<HandedControl>,
    /// The notify socket.
    pub notify: HandedNotify,
    /// The adoption filters' notify fds.
    pub notifiers: Vec<HandedNotifier>,
    /// The control client waiting for the upgrade's outcome.
    pub client: Option<RawFd>,
    /// The old executable, to go back to if the new image cannot resume.
    pub old_exe: Option<RawFd>,
    /// The supervisor's state.
    pub snapshot: Snapshot,
}

/// What a resuming image owns once it took over a [`Handover`].
#[derive(Debug)]
pub struct Adopted {
    /// The listening sockets, in order.
    pub listeners: Vec<Listener>,
    /// The control socket and its file.
    pub control: Option<(OwnedFd, SocketFile)>,
    /// The notify socket.
    pub notify: (OwnedFd, HandedNotify),
    /// The `O_NONBLOCK` mode of each listener's adopters, by listener.
    pub nonblock: Vec<Option<bool>>,
    /// The adoption filters' notify fds, with the worker heading each tree.
    pub notifiers: Vec<(Option<Pid>, OwnedFd)>,
    /// The control client waiting for the upgrade's outcome.
    pub client: Option<OwnedFd>,
    /// The previous executable, the way back until this image has resumed.
    pub old_exe: Option<OwnedFd>,
    /// The supervisor's state.
    pub snapshot: Snapshot,
}

impl Handover {
    /// The descriptors that must survive the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        fds.extend(self.control.as_ref().map(|c| c.fd));
        fds.push(self.notify.fd);
        fds.extend(self.notifiers.iter().map(|n| n.fd));
        fds.extend(self.client);
        fds.extend(self.old_exe);
        fds
    }

    /// Takes ownership of the descriptors this handover names, in the image that resumes.
    ///
    /// # Errors
    /// A descriptor it names is not open, or is named twice: nothing is taken.
    pub fn take_fds(self) -> Result<Adopted, String> {
        let fds = self.fds();
        if let Some(fd) = fds.iter().find(|&&fd| !is_open(fd)) {
            return Err(format!("handed-over descriptor {fd} is not open"));
        }
        let mut sorted = fds.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err("a descriptor is handed over twice".into());
        }
        // SAFETY: the previous image of this process left these descriptors open across
        // exec for this image to own, and named each once (checked above); nothing else in
        // this image refers to them, and `self` is consumed, so this runs once.
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Adopted {
            old_exe: self.old_exe.map(own),
            nonblock: self.listeners.iter().map(|l| l.nonblock).collect(),
            notifiers: self
                .notifiers
                .iter()
                .map(|n| (n.worker, own(n.fd)))
                .collect(),
            listeners: self
                .listeners
                .into_iter()
                .map(|l| {
                    Listener::adopt(l.name, own(l.fd), l.origin)
                        .with_file(l.file.map(SocketFile::adopt))
                })
                .collect(),
            control: self.control.map(|c| (own(c.fd), SocketFile::adopt(c.file))),
            notify: (own(self.notify.fd), self.notify),
            client: self.client.map(own),
            snapshot: self.snapshot,
        })
    }

    /// The handover as text: control records, one per line.
    pub fn encode(&self) -> String {
        let s = &self.snapshot;
        let mut head = Record::new("handover")
            .with("format", FORMAT)
            .with("generation", s.generation)
            .with("reloads_done", s.reloads.done)
            .with("reloads_failed", s.reloads.failed);
        head = with_fd(head, "client_fd", self.client);
        head = with_fd(head, "old_exe_fd", self.old_exe);
        let mut lines = vec![
            head,
            Record::new("notify")
                .with("fd", self.notify.fd)
                .with("dir", self.notify.dir.display())
                .with("path", self.notify.path.display()),
        ];
        if let Some(c) = &self.control {
            lines.push(with_file(
                Record::new("control").with("fd", c.fd),
                Some(&c.file),
            ));
        }
        if let Some(r) = &s.last_reload {
            lines.push(crate::control::outcome_record("last_reload", r));
        }
        for l in &self.listeners {
            let mut r = Record::new("listener").with("fd", l.fd);
            if let Some(name) = &l.name {
                r = r.with("name", name);
            }
            r = r.with("origin", l.origin.name());
            if let Some(spec) = l.origin.spec() {
                r = r.with("spec", spec);
            }
            if let Some(nonblock) = l.nonblock {
                r = r.with("nonblock", nonblock);
            }
            lines.push(with_file(r, l.file.as_ref()));
        }
        for n in &self.notifiers {
            let r = Record::new("notifier").with("fd", n.fd);
            lines.push(match n.worker {
                Some(worker) => r.with("worker", worker),
                None => r,
            });
        }
        for w in &s.workers {
            let mut r = Record::new("worker")
                .with("pid", w.pid)
                .with("index", w.index)
                .with("generation", w.generation)
                .with("role", w.role.name())
                .with("age_ms", w.age.as_millis());
            r = match w.state {
                StateSnapshot::Starting {
                    deadline_in,
                    ready_in,
                } => {
                    let r = r
                        .with("state", "starting")
                        .with("deadline_in_ms", deadline_in.as_millis());
                    match ready_in {
                        Some(d) => r.with("ready_in_ms", d.as_millis()),
                        None => r,
                    }
                }
                StateSnapshot::Ready => r.with("state", "ready"),
                StateSnapshot::Stopping { kill_in } => r
                    .with("state", "stopping")
                    .with("kill_in_ms", kill_in.as_millis()),
                StateSnapshot::Killed => r.with("state", "killed"),
            };
            lines.push(r);
        }
        for slot in &s.slots {
            let mut r = Record::new("slot")
                .with("crashes", slot.crashes)
                .with("restarts", slot.restarts);
            if let Some(d) = slot.last_start_ago {
                r = r.with("last_start_ms", d.as_millis());
            }
            if let Some(d) = slot.restart_in {
                r = r.with("restart_in_ms", d.as_millis());
            }
            lines.push(r);
        }
        lines
            .iter()
            .map(Record::encode)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads a handover written by [`Handover::encode`].
    ///
    /// # Errors
    /// Anything missing, malformed or unknown: a resuming image must not guess.
    pub fn decode(text: &str) -> Result<Handover, String> {
        let records = text
            .lines()
            .map(Record::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let (head, rest) = records.split_first().ok_or("empty handover")?;
        if head.kind != "handover" {
            return Err("no handover record".into());
        }
        let format: u32 = num(head, "format")?;
        if format != FORMAT {
            return Err(format!(
                "handover format {format}, this master reads {FORMAT}"
            ));
        }
        let mut snapshot = Snapshot {
            generation: num(head, "generation")?,
            reloads: ReloadCounts {
                done: num(head, "reloads_done")?,
                failed: num(head, "reloads_failed")?,
            },
            ..Snapshot::default()
        };
        let mut listeners = Vec::new();
        let mut notifiers = Vec::new();
        let mut control = None;
        let mut notify = None;
        for r in rest {
            match r.kind.as_str() {
                "notify" => {
                    notify = Some(HandedNotify {
                        fd: num(r, "fd")?,
                        dir: PathBuf::from(text_field(r, "dir")?),
                        path: PathBuf::from(text_field(r, "path")?),
                    });
                }
                "control" => {
                    control = Some(HandedControl {
                        fd: num(r, "fd")?,
                        file: file(r)?.ok_or("control record: no path")?,
                    });
                }
                "last_reload" => snapshot.last_reload = Some(outcome(r)?),
                "listener" => listeners.push(HandedListener {
                    fd: num(r, "fd")?,
                    name: r.get("name").map(str::to_string),
                    origin: {
                        let spec = r
                            .get("spec")
                            .map(str::parse::<ListenerSpec>)
                            .transpose()
                            .map_err(|e| format!("listener record: {e}"))?;
                        let name = text_field(r, "origin")?;
                        Origin::from_name(name, spec)
                            .ok_or_else(|| format!("listener record: origin {name:?}"))?
                    },
                    file: file(r)?,
                    nonblock: opt_num(r, "nonblock")?,
                }),
                "notifier" => notifiers.push(HandedNotifier {
                    worker: opt_num(r, "worker")?,
                    fd: num(r, "fd")?,
                }),
                "worker" => snapshot.workers.push(worker(r)?),
                "slot" => snapshot.slots.push(SlotSnapshot {
                    crashes: num(r, "crashes")?,
                    restarts: num(r, "restarts")?,
                    last_start_ago: millis(r, "last_start_ms")?,
                    restart_in: millis(r, "restart_in_ms")?,
                }),
                other => return Err(format!("unknown handover record {other:?}")),
            }
        }
        Ok(Handover {
            listeners,
            control,
            notify: notify.ok_or("no notify record")?,
            notifiers,
            client: opt_num(head, "client_fd")?,
            old_exe: opt_num(head, "old_exe_fd")?,
            snapshot,
        })
    }
}

fn with_fd(r: Record, key: &str, fd: Option<RawFd>) -> Record {
    match fd {
        Some(fd) => r.with(key, fd),
        None => r,
    }
}

fn with_file(r: Record, file: Option<&Identity>) -> Record {
    match file {
        Some(f) => r
            .with("path", f.path.display())
            .with("dev", f.dev)
            .with("ino", f.ino),
        None => r,
    }
}

fn file(r: &Record) -> Result<Option<Identity>, String> {
    match r.get("path") {
        None => Ok(None),
        Some(path) => Ok(Some(Identity {
            path: PathBuf::from(path),
            dev: num(r, "dev")?,
            ino: num(r, "ino")?,
        })),
    }
}

fn worker(r: &Record) -> Result<WorkerSnapshot, String> {
    let role = text_field(r, "role")?;
    let state = match text_field(r, "state")? {
        "starting" => StateSnapshot::Starting {
            deadline_in: millis(r, "deadline_in_ms")?.ok_or("starting worker: no deadline")?,
            ready_in: millis(r, "ready_in_ms")?,
        },
        "ready" => StateSnapshot::Ready,
        "stopping" => StateSnapshot::Stopping {
            kill_in: millis(r, "kill_in_ms")?.ok_or("stopping worker: no deadline")?,
        },
        "killed" => StateSnapshot::Killed,
        other => return Err(format!("unknown worker state {other:?}")),
    };
    Ok(WorkerSnapshot {
        pid: num(r, "pid")?,
        index: num(r, "index")?,
        generation: num(r, "generation")?,
        role: Role::from_name(role).ok_or_else(|| format!("unknown role {role:?}"))?,
        age: Duration::from_millis(num(r, "age_ms")?),
        state,
    })
}

fn outcome(r: &Record) -> Result<ReloadOutcome, String> {
    let serving = text_field(r, "serving")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let bad = || format!("last_reload record: bad serving {s:?}");
            let (index, rest) = s.split_once(':').ok_or_else(bad)?;
            let (pid, generation) = rest.split_once('@').ok_or_else(bad)?;
            Ok(Serving {
                index: index.parse().map_err(|_| bad())?,
                pid: pid.parse().map_err(|_| bad())?,
                generation: generation.parse().map_err(|_| bad())?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ReloadOutcome {
        generation: num(r, "generation")?,
        failure: match r.get("reason") {
            None => None,
            Some(reason) => {
                // A master from before failure kinds (the same format) wrote none: its last
                // failure counts as a worker that exited.
                let kind = match r.get("failure_kind") {
                    None => FailureKind::Exited,
                    Some(kind) => FailureKind::from_name(kind)
                        .ok_or_else(|| format!("unknown failure kind {kind:?}"))?,
                };
                Some(Failure {
                    kind,
                    reason: reason.to_string(),
                })
            }
        },
        took: Duration::from_millis(num(r, "took_ms")?),
        serving,
    })
}

fn text_field<'a>(r: &'a Record, key: &str) -> Result<&'a str, String> {
    r.get(key)
        .ok_or_else(|| format!("{} record: missing {key}", r.kind))
}

fn num<T: std::str::FromStr>(r: &Record, key: &str) -> Result<T, String> {
    text_field(r, key)?
        .parse()
        .map_err(|_| format!("{} record: bad {key}", r.kind))
}

fn opt_num<T: std::str::FromStr>(r: &Record, key: &str) -> Result<Option<T>, String> {
    r.get(key).map(|_| num(r, key)).transpose()
}

fn millis(r: &Record, key: &str) -> Result<Option<Duration>, String> {
    Ok(opt_num(r, key)?.map(Duration::from_millis))
}

/// If this process runs as a preflight check of `config` (it got this far: the arguments
/// and environment are accepted), says so and exits; otherwise does nothing.
pub fn preflight_if_requested(config: &Config) {
    if std::env::var_os(env::PREFLIGHT).is_some() {
        println!(
            "ok master-process {} ({} workers)",
            env!("CARGO_PKG_VERSION"),
            config.supervisor.workers
        );
        std::process::exit(0);
    }
}

/// Whether the preflight check runs for a master whose sockets came from socket
/// activation: the check cannot receive them, and must not miss them.
pub fn preflight_activated() -> bool {
    std::env::var(env::PREFLIGHT).is_ok_and(|v| v == "activated")
}

/// Runs `program` with `argv` (its `argv[0]` and arguments: the master's own) as a
/// preflight check; `Ok` with its answer if it accepted them.
///
/// # Errors
/// Why it does not start: its first error line, its exit, or no answer in time.
pub fn preflight(program: &Path, argv: &[OsString], activated: bool) -> Result<String, String> {
    let mut cmd = Command::new(program);
    if let Some((argv0, args)) = argv.split_first() {
        cmd.arg0(argv0).args(args);
    }
    for var in [
        env::UPGRADE_STATE,
        env::UPGRADE_FROM,
        env::UPGRADE_ROLLBACK,
        env::LISTEN_FDS,
        env::LISTEN_PID,
        env::LISTEN_FDNAMES,
        env::NOTIFY_SOCKET,
    ] {
        cmd.env_remove(var);
    }
    cmd.env(env::PREFLIGHT, if activated { "activated" } else { "1" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    let outcome = watch_preflight(&mut child);
    // Whatever happened, nothing of the check may outlive it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait().map_err(|e| e.to_string())?;
    let (stdout, stderr) = outcome?;
    let answer = stdout.trim().to_string();
    if status.success() && answer.starts_with("ok ") {
        return Ok(answer);
    }
    let why = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("master-process: ").to_string())
        .unwrap_or_else(|| format!("{status}"));
    Err(format!("{} refuses to start: {why}", program.display()))
}

/// Reads the preflight's output until it exits, at most [`PREFLIGHT_TIMEOUT`]; a signal
/// reaching the master meanwhile is not a timeout.
fn watch_preflight(child: &mut std::process::Child) -> Result<(String, String), String> {
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + PREFLIGHT_TIMEOUT;
    let pidfd = crate::procfs::pidfd_open(child.id()).map_err(|e| e.to_string())?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "it did not answer within {}",
                humantime::format_duration(PREFLIGHT_TIMEOUT)
            ));
        }
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        for pipe in [out.as_ref().map(AsFd::as_fd), err.as_ref().map(AsFd::as_fd)]
            .into_iter()
            .flatten()
        {
            fds.push(PollFd::new(pipe, PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Err(Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(format!("cannot watch it: {e}")),
            Ok(_) => {}
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        // After the exit, this reads what is left in the pipes (without waiting for what
        // a descendant might still write).
        drain(&mut out, &mut stdout);
        drain(&mut err, &mut stderr);
        if exited {
            break;
        }
    }
    Ok((
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

/// Reads what `pipe` has now into `buf` (bounded); drops the pipe at its end.
fn drain<R: Read + AsFd>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    let Some(p) = pipe.as_mut() else { return };
    let _ = nix::fcntl::fcntl(
        p.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut chunk = [0u8; 4096];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                let room = PREFLIGHT_OUTPUT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The executable's identity on disk, to notice that it was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ExeIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> Option<ExeIdentity> {
        std::fs::metadata(path).ok().map(|m| ExeIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// Opens our own executable, to go back to it if the next image cannot resume.
pub fn open_self() -> Option<OwnedFd> {
    std::fs::File::open("/proc/self/exe")
        .ok()
        .map(OwnedFd::from)
}

/// Sets or clears close-on-exec on `fds`.
///
/// # Errors
/// The first `fcntl` that fails.
pub fn set_cloexec(fds: &[RawFd], on: bool) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    for &fd in fds {
        // SAFETY: the caller passes descriptors this process holds open for the call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let flag = if on {
            FdFlag::FD_CLOEXEC
        } else {
            FdFlag::empty()
        };
        fcntl(fd, FcntlArg::F_SETFD(flag))?;
    }
    Ok(())
}

/// Blocks (or unblocks) the signals the master handles, around the exec: the ones that
/// arrive meanwhile stay pending for the next image instead of killing the process.
pub fn block_signals(block: bool) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut set = SigSet::empty();
    for s in MASTER_SIGNALS {
        if let Ok(sig) = Signal::try_from(s.number()) {
            set.add(sig);
        }
    }
    let how = if block {
        SigmaskHow::SIG_BLOCK
    } else {
        SigmaskHow::SIG_UNBLOCK
    };
    let _ = sigprocmask(how, Some(&set), None);
}

/// Execs `program` with our arguments and `handover` in the environment. Returns only if
/// the exec failed.
pub fn exec(program: &Path, argv: &[OsString], handover: &Handover) -> std::io::Error {
    let mut cmd = Command::new(program);
    if let Some((argv0, args)) = argv.split_first() {
        cmd.arg0(argv0).args(args);
    }
    cmd.env(env::UPGRADE_STATE, handover.encode())
        .env(env::UPGRADE_ARGV, encode_argv(argv))
        .env_remove(env::PREFLIGHT)
        .env_remove(env::UPGRADE_ROLLBACK);
    match handover.old_exe {
        Some(fd) => cmd.env(env::UPGRADE_FROM, fd.to_string()),
        None => cmd.env_remove(env::UPGRADE_FROM),
    };
    cmd.exec()
}

/// Whether this image resumes from a handover.
pub fn resuming() -> bool {
    std::env::var_os(env::UPGRADE_STATE).is_some()
}

/// Why the previous image came back to this one, if it did (this image is the old master,
/// back after a failed upgrade).
pub fn rolled_back() -> Option<String> {
    std::env::var(env::UPGRADE_ROLLBACK).ok()
}

/// If this image was meant to resume from a handover but cannot (`why`), goes back to the
/// previous executable with the same handover: never returns if it could. Does nothing when
/// this image does not resume, or is itself the way back.
pub fn abandon_if_resuming(why: &str) {
    let Ok(state) = std::env::var(env::UPGRADE_STATE) else {
        return;
    };
    if rolled_back().is_some() {
        eprintln!("master-process: the previous master cannot resume either: {why}");
        return;
    }
    let Some(fd) = std::env::var(env::UPGRADE_FROM)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|&fd| is_open(fd))
    else {
        eprintln!("master-process: cannot resume after the upgrade ({why}), and no way back");
        return;
    };
    eprintln!(
        "master-process: error: cannot resume after the upgrade ({why}); going back to the \
         previous master"
    );
    // The previous image's own arguments: this image may have been started with others.
    let argv: Vec<OsString> = std::env::var(env::UPGRADE_ARGV)
        .ok()
        .and_then(|v| decode_argv(&v))
        .unwrap_or_else(|| std::env::args_os().collect());
    let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
    if let Some((argv0, args)) = argv.split_first() {
        cmd.arg0(argv0).args(args);
    }
    cmd.env(env::UPGRADE_STATE, state)
        .env(env::UPGRADE_ROLLBACK, why)
        .env_remove(env::UPGRADE_FROM)
        .env_remove(env::UPGRADE_ARGV);
    let err = cmd.exec();
    eprintln!("master-process: cannot go back to the previous master: {err}");
}

/// Arguments as one environment value: each percent-encoded (any byte but a few safe ones),
/// separated by spaces.
fn encode_argv(argv: &[OsString]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"._/=:+,@-".contains(&b);
    argv.iter()
        .map(|a| {
            a.as_bytes()
                .iter()
                .map(|&b| {
                    if safe(b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments [`encode_argv`] wrote; `None` if the value is not such a list.
fn decode_argv(text: &str) -> Option<Vec<OsString>> {
    use std::os::unix::ffi::OsStringExt;
    text.split(' ')
        .map(|word| {
            let bytes = word.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            Some(OsString::from_vec(out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        Handover {
            listeners: vec![
                HandedListener {
                    fd: 3,
                    name: Some("web".into()),
                    origin: Origin::Bound("web=127.0.0.1:8080".parse().unwrap()),
                    file: None,
                    nonblock: Some(true),
                },
                HandedListener {
                    fd: 4,
                    name: None,
                    origin: Origin::Activated,
                    file: Some(Identity {
                        path: "/run/a b.sock".into(),
                        dev: 2049,
                        ino: 77,
                    }),
                    nonblock: None,
                },
            ],
            control: Some(HandedControl {
                fd: 5,
                file: Identity {
                    path: "/run/master-process/web.sock".into(),
                    dev: 20,
                    ino: 30,
                },
            }),
            notify: HandedNotify {
                fd: 6,
                dir: "/tmp/master-process.1.0".into(),
                path: "/tmp/master-process.1.0/notify".into(),
            },
            notifiers: vec![
                HandedNotifier {
                    worker: Some(1234),
                    fd: 9,
                },
                HandedNotifier {
                    worker: None,
                    fd: 10,
                },
            ],
            client: Some(7),
            old_exe: Some(8),
            snapshot: Snapshot {
                generation: 4,
                reloads: ReloadCounts { done: 3, failed: 1 },
                last_reload: Some(ReloadOutcome {
                    generation: 4,
                    failure: Some(Failure {
                        kind: FailureKind::Exited,
                        reason: "worker 0 exited".into(),
                    }),
                    took: Duration::from_millis(120),
                    serving: vec![Serving {
                        index: 0,
                        pid: 1234,
                        generation: 3,
                    }],
                }),
                workers: vec![
                    WorkerSnapshot {
                        pid: 1234,
                        index: 0,
                        generation: 4,
                        role: Role::Serving,
                        age: Duration::from_millis(5000),
                        state: StateSnapshot::Ready,
                    },
                    WorkerSnapshot {
                        pid: 1240,
                        index: 1,
                        generation: 4,
                        role: Role::Serving,
                        age: Duration::from_millis(10),
                        state: StateSnapshot::Starting {
                            deadline_in: Duration::from_secs(59),
                            ready_in: Some(Duration::from_millis(290)),
                        },
                    },
                ],
                slots: vec![SlotSnapshot {
                    crashes: 2,
                    restarts: 5,
                    last_start_ago: Some(Duration::from_millis(5000)),
                    restart_in: None,
                }],
            },
        }
    }

    #[test]
    fn a_handover_survives_encoding() {
        let h = sample();
        assert_eq!(Handover::decode(&h.encode()), Ok(h.clone()));
        assert_eq!(h.fds(), vec![3, 4, 5, 6, 9, 10, 7, 8]);
    }

    #[test]
    fn a_foreign_or_damaged_handover_is_refused() {
        assert!(Handover::decode("").is_err());
        assert!(
            Handover::decode("handover format=1")
                .unwrap_err()
                .contains("format 1")
        );
        assert!(Handover::decode("something else").is_err());
        let text = sample().encode();
        for (from, to) in [
            ("state=ready", "state=dozing"),
            ("role=serving", "role=boss"),
            ("origin=activated", "origin=stolen"),
            ("deadline_in_ms=59000", "deadline_in_ms=soon"),
        ] {
            let damaged = text.replacen(from, to, 1);
            assert_ne!(damaged, text, "{from}");
            assert!(Handover::decode(&damaged).is_err(), "{to} was accepted");
        }
    }

    #[test]
    fn a_handover_from_a_master_before_failure_kinds_is_taken() {
        let mut h = sample();
        fn failure(h: &mut Handover) -> &mut FailureKind {
            let last = h.snapshot.last_reload.as_mut().unwrap();
            &mut last.failure.as_mut().unwrap().kind
        }
        *failure(&mut h) = FailureKind::NotReady;
        let text = h.encode();
        let old: Vec<String> = (text.lines())
            .map(|line| {
                let words: Vec<&str> = (line.split(' '))
                    .filter(|w| !w.starts_with("failure_kind="))
                    .collect();
                words.join(" ")
            })
            .collect();
        let old = old.join("\n");
        assert_ne!(old, text);
        *failure(&mut h) = FailureKind::Exited;
        assert_eq!(Handover::decode(&old), Ok(h));
    }

    #[test]
    fn arguments_survive_the_environment() {
        use std::os::unix::ffi::OsStringExt;
        let argv: Vec<OsString> = vec![
            "/usr/bin/master-process".into(),
            "-l".into(),
            "web=[::]:8080".into(),
            "a b %".into(),
            "".into(),
            OsString::from_vec(vec![0xff, b'\n']),
        ];
        assert_eq!(decode_argv(&encode_argv(&argv)), Some(argv));
        assert_eq!(decode_argv("%zz"), None);
    }

    #[test]
    fn descriptors_that_are_not_open_are_not_taken() {
        let mut h = sample();
        h.listeners.clear();
        h.notifiers.clear();
        h.control = None;
        h.client = None;
        h.old_exe = None;
        h.notify.fd = 1_000_000;
        assert!(h.take_fds().unwrap_err().contains("not open"));
    }
}
