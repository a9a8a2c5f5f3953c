//! The resource monitor: a worker over its memory or CPU limit for N samples in a row is
//! replaced gracefully, not after N-1 and not when a sample dips under; SIGUSR2 pauses and
//! resumes; a worker may pause its own monitoring.

use std::time::Duration;

use loadgen::Target;

use crate::support::{DEADLINE, Ev, Json, Master, Want, get, num};

/// A sample of worker `pid` with `over` samples in a row over the memory limit.
fn sample(pid: impl std::fmt::Display, over: u32) -> Want {
    Ev::Sample.pid(pid).field("memory_over", over)
}

/// Waits until none of `pids` is a worker of `m` any more and `workers` others serve;
/// returns those. (Replaced by the resource monitor: generation 0, no reload.)
fn replaced(m: &Master, pids: &[u32], workers: usize) -> Vec<u32> {
    let s = m.wait_status("the workers replaced", |s| {
        pids.iter().all(|p| s.worker(*p).is_none()) && s.serving().len() == workers
    });
    assert_eq!(s.generation(), 0, "replaced, not reloaded: {s}");
    assert!(s.last_reload().is_none(), "{s}");
    s.serving()
}

#[test]
fn memory_over_the_limit_replaces_the_worker_after_exactly_n_samples_with_no_failed_request() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-w",
            "2",
            "-v",
            "--max-memory",
            "40",
            "--memory-failures",
            "3",
        ])
        .args(["--monitor-interval", "300ms", "--monitor-grace", "0"])
        .with_knobs(&[("TW_MEMORY_MB", "64")])
        .start();
    let fat = m.wait_ready();
    // Their replacements start lean.
    m.set_knobs(&[]);
    let mut cfg = loadgen::Config::new(Target::Tcp(m.tcp_addr()));
    cfg.connections = 4;
    cfg.request_timeout = crate::support::REQUEST_TIMEOUT;
    let load = loadgen::start(cfg);
    for _ in &fat {
        let replacing = m.expect_ev(Ev::Replacing);
        let lines = m.lines();
        let at = lines.iter().position(|l| *l == replacing).unwrap();
        let who = num(&replacing, "pid");
        assert!(fat.iter().any(|p| u64::from(*p) == who), "{replacing}");
        // The log says why.
        assert!(replacing.contains("memory"), "{replacing}");
        assert!(replacing.contains("for 3 samples in a row"), "{replacing}");
        // Exactly the third sample over the limit: samples 1 and 2 came before, and the
        // replacement right after the third.
        let find = |want: Want| lines.iter().position(|l| want.matches(l));
        let third = find(sample(who, 3)).expect("a third sample");
        let second = find(sample(who, 2)).expect("a second sample");
        assert!(
            second < third && third < at,
            "order: 2nd {second}, 3rd {third}, replacement {at}"
        );
        assert!(
            !lines[..third]
                .iter()
                .any(|l| Ev::Replacing.pid(who).matches(l)),
            "not before the 3rd"
        );
    }
    let lean = replaced(&m, &fat, 2);
    assert!(load.wait_for_more(100, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    // The replacements are lean: nothing more to replace.
    assert!(m.quiet(Duration::from_millis(1500), |l| Ev::Replacing.matches(l)));
    assert_eq!(m.serving(), lean);
}

#[test]
fn a_sample_under_the_limit_resets_the_count() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            "--max-memory",
            "40",
            "--memory-failures",
            "3",
        ])
        .args(["--monitor-interval", "1s", "--monitor-grace", "0"])
        .start();
    let pid = u64::from(m.wait_ready()[0]);
    let addr = m.tcp_addr();
    for _ in 0..2 {
        // Over for two samples, then under for one: never three in a row.
        get(addr, "/memory?mb=64").unwrap();
        m.expect_ev(sample(pid, 2));
        get(addr, "/memory?mb=0").unwrap();
        m.expect_ev(sample(pid, 0));
    }
    assert!(
        m.events(Ev::Replacing).is_empty(),
        "a dip under the limit resets the count"
    );
    assert_eq!(m.serving(), [pid as u32], "still serving");
    // Kept over, it is replaced at the third sample in a row.
    get(addr, "/memory?mb=64").unwrap();
    m.expect_ev(sample(pid, 3));
    m.expect_ev(Ev::Replacing.pid(pid));
    replaced(&m, &[pid as u32], 1);
}

#[test]
fn cpu_over_the_limit_replaces_the_worker() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            // A spinning thread gets only a share of a core on a loaded machine; an idle
            // worker uses none.
            "--max-cpu",
            "2",
            "--cpu-failures",
            "2",
        ])
        .args(["--monitor-interval", "300ms", "--monitor-grace", "0"])
        .with_knobs(&[("TW_SPIN", "1")])
        .start();
    let pid = m.wait_ready()[0];
    m.set_knobs(&[]);
    let line = m.expect_ev(Ev::Replacing);
    assert_eq!(num(&line, "pid"), u64::from(pid));
    // The log says why.
    assert!(
        line.contains("CPU") && line.contains("over MAX_CPU_ALLOWED=2% for 2 samples in a row"),
        "{line}"
    );
    replaced(&m, &[pid], 1);
}

#[test]
fn sigusr2_pauses_monitoring_and_a_second_sigusr2_resumes_it() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            "--max-memory",
            "40",
            "--memory-failures",
            "3",
        ])
        .args(["--monitor-interval", "200ms", "--monitor-grace", "0"])
        .with_knobs(&[("TW_MEMORY_MB", "64")])
        .start();
    let pid = m.wait_ready()[0];
    m.expect_ev(sample(pid, 1));
    m.signal(libc::SIGUSR2);
    m.wait_status("the monitor paused", |s| {
        s.master().get("monitor") == "paused"
    });
    // Five intervals without a sample: paused (and the worker, over the limit, stays).
    assert!(
        m.quiet(Duration::from_secs(1), |l| Ev::Sample.matches(l)),
        "no sample while paused"
    );
    assert!(m.events(Ev::Replacing).is_empty());
    assert_eq!(m.serving(), [pid]);
    m.mark();
    m.signal(libc::SIGUSR2);
    m.wait_status("the monitor resumed", |s| s.master().get("monitor") == "on");
    // Counts start over after a pause: the first sample since (none while paused) is the
    // first over the limit.
    let first = m.expect_ev(Ev::Sample.pid(pid));
    assert_eq!(num(&first, "memory_over"), 1, "{first}");
    m.expect_ev(sample(pid, 3));
    let replacing = m.expect_ev(Ev::Replacing.pid(pid));
    assert!(replacing.contains("memory"), "{replacing}");
    // SIGUSR2 still reached the worker each time (profiling).
    m.eventually(&[format!("test-worker[{pid}]: got SIGUSR2")]);
}

#[test]
fn a_worker_can_pause_its_own_monitoring() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            "--ready",
            "notify",
            "--max-memory",
            "40",
            "--memory-failures",
            "2",
        ])
        .args(["--monitor-interval", "200ms", "--monitor-grace", "0"])
        .env("TW_READY", "raw")
        .env("TW_NOTIFY_EXTRA", "MONITOR=pause")
        .env("TW_MEMORY_MB", "64")
        .start();
    let pid = m.wait_ready()[0];
    let s = m.wait_status("the worker's monitoring paused", |s| {
        s.worker(pid)
            .is_some_and(|w| w.fields.get("monitor_paused").is_some_and(|p| p == "true"))
    });
    assert_eq!(s.master().get("monitor"), "on", "only this worker's: {s}");
    assert!(
        m.quiet(Duration::from_secs(1), |l| Ev::Sample.pid(pid).matches(l)),
        "not sampled"
    );
    assert!(m.events(Ev::Replacing).is_empty());
    assert_eq!(m.serving(), [pid]);
}

#[test]
fn memory_above_80_percent_is_warned_once_and_shown_in_status() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            "--max-memory",
            "100",
            "--memory-failures",
            "3",
        ])
        .args(["--monitor-interval", "200ms", "--monitor-grace", "0"])
        .env("TW_MEMORY_MB", "85")
        .start();
    let pid = m.wait_ready()[0];
    let warned = m.expect_ev(Ev::MemoryHigh.pid(pid));
    assert!(warned.contains("80%"), "the log says it: {warned}");
    m.expect_ev(Ev::Sample.pid(pid));
    m.expect_ev(Ev::Sample.pid(pid));
    assert_eq!(m.events(Ev::MemoryHigh).len(), 1, "once per episode");
    let j = m.status_json();
    let worker = j
        .at("workers")
        .arr()
        .iter()
        .find(|w| w.at("pid").int() == u64::from(pid))
        .unwrap_or_else(|| panic!("no worker {pid} in {j}"));
    assert!(worker.at("mem_high").bool(), "{j}");
    assert_eq!(j.at("master").at("max_memory_mb").int(), 100, "{j}");
    assert_eq!(j.at("master").at("monitor").str(), "on", "{j}");
    assert!(
        m.events(Ev::Replacing).is_empty(),
        "85 MiB is under the 100 MiB limit"
    );
}

#[test]
fn the_reference_readme_spelling_cpu_monitor_failure_is_accepted() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--monitor-grace", "0"])
        .env("CPU_MONITOR_FAILURE", "4")
        .env("MAX_CPU_ALLOWED", "80")
        .env("MEM_MONITOR_FAILURES", "7")
        .env("MAX_MEMORY_ALLOWED_MB", "300")
        .start();
    m.wait_ready();
    let j = m.status_json();
    for (field, value) in [
        ("cpu_failures", 4),
        ("max_cpu_pct", 80),
        ("memory_failures", 7),
        ("max_memory_mb", 300),
    ] {
        assert_eq!(j.at("master").at(field).int(), value, "{field} in {j}");
    }
}

#[test]
fn no_monitor_turns_it_off() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--no-monitor"])
        .start();
    m.wait_ready();
    let j = m.status_json();
    assert_eq!(j.at("master").at("monitor").str(), "off", "{j}");
}
