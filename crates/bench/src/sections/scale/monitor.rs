//! The resource monitor's cost against workers, at its default interval (2 s).
//!
//! For each number of workers, `master-process -w N --monitor-grace 0` with limits no idle
//! test-worker comes near, idle (no load, no reload; nothing else wakes the master): its CPU
//! over `--scale-secs`, in % of one core, and per sample per worker (a sample being one
//! wakeup: its voluntary context switches).

use std::time::Duration;

use super::slopes::Fit;
use super::{cpu_over, powers, start};
use crate::Ctx;
use crate::master::Ready;
use crate::plot::{Chart, Series};
use crate::report::{Json, Metric, Section, obj};

/// Limits no idle test-worker comes near (64 GiB, 100 cores): nothing is replaced.
const HIGH_LIMITS: [&str; 4] = ["--max-memory", "65536", "--max-cpu", "10000"];

#[derive(Debug, Clone, Copy)]
struct Point {
    workers: usize,
    pct: f64,
    cpu_ms: f64,
    rounds: u64,
}

impl Point {
    fn per_sample_worker_us(&self) -> f64 {
        self.cpu_ms * 1000.0 / (self.rounds.max(1) as f64 * self.workers as f64)
    }
}

/// Runs the part.
pub fn run(ctx: &Ctx, fits: &mut Vec<Fit>) -> Result<Vec<Section>, String> {
    let period = Duration::from_secs(ctx.opts.scale_secs);
    let mut args: Vec<String> = vec!["--monitor-grace".into(), "0".into()];
    args.extend(HIGH_LIMITS.iter().map(|a| a.to_string()));
    let mut points = Vec::new();
    for n in powers(ctx.opts.scale_workers) {
        let mut master = start(ctx, n, Ready::Listening, &args, &[])?;
        let (pct, spent) = cpu_over(master.pid(), period)?;
        master.stop();
        let p = Point {
            workers: n,
            pct,
            cpu_ms: spent.cpu_ms(),
            rounds: spent.switches.voluntary,
        };
        eprintln!(
            "bench: scale monitor: {n} workers: {pct:.4}% ({} rounds, {:.1} µs per sample per worker)",
            p.rounds,
            p.per_sample_worker_us()
        );
        points.push(p);
    }
    let mut s = Section::new(
        "scale.monitor",
        "Scale: the resource monitor against workers (default interval, 2 s)",
    );
    s.intro.push(format!(
        "`master-process -w N --monitor-grace 0 --max-memory 65536 --max-cpu 10000 -- \
         test-worker`, idle, the master's CPU over {} s after it settled. A round is one \
         wakeup of the master (a sample of every worker).",
        period.as_secs()
    ));
    let table: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{}: {:.4}% ({:.0} µs per sample per worker)",
                p.workers,
                p.pct,
                p.per_sample_worker_us()
            )
        })
        .collect();
    let json = points.iter().map(
        |p| obj! {"workers": p.workers, "cpu_pct": p.pct, "cpu_ms": p.cpu_ms, "rounds": p.rounds},
    );
    s.push(Metric::info(
        "points",
        "workers: master CPU (% of a core), per sample per worker",
        Json::arr(json),
        table.join("; "),
    ));
    if let Some(top) = points.last() {
        let label = format!(
            "master CPU at the default interval, {} workers",
            top.workers
        );
        s.push(Metric::info(
            "top_pct",
            label,
            top.pct,
            format!("{:.4}% of a core", top.pct),
        ));
    }
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.workers as f64, p.pct)).collect();
    fits.push(Fit::new(
        "monitor.pct",
        "monitor: master CPU at the default interval vs workers",
        "% of a core per worker",
        xy.clone(),
    ));
    s.plot(
        "scale-monitor.svg",
        Chart {
            title: "Monitor cost against workers (every 2 s)".into(),
            x_label: "workers".into(),
            y_label: "master CPU, % of one core".into(),
            log2_x: true,
            series: vec![Series {
                name: "monitor on".into(),
                points: xy,
            }],
        },
    );
    Ok(vec![s])
}
