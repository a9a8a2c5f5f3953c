//! The worker's side: a seccomp filter that sends `bind`, `listen` (and, when the master
//! holds a unix socket, `unlink`/`unlinkat`) to the master, installed between `fork` and
//! `exec`, and the notify fd it creates, sent to the master over a socketpair.
//!
//! [`ChildFilter::install`] runs in the forked child, where only async-signal-safe calls are
//! allowed: everything it uses (the BPF program, the channel) is built by
//! [`ChildFilter::new`] before the fork, and it allocates nothing. It never fails the spawn
//! because seccomp is refused: the master learns why from [`receive`] and runs the worker
//! without adoption. It does fail the spawn if a filter is in place but its notify fd could
//! not be sent, since every `bind` of that worker would then fail with `ENOSYS`.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, socketpair,
};

/// `AUDIT_ARCH_*` of the native system call ABI: `EM_*` | 64-bit | little-endian
/// (`<linux/audit.h>`). Calls made through another ABI (i386, x32) are let through.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(62 | 0x8000_0000 | 0x4000_0000);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(183 | 0x8000_0000 | 0x4000_0000);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Whether this build knows its architecture's seccomp constants.
pub const ARCH_SUPPORTED: bool = AUDIT_ARCH.is_some();

/// The system calls sent to the master.
fn trapped(trap_unlink: bool) -> Vec<u32> {
    let mut calls = vec![libc::SYS_bind as u32, libc::SYS_listen as u32];
    if trap_unlink {
        #[cfg(target_arch = "x86_64")]
        calls.push(libc::SYS_unlink as u32);
        calls.push(libc::SYS_unlinkat as u32);
    }
    calls
}

/// The BPF program: native ABI and one of `calls` -> `SECCOMP_RET_USER_NOTIF`, anything
/// else -> `SECCOMP_RET_ALLOW`.
fn program(arch: u32, calls: &[u32]) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    // Offsets of `struct seccomp_data`: int nr at 0, u32 arch at 4.
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let n = calls.len() as u8;
    let mut p = vec![
        load(4),
        // Not the native ABI: skip to ALLOW (past the nr load and every comparison).
        jeq(arch, 0, n + 1),
        load(0),
    ];
    for (i, &nr) in calls.iter().enumerate() {
        let i = i as u8;
        // Match: jump over the remaining comparisons and ALLOW, to NOTIFY.
        p.push(jeq(nr, n - i, 0));
    }
    p.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_USER_NOTIF,
    ));
    p
}

/// The one message the child sends: `Listener` with the fd attached, or `Refused` with the
/// errno of the refused `seccomp` call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Report {
    kind: u32,
    errno: i32,
}

const REPORT_LISTENER: u32 = 1;
const REPORT_REFUSED: u32 = 2;

/// Everything the child needs to install the filter, prepared before `fork`.
#[derive(Debug)]
pub struct ChildFilter {
    program: Vec<libc::sock_filter>,
    /// The child's end of the channel (close-on-exec).
    channel: OwnedFd,
    /// Its inode: `install` checks that the descriptor number still is the channel (a step
    /// that moved descriptors before it could have put something else there).
    channel_inode: u64,
    /// Ask for `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (5.19) first. Only tests turn it off,
    /// to reach the interrupted-answer path of older kernels.
    killable_wait: bool,
}

impl ChildFilter {
    /// Prepares a filter trapping `bind` and `listen`, and `unlink`/`unlinkat` if
    /// `trap_unlink` (only worth its cost when the master holds a unix socket). Returns it
    /// with the master's end of the channel, for [`receive`] once the spawn returned.
    pub fn new(trap_unlink: bool) -> io::Result<(ChildFilter, OwnedFd)> {
        let arch = AUDIT_ARCH.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "adoption is not built for this architecture",
            )
        })?;
        let (master, child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let channel_inode = nix::sys::stat::fstat(&child)?.st_ino;
        let filter = ChildFilter {
            program: program(arch, &trapped(trap_unlink)),
            channel: child,
            channel_inode,
            killable_wait: true,
        };
        Ok((filter, master))
    }

    /// Installs the filter without `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, as kernels before
    /// 5.19 do: a signal may then interrupt a call the master is answering.
    #[cfg(test)]
    pub fn without_killable_wait(mut self) -> ChildFilter {
        self.killable_wait = false;
        self
    }

    /// Installs the filter in this process and sends its notify fd to the master. Call it
    /// from `pre_exec`, before the descriptors are moved to their final numbers (the channel
    /// fd could be overwritten otherwise). Async-signal-safe, allocation-free.
    ///
    /// `PR_SET_NO_NEW_PRIVS` is set only if the kernel asks for it (no `CAP_SYS_ADMIN`): it is
    /// permanent for the whole tree (setuid and file capabilities stop working).
    pub fn install(&self) -> io::Result<()> {
        let channel = self.channel.as_raw_fd();
        // SAFETY: an all-zero `struct stat` is valid; fstat writes one into it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor number, writing to the struct above.
        if unsafe { libc::fstat(channel, &mut stat) } != 0 || stat.st_ino != self.channel_inode {
            // Never send the notify fd down whatever now sits at that number.
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let result = match self.seccomp() {
            Ok(listener) => {
                let sent = send(
                    channel,
                    Report {
                        kind: REPORT_LISTENER,
                        errno: 0,
                    },
                    Some(listener),
                );
                // SAFETY: `listener` is the descriptor seccomp just returned; nothing else
                // owns it, and it must not reach the app.
                unsafe { libc::close(listener) };
                sent
            }
            Err(errno) => send(
                channel,
                Report {
                    kind: REPORT_REFUSED,
                    errno,
                },
                None,
            )
            // Nothing to tell the master with: it will see no message. The worker runs
            // without adoption either way.
            .or(Ok(())),
        };
        // SAFETY: the child's copy of the channel: closing it here (it is close-on-exec
        // anyway) keeps it from being clobbered or leaked by later pre_exec steps. The
        // `OwnedFd` in this address space is never dropped: exec replaces it.
        unsafe { libc::close(channel) };
        result
    }

    /// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER [| WAIT_KILLABLE_RECV])`, with
    /// `PR_SET_NO_NEW_PRIVS` on `EACCES` and without `WAIT_KILLABLE_RECV` on `EINVAL`.
    /// Returns the notify fd or the errno.
    fn seccomp(&self) -> Result<RawFd, i32> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr().cast_mut(),
        };
        let set = |flags: libc::c_ulong| -> Result<RawFd, i32> {
            // SAFETY: SECCOMP_SET_MODE_FILTER reads the `sock_fprog` (and the program it
            // points to, owned by `self`) and returns a new descriptor with NEW_LISTENER.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER as libc::c_long,
                    flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc < 0 {
                Err(errno())
            } else {
                Ok(rc as RawFd)
            }
        };
        let mut flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if self.killable_wait {
            flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        }
        install(flags, set, || {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes integers only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
                Err(errno())
            } else {
                Ok(())
            }
        })
    }
}

/// Installs the filter with `set(flags)`, stepping down as the kernel answers: `EINVAL`
/// drops `WAIT_KILLABLE_RECV` (Linux < 5.19 knows no such flag, and checks flags before
/// privileges), `EACCES` asks for `no_new_privs` (a process without `CAP_SYS_ADMIN`), each
/// once. Allocates nothing: it runs between fork and exec.
fn install(
    mut flags: libc::c_ulong,
    mut set: impl FnMut(libc::c_ulong) -> Result<RawFd, i32>,
    mut no_new_privs: impl FnMut() -> Result<(), i32>,
) -> Result<RawFd, i32> {
    let killable = libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    let mut asked_nnp = false;
    loop {
        match set(flags) {
            Err(libc::EINVAL) if flags & killable != 0 => flags &= !killable,
            Err(libc::EACCES) if !asked_nnp => {
                no_new_privs()?;
                asked_nnp = true;
            }
            result => return result,
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Sends `report`, with `fd` attached, on `channel`: `sendmsg` with stack buffers only.
fn send(channel: RawFd, report: Report, fd: Option<RawFd>) -> io::Result<()> {
    let mut report = report;
    let mut iov = libc::iovec {
        iov_base: (&mut report as *mut Report).cast(),
        iov_len: size_of::<Report>(),
    };
    // Room for one cmsghdr and one int, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg_control` points to `control`, 64 zeroed and aligned bytes, more than
        // CMSG_SPACE(4); CMSG_FIRSTHDR returns a pointer into it, and CMSG_DATA a pointer
        // inside that header's room, where one int fits.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` points to the iovec and control buffer above, alive for the call.
    let rc = unsafe { libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What the master learns from the channel once the spawn returned.
#[derive(Debug)]
pub enum Received {
    /// The worker tree runs under the filter; its notify fd.
    Listener(OwnedFd),
    /// No adoption for this worker, and why.
    Unavailable(Unavailable),
}

/// Why a worker runs without adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The kernel refused the filter with this errno.
    Refused(i32),
    /// No message: the child never ran [`ChildFilter::install`] (or could not send).
    NoMessage,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unavailable::Refused(libc::EBUSY) => f.write_str(
                "the worker already runs under a seccomp notifier (a container runtime or \
                 sandbox), and the kernel allows one per process tree (EBUSY)",
            ),
            Unavailable::Refused(libc::EACCES) => {
                f.write_str("the kernel refused a seccomp filter even with no_new_privs (EACCES)")
            }
            Unavailable::Refused(libc::ENOSYS) | Unavailable::Refused(libc::EINVAL) => f.write_str(
                "this kernel has no seccomp user notification (Linux 5.9 or later, \
                     CONFIG_SECCOMP_FILTER)",
            ),
            Unavailable::Refused(errno) => write!(
                f,
                "the kernel refused the seccomp filter: {}",
                io::Error::from_raw_os_error(errno)
            ),
            Unavailable::NoMessage => {
                f.write_str("the worker sent no seccomp notify fd (the filter was not installed)")
            }
        }
    }
}

/// Reads the child's report from the master's end of the channel, without blocking: `spawn`
/// returns after a successful `exec`, so the message, if any, is already queued.
pub fn receive(channel: BorrowedFd<'_>) -> io::Result<Received> {
    let mut report = [0u8; size_of::<Report>()];
    let mut iov = [IoSliceMut::new(&mut report)];
    let mut control = nix::cmsg_space!(RawFd);
    let msg = match recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EAGAIN) => return Ok(Received::Unavailable(Unavailable::NoMessage)),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(rights) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this process; we are
            // their only owner.
            fds.extend(
                rights
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let bytes = msg.bytes;
    if bytes != size_of::<Report>() {
        return Ok(Received::Unavailable(Unavailable::NoMessage));
    }
    let kind = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    match (kind, fds.pop()) {
        (REPORT_LISTENER, Some(fd)) => Ok(Received::Listener(fd)),
        (REPORT_REFUSED, _) => Ok(Received::Unavailable(Unavailable::Refused(errno))),
        _ => Ok(Received::Unavailable(Unavailable::NoMessage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program of loads, equality jumps and returns on one `seccomp_data`.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0;
        loop {
            let i = program[pc];
            match u32::from(i.code) {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    acc = if i.k == 4 { arch } else { nr };
                    pc += 1;
                }
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_notifies_exactly_the_trapped_calls_of_the_native_abi() {
        let arch = AUDIT_ARCH.unwrap();
        let nr = |n: libc::c_long| n as u32;
        for trap_unlink in [false, true] {
            let p = program(arch, &trapped(trap_unlink));
            let notify = |n| run(&p, arch, n) == libc::SECCOMP_RET_USER_NOTIF;
            assert!(notify(nr(libc::SYS_bind)));
            assert!(notify(nr(libc::SYS_listen)));
            assert_eq!(notify(nr(libc::SYS_unlinkat)), trap_unlink);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(notify(nr(libc::SYS_unlink)), trap_unlink);
            for other in [
                libc::SYS_getpid,
                libc::SYS_socket,
                libc::SYS_accept4,
                libc::SYS_connect,
            ] {
                assert_eq!(run(&p, arch, nr(other)), libc::SECCOMP_RET_ALLOW);
            }
            // Another ABI (i386: EM_386 | LE) passes whatever its numbers mean.
            let i386 = 3 | 0x4000_0000;
            assert_eq!(run(&p, i386, nr(libc::SYS_bind)), libc::SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn a_channel_overwritten_before_install_fails_the_spawn_instead_of_leaking_the_fd() {
        let (filter, _channel) = ChildFilter::new(false).unwrap();
        let target = filter.channel.as_raw_fd();
        let mut cmd = std::process::Command::new("true");
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 and install() are async-signal-safe and allocation-free.
        unsafe {
            cmd.pre_exec(move || {
                // What a descriptor mapping registered before install() could do.
                if libc::dup2(0, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                filter.install()
            });
        }
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    /// A kernel's answers to `seccomp()`: whether it knows WAIT_KILLABLE_RECV, whether the
    /// caller is privileged; it checks flags first, then privileges, as Linux does.
    fn kernel(knows_killable: bool, privileged: bool) -> (Result<RawFd, i32>, Vec<String>) {
        let log = std::cell::RefCell::new(Vec::new());
        let nnp = std::cell::Cell::new(false);
        let killable = libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        let result = install(
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | killable,
            |flags| {
                let k = flags & killable != 0;
                log.borrow_mut().push(format!("seccomp killable={k}"));
                if k && !knows_killable {
                    Err(libc::EINVAL)
                } else if !privileged && !nnp.get() {
                    Err(libc::EACCES)
                } else {
                    Ok(7)
                }
            },
            || {
                log.borrow_mut().push("no_new_privs".into());
                nnp.set(true);
                Ok(())
            },
        );
        (result, log.into_inner())
    }

    #[test]
    fn an_unprivileged_master_on_a_kernel_before_5_19_still_gets_the_filter() {
        let (result, steps) = kernel(false, false);
        assert_eq!(result, Ok(7));
        assert_eq!(
            steps,
            [
                "seccomp killable=true",
                "seccomp killable=false",
                "no_new_privs",
                "seccomp killable=false"
            ]
        );
        assert_eq!(kernel(true, false).0, Ok(7));
        assert_eq!(kernel(false, true).1.len(), 2);
        assert_eq!(kernel(true, true).1, ["seccomp killable=true"]);
    }

    #[test]
    fn reasons_are_one_line() {
        for why in [
            Unavailable::Refused(libc::EBUSY),
            Unavailable::Refused(libc::EACCES),
            Unavailable::Refused(libc::ENOSYS),
            Unavailable::Refused(libc::EPERM),
            Unavailable::NoMessage,
        ] {
            let line = why.to_string();
            assert!(!line.contains('\n') && !line.is_empty(), "{line}");
        }
    }
}
