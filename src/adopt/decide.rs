//! The decision: what to answer to one trapped `bind`, `listen` or `unlink`, from facts
//! gathered about the request and the sockets the master holds. Pure: no descriptor, no
//! process, no clock, so that every rule is a unit test.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A file's identity: device and inode, as `stat(2)` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// A socket the master holds, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The master's index for this listener (its `--listen` order).
    pub listener: usize,
    /// What it is bound to.
    pub addr: HeldAddr,
    /// The socket's inode: what `/proc/PID/fd/N` shows as `socket:[INODE]`.
    pub inode: u64,
    /// The `O_NONBLOCK` mode its first adopter chose, shared from then on by every holder
    /// (the flag belongs to the open file description, not to a descriptor).
    pub nonblock: Option<bool>,
    /// A listening TCP socket the master bound for `PORT` without knowing which address the
    /// app binds (`[::]` dual-stack): until a worker has served, a bind of another address
    /// of its port claims it rather than being refused.
    pub claimable: bool,
}

/// What a held socket is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldAddr {
    /// A listening TCP socket.
    Tcp {
        /// Its local address.
        addr: SocketAddr,
        /// `IPV6_V6ONLY` (meaningful for `[::]` only).
        v6only: bool,
    },
    /// A listening unix stream socket and the file it was bound to.
    Unix {
        /// The socket file's path (for messages).
        path: PathBuf,
        /// The socket file's identity.
        file: FileId,
    },
}

/// The address family of the app's socket (`SO_DOMAIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `AF_INET`.
    Inet,
    /// `AF_INET6`.
    Inet6,
    /// `AF_UNIX`.
    Unix,
    /// Anything else (`AF_NETLINK`, ...).
    Other(i32),
}

impl Family {
    /// From an `AF_*` value.
    pub fn from_raw(family: i32) -> Family {
        match family {
            libc::AF_INET => Family::Inet,
            libc::AF_INET6 => Family::Inet6,
            libc::AF_UNIX => Family::Unix,
            other => Family::Other(other),
        }
    }
}

/// The app's socket, inspected through a duplicate of its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSocket {
    /// Its inode (a held socket's inode when a bind is restarted after an adoption).
    pub inode: u64,
    /// `SO_DOMAIN`.
    pub family: Family,
    /// `SO_TYPE == SOCK_STREAM`.
    pub stream: bool,
    /// `O_NONBLOCK` on its open file description.
    pub nonblock: bool,
    /// `IPV6_V6ONLY` (false for other families).
    pub v6only: bool,
}

/// Where a bind asks to bind, from the sockaddr read out of the app's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// An IPv4 or IPv6 address.
    Inet(SocketAddr),
    /// A unix socket path, resolved in the app's view of the file system: the file it names
    /// now, if any.
    Unix(Option<FileId>),
    /// Anything else: abstract or unnamed unix addresses, other families, short lengths.
    Other,
}

/// One trapped system call, with the facts the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `bind(fd, addr, len)`.
    Bind {
        /// The sockaddr.
        target: BindTarget,
        /// The socket behind `fd`.
        socket: AppSocket,
    },
    /// `listen(fd, backlog)`: the inode of the socket behind `fd`, if it is one.
    Listen {
        /// Its inode.
        inode: Option<u64>,
    },
    /// `unlink(path)` or `unlinkat(dirfd, path, 0)`: the file the path names now, if any.
    Unlink {
        /// The file.
        file: Option<FileId>,
    },
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install the held socket at the app's descriptor number and report success without
    /// running the bind.
    Adopt {
        /// The master's listener index.
        listener: usize,
    },
    /// The app's descriptor already is the held socket: a bind restarted after a signal
    /// interrupted an adoption, or a second bind. Report success.
    AlreadyAdopted {
        /// The master's listener index.
        listener: usize,
    },
    /// The first bind of a claimable port (`PORT` alone, before any worker served): bind
    /// exactly `addr` (its family, its `IPV6_V6ONLY`) in the master, listen, then adopt it.
    /// From then on it is an ordinary held listener.
    Claim {
        /// The master's listener index.
        listener: usize,
        /// The address the app asked for.
        addr: SocketAddr,
        /// The app socket's `IPV6_V6ONLY`.
        v6only: bool,
    },
    /// `listen` on a held socket: report success, keep the master's backlog.
    KeepListen {
        /// The master's listener index.
        listener: usize,
    },
    /// `unlink` of a held unix socket's file: report success, keep the file.
    KeepUnlink {
        /// The master's listener index.
        listener: usize,
    },
    /// Not ours: let the kernel run the call as the app made it.
    Continue,
    /// A held port asked for in a way the master will not serve: fail the call with
    /// `EADDRINUSE` (what the app would have got anyway) and tell the user why.
    Refuse {
        /// The master's listener index.
        listener: usize,
        /// One line: what the app asked, what is held, what to do.
        reason: Refusal,
    },
}

/// Why a bind of a held port is refused. `Display` gives the line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another address family than the held socket's.
    Family {
        /// What the app asked for.
        asked: SocketAddr,
        /// The app socket's `IPV6_V6ONLY`.
        asked_v6only: bool,
        /// What the master holds.
        held: SocketAddr,
        /// The held socket's `IPV6_V6ONLY`.
        held_v6only: bool,
    },
    /// Another address of the same family (wider, narrower or elsewhere).
    Address {
        /// What the app asked for.
        asked: SocketAddr,
        /// What the master holds.
        held: SocketAddr,
    },
    /// `[::]` IPv6-only against dual-stack, or the reverse.
    V6Only {
        /// What the app asked for.
        asked: SocketAddr,
        /// The app socket's `IPV6_V6ONLY`.
        asked_v6only: bool,
    },
    /// Blocking against non-blocking, or the reverse.
    Blocking {
        /// Where (`127.0.0.1:8080`, `/run/app.sock`).
        held: String,
        /// The mode the app asked for.
        asked_nonblock: bool,
    },
}

/// The `--listen` value that binds exactly `addr` as the app does.
fn listen_flag(addr: &SocketAddr, v6only: bool) -> String {
    match addr {
        // A bare port is what binds [::] dual-stack (socket.rs).
        SocketAddr::V6(a) if a.ip().is_unspecified() && !v6only => a.port().to_string(),
        other => other.to_string(),
    }
}

/// The two `--listen` values that hold `a` and `b` side by side, when they can be: the
/// wildcard of each family on one port, the IPv6 one IPv6-only (what asyncio and Tornado bind
/// with no host).
fn side_by_side(a: (&SocketAddr, bool), b: (&SocketAddr, bool)) -> Option<String> {
    let ok = |(addr, v6only): (&SocketAddr, bool)| {
        addr.ip().is_unspecified() && (addr.is_ipv4() || v6only)
    };
    let flag = |(addr, v6only): (&SocketAddr, bool)| listen_flag(addr, v6only);
    (ok(a) && ok(b) && a.0.port() == b.0.port() && a.0.is_ipv4() != b.0.is_ipv4())
        .then(|| format!("--listen {} --listen {}", flag(b), flag(a)))
}

fn family_name(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Family {
                asked,
                asked_v6only,
                held,
                held_v6only,
            } => match side_by_side((asked, *asked_v6only), (held, *held_v6only)) {
                Some(both) => write!(
                    f,
                    "the app binds {asked} beside {held}, and the master holds only {held}: \
                     run the master with {both}"
                ),
                None => write!(
                    f,
                    "the app binds {asked} ({}) but the master holds {held} ({}): a socket of \
                 another family gives the app addresses it cannot read; run the master with \
                 --listen {}",
                    family_name(asked),
                    family_name(held),
                    listen_flag(asked, false),
                ),
            },
            Refusal::Address { asked, held } => write!(
                f,
                "the app binds {asked} but the master holds {held}: the master hands an app \
                 exactly the address it asked for, never a wider or another one; run the \
                 master with --listen {}",
                listen_flag(asked, false),
            ),
            Refusal::V6Only {
                asked,
                asked_v6only: true,
            } => {
                let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, asked.port()));
                let both = side_by_side((&v4, false), (asked, true)).unwrap_or_default();
                write!(
                    f,
                    "the app binds {asked} IPv6-only but the master holds it dual-stack (IPv4 \
                     too): if the app binds {v4} as well (asyncio and Tornado with no host do), \
                     run the master with {both}; otherwise let the app bind dual-stack, or pass \
                     it the socket with LISTEN_FDS"
                )
            }
            Refusal::V6Only {
                asked,
                asked_v6only: false,
            } => write!(
                f,
                "the app binds {asked} dual-stack but the master holds it IPv6-only: run the \
                 master with --listen {}",
                listen_flag(asked, false),
            ),
            Refusal::Blocking {
                held,
                asked_nonblock,
            } => {
                let (asked, shared) = if *asked_nonblock {
                    ("non-blocking", "blocking")
                } else {
                    ("blocking", "non-blocking")
                };
                write!(
                    f,
                    "the app wants {held} {asked} but it is already shared {shared} with \
                     another generation, and the mode belongs to the shared socket: a blocking \
                     generation would freeze a non-blocking one inside accept; make every \
                     generation use the same mode"
                )
            }
        }
    }
}

/// Two socket addresses are the same binding: same address, port and (IPv6) scope. The flow
/// label is not part of a binding.
fn same_binding(a: &SocketAddr, b: &SocketAddr) -> bool {
    match (a, b) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => a == b,
        (SocketAddr::V6(a), SocketAddr::V6(b)) => {
            a.ip() == b.ip() && a.port() == b.port() && a.scope_id() == b.scope_id()
        }
        _ => false,
    }
}

fn is_unspecified_v6(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

/// What to answer to `request`, given the sockets the master holds.
pub fn decide(request: &Request, held: &[Held]) -> Decision {
    match request {
        Request::Bind { target, socket } => decide_bind(target, socket, held),
        Request::Listen { inode: Some(inode) } => {
            held.iter()
                .find(|h| h.inode == *inode)
                .map_or(Decision::Continue, |h| Decision::KeepListen {
                    listener: h.listener,
                })
        }
        Request::Unlink { file: Some(file) } => held
            .iter()
            .find(|h| matches!(&h.addr, HeldAddr::Unix { file: f, .. } if f == file))
            .map_or(Decision::Continue, |h| Decision::KeepUnlink {
                listener: h.listener,
            }),
        Request::Listen { inode: None } | Request::Unlink { file: None } => Decision::Continue,
    }
}

/// Whether a bind to `target` could concern a held socket at all: a held port (not 0) or a
/// held unix socket's file. When it cannot, the call runs as asked without a look at the
/// socket (the cheap path most binds of a tree take).
pub fn concerns(target: &BindTarget, held: &[Held]) -> bool {
    match target {
        BindTarget::Inet(asked) => {
            asked.port() != 0
                && held.iter().any(|h| match &h.addr {
                    HeldAddr::Tcp { addr, .. } => addr.port() == asked.port(),
                    HeldAddr::Unix { .. } => false,
                })
        }
        BindTarget::Unix(Some(asked)) => held
            .iter()
            .any(|h| matches!(&h.addr, HeldAddr::Unix { file, .. } if file == asked)),
        BindTarget::Unix(None) | BindTarget::Other => false,
    }
}

/// Whether the last component of `path` is the name of a held unix socket's file: an `unlink`
/// or `bind` of any other name cannot concern it, and needs no `stat`. (Only the directory
/// entry matters: a hard link of another name is another entry.)
pub fn names_held_file(path: &[u8], held: &[Held]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.rsplit(|&b| b == b'/').next() else {
        return false;
    };
    held.iter().any(|h| match &h.addr {
        HeldAddr::Unix { path, .. } => path.file_name().is_some_and(|n| n.as_bytes() == name),
        _ => false,
    })
}

fn decide_bind(target: &BindTarget, socket: &AppSocket, held: &[Held]) -> Decision {
    // UDP, SEQPACKET, raw: never ours.
    if !socket.stream {
        return Decision::Continue;
    }
    if let Some(h) = held.iter().find(|h| h.inode == socket.inode) {
        return Decision::AlreadyAdopted {
            listener: h.listener,
        };
    }
    match target {
        BindTarget::Unix(Some(file)) if socket.family == Family::Unix => held
            .iter()
            .find(|h| matches!(&h.addr, HeldAddr::Unix { file: f, .. } if f == file))
            .map_or(Decision::Continue, |h| adopt(h, socket)),
        BindTarget::Inet(addr) => decide_inet(addr, socket, held),
        BindTarget::Unix(_) | BindTarget::Other => Decision::Continue,
    }
}

fn decide_inet(asked: &SocketAddr, socket: &AppSocket, held: &[Held]) -> Decision {
    let family_matches = match asked {
        SocketAddr::V4(_) => socket.family == Family::Inet,
        SocketAddr::V6(_) => socket.family == Family::Inet6,
    };
    // A sockaddr of another family than the socket: the kernel's error to give. Port 0: the
    // kernel picks a port, nobody can hold it.
    if !family_matches || asked.port() == 0 {
        return Decision::Continue;
    }
    let tcp = |h: &Held| match &h.addr {
        HeldAddr::Tcp { addr, v6only } => Some((*addr, *v6only)),
        _ => None,
    };
    if let Some(h) = held
        .iter()
        .find(|h| tcp(h).is_some_and(|(a, _)| same_binding(&a, asked)))
    {
        let held_v6only = tcp(h).is_some_and(|(_, v6only)| v6only);
        if is_unspecified_v6(asked) && held_v6only != socket.v6only {
            if h.claimable {
                return claim(h, asked, socket);
            }
            return Decision::Refuse {
                listener: h.listener,
                reason: Refusal::V6Only {
                    asked: *asked,
                    asked_v6only: socket.v6only,
                },
            };
        }
        return adopt(h, socket);
    }
    if let Some((h, (held_addr, held_v6only))) = held.iter().find_map(|h| {
        tcp(h)
            .filter(|(a, _)| a.port() == asked.port())
            .map(|held| (h, held))
    }) {
        if h.claimable {
            return claim(h, asked, socket);
        }
        let reason = if held_addr.is_ipv4() == asked.is_ipv4() {
            Refusal::Address {
                asked: *asked,
                held: held_addr,
            }
        } else {
            Refusal::Family {
                asked: *asked,
                asked_v6only: socket.v6only,
                held: held_addr,
                held_v6only,
            }
        };
        return Decision::Refuse {
            listener: h.listener,
            reason,
        };
    }
    Decision::Continue
}

fn claim(h: &Held, asked: &SocketAddr, socket: &AppSocket) -> Decision {
    Decision::Claim {
        listener: h.listener,
        addr: *asked,
        v6only: socket.v6only,
    }
}

fn adopt(h: &Held, socket: &AppSocket) -> Decision {
    match h.nonblock {
        Some(mode) if mode != socket.nonblock => Decision::Refuse {
            listener: h.listener,
            reason: Refusal::Blocking {
                held: match &h.addr {
                    HeldAddr::Tcp { addr, .. } => addr.to_string(),
                    HeldAddr::Unix { path, .. } => path.display().to_string(),
                },
                asked_nonblock: socket.nonblock,
            },
        },
        _ => Decision::Adopt {
            listener: h.listener,
        },
    }
}

/// A sockaddr as read from the app's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sockaddr {
    /// `AF_INET` or `AF_INET6`.
    Inet(SocketAddr),
    /// A unix socket path (bytes before the first NUL).
    UnixPath(Vec<u8>),
    /// Abstract or unnamed unix addresses, other families, lengths the kernel rejects.
    Other,
}

/// Parses the first `bytes` of a sockaddr whose declared length is `len`, for a socket of
/// family `socket_family` (the kernel reads an `AF_UNSPEC` + `INADDR_ANY` as `AF_INET` on an
/// `AF_INET` socket, for old programs).
pub fn parse_sockaddr(bytes: &[u8], len: usize, socket_family: Family) -> Sockaddr {
    let len = len.min(bytes.len());
    let bytes = &bytes[..len];
    let Some(family) = bytes.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
        return Sockaddr::Other;
    };
    let family = i32::from(family);
    let v4 = |bytes: &[u8]| {
        let port = u16::from_be_bytes([bytes[2], bytes[3]]);
        let ip = std::net::Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
        Sockaddr::Inet(SocketAddr::from((ip, port)))
    };
    match family {
        libc::AF_INET if len >= 16 => v4(bytes),
        libc::AF_UNSPEC if len >= 16 && socket_family == Family::Inet && bytes[4..8] == [0; 4] => {
            v4(bytes)
        }
        libc::AF_INET6 if len >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flowinfo = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            // sin6_scope_id came later (RFC 2553): the kernel accepts 24-byte addresses.
            let scope = bytes
                .get(24..28)
                .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            Sockaddr::Inet(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                flowinfo,
                scope,
            )))
        }
        libc::AF_UNIX if len > 2 && bytes[2] != 0 => {
            let path = &bytes[2..];
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Sockaddr::UnixPath(path[..end].to_vec())
        }
        _ => Sockaddr::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(listener: usize, addr: &str, v6only: bool) -> Held {
        Held {
            listener,
            addr: HeldAddr::Tcp {
                addr: addr.parse().unwrap(),
                v6only,
            },
            inode: 1000 + listener as u64,
            nonblock: None,
            claimable: false,
        }
    }

    const SOCK: FileId = FileId { dev: 8, ino: 77 };

    fn unix(listener: usize) -> Held {
        Held {
            listener,
            addr: HeldAddr::Unix {
                path: "/run/app.sock".into(),
                file: SOCK,
            },
            inode: 1000 + listener as u64,
            nonblock: None,
            claimable: false,
        }
    }

    fn claimable(listener: usize, addr: &str) -> Held {
        Held {
            claimable: true,
            ..tcp(listener, addr, false)
        }
    }

    #[test]
    fn a_port_bound_for_port_alone_is_claimed_by_the_first_other_address_and_adopted_as_is() {
        let held = [claimable(0, "[::]:8080")];
        let v4 = app(Family::Inet);
        assert_eq!(
            decide(&bind("0.0.0.0:8080", v4), &held),
            Decision::Claim {
                listener: 0,
                addr: "0.0.0.0:8080".parse().unwrap(),
                v6only: false
            }
        );
        assert!(matches!(
            decide(&bind("127.0.0.1:8080", v4), &held),
            Decision::Claim { .. }
        ));
        let v6only = AppSocket {
            v6only: true,
            ..app(Family::Inet6)
        };
        assert!(matches!(
            decide(&bind("[::]:8080", v6only), &held),
            Decision::Claim { v6only: true, .. }
        ));
        // What it holds already: adopted, not claimed.
        assert_eq!(
            decide(&bind("[::]:8080", app(Family::Inet6)), &held),
            Decision::Adopt { listener: 0 }
        );
        // Other ports stay none of its business.
        assert_eq!(decide(&bind("0.0.0.0:8081", v4), &held), Decision::Continue);
    }

    fn app(family: Family) -> AppSocket {
        AppSocket {
            inode: 1,
            family,
            stream: true,
            nonblock: false,
            v6only: false,
        }
    }

    fn bind(addr: &str, socket: AppSocket) -> Request {
        Request::Bind {
            target: BindTarget::Inet(addr.parse().unwrap()),
            socket,
        }
    }

    fn bind4(addr: &str) -> Request {
        bind(addr, app(Family::Inet))
    }

    fn bind6(addr: &str) -> Request {
        bind(addr, app(Family::Inet6))
    }

    fn refusal(d: Decision) -> Refusal {
        match d {
            Decision::Refuse { reason, .. } => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn the_exact_held_address_is_adopted() {
        let held = [tcp(0, "127.0.0.1:8080", false), tcp(1, "[::]:9090", false)];
        assert_eq!(
            decide(&bind4("127.0.0.1:8080"), &held),
            Decision::Adopt { listener: 0 }
        );
        // A dual-stack [::] matches an AF_INET6 [::] bind.
        assert_eq!(
            decide(&bind6("[::]:9090"), &held),
            Decision::Adopt { listener: 1 }
        );
    }

    #[test]
    fn another_family_is_refused_with_the_listen_to_use() {
        let held = [tcp(0, "[::]:8080", false)];
        let r = refusal(decide(&bind4("0.0.0.0:8080"), &held));
        assert!(matches!(r, Refusal::Family { .. }));
        assert!(r.to_string().contains("--listen 0.0.0.0:8080"), "{r}");
        // And the other way round: an IPv6 app is told the bare port (dual-stack).
        let held = [tcp(0, "0.0.0.0:8080", false)];
        let r = refusal(decide(&bind6("[::]:8080"), &held));
        assert!(matches!(r, Refusal::Family { .. }));
        assert!(r.to_string().ends_with("--listen 8080"), "{r}");
    }

    #[test]
    fn an_app_binding_both_wildcards_is_told_to_hold_both() {
        // asyncio and Tornado with no host: [::] IPv6-only, then 0.0.0.0, on one port.
        let held = [tcp(0, "[::]:8080", true)];
        let r = refusal(decide(&bind4("0.0.0.0:8080"), &held));
        assert!(matches!(r, Refusal::Family { .. }));
        assert!(
            r.to_string()
                .ends_with("--listen [::]:8080 --listen 0.0.0.0:8080"),
            "{r}"
        );
        let held = [tcp(0, "0.0.0.0:8080", false)];
        let v6only = bind(
            "[::]:8080",
            AppSocket {
                v6only: true,
                ..app(Family::Inet6)
            },
        );
        let r = refusal(decide(&v6only, &held));
        assert!(
            r.to_string()
                .ends_with("--listen 0.0.0.0:8080 --listen [::]:8080"),
            "{r}"
        );
        // Held dual-stack (--listen 8080): the IPv6-only bind is told the pair as well.
        let r = refusal(decide(&v6only, &[tcp(0, "[::]:8080", false)]));
        assert!(matches!(r, Refusal::V6Only { .. }));
        assert!(
            r.to_string()
                .contains("--listen [::]:8080 --listen 0.0.0.0:8080"),
            "{r}"
        );
    }

    #[test]
    fn an_address_is_never_widened() {
        for wide in ["0.0.0.0:8080", "[::]:8080"] {
            let held = [tcp(0, wide, false)];
            let r = refusal(decide(&bind4("127.0.0.1:8080"), &held));
            assert!(r.to_string().contains("--listen 127.0.0.1:8080"), "{r}");
        }
        // Nor narrowed, nor moved.
        let held = [tcp(0, "127.0.0.1:8080", false)];
        assert!(matches!(
            refusal(decide(&bind4("0.0.0.0:8080"), &held)),
            Refusal::Address { .. }
        ));
        let r = refusal(decide(&bind6("[::1]:8080"), &[tcp(0, "[::]:8080", false)]));
        assert!(matches!(r, Refusal::Address { .. }));
        assert!(r.to_string().contains("--listen [::1]:8080"), "{r}");
    }

    #[test]
    fn ipv6_only_must_match_on_the_wildcard() {
        let dual = [tcp(0, "[::]:8080", false)];
        let mut only = app(Family::Inet6);
        only.v6only = true;
        let r = refusal(decide(&bind("[::]:8080", only), &dual));
        assert_eq!(
            r,
            Refusal::V6Only {
                asked: "[::]:8080".parse().unwrap(),
                asked_v6only: true
            }
        );
        let v6only = [tcp(0, "[::]:8080", true)];
        assert!(
            refusal(decide(&bind6("[::]:8080"), &v6only))
                .to_string()
                .contains("--listen 8080")
        );
        assert_eq!(
            decide(&bind("[::]:8080", only), &v6only),
            Decision::Adopt { listener: 0 }
        );
        // A specific IPv6 address does not care.
        let held = [tcp(0, "[::1]:8080", false)];
        assert_eq!(
            decide(&bind("[::1]:8080", only), &held),
            Decision::Adopt { listener: 0 }
        );
    }

    #[test]
    fn the_first_adopter_fixes_o_nonblock() {
        let mut held = [tcp(0, "127.0.0.1:8080", false)];
        held[0].nonblock = Some(true);
        let r = refusal(decide(&bind4("127.0.0.1:8080"), &held));
        assert_eq!(
            r,
            Refusal::Blocking {
                held: "127.0.0.1:8080".into(),
                asked_nonblock: false
            }
        );
        assert!(r.to_string().contains("freeze"), "{r}");
        let mut nonblock = app(Family::Inet);
        nonblock.nonblock = true;
        assert_eq!(
            decide(&bind("127.0.0.1:8080", nonblock), &held),
            Decision::Adopt { listener: 0 }
        );
        held[0].nonblock = Some(false);
        assert!(matches!(
            refusal(decide(&bind("127.0.0.1:8080", nonblock), &held)),
            Refusal::Blocking {
                asked_nonblock: true,
                ..
            }
        ));
    }

    #[test]
    fn udp_and_port_zero_are_left_alone() {
        let held = [tcp(0, "127.0.0.1:8080", false)];
        let mut udp = app(Family::Inet);
        udp.stream = false;
        assert_eq!(
            decide(&bind("127.0.0.1:8080", udp), &held),
            Decision::Continue
        );
        assert_eq!(decide(&bind4("127.0.0.1:0"), &held), Decision::Continue);
        let claimable = [claimable(0, "[::]:8080")];
        assert_eq!(
            decide(&bind("0.0.0.0:8080", udp), &claimable),
            Decision::Continue
        );
    }

    #[test]
    fn anything_else_continues() {
        let held = [tcp(0, "127.0.0.1:8080", false), unix(1)];
        assert_eq!(decide(&bind4("127.0.0.1:9999"), &held), Decision::Continue);
        // A sockaddr of another family than the socket: the kernel's error to give.
        assert_eq!(
            decide(&bind("127.0.0.1:8080", app(Family::Inet6)), &held),
            Decision::Continue
        );
        let other = Request::Bind {
            target: BindTarget::Other,
            socket: app(Family::Other(libc::AF_NETLINK)),
        };
        assert_eq!(decide(&other, &held), Decision::Continue);
        let elsewhere = Request::Bind {
            target: BindTarget::Unix(Some(FileId { dev: 8, ino: 78 })),
            socket: app(Family::Unix),
        };
        assert_eq!(decide(&elsewhere, &held), Decision::Continue);
        let missing = Request::Bind {
            target: BindTarget::Unix(None),
            socket: app(Family::Unix),
        };
        assert_eq!(decide(&missing, &held), Decision::Continue);
        assert_eq!(
            decide(&Request::Listen { inode: Some(5) }, &held),
            Decision::Continue
        );
        assert_eq!(
            decide(&Request::Listen { inode: None }, &held),
            Decision::Continue
        );
        assert_eq!(
            decide(&Request::Unlink { file: None }, &held),
            Decision::Continue
        );
        assert_eq!(
            decide(
                &Request::Unlink {
                    file: Some(FileId { dev: 1, ino: 77 })
                },
                &held
            ),
            Decision::Continue
        );
    }

    #[test]
    fn only_binds_naming_a_held_port_or_file_are_worth_a_look() {
        let held = [
            tcp(0, "127.0.0.1:8080", false),
            claimable(1, "[::]:9090"),
            unix(2),
        ];
        let inet = |a: &str| BindTarget::Inet(a.parse().unwrap());
        for yes in ["127.0.0.1:8080", "[::]:8080", "0.0.0.0:9090"] {
            assert!(concerns(&inet(yes), &held), "{yes}");
        }
        for no in ["127.0.0.1:0", "[::]:0", "127.0.0.1:8081"] {
            assert!(!concerns(&inet(no), &held), "{no}");
        }
        assert!(concerns(&BindTarget::Unix(Some(SOCK)), &held));
        assert!(!concerns(
            &BindTarget::Unix(Some(FileId { dev: 8, ino: 1 })),
            &held
        ));
        assert!(!concerns(&BindTarget::Unix(None), &held));
        assert!(!concerns(&BindTarget::Other, &held));
    }

    #[test]
    fn only_paths_ending_in_a_held_socket_name_are_worth_a_stat() {
        let held = [tcp(0, "127.0.0.1:8080", false), unix(1)];
        for yes in [
            &b"/run/app.sock"[..],
            b"app.sock",
            b"../run/app.sock",
            b"/elsewhere/app.sock",
        ] {
            assert!(
                names_held_file(yes, &held),
                "{:?}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b"/run/app.sock/"[..],
            b"/run/app.sock.lock",
            b"/tmp/x",
            b"",
            b"/",
        ] {
            assert!(
                !names_held_file(no, &held),
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
        assert!(!names_held_file(b"app.sock", &held[..1]));
    }

    #[test]
    fn a_held_unix_path_is_adopted_listened_and_kept() {
        let held = [tcp(0, "127.0.0.1:8080", false), unix(1)];
        let req = Request::Bind {
            target: BindTarget::Unix(Some(SOCK)),
            socket: app(Family::Unix),
        };
        assert_eq!(decide(&req, &held), Decision::Adopt { listener: 1 });
        assert_eq!(
            decide(&Request::Listen { inode: Some(1001) }, &held),
            Decision::KeepListen { listener: 1 }
        );
        assert_eq!(
            decide(&Request::Unlink { file: Some(SOCK) }, &held),
            Decision::KeepUnlink { listener: 1 }
        );
    }

    #[test]
    fn a_bind_of_a_socket_already_adopted_is_done() {
        let held = [tcp(0, "127.0.0.1:8080", false)];
        let mut socket = app(Family::Inet);
        socket.inode = 1000;
        assert_eq!(
            decide(&bind("127.0.0.1:8080", socket), &held),
            Decision::AlreadyAdopted { listener: 0 }
        );
        assert_eq!(
            decide(&Request::Listen { inode: Some(1000) }, &held),
            Decision::KeepListen { listener: 0 }
        );
    }

    #[test]
    fn sockaddrs_are_parsed_as_the_kernel_reads_them() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            parse_sockaddr(&v4, 16, Family::Inet),
            Sockaddr::Inet("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_sockaddr(&v4, 15, Family::Inet),
            Sockaddr::Other,
            "too short"
        );
        assert_eq!(parse_sockaddr(&v4, 1, Family::Inet), Sockaddr::Other);

        // AF_UNSPEC + INADDR_ANY is AF_INET 0.0.0.0 on an AF_INET socket.
        let mut unspec = [0u8; 16];
        unspec[2..4].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(
            parse_sockaddr(&unspec, 16, Family::Inet),
            Sockaddr::Inet("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(parse_sockaddr(&unspec, 16, Family::Inet6), Sockaddr::Other);

        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        v6[24..28].copy_from_slice(&3u32.to_ne_bytes());
        let SocketAddr::V6(a) = (match parse_sockaddr(&v6, 28, Family::Inet6) {
            Sockaddr::Inet(a) => a,
            other => panic!("{other:?}"),
        }) else {
            panic!("not IPv6")
        };
        assert_eq!(
            (a.ip().to_string(), a.port(), a.scope_id()),
            ("::1".into(), 443, 3)
        );
        // RFC 2133's 24-byte sockaddr_in6, without scope.
        assert!(matches!(
            parse_sockaddr(&v6, 24, Family::Inet6),
            Sockaddr::Inet(_)
        ));

        let mut un = vec![0u8; 110];
        un[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        un[2..15].copy_from_slice(b"/run/app.sock");
        assert_eq!(
            parse_sockaddr(&un, 110, Family::Unix),
            Sockaddr::UnixPath(b"/run/app.sock".to_vec())
        );
        // Not NUL-terminated: the length ends it.
        assert_eq!(
            parse_sockaddr(&un, 2 + 8, Family::Unix),
            Sockaddr::UnixPath(b"/run/app".to_vec())
        );
        // Abstract and unnamed (autobind) addresses.
        un[2] = 0;
        assert_eq!(parse_sockaddr(&un, 110, Family::Unix), Sockaddr::Other);
        assert_eq!(parse_sockaddr(&un, 2, Family::Unix), Sockaddr::Other);
    }
}
