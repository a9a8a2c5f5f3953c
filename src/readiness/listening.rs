//! Zero-code readiness: seeing from `/proc` that a new worker serves the shared socket.
//!
//! A worker (or any of its descendants, so `sh -c` and `npm start` wrappers work) is
//! *serving* a listener when one of its threads is caught waiting on it:
//!
//! - blocked in `accept`/`accept4` on a descriptor that is the listening socket;
//! - blocked in `epoll_wait`/`epoll_pwait`/`epoll_pwait2` on an epoll set that holds the
//!   socket for input (`/proc/PID/fdinfo/EPFD`, matched by inode);
//! - blocked in `poll`/`ppoll`/`select`/`pselect6` on a set that holds it (read from
//!   `/proc/PID/mem`).
//!
//! Sockets are matched by inode, never by descriptor number: apps dup them. A loop so busy
//! that it is never caught waiting has, by then, accepted connections: the fallback counts
//! a descriptor whose local address is the listener's (an accepted connection, found with
//! `pidfd_getfd`) as proof of serving. A loop that merely *registered* the socket in an
//! epoll set and then blocked on something else (asyncio blocked by a slow call, say) is not
//! serving yet, and is not taken for ready.
//!
//! The probe runs only while some worker is starting, and backs off as the start drags on
//! ([`probe_interval`]): every millisecond at first, so that a fast starter is seen within a
//! few, then a twentieth of the time the worker has been starting, up to 50 ms, so that a
//! slow starter (a JVM, a big Node.js app, one that never gets ready) costs the master
//! almost nothing. An idle master does not poll at all. It needs the right to ptrace the workers (root, or the same
//! user with Yama's `ptrace_scope` at most 1); see [`check_access`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, SockaddrStorage, sockopt};

use super::Coverage;
use crate::procfs;
use crate::worker::Pid;

/// The shortest time between two looks at a starting worker.
pub const PROBE_MIN: Duration = Duration::from_millis(1);
/// The longest.
pub const PROBE_MAX: Duration = Duration::from_millis(50);

/// The time until the next look at a worker that has been starting for `age`: a twentieth
/// of it, between [`PROBE_MIN`] and [`PROBE_MAX`]. Seen ready at age `t`, a worker is seen
/// about `t / 40` late on average: 1 ms before 40 ms, 2.5 ms at 100 ms; a worker that never
/// gets ready costs about 20 + 20 ln(age / 20 ms) looks in its first second, then 20 a second.
pub fn probe_interval(age: Duration) -> Duration {
    (age / 20).clamp(PROBE_MIN, PROBE_MAX)
}
/// How often a starting worker's descriptors are searched for accepted connections. Under
/// load a worker's loop is rarely caught blocked, but it accepts at once: this is then what
/// sees it first, so it runs nearly as often as the thread check (it is cheap: the sockets
/// already found not to be accepted connections are remembered).
const CONNECTION_SCAN_INTERVAL: Duration = Duration::from_millis(2);
/// At most this many processes per worker tree are inspected.
const TREE_LIMIT: usize = 64;

/// A listening socket, as the probe recognises it.
#[derive(Debug, Clone)]
struct Watched {
    ino: u64,
    addr: Local,
}

/// A socket's local address, for telling accepted connections apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Inet(SocketAddr),
    Unix(PathBuf),
    Other,
}

/// What the probe knows about one starting worker.
#[derive(Debug, Default)]
struct Watch {
    /// Listener indexes seen served.
    seen: Vec<bool>,
    /// When the descriptors were last searched for accepted connections.
    last_scan: Option<Instant>,
    /// Socket inodes already found not to be accepted connections.
    not_ours: HashSet<u64>,
    /// Why detection may not work for this worker, if we found out.
    problem: Option<String>,
    /// When it is looked at next.
    due: Option<Instant>,
}

/// Watches starting workers for the moment they serve the listeners.
#[derive(Debug)]
pub struct ListenProbe {
    listeners: Vec<Watched>,
    coverage: Coverage,
    watches: HashMap<Pid, Watch>,
}

impl ListenProbe {
    /// A probe for these listening sockets.
    pub fn new<'a>(
        listeners: impl IntoIterator<Item = BorrowedFd<'a>>,
        coverage: Coverage,
    ) -> io::Result<Self> {
        let listeners = listeners
            .into_iter()
            .map(|fd| {
                let ino = nix::sys::stat::fstat(fd).map_err(io::Error::from)?.st_ino;
                Ok(Watched {
                    ino,
                    addr: local_addr(fd),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(ListenProbe {
            listeners,
            coverage,
            watches: HashMap::new(),
        })
    }

    /// Looks at every worker of `starting` (pid, start time) that is due; returns those now
    /// seen serving. Forgets workers that are no longer starting.
    pub fn check(&mut self, starting: &[(Pid, Instant)], now: Instant) -> Vec<Pid> {
        self.watches
            .retain(|pid, _| starting.iter().any(|(p, _)| p == pid));
        let mut ready = Vec::new();
        for &(pid, started) in starting {
            let n = self.listeners.len();
            let watch = self.watches.entry(pid).or_insert_with(|| Watch {
                seen: vec![false; n],
                ..Watch::default()
            });
            if watch.due.is_some_and(|due| due > now) {
                continue;
            }
            watch.due = Some(now + probe_interval(now.saturating_duration_since(started)));
            let tree = procfs::process_tree(pid, TREE_LIMIT);
            for &p in &tree {
                check_threads(p, &self.listeners, watch);
            }
            if !covered(&watch.seen, self.coverage)
                && watch
                    .last_scan
                    .is_none_or(|t| now >= t + CONNECTION_SCAN_INTERVAL)
            {
                watch.last_scan = Some(now);
                for &p in &tree {
                    scan_connections(p, &self.listeners, watch);
                }
            }
            if covered(&watch.seen, self.coverage) {
                self.watches.remove(&pid);
                ready.push(pid);
            }
        }
        ready
    }

    /// When the next of `starting` (pid, start time) is due for a look.
    pub fn next_due(&self, starting: &[(Pid, Instant)]) -> Option<Instant> {
        starting
            .iter()
            .map(|(pid, started)| {
                self.watches
                    .get(pid)
                    .and_then(|w| w.due)
                    .unwrap_or(*started)
            })
            .min()
    }

    /// Which listeners a worker must serve.
    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// Why the probe could not see worker `pid` serve, if it knows.
    pub fn problem(&self, pid: Pid) -> Option<&str> {
        self.watches.get(&pid).and_then(|w| w.problem.as_deref())
    }
}

fn covered(seen: &[bool], coverage: Coverage) -> bool {
    match coverage {
        Coverage::All => seen.iter().all(|&s| s),
        Coverage::Any => seen.iter().any(|&s| s),
    }
}

/// Marks the listeners that a thread of process `pid` is blocked waiting on.
fn check_threads(pid: Pid, listeners: &[Watched], watch: &mut Watch) {
    for tid in procfs::tasks(pid) {
        let path = std::path::PathBuf::from(format!("/proc/{pid}/task/{tid}/syscall"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                note_access_problem(watch, &path, &e);
                continue;
            }
        };
        let Some(call) = parse_syscall(&text) else {
            continue;
        };
        for ino in waited_inodes(pid, call) {
            if let Some(i) = listeners.iter().position(|l| l.ino == ino) {
                watch.seen[i] = true;
            }
        }
    }
}

fn note_access_problem(watch: &mut Watch, path: &std::path::Path, e: &io::Error) {
    if watch.problem.is_none() && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        watch.problem = Some(format!(
            "cannot read {}: {e} (a worker that changed its user, or a master without the right to ptrace it)",
            path.display()
        ));
    }
}

/// A thread's current system call, from `/proc/PID/task/TID/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// The system call number.
    pub nr: i64,
    /// Its first arguments.
    pub args: [u64; 3],
}

/// Parses `/proc/PID/task/TID/syscall`: `NR ARG1 .. ARG6 SP PC`, or `running`, or `-1 SP PC`.
pub fn parse_syscall(text: &str) -> Option<Syscall> {
    let mut f = text.split_ascii_whitespace();
    let nr: i64 = f.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 3];
    for a in &mut args {
        *a = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(Syscall { nr, args })
}

/// The kinds of wait that can be on a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `accept(fd, ..)`.
    Accept,
    /// `epoll_wait(epfd, ..)`.
    Epoll,
    /// `poll(fds, nfds, ..)`.
    Poll,
    /// `select(nfds, readfds, ..)`.
    Select,
}

fn wait_kind(nr: i64) -> Option<Wait> {
    let n = nr as libc::c_long;
    #[cfg(target_arch = "x86_64")]
    {
        if n == libc::SYS_accept {
            return Some(Wait::Accept);
        }
        if n == libc::SYS_epoll_wait {
            return Some(Wait::Epoll);
        }
        if n == libc::SYS_poll {
            return Some(Wait::Poll);
        }
        if n == libc::SYS_select {
            return Some(Wait::Select);
        }
    }
    match n {
        libc::SYS_accept4 => Some(Wait::Accept),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => Some(Wait::Epoll),
        libc::SYS_ppoll => Some(Wait::Poll),
        libc::SYS_pselect6 => Some(Wait::Select),
        _ => None,
    }
}

/// The socket inodes a thread of `pid` blocked in `call` waits on for input.
fn waited_inodes(pid: Pid, call: Syscall) -> Vec<u64> {
    let Some(kind) = wait_kind(call.nr) else {
        return Vec::new();
    };
    let fd_ino = |fd: u64| socket_inode(pid, fd);
    match kind {
        Wait::Accept => fd_ino(call.args[0]).into_iter().collect(),
        Wait::Epoll => std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", call.args[0]))
            .map(|info| epoll_input_inodes(&info))
            .unwrap_or_default(),
        Wait::Poll => {
            let nfds = call.args[1].min(4096) as usize;
            let Some(bytes) = read_mem(pid, call.args[0], nfds * 8) else {
                return Vec::new();
            };
            bytes
                .chunks_exact(8)
                .filter_map(|p| {
                    let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    let events = i16::from_ne_bytes([p[4], p[5]]);
                    (fd >= 0 && events & libc::POLLIN != 0)
                        .then(|| fd_ino(fd as u64))
                        .flatten()
                })
                .collect()
        }
        Wait::Select => {
            let nfds = call.args[0].min(65_536) as usize;
            if call.args[1] == 0 {
                return Vec::new();
            }
            let Some(set) = read_mem(pid, call.args[1], nfds.div_ceil(8)) else {
                return Vec::new();
            };
            (0..nfds)
                .filter(|&fd| set[fd / 8] & (1 << (fd % 8)) != 0)
                .filter_map(|fd| fd_ino(fd as u64))
                .collect()
        }
    }
}

/// The inodes an epoll set (its `fdinfo` text) watches for input (`EPOLLIN`).
pub fn epoll_input_inodes(fdinfo: &str) -> Vec<u64> {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let mut events = None;
            let mut ino = None;
            let mut it = l.split_ascii_whitespace();
            while let Some(key) = it.next() {
                match key {
                    "events:" => events = it.next().and_then(|v| u32::from_str_radix(v, 16).ok()),
                    k if k.starts_with("ino:") => ino = u64::from_str_radix(&k[4..], 16).ok(),
                    _ => {}
                }
            }
            (events? & libc::EPOLLIN as u32 != 0).then_some(ino?)
        })
        .collect()
}

/// The inode of descriptor `fd` of `pid` if it is a socket.
fn socket_inode(pid: Pid, fd: u64) -> Option<u64> {
    procfs::socket_inode(pid, i64::try_from(fd).ok()?)
}

fn read_mem(pid: Pid, addr: u64, len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// Searches the descriptors of `pid` for connections accepted from a listener.
fn scan_connections(pid: Pid, listeners: &[Watched], watch: &mut Watch) {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    let mut pidfd: Option<OwnedFd> = None;
    for entry in fds.flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if link.as_os_str() == "anon_inode:[io_uring]" && watch.problem.is_none() {
            watch.problem = Some("it uses io_uring, whose waits do not show in /proc".to_string());
        }
        let Some(ino) = procfs::parse_socket_link(link.as_os_str()) else {
            continue;
        };
        if watch.not_ours.contains(&ino) || listeners.iter().any(|l| l.ino == ino) {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pidfd.is_none() {
            match procfs::pidfd_open(pid) {
                Ok(p) => pidfd = Some(p),
                Err(_) => return,
            }
        }
        let Some(pf) = &pidfd else { return };
        let dup = match procfs::pidfd_getfd(pf.as_fd(), fd) {
            Ok(dup) => dup,
            Err(e) => {
                note_access_problem(watch, &entry.path(), &e);
                continue;
            }
        };
        match accepted_from(dup.as_fd(), listeners) {
            Some(i) => watch.seen[i] = true,
            None => {
                watch.not_ours.insert(ino);
            }
        }
    }
}

/// Which listener a connected socket was accepted from, by its local address. Only a
/// stream socket can be (a QUIC server's UDP socket on the same port is not). A socket
/// with no peer is no connection: a listener shut down in place (the claimable socket of
/// `PORT` that a claim replaced, still at the worker's fd 3) keeps its address but serves
/// nobody.
fn accepted_from(conn: BorrowedFd<'_>, listeners: &[Watched]) -> Option<usize> {
    // A listening socket has no peer either.
    if socket::getsockopt(&conn, sockopt::SockType) != Ok(socket::SockType::Stream)
        || socket::getpeername::<SockaddrStorage>(conn.as_raw_fd()).is_err()
    {
        return None;
    }
    let local = local_addr(conn);
    listeners
        .iter()
        .position(|l| same_endpoint(&l.addr, &local))
}

/// Whether a connection with local address `conn` was accepted on a listener bound to `listener`.
fn same_endpoint(listener: &Local, conn: &Local) -> bool {
    match (listener, conn) {
        (Local::Inet(l), Local::Inet(c)) => {
            l.port() == c.port()
                && (l.ip().is_unspecified() || l.ip().to_canonical() == c.ip().to_canonical())
        }
        (Local::Unix(l), Local::Unix(c)) => l == c,
        _ => false,
    }
}

fn local_addr(fd: BorrowedFd<'_>) -> Local {
    let Ok(addr) = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
        return Local::Other;
    };
    if let Some(a) = addr.as_sockaddr_in() {
        Local::Inet(SocketAddr::from(*a))
    } else if let Some(a) = addr.as_sockaddr_in6() {
        Local::Inet(SocketAddr::from(*a))
    } else if let Some(p) = addr.as_unix_addr().and_then(|u| u.path()) {
        Local::Unix(p.to_path_buf())
    } else {
        Local::Other
    }
}

/// Checks, before any worker starts, that the master may inspect its workers; returns why
/// not if it may not.
pub fn check_access() -> Result<(), String> {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let may_ptrace_anyone = has_cap_sys_ptrace();
    match scope {
        0 | 1 => Ok(()),
        2 if may_ptrace_anyone => Ok(()),
        n => Err(format!(
            "kernel.yama.ptrace_scope is {n}: the master may not read its workers' /proc entries{}",
            if n == 2 {
                " without CAP_SYS_PTRACE"
            } else {
                ""
            }
        )),
    }
}

fn has_cap_sys_ptrace() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.split_ascii_whitespace().nth(1)?, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines_parse_and_running_threads_do_not() {
        let s = parse_syscall("288 0x3 0x7ffd 0x0 0x80800 0x0 0x0 0x7ffd5 0x7f12\n").unwrap();
        assert_eq!(s.nr, 288);
        assert_eq!(s.args, [3, 0x7ffd, 0]);
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x7f12\n"), None);
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("7 0xzz"), None);
    }

    #[test]
    fn epoll_fdinfo_yields_the_inodes_watched_for_input() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:6b0e sdev:8\n\
            tfd:        9 events:        4 data:                9  pos:0 ino:6b0f sdev:8\n\
            tfd:       12 events: 80000001 data:                c  pos:0 ino:ff sdev:8\n";
        assert_eq!(epoll_input_inodes(info), vec![0x6b0e, 0xff]);
        assert!(epoll_input_inodes("garbage\ntfd: x").is_empty());
    }

    #[test]
    fn accepted_connections_match_their_listener_by_local_address() {
        let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "[::]:8080".parse().unwrap();
        let conn: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:45000".parse().unwrap();
        assert!(same_endpoint(&Local::Inet(l), &Local::Inet(conn)));
        assert!(same_endpoint(&Local::Inet(l), &Local::Inet(mapped)));
        assert!(same_endpoint(&Local::Inet(any), &Local::Inet(mapped)));
        assert!(!same_endpoint(&Local::Inet(l), &Local::Inet(client)));
        assert!(same_endpoint(
            &Local::Unix("/a".into()),
            &Local::Unix("/a".into())
        ));
        assert!(!same_endpoint(
            &Local::Unix("/a".into()),
            &Local::Inet(conn)
        ));
    }

    /// A thread blocked in accept(2) on a listener is seen; the same thread before it
    /// accepts is not.
    #[test]
    fn a_thread_blocked_in_accept_on_the_listener_is_seen_serving() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut probe = ListenProbe::new([listener.as_fd()], Coverage::All).unwrap();
        let me = std::process::id();
        assert!(
            probe
                .check(&[(me, Instant::now())], Instant::now())
                .is_empty(),
            "nobody waits yet"
        );
        let dup = listener.try_clone().unwrap();
        let waiter = std::thread::spawn(move || dup.accept().map(|_| ()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            if probe.check(&[(me, Instant::now())], Instant::now()) == vec![me] {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::yield_now();
        };
        let _ = std::net::TcpStream::connect(addr);
        waiter.join().unwrap().unwrap();
        assert!(
            seen,
            "a thread blocked in accept on a dup of the listener counts"
        );
    }

    /// The probe on `listener` sees nothing before `accept` (the client's own socket is no
    /// accepted connection), and sees this process serve once it accepted.
    fn accepting_proves_serving<C>(listener: BorrowedFd<'_>, accept: impl FnOnce() -> C) {
        let mut probe = ListenProbe::new([listener], Coverage::All).unwrap();
        let me = std::process::id();
        let started = Instant::now();
        assert!(probe.check(&[(me, started)], started).is_empty());
        let _conn = accept();
        let later = Instant::now() + CONNECTION_SCAN_INTERVAL;
        assert_eq!(probe.check(&[(me, started)], later), vec![me]);
    }

    #[test]
    fn an_accepted_connection_proves_serving() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        accepting_proves_serving(listener.as_fd(), || listener.accept().unwrap());
    }

    #[test]
    fn an_accepted_unix_connection_from_an_unnamed_client_proves_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        accepting_proves_serving(listener.as_fd(), || listener.accept().unwrap());
    }

    #[test]
    fn a_connected_udp_socket_on_the_listeners_port_is_no_accepted_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind(at).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(peer.local_addr().unwrap()).unwrap();
        let mut probe = ListenProbe::new([listener.as_fd()], Coverage::All).unwrap();
        let me = std::process::id();
        let started = Instant::now();
        let later = started + CONNECTION_SCAN_INTERVAL;
        assert!(probe.check(&[(me, started)], later).is_empty());
    }

    #[test]
    fn a_listener_shut_down_in_place_is_no_accepted_connection() {
        // What a claim under `PORT` alone leaves in a worker: the old listener, shut down,
        // at the address of the new one.
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let old = crate::adopt::bind_listener(any, false).unwrap();
        let SocketAddr::V4(at) = std::net::TcpListener::from(old.try_clone().unwrap())
            .local_addr()
            .unwrap()
        else {
            panic!("an IPv4 address")
        };
        socket::shutdown(old.as_raw_fd(), socket::Shutdown::Both).unwrap();
        let new = crate::adopt::bind_listener(at.into(), false).unwrap();
        let mut probe = ListenProbe::new([new.as_fd()], Coverage::All).unwrap();
        let me = std::process::id();
        let started = Instant::now();
        let later = started + CONNECTION_SCAN_INTERVAL;
        assert!(probe.check(&[(me, started)], later).is_empty());
        drop(old);
    }

    #[test]
    fn the_probe_looks_often_at_a_young_start_and_seldom_at_an_old_one() {
        let ms = Duration::from_millis;
        assert_eq!(probe_interval(Duration::ZERO), ms(1));
        assert_eq!(probe_interval(ms(20)), ms(1));
        assert_eq!(probe_interval(ms(100)), ms(5));
        assert_eq!(probe_interval(ms(60_000)), ms(50));
        // A worker that never gets ready, 5 s: a few hundred looks, not 5000.
        let mut t = Duration::ZERO;
        let mut looks = 0;
        while t < Duration::from_secs(5) {
            t += probe_interval(t);
            looks += 1;
        }
        assert!(looks < 300, "{looks} looks in 5 s");
    }

    #[test]
    fn a_worker_is_looked_at_only_when_due() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut probe = ListenProbe::new([listener.as_fd()], Coverage::All).unwrap();
        let me = std::process::id();
        let started = Instant::now();
        let old = started
            .checked_sub(Duration::from_secs(10))
            .unwrap_or(started);
        assert_eq!(probe.next_due(&[(me, started)]), Some(started));
        probe.check(&[(me, old)], started);
        assert_eq!(
            probe.next_due(&[(me, old)]),
            Some(started + PROBE_MAX),
            "a ten-second-old start is looked at every 50 ms"
        );
    }

    #[test]
    fn this_machine_lets_the_master_inspect_its_children() {
        assert_eq!(check_access(), Ok(()));
    }
}
