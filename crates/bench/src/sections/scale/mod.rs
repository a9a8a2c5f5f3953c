//! Scale: how the master's costs grow with the work, each as a per-unit cost measured in one
//! run, each with a chart.
//!
//! - [`probe`]: a worker that never gets ready under `--ready listening`: the master's CPU
//!   over the first 5 s and over `--probe-secs` (the probe backs off: 1 ms, then a twentieth
//!   of the start's age, up to 50 ms).
//! - [`sweep`]: reload time, master CPU per reload and per replaced worker, master RSS, and
//!   detection latency, against workers (1 to `--scale-workers`, powers of two; under
//!   `--ready listening` and `--ready notify`), against listeners (1 to 64) and against
//!   threads per worker (`TW_THREADS`).
//! - [`monitor`]: the resource monitor's CPU at its default interval against workers.
//! - [`burst`]: `--burst` concurrent new connections opened while the new workers of a
//!   reload are slow to start: nothing refused, reset or timed out; the p99 connect time;
//!   the listening socket's backlog and queue length sampled with `ss` meanwhile.
//! - [`soak`]: `--soak-reloads` reloads back to back, `--ready notify`, no load: the
//!   master's descriptors, RSS and threads along the way, and reloads per second.
//!
//! [`slopes`] fits a line to each series (least squares) and says how far the largest
//! point is from it, so that a cost growing worse than linearly shows.

mod burst;
mod monitor;
mod probe;
mod slopes;
mod soak;
mod sweep;

use std::time::{Duration, Instant};

use crate::Ctx;
use crate::lines::parsed;
use crate::master::{Extra, Master, Ready};
use crate::measure::{Cpu, ms};
use crate::report::Section;
use crate::sections::detection;
use crate::sys;

/// How long one reload may take, from SIGHUP to `reload done` (128 slow starters on 2 cores).
const RELOAD_WAIT: Duration = Duration::from_secs(120);
/// From `all workers ready` to the first measurement.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the section: one [`Section`] per part, then the table of slopes.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let mut sections = Vec::new();
    let mut fits = Vec::new();
    let parts: [(&str, Part); 5] = [
        ("probe", probe::run),
        ("sweep", sweep::run),
        ("monitor", monitor::run),
        ("burst", burst::run),
        ("soak", soak::run),
    ];
    for (name, part) in parts {
        eprintln!("bench: scale: {name}");
        let started = Instant::now();
        match part(ctx, &mut fits) {
            Ok(mut s) => sections.append(&mut s),
            Err(e) => {
                eprintln!("bench: scale {name} failed: {e}");
                sections.push(Section::failed(&format!("scale.{name}"), e));
            }
        }
        eprintln!(
            "bench: scale: {name} took {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    sections.push(slopes::section(ctx, &fits));
    Ok(sections)
}

/// One part of the section: its sections, and the slopes it measured.
type Part = fn(&Ctx, &mut Vec<slopes::Fit>) -> Result<Vec<Section>, String>;

/// The powers of two from 1 to `max` (and `max` itself if it is not one).
pub fn powers(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..)
        .map(|e| 1usize << e)
        .take_while(|&n| n <= max.max(1))
        .collect();
    if v.last() != Some(&max.max(1)) {
        v.push(max.max(1));
    }
    v
}

/// What one reload cost the master, and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// The master's `took_ms`.
    pub took_ms: f64,
    /// The master's CPU from the SIGHUP to its `reload done` line.
    pub cpu_ms: f64,
    /// It ended with `reload done`.
    pub done: bool,
    /// Detection latencies of its new workers (`waiting at` to `worker ready`), ms.
    pub detection_ms: Vec<f64>,
}

/// A master's resources at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub fds: usize,
    pub threads: u64,
}

impl Footprint {
    /// Reads them from /proc.
    pub fn read(pid: i32) -> Footprint {
        Footprint {
            rss_kb: sys::status_kb(pid, "VmRSS").unwrap_or(0),
            hwm_kb: sys::status_kb(pid, "VmHWM").unwrap_or(0),
            fds: sys::fd_count(pid).unwrap_or(0),
            threads: sys::stat(pid).map(|s| s.threads).unwrap_or(0),
        }
    }
}

/// Starts `master -w N` with extra flags and environment (test-workers), settled.
pub fn start(
    ctx: &Ctx,
    workers: usize,
    ready: Ready,
    args: &[String],
    env: &[(&str, String)],
) -> Result<Master, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let extra = Extra {
        args: &args,
        env: &env,
    };
    let master = Master::start(ctx, workers, ready, &extra)?;
    std::thread::sleep(SETTLE);
    Ok(master)
}

/// One reload: SIGHUP, then its `reload started` and `reload done` (or failed) lines; the
/// master's CPU meanwhile, and its new workers' detection latencies (under `--ready
/// listening`, with test-workers, which print `waiting at`).
pub fn reload(master: &Master) -> Result<Reload, String> {
    let r = detection::sighup_reload(master)?;
    let lines = master.proc.log().lines();
    let end = r.end.min(lines.len() - 1);
    let (samples, _) = detection::pair(&lines[r.from..=end], r.generation);
    Ok(Reload {
        took_ms: parsed(&r.line, "took_ms").unwrap_or(f64::NAN),
        cpu_ms: r.spent.cpu_ms(),
        done: r.done(),
        detection_ms: samples.iter().map(detection::Sample::latency_ms).collect(),
    })
}

/// `count` reloads one after the other.
pub fn reloads(master: &Master, count: usize) -> Result<Vec<Reload>, String> {
    (0..count).map(|_| reload(master)).collect()
}

/// The master's CPU in % of one core over `period`, and its context switches then.
pub fn cpu_over(pid: i32, period: Duration) -> Result<(f64, crate::measure::Spent), String> {
    let before = Cpu::read(pid)?;
    std::thread::sleep(period);
    let spent = Cpu::read(pid)?.since(&before);
    Ok((spent.cpu_ms() / ms(period) * 100.0, spent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two() {
        assert_eq!(powers(128), [1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(powers(1), [1]);
        assert_eq!(powers(0), [1]);
        assert_eq!(powers(24), [1, 2, 4, 8, 16, 24]);
    }
}
