//! The master's side of the kernel interface: the notify fd's ioctls, the target's memory,
//! its descriptors and its view of the file system.
//!
//! Every function here gathers facts or performs one answer; none decides anything.

use std::ffi::OsStr;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{self, SockaddrLike, SockaddrStorage, sockopt};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::decide::{AppSocket, Family, FileId};

/// The sizes of the notification structures as this kernel knows them
/// (`SECCOMP_GET_NOTIF_SIZES`): the buffers handed to the ioctls must be at least that big.
#[derive(Debug, Clone, Copy)]
pub struct NotifSizes {
    /// `struct seccomp_notif`.
    pub notif: usize,
    /// `struct seccomp_notif_resp`.
    pub resp: usize,
}

/// The kernel's notification sizes, asked once.
pub fn notif_sizes() -> io::Result<NotifSizes> {
    static SIZES: OnceLock<Result<NotifSizes, i32>> = OnceLock::new();
    let sizes = SIZES.get_or_init(|| {
        let mut sizes = libc::seccomp_notif_sizes {
            seccomp_notif: 0,
            seccomp_notif_resp: 0,
            seccomp_data: 0,
        };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one `struct seccomp_notif_sizes` to the
        // pointer, which points to one.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES as libc::c_long,
                0 as libc::c_long,
                &mut sizes as *mut libc::seccomp_notif_sizes,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOSYS));
        }
        Ok(NotifSizes {
            notif: usize::from(sizes.seccomp_notif),
            resp: usize::from(sizes.seccomp_notif_resp),
        })
    });
    sizes.map_err(io::Error::from_raw_os_error)
}

/// One notification: a system call a process of the tree is blocked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The kernel's cookie for this notification.
    pub id: u64,
    /// The thread that made the call, in our pid namespace (0 if it is not visible there).
    pub tid: u32,
    /// The system call number.
    pub nr: i32,
    /// Its arguments.
    pub args: [u64; 6],
}

/// How a notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Run the call as the app made it (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
    /// Return `0` without running it.
    Success,
    /// Fail it with this errno, without running it.
    Error(i32),
}

/// A zeroed, 8-byte-aligned buffer of at least `size` bytes and of `T`.
fn buffer<T>(size: usize) -> Vec<u64> {
    vec![0u64; size.max(size_of::<T>()).div_ceil(8)]
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Receives one notification (`SECCOMP_IOCTL_NOTIF_RECV`). Blocks if none is pending: call it
/// only once `poll` reported the fd readable. `ENOENT` means the caller died (or was
/// interrupted) in between.
pub fn recv(notify: BorrowedFd<'_>, sizes: NotifSizes) -> io::Result<Notification> {
    let mut buf = buffer::<libc::seccomp_notif>(sizes.notif);
    // SAFETY: NOTIF_RECV writes one `struct seccomp_notif` of the kernel's size into the
    // buffer, which is zeroed (as the kernel requires), at least that big and 8-aligned.
    check(unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            buf.as_mut_ptr(),
        )
    })?;
    // SAFETY: the buffer is 8-aligned, at least `size_of::<seccomp_notif>()` bytes, and the
    // kernel filled its head with a `struct seccomp_notif` (plain integers).
    let n: libc::seccomp_notif = unsafe { std::ptr::read(buf.as_ptr().cast()) };
    Ok(Notification {
        id: n.id,
        tid: n.pid,
        nr: n.data.nr,
        args: n.data.args,
    })
}

/// Answers notification `id` (`SECCOMP_IOCTL_NOTIF_SEND`). `ENOENT`: the caller is gone, or
/// a signal interrupted its call (which the kernel may restart as a new notification).
pub fn respond(
    notify: BorrowedFd<'_>,
    sizes: NotifSizes,
    id: u64,
    response: Response,
) -> io::Result<()> {
    let (val, error, flags) = match response {
        Response::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Response::Success => (0, 0, 0),
        Response::Error(errno) => (0, -errno, 0),
    };
    let mut buf = buffer::<libc::seccomp_notif_resp>(sizes.resp);
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: the buffer is 8-aligned and at least `size_of::<seccomp_notif_resp>()` bytes.
    unsafe { std::ptr::write(buf.as_mut_ptr().cast(), resp) };
    // SAFETY: NOTIF_SEND reads one `struct seccomp_notif_resp` of the kernel's size from the
    // buffer, which is at least that big (zero beyond the fields we know).
    check(unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            buf.as_mut_ptr(),
        )
    })
    .map(drop)
}

/// Whether notification `id` is still pending (`SECCOMP_IOCTL_NOTIF_ID_VALID`): its caller
/// is alive and still blocked in that call, so what we read about it was about it.
pub fn id_valid(notify: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID reads one u64 from the pointer.
    let rc = unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    };
    rc == 0
}

/// Installs `source` in the caller of notification `id` at descriptor number `target`,
/// replacing what is there (`SECCOMP_IOCTL_NOTIF_ADDFD` + `SECCOMP_ADDFD_FLAG_SETFD`,
/// Linux 5.9), close-on-exec if `cloexec`.
pub fn add_fd_at(
    notify: BorrowedFd<'_>,
    id: u64,
    source: BorrowedFd<'_>,
    target: i32,
    cloexec: bool,
) -> io::Result<()> {
    let mut addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: source.as_raw_fd() as u32,
        newfd: target as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: NOTIF_ADDFD reads one `struct seccomp_notif_addfd` (its size is in the ioctl
    // number) from the pointer; `srcfd` is open for the duration of the call.
    check(unsafe {
        libc::ioctl(
            notify.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &mut addfd as *mut libc::seccomp_notif_addfd,
        )
    })
    .map(drop)
}

/// `pidfd_open` flag for a thread that does not lead its group (Linux 6.9). Equal to
/// `O_EXCL`, as in `<linux/pidfd.h>`.
const PIDFD_THREAD: libc::c_long = libc::O_EXCL as libc::c_long;

use crate::procfs::{pidfd_getfd, pidfd_open_with as pidfd_open};

/// A pidfd for the process that thread `tid` belongs to: `tid` itself when it leads its
/// group (the common case), else with `PIDFD_THREAD` (6.9), else the group's, from `Tgid:`
/// in `/proc/TID/status`. Only trustworthy once [`id_valid`] confirms the notification.
pub fn pidfd_for_thread(tid: u32) -> io::Result<OwnedFd> {
    let errno = |e: &io::Error| e.raw_os_error().unwrap_or(0);
    match pidfd_open(tid, 0) {
        // A thread that does not lead its group: ENOENT on 6.x, EINVAL before.
        Err(e) if matches!(errno(&e), libc::EINVAL | libc::ENOENT) => {}
        other => return other,
    }
    match pidfd_open(tid, PIDFD_THREAD) {
        // An unknown flag before 6.9.
        Err(e) if errno(&e) == libc::EINVAL => pidfd_of_group(tid),
        other => other,
    }
}

/// A pidfd for the thread group of `tid`, from `Tgid:` in `/proc/TID/status`.
fn pidfd_of_group(tid: u32) -> io::Result<OwnedFd> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| io::Error::other(format!("no Tgid in /proc/{tid}/status")))?;
    pidfd_open(tgid, 0)
}

/// Reads `buf.len()` bytes at `addr` in thread `tid`'s memory (`process_vm_readv`); returns
/// how many were readable (fewer at the end of a mapping).
pub fn read_memory(tid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    process_vm_readv(
        Pid::from_raw(tid as i32),
        &mut [IoSliceMut::new(buf)],
        &remote,
    )
    .map_err(io::Error::from)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` in `tid`'s memory, one
/// page at a time (a string may end just before an unmapped page). `None`: no NUL within
/// `max` bytes.
pub fn read_c_string(tid: u32, addr: u64, max: usize) -> io::Result<Option<Vec<u8>>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let chunk = ((PAGE - at % PAGE) as usize).min(max - out.len());
        let mut buf = vec![0u8; chunk];
        let n = read_memory(tid, at, &mut buf)?;
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(Some(out));
        }
        if n < chunk {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        out.extend_from_slice(&buf);
        at += chunk as u64;
    }
    Ok(None)
}

/// The app's socket, inspected through a duplicate, and its descriptor's close-on-exec flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// What the decision needs.
    pub socket: AppSocket,
    /// `FD_CLOEXEC` on the app's descriptor (a descriptor flag: the duplicate does not share
    /// it, so it comes from `/proc/TID/fdinfo/FD`).
    pub cloexec: bool,
}

/// Inspects descriptor `fd` of thread `tid` (process `pidfd`). Fails if it is not a socket.
pub fn inspect_socket(pidfd: BorrowedFd<'_>, tid: u32, fd: i32) -> io::Result<Inspected> {
    let dup = pidfd_getfd(pidfd, fd)?;
    let stat = nix::sys::stat::fstat(&dup)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::from_raw_os_error(libc::ENOTSOCK));
    }
    let stream = socket::getsockopt(&dup, sockopt::SockType)? == socket::SockType::Stream;
    // An unbound socket's name still carries its family.
    let name = socket::getsockname::<SockaddrStorage>(dup.as_raw_fd())?;
    let family = Family::from_raw(name.family().map_or(-1, |f| f as i32));
    let v6only = family == Family::Inet6 && socket::getsockopt(&dup, sockopt::Ipv6V6Only)?;
    let flags = OFlag::from_bits_retain(fcntl(&dup, FcntlArg::F_GETFL)?);
    let cloexec = fdinfo_flags(tid, fd)? & libc::O_CLOEXEC != 0;
    Ok(Inspected {
        socket: AppSocket {
            inode: stat.st_ino,
            family,
            stream,
            nonblock: flags.contains(OFlag::O_NONBLOCK),
            v6only,
        },
        cloexec,
    })
}

/// The `flags:` of `/proc/TID/fdinfo/FD` (octal; `O_CLOEXEC` stands for `FD_CLOEXEC`).
fn fdinfo_flags(tid: u32, fd: i32) -> io::Result<i32> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}"))?;
    parse_fdinfo_flags(&text)
        .ok_or_else(|| io::Error::other(format!("no flags in /proc/{tid}/fdinfo/{fd}")))
}

/// The `flags:` field of an fdinfo text.
pub fn parse_fdinfo_flags(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
}

/// Where a path given to a system call starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The thread's working directory (`AT_FDCWD`).
    Cwd,
    /// A directory descriptor of the thread (`unlinkat`'s `dirfd`).
    Dir(i32),
}

/// The file `path` names for thread `tid`, without following a final symlink (as `bind` and
/// `unlink` do): resolved through `/proc/TID/root`, `/proc/TID/cwd` or `/proc/TID/fd/DIRFD`,
/// so that the app's root and directories are used, not ours.
pub fn resolve_file(tid: u32, base: Base, path: &[u8]) -> Option<FileId> {
    if path.is_empty() {
        return None;
    }
    let mut full = PathBuf::from(if path[0] == b'/' {
        format!("/proc/{tid}/root")
    } else {
        match base {
            Base::Cwd => format!("/proc/{tid}/cwd"),
            Base::Dir(fd) => format!("/proc/{tid}/fd/{fd}"),
        }
    });
    full.push(OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path)));
    let meta = std::fs::symlink_metadata(&full).ok()?;
    Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Sets or clears `O_NONBLOCK` on `fd`'s open file description.
pub fn set_nonblock(fd: BorrowedFd<'_>, nonblock: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let wanted = if nonblock {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    if wanted != flags {
        fcntl(fd, FcntlArg::F_SETFL(wanted))?;
    }
    Ok(())
}

/// The inode of a descriptor of ours.
pub fn inode_of(fd: impl AsFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_fd())?.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_flags_are_octal() {
        let text = "pos:\t0\nflags:\t02004002\nmnt_id:\t9\nino:\t123\n";
        let flags = parse_fdinfo_flags(text).unwrap();
        assert_ne!(flags & libc::O_CLOEXEC, 0);
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
    }

    /// Every way to a pidfd of a thread that does not lead its group reaches its process.
    #[test]
    fn a_pidfd_is_found_for_any_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, std::process::id());
        let probe = std::fs::File::open("/dev/null").unwrap();
        for pidfd in [pidfd_for_thread(tid).unwrap(), pidfd_of_group(tid).unwrap()] {
            let dup = pidfd_getfd(pidfd.as_fd(), probe.as_raw_fd()).unwrap();
            assert_eq!(inode_of(&dup).unwrap(), inode_of(&probe).unwrap());
        }
        drop(stop_tx);
        thread.join().unwrap();
    }

    #[test]
    fn strings_are_read_up_to_their_nul_across_pages() {
        // Our own memory: a string straddling a page boundary, and one with no NUL in reach.
        let mut page = vec![b'x'; 3 * 4096];
        let base = page.as_ptr() as u64;
        let start = (4096 - base % 4096) as usize + 4090;
        page[start + 10] = 0;
        let me = std::process::id();
        let got = read_c_string(me, base + start as u64, 4096)
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![b'x'; 10]);
        assert_eq!(read_c_string(me, base, 100).unwrap(), None);
    }
}
