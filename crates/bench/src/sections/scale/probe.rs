//! A worker that never gets ready, under `--ready listening`: what the master's probe costs
//! while it waits (it looks every 1 ms at first, then every twentieth of the start's age, at
//! most every 50 ms).
//!
//! `master-process -l 127.0.0.1:0 --control off -w 1 --no-monitor --ready-timeout 1h --
//! test-worker` with `TW_NEVER_READY=1` (the worker takes its sockets and waits on its
//! SIGTERM pipe, never on them). From the master's `worker started` line, its CPU
//! (`se.sum_exec_runtime`) and context switches every second for `--probe-secs`.

use std::time::{Duration, Instant};

use super::slopes::Fit;
use crate::Ctx;
use crate::lines::listening_addr;
use crate::master::{self, Master, START_TIMEOUT};
use crate::measure::{Cpu, Spent, ms};
use crate::plot::{Chart, Series};
use crate::process::Proc;
use crate::report::{Json, Metric, Section, obj};
use crate::storm::sleep_until;

/// Target: the master's CPU while a worker never gets ready, in % of one core.
const TARGET_PCT: f64 = 1.0;
/// The first period, where the probe is fastest.
const FIRST: Duration = Duration::from_secs(5);

/// The master's CPU over one period.
fn pct(spent: &Spent, period: Duration) -> f64 {
    spent.cpu_ms() / ms(period) * 100.0
}

fn start(ctx: &Ctx) -> Result<Master, String> {
    let mut cmd = master::command(&ctx.bins.master, 1);
    cmd.args(["--no-monitor", "--ready-timeout", "1h", "--"])
        .arg(&ctx.bins.worker)
        .env("TW_NEVER_READY", "1");
    let mut proc = Proc::spawn("master-process", cmd, false, ctx.opts.verbose)?;
    let line = proc.wait_line("listening on", START_TIMEOUT, |l| {
        l.contains("listening on ")
    })?;
    let addr = listening_addr(&line).ok_or_else(|| format!("no address in {line:?}"))?;
    proc.wait_line("worker started", START_TIMEOUT, |l| {
        l.contains("worker started")
    })?;
    Ok(Master { proc, addr })
}

/// Runs the part.
pub fn run(ctx: &Ctx, fits: &mut Vec<Fit>) -> Result<Vec<Section>, String> {
    let secs = ctx.opts.probe_secs;
    let master = start(ctx)?;
    let pid = master.pid();
    let t0 = Instant::now();
    let first = Cpu::read(pid)?;
    let mut last = first;
    let mut per_second = Vec::new();
    let mut at_first = None;
    for s in 1..=secs {
        sleep_until(t0 + Duration::from_secs(s));
        let now = Cpu::read(pid)?;
        per_second.push((s as f64, now.since(&last)));
        if Duration::from_secs(s) == FIRST {
            at_first = Some(now);
        }
        last = now;
    }
    let lines = master.proc.log().lines();
    let ready = lines.iter().any(|l| l.contains("worker ready"));
    let whole = last.since(&first);
    let head = at_first.map(|c| c.since(&first));
    let tail = at_first.map(|c| last.since(&c));
    drop(master);
    let mut s = Section::new(
        "scale.probe",
        "Scale: a worker that never gets ready (`--ready listening`)",
    );
    s.intro.push(format!(
        "`master-process -w 1 --no-monitor --ready-timeout 1h -- test-worker` with \
         `TW_NEVER_READY=1`: the worker never waits on the socket, so the probe keeps looking \
         (every 1 ms at first, then a twentieth of the start's age, at most every 50 ms). The \
         master's CPU (`se.sum_exec_runtime`) and wakeups (context switches) from its \
         `worker started` line, second by second, for {secs} s. Before the back-off (issue \
         16), the same cost 12% of a core (610 ms of CPU in 5 s)."
    ));
    if ready {
        s.errors
            .push("the master took the never-ready worker for ready".to_owned());
    }
    let mut figure = |key: &str, label: &str, spent: &Spent, period: Duration| {
        let p = pct(spent, period);
        let looks = spent.switches.voluntary;
        let per_look = spent.cpu_ms() * 1000.0 / looks.max(1) as f64;
        let value = obj! {
            "cpu_pct": p, "cpu_ms": spent.cpu_ms(), "secs": period.as_secs_f64(),
            "wakeups": spent.switches.total(), "us_per_wakeup": per_look,
        };
        let shown = format!(
            "{p:.3}% ({:.1} ms in {:.0} s; {looks} wakeups, {per_look:.0} µs each)",
            spent.cpu_ms(),
            period.as_secs_f64()
        );
        s.push(
            Metric::info(key, label, value, shown)
                .target(format!("<= {TARGET_PCT}%"), p <= TARGET_PCT),
        );
    };
    if let Some(head) = &head {
        figure(
            "first_5s",
            "master CPU, first 5 s of the start",
            head,
            FIRST,
        );
    }
    figure(
        "whole",
        &format!("master CPU, the whole {secs} s"),
        &whole,
        Duration::from_secs(secs),
    );
    if let Some(tail) = &tail.filter(|_| secs > FIRST.as_secs()) {
        let period = Duration::from_secs(secs) - FIRST;
        let per_s = tail.switches.total() as f64 / period.as_secs_f64();
        let value = obj! {"wakeups_per_s": per_s, "cpu_pct": pct(tail, period)};
        let shown = format!("{per_s:.1}/s, {:.3}% of a core", pct(tail, period));
        let label = "after the first 5 s: wakeups per second (one look each), CPU";
        s.push(Metric::info("tail", label, value, shown).expect("20/s: one look every 50 ms"));
        fits.push(Fit::new(
            "probe_cpu_per_second",
            "master CPU vs seconds a worker has been starting (never ready)",
            "ms per second",
            cumulative(&per_second),
        ));
    }
    let points: Vec<(f64, f64)> = per_second
        .iter()
        .map(|(t, spent)| (*t, pct(spent, Duration::from_secs(1))))
        .collect();
    s.detail(
        "per_second_pct",
        Json::arr(points.iter().map(|&(t, p)| Json::arr([t, p]))),
    );
    s.plot(
        "scale-probe.svg",
        Chart {
            title: "Master CPU while a worker never gets ready".into(),
            x_label: "seconds since the worker started".into(),
            y_label: "% of one core (each second)".into(),
            log2_x: false,
            series: vec![Series {
                name: "--ready listening".into(),
                points,
            }],
        },
    );
    Ok(vec![s])
}

/// Cumulative CPU (ms) against seconds, from the fifth second on: the steady rate's slope.
fn cumulative(per_second: &[(f64, Spent)]) -> Vec<(f64, f64)> {
    let mut total = 0.0;
    let mut out = Vec::new();
    for (t, spent) in per_second {
        total += spent.cpu_ms();
        if *t >= FIRST.as_secs_f64() {
            out.push((*t, total));
        }
    }
    out
}
