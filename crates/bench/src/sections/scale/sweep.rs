//! Reloads against workers, listeners and threads per worker.
//!
//! Each point is a master of its own (`--no-monitor`, test-workers), started and settled,
//! then `--scale-reloads` reloads one at a time (SIGHUP, wait for `reload done`): the
//! master's `took_ms`, its CPU from the SIGHUP to `reload done`, the detection latency of
//! every new worker (its `waiting at` to the master's `worker ready`, `--ready listening`
//! only), and its RSS, descriptors and threads after them.

use super::slopes::Fit;
use super::{Footprint, Reload, powers, reloads, start};
use crate::master::Ready;
use crate::plot::{Chart, Series};
use crate::report::{Json, Metric, Section, obj};
use crate::{Ctx, stats};

/// Target: master CPU per replaced worker at the most workers, ms.
const TARGET_CPU_PER_WORKER_MS: f64 = 1.0;
/// Target: master RSS at the most workers, kB.
const TARGET_RSS_KB: u64 = 4096;
/// Target: detection median of a lone fast starter, ms.
const TARGET_DETECTION_MS: f64 = 3.0;
/// The most listeners.
const MAX_LISTENERS: usize = 64;
/// Extra idle threads per worker (`TW_THREADS`).
const THREADS: [usize; 5] = [1, 4, 16, 64, 256];

/// One point of a sweep.
#[derive(Debug, Clone)]
struct Point {
    x: usize,
    reloads: Vec<Reload>,
    after: Footprint,
}

impl Point {
    fn took_ms(&self) -> f64 {
        stats::median(&self.reloads.iter().map(|r| r.took_ms).collect::<Vec<_>>())
    }

    fn cpu_ms(&self) -> f64 {
        stats::median(&self.reloads.iter().map(|r| r.cpu_ms).collect::<Vec<_>>())
    }

    fn detection(&self) -> Vec<f64> {
        self.reloads
            .iter()
            .flat_map(|r| r.detection_ms.iter().copied())
            .collect()
    }

    fn failed(&self) -> usize {
        self.reloads.iter().filter(|r| !r.done).count()
    }

    fn json(&self) -> Json {
        let reloads = self.reloads.iter().map(|r| {
            obj! {"took_ms": r.took_ms, "cpu_ms": r.cpu_ms, "done": r.done,
            "detection_ms": Json::arr(r.detection_ms.iter().copied())}
        });
        obj! {
            "x": self.x, "reloads": Json::arr(reloads), "rss_kb": self.after.rss_kb,
            "hwm_kb": self.after.hwm_kb, "fds": self.after.fds, "threads": self.after.threads,
        }
    }
}

/// What one point runs.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Its place on the x axis.
    x: usize,
    workers: usize,
    listeners: usize,
    /// `TW_THREADS`.
    threads: usize,
    ready: Ready,
    /// Reloads.
    count: usize,
}

impl Setup {
    fn new(x: usize, count: usize) -> Setup {
        Setup {
            x,
            workers: 1,
            listeners: 1,
            threads: 0,
            ready: Ready::Listening,
            count,
        }
    }
}

/// One master; its reloads.
fn point(ctx: &Ctx, setup: Setup) -> Result<Point, String> {
    let Setup {
        x,
        workers,
        listeners,
        threads,
        ready,
        count,
    } = setup;
    let mut args = vec!["--no-monitor".to_owned()];
    for _ in 1..listeners {
        args.extend(["-l".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    let env = if threads > 0 {
        vec![("TW_THREADS", threads.to_string())]
    } else {
        Vec::new()
    };
    let mut master = start(ctx, workers, ready, &args, &env)?;
    let reloads = reloads(&master, count)?;
    let after = Footprint::read(master.pid());
    master.stop();
    let p = Point { x, reloads, after };
    eprintln!(
        "bench: scale: x={x} workers={workers} listeners={listeners} threads={threads} \
         {ready:?}: took {:.0} ms, cpu {:.1} ms/reload, rss {} kB, detection median {:.2} ms",
        p.took_ms(),
        p.cpu_ms(),
        p.after.rss_kb,
        stats::median(&p.detection())
    );
    Ok(p)
}

/// Runs the three sweeps.
pub fn run(ctx: &Ctx, fits: &mut Vec<Fit>) -> Result<Vec<Section>, String> {
    let ns = powers(ctx.opts.scale_workers);
    let count = ctx.opts.scale_reloads;
    let mut by_mode = Vec::new();
    for ready in [Ready::Listening, Ready::Notify] {
        let points: Result<Vec<Point>, String> = ns
            .iter()
            .map(|&n| {
                point(
                    ctx,
                    Setup {
                        workers: n,
                        ready,
                        ..Setup::new(n, count)
                    },
                )
            })
            .collect();
        by_mode.push((ready, points?));
    }
    let listeners: Vec<Point> = powers(MAX_LISTENERS)
        .into_iter()
        .map(|l| {
            point(
                ctx,
                Setup {
                    listeners: l,
                    ..Setup::new(l, count)
                },
            )
        })
        .collect::<Result<_, _>>()?;
    // One worker per reload: more reloads, for a median and a p99 of detection.
    let threads: Vec<Point> = THREADS
        .into_iter()
        .map(|t| {
            point(
                ctx,
                Setup {
                    threads: t,
                    ..Setup::new(t, 4 * count)
                },
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(vec![
        workers_section(ctx, &by_mode, fits),
        listeners_section(&listeners, fits),
        threads_section(&threads, fits),
    ])
}

fn mode_name(ready: Ready) -> &'static str {
    match ready {
        Ready::Listening => "--ready listening",
        Ready::Notify => "--ready notify",
    }
}

fn series(name: &str, points: &[Point], y: impl Fn(&Point) -> f64) -> Series {
    Series {
        name: name.to_owned(),
        points: points.iter().map(|p| (p.x as f64, y(p))).collect(),
    }
}

fn chart(title: &str, x: &str, y: &str, log2_x: bool, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        log2_x,
        series,
    }
}

fn workers_section(ctx: &Ctx, by_mode: &[(Ready, Vec<Point>)], fits: &mut Vec<Fit>) -> Section {
    let mut s = Section::new("scale.workers", "Scale: reloads against workers");
    s.intro.push(format!(
        "For each number of workers, `master-process -w N --no-monitor -- test-worker`, \
         started and settled, then {} reloads one at a time (SIGHUP, wait for `reload \
         done`); medians. Reload time: the master's `took_ms` (SIGHUP to the last old \
         worker's exit). Master CPU: `se.sum_exec_runtime` from the SIGHUP to `reload done`. \
         Once under `--ready listening` (the default: the /proc probe) and once under \
         `--ready notify` (`READY=1`; no probe).",
        ctx.opts.scale_reloads
    ));
    for (ready, points) in by_mode {
        let name = mode_name(*ready);
        let key = if *ready == Ready::Listening {
            "listening"
        } else {
            "notify"
        };
        let Some(top) = points.last() else { continue };
        let per_worker = top.cpu_ms() / top.x as f64;
        let failed: usize = points.iter().map(Point::failed).sum();
        let value =
            obj! {"workers": top.x, "cpu_per_reload_ms": top.cpu_ms(), "per_worker_ms": per_worker};
        let shown = format!(
            "{per_worker:.3} ms ({:.1} ms per reload of {} workers)",
            top.cpu_ms(),
            top.x
        );
        let label = format!(
            "{name}: master CPU per replaced worker at {} workers",
            top.x
        );
        let m = Metric::info(format!("{key}.cpu_per_worker"), label, value, shown);
        // The budget is for 128 workers: with fewer, the fixed part of a reload weighs more.
        s.push(match *ready {
            Ready::Listening if top.x >= 128 => m.target(
                format!("<= {TARGET_CPU_PER_WORKER_MS} ms"),
                per_worker <= TARGET_CPU_PER_WORKER_MS,
            ),
            Ready::Listening => {
                m.expect(format!("<= {TARGET_CPU_PER_WORKER_MS} ms at 128 workers"))
            }
            Ready::Notify => m,
        });
        let table: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{}: {:.0} ms, {:.1} ms CPU, {} kB",
                    p.x,
                    p.took_ms(),
                    p.cpu_ms(),
                    p.after.rss_kb
                )
            })
            .collect();
        s.push(Metric::info(
            format!("{key}.points"),
            format!("{name}: workers: reload time, master CPU per reload, RSS after"),
            Json::arr(points.iter().map(Point::json)),
            table.join("; "),
        ));
        s.push(
            Metric::info(
                format!("{key}.failed"),
                format!("{name}: failed reloads"),
                failed,
                failed.to_string(),
            )
            .target("0", failed == 0),
        );
        let cpu: Vec<(f64, f64)> = points.iter().map(|p| (p.x as f64, p.cpu_ms())).collect();
        fits.push(Fit::new(
            &format!("workers.{key}.cpu"),
            &format!("master CPU per reload vs workers ({name})"),
            "ms per worker",
            cpu,
        ));
        let took: Vec<(f64, f64)> = points.iter().map(|p| (p.x as f64, p.took_ms())).collect();
        fits.push(Fit::new(
            &format!("workers.{key}.took"),
            &format!("reload time vs workers ({name})"),
            "ms per worker",
            took,
        ));
        if *ready == Ready::Listening {
            rss_and_detection(&mut s, points, fits);
        }
    }
    let time = by_mode
        .iter()
        .map(|(r, p)| series(mode_name(*r), p, Point::took_ms))
        .collect();
    s.plot(
        "scale-reload-time.svg",
        chart(
            "Reload time against workers",
            "workers",
            "ms (SIGHUP to the last old worker's exit)",
            true,
            time,
        ),
    );
    let cpu = by_mode
        .iter()
        .map(|(r, p)| series(mode_name(*r), p, Point::cpu_ms))
        .collect();
    s.plot(
        "scale-reload-cpu.svg",
        chart(
            "Master CPU per reload against workers",
            "workers",
            "ms of CPU per reload",
            true,
            cpu,
        ),
    );
    s
}

/// RSS and detection latency against workers (`--ready listening`).
fn rss_and_detection(s: &mut Section, points: &[Point], fits: &mut Vec<Fit>) {
    if let Some(top) = points.last() {
        let rss = top.after.rss_kb;
        let value = obj! {"rss_kb": rss, "hwm_kb": top.after.hwm_kb, "workers": top.x};
        let shown = format!(
            "{:.2} MB ({rss} kB; peak {} kB)",
            rss as f64 / 1024.0,
            top.after.hwm_kb
        );
        let label = format!("master RSS after the reloads, {} workers", top.x);
        s.push(
            Metric::info("rss_top", label, value, shown).target("<= 4 MB", rss <= TARGET_RSS_KB),
        );
    }
    if let Some(one) = points.first() {
        let d = one.detection();
        let median = stats::median(&d);
        let shown = format!(
            "{median:.2} ms (p99 {:.2}, {} workers)",
            stats::percentile(&d, 99.0),
            d.len()
        );
        let value = obj! {"median": median, "samples": d.len()};
        let label = format!(
            "detection latency median, {} worker (a fast starter)",
            one.x
        );
        s.push(
            Metric::info("detection_one", label, value, shown)
                .target("<= 3 ms", median <= TARGET_DETECTION_MS),
        );
    }
    let rss: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.x as f64, p.after.rss_kb as f64))
        .collect();
    fits.push(Fit::new(
        "workers.rss",
        "master RSS vs workers",
        "kB per worker",
        rss,
    ));
    let median = series("median", points, |p| stats::median(&p.detection()));
    let p99 = series("p99", points, |p| stats::percentile(&p.detection(), 99.0));
    s.plot(
        "scale-detection-workers.svg",
        chart(
            "Detection latency against workers starting at once",
            "workers starting at once",
            "ms (worker's first wait to `worker ready`)",
            true,
            vec![median, p99],
        ),
    );
    let rss = series("VmRSS", points, |p| p.after.rss_kb as f64 / 1024.0);
    let hwm = series("VmHWM (peak)", points, |p| p.after.hwm_kb as f64 / 1024.0);
    s.plot(
        "scale-rss-workers.svg",
        chart(
            "Master RSS against workers",
            "workers",
            "MB",
            true,
            vec![rss, hwm],
        ),
    );
    let med: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.x as f64, stats::median(&p.detection())))
        .collect();
    fits.push(Fit::new(
        "workers.detection",
        "detection latency median vs workers starting at once",
        "ms per worker",
        med,
    ));
}

fn listeners_section(points: &[Point], fits: &mut Vec<Fit>) -> Section {
    let mut s = Section::new("scale.listeners", "Scale: listeners");
    s.intro.push(
        "`master-process -l 127.0.0.1:0` given L times (L ports), `-w 1 --no-monitor -- \
         test-worker` (which serves every inherited socket), reloads as above under `--ready \
         listening` (the worker must be seen waiting on every listener)."
            .to_owned(),
    );
    let table: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{}: {} kB, {} fds, {:.1} ms CPU, {:.0} ms",
                p.x,
                p.after.rss_kb,
                p.after.fds,
                p.cpu_ms(),
                p.took_ms()
            )
        })
        .collect();
    s.push(Metric::info(
        "points",
        "listeners: master RSS, descriptors, CPU per reload, reload time",
        Json::arr(points.iter().map(Point::json)),
        table.join("; "),
    ));
    let failed: usize = points.iter().map(Point::failed).sum();
    s.push(
        Metric::info("failed", "failed reloads", failed, failed.to_string())
            .target("0", failed == 0),
    );
    let xy = |f: fn(&Point) -> f64| {
        points
            .iter()
            .map(|p| (p.x as f64, f(p)))
            .collect::<Vec<_>>()
    };
    fits.push(Fit::new(
        "listeners.rss",
        "master RSS vs listeners",
        "kB per listener",
        xy(|p| p.after.rss_kb as f64),
    ));
    fits.push(Fit::new(
        "listeners.cpu",
        "master CPU per reload vs listeners",
        "ms per listener",
        xy(Point::cpu_ms),
    ));
    fits.push(Fit::new(
        "listeners.fds",
        "master descriptors vs listeners",
        "per listener",
        xy(|p| p.after.fds as f64),
    ));
    let rss = series("VmRSS", points, |p| p.after.rss_kb as f64 / 1024.0);
    s.plot(
        "scale-rss-listeners.svg",
        chart(
            "Master RSS against listeners",
            "listeners",
            "MB",
            true,
            vec![rss],
        ),
    );
    let cpu = series("CPU per reload (ms)", points, Point::cpu_ms);
    s.plot(
        "scale-cpu-listeners.svg",
        chart(
            "Master CPU per reload against listeners",
            "listeners",
            "ms of CPU per reload (1 worker)",
            true,
            vec![cpu],
        ),
    );
    s
}

fn threads_section(points: &[Point], fits: &mut Vec<Fit>) -> Section {
    let mut s = Section::new("scale.threads", "Scale: threads per worker");
    s.intro.push(
        "`master-process -w 1 --no-monitor -- test-worker` with `TW_THREADS=T`: T more \
         threads per worker, parked, started before it serves (the probe reads \
         /proc/P/task/T/syscall of every thread at each look). Detection latency over every \
         reload's new worker; master CPU per reload."
            .to_owned(),
    );
    let table: Vec<String> = points
        .iter()
        .map(|p| {
            let d = p.detection();
            format!(
                "{}: median {:.2} ms, p99 {:.2} ms, {:.2} ms CPU",
                p.x,
                stats::median(&d),
                stats::percentile(&d, 99.0),
                p.cpu_ms()
            )
        })
        .collect();
    s.push(Metric::info(
        "points",
        "threads per worker: detection median, p99, master CPU per reload",
        Json::arr(points.iter().map(Point::json)),
        table.join("; "),
    ));
    let xy = |f: &dyn Fn(&Point) -> f64| {
        points
            .iter()
            .map(|p| (p.x as f64, f(p)))
            .collect::<Vec<_>>()
    };
    fits.push(Fit::new(
        "threads.detection",
        "detection latency median vs threads per worker",
        "ms per thread",
        xy(&|p| stats::median(&p.detection())),
    ));
    fits.push(Fit::new(
        "threads.cpu",
        "master CPU per reload vs threads per worker",
        "ms per thread",
        xy(&Point::cpu_ms),
    ));
    let median = series("median", points, |p| stats::median(&p.detection()));
    let p99 = series("p99", points, |p| stats::percentile(&p.detection(), 99.0));
    let cpu = series("master CPU per reload", points, Point::cpu_ms);
    s.plot(
        "scale-detection-threads.svg",
        chart(
            "Detection latency against threads per worker",
            "extra threads per worker (TW_THREADS)",
            "ms",
            true,
            vec![median, p99, cpu],
        ),
    );
    s
}
