//! Unix socket files: the one lifecycle shared by the listeners, the control socket and the
//! upgrade handover.
//!
//! - A socket file found at the path is removed only if it is *stale*: a connect to it is
//!   refused (`ECONNREFUSED`), so nobody accepts on it. A live socket, one we cannot tell
//!   about (`EACCES`: another user's), and a file that is not a socket are errors, and are
//!   never deleted.
//! - The file gets its permission bits at creation (the umask around `bind`), so it never
//!   exists with other permissions.
//! - A [`SocketFile`] knows its file by device and inode, and removes it on drop only if the
//!   path still names that file: never one that someone put there since.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{Mode, umask};

use crate::error::{Error, Result};

/// A unix socket file we created, removed on drop if it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    /// `None` once removed or let go.
    file: Option<Identity>,
}

/// A file, by path and identity on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Where it is.
    pub path: PathBuf,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
}

impl Identity {
    /// The identity of the file at `path` now, not following a symlink.
    pub fn of(path: &Path) -> io::Result<Identity> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Identity {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether the path still names this file.
    pub fn is_current(&self) -> bool {
        Identity::of(&self.path).is_ok_and(|now| now == *self)
    }
}

impl SocketFile {
    /// Takes care of a socket file this process created earlier (an upgrade in place).
    pub fn adopt(identity: Identity) -> SocketFile {
        SocketFile {
            file: Some(identity),
        }
    }

    /// The file's path and identity, unless it was removed or let go.
    pub fn identity(&self) -> Option<&Identity> {
        self.file.as_ref()
    }

    /// Lets the file be: it is not removed on drop.
    pub fn keep(&mut self) {
        self.file = None;
    }

    /// Removes the file if the path still names it. Idempotent.
    pub fn remove(&mut self) {
        let Some(file) = self.file.take() else { return };
        if !file.is_current() {
            if file.path.exists() {
                tracing::warn!(
                    "socket file {} was replaced by someone else; leaving it",
                    file.path.display()
                );
            }
            return;
        }
        match std::fs::remove_file(&file.path) {
            Ok(()) => tracing::debug!("removed socket file {}", file.path.display()),
            Err(e) => tracing::warn!("cannot remove socket file {}: {e}", file.path.display()),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds a unix stream socket at `path`, with permission bits `mode`, listening with
/// `backlog`. `what` names it in errors (`--listen ./app.sock`, `control socket ...`).
///
/// # Errors
/// The folder is missing, the path is taken (see the module rules), or the OS refuses.
pub fn bind_unix(
    what: &str,
    path: &Path,
    mode: u32,
    backlog: u32,
) -> Result<(OwnedFd, SocketFile)> {
    let fail = |reason: String, errno: Errno| Error::Bind {
        spec: what.to_string(),
        reason,
        source: io::Error::from(errno),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(fail(
            format!(
                "folder {} does not exist; create it first",
                parent.display()
            ),
            Errno::ENOENT,
        ));
    }
    let addr = UnixAddr::new(path).map_err(|e| {
        fail(
            "path too long: unix socket paths have at most 107 bytes".into(),
            e,
        )
    })?;
    clear_stale(path, &addr).map_err(|e| match e {
        Stale::NotASocket => Error::NotASocket {
            path: path.to_path_buf(),
        },
        Stale::Live => fail(
            "already in use: a live process accepts on this socket; stop it or choose another \
             path"
                .into(),
            Errno::EADDRINUSE,
        ),
        Stale::Unknown(e) => fail(
            format!(
                "it exists and cannot be checked ({}); it is left alone: remove it or choose \
                 another path",
                e.desc()
            ),
            e,
        ),
        Stale::Io(e) => Error::io(format!("cannot replace stale socket {}", path.display()), e),
    })?;

    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail(e.desc().to_string(), e))?;
    // The file gets its final mode at creation: bind() applies the umask to 0777, so a umask
    // of !mode yields exactly `mode`. The master is single-threaded while it binds.
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = socket::bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| {
        let reason = match e {
            Errno::EACCES | Errno::EPERM => format!(
                "permission denied in {}; run as a user who may write there",
                parent.display()
            ),
            Errno::EROFS => format!("{} is on a read-only file system", parent.display()),
            Errno::ENOSPC | Errno::EDQUOT => format!("no space left in {}", parent.display()),
            Errno::EADDRINUSE => "already in use: created by another process just now".into(),
            e => e.desc().to_string(),
        };
        fail(reason, e)
    })?;
    // We created the file a moment ago: from here on it is removed if anything fails.
    let identity = Identity::of(path)
        .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
    let file = SocketFile::adopt(identity);
    socket::listen(
        &fd,
        Backlog::new(backlog_arg(backlog)).unwrap_or(Backlog::MAXCONN),
    )
    .map_err(|e| fail(e.desc().to_string(), e))?;
    Ok((fd, file))
}

/// A backlog as `listen(2)` takes it.
pub fn backlog_arg(backlog: u32) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

/// Why a path cannot be bound.
enum Stale {
    /// It is not a socket: never deleted.
    NotASocket,
    /// Something accepts on it (or its queue is full).
    Live,
    /// Cannot tell (permission denied, ...): left alone.
    Unknown(Errno),
    /// It was stale but could not be removed.
    Io(io::Error),
}

/// Removes a stale socket file at `path`: one whose connect is refused.
fn clear_stale(path: &Path, addr: &UnixAddr) -> std::result::Result<(), Stale> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Stale::Io(e)),
        Ok(meta) if !meta.file_type().is_socket() => return Err(Stale::NotASocket),
        Ok(_) => {}
    }
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let probe = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None)
        .map_err(Stale::Unknown)?;
    match socket::connect(probe.as_raw_fd(), addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Err(Stale::Live),
        Err(Errno::ENOENT) => Ok(()),
        Err(Errno::ECONNREFUSED) => {
            std::fs::remove_file(path).map_err(Stale::Io)?;
            tracing::info!("removed stale socket file {}", path.display());
            Ok(())
        }
        Err(e) => Err(Stale::Unknown(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(path: &Path) -> Result<(OwnedFd, SocketFile)> {
        bind_unix("test", path, 0o640, 16)
    }

    #[test]
    fn a_socket_gets_its_mode_at_bind_and_is_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (fd, file) = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        drop(file);
        drop(fd);
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_but_live_socket_and_plain_file_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        drop(bind(&stale).unwrap());
        let live = dir.path().join("live.sock");
        let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = bind(&live).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        assert!(live.exists());
        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "precious").unwrap();
        let e = bind(&plain).unwrap_err();
        assert!(matches!(e, Error::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "precious");
    }

    #[test]
    fn a_socket_we_may_not_connect_to_is_left_alone() {
        // Only root can make a socket another user cannot connect to while we can look at
        // it; as any user, a socket file without write permission refuses our connect.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("theirs.sock");
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root ignores the mode: connect succeeds, the socket is live. Still kept.
            let e = bind(&path).unwrap_err();
            assert!(e.to_string().contains("already in use"), "{e}");
        } else {
            let e = bind(&path).unwrap_err();
            assert!(e.to_string().contains("left alone"), "{e}");
        }
        assert!(path.exists());
    }

    #[test]
    fn a_file_replaced_by_someone_else_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_fd, file) = bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }

    #[test]
    fn a_missing_folder_is_a_usage_error() {
        let e = bind(Path::new("/no/such/dir/a.sock")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
