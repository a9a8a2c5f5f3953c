//! The soak: many reloads under two continuous loads at once, and the master must come out
//! of them as it went in: no failed request, no descriptor or thread more, no memory growth,
//! no zombie.
//!
//! `MASTER_PROCESS_SOAK_RELOADS` sets the number of reloads (default 100). The long run:
//!
//! ```text
//! MASTER_PROCESS_SOAK_RELOADS=1000 cargo nextest run --workspace --all-features --release soak --no-capture
//! ```

use std::time::Instant;

use loadgen::{Load, Mode, Target};

use crate::support::{DEADLINE, Master, Quiet, quiet_snapshot, start_load};

/// How much VmRSS may grow from the 10% mark to the end.
const RSS_SLACK_KB: u64 = 256;

/// Waits until `load` has finished `more` requests beyond those so far.
fn goes_on(load: &Load, more: u64, generation: u64) {
    assert!(
        load.wait_for_more(more, DEADLINE),
        "load goes on after reload {generation}: {}",
        load.snapshot()
    );
}

#[test]
fn reloads_under_continuous_load_leak_nothing() {
    let reloads: u64 = std::env::var("MASTER_PROCESS_SOAK_RELOADS")
        .ok()
        .map(|v| v.parse().expect("MASTER_PROCESS_SOAK_RELOADS: a number"))
        .unwrap_or(100);
    assert!(reloads >= 10, "a soak needs at least 10 reloads");
    let mark = reloads / 10;

    // Readiness by notify, as in zero_downtime.rs. With `--ready listening` each reload under
    // this load takes 0.5-1 s: the probe reads the /proc tree of each new worker (a thread
    // per connection here), and reaping that worker later stalls the master in waitpid
    // (the kernel invalidating its /proc dentries: release_task, shrink_dcache_parent) for
    // 0.4-2.6 s. Too slow for 100 reloads in the test suite, and not a leak.
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    let addr = m.tcp_addr();
    let master = m.pid();
    let close = start_load(Target::Tcp(addr), Mode::Close, 4);
    let keep_alive = start_load(Target::Tcp(addr), Mode::KeepAlive, 4);
    let started = Instant::now();

    let mut first: Option<Quiet> = None;
    let mut at_mark: Option<Quiet> = None;
    let mut last: Option<Quiet> = None;
    for generation in 1..=reloads {
        let serving = m.reload(generation);
        // Every generation is served by both loads before the next reload.
        goes_on(&close, 20, generation);
        goes_on(&keep_alive, 20, generation);
        let now = quiet_snapshot(master, DEADLINE)
            .unwrap_or_else(|| panic!("the master never slept after reload {generation}"));
        let zombies: Vec<_> = now.children.iter().filter(|(_, s)| *s == 'Z').collect();
        assert!(
            zombies.is_empty(),
            "zombie children after reload {generation}: {zombies:?}"
        );
        // The old workers were reaped before `reload done`: only the new ones are children.
        let mut children: Vec<u32> = now.children.iter().map(|&(p, _)| p).collect();
        children.sort_unstable();
        let mut expected = serving.clone();
        expected.sort_unstable();
        assert_eq!(children, expected, "children after reload {generation}");
        if let Some(mark) = &at_mark {
            assert_eq!(
                now.fds.len(),
                mark.fds.len(),
                "open descriptors after reload {generation} ({:?}) and reload {} ({:?})",
                now.fds,
                reloads / 10,
                mark.fds
            );
            assert_eq!(
                now.threads, mark.threads,
                "threads after reload {generation}"
            );
        }
        if generation == 1 {
            first = Some(now.clone());
        }
        if generation == mark {
            at_mark = Some(now.clone());
        }
        last = Some(now);
    }
    let took = started.elapsed();
    let close = close.stop();
    let keep_alive = keep_alive.stop();
    let (first, at_mark, last) = (first.unwrap(), at_mark.unwrap(), last.unwrap());
    eprintln!(
        "soak: {reloads} reloads in {:.1}s ({:.0} ms each) under two loads. Master: {} \
         descriptors after reload 1, {} after reload {mark}, {} at the end; VmRSS {} kB, \
         {} kB, {} kB; threads {}, {}, {}. New connection per request: {} requests, {} \
         failed ({:.0} req/s); keep-alive: {} requests, {} failed ({:.0} req/s).",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / reloads as f64,
        first.fds.len(),
        at_mark.fds.len(),
        last.fds.len(),
        first.rss_kb,
        at_mark.rss_kb,
        last.rss_kb,
        first.threads,
        at_mark.threads,
        last.threads,
        close.total(),
        close.failed(),
        close.requests_per_sec(),
        keep_alive.total(),
        keep_alive.failed(),
        keep_alive.requests_per_sec(),
    );
    assert_eq!(
        close.failed(),
        0,
        "new connection per request: {close}\n{:#?}",
        close.errors
    );
    assert_eq!(
        keep_alive.failed(),
        0,
        "keep-alive: {keep_alive}\n{:#?}",
        keep_alive.errors
    );
    assert!(
        last.rss_kb <= at_mark.rss_kb + RSS_SLACK_KB,
        "VmRSS grew from {} kB at reload {mark} to {} kB at reload {reloads}",
        at_mark.rss_kb,
        last.rss_kb
    );
}
