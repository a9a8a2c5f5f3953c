//! Upgrading the master in place: the same pid, the same listening sockets, the running
//! workers adopted (not restarted), then a normal reload.
//!
//! 1. **Preflight.** The new executable is run once with [`PREFLIGHT_ENV`] set: it must
//!    answer (print `ok` and exit 0) within [`PREFLIGHT_TIMEOUT`]; if it cannot, the old
//!    master carries on.
//! 2. **Handover.** The master writes its state (the supervisor's [`Snapshot`], and which
//!    descriptor is which: listeners, control socket, notify socket, the client waiting for
//!    the upgrade, and the old executable) into [`STATE_ENV`], clears close-on-exec on those
//!    descriptors, blocks its signals (pending ones wait for the new image), and execs the
//!    new executable with its own arguments. If `exec` fails, it restores everything and
//!    carries on.
//! 3. **Resume.** The new image sees [`STATE_ENV`], adopts every descriptor and worker
//!    (they are still its children: `exec` keeps the pid), unblocks the signals and starts a
//!    reload. If it cannot read the state, it execs the old executable (kept open as a
//!    descriptor) with the same state: the old master resumes, the upgrade failed.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::control::Record;
use crate::supervisor::{Snapshot, WorkerSnapshot};
use crate::worker::Role;

/// Holds the state handed to the master's next image.
pub const STATE_ENV: &str = "__MASTER_PROCESS_UPGRADE";
/// Set when the master runs a new executable to check that it starts.
pub const PREFLIGHT_ENV: &str = "__MASTER_PROCESS_PREFLIGHT";
/// The descriptor of the previous executable, for the way back.
pub const FROM_ENV: &str = "__MASTER_PROCESS_UPGRADE_FROM";
/// How long the new executable may take to answer the preflight.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// The version of the handover format.
const FORMAT: u32 = 1;

/// A listening socket handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFd {
    /// The descriptor.
    pub fd: RawFd,
    /// Its `LISTEN_FDNAMES` name.
    pub name: String,
    /// The unix socket file we created for it: path, device, inode.
    pub file: Option<(PathBuf, u64, u64)>,
}

/// Everything a master hands to its next image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The listening sockets, in order.
    pub listeners: Vec<ListenerFd>,
    /// The control socket: descriptor, path, device, inode.
    pub control: Option<(RawFd, PathBuf, u64, u64)>,
    /// The notify socket: descriptor, its private directory, its path.
    pub notify: (RawFd, PathBuf, PathBuf),
    /// The control client waiting for the upgrade's outcome.
    pub client: Option<RawFd>,
    /// The old executable, to go back to if the new image cannot resume.
    pub old_exe: Option<RawFd>,
    /// This handover is already a way back: do not go back again.
    pub rollback: bool,
    /// The supervisor's state.
    pub snapshot: Snapshot,
}

/// The descriptors of a [`Handover`], owned by the image that resumes.
#[derive(Debug)]
pub struct HandedFds {
    /// The listeners, in order.
    pub listeners: Vec<OwnedFd>,
    /// The control socket.
    pub control: Option<OwnedFd>,
    /// The notify socket.
    pub notify: OwnedFd,
    /// The client waiting for the upgrade's outcome.
    pub client: Option<OwnedFd>,
    /// The previous executable.
    pub old_exe: Option<OwnedFd>,
}

impl Handover {
    /// Takes ownership of the descriptors this handover names. Call it once, in the image
    /// that resumes, after checking that they are open ([`is_open`]).
    pub fn take_fds(&self) -> HandedFds {
        // SAFETY: the previous image of this process left these descriptors open across
        // exec for this image to own, and named them in the handover; nothing else in this
        // image refers to them, and this is called once.
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        HandedFds {
            listeners: self.listeners.iter().map(|l| own(l.fd)).collect(),
            control: self.control.as_ref().map(|c| own(c.0)),
            notify: own(self.notify.0),
            client: self.client.map(own),
            old_exe: self.old_exe.map(own),
        }
    }

    /// The descriptors that must survive the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        fds.extend(self.control.as_ref().map(|c| c.0));
        fds.push(self.notify.0);
        fds.extend(self.client);
        fds.extend(self.old_exe);
        fds
    }

    /// The handover as text (control records, one per line).
    pub fn encode(&self) -> String {
        let s = &self.snapshot;
        let mut head = Record::new("handover")
            .with("format", FORMAT)
            .with("generation", s.generation)
            .with("reloads_done", s.reloads.0)
            .with("reloads_failed", s.reloads.1)
            .with("notify_fd", self.notify.0)
            .with("notify_dir", self.notify.1.display())
            .with("notify_path", self.notify.2.display())
            .with("rollback", self.rollback);
        if let Some((fd, path, dev, ino)) = &self.control {
            head = head
                .with("control_fd", fd)
                .with("control_path", path.display())
                .with("control_dev", dev)
                .with("control_ino", ino);
        }
        if let Some(fd) = self.client {
            head = head.with("client_fd", fd);
        }
        if let Some(fd) = self.old_exe {
            head = head.with("old_exe_fd", fd);
        }
        let mut lines = vec![head];
        if let Some((generation, failure, took)) = &s.last_reload {
            let mut r = Record::new("last_reload")
                .with("generation", generation)
                .with("took_ms", took.as_millis());
            if let Some(f) = failure {
                r = r.with("failure", f);
            }
            lines.push(r);
        }
        for l in &self.listeners {
            let mut r = Record::new("listener")
                .with("fd", l.fd)
                .with("name", &l.name);
            if let Some((path, dev, ino)) = &l.file {
                r = r
                    .with("path", path.display())
                    .with("dev", dev)
                    .with("ino", ino);
            }
            lines.push(r);
        }
        for w in &s.workers {
            let mut r = Record::new("worker")
                .with("pid", w.pid)
                .with("index", w.index)
                .with("generation", w.generation)
                .with("role", role_name(w.role))
                .with("state", w.state)
                .with("age_ms", w.age.as_millis());
            if let Some(d) = w.deadline_in {
                r = r.with("deadline_in_ms", d.as_millis());
            }
            lines.push(r);
        }
        for (crashes, restarts, last_start, restart_in) in &s.slots {
            let mut r = Record::new("slot")
                .with("crashes", crashes)
                .with("restarts", restarts);
            if let Some(d) = last_start {
                r = r.with("last_start_ms", d.as_millis());
            }
            if let Some(d) = restart_in {
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
    pub fn decode(text: &str) -> Result<Handover, String> {
        let records = text
            .lines()
            .map(Record::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let head = records
            .first()
            .filter(|r| r.kind == "handover")
            .ok_or("no handover record")?;
        let format: u32 = num(head, "format")?;
        if format != FORMAT {
            return Err(format!(
                "handover format {format}, this master reads {FORMAT}"
            ));
        }
        let path =
            |r: &Record, k: &str| r.get(k).map(PathBuf::from).ok_or_else(|| format!("no {k}"));
        let control = match head.get("control_fd") {
            Some(_) => Some((
                num(head, "control_fd")?,
                path(head, "control_path")?,
                num(head, "control_dev")?,
                num(head, "control_ino")?,
            )),
            None => None,
        };
        let opt = |k: &str| head.get(k).map(|_| num::<RawFd>(head, k)).transpose();
        let mut snapshot = Snapshot {
            generation: num(head, "generation")?,
            reloads: (num(head, "reloads_done")?, num(head, "reloads_failed")?),
            ..Snapshot::default()
        };
        let mut listeners = Vec::new();
        for r in &records[1..] {
            match r.kind.as_str() {
                "last_reload" => {
                    let took = Duration::from_millis(num(r, "took_ms")?);
                    snapshot.last_reload = Some((
                        num(r, "generation")?,
                        r.get("failure").map(str::to_string),
                        took,
                    ));
                }
                "listener" => listeners.push(ListenerFd {
                    fd: num(r, "fd")?,
                    name: r.get("name").unwrap_or_default().to_string(),
                    file: match r.get("path") {
                        Some(p) => Some((PathBuf::from(p), num(r, "dev")?, num(r, "ino")?)),
                        None => None,
                    },
                }),
                "worker" => snapshot.workers.push(WorkerSnapshot {
                    pid: num(r, "pid")?,
                    index: num(r, "index")?,
                    generation: num(r, "generation")?,
                    role: role_of(r.get("role").unwrap_or_default())?,
                    age: Duration::from_millis(num(r, "age_ms")?),
                    state: state_of(r.get("state").unwrap_or_default())?,
                    deadline_in: r
                        .get("deadline_in_ms")
                        .map(|_| num(r, "deadline_in_ms").map(Duration::from_millis))
                        .transpose()?,
                }),
                "slot" => {
                    let ms = |k: &str| {
                        r.get(k)
                            .map(|_| num(r, k).map(Duration::from_millis))
                            .transpose()
                    };
                    snapshot.slots.push((
                        num(r, "crashes")?,
                        num(r, "restarts")?,
                        ms("last_start_ms")?,
                        ms("restart_in_ms")?,
                    ));
                }
                other => return Err(format!("unknown handover record {other:?}")),
            }
        }
        Ok(Handover {
            listeners,
            control,
            notify: (
                num(head, "notify_fd")?,
                path(head, "notify_dir")?,
                path(head, "notify_path")?,
            ),
            client: opt("client_fd")?,
            old_exe: opt("old_exe_fd")?,
            rollback: head.get("rollback") == Some("true"),
            snapshot,
        })
    }
}

fn num<T: std::str::FromStr>(r: &Record, key: &str) -> Result<T, String> {
    r.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{} record: missing or bad {key}", r.kind))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Serving => "serving",
        Role::Candidate => "candidate",
        Role::Replacement => "replacement",
        Role::Retired => "retired",
    }
}

fn role_of(name: &str) -> Result<Role, String> {
    Ok(match name {
        "serving" => Role::Serving,
        "candidate" => Role::Candidate,
        "replacement" => Role::Replacement,
        "retired" => Role::Retired,
        other => return Err(format!("unknown role {other:?}")),
    })
}

fn state_of(name: &str) -> Result<&'static str, String> {
    ["starting", "ready", "stopping", "killed"]
        .into_iter()
        .find(|s| *s == name)
        .ok_or_else(|| format!("unknown worker state {name:?}"))
}

/// If this process runs as a preflight check, says so and exits; otherwise does nothing.
pub fn preflight_if_requested() {
    if std::env::var_os(PREFLIGHT_ENV).is_some() {
        println!("ok master-process {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
}

/// Runs `program` as a preflight check; `Ok` with its answer if it started and answered.
pub fn preflight(program: &Path) -> Result<String, String> {
    let mut child = Command::new(program)
        .env(PREFLIGHT_ENV, "1")
        .env_remove(STATE_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    let exited = crate::procfs::pidfd_open(pid).is_ok_and(|pidfd| {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(pidfd_borrow(&pidfd), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(PREFLIGHT_TIMEOUT).unwrap_or(PollTimeout::MAX);
        matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{} did not answer within {}",
            program.display(),
            humantime::format_duration(PREFLIGHT_TIMEOUT)
        ));
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() && answer.starts_with("ok ") {
        Ok(answer)
    } else {
        Err(format!(
            "{} does not start ({}; answered {answer:?})",
            program.display(),
            output.status
        ))
    }
}

fn pidfd_borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// The executable's identity on disk (device, inode, size, modification time), to notice
/// that it was replaced.
pub fn identity(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Opens our own executable, to go back to it if the next image cannot resume.
pub fn open_self() -> Option<OwnedFd> {
    std::fs::File::open("/proc/self/exe")
        .ok()
        .map(OwnedFd::from)
}

/// Sets or clears close-on-exec on `fds`.
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
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        set.add(s);
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
    cmd.env(STATE_ENV, handover.encode())
        .env_remove(PREFLIGHT_ENV);
    match handover.old_exe.filter(|_| !handover.rollback) {
        Some(fd) => cmd.env(FROM_ENV, fd.to_string()),
        None => cmd.env_remove(FROM_ENV),
    };
    cmd.exec()
}

/// Execs the previous executable (open as `fd`) with the handover `text`, marked as the way
/// back. Returns only if the exec failed.
pub fn exec_back(fd: RawFd, text: &str) -> std::io::Error {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
    if let Some((argv0, args)) = argv.split_first() {
        cmd.arg0(argv0).args(args);
    }
    let text = text.replacen("rollback=false", "rollback=true", 1);
    cmd.env(STATE_ENV, text).env_remove(FROM_ENV);
    cmd.exec()
}

/// Whether `fd` is open.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) on any number only reports whether it is open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_survives_encoding() {
        let h = Handover {
            listeners: vec![
                ListenerFd {
                    fd: 3,
                    name: "web".into(),
                    file: None,
                },
                ListenerFd {
                    fd: 4,
                    name: "unknown".into(),
                    file: Some(("/run/a b.sock".into(), 2049, 77)),
                },
            ],
            control: Some((5, "/run/master-process.sock".into(), 20, 30)),
            notify: (
                6,
                "/tmp/master-process.1.0".into(),
                "/tmp/master-process.1.0/notify".into(),
            ),
            client: Some(7),
            old_exe: Some(8),
            rollback: false,
            snapshot: Snapshot {
                generation: 4,
                reloads: (3, 1),
                last_reload: Some((
                    4,
                    Some("worker 0 exited".into()),
                    Duration::from_millis(120),
                )),
                workers: vec![WorkerSnapshot {
                    pid: 1234,
                    index: 0,
                    generation: 4,
                    role: Role::Serving,
                    age: Duration::from_millis(5000),
                    state: "ready",
                    deadline_in: None,
                }],
                slots: vec![(2, 5, Some(Duration::from_millis(5000)), None)],
            },
        };
        assert_eq!(Handover::decode(&h.encode()), Ok(h.clone()));
        assert_eq!(h.fds(), vec![3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_foreign_handover_is_refused() {
        assert!(Handover::decode("").is_err());
        assert!(
            Handover::decode("handover format=2")
                .unwrap_err()
                .contains("format 2")
        );
        assert!(Handover::decode("something else").is_err());
    }
}
