//! Reload (SIGHUP): new workers first, old ones retired only once replaced; a broken release
//! never replaces a working one.

use crate::support::{DEADLINE, Master, get_pid, num, wait_gone};

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
    let started = m.expect("worker started");
    let new = num(&started, "pid");
    let ready = m.expect(&format!("worker ready pid={new}"));
    m.expect(&format!("stopping worker pid={old}"));
    assert!(num(&ready, "after_ms") >= 500, "{ready}");
    let before_ready: Vec<String> = m.lines().into_iter().take_while(|l| *l != ready).collect();
    assert!(
        !before_ready
            .iter()
            .any(|l| l.contains(&format!("stopping worker pid={old}"))),
        "the old worker was stopped before its replacement was ready"
    );
}

#[test]
fn new_worker_that_crashes_at_start_fails_the_reload_and_the_old_ones_keep_serving() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &[]);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    m.set_knobs(&[("TW_EXIT_AT_START", "3")]);
    m.signal(libc::SIGHUP);
    let failed = m.expect("reload failed");
    assert!(
        failed.contains("exited with code 3 before it was ready"),
        "{failed}"
    );
    assert!(
        failed.contains("the previous workers keep serving"),
        "{failed}"
    );
    m.expect("reload ended: failed");
    for _ in 0..10 {
        assert!(old.contains(&get_pid(addr)), "an old worker answers");
    }
    for pid in old {
        assert!(
            !m.logged(&format!("stopping worker pid={pid}")),
            "old worker {pid} was stopped"
        );
    }
}

#[test]
fn new_worker_never_ready_fails_the_reload_after_the_timeout() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &["--ready-timeout", "1s"]);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    m.set_knobs(&[("TW_NEVER_READY", "1")]);
    m.signal(libc::SIGHUP);
    let failed = m.expect("reload failed");
    assert!(failed.contains("was not ready within 1s"), "{failed}");
    m.expect("reload ended: failed");
    assert!(old.contains(&get_pid(addr)));
    for pid in old {
        assert!(
            !wait_gone(pid, std::time::Duration::ZERO),
            "old worker {pid} still runs"
        );
    }
}

#[test]
fn sighups_during_a_reload_are_coalesced_into_one_more_reload() {
    let mut m = knobs_master(&[("TW_READY", "notify")], &["-w", "1"]);
    m.wait_ready();
    m.set_knobs(&[("TW_READY", "notify"), ("TW_LISTEN_DELAY_MS", "1000")]);
    m.signal(libc::SIGHUP);
    m.expect("reload started generation=1");
    for _ in 0..5 {
        m.signal(libc::SIGHUP);
    }
    m.expect("reload queued");
    m.expect("reload done generation=1 ");
    m.expect("reload started generation=2");
    m.expect("reload done generation=2 ");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    // Its last line read, the whole log is: count in it.
    m.expect("all workers stopped");
    assert_eq!(
        m.count("reload started"),
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
    m.expect(&format!("stopping worker pid={old}"));
    m.expect(&format!(
        "still alive after MAX_KILL_TIMEOUT; sending SIGKILL to its process group pid={old}"
    ));
    let stopped = m.expect(&format!("worker stopped pid={old}"));
    assert!(stopped.contains("killed by SIGKILL"), "{stopped}");
    m.expect("reload done generation=1 ");
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
    let stopping = m.expect(&format!("stopping worker pid={old}"));
    let killed = m.expect(&format!("sending SIGKILL to its process group pid={old}"));
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
