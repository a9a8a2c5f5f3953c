//! Reload storm: the master with 2 workers under a loadgen load (8 connections), one SIGHUP
//! per second, in new-connection and keep-alive modes. Gives three sections: failed requests
//! and reload counts; reload latency (SIGHUP to the exit of the last old worker, watched with
//! pidfd_open + poll); the master's memory and CPU. The master runs with `--no-monitor`, so
//! that its idle wakeups are those of its loop alone (the `monitor` section measures the
//! resource monitor).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::procs::{Extra, Master, Ready, field, pidfd_open};
use crate::report::{Json, Metric, Section};
use crate::{Ctx, proc, stats};

const WORKERS: usize = 2;
const CONNECTIONS: usize = 8;
/// Upper bound on the master's memory: 3 MiB, in kB as /proc gives it.
const RSS_TARGET_KB: u64 = 3 * 1024;
/// The resource monitor is off: its timer would wake the master every 2 s (even during its
/// grace period), and the idle figures here are about the master's loop. The monitor's own
/// cost is the `monitor` section's.
const NO_MONITOR: Extra<'static> = Extra {
    args: &["--no-monitor"],
    env: &[],
};
/// How long an old worker may take to exit before its wait is given up.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// One SIGHUP.
#[derive(Debug)]
struct Hup {
    /// Since the first SIGHUP.
    at: Duration,
    /// A reload was in flight when it was sent (the master queues or coalesces it).
    in_flight: bool,
    /// The workers alive just before it.
    old: Vec<i32>,
    /// Until the last of them exited (`None`: not within EXIT_WAIT, or none to wait for).
    latency: Option<Duration>,
}

/// One storm's results.
#[derive(Debug)]
struct Storm {
    mode: Mode,
    hups: Vec<Hup>,
    started: usize,
    done: usize,
    failed: usize,
    queued: usize,
    took_ms: Vec<f64>,
    load: loadgen::Report,
    storm_wall: Duration,
    cpu_ms: f64,
    cpu_runtime_ms: Option<f64>,
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    fds: usize,
    idle_ticks: u64,
    idle_runtime_ms: Option<f64>,
    idle_wakeups: u64,
    idle_lines: Vec<String>,
    warnings: Vec<String>,
    exit: String,
}

/// Reload lines so far: (started, done, failed, queued).
pub(crate) fn reload_counts(lines: &[String]) -> (usize, usize, usize, usize) {
    let count = |pat: &str| lines.iter().filter(|l| l.contains(pat)).count();
    (
        count("reload started"),
        count("reload done"),
        count("reload ended: failed"),
        count("reload queued"),
    )
}

/// The workers the log says are alive.
fn live_workers(lines: &[String]) -> BTreeSet<i32> {
    let mut live = BTreeSet::new();
    for l in lines {
        let Some(pid) = field(l, "pid").and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if l.contains("worker started") {
            live.insert(pid);
        } else if l.contains("worker stopped") || l.contains("exited") {
            live.remove(&pid);
        }
    }
    live
}

pub(crate) fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        thread::sleep(left);
    }
}

pub(crate) fn mode_key(mode: Mode) -> &'static str {
    match mode {
        Mode::Close => "close",
        Mode::KeepAlive => "keepalive",
    }
}

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Close => "new connection",
        Mode::KeepAlive => "keep-alive",
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn storm(ctx: &Ctx, mode: Mode) -> Result<Storm, String> {
    let secs = ctx.opts.storm_secs;
    let mut master = Master::launch(
        &ctx.bins.master,
        &ctx.bins.worker,
        WORKERS,
        Ready::Notify,
        &NO_MONITOR,
        ctx.opts.verbose,
    )?;
    let pid = master.pid();
    let log = std::sync::Arc::clone(master.proc.log());
    eprintln!(
        "bench: storm {}: master pid {pid} on {}, {secs} SIGHUPs",
        mode_name(mode),
        master.addr
    );
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(master.addr));
    cfg.connections = CONNECTIONS;
    cfg.mode = mode;
    cfg.request_timeout = Duration::from_secs(2);
    let load = loadgen::start(cfg);
    if !load.wait_for_requests(200, Duration::from_secs(10)) {
        return Err(format!(
            "the load did not reach 200 requests in 10 s: {}",
            load.stop()
        ));
    }
    let ticks0 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let run0 = proc::cpu_runtime_ms(pid);
    let t0 = Instant::now();
    let mut hups = Vec::new();
    let mut waiters: Vec<JoinHandle<Option<Instant>>> = Vec::new();
    let mut sent_at = Vec::new();
    for i in 0..secs {
        sleep_until(t0 + Duration::from_secs(i));
        let lines = log.lines();
        let (started, done, failed, _) = reload_counts(&lines);
        let mut old = live_workers(&lines);
        old.extend(proc::children(pid));
        // Descriptors first: from here on a pid cannot be reused under us.
        let fds: Vec<(i32, OwnedFd)> = old
            .iter()
            .filter_map(|&p| pidfd_open(p).ok().map(|fd| (p, fd)))
            .collect();
        let sent = Instant::now();
        master.proc.signal(libc::SIGHUP)?;
        let old: Vec<i32> = fds.iter().map(|(p, _)| *p).collect();
        let fds: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
        waiters.push(thread::spawn(move || {
            crate::procs::wait_all_exit(&fds, sent + EXIT_WAIT)
        }));
        sent_at.push(sent);
        hups.push(Hup {
            at: sent - t0,
            in_flight: started > done + failed,
            old,
            latency: None,
        });
    }
    sleep_until(t0 + Duration::from_secs(secs));
    for ((hup, waiter), sent) in hups.iter_mut().zip(waiters).zip(sent_at) {
        let exited = waiter.join().unwrap_or(None);
        hup.latency = exited
            .filter(|_| !hup.old.is_empty())
            .map(|t| t.saturating_duration_since(sent));
    }
    // Every queued reload has started and ended.
    let settled = log.wait_until(Duration::from_secs(30), |lines| {
        let (started, done, failed, _) = reload_counts(lines);
        started == done + failed
    });
    let storm_wall = t0.elapsed();
    let ticks1 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let run1 = proc::cpu_runtime_ms(pid);
    let report = load.stop();
    if !settled {
        eprintln!("bench: storm: reloads still in flight 30 s after the last SIGHUP");
    }
    let rss_kb = proc::status_kb(pid, "VmRSS").map_err(io("master's VmRSS"))?;
    let hwm_kb = proc::status_kb(pid, "VmHWM").map_err(io("master's VmHWM"))?;
    let threads = proc::threads(pid).map_err(io("master's Threads"))?;
    let fds = proc::fd_count(pid).map_err(io("master's fds"))?;
    // Idle: workers running, no load, nothing to do.
    let idle_from = log.len();
    let idle0 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let idle_run0 = proc::cpu_runtime_ms(pid);
    let wake0 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
    thread::sleep(Duration::from_secs(ctx.opts.idle_secs));
    let idle1 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let idle_run1 = proc::cpu_runtime_ms(pid);
    let wake1 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
    let lines = log.lines();
    let idle_lines = lines[idle_from..].to_vec();
    let (started, done, failed, queued) = reload_counts(&lines);
    let took_ms = lines
        .iter()
        .filter(|l| l.contains("reload done"))
        .filter_map(|l| field(l, "took_ms")?.parse::<f64>().ok())
        .collect();
    let warnings = lines
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .cloned()
        .collect();
    let status = master.stop();
    let exit = match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    };
    let s = Storm {
        mode,
        hups,
        started,
        done,
        failed,
        queued,
        took_ms,
        load: report,
        storm_wall,
        cpu_ms: proc::ticks_ms(ticks1.saturating_sub(ticks0)),
        cpu_runtime_ms: run0.zip(run1).map(|(a, b)| b - a),
        rss_kb,
        hwm_kb,
        threads,
        fds,
        idle_ticks: idle1.saturating_sub(idle0),
        idle_runtime_ms: idle_run0.zip(idle_run1).map(|(a, b)| b - a),
        idle_wakeups: wake1.since(wake0).total(),
        idle_lines,
        warnings,
        exit,
    };
    eprintln!(
        "bench: storm {}: {} requests, {} failed, {} reloads done, VmHWM {} kB",
        mode_name(mode),
        s.load.total(),
        s.load.failed(),
        s.done,
        s.hwm_kb
    );
    Ok(s)
}

/// Runs the storms and returns the storm, latency and resources sections.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let mut storms = Vec::new();
    let mut errors = Vec::new();
    for mode in [Mode::Close, Mode::KeepAlive] {
        match storm(ctx, mode) {
            Ok(s) => storms.push(s),
            Err(e) => errors.push(format!("{} storm: {e}", mode_name(mode))),
        }
    }
    let mut sections = vec![
        storm_section(ctx, &storms),
        latency_section(&storms),
        resources_section(ctx, &storms),
    ];
    sections[0].errors = errors;
    Ok(sections)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn storm_section(ctx: &Ctx, storms: &[Storm]) -> Section {
    let secs = ctx.opts.storm_secs;
    let mut s = Section::new(
        "storm",
        &format!(
            "Reload storm: {WORKERS} workers, loadgen {CONNECTIONS} connections, one SIGHUP per second for {secs} s"
        ),
    );
    s.intro.push(format!(
        "`master-process -l 127.0.0.1:0 -w {WORKERS} --ready notify --no-monitor -- \
         test-worker` (TW_READY=notify; no resource monitor, whose timer would wake the master \
         every 2 s: see the `monitor` section for its cost). loadgen counts every request it \
         sent in exactly one bucket (2 s deadline per request). SIGHUPs go out on a 1 s cadence whatever the master is \
         doing; one that arrives while a reload is in flight is queued by the master, and \
         several such are coalesced into one more reload. The load runs from before the first \
         SIGHUP until every reload has ended."
    ));
    for st in storms {
        let key = mode_key(st.mode);
        let name = mode_name(st.mode);
        let r = &st.load;
        s.push(
            Metric::info(
                &format!("{key}.failed"),
                &format!("{name}: failed requests"),
                Json::uint(r.failed()),
                r.failed().to_string(),
            )
            .target("0", r.failed() == 0),
        );
        s.push(Metric::info(
            &format!("{key}.failed_by_kind"),
            &format!("{name}: failed by kind"),
            Json::obj([
                ("refused", Json::uint(r.refused)),
                ("reset", Json::uint(r.reset)),
                ("closed_early", Json::uint(r.closed_early)),
                ("timeout", Json::uint(r.timeout)),
                ("bad_status", Json::uint(r.bad_status)),
                ("other", Json::uint(r.other)),
            ]),
            format!(
                "refused {}, reset {}, closed early {}, timeout {}, non-2xx {}, other {}",
                r.refused, r.reset, r.closed_early, r.timeout, r.bad_status, r.other
            ),
        ));
        s.push(Metric::info(
            &format!("{key}.requests"),
            &format!("{name}: requests (ok / total)"),
            Json::obj([("ok", Json::uint(r.ok)), ("total", Json::uint(r.total()))]),
            format!(
                "{} / {} ({:.0} req/s over {:.1} s)",
                r.ok,
                r.total(),
                r.requests_per_sec(),
                r.elapsed.as_secs_f64()
            ),
        ));
        s.push(Metric::info(
            &format!("{key}.request_latency_ms"),
            &format!("{name}: request latency p50 / p99 / max"),
            Json::obj([
                ("p50", Json::Num(ms(r.latency_p50))),
                ("p99", Json::Num(ms(r.latency_p99))),
                ("max", Json::Num(ms(r.latency_max))),
            ]),
            format!(
                "{:.2} / {:.2} / {:.1} ms",
                ms(r.latency_p50),
                ms(r.latency_p99),
                ms(r.latency_max)
            ),
        ));
        let in_flight = st.hups.iter().filter(|h| h.in_flight).count();
        s.push(Metric::info(
            &format!("{key}.sighups"),
            &format!("{name}: SIGHUPs sent (of which during a reload in flight)"),
            Json::obj([
                ("sent", Json::uint(st.hups.len() as u64)),
                ("during_reload", Json::uint(in_flight as u64)),
            ]),
            format!("{} ({in_flight})", st.hups.len()),
        ));
        let coalesced = st.hups.len().saturating_sub(st.started);
        s.push(
            Metric::info(
                &format!("{key}.reloads_done"),
                &format!("{name}: reloads completed (`reload done` lines)"),
                Json::uint(st.done as u64),
                format!(
                    "{} of {} started; {} queued, {} SIGHUP(s) coalesced away",
                    st.done, st.started, st.queued, coalesced
                ),
            )
            .expect("one per SIGHUP unless coalesced"),
        );
        s.push(
            Metric::info(
                &format!("{key}.reloads_failed"),
                &format!("{name}: failed reloads"),
                Json::uint(st.failed as u64),
                st.failed.to_string(),
            )
            .target("0", st.failed == 0),
        );
        s.push(Metric::info(
            &format!("{key}.pids_served"),
            &format!("{name}: distinct worker pids that answered"),
            Json::uint(r.by_pid.len() as u64),
            r.by_pid.len().to_string(),
        ));
        if r.failed() > 0 {
            s.notes.push(format!(
                "- {name}: first failures (seconds since the load started; the first SIGHUP \
                 went out once 200 requests had completed):"
            ));
            for e in &r.errors {
                s.notes.push(format!("  - `{e}`"));
            }
        }
        if !st.warnings.is_empty() {
            s.notes.push(format!(
                "- {name}: the master logged {} warning/error line(s), e.g.:",
                st.warnings.len()
            ));
            for w in st.warnings.iter().take(5) {
                s.notes.push(format!("  - `{w}`"));
            }
        }
        s.details.push((
            key.to_owned(),
            Json::obj([
                ("loadgen", Json::Raw(r.to_json())),
                ("reloads_started", Json::uint(st.started as u64)),
                ("reloads_done", Json::uint(st.done as u64)),
                ("reloads_failed", Json::uint(st.failed as u64)),
                ("reloads_queued", Json::uint(st.queued as u64)),
                (
                    "master_warnings",
                    Json::Arr(st.warnings.iter().map(Json::str).collect()),
                ),
                ("master_exit", Json::str(&st.exit)),
            ]),
        ));
    }
    s
}

fn latency_section(storms: &[Storm]) -> Section {
    let mut s = Section::new("reload_latency", "Reload latency (during the storm)");
    s.intro.push(
        "Per SIGHUP: from sending it to the exit of the last worker that was alive just before it \
         (pids from the master's log and /proc/PID/task/*/children, watched with pidfd_open + \
         poll). A SIGHUP sent during a reload in flight waits for that one too. `took_ms` is the \
         master's own figure from its `reload done` lines. The old worker drains on SIGTERM: \
         idle keep-alive connections are closed after 500 ms (test-worker's TW_DRAIN_IDLE_MS)."
            .to_owned(),
    );
    for st in storms {
        let key = mode_key(st.mode);
        let name = mode_name(st.mode);
        let lat: Vec<f64> = st.hups.iter().filter_map(|h| h.latency.map(ms)).collect();
        let missing = st.hups.len() - lat.len();
        s.push(Metric::info(
            &format!("{key}.sighup_to_old_exit_ms"),
            &format!("{name}: SIGHUP to last old worker exit, median / p90 / max"),
            Json::obj([
                ("median", Json::Num(stats::median(&lat))),
                ("p90", Json::Num(stats::percentile(&lat, 90.0))),
                ("max", Json::Num(stats::max(&lat))),
                ("samples", Json::uint(lat.len() as u64)),
            ]),
            format!(
                "{:.0} / {:.0} / {:.0} ms ({} samples)",
                stats::median(&lat),
                stats::percentile(&lat, 90.0),
                stats::max(&lat),
                lat.len()
            ),
        ));
        if missing > 0 {
            s.push(
                Metric::info(
                    &format!("{key}.old_not_exited"),
                    &format!("{name}: SIGHUPs whose old workers did not exit within {EXIT_WAIT:?}"),
                    Json::uint(missing as u64),
                    missing.to_string(),
                )
                .target("0", false),
            );
        }
        s.push(Metric::info(
            &format!("{key}.took_ms"),
            &format!("{name}: master's `took_ms`, median / max"),
            Json::obj([
                ("median", Json::Num(stats::median(&st.took_ms))),
                ("max", Json::Num(stats::max(&st.took_ms))),
                ("samples", Json::uint(st.took_ms.len() as u64)),
            ]),
            format!(
                "{:.0} / {:.0} ms ({} reloads)",
                stats::median(&st.took_ms),
                stats::max(&st.took_ms),
                st.took_ms.len()
            ),
        ));
        s.details.push((
            key.to_owned(),
            Json::obj([
                (
                    "sighups",
                    Json::Arr(
                        st.hups
                            .iter()
                            .map(|h| {
                                Json::obj([
                                    ("at_ms", Json::Num(ms(h.at))),
                                    ("during_reload", Json::Bool(h.in_flight)),
                                    (
                                        "old_pids",
                                        Json::Arr(
                                            h.old.iter().map(|&p| Json::Int(p.into())).collect(),
                                        ),
                                    ),
                                    (
                                        "latency_ms",
                                        h.latency.map_or(Json::Null, |d| Json::Num(ms(d))),
                                    ),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("took_ms", Json::nums(&st.took_ms)),
            ]),
        ));
    }
    s
}

fn resources_section(ctx: &Ctx, storms: &[Storm]) -> Section {
    let mut s = Section::new("master_resources", "Master process: memory and CPU");
    s.intro.push(format!(
        "Read from /proc/PID/status and /proc/PID/stat of the master of each storm: memory right \
         after the storm; CPU from the first SIGHUP until every reload had ended (the scheduler's \
         `se.sum_exec_runtime` from /proc/PID/task/*/sched, exact; utime + stime from \
         /proc/PID/stat only move by whole ticks); then {} s idle with its {WORKERS} workers \
         running and no load (clock tick = {} ms; wakeups: voluntary + involuntary context \
         switches summed over /proc/PID/task/*/status). The master runs with `--no-monitor`: \
         the idle figures are its loop's; with the monitor on (the default) it also wakes once \
         per `--monitor-interval` (2 s), measured in the `monitor` section.",
        ctx.opts.idle_secs,
        1000 / proc::clk_tck()
    ));
    for st in storms {
        let key = mode_key(st.mode);
        let name = mode_name(st.mode);
        s.push(
            Metric::info(
                &format!("{key}.vm_rss_kb"),
                &format!("{name}: VmRSS after the storm"),
                Json::uint(st.rss_kb),
                format!("{} kB", st.rss_kb),
            )
            .target("<= 3072 kB (3 MiB)", st.rss_kb <= RSS_TARGET_KB),
        );
        s.push(
            Metric::info(
                &format!("{key}.vm_hwm_kb"),
                &format!("{name}: VmHWM (peak RSS)"),
                Json::uint(st.hwm_kb),
                format!("{} kB", st.hwm_kb),
            )
            .target("<= 3072 kB (3 MiB)", st.hwm_kb <= RSS_TARGET_KB),
        );
        let wall = st.storm_wall.as_secs_f64();
        // Prefer the scheduler's exact runtime; utime + stime move by whole ticks.
        let cpu = st.cpu_runtime_ms.unwrap_or(st.cpu_ms);
        s.push(Metric::info(
            &format!("{key}.storm_cpu_ms"),
            &format!("{name}: CPU during the storm"),
            Json::obj([
                ("cpu_ms", Json::Num(cpu)),
                ("utime_stime_ms", Json::Num(st.cpu_ms)),
                ("wall_s", Json::Num(wall)),
                ("reloads", Json::uint(st.done as u64)),
            ]),
            format!(
                "{cpu:.1} ms in {wall:.1} s ({:.3}% of a CPU; {:.2} ms per reload; utime+stime {:.0} ms)",
                cpu / (wall * 10.0),
                cpu / st.done.max(1) as f64,
                st.cpu_ms
            ),
        ));
        s.push(
            Metric::info(
                &format!("{key}.idle_cpu_ticks"),
                &format!("{name}: CPU ticks while idle for {} s", ctx.opts.idle_secs),
                Json::uint(st.idle_ticks),
                match st.idle_runtime_ms {
                    Some(ms) => format!("{} (runtime {ms:.3} ms)", st.idle_ticks),
                    None => st.idle_ticks.to_string(),
                },
            )
            .target("0", st.idle_ticks == 0),
        );
        s.push(
            Metric::info(
                &format!("{key}.idle_wakeups"),
                &format!(
                    "{name}: wakeups (context switches) while idle for {} s",
                    ctx.opts.idle_secs
                ),
                Json::uint(st.idle_wakeups),
                st.idle_wakeups.to_string(),
            )
            .target("0", st.idle_wakeups == 0),
        );
        s.push(Metric::info(
            &format!("{key}.threads"),
            &format!("{name}: threads"),
            Json::uint(st.threads),
            st.threads.to_string(),
        ));
        s.push(Metric::info(
            &format!("{key}.fds"),
            &format!("{name}: open file descriptors"),
            Json::uint(st.fds as u64),
            st.fds.to_string(),
        ));
        s.push(Metric::info(
            &format!("{key}.exit"),
            &format!("{name}: master's exit on SIGTERM"),
            Json::str(&st.exit),
            st.exit.clone(),
        ));
        if !st.idle_lines.is_empty() {
            s.notes.push(format!(
                "- {name}: lines logged while idle: {}",
                st.idle_lines
                    .iter()
                    .take(5)
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_workers_and_reloads() {
        let lines: Vec<String> = [
            "x  INFO master_process::supervisor: worker started pid=10 index=0 generation=0",
            "x  INFO master_process::supervisor: worker started pid=11 index=1 generation=0",
            "x  INFO master_process::supervisor: reload started generation=1 workers=2",
            "x  INFO master_process::supervisor: worker started pid=12 index=0 generation=1",
            "x  INFO master_process::supervisor: worker stopped pid=10 index=0 generation=0 status=exited with code 0",
            "x  INFO master_process::supervisor: reload queued: it starts when the current one ends",
            "x  WARN master_process::supervisor: worker exited unexpectedly pid=11 index=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(live_workers(&lines), BTreeSet::from([12]));
        assert_eq!(reload_counts(&lines), (1, 0, 0, 1));
    }
}
