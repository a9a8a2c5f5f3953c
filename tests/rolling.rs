//! Rolling reloads (`--reload rolling --max-surge N`): never fewer ready workers than slots,
//! never more processes than slots + N; and the canary (`--canary DUR`), which stops a bad
//! rollout after one worker and lets a good one through after its time.

use std::collections::BTreeSet;

use loadgen::{Mode, Target};

use crate::support::{
    DEADLINE, Ev, Master, alive, children, field, get_pid, num, start_load, wait_gone,
};

const WORKERS: usize = 4;

fn rolling_master(workers: usize, extra: &[&str]) -> Master {
    Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--reload",
            "rolling",
        ])
        .args(["-w", &workers.to_string()])
        .args(extra.iter().copied())
        .with_knobs(&[("TW_READY", "notify")])
        .start()
}

/// Replays the master's log of a reload to generation 1 (its lines are written in the order
/// of its decisions, by one thread): the most candidates plus retiring old workers alive at
/// once.
fn most_in_flight(lines: &[String]) -> usize {
    let (mut candidates, mut retiring, mut most) = (0usize, 0usize, 0usize);
    for l in lines {
        if Ev::Started.generation(1).matches(l) {
            candidates += 1;
        } else if Ev::Ready.generation(1).matches(l) {
            candidates -= 1;
        } else if Ev::Stopping.generation(0).matches(l) {
            retiring += 1;
        } else if Ev::Stopped.generation(0).matches(l) {
            retiring -= 1;
        }
        most = most.max(candidates + retiring);
    }
    most
}

/// A rolling reload of 4 workers with `max_surge`, under load, sampled until it is done.
fn rolling_reload_keeps_capacity(max_surge: usize) {
    let surge = max_surge.to_string();
    let mut m = rolling_master(WORKERS, &["--max-surge", &surge]);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::Close, 8);
    // Each new worker takes 200 ms to serve: the rollout lasts long enough to watch.
    m.set_knobs(&[("TW_READY", "notify"), ("TW_LISTEN_DELAY_MS", "200")]);
    m.signal(libc::SIGHUP);
    m.wait_status("reload 1 in flight", |s| s.in_flight() == Some(1));
    let deadline = std::time::Instant::now() + DEADLINE;
    let (mut samples, mut fewest_ready, mut most_children, mut most_workers) =
        (0usize, usize::MAX, 0usize, 0usize);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the rolling reload did not end within {DEADLINE:?}"
        );
        let kids = children(m.pid()).len();
        let status = m.status();
        let workers: Vec<_> = status.iter().filter(|r| r.kind == "worker").collect();
        let ready = workers
            .iter()
            .filter(|w| w.get("role") == "serving" && w.get("state") == "ready")
            .count();
        assert!(
            ready >= WORKERS,
            "only {ready} ready serving workers during the rollout: {workers:#?}"
        );
        assert!(
            kids <= WORKERS + max_surge,
            "{kids} worker processes (max surge {max_surge})"
        );
        assert!(
            workers.len() <= WORKERS + max_surge,
            "{} workers in status (max surge {max_surge}): {workers:#?}",
            workers.len()
        );
        samples += 1;
        fewest_ready = fewest_ready.min(ready);
        most_children = most_children.max(kids);
        most_workers = most_workers.max(workers.len());
        if status.last_reload().is_some() {
            break;
        }
    }
    let status = m.reload_ended(1, "done");
    eprintln!(
        "max surge {max_surge}: {samples} samples, fewest ready {fewest_ready}, \
         most processes {most_children}, most workers in status {most_workers}"
    );
    assert!(
        most_children > WORKERS,
        "the samples never saw the rollout in flight ({samples} samples)"
    );
    // The master's own account, exact: the surge was used to the full, never exceeded.
    let lines = m.lines();
    assert_eq!(
        most_in_flight(&lines),
        max_surge,
        "new plus retiring workers at once, per the log"
    );
    let seen = load.snapshot().total();
    assert!(load.wait_for_requests(seen + 100, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}\n{:#?}", report.errors);
    let new = status.serving();
    assert_eq!(new.len(), WORKERS, "{status}");
    for pid in &new {
        assert!(!old.contains(pid));
        assert_eq!(m.report(*pid)["RELOAD_INDEX"], "1");
    }
    for pid in old {
        assert!(wait_gone(pid, std::time::Duration::ZERO), "{pid} retired");
    }
}

#[test]
fn rolling_reload_with_max_surge_1_keeps_every_slot_served_and_adds_at_most_one_process() {
    rolling_reload_keeps_capacity(1);
}

#[test]
fn rolling_reload_with_max_surge_2_keeps_every_slot_served_and_adds_at_most_two_processes() {
    rolling_reload_keeps_capacity(2);
}

#[test]
fn canary_that_crashes_during_its_canary_time_stops_the_rollout_after_one_worker() {
    let mut m = rolling_master(3, &["--canary", "2s"]);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    // The new release starts and is ready, then crashes half a second later.
    m.set_knobs(&[
        ("TW_READY", "notify"),
        ("TW_CRASH_AFTER_MS", "500"),
        ("TW_EXIT_CODE", "9"),
    ]);
    let out = m.ctl(&["reload", "--wait", "--timeout", "20s"]);
    assert_eq!(out.code, 1, "{out:?}");
    // It was ready, watched, and exited while watched.
    let canary = num(&m.expect_ev(Ev::Started.generation(1)), "pid");
    m.expect_ev(Ev::Ready.pid(canary));
    m.expect_ev(Ev::CanaryWatched.pid(canary));
    assert!(
        out.stdout.starts_with(&format!(
            "reload 1 failed: the canary, worker 0 (pid {canary}), exited with code 9 during its canary time"
        )),
        "{out:?}"
    );
    assert!(m.events(Ev::CanaryPassed).is_empty());
    assert_eq!(
        m.events(Ev::Started.generation(1)).len(),
        1,
        "only the canary was started"
    );
    // Every old worker still serves; none was ever asked to stop.
    let answered: BTreeSet<u32> = (0..20).map(|_| get_pid(addr)).collect();
    assert!(
        answered.iter().all(|p| old.contains(p)),
        "{answered:?} vs {old:?}"
    );
    for pid in &old {
        assert!(alive(*pid), "old worker {pid} runs");
        assert!(m.events(Ev::Stopping.pid(pid)).is_empty(), "{pid}");
    }
    let status = m.status();
    let master = status.master();
    assert_eq!(master.get("reloads_failed"), "1");
    assert_eq!(master.get("reloads_done"), "0");
    assert!(status.worker(canary as u32).is_none(), "{status}");
    let last = status.last_reload().unwrap();
    assert_eq!(last.get("generation"), "1");
    assert_eq!(last.get("outcome"), "failed");
    assert!(
        last.get("reason").contains("during its canary time"),
        "{last:?}"
    );
    let serving: BTreeSet<u32> = status
        .iter()
        .filter(|r| r.kind == "worker")
        .map(|w| {
            assert_eq!(w.get("generation"), "0", "{w:?}");
            w.get("pid").parse().unwrap()
        })
        .collect();
    assert_eq!(serving, old.iter().copied().collect());
}

#[test]
fn canary_that_stays_ready_for_its_canary_time_lets_the_rollout_through() {
    let mut m = rolling_master(3, &["--canary", "1s"]);
    let old = m.wait_ready();
    m.set_knobs(&[("TW_READY", "notify")]);
    m.signal(libc::SIGHUP);
    let started = m.expect_ev(Ev::Started.generation(1));
    let canary = num(&started, "pid");
    assert_eq!(field(&started, "index"), Some("0"));
    let ready = m.expect_ev(Ev::Ready.pid(canary));
    // The master's clock when it saw the canary ready.
    let ready_at = num(&started, "at_ms") + num(&ready, "after_ms");
    m.expect_ev(Ev::CanaryWatched.pid(canary));
    m.expect_ev(Ev::CanaryPassed.pid(canary));
    let stopping = m.expect_ev(Ev::Stopping.pid(old[0]));
    let next = m.expect_ev(Ev::Started.generation(1));
    let status = m.reload_ended(1, "done");
    let watched = num(&stopping, "at_ms") - ready_at;
    assert!(
        watched >= 1000,
        "the canary's old worker was stopped {watched} ms after the canary was ready"
    );
    let gap = num(&next, "at_ms") - ready_at;
    assert!(
        gap >= 1000,
        "the next worker started {gap} ms after the canary was ready"
    );
    // Before the canary passed, it was the only new worker.
    let lines = m.lines();
    let passed = lines
        .iter()
        .position(|l| Ev::CanaryPassed.matches(l))
        .unwrap();
    let before = lines[..passed]
        .iter()
        .filter(|l| Ev::Started.generation(1).matches(l))
        .count();
    assert_eq!(before, 1);
    let new = status.serving();
    assert_eq!(new.len(), 3, "{status}");
    assert!(new.iter().all(|p| !old.contains(p)), "{new:?} vs {old:?}");
    assert_eq!(status.master().get("reloads_done"), "1");
}
