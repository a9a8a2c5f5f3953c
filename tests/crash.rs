//! Crash restart: logged with its status, restarted no sooner than WORKER_THROTTLE after the
//! crashed worker's start; or, with --on-crash exit, the master exits with the worker's code.

use crate::support::{DEADLINE, Master, get, num, wait_gone};

#[test]
fn crashed_worker_is_restarted_once_the_throttle_has_passed_since_its_start() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--throttle", "3s"])
        .env("TW_READY", "notify")
        .start();
    let first_start = m.expect("worker started");
    let pid = num(&first_start, "pid");
    m.wait_ready();
    let addr = m.tcp_addr();
    let _ = get(addr, "/exit?code=3");
    let crash = m.expect(&format!("worker exited unexpectedly pid={pid}"));
    assert!(crash.contains("exited with code 3"), "{crash}");
    let lived_ms = num(&crash, "lived_ms");
    let restart = m.expect("restarting worker index=0");
    if lived_ms < 3000 {
        assert!(num(&restart, "delay_ms") > 0, "{restart}");
    }
    let second_start = m.expect("worker started");
    // `at_ms` is the master's own clock when it decided each start.
    let gap_ms = num(&second_start, "at_ms") - num(&first_start, "at_ms");
    assert!(
        gap_ms >= 3000,
        "restarted {gap_ms} ms after the crashed worker's start, throttle is 3 s"
    );
    m.expect(&format!("worker ready pid={}", num(&second_start, "pid")));
}

#[test]
fn worker_that_lived_longer_than_the_throttle_is_restarted_at_once() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("WORKER_THROTTLE", "0")
        .env("TW_READY", "notify")
        .start();
    let pid = m.wait_ready()[0];
    let _ = get(m.tcp_addr(), "/exit?code=1");
    m.expect(&format!("worker exited unexpectedly pid={pid}"));
    let restart = m.expect("restarting worker index=0");
    assert_eq!(num(&restart, "delay_ms"), 0, "{restart}");
    m.expect("worker started");
}

#[test]
fn on_crash_exit_stops_the_others_and_exits_with_the_workers_code() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "-w",
            "2",
            "--on-crash",
            "exit",
        ])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    let _ = get(m.tcp_addr(), "/exit?code=7");
    assert_eq!(m.wait_exit(), 7);
    for pid in pids {
        assert!(wait_gone(pid, DEADLINE), "worker {pid} stopped");
    }
    assert!(!m.logged("restarting worker"));
}
