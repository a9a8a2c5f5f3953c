//! Crash restart: logged with its status, restarted no sooner than WORKER_THROTTLE after the
//! crashed worker's start; or, with --on-crash exit, the master exits with the worker's code.

use crate::support::{DEADLINE, Ev, Master, get, num, wait_gone};

#[test]
fn crashed_worker_is_restarted_once_the_throttle_has_passed_since_its_start() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--throttle", "3s"])
        .env("TW_READY", "notify")
        .start();
    let pid = m.wait_ready()[0];
    let addr = m.tcp_addr();
    let _ = get(addr, "/exit?code=3");
    // The master's account: slot 0 crashed once, was restarted once, and serves again.
    let s = m.wait_status("slot 0 restarted and serving", |s| {
        s.slot(0).num("restarts") == 1 && s.serving().len() == 1
    });
    let new = s.serving()[0];
    assert_ne!(new, pid, "{s}");
    assert_eq!(s.slot(0).num("crashes"), 1, "{s}");
    // The log says how the worker ended.
    let crash = m.expect_ev(Ev::Crashed.pid(pid));
    assert!(crash.contains("exited with code 3"), "{crash}");
    let restart = m.expect_ev(Ev::Restart.index(0));
    if num(&crash, "lived_ms") < 3000 {
        assert!(num(&restart, "delay_ms") > 0, "{restart}");
    }
    // `at_ms` is the master's own clock when it decided each start.
    let first_start = m.events(Ev::Started.pid(pid)).remove(0);
    let second_start = m.expect_ev(Ev::Started.pid(new));
    let gap_ms = num(&second_start, "at_ms") - num(&first_start, "at_ms");
    assert!(
        gap_ms >= 3000,
        "restarted {gap_ms} ms after the crashed worker's start, throttle is 3 s"
    );
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
    let s = m.wait_status("slot 0 restarted", |s| s.slot(0).num("restarts") == 1);
    assert_eq!(s.slot(0).num("crashes"), 1, "{s}");
    assert!(s.worker(pid).is_none(), "{s}");
    // The master's plan for the restart: no delay.
    let restart = m.expect_ev(Ev::Restart.index(0));
    assert_eq!(num(&restart, "delay_ms"), 0, "{restart}");
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
    for &pid in &pids {
        assert!(wait_gone(pid, DEADLINE), "worker {pid} stopped");
    }
    // Its last line read, the whole log is: nothing was restarted.
    assert_eq!(m.events(Ev::Restart), Vec::<String>::new());
    assert_eq!(
        m.started_pids(),
        pids,
        "no worker was started after the crash"
    );
}
