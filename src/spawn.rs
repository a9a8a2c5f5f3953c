//! Starting a worker: the only code that runs between `fork` and `exec`.
//!
//! A worker is started in two steps, so that `LISTEN_PID` is exactly the worker's pid:
//!
//! 1. The master forks and execs **itself** (`/proc/self/exe`) with [`env::EXEC`] set. Between
//!    fork and exec, in this order, the child puts itself in its own process group (std does
//!    that before any `pre_exec` step), installs the adoption filter if the master adopts
//!    binds ([`crate::adopt`]), has its listeners mapped to fds 3, 4, ... (`command-fds`;
//!    every other master fd becomes close-on-exec), and then (see [`child_setup`]) resets
//!    every signal disposition to default and empties its signal mask, takes the `--user`
//!    credentials, asks for SIGKILL when the master dies (`PR_SET_PDEATHSIG`, after the
//!    credential change that would clear it) and checks that the master did not die before
//!    that.
//! 2. That fresh process ([`exec_if_requested`], the first thing `main` and `init()` do) sets
//!    `LISTEN_PID` to its own pid and execs the worker command. The pid survives `exec`, so the
//!    worker sees its own pid in `LISTEN_PID`, as strict clients (libsystemd, sd-notify,
//!    go-systemd) require.
//!
//! `LISTEN_PID` cannot be set in one step: the environment std passes to `exec` is fixed
//! before fork, and setting variables after fork would allocate.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use command_fds::{CommandFdExt, FdMapping};

use crate::adopt::ChildFilter;
use crate::credentials::Credentials;
use crate::env;
use crate::worker::Pid;

/// How to start workers.
#[derive(Debug)]
pub struct Spawner {
    /// Program and arguments.
    command: Vec<OsString>,
    /// The master's pid, checked by the child against the PDEATHSIG race.
    master: Pid,
    /// `--user`: who workers run as.
    user: Option<Credentials>,
}

impl Spawner {
    /// A spawner for `command` (program and arguments, not empty), run as `user` if given.
    pub fn new(command: Vec<OsString>, user: Option<Credentials>) -> Spawner {
        Spawner {
            command,
            master: std::process::id(),
            user,
        }
    }

    /// The program, for messages.
    pub fn program(&self) -> String {
        self.command
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Starts a worker that inherits `listeners` as fds 3, 4, ... with `vars` added to the
    /// master's environment. Returns its pid (which is also its process group id).
    ///
    /// With `filter`, the worker runs under the adoption filter (see [`crate::adopt`]),
    /// installed first thing after the fork: before the listeners are placed (so that no
    /// listener lands on the filter's channel) and before `--user` drops privileges (so that
    /// the tree needs no `no_new_privs` when the master is root).
    pub fn spawn<'a>(
        &self,
        listeners: impl IntoIterator<Item = std::os::fd::BorrowedFd<'a>>,
        vars: &[(&str, String)],
        filter: Option<ChildFilter>,
    ) -> io::Result<Pid> {
        let mut mappings = Vec::new();
        for (n, fd) in listeners.into_iter().enumerate() {
            let parent_fd: OwnedFd = fd.as_fd().try_clone_to_owned()?;
            mappings.push(FdMapping {
                parent_fd,
                child_fd: 3 + n as i32,
            });
        }
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(&self.command[0])
            .args(&self.command)
            .stdin(Stdio::null());
        for var in env::MASTER_ONLY {
            cmd.env_remove(var);
        }
        cmd.envs(vars.iter().map(|(k, v)| (k, v)))
            .env(env::EXEC, "1");
        let ids = self.user.as_ref().map(|u| {
            cmd.env("USER", &u.name)
                .env("LOGNAME", &u.name)
                .env("HOME", &u.home);
            Ids {
                uid: u.uid,
                gid: u.gid,
                groups: u.groups.iter().map(|&g| g as libc::gid_t).collect(),
            }
        });
        if let Some(filter) = filter {
            // SAFETY: `ChildFilter::install` is async-signal-safe and does not allocate
            // (everything it needs was built before the fork); it runs first of the
            // closures, before command-fds maps the listeners.
            unsafe {
                cmd.pre_exec(move || filter.install());
            }
        }
        let mappings_len = mappings.len() as u32;
        cmd.fd_mappings(mappings).map_err(io::Error::other)?;
        cmd.process_group(0);
        let master = self.master as libc::pid_t;
        let first_unmapped = 3 + mappings_len;
        // SAFETY: `child_setup` only makes async-signal-safe calls (sigaction, sigprocmask,
        // setgroups, setgid, setuid, prctl, getppid, close_range) and does not allocate (the
        // groups were collected before the fork), as required between fork and exec. It runs
        // after command-fds has placed the listeners (closures run in order).
        unsafe {
            cmd.pre_exec(move || child_setup(master, first_unmapped, ids.as_ref()));
        }
        let child = cmd.spawn()?;
        // The master reaps its children itself (waitpid in its loop); the handle is not needed.
        Ok(child.id())
    }
}

/// The ids a worker runs as, ready for the calls after fork.
struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

/// Runs in the child between fork and exec: default signal handling, empty signal mask,
/// the `--user` credentials, then SIGKILL when the master dies (the kernel clears that
/// request on a credential change: it must come after), and no inherited fd but 0, 1, 2 and
/// the listeners.
fn child_setup(master: libc::pid_t, first_unmapped: u32, ids: Option<&Ids>) -> io::Result<()> {
    // Descriptors the master itself inherited without close-on-exec must not reach workers.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors of this
    // (child) process; on kernels without it the call fails and nothing changes.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_unmapped,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    // SAFETY: rt_sigaction with an all-zero kernel `struct sigaction` sets SIG_DFL with no
    // flags and an empty mask, whatever the architecture's field order; the raw syscall also
    // resets the signals glibc's wrapper refuses to touch (32, 33). It fails harmlessly for
    // SIGKILL and SIGSTOP. sigprocmask is async-signal-safe.
    unsafe {
        let dfl = [0u64; 8];
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8,
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    if let Some(ids) = ids {
        // SAFETY: setgroups reads `groups.len()` ids from a buffer that lives in this
        // process's copy of the closure; setgid and setuid take plain integers. All three
        // are async-signal-safe; each failure stops the spawn.
        unsafe {
            if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0
                || libc::setgid(ids.gid) != 0
                || libc::setuid(ids.uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // If the master died before prctl, we were already reparented: the signal will never come.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != master {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// If this process is the intermediate step of [`Spawner::spawn`], sets `LISTEN_PID` to its
/// own pid and execs the worker command; never returns in that case. Otherwise does nothing.
///
/// Call it first thing in `main` (the binary does; `master_process::init()` does).
pub fn exec_if_requested() {
    if std::env::var_os(env::EXEC).is_none() {
        return;
    }
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!(
            "master-process: internal error: {} set without a command",
            env::EXEC
        );
        std::process::exit(127);
    };
    let mut cmd = Command::new(&program);
    cmd.args(args).env_remove(env::EXEC);
    if std::env::var_os(env::LISTEN_FDS).is_some() {
        cmd.env(env::LISTEN_PID, std::process::id().to_string());
    }
    let err = cmd.exec();
    eprintln!(
        "master-process: cannot run {}: {err}",
        program.to_string_lossy()
    );
    std::process::exit(if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    });
}

/// The command that starts this program again: `argv[0]` as given (made absolute against
/// the current directory if it is a relative path, never resolved through symlinks, so
/// that a reload runs what the path points to now), and the same arguments.
pub fn own_command() -> crate::error::Result<Vec<OsString>> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let Some(argv0) = args.first().cloned() else {
        return Err(crate::error::Error::NoCommand);
    };
    let path = PathBuf::from(&argv0);
    if path.as_os_str().as_encoded_bytes().contains(&b'/') && path.is_relative() {
        let cwd = std::env::current_dir()
            .map_err(|e| crate::error::Error::io("cannot read the current directory", e))?;
        args[0] = cwd.join(path).into_os_string();
    } else if !path.as_os_str().as_encoded_bytes().contains(&b'/')
        && crate::config::resolve_program(&argv0).is_err()
    {
        // Started by a name that PATH does not give back (e.g. argv[0] set by a launcher).
        let exe = std::env::current_exe()
            .map_err(|e| crate::error::Error::io("cannot find our own executable", e))?;
        args[0] = exe.into_os_string();
    }
    Ok(args)
}
