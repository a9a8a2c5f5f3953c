//! Getting the listening sockets: inherited through `LISTEN_FDS`, or bound ourselves
//! (bare mode, `TW_BIND` / `PORT`).
//!
//! An inherited listener is shared with the master and with other workers: we only ever close
//! our own descriptor, never `shutdown()` it and never `listen()` on it again (that would
//! reset the shared backlog).

use std::env;
use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// A fatal start-up error: the message and the exit code.
pub struct Fatal {
    /// Exit code: 2 for usage errors, 3 for a `LISTEN_PID` mismatch, 1 for system errors.
    pub code: i32,
    /// The whole line to print on stderr.
    pub message: String,
}

fn fatal(code: i32, message: impl Into<String>) -> Fatal {
    Fatal {
        code,
        message: message.into(),
    }
}

/// A listening socket, TCP or unix stream.
pub enum Socket {
    /// AF_INET or AF_INET6.
    Tcp(TcpListener),
    /// AF_UNIX.
    Unix(UnixListener),
}

/// An accepted connection.
pub enum Conn {
    /// From a TCP listener (TCP_NODELAY set).
    Tcp(TcpStream),
    /// From a unix listener.
    Unix(UnixStream),
}

impl Conn {
    /// Sets the timeout of every read.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(timeout),
            Conn::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sends our FIN (this is a connection, not the shared listener).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One listener we serve.
pub struct Listener {
    /// Its name from `LISTEN_FDNAMES` (`unknown` if none), or `bare`.
    pub name: String,
    /// Its address for logs: `127.0.0.1:8080` or `unix:/path`.
    pub local: String,
    /// The descriptor number as inherited or bound.
    pub fd: RawFd,
    /// The socket; dropping it closes our descriptor only.
    pub socket: Socket,
    /// A socket file we created in bare mode, removed at exit.
    pub created_file: Option<PathBuf>,
}

impl Listener {
    /// Accepts one connection (the listener is non-blocking).
    pub fn accept(&self) -> io::Result<Conn> {
        match &self.socket {
            Socket::Tcp(l) => {
                let (stream, _) = l.accept()?;
                // Failing to set it only costs latency; the connection is still good.
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
            Socket::Unix(l) => l.accept().map(|(stream, _)| Conn::Unix(stream)),
        }
    }

    /// Closes our descriptor (never `shutdown()`), and removes a socket file we created.
    pub fn close(self) {
        if let Some(path) = &self.created_file {
            let _ = std::fs::remove_file(path);
        }
        drop(self.socket);
    }
}

/// Takes the inherited listeners if `LISTEN_FDS` is set, else binds `TW_BIND` or `PORT`.
pub fn take_or_bind(pid: u32) -> Result<Vec<Listener>, Fatal> {
    match env::var_os("LISTEN_FDS") {
        Some(n) => inherit(pid, &n.to_string_lossy()),
        None => bind_bare().map(|l| vec![l]),
    }
}

fn inherit(pid: u32, count: &str) -> Result<Vec<Listener>, Fatal> {
    let listen_pid = env::var("LISTEN_PID").unwrap_or_else(|_| "(unset)".into());
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Err(fatal(
            3,
            format!("test-worker: LISTEN_PID mismatch (got {listen_pid}, we are {pid})"),
        ));
    }
    let count: RawFd = match count.trim().parse() {
        Ok(n) if n > 0 => n,
        _ => return Err(fatal(2, format!("test-worker: invalid LISTEN_FDS={count}"))),
    };
    let names = env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':').filter(|_| !names.is_empty());
    let mut listeners = Vec::new();
    for fd in 3..3 + count {
        let name = names.next().unwrap_or("unknown").to_string();
        listeners.push(adopt(fd, name)?);
    }
    Ok(listeners)
}

/// Checks that `fd` is a listening stream socket and takes ownership of it.
fn adopt(fd: RawFd, name: String) -> Result<Listener, Fatal> {
    let bad = |what: String| fatal(2, format!("test-worker: fd {fd} ({name}): {what}"));
    // SAFETY: F_GETFD on any integer is harmless; it fails with EBADF if fd is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad(format!("not open: {}", io::Error::last_os_error())));
    }
    let ty = sockopt(fd, libc::SO_TYPE).map_err(|e| bad(format!("not a socket: {e}")))?;
    if ty != libc::SOCK_STREAM {
        return Err(bad(format!("not a stream socket (SO_TYPE {ty})")));
    }
    if sockopt(fd, libc::SO_ACCEPTCONN).map_err(|e| bad(e.to_string()))? == 0 {
        return Err(bad("not listening (SO_ACCEPTCONN is 0)".into()));
    }
    let family = family(fd).map_err(|e| bad(format!("getsockname: {e}")))?;
    if ![libc::AF_INET, libc::AF_INET6, libc::AF_UNIX].contains(&family) {
        return Err(bad(format!("unsupported address family {family}")));
    }
    // SAFETY: fd is open (checked above), was passed to us by LISTEN_FDS, and nothing else
    // in this process owns it; we take it exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(fd).map_err(|e| bad(format!("FD_CLOEXEC: {e}")))?;
    let (socket, local) = if family == libc::AF_UNIX {
        let l = UnixListener::from(owned);
        let local = l
            .local_addr()
            .map(|a| describe_unix(&a))
            .unwrap_or_default();
        (Socket::Unix(l), local)
    } else {
        let l = TcpListener::from(owned);
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        (Socket::Tcp(l), local)
    };
    // O_NONBLOCK lives on the open file description, shared with the master and the other
    // workers: harmless for them as long as nobody blocks in accept() on it.
    set_nonblocking(&socket).map_err(|e| bad(format!("O_NONBLOCK: {e}")))?;
    Ok(Listener {
        name,
        local,
        fd,
        socket,
        created_file: None,
    })
}

/// Bare mode: `TW_BIND` (`host:port`, `/path` or `unix:/path`), else `127.0.0.1:$PORT` or
/// a unix socket if `PORT` starts with `/`.
fn bind_bare() -> Result<Listener, Fatal> {
    let target = match (env::var("TW_BIND"), env::var("PORT")) {
        (Ok(bind), _) if !bind.is_empty() => bind,
        (_, Ok(port)) if port.starts_with('/') => port,
        (_, Ok(port)) if !port.is_empty() => match port.trim().parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => return Err(fatal(2, format!("test-worker: invalid PORT={port}"))),
        },
        _ => {
            return Err(fatal(
                2,
                "test-worker: no listener: LISTEN_FDS is not set, and neither TW_BIND \
                 (e.g. 127.0.0.1:8080 or /path/to.sock) nor PORT is",
            ));
        }
    };
    let failed = |e: io::Error| fatal(1, format!("test-worker: cannot listen on {target}: {e}"));
    let path = target.strip_prefix("unix:").unwrap_or(&target);
    let listener = if path.starts_with('/') {
        let path = PathBuf::from(path);
        let l = bind_unix(&path).map_err(failed)?;
        Listener {
            name: "bare".into(),
            local: format!("unix:{}", path.display()),
            fd: l.as_raw_fd(),
            socket: Socket::Unix(l),
            created_file: Some(path),
        }
    } else {
        let l = TcpListener::bind(&target).map_err(failed)?;
        Listener {
            name: "bare".into(),
            local: l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            fd: l.as_raw_fd(),
            socket: Socket::Tcp(l),
            created_file: None,
        }
    };
    // std listens with a backlog of 128 for TCP; use the same maximum as the master so bare
    // runs compare fairly. Calling listen() again on our own socket only updates the backlog.
    // SAFETY: the fd is our own, open, listening socket.
    unsafe { libc::listen(listener.fd, libc::SOMAXCONN) };
    set_nonblocking(&listener.socket).map_err(failed)?;
    Ok(listener)
}

/// Binds a unix socket, replacing a stale socket file that nobody listens on.
fn bind_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            let stale = matches!(UnixStream::connect(path), Err(e) if e.kind() == ErrorKind::ConnectionRefused);
            if !stale {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

fn set_nonblocking(socket: &Socket) -> io::Result<()> {
    match socket {
        Socket::Tcp(s) => s.set_nonblocking(true),
        Socket::Unix(s) => s.set_nonblocking(true),
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor we own; the result is checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes and len holds value's size.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writes and len holds addr's size.
    let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(addr.ss_family))
}

fn describe_unix(addr: &UnixAddr) -> String {
    if let Some(path) = addr.as_pathname() {
        format!("unix:{}", path.display())
    } else if let Some(name) = addr.as_abstract_name() {
        format!("unix:@{}", String::from_utf8_lossy(name))
    } else {
        "unix:(unnamed)".into()
    }
}
