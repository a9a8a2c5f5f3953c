//! One client connection over TCP or a Unix stream socket, with every
//! blocking step bounded by a deadline.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Target;
use crate::http::DeadlineRead;

/// A connected stream.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    } else {
        Ok(left)
    }
}

impl Conn {
    /// Connects to `target`, giving up at `deadline` with `TimedOut`.
    pub(crate) fn connect(target: &Target, deadline: Instant) -> io::Result<Conn> {
        match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, remaining(deadline)?)?;
                // The request is written in one piece; no reason to delay it.
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
            Target::Unix(path) => unix_connect(path, remaining(deadline)?).map(Conn::Unix),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Writes all of `data`, giving up at `deadline`. Never raises SIGPIPE.
    pub(crate) fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> io::Result<()> {
        while !data.is_empty() {
            let left = remaining(deadline)?;
            match self {
                Conn::Tcp(s) => s.set_write_timeout(Some(left))?,
                Conn::Unix(s) => s.set_write_timeout(Some(left))?,
            }
            // SAFETY: the fd is an open socket owned by `self` for the whole
            // call, and the pointer/length pair describes the live `data`
            // slice, which send only reads.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Whether an idle keep-alive connection may carry another request: the
    /// server has not closed or reset it and has sent nothing unasked.
    pub(crate) fn reusable(&self) -> bool {
        let mut byte = 0u8;
        loop {
            // SAFETY: the fd is an open socket owned by `self`; the buffer is
            // one writable byte on our stack. MSG_PEEK leaves the data queued
            // and MSG_DONTWAIT makes the call non-blocking.
            let n = unsafe {
                libc::recv(
                    self.fd(),
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                // 0: the server closed its side. >0: bytes nobody asked for.
                return false;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return true,
                _ => return false,
            }
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

impl DeadlineRead for Conn {
    fn arm_read(&mut self, deadline: Instant) -> io::Result<()> {
        let left = remaining(deadline)?;
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(left)),
            Conn::Unix(s) => s.set_read_timeout(Some(left)),
        }
    }
}

/// `UnixStream::connect` can block forever when the listener's backlog is
/// full (Linux waits for room). This version bounds the wait with
/// `SO_SNDTIMEO`, which Linux applies to a blocking `connect` on a Unix
/// socket, and reports `TimedOut` when it expires.
fn unix_connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        // At least 1 µs: a zero timeval would mean "wait forever".
        tv_usec: (timeout
            .subsec_micros()
            .max(u32::from(timeout.as_secs() == 0))) as libc::suseconds_t,
    };
    // SAFETY: `fd` is a valid socket; the option value points to a live
    // timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }

    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable unix socket path {}", path.display()),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len =
        (std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1) as libc::socklen_t;

    loop {
        // SAFETY: `fd` is a valid socket and `addr`/`len` describe a live,
        // NUL-terminated sockaddr_un.
        let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        if rc == 0 {
            return Ok(UnixStream::from(fd));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) if Instant::now() < deadline => continue,
            // The send timeout expired while the backlog stayed full.
            Some(libc::EAGAIN | libc::EINPROGRESS | libc::EINTR) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out (listen backlog full)",
                ));
            }
            _ => return Err(e),
        }
    }
}
