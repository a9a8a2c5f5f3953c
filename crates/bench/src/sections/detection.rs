//! Detection latency of `--ready listening` (the default readiness mode): how soon after a
//! new worker begins to wait on the listening socket the master sees it serve.
//!
//! `master-process -l 127.0.0.1:0 -w 1 --no-monitor -- test-worker` (no `--ready` flag; no
//! resource monitor, whose 2 s timer would show in the idle wakeups), then reloads one
//! at a time: SIGHUP, wait for `reload done`. The test-worker prints
//! `test-worker[PID]: waiting at unix_us=N` right before its first poll() on the sockets (on
//! the master's stderr, which it inherits); the master logs `worker ready pid=PID` with a
//! wall-clock timestamp. The latency of one reload is the difference of the two. Done idle and
//! under a loadgen load; also the master's CPU per reload (the probe polls /proc every 1 ms
//! while a worker starts) and its wakeups when idle (it should not poll at all then).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::lines::{Harvest, Log, field, line_unix_us, parsed};
use crate::master::{Master, NO_MONITOR, Ready};
use crate::measure::{Cpu, Spent, io, load, ms};
use crate::report::{Json, Metric, Scope, Section, obj, quoted};
use crate::sys;
use crate::{Ctx, stats};

const CONNECTIONS: usize = 8;
/// Target on the median detection latency, in ms.
const TARGET_MEDIAN_MS: f64 = 3.0;
/// How long one reload may take, from SIGHUP to `reload done`.
const RELOAD_WAIT: Duration = Duration::from_secs(20);
/// How often the master's context switches are read while it is idle.
const IDLE_SAMPLE: Duration = Duration::from_millis(10);
/// The master counts as settled once its context switches have not moved for this long.
const SETTLED_FOR: Duration = Duration::from_millis(100);

/// One new worker seen ready.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// The reload that started it.
    generation: u64,
    /// The new worker.
    pid: i32,
    /// The worker's `waiting at unix_us=`.
    waiting_us: i64,
    /// The timestamp of the master's `worker ready` line, in µs since the epoch.
    ready_us: i64,
    /// The timestamp of the master's `worker started pid=PID` line (just after its fork).
    started_us: Option<i64>,
    /// The master's own `after_ms` (its spawn to ready, on the clock it read before its
    /// probe ran).
    after_ms: Option<u64>,
}

impl Sample {
    pub(crate) fn latency_ms(&self) -> f64 {
        (self.ready_us - self.waiting_us) as f64 / 1000.0
    }

    /// From the master's `worker started` line to the worker's wait.
    fn spawn_to_wait_ms(&self) -> Option<f64> {
        self.started_us
            .map(|s| (self.waiting_us - s) as f64 / 1000.0)
    }

    /// From the master's `worker started` line to its `worker ready` line.
    fn spawn_to_ready_ms(&self) -> Option<f64> {
        self.started_us.map(|s| (self.ready_us - s) as f64 / 1000.0)
    }

    fn json(&self) -> Json {
        obj! {
            "generation": self.generation,
            "pid": self.pid,
            "waiting_unix_us": self.waiting_us,
            "ready_unix_us": self.ready_us,
            "latency_ms": self.latency_ms(),
            "started_unix_us": self.started_us,
            "after_ms": self.after_ms,
        }
    }
}

/// One reload, as the master lived it (SIGHUP to `reload done`).
#[derive(Debug, Clone)]
struct Reload {
    generation: u64,
    /// The master's CPU time and context switches.
    spent: Spent,
}

/// The master while idle after the reloads.
#[derive(Debug)]
struct Idle {
    spent: Spent,
    /// When its switch count moved (ms into the idle period, by how much), sampled every
    /// [`IDLE_SAMPLE`].
    moved: Vec<(f64, u64)>,
    /// Context switches while waiting for it to settle before the idle period.
    settle: u64,
    lines: Vec<String>,
}

/// One run: N reloads, idle or under load.
#[derive(Debug, Default)]
struct Run {
    loaded: bool,
    samples: Vec<Sample>,
    /// Reloads whose new worker could not be paired (why).
    unpaired: Vec<String>,
    done: usize,
    failed: Vec<String>,
    reloads: Vec<Reload>,
    /// From the first SIGHUP to the last `reload done`.
    wall: Duration,
    /// The master's CPU and context switches during the reloads.
    spent: Spent,
    load: Option<loadgen::Report>,
    idle: Option<Idle>,
    log: Harvest,
    exit: String,
    /// The whole run, master start to stop.
    total: Duration,
}

fn run_key(loaded: bool) -> &'static str {
    if loaded { "loaded" } else { "idle" }
}

fn run_name(loaded: bool) -> String {
    match loaded {
        true => format!("under load ({CONNECTIONS} conns, new connection)"),
        false => "idle".to_owned(),
    }
}

/// `(pid, unix_us)` of a test-worker's `test-worker[PID]: waiting at unix_us=N` line.
fn waiting_at(line: &str) -> Option<(i32, i64)> {
    let rest = line.strip_prefix("test-worker[")?;
    let (pid, rest) = rest.split_once(']')?;
    let us = rest.strip_prefix(": waiting at unix_us=")?;
    Some((pid.parse().ok()?, us.trim().parse().ok()?))
}

/// Pairs the `worker ready` lines of reload `generation` in `lines` (those logged since its
/// SIGHUP) with their worker's `waiting at` line.
pub(crate) fn pair(lines: &[String], generation: u64) -> (Vec<Sample>, Vec<String>) {
    let mut samples = Vec::new();
    let mut unpaired = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("worker ready") || parsed::<u64>(line, "generation") != Some(generation) {
            continue;
        }
        let Some(pid) = parsed::<i32>(line, "pid") else {
            unpaired.push(format!("generation {generation}: no pid in `{line}`"));
            continue;
        };
        let Some(ready_us) = line_unix_us(line) else {
            unpaired.push(format!("generation {generation}: no timestamp in `{line}`"));
            continue;
        };
        // The worker wrote its line before it began to wait, so before the master could see it
        // wait: it is earlier in the pipe. The latest one of that pid, should a pid come back;
        // if not before it, after it, if at all (that would be a finding).
        let of_pid = |l: &String| waiting_at(l).filter(|&(p, _)| p == pid);
        let waiting = lines[..i].iter().rev().find_map(of_pid);
        let waiting = waiting.or_else(|| lines[i..].iter().find_map(of_pid));
        let Some((_, waiting_us)) = waiting else {
            unpaired.push(format!(
                "generation {generation}: worker {pid} printed no `waiting at` line"
            ));
            continue;
        };
        let pid_text = pid.to_string();
        let started_us = lines
            .iter()
            .find(|l| l.contains("worker started") && field(l, "pid") == Some(pid_text.as_str()))
            .and_then(|l| line_unix_us(l));
        let after_ms = parsed(line, "after_ms");
        samples.push(Sample {
            generation,
            pid,
            waiting_us,
            ready_us,
            started_us,
            after_ms,
        });
    }
    if samples.is_empty() && unpaired.is_empty() {
        unpaired.push(format!(
            "generation {generation}: no `worker ready` line for it"
        ));
    }
    (samples, unpaired)
}

/// What one SIGHUP brought: the log lines from `from` to `end` (`reload started` to its
/// `reload done` or `reload ended`), its generation, that last line, the master's CPU.
pub struct Reloaded {
    /// The log line index before the SIGHUP.
    pub from: usize,
    /// The index of the line that ended the reload.
    pub end: usize,
    /// Its generation.
    pub generation: u64,
    /// The line that ended it.
    pub line: String,
    /// The master's CPU time and context switches meanwhile.
    pub spent: Spent,
}

impl Reloaded {
    /// Whether it ended with `reload done`.
    pub fn done(&self) -> bool {
        self.line.contains("reload done")
    }
}

/// One reload: SIGHUP, then its `reload started` and `reload done` (or failed) lines.
pub fn sighup_reload(master: &Master) -> Result<Reloaded, String> {
    let log: &Arc<Log> = master.proc.log();
    let from = log.len();
    let before = Cpu::read(master.pid())?;
    master.proc.signal(libc::SIGHUP)?;
    let wait = |what: &str, pred: &dyn Fn(&str) -> bool| {
        log.wait_from(from, RELOAD_WAIT, pred).ok_or_else(|| {
            let state = match sys::alive(master.pid()) {
                true => "it is still running",
                false => "it exited",
            };
            format!(
                "no `{what}` line within {RELOAD_WAIT:?} of a SIGHUP; {state}; last lines:{}",
                log.tail(10)
            )
        })
    };
    let (_, started) = wait("reload started", &|l| l.contains("reload started"))?;
    let generation: u64 =
        parsed(&started, "generation").ok_or_else(|| format!("no generation in `{started}`"))?;
    let ended = |l: &str| {
        (l.contains("reload done") || l.contains("reload ended"))
            && parsed::<u64>(l, "generation") == Some(generation)
    };
    let (end, line) = wait("reload done", &ended)?;
    let spent = Cpu::read(master.pid())?.since(&before);
    Ok(Reloaded {
        from,
        end,
        generation,
        line,
        spent,
    })
}

/// One reload ([`sighup_reload`]); pairs its new workers' waits with their `worker ready`
/// lines.
fn reload(master: &Master, log: &Log, run: &mut Run) -> Result<(), String> {
    let r = sighup_reload(master)?;
    run.reloads.push(Reload {
        generation: r.generation,
        spent: r.spent,
    });
    if r.done() {
        run.done += 1;
    } else {
        run.failed.push(r.line);
    }
    let (mut samples, mut unpaired) = pair(&log.lines()[r.from..=r.end], r.generation);
    run.samples.append(&mut samples);
    run.unpaired.append(&mut unpaired);
    Ok(())
}

/// The master idle for `secs` after its reloads, its context switches sampled every
/// [`IDLE_SAMPLE`].
fn idle(pid: i32, log: &Log, secs: u64) -> Result<Idle, String> {
    // The master logs `reload done` before it goes back to sleep in poll(): that last
    // switch belongs to the reload, not to the idle period.
    let settle = settle(pid)?;
    let from = log.len();
    let before = Cpu::read(pid)?;
    let switches = || sys::ctxt_switches(pid).map_err(io("context switches"));
    let (mut moved, mut last) = (Vec::new(), before.switches());
    let idle_start = Instant::now();
    let idle_end = idle_start + Duration::from_secs(secs);
    while let Some(left) = idle_end
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        thread::sleep(IDLE_SAMPLE.min(left));
        let w = switches()?;
        if w.total() != last.total() {
            moved.push((ms(idle_start.elapsed()), w.since(last).total()));
            last = w;
        }
    }
    let mut spent = Cpu::read(pid)?.since(&before);
    spent.switches = last.since(before.switches());
    let lines = log.lines()[from..].to_vec();
    Ok(Idle {
        spent,
        moved,
        settle,
        lines,
    })
}

fn detect(ctx: &Ctx, loaded: bool) -> Result<Run, String> {
    let begun = Instant::now();
    let reloads = ctx.opts.detect_reloads;
    let name = run_name(loaded);
    let mut master = Master::start(ctx, 1, Ready::Listening, &NO_MONITOR)?;
    let (pid, log) = (master.pid(), Arc::clone(master.proc.log()));
    eprintln!(
        "bench: detection {name}: master pid {pid} on {}, {reloads} reloads",
        master.addr
    );
    let load = loaded
        .then(|| load(master.addr, CONNECTIONS, Mode::Close))
        .transpose()?;
    let mut run = Run {
        loaded,
        ..Run::default()
    };
    let before = Cpu::read(pid)?;
    let t0 = Instant::now();
    for _ in 0..reloads {
        reload(&master, &log, &mut run)?;
    }
    run.wall = t0.elapsed();
    run.spent = Cpu::read(pid)?.since(&before);
    run.load = load.map(loadgen::Load::stop);
    // Idle: the worker running, no load, no reload.
    run.idle = (!loaded)
        .then(|| idle(pid, &log, ctx.opts.idle_secs))
        .transpose()?;
    (run.log, run.exit) = master.finish();
    run.total = begun.elapsed();
    let lat: Vec<f64> = run.samples.iter().map(Sample::latency_ms).collect();
    eprintln!(
        "bench: detection {name}: {} reloads done, detection median {:.2} ms, max {:.2} ms",
        run.done,
        stats::median(&lat),
        stats::max(&lat)
    );
    Ok(run)
}

/// Waits until the master's context switches have not moved for [`SETTLED_FOR`] (at most
/// 2 s); returns how many happened meanwhile.
fn settle(pid: i32) -> Result<u64, String> {
    let switches = || sys::ctxt_switches(pid).map_err(io("context switches"));
    let first = switches()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut last, mut since) = (first, Instant::now());
    while since.elapsed() < SETTLED_FOR && Instant::now() < deadline {
        thread::sleep(IDLE_SAMPLE);
        let now = switches()?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last.since(first).total())
}

/// Runs the detection section: idle, then under load.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for loaded in [false, true] {
        match detect(ctx, loaded) {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(format!("{}: {e}", run_name(loaded))),
        }
    }
    let mut s = section(ctx, &runs, started.elapsed());
    s.errors = errors;
    Ok(vec![s])
}

fn section(ctx: &Ctx, runs: &[Run], took: Duration) -> Section {
    let title = "Readiness detection (`--ready listening`): from a new worker's first wait to `worker ready`";
    let mut s = Section::new("detection", title);
    s.intro.push(format!(
        "`master-process -l 127.0.0.1:0 -w 1 --no-monitor -- test-worker` (no `--ready` flag: \
         `listening` is the default; no resource monitor, whose timer would wake the master \
         every 2 s: see the `monitor` section), {} reloads one at a time (SIGHUP, wait for \
         `reload done`), once idle and once under loadgen ({CONNECTIONS} connections, new connection per request). Latency of \
         each new worker: the wall-clock timestamp of the master's `worker ready pid=P` line \
         minus the worker's own `waiting at unix_us=` (printed right before its first poll() on \
         the socket), both in µs on the same clock. It includes the master's probe interval \
         (1 ms), its /proc reads and the time to format the log line. Master CPU: \
         `se.sum_exec_runtime` over /proc/PID/task/*/sched from the first SIGHUP to the last \
         `reload done`. Idle wakeups: voluntary + involuntary context switches summed over \
         /proc/PID/task/*/status during {} s with the worker running, no load and no reload, \
         after the idle run's reloads, once its count had stood still for {} ms (the master \
         goes back to sleep just after it logs `reload done`). Section run time: {:.1} s.",
        ctx.opts.detect_reloads,
        ctx.opts.idle_secs,
        SETTLED_FOR.as_millis(),
        took.as_secs_f64()
    ));
    for r in runs {
        run_figures(&mut s, r);
        outcome_figures(&mut s, ctx, r);
        notes(&mut s, r);
        s.detail(run_key(r.loaded), details(r));
    }
    s
}

/// How soon the master saw the new workers serve, and what it cost it.
fn run_figures(s: &mut Section, r: &Run) {
    let (key, name) = (run_key(r.loaded), run_name(r.loaded));
    let m = Scope { key, name: &name };
    let lat: Vec<f64> = r.samples.iter().map(Sample::latency_ms).collect();
    let (median, p90, p99) = (
        stats::median(&lat),
        stats::percentile(&lat, 90.0),
        stats::percentile(&lat, 99.0),
    );
    let (max, min, n) = (stats::max(&lat), stats::min(&lat), lat.len());
    let value =
        obj! {"median": median, "p90": p90, "p99": p99, "max": max, "min": min, "samples": n};
    let shown = format!("{median:.2} / {p90:.2} / {p99:.2} / {max:.2} ms ({n} workers)");
    let label = "detection latency median / p90 / p99 / max";
    let target = format!("median <= {TARGET_MEDIAN_MS} ms");
    s.push(
        m.metric("detection_ms", label, value, shown)
            .target(target, median <= TARGET_MEDIAN_MS),
    );
    let negative = r
        .samples
        .iter()
        .filter(|x| x.ready_us < x.waiting_us)
        .count() as u64;
    s.push(m.zero(
        "negative",
        "negative latencies (ready before the wait began)",
        negative,
    ));
    let (cpu, ticks_ms, sw) = (r.spent.cpu_ms(), r.spent.ticks_ms(), r.spent.switches);
    let (wall, per) = (r.wall.as_secs_f64(), |x: f64| x / r.done.max(1) as f64);
    let value = obj! {
        "cpu_ms": cpu, "utime_stime_ms": ticks_ms, "reloads": r.done, "wall_s": wall,
        "per_reload_ms": per(cpu), "voluntary_switches": sw.voluntary,
        "involuntary_switches": sw.involuntary,
    };
    let (sleeps, preemptions) = (per(sw.voluntary as f64), per(sw.involuntary as f64));
    let shown = format!(
        "{:.2} ms ({cpu:.1} ms for {} reloads in {wall:.2} s; {sleeps:.1} sleeps + \
         {preemptions:.1} preemptions per reload; utime+stime {ticks_ms:.0} ms)",
        per(cpu),
        r.done,
    );
    s.push(m.metric("cpu_per_reload_ms", "master CPU per reload", value, shown));
    let to_wait: Vec<f64> = r
        .samples
        .iter()
        .filter_map(Sample::spawn_to_wait_ms)
        .collect();
    let to_ready: Vec<f64> = r
        .samples
        .iter()
        .filter_map(Sample::spawn_to_ready_ms)
        .collect();
    let (wait_median, wait_max) = (stats::median(&to_wait), stats::max(&to_wait));
    let (ready_median, ready_max) = (stats::median(&to_ready), stats::max(&to_ready));
    let value = obj! {
        "to_wait_median": wait_median, "to_wait_max": wait_max,
        "to_ready_median": ready_median, "to_ready_max": ready_max,
    };
    let shown =
        format!("{wait_median:.2} / {wait_max:.2} ms; {ready_median:.2} / {ready_max:.2} ms");
    let label = "`worker started` line to the worker's wait / to `worker ready`, median / max";
    s.push(m.metric("spawn_ms", label, value, shown));
}

/// The reloads, the requests under load, and the master's wakeups when idle.
fn outcome_figures(s: &mut Section, ctx: &Ctx, r: &Run) {
    let (key, name) = (run_key(r.loaded), run_name(r.loaded));
    let m = Scope { key, name: &name };
    let took = &r.log.took_ms;
    let (took_median, took_max, failed) = (stats::median(took), stats::max(took), r.failed.len());
    let value = obj! {
        "done": r.done, "failed": failed, "took_ms_median": took_median, "took_ms_max": took_max,
    };
    let shown = format!("{} ({failed}); {took_median:.0} / {took_max:.0} ms", r.done);
    let label = "reloads done (failed); master's `took_ms` median / max";
    let expected = format!("{} (0)", ctx.opts.detect_reloads);
    s.push(m.metric("reloads", label, value, shown).expect(expected));
    if let Some(load) = &r.load {
        let (failed, ok, total) = (load.failed(), load.ok, load.total());
        let value = obj! {"failed": failed, "ok": ok, "total": total};
        let shown = format!("{failed} ({ok} / {total})");
        let label = "failed requests (ok / total)";
        s.push(m.metric("failed_requests", label, value, shown).expect("0"));
    }
    if let Some(idle) = &r.idle {
        let spent = &idle.spent;
        let (wakeups, ticks, runtime) = (spent.switches.total(), spent.ticks, spent.runtime_ms);
        let idle_secs = ctx.opts.idle_secs;
        let label = format!("master wakeups (context switches) while idle for {idle_secs} s");
        let value = obj! {"wakeups": wakeups, "cpu_ticks": ticks, "runtime_ms": runtime};
        let shown = match runtime {
            Some(ms) => format!("{wakeups} (CPU ticks {ticks}, runtime {ms:.3} ms)"),
            None => format!("{wakeups} (CPU ticks {ticks})"),
        };
        s.push(Metric::info("idle_wakeups", label, value, shown).target("0", wakeups == 0));
    }
}

fn details(r: &Run) -> Json {
    let reload = |x: &Reload| {
        obj! {
            "generation": x.generation,
            "cpu_ms": x.spent.runtime_ms,
            "voluntary_switches": x.spent.switches.voluntary,
            "involuntary_switches": x.spent.switches.involuntary,
        }
    };
    let idle = r.idle.as_ref().map(|i| {
        let moved = i
            .moved
            .iter()
            .map(|&(at, n)| obj! {"at_ms": at, "switches": n});
        obj! {
            "wakeups": i.spent.switches.total(),
            "settle_switches": i.settle,
            "moved_at_ms": Json::arr(moved),
            "lines": Json::arr(&i.lines),
        }
    });
    obj! {
        "samples": Json::arr(r.samples.iter().map(Sample::json)),
        "took_ms": Json::arr(r.log.took_ms.iter().copied()),
        "reloads": Json::arr(r.reloads.iter().map(reload)),
        "idle": idle,
        "unpaired": Json::arr(&r.unpaired),
        "failed_reloads": Json::arr(&r.failed),
        "loadgen": r.load.as_ref().map(|l| Json::Raw(l.to_json())),
        "master_warnings": Json::arr(&r.log.warnings),
        "master_exit": &r.exit,
        "run_secs": r.total.as_secs_f64(),
    }
}

fn notes(s: &mut Section, r: &Run) {
    let name = run_name(r.loaded);
    let latency = |x: &Sample| match x.spawn_to_ready_ms() {
        Some(t) => format!("{:.2} ({t:.1})", x.latency_ms()),
        None => format!("{:.2}", x.latency_ms()),
    };
    s.notes.push(format!(
        "- {name}: run took {:.1} s (master start to stop); latencies in ms, in reload order \
         (in brackets: from the master's `worker started` line to its `worker ready` line): {}",
        r.total.as_secs_f64(),
        r.samples.iter().map(latency).collect::<Vec<_>>().join(", ")
    ));
    let negative: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|x| x.ready_us < x.waiting_us)
        .collect();
    if !negative.is_empty() {
        s.notes.push(format!(
            "- {name}: **{} negative latency(ies)**: the master's `worker ready` line is stamped \
             before the worker's `waiting at` time, i.e. it took the worker for ready before its \
             first wait on the socket began (the worker prints that line just before poll(), so \
             only something other than that wait, or a clock step, can explain it):",
            negative.len()
        ));
        for x in negative.iter().take(5) {
            s.notes.push(format!(
                "  - generation {} pid {}: waiting at {} µs, ready line at {} µs ({:.3} ms)",
                x.generation,
                x.pid,
                x.waiting_us,
                x.ready_us,
                x.latency_ms()
            ));
        }
    }
    if !r.unpaired.is_empty() {
        s.notes.push(format!(
            "- {name}: {} reload(s) without a latency:",
            r.unpaired.len()
        ));
        s.notes
            .extend(r.unpaired.iter().take(5).map(|u| format!("  - {u}")));
    }
    if !r.failed.is_empty() {
        s.notes.push(format!("- {name}: failed reloads:"));
        s.notes
            .extend(r.failed.iter().take(5).map(|f| format!("  - `{f}`")));
    }
    if let Some(load) = r.load.as_ref().filter(|l| l.failed() > 0) {
        s.notes.push(format!("- {name}: first failed requests:"));
        s.notes
            .extend(load.errors.iter().map(|e| format!("  - `{e}`")));
    }
    if let Some(idle) = &r.idle {
        idle_notes(s, &name, idle);
    }
    s.note_lines(
        &format!("{name}: the master logged"),
        "warning/error line(s)",
        &r.log.warnings,
        5,
    );
}

/// When the master's context switches moved while it was idle, and what it logged then.
fn idle_notes(s: &mut Section, name: &str, idle: &Idle) {
    if !idle.moved.is_empty() {
        let moved: Vec<String> = idle
            .moved
            .iter()
            .take(10)
            .map(|(at, n)| format!("{at:.0} ms +{n}"))
            .collect();
        s.notes.push(format!(
            "- {name}: the master's context switches moved while idle at (ms into the period, \
             by how many): {}",
            moved.join(", ")
        ));
    }
    if !idle.lines.is_empty() {
        s.notes.push(format!(
            "- {name}: lines logged while idle: {}",
            quoted(&idle.lines, 5)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_waiting_lines() {
        assert_eq!(
            waiting_at("test-worker[6689]: waiting at unix_us=1795625484689867"),
            Some((6689, 1_795_625_484_689_867))
        );
        assert_eq!(waiting_at("test-worker[6689]: listening on 1 fd(s)"), None);
    }

    #[test]
    fn pairs_ready_lines_with_waits() {
        let lines: Vec<String> = [
            "2026-11-25T16:51:24.680000Z  INFO master_process::supervisor: reload started generation=3 workers=1",
            "2026-11-25T16:51:24.687496Z  INFO master_process::supervisor: worker started pid=77 index=0 generation=3 at_ms=0",
            "test-worker[77]: waiting at unix_us=1795625484689867",
            "2026-11-25T16:51:24.690910Z  INFO master_process::supervisor: worker ready pid=77 index=0 generation=3 after_ms=4",
            "2026-11-25T16:51:24.700000Z  INFO master_process::supervisor: reload done generation=3 took_ms=20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (samples, unpaired) = pair(&lines, 3);
        assert!(unpaired.is_empty());
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].pid, 77);
        assert_eq!(samples[0].after_ms, Some(4));
        assert_eq!(samples[0].started_us, Some(1_795_625_484_687_496));
        let to_ready = samples[0].spawn_to_ready_ms().expect("started");
        assert!((to_ready - 3.414).abs() < 1e-9);
        assert!((samples[0].latency_ms() - 1.043).abs() < 1e-9);
        let (samples, unpaired) = pair(&lines, 4);
        assert!(samples.is_empty());
        assert_eq!(unpaired.len(), 1);
    }
}
