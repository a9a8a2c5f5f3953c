//! The master's listening sockets: each bound (or received) once and held for the master's
//! whole life, shared by every generation of workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, Backlog, SockType, SockaddrIn, SockaddrIn6, sockopt};

use super::file::{self, Identity, SocketFile};
use super::{ListenAddr, ListenerSpec, describe};
use crate::env;
use crate::error::{Error, Result};

/// The name a listener gets in `LISTEN_FDNAMES` when none is given (systemd's convention).
pub const UNNAMED: &str = "unknown";

/// Where a listening socket came from: what says whether it can be bound again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Bound by the master from this spec (a port 0 replaced by the port the kernel chose).
    Bound(ListenerSpec),
    /// `PORT` alone: bound `[::]` dual-stack by the master, which does not know yet which
    /// address the app binds; the first worker's bind of another address of the port claims
    /// it (see [`crate::adopt`]).
    Port(ListenerSpec),
    /// The address the first worker bound for `PORT`, bound by the master as the app asked.
    Adopted(ListenerSpec),
    /// Passed by the service manager (socket activation): not ours to bind.
    Activated,
}

impl Origin {
    /// Its name in status and the upgrade handover.
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Bound(_) => "bound",
            Origin::Port(_) => "port",
            Origin::Adopted(_) => "adopted",
            Origin::Activated => "activated",
        }
    }

    /// The origin of this [`Origin::name`], with its spec (none for `activated`).
    pub fn from_name(name: &str, spec: Option<ListenerSpec>) -> Option<Origin> {
        match (name, spec) {
            ("bound", Some(spec)) => Some(Origin::Bound(spec)),
            ("port", Some(spec)) => Some(Origin::Port(spec)),
            ("adopted", Some(spec)) => Some(Origin::Adopted(spec)),
            ("activated", None) => Some(Origin::Activated),
            _ => None,
        }
    }

    /// What binds it again, if it is ours to bind.
    pub fn spec(&self) -> Option<&ListenerSpec> {
        match self {
            Origin::Bound(spec) | Origin::Port(spec) | Origin::Adopted(spec) => Some(spec),
            Origin::Activated => None,
        }
    }
}

/// One listening socket held by the master.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// The name passed in `LISTEN_FDNAMES`, if one was given.
    name: Option<String>,
    /// What it listens on, as shown in logs (`127.0.0.1:8080`, `unix:/run/app.sock`).
    local: String,
    origin: Origin,
    /// The unix socket file we created for it, removed when the listener is dropped.
    file: Option<SocketFile>,
    /// False once it stopped listening (a worker called `shutdown()` on it).
    alive: bool,
}

impl Listener {
    /// Binds `spec` with `socket_mode` for a unix socket file and a queue of `backlog`.
    ///
    /// # Errors
    /// The address is taken, not allowed, or the path cannot be used: one line saying how
    /// to fix it.
    pub fn bind(spec: &ListenerSpec, socket_mode: u32, backlog: u32) -> Result<Listener> {
        let (fd, file) = match &spec.addr {
            ListenAddr::Port(port) => {
                let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port);
                let fd = match bind_tcp(any6, true, backlog) {
                    Err(Errno::EAFNOSUPPORT) => {
                        let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port);
                        bind_tcp(any4, false, backlog)
                    }
                    other => other,
                };
                (fd.map_err(|e| bind_error(spec, e))?, None)
            }
            ListenAddr::Tcp(addr) => (
                bind_tcp(*addr, false, backlog).map_err(|e| bind_error(spec, e))?,
                None,
            ),
            ListenAddr::Unix(path) => {
                let (fd, file) = file::bind_unix(&spec.to_string(), path, socket_mode, backlog)?;
                (fd, Some(file))
            }
        };
        let mut listener = Listener::adopt(spec.name.clone(), fd, Origin::Activated);
        listener.origin = Origin::Bound(listener.resolved(spec));
        listener.file = file;
        Ok(listener)
    }

    /// Takes a socket that already listens: from socket activation, or handed over by the
    /// master's previous image (with the socket file it created, if any).
    pub fn adopt(name: Option<String>, fd: OwnedFd, origin: Origin) -> Listener {
        Listener {
            local: describe(fd.as_fd()),
            fd,
            name,
            origin,
            file: None,
            alive: true,
        }
    }

    /// The same, with the unix socket file it was bound to.
    pub fn with_file(mut self, file: Option<SocketFile>) -> Listener {
        self.file = file;
        self
    }

    /// The name given to it, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name passed to workers in `LISTEN_FDNAMES` (`unknown` when unnamed).
    pub fn fd_name(&self) -> &str {
        self.name.as_deref().unwrap_or(UNNAMED)
    }

    /// What it listens on, e.g. `127.0.0.1:8080` or `unix:/run/app.sock`.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket file it removes on drop.
    pub fn file(&self) -> Option<&Identity> {
        self.file.as_ref().and_then(SocketFile::identity)
    }

    /// Whether it still listens.
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// The socket, for an app that owns it from now on: the socket file (if any) is left
    /// in place.
    pub fn into_fd(mut self) -> io::Result<OwnedFd> {
        if let Some(file) = self.file.as_mut() {
            file.keep();
        }
        self.fd.try_clone()
    }

    /// `spec` with a port 0 replaced by the port the kernel chose: what binds the same
    /// address again.
    fn resolved(&self, spec: &ListenerSpec) -> ListenerSpec {
        let port = socket::getsockname::<socket::SockaddrStorage>(self.fd.as_raw_fd())
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
}

/// Every listening socket of the master, in the order workers receive them (fd 3, 4, ...).
#[derive(Debug, Default)]
pub struct ListenerSet {
    listeners: Vec<Listener>,
    /// The accept queue asked of every listener.
    backlog: u32,
    /// Permission bits of the socket files we create.
    socket_mode: u32,
}

impl ListenerSet {
    /// A set of `listeners`, each with a queue of `backlog`.
    pub fn new(listeners: Vec<Listener>, backlog: u32, socket_mode: u32) -> ListenerSet {
        ListenerSet {
            listeners,
            backlog,
            socket_mode,
        }
    }

    /// Binds every spec, in order.
    ///
    /// # Errors
    /// The first listener that cannot be bound (those bound before are closed).
    pub fn bind(specs: &[ListenerSpec], socket_mode: u32, backlog: u32) -> Result<ListenerSet> {
        let listeners = specs
            .iter()
            .map(|spec| Listener::bind(spec, socket_mode, backlog))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListenerSet::new(listeners, backlog, socket_mode))
    }

    /// The sockets passed by socket activation (systemd, `systemd-socket-activate`), with
    /// their queue set to `backlog`; `None` when this process was not socket-activated.
    ///
    /// # Errors
    /// The sockets are not ours (`LISTEN_PID`), not open, or not listening stream sockets.
    pub fn from_activation(backlog: u32, socket_mode: u32) -> Result<Option<ListenerSet>> {
        if !super::activated() {
            return Ok(None);
        }
        let fds = super::take_listen_fds()?;
        if fds.is_empty() {
            return Err(Error::Activation {
                reason: "LISTEN_FDS is 0: the socket unit passed no socket".into(),
            });
        }
        let listeners = fds
            .into_iter()
            .enumerate()
            .map(|(i, (name, fd))| {
                let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
                let stream =
                    socket::getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
                if listening && stream {
                    Ok(Listener::adopt(name, fd, Origin::Activated))
                } else {
                    Err(Error::Activation {
                        reason: format!(
                            "fd {} is not a listening stream socket (Accept=no sockets only)",
                            3 + i
                        ),
                    })
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let set = ListenerSet::new(listeners, backlog, socket_mode);
        set.assert_backlog();
        Ok(Some(set))
    }

    /// The listeners, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Listener> {
        self.listeners.iter()
    }

    /// Listener `i`.
    pub fn get(&self, i: usize) -> Option<&Listener> {
        self.listeners.get(i)
    }

    /// The accept queue of every listener.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }

    /// The sockets, in order: what workers get as fd 3, 4, ...
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.listeners.iter().map(Listener::fd)
    }

    /// `LISTEN_FDS` and `LISTEN_FDNAMES` for these listeners.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let names: Vec<&str> = self.listeners.iter().map(Listener::fd_name).collect();
        [
            (env::LISTEN_FDS, self.listeners.len().to_string()),
            (env::LISTEN_FDNAMES, names.join(":")),
        ]
    }

    /// Asks `listen(fd, backlog)` again of every live listener. The socket is shared by the
    /// workers, so this restores the queue for everyone after a worker's own `listen()`
    /// shrank it (Node.js asks for 511).
    pub fn assert_backlog(&self) {
        let backlog = Backlog::new(file::backlog_arg(self.backlog)).unwrap_or(Backlog::MAXCONN);
        for l in self.listeners.iter().filter(|l| l.alive) {
            if let Err(e) = socket::listen(&l.fd, backlog) {
                tracing::debug!("cannot set the backlog of {}: {e}", l.local);
            }
        }
    }

    /// Listener `i` stopped listening: binds it again if it is ours to bind, else marks it
    /// dead.
    ///
    /// # Errors
    /// Why it cannot be bound again; it is then marked dead.
    pub fn rebind(&mut self, i: usize) -> std::result::Result<&Listener, String> {
        let Some(old) = self.listeners.get_mut(i) else {
            return Err(format!("no listener #{i}"));
        };
        let Some(spec) = old.origin.spec().cloned() else {
            old.alive = false;
            return Err("it was passed by socket activation: it is not ours to bind".into());
        };
        // The dead socket no longer listens, so its address can be bound again
        // (SO_REUSEADDR) while old workers still hold it; a unix socket file is found stale
        // and replaced by the new bind.
        if let Some(file) = old.file.as_mut() {
            file.keep();
        }
        let origin = old.origin.clone();
        match Listener::bind(&spec, self.socket_mode, self.backlog) {
            Ok(mut new) => {
                new.origin = origin;
                self.listeners[i] = new;
                Ok(&self.listeners[i])
            }
            Err(e) => {
                self.listeners[i].alive = false;
                Err(e.to_string())
            }
        }
    }

    /// Listener `i` is `PORT` alone (see [`Origin::Port`]).
    pub fn mark_port(&mut self, i: usize) {
        if let Some(l) = self.listeners.get_mut(i) {
            if let Origin::Bound(spec) = &l.origin {
                l.origin = Origin::Port(spec.clone());
            }
        }
    }

    /// Listener `i` was claimed by a worker's bind of `addr`: `fd` is the socket bound to it.
    pub fn claimed(&mut self, i: usize, fd: OwnedFd, addr: SocketAddr) {
        if let Some(l) = self.listeners.get_mut(i) {
            let spec = ListenerSpec {
                name: l.name.clone(),
                addr: ListenAddr::Tcp(addr),
            };
            *l = Listener::adopt(l.name.clone(), fd, Origin::Adopted(spec));
        }
    }
}

/// The kernel's largest accept queue (`net.core.somaxconn`), the default backlog.
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4096)
}

fn bind_tcp(
    addr: SocketAddr,
    dual_stack: bool,
    backlog: u32,
) -> std::result::Result<OwnedFd, Errno> {
    // A bare port is every address, IPv4 included; an explicit IPv6 address is IPv6 only (so
    // that `0.0.0.0:P` and `[::]:P` can both be listened on, as some apps want).
    let v6only = if dual_stack {
        Some(false)
    } else {
        addr.is_ipv6().then_some(true)
    };
    let backlog = Backlog::new(file::backlog_arg(backlog)).unwrap_or(Backlog::MAXCONN);
    listen_tcp(addr, v6only, backlog)
}

/// A listening TCP socket at exactly `addr` (close-on-exec, `SO_REUSEADDR`, `IPV6_V6ONLY`
/// as given): socket, bind, listen.
pub(crate) fn listen_tcp(
    addr: SocketAddr,
    v6only: Option<bool>,
    backlog: Backlog,
) -> std::result::Result<OwnedFd, Errno> {
    let fd = super::tcp_socket(addr, v6only)?;
    match addr {
        SocketAddr::V4(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    socket::listen(&fd, backlog)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenerSpec {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_bind_reports_the_real_port_and_refuses_a_port_in_use() {
        let l = Listener::bind(&spec("127.0.0.1:0"), 0o664, 128).unwrap();
        assert!(l.local().starts_with("127.0.0.1:") && !l.local().ends_with(":0"));
        let Origin::Bound(resolved) = l.origin() else {
            panic!("{:?}", l.origin())
        };
        assert_eq!(resolved.to_string(), l.local());
        let again = Listener::bind(&spec(l.local()), 0o664, 128).unwrap_err();
        assert_eq!(again.exit_code(), 2);
        assert!(again.to_string().contains("already in use"), "{again}");
    }

    #[test]
    fn unnamed_listeners_are_unknown_to_workers_only() {
        let set =
            ListenerSet::bind(&[spec("127.0.0.1:0"), spec("web=127.0.0.1:0")], 0o664, 16).unwrap();
        let [fds, names] = set.env();
        assert_eq!(fds, ("LISTEN_FDS", "2".to_string()));
        assert_eq!(names, ("LISTEN_FDNAMES", "unknown:web".to_string()));
        assert_eq!(set.get(0).unwrap().name(), None);
    }

    #[test]
    fn a_dead_listener_is_bound_again_at_the_same_address() {
        let mut set = ListenerSet::bind(&[spec("127.0.0.1:0")], 0o664, 16).unwrap();
        let local = set.get(0).unwrap().local().to_string();
        socket::shutdown(set.get(0).unwrap().fd().as_raw_fd(), socket::Shutdown::Both).unwrap();
        let rebound = set.rebind(0).unwrap();
        assert_eq!(rebound.local(), local);
        assert!(rebound.alive());
        std::net::TcpStream::connect(&local).unwrap();
    }

    #[test]
    fn an_explicit_ipv6_any_address_leaves_ipv4_to_another_listener() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 on this machine; nothing to test");
            return;
        }
        let v4 = Listener::bind(&spec("0.0.0.0:0"), 0o664, 16).unwrap();
        let port = v4.local().rsplit(':').next().unwrap().to_string();
        let v6 = Listener::bind(&spec(&format!("[::]:{port}")), 0o664, 16).unwrap();
        assert!(socket::getsockopt(&v6.fd(), sockopt::Ipv6V6Only).unwrap());
        let any = Listener::bind(&spec("0"), 0o664, 16).unwrap();
        assert!(!socket::getsockopt(&any.fd(), sockopt::Ipv6V6Only).unwrap());
    }

    #[test]
    fn somaxconn_is_read_from_the_kernel() {
        assert!(somaxconn() >= 128);
    }
}
