//! Throughput: the bare test-worker against the same test-worker under the master (one
//! worker), measured with `wrk`, in new-connection and keep-alive modes.
//!
//! Both servers run for the whole section (the idle one sleeps in poll and costs nothing),
//! and wrk runs alternate between them, the side that goes first alternating per pair
//! (bare, master, master, bare, ...) so a position effect cancels out. Medians per side
//! and mode, and their ratio master/bare. The master never proxies, so the ratio should be
//! about 1 (target >= 0.97 in new-connection mode).

use std::time::Duration;

use crate::master::{Bare, Extra, Master, Ready};
use crate::report::{Json, Scope, Section, list, obj, quoted};
use crate::wrk::{self, CONNECTIONS, MODES, THREADS, WrkRun};
use crate::{Ctx, stats};

/// The ratio master/bare that new-connection mode must reach.
const RATIO_TARGET: f64 = 0.97;

/// The two sides' runs in one mode.
struct ModeRuns<'a> {
    name: &'static str,
    close: bool,
    bare: &'a [WrkRun],
    master: &'a [WrkRun],
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let reps = ctx.opts.reps;
    let mut bare = Bare::start(&ctx.bins.worker, ctx.opts.verbose)?;
    let mut master = Master::start(ctx, 1, Ready::Notify, &Extra::default())?;
    let worker = master.workers_seen().into_iter().next();
    let worker = worker.ok_or("no worker started line in the master's log")?;
    eprintln!(
        "bench: throughput: bare test-worker on {} (pid {}), master on {} (pid {}, worker {worker})",
        bare.addr,
        bare.proc.pid(),
        master.addr,
        master.pid()
    );
    let master_lines = master.proc.log().len();
    let sides = [(bare.addr, bare.proc.pid()), (master.addr, master.pid())];
    let steady = wrk::interleaved(ctx, &sides, |mi, rep, runs| {
        bare.proc.check_alive("the bare test-worker")?;
        master.proc.check_alive("the master")?;
        let rps = |side: usize| {
            runs.iter()
                .find(|(i, _)| *i == side)
                .map_or(f64::NAN, |r| r.1.rps)
        };
        let (b, m, name) = (rps(0), rps(1), MODES[mi].0);
        eprintln!(
            "bench: throughput {name} {}/{reps}: bare {b:.0} req/s, master {m:.0} req/s ({:.3})",
            rep + 1,
            m / b
        );
        Ok(())
    })?;
    let [bare_runs, master_runs] = [&steady[0], &steady[1]];
    let modes: [ModeRuns<'_>; 2] = std::array::from_fn(|mi| {
        let (name, close) = MODES[mi];
        let (bare, master) = (&bare_runs.runs[mi][..], &master_runs.runs[mi][..]);
        ModeRuns {
            name,
            close,
            bare,
            master,
        }
    });
    // The master must not have done anything while it only held the socket.
    let lines = master.proc.log().lines();
    let unexpected: Vec<String> = lines[master_lines..]
        .iter()
        .filter(|l| !l.starts_with("test-worker["))
        .cloned()
        .collect();
    master.stop();
    bare.proc.stop(Duration::from_secs(5));
    Ok(vec![section(ctx, &modes, &unexpected)])
}

fn section(ctx: &Ctx, modes: &[ModeRuns<'_>], unexpected: &[String]) -> Section {
    let title = format!(
        "Throughput: bare test-worker vs under the master (wrk -t{THREADS} -c{CONNECTIONS} -d{}s)",
        ctx.opts.duration_s
    );
    let mut s = Section::new("throughput", &title);
    s.intro.push(format!(
        "Bare: test-worker binding 127.0.0.1:0 itself. Master: `master-process -l 127.0.0.1:0 -w 1 \
         --ready notify -- test-worker` (TW_READY=notify), the worker serving the inherited fd 3. \
         Both run all along; wrk runs alternate between them, the side that goes first \
         alternating too (bare, master, master, bare, bare, master...: {} repetitions of each \
         per mode, after a 1 s warm-up of each). Figures are medians of requests/s; the \
         ratio is median(master) / median(bare). New-connection mode sends `Connection: close`.",
        ctx.opts.reps
    ));
    for mode in modes {
        mode_figures(&mut s, mode);
    }
    if !unexpected.is_empty() {
        s.notes.push(format!(
            "- The master logged {} line(s) during the runs (expected none): {}",
            unexpected.len(),
            quoted(unexpected, 5)
        ));
    }
    s.notes.push(format!(
        "- Noise: wrk ({THREADS} threads), the server and the kernel's loopback share {} CPU(s); \
         compare the ratio, not absolute req/s across runs.",
        ctx.machine.cpus
    ));
    s.detail("master_log_lines_during_runs", Json::arr(unexpected));
    s
}

/// The figures, notes and details of one mode.
fn mode_figures(s: &mut Section, mode: &ModeRuns<'_>) {
    let key = if mode.close { "close" } else { "keepalive" };
    let m = Scope {
        key,
        name: mode.name,
    };
    let (bare, master) = (wrk::rps(mode.bare), wrk::rps(mode.master));
    let pair_ratios: Vec<f64> = master.iter().zip(&bare).map(|(m, b)| m / b).collect();
    let (mb, mm) = (stats::median(&bare), stats::median(&master));
    let ratio = mm / mb;
    s.push(m.metric("bare_rps", "bare, median req/s", mb, format!("{mb:.0}")));
    let label = "under the master, median req/s";
    s.push(m.metric("master_rps", label, mm, format!("{mm:.0}")));
    let metric = m.metric("ratio", "ratio master / bare", ratio, format!("{ratio:.3}"));
    s.push(match mode.close {
        true => metric.target(format!(">= {RATIO_TARGET}"), ratio >= RATIO_TARGET),
        false => metric.expect(format!("about 1, no target; >= {RATIO_TARGET} expected")),
    });
    let pair_median = stats::median(&pair_ratios);
    let (lo, hi) = (stats::min(&pair_ratios), stats::max(&pair_ratios));
    let shown = format!("{pair_median:.3} (range {lo:.3}..{hi:.3})");
    let label = "median of the per-pair ratios";
    let metric = m.metric("pair_ratio_median", label, pair_median, shown);
    s.push(metric.expect("robust to drift between pairs"));
    let errors = |runs: &[WrkRun]| runs.iter().map(WrkRun::errors).sum::<u64>();
    let (eb, em) = (errors(mode.bare), errors(mode.master));
    let label = "wrk socket errors + non-2xx, all runs (bare / master)";
    let value = obj! {"bare": eb, "master": em};
    s.push(m.metric("wrk_errors", label, value, format!("{eb} / {em}")));
    mode_notes(s, mode, &bare, &master, &pair_ratios);
    let runs = |r: &[WrkRun]| Json::arr(r.iter().map(WrkRun::json));
    let (bare, master) = (runs(mode.bare), runs(mode.master));
    s.detail(
        key,
        obj! {"bare": bare, "master": master, "pair_ratios": Json::arr(pair_ratios)},
    );
}

/// Every run's req/s, and the runs that stand out (far from the median, or with errors).
fn mode_notes(s: &mut Section, mode: &ModeRuns<'_>, bare: &[f64], master: &[f64], pairs: &[f64]) {
    let name = mode.name;
    s.notes.push(format!(
        "- {name}: bare req/s {}; master req/s {}; per-pair ratios {}; \
         spread (max-min)/median: bare {:.1}%, master {:.1}%.",
        list(bare, 0),
        list(master, 0),
        list(pairs, 3),
        stats::spread(bare) * 100.0,
        stats::spread(master) * 100.0,
    ));
    for (side, values) in [("bare", bare), ("master", master)] {
        let odd = stats::outliers(values, |i, v| format!("run {} ({v:.0} req/s)", i + 1));
        if !odd.is_empty() {
            s.notes.push(format!(
                "- {name} {side}: {} more than 30% away from the median (other work, or how \
                 the client's and the server's threads landed on the CPUs); the medians \
                 discount it.",
                odd.join(", ")
            ));
        }
    }
    for (side, runs) in [("bare", mode.bare), ("master", mode.master)] {
        let with_errors: Vec<String> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.errors() > 0)
            .map(|(i, r)| {
                let ([c, rd, w, t], n, i) = (r.socket_errors, r.non2xx, i + 1);
                format!("run {i}: connect {c}, read {rd}, write {w}, timeout {t}, non-2xx {n}")
            })
            .collect();
        if !with_errors.is_empty() {
            s.notes.push(format!(
                "- {name} {side}: wrk reported errors: {}. (wrk lumps error kinds together; \
                 the storm section's loadgen counts them exactly.)",
                with_errors.join("; ")
            ));
        }
    }
}
