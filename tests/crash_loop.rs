//! Crash loops: a worker that keeps crashing is restarted after a delay that doubles from
//! WORKER_THROTTLE up to --max-backoff, the master never spins while it waits, and a worker
//! that stays up --max-backoff resets the count.

use std::time::Instant;

use crate::support::{Ev, Master, cpu_time, field, get, num};

const THROTTLE_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 800;

fn crash_loop_master(max_backoff: &str, extra: &[&str]) -> Master {
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "1", "--throttle", "100ms"])
        .args(["--max-backoff", max_backoff])
        .args(extra.iter().copied())
        .with_knobs(&[("TW_EXIT_AT_START", "1")])
        .start()
}

/// The restart delay after `crashes` crashes in a row, by the documented rule.
fn backoff_ms(crashes: u32) -> u64 {
    if crashes <= 1 {
        THROTTLE_MS
    } else {
        (THROTTLE_MS.max(100) << (crashes - 1)).min(MAX_BACKOFF_MS)
    }
}

#[test]
fn crash_looping_worker_is_restarted_after_a_doubling_delay_capped_at_max_backoff() {
    let mut m = crash_loop_master("800ms", &["--ready", "notify"]);
    let mut starts = vec![num(&m.expect_ev(Ev::Started), "at_ms")];
    let mut planned = Vec::new();
    for crashes in 1..=6u32 {
        let exited = m.expect_ev(Ev::Crashed);
        let lived = num(&exited, "lived_ms");
        assert_eq!(num(&exited, "crashes"), u64::from(crashes), "{exited}");
        assert!(exited.contains("exited with code 1"), "{exited}");
        let restart = m.expect_ev(Ev::Restart.index(0));
        // The log shows the crash loop from the third crash on, and not before.
        assert_eq!(
            restart.contains("crash-looping"),
            crashes >= 3,
            "crash {crashes}: {restart}"
        );
        if crashes >= 3 {
            assert_eq!(num(&restart, "crashes"), u64::from(crashes), "{restart}");
        }
        // Counted from the last start, so never more than the backoff itself.
        let delay = num(&restart, "delay_ms");
        assert!(delay <= backoff_ms(crashes), "{restart}");
        // What the master planned, on its own clock: the restart `lived + delay` after the
        // last start (when it had to wait at all). Load on the machine cannot change it.
        if delay > 0 {
            planned.push((crashes, lived + delay));
        }
        starts.push(num(&m.expect_ev(Ev::Started), "at_ms"));
    }
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("restart gaps (ms): {gaps:?}");
    // 100, 200, 400, 800, then 800 again: it stops growing.
    for (i, gap) in gaps.iter().enumerate() {
        let expected = backoff_ms(i as u32 + 1);
        assert!(
            *gap >= expected,
            "restart {} came {gap} ms after the previous start, before its backoff of {expected} ms; gaps {gaps:?}",
            i + 1
        );
    }
    // The plan follows the rule and stops growing at --max-backoff (ms rounding: ±1).
    for (crashes, at) in &planned {
        let expected = backoff_ms(*crashes);
        assert!(
            at.abs_diff(expected) <= 1,
            "crash {crashes}: restart planned {at} ms after the last start, the rule says {expected} ms; plans {planned:?}"
        );
    }
    assert!(
        planned
            .iter()
            .filter(|(_, at)| at.abs_diff(MAX_BACKOFF_MS) <= 1)
            .count()
            >= 2,
        "capped: {planned:?}"
    );
    assert_eq!(gaps.len(), 6);
    let status = m.status();
    let slot = status.slot(0);
    assert_eq!(slot.get("crash_loop"), "true", "{slot:?}");
    assert!(slot.num("crashes") >= 6, "{slot:?}");
    assert!(slot.num("restarts") >= 6, "{slot:?}");
    let table = m.ctl(&["status"]).stdout;
    assert!(table.contains(" crashes in a row (crash loop)"), "{table}");
}

#[test]
fn crash_looping_worker_costs_the_master_almost_no_cpu() {
    // The default readiness probe (`--ready listening`) runs too, while each worker starts.
    let mut m = crash_loop_master("200ms", &[]);
    // Skip the first two restarts; then the delay is at its cap of 200 ms.
    // (Counted in the log: asking status in a loop would cost the master CPU.)
    for _ in 0..2 {
        m.expect_ev(Ev::Started);
    }
    let first = num(&m.expect_ev(Ev::Started), "at_ms");
    let (cpu0, t0) = (cpu_time(m.pid()), Instant::now());
    let mut last = first;
    for _ in 0..10 {
        last = num(&m.expect_ev(Ev::Started), "at_ms");
    }
    let (cpu, elapsed) = (cpu_time(m.pid()) - cpu0, t0.elapsed());
    eprintln!("10 restarts in {elapsed:?}; master CPU {cpu:?}");
    // On the master's own clock: the test may read the lines late, the master cannot start
    // them early.
    assert!(
        last - first >= 10 * 200,
        "10 restarts at a 200 ms backoff took only {} ms",
        last - first
    );
    assert!(
        cpu.as_secs_f64() < 0.10 * elapsed.as_secs_f64(),
        "the master used {cpu:?} of CPU in {elapsed:?} of crash loop"
    );
}

#[test]
fn crash_count_resets_once_a_worker_stays_up_max_backoff() {
    let mut m = crash_loop_master("800ms", &["--ready", "notify"]);
    let addr = m.tcp_addr();
    // From here on the log only, no status: a status request reads the worker's /proc tree,
    // which can stall the master when it reaps that worker (see `Master::reload_done`), and
    // the next worker's life, counted from before the stall, would look longer.
    m.expect_ev(Ev::Crashed.field("crashes", 3));
    // The fix is deployed: the next start serves.
    m.set_knobs(&[("TW_READY", "notify")]);
    let pid = num(&m.expect_ev(Ev::Ready.index(0)), "pid");
    let started = m.events(Ev::Started.pid(pid)).remove(0);
    // Once it has stayed up --max-backoff, the slot's crash count is reset.
    m.expect_ev(Ev::Stable.pid(pid));
    // Broken again: it crashes once while serving, then at each start.
    m.set_knobs(&[("TW_EXIT_AT_START", "1")]);
    let _ = get(addr, "/exit?code=1");
    let exited = m.expect_ev(Ev::Crashed.pid(pid));
    assert!(num(&exited, "lived_ms") >= MAX_BACKOFF_MS, "{exited}");
    assert_eq!(num(&exited, "crashes"), 1, "the count restarted: {exited}");
    // The first crash waits only the throttle (long over: at once), not the 800 ms cap.
    let restart = m.expect_ev(Ev::Restart.index(0));
    assert_eq!(num(&restart, "delay_ms"), 0, "{restart}");
    let first = m.expect_ev(Ev::Started.index(0));
    assert!(num(&first, "at_ms") - num(&started, "at_ms") >= THROTTLE_MS);
    let exited = m.expect_ev(Ev::Crashed);
    assert_eq!(num(&exited, "crashes"), 2, "{exited}");
    // The second waits backoff(2) = 200 ms from the first's start, not the cap of 800 ms.
    let restart = m.expect_ev(Ev::Restart.index(0));
    assert!(num(&restart, "delay_ms") <= backoff_ms(2), "{restart}");
    let second = m.expect_ev(Ev::Started.index(0));
    assert!(num(&second, "at_ms") - num(&first, "at_ms") >= backoff_ms(2));
    assert!(
        field(&second, "generation") == Some("0"),
        "a restart, not a reload: {second}"
    );
}
