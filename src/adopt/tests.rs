//! Real apps under the filter, driven by a small test-only master loop: hold a socket, spawn
//! the app with [`ChildFilter::install`] in `pre_exec`, feed its notifications to the engine
//! while waiting (with deadlines, never sleeps) for what the app prints or for a real HTTP
//! request to come back, then look at what the app holds in `/proc`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::decide::Refusal;
use super::filter::Unavailable;
use super::*;

/// How long any one step may take on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(30);

/// The static C fixture, compiled once per test binary (next to it, named by the source's
/// hash so that an edited source is rebuilt).
fn fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = include_str!("fixture.c");
        let hash = source.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let exe = dir.join(format!("adopt-fixture-{hash:016x}"));
        if exe.exists() {
            return exe;
        }
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let src = tmp.path().join("fixture.c");
        std::fs::write(&src, source).unwrap();
        let out = tmp.path().join("fixture");
        let status = Command::new("gcc")
            .args(["-static", "-pthread", "-O1", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("gcc is needed to build the static C fixture");
        assert!(status.success(), "gcc -static failed");
        // Atomic: parallel test binaries may race to the same name.
        std::fs::rename(&out, &exe).unwrap();
        exe
    })
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One app under the filter.
struct App {
    child: Child,
    notifier: Option<Notifier>,
    stdout: Option<ChildStdout>,
    lines: Vec<String>,
    partial: Vec<u8>,
}

impl App {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The test master: the held sockets, the apps, and every handled notification.
struct Driver {
    held: HeldSockets,
    apps: Vec<App>,
    handled: Vec<Handled>,
    /// Time spent in `Notifier::handle`, for the measurement.
    busy: Duration,
}

/// A finished-or-not background job whose end is pollable: its thread drops the write end of
/// a pipe when done.
struct Background<T> {
    thread: std::thread::JoinHandle<T>,
    done: OwnedFd,
}

fn background<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Background<T> {
    let (done, signal) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let thread = std::thread::spawn(move || {
        let result = job();
        drop(signal);
        result
    });
    Background { thread, done }
}

impl Driver {
    fn new() -> Driver {
        Driver {
            held: HeldSockets::new(),
            apps: Vec::new(),
            handled: Vec::new(),
            busy: Duration::ZERO,
        }
    }

    /// Holds a listener bound at `addr` as listener `listener`; returns its address.
    fn hold(&mut self, listener: usize, addr: &str, v6only: bool) -> SocketAddr {
        let fd = bind_listener(addr.parse().unwrap(), v6only).unwrap();
        self.held.hold(listener, fd).unwrap();
        match &self.held.held().last().unwrap().addr {
            HeldAddr::Tcp { addr, .. } => *addr,
            other => panic!("{other:?}"),
        }
    }

    fn inode(&self, listener: usize) -> u64 {
        notif::inode_of(self.held.fd(listener).unwrap()).unwrap()
    }

    /// Spawns `cmd` under a filter; returns the app's index.
    fn spawn(&mut self, cmd: Command, trap_unlink: bool) -> usize {
        let (filter, channel) = ChildFilter::new(trap_unlink).unwrap();
        self.spawn_with(cmd, filter, channel)
    }

    fn spawn_with(&mut self, mut cmd: Command, filter: ChildFilter, channel: OwnedFd) -> usize {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        // SAFETY: install() is async-signal-safe and allocation-free.
        unsafe { cmd.pre_exec(move || filter.install()) };
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let notifier = match receive(channel.as_fd()).unwrap() {
            Received::Listener(fd) => Notifier::new(fd).unwrap(),
            Received::Unavailable(why) => panic!("no adoption: {why}"),
        };
        let stdout = child.stdout.take().unwrap();
        nix::fcntl::fcntl(
            &stdout,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        self.apps.push(App {
            child,
            notifier: Some(notifier),
            stdout: Some(stdout),
            lines: Vec::new(),
            partial: Vec::new(),
        });
        self.apps.len() - 1
    }

    /// Runs the loop until `done` holds, handling notifications and reading the apps' output;
    /// `extra` is one more fd whose readiness (or hang-up) wakes the loop.
    fn run_until(
        &mut self,
        what: &str,
        extra: Option<BorrowedFd<'_>>,
        mut done: impl FnMut(&Driver) -> bool,
    ) {
        let deadline = Instant::now() + STEP;
        self.run_with(what, deadline, extra, &mut |d| done(d), &mut |_| {});
    }

    fn run_with(
        &mut self,
        what: &str,
        deadline: Instant,
        extra: Option<BorrowedFd<'_>>,
        done: &mut dyn FnMut(&Driver) -> bool,
        after_addfd: &mut dyn FnMut(&notif::Notification),
    ) {
        loop {
            if done(self) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                let lines: Vec<_> = self.apps.iter().map(|a| &a.lines).collect();
                panic!(
                    "timed out waiting for {what}; handled: {:#?}; app output: {lines:?}",
                    self.handled
                );
            }
            let mut fds = Vec::new();
            // (app index, is notifier) for each polled fd but the extra one.
            let mut owners = Vec::new();
            for (i, app) in self.apps.iter().enumerate() {
                if let Some(n) = &app.notifier {
                    fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
                    owners.push((i, true));
                }
                if let Some(out) = &app.stdout {
                    fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
                    owners.push((i, false));
                }
            }
            if let Some(fd) = extra {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let timeout = PollTimeout::try_from(deadline - now).unwrap_or(PollTimeout::MAX);
            poll(&mut fds, timeout).unwrap();
            let ready: Vec<_> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            for (&(i, notifier), revents) in owners.iter().zip(&ready) {
                let app = &mut self.apps[i];
                if notifier {
                    if revents.contains(PollFlags::POLLIN) {
                        let n = app.notifier.as_mut().unwrap();
                        let started = Instant::now();
                        let handled = n.handle_with(&mut self.held, after_addfd);
                        self.busy += started.elapsed();
                        if let Some(h) = handled {
                            self.handled.push(h);
                        }
                    } else if revents.contains(PollFlags::POLLHUP) {
                        app.notifier = None;
                    }
                } else if !revents.is_empty() {
                    let mut buf = [0u8; 4096];
                    match app.stdout.as_mut().unwrap().read(&mut buf) {
                        Ok(0) => app.stdout = None,
                        Ok(n) => {
                            app.partial.extend_from_slice(&buf[..n]);
                            while let Some(end) = app.partial.iter().position(|&b| b == b'\n') {
                                let line: Vec<u8> = app.partial.drain(..=end).collect();
                                app.lines
                                    .push(String::from_utf8_lossy(&line).trim_end().to_string());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("reading app output: {e}"),
                    }
                }
            }
        }
    }

    /// Waits for app `app` to print a line starting with `prefix`; returns it.
    fn line(&mut self, app: usize, prefix: &str) -> String {
        self.run_until(&format!("app {app} to print {prefix:?}"), None, |d| {
            d.apps[app].lines.iter().any(|l| l.starts_with(prefix))
        });
        let lines = &self.apps[app].lines;
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .clone()
    }

    /// Waits until `decision` was answered for some app.
    fn handled(&mut self, decision: Decision) {
        let what = format!("{decision:?}");
        self.run_until(&what, None, |d| {
            d.handled
                .iter()
                .any(|h| h.decision == decision && h.answer == Answer::Sent)
        });
    }

    /// Runs `job` in a thread while the loop keeps answering the apps; returns its result.
    fn meanwhile<T: Send + 'static>(
        &mut self,
        what: &str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let job = background(job);
        let done = job.done.as_fd();
        let mut finished = false;
        let mut pfd = |d: &Driver| {
            let _ = d;
            let mut p = [PollFd::new(done, PollFlags::POLLIN)];
            finished = finished || poll(&mut p, PollTimeout::ZERO).unwrap_or(0) > 0;
            finished
        };
        let deadline = Instant::now() + STEP;
        self.run_with(what, deadline, Some(done), &mut pfd, &mut |_| {});
        job.thread.join().unwrap()
    }

    /// A real HTTP GET to `addr`, answered by the app while the loop runs.
    fn get(&mut self, addr: SocketAddr) -> String {
        self.meanwhile(&format!("GET http://{addr}/"), move || http_get(addr))
    }
}

fn http_get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, STEP).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    exchange(&mut s)
}

fn exchange<S: Read + Write>(s: &mut S) -> String {
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The processes of process group `pgid`.
fn group(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| crate::procfs::read_stat(pid).is_ok_and(|s| s.pgrp == pgid))
        .collect()
}

/// The (pid, fd) in app group `pgid` whose descriptor is the socket `inode`.
fn holder(pgid: u32, inode: u64) -> Option<(u32, i32)> {
    group(pgid).into_iter().find_map(|pid| {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        dir.filter_map(|e| e.ok())
            .find_map(|e| {
                let link = std::fs::read_link(e.path()).ok()?;
                (crate::procfs::parse_socket_link(link.as_os_str()) == Some(inode))
                    .then(|| e.file_name().to_str()?.parse::<i32>().ok())
                    .flatten()
            })
            .map(|fd| (pid, fd))
    })
}

/// The Send-Q `ss` shows for the listener on `port`: its backlog.
fn backlog(port: u16) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The master's backlog survived the app's `listen(fd, small)`.
fn assert_backlog_kept(port: u16) {
    match backlog(port) {
        Some(b) => assert_eq!(b, somaxconn(), "Send-Q of port {port}"),
        None => eprintln!("not checking the backlog: `ss` is not installed"),
    }
}

fn fixture_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(fixture());
    cmd.args(args);
    cmd
}

fn sent(d: &Driver, decision: &Decision) -> usize {
    d.handled
        .iter()
        .filter(|h| &h.decision == decision && h.answer == Answer::Sent)
        .count()
}

#[test]
fn support_is_found_on_this_kernel() {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    if kernel_version(&release).is_some_and(|v| v >= (5, 9)) {
        assert_eq!(support(), Ok(()), "kernel {release}");
    } else {
        assert!(support().unwrap_err().contains(&release));
    }
}

#[test]
fn static_c_app_binding_ipv4_gets_the_masters_socket() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port]), false);
    assert_eq!(
        d.line(app, "bound"),
        format!("bound fd=3 port={port} signals=0")
    );
    d.line(app, "listening");
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 1);
    assert_eq!(sent(&d, &Decision::KeepListen { listener: 0 }), 1);

    // The app's fd 3 is the master's socket: its own bind never ran.
    let inode = d.inode(0);
    assert_eq!(
        holder(d.apps[app].pid(), inode),
        Some((d.apps[app].pid(), 3))
    );
    // Close-on-exec as the app asked (SOCK_CLOEXEC); blocking as it asked.
    let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", d.apps[app].pid())).unwrap();
    assert_ne!(
        notif::parse_fdinfo_flags(&info).unwrap() & libc::O_CLOEXEC,
        0
    );
    assert_eq!(d.held.held()[0].nonblock, Some(false));

    let reply = d.get(addr);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(
        reply.contains(&format!("local=127.0.0.1:{port}")),
        "{reply}"
    );
    assert_backlog_kept(addr.port());
    if nix::unistd::geteuid().is_root() {
        // With CAP_SYS_ADMIN the filter needs no no_new_privs: setuid still works in the tree.
        assert_eq!(no_new_privs(d.apps[app].pid()), "0");
    }
}

fn no_new_privs(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("NoNewPrivs:"));
    line.unwrap().trim().to_string()
}

#[test]
fn an_unprivileged_app_gets_no_new_privs_and_is_adopted() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to start the app as nobody");
        return;
    }
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let mut cmd = fixture_cmd(&["tcp", "127.0.0.1", &addr.port().to_string()]);
    // std switches user before pre_exec runs: install() then lacks CAP_SYS_ADMIN.
    cmd.uid(65534).gid(65534).current_dir("/");
    let app = d.spawn(cmd, false);
    d.line(app, "listening");
    let pid = d.apps[app].pid();
    assert_eq!(no_new_privs(pid), "1");
    assert_eq!(holder(pid, d.inode(0)), Some((pid, 3)));
    assert!(d.get(addr).contains(&format!("pid={pid}")));
}

#[test]
fn a_bind_from_a_thread_that_does_not_lead_its_group_is_adopted() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port, "thread"]), false);
    let tid: u32 = d
        .line(app, "listening")
        .split("tid=")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let pid = d.apps[app].pid();
    assert_ne!(tid, pid);
    assert!(d.handled.iter().all(|h| h.tid == tid));
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 1);
    assert_eq!(sent(&d, &Decision::KeepListen { listener: 0 }), 1);
    assert_eq!(holder(pid, d.inode(0)), Some((pid, 3)));
    assert!(d.get(addr).starts_with("HTTP/1.0 200"));
}

#[test]
fn python_binding_ipv4_gets_the_masters_socket() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &addr.port().to_string(),
    ])
    .current_dir(dir.path())
    .stderr(Stdio::null());
    let app = d.spawn(cmd, false);
    d.handled(Decision::KeepListen { listener: 0 });
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 1);
    let reply = d.get(addr);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.contains("Directory listing"), "{reply}");
    assert!(holder(d.apps[app].pid(), d.inode(0)).is_some());
    // http.server listens with a backlog of 5.
    assert_backlog_kept(addr.port());
}

#[test]
fn node_listening_on_a_port_gets_the_masters_dual_stack_socket() {
    if !have("node") {
        eprintln!("skipped: node is not installed");
        return;
    }
    let mut d = Driver::new();
    let addr = d.hold(0, "[::]:0", false);
    let script = format!(
        "require('http').createServer((q, s) => s.end('node ' + process.pid)).listen({})",
        addr.port()
    );
    let mut cmd = Command::new("node");
    cmd.args(["-e", &script]);
    let app = d.spawn(cmd, false);
    d.handled(Decision::KeepListen { listener: 0 });
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 1);
    let reply = d.get(SocketAddr::from(([127, 0, 0, 1], addr.port())));
    assert!(
        reply.contains(&format!("node {}", d.apps[app].pid())),
        "{reply}"
    );
    // Node asked for 511: the master's backlog stays.
    assert_backlog_kept(addr.port());
}

#[test]
fn node_listening_on_loopback_gets_the_masters_loopback_socket() {
    if !have("node") {
        eprintln!("skipped: node is not installed");
        return;
    }
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let script = format!(
        "require('http').createServer((q, s) => s.end('node')).listen({}, '127.0.0.1')",
        addr.port()
    );
    let mut cmd = Command::new("node");
    cmd.args(["-e", &script]);
    d.spawn(cmd, false);
    d.handled(Decision::KeepListen { listener: 0 });
    assert_eq!(d.get(addr).lines().last(), Some("node"));
}

#[test]
fn node_on_loopback_is_never_widened_to_every_address() {
    if !have("node") {
        eprintln!("skipped: node is not installed");
        return;
    }
    let mut d = Driver::new();
    let addr = d.hold(0, "[::]:0", false);
    let port = addr.port();
    let script = format!(
        "require('http').createServer().listen({port}, '127.0.0.1')\
         .on('error', e => {{ console.log('error ' + e.code); process.exit(1) }})"
    );
    let mut cmd = Command::new("node");
    cmd.args(["-e", &script]).stderr(Stdio::null());
    let app = d.spawn(cmd, false);
    assert_eq!(d.line(app, "error"), "error EADDRINUSE");
    let reason = d
        .handled
        .iter()
        .find_map(|h| match &h.decision {
            Decision::Refuse { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        reason.contains(&format!("--listen 127.0.0.1:{port}")),
        "{reason}"
    );
}

#[test]
fn another_family_on_a_held_port_is_refused_with_the_listen_to_use() {
    let mut d = Driver::new();
    let addr = d.hold(0, "[::]:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["tcp", "0.0.0.0", &port]), false);
    assert_eq!(d.line(app, "bind"), "bind errno=98");
    let refusal = d.handled.iter().find_map(|h| match &h.decision {
        Decision::Refuse { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let Some(reason @ Refusal::Family { .. }) = refusal else {
        panic!("{refusal:?}")
    };
    assert!(
        reason
            .to_string()
            .contains(&format!("--listen 0.0.0.0:{port}")),
        "{reason}"
    );
}

#[test]
fn loopback_is_never_widened_to_a_held_wildcard() {
    let mut d = Driver::new();
    let addr = d.hold(0, "0.0.0.0:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port]), false);
    assert_eq!(d.line(app, "bind"), "bind errno=98");
    let refusal = d.handled.iter().find_map(|h| match &h.decision {
        Decision::Refuse { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let Some(reason @ Refusal::Address { .. }) = refusal else {
        panic!("{refusal:?}")
    };
    assert!(
        reason
            .to_string()
            .contains(&format!("--listen 127.0.0.1:{port}"))
    );
}

#[test]
fn a_blocking_generation_after_a_non_blocking_one_is_refused() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let first = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port, "nonblock"]), false);
    d.line(first, "listening");
    assert_eq!(d.held.held()[0].nonblock, Some(true));
    let flags = nix::fcntl::fcntl(d.held.fd(0).unwrap(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_ne!(
        flags & libc::O_NONBLOCK,
        0,
        "the shared socket is non-blocking"
    );

    let second = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port]), false);
    assert_eq!(d.line(second, "bind"), "bind errno=98");
    assert!(d.handled.iter().any(|h| matches!(
        &h.decision,
        Decision::Refuse {
            reason: Refusal::Blocking {
                asked_nonblock: false,
                ..
            },
            ..
        }
    )));
    // The non-blocking generation still serves.
    assert!(
        d.get(addr)
            .contains(&format!("pid={}", d.apps[first].pid()))
    );
}

/// Whether the shared socket of listener 0 is non-blocking now.
fn shared_nonblock(d: &Driver) -> bool {
    let flags = nix::fcntl::fcntl(d.held.fd(0).unwrap(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    flags & libc::O_NONBLOCK != 0
}

#[test]
fn a_later_generation_leaves_the_mode_the_serving_one_set_after_its_bind() {
    if !have("python3") {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    // As asyncio does: bind a blocking socket, listen, then make it non-blocking (the shared
    // file description, once adopted).
    let app = |serve: bool| {
        let script = format!(
            "import socket, sys, time\n\
             s = socket.socket()\n\
             s.bind(('127.0.0.1', {port}))\n\
             print('bound', flush=True)\n\
             if {serve}:\n    s.listen(100)\n    s.setblocking(False)\n    print('serving', flush=True)\n\
             time.sleep(60)\n",
            port = addr.port(),
            serve = if serve { "True" } else { "False" },
        );
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &script]);
        cmd
    };
    let first = d.spawn(app(true), false);
    d.line(first, "serving");
    assert_eq!(d.held.held()[0].nonblock, Some(false), "its mode at bind");
    assert!(
        shared_nonblock(&d),
        "the serving generation made it non-blocking"
    );
    // The next generation binds (blocking, as the first did at its bind) and takes its time
    // before it switches: the socket the first one serves must stay non-blocking meanwhile.
    let second = d.spawn(app(false), false);
    d.line(second, "bound");
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 2);
    assert!(
        shared_nonblock(&d),
        "a later adoption set the serving generation's socket back to blocking"
    );
}

#[test]
fn udp_on_a_held_port_is_untouched() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["udp", "127.0.0.1", &port]), false);
    assert_eq!(d.line(app, "bound"), "bound fd=3");
    assert_eq!(d.handled.len(), 1);
    assert_eq!(d.handled[0].decision, Decision::Continue);
    assert!(holder(d.apps[app].pid(), d.inode(0)).is_none());
    let reply = d.meanwhile("a UDP echo", move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        s.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 16];
        let n = s.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(reply, b"ping");
}

#[test]
fn port_zero_is_untouched() {
    let mut d = Driver::new();
    let held = d.hold(0, "127.0.0.1:0", false);
    let app = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", "0"]), false);
    d.line(app, "listening");
    let line = d.line(app, "bound");
    let port: u16 = line
        .split("port=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, held.port());
    assert_eq!(
        sent(&d, &Decision::Continue),
        2,
        "bind and listen ran as asked"
    );
    assert!(holder(d.apps[app].pid(), d.inode(0)).is_none());
    // Its own socket, its own backlog.
    assert!(
        d.get(SocketAddr::from(([127, 0, 0, 1], port)))
            .starts_with("HTTP/1.0 200")
    );
    if let Some(b) = backlog(port) {
        assert_eq!(b, 5);
    }
}

#[test]
fn a_grandchild_behind_a_shell_is_adopted() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let script = format!(
        "'{}' tcp 127.0.0.1 {} & wait",
        fixture().display(),
        addr.port()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let app = d.spawn(cmd, false);
    d.line(app, "listening");
    let sh = d.apps[app].pid();
    let (pid, fd) = holder(sh, d.inode(0)).unwrap();
    assert_ne!(pid, sh, "the shell's child holds it");
    assert_eq!(fd, 3);
    assert!(d.get(addr).contains(&format!("pid={pid}")));
}

#[test]
fn a_unix_app_unlinking_its_path_keeps_the_masters_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    let mut d = Driver::new();
    d.held.hold(0, OwnedFd::from(listener)).unwrap();
    let app = d.spawn(fixture_cmd(&["unix", path.to_str().unwrap()]), true);
    // The app's unlink "succeeded"; the file is still the master's.
    assert_eq!(d.line(app, "unlink"), "unlink rc=0 errno=0");
    assert_eq!(d.line(app, "bound"), "bound fd=3");
    d.line(app, "listening");
    for decision in [
        Decision::KeepUnlink { listener: 0 },
        Decision::Adopt { listener: 0 },
        Decision::KeepListen { listener: 0 },
    ] {
        assert_eq!(sent(&d, &decision), 1, "{decision:?}");
    }
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!((after.dev(), after.ino()), (before.dev(), before.ino()));
    let reply = d.meanwhile("a unix request", move || {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        exchange(&mut s)
    });
    assert!(
        reply.contains(&format!("pid={} local=unix", d.apps[app].pid())),
        "{reply}"
    );
}

#[test]
fn a_relative_unix_path_is_resolved_in_the_apps_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut d = Driver::new();
    d.held.hold(0, OwnedFd::from(listener)).unwrap();
    let mut cmd = fixture_cmd(&["unix", "app.sock"]);
    cmd.current_dir(dir.path());
    let app = d.spawn(cmd, true);
    assert_eq!(d.line(app, "unlink"), "unlink rc=0 errno=0");
    d.line(app, "listening");
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), 1);
    assert!(path.exists());
}

/// Without `WAIT_KILLABLE_RECV` (kernels < 5.19) a signal can interrupt the bind after the
/// socket was installed: the answer fails with ENOENT, the app's handler runs, the bind
/// restarts (SA_RESTART) as a new notification, and is answered as done.
#[test]
fn a_bind_interrupted_after_the_socket_was_installed_is_answered_as_done() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let (filter, channel) = ChildFilter::new(false).unwrap();
    let app = d.spawn_with(
        fixture_cmd(&["tcp", "127.0.0.1", &port, "signal"]),
        filter.without_killable_wait(),
        channel,
    );
    let notify = d.apps[app].notifier.as_ref().unwrap().fd().as_raw_fd();
    let mut interrupted = false;
    let mut interrupt = |n: &notif::Notification| {
        if interrupted {
            return;
        }
        interrupted = true;
        kill(Pid::from_raw(n.tid as i32), Signal::SIGUSR1).unwrap();
        // SAFETY: the notifier outlives this closure (it is only called from its handler).
        let notify = unsafe { BorrowedFd::borrow_raw(notify) };
        let deadline = Instant::now() + STEP;
        while notif::id_valid(notify, n.id) {
            assert!(
                Instant::now() < deadline,
                "the signal never interrupted the bind"
            );
            std::thread::yield_now();
        }
    };
    let deadline = Instant::now() + STEP;
    let mut done = |d: &Driver| d.apps[app].lines.iter().any(|l| l.starts_with("listening"));
    d.run_with(
        "the app to listen",
        deadline,
        None,
        &mut done,
        &mut interrupt,
    );
    assert!(interrupted);
    let binds: Vec<_> = d
        .handled
        .iter()
        .filter(|h| h.syscall == Syscall::Bind)
        .collect();
    assert_eq!(binds.len(), 2, "{binds:#?}");
    assert_eq!(binds[0].decision, Decision::Adopt { listener: 0 });
    assert_eq!(binds[0].answer, Answer::Gone);
    assert_eq!(binds[1].decision, Decision::AlreadyAdopted { listener: 0 });
    assert_eq!(binds[1].answer, Answer::Sent);
    assert_eq!(
        d.line(app, "bound"),
        format!("bound fd=3 port={port} signals=1")
    );
    assert!(d.get(addr).starts_with("HTTP/1.0 200"));
}

/// With `WAIT_KILLABLE_RECV` (5.19) the same signal waits for the answer.
#[test]
fn a_signal_during_an_adoption_waits_for_the_answer() {
    let mut d = Driver::new();
    let addr = d.hold(0, "127.0.0.1:0", false);
    let port = addr.port().to_string();
    let app = d.spawn(fixture_cmd(&["tcp", "127.0.0.1", &port, "signal"]), false);
    let mut signal = |n: &notif::Notification| {
        kill(Pid::from_raw(n.tid as i32), Signal::SIGUSR1).unwrap();
    };
    let deadline = Instant::now() + STEP;
    let mut done = |d: &Driver| d.apps[app].lines.iter().any(|l| l.starts_with("listening"));
    d.run_with("the app to listen", deadline, None, &mut done, &mut signal);
    let binds: Vec<_> = d
        .handled
        .iter()
        .filter(|h| h.syscall == Syscall::Bind)
        .collect();
    assert_eq!(binds.len(), 1, "{binds:#?}");
    assert_eq!(binds[0].answer, Answer::Sent);
    assert_eq!(
        d.line(app, "bound"),
        format!("bound fd=3 port={port} signals=1")
    );
}

#[test]
fn a_second_notifier_in_the_same_tree_is_refused_without_failing_the_spawn() {
    let (outer, outer_channel) = ChildFilter::new(false).unwrap();
    let (inner, inner_channel) = ChildFilter::new(false).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exit 7"]);
    // SAFETY: install() is async-signal-safe and allocation-free.
    unsafe {
        cmd.pre_exec(move || outer.install());
        cmd.pre_exec(move || inner.install());
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    assert!(matches!(
        receive(outer_channel.as_fd()).unwrap(),
        Received::Listener(_)
    ));
    let Received::Unavailable(why) = receive(inner_channel.as_fd()).unwrap() else {
        panic!("a second listener in one tree")
    };
    assert_eq!(why, Unavailable::Refused(libc::EBUSY));
    assert!(
        why.to_string()
            .contains("already runs under a seccomp notifier"),
        "{why}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn a_channel_with_no_message_says_so() {
    let (_filter, channel) = ChildFilter::new(false).unwrap();
    let Received::Unavailable(why) = receive(channel.as_fd()).unwrap() else {
        panic!("a listener out of nowhere")
    };
    assert_eq!(why, Unavailable::NoMessage);
}

#[test]
fn the_notify_fd_hangs_up_once_the_tree_is_gone() {
    let mut d = Driver::new();
    let app = d.spawn(Command::new("true"), false);
    d.run_until("POLLHUP on the notify fd", None, |d| {
        d.apps[app].notifier.is_none()
    });
    assert!(d.handled.is_empty());
}

#[test]
fn go_net_http_is_adopted() {
    if !have("go") {
        eprintln!("skipped: go is not installed (Go's net package makes raw system calls)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"\n)\n\n\
         func main() {\n\thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) {\n\
         \t\tfmt.Fprintf(w, \"go %d\", os.Getpid())\n\t})\n\
         \tpanic(http.ListenAndServe(\":\"+os.Args[1], nil))\n}\n",
    )
    .unwrap();
    let exe = dir.path().join("server");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg("main.go")
        .current_dir(dir.path())
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .status()
        .unwrap();
    assert!(built.success(), "go build failed");
    let mut d = Driver::new();
    let addr = d.hold(0, "[::]:0", false);
    let mut cmd = Command::new(&exe);
    cmd.arg(addr.port().to_string());
    let app = d.spawn(cmd, false);
    d.handled(Decision::KeepListen { listener: 0 });
    let reply = d.get(SocketAddr::from(([127, 0, 0, 1], addr.port())));
    assert!(
        reply.contains(&format!("go {}", d.apps[app].pid())),
        "{reply}"
    );
}

/// Not a timed test: prints what one trapped call costs. Run with
/// `cargo test --lib adopt::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure() {
    const N: usize = 2000;
    let ns = |line: &str| -> f64 {
        line.strip_prefix("ns_per_call=")
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    // Untrapped calls, with and without the filter in place.
    let bare = Command::new(fixture())
        .args(["bench-getpid", "1000000"])
        .output()
        .unwrap();
    let bare = ns(String::from_utf8_lossy(&bare.stdout).trim());
    let plain_bind = Command::new(fixture())
        .args(["bench-continue", &N.to_string()])
        .output()
        .unwrap();
    let plain_bind = ns(String::from_utf8_lossy(&plain_bind.stdout).trim());

    let mut d = Driver::new();
    let app = d.spawn(fixture_cmd(&["bench-getpid", "1000000"]), false);
    let filtered = ns(&d.line(app, "ns_per_call"));

    let app = d.spawn(fixture_cmd(&["bench-continue", &N.to_string()]), false);
    d.busy = Duration::ZERO;
    let continued = ns(&d.line(app, "ns_per_call"));
    let master_continue = d.busy.as_secs_f64() * 1e6 / d.handled.len() as f64;

    let addr = d.hold(0, "127.0.0.1:0", false);
    let before = d.handled.len();
    let app = d.spawn(
        fixture_cmd(&[
            "bench-adopt",
            "127.0.0.1",
            &addr.port().to_string(),
            &N.to_string(),
        ]),
        false,
    );
    d.busy = Duration::ZERO;
    let adopted = ns(&d.line(app, "ns_per_call"));
    let master_adopt = d.busy.as_secs_f64() * 1e6 / (d.handled.len() - before) as f64;
    assert_eq!(sent(&d, &Decision::Adopt { listener: 0 }), N);

    println!("getpid: {bare:.0} ns bare, {filtered:.0} ns under the filter");
    println!(
        "bind 127.0.0.1:0: {:.1} us untrapped, {:.1} us trapped and continued \
         (of which the master handling it {master_continue:.1} us)",
        plain_bind / 1e3,
        continued / 1e3
    );
    println!(
        "bind of a held address, adopted: {:.1} us (of which the master handling it \
         {master_adopt:.1} us)",
        adopted / 1e3
    );
}
