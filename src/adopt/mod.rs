//! Adoption: an unchanged app that calls `bind()` and `listen()` itself gets the master's
//! listening socket instead of its own, so that it needs no `LISTEN_FDS` support.
//!
//! # Why
//!
//! Most servers bind their port themselves. Node's `listen({fd: 3})` calls `listen(3, 511)`
//! again, shrinking the shared queue; Node launchers (`npm start`) mark fd 3 close-on-exec and
//! never pass it on. `LD_PRELOAD` cannot reach static binaries (Go, musl, `gcc -static`),
//! setuid programs or launchers that scrub the environment. seccomp user notification
//! (seccomp_unotify(2)) reaches every process of the worker's tree, whatever it is made of:
//!
//! 1. Between `fork` and `exec`, [`ChildFilter::install`] puts a filter in the worker that
//!    sends `bind`, `listen` (and `unlink`/`unlinkat` when the master holds a unix socket) to
//!    the master, and every other call through untouched. The filter is inherited by every
//!    descendant and cannot be removed. The notify fd reaches the master over a socketpair
//!    ([`receive`]).
//! 2. The master polls that fd ([`Notifier`]). For each call it reads the sockaddr or path from
//!    the app's memory, inspects the app's socket through `pidfd_getfd`, and confirms with
//!    `SECCOMP_IOCTL_NOTIF_ID_VALID` that what it read belongs to the blocked call.
//! 3. [`decide()`] says what to answer (pure, unit-tested): install the held socket at the
//!    app's descriptor number (`SECCOMP_IOCTL_NOTIF_ADDFD` + `SECCOMP_ADDFD_FLAG_SETFD`, like
//!    `dup2`) and report success without running the bind; report a `listen` of a held socket
//!    as done (the master's backlog stays); keep a held unix socket's file from an `unlink`;
//!    let anything else run as the app asked (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`); or refuse
//!    (`EADDRINUSE`) a held port asked in a way the master will not serve, with one line
//!    saying why.
//!
//! # Why the races are harmless
//!
//! The app may change the sockaddr after we read it (another thread). A `Continue` runs the
//! call the kernel then reads, with the app's own rights: it grants nothing the app could not
//! do itself (a bind of a held address fails with `EADDRINUSE`). Every emulated answer
//! (adopt, keep) is computed from our own copy and never runs the app's call, so a changed
//! pointer cannot steer it. `ID_VALID` after reading guarantees that the thread id we read
//! through was still the caller.
//!
//! # What an adopted app sees
//!
//! - Exactly the address and family it asked for: a socket of another family gives CPython and
//!   C programs garbage addresses, and a wider address than asked would expose a loopback
//!   service. Those are refused with the `--listen` to use.
//! - `O_NONBLOCK` belongs to the open file description, shared by every generation: the first
//!   adopter fixes it, a later one asking the other mode is refused (a blocking generation
//!   would freeze a non-blocking one inside `accept`).
//! - Options it set before `bind` (`SO_REUSEADDR`) were on its discarded socket; options set
//!   after `listen` land on the shared socket and stay for later generations.
//!
//! # Costs and limits
//!
//! Every `bind`/`listen` of the tree goes through the master (BPF cannot read a sockaddr), a
//! few tens of microseconds each; other calls pay the filter's verdict cache only. A stopped
//! master leaves the app blocked in the call; a dead one makes every trapped call fail with
//! `ENOSYS`. Without `CAP_SYS_ADMIN` the tree gets `no_new_privs` (no setuid). A tree already
//! under another notifier (some sandboxes) cannot get a second one (`EBUSY`): it runs without
//! adoption. Calls through a foreign ABI (i386, x32) are not trapped.

mod decide;
mod filter;
mod notif;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, Backlog, SockaddrStorage, sockopt};

pub use decide::{
    BindTarget, Decision, Family, FileId, Held, HeldAddr, Request, Sockaddr, concerns, decide,
    names_held_file, parse_sockaddr,
};
pub use filter::{ChildFilter, Received, receive};
use notif::{Base, NotifSizes, Notification, Response};

/// Whether this kernel and build can adopt: `Err` with one line saying why not. Asked once.
///
/// Needs Linux 5.9 (`SECCOMP_ADDFD_FLAG_SETFD`; 5.0 user notification, 5.5 `CONTINUE`,
/// 5.6 `pidfd_getfd`), seccomp filters, and x86_64 or aarch64. A worker can still be refused
/// its filter (a sandbox's notifier already in place): [`receive`] says so per worker.
pub fn support() -> Result<(), &'static str> {
    static SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();
    SUPPORT
        .get_or_init(probe)
        .as_ref()
        .map(|_| ())
        .map_err(String::as_str)
}

fn probe() -> Result<(), String> {
    if !filter::ARCH_SUPPORTED {
        return Err(format!(
            "adoption is not built for {} (x86_64 and aarch64 only)",
            std::env::consts::ARCH
        ));
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = kernel_version(&release);
    if version.is_some_and(|v| v < (5, 9)) {
        return Err(format!(
            "adoption needs Linux 5.9 or later (seccomp ADDFD with SETFD); this kernel is \
             {release}"
        ));
    }
    let mut action = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL as libc::c_long,
            0 as libc::c_long,
            &mut action as *mut u32,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "seccomp user notification is not available on this kernel ({release}): {e}"
        ));
    }
    notif::notif_sizes().map_err(|e| format!("seccomp notification sizes: {e}"))?;
    Ok(())
}

/// `6.18.44-fc` -> (6, 18).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Binds a listening TCP socket at exactly `addr` (close-on-exec, `SO_REUSEADDR`,
/// `IPV6_V6ONLY` as given for IPv6, a backlog of `net.core.somaxconn`): what a claimed
/// address becomes, and what tests hold.
pub fn bind_listener(addr: SocketAddr, v6only: bool) -> io::Result<OwnedFd> {
    // -1: the kernel's limit, somaxconn, even where it was raised above SOMAXCONN (4096).
    Ok(crate::socket::listen_tcp(
        addr,
        Some(v6only),
        Backlog::MAXALLOWABLE,
    )?)
}

/// The sockets the master holds, for the engine: a duplicate of each, and what the decision
/// needs to know about it. Shared by every worker tree's [`Notifier`].
#[derive(Debug, Default)]
pub struct HeldSockets {
    /// Facts, in the order they were added.
    held: Vec<Held>,
    /// `fds[i]` is the socket of `held[i]`.
    fds: Vec<OwnedFd>,
}

impl HeldSockets {
    /// No socket held.
    pub fn new() -> HeldSockets {
        HeldSockets::default()
    }

    /// Holds socket `fd` as listener `listener`: a listening TCP socket, or a listening unix
    /// socket bound to a path. Its address, `IPV6_V6ONLY`, inode and unix file are read
    /// from it.
    pub fn hold(&mut self, listener: usize, fd: OwnedFd) -> io::Result<()> {
        let name = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())?;
        let listening = socket::getsockopt(&fd, sockopt::AcceptConn)?;
        let inet = name
            .as_sockaddr_in()
            .map(|a| SocketAddr::from(*a))
            .or_else(|| name.as_sockaddr_in6().map(|a| SocketAddr::from(*a)));
        let addr = if let Some(addr) = inet.filter(|_| listening) {
            HeldAddr::Tcp {
                addr,
                v6only: addr.is_ipv6() && socket::getsockopt(&fd, sockopt::Ipv6V6Only)?,
            }
        } else if let Some(path) = name
            .as_unix_addr()
            .and_then(|u| u.path())
            .filter(|_| listening)
        {
            let meta = std::fs::symlink_metadata(path)?;
            HeldAddr::Unix {
                path: path.to_path_buf(),
                file: FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only listening TCP sockets and listening unix sockets bound to a path can \
                 be held",
            ));
        };
        self.push(listener, addr, fd)
    }

    /// Makes listener `listener` claimable (see [`Held::claimable`]), or settles it.
    pub fn set_claimable(&mut self, listener: usize, claimable: bool) {
        if let Some(i) = self.position(listener) {
            self.held[i].claimable = claimable;
        }
    }

    /// Settles every claimable listener: a worker served, the addresses are fixed.
    pub fn settle(&mut self) {
        for h in &mut self.held {
            h.claimable = false;
        }
    }

    /// Restores the `O_NONBLOCK` mode fixed by an earlier master (after a handover).
    pub fn restore_nonblock(&mut self, listener: usize, nonblock: Option<bool>) {
        if let Some(i) = self.position(listener) {
            self.held[i].nonblock = nonblock;
        }
    }

    fn push(&mut self, listener: usize, addr: HeldAddr, fd: OwnedFd) -> io::Result<()> {
        let held = Held {
            listener,
            addr,
            inode: notif::inode_of(&fd)?,
            nonblock: None,
            claimable: false,
        };
        match self.position(listener) {
            Some(i) => {
                self.held[i] = held;
                self.fds[i] = fd;
            }
            None => {
                self.held.push(held);
                self.fds.push(fd);
            }
        }
        Ok(())
    }

    /// What the decision knows about each held socket.
    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// The socket of listener `listener` (after a claim, the newly bound one).
    pub fn fd(&self, listener: usize) -> Option<BorrowedFd<'_>> {
        self.position(listener).map(|i| self.fds[i].as_fd())
    }

    fn position(&self, listener: usize) -> Option<usize> {
        self.held.iter().position(|h| h.listener == listener)
    }
}

/// The system call a notification was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `bind`.
    Bind,
    /// `listen`.
    Listen,
    /// `unlink` or `unlinkat`.
    Unlink,
    /// Another number (the filter traps nothing else: a filter of another build).
    Other(i32),
}

impl Syscall {
    fn from_nr(nr: i32) -> Syscall {
        let nr = libc::c_long::from(nr);
        #[cfg(target_arch = "x86_64")]
        if nr == libc::SYS_unlink {
            return Syscall::Unlink;
        }
        match nr {
            libc::SYS_bind => Syscall::Bind,
            libc::SYS_listen => Syscall::Listen,
            libc::SYS_unlinkat => Syscall::Unlink,
            _ => Syscall::Other(nr as i32),
        }
    }
}

/// How one notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The thread that made the call.
    pub tid: u32,
    /// The call.
    pub syscall: Syscall,
    /// What was decided.
    pub decision: Decision,
    /// Whether the answer reached the caller.
    pub answer: Answer,
}

/// Whether the answer reached the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It did.
    Sent,
    /// The caller died, or a signal interrupted its call (`ENOENT`): a restarted call comes
    /// back as a new notification, and an adoption already done is then answered as done.
    Gone,
    /// The master could not answer (this errno).
    Failed(i32),
    /// The master could not carry the decision out (binding a claimed address failed): the
    /// caller got this errno, or died meanwhile; nothing changed.
    Undone(i32),
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syscall::Bind => f.write_str("bind"),
            Syscall::Listen => f.write_str("listen"),
            Syscall::Unlink => f.write_str("unlink"),
            Syscall::Other(nr) => write!(f, "syscall {nr}"),
        }
    }
}

/// The longest path read from an app for `unlink` (`PATH_MAX`).
const PATH_MAX: usize = 4096;
/// The most sockaddr bytes read (`sizeof(struct sockaddr_storage)`).
const SOCKADDR_MAX: usize = 128;

/// One worker tree's notify fd. Poll [`Notifier::fd`]: `POLLIN` means a call waits for
/// [`Notifier::handle`]; `POLLHUP` (Linux 5.8) means no process of the tree is left, and the
/// notifier can be dropped.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    sizes: NotifSizes,
}

impl Notifier {
    /// Takes a notify fd from [`receive`] (or from a handover).
    pub fn new(fd: OwnedFd) -> io::Result<Notifier> {
        Ok(Notifier {
            fd,
            sizes: notif::notif_sizes()?,
        })
    }

    /// The notify fd, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Handles one pending call, if any (it never blocks: a call whose caller died meanwhile
    /// is skipped). Never fails: what cannot be inspected is let through as the app made it,
    /// and logged at debug.
    pub fn handle(&mut self, held: &mut HeldSockets) -> Option<Handled> {
        self.handle_with(held, &mut |_| {})
    }

    /// [`Notifier::handle`], calling `after_addfd` between installing a socket and answering
    /// (tests provoke the interrupted answer there).
    fn handle_with(
        &mut self,
        held: &mut HeldSockets,
        after_addfd: &mut dyn FnMut(&Notification),
    ) -> Option<Handled> {
        let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut pfd, PollTimeout::ZERO).unwrap_or(0) > 0
            && pfd[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if !ready {
            return None;
        }
        let n = match notif::recv(self.fd.as_fd(), self.sizes) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("adopt: no notification after all: {e}");
                return None;
            }
        };
        let syscall = Syscall::from_nr(n.nr);
        let request = self.gather(&n, syscall, held);
        let decision = match &request {
            Some(Gathered { request, .. }) => decide(request, held.held()),
            None => Decision::Continue,
        };
        let answer = self.act(&n, &decision, request.as_ref(), held, after_addfd);
        match (&decision, &answer) {
            (Decision::Refuse { reason, .. }, _) => {
                tracing::debug!("adopt: tid {} {syscall} refused: {reason}", n.tid)
            }
            _ => tracing::debug!(
                "adopt: tid {} {syscall} -> {decision:?} ({answer:?})",
                n.tid
            ),
        }
        Some(Handled {
            tid: n.tid,
            syscall,
            decision,
            answer,
        })
    }

    /// Reads what the decision needs about notification `n`, then checks that `n` is still
    /// pending (so that the thread id we read through was the caller's). `None`: let it run.
    fn gather(&self, n: &Notification, syscall: Syscall, held: &HeldSockets) -> Option<Gathered> {
        if n.tid == 0 {
            // The caller is in a pid namespace we cannot see into.
            return None;
        }
        let fd_arg = n.args[0] as i32;
        let gathered = match syscall {
            Syscall::Bind => {
                let len = (n.args[2] as usize).min(SOCKADDR_MAX);
                let mut bytes = [0u8; SOCKADDR_MAX];
                let read = notif::read_memory(n.tid, n.args[1], &mut bytes[..len]).ok()?;
                let bytes = &bytes[..read];
                // Most binds of a tree are not ours (port 0, netlink, other ports): the
                // sockaddr alone says so, and they run without a look at the socket. Parsed
                // as for an AF_INET socket: the one case its family decides (AF_UNSPEC) gives
                // an IPv4 address, which decide() lets run on a socket of another family.
                let target = match parse_sockaddr(bytes, len, Family::Inet) {
                    Sockaddr::Inet(a) => BindTarget::Inet(a),
                    Sockaddr::UnixPath(path) => BindTarget::Unix(
                        names_held_file(&path, held.held())
                            .then(|| notif::resolve_file(n.tid, Base::Cwd, &path))
                            .flatten(),
                    ),
                    Sockaddr::Other => BindTarget::Other,
                };
                if !concerns(&target, held.held()) {
                    return None;
                }
                let pidfd = notif::pidfd_for_thread(n.tid)
                    .inspect_err(|e| tracing::debug!("adopt: pidfd of tid {}: {e}", n.tid))
                    .ok()?;
                let inspected = notif::inspect_socket(pidfd.as_fd(), n.tid, fd_arg)
                    .inspect_err(|e| tracing::debug!("adopt: fd {fd_arg} of {}: {e}", n.tid))
                    .ok()?;
                Gathered {
                    request: Request::Bind {
                        target,
                        socket: inspected.socket,
                    },
                    cloexec: inspected.cloexec,
                }
            }
            Syscall::Listen => Gathered {
                request: Request::Listen {
                    inode: crate::procfs::socket_inode(n.tid, i64::from(fd_arg)),
                },
                cloexec: false,
            },
            Syscall::Unlink => {
                // unlink(path) or unlinkat(dirfd, path, flags).
                let (base, path, flags) = if libc::c_long::from(n.nr) == libc::SYS_unlinkat {
                    let dirfd = n.args[0] as i32;
                    let base = if dirfd == libc::AT_FDCWD {
                        Base::Cwd
                    } else {
                        Base::Dir(dirfd)
                    };
                    (base, n.args[1], n.args[2] as i32)
                } else {
                    (Base::Cwd, n.args[0], 0)
                };
                if flags & libc::AT_REMOVEDIR != 0 {
                    return None;
                }
                let path = notif::read_c_string(n.tid, path, PATH_MAX).ok()??;
                if !names_held_file(&path, held.held()) {
                    return None;
                }
                Gathered {
                    request: Request::Unlink {
                        file: notif::resolve_file(n.tid, base, &path),
                    },
                    cloexec: false,
                }
            }
            Syscall::Other(_) => return None,
        };
        if !notif::id_valid(self.fd.as_fd(), n.id) {
            return None;
        }
        Some(gathered)
    }

    /// Carries `decision` out and answers the caller.
    fn act(
        &self,
        n: &Notification,
        decision: &Decision,
        gathered: Option<&Gathered>,
        held: &mut HeldSockets,
        after_addfd: &mut dyn FnMut(&Notification),
    ) -> Answer {
        let response = match decision {
            Decision::Continue => Response::Continue,
            Decision::AlreadyAdopted { .. }
            | Decision::KeepListen { .. }
            | Decision::KeepUnlink { .. } => Response::Success,
            Decision::Refuse { .. } => Response::Error(libc::EADDRINUSE),
            Decision::Adopt { listener } | Decision::Claim { listener, .. } => {
                let Some(Gathered {
                    request: Request::Bind { socket, .. },
                    cloexec,
                }) = gathered
                else {
                    return self.answer(n, Response::Continue);
                };
                if let Decision::Claim { addr, v6only, .. } = decision {
                    if let Err(e) = claim(held, *listener, *addr, *v6only) {
                        let errno = e.raw_os_error().unwrap_or(libc::EADDRINUSE);
                        tracing::warn!("adopt: cannot bind {addr} for the app: {e}");
                        self.answer(n, Response::Error(errno));
                        return Answer::Undone(errno);
                    }
                }
                match adopt(&self.fd, n, held, *listener, socket.nonblock, *cloexec) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Answer::Gone,
                    Err(e) => {
                        tracing::debug!("adopt: cannot install the socket: {e}");
                        return self.answer(n, Response::Continue);
                    }
                }
                after_addfd(n);
                Response::Success
            }
        };
        self.answer(n, response)
    }

    fn answer(&self, n: &Notification, response: Response) -> Answer {
        match notif::respond(self.fd.as_fd(), self.sizes, n.id, response) {
            Ok(()) => Answer::Sent,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Answer::Gone,
            Err(e) => {
                tracing::debug!("adopt: cannot answer tid {}: {e}", n.tid);
                Answer::Failed(e.raw_os_error().unwrap_or(libc::EIO))
            }
        }
    }
}

/// What was read about one call.
#[derive(Debug)]
struct Gathered {
    request: Request,
    /// The app's descriptor had `FD_CLOEXEC` (bind only).
    cloexec: bool,
}

/// Binds the claimed address in place of the claimable listener. That listener is shut down
/// first (listening, it would keep the address from being bound; no worker has served it,
/// and every holder's copy stops listening with it) but stays bound until the new socket is
/// (both `SO_REUSEADDR`), so no process binding without `SO_REUSEADDR` can take the port in
/// between; if the new bind fails, it listens again.
fn claim(
    held: &mut HeldSockets,
    listener: usize,
    addr: SocketAddr,
    v6only: bool,
) -> io::Result<()> {
    let i = held
        .position(listener)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EADDRINUSE))?;
    socket::shutdown(held.fds[i].as_raw_fd(), socket::Shutdown::Both)?;
    let fd = bind_listener(addr, v6only).inspect_err(|_| {
        let _ = socket::listen(&held.fds[i], Backlog::MAXALLOWABLE);
    })?;
    let inode = notif::inode_of(&fd)?;
    held.fds[i] = fd;
    held.held[i].addr = HeldAddr::Tcp { addr, v6only };
    held.held[i].inode = inode;
    held.held[i].nonblock = None;
    held.held[i].claimable = false;
    tracing::info!("adopt: listener {listener} claimed {addr} as the app asked");
    Ok(())
}

/// Installs the held socket at the app's descriptor; the first adopter also gives it the
/// app's `O_NONBLOCK`.
///
/// A later adopter asked the same mode at its bind ([`decide()`] refuses the other), and the
/// shared socket is left as it is: the generation that serves may have changed the mode since
/// its own bind (asyncio binds a blocking socket, then makes it non-blocking through the
/// shared file description), and forcing the bind-time mode back would freeze it inside
/// `accept` until the new generation changes it again, if ever.
fn adopt(
    notify: &OwnedFd,
    n: &Notification,
    held: &mut HeldSockets,
    listener: usize,
    nonblock: bool,
    cloexec: bool,
) -> io::Result<()> {
    let i = held
        .position(listener)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
    let fd = held.fds[i].as_fd();
    if held.held[i].nonblock.is_none() {
        notif::set_nonblock(fd, nonblock)?;
    }
    notif::add_fd_at(notify.as_fd(), n.id, fd, n.args[0] as i32, cloexec)?;
    held.held[i].nonblock = Some(nonblock);
    held.held[i].claimable = false;
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn kernel_versions_are_read_from_the_release() {
        assert_eq!(kernel_version("6.18.44-fc-v1098"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("5"), None);
        assert_eq!(kernel_version(""), None);
    }
}
