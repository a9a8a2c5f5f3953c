//! The resource monitor: a worker over its memory or CPU limit for N samples in a row is
//! replaced gracefully, not after N-1 and not when a sample dips under; SIGUSR2 pauses and
//! resumes; a worker may pause its own monitoring.

use std::time::Duration;

use loadgen::Target;

use crate::support::{DEADLINE, Master, get, num};

/// Position of the first line at or after `from` that contains every one of `parts`.
fn find(lines: &[String], from: usize, parts: &[&str]) -> Option<usize> {
    lines
        .iter()
        .skip(from)
        .position(|l| parts.iter().all(|p| l.contains(p)))
        .map(|i| i + from)
}

/// The debug line of a sample of worker `pid` with `over` samples over the memory limit.
fn sample(pid: u64, over: u32) -> String {
    format!("monitor sample pid={pid} memory_over={over} ")
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
    let load = loadgen::start(cfg);
    for &pid in &fat {
        let pid = u64::from(pid);
        let replacing = m.expect("replacing worker: memory");
        let lines = m.lines();
        let at = lines.iter().position(|l| *l == replacing).unwrap();
        let who = num(&replacing, "pid");
        assert!(fat.iter().any(|p| u64::from(*p) == who), "{replacing}");
        assert!(replacing.contains("for 3 samples in a row"), "{replacing}");
        // Exactly the third sample over the limit: samples 1 and 2 came before, and the
        // replacement right after the third.
        let third = find(&lines, 0, &[&sample(who, 3)]).expect("a third sample");
        let second = find(&lines, 0, &[&sample(who, 2)]).expect("a second sample");
        assert!(
            second < third && third < at,
            "order: 2nd {second}, 3rd {third}, replacement {at}"
        );
        assert!(
            find(
                &lines[..third],
                0,
                &["replacing worker", &format!("pid={who} ")]
            )
            .is_none(),
            "not before the 3rd"
        );
        let _ = pid;
    }
    for &pid in &fat {
        m.eventually(&[format!("worker stopped pid={pid}")]);
    }
    let seen = load.snapshot().total();
    assert!(load.wait_for_requests(seen + 100, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    // The replacements are lean: nothing more to replace.
    assert!(m.quiet("replacing worker", Duration::from_millis(1500)));
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
        m.expect(&sample(pid, 2));
        get(addr, "/memory?mb=0").unwrap();
        m.expect(&sample(pid, 0));
    }
    assert!(
        !m.logged("replacing worker"),
        "a dip under the limit resets the count"
    );
    // Kept over, it is replaced at the third sample in a row.
    get(addr, "/memory?mb=64").unwrap();
    m.expect(&sample(pid, 3));
    m.expect("replacing worker: memory");
}

#[test]
fn cpu_over_the_limit_replaces_the_worker() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-v",
            "--max-cpu",
            "50",
            "--cpu-failures",
            "2",
        ])
        .args(["--monitor-interval", "300ms", "--monitor-grace", "0"])
        .with_knobs(&[("TW_SPIN", "1")])
        .start();
    let pid = m.wait_ready()[0];
    m.set_knobs(&[]);
    let line = m.expect("replacing worker: CPU");
    assert_eq!(num(&line, "pid"), u64::from(pid));
    assert!(
        line.contains("over MAX_CPU_ALLOWED=50% for 2 samples in a row"),
        "{line}"
    );
    m.expect(&format!("worker stopped pid={pid}"));
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
    let pid = u64::from(m.wait_ready()[0]);
    m.expect(&sample(pid, 1));
    m.signal(libc::SIGUSR2);
    m.expect("resource monitor paused");
    // Five intervals without a sample: paused (and the worker, over the limit, stays).
    assert!(
        m.quiet("monitor sample", Duration::from_secs(1)),
        "no sample while paused"
    );
    assert!(!m.logged("replacing worker"));
    m.signal(libc::SIGUSR2);
    m.expect("resource monitor resumed");
    // Counts start over after a pause.
    m.expect(&sample(pid, 1));
    m.expect(&sample(pid, 3));
    m.expect("replacing worker: memory");
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
    m.expect(&format!(
        "resource monitoring of this worker paused by the worker pid={pid}"
    ));
    assert!(
        m.quiet(
            &format!("monitor sample pid={pid} "),
            Duration::from_secs(1)
        ),
        "not sampled"
    );
    assert!(!m.logged("replacing worker"));
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
    let pid = u64::from(m.wait_ready()[0]);
    m.expect("worker memory above 80% of MAX_MEMORY_ALLOWED_MB");
    m.expect(&format!("monitor sample pid={pid} "));
    m.expect(&format!("monitor sample pid={pid} "));
    assert_eq!(
        m.count("above 80% of MAX_MEMORY_ALLOWED_MB"),
        1,
        "once per episode"
    );
    let out = m.ctl(&["status", "--json"]);
    assert!(out.stdout.contains("\"mem_high\":true"), "{out:?}");
    assert!(out.stdout.contains("\"max_memory_mb\":100"), "{out:?}");
    assert!(out.stdout.contains("\"monitor\":\"on\""), "{out:?}");
    assert!(
        !m.logged("replacing worker"),
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
    let out = m.ctl(&["status", "--json"]);
    for field in [
        "\"cpu_failures\":4",
        "\"max_cpu_pct\":80",
        "\"memory_failures\":7",
        "\"max_memory_mb\":300",
    ] {
        assert!(out.stdout.contains(field), "{field} in {out:?}");
    }
}

#[test]
fn no_monitor_turns_it_off() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--no-monitor"])
        .start();
    m.wait_ready();
    let out = m.ctl(&["status", "--json"]);
    assert!(out.stdout.contains("\"monitor\":\"off\""), "{out:?}");
}
