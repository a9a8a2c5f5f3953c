//! The sd_notify protocol, both ways.
//!
//! - [`NotifySocket`] is the master's receiving end: workers get its path in
//!   `NOTIFY_SOCKET` and send `READY=1` (and `STATUS=...`) on it, with any sd_notify client
//!   (`systemd-notify`, the `sd-notify` crate, python-systemd, ...). The kernel attaches the
//!   sender's pid to each datagram (`SO_PASSCRED`); the master believes only its workers and
//!   their descendants. File descriptors sent along (the `BARRIER=1` of `systemd-notify`)
//!   are closed once the datagram is handled, which releases a waiting sender.
//! - [`notify`] sends to the socket named by our own `NOTIFY_SOCKET`, a path or an `@abstract`
//!   name: a library worker's `READY=1`, the master's messages to systemd.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, UnixCredentials, sockopt};

use crate::error::{Error, Result};

/// The largest datagram accepted, as systemd's own limit.
const MAX_DATAGRAM: usize = 4096;
/// The most descriptors one datagram can carry (the kernel's `SCM_MAX_FD`). Room for all of
/// them means a sender can never make us truncate the control data, which would leave the
/// descriptors that did not fit open in our table.
const SCM_MAX_FD: usize = 253;

/// The master's receiving socket, in a private directory that is removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
}

/// One datagram received on the notify socket.
#[derive(Debug)]
pub struct Datagram {
    /// The sender's pid, from the kernel's credentials.
    pub pid: Option<u32>,
    /// The text: `KEY=VALUE` lines.
    pub text: String,
    /// File descriptors that came along (`BARRIER=1`); held only to be closed when the
    /// datagram is dropped, after its fields were acted on.
    pub _fds: Vec<OwnedFd>,
}

impl NotifySocket {
    /// Binds a new socket in a fresh directory, mode 0700, under `$XDG_RUNTIME_DIR` or `/tmp`
    /// (after removing what masters that died there left behind). With `worker_user` (uid,
    /// gid), the socket is that user's to write to, in `/tmp`: the folder lets it through
    /// (0711), no more.
    ///
    /// # Errors
    /// The folder or the socket cannot be created.
    pub fn bind(worker_user: Option<(u32, u32)>) -> Result<NotifySocket> {
        // Another user cannot get through our runtime folder (0700): theirs goes in /tmp.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir() && worker_user.is_none())
            .unwrap_or_else(std::env::temp_dir);
        remove_stale_dirs(&base);
        let dir = private_dir(&base)?;
        let path = dir.join("notify");
        let bound = UnixDatagram::bind(&path).and_then(|sock| {
            sock.set_nonblocking(true)?;
            socket::setsockopt(&sock, sockopt::PassCred, &true)?;
            if let Some((uid, gid)) = worker_user {
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
            }
            Ok(sock)
        });
        match bound {
            Ok(sock) => Ok(NotifySocket { sock, dir, path }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(Error::io(
                    format!("cannot bind notify socket {}", path.display()),
                    e,
                ))
            }
        }
    }

    /// Takes over the notify socket of a master upgraded in place.
    pub fn adopt(fd: OwnedFd, dir: PathBuf, path: PathBuf) -> NotifySocket {
        NotifySocket {
            sock: UnixDatagram::from(fd),
            dir,
            path,
        }
    }

    /// The private directory holding the socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path workers get in `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket, to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The next datagram, or `None` when there is none waiting.
    pub fn recv(&self) -> Option<Datagram> {
        loop {
            match self.try_recv() {
                Ok(d) => return Some(d),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    tracing::debug!("notify socket: {e}");
                    return None;
                }
            }
        }
    }

    fn try_recv(&self) -> io::Result<Datagram> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; SCM_MAX_FD]);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = socket::recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)?;
        let mut pid = None;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = u32::try_from(cred.pid()).ok(),
                ControlMessageOwned::ScmRights(raw) => {
                    // SAFETY: the kernel just installed these descriptors in our table for us;
                    // nothing else refers to them, so we may own (and later close) them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
                _ => {}
            }
        }
        let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        if truncated {
            return Ok(Datagram {
                pid,
                text: String::new(),
                _fds: fds,
            });
        }
        buf.truncate(len);
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(Datagram {
            pid,
            text,
            _fds: fds,
        })
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        remove_own(&self.dir);
    }
}

/// The prefix of the notify folders, `master-process.PID.N`.
const DIR_PREFIX: &str = "master-process.";

/// Removes the notify folders of masters that died without cleaning up (a SIGKILL): ours
/// (same owner), holding nothing but a socket nobody is bound to any more. A folder with
/// anything else in it, or whose socket answers, is left alone.
fn remove_stale_dirs(base: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if !rest
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let dir = entry.path();
        let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == me);
        let socket = dir.join("notify");
        let is_socket = std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
        let only_ours = std::fs::read_dir(&dir).is_ok_and(|d| {
            d.flatten()
                .all(|e| e.file_name().to_str().is_some_and(own_file))
        });
        if !ours || !is_socket || !only_ours {
            continue;
        }
        let probe = UnixDatagram::unbound().and_then(|s| s.connect(&socket));
        if !matches!(&probe, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused) {
            continue;
        }
        if remove_own(&dir) {
            tracing::info!(
                "removed {}, left behind by a master that died",
                dir.display()
            );
        }
    }
}

/// Whether `name` is one of the files the master keeps in its private folder: the notify
/// socket, and the Node.js preload (see [`crate::node`]).
fn own_file(name: &str) -> bool {
    name == "notify" || crate::node::FILES.contains(&name)
}

/// Removes the master's files from its private folder, then the folder (which fails,
/// leaving it, if anything else is in it); whether it is gone.
fn remove_own(dir: &Path) -> bool {
    for name in std::iter::once("notify").chain(crate::node::FILES) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    std::fs::remove_dir(dir).is_ok()
}

/// Creates a new directory `master-process.PID.N` with mode 0700 under `base`.
fn private_dir(base: &Path) -> Result<PathBuf> {
    let pid = std::process::id();
    let mut last = None;
    for n in 0..100u32 {
        let dir = base.join(format!("{DIR_PREFIX}{pid}.{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot create a directory in {}", base.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::io(
        format!("cannot create a directory in {}", base.display()),
        last.unwrap_or_else(|| io::Error::other("too many attempts")),
    ))
}

/// The `KEY=VALUE` fields of a notify message; lines without `=` are skipped.
pub fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| line.split_once('='))
}

/// Sends `state` (`KEY=VALUE` lines) to the socket named by `NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is not set. Accepts a path or an abstract name
/// starting with `@`, as systemd does.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send_to(&target, state)?;
    Ok(true)
}

/// Sends `state` to the notify socket `target` (a path or `@abstract`).
pub fn send_to(target: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let bytes = target.as_encoded_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(target)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET must be an absolute path or start with @",
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_lines_at_the_first_equals_sign() {
        let f: Vec<_> = fields("READY=1\nSTATUS=a=b\ngarbage\n\n").collect();
        assert_eq!(f, vec![("READY", "1"), ("STATUS", "a=b")]);
    }

    #[test]
    fn datagrams_arrive_with_the_senders_pid_and_the_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let s = NotifySocket::bind(None).unwrap();
        let mode = std::fs::metadata(s.path().parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(s.recv().is_none());
        send_to(s.path().as_os_str(), "READY=1\nSTATUS=up").unwrap();
        let d = s.recv().unwrap();
        assert_eq!(d.pid, Some(std::process::id()));
        assert_eq!(d.text, "READY=1\nSTATUS=up");
        let dir = s.path().parent().unwrap().to_path_buf();
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn the_folder_goes_with_the_socket_and_the_preload_but_not_with_a_strangers_file() {
        let s = NotifySocket::bind(None).unwrap();
        let dir = s.dir().to_path_buf();
        crate::node::install_preload(&dir).unwrap();
        drop(s);
        assert!(!dir.exists());
        let s = NotifySocket::bind(None).unwrap();
        let dir = s.dir().to_path_buf();
        std::fs::write(dir.join("someone-elses"), "keep").unwrap();
        drop(s);
        assert!(dir.join("someone-elses").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folders_left_by_dead_masters_are_removed_and_nothing_else() {
        let base = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = base.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        // Left by a master that died: a socket nobody is bound to.
        let stale = make("master-process.999999.0");
        drop(UnixDatagram::bind(stale.join("notify")).unwrap());
        // A live master's.
        let live = make("master-process.1.0");
        let _live = UnixDatagram::bind(live.join("notify")).unwrap();
        // Not ours to judge: something else inside, or another name.
        let busy = make("master-process.999998.0");
        drop(UnixDatagram::bind(busy.join("notify")).unwrap());
        std::fs::write(busy.join("data"), "keep").unwrap();
        let other = make("master-process.x.0");
        drop(UnixDatagram::bind(other.join("notify")).unwrap());
        remove_stale_dirs(base.path());
        assert!(!stale.exists());
        assert!(live.join("notify").exists());
        assert!(busy.join("data").exists());
        assert!(other.join("notify").exists());
    }

    #[test]
    fn abstract_and_relative_targets() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("master-process-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(format!("@{name}").as_ref(), "READY=1").unwrap();
        let mut buf = [0u8; 16];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(send_to("relative".as_ref(), "READY=1").is_err());
    }
}
