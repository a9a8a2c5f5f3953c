//! systemd and containers: socket activation with the real `systemd-socket-activate`, the
//! sd_notify sequence a service manager receives, the watchdog, PID 1 in a pid namespace,
//! and upgrading the master in place under load.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loadgen::{Mode, Target};

use crate::support::{DEADLINE, Ev, Master, master_bin, num, start_load, test_worker, wait_gone};

/// Runs a control command against the master of `m`; returns (exit code, stdout).
fn control(m: &Master, args: &[&str]) -> (i32, String) {
    let out = Command::new(master_bin())
        .args(args)
        .env("XDG_RUNTIME_DIR", m.dir())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_socket_activated_master_serves_its_named_socket_through_reloads() {
    let cmd = Master::cmd();
    let sock = cmd.dir().join("web.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut m = cmd
        .program("systemd-socket-activate")
        .args([
            "-l",
            &sock_arg,
            "--fdname=web",
            "-E",
            "TW_REPORT",
            "-E",
            "XDG_RUNTIME_DIR",
            master_bin(),
            "--",
        ])
        .args([test_worker()])
        .start();
    // systemd-socket-activate starts the master on the first connection, which waits in the
    // socket's queue meanwhile.
    m.expect("Listening on");
    let mut cfg = loadgen::Config::new(Target::Unix(sock.clone()));
    cfg.connections = 4;
    cfg.request_timeout = crate::support::REQUEST_TIMEOUT;
    let load = loadgen::start(cfg);
    let pids = m.wait_ready();
    let s = m.status();
    let listeners: Vec<_> = s.listeners().collect();
    assert_eq!(listeners.len(), 1, "{s}");
    assert_eq!(
        listeners[0].get("origin"),
        "activated",
        "the master used the passed socket: {s}"
    );
    assert_eq!(listeners[0].get("name"), "web", "{s}");
    assert_eq!(
        m.report(pids[0]).get("LISTEN_FDNAMES").map(String::as_str),
        Some("web")
    );
    for generation in 1..=5 {
        m.reload(generation);
    }
    let seen = load.snapshot().total();
    assert!(load.wait_for_requests(seen + 100, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    assert!(
        sock.exists(),
        "the socket unit's file is not ours to remove"
    );
}

/// Reads datagrams from `rx` until one satisfies `pred` (skipping WATCHDOG=1 pings).
fn next_state(rx: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = rx.recv(&mut buf).expect("a notify datagram in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text != "WATCHDOG=1" {
            return text;
        }
    }
}

#[test]
fn the_service_manager_hears_ready_reloading_ready_stopping_in_order() {
    let cmd = Master::cmd();
    let path = cmd.dir().join("systemd-notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut m = cmd
        .args(["-l", "127.0.0.1:0", "-w", "2"])
        .env("NOTIFY_SOCKET", path.display())
        .start();
    let first = next_state(&rx);
    assert!(
        first.starts_with("READY=1\nSTATUS=serving: 2 workers ready"),
        "{first:?}"
    );
    m.wait_ready();
    m.signal(libc::SIGHUP);
    let reloading = next_state(&rx);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading:?}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    let now = nix_monotonic_usec();
    assert!(
        usec <= now && now - usec < 60_000_000,
        "MONOTONIC_USEC {usec} is CLOCK_MONOTONIC (now {now})"
    );
    let ready = next_state(&rx);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving: 2 workers ready, generation 1"),
        "{ready:?}"
    );
    m.signal(libc::SIGTERM);
    let stopping = next_state(&rx);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert_eq!(m.wait_exit(), 0);
    rx.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 64];
    assert!(rx.recv(&mut buf).is_err(), "nothing after STOPPING=1");
}

fn nix_monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn the_watchdog_is_pinged_while_the_loop_runs() {
    let cmd = Master::cmd();
    let path = cmd.dir().join("systemd-notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(DEADLINE)).unwrap();
    let _m = cmd
        .args(["-l", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", path.display())
        .env("WATCHDOG_USEC", 200_000)
        .start();
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    while pings < 3 {
        let n = rx.recv(&mut buf).expect("a datagram in time");
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
}

#[test]
fn as_pid_1_the_master_reaps_orphans_and_stops_on_sigterm() {
    if !Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!(
            "this machine does not let us create a pid namespace (unshare needs root); nothing to test"
        );
        return;
    }
    let cmd = Master::cmd();
    let mut m = cmd
        .program("unshare")
        .args([
            "--pid",
            "--fork",
            // If the test dies, unshare's death takes the namespace's PID 1 with it.
            "--kill-child",
            "--mount-proc",
            master_bin(),
            "-l",
            "127.0.0.1:0",
            "-v",
            "--kill-timeout",
            "300ms",
            "--",
        ])
        .args([test_worker()])
        .env("TW_FORK_CHILD", "daemon")
        .start();
    m.expect("reaping orphaned descendants (child subreaper)");
    m.wait_ready();
    let addr = m.tcp_addr();
    // The worker left a daemon behind (its own session: out of reach of its process group);
    // when the worker dies, the daemon is ours, and when the daemon dies, we reap it.
    m.eventually(&["]: child ".to_string()]);
    let child_line = m
        .lines()
        .into_iter()
        .find(|l| l.contains("]: child "))
        .unwrap();
    let daemon_ns_pid = child_line.rsplit(' ').next().unwrap().trim().to_string();
    let _ = crate::support::get(addr, "/exit?code=1");
    m.wait_status("the worker restarted and serving", |s| {
        s.slot(0).num("restarts") == 1 && s.serving().len() == 1
    });
    // Kill the orphaned daemon from inside the namespace (its pid there), then the master
    // must reap it: a zombie would stay a child of PID 1.
    let master_host_pid = children_of(m.pid())
        .into_iter()
        .next()
        .expect("the master under unshare");
    let daemons: Vec<u32> = children_of(master_host_pid)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep"))
        })
        .collect();
    assert_eq!(
        daemons.len(),
        1,
        "the orphaned daemon is now a child of PID 1, the master"
    );
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(daemons[0] as i32, libc::SIGKILL) };
    m.expect_ev(Ev::Reaped.pid(&daemon_ns_pid));
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(master_host_pid as i32, libc::SIGTERM) };
    assert_eq!(m.wait_exit(), 0, "unshare exits with the master's code");
    assert!(wait_gone(master_host_pid, DEADLINE));
}

/// The children of process `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Copies the master binary into `dir` (as `name`), atomically: what a deploy does.
pub(crate) fn install_master(dir: &Path, name: &str) -> std::path::PathBuf {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::copy(master_bin(), &tmp).unwrap();
    std::fs::rename(&tmp, &target).unwrap();
    target
}

#[test]
fn an_upgrade_under_load_keeps_the_pid_the_sockets_and_every_request() {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "-w", "2", "--"])
        .args([test_worker()])
        .start();
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::KeepAlive, 8);
    install_master(m.dir(), "mp-bin"); // the new build replaces the file
    let (code, out) = control(&m, &["upgrade", "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("reload 1 done"), "{out}");
    let upgraded = m.expect_ev(Ev::Upgraded);
    assert_eq!(num(&upgraded, "pid") as u32, m.pid(), "same pid");
    assert_eq!(num(&upgraded, "workers"), 2);
    // The workers were adopted as they were: none stopped before the new image's reload.
    let lines = m.lines();
    let at = lines.iter().position(|l| *l == upgraded).unwrap();
    for pid in &old {
        assert!(
            !lines[..at].iter().any(|l| Ev::Stopping.pid(pid).matches(l)),
            "{pid} kept until the reload"
        );
    }
    let seen = load.snapshot().total();
    assert!(load.wait_for_requests(seen + 200, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    let (code, status) = control(&m, &["status"]);
    assert_eq!(code, 0);
    assert!(status.contains(&format!("master {} ", m.pid())), "{status}");
    let s = m.status();
    assert_eq!(s.master().num("pid"), u64::from(m.pid()), "{s}");
    assert_eq!(s.master().num("reloads_done"), 1, "{s}");
    assert!(s.serving().iter().all(|p| !old.contains(p)), "{s}");
}

#[test]
fn an_upgrade_to_a_broken_binary_fails_and_the_old_master_carries_on() {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "--"])
        .args([test_worker()])
        .start();
    let old = m.wait_ready();
    // A "build" that does not start.
    let broken = m.dir().join(".broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &exe).unwrap();
    let (code, _) = control(&m, &["upgrade", "--wait"]);
    assert_eq!(code, 1, "the upgrade failed");
    // The log says so.
    m.expect("upgrade failed");
    assert_eq!(
        crate::support::get_pid(m.tcp_addr()),
        old[0],
        "the old worker still serves"
    );
    let (code, status) = control(&m, &["status"]);
    assert_eq!(code, 0, "the old master still answers");
    assert!(status.contains("running"), "{status}");
    let s = m.status();
    assert_eq!(s.phase(), "running", "{s}");
    assert_eq!((s.generation(), s.in_flight()), (0, None), "no reload: {s}");
    assert_eq!(s.serving(), old, "{s}");
    assert!(m.events(Ev::Upgraded).is_empty());
}

#[test]
fn on_master_change_exit_exits_1_when_a_reload_finds_a_new_binary() {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "--on-master-change", "exit", "--"])
        .args([test_worker()])
        .start();
    m.wait_ready();
    install_master(m.dir(), "mp-bin");
    m.signal(libc::SIGHUP);
    m.expect("the master's own executable changed on disk");
    assert_eq!(m.wait_exit(), 1);
}

#[test]
fn on_master_change_upgrade_upgrades_in_place_when_a_reload_finds_a_new_binary() {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "--on-master-change", "upgrade", "--"])
        .args([test_worker()])
        .start();
    m.wait_ready();
    install_master(m.dir(), "mp-bin");
    m.signal(libc::SIGHUP);
    let line = m.expect_ev(Ev::Upgraded);
    assert_eq!(num(&line, "pid") as u32, m.pid());
    let s = m.reload_ended(1, "done");
    assert_eq!(s.master().num("pid"), u64::from(m.pid()), "{s}");
}

#[test]
fn by_default_a_new_binary_is_only_logged() {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "--"])
        .args([test_worker()])
        .start();
    m.wait_ready();
    install_master(m.dir(), "mp-bin");
    m.signal(libc::SIGHUP);
    // The log says it.
    m.expect("the master's own executable changed on disk");
    m.reload_ended(1, "done");
    assert!(m.events(Ev::Upgraded).is_empty(), "no upgrade by default");
    assert!(!m.logged("upgrading the master"), "no upgrade by default");
}
