//! Reload storm: the master with 2 workers under a loadgen load (8 connections), one SIGHUP
//! per second, in new-connection and keep-alive modes. Gives three sections: failed requests
//! and reload counts; reload latency (SIGHUP to the exit of the last old worker, watched with
//! pidfd_open + poll); the master's memory and CPU. The master runs with `--no-monitor`, so
//! that its idle wakeups are those of its loop alone (the `monitor` section measures the
//! resource monitor).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loadgen::Mode;

use crate::lines::{Harvest, Reloads};
use crate::master::{Master, NO_MONITOR, Ready};
use crate::measure::{Cpu, Spent, io, load, mode_key, mode_name, ms};
use crate::report::{Json, Scope, Section, obj, quoted};
use crate::storm::{self, EXIT_WAIT, Request, Sighup};
use crate::{Ctx, stats, sys};

const WORKERS: usize = 2;
const CONNECTIONS: usize = 8;
/// How long the reloads may take to end after the last SIGHUP.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One storm's results.
#[derive(Debug)]
struct Storm {
    mode: Mode,
    hups: Vec<Request>,
    log: Harvest,
    load: loadgen::Report,
    wall: Duration,
    cpu: Spent,
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    fds: usize,
    idle: Spent,
    idle_lines: Vec<String>,
    exit: String,
}

fn storm(ctx: &Ctx, mode: Mode) -> Result<Storm, String> {
    let secs = ctx.opts.storm_secs;
    let mut master = Master::start(ctx, WORKERS, Ready::Notify, &NO_MONITOR)?;
    let (pid, log) = (master.pid(), Arc::clone(master.proc.log()));
    let name = mode_name(mode);
    eprintln!(
        "bench: storm {name}: master pid {pid} on {}, {secs} SIGHUPs",
        master.addr
    );
    let load = load(master.addr, CONNECTIONS, mode)?;
    let cpu0 = Cpu::read(pid)?;
    let run = storm::run(&mut Sighup::new(&master, SETTLE_TIMEOUT), secs, EXIT_WAIT)?;
    let cpu = Cpu::read(pid)?.since(&cpu0);
    let report = load.stop();
    if !run.settled {
        eprintln!("bench: storm: reloads still in flight 30 s after the last SIGHUP");
    }
    let rss_kb = sys::status_kb(pid, "VmRSS").map_err(io("VmRSS"))?;
    let hwm_kb = sys::status_kb(pid, "VmHWM").map_err(io("VmHWM"))?;
    let threads = sys::stat(pid).map_err(io("Threads"))?.threads;
    let fds = sys::fd_count(pid).map_err(io("fds"))?;
    // Idle: workers running, no load, nothing to do.
    let idle_from = log.len();
    let idle0 = Cpu::read(pid)?;
    thread::sleep(Duration::from_secs(ctx.opts.idle_secs));
    let idle = Cpu::read(pid)?.since(&idle0);
    let idle_lines = log.lines()[idle_from..].to_vec();
    let (log, exit) = master.finish();
    let (hups, wall, load) = (run.requests, run.wall, report);
    let s = Storm {
        mode,
        hups,
        log,
        load,
        wall,
        cpu,
        rss_kb,
        hwm_kb,
        threads,
        fds,
        idle,
        idle_lines,
        exit,
    };
    eprintln!(
        "bench: storm {name}: {} requests, {} failed, {} reloads done, VmHWM {} kB",
        s.load.total(),
        s.load.failed(),
        s.log.reloads.done,
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
    let mut storm = storm_section(ctx, &storms);
    storm.errors = errors;
    Ok(vec![
        storm,
        latency_section(&storms),
        resources_section(ctx, &storms),
    ])
}

fn storm_section(ctx: &Ctx, storms: &[Storm]) -> Section {
    let secs = ctx.opts.storm_secs;
    let title = format!(
        "Reload storm: {WORKERS} workers, loadgen {CONNECTIONS} connections, one SIGHUP per second for {secs} s"
    );
    let mut s = Section::new("storm", &title);
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
        storm_figures(&mut s, st);
    }
    s
}

fn storm_figures(s: &mut Section, st: &Storm) {
    let (key, name, r) = (mode_key(st.mode), mode_name(st.mode), &st.load);
    let m = Scope { key, name };
    s.push(m.zero("failed", "failed requests", r.failed()));
    let by_kind = obj! {
        "refused": r.refused, "reset": r.reset, "closed_early": r.closed_early,
        "timeout": r.timeout, "bad_status": r.bad_status, "other": r.other,
    };
    let shown = format!(
        "refused {}, reset {}, closed early {}, timeout {}, non-2xx {}, other {}",
        r.refused, r.reset, r.closed_early, r.timeout, r.bad_status, r.other
    );
    s.push(m.metric("failed_by_kind", "failed by kind", by_kind, shown));
    let (rate, secs) = (r.requests_per_sec(), r.elapsed.as_secs_f64());
    let shown = format!(
        "{} / {} ({rate:.0} req/s over {secs:.1} s)",
        r.ok,
        r.total()
    );
    let value = obj! {"ok": r.ok, "total": r.total()};
    s.push(m.metric("requests", "requests (ok / total)", value, shown));
    let (p50, p99, max) = (ms(r.latency_p50), ms(r.latency_p99), ms(r.latency_max));
    let shown = format!("{p50:.2} / {p99:.2} / {max:.1} ms");
    let value = obj! {"p50": p50, "p99": p99, "max": max};
    s.push(m.metric(
        "request_latency_ms",
        "request latency p50 / p99 / max",
        value,
        shown,
    ));
    let sent = st.hups.len();
    let in_flight = st.hups.iter().filter(|h| h.in_flight == Some(true)).count();
    let label = "SIGHUPs sent (of which during a reload in flight)";
    let value = obj! {"sent": sent, "during_reload": in_flight};
    s.push(m.metric("sighups", label, value, format!("{sent} ({in_flight})")));
    let Reloads {
        started,
        done,
        failed,
        queued,
    } = st.log.reloads;
    let coalesced = sent.saturating_sub(started);
    let shown = format!(
        "{done} of {started} started; {queued} queued, {coalesced} SIGHUP(s) coalesced away"
    );
    let label = "reloads completed (`reload done` lines)";
    let expected = "one per SIGHUP unless coalesced";
    s.push(
        m.metric("reloads_done", label, done, shown)
            .expect(expected),
    );
    s.push(m.zero("reloads_failed", "failed reloads", failed as u64));
    let pids = r.by_pid.len() as u64;
    s.push(m.count("pids_served", "distinct worker pids that answered", pids));
    if r.failed() > 0 {
        s.notes.push(format!(
            "- {name}: first failures (seconds since the load started; the first SIGHUP \
             went out once 200 requests had completed):"
        ));
        s.notes
            .extend(r.errors.iter().map(|e| format!("  - `{e}`")));
    }
    let warnings = &st.log.warnings;
    s.note_lines(
        &format!("{name}: the master logged"),
        "warning/error line(s)",
        warnings,
        5,
    );
    let detail = obj! {
        "loadgen": Json::Raw(r.to_json()),
        "reloads_started": started,
        "reloads_done": done,
        "reloads_failed": failed,
        "reloads_queued": queued,
        "master_warnings": Json::arr(warnings),
        "master_exit": &st.exit,
    };
    s.detail(key, detail);
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
        let (key, name) = (mode_key(st.mode), mode_name(st.mode));
        let m = Scope { key, name };
        let lat = storm::latencies(&st.hups);
        let (median, p90, max, n) = (
            stats::median(&lat),
            stats::percentile(&lat, 90.0),
            stats::max(&lat),
            lat.len(),
        );
        let value = obj! {"median": median, "p90": p90, "max": max, "samples": n};
        let shown = format!("{median:.0} / {p90:.0} / {max:.0} ms ({n} samples)");
        let label = "SIGHUP to last old worker exit, median / p90 / max";
        s.push(m.metric("sighup_to_old_exit_ms", label, value, shown));
        let missing = (st.hups.len() - n) as u64;
        if missing > 0 {
            let label = format!("SIGHUPs whose old workers did not exit within {EXIT_WAIT:?}");
            s.push(m.zero("old_not_exited", &label, missing));
        }
        let took = &st.log.took_ms;
        let (median, max, n) = (stats::median(took), stats::max(took), took.len());
        let value = obj! {"median": median, "max": max, "samples": n};
        let shown = format!("{median:.0} / {max:.0} ms ({n} reloads)");
        s.push(m.metric("took_ms", "master's `took_ms`, median / max", value, shown));
        let hup = |h: &Request| {
            obj! {
                "at_ms": ms(h.at),
                "during_reload": h.in_flight == Some(true),
                "old_pids": Json::arr(h.old.iter().copied()),
                "latency_ms": h.latency.map(ms),
            }
        };
        let hups = Json::arr(st.hups.iter().map(hup));
        s.detail(
            key,
            obj! {"sighups": hups, "took_ms": Json::arr(took.iter().copied())},
        );
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
        1000 / sys::procfs::clock_ticks_per_second()
    ));
    for st in storms {
        resources(&mut s, st, ctx.opts.idle_secs);
    }
    s
}

/// The master's memory, CPU and wakeups in one storm, and after it while idle.
fn resources(s: &mut Section, st: &Storm, idle_secs: u64) {
    let (key, name) = (mode_key(st.mode), mode_name(st.mode));
    let m = Scope { key, name };
    let target = sys::RSS_BUDGET;
    let (rss, hwm) = (st.rss_kb, st.hwm_kb);
    let metric = m.metric(
        "vm_rss_kb",
        "VmRSS after the storm",
        rss,
        format!("{rss} kB"),
    );
    s.push(metric.target(target, rss <= sys::RSS_BUDGET_KB));
    let metric = m.metric("vm_hwm_kb", "VmHWM (peak RSS)", hwm, format!("{hwm} kB"));
    s.push(metric.target(target, hwm <= sys::RSS_BUDGET_KB));
    let wall = st.wall.as_secs_f64();
    // Prefer the scheduler's exact runtime; utime + stime move by whole ticks.
    let (cpu, ticks_ms, done) = (st.cpu.cpu_ms(), st.cpu.ticks_ms(), st.log.reloads.done);
    let value = obj! {"cpu_ms": cpu, "utime_stime_ms": ticks_ms, "wall_s": wall, "reloads": done};
    let (share, per_reload) = (cpu / (wall * 10.0), cpu / done.max(1) as f64);
    let shown = format!(
        "{cpu:.1} ms in {wall:.1} s ({share:.3}% of a CPU; {per_reload:.2} ms per reload; \
         utime+stime {ticks_ms:.0} ms)"
    );
    s.push(m.metric("storm_cpu_ms", "CPU during the storm", value, shown));
    let ticks = st.idle.ticks;
    let shown = match st.idle.runtime_ms {
        Some(ms) => format!("{ticks} (runtime {ms:.3} ms)"),
        None => ticks.to_string(),
    };
    let label = format!("CPU ticks while idle for {idle_secs} s");
    s.push(
        m.metric("idle_cpu_ticks", &label, ticks, shown)
            .target("0", ticks == 0),
    );
    let label = format!("wakeups (context switches) while idle for {idle_secs} s");
    s.push(m.zero("idle_wakeups", &label, st.idle.switches.total()));
    s.push(m.count("threads", "threads", st.threads));
    s.push(m.count("fds", "open file descriptors", st.fds as u64));
    s.push(m.metric(
        "exit",
        "master's exit on SIGTERM",
        &st.exit,
        st.exit.clone(),
    ));
    if !st.idle_lines.is_empty() {
        let lines = quoted(&st.idle_lines, 5);
        s.notes
            .push(format!("- {name}: lines logged while idle: {lines}"));
    }
}
