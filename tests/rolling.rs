//! Rolling reloads (`--reload rolling --max-surge N`): never fewer ready workers than slots,
//! never more processes than slots + N; and the canary (`--canary DUR`), which stops a bad
//! rollout after one worker and lets a good one through after its time.

use std::collections::BTreeSet;

use loadgen::{Mode, Target};

use crate::support::{
    DEADLINE, Master, alive, children, field, get_pid, num, start_load, wait_gone,
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
    let gen1 = |l: &str| field(l, "generation") == Some("1");
    for l in lines {
        if l.contains("worker started ") && gen1(l) {
            candidates += 1;
        } else if l.contains("worker ready ") && gen1(l) {
            candidates -= 1;
        } else if l.contains("stopping worker ") && field(l, "generation") == Some("0") {
            retiring += 1;
        } else if l.contains("worker stopped ") && field(l, "generation") == Some("0") {
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
    m.expect("reload started generation=1");
    let deadline = std::time::Instant::now() + DEADLINE;
    let (mut samples, mut fewest_ready, mut most_children, mut most_workers) =
        (0usize, usize::MAX, 0usize, 0usize);
    while !m.logged("reload done generation=1 ") {
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
    }
    m.expect("reload done generation=1 ");
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
    let new = m.serving();
    assert_eq!(new.len(), WORKERS);
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
    let canary = num(&m.expect("worker started "), "pid");
    m.expect(&format!("worker ready pid={canary} "));
    m.expect("canary ready: watching it before the rest follow");
    m.expect(&format!(
        "new worker exited before it had proven ready pid={canary} "
    ));
    m.expect("reload failed: ");
    m.expect("reload ended: failed");
    assert!(
        out.stdout.starts_with(&format!(
            "reload 1 failed: the canary, worker 0 (pid {canary}), exited with code 9 during its canary time"
        )),
        "{out:?}"
    );
    assert!(!m.logged("canary passed"));
    let started_gen1 = m
        .lines()
        .iter()
        .filter(|l| l.contains("worker started ") && field(l, "generation") == Some("1"))
        .count();
    assert_eq!(started_gen1, 1, "only the canary was started");
    // Every old worker still serves; none was ever asked to stop.
    let answered: BTreeSet<u32> = (0..20).map(|_| get_pid(addr)).collect();
    assert!(
        answered.iter().all(|p| old.contains(p)),
        "{answered:?} vs {old:?}"
    );
    for pid in &old {
        assert!(alive(*pid), "old worker {pid} runs");
        assert!(!m.logged(&format!("stopping worker pid={pid} ")), "{pid}");
    }
    let status = m.status();
    let master = &status[0];
    assert_eq!(master.get("reloads_failed"), "1");
    assert_eq!(master.get("reloads_done"), "0");
    let last = status.iter().find(|r| r.kind == "last_reload").unwrap();
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
    let started = m.expect("worker started ");
    let canary = num(&started, "pid");
    assert_eq!(field(&started, "generation"), Some("1"));
    let ready = m.expect(&format!("worker ready pid={canary} "));
    // The master's clock when it saw the canary ready.
    let ready_at = num(&started, "at_ms") + num(&ready, "after_ms");
    m.expect("canary ready: watching it before the rest follow");
    m.expect(&format!("canary passed: the rest follow pid={canary}"));
    let stopping = m.expect(&format!("stopping worker pid={} ", old[0]));
    let next = m.expect("worker started ");
    assert_eq!(field(&next, "generation"), Some("1"));
    m.expect("reload done generation=1 ");
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
        .position(|l| l.contains("canary passed"))
        .unwrap();
    let before = lines[..passed]
        .iter()
        .filter(|l| l.contains("worker started ") && field(l, "generation") == Some("1"))
        .count();
    assert_eq!(before, 1);
    let new = m.serving();
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|p| !old.contains(p)), "{new:?} vs {old:?}");
    assert!(m.status()[0].get("reloads_done") == "1");
}
