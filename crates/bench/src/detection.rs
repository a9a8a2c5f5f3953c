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

use crate::proc::Switches;
use crate::procs::{Extra, Log, Master, Ready, field};
use crate::report::{Json, Metric, Section};
use crate::{Ctx, proc, stats};

const CONNECTIONS: usize = 8;
/// The resource monitor is off: its timer would wake the master every 2 s (even during its
/// grace period), and the idle wakeups here are about the loop and the probe. The monitor's
/// own cost is the `monitor` section's.
const NO_MONITOR: Extra<'static> = Extra {
    args: &["--no-monitor"],
    env: &[],
};
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
struct Sample {
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
    fn latency_ms(&self) -> f64 {
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
}

/// One reload, as the master lived it (SIGHUP to `reload done`).
#[derive(Debug, Clone)]
struct Reload {
    generation: u64,
    /// The master's CPU time.
    cpu_ms: Option<f64>,
    /// The master's context switches.
    switches: Switches,
}

/// The master while idle after the reloads.
#[derive(Debug)]
struct Idle {
    wakeups: u64,
    runtime_ms: Option<f64>,
    ticks: u64,
    /// When its switch count moved (ms into the idle period, by how much), sampled every
    /// [`IDLE_SAMPLE`].
    moved: Vec<(f64, u64)>,
    /// Context switches while waiting for it to settle before the idle period.
    settle: u64,
    lines: Vec<String>,
}

/// One run: N reloads, idle or under load.
#[derive(Debug)]
struct Run {
    loaded: bool,
    samples: Vec<Sample>,
    /// Reloads whose new worker could not be paired (why).
    unpaired: Vec<String>,
    done: usize,
    failed: Vec<String>,
    took_ms: Vec<f64>,
    reloads: Vec<Reload>,
    /// From the first SIGHUP to the last `reload done`.
    wall: Duration,
    cpu_runtime_ms: Option<f64>,
    cpu_ticks_ms: f64,
    /// The master's context switches during the reloads.
    switches: Switches,
    load: Option<loadgen::Report>,
    idle: Option<Idle>,
    warnings: Vec<String>,
    exit: String,
    /// The whole run, master start to stop.
    total: Duration,
}

fn run_key(loaded: bool) -> &'static str {
    if loaded { "loaded" } else { "idle" }
}

fn run_name(loaded: bool) -> String {
    if loaded {
        format!("under load ({CONNECTIONS} conns, new connection)")
    } else {
        "idle".to_owned()
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Microseconds since the epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-11-25T16:45:38.598799Z  INFO ...`).
pub(crate) fn line_unix_us(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The fraction as microseconds: padded or cut to 6 digits.
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + m * 60 + s) * 1_000_000) + micros)
}

/// `(pid, unix_us)` of a test-worker's `test-worker[PID]: waiting at unix_us=N` line.
fn waiting_at(line: &str) -> Option<(i32, i64)> {
    let rest = line.strip_prefix("test-worker[")?;
    let (pid, rest) = rest.split_once(']')?;
    let us = rest.strip_prefix(": waiting at unix_us=")?;
    Some((pid.parse().ok()?, us.trim().parse().ok()?))
}

/// The first line at or after `from` that satisfies `pred`, waiting up to `timeout`.
fn wait_from(
    log: &Log,
    from: usize,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<(usize, String)> {
    let found = log.wait_until(timeout, |lines| {
        lines.iter().skip(from).any(|l| pred(l.as_str()))
    });
    if !found {
        return None;
    }
    log.lines()
        .into_iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| pred(l))
}

/// Pairs the `worker ready` lines of reload `generation` in `lines` (those logged since its
/// SIGHUP) with their worker's `waiting at` line.
fn pair(lines: &[String], generation: u64) -> (Vec<Sample>, Vec<String>) {
    let mut samples = Vec::new();
    let mut unpaired = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("worker ready")
            || field(line, "generation").and_then(|g| g.parse::<u64>().ok()) != Some(generation)
        {
            continue;
        }
        let Some(pid) = field(line, "pid").and_then(|p| p.parse::<i32>().ok()) else {
            unpaired.push(format!("generation {generation}: no pid in `{line}`"));
            continue;
        };
        let Some(ready_us) = line_unix_us(line) else {
            unpaired.push(format!("generation {generation}: no timestamp in `{line}`"));
            continue;
        };
        // The worker wrote its line before it began to wait, so before the master could see it
        // wait: it is earlier in the pipe. The latest one of that pid, should a pid come back.
        let waiting = lines[..i]
            .iter()
            .rev()
            .filter_map(|l| waiting_at(l))
            .find(|&(p, _)| p == pid);
        let waiting_us = match waiting {
            Some((_, us)) => us,
            None => {
                // Not before it: after it, if at all (that would be a finding).
                let after = lines[i..]
                    .iter()
                    .filter_map(|l| waiting_at(l))
                    .find(|&(p, _)| p == pid);
                match after {
                    Some((_, us)) => us,
                    None => {
                        unpaired.push(format!(
                            "generation {generation}: worker {pid} printed no `waiting at` line"
                        ));
                        continue;
                    }
                }
            }
        };
        let pid_text = pid.to_string();
        let started_us = lines
            .iter()
            .find(|l| l.contains("worker started") && field(l, "pid") == Some(pid_text.as_str()))
            .and_then(|l| line_unix_us(l));
        samples.push(Sample {
            generation,
            pid,
            waiting_us,
            ready_us,
            started_us,
            after_ms: field(line, "after_ms").and_then(|v| v.parse().ok()),
        });
    }
    if samples.is_empty() && unpaired.is_empty() {
        unpaired.push(format!(
            "generation {generation}: no `worker ready` line for it"
        ));
    }
    (samples, unpaired)
}

fn detect(ctx: &Ctx, loaded: bool) -> Result<Run, String> {
    let begun = Instant::now();
    let reloads = ctx.opts.detect_reloads;
    let name = run_name(loaded);
    let mut master = Master::launch(
        &ctx.bins.master,
        &ctx.bins.worker,
        1,
        Ready::Listening,
        &NO_MONITOR,
        ctx.opts.verbose,
    )?;
    let pid = master.pid();
    let log = Arc::clone(master.proc.log());
    eprintln!(
        "bench: detection {name}: master pid {pid} on {}, {reloads} reloads",
        master.addr
    );
    let load = if loaded {
        let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(master.addr));
        cfg.connections = CONNECTIONS;
        cfg.mode = Mode::Close;
        cfg.request_timeout = Duration::from_secs(2);
        let load = loadgen::start(cfg);
        if !load.wait_for_requests(200, Duration::from_secs(10)) {
            return Err(format!(
                "the load did not reach 200 requests in 10 s: {}",
                load.stop()
            ));
        }
        Some(load)
    } else {
        None
    };
    let ticks0 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let run0 = proc::cpu_runtime_ms(pid);
    let wake0 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
    let t0 = Instant::now();
    let (mut samples, mut unpaired, mut failed, mut done) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut per_reload = Vec::new();
    for _ in 0..reloads {
        let from = log.len();
        let cpu0 = proc::cpu_runtime_ms(pid);
        let sw0 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
        master.proc.signal(libc::SIGHUP)?;
        let stuck = |what: &str, master: &mut Master| {
            let state = if master.proc.running() {
                "it is still running"
            } else {
                "it exited"
            };
            format!(
                "no `{what}` line within {RELOAD_WAIT:?} of a SIGHUP; {state}; last lines:{}",
                log.tail(10)
            )
        };
        let Some((_, started)) =
            wait_from(&log, from, RELOAD_WAIT, |l| l.contains("reload started"))
        else {
            return Err(stuck("reload started", &mut master));
        };
        let generation: u64 = field(&started, "generation")
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| format!("no generation in `{started}`"))?;
        let gen_text = generation.to_string();
        let ended = |l: &str| {
            (l.contains("reload done") || l.contains("reload ended"))
                && field(l, "generation") == Some(gen_text.as_str())
        };
        let Some((end, line)) = wait_from(&log, from, RELOAD_WAIT, ended) else {
            return Err(stuck("reload done", &mut master));
        };
        let cpu1 = proc::cpu_runtime_ms(pid);
        let sw1 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
        per_reload.push(Reload {
            generation,
            cpu_ms: cpu0.zip(cpu1).map(|(a, b)| b - a),
            switches: sw1.since(sw0),
        });
        if line.contains("reload done") {
            done += 1;
        } else {
            failed.push(line.clone());
        }
        let lines = log.lines();
        let (mut s, mut u) = pair(&lines[from..=end], generation);
        samples.append(&mut s);
        unpaired.append(&mut u);
    }
    let wall = t0.elapsed();
    let ticks1 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
    let run1 = proc::cpu_runtime_ms(pid);
    let wake1 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
    let load = load.map(loadgen::Load::stop);
    // Idle: the worker running, no load, no reload.
    let idle = if loaded {
        None
    } else {
        // The master logs `reload done` before it goes back to sleep in poll(): that last
        // switch belongs to the reload, not to the idle period.
        let settle = settle(pid)?;
        let from = log.len();
        let w0 = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
        let r0 = proc::cpu_runtime_ms(pid);
        let k0 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
        let mut moved = Vec::new();
        let mut last = w0;
        let idle_start = Instant::now();
        let idle_end = idle_start + Duration::from_secs(ctx.opts.idle_secs);
        loop {
            let now = Instant::now();
            if now >= idle_end {
                break;
            }
            thread::sleep(IDLE_SAMPLE.min(idle_end - now));
            let w = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
            if w.total() != last.total() {
                moved.push((ms(idle_start.elapsed()), w.since(last).total()));
                last = w;
            }
        }
        let r1 = proc::cpu_runtime_ms(pid);
        let k1 = proc::cpu_ticks(pid).map_err(io("master's /proc stat"))?;
        Some(Idle {
            wakeups: last.since(w0).total(),
            runtime_ms: r0.zip(r1).map(|(a, b)| b - a),
            ticks: k1.saturating_sub(k0),
            moved,
            settle,
            lines: log.lines()[from..].to_vec(),
        })
    };
    let lines = log.lines();
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
    let run = Run {
        loaded,
        samples,
        unpaired,
        done,
        failed,
        took_ms,
        reloads: per_reload,
        wall,
        cpu_runtime_ms: run0.zip(run1).map(|(a, b)| b - a),
        cpu_ticks_ms: proc::ticks_ms(ticks1.saturating_sub(ticks0)),
        switches: wake1.since(wake0),
        load,
        idle,
        warnings,
        exit,
        total: begun.elapsed(),
    };
    let lat: Vec<f64> = run.samples.iter().map(Sample::latency_ms).collect();
    eprintln!(
        "bench: detection {name}: {} reloads done, detection median {:.2} ms, max {:.2} ms",
        run.done,
        stats::median(&lat),
        stats::max(&lat)
    );
    Ok(run)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until the master's context switches have not moved for [`SETTLED_FOR`] (at most
/// 2 s); returns how many happened meanwhile.
fn settle(pid: i32) -> Result<u64, String> {
    let first = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut last, mut since) = (first, Instant::now());
    while since.elapsed() < SETTLED_FOR && Instant::now() < deadline {
        thread::sleep(IDLE_SAMPLE);
        let now = proc::ctxt_switches(pid).map_err(io("master's context switches"))?;
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
    let n = ctx.opts.detect_reloads;
    let mut s = Section::new(
        "detection",
        "Readiness detection (`--ready listening`): from a new worker's first wait to `worker ready`",
    );
    s.intro.push(format!(
        "`master-process -l 127.0.0.1:0 -w 1 --no-monitor -- test-worker` (no `--ready` flag: \
         `listening` is the default; no resource monitor, whose timer would wake the master \
         every 2 s: see the `monitor` section), {n} reloads one at a time (SIGHUP, wait for \
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
        ctx.opts.idle_secs,
        SETTLED_FOR.as_millis(),
        took.as_secs_f64()
    ));
    for r in runs {
        let key = run_key(r.loaded);
        let name = run_name(r.loaded);
        let lat: Vec<f64> = r.samples.iter().map(Sample::latency_ms).collect();
        let median = stats::median(&lat);
        s.push(
            Metric::info(
                &format!("{key}.detection_ms"),
                &format!("{name}: detection latency median / p90 / p99 / max"),
                Json::obj([
                    ("median", Json::Num(median)),
                    ("p90", Json::Num(stats::percentile(&lat, 90.0))),
                    ("p99", Json::Num(stats::percentile(&lat, 99.0))),
                    ("max", Json::Num(stats::max(&lat))),
                    ("min", Json::Num(stats::min(&lat))),
                    ("samples", Json::uint(lat.len() as u64)),
                ]),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms ({} workers)",
                    median,
                    stats::percentile(&lat, 90.0),
                    stats::percentile(&lat, 99.0),
                    stats::max(&lat),
                    lat.len()
                ),
            )
            .target(
                format!("median <= {TARGET_MEDIAN_MS} ms"),
                median <= TARGET_MEDIAN_MS,
            ),
        );
        let negative: Vec<&Sample> = r
            .samples
            .iter()
            .filter(|x| x.ready_us < x.waiting_us)
            .collect();
        s.push(
            Metric::info(
                &format!("{key}.negative"),
                &format!("{name}: negative latencies (ready before the wait began)"),
                Json::uint(negative.len() as u64),
                negative.len().to_string(),
            )
            .target("0", negative.is_empty()),
        );
        let cpu = r.cpu_runtime_ms.unwrap_or(r.cpu_ticks_ms);
        s.push(Metric::info(
            &format!("{key}.cpu_per_reload_ms"),
            &format!("{name}: master CPU per reload"),
            Json::obj([
                ("cpu_ms", Json::Num(cpu)),
                ("utime_stime_ms", Json::Num(r.cpu_ticks_ms)),
                ("reloads", Json::uint(r.done as u64)),
                ("wall_s", Json::Num(r.wall.as_secs_f64())),
                ("per_reload_ms", Json::Num(cpu / r.done.max(1) as f64)),
                ("voluntary_switches", Json::uint(r.switches.voluntary)),
                ("involuntary_switches", Json::uint(r.switches.involuntary)),
            ]),
            format!(
                "{:.2} ms ({cpu:.1} ms for {} reloads in {:.2} s; {:.1} sleeps + {:.1} preemptions \
                 per reload; utime+stime {:.0} ms)",
                cpu / r.done.max(1) as f64,
                r.done,
                r.wall.as_secs_f64(),
                r.switches.voluntary as f64 / r.done.max(1) as f64,
                r.switches.involuntary as f64 / r.done.max(1) as f64,
                r.cpu_ticks_ms
            ),
        ));
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
        s.push(Metric::info(
            &format!("{key}.spawn_ms"),
            &format!(
                "{name}: `worker started` line to the worker's wait / to `worker ready`, median / max"
            ),
            Json::obj([
                ("to_wait_median", Json::Num(stats::median(&to_wait))),
                ("to_wait_max", Json::Num(stats::max(&to_wait))),
                ("to_ready_median", Json::Num(stats::median(&to_ready))),
                ("to_ready_max", Json::Num(stats::max(&to_ready))),
            ]),
            format!(
                "{:.2} / {:.2} ms; {:.2} / {:.2} ms",
                stats::median(&to_wait),
                stats::max(&to_wait),
                stats::median(&to_ready),
                stats::max(&to_ready)
            ),
        ));
        s.push(
            Metric::info(
                &format!("{key}.reloads"),
                &format!("{name}: reloads done (failed); master's `took_ms` median / max"),
                Json::obj([
                    ("done", Json::uint(r.done as u64)),
                    ("failed", Json::uint(r.failed.len() as u64)),
                    ("took_ms_median", Json::Num(stats::median(&r.took_ms))),
                    ("took_ms_max", Json::Num(stats::max(&r.took_ms))),
                ]),
                format!(
                    "{} ({}); {:.0} / {:.0} ms",
                    r.done,
                    r.failed.len(),
                    stats::median(&r.took_ms),
                    stats::max(&r.took_ms)
                ),
            )
            .expect(format!("{n} (0)")),
        );
        if let Some(load) = &r.load {
            s.push(
                Metric::info(
                    &format!("{key}.failed_requests"),
                    &format!("{name}: failed requests (ok / total)"),
                    Json::obj([
                        ("failed", Json::uint(load.failed())),
                        ("ok", Json::uint(load.ok)),
                        ("total", Json::uint(load.total())),
                    ]),
                    format!("{} ({} / {})", load.failed(), load.ok, load.total()),
                )
                .expect("0"),
            );
        }
        if let Some(idle) = &r.idle {
            s.push(
                Metric::info(
                    "idle_wakeups",
                    &format!(
                        "master wakeups (context switches) while idle for {} s",
                        ctx.opts.idle_secs
                    ),
                    Json::obj([
                        ("wakeups", Json::uint(idle.wakeups)),
                        ("cpu_ticks", Json::uint(idle.ticks)),
                        ("runtime_ms", idle.runtime_ms.map_or(Json::Null, Json::Num)),
                    ]),
                    match idle.runtime_ms {
                        Some(ms) => format!(
                            "{} (CPU ticks {}, runtime {ms:.3} ms)",
                            idle.wakeups, idle.ticks
                        ),
                        None => format!("{} (CPU ticks {})", idle.wakeups, idle.ticks),
                    },
                )
                .target("0", idle.wakeups == 0),
            );
        }
        notes(&mut s, r, &name, &negative);
        s.details.push((
            key.to_owned(),
            Json::obj([
                (
                    "samples",
                    Json::Arr(
                        r.samples
                            .iter()
                            .map(|x| {
                                Json::obj([
                                    ("generation", Json::uint(x.generation)),
                                    ("pid", Json::Int(x.pid.into())),
                                    ("waiting_unix_us", Json::Int(x.waiting_us)),
                                    ("ready_unix_us", Json::Int(x.ready_us)),
                                    ("latency_ms", Json::Num(x.latency_ms())),
                                    (
                                        "started_unix_us",
                                        x.started_us.map_or(Json::Null, Json::Int),
                                    ),
                                    ("after_ms", x.after_ms.map_or(Json::Null, Json::uint)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("took_ms", Json::nums(&r.took_ms)),
                (
                    "reloads",
                    Json::Arr(
                        r.reloads
                            .iter()
                            .map(|x| {
                                Json::obj([
                                    ("generation", Json::uint(x.generation)),
                                    ("cpu_ms", x.cpu_ms.map_or(Json::Null, Json::Num)),
                                    ("voluntary_switches", Json::uint(x.switches.voluntary)),
                                    ("involuntary_switches", Json::uint(x.switches.involuntary)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                (
                    "idle",
                    r.idle.as_ref().map_or(Json::Null, |i| {
                        Json::obj([
                            ("wakeups", Json::uint(i.wakeups)),
                            ("settle_switches", Json::uint(i.settle)),
                            (
                                "moved_at_ms",
                                Json::Arr(
                                    i.moved
                                        .iter()
                                        .map(|&(at, n)| {
                                            Json::obj([
                                                ("at_ms", Json::Num(at)),
                                                ("switches", Json::uint(n)),
                                            ])
                                        })
                                        .collect(),
                                ),
                            ),
                            ("lines", Json::Arr(i.lines.iter().map(Json::str).collect())),
                        ])
                    }),
                ),
                (
                    "unpaired",
                    Json::Arr(r.unpaired.iter().map(Json::str).collect()),
                ),
                (
                    "failed_reloads",
                    Json::Arr(r.failed.iter().map(Json::str).collect()),
                ),
                (
                    "loadgen",
                    r.load
                        .as_ref()
                        .map_or(Json::Null, |l| Json::Raw(l.to_json())),
                ),
                (
                    "master_warnings",
                    Json::Arr(r.warnings.iter().map(Json::str).collect()),
                ),
                ("master_exit", Json::str(&r.exit)),
                ("run_secs", Json::Num(r.total.as_secs_f64())),
            ]),
        ));
    }
    s
}

fn notes(s: &mut Section, r: &Run, name: &str, negative: &[&Sample]) {
    s.notes.push(format!(
        "- {name}: run took {:.1} s (master start to stop); latencies in ms, in reload order \
         (in brackets: from the master's `worker started` line to its `worker ready` line): {}",
        r.total.as_secs_f64(),
        r.samples
            .iter()
            .map(|x| match x.spawn_to_ready_ms() {
                Some(t) => format!("{:.2} ({t:.1})", x.latency_ms()),
                None => format!("{:.2}", x.latency_ms()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
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
        for u in r.unpaired.iter().take(5) {
            s.notes.push(format!("  - {u}"));
        }
    }
    if !r.failed.is_empty() {
        s.notes.push(format!("- {name}: failed reloads:"));
        for f in r.failed.iter().take(5) {
            s.notes.push(format!("  - `{f}`"));
        }
    }
    if let Some(load) = &r.load
        && load.failed() > 0
    {
        s.notes.push(format!("- {name}: first failed requests:"));
        for e in &load.errors {
            s.notes.push(format!("  - `{e}`"));
        }
    }
    if let Some(idle) = &r.idle
        && !idle.moved.is_empty()
    {
        s.notes.push(format!(
            "- {name}: the master's context switches moved while idle at (ms into the period, \
             by how many): {}",
            idle.moved
                .iter()
                .take(10)
                .map(|(at, n)| format!("{at:.0} ms +{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(idle) = &r.idle
        && !idle.lines.is_empty()
    {
        s.notes.push(format!(
            "- {name}: lines logged while idle: {}",
            idle.lines
                .iter()
                .take(5)
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !r.warnings.is_empty() {
        s.notes.push(format!(
            "- {name}: the master logged {} warning/error line(s), e.g.:",
            r.warnings.len()
        ));
        for w in r.warnings.iter().take(5) {
            s.notes.push(format!("  - `{w}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps_and_waiting_lines() {
        let line = "2026-11-25T16:45:38.598799Z  INFO master_process::supervisor: worker ready pid=6689 index=0 generation=0 after_ms=4";
        assert_eq!(line_unix_us(line), Some(1_795_625_138_598_799));
        assert_eq!(line_unix_us("1970-01-01T00:00:00Z x"), Some(0));
        assert_eq!(
            line_unix_us("2000-02-29T00:00:01.5Z x"),
            Some(951_782_401_500_000)
        );
        assert_eq!(line_unix_us("test-worker[1]: waiting at unix_us=5"), None);
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
