//! Listening sockets: what `--listen` says ([`ListenerSpec`]), the sockets the master holds
//! ([`ListenerSet`]), socket activation, the unix socket file lifecycle ([`mod@file`]), and one
//! non-blocking step on a client's stream ([`stream`]).
//!
//! The master binds every listener once and keeps it open for its whole life; workers
//! inherit it as fd 3, 4, ... (see [`crate::spawn`]). One socket means one accept queue
//! shared by every generation of workers, so a reload never loses a queued connection.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::str::FromStr;

use nix::sys::socket::{self, SockaddrStorage};

use crate::env;
use crate::error::{Error, Result};

pub mod file;
mod set;
pub mod stream;

pub(crate) use set::listen_tcp;
pub use set::{Listener, ListenerSet, Origin, UNNAMED, somaxconn};

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
    type Err = String;

    /// Parses `8080`, `127.0.0.1:8080`, `[::1]:8080`, `/run/app.sock`, `./app.sock` or
    /// `unix:app.sock`, each optionally prefixed by `name=`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, rest) = match s.split_once('=') {
            Some((name, rest)) if !name.contains('/') => (Some(name), rest),
            _ => (None, s),
        };
        if let Some(name) = name {
            validate_name(name)?;
        }
        Ok(ListenerSpec {
            name: name.map(str::to_string),
            addr: parse_addr(rest)?,
        })
    }
}

impl ListenerSpec {
    /// Parses `PORT` as the reference did: a port number, or a unix socket path starting
    /// with `/`.
    pub fn from_port_env(value: &str) -> std::result::Result<ListenerSpec, String> {
        let addr = if value.starts_with('/') {
            ListenAddr::Unix(PathBuf::from(value))
        } else {
            ListenAddr::Port(parse_port(value)?)
        };
        Ok(ListenerSpec { name: None, addr })
    }
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

/// Whether this process was started by socket activation: `LISTEN_FDS` set and
/// `LISTEN_PID` equal to our pid.
pub fn activated() -> bool {
    std::env::var(env::LISTEN_PID)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id())
        && std::env::var_os(env::LISTEN_FDS).is_some()
}

/// A new TCP socket for `addr`'s family: close-on-exec, `SO_REUSEADDR` (so that an address
/// whose old socket stopped listening can be bound again while workers still hold it), and
/// for IPv6 `IPV6_V6ONLY` as given (`None`: the system's default).
///
/// # Errors
/// The socket cannot be made.
pub fn tcp_socket(addr: SocketAddr, v6only: Option<bool>) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, sockopt};
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if let (true, Some(v6only)) = (addr.is_ipv6(), v6only) {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6only)?;
    }
    Ok(fd)
}

/// Whether descriptor `fd` is open in this process.
pub fn is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) on any number only reports whether it is open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes the sockets passed to this process with the `LISTEN_FDS` protocol: fds 3, 4, ...,
/// named by `LISTEN_FDNAMES` (`unknown` when unnamed), made close-on-exec so that our own
/// children do not inherit them. Strict, as libsystemd is: `LISTEN_PID` must be our pid.
pub fn take_listen_fds() -> Result<Vec<(Option<String>, OwnedFd)>> {
    use std::os::fd::FromRawFd;
    let fail = |reason: String| Error::Activation { reason };
    let pid = std::process::id();
    let listen_pid =
        std::env::var(env::LISTEN_PID).map_err(|_| fail("LISTEN_PID is not set".into()))?;
    if listen_pid.parse::<u32>().ok() != Some(pid) {
        return Err(fail(format!(
            "LISTEN_PID is {listen_pid}, not this process ({pid}): these sockets are not ours"
        )));
    }
    let count: usize = std::env::var(env::LISTEN_FDS)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n <= 1024)
        .ok_or_else(|| fail("LISTEN_FDS is missing or not a number of sockets".into()))?;
    let names: Vec<String> = std::env::var(env::LISTEN_FDNAMES)
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = Vec::with_capacity(count);
    for i in 0..count {
        let raw = 3 + i as i32;
        if !is_open(raw) {
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
            .filter(|n| !n.is_empty() && *n != UNNAMED)
            .cloned();
        fds.push((name, fd));
    }
    Ok(fds)
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
            let e = bad.parse::<ListenerSpec>().unwrap_err();
            assert!(e.contains("expected") || e.contains("name"), "{bad}: {e}");
        }
    }

    #[test]
    fn port_env_is_a_port_or_an_absolute_path() {
        let port = |v| ListenerSpec::from_port_env(v);
        assert_eq!(port("3000").unwrap().addr, ListenAddr::Port(3000));
        assert_eq!(
            port("/tmp/x.sock").unwrap().addr,
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert!(port("99999").unwrap_err().contains("65535"));
    }
}
