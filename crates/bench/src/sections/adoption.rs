//! What adoption costs (issue 11): one adopted `bind` (and `listen`), and the seccomp filter's
//! toll on every other system call of a worker.
//!
//! - **Bind loops.** A master with one test-worker that, before it serves, runs
//!   `--bind-cycles` cycles of `socket` (non-blocking), `bind`, `listen(511)` and `close`,
//!   each call timed by the worker itself (`TW_BIND_LOOP`). Three kinds of run, interleaved,
//!   `ROUNDS` times: the address the master holds (every bind adopted: the master installs
//!   its socket at the app's descriptor, every listen answered without running), an address
//!   it does not hold (`127.0.0.1:0`: the filter sends the call to the master, which lets it
//!   run) and the same with `--adopt off` (no filter: a plain bind and listen). The master's
//!   CPU from its start until its worker is ready, minus that of the filterless run, divided
//!   by the cycles: what one adopted bind and listen cost the master.
//! - **Syscall loop.** Before that, each worker times 21 rounds of `getppid` calls
//!   (`TW_SYSCALL_LOOP`): ns per call with the filter (adopt on) and without (adopt off).
//! - **Throughput.** A syscall-heavy worker (`TW_SYSCALLS_PER_REQUEST`: `getppid` calls before
//!   each answer) under `--adopt on` and `--adopt off`, one worker each, wrk interleaved as in
//!   the throughput section: the ratio on / off, and the worker's CPU per request on each
//!   side. The target is on the toll per call (the syscall loop): every system call of a
//!   task under a seccomp filter takes the kernel's slower entry path, so a worker making
//!   100 calls per request pays 100 tolls per request, whatever the filter holds; the ratio
//!   shows what that comes to, and no ratio target could be met by any filter.

use std::time::Duration;

use crate::lines::{field, parsed};
use crate::master::{Extra, Master, Ready};
use crate::measure::Cpu;
use crate::report::{Json, Metric, Scope, Section, list, obj};
use crate::wrk::{self, MODES, WrkRun};
use crate::{Ctx, stats, sys};

/// Rounds of the three bind-loop runs (fewer with `--quick`).
const ROUNDS: usize = 5;
/// `getppid` calls per round of the syscall loop.
const SYSCALL_LOOP: u64 = 200_000;
/// `getppid` calls per request of the syscall-heavy worker.
pub const SYSCALLS_PER_REQUEST: u64 = 100;
/// The most the filter may add to one system call, ns (fastest rounds, on minus off).
const TOLL_TARGET_NS: f64 = 100.0;
/// How long a worker may take to run its loops and get ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The three kinds of bind-loop run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// The held address: adopted.
    Adopted,
    /// `127.0.0.1:0` through the filter: the master lets it run.
    NotHeld,
    /// `127.0.0.1:0` with `--adopt off`: no filter.
    NoFilter,
}

const RUNS: [Run; 3] = [Run::Adopted, Run::NotHeld, Run::NoFilter];

impl Run {
    fn key(self) -> &'static str {
        match self {
            Run::Adopted => "adopted",
            Run::NotHeld => "not_held",
            Run::NoFilter => "no_filter",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Run::Adopted => "the held address (adopted)",
            Run::NotHeld => "an address not held (127.0.0.1:0), through the filter",
            Run::NoFilter => "127.0.0.1:0 with `--adopt off` (no filter)",
        }
    }
}

/// One worker's loops.
#[derive(Debug, Clone, Default)]
struct Loops {
    bind_p50: f64,
    bind_p90: f64,
    listen_p50: f64,
    listen_p90: f64,
    socket_p50: f64,
    close_p50: f64,
    cycle_mean: f64,
    errors: u64,
    first_error: Option<String>,
    /// ns per getppid: (min, median) over the rounds.
    syscall_ns: (f64, f64),
    /// The master's CPU from its start until its worker was ready, ms.
    master_cpu_ms: f64,
}

/// Starts a master with one test-worker and `env`, `--adopt off` if `!adopt`, waits until its
/// worker is ready; `(master, its worker's pid)`.
fn start(ctx: &Ctx, adopt: bool, env: &[(&str, &str)]) -> Result<(Master, i32), String> {
    let args: &[&str] = match adopt {
        true => &["--no-monitor", "--ready-timeout", "120s"],
        false => &["--no-monitor", "--ready-timeout", "120s", "--adopt", "off"],
    };
    let extra = Extra { args, env };
    let master = Master::start_within(ctx, 1, Ready::Listening, &extra, START_TIMEOUT)?;
    let worker = master.workers_seen().into_iter().next();
    let worker = worker.ok_or("no `worker started` line in the master's log")?;
    Ok((master, worker))
}

/// One bind-loop run.
fn bind_run(ctx: &Ctx, run: Run) -> Result<Loops, String> {
    let cycles = ctx.opts.bind_cycles.to_string();
    let syscalls = SYSCALL_LOOP.to_string();
    let mut env = vec![
        ("TW_BIND_LOOP", cycles.as_str()),
        ("TW_SYSCALL_LOOP", syscalls.as_str()),
    ];
    if run != Run::Adopted {
        env.push(("TW_BIND_LOOP_ADDR", "127.0.0.1:0"));
    }
    let (mut master, _) = start(ctx, run != Run::NoFilter, &env)?;
    let cpu = Cpu::read(master.pid())?;
    let lines = master.proc.log().lines();
    master.stop();
    let find = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .cloned()
            .ok_or_else(|| format!("no `{what}` line from the worker"))
    };
    let (bind, sys) = (find(" bind_loop ")?, find(" syscall_loop ")?);
    let num = |line: &str, key: &str| parsed::<f64>(line, key).unwrap_or(f64::NAN);
    let l = Loops {
        bind_p50: num(&bind, "bind_p50_us"),
        bind_p90: num(&bind, "bind_p90_us"),
        listen_p50: num(&bind, "listen_p50_us"),
        listen_p90: num(&bind, "listen_p90_us"),
        socket_p50: num(&bind, "socket_p50_us"),
        close_p50: num(&bind, "close_p50_us"),
        cycle_mean: num(&bind, "cycle_mean_us"),
        errors: parsed(&bind, "errors").unwrap_or(u64::MAX),
        first_error: field(&bind, "first_error").map(str::to_owned),
        syscall_ns: (num(&sys, "ns_min"), num(&sys, "ns_p50")),
        master_cpu_ms: cpu.since_start().cpu_ms(),
    };
    eprintln!(
        "bench: adoption {}: bind p50 {:.1} µs, listen p50 {:.1} µs, errors {}, getppid {:.0} ns (min {:.0}), master CPU {:.0} ms",
        run.key(),
        l.bind_p50,
        l.listen_p50,
        l.errors,
        l.syscall_ns.1,
        l.syscall_ns.0,
        l.master_cpu_ms
    );
    Ok(l)
}

/// What the throughput comparison gave.
struct Throughput {
    /// `getppid` calls the worker made per request on top of its work.
    per_request: u64,
    /// Per mode: (on runs, off runs).
    runs: [(Vec<WrkRun>, Vec<WrkRun>); 2],
    /// Per mode: the workers' CPU ticks during their runs (on, off).
    ticks: [(u64, u64); 2],
}

fn throughput(ctx: &Ctx, per_request: u64) -> Result<Throughput, String> {
    let calls = per_request.to_string();
    let env = [("TW_SYSCALLS_PER_REQUEST", calls.as_str())];
    let (mut on, on_worker) = start(ctx, true, &env)?;
    let (mut off, off_worker) = start(ctx, false, &env)?;
    let sides = [(on.addr, on_worker), (off.addr, off_worker)];
    let reps = ctx.opts.reps;
    let steady = wrk::interleaved(ctx, &sides, |mi, rep, runs| {
        on.proc.check_alive("the master (adopt on)")?;
        off.proc.check_alive("the master (adopt off)")?;
        let rps = |side: usize| {
            runs.iter()
                .find(|(i, _)| *i == side)
                .map_or(f64::NAN, |r| r.1.rps)
        };
        eprintln!(
            "bench: adoption {} +{per_request} calls {}/{reps}: filter on {:.0} req/s, off {:.0} \
             req/s ({:.3})",
            MODES[mi].0,
            rep + 1,
            rps(0),
            rps(1),
            rps(0) / rps(1)
        );
        Ok(())
    })?;
    on.stop();
    off.stop();
    let [s_on, s_off] = [&steady[0], &steady[1]];
    Ok(Throughput {
        per_request,
        runs: std::array::from_fn(|mi| (s_on.runs[mi].clone(), s_off.runs[mi].clone())),
        ticks: std::array::from_fn(|mi| (s_on.ticks[mi], s_off.ticks[mi])),
    })
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let rounds = if ctx.opts.quick { 2 } else { ROUNDS };
    let mut loops: Vec<(Run, Loops)> = Vec::new();
    let mut errors = Vec::new();
    for round in 0..rounds {
        // The order rotates, so that no kind always runs first.
        for i in 0..RUNS.len() {
            let run = RUNS[(i + round) % RUNS.len()];
            match bind_run(ctx, run) {
                Ok(l) => loops.push((run, l)),
                Err(e) => errors.push(format!("{} (round {}): {e}", run.name(), round + 1)),
            }
        }
    }
    // An ordinary worker (no call added), then the syscall-heavy one.
    let throughputs = [0, SYSCALLS_PER_REQUEST].map(|n| (n, throughput(ctx, n)));
    let mut s = section(ctx, &loops, rounds);
    s.errors = errors;
    throughput_intro(&mut s);
    for (n, t) in throughputs {
        match t {
            Ok(t) => throughput_figures(&mut s, &t),
            Err(e) => s
                .errors
                .push(format!("throughput, +{n} calls per request: {e}")),
        }
    }
    Ok(vec![s])
}

/// The median of `f` over the runs of `run`.
fn median(loops: &[(Run, Loops)], run: Run, f: impl Fn(&Loops) -> f64) -> f64 {
    let values: Vec<f64> = loops
        .iter()
        .filter(|(r, _)| *r == run)
        .map(|(_, l)| f(l))
        .collect();
    stats::median(&values)
}

fn section(ctx: &Ctx, loops: &[(Run, Loops)], rounds: usize) -> Section {
    let mut s = Section::new(
        "adoption",
        "What adoption costs: one adopted bind, and the filter",
    );
    let cycles = ctx.opts.bind_cycles;
    s.intro.push(format!(
        "**Bind loops**: `master-process -l 127.0.0.1:0 -w 1 --no-monitor -- test-worker`; \
         before it serves, the worker runs {cycles} cycles of `socket` (non-blocking), `bind`, \
         `listen(511)` and `close`, and times each call (`TW_BIND_LOOP`). Three runs, \
         interleaved, {rounds} times each: {}, {} and {}. The figures are medians over the \
         runs of each call's median (p50) and p90 over its {cycles} cycles. The master's \
         CPU is its `se.sum_exec_runtime` from its start until its worker was ready; minus \
         that of the run without filter, divided by {cycles}: the master's CPU per adopted \
         bind and listen (both go through it). **Syscall loop**: before that, each worker \
         times 21 rounds of {SYSCALL_LOOP} `getppid` calls (`TW_SYSCALL_LOOP`): ns per call \
         with the filter (the runs with adoption on) and without (`--adopt off`); min and \
         median over the rounds, then the median over the runs.",
        Run::Adopted.name(),
        Run::NotHeld.name(),
        Run::NoFilter.name()
    ));
    for run in RUNS {
        let scope = Scope {
            key: run.key(),
            name: run.name(),
        };
        let m = |f: fn(&Loops) -> f64| median(loops, run, f);
        let (b50, b90, l50, l90) = (
            m(|l| l.bind_p50),
            m(|l| l.bind_p90),
            m(|l| l.listen_p50),
            m(|l| l.listen_p90),
        );
        let value = obj! {
            "bind_p50_us": b50, "bind_p90_us": b90, "listen_p50_us": l50, "listen_p90_us": l90,
            "socket_p50_us": m(|l| l.socket_p50), "close_p50_us": m(|l| l.close_p50),
            "cycle_mean_us": m(|l| l.cycle_mean),
        };
        let shown = format!(
            "bind {b50:.1} µs (p90 {b90:.1}), listen {l50:.1} µs (p90 {l90:.1}); a whole cycle \
             {:.1} µs",
            m(|l| l.cycle_mean)
        );
        s.push(scope.metric("bind_listen_us", "bind and listen, p50 (p90)", value, shown));
        let errors: u64 = loops
            .iter()
            .filter(|(r, _)| *r == run)
            .map(|(_, l)| l.errors)
            .sum();
        s.push(scope.zero("errors", "failed calls in the loops", errors));
        if let Some(e) = loops
            .iter()
            .filter(|(r, _)| *r == run)
            .find_map(|(_, l)| l.first_error.clone())
        {
            s.notes
                .push(format!("- {}: first failed call: `{e}`", run.name()));
        }
    }
    // The cost of one adopted bind (and listen) for the app, and for the master.
    let app = |run| median(loops, run, |l| l.bind_p50) + median(loops, run, |l| l.listen_p50);
    let (adopted, plain) = (app(Run::Adopted), app(Run::NoFilter));
    let value = obj! {"adopted_us": adopted, "plain_us": plain, "extra_us": adopted - plain};
    let shown = format!(
        "**{adopted:.1} µs** for a bind and its listen, adopted (a plain bind and listen: \
         {plain:.1} µs; {:+.1} µs)",
        adopted - plain
    );
    s.push(Metric::info(
        "adopted_bind_us",
        "the app's wait for one adopted bind + listen (p50)",
        value,
        shown,
    ));
    let cpu = |run| median(loops, run, |l| l.master_cpu_ms);
    let per = (cpu(Run::Adopted) - cpu(Run::NoFilter)) * 1000.0 / cycles as f64;
    let value = obj! {
        "per_bind_us": per, "adopted_cpu_ms": cpu(Run::Adopted),
        "not_held_cpu_ms": cpu(Run::NotHeld), "no_filter_cpu_ms": cpu(Run::NoFilter),
    };
    let shown = format!(
        "{per:.1} µs per adopted bind + listen (master CPU until ready: {:.0} ms adopted, \
         {:.0} ms not held, {:.0} ms without filter, {cycles} cycles each)",
        cpu(Run::Adopted),
        cpu(Run::NotHeld),
        cpu(Run::NoFilter)
    );
    s.push(Metric::info(
        "master_cpu_per_bind_us",
        "the master's CPU per adopted bind + listen",
        value,
        shown,
    ));
    // The filter's toll on every other call.
    let on: Vec<&Loops> = loops
        .iter()
        .filter(|(r, _)| *r != Run::NoFilter)
        .map(|(_, l)| l)
        .collect();
    let off: Vec<&Loops> = loops
        .iter()
        .filter(|(r, _)| *r == Run::NoFilter)
        .map(|(_, l)| l)
        .collect();
    let ns = |side: &[&Loops], f: fn(&Loops) -> f64| {
        stats::median(&side.iter().map(|l| f(l)).collect::<Vec<_>>())
    };
    let (on_min, on_p50) = (ns(&on, |l| l.syscall_ns.0), ns(&on, |l| l.syscall_ns.1));
    let (off_min, off_p50) = (ns(&off, |l| l.syscall_ns.0), ns(&off, |l| l.syscall_ns.1));
    let value = obj! {
        "on_min_ns": on_min, "on_p50_ns": on_p50, "off_min_ns": off_min, "off_p50_ns": off_p50,
        "on_runs_p50_ns": Json::arr(on.iter().map(|l| l.syscall_ns.1)),
        "off_runs_p50_ns": Json::arr(off.iter().map(|l| l.syscall_ns.1)),
    };
    let shown = format!(
        "with the filter {on_p50:.0} ns (fastest round {on_min:.0}), without {off_p50:.0} ns \
         (fastest round {off_min:.0}): **{:+.0} ns** per call ({:+.0} in the fastest rounds)",
        on_p50 - off_p50,
        on_min - off_min
    );
    let toll = on_min - off_min;
    let metric = Metric::info("syscall_ns", "one getppid, filter on vs off", value, shown);
    s.push(metric.target(
        format!("<= +{TOLL_TARGET_NS:.0} ns (fastest rounds)"),
        toll <= TOLL_TARGET_NS,
    ));
    s.notes.push(format!(
        "- getppid ns per call, median of each run's rounds: with the filter {}; without {}.",
        list(&on.iter().map(|l| l.syscall_ns.1).collect::<Vec<_>>(), 0),
        list(&off.iter().map(|l| l.syscall_ns.1).collect::<Vec<_>>(), 0)
    ));
    let spec = std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass")
        .unwrap_or_default();
    s.notes.push(format!(
        "- The filter is a cacheable one (its verdict depends on the call number and the ABI \
         only), so the kernel allows other calls from its per-filter bitmap without running \
         the BPF program; what remains is the seccomp check on the system call entry path. \
         Speculative Store Bypass mitigation on this machine: `{}` (a kernel that forces it on \
         seccomp tasks would add its own cost).",
        spec.trim()
    ));
    s
}

fn throughput_intro(s: &mut Section) {
    s.intro.push(format!(
        "**Throughput, filter on and off**: `master-process -l 127.0.0.1:0 -w 1 --no-monitor \
         [--adopt off] -- test-worker`, the ordinary worker and a syscall-heavy one \
         (`TW_SYSCALLS_PER_REQUEST={SYSCALLS_PER_REQUEST}`: {SYSCALLS_PER_REQUEST} `getppid` \
         calls before each answer), both masters up all along, wrk runs alternating between \
         them as in the throughput section; medians and the ratio filter on / off. The \
         worker's CPU (utime + stime of its process, all threads) during its own wrk runs, per \
         request: what the filter costs the app, less exposed to the machine's other work than \
         requests/s."
    ));
}

fn throughput_figures(s: &mut Section, t: &Throughput) {
    let n = t.per_request;
    for (mi, (mode, close)) in MODES.iter().enumerate() {
        let key = format!("{}_{n}", if *close { "close" } else { "keepalive" });
        let name = match n {
            0 => format!("{mode}, ordinary worker"),
            n => format!("{mode}, +{n} calls per request"),
        };
        let scope = Scope {
            key: &key,
            name: &name,
        };
        let (on, off) = &t.runs[mi];
        let (r_on, r_off) = (wrk::rps(on), wrk::rps(off));
        let (m_on, m_off) = (stats::median(&r_on), stats::median(&r_off));
        let ratio = m_on / m_off;
        let value = obj! {"on_rps": m_on, "off_rps": m_off, "ratio": ratio,
        "on_runs": Json::arr(r_on.clone()), "off_runs": Json::arr(r_off.clone())};
        let shown = format!("**{ratio:.3}** ({m_on:.0} / {m_off:.0} req/s)");
        let label = "req/s, filter on / off";
        let metric = scope.metric("filter_ratio", label, value, shown);
        s.push(metric.expect(
            "1 - its calls per request x the toll / the CPU of a request (see the worker's \
             CPU below); the target is on the toll",
        ));
        let requests = |runs: &[WrkRun]| runs.iter().map(|r| r.requests).sum::<u64>().max(1);
        let (ticks_on, ticks_off) = t.ticks[mi];
        let us_on = sys::ticks_ms(ticks_on) * 1000.0 / requests(on) as f64;
        let us_off = sys::ticks_ms(ticks_off) * 1000.0 / requests(off) as f64;
        let value = obj! {"on_us": us_on, "off_us": us_off, "ratio": us_off / us_on};
        let shown = format!(
            "{us_on:.2} µs with the filter, {us_off:.2} µs without (off / on {:.3})",
            us_off / us_on
        );
        s.push(scope.metric(
            "worker_cpu_per_request_us",
            "worker CPU per request",
            value,
            shown,
        ));
        let pairs: Vec<f64> = r_on.iter().zip(&r_off).map(|(a, b)| a / b).collect();
        s.notes.push(format!(
            "- {name}: filter on req/s {}; off {}; per-pair ratios {} (spread on {:.0}%, off \
             {:.0}%).",
            list(&r_on, 0),
            list(&r_off, 0),
            list(&pairs, 3),
            stats::spread(&r_on) * 100.0,
            stats::spread(&r_off) * 100.0
        ));
    }
}
