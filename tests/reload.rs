//! Reload (SIGHUP): new workers first, old ones retired only once replaced; a broken release
//! never replaces a working one.

use crate::support::{DEADLINE, Ev, Master, get_pid, num, wait_gone};

fn knobs_master(knobs: &[(&str, &str)], extra: &[&str]) -> Master {
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "-w", "2"])
        .args(extra.iter().copied())
        .with_knobs(knobs)
        .start()
}

#[test]
fn reload_replaces_every_worker_with_the_next_reload_index() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &[]);
    let old = m.wait_ready();
    let new = m.reload(1);
    assert_eq!(new.len(), 2);
    for pid in &new {
        assert!(!old.contains(pid));
        assert_eq!(m.report(*pid)["RELOAD_INDEX"], "1");
    }
    for pid in old {
        assert!(wait_gone(pid, DEADLINE), "old worker {pid} retired");
    }
    let again = m.reload(2);
    assert_eq!(m.report(again[0])["RELOAD_INDEX"], "2");
}

#[test]
fn old_worker_is_stopped_only_after_its_replacement_is_ready() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &["-w", "1"]);
    let old = m.wait_ready()[0];
    m.set_knobs(&[("TW_READY", "notify"), ("TW_LISTEN_DELAY_MS", "500")]);
    m.signal(libc::SIGHUP);
    // The master's decisions, in the order it took them.
    let new = num(&m.expect_ev(Ev::Started.generation(1)), "pid");
    let ready = m.expect_ev(Ev::Ready.pid(new));
    m.expect_ev(Ev::Stopping.pid(old));
    assert!(num(&ready, "after_ms") >= 500, "{ready}");
    let before_ready: Vec<String> = m.lines().into_iter().take_while(|l| *l != ready).collect();
    assert!(
        !before_ready
            .iter()
            .any(|l| Ev::Stopping.pid(old).matches(l)),
        "the old worker was stopped before its replacement was ready"
    );
    let s = m.reload_ended(1, "done");
    assert_eq!(s.serving(), [new as u32], "{s}");
}

/// A reload into a broken release (`broken` knobs) fails: status says so and why, the log
/// says why, and the old workers still serve, never asked to stop.
fn failed_reload_keeps_the_old_workers(broken: &[(&str, &str)], extra: &[&str], reason: &str) {
    let mut m = knobs_master(&[("TW_READY", "notify")], extra);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    m.set_knobs(broken);
    m.signal(libc::SIGHUP);
    let s = m.reload_ended(1, "failed");
    let why = s.last_reload().unwrap().get("reason");
    assert!(why.contains(reason), "{s}");
    assert_eq!(s.serving(), old, "the old workers serve: {s}");
    assert_eq!(s.master().num("reloads_failed"), 1, "{s}");
    // The log says why, and that the old workers keep serving.
    let failed = m.expect(why);
    assert!(
        failed.contains("the previous workers keep serving"),
        "{failed}"
    );
    for _ in 0..10 {
        assert!(old.contains(&get_pid(addr)), "an old worker answers");
    }
    for &pid in &old {
        assert!(
            m.events(Ev::Stopping.pid(pid)).is_empty(),
            "old worker {pid} was stopped"
        );
        assert!(
            !wait_gone(pid, std::time::Duration::ZERO),
            "old worker {pid} runs"
        );
    }
}

#[test]
fn new_worker_that_crashes_at_start_fails_the_reload_and_the_old_ones_keep_serving() {
    failed_reload_keeps_the_old_workers(
        &[("TW_EXIT_AT_START", "3")],
        &[],
        "exited with code 3 before it was ready",
    );
}

#[test]
fn new_worker_never_ready_fails_the_reload_after_the_timeout() {
    failed_reload_keeps_the_old_workers(
        &[("TW_NEVER_READY", "1")],
        &["--ready-timeout", "1s"],
        "was not ready within 1s",
    );
}

#[test]
fn sighups_during_a_reload_are_coalesced_into_one_more_reload() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &["-w", "1"]);
    m.wait_ready();
    m.set_knobs(&[("TW_READY", "notify"), ("TW_LISTEN_DELAY_MS", "1000")]);
    m.signal(libc::SIGHUP);
    m.wait_status("reload 1 in flight", |s| s.in_flight() == Some(1));
    for _ in 0..5 {
        m.signal(libc::SIGHUP);
    }
    // The master answers a request only after the signals that came before it.
    let s = m.status();
    assert_eq!(
        s.in_flight(),
        Some(1),
        "the 5 SIGHUPs came during reload 1: {s}"
    );
    m.reload_ended(1, "done");
    // Read as reload 2 ends: a reload queued behind it would be in flight by then.
    let s = m.reload_ended(2, "done");
    assert_eq!(s.generation(), 2, "{s}");
    assert_eq!(s.in_flight(), None, "no third reload: {s}");
    assert_eq!(s.master().num("reloads_done"), 2, "{s}");
    assert_eq!(s.reload(1).unwrap().get("outcome"), "done", "{s}");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    // Its last line read, the whole log is: count in it.
    assert_eq!(
        m.events(Ev::ReloadStarted).len(),
        2,
        "5 SIGHUPs during a reload make one more reload"
    );
}

#[test]
fn old_worker_that_ignores_sigterm_is_killed_after_max_kill_timeout() {
    let mut m = knobs_master(
        &[("TW_READY", "notify"), ("TW_IGNORE_SIGTERM", "1")],
        &["-w", "1"],
    );
    let old = m.wait_ready()[0];
    m.set_knobs(&[("TW_READY", "notify")]);
    m.signal(libc::SIGHUP);
    m.expect_ev(Ev::Stopping.pid(old));
    m.expect_ev(Ev::Killed.pid(old));
    // The log says how it ended.
    let stopped = m.expect_ev(Ev::Stopped.pid(old));
    assert!(stopped.contains("killed by SIGKILL"), "{stopped}");
    m.reload_ended(1, "done");
    assert!(wait_gone(old, DEADLINE));
}

#[test]
fn max_kill_timeout_accepts_bare_milliseconds() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("MAX_KILL_TIMEOUT", "300")
        .with_knobs(&[("TW_READY", "notify"), ("TW_IGNORE_SIGTERM", "1")])
        .start();
    let old = m.wait_ready()[0];
    m.set_knobs(&[("TW_READY", "notify")]);
    m.signal(libc::SIGHUP);
    let stopping = m.expect_ev(Ev::Stopping.pid(old));
    let killed = m.expect_ev(Ev::Killed.pid(old));
    assert_eq!(num(&killed, "timeout_ms"), 300, "{killed}");
    // `at_ms` is the master's own clock at each decision.
    let waited_ms = num(&killed, "at_ms") - num(&stopping, "at_ms");
    assert!(
        waited_ms >= 300,
        "SIGKILL came {waited_ms} ms after SIGTERM, before MAX_KILL_TIMEOUT=300"
    );
}

#[test]
fn sigusr2_is_forwarded_to_every_worker() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &[]);
    let pids = m.wait_ready();
    m.signal(libc::SIGUSR2);
    m.expect_each(
        &pids
            .iter()
            .map(|p| format!("test-worker[{p}]: got SIGUSR2"))
            .collect::<Vec<_>>(),
    );
}
