//! Listening sockets: specs, binding, and the unix socket file lifecycle.
//!
//! The master binds every listener once and keeps it open for its whole life; workers
//! inherit it as fd 3, 4, ... (see [`crate::spawn`]). One socket means one accept queue
//! shared by every generation of workers, so a reload never loses a queued connection.
//!
//! Unix socket files follow the rules a careful operator expects:
//! - a stale socket file (nobody accepts on it) is removed at start;
//! - a live socket is an "already in use" error, and a file that is not a socket is an
//!   error: neither is ever deleted;
//! - the mode (`--socket-mode`, default 0664) is set at bind, so the file never exists with
//!   other permissions;
//! - the file is removed on exit, only if it is still the one we created.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
    UnixAddr, sockopt,
};
use nix::sys::stat::{Mode, umask};

use crate::error::{Error, Result};

/// The name a listener gets in `LISTEN_FDNAMES` when none is given (systemd's convention).
pub const UNNAMED: &str = "unknown";

/// One `--listen` value: an optional name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The name passed in `LISTEN_FDNAMES` (`web` in `web=8080`).
    pub name: Option<String>,
    /// Where to listen.
    pub addr: ListenAddr,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A bare port: every address, IPv6 and IPv4 (`8080`).
    Port(u16),
    /// One TCP address (`127.0.0.1:8080`, `[::1]:8080`).
    Tcp(SocketAddr),
    /// A unix stream socket path (`/run/app.sock`).
    Unix(PathBuf),
}

impl FromStr for ListenerSpec {
    type Err = Error;

    /// Parses `8080`, `127.0.0.1:8080`, `[::1]:8080`, `/run/app.sock`, `./app.sock` or
    /// `unix:app.sock`, each optionally prefixed by `name=`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("--listen", s, reason);
        let (name, rest) = match s.split_once('=') {
            Some((name, rest)) if !name.contains('/') => (Some(name), rest),
            _ => (None, s),
        };
        if let Some(name) = name {
            validate_name(name).map_err(|reason| bad(&reason))?;
        }
        let addr = parse_addr(rest).map_err(|reason| bad(&reason))?;
        Ok(ListenerSpec {
            name: name.map(str::to_string),
            addr,
        })
    }
}

/// Parses `PORT` as the reference did: a port number, or a unix socket path starting with `/`.
pub fn parse_port_env(value: &str) -> Result<ListenerSpec> {
    let bad = |reason: &str| Error::invalid("PORT", value, reason);
    let addr = if value.starts_with('/') {
        ListenAddr::Unix(PathBuf::from(value))
    } else {
        ListenAddr::Port(parse_port(value).map_err(|reason| bad(&reason))?)
    };
    Ok(ListenerSpec { name: None, addr })
}

fn parse_addr(s: &str) -> std::result::Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
        return Ok(ListenAddr::Unix(PathBuf::from(s)));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return parse_port(s).map(ListenAddr::Port);
    }
    s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
        "expected a port (8080), an address (127.0.0.1:8080, [::1]:8080) or a unix socket \
         path (/run/app.sock), optionally named (web=8080)"
            .to_string()
    })
}

fn parse_port(s: &str) -> std::result::Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| "expected a port number between 0 and 65535".to_string())
}

fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("a listener name must have 1 to 255 characters".into());
    }
    if name.bytes().any(|b| b == b':' || !b.is_ascii_graphic()) {
        return Err("a listener name may not contain ':', spaces or control characters".into());
    }
    Ok(())
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}=")?;
        }
        fmt::Display::fmt(&self.addr, f)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Port(p) => write!(f, "{p}"),
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A bound, listening socket held by the master.
#[derive(Debug)]
pub struct Listener {
    name: String,
    /// What it listens on, as shown in logs (`127.0.0.1:8080`, `unix:/run/app.sock`).
    local: String,
    fd: OwnedFd,
    /// The socket file we created, removed when the listener is dropped.
    file: Option<SocketFile>,
}

/// A unix socket file we created, identified by device and inode.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listener {
    /// Binds `spec`; unix socket files get permission bits `socket_mode`.
    pub fn bind(spec: &ListenerSpec, socket_mode: u32) -> Result<Listener> {
        let name = spec.name.clone().unwrap_or_else(|| UNNAMED.to_string());
        match &spec.addr {
            ListenAddr::Port(port) => {
                let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port);
                match bind_tcp(any6, true) {
                    Err(Errno::EAFNOSUPPORT) => {
                        let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port);
                        bind_tcp(any4, false)
                    }
                    other => other,
                }
                .map_err(|e| bind_error(spec, e))
                .and_then(|fd| Listener::tcp(name, fd))
            }
            ListenAddr::Tcp(addr) => bind_tcp(*addr, false)
                .map_err(|e| bind_error(spec, e))
                .and_then(|fd| Listener::tcp(name, fd)),
            ListenAddr::Unix(path) => {
                bind_unix(spec, path, socket_mode).map(|(fd, file)| Listener {
                    name,
                    local: format!("unix:{}", path.display()),
                    fd,
                    file: Some(file),
                })
            }
        }
    }

    /// Adopts an already listening socket (socket activation, or a master upgraded in place).
    pub fn adopt(name: String, fd: OwnedFd) -> Listener {
        let local = describe(fd.as_fd());
        Listener {
            name,
            local,
            fd,
            file: None,
        }
    }

    /// Adopts an inherited socket and the unix socket file it was bound to, which is removed
    /// on drop if it is still that file (a master upgraded in place).
    pub fn adopt_with_file(
        name: String,
        fd: OwnedFd,
        path: PathBuf,
        dev: u64,
        ino: u64,
    ) -> Listener {
        let mut l = Listener::adopt(name, fd);
        l.file = Some(SocketFile { path, dev, ino });
        l
    }

    /// The socket file this listener removes on drop: (path, device, inode).
    pub fn file(&self) -> Option<(&Path, u64, u64)> {
        self.file.as_ref().map(|f| (f.path.as_path(), f.dev, f.ino))
    }

    fn tcp(name: String, fd: OwnedFd) -> Result<Listener> {
        let local = describe(fd.as_fd());
        Ok(Listener {
            name,
            local,
            fd,
            file: None,
        })
    }

    /// The name passed to workers in `LISTEN_FDNAMES`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it listens on, e.g. `127.0.0.1:8080` or `unix:/run/app.sock`.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, for an app that owns it from now on: the socket file (if any) is left
    /// in place.
    pub fn into_fd(mut self) -> io::Result<OwnedFd> {
        self.file = None;
        self.fd.try_clone()
    }

    /// `spec`, the spec this listener was bound from, with a port 0 replaced by the port the
    /// kernel chose: what binds the same address again.
    pub fn resolved(&self, spec: &ListenerSpec) -> ListenerSpec {
        let port = socket::getsockname::<SockaddrStorage>(self.fd.as_raw_fd())
            .ok()
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|a| a.port())
                    .or_else(|| a.as_sockaddr_in6().map(|a| a.port()))
            });
        let addr = match (&spec.addr, port) {
            (ListenAddr::Port(0), Some(p)) => ListenAddr::Port(p),
            (ListenAddr::Tcp(a), Some(p)) if a.port() == 0 => {
                ListenAddr::Tcp(SocketAddr::new(a.ip(), p))
            }
            (other, _) => other.clone(),
        };
        ListenerSpec {
            name: spec.name.clone(),
            addr,
        }
    }

    /// Stops caring for the socket file: it is not removed on drop.
    pub fn forget_file(&mut self) {
        self.file = None;
    }

    /// Removes the socket file if it is still the one we created. Idempotent.
    pub fn remove_file(&mut self) {
        let Some(file) = self.file.take() else { return };
        match std::fs::symlink_metadata(&file.path) {
            Ok(m) if m.dev() == file.dev && m.ino() == file.ino => {
                if let Err(e) = std::fs::remove_file(&file.path) {
                    tracing::warn!("cannot remove socket file {}: {e}", file.path.display());
                } else {
                    tracing::debug!("removed socket file {}", file.path.display());
                }
            }
            Ok(_) => tracing::warn!(
                "socket file {} was replaced by someone else; leaving it",
                file.path.display()
            ),
            Err(_) => tracing::debug!("socket file {} already gone", file.path.display()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.remove_file();
    }
}

/// Whether this process was started by socket activation: `LISTEN_FDS` set and
/// `LISTEN_PID` equal to our pid.
pub fn activated() -> bool {
    std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id())
        && std::env::var_os("LISTEN_FDS").is_some()
}

/// Takes the sockets passed to this process with the `LISTEN_FDS` protocol: fds 3, 4, ...,
/// named by `LISTEN_FDNAMES` (`unknown` when unnamed), made close-on-exec so that our own
/// children do not inherit them. Strict, as libsystemd is: `LISTEN_PID` must be our pid.
pub fn take_listen_fds() -> Result<Vec<(String, OwnedFd)>> {
    use std::os::fd::FromRawFd;
    let fail = |reason: String| Error::Activation { reason };
    let pid = std::process::id();
    let listen_pid =
        std::env::var("LISTEN_PID").map_err(|_| fail("LISTEN_PID is not set".into()))?;
    if listen_pid.parse::<u32>().ok() != Some(pid) {
        return Err(fail(format!(
            "LISTEN_PID is {listen_pid}, not this process ({pid}): these sockets are not ours"
        )));
    }
    let count: usize = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n <= 1024)
        .ok_or_else(|| fail("LISTEN_FDS is missing or not a number of sockets".into()))?;
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = Vec::with_capacity(count);
    for i in 0..count {
        let raw = 3 + i as i32;
        // SAFETY: fcntl(F_GETFD) on any number only reports whether it is open.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(fail(format!(
                "LISTEN_FDS is {count} but fd {raw} is not open"
            )));
        }
        // SAFETY: fd `raw` is open and, LISTEN_PID being our pid, was passed to this process
        // for it to own (the sd_listen_fds contract); nothing else in the process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::io("cannot set close-on-exec on an inherited socket", e))?;
        let name = names
            .get(i)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| UNNAMED.into());
        fds.push((name, fd));
    }
    Ok(fds)
}

/// The listening sockets passed by socket activation (systemd, `systemd-socket-activate`);
/// `None` when this process was not socket-activated.
pub fn activation_listeners() -> Result<Option<Vec<Listener>>> {
    if !activated() {
        return Ok(None);
    }
    let fds = take_listen_fds()?;
    if fds.is_empty() {
        return Err(Error::Activation {
            reason: "LISTEN_FDS is 0: the socket unit passed no socket".into(),
        });
    }
    fds.into_iter()
        .enumerate()
        .map(|(i, (name, fd))| {
            let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
            let stream =
                socket::getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
            if listening && stream {
                Ok(Listener::adopt(name, fd))
            } else {
                Err(Error::Activation {
                    reason: format!(
                        "fd {} is not a listening stream socket (Accept=no sockets only)",
                        3 + i
                    ),
                })
            }
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The `LISTEN_FDS` and `LISTEN_FDNAMES` values for these listeners (fds 3, 4, ...).
pub fn listen_env(listeners: &[Listener]) -> [(&'static str, String); 2] {
    let names: Vec<&str> = listeners.iter().map(Listener::name).collect();
    [
        ("LISTEN_FDS", listeners.len().to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
    ]
}

fn bind_tcp(addr: SocketAddr, dual_stack: bool) -> std::result::Result<OwnedFd, Errno> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            if dual_stack {
                socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            }
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?
        }
    }
    socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(fd)
}

fn bind_error(spec: &ListenerSpec, errno: Errno) -> Error {
    let reason = match errno {
        Errno::EADDRINUSE => "already in use: another process listens there; stop it or choose \
                              another port"
            .to_string(),
        Errno::EACCES => "permission denied: ports below 1024 need root or \
                          CAP_NET_BIND_SERVICE"
            .to_string(),
        Errno::EADDRNOTAVAIL => "this machine has no such address".to_string(),
        e => e.desc().to_string(),
    };
    Error::Bind {
        spec: spec.to_string(),
        reason,
        source: io::Error::from(errno),
    }
}

fn bind_unix(spec: &ListenerSpec, path: &Path, mode: u32) -> Result<(OwnedFd, SocketFile)> {
    let fail = |reason: String, errno: Errno| Error::Bind {
        spec: spec.to_string(),
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
            "path too long: unix socket paths have at most 107 bytes".to_string(),
            e,
        )
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => match probe_unix(&addr) {
            Probe::Live => {
                return Err(fail(
                    "already in use: a live process accepts on this socket; stop it or \
                     choose another path"
                        .to_string(),
                    Errno::EADDRINUSE,
                ));
            }
            Probe::Stale => {
                std::fs::remove_file(path).map_err(|e| {
                    Error::io(format!("cannot remove stale socket {}", path.display()), e)
                })?;
                tracing::info!("removed stale socket file {}", path.display());
            }
            Probe::Unknown(e) => {
                return Err(fail(
                    format!("cannot tell whether it is in use ({})", e.desc()),
                    e,
                ));
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot inspect {}", path.display()), e)),
    }

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
    let listening =
        socket::listen(&fd, Backlog::MAXCONN).map_err(|e| fail(e.desc().to_string(), e));
    let meta = listening.and_then(|()| {
        std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))
    });
    match meta {
        Ok(meta) => Ok((
            fd,
            SocketFile {
                path: path.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
            },
        )),
        Err(e) => {
            // We created the file a moment ago: do not leave it behind.
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// What a connect() to an existing socket file tells.
enum Probe {
    /// Something accepts on it (or its queue is full).
    Live,
    /// Nobody listens: safe to remove.
    Stale,
    /// Cannot tell (e.g. permission denied).
    Unknown(Errno),
}

fn probe_unix(addr: &UnixAddr) -> Probe {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let Ok(fd) = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None) else {
        return Probe::Unknown(Errno::last());
    };
    match socket::connect(fd.as_raw_fd(), addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Probe::Live,
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Probe::Stale,
        Err(e) => Probe::Unknown(e),
    }
}

/// A short description of a listening socket's local address.
pub fn describe(fd: BorrowedFd<'_>) -> String {
    match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(addr) => {
            if let Some(a) = addr.as_sockaddr_in() {
                SocketAddr::from(*a).to_string()
            } else if let Some(a) = addr.as_sockaddr_in6() {
                SocketAddr::from(*a).to_string()
            } else if let Some(a) = addr.as_unix_addr() {
                match (a.path(), a.as_abstract()) {
                    (Some(p), _) => format!("unix:{}", p.display()),
                    (None, Some(name)) => format!("unix:@{}", String::from_utf8_lossy(name)),
                    _ => "unix:(unnamed)".to_string(),
                }
            } else {
                "(unknown family)".to_string()
            }
        }
        Err(e) => format!("(getsockname: {})", e.desc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenerSpec {
        s.parse().unwrap()
    }

    #[test]
    fn specs_cover_ports_addresses_paths_and_names() {
        assert_eq!(spec("8080").addr, ListenAddr::Port(8080));
        assert_eq!(
            spec("127.0.0.1:80").addr,
            ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            spec("[::1]:80").addr,
            ListenAddr::Tcp("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            spec("/run/a.sock").addr,
            ListenAddr::Unix("/run/a.sock".into())
        );
        let named = spec("web=8080");
        assert_eq!(named.name.as_deref(), Some("web"));
        assert_eq!(named.addr, ListenAddr::Port(8080));
        assert_eq!(
            spec("unix:rel.sock").addr,
            ListenAddr::Unix("rel.sock".into())
        );
        assert_eq!(
            spec("/run/a=b.sock").addr,
            ListenAddr::Unix("/run/a=b.sock".into())
        );
        assert_eq!(spec("api=/run/a.sock").to_string(), "api=/run/a.sock");
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        for bad in [
            "99999",
            "",
            "localhost:80",
            "a:b=80",
            "=80",
            "web=",
            "1.2.3.4",
        ] {
            let e = bad.parse::<ListenerSpec>().unwrap_err().to_string();
            assert!(e.contains("--listen"), "{bad}: {e}");
        }
    }

    #[test]
    fn port_env_is_a_port_or_an_absolute_path() {
        assert_eq!(parse_port_env("3000").unwrap().addr, ListenAddr::Port(3000));
        assert_eq!(
            parse_port_env("/tmp/x.sock").unwrap().addr,
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        let e = parse_port_env("99999").unwrap_err().to_string();
        assert!(e.contains("PORT") && e.contains("65535"), "{e}");
    }

    #[test]
    fn tcp_bind_reports_the_real_port_and_refuses_a_port_in_use() {
        let l = Listener::bind(&spec("127.0.0.1:0"), 0o664).unwrap();
        assert!(l.local().starts_with("127.0.0.1:") && !l.local().ends_with(":0"));
        let again = Listener::bind(&spec(l.local()), 0o664).unwrap_err();
        assert_eq!(again.exit_code(), 2);
        assert!(again.to_string().contains("already in use"), "{again}");
    }

    #[test]
    fn unix_socket_gets_its_mode_at_bind_and_is_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&spec(path.to_str().unwrap()), 0o640).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        drop(l);
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_but_live_socket_and_plain_file_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Stale: a socket file whose listener is gone.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let l = Listener::bind(&spec(stale.to_str().unwrap()), 0o664).unwrap();
        drop(l);
        // Live: someone accepts on it.
        let live = dir.path().join("live.sock");
        let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = Listener::bind(&spec(live.to_str().unwrap()), 0o664).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        assert!(live.exists());
        // Not a socket: never deleted.
        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "precious").unwrap();
        let e = Listener::bind(&spec(plain.to_str().unwrap()), 0o664).unwrap_err();
        assert!(matches!(e, Error::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "precious");
    }

    #[test]
    fn socket_file_replaced_by_someone_else_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&spec(path.to_str().unwrap()), 0o664).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(l);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }

    #[test]
    fn missing_folder_is_a_usage_error() {
        let e = Listener::bind(&spec("/no/such/dir/a.sock"), 0o664).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
