//! The resource monitor: replaces a worker that uses too much memory or CPU.
//!
//! Every `--monitor-interval` (2 s), each serving worker that is past its grace period
//! (`--monitor-grace`, 30 s: JIT warm-up) is sampled from `/proc`: resident memory and CPU
//! time of the worker *and its descendants*. `MEM_MONITOR_FAILURES` samples in a row over
//! `MAX_MEMORY_ALLOWED_MB` (MiB), or `CPU_MONITOR_FAILURES` samples in a row over
//! `MAX_CPU_ALLOWED` (% of one core), and the worker is replaced gracefully: a new worker
//! for its slot, and once that one is ready the old one is stopped as in a reload. A sample
//! under the limit resets the count. Above 80 % of the memory limit a warning is logged once
//! per episode (the reference's `mem_high`).
//!
//! Monitoring pauses and resumes on every SIGUSR2 (profiling), and a worker may pause its
//! own with `MONITOR=pause` / `MONITOR=resume` on `NOTIFY_SOCKET`. A worker that cannot be
//! sampled (gone, or unreadable) is skipped, not retried in a loop. The monitor decides; the
//! master loop samples when [`Monitor::next_sample`] is due and acts on its [`Verdict`]s.

use std::collections::HashMap;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::MonitorLimits;
use crate::procfs::{self, Usage};
use crate::worker::Pid;

/// Memory use from which the `mem_high` warning is logged, as a share of the limit.
const MEM_HIGH: f64 = 0.8;

/// A worker to sample: its pid and when it started.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    /// The worker.
    pub pid: Pid,
    /// When it started (sampling begins a grace period later).
    pub started: Instant,
}

/// What the monitor concluded about a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The worker to replace.
    pub pid: Pid,
    /// Which limit it crossed.
    pub resource: Resource,
    /// Why, in words.
    pub reason: String,
}

/// A limit the monitor watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `MAX_MEMORY_ALLOWED_MB`.
    Memory,
    /// `MAX_CPU_ALLOWED`.
    Cpu,
}

impl Resource {
    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
        }
    }
}

/// What the monitor knows about one worker.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// The last sample: resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// The last sample: CPU use since the sample before, in % of one core.
    pub cpu_pct: Option<f64>,
    /// Samples over the memory limit in a row.
    pub memory_over: u32,
    /// Samples over the CPU limit in a row.
    pub cpu_over: u32,
    /// Above 80 % of the memory limit (warned once per episode).
    pub mem_high: bool,
    /// The worker paused its own monitoring (`MONITOR=pause`).
    pub paused: bool,
    /// A replacement was asked: no further verdict.
    pub replacing: bool,
    /// CPU ticks and time of the last sample, for the next CPU figure.
    last: Option<(u64, Instant)>,
    /// Why it cannot be sampled, if it cannot.
    unreadable: Option<String>,
}

/// The monitor. See the [module documentation](self).
#[derive(Debug)]
pub struct Monitor {
    limits: MonitorLimits,
    paused: bool,
    next: Option<Instant>,
    watches: HashMap<Pid, Watch>,
    ticks_per_second: f64,
    page_size: u64,
}

impl Monitor {
    /// A monitor with these limits; it samples first one interval from `now`.
    pub fn new(limits: MonitorLimits, now: Instant) -> Monitor {
        Monitor {
            limits,
            paused: false,
            next: Some(now + limits.interval),
            watches: HashMap::new(),
            ticks_per_second: procfs::clock_ticks_per_second() as f64,
            page_size: procfs::page_size(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &MonitorLimits {
        &self.limits
    }

    /// Whether monitoring is paused (SIGUSR2).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// When the next sample is due; `None` while paused.
    pub fn next_sample(&self) -> Option<Instant> {
        if self.paused { None } else { self.next }
    }

    /// Pauses monitoring if it runs, resumes it if paused (SIGUSR2).
    pub fn toggle(&mut self, now: Instant) {
        self.paused = !self.paused;
        if self.paused {
            info!("resource monitor paused (SIGUSR2); another SIGUSR2 resumes it");
        } else {
            info!("resource monitor resumed (SIGUSR2)");
            // Counts start over: a pause is not an ongoing excess.
            for w in self.watches.values_mut() {
                w.last = None;
                w.memory_over = 0;
                w.cpu_over = 0;
            }
            self.next = Some(now + self.limits.interval);
        }
    }

    /// Worker `pid` pauses (`true`) or resumes its own monitoring.
    pub fn pause_worker(&mut self, pid: Pid, paused: bool) {
        let w = self.watches.entry(pid).or_default();
        if w.paused != paused {
            info!(
                pid,
                "resource monitoring of this worker {}",
                if paused {
                    "paused by the worker"
                } else {
                    "resumed by the worker"
                }
            );
        }
        w.paused = paused;
        w.last = None;
        w.memory_over = 0;
        w.cpu_over = 0;
    }

    /// What the monitor knows about worker `pid`.
    pub fn watch(&self, pid: Pid) -> Option<&Watch> {
        self.watches.get(&pid)
    }

    /// Samples every subject that is due; returns the workers to replace. Forgets workers
    /// that are no longer subjects.
    pub fn sample(&mut self, subjects: &[Subject], now: Instant) -> Vec<Verdict> {
        if self.paused {
            return Vec::new();
        }
        // Next round one interval from now; while every worker is still in its grace period,
        // not before the first grace ends (no wakeup for nothing to sample).
        let next = now + self.limits.interval;
        let first_grace_end = subjects.iter().map(|s| s.started + self.limits.grace).min();
        self.next = Some(match first_grace_end {
            Some(end) if end > now => end.max(next),
            _ => next,
        });
        self.watches
            .retain(|pid, _| subjects.iter().any(|s| s.pid == *pid));
        let mut verdicts = Vec::new();
        for s in subjects {
            if now < s.started + self.limits.grace {
                continue;
            }
            let usage = procfs::tree_usage(s.pid);
            if let Some(v) = self.judge(s.pid, usage, now) {
                verdicts.push(v);
            }
        }
        verdicts
    }

    /// Updates worker `pid`'s counts with a new sample; a verdict when a limit was passed
    /// the configured number of times in a row.
    fn judge(&mut self, pid: Pid, usage: Usage, now: Instant) -> Option<Verdict> {
        let limits = self.limits;
        let (ticks_per_second, page_size) = (self.ticks_per_second, self.page_size);
        let w = self.watches.entry(pid).or_default();
        if w.paused || w.replacing {
            return None;
        }
        if usage.processes == 0 {
            // Gone (its exit is on its way to the supervisor) or unreadable: skip, and say why once.
            if w.unreadable.is_none() {
                w.unreadable = Some("cannot be read in /proc".into());
                warn!(
                    pid,
                    "resource monitor: worker cannot be sampled; skipping it"
                );
            }
            return None;
        }
        w.unreadable = None;
        let rss = usage.rss_pages * page_size;
        w.rss_bytes = Some(rss);
        w.cpu_pct = w.last.and_then(|(ticks, at)| {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            (secs > 0.0).then(|| {
                usage.cpu_ticks.saturating_sub(ticks) as f64 / ticks_per_second / secs * 100.0
            })
        });
        w.last = Some((usage.cpu_ticks, now));

        let limit = limits.max_memory_mb * 1024 * 1024;
        let mb = rss as f64 / 1024.0 / 1024.0;
        let high = rss as f64 >= limit as f64 * MEM_HIGH;
        if high && !w.mem_high {
            warn!(
                pid,
                rss_mb = format!("{mb:.1}"),
                limit_mb = limits.max_memory_mb,
                "worker memory above 80% of MAX_MEMORY_ALLOWED_MB"
            );
        }
        w.mem_high = high;
        w.memory_over = if rss > limit { w.memory_over + 1 } else { 0 };
        w.cpu_over = match w.cpu_pct {
            Some(pct) if pct > limits.max_cpu_pct => w.cpu_over + 1,
            Some(_) => 0,
            None => w.cpu_over,
        };
        tracing::debug!(
            pid,
            memory_over = w.memory_over,
            cpu_over = w.cpu_over,
            rss_mb = format!("{mb:.1}"),
            cpu_pct = w
                .cpu_pct
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "-".into()),
            "monitor sample"
        );
        let verdict = if w.memory_over >= limits.memory_failures {
            Some((
                Resource::Memory,
                format!(
                    "memory {mb:.1} MiB over MAX_MEMORY_ALLOWED_MB={} for {} samples in a row",
                    limits.max_memory_mb, w.memory_over
                ),
            ))
        } else if w.cpu_over >= limits.cpu_failures {
            Some((
                Resource::Cpu,
                format!(
                    "CPU {:.0}% over MAX_CPU_ALLOWED={}% for {} samples in a row",
                    w.cpu_pct.unwrap_or_default(),
                    limits.max_cpu_pct,
                    w.cpu_over
                ),
            ))
        } else {
            None
        };
        verdict.map(|(resource, reason)| {
            w.replacing = true;
            Verdict {
                pid,
                resource,
                reason,
            }
        })
    }

    /// The replacement of `pid` could not start: it may be judged again.
    pub fn replacement_refused(&mut self, pid: Pid) {
        if let Some(w) = self.watches.get_mut(&pid) {
            w.replacing = false;
            w.memory_over = 0;
            w.cpu_over = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> MonitorLimits {
        MonitorLimits {
            max_memory_mb: 100,
            max_cpu_pct: 50.0,
            memory_failures: 3,
            cpu_failures: 2,
            interval: Duration::from_secs(1),
            grace: Duration::ZERO,
        }
    }

    fn usage(rss_mb: u64, cpu_ticks: u64) -> Usage {
        let page = procfs::page_size();
        Usage {
            processes: 1,
            rss_pages: rss_mb * 1024 * 1024 / page,
            cpu_ticks,
        }
    }

    #[test]
    fn memory_over_the_limit_replaces_after_exactly_n_samples_in_a_row() {
        let t0 = Instant::now();
        let mut m = Monitor::new(limits(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.judge(7, usage(150, 0), at(1)), None);
        assert_eq!(m.judge(7, usage(150, 0), at(2)), None);
        let v = m
            .judge(7, usage(150, 0), at(3))
            .expect("third sample in a row");
        assert!(
            v.reason.contains("MAX_MEMORY_ALLOWED_MB=100 for 3 samples"),
            "{}",
            v.reason
        );
        assert_eq!(
            m.judge(7, usage(150, 0), at(4)),
            None,
            "one verdict per replacement"
        );
    }

    #[test]
    fn a_sample_under_the_limit_resets_the_count() {
        let t0 = Instant::now();
        let mut m = Monitor::new(limits(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        m.judge(7, usage(150, 0), at(1));
        m.judge(7, usage(150, 0), at(2));
        assert_eq!(m.judge(7, usage(90, 0), at(3)), None, "dipped under");
        m.judge(7, usage(150, 0), at(4));
        assert_eq!(m.judge(7, usage(150, 0), at(5)), None);
        assert!(m.judge(7, usage(150, 0), at(6)).is_some());
    }

    #[test]
    fn cpu_needs_two_samples_for_a_figure_then_counts_in_a_row() {
        let tick = procfs::clock_ticks_per_second();
        let t0 = Instant::now();
        let mut m = Monitor::new(limits(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.judge(7, usage(1, 0), at(1)), None);
        assert_eq!(m.watch(7).unwrap().cpu_pct, None);
        // A full core for a second: 100%.
        assert_eq!(m.judge(7, usage(1, tick), at(2)), None);
        assert!((m.watch(7).unwrap().cpu_pct.unwrap() - 100.0).abs() < 0.01);
        let v = m
            .judge(7, usage(1, 2 * tick), at(3))
            .expect("second sample over 50%");
        assert!(
            v.reason.contains("CPU 100% over MAX_CPU_ALLOWED=50%"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn memory_high_is_flagged_above_80_percent() {
        let mut m = Monitor::new(limits(), Instant::now());
        m.judge(7, usage(85, 0), Instant::now());
        assert!(m.watch(7).unwrap().mem_high);
        m.judge(7, usage(50, 0), Instant::now());
        assert!(!m.watch(7).unwrap().mem_high);
    }

    #[test]
    fn pauses_stop_sampling_and_verdicts() {
        let t0 = Instant::now();
        let mut m = Monitor::new(limits(), t0);
        m.toggle(t0);
        assert!(m.paused());
        assert_eq!(m.next_sample(), None, "no wakeup while paused");
        m.toggle(t0);
        assert!(!m.paused());
        m.pause_worker(7, true);
        for s in 1..10 {
            assert_eq!(m.judge(7, usage(500, 0), t0 + Duration::from_secs(s)), None);
        }
        m.pause_worker(7, false);
        assert!(m.watch(7).is_some_and(|w| !w.paused));
    }

    #[test]
    fn no_wakeup_while_every_worker_is_in_its_grace_period() {
        let t0 = Instant::now();
        let mut l = limits();
        l.grace = Duration::from_secs(30);
        let mut m = Monitor::new(l, t0);
        let subjects = [Subject {
            pid: std::process::id(),
            started: t0,
        }];
        assert!(m.sample(&subjects, t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            m.next_sample(),
            Some(t0 + Duration::from_secs(30)),
            "next: when the grace ends"
        );
        m.sample(&subjects, t0 + Duration::from_secs(30));
        assert_eq!(
            m.next_sample(),
            Some(t0 + Duration::from_secs(31)),
            "then every interval"
        );
    }

    #[test]
    fn a_worker_that_cannot_be_read_is_skipped() {
        let mut m = Monitor::new(limits(), Instant::now());
        let gone = Usage::default();
        for _ in 0..5 {
            assert_eq!(m.judge(7, gone, Instant::now()), None);
        }
    }
}
