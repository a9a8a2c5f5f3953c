//! What the resource monitor costs the master. The monitor is on by default: every
//! `--monitor-interval` (2 s) the master wakes up and reads /proc for each serving worker and
//! its descendants (the process tree through /proc/P/task/*/children, then /proc/P/stat of
//! each one).
//!
//! Each figure comes from a master of its own, idle (no load, no reload) with test-workers,
//! `--monitor-grace 0` and limits no idle worker comes near, so that every serving worker is
//! sampled and none is replaced:
//!
//! - CPU per sample per worker: 16 workers sampled every 100 ms for half of `--monitor-secs`;
//!   the master's CPU (`se.sum_exec_runtime`) minus that of the same master with
//!   `--no-monitor` over as long, divided by rounds × workers, a round being one wakeup of the
//!   master (its voluntary context switches: nothing else wakes it). Also with `-v` (one debug
//!   line per worker per sample, whose count checks the rounds), with a child process under
//!   every worker (trees of two), and with 4 workers (which splits a round's cost into a fixed
//!   part and a part per worker).
//! - The master's CPU in % of one core at the default interval, 16 and 4 workers, over
//!   `--monitor-secs` (target < 0.1 %), and its wakeups per second then (one per round: 0.5/s).
//!   Also with no monitor flag at all, within the default 30 s grace: no worker is sampled,
//!   but the monitor's timer still wakes the master every interval.
//!   These replace "no wakeup when idle" with the monitor on; the `storm` and `detection`
//!   sections run their masters with `--no-monitor`, so that their idle figures are the loop's.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Ctx;
use crate::lines::{Harvest, line_unix_us, parsed};
use crate::master::{Extra, Master, Ready};
use crate::measure::{Cpu, Spent, io};
use crate::process::sweep;
use crate::report::{Json, Metric, Section, obj, quoted};
use crate::sys::{self, procfs};

/// Workers of the main runs.
const WORKERS: usize = 16;
/// Workers of the smaller runs.
const FEW_WORKERS: usize = 4;
/// `--monitor-interval` of the per-sample runs.
const FAST_INTERVAL: Duration = Duration::from_millis(100);
const FAST: Sampling = Sampling::Every(FAST_INTERVAL);
/// The master's default `--monitor-interval`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Target on the master's CPU at the default interval, in % of one core.
const TARGET_CPU_PCT: f64 = 0.1;
/// Limits no idle test-worker comes near (64 GiB, 100 cores): nothing is replaced.
const HIGH_LIMITS: [&str; 4] = ["--max-memory", "65536", "--max-cpu", "10000"];
/// From `all workers ready` (and every worker's child, if any) to the measured period.
const SETTLE: Duration = Duration::from_millis(500);
/// The master's default `--monitor-grace`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long the workers may take to start their children.
const CHILD_WAIT: Duration = Duration::from_secs(10);

/// How the master samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// `--no-monitor`.
    Off,
    /// `--monitor-interval` given.
    Every(Duration),
    /// The default interval (no `--monitor-interval`).
    Default,
    /// No monitor flag at all: the default interval and grace (30 s), default limits.
    Defaults,
}

/// One master to measure.
#[derive(Debug, Clone, Copy)]
struct Spec {
    key: &'static str,
    name: &'static str,
    workers: usize,
    sampling: Sampling,
    /// `-v`: one `monitor sample` debug line per worker per sample.
    verbose: bool,
    /// `TW_FORK_CHILD=1`: every worker starts a `sleep 1000` child.
    children: bool,
    /// The measured period.
    period: Duration,
}

impl Spec {
    fn interval(&self) -> Option<Duration> {
        match self.sampling {
            Sampling::Off => None,
            Sampling::Every(d) => Some(d),
            Sampling::Default | Sampling::Defaults => Some(DEFAULT_INTERVAL),
        }
    }

    /// The master's flags (before `--`).
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        match self.sampling {
            Sampling::Off => args.push("--no-monitor".into()),
            Sampling::Defaults => {}
            Sampling::Every(_) | Sampling::Default => {
                args.extend(["--monitor-grace", "0"].map(String::from));
                args.extend(HIGH_LIMITS.map(String::from));
            }
        }
        if let Sampling::Every(d) = self.sampling {
            args.extend(["--monitor-interval".into(), format!("{}ms", d.as_millis())]);
        }
        if self.verbose {
            args.push("-v".into());
        }
        args
    }

    /// The command line, for people.
    fn command(&self) -> String {
        let env = if self.children {
            "TW_FORK_CHILD=1 "
        } else {
            ""
        };
        let args: String = self.args().iter().map(|a| format!(" {a}")).collect();
        let workers = self.workers;
        format!(
            "{env}master-process -l 127.0.0.1:0 --control off -w {workers}{args} -- test-worker"
        )
    }
}

/// One measured master.
#[derive(Debug)]
struct Run {
    spec: Spec,
    wall: Duration,
    /// The master's CPU time and wakeups over the period.
    spent: Spent,
    /// `monitor sample` lines stamped within the period (with `-v`).
    sample_lines: usize,
    /// Processes per worker tree at the end of the period (1: the worker alone).
    tree: f64,
    /// The master's threads.
    threads: u64,
    /// `worker started` lines beyond the first `workers` (restarts or replacements).
    restarts: usize,
    /// `replacing worker` lines.
    replaced: Vec<String>,
    warnings: Vec<String>,
    /// Workers' children still alive after the master stopped (killed then).
    leftovers: Vec<i32>,
    /// An example `monitor sample` line.
    example: Option<String>,
    exit: String,
    /// Master start to stop.
    total: Duration,
}

impl Run {
    /// The master's CPU time (`se.sum_exec_runtime`, or utime + stime if the kernel does not
    /// show it).
    fn cpu_ms(&self) -> f64 {
        self.spent.cpu_ms()
    }

    /// Where [`Run::cpu_ms`] comes from.
    fn cpu_source(&self) -> &'static str {
        match self.spent.runtime_ms {
            Some(_) => "se.sum_exec_runtime",
            None => "utime+stime",
        }
    }

    /// Rounds of samples in the period: one wakeup each.
    fn rounds(&self) -> f64 {
        match self.spec.sampling {
            Sampling::Off => 0.0,
            _ => self.spent.switches.voluntary as f64,
        }
    }

    /// Rounds counted from the `monitor sample` lines (with `-v`).
    fn line_rounds(&self) -> Option<f64> {
        self.spec
            .verbose
            .then(|| self.sample_lines as f64 / self.spec.workers as f64)
    }

    fn wall_s(&self) -> f64 {
        self.wall.as_secs_f64()
    }

    /// CPU in % of one core.
    fn cpu_pct(&self) -> f64 {
        self.cpu_ms() / (self.wall_s() * 10.0)
    }

    /// CPU minus what the master without a monitor used over as long (`base_rate`: ms/s).
    fn net_ms(&self, base_rate: f64) -> f64 {
        self.cpu_ms() - base_rate * self.wall_s()
    }

    /// µs of master CPU per round.
    fn per_round_us(&self, base_rate: f64) -> f64 {
        self.net_ms(base_rate) * 1000.0 / self.rounds().max(1.0)
    }

    /// µs of master CPU per sample of one worker.
    fn per_sample_us(&self, base_rate: f64) -> f64 {
        self.per_round_us(base_rate) / self.spec.workers as f64
    }

    /// The time between two rounds, in ms.
    fn effective_interval_ms(&self) -> f64 {
        self.wall_s() * 1000.0 / self.rounds().max(1.0)
    }

    fn wakeups_per_s(&self) -> f64 {
        self.spent.switches.total() as f64 / self.wall_s()
    }

    /// `NAME (N workers)`, for notes.
    fn who(&self) -> String {
        format!("{} ({} workers)", self.spec.name, self.spec.workers)
    }
}

fn unix_us() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A test-worker's `test-worker[PID]: child CPID` line (TW_FORK_CHILD).
fn child_line(line: &str) -> bool {
    line.starts_with("test-worker[") && line.contains("]: child ")
}

/// Starts the master of `spec` and waits until every worker has started its child, if any.
fn start(ctx: &Ctx, spec: &Spec) -> Result<Master, String> {
    let args = spec.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: &[(&str, &str)] = if spec.children {
        &[("TW_FORK_CHILD", "1")]
    } else {
        &[]
    };
    let master = Master::start(
        ctx,
        spec.workers,
        Ready::Listening,
        &Extra { args: &args, env },
    )?;
    let (pid, log, workers) = (master.pid(), master.proc.log(), spec.workers);
    let period = spec.period.as_secs_f64();
    eprintln!(
        "bench: monitor {}: master pid {pid}, {workers} workers, {period:.0} s",
        spec.name
    );
    let children = |lines: &[String]| lines.iter().filter(|l| child_line(l)).count() >= workers;
    if spec.children && !log.wait_until(CHILD_WAIT, children) {
        return Err(format!(
            "not every worker said it started its child within {CHILD_WAIT:?}; last lines:{}",
            log.tail(10)
        ));
    }
    Ok(master)
}

/// The trees as the monitor sees them: the master's children, and every process of their
/// trees.
fn trees(pid: i32) -> (Vec<i32>, Vec<i32>) {
    let workers = sys::children(pid);
    let tree = |&w: &i32| procfs::process_tree(w.unsigned_abs(), 4096);
    let members = workers
        .iter()
        .flat_map(tree)
        .filter_map(|p| i32::try_from(p).ok())
        .collect();
    (workers, members)
}

fn measure(ctx: &Ctx, spec: Spec) -> Result<Run, String> {
    let begun = Instant::now();
    let mut master = start(ctx, &spec)?;
    let (pid, log) = (master.pid(), Arc::clone(master.proc.log()));
    thread::sleep(SETTLE);
    let (u0, before, t0) = (unix_us(), Cpu::read(pid)?, Instant::now());
    thread::sleep(spec.period);
    let spent = Cpu::read(pid)?.since(&before);
    let (wall, u1) = (t0.elapsed(), unix_us());
    let threads = sys::stat(pid).map_err(io("Threads"))?.threads;
    let (workers, members) = trees(pid);
    let tree = members.len() as f64 / workers.len().max(1) as f64;
    if spec.verbose {
        // The last round's lines may still be in the pipe: wait for a later line.
        log.wait_until(Duration::from_secs(1), |lines| {
            let mut recent = lines.iter().rev().take(4 * spec.workers);
            recent.any(|l| line_unix_us(l).is_some_and(|u| u > u1))
        });
    }
    let (
        Harvest {
            lines, warnings, ..
        },
        exit,
    ) = master.finish();
    let in_period = |l: &&String| line_unix_us(l).is_some_and(|u| (u0..=u1).contains(&u));
    let samples = || lines.iter().filter(|l| l.contains("monitor sample"));
    let with_pid = |l: &&String| l.contains("worker started") && parsed::<i32>(l, "pid").is_some();
    let replaced = lines
        .iter()
        .filter(|l| l.contains("replacing worker"))
        .cloned()
        .collect();
    // The master stops each worker's process group; a child left alive is a finding (and ours
    // to kill: we made its worker start it).
    let children = members.into_iter().filter(|p| !workers.contains(p));
    let run = Run {
        spec,
        wall,
        spent,
        sample_lines: samples().filter(in_period).count(),
        tree,
        threads,
        restarts: lines
            .iter()
            .filter(with_pid)
            .count()
            .saturating_sub(spec.workers),
        replaced,
        warnings,
        leftovers: sweep(children, "sleep", "worker child"),
        // The last one: a worker's first sample has no CPU figure yet.
        example: samples().next_back().cloned(),
        exit,
        total: begun.elapsed(),
    };
    let (cpu, secs, wakeups) = (run.cpu_ms(), run.wall_s(), spent.switches.total());
    eprintln!(
        "bench: monitor {}: CPU {cpu:.3} ms in {secs:.1} s, {wakeups} wakeups",
        spec.name
    );
    Ok(run)
}

/// How long a master is measured: half of `--monitor-secs` (the 100 ms runs), all of it, or
/// all of it but within the default grace period (no worker is due for a sample yet).
#[derive(Debug, Clone, Copy)]
enum Period {
    Short,
    Long,
    InGrace,
}

/// The masters to measure, in order, the baseline first: key, name, workers, sampling, `-v`, a
/// child per worker, period.
#[rustfmt::skip]
const SPECS: [(&str, &str, usize, Sampling, bool, bool, Period); 8] = [
    ("off", "no monitor", WORKERS, Sampling::Off, false, false, Period::Short),
    ("fast", "every 100 ms", WORKERS, FAST, false, false, Period::Short),
    ("fast_verbose", "every 100 ms, -v", WORKERS, FAST, true, false, Period::Short),
    ("fast_children", "every 100 ms, a child per worker", WORKERS, FAST, false, true, Period::Short),
    ("fast_few", "every 100 ms", FEW_WORKERS, FAST, false, false, Period::Short),
    ("default", "default interval", WORKERS, Sampling::Default, false, false, Period::Long),
    ("default_few", "default interval", FEW_WORKERS, Sampling::Default, false, false, Period::Long),
    ("grace", "all defaults, within the grace period", WORKERS, Sampling::Defaults, false, false, Period::InGrace),
];

fn specs(ctx: &Ctx) -> impl Iterator<Item = Spec> {
    let long = Duration::from_secs(ctx.opts.monitor_secs);
    SPECS.into_iter().map(
        move |(key, name, workers, sampling, verbose, children, period)| {
            let period = match period {
                Period::Short => long / 2,
                Period::Long => long,
                Period::InGrace => long.min(DEFAULT_GRACE - Duration::from_secs(5)),
            };
            Spec {
                key,
                name,
                workers,
                sampling,
                verbose,
                children,
                period,
            }
        },
    )
}

/// Runs the monitor section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for spec in specs(ctx) {
        match measure(ctx, spec) {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(format!("{} ({} workers): {e}", spec.name, spec.workers)),
        }
    }
    let mut s = section(ctx, &runs, started.elapsed());
    s.errors = errors;
    Ok(vec![s])
}

fn find<'a>(runs: &'a [Run], key: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.spec.key == key)
}

fn section(ctx: &Ctx, runs: &[Run], took: Duration) -> Section {
    let long = ctx.opts.monitor_secs;
    let short = Duration::from_secs(long) / 2;
    let mut s = Section::new("monitor", "Resource monitor: what it costs the master");
    s.intro.push(format!(
        "One idle master per row (no load, no reload), test-workers under `--ready listening`, \
         `--monitor-grace 0` and `{}` (limits no idle worker comes near: nothing is replaced) \
         unless said otherwise, measured from {} ms after `all workers ready`. Master CPU: `se.sum_exec_runtime` over \
         /proc/PID/task/*/sched. Per sample: {WORKERS} workers sampled every {} ms for {:.1} s, \
         CPU minus the baseline's (the same master with `--no-monitor`, over as long) divided by \
         rounds × workers; a round is one wakeup of the master (its voluntary context switches: \
         nothing else wakes an idle master), each reading /proc/W/task/*/children and \
         /proc/W/stat for every worker W and its descendants. With `-v` the master also writes \
         a `monitor sample` debug line per worker per sample (to a pipe read by bench), whose \
         count checks the rounds. CPU %: the default interval ({} s), over {long} s, % of one \
         core, without subtracting anything; also with no monitor flag at all, over {:.0} s \
         from start: that period ends before the default grace ({} s) does, so no worker is \
         sampled and what remains is the monitor's timer. Wakeups: voluntary + involuntary context switches \
         summed over /proc/PID/task/*/status. The `storm` and `detection` sections run their \
         masters with `--no-monitor`: their idle wakeups are the loop's; these are the \
         monitor's. Section run time: {:.1} s.",
        HIGH_LIMITS.join(" "),
        SETTLE.as_millis(),
        FAST_INTERVAL.as_millis(),
        short.as_secs_f64(),
        DEFAULT_INTERVAL.as_secs(),
        find(runs, "grace").map_or(0.0, |r| r.spec.period.as_secs_f64()),
        DEFAULT_GRACE.as_secs(),
        took.as_secs_f64()
    ));
    let base = find(runs, "off");
    // ms of CPU per second of the master without a monitor.
    let base_rate = base.map_or(0.0, |b| b.cpu_ms() / b.wall_s());
    if let Some(b) = base {
        let wakeups = b.spent.switches.total();
        let label = format!(
            "baseline: {} workers, `--no-monitor`: CPU and wakeups in {:.1} s",
            b.spec.workers,
            b.wall_s()
        );
        let value = obj! {"cpu_ms": b.cpu_ms(), "wall_s": b.wall_s(), "wakeups": wakeups};
        let shown = format!(
            "{:.3} ms ({}); {wakeups} wakeups",
            b.cpu_ms(),
            b.cpu_source()
        );
        s.push(Metric::info("off.baseline", label, value, shown).target("0 wakeups", wakeups == 0));
    }
    per_sample_figures(&mut s, runs, base_rate);
    default_interval_figures(&mut s, runs);
    let replaced: usize = runs.iter().map(|r| r.replaced.len()).sum();
    let restarts: usize = runs.iter().map(|r| r.restarts).sum();
    let value = obj! {"replaced": replaced, "restarts": restarts};
    let shown = format!("{replaced} replaced; {restarts} `worker started` beyond the first");
    let metric = Metric::info(
        "replaced",
        "workers replaced or restarted in these runs",
        value,
        shown,
    );
    s.push(metric.target("0", replaced == 0 && restarts == 0));
    notes(&mut s, runs);
    for r in runs {
        s.detail(format!("{}_{}", r.spec.key, r.spec.workers), details(r));
    }
    s
}

/// CPU per sample per worker at 100 ms, and a round's fixed and per-worker parts.
fn per_sample_figures(s: &mut Section, runs: &[Run], base_rate: f64) {
    for key in ["fast", "fast_verbose", "fast_children", "fast_few"] {
        let Some(r) = find(runs, key) else {
            continue;
        };
        let per_sample = r.per_sample_us(base_rate);
        let mut shown = format!(
            "{per_sample:.1} µs ({:.2} ms net of {:.2} ms, {:.0} rounds × {} workers in {:.1} s: \
             one every {:.1} ms)",
            r.net_ms(base_rate),
            r.cpu_ms(),
            r.rounds(),
            r.spec.workers,
            r.wall_s(),
            r.effective_interval_ms()
        );
        if let Some(lr) = r.line_rounds() {
            shown.push_str(&format!(
                "; {} `monitor sample` lines = {lr:.2} rounds",
                r.sample_lines
            ));
        }
        if r.spec.children {
            shown.push_str(&format!("; {:.1} processes per tree", r.tree));
            // What each process beyond the worker adds, against the same master without them.
            if let Some(plain) = find(runs, "fast").filter(|_| r.tree > 1.0) {
                let extra = (per_sample - plain.per_sample_us(base_rate)) / (r.tree - 1.0);
                shown.push_str(&format!(": +{extra:.1} µs per extra process"));
            }
        }
        let workers = r.spec.workers;
        let label = match key {
            "fast_verbose" => format!(
                "CPU per sample per worker, {workers} workers every 100 ms, with `-v` (a debug line each)"
            ),
            "fast_children" => format!(
                "CPU per sample per worker, {workers} workers every 100 ms, each with a child (`sleep`)"
            ),
            _ => format!("CPU per sample per worker, {workers} workers every 100 ms"),
        };
        let value = obj! {
            "per_sample_us": per_sample,
            "per_round_us": r.per_round_us(base_rate),
            "net_cpu_ms": r.net_ms(base_rate),
            "cpu_ms": r.cpu_ms(),
            "utime_stime_ms": r.spent.ticks_ms(),
            "baseline_ms_per_s": base_rate,
            "rounds": r.rounds(),
            "line_rounds": r.line_rounds(),
            "workers": workers,
            "processes_per_tree": r.tree,
            "wall_s": r.wall_s(),
        };
        s.push(Metric::info(
            format!("{key}.cpu_per_sample_us"),
            label,
            value,
            shown,
        ));
    }
    split_figure(s, runs, base_rate);
}

/// A round's CPU split into a fixed part and a part per worker, from 16 and 4 workers.
fn split_figure(s: &mut Section, runs: &[Run], base_rate: f64) {
    let (Some(many), Some(few)) = (find(runs, "fast"), find(runs, "fast_few")) else {
        return;
    };
    let (a, b) = (many.per_round_us(base_rate), few.per_round_us(base_rate));
    let (n_many, n_few) = (many.spec.workers, few.spec.workers);
    let per_worker = (a - b) / (n_many - n_few) as f64;
    let fixed = b - per_worker * n_few as f64;
    let label =
        format!("a round's CPU: fixed part + per worker (from {n_many} and {n_few} workers)");
    let value = obj! {
        "fixed_us": fixed, "per_worker_us": per_worker, "round_us_many": a, "round_us_few": b,
    };
    let shown = format!(
        "{fixed:.1} µs + {per_worker:.1} µs per worker ({a:.1} µs per round with {n_many}, \
         {b:.1} µs with {n_few})"
    );
    s.push(Metric::info("fast.split_us", label, value, shown));
    s.notes.push(
        "- The fixed part of a round is the master waking up from poll() and going back to \
         it (under strace an idle round is poll() plus the /proc reads, nothing else), \
         likely with cold caches after the sleep; the part per worker is the /proc reads of \
         its tree (/proc/W/task, /proc/W/task/T/children for each thread T, /proc/W/stat)."
            .to_owned(),
    );
}

/// CPU % and wakeups per second at the default interval (and without a monitor).
fn default_interval_figures(s: &mut Section, runs: &[Run]) {
    let grace = DEFAULT_GRACE.as_secs();
    for r in ["default", "default_few", "grace"]
        .into_iter()
        .filter_map(|k| find(runs, k))
    {
        let pct = r.cpu_pct();
        let setting = match r.spec.sampling {
            Sampling::Defaults => {
                format!("all defaults, within the {grace} s grace (nothing sampled yet)")
            }
            _ => format!("default interval ({} s)", DEFAULT_INTERVAL.as_secs()),
        };
        let label = format!(
            "master CPU, {} workers, {setting}, in % of one core",
            r.spec.workers
        );
        let value = obj! {
            "percent": pct, "cpu_ms": r.cpu_ms(), "utime_stime_ms": r.spent.ticks_ms(),
            "wall_s": r.wall_s(), "rounds": r.rounds(),
        };
        let shown = format!(
            "{pct:.4}% ({:.3} ms in {:.1} s, {:.0} rounds: {:.0} µs each)",
            r.cpu_ms(),
            r.wall_s(),
            r.rounds(),
            r.per_round_us(0.0)
        );
        let metric = Metric::info(format!("{}.cpu_percent", r.spec.key), label, value, shown);
        s.push(metric.target(format!("< {TARGET_CPU_PCT}%"), pct < TARGET_CPU_PCT));
    }
    for r in ["default", "default_few", "grace", "off"]
        .into_iter()
        .filter_map(|k| find(runs, k))
    {
        let expected = r.spec.interval().map_or_else(
            || "0".to_owned(),
            |i| format!("{:.1}/s: one per round", 1.0 / i.as_secs_f64()),
        );
        let setting = match r.spec.sampling {
            Sampling::Off => "`--no-monitor`".to_owned(),
            Sampling::Defaults => format!("all defaults, within the {grace} s grace"),
            _ => "default interval".to_owned(),
        };
        let label = format!(
            "master wakeups per second, {} workers, {setting}",
            r.spec.workers
        );
        let Spent { switches: sw, .. } = r.spent;
        let value = obj! {
            "per_s": r.wakeups_per_s(), "voluntary": sw.voluntary, "involuntary": sw.involuntary,
            "wall_s": r.wall_s(),
        };
        let shown = format!(
            "{:.2}/s ({} + {} involuntary in {:.1} s)",
            r.wakeups_per_s(),
            sw.voluntary,
            sw.involuntary,
            r.wall_s()
        );
        s.push(
            Metric::info(format!("{}.wakeups_per_s", r.spec.key), label, value, shown)
                .expect(expected),
        );
    }
}

fn details(r: &Run) -> Json {
    obj! {
        "command": r.spec.command(),
        "period_s": r.spec.period.as_secs_f64(),
        "wall_s": r.wall_s(),
        "cpu_ms": r.cpu_ms(),
        "cpu_exact": r.spent.runtime_ms.is_some(),
        "utime_stime_ms": r.spent.ticks_ms(),
        "voluntary_switches": r.spent.switches.voluntary,
        "involuntary_switches": r.spent.switches.involuntary,
        "sample_lines": r.sample_lines,
        "processes_per_tree": r.tree,
        "threads": r.threads,
        "replaced": Json::arr(&r.replaced),
        "restarts": r.restarts,
        "master_warnings": Json::arr(&r.warnings),
        "leftover_children": Json::arr(r.leftovers.iter().copied()),
        "master_exit": &r.exit,
        "run_secs": r.total.as_secs_f64(),
    }
}

fn notes(s: &mut Section, runs: &[Run]) {
    for r in runs {
        let sw = r.spent.switches;
        s.notes.push(format!(
            "- {}: `{}`; CPU {:.3} ms ({}; utime+stime {:.0} ms), {} + {} \
             involuntary context switches in {:.2} s; {} thread(s); run took {:.1} s; {}",
            r.who(),
            r.spec.command(),
            r.cpu_ms(),
            r.cpu_source(),
            r.spent.ticks_ms(),
            sw.voluntary,
            sw.involuntary,
            r.wall_s(),
            r.threads,
            r.total.as_secs_f64(),
            r.exit
        ));
    }
    if let Some(line) = runs.iter().find_map(|r| r.example.as_ref()) {
        s.notes.push(format!("- a `-v` sample line: `{line}`"));
    }
    for r in runs {
        if let Some(lr) = r.line_rounds().filter(|lr| (lr - r.rounds()).abs() > 1.0) {
            s.notes.push(format!(
                "- {}: **the rounds disagree**: {} wakeups, but {} `monitor sample` \
                 lines = {lr:.2} rounds",
                r.who(),
                r.spent.switches.voluntary,
                r.sample_lines
            ));
        }
        if !r.leftovers.is_empty() {
            s.notes.push(format!(
                "- {}: **{} worker child(ren) outlived the master** (killed by bench): {:?}",
                r.who(),
                r.leftovers.len(),
                r.leftovers
            ));
        }
        if !r.replaced.is_empty() {
            s.notes.push(format!(
                "- {}: **workers replaced**: {}",
                r.who(),
                quoted(&r.replaced, 3)
            ));
        }
        s.note_lines(
            &format!("{}: the master logged", r.who()),
            "warning/error line(s)",
            &r.warnings,
            3,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Switches;

    fn spec(sampling: Sampling) -> Spec {
        Spec {
            key: "k",
            name: "n",
            workers: 16,
            sampling,
            verbose: false,
            children: false,
            period: Duration::from_secs(1),
        }
    }

    #[test]
    fn builds_the_flags() {
        assert_eq!(spec(Sampling::Off).args(), ["--no-monitor"]);
        let every = spec(Sampling::Every(Duration::from_millis(100))).args();
        assert!(every.starts_with(&["--monitor-grace".to_owned(), "0".to_owned()]));
        assert!(every.ends_with(&["--monitor-interval".to_owned(), "100ms".to_owned()]));
        let verbose = Spec {
            verbose: true,
            children: true,
            ..spec(Sampling::Default)
        };
        assert_eq!(verbose.args().last().map(String::as_str), Some("-v"));
        assert!(!verbose.args().iter().any(|a| a == "--monitor-interval"));
        assert!(
            verbose
                .command()
                .starts_with("TW_FORK_CHILD=1 master-process")
        );
        assert_eq!(
            spec(Sampling::Defaults).command(),
            "master-process -l 127.0.0.1:0 --control off -w 16 -- test-worker"
        );
        assert!(child_line("test-worker[12]: child 13"));
        assert!(!child_line("test-worker[12]: listening on 1 fd(s)"));
    }

    #[test]
    fn per_sample_arithmetic() {
        let run = Run {
            spec: spec(Sampling::Every(Duration::from_millis(100))),
            wall: Duration::from_secs(10),
            spent: Spent {
                ticks: 1,
                runtime_ms: Some(17.0),
                switches: Switches {
                    voluntary: 100,
                    involuntary: 3,
                },
            },
            sample_lines: 0,
            tree: 1.0,
            threads: 1,
            restarts: 0,
            replaced: Vec::new(),
            warnings: Vec::new(),
            leftovers: Vec::new(),
            example: None,
            exit: String::new(),
            total: Duration::from_secs(11),
        };
        // 17 ms - 0.1 ms/s × 10 s = 16 ms over 100 rounds × 16 workers = 10 µs.
        assert!((run.per_sample_us(0.1) - 10.0).abs() < 1e-9);
        assert!((run.effective_interval_ms() - 100.0).abs() < 1e-9);
        assert!((run.cpu_pct() - 0.17).abs() < 1e-9);
        assert!((run.wakeups_per_s() - 10.3).abs() < 1e-9);
        assert_eq!(run.cpu_source(), "se.sum_exec_runtime");
    }
}
