//! Reloads back to back, no load: nothing the master holds may grow with them.
//!
//! `master-process -w 1 --no-monitor --ready notify -- test-worker` (`TW_READY=notify`),
//! then `--soak-reloads` reloads, each asked for (SIGHUP) as soon as the last one's `reload
//! done` line is read. The master's descriptors, RSS and threads are read before the first
//! and every twentieth of the way; reloads per second over the whole run.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::slopes::Fit;
use super::{Footprint, RELOAD_WAIT, start};
use crate::Ctx;
use crate::master::{Master, Ready};
use crate::measure::Cpu;
use crate::plot::{Chart, Series};
use crate::report::{Json, Metric, Section, obj};

/// One reload, as lean as can be (the log holds every line of the run: no copy of it).
fn reload(master: &Master) -> Result<bool, String> {
    let log = master.proc.log();
    let from = log.len();
    master.proc.signal(libc::SIGHUP)?;
    let done = Cell::new(None);
    let found = log.wait_until(RELOAD_WAIT, |lines| {
        let end = lines
            .get(from..)
            .unwrap_or_default()
            .iter()
            .find(|l| l.contains("reload done") || l.contains("reload ended"));
        end.map(|l| done.set(Some(l.contains("reload done"))))
            .is_some()
    });
    match (found, done.get()) {
        (true, Some(ok)) => Ok(ok),
        _ => Err(format!(
            "no `reload done` line within {RELOAD_WAIT:?}; last lines:{}",
            log.tail(10)
        )),
    }
}

/// Runs the part.
pub fn run(ctx: &Ctx, fits: &mut Vec<Fit>) -> Result<Vec<Section>, String> {
    let total = ctx.opts.soak_reloads;
    let step = (total / 20).max(1);
    let env = [("TW_READY", "notify".to_owned())];
    let mut master = start(ctx, 1, Ready::Notify, &["--no-monitor".to_owned()], &env)?;
    let pid = master.pid();
    let mut samples = vec![(0usize, Footprint::read(pid))];
    let (mut failed, t0, cpu0) = (0usize, Instant::now(), Cpu::read(pid)?);
    for i in 1..=total {
        if !reload(&master)? {
            failed += 1;
        }
        if i == 1 || i % step == 0 || i == total {
            samples.push((i, Footprint::read(pid)));
        }
    }
    let wall = t0.elapsed();
    let cpu_ms = Cpu::read(pid)?.since(&cpu0).cpu_ms();
    let lines = master.proc.log().len();
    master.stop();
    eprintln!(
        "bench: scale soak: {total} reloads in {:.1} s, {failed} failed, samples {:?}",
        wall.as_secs_f64(),
        samples
            .iter()
            .map(|(i, f)| (i, f.fds, f.rss_kb, f.threads))
            .collect::<Vec<_>>()
    );
    Ok(vec![section(
        total, failed, wall, cpu_ms, lines, &samples, fits,
    )])
}

fn section(
    total: usize,
    failed: usize,
    wall: Duration,
    cpu_ms: f64,
    lines: usize,
    samples: &[(usize, Footprint)],
    fits: &mut Vec<Fit>,
) -> Section {
    let mut s = Section::new("scale.soak", "Scale: reloads back to back");
    s.intro.push(format!(
        "`master-process -w 1 --no-monitor --ready notify -- test-worker` (`TW_READY=notify`), \
         {total} reloads, each SIGHUP sent as soon as the previous `reload done` line was \
         read; the master's descriptors, VmRSS and threads read before the first reload, after \
         it, and every {} reloads. The master wrote {lines} log lines.",
        (total / 20).max(1)
    ));
    let per_s = total as f64 / wall.as_secs_f64();
    let value = obj! {"reloads": total, "secs": wall.as_secs_f64(), "per_s": per_s};
    let shown = format!(
        "{per_s:.1} reloads/s ({total} in {:.1} s; {:.2} ms of master CPU each)",
        wall.as_secs_f64(),
        cpu_ms / total.max(1) as f64
    );
    s.push(Metric::info(
        "rate",
        "reloads per second, back to back",
        value,
        shown,
    ));
    s.push(
        Metric::info("failed", "failed reloads", failed, failed.to_string())
            .target("0", failed == 0),
    );
    // From the first reload on: the first one may allocate what every later one reuses.
    let after_first: Vec<&(usize, Footprint)> = samples.iter().filter(|(i, _)| *i >= 1).collect();
    // Flat: the second half of the run never above the first half (a sample may catch a
    // descriptor of the reload just ended, not yet closed: both halves can).
    let flat = |name: &str, key: &str, f: fn(&Footprint) -> u64, slack: u64| {
        let values: Vec<u64> = after_first.iter().map(|(_, fp)| f(fp)).collect();
        let (early, late) = values.split_at(values.len() / 2);
        let (lo, hi) = (
            values.iter().min().copied().unwrap_or(0),
            values.iter().max().copied().unwrap_or(0),
        );
        let (early_max, late_max) = (
            early.iter().max().copied().unwrap_or(0),
            late.iter().max().copied().unwrap_or(0),
        );
        let first = samples.first().map(|(_, fp)| f(fp)).unwrap_or(0);
        let shown = format!(
            "{first} before, {lo}-{hi} from reload 1 to {total} (highest {early_max} in the first half, {late_max} in the second)"
        );
        let value = obj! {"before": first, "min": lo, "max": hi, "first_half_max": early_max, "second_half_max": late_max};
        let target = match slack {
            0 => "second half <= first half".to_owned(),
            s => format!("second half <= first half + {s}"),
        };
        Metric::info(
            key,
            format!("master {name}: flat from the first reload on"),
            value,
            shown,
        )
        .target(target, late_max <= early_max + slack)
    };
    s.push(flat("descriptors", "fds", |f| f.fds as u64, 0));
    s.push(flat("VmRSS (kB)", "rss_kb", |f| f.rss_kb, 64));
    s.push(flat("threads", "threads", |f| f.threads, 0));
    let json = samples
        .iter()
        .map(|(i, f)| obj! {"reload": *i, "fds": f.fds, "rss_kb": f.rss_kb, "threads": f.threads});
    s.detail("samples", Json::arr(json));
    let xy = |f: fn(&Footprint) -> f64| {
        after_first
            .iter()
            .map(|(i, fp)| (*i as f64, f(fp)))
            .collect::<Vec<_>>()
    };
    fits.push(Fit::new(
        "soak.rss",
        "master RSS vs reloads",
        "kB per reload",
        xy(|f| f.rss_kb as f64),
    ));
    fits.push(Fit::new(
        "soak.fds",
        "master descriptors vs reloads",
        "per reload",
        xy(|f| f.fds as f64),
    ));
    let series = |name: &str, f: fn(&Footprint) -> f64| Series {
        name: name.into(),
        points: xy(f),
    };
    s.plot(
        "scale-soak.svg",
        Chart {
            title: format!("Master resources over {total} reloads back to back"),
            x_label: "reloads".into(),
            y_label: "count, or MB".into(),
            log2_x: false,
            series: vec![
                series("descriptors", |f| f.fds as f64),
                series("VmRSS (MB)", |f| f.rss_kb as f64 / 1024.0),
                series("threads", |f| f.threads as f64),
            ],
        },
    );
    s
}
