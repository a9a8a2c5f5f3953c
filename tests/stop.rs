//! Stop (SIGTERM, SIGINT): every worker gets SIGTERM and may drain, SIGKILL after
//! MAX_KILL_TIMEOUT, exit 0; a second stop signal kills at once.

use std::time::Duration;

use crate::support::{DEADLINE, Ev, Master, get, wait_gone};

fn stops_cleanly_on(sig: i32) {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    m.signal(sig);
    assert_eq!(m.wait_exit(), 0);
    for &pid in &pids {
        assert!(
            wait_gone(pid, Duration::ZERO),
            "worker {pid} is gone when the master exits"
        );
    }
    // Its last line read, the whole log is: the master saw each of them exit as asked (a
    // stop, not a crash).
    for pid in pids {
        assert_eq!(m.events(Ev::Stopped.pid(pid)).len(), 1, "worker {pid}");
    }
    assert!(m.events(Ev::Crashed).is_empty());
}

#[test]
fn sigterm_stops_every_worker_and_exits_0() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_stops_every_worker_and_exits_0() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn a_request_in_flight_completes_during_the_stop() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pid = m.wait_ready()[0];
    let addr = m.tcp_addr();
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1000"));
    m.expect(&format!("test-worker[{pid}]: slow request"));
    m.signal(libc::SIGTERM);
    let body = slow.join().unwrap().expect("the slow request is answered");
    assert_eq!(body.trim(), pid.to_string());
    assert_eq!(m.wait_exit(), 0);
}

/// A master whose one worker ignores SIGTERM, with `kill_timeout`; and that worker's pid.
fn ignoring_sigterm(kill_timeout: &str) -> (Master, u32) {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(["--kill-timeout", kill_timeout])
        .env("TW_READY", "notify")
        .env("TW_IGNORE_SIGTERM", "1")
        .start();
    let pid = m.wait_ready()[0];
    (m, pid)
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_max_kill_timeout() {
    let (mut m, pid) = ignoring_sigterm("300ms");
    m.signal(libc::SIGTERM);
    m.expect_ev(Ev::Killed.pid(pid));
    assert_eq!(m.wait_exit(), 0);
    // The log says how it ended.
    let stopped = m.expect_ev(Ev::Stopped.pid(pid));
    assert!(stopped.contains("killed by SIGKILL"), "{stopped}");
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let (mut m, pid) = ignoring_sigterm("10m");
    m.signal(libc::SIGTERM);
    let s = m.wait_status("the worker stopping", |s| {
        s.phase() == "stopping" && s.worker(pid).is_some_and(|w| w.get("state") == "stopping")
    });
    assert_eq!(s.master().get("phase"), "stopping");
    m.signal(libc::SIGINT);
    // Exits well before the 10-minute drain allowance.
    assert_eq!(m.wait_exit(), 0);
    assert!(wait_gone(pid, DEADLINE));
    // Killed, not drained: the log says how it ended.
    let stopped = m.expect_ev(Ev::Stopped.pid(pid));
    assert!(stopped.contains("killed by SIGKILL"), "{stopped}");
}
